"""HTTP authorization configuration: validation, secret-free descriptions, the SDK providers it
builds (exercised against an in-process authorization server, no sockets)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs

import httpx2
import pytest
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthToken

import trio_mcp
from trio_mcp._auth import _PreRegistered, build_httpx_auth, describe_auth

BASE = "http://mcp.test"
PRM_PATH = "/.well-known/oauth-protected-resource/mcp"


async def _redirect(url: str) -> None:
    return None


async def _callback() -> AuthorizationCodeResult:
    raise AssertionError("no interactive authorization expected")


def oauth(**overrides: Any) -> trio_mcp.OAuthAuth:
    options: dict[str, Any] = {"redirect_handler": _redirect, "callback_handler": _callback}
    options.update(overrides)
    return trio_mcp.OAuthAuth(**options)


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: oauth(redirect_handler="https://example.test"), "auth.redirect_handler"),
        (lambda: oauth(callback_handler=None), "auth.callback_handler"),
        (lambda: oauth(redirect_uri="myapp://callback"), "auth.redirect_uri"),
        (lambda: oauth(redirect_uri=None), "auth.redirect_uri"),
        (lambda: oauth(client_secret="s3cret"), "auth.client_secret"),
        (lambda: oauth(store={"tokens": None}), "store"),
        (lambda: trio_mcp.ClientCredentialsAuth(client_id="", client_secret="s3cret"), "auth.client_id"),
        (lambda: trio_mcp.ClientCredentialsAuth(client_id="svc", client_secret=""), "auth.client_secret"),
        (lambda: trio_mcp.ClientCredentialsAuth(client_id="svc", client_secret="x", store=object()), "store"),
        (lambda: trio_mcp.BearerAuth(token=""), "auth.token"),
        (lambda: trio_mcp.BearerAuth(token="a\rb"), "auth.token"),
    ],
)
def test_invalid_auth_names_the_key(make: Any, key: str) -> None:
    with pytest.raises(trio_mcp.ConfigError) as info:
        make()
    assert info.value.key == key


async def test_in_memory_store_clears_and_never_shows_its_tokens() -> None:
    store = trio_mcp.InMemoryTokenStore()
    assert repr(store) == "<InMemoryTokenStore tokens=None>"
    await store.set_tokens(OAuthToken(access_token="at-s3cret", token_type="Bearer"))
    await store.set_client_info(OAuthClientInformationFull(client_id="cid", redirect_uris=[f"{BASE}/cb"]))
    assert repr(store) == "<InMemoryTokenStore tokens=***>"
    store.clear()
    assert (await store.get_tokens(), await store.get_client_info()) == (None, None)
    assert isinstance(store, trio_mcp.TokenStore)


def test_descriptions_show_only_public_parts() -> None:
    assert describe_auth(None) is None
    assert describe_auth(oauth(client_name="fleet", scope="read", client_id="app")) == {
        "kind": "oauth",
        "client_name": "fleet",
        "client_id": "app",
        "scope": "read",
        "redirect_uri": "http://localhost:3000/callback",
    }
    assert describe_auth(oauth(client_id="app", client_secret="s3cret")) == {
        "kind": "oauth",
        "client_name": "trio-mcp",
        "client_id": "app",
        "scope": None,
        "redirect_uri": "http://localhost:3000/callback",
        "client_secret": "***",
    }
    assert repr(oauth(client_id="app", client_secret="s3cret")) == (
        "OAuthAuth(client_name='trio-mcp', client_id='app', client_secret='***', scope=None, "
        "redirect_uri='http://localhost:3000/callback', store=<InMemoryTokenStore tokens=None>)"
    )
    assert build_httpx_auth(None, f"{BASE}/mcp") is None


class AuthorizationServer:
    """A protected MCP endpoint and its authorization server, as an httpx2 handler."""

    def __init__(self, scopes: list[str]) -> None:
        self.scopes = scopes
        self.token_requests: list[tuple[dict[str, str], str | None]] = []
        self.registrations: list[dict[str, Any]] = []
        self.valid: set[str] = set()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path == PRM_PATH:
            return httpx2.Response(
                200,
                json={
                    "resource": f"{BASE}/mcp",
                    "authorization_servers": [BASE],
                    "scopes_supported": self.scopes,
                },
            )
        if path == "/.well-known/oauth-authorization-server":
            return httpx2.Response(
                200,
                json={
                    "issuer": BASE,
                    "authorization_endpoint": f"{BASE}/authorize",
                    "token_endpoint": f"{BASE}/token",
                    "registration_endpoint": f"{BASE}/register",
                    "response_types_supported": ["code"],
                    "grant_types_supported": ["authorization_code", "client_credentials"],
                    "code_challenge_methods_supported": ["S256"],
                },
            )
        if path == "/register":
            body = json.loads(request.content)
            self.registrations.append(body)
            return httpx2.Response(201, json={**body, "client_id": "registered", "client_secret": "issued"})
        if path == "/token":
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            self.token_requests.append((form, request.headers.get("authorization")))
            token = f"at-{len(self.token_requests)}"
            self.valid.add(token)
            return httpx2.Response(
                200, json={"access_token": token, "token_type": "Bearer", "expires_in": 3600}
            )
        if path.startswith("/.well-known/"):
            return httpx2.Response(404)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.valid:
            return httpx2.Response(
                401, headers={"WWW-Authenticate": f'Bearer resource_metadata="{BASE}{PRM_PATH}"'}
            )
        return httpx2.Response(200, json={"ok": token})


async def test_client_credentials_get_a_token_for_the_configured_issuer() -> None:
    server = AuthorizationServer(scopes=["tools:read"])
    store = trio_mcp.InMemoryTokenStore()
    creds = trio_mcp.ClientCredentialsAuth(
        client_id="svc", client_secret="c-s3cret", scope="tools:read", issuer=BASE, store=store
    )
    auth = build_httpx_auth(creds, f"{BASE}/mcp")
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(server), auth=auth) as http:
        assert (await http.post(f"{BASE}/mcp", json={})).json() == {"ok": "at-1"}
        assert (await http.post(f"{BASE}/mcp", json={})).json() == {"ok": "at-1"}
    ((form, authorization),) = server.token_requests
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "tools:read"
    # client_secret_basic (the default): the credentials travel in the Authorization header.
    assert authorization == "Basic " + base64.b64encode(b"svc:c-s3cret").decode()
    assert "client_secret" not in form
    tokens = await store.get_tokens()
    assert tokens is not None and tokens.access_token == "at-1"
    assert server.registrations == []


async def test_oauth_registers_with_the_configured_auth_method_then_redirects() -> None:
    # The scope requested is the one the server's metadata names (the SDK's scope selection).
    server = AuthorizationServer(scopes=["tools:call"])
    visited: list[str] = []

    async def redirect(url: str) -> None:
        visited.append(url)
        raise RuntimeError("stop at the authorization step")

    auth = build_httpx_auth(
        oauth(
            redirect_handler=redirect,
            scope="tools:call",
            token_endpoint_auth_method="client_secret_post",
            client_name="fleet",
        ),
        f"{BASE}/mcp",
    )
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(server), auth=auth) as http:
        with pytest.raises(RuntimeError, match="stop at the authorization step"):
            await http.post(f"{BASE}/mcp", json={})
    (registration,) = server.registrations
    assert registration["scope"] == "tools:call"
    assert registration["token_endpoint_auth_method"] == "client_secret_post"
    assert registration["client_name"] == "fleet"
    assert registration["redirect_uris"] == ["http://localhost:3000/callback"]
    (url,) = visited
    query = {k: v[0] for k, v in parse_qs(url.split("?", 1)[1]).items()}
    assert (query["client_id"], query["scope"]) == ("registered", "tools:call")


@pytest.mark.parametrize(
    ("secret", "method", "expected_method"),
    [
        ("s3cret", None, "client_secret_basic"),
        (None, None, "none"),
        ("s3cret", "client_secret_post", "client_secret_post"),
    ],
)
async def test_a_pre_registered_client_answers_its_registration(
    secret: str | None, method: str | None, expected_method: str
) -> None:
    store = trio_mcp.InMemoryTokenStore()
    view = _PreRegistered(
        oauth(client_id="pre-app", client_secret=secret, token_endpoint_auth_method=method, store=store)
    )
    info = await view.get_client_info()
    assert info is not None
    assert (info.client_id, info.client_secret, info.token_endpoint_auth_method) == (
        "pre-app",
        secret,
        expected_method,
    )
    assert [str(u) for u in info.redirect_uris or []] == ["http://localhost:3000/callback"]

    # A registration stored for another client is not this client's: ignored.
    await view.set_client_info(OAuthClientInformationFull(client_id="other", redirect_uris=[f"{BASE}/cb"]))
    assert (await store.get_client_info()).client_id == "other"  # type: ignore[union-attr]
    assert (await view.get_client_info()).client_id == "pre-app"  # type: ignore[union-attr]
    # One stored for this client (say, with a rotated secret) is used as stored.
    rotated = OAuthClientInformationFull(
        client_id="pre-app", client_secret="rotated", redirect_uris=[f"{BASE}/cb"]
    )
    await view.set_client_info(rotated)
    assert await view.get_client_info() == rotated
    # Tokens pass through to the store.
    await view.set_tokens(OAuthToken(access_token="at-9", token_type="Bearer"))
    assert (await view.get_tokens()) == (await store.get_tokens())
    assert (await store.get_tokens()).access_token == "at-9"  # type: ignore[union-attr]

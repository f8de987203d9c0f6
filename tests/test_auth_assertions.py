"""Signed client assertions (``PrivateKeyJwtAuth``) and enterprise-managed authorization
(``IdentityAssertionAuth``): validation, secret-free descriptions, the ``mcpServers`` ``auth``
key, and the SDK providers they build, exercised against an in-process authorization server
and identity provider (no sockets)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mcp.client.auth import OAuthTokenError

import trio_mcp
import trio_mcp._auth
from trio_mcp._auth import build_httpx_auth, describe_auth

BASE = "http://mcp.test"
IDP = "http://idp.test"
PRM_PATH = "/.well-known/oauth-protected-resource/mcp"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def pem_of(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_PEM = pem_of(EC_KEY)
RSA_PEM = pem_of(RSA_KEY)


def form_of(request: httpx2.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


class Servers:
    """A protected MCP endpoint, its authorization server and an enterprise identity provider,
    as one httpx2 handler."""

    def __init__(self, *, grant_types: list[str], idp_answer: httpx2.Response | None = None) -> None:
        self.grant_types = grant_types
        self.idp_answer = idp_answer
        self.token_requests: list[tuple[dict[str, str], str | None]] = []
        self.idp_requests: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.valid: set[str] = set()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if request.url.host == "idp.test":
            self.idp_requests.append(form_of(request))
            return self.idp_answer or httpx2.Response(
                200,
                json={
                    "access_token": f"id-jag-{len(self.idp_requests)}",
                    "issued_token_type": "urn:ietf:params:oauth:token-type:id-jag",
                    "token_type": "N_A",
                },
            )
        self.paths.append(path)
        if path == PRM_PATH:
            return httpx2.Response(
                200,
                json={
                    "resource": f"{BASE}/mcp",
                    "authorization_servers": [BASE],
                    "scopes_supported": ["tools:read"],
                },
            )
        if path == "/.well-known/oauth-authorization-server":
            return httpx2.Response(
                200,
                json={
                    "issuer": BASE,
                    "authorization_endpoint": f"{BASE}/authorize",
                    "token_endpoint": f"{BASE}/token",
                    "response_types_supported": ["code"],
                    "grant_types_supported": self.grant_types,
                    "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
                },
            )
        if path == "/token":
            self.token_requests.append((form_of(request), request.headers.get("authorization")))
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


async def post_twice(
    servers: Servers, auth: trio_mcp.PrivateKeyJwtAuth | trio_mcp.IdentityAssertionAuth
) -> None:
    provider = build_httpx_auth(auth, f"{BASE}/mcp")
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(servers), auth=provider) as http:
        assert (await http.post(f"{BASE}/mcp", json={})).json() == {"ok": "at-1"}
        assert (await http.post(f"{BASE}/mcp", json={})).json() == {"ok": "at-1"}


# -- private_key_jwt -------------------------------------------------------------------------------


async def test_private_key_jwt_signs_a_fresh_assertion_for_the_issuer() -> None:
    servers = Servers(grant_types=["client_credentials"])
    store = trio_mcp.InMemoryTokenStore()
    auth = trio_mcp.PrivateKeyJwtAuth(
        client_id="svc",
        private_key=EC_PEM,
        signing_algorithm="ES256",
        assertion_lifetime=120,
        scope="tools:read",
        issuer=BASE,
        store=store,
    )
    await post_twice(servers, auth)
    ((form, authorization),) = servers.token_requests
    assert authorization is None
    assertion = form.pop("client_assertion")
    assert form == {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "resource": f"{BASE}/mcp",
        "scope": "tools:read",
    }
    assert jwt.get_unverified_header(assertion)["alg"] == "ES256"
    claims = jwt.decode(assertion, EC_KEY.public_key(), algorithms=["ES256"], audience=BASE)
    assert (claims["iss"], claims["sub"], claims["exp"] - claims["iat"]) == ("svc", "svc", 120)
    assert isinstance(claims["jti"], str) and claims["jti"]
    tokens = await store.get_tokens()
    assert tokens is not None and tokens.access_token == "at-1"


async def test_private_key_jwt_reads_its_key_file_for_each_assertion(tmp_path: Path) -> None:
    key_file = tmp_path / "client.pem"
    key_file.write_text(RSA_PEM)
    servers = Servers(grant_types=["client_credentials"])
    auth = trio_mcp.PrivateKeyJwtAuth(client_id="svc", private_key_file=key_file, issuer=BASE)
    await post_twice(servers, auth)
    ((form, _),) = servers.token_requests
    claims = jwt.decode(form["client_assertion"], RSA_KEY.public_key(), algorithms=["RS256"], audience=BASE)
    assert claims["iss"] == "svc"

    # A rotated key is the one the next assertion is signed with.
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file.write_text(pem_of(rotated))
    again = await auth.assertion(BASE)
    assert jwt.decode(again, rotated.public_key(), algorithms=["RS256"], audience=BASE)["sub"] == "svc"


async def test_private_key_jwt_sends_an_assertion_minted_elsewhere() -> None:
    audiences: list[str] = []

    async def workload_identity(audience: str) -> str:
        audiences.append(audience)
        return "minted.by.the-platform"

    servers = Servers(grant_types=["client_credentials"])
    await post_twice(
        servers,
        trio_mcp.PrivateKeyJwtAuth(client_id="svc", assertion_provider=workload_identity, issuer=BASE),
    )
    ((form, _),) = servers.token_requests
    assert (form["client_assertion"], form["client_assertion_type"]) == (
        "minted.by.the-platform",
        CLIENT_ASSERTION_TYPE,
    )
    assert audiences == [BASE]


def public_pem() -> str:
    return (
        RSA_KEY.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def _assertion(audience: str) -> str:
    return "x"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"client_id": ""}, "auth.client_id"),
        ({"private_key": None}, "auth.private_key"),
        ({"private_key_file": "/keys/client.pem"}, "auth.private_key"),
        ({"private_key": None, "assertion_provider": "token"}, "auth.assertion_provider"),
        ({"private_key": "not a key"}, "auth.private_key"),
        ({"private_key": public_pem()}, "auth.private_key"),
        ({"signing_algorithm": "ES256"}, "auth.private_key"),
        ({"signing_algorithm": "HS256"}, "auth.signing_algorithm"),
        ({"assertion_lifetime": 0}, "auth.assertion_lifetime"),
        ({"issuer": "auth.example"}, "auth.issuer"),
        ({"store": object()}, "store"),
    ],
)
def test_invalid_private_key_jwt_names_the_key(options: dict[str, Any], key: str) -> None:
    arguments: dict[str, Any] = {"client_id": "svc", "private_key": RSA_PEM, **options}
    with pytest.raises(trio_mcp.ConfigError) as info:
        trio_mcp.PrivateKeyJwtAuth(**arguments)
    assert info.value.key == key
    assert "BEGIN" not in str(info.value)


# -- identity assertion (enterprise-managed authorization) ------------------------------------------


def enterprise(**overrides: Any) -> trio_mcp.IdentityAssertionAuth:
    options: dict[str, Any] = {
        "client_id": "mcp-client",
        "client_secret": "mcp-s3cret",
        "issuer": BASE,
        "idp_token_endpoint": f"{IDP}/token",
        "idp_client_id": "idp-client",
        "id_token": "user-id-token",
    }
    options.update(overrides)
    return trio_mcp.IdentityAssertionAuth(**options)


@pytest.fixture
def idp_client(monkeypatch: pytest.MonkeyPatch) -> Servers:
    """The servers, with the identity provider's token exchange routed to them too."""
    servers = Servers(grant_types=[JWT_BEARER])
    monkeypatch.setattr(
        trio_mcp._auth, "_idp_client", lambda: httpx2.AsyncClient(transport=httpx2.MockTransport(servers))
    )
    return servers


@pytest.mark.parametrize("callable_token", [False, True])
async def test_identity_assertion_exchanges_the_id_token_then_presents_the_grant(
    idp_client: Servers, callable_token: bool
) -> None:
    async def current_id_token() -> str:
        return "user-id-token"

    servers = idp_client
    store = trio_mcp.InMemoryTokenStore()
    auth = enterprise(
        id_token=current_id_token if callable_token else "user-id-token",
        idp_client_secret="idp-s3cret",
        scope="tools:call",
        store=store,
    )
    await post_twice(servers, auth)
    # Leg 1, at the identity provider: the user's ID token for an ID-JAG naming this MCP server.
    assert servers.idp_requests == [
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "requested_token_type": "urn:ietf:params:oauth:token-type:id-jag",
            "subject_token": "user-id-token",
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            "audience": BASE,
            "resource": f"{BASE}/mcp",
            "client_id": "idp-client",
            "client_secret": "idp-s3cret",
        }
    ]
    # Leg 2, at the configured authorization server: the grant for an access token, with the
    # client's credentials in the Authorization header (client_secret_basic).
    ((form, authorization),) = servers.token_requests
    assert form == {
        "grant_type": JWT_BEARER,
        "assertion": "id-jag-1",
        "client_id": "mcp-client",
        "resource": f"{BASE}/mcp",
        "scope": "tools:call",
    }
    assert authorization == "Basic " + base64.b64encode(b"mcp-client:mcp-s3cret").decode()
    # The authorization server is configuration: the MCP server is never asked which to use.
    assert PRM_PATH not in servers.paths
    tokens = await store.get_tokens()
    assert tokens is not None and tokens.access_token == "at-1"


async def test_identity_assertion_refused_by_the_idp_says_why_without_secrets(
    idp_client: Servers,
) -> None:
    idp_client.idp_answer = httpx2.Response(
        400,
        json={"error": "invalid_grant", "error_description": "the ID token expired", "echo": "user-id-token"},
    )
    provider = build_httpx_auth(enterprise(), f"{BASE}/mcp")
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(idp_client), auth=provider) as http:
        with pytest.raises(OAuthTokenError) as info:
            await http.post(f"{BASE}/mcp", json={})
    assert str(info.value) == (
        "the identity provider refused the token exchange (HTTP 400): invalid_grant: the ID token expired"
    )
    assert idp_client.token_requests == []


async def test_identity_assertion_takes_a_grant_minted_elsewhere(idp_client: Servers) -> None:
    asked: list[tuple[str, str]] = []

    async def id_jag(audience: str, resource: str) -> str:
        asked.append((audience, resource))
        return "jag-from-the-host"

    await post_twice(
        idp_client,
        enterprise(idp_token_endpoint=None, idp_client_id=None, id_token=None, assertion_provider=id_jag),
    )
    assert asked == [(BASE, f"{BASE}/mcp")]
    assert idp_client.idp_requests == []
    ((form, _),) = idp_client.token_requests
    assert form["assertion"] == "jag-from-the-host"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"client_secret": ""}, "auth.client_secret"),
        ({"issuer": None}, "auth.issuer"),
        ({"idp_token_endpoint": None}, "auth.idp_token_endpoint"),
        ({"idp_client_id": ""}, "auth.idp_client_id"),
        ({"id_token": None}, "auth.id_token"),
        ({"assertion_provider": _assertion}, "auth.assertion_provider"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "auth.token_endpoint_auth_method"),
    ],
)
def test_invalid_identity_assertion_names_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(trio_mcp.ConfigError) as info:
        enterprise(**options)
    assert info.value.key == key


# -- secrets and the mcpServers auth key ------------------------------------------------------------


def test_keys_and_tokens_stay_out_of_reprs_and_descriptions() -> None:
    signed = trio_mcp.PrivateKeyJwtAuth(client_id="svc", private_key=EC_PEM, signing_algorithm="ES256")
    assisted = enterprise(idp_client_secret="idp-s3cret")
    transport = trio_mcp.HttpTransport(url=f"{BASE}/mcp", auth=assisted)
    texts = [
        repr(signed),
        repr(assisted),
        repr(transport),
        repr(trio_mcp.ServerConfig(name="x", transport=transport)),
        json.dumps(describe_auth(signed)),
        json.dumps(describe_auth(assisted)),
    ]
    for text in texts:
        assert "PRIVATE KEY" not in text and "s3cret" not in text and "user-id-token" not in text, text
    assert repr(signed) == (
        "PrivateKeyJwtAuth(client_id='svc', private_key='***', signing_algorithm='ES256', scope=None, "
        "store=<InMemoryTokenStore tokens=None>)"
    )
    assert describe_auth(signed) == {
        "kind": "private_key_jwt",
        "client_id": "svc",
        "private_key": "***",
        "signing_algorithm": "ES256",
        "scope": None,
        "issuer": None,
    }
    assert describe_auth(assisted) == {
        "kind": "identity_assertion",
        "client_id": "mcp-client",
        "client_secret": "***",
        "issuer": BASE,
        "scope": None,
        "idp_token_endpoint": f"{IDP}/token",
        "idp_client_id": "idp-client",
        "id_token": "***",
    }


def parse_auth(auth: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    config = trio_mcp.parse_server_entry("web", {"url": f"{BASE}/mcp", "auth": auth}, environ=environ or {})
    assert config is not None and isinstance(config.transport, trio_mcp.HttpTransport)
    return config.transport.auth, config


def test_the_auth_key_takes_both_kinds(tmp_path: Path) -> None:
    signed, config = parse_auth(
        {"type": "private_key_jwt", "clientId": "svc", "privateKey": "${KEY}", "signingAlgorithm": "ES256"},
        {"KEY": EC_PEM},
    )
    assert isinstance(signed, trio_mcp.PrivateKeyJwtAuth)
    assert (signed.client_id, signed.private_key, signed.signing_algorithm) == ("svc", EC_PEM, "ES256")
    assert EC_PEM in config.secrets and "PRIVATE KEY" not in repr(config)

    from_file, _ = parse_auth(
        {
            "type": "private_key_jwt",
            "clientId": "svc",
            "privateKeyFile": str(tmp_path / "k.pem"),
            "issuer": BASE,
        }
    )
    assert (from_file.private_key, from_file.private_key_file, from_file.issuer) == (
        None,
        str(tmp_path / "k.pem"),
        BASE,
    )

    entry = {
        "type": "identity_assertion",
        "clientId": "mcp-client",
        "clientSecret": "mcp-s3cret",
        "issuer": BASE,
        "idpTokenEndpoint": f"{IDP}/token",
        "idpClientId": "idp-client",
        "idToken": "user-id-token",
        "tokenEndpointAuthMethod": "client_secret_post",
    }
    assisted, _ = parse_auth(entry)
    assert isinstance(assisted, trio_mcp.IdentityAssertionAuth)
    assert (assisted.issuer, assisted.id_token, assisted.token_endpoint_auth_method) == (
        BASE,
        "user-id-token",
        "client_secret_post",
    )


async def test_an_id_token_file_is_read_for_each_exchange(tmp_path: Path) -> None:
    token_file = tmp_path / "id_token"
    entry = {
        "type": "identity_assertion",
        "clientId": "mcp-client",
        "clientSecret": "mcp-s3cret",
        "issuer": BASE,
        "idpTokenEndpoint": f"{IDP}/token",
        "idpClientId": "idp-client",
        "idTokenFile": str(token_file),
    }
    assisted, _ = parse_auth(entry)
    assert callable(assisted.id_token)
    token_file.write_text("first\n")
    assert await assisted.id_token() == "first"
    token_file.write_text("refreshed\n")
    assert await assisted.id_token() == "refreshed"


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (
            {"type": "private_key_jwt", "clientId": "svc"},
            "mcpServers.web.auth.privateKey: give one of 'privateKey' and 'privateKeyFile'",
        ),
        (
            {"type": "private_key_jwt", "clientId": "svc", "privateKey": "nope"},
            "mcpServers.web.auth.privateKey: is not a PEM private key that can sign with RS256",
        ),
        (
            {
                "type": "private_key_jwt",
                "clientId": "svc",
                "privateKeyFile": "/k",
                "signingAlgorithm": "HS256",
            },
            "mcpServers.web.auth.signingAlgorithm: must be 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', "
            "'PS512', 'ES256', 'ES384', 'ES512' or 'EdDSA', got 'HS256'",
        ),
        (
            {"type": "identity_assertion", "clientId": "a", "clientSecret": "b", "issuer": BASE},
            "mcpServers.web.auth.idpTokenEndpoint: is required",
        ),
        (
            {
                "type": "identity_assertion",
                "clientId": "a",
                "clientSecret": "b",
                "issuer": BASE,
                "idpTokenEndpoint": f"{IDP}/token",
                "idpClientId": "c",
            },
            "mcpServers.web.auth.idToken: give one of 'idToken' and 'idTokenFile'",
        ),
        (
            {"type": "private_key_jwt", "clientId": "svc", "privateKeyPath": "/k"},
            "mcpServers.web.auth.privateKeyPath: unknown key; did you mean 'privateKey'?",
        ),
    ],
)
def test_the_auth_key_names_what_is_wrong(auth: dict[str, Any], message: str) -> None:
    with pytest.raises(trio_mcp.ConfigError) as info:
        parse_auth(auth)
    assert str(info.value) == message

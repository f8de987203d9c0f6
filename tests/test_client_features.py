"""Client features (elicitation with schema defaults, sampling, roots) and HTTP authorization.

In-memory SDK servers under virtual time; the OAuth tests run the SDK's provider against an
in-process ASGI app (a protected MCP endpoint plus a tiny authorization server), no sockets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthToken
from mcp_types import (
    CallToolResult,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    Implementation,
    SamplingMessage,
    TextContent,
)

import trio_mcp
from trio_mcp._auth import build_httpx_auth, describe_auth

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "default": "John Doe"},
        "age": {"type": "integer", "default": 30},
        "score": {"type": "number", "default": 95.5},
        "status": {"type": "string", "enum": ["active", "inactive"], "default": "active"},
        "verified": {"type": "boolean", "default": True},
        "nickname": {"type": "string"},
    },
}


def make_server(name: str = "asker") -> MCPServer:
    server = MCPServer(name)

    @server.tool()
    async def ask(ctx: Context) -> str:
        result = await ctx.request_context.session.elicit_form("who are you?", SCHEMA)
        return json.dumps({"action": result.action, "content": result.content}, sort_keys=True)

    @server.tool()
    async def summarize(text: str, ctx: Context) -> str:
        result = await ctx.request_context.session.create_message(
            [SamplingMessage(role="user", content=TextContent(type="text", text=text))], max_tokens=20
        )
        assert isinstance(result.content, TextContent)
        return f"{result.model}: {result.content.text}"

    @server.tool()
    async def roots(ctx: Context) -> str:
        listed = await ctx.request_context.session.list_roots()
        return ",".join(str(r.uri) for r in listed.roots)

    @server.tool()
    async def client_name(ctx: Context) -> str:
        params = ctx.request_context.session.client_params
        return params.client_info.name if params is not None else "?"

    return server


def config(name: str, server: MCPServer) -> trio_mcp.ServerConfig:
    return trio_mcp.ServerConfig(
        name=name,
        transport=trio_mcp.MemoryTransport(server=server),
        policy=trio_mcp.ServerPolicy(protocol="legacy", probe="none"),
    )


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


# -- schema defaults ---------------------------------------------------------------------------


def test_apply_schema_defaults_fills_only_missing_properties() -> None:
    content = trio_mcp.apply_schema_defaults(SCHEMA, {"name": "Ada", "age": None})
    assert content == {
        "name": "Ada",
        "age": None,
        "score": 95.5,
        "status": "active",
        "verified": True,
    }
    assert trio_mcp.apply_schema_defaults({"type": "object"}, None) == {}


async def test_elicitation_handler_result_gets_schema_defaults(autojump_clock: Any) -> None:
    seen: list[tuple[str | None, str]] = []

    async def elicit(server: str | None, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        seen.append((server, params.message))
        return ElicitResult(action="accept", content={"name": "Ada"})

    client = trio_mcp.ClientFeatures(elicitation=elicit)
    async with trio_mcp.open_manager([config("asker", make_server())], client=client) as manager:
        result = await manager.call_tool("ask", {})
    answer = json.loads(text_of(result))
    assert answer == {
        "action": "accept",
        "content": {"name": "Ada", "age": 30, "score": 95.5, "status": "active", "verified": True},
    }
    assert seen == [("asker", "who are you?")]


async def test_elicitation_defaults_can_be_turned_off_and_decline_is_untouched(autojump_clock: Any) -> None:
    async def accept_empty(server: str | None, params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="accept", content={})

    async def decline(server: str | None, params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="decline")

    client = trio_mcp.ClientFeatures(
        elicitation=accept_empty,
        apply_elicitation_defaults=False,
        servers={"b": trio_mcp.ClientFeatures(elicitation=decline)},
    )
    async with trio_mcp.open_manager(
        [config("a", make_server("a")), config("b", make_server("b"))], client=client
    ) as m:
        a = json.loads(text_of(await m.call_tool("ask", {}, preferred=["a"])))
        b = json.loads(text_of(await m.call_tool("ask", {}, preferred=["b"])))
    assert a == {"action": "accept", "content": {}}
    assert b == {"action": "decline", "content": None}


async def test_sampling_and_roots_and_client_info(autojump_clock: Any) -> None:
    asked: list[str | None] = []

    async def sample(server: str | None, params: CreateMessageRequestParams) -> CreateMessageResult:
        asked.append(server)
        message = params.messages[0].content
        assert isinstance(message, TextContent)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=message.text.upper()), model="echo-1"
        )

    async def dynamic_roots(server: str | None) -> list[Any]:
        return [f"file:///srv/{server}"]

    client = trio_mcp.ClientFeatures(
        sampling=sample,
        roots=["file:///work", "file:///tmp"],
        client_info=Implementation(name="fleet-client", version="9.9"),
        servers={"b": trio_mcp.ClientFeatures(roots=dynamic_roots)},
    )
    async with trio_mcp.open_manager(
        [config("a", make_server("a")), config("b", make_server("b"))], client=client
    ) as m:
        assert text_of(await m.call_tool("summarize", {"text": "hi"}, preferred=["a"])) == "echo-1: HI"
        assert text_of(await m.call_tool("roots", {}, preferred=["a"])) == "file:///work,file:///tmp"
        assert text_of(await m.call_tool("roots", {}, preferred=["b"])) == "file:///srv/b"
        assert text_of(await m.call_tool("client_name", {}, preferred=["a"])) == "fleet-client"
        caps = m.supervisor("a").connection
        assert caps is not None
    assert asked == ["a"]


async def test_without_features_server_requests_are_refused(autojump_clock: Any) -> None:
    async with trio_mcp.open_manager([config("a", make_server("a"))]) as manager:
        with pytest.raises(trio_mcp.InvocationFailedError, match="Sampling not supported"):
            await manager.call_tool("summarize", {"text": "hi"})


async def test_features_offered_to_one_server_only_are_refused_to_the_others(autojump_clock: Any) -> None:
    async def sample(server: str | None, params: CreateMessageRequestParams) -> CreateMessageResult:
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="ok"), model="m")

    async def elicit(server: str | None, params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="decline")

    only_b = trio_mcp.ClientFeatures(
        servers={"b": trio_mcp.ClientFeatures(sampling=sample, elicitation=elicit, roots=["file:///b"])}
    )
    assert repr(only_b) == "<ClientFeatures none overrides=['b']>"
    async with trio_mcp.open_manager(
        [config("a", make_server("a")), config("b", make_server("b"))], client=only_b
    ) as m:
        assert text_of(await m.call_tool("summarize", {"text": "hi"}, preferred=["b"])) == "m: ok"
        assert json.loads(text_of(await m.call_tool("ask", {}, preferred=["b"])))["action"] == "decline"
        assert text_of(await m.call_tool("roots", {}, preferred=["b"])) == "file:///b"
        for tool, arguments, refusal in [
            ("summarize", {"text": "hi"}, "sampling is not supported for this server"),
            ("ask", {}, "elicitation is not supported for this server"),
            ("roots", {}, "roots are not offered to this server"),
        ]:
            with pytest.raises(trio_mcp.InvocationFailedError, match=refusal):
                await m.call_tool(tool, arguments, preferred=["a"], failover="never")


def test_client_features_validation() -> None:
    with pytest.raises(trio_mcp.ConfigError):
        trio_mcp.ClientFeatures(roots="file:///x")
    with pytest.raises(trio_mcp.ConfigError):
        trio_mcp.ClientFeatures(elicitation=42)  # type: ignore[arg-type]
    for kwargs, key in [
        ({"sampling": "model"}, "client.sampling"),
        ({"roots": [42]}, "client.roots"),
        ({"client_info": {"name": "x", "version": "1"}}, "client.client_info"),
        ({"servers": {"a": "features"}}, "client.servers"),
        ({"servers": ["a"]}, "client.servers"),
    ]:
        with pytest.raises(trio_mcp.ConfigError) as info:
            trio_mcp.ClientFeatures(**kwargs)  # type: ignore[arg-type]
        assert info.value.key == key, kwargs
    features = trio_mcp.ClientFeatures(roots=["file:///x"])
    assert "roots" in repr(features)
    assert set(features.session_options()) == {"list_roots_callback"}
    assert trio_mcp.ClientFeatures().session_options() == {}


# -- authorization -----------------------------------------------------------------------------


def test_secrets_stay_out_of_reprs_and_descriptions() -> None:
    bearer = trio_mcp.BearerAuth(token="s3cret-token")
    transport = trio_mcp.HttpTransport(url="http://127.0.0.1:9/mcp", auth=bearer)
    oauth = trio_mcp.OAuthAuth(
        redirect_handler=_noop_redirect,
        callback_handler=_no_callback,
        client_id="app",
        client_secret="hunter2",
    )
    creds = trio_mcp.ClientCredentialsAuth(client_id="svc", client_secret="hunter3")
    texts = [
        repr(bearer),
        repr(transport),
        repr(oauth),
        repr(creds),
        repr(trio_mcp.ServerConfig(name="x", transport=transport)),
        json.dumps(describe_auth(bearer)),
        json.dumps(describe_auth(oauth)),
        json.dumps(describe_auth(creds)),
        repr(build_httpx_auth(bearer, transport.url)),
    ]
    for text in texts:
        assert "s3cret" not in text and "hunter" not in text, text
    assert describe_auth(bearer) == {"kind": "bearer", "token": "***"}
    with pytest.raises(trio_mcp.ConfigError):
        trio_mcp.BearerAuth(token="a\nb")
    with pytest.raises(trio_mcp.ConfigError):
        trio_mcp.HttpTransport(url="http://x", auth="token")  # type: ignore[arg-type]


async def test_file_token_store_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "tokens" / "store.json"
    a = trio_mcp.FileTokenStore(path, key="a")
    b = trio_mcp.FileTokenStore(path, key="b")
    assert await a.get_tokens() is None and await a.get_client_info() is None
    await a.set_tokens(OAuthToken(access_token="at-1", token_type="Bearer", refresh_token="rt-1"))
    await a.set_client_info(
        OAuthClientInformationFull(client_id="cid", redirect_uris=["http://localhost:3000/callback"])
    )
    await b.set_tokens(OAuthToken(access_token="at-2", token_type="Bearer"))
    again = trio_mcp.FileTokenStore(path, key="a")
    tokens = await again.get_tokens()
    assert tokens is not None and tokens.access_token == "at-1" and tokens.refresh_token == "rt-1"
    info = await again.get_client_info()
    assert info is not None and info.client_id == "cid"
    other = await trio_mcp.FileTokenStore(path, key="b").get_tokens()
    assert other is not None and other.access_token == "at-2"
    assert path.stat().st_mode & 0o777 == 0o600
    assert "at-1" not in repr(again)
    path.write_text("not json")
    assert await again.get_tokens() is None


async def test_in_memory_store_is_the_default_and_shared_across_connections() -> None:
    oauth = trio_mcp.OAuthAuth(redirect_handler=_noop_redirect, callback_handler=_no_callback)
    assert isinstance(oauth.store, trio_mcp.InMemoryTokenStore)
    await oauth.store.set_tokens(OAuthToken(access_token="x", token_type="Bearer"))
    assert (await oauth.store.get_tokens()) is not None
    assert "x" not in repr(oauth.store).replace("Store", "")


async def _noop_redirect(url: str) -> None:
    return None


async def _no_callback() -> AuthorizationCodeResult:
    raise AssertionError("no interactive authorization expected")


PRM_PATH = "/.well-known/oauth-protected-resource/mcp"


class MiniAuthServer:
    """An in-process protected MCP endpoint and authorization server, as an httpx2 handler."""

    def __init__(self) -> None:
        self.issued: list[str] = []
        self.registered = 0
        self.refreshes = 0
        self.codes: dict[str, str] = {}
        self.valid: set[str] = set()
        self.expire_next = False

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> httpx2.Response:
        return httpx2.Response(status, json=body, headers=headers or {})

    def _issue(self) -> dict[str, Any]:
        token = f"at-{len(self.issued) + 1}"
        self.issued.append(token)
        self.valid.add(token)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": f"rt-{len(self.issued)}",
        }

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        from urllib.parse import parse_qs

        path = request.url.path
        base = "http://mcp.test"
        if path == PRM_PATH:
            return self._json(200, {"resource": f"{base}/mcp", "authorization_servers": [base]})
        if path == "/.well-known/oauth-authorization-server":
            return self._json(
                200,
                {
                    "issuer": base,
                    "authorization_endpoint": f"{base}/authorize",
                    "token_endpoint": f"{base}/token",
                    "registration_endpoint": f"{base}/register",
                    "response_types_supported": ["code"],
                    "code_challenge_methods_supported": ["S256"],
                },
            )
        if path == "/register":
            self.registered += 1
            body = json.loads(request.content)
            return self._json(201, {**body, "client_id": f"client-{self.registered}"})
        if path == "/token":
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            if form["grant_type"] == "refresh_token":
                self.refreshes += 1
                return self._json(200, self._issue())
            assert form["grant_type"] == "authorization_code" and form["code"] in self.codes
            assert form.get("code_verifier")
            return self._json(200, self._issue())
        if path.startswith("/.well-known/"):
            return httpx2.Response(404)
        # the MCP endpoint itself
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.valid:
            return httpx2.Response(
                401,
                headers={"WWW-Authenticate": f'Bearer resource_metadata="{base}{PRM_PATH}"'},
            )
        return self._json(200, {"ok": token})


async def test_oauth_flow_discovers_registers_authorizes_with_pkce_then_refreshes() -> None:
    server = MiniAuthServer()
    visited: list[str] = []
    pending: dict[str, str] = {}

    async def redirect(url: str) -> None:
        from urllib.parse import parse_qs, urlsplit

        visited.append(url)
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["code_challenge_method"] == "S256" and query["code_challenge"]
        server.codes["code-1"] = query["client_id"]
        pending["state"] = query["state"]

    async def callback() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code="code-1", state=pending["state"])

    store = trio_mcp.InMemoryTokenStore()
    oauth = trio_mcp.OAuthAuth(redirect_handler=redirect, callback_handler=callback, store=store)
    auth = build_httpx_auth(oauth, "http://mcp.test/mcp")
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(server), auth=auth) as http:
        response = await http.post("http://mcp.test/mcp", json={})
        assert response.json() == {"ok": "at-1"}
        assert server.registered == 1 and len(visited) == 1
        response = await http.post("http://mcp.test/mcp", json={})
        assert response.json() == {"ok": "at-1"}
    tokens = await store.get_tokens()
    assert tokens is not None and tokens.access_token == "at-1"
    info = await store.get_client_info()
    assert info is not None and info.client_id == "client-1"

    # A new connection (new provider) reuses the stored registration and refreshes an
    # expired token without sending the user anywhere.
    await store.set_tokens(tokens.model_copy(update={"expires_in": -10}))
    auth = build_httpx_auth(oauth, "http://mcp.test/mcp")
    assert auth is not None
    provider: Any = auth
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(server), auth=auth) as http:
        await provider._initialize()
        provider.context.token_expiry_time = 1.0  # long expired
        response = await http.post("http://mcp.test/mcp", json={})
    assert response.json() == {"ok": "at-2"}
    assert server.refreshes == 1 and server.registered == 1 and len(visited) == 1


async def test_bearer_auth_header_is_sent() -> None:
    seen: list[str | None] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.headers.get("authorization"))
        return httpx2.Response(200)

    auth = build_httpx_auth(trio_mcp.BearerAuth(token="tok"), "http://x/mcp")
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler), auth=auth) as http:
        await http.get("http://x/mcp")
    assert seen == ["Bearer tok"]


async def test_pre_registered_client_skips_registration() -> None:
    server = MiniAuthServer()
    state: dict[str, str] = {}

    async def redirect(url: str) -> None:
        from urllib.parse import parse_qs, urlsplit

        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["client_id"] == "pre-app"
        server.codes["c"] = "pre-app"
        state["state"] = query["state"]

    async def callback() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code="c", state=state["state"])

    oauth = trio_mcp.OAuthAuth(
        redirect_handler=redirect, callback_handler=callback, client_id="pre-app", client_secret="pre-secret"
    )
    auth = build_httpx_auth(oauth, "http://mcp.test/mcp")
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(server), auth=auth) as http:
        response = await http.post("http://mcp.test/mcp", json={})
    assert response.json() == {"ok": "at-1"}
    assert server.registered == 0

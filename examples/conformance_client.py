"""A client for the official MCP conformance suite (``@modelcontextprotocol/conformance``), built
on trio_mcp's public API.

The suite starts a test server per scenario and runs::

    python examples/conformance_client.py <server-url>

with ``MCP_CONFORMANCE_SCENARIO`` (and, for some scenarios, ``MCP_CONFORMANCE_CONTEXT``, a JSON
object) in the environment. The URL is registered as a server in a trio_mcp manager and every
step goes through the manager: the handshake, tool listing and calls, answering the server's
elicitation requests, and authorization (static, OAuth 2.1 with PKCE, client credentials).

Run ``scripts/conformance.sh`` to run every client scenario against this client.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import trio
from mcp.shared.auth import AuthorizationCodeResult
from mcp_types import ElicitRequestParams, ElicitResult, Implementation

import trio_mcp

SERVER = "conformance"
CIMD_CLIENT_METADATA_URL = "https://conformance-test.local/client-metadata.json"
REDIRECT_URI = "http://localhost:3000/callback"


class HeadlessAuthorization:
    """Completes an authorization-code redirect without a browser: the suite's authorization
    server approves at once and redirects to ``redirect_uri`` with the code; we read it from
    the ``Location`` header instead of following it."""

    def __init__(self) -> None:
        self._result: AuthorizationCodeResult | None = None

    async def redirect(self, authorization_url: str) -> None:
        async with httpx2.AsyncClient(follow_redirects=False, timeout=10.0) as http:
            response = await http.get(authorization_url)
        location = response.headers.get("location")
        if not location:
            raise RuntimeError(f"authorization endpoint answered {response.status_code} without a redirect")
        query = parse_qs(urlsplit(location).query)
        if "code" not in query:
            raise RuntimeError(f"no authorization code in the redirect: {query.get('error')}")
        self._result = AuthorizationCodeResult(
            code=query["code"][0],
            state=query.get("state", [None])[0],
            iss=query.get("iss", [None])[0],
        )

    async def callback(self) -> AuthorizationCodeResult:
        if self._result is None:
            raise RuntimeError("the authorization redirect has not happened")
        result, self._result = self._result, None
        return result


def auth_for(scenario: str, context: dict[str, Any]) -> trio_mcp.BearerAuth | trio_mcp.OAuthAuth | Any:
    if not scenario.startswith("auth/"):
        return None
    if scenario == "auth/client-credentials-basic":
        return trio_mcp.ClientCredentialsAuth(
            client_id=context["client_id"], client_secret=context["client_secret"]
        )
    headless = HeadlessAuthorization()
    kwargs: dict[str, Any] = {}
    if scenario == "auth/pre-registration":
        kwargs = {"client_id": context["client_id"], "client_secret": context.get("client_secret")}
    return trio_mcp.OAuthAuth(
        redirect_handler=headless.redirect,
        callback_handler=headless.callback,
        redirect_uri=REDIRECT_URI,
        client_name="trio-mcp-conformance",
        client_metadata_url=CIMD_CLIENT_METADATA_URL,
        **kwargs,
    )


async def accept_with_defaults(server: str | None, params: ElicitRequestParams) -> ElicitResult:
    """Accept every form without filling anything in: the library applies the schema's defaults."""
    return ElicitResult(action="accept", content={})


async def run(url: str, scenario: str, context: dict[str, Any]) -> None:
    transport = trio_mcp.HttpTransport(url=url, auth=auth_for(scenario, context))
    config = trio_mcp.ServerConfig(
        name=SERVER,
        transport=transport,
        # Auto-detect the era, as for any server: the suite's servers speak the 2025 revisions and
        # answer server/discover with an empty result, so the client falls back to initialize.
        policy=trio_mcp.ServerPolicy(protocol="auto", probe="none", handshake_timeout=20, call_timeout=20),
    )
    client = trio_mcp.ClientFeatures(
        elicitation=accept_with_defaults,
        client_info=Implementation(name="trio-mcp-conformance", version=trio_mcp.__version__),
    )
    async with trio_mcp.open_manager([config], client=client) as manager:
        await manager.acquire(SERVER)
        snapshot = manager.server(SERVER)
        print(f"connected: protocol {snapshot.protocol_version}", file=sys.stderr)
        tools = await manager.list_tools()
        names = [entry.key for entry in tools]
        print(f"tools: {names}", file=sys.stderr)
        if scenario == "tools_call":
            result = await manager.call_tool("add_numbers", {"a": 5, "b": 3})
            print(f"add_numbers: {result.content}", file=sys.stderr)
        elif scenario == "elicitation-sep1034-client-defaults":
            result = await manager.call_tool("test_client_elicitation_defaults", {})
            print(f"elicitation tool: {result.content}", file=sys.stderr)
        elif scenario == "sse-retry":
            result = await manager.call_tool("test_reconnection", {})
            print(f"reconnection tool: {result.content}", file=sys.stderr)
        elif scenario.startswith("auth/"):
            if "test-tool" in names:
                await manager.call_tool("test-tool", {})


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: conformance_client.py <server-url>", file=sys.stderr)
        return 2
    url = sys.argv[-1]
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "initialize")
    raw_context = os.environ.get("MCP_CONFORMANCE_CONTEXT")
    context = json.loads(raw_context) if raw_context else {}
    try:
        trio.run(run, url, scenario, context)
    except Exception as exc:
        print(f"{scenario}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

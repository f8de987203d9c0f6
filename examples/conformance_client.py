"""A client for the official MCP conformance suite (``@modelcontextprotocol/conformance``), built
on trio_mcp's public API.

The suite starts a test server per scenario and runs::

    python examples/conformance_client.py <server-url>

with ``MCP_CONFORMANCE_SCENARIO`` (and, for some scenarios, ``MCP_CONFORMANCE_CONTEXT``, a JSON
object) in the environment. The URL is registered as a server in a trio_mcp manager and every
step goes through the manager: the handshake, tool listing and calls, answering the server's
elicitation requests (as server requests, or as input-required results), and authorization
(OAuth 2.1 with PKCE, client credentials with a secret or a signed JWT, enterprise-managed
authorization).

Run ``scripts/conformance.sh`` to run every client scenario against this client.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import trio
from mcp.shared.auth import AuthorizationCodeResult
from mcp_types import CreateMessageRequestParams, ElicitRequestParams, ElicitResult, ErrorData, Implementation

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


async def authorization_server_of(url: str) -> str:
    """The first authorization server the MCP server's protected-resource metadata names.

    Enterprise-managed authorization takes the authorization server as configuration; the
    suite does not pass it, so this client reads it the way a deployment would look it up.
    """
    from mcp.client.auth.utils import build_protected_resource_metadata_discovery_urls

    async with httpx2.AsyncClient(timeout=10.0) as http:
        for metadata_url in build_protected_resource_metadata_discovery_urls(None, url):
            response = await http.get(metadata_url)
            if response.status_code == 200:
                return str(response.json()["authorization_servers"][0])
    raise RuntimeError("the MCP server publishes no protected-resource metadata")


Auth = (
    trio_mcp.OAuthAuth
    | trio_mcp.ClientCredentialsAuth
    | trio_mcp.PrivateKeyJwtAuth
    | trio_mcp.IdentityAssertionAuth
)


async def auth_for(url: str, scenario: str, context: dict[str, Any]) -> Auth | None:
    if not scenario.startswith("auth/"):
        return None
    if scenario == "auth/client-credentials-basic":
        return trio_mcp.ClientCredentialsAuth(
            client_id=context["client_id"], client_secret=context["client_secret"]
        )
    if scenario == "auth/client-credentials-jwt":
        return trio_mcp.PrivateKeyJwtAuth(
            client_id=context["client_id"],
            private_key=context["private_key_pem"],
            signing_algorithm=context.get("signing_algorithm", "ES256"),
        )
    if scenario == "auth/enterprise-managed-authorization":
        return trio_mcp.IdentityAssertionAuth(
            client_id=context["client_id"],
            client_secret=context["client_secret"],
            issuer=await authorization_server_of(url),
            idp_token_endpoint=context["idp_token_endpoint"],
            idp_client_id=context["idp_client_id"],
            id_token=context["idp_id_token"],
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


async def no_model(server: str | None, params: CreateMessageRequestParams) -> ErrorData:
    """This client has no language model to sample from."""
    return ErrorData(code=-32603, message="no model is configured")


async def run(url: str, scenario: str, context: dict[str, Any]) -> None:
    transport = trio_mcp.HttpTransport(url=url, auth=await auth_for(url, scenario, context))
    config = trio_mcp.ServerConfig(
        name=SERVER,
        transport=transport,
        # Auto-detect the era, as for any server: the suite's servers speak the 2025 revisions and
        # answer server/discover with an empty result, so the client falls back to initialize.
        policy=trio_mcp.ServerPolicy(protocol="auto", probe="none", handshake_timeout=20, call_timeout=20),
    )
    client = trio_mcp.ClientFeatures(
        elicitation=accept_with_defaults,
        # Declared where the suite checks that every capability is declared.
        sampling=no_model if scenario == "request-metadata" else None,
        roots=[] if scenario == "request-metadata" else None,
        client_info=Implementation(name="trio-mcp-conformance", version=trio_mcp.__version__),
    )
    async with trio_mcp.open_manager([config], client=client) as manager:
        await manager.acquire(SERVER)
        snapshot = manager.server(SERVER)
        print(f"connected: protocol {snapshot.protocol_version}", file=sys.stderr)
        tools = await manager.list_tools()
        print(f"tools: {[entry.key for entry in tools]}", file=sys.stderr)
        await exercise(manager, scenario, context, {entry.key: entry for entry in tools})


async def call(manager: trio_mcp.Manager, name: str, arguments: dict[str, Any]) -> None:
    result = await manager.call_tool(name, arguments)
    print(f"{name}: {result.content}", file=sys.stderr)


async def exercise(
    manager: trio_mcp.Manager, scenario: str, context: dict[str, Any], tools: dict[str, trio_mcp.CatalogEntry]
) -> None:
    """What each scenario asks of the client once it is connected and has listed the tools."""
    if scenario in ("tools_call", "request-metadata"):
        await call(manager, "add_numbers", {"a": 5, "b": 3})
    elif scenario == "http-standard-headers":
        # Every kind of named request, so each carries its Mcp-Method and Mcp-Name headers.
        for name, entry in tools.items():
            await call(manager, name, stub_arguments(getattr(entry.item, "input_schema", {})))
        for resource in await manager.list_resources():
            await manager.read_resource(resource.key)
        for prompt in await manager.list_prompts():
            await manager.get_prompt(prompt.key)
    elif scenario == "elicitation-sep1034-client-defaults":
        await call(manager, "test_client_elicitation_defaults", {})
    elif scenario == "sse-retry":
        await call(manager, "test_reconnection", {})
    elif scenario == "sep-2322-client-request-state":
        # Each call is answered with an input-required result first: the manager fulfils the
        # elicitation through our handler and retries. The unrelated call in between must carry
        # nothing of the other calls' rounds.
        await call(manager, "test_mrtr_echo_state", {})
        await call(manager, "test_mrtr_unrelated", {})
        await call(manager, "test_mrtr_no_state", {})
        await call(manager, "test_mrtr_no_result_type", {})
    elif scenario == "json-schema-2020-12-preservation":
        # The schema as the catalog holds it, sent back for the suite to compare with its own.
        focal = tools["json_schema_2020_12_tool"].item
        await call(manager, "json_schema_echo", {"schema": getattr(focal, "input_schema", None)})
    elif scenario == "http-custom-headers":
        # The suite names the calls to make; their x-mcp-header parameters travel as headers too.
        for planned in context.get("toolCalls", []):
            if planned["name"] in tools:
                await call(manager, planned["name"], planned.get("arguments") or {})
    elif scenario == "http-invalid-tool-headers":
        # Tools with a malformed x-mcp-header are not in the catalog; every other one is callable.
        for name, entry in tools.items():
            await call(manager, name, stub_arguments(getattr(entry.item, "input_schema", {})))
    elif scenario.startswith("auth/") and "test-tool" in tools:
        await call(manager, "test-tool", {})


def stub_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """A value of the declared type for every required property."""
    by_type: dict[str, Any] = {
        "string": "x",
        "integer": 0,
        "number": 0,
        "boolean": False,
        "object": {},
        "array": [],
    }
    properties = schema.get("properties") or {}
    return {
        name: by_type.get(str((properties.get(name) or {}).get("type")), "x")
        for name in schema.get("required") or []
    }


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
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

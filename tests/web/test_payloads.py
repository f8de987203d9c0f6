"""Exact server payloads of the HTTP API: what is redacted, and the failure counters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from _fleet import policy

import trio_mcp
from trio_mcp.testing import ScriptedServer, memory_server
from web.app import create_app
from web.schemas import transport_dict

API = "/api/v1/mcp"
# Nothing reconnects by itself during a test: every failure below is one the test caused.
PATIENT = policy(
    health_interval=3600.0, backoff=trio_mcp.BackoffPolicy(initial=3600.0, cap=3600.0, jitter=0.0)
)


@asynccontextmanager
async def api(
    configs: list[trio_mcp.ServerConfig], **app_options: Any
) -> AsyncIterator[tuple[trio_mcp.Manager, httpx.AsyncClient]]:
    async with trio_mcp.open_manager(configs, clock_anchor=1_700_000_000.0) as manager:
        # These tests register servers on 127.0.0.1; tests/web/test_hardening.py checks the default.
        app_options.setdefault("allow_private_urls", True)
        transport = httpx.ASGITransport(app=create_app(manager, **app_options))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield manager, client


async def server_payloads(client: httpx.AsyncClient, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The server's payload from ``GET /servers/{name}`` and its entry in ``GET /servers``."""
    one = await client.get(f"{API}/servers/{name}")
    assert one.status_code == 200, one.text
    listed = await client.get(f"{API}/servers")
    assert listed.status_code == 200, listed.text
    (entry,) = [s for s in listed.json()["servers"] if s["name"] == name]
    result: tuple[dict[str, Any], dict[str, Any]] = (one.json(), entry)
    return result


# -- redaction -----------------------------------------------------------------------------------

STDIO_ENTRY = {
    "name": "local",
    "command": "/usr/bin/some-server",
    "args": [
        "--api-key=k-s3cret",
        "--token",
        "t-s3cret",
        "--client-secret=c-s3cret",
        "--verbose",
        "--port",
        "9",
        "--password",
        "p-s3cret",
        "positional",
    ],
    "env": {"API_KEY": "e-s3cret", "DEBUG": "1"},
    "cwd": "/srv",
    "connectOnStart": False,
}


async def test_stdio_secrets_are_redacted_in_get_and_list() -> None:
    async with api([], allow_stdio=True) as (manager, client):
        response = await client.post(f"{API}/servers", json=STDIO_ENTRY)
        assert response.status_code == 201, response.text
        expected = {
            "kind": "stdio",
            "command": "/usr/bin/some-server",
            "args": [
                "--api-key=***",
                "--token",
                "***",
                "--client-secret=***",
                "--verbose",
                "--port",
                "9",
                "--password",
                "***",
                "positional",
            ],
            "env": {"API_KEY": "***", "DEBUG": "***"},
            "cwd": "/srv",
        }
        assert response.json()["transport"] == expected
        one, listed = await server_payloads(client, "local")
        assert one["transport"] == expected
        assert listed["transport"] == expected
        assert "s3cret" not in (await client.get(f"{API}/servers")).text
        # The manager itself still has the real values: only the payloads are redacted.
        transport = manager.config("local").transport
        assert isinstance(transport, trio_mcp.StdioTransport)
        assert transport.args[0] == "--api-key=k-s3cret"
        assert transport.env == {"API_KEY": "e-s3cret", "DEBUG": "1"}


async def test_http_secrets_are_redacted_in_get_and_list() -> None:
    entry = {
        "name": "remote",
        "url": "https://alice:pa55word@example.test:8443/mcp?api_key=q-s3cret&flag&v=2",
        "headers": {"Authorization": "Bearer h-s3cret", "X-Trace": "on"},
        "connectOnStart": False,
    }
    async with api([]) as (_, client):
        assert (await client.post(f"{API}/servers", json=entry)).status_code == 201
        expected = {
            "kind": "http",
            "url": "https://alice:***@example.test:8443/mcp?api_key=***&flag&v=***",
            "headers": {"Authorization": "***", "X-Trace": "***"},
        }
        one, listed = await server_payloads(client, "remote")
        assert one["transport"] == expected
        assert listed["transport"] == expected


async def test_http_auth_is_described_without_its_secrets() -> None:
    idle = policy(connect_on_start=False)
    configs = [
        trio_mcp.ServerConfig(
            name="bearer",
            transport=trio_mcp.HttpTransport(
                url="http://127.0.0.1:9/mcp", auth=trio_mcp.BearerAuth(token="b-s3cret")
            ),
            policy=idle,
        ),
        trio_mcp.ServerConfig(
            name="machine",
            transport=trio_mcp.HttpTransport(
                url="http://127.0.0.1:9/mcp",
                auth=trio_mcp.ClientCredentialsAuth(client_id="svc", client_secret="c-s3cret", scope="read"),
            ),
            policy=idle,
        ),
    ]
    async with api(configs) as (_, client):
        bearer, bearer_listed = await server_payloads(client, "bearer")
        assert (
            bearer["transport"]
            == bearer_listed["transport"]
            == {
                "kind": "http",
                "url": "http://127.0.0.1:9/mcp",
                "headers": None,
                "auth": {"kind": "bearer", "token": "***"},
            }
        )
        machine, _ = await server_payloads(client, "machine")
        assert machine["transport"]["auth"] == {
            "kind": "client_credentials",
            "client_id": "svc",
            "client_secret": "***",
            "scope": "read",
        }
        assert "s3cret" not in (await client.get(f"{API}/servers")).text


# -- failure counters ----------------------------------------------------------------------------


async def test_consecutive_failures_count_each_failure_and_reset_on_success() -> None:
    server = ScriptedServer("b")
    async with api([memory_server(server, policy=PATIENT)]) as (manager, client):
        await manager.wait_for("b", lambda s: s.session.active)
        one, listed = await server_payloads(client, "b")
        assert (one["consecutive_failures"], listed["consecutive_failures"]) == (0, 0)

        server.go_down()
        await manager.wait_for("b", lambda s: not s.session.active)
        one, listed = await server_payloads(client, "b")  # the lost connection
        assert (one["status"], one["consecutive_failures"], one["retry_count"]) == ("degraded", 1, 1)
        assert listed["consecutive_failures"] == 1

        response = await client.post(f"{API}/servers/b/health-check")  # a refused reconnect
        assert response.status_code == 200
        assert (response.json()["status"], response.json()["consecutive_failures"]) == ("degraded", 2)
        response = await client.post(f"{API}/servers/b/health-check")
        assert (response.json()["status"], response.json()["consecutive_failures"]) == ("unreachable", 3)
        one, listed = await server_payloads(client, "b")
        assert (one["consecutive_failures"], listed["consecutive_failures"]) == (3, 3)
        assert one["consecutive_failures"] == manager.server("b").consecutive_failures

        server.come_up()
        response = await client.post(f"{API}/servers/b/health-check")  # a successful reconnect
        assert response.status_code == 200
        assert (response.json()["status"], response.json()["consecutive_failures"]) == ("recovered", 0)
        one, listed = await server_payloads(client, "b")
        assert (one["consecutive_failures"], one["retry_count"], listed["consecutive_failures"]) == (0, 0, 0)


async def test_values_from_the_environment_are_never_shown_and_never_expanded_over_http(
    monkeypatch: Any,
) -> None:
    monkeypatch.setenv("DEMO_DB_URL", "postgres://app:hunter2@db/app")
    monkeypatch.setenv("DEMO_TENANT", "tenant-7731")
    (configured,) = trio_mcp.parse_mcp_servers(
        {
            "mcpServers": {
                "cfg": {
                    "url": "http://127.0.0.1:9/mcp?tenant=${DEMO_TENANT}",
                    "headers": {"X-Db": "${DEMO_DB_URL}"},
                    "connectOnStart": False,
                }
            }
        }
    )
    async with api([configured], allow_stdio=True) as (manager, client):
        response = await client.post(
            f"{API}/servers",
            json={
                "name": "local",
                "command": "definitely-not-run",
                "args": ["--db", "${DEMO_DB_URL}"],
                "connectOnStart": False,
            },
        )
        assert response.status_code == 201, response.text
        # A registration over HTTP is taken literally: this process's environment is not the
        # caller's to read.
        local = manager.config("local").transport
        assert isinstance(local, trio_mcp.StdioTransport)
        assert local.args == ("--db", "${DEMO_DB_URL}")
        listed = (await client.get(f"{API}/servers")).text
        assert "hunter2" not in listed and "tenant-7731" not in listed
        one = (await client.get(f"{API}/servers/cfg")).json()
        assert one["transport"]["url"] == "http://127.0.0.1:9/mcp?tenant=***"
        assert one["transport"]["headers"] == {"X-Db": "***"}
    (cli,) = trio_mcp.parse_mcp_servers(
        {"mcpServers": {"cli": {"command": "run", "args": ["${DEMO_DB_URL}"], "connectOnStart": False}}}
    )
    assert cli.secrets == frozenset({"postgres://app:hunter2@db/app"})
    assert transport_dict(cli)["args"] == ["***"]


async def test_assertion_based_auth_kinds_show_no_secret() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    async with api([], allow_private_urls=True) as (_, client):
        body = {
            "name": "jwt",
            "url": "http://127.0.0.1:9/mcp",
            "connectOnStart": False,
            "auth": {
                "type": "private_key_jwt",
                "clientId": "app",
                "privateKey": pem,
                "signingAlgorithm": "ES256",
            },
        }
        response = await client.post(f"{API}/servers", json=body)
        assert response.status_code == 201, response.text
        auth = response.json()["transport"]["auth"]
        assert (auth["kind"], auth["client_id"], auth["private_key"]) == ("private_key_jwt", "app", "***")
        assert "PRIVATE KEY" not in response.text

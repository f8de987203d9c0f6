"""The API under attack: SSRF, stdio allowlist, token passthrough, slow and greedy clients,
DNS rebinding (Host / Origin), and secrets in logs."""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from _fleet import policy
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

import trio_mcp
from trio_mcp._cli import main
from trio_mcp.demo_server import build_server
from trio_mcp.testing import ScriptedServer, memory_server
from web.app import create_app
from web.serve import serve

API = "/api/v1/mcp"


@asynccontextmanager
async def api(*servers: ScriptedServer, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    configs = [memory_server(s, policy=policy(health_interval=3600.0)) for s in servers]
    async with trio_mcp.open_manager(configs) as manager:
        transport = httpx.ASGITransport(app=create_app(manager, **options))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield client


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/mcp",
        "http://0177.0.0.1/mcp",
        "http://2130706433/mcp",
        "http://0x7f000001/mcp",
        "http://127.1/mcp",
        "http://[::1]/mcp",
        "http://[::ffff:127.0.0.1]/mcp",
        "http://[fe80::1]/mcp",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/mcp",
        "http://192.168.1.1/mcp",
        "http://0.0.0.0/mcp",
    ],
)
async def test_internal_addresses_are_refused_in_every_spelling(url: str) -> None:
    async with api() as client:
        response = await client.post(f"{API}/servers", json={"name": "x", "url": url})
        assert response.status_code == 403, response.text
        detail = response.json()["detail"]
        assert (detail["error"], detail["field"]) == ("forbidden", "url")
        assert "--allow-private-urls" in detail["message"]
        assert (await client.get(f"{API}/servers")).json()["servers"] == []


async def test_public_addresses_and_the_operators_opt_in_are_accepted() -> None:
    async with api() as client:
        public = {"name": "pub", "url": "http://93.184.216.34/mcp", "connectOnStart": False}
        assert (await client.post(f"{API}/servers", json=public)).status_code == 201
        unresolvable = {"name": "nxd", "url": "http://does-not-resolve.invalid/mcp", "connectOnStart": False}
        assert (await client.post(f"{API}/servers", json=unresolvable)).status_code == 201
    async with api(allow_private_urls=True) as client:
        local = {"name": "local", "url": "http://127.0.0.1:9/mcp", "connectOnStart": False}
        assert (await client.post(f"{API}/servers", json=local)).status_code == 201


async def test_stdio_registration_is_limited_to_the_allowlist_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="web.registry")
    async with api(allow_stdio_commands=["python3 -m trio_mcp.demo_server"]) as client:
        allowed = {
            "name": "demo",
            "command": "python3",
            "args": ["-m", "trio_mcp.demo_server", "--name", "demo"],
            "connectOnStart": False,
        }
        assert (await client.post(f"{API}/servers", json=allowed)).status_code == 201
        for command, args in [("sh", ["-c", "id"]), ("python3", ["-m", "http.server"]), ("python3", [])]:
            body = {"name": "evil", "command": command, "args": args, "connectOnStart": False}
            response = await client.post(f"{API}/servers", json=body)
            assert response.status_code == 403, response.text
            assert response.json()["detail"]["field"] == "command"
        assert (await client.delete(f"{API}/servers/demo")).status_code == 204
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("registered demo (stdio)") for m in messages), messages
    assert any(m.startswith("removed demo") for m in messages), messages


async def test_the_apis_token_never_reaches_an_upstream_server(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[dict[str, str]] = []
    inner = build_server("upstream").streamable_http_app(host="127.0.0.1")

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append({k.decode(): v.decode("latin-1") for k, v in scope["headers"]})
        await inner(scope, receive, send)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = config.errorlog = None
    token = "api-token-5e1f0c"
    stop = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(hypercorn_serve, recording, config))
            binds = await nursery.start(
                functools.partial(
                    serve,
                    [],
                    port=0,
                    token=token,
                    allow_private_urls=True,
                    shutdown_trigger=stop.wait,
                )
            )
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=binds[0], headers=headers, timeout=10) as client:
                body = {"name": "up", "url": f"http://127.0.0.1:{port}/mcp"}
                assert (await client.post(f"{API}/servers", json=body)).status_code == 201
                response = await client.post(
                    f"{API}/invoke/tool", json={"tool_name": "echo", "arguments": {"text": "hi"}}
                )
                assert response.status_code == 200, response.text
                assert (
                    await client.get(f"{API}/servers", headers={"Authorization": "Bearer wrong"})
                ).status_code == 401
            stop.set()
            nursery.cancel_scope.cancel()
    assert seen, "the upstream server saw no request"
    assert not any(token in value for headers in seen for value in headers.values())
    assert not any("authorization" in headers for headers in seen)
    assert token not in caplog.text


async def test_a_dribbled_body_is_cut_off_with_408() -> None:
    stop = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                functools.partial(serve, [], port=0, body_timeout=1.0, shutdown_trigger=stop.wait)
            )
            port = int(binds[0].rsplit(":", 1)[1])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            head = (
                f"POST {API}/invoke/tool HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            )
            await stream.send_all(head.encode())
            start = trio.current_time()
            answer = b""

            async def dribble() -> None:
                for _ in range(100):
                    await stream.send_all(b" ")
                    await trio.sleep(1)

            async with trio.open_nursery() as inner:
                inner.start_soon(dribble)
                while b"\r\n\r\n" not in answer:
                    answer += await stream.receive_some()
                inner.cancel_scope.cancel()
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert trio.current_time() - start < 3
            await stream.aclose()
            stop.set()


async def test_a_rate_limit_answers_429_with_retry_after() -> None:
    async with api(rate_limit="2/s", token="t") as client:
        ok = {"Authorization": "Bearer t"}
        assert (await client.get(f"{API}/servers", headers=ok)).status_code == 200
        assert (await client.get(f"{API}/servers", headers=ok)).status_code == 200
        limited = await client.get(f"{API}/servers", headers=ok)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "1"
        assert limited.json()["detail"]["error"] == "rate_limited"
        # Liveness is never limited.
        assert (await client.get("/api/v1/health")).status_code == 200
    with pytest.raises(ValueError, match="rate limit"):
        create_app(None, rate_limit="lots")


async def test_too_many_invocations_in_flight_are_refused_not_queued() -> None:
    server = ScriptedServer("a")
    server.hang_tool("sleep")
    async with api(server, max_invocations=1) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    client.post,
                    f"{API}/invoke/tool",
                    json={"tool_name": "sleep", "arguments": {"seconds": 1}},
                )
            )
            while server.executions("sleep") == 0:  # noqa: ASYNC110 (a counter, not an event)
                await trio.sleep(0.01)
            busy = await client.post(
                f"{API}/invoke/tool", json={"tool_name": "echo", "arguments": {"text": "x"}}
            )
            assert busy.status_code == 503
            assert busy.headers["retry-after"] == "1"
            assert busy.json()["detail"]["error"] == "busy"
            nursery.cancel_scope.cancel()


async def test_host_and_origin_are_checked() -> None:
    async with api(allowed_hosts={"localhost"}, allowed_origins={"https://app.example"}) as client:
        assert (await client.get(f"{API}/servers")).status_code == 200
        rebound = await client.get(f"{API}/servers", headers={"Host": "evil.example"})
        assert rebound.status_code == 400
        assert rebound.json()["detail"]["error"] == "bad_host"
        foreign = await client.get(f"{API}/servers", headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403
        assert foreign.json()["detail"]["error"] == "forbidden_origin"
        assert (await client.get(f"{API}/servers", headers={"Origin": "http://localhost"})).status_code == 200
        assert (
            await client.get(f"{API}/servers", headers={"Origin": "https://app.example"})
        ).status_code == 200


def test_listening_on_every_address_needs_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIO_MCP_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "refusing to listen on 0.0.0.0 without --token" in capsys.readouterr().err
    assert main(["serve", "--rate-limit", "fast"]) == 2
    assert "--rate-limit" in capsys.readouterr().err


class RebindingResolver(trio.abc.HostnameResolver):
    """``rebind.test`` resolves to a public address the first time it is asked, and to
    127.0.0.1 from then on (DNS rebinding); every other name as the system resolves it."""

    def __init__(self) -> None:
        self.asked = 0

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else host
        if name == "rebind.test":
            self.asked += 1
            address = "93.184.216.34" if self.asked == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]
        return await trio.to_thread.run_sync(socket.getaddrinfo, host, port, family, type, proto, flags)

    async def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        return await trio.to_thread.run_sync(socket.getnameinfo, sockaddr, flags)


@asynccontextmanager
async def local_mcp_server() -> AsyncIterator[int]:
    """A real streamable-HTTP MCP server on 127.0.0.1 (its port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = config.errorlog = None
    async with trio.open_nursery() as nursery:
        app = build_server("local").streamable_http_app(host="127.0.0.1")
        await nursery.start(functools.partial(hypercorn_serve, app, config))
        yield port
        nursery.cancel_scope.cancel()


async def test_a_name_that_rebinds_to_an_internal_address_is_refused_at_connection() -> None:
    """Checked when registered (a public address then), the name is checked again at every
    connection, where it resolves to 127.0.0.1: the connection is refused, and nothing is
    asked of the server behind it. With --allow-private-urls the same server is reachable."""
    resolver = RebindingResolver()
    trio.socket.set_custom_hostname_resolver(resolver)
    try:
        with trio.fail_after(30):
            async with local_mcp_server() as port, api() as client:
                body = {"name": "rebound", "url": f"http://rebind.test:{port}/mcp"}
                assert (await client.post(f"{API}/servers", json=body)).status_code == 201
                response = await client.post(f"{API}/servers/rebound/connect")
                server = (await client.get(f"{API}/servers/rebound")).json()
                assert server["status"] != "healthy", response.text
                assert server["last_error_category"] == "connect_error", (response.text, server)
                assert "rebind.test (127.0.0.1): a loopback address" in server["last_error"]
                invoked = await client.post(
                    f"{API}/invoke/tool",
                    json={"tool_name": "whoami", "preferred_servers": ["rebound"], "failover": "never"},
                )
                assert invoked.status_code == 503
                (attempt,) = invoked.json()["detail"]["attempts"]
                assert attempt["sent"] is False  # refused before a byte went out (window closed now)
                assert resolver.asked >= 2
            async with local_mcp_server() as port, api(allow_private_urls=True) as client:
                body = {"name": "local", "url": f"http://127.0.0.1:{port}/mcp"}
                assert (await client.post(f"{API}/servers", json=body)).status_code == 201
                invoked = await client.post(
                    f"{API}/invoke/tool", json={"tool_name": "whoami", "preferred_servers": ["local"]}
                )
                assert invoked.status_code == 200, invoked.text
    finally:
        trio.socket.set_custom_hostname_resolver(None)

"""Removing a server while its supervisor is still connecting (or its process still starting).

Regression tests: ``DELETE /servers/{name}`` landing while the new server's supervisor was
connecting killed the whole ``trio-mcp serve`` process (the transport's own failure arrived
grouped with the cancellation and escaped the supervisor into the manager's nursery). The race
is hit by repetition and by removing at several delays after registering.

Real clock, real processes, real sockets.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from _support import FAST, free_port, pid_alive, wait_gone
from test_serve_e2e import API, _descendants, _wait_until_ready

import trio_mcp
from trio_mcp.demo_server import CHILD_PIDFILE_ENV

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and /proc"),
]

HYPERCORN = Path(sys.executable).with_name("hypercorn")


def _dead_url() -> str:
    """A URL on a local port nobody listens on: every connection is refused at once."""
    return f"http://127.0.0.1:{free_port()}/mcp"


def _starting_command(name: str, *, delay: float = 1.0, spawn_child: bool = False) -> list[str]:
    """``sh -c`` that sleeps ``delay`` seconds, then becomes the stdio demo server ``name``."""
    demo = [sys.executable, "-m", "trio_mcp.demo_server", "--name", name]
    if spawn_child:
        demo.append("--spawn-child")
    return ["sh", "-c", f"sleep {delay}; exec {shlex.join(demo)}"]


class SilentListener:
    """A TCP listener (in the test's nursery) that accepts connections and never answers.

    It holds each connection open until the client closes it (the client's handshake hangs),
    or with ``drop`` closes it at once (the handshake fails while its request is being sent).
    """

    def __init__(self, *, drop: bool = False) -> None:
        self.drop = drop
        self.accepted = 0
        self.port = 0

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
        self.port = listeners[0].socket.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        async with stream:
            if self.drop:
                return
            # Read the request and say nothing, until the client gives up and closes.
            while await stream.receive_some():
                pass


async def _silent_listeners(nursery: trio.Nursery) -> list[SilentListener]:
    """A listener that holds connections and one that drops them, both started."""
    listeners = [SilentListener(), SilentListener(drop=True)]
    for listener in listeners:
        await listener.start(nursery)
    return listeners


# ---------------------------------------------------------------------------------------------
# a real serving process
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Served:
    """A running ``trio-mcp serve`` (or hypercorn) process and a client for its API."""

    proc: trio.Process
    client: httpx.AsyncClient
    log: Path
    seen: set[int] = dataclasses.field(default_factory=set)
    """Every descendant ever observed (all of them must be gone once the process exits)."""

    def children(self) -> set[int]:
        """The live descendants of the process now."""
        alive = {pid for pid in _descendants(self.proc.pid) if pid_alive(pid)}
        self.seen |= alive
        return alive

    async def output(self) -> str:
        return await trio.Path(self.log).read_text()

    async def request(self, method: str, path: str, expected: int, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            with trio.move_on_after(5):
                await self.proc.wait()
            raise AssertionError(
                f"{method} {path}: {exc!r} (exit code {self.proc.returncode})\n{await self.output()}"
            ) from exc
        assert response.status_code == expected, (method, path, response.status_code, response.text)
        return response

    async def register(self, body: dict[str, Any]) -> None:
        await self.request("POST", f"{API}/servers", 201, json=body)

    async def delete(self, name: str) -> None:
        await self.request("DELETE", f"{API}/servers/{name}", 204)

    async def assert_serving(self, fleet: set[int]) -> None:
        """Still running, healthy, its manager open, the initial fleet connected and untouched,
        and no process left but the fleet's."""
        assert self.proc.returncode is None, await self.output()
        health = await self.request("GET", "/api/v1/health", 200)
        assert {k: v for k, v in health.json().items() if k != "replica"} == {
            "status": "ok",
            "manager": "running",
        }
        servers = (await self.request("GET", f"{API}/servers", 200)).json()["servers"]
        assert sorted(s["name"] for s in servers) == ["backup", "primary"]
        assert all(s["adapter_session"]["active"] for s in servers), servers
        assert self.children() == fleet

    async def sigterm_exits_cleanly(self, *, within: float = 0.0) -> None:
        """SIGTERM: exit code 0, and no process left behind (``within`` seconds for stragglers
        that exit on their own once the process is gone, like multiprocessing's helper)."""
        self.children()
        self.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await self.proc.wait()
        output = await self.output()
        assert self.proc.returncode == 0, output
        if within:
            await wait_gone(*self.seen, within=within)
        assert [pid for pid in self.seen if pid_alive(pid)] == [], output


@asynccontextmanager
async def serving(argv: Sequence[str], port: int, log: Path) -> AsyncIterator[Served]:
    """Start ``argv`` (on the default demo fleet), wait until the API answers and the fleet is
    connected; on the way out kill whatever is still running."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRIO_MCP_TOKEN", "TRIO_MCP_CONFIG")}
    env["TRIO_MCP_ALLOW_PRIVATE_URLS"] = "1"  # the dead servers registered below are on 127.0.0.1
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env
        )
    served: Served | None = None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await _wait_until_ready(client, proc, log)
            served = Served(proc, client, log)
            yield served
    finally:
        leftovers = served.seen if served is not None else set()
        if proc.returncode is None:
            leftovers |= _descendants(proc.pid)
            proc.kill()
            await proc.wait()
        for pid in leftovers:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def _serve_argv(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trio_mcp._cli",
        "serve",
        "--port",
        str(port),
        "--allow-stdio-registration",
        "--allow-private-urls",
    ]


async def _post_delete_dead_url(served: Served, times: int) -> None:
    dead = _dead_url()
    for _ in range(times):
        await served.register({"name": "remote", "url": dead})
        await served.delete("remote")


async def _post_delete_silent(served: Served, listeners: Sequence[SilentListener], rounds: int) -> None:
    for _ in range(rounds):
        for delay in (0, 0, 0.05, 0, 0.2):  # at once most: a dropped connection races the DELETE
            for listener in listeners:
                await served.register({"name": "silent", "url": listener.url})
                await trio.sleep(delay)
                await served.delete("silent")
    # The DELETEs did land while connections were open (or being dropped).
    assert all(listener.accepted for listener in listeners)


# ---------------------------------------------------------------------------------------------
# trio-mcp serve
# ---------------------------------------------------------------------------------------------


async def test_serve_survives_deleting_an_http_server_that_cannot_connect(tmp_path: Path) -> None:
    """30 times: register an HTTP server on a refused port and delete it at once. Every DELETE
    is a 204; the process keeps serving (its fleet untouched) and exits cleanly on SIGTERM."""
    port = free_port()
    async with serving(_serve_argv(port), port, tmp_path / "serve.log") as served:
        fleet = served.children()
        assert len(fleet) >= 2
        with trio.fail_after(30):
            await _post_delete_dead_url(served, 30)
            await served.assert_serving(fleet)
        await served.sigterm_exits_cleanly()


async def test_serve_survives_deleting_an_http_server_mid_handshake(tmp_path: Path) -> None:
    """Register an HTTP server whose host accepts the connection and then never answers (or
    drops it), delete it at once (thrice), 0.05 and 0.2 s later (three rounds): every DELETE is
    a 204, the process keeps serving and exits cleanly on SIGTERM."""
    port = free_port()
    async with trio.open_nursery() as nursery:
        listeners = await _silent_listeners(nursery)
        async with serving(_serve_argv(port), port, tmp_path / "serve.log") as served:
            fleet = served.children()
            with trio.fail_after(30):
                await _post_delete_silent(served, listeners, 3)
                await served.assert_serving(fleet)
            await served.sigterm_exits_cleanly()
        nursery.cancel_scope.cancel()


async def test_serve_survives_deleting_a_stdio_server_still_starting(tmp_path: Path) -> None:
    """Register a stdio server whose command sleeps 1 s before it becomes the demo server, and
    delete it at once; again, deleting it 0.3 s later: every DELETE is a 204 and leaves no
    process behind but the fleet's; the process keeps serving and exits cleanly on SIGTERM."""
    port = free_port()
    async with serving(_serve_argv(port), port, tmp_path / "serve.log") as served:
        fleet = served.children()
        command, *args = _starting_command("x")
        body = {"name": "starting", "command": command, "args": args}
        started: set[int] = set()
        with trio.fail_after(30):
            for delay in (0, 0.3):
                await served.register(body)
                if delay:
                    await trio.sleep(delay)
                    started |= served.children() - fleet
                await served.delete("starting")
                assert served.children() == fleet
            await served.assert_serving(fleet)
        # The server's process had been started when it was deleted, and it is gone.
        assert started
        assert [pid for pid in started if pid_alive(pid)] == []
        await served.sigterm_exits_cleanly()


# ---------------------------------------------------------------------------------------------
# hypercorn -k trio web.app:app
# ---------------------------------------------------------------------------------------------


async def test_hypercorn_app_survives_deleting_http_servers_while_they_connect(tmp_path: Path) -> None:
    """``hypercorn -k trio web.app:app`` (its lifespan opens the manager on the demo fleet):
    30 register-and-delete rounds on a refused port, then two rounds against listeners that
    never answer. Every DELETE is a 204, the app keeps serving, and SIGTERM shuts hypercorn
    (main process and worker) down with code 0, leaving no process.

    ``web.app:app`` never allows stdio registration (``create_app(..., allow_stdio=False)``
    and nothing in the environment changes it), so only HTTP servers are registered here.
    """
    port = free_port()
    argv = [str(HYPERCORN), "-k", "trio", "web.app:app", "--bind", f"127.0.0.1:{port}"]
    async with trio.open_nursery() as nursery:
        listeners = await _silent_listeners(nursery)
        async with serving(argv, port, tmp_path / "hypercorn.log") as served:
            fleet = served.children()  # the worker, multiprocessing's helper and the demo fleet
            with trio.fail_after(30):
                await _post_delete_dead_url(served, 30)
                await served.assert_serving(fleet)
                await _post_delete_silent(served, listeners, 2)
                await served.assert_serving(fleet)
            # multiprocessing's resource tracker exits by itself once hypercorn is gone.
            await served.sigterm_exits_cleanly(within=5)
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------
# the library: add_server() then remove_server()
# ---------------------------------------------------------------------------------------------

# Removal after 0 to 39 scheduler steps sweeps through a connection attempt whatever its exact
# number of steps; then real delays, through a few retries (FAST retries after 0.2 s).
PAUSES = [(steps, 0.0) for steps in range(40)] + [(0, d) for d in (0.001, 0.003, 0.01, 0.03, 0.1, 0.25)]


async def _pause(steps: int, delay: float) -> None:
    for _ in range(steps):
        await trio.lowlevel.checkpoint()
    if delay:
        await trio.sleep(delay)


def _new_descendants(baseline: set[int]) -> set[int]:
    return {pid for pid in _descendants(os.getpid()) if pid_alive(pid)} - baseline


async def _add_and_remove(configs: Sequence[trio_mcp.ServerConfig]) -> list[trio_mcp.ServerSnapshot]:
    """In one manager, for each of :data:`PAUSES`: add each config, pause, remove it. Returns
    the snapshots taken just before each removal."""
    snaps: list[trio_mcp.ServerSnapshot] = []
    async with trio_mcp.open_manager() as manager:
        for steps, delay in PAUSES:
            for config in configs:
                await manager.add_server(config)
                await _pause(steps, delay)
                snaps.append(manager.server(config.name))
                await manager.remove_server(config.name)
                assert manager.servers() == []
    return snaps


def _http(name: str, url: str) -> trio_mcp.ServerConfig:
    return trio_mcp.ServerConfig(name=name, transport=trio_mcp.HttpTransport(url=url), policy=FAST)


async def test_library_remove_http_server_while_connecting() -> None:
    """``add_server`` then ``remove_server`` of an HTTP server on a refused port, after 0 to 39
    scheduler steps and after 1 ms to 0.25 s: ``open_manager`` exits without raising."""
    with trio.fail_after(20):
        snaps = await _add_and_remove([_http("remote", _dead_url())])
    # Some removals did come after a failed connection attempt.
    assert any(s.last_error_category for s in snaps)


async def test_library_remove_http_server_mid_handshake() -> None:
    """``add_server`` then ``remove_server`` of an HTTP server that accepts and never answers
    (or drops the connection), after 0 to 39 scheduler steps and after 1 ms to 0.25 s:
    ``open_manager`` exits without raising."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await _silent_listeners(nursery)
            await _add_and_remove([_http(f"silent{i}", ls.url) for i, ls in enumerate(listeners)])
            assert all(listener.accepted for listener in listeners)
            nursery.cancel_scope.cancel()


async def test_library_remove_stdio_server_while_starting(tmp_path: Path) -> None:
    """``add_server`` then ``remove_server`` of a stdio server still starting (its command sleeps
    0.5 s, then runs the demo server, which spawns a child), at once, 0.3 s and 0.9 s later:
    ``open_manager`` exits without raising and no process is left, not even the demo server's
    child."""
    baseline = {pid for pid in _descendants(os.getpid()) if pid_alive(pid)}
    pidfile = tmp_path / "child.pid"
    command, *args = _starting_command("x", delay=0.5, spawn_child=True)
    config = trio_mcp.ServerConfig(
        name="starting",
        transport=trio_mcp.StdioTransport(
            command=command, args=tuple(args), env={CHILD_PIDFILE_ENV: str(pidfile)}
        ),
        policy=FAST,
    )
    seen: set[int] = set()
    grandchildren: set[int] = set()
    with trio.fail_after(20):
        async with trio_mcp.open_manager() as manager:
            for delay in (0, 0.3, 0.9):
                pidfile.unlink(missing_ok=True)
                await manager.add_server(config)
                if delay:
                    await trio.sleep(delay)
                    seen |= _new_descendants(baseline)
                await manager.remove_server("starting")
                if pidfile.exists() and pidfile.read_text().endswith("\n"):
                    grandchildren.add(int(pidfile.read_text()))
                assert _new_descendants(baseline) == set()
    assert seen  # the removals did find a process to stop
    assert [pid for pid in seen | grandchildren if pid_alive(pid)] == []
    assert _new_descendants(baseline) == set()

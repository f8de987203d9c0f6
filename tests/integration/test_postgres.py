"""Replicas on PostgreSQL 15 (Debian's, started by ``scripts/postgres.sh``): three ``trio-mcp
serve`` processes on one database agree on the registry within a second and share the history; a
replica that is killed leaves the others serving; PostgreSQL going away mid-run loses no invocation,
registrations answer 503, and everything converges once it is back, without a restart."""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from _fleet import policy
from _postgres import PostgresServer, skip_or_fail
from _postgres import unavailable as postgres_unavailable
from _state import (
    API,
    Records,
    ServeProcess,
    capture,
    demo,
    metric,
    names,
    remote,
    serve_process,
    serving,
)
from _support import HttpDemoServer

from trio_mcp.testing import ScriptedServer, memory_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and /proc"),
]

PROPAGATION_LIMIT = 3.0
"""Seconds a registry change may take to reach the other replicas when the test only waits for it
(it takes well under one: LISTEN/NOTIFY)."""
REQUIRED_PROPAGATION = 1.0
"""Seconds within which a registration made on one replica answers invocations through another,
and a deletion made on one is gone from another."""


@pytest.fixture
def store_log() -> Iterator[Records]:
    yield from capture()


async def _until(predicate: object, *, within: float) -> float:
    """Poll the async ``predicate`` until it holds; returns how long that took."""
    start = trio.current_time()
    with trio.fail_after(within):
        while not await predicate():  # type: ignore[operator]  # noqa: ASYNC110 (polling an API)
            await trio.sleep(0.01)
    return trio.current_time() - start


async def _invoke(client: httpx.AsyncClient, server: str, request_id: str | None = None) -> httpx.Response:
    """``whoami`` on ``server`` (tried first), through ``client``'s replica."""
    call: dict[str, object] = {"tool_name": "whoami", "preferred_servers": [server]}
    if request_id is not None:
        call["request_id"] = request_id
    return await client.post(f"{API}/invoke/tool", json=call)


def _answered_by(response: httpx.Response, server: str) -> bool:
    return response.status_code == 200 and response.json()["result"]["content"][0]["text"] == server


def _replicas_of(url: str, table: str, column: str, value: str) -> set[str]:
    """The replica ids stored with the events of ``table`` whose ``column`` is ``value``."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(f"SELECT DISTINCT replica FROM {table} WHERE {column} = %s", (value,)).fetchall()
    return {row[0] for row in rows}


async def test_three_replicas_agree_on_the_registry_and_share_the_history(
    tmp_path: Path, postgres: PostgresServer, postgres_url: str
) -> None:
    config = tmp_path / "fleet.json"
    config.write_text(json.dumps({"mcpServers": {}}))
    args = [
        "--config",
        str(config),
        "--state",
        postgres_url,
        "--allow-stdio-registration",
        "--allow-private-urls",
    ]
    measured: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        web = HttpDemoServer(nursery, "web")
        await web.start()
        try:
            async with (
                serve_process(args, tmp_path / "a.log") as a,
                serve_process(args, tmp_path / "b.log") as b,
                serve_process(args, tmp_path / "c.log") as c,
            ):
                # Every replica has its own id, which every event it records carries.
                ids = {}
                for name, replica in (("a", a), ("b", b), ("c", c)):
                    health = (await replica.client.get("/api/v1/health")).json()
                    assert re.fullmatch(
                        rf"{re.escape(socket.gethostname())}-[0-9a-f]{{6}}", health["replica"]
                    )
                    ids[name] = health["replica"]
                assert len(set(ids.values())) == 3
                # Registered on A: a tool of it answers through B (and C) within a second of
                # A's 201, without a restart.
                registered = await a.client.post(f"{API}/servers", json={"name": "web", "url": web.url})
                assert registered.status_code == 201, registered.text
                since = trio.current_time()
                for replica, name in ((b, "b"), (c, "c")):

                    async def answers(replica: ServeProcess = replica) -> bool:
                        response = await _invoke(replica.client, "web")
                        # Until the replica runs it, the server is unknown there.
                        assert response.status_code in (200, 404), response.text
                        return _answered_by(response, "web")

                    await _until(answers, within=PROPAGATION_LIMIT)
                    measured[f"registered on a, invoked through {name}"] = trio.current_time() - since
                assert measured["registered on a, invoked through b"] <= REQUIRED_PROPAGATION, measured
                # The name is taken on B as well.
                taken = await b.client.post(f"{API}/servers", json={"name": "web", "url": web.url})
                assert taken.status_code == 409
                # A server registered on B with no session reaches A and C the same way.
                assert (await b.client.post(f"{API}/servers", json=remote("remote"))).status_code == 201
                for replica in (a, c):

                    async def listed(replica: ServeProcess = replica) -> bool:
                        return (await replica.client.get(f"{API}/servers/remote")).status_code == 200

                    await _until(listed, within=PROPAGATION_LIMIT)
                # Deleted on C: gone from A within a second (and from B).
                assert (await a.client.get(f"{API}/servers/web")).status_code == 200
                assert (await c.client.delete(f"{API}/servers/web")).status_code == 204
                since = trio.current_time()

                async def gone_from_a() -> bool:
                    return (await a.client.get(f"{API}/servers/web")).status_code == 404

                await _until(gone_from_a, within=PROPAGATION_LIMIT)
                measured["deleted on c, gone from a"] = trio.current_time() - since
                assert measured["deleted on c, gone from a"] <= REQUIRED_PROPAGATION, measured

                async def gone_from_b() -> bool:
                    return (await b.client.get(f"{API}/servers/web")).status_code == 404

                await _until(gone_from_b, within=PROPAGATION_LIMIT)
                assert (await c.client.delete(f"{API}/servers/remote")).status_code == 204
                # A stdio server registered on A runs on all three (each replica supervises every
                # server); called through B, its events are in the history that A reads.
                assert (await a.client.post(f"{API}/servers", json=demo("shared"))).status_code == 201
                for replica in (a, b, c):

                    async def connected(replica: ServeProcess = replica) -> bool:
                        response = await replica.client.get(f"{API}/servers/shared")
                        return response.status_code == 200 and bool(
                            response.json()["adapter_session"]["active"]
                        )

                    await _until(connected, within=30)
                assert _answered_by(await _invoke(b.client, "shared", "through-b"), "shared")
                assert _answered_by(await _invoke(a.client, "shared", "through-a"), "shared")

                async def seen_by_a() -> bool:
                    # B writes its events in batches: A reads them once B has written them (and
                    # the read has A write what it holds: "through-a" is stored before A dies).
                    response = await a.client.get(
                        f"{API}/invocation-events", params={"request_id": "through-b"}
                    )
                    return [e["kind"] for e in response.json()["events"]][-2:] == [
                        "invoke_start",
                        "invoke_success",
                    ]

                await _until(seen_by_a, within=5)
                # A is killed: B and C keep serving, registrations included.
                a.proc.kill()
                await a.proc.wait()
                assert _answered_by(await _invoke(b.client, "shared", "after-a-died"), "shared")
                assert _answered_by(await _invoke(c.client, "shared", "after-a-died-c"), "shared")
                assert (await b.client.post(f"{API}/servers", json=remote("later"))).status_code == 201
                assert await names(b.client) == ["shared", "later"]

                async def later_on_c() -> bool:
                    return await names(c.client) == ["shared", "later"]

                await _until(later_on_c, within=PROPAGATION_LIMIT)
                # What A recorded before it died is in B's history, with A's replica id: its
                # invocation...
                through_a = await b.client.get(f"{API}/invocation-events", params={"request_id": "through-a"})
                assert [(e["kind"], e["server"], e["replica"]) for e in through_a.json()["events"]] == [
                    ("invoke_start", "shared", ids["a"]),
                    ("invoke_success", "shared", ids["a"]),
                ]
                # ...and its connection events: "web" became healthy on each of the three.
                web_events = await b.client.get(f"{API}/events", params={"server": "web"})
                assert web_events.status_code == 200
                healthy = [e["replica"] for e in web_events.json()["events"] if e["to"] == "healthy"]
                assert sorted(healthy) == sorted(ids.values())
                # (Reading the history writes what the replica holds.)
                through_c = await c.client.get(
                    f"{API}/invocation-events", params={"request_id": "after-a-died-c"}
                )
                assert [(e["kind"], e["replica"]) for e in through_c.json()["events"]] == [
                    ("invoke_start", ids["c"]),
                    ("invoke_success", ids["c"]),
                ]
                # The store keeps the same ids (the replica column of the history's tables).
                stored = await trio.to_thread.run_sync(
                    _replicas_of, postgres_url, "trio_mcp_connection_events", "server", "web"
                )
                assert stored == set(ids.values())
                assert await b.stop() == 0, await b.output()
                assert await c.stop() == 0, await c.output()
        finally:
            nursery.cancel_scope.cancel()
    print(f"propagation: {', '.join(f'{k}: {v * 1000:.0f} ms' for k, v in measured.items())}")

    async def no_connections_left() -> bool:
        return await trio.to_thread.run_sync(postgres.sessions) == 0

    await _until(no_connections_left, within=10)


async def test_postgresql_going_away_mid_run(tmp_path: Path, store_log: Records) -> None:
    reason = postgres_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    database = PostgresServer()  # this test's own: it is stopped and started again
    url = await trio.to_thread.run_sync(database.start)
    try:
        config = memory_server(ScriptedServer("a"), policy=policy(health_interval=3600.0))
        async with serving([config], url) as client:
            assert (await client.post(f"{API}/servers", json=remote("kept"))).status_code == 201
            await trio.to_thread.run_sync(lambda: database.stop(keep=True))
            # Invocations carry on; events are dropped and counted.
            with trio.fail_after(20):
                while True:
                    for i in range(5):
                        body = {"tool_name": "echo", "arguments": {"text": str(i)}}
                        assert (await client.post(f"{API}/invoke/tool", json=body)).status_code == 200
                    metrics = (await client.get("/metrics")).text
                    if metric(metrics, "trio_mcp_store_available") == 0.0:
                        break
                    await trio.sleep(0.1)
            assert metric(metrics, 'trio_mcp_store_events_dropped_total{reason="store_unavailable"}') > 0
            refused = await client.post(f"{API}/servers", json=remote("late"))
            assert refused.status_code == 503
            detail = refused.json()["detail"]
            assert detail["error"] == "store_unavailable"
            assert detail["message"].startswith(
                "the state store is unavailable (storing the registration of 'late': it was not made): "
            )
            # Back, on the same port: registrations and the history resume by themselves.
            await trio.to_thread.run_sync(database.start)

            async def registered() -> bool:
                response = await client.post(f"{API}/servers", json=remote("late"))
                assert response.status_code in (201, 503), response.text
                return response.status_code == 201

            await _until(registered, within=60)

            async def writing() -> bool:
                body = {"tool_name": "echo", "arguments": {"text": "again"}}
                assert (await client.post(f"{API}/invoke/tool", json=body)).status_code == 200
                return metric((await client.get("/metrics")).text, "trio_mcp_store_available") == 1.0

            await _until(writing, within=60)
            assert await names(client) == ["a", "kept", "late"]
            recent = await client.get(f"{API}/invocation-events", params={"limit": 2})
            assert [e["kind"] for e in recent.json()["events"]] == ["invoke_start", "invoke_success"]
        assert any(m.startswith("event history: the store is unavailable (") for m in store_log.messages)
        assert any(m.startswith("event history: the store is back; ") for m in store_log.messages)
    finally:
        await trio.to_thread.run_sync(database.stop)


def test_the_script_refuses_an_unknown_command() -> None:
    import subprocess

    from _postgres import SCRIPT

    done = subprocess.run([str(SCRIPT), "restart"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: ")


async def test_an_unreachable_postgresql_is_one_line_at_startup(tmp_path: Path) -> None:
    from _state import free_port

    from trio_mcp.store import StoreError, open_store

    port = free_port()
    with pytest.raises(StoreError) as info:
        async with open_store(f"postgresql://postgres:pw@127.0.0.1:{port}/nothing?connect_timeout=1"):
            pass
    assert str(info.value) == (
        f"cannot connect to postgresql://postgres:***@127.0.0.1:{port}/nothing: connection failed: "
        f'connection to server at "127.0.0.1", port {port} failed: Connection refused'
    )

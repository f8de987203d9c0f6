"""Replicas on PostgreSQL 15 (Debian's, started by ``scripts/postgres.sh``): two ``trio-mcp
serve`` processes on one database agree on the registry and share the history; a replica that
is killed leaves the other serving; PostgreSQL going away mid-run loses no invocation,
registrations answer 503, and everything converges once it is back, without a restart."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from _fleet import policy
from _postgres import PostgresServer, skip_or_fail
from _postgres import unavailable as postgres_unavailable
from _state import API, Records, capture, demo, metric, names, remote, serve_process, serving

from trio_mcp.testing import ScriptedServer, memory_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and /proc"),
]

PROPAGATION_LIMIT = 3.0
"""Seconds a registry change may take to reach the other replica (it takes well under one:
LISTEN/NOTIFY)."""


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


async def test_two_replicas_agree_on_the_registry_and_share_the_history(
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
    async with (
        serve_process(args, tmp_path / "a.log") as a,
        serve_process(args, tmp_path / "b.log") as b,
    ):
        # Registered on A: B runs it too, without a restart.
        assert (await a.client.post(f"{API}/servers", json=remote("remote"))).status_code == 201

        async def on_b() -> bool:
            return (await b.client.get(f"{API}/servers/remote")).status_code == 200

        await _until(on_b, within=PROPAGATION_LIMIT)
        # The name is taken on B as well.
        assert (await b.client.post(f"{API}/servers", json=remote("remote"))).status_code == 409
        # Deleted on B: gone from A.
        assert (await b.client.delete(f"{API}/servers/remote")).status_code == 204

        async def gone_from_a() -> bool:
            return (await a.client.get(f"{API}/servers/remote")).status_code == 404

        await _until(gone_from_a, within=PROPAGATION_LIMIT)
        # A stdio server registered on A runs on both (each replica supervises every server);
        # called through B, its events are in the history that A reads.
        assert (await a.client.post(f"{API}/servers", json=demo("shared"))).status_code == 201

        async def connected_on_b() -> bool:
            response = await b.client.get(f"{API}/servers/shared")
            return response.status_code == 200 and bool(response.json()["adapter_session"]["active"])

        await _until(connected_on_b, within=30)
        call = {"tool_name": "whoami", "preferred_servers": ["shared"], "request_id": "through-b"}
        answer = await b.client.post(f"{API}/invoke/tool", json=call)
        assert answer.status_code == 200, answer.text

        async def seen_by_a() -> bool:
            # B writes its events in batches: A reads them once B has written them.
            response = await a.client.get(f"{API}/invocation-events", params={"request_id": "through-b"})
            return [e["kind"] for e in response.json()["events"]][-2:] == ["invoke_start", "invoke_success"]

        await _until(seen_by_a, within=5)
        # A is killed: B keeps serving, registrations included.
        a.proc.kill()
        await a.proc.wait()
        call["request_id"] = "after-a-died"
        assert (await b.client.post(f"{API}/invoke/tool", json=call)).status_code == 200
        assert (await b.client.post(f"{API}/servers", json=remote("later"))).status_code == 201
        assert await names(b.client) == ["shared", "later"]
        assert await b.stop() == 0, await b.output()

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

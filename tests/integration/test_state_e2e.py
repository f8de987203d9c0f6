"""``trio-mcp serve`` processes on a state store, a SQLite file and a PostgreSQL database: a
restarted process has its registered servers back (and callable) and the history of the one
before; ``kill -9`` in the middle of 200 registrations loses none that was answered 201 and
keeps none that was refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
import trio
from _state import API, demo, names, remote, serve_process

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and /proc"),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the processes keep their state: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


def _args(tmp_path: Path, state: str, *extra: str) -> list[str]:
    config = tmp_path / "fleet.json"
    config.write_text(json.dumps({"mcpServers": {}}))
    return ["--config", str(config), "--state", state, *extra]


async def _call(client: httpx.AsyncClient, server: str, request_id: str) -> httpx.Response:
    body = {
        "tool_name": "whoami",
        "preferred_servers": [server],
        "failover": "never",
        "request_id": request_id,
    }
    return await client.post(f"{API}/invoke/tool", json=body)


async def test_a_restarted_serve_has_its_servers_back_and_their_history(tmp_path: Path, state: str) -> None:
    args = _args(tmp_path, state, "--allow-stdio-registration")
    async with serve_process(args, tmp_path / "first.log") as first:
        assert (await first.client.post(f"{API}/servers", json=demo("extra"))).status_code == 201
        assert (await first.client.post(f"{API}/servers/extra/connect")).status_code == 200
        answer = await _call(first.client, "extra", "before-restart")
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"]["content"][0]["text"] == "extra"
        assert await first.stop() == 0, await first.output()
    # The new process starts the stored server with the fleet (and waits for its session).
    async with serve_process(args, tmp_path / "second.log") as second:
        assert await names(second.client) == ["extra"]
        answer = await _call(second.client, "extra", "after-restart")
        assert answer.status_code == 200, answer.text
        before = await second.client.get(f"{API}/invocation-events", params={"request_id": "before-restart"})
        assert [(e["server"], e["kind"]) for e in before.json()["events"]] == [
            ("extra", "invoke_start"),
            ("extra", "invoke_success"),
        ]
        assert await second.stop() == 0, await second.output()


async def test_kill_9_during_a_storm_of_registrations_loses_no_acknowledged_one(
    tmp_path: Path, state: str
) -> None:
    args = _args(tmp_path, state, "--allow-private-urls")
    outcomes: dict[str, str] = {}
    fifty = trio.Event()
    async with serve_process(args, tmp_path / "first.log", connected=False) as first:

        async def register(name: str) -> None:
            try:
                response = await first.client.post(f"{API}/servers", json=remote(name))
            except httpx.TransportError:
                outcomes[name] = "no answer"
            else:
                outcomes[name] = "acknowledged" if response.status_code == 201 else f"{response.status_code}"
                if list(outcomes.values()).count("acknowledged") == 50:
                    fifty.set()

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(register, f"storm-{i:03d}")
            with trio.fail_after(60):
                await fifty.wait()
            first.proc.kill()
        await first.proc.wait()
    acknowledged = {n for n, outcome in outcomes.items() if outcome == "acknowledged"}
    refused = {n for n, outcome in outcomes.items() if outcome not in ("acknowledged", "no answer")}
    assert len(outcomes) == 200
    assert 50 <= len(acknowledged) < 200  # killed in the middle
    async with serve_process(args, tmp_path / "second.log", connected=False) as second:
        present = set(await names(second.client))
    assert acknowledged <= present
    assert not refused & present

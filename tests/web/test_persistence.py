"""``serve`` on a SQLite state store (real hypercorn, real clock): registrations and deletions
survive restarts, secrets are encrypted at rest or refused, the event history survives
restarts and keeps its retention, and a store that is down answers registrations with 503 and
loses events while invocations carry on. The ``--state`` / ``--event-retention`` options."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from _fleet import policy
from _state import API, Records, capture, metric, names, serving
from _state import remote as _remote

from trio_mcp import _cli_serve
from trio_mcp._cli import main
from trio_mcp.store import Retention
from trio_mcp.testing import ScriptedServer, memory_server

pytestmark = pytest.mark.integration
OTHER_KEY = "x6NaUsr4GVJ9aBpS8xkWg0UZ-fRFe2GBqJ0cIFkEmqE="
QUIET = policy(health_interval=3600.0)


@pytest.fixture
def store_log() -> Iterator[Records]:
    yield from capture()


async def test_registrations_and_deletions_survive_restarts(tmp_path: Path) -> None:
    state = f"sqlite:///{tmp_path}/state.db"
    local = memory_server(ScriptedServer("local"), policy=QUIET)
    async with serving([local], state) as client:
        assert (await client.post(f"{API}/servers", json=_remote("remote", callTimeout=3))).status_code == 201
        assert (await client.post(f"{API}/servers", json=_remote("gone"))).status_code == 201
        assert (await client.delete(f"{API}/servers/gone")).status_code == 204
        taken = await client.post(f"{API}/servers", json=_remote("local"))
        assert taken.status_code == 409
        assert taken.json()["detail"] == {
            "error": "server_exists",
            "message": "the name 'local' belongs to a server of the config file: it cannot be registered",
            "server": "local",
        }
        before = (await client.get(f"{API}/servers/remote")).json()
    async with serving([local], state) as client:
        assert await names(client) == ["local", "remote"]
        after = (await client.get(f"{API}/servers/remote")).json()
        assert after["transport"] == before["transport"]
        assert after["transport"]["url"] == "http://127.0.0.1:9/mcp"
        assert (await client.delete(f"{API}/servers/remote")).status_code == 204
    async with serving([local], state) as client:
        assert await names(client) == ["local"]


async def test_secrets_are_encrypted_at_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_log: Records
) -> None:
    state = f"sqlite:///{tmp_path}/state.db"
    secrets = ["header-s3cret-1", "token-s3cret-2", "env-s3cret-3"]
    vault = _remote("vault", headers={"X-Api-Key": secrets[0]}, auth={"type": "bearer", "token": secrets[1]})
    tool = {"name": "tool", "command": "/bin/true", "env": {"API_TOKEN": secrets[2]}, "connectOnStart": False}
    async with serving([], state, allow_stdio=True) as client:
        assert (await client.post(f"{API}/servers", json=vault)).status_code == 201
        assert (await client.post(f"{API}/servers", json=tool)).status_code == 201
        views = {s["name"]: s["transport"] for s in (await client.get(f"{API}/servers")).json()["servers"]}
    raw = b"".join(
        [await trio.Path(path).read_bytes() for path in await trio.Path(tmp_path).glob("state.db*")]
    )
    assert b"http://127.0.0.1:9/mcp" in raw  # the public part is in this file
    for secret in secrets:
        assert secret.encode() not in raw
    rows = sqlite3.connect(tmp_path / "state.db").execute(
        "SELECT name, body, sealed IS NOT NULL FROM trio_mcp_registrations ORDER BY name"
    )
    assert [(name, "X-Api-Key" in body or "API_TOKEN" in body, sealed) for name, body, sealed in rows] == [
        ("tool", False, 1),
        ("vault", False, 1),
    ]
    # With the key, they come back whole (the views name the secret headers and variables).
    async with serving([], state, allow_stdio=True) as client:
        again = {s["name"]: s["transport"] for s in (await client.get(f"{API}/servers")).json()["servers"]}
        assert again == views
        assert again["vault"]["headers"] == {"X-Api-Key": "***"}
        assert again["vault"]["auth"] == {"kind": "bearer", "token": "***"}
        assert again["tool"]["env"] == {"API_TOKEN": "***"}
    # With another key, they cannot be used: left out, and said.
    monkeypatch.setenv("TRIO_MCP_SECRET_KEY", OTHER_KEY)
    async with serving([], state) as client:
        assert await names(client) == []
    assert sorted(m.split(":")[0] for m in store_log.messages if "cannot be used" in m) == [
        "registry",
        "registry",
    ]


async def test_secrets_without_a_key_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIO_MCP_SECRET_KEY")
    async with serving([], f"sqlite:///{tmp_path}/state.db") as client:
        refused = await client.post(f"{API}/servers", json=_remote("vault", headers={"X-Api-Key": "k"}))
        assert refused.status_code == 403
        assert refused.json()["detail"] == {
            "error": "secret_key_required",
            "message": "this registration carries secrets ('headers') and TRIO_MCP_SECRET_KEY is not set, "
            "so they would be stored in clear text: start the server with TRIO_MCP_SECRET_KEY set to a "
            "Fernet key to store them encrypted, or register without them",
            "field": "headers",
        }
        assert (await client.post(f"{API}/servers", json=_remote("plain"))).status_code == 201
        assert await names(client) == ["plain"]
    # Nothing is stored with --state memory: nothing to refuse.
    async with serving([], None) as client:
        accepted = await client.post(f"{API}/servers", json=_remote("vault", headers={"X-Api-Key": "k"}))
        assert accepted.status_code == 201


async def test_the_event_history_survives_a_restart(tmp_path: Path) -> None:
    state = f"sqlite:///{tmp_path}/state.db"
    config = memory_server(ScriptedServer("a"), policy=QUIET)
    call = {"tool_name": "echo", "arguments": {"text": "hi"}, "request_id": "before-restart"}
    async with serving([config], state) as client:
        await client.post(f"{API}/servers/connect")  # the handshake is not part of the call
        assert (await client.post(f"{API}/invoke/tool", json=call)).status_code == 200
        first = (await client.get(f"{API}/invocation-events", params={"request_id": "before-restart"})).json()
        assert [e["kind"] for e in first["events"]] == ["invoke_start", "invoke_success"]
        changes_before = (await client.get(f"{API}/events", params={"server": "a"})).json()["events"]
        assert changes_before[-1]["to"] == "healthy"
    async with serving([config], state) as client:
        again = (await client.get(f"{API}/invocation-events", params={"request_id": "before-restart"})).json()
        assert again == first
        call["request_id"] = "after-restart"
        await client.post(f"{API}/servers/connect")
        assert (await client.post(f"{API}/invoke/tool", json=call)).status_code == 200
        changes = (await client.get(f"{API}/events", params={"server": "a"})).json()["events"]
        # This run's connection follows the last one's.
        assert changes[: len(changes_before)] == changes_before
        assert len(changes) > len(changes_before)
        newest = (await client.get(f"{API}/invocation-events", params={"limit": 2})).json()["events"]
        assert [(e["request_id"], e["kind"]) for e in newest] == [
            ("after-restart", "invoke_start"),
            ("after-restart", "invoke_success"),
        ]
        unknown = await client.get(f"{API}/events", params={"server": "nobody"})
        assert unknown.status_code == 404


async def test_the_retention_is_kept_from_startup(tmp_path: Path) -> None:
    state = f"sqlite:///{tmp_path}/state.db"
    config = memory_server(ScriptedServer("a"), policy=QUIET)
    async with serving([config], state, event_retention=Retention()) as client:
        await client.post(f"{API}/servers/connect")
        for i in range(10):
            call = {"tool_name": "echo", "arguments": {"text": "x"}, "request_id": f"call-{i}"}
            assert (await client.post(f"{API}/invoke/tool", json=call)).status_code == 200
        everything = (await client.get(f"{API}/invocation-events", params={"limit": 100})).json()["events"]
        assert len(everything) == 20
    async with serving([config], state, event_retention=Retention(max_count=5)) as client:
        kept = (await client.get(f"{API}/invocation-events", params={"limit": 100})).json()["events"]
        assert kept == everything[-5:]


async def test_a_store_that_is_down_refuses_registrations_and_drops_events(
    tmp_path: Path, store_log: Records
) -> None:
    path = tmp_path / "state.db"
    config = memory_server(ScriptedServer("a"), policy=QUIET)
    async with serving([config], f"sqlite:///{path}?timeout=0.2") as client:
        assert (await client.post(f"{API}/servers", json=_remote("kept"))).status_code == 201
        lock = sqlite3.connect(path, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            late = await client.post(f"{API}/servers", json=_remote("late"))
            assert late.status_code == 503
            assert late.json()["detail"] == {
                "error": "store_unavailable",
                "message": "the state store is unavailable (storing the registration of 'late': it was not "
                "made): database is locked",
            }
            kept = await client.delete(f"{API}/servers/kept")
            assert kept.status_code == 503
            assert kept.json()["detail"]["message"] == (
                "the state store is unavailable (deleting the registration of 'kept': it is still "
                "registered): database is locked"
            )
            with trio.fail_after(10):
                while True:
                    for i in range(5):
                        call = {"tool_name": "echo", "arguments": {"text": str(i)}}
                        assert (await client.post(f"{API}/invoke/tool", json=call)).status_code == 200
                    metrics = (await client.get("/metrics")).text
                    if metric(metrics, "trio_mcp_store_available") == 0.0:
                        break
            assert metric(metrics, 'trio_mcp_store_events_dropped_total{reason="store_unavailable"}') > 0
            # Reads still answer (a SQLite reader does not wait for the writer's lock).
            assert (await client.get(f"{API}/events")).status_code == 200
        finally:
            lock.close()
        assert await names(client) == ["a", "kept"]
        with trio.fail_after(30):
            while metric((await client.get("/metrics")).text, "trio_mcp_store_available") == 0.0:
                call = {"tool_name": "echo", "arguments": {"text": "again"}}
                assert (await client.post(f"{API}/invoke/tool", json=call)).status_code == 200
                await trio.sleep(0.1)
        assert (await client.post(f"{API}/servers", json=_remote("late"))).status_code == 201
    assert (
        "event history: the store is unavailable (database is locked): events are dropped until it is back"
        in store_log.messages
    )
    assert any(m.startswith("event history: the store is back; ") for m in store_log.messages)


# -- the command line ------------------------------------------------------------------------------------


@pytest.fixture
def serve_options(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[_cli_serve.ServeOptions]]:
    seen: list[_cli_serve.ServeOptions] = []

    def capture(options: _cli_serve.ServeOptions) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(_cli_serve, "run", capture)
    yield seen


def test_state_options(
    serve_options: list[_cli_serve.ServeOptions],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve"]) == 0
    assert (serve_options[-1].state, serve_options[-1].event_retention) == (
        None,
        Retention(max_age=604800.0, max_count=100_000),
    )
    assert main(["serve", "--state", "memory", "--event-retention", "12h"]) == 0
    assert (serve_options[-1].state, serve_options[-1].event_retention) == (
        "memory",
        Retention(max_age=43200.0),
    )
    monkeypatch.setenv("TRIO_MCP_STATE", "postgresql://trio@db/trio")
    assert main(["serve"]) == 0
    assert serve_options[-1].state == "postgresql://trio@db/trio"
    capsys.readouterr()
    assert main(["serve", "--state", "mysql://db"]) == 2
    assert (
        "--state takes memory, sqlite:///FILE or postgresql://..., got 'mysql://db'"
        in capsys.readouterr().err
    )
    assert main(["serve", "--event-retention", "0"]) == 2
    assert "a count must be >= 1, got '0'" in capsys.readouterr().err


def test_a_store_that_cannot_be_opened_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "empty.json"
    config.write_text('{"mcpServers": {}}')
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"\x00garbage, not SQLite\n" * 100)
    argv = ["serve", "--config", str(config), "--port", "0"]
    assert main([*argv, "--state", f"sqlite:///{corrupt}"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"trio-mcp: state store: cannot open the state file {corrupt}: it is not a SQLite database "
        "(corrupt, or another kind of file)"
    ]
    monkeypatch.setenv("TRIO_MCP_SECRET_KEY", "not-a-key")
    assert main([*argv, "--state", f"sqlite:///{tmp_path}/fine.db"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("trio-mcp: state store: TRIO_MCP_SECRET_KEY is not a Fernet key (32 bytes, ")

"""``FileTokenStore``: file I/O in worker threads, atomic owner-only writes, no lost updates."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

import trio_mcp
from trio_mcp import _auth


def token(access: str, refresh: str | None = None) -> OAuthToken:
    return OAuthToken(access_token=access, token_type="Bearer", refresh_token=refresh)


def client_info(client_id: str) -> OAuthClientInformationFull:
    return OAuthClientInformationFull(client_id=client_id, redirect_uris=["http://localhost:3000/callback"])


def record_file_io(monkeypatch: pytest.MonkeyPatch, root: Path) -> list[tuple[str, int]]:
    """Record (what, thread id) for every file operation the store can make under ``root``."""
    calls: list[tuple[str, int]] = []

    def under_root(path: Any) -> bool:
        return str(path).startswith(str(root))

    def wrap(what: str, original: Callable[..., Any], *, path_arg: bool) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not path_arg or under_root(args[0] if args else kwargs.get("dir")):
                calls.append((what, threading.get_ident()))
            return original(*args, **kwargs)

        return wrapper

    def mkstemp(*args: Any, **kwargs: Any) -> Any:
        if under_root(kwargs.get("dir")):
            calls.append(("tempfile.mkstemp", threading.get_ident()))
        return original_mkstemp(*args, **kwargs)

    original_mkstemp = tempfile.mkstemp
    monkeypatch.setattr(Path, "open", wrap("Path.open", Path.open, path_arg=True))
    monkeypatch.setattr(Path, "read_text", wrap("Path.read_text", Path.read_text, path_arg=True))
    monkeypatch.setattr(Path, "read_bytes", wrap("Path.read_bytes", Path.read_bytes, path_arg=True))
    monkeypatch.setattr(Path, "write_text", wrap("Path.write_text", Path.write_text, path_arg=True))
    monkeypatch.setattr(Path, "mkdir", wrap("Path.mkdir", Path.mkdir, path_arg=True))
    monkeypatch.setattr("builtins.open", wrap("open", open, path_arg=True))
    monkeypatch.setattr(os, "fdopen", wrap("os.fdopen", os.fdopen, path_arg=False))
    monkeypatch.setattr(os, "replace", wrap("os.replace", os.replace, path_arg=True))
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return calls


async def test_file_io_never_runs_on_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each async method reads or writes the file, always in a worker thread."""
    loop_thread = threading.get_ident()
    path = tmp_path / "tokens" / "store.json"
    store = trio_mcp.FileTokenStore(path, key="a")
    calls = record_file_io(monkeypatch, tmp_path)

    reads = {"Path.open", "open", "Path.read_text", "Path.read_bytes"}
    writes = {"tempfile.mkstemp", "os.replace"}
    operations: list[tuple[str, Callable[[], Any], set[str]]] = [
        ("get_tokens (no file yet)", store.get_tokens, reads),
        ("set_tokens", lambda: store.set_tokens(token("at-1", "rt-1")), writes),
        ("get_tokens", store.get_tokens, reads),
        ("set_client_info", lambda: store.set_client_info(client_info("cid")), writes),
        ("get_client_info", store.get_client_info, reads),
    ]
    for name, operation, expected in operations:
        calls.clear()
        await operation()
        done = {what for what, _ in calls}
        assert done & expected, f"{name}: none of {expected} recorded (saw {done})"
        if expected is writes:
            assert writes <= done, f"{name}: not written atomically (saw {done})"
        on_loop = [what for what, thread in calls if thread == loop_thread]
        assert not on_loop, f"{name} did file I/O on the event loop: {on_loop}"


async def test_round_trip_permissions_and_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "tokens" / "store.json"
    a = trio_mcp.FileTokenStore(path, key="a")
    b = trio_mcp.FileTokenStore(path, key="b")
    assert await a.get_tokens() is None and await a.get_client_info() is None
    assert not path.exists()

    await a.set_tokens(token("at-1", "rt-1"))
    await a.set_client_info(client_info("cid"))
    await b.set_tokens(token("at-2"))

    fresh = trio_mcp.FileTokenStore(path, key="a")
    tokens = await fresh.get_tokens()
    assert tokens is not None and (tokens.access_token, tokens.refresh_token) == ("at-1", "rt-1")
    info = await fresh.get_client_info()
    assert info is not None and info.client_id == "cid"
    other = await trio_mcp.FileTokenStore(path, key="b").get_tokens()
    assert other is not None and other.access_token == "at-2"
    assert await trio_mcp.FileTokenStore(path, key="c").get_tokens() is None

    assert path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(path.parent) == ["store.json"]  # no temporary file left behind
    assert set(json.loads(path.read_text())) == {"a", "b"}


async def test_failed_write_leaves_the_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails midway raises to the caller, and the previous file is untouched."""
    path = tmp_path / "store.json"
    store = trio_mcp.FileTokenStore(path)
    await store.set_tokens(token("old"))
    before = path.read_bytes()

    def broken_dump(data: Any, f: Any, **kwargs: Any) -> None:
        f.write('{"default": {"tok')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError, match="No space left"):
        await store.set_tokens(token("new"))
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["store.json"]
    tokens = await store.get_tokens()
    assert tokens is not None and tokens.access_token == "old"


async def test_concurrent_writes_to_one_file_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stores of different keys sharing a file, written at once from worker threads: each
    read-modify-write sees the other's result (a slow read makes any overlap certain)."""
    path = tmp_path / "store.json"
    read_json = _auth._read_json

    def slow_read(p: Path) -> dict[str, Any]:
        data = read_json(p)
        time.sleep(0.05)
        return data

    monkeypatch.setattr(_auth, "_read_json", slow_read)
    stores = [trio_mcp.FileTokenStore(path, key=f"k{i}") for i in range(4)]
    async with trio.open_nursery() as nursery:
        for i, store in enumerate(stores):
            nursery.start_soon(store.set_tokens, token(f"at-{i}"))
            nursery.start_soon(store.set_client_info, client_info(f"cid-{i}"))
    monkeypatch.undo()

    data = json.loads(path.read_text())
    assert set(data) == {f"k{i}" for i in range(4)}
    for i, store in enumerate(stores):
        tokens = await store.get_tokens()
        info = await store.get_client_info()
        assert tokens is not None and tokens.access_token == f"at-{i}"
        assert info is not None and info.client_id == f"cid-{i}"


async def test_a_write_is_not_lost_to_a_pending_cancellation(tmp_path: Path) -> None:
    """Tokens handed to the store are written even when the caller is being cancelled (as they
    were when the write ran on the event loop): a rotated refresh token must not be lost."""
    path = tmp_path / "store.json"
    store = trio_mcp.FileTokenStore(path)
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.set_tokens(token("at-1", "rt-2"))
    stored = json.loads(path.read_text())
    assert stored["default"]["tokens"]["refresh_token"] == "rt-2"

"""``trio_mcp.demo_server``: every tool, the resource and the prompt, in process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from _fleet import policy

import trio_mcp
from trio_mcp.demo_server import LEDGER_ENV, build_server


def config(name: str) -> trio_mcp.ServerConfig:
    return trio_mcp.ServerConfig(
        name=name, transport=trio_mcp.MemoryTransport(server=build_server(name)), policy=policy()
    )


def text(result: object) -> str:
    content = getattr(result, "content", None) or getattr(result, "contents", None)
    assert content, result
    value: str = content[0].text
    return value


async def test_demo_tools_resource_and_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = tmp_path / "ledger.txt"
    monkeypatch.delenv(LEDGER_ENV, raising=False)
    with trio.fail_after(20):
        async with trio_mcp.open_manager([config("demo-a")]) as manager:
            await manager.wait_for("demo-a", lambda s: s.session.active)
            assert text(await manager.call_tool("echo", {"text": "hi"})) == "hi"
            assert (await manager.call_tool("add", {"a": 2, "b": 40})).structured_content == {"result": 42}
            assert text(await manager.call_tool("sleep", {"seconds": 0.01})) == "slept 0.01"
            assert text(await manager.call_tool("whoami")) == "demo-a"
            assert (await manager.call_tool("pid")).structured_content == {"result": os.getpid()}
            # Without a ledger, a charge only answers.
            assert text(await manager.call_tool("charge", {"amount": 3})) == "demo-a charged 3"
            assert not ledger.exists()
            monkeypatch.setenv(LEDGER_ENV, str(ledger))
            assert text(await manager.call_tool("charge", {"amount": 5})) == "demo-a charged 5"
            assert text(await manager.call_tool("charge", {"amount": 7})) == "demo-a charged 7"
            assert ledger.read_text() == "demo-a 5\ndemo-a 7\n"

            readme = await manager.read_resource("demo://readme")
            assert text(readme) == "This is demo-a, a trio_mcp demo server."
            prompt = await manager.get_prompt("greet", {"name": "Ada"})
            assert prompt.messages[0].content.text == "Please greet Ada warmly."  # type: ignore[union-attr]
            tools = {entry.item.name for entry in await manager.list_tools()}
            assert tools == {"echo", "add", "sleep", "whoami", "pid", "charge"}

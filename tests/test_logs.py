"""Log lines from the event stream: what is logged, with which fields, and never a secret."""

from __future__ import annotations

import json
import logging

import pytest
import trio
from _fleet import policy

import trio_mcp
from trio_mcp.logs import FLEET_LOGGER, JsonFormatter, TextFormatter, attach_logging, configure
from trio_mcp.testing import ScriptedServer, memory_server


def _fleet(*servers: ScriptedServer) -> list[trio_mcp.ServerConfig]:
    return [memory_server(s, policy=policy(health_interval=3600.0)) for s in servers]


async def test_status_changes_handshakes_failovers_and_failures_are_one_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = ScriptedServer("a"), ScriptedServer("b")
    caplog.set_level(logging.INFO, logger=FLEET_LOGGER)
    async with trio_mcp.open_manager(_fleet(a, b)) as manager:
        stop = attach_logging(manager)
        await manager.connect()
        connected = [r for r in caplog.records if "connected" in r.getMessage()]
        assert {r.server for r in connected} == {"a", "b"}  # type: ignore[attr-defined]
        assert all("modern 2026-07-28" in r.getMessage() for r in connected)

        a.fail_tool("echo")
        result = await manager.invoke(
            "tools/call", "echo", {"text": "x"}, preferred=["a", "b"], failover="always", request_id="req-1"
        )
        assert result.server == "b"
        (failover,) = [r for r in caplog.records if "failed over" in r.getMessage()]
        assert failover.levelno == logging.INFO
        assert failover.getMessage().startswith("tools/call echo: failed over a -> b")
        assert failover.correlation_id == "req-1"  # type: ignore[attr-defined]

        a.go_down()
        await manager.health_check("a")
        (down,) = [r for r in caplog.records if "healthy -> degraded" in r.getMessage()]
        assert down.levelno == logging.WARNING
        assert down.server == "a"  # type: ignore[attr-defined]
        assert "[" in down.getMessage()  # the category

        b.fail_tool("charge")
        with pytest.raises(trio_mcp.InvocationFailedError):
            await manager.invoke("tools/call", "charge", {"amount": 1}, preferred=["b"], request_id="req-2")
        (failed,) = [r for r in caplog.records if r.getMessage().startswith("tools/call charge:")]
        assert failed.levelno == logging.WARNING
        assert "unknown after trying b" in failed.getMessage()
        assert failed.correlation_id == "req-2"  # type: ignore[attr-defined]

        stop()
        count = len(caplog.records)
        b.go_down()
        await manager.health_check("b")
        assert len(caplog.records) == count  # detached


async def test_secrets_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "tok-9f8e7d6c5b4a"
    config = trio_mcp.ServerConfig(
        name="web",
        transport=trio_mcp.HttpTransport(
            url="http://127.0.0.1:9/mcp",
            headers={"X-Api-Key": secret},
            auth=trio_mcp.BearerAuth(token=secret),
        ),
        policy=policy(connect_on_start=False),
    )
    async with trio_mcp.open_manager([config]) as manager:
        attach_logging(manager)
        await manager.health_check("web")
        with pytest.raises(trio_mcp.InvocationFailedError):
            await manager.invoke("tools/call", "echo", {}, preferred=["web"])
    assert any(r.name == FLEET_LOGGER for r in caplog.records)
    assert secret not in caplog.text


def test_formatters_write_one_line_with_the_fields() -> None:
    record = logging.makeLogRecord(
        {
            "name": FLEET_LOGGER,
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": "a: healthy -> degraded",
            "server": "a",
            "correlation_id": "c-1",
            "created": 1_700_000_000.0,
        }
    )
    data = json.loads(JsonFormatter().format(record))
    assert data == {
        "time": 1_700_000_000.0,
        "level": "warning",
        "logger": FLEET_LOGGER,
        "message": "a: healthy -> degraded",
        "server": "a",
        "correlation_id": "c-1",
    }
    text = TextFormatter().format(record)
    assert text == "2023-11-14T22:13:20Z warning trio_mcp.fleet: a: healthy -> degraded (correlation_id=c-1)"
    assert "\n" not in text


def test_configure_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure("info", "xml")
    with pytest.raises(ValueError, match="log level"):
        configure("loud", "text")
    saved = {
        name: (logging.getLogger(name).handlers, logging.getLogger(name).level)
        for name in ("trio_mcp", "web")
    }
    try:
        configure("debug", "json")
        handler = logging.getLogger("trio_mcp").handlers[0]
        assert isinstance(handler.formatter, JsonFormatter)
        assert logging.getLogger("web").level == logging.DEBUG
    finally:
        for name, (handlers, level) in saved.items():
            logging.getLogger(name).handlers = handlers
            logging.getLogger(name).setLevel(level)
            logging.getLogger(name).propagate = True


async def test_a_handshake_again_is_logged_as_such(caplog: pytest.LogCaptureFixture) -> None:
    a = ScriptedServer("a")
    caplog.set_level(logging.INFO, logger=FLEET_LOGGER)
    async with trio_mcp.open_manager(_fleet(a)) as manager:
        await manager.connect("a")
        attach_logging(manager)
        await trio.sleep(1)
        await manager.initialize("a")
    assert any("a: handshake again (modern 2026-07-28)" in r.getMessage() for r in caplog.records)

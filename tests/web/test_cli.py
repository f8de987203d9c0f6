"""``trio-mcp`` argument parsing and configuration loading (the server itself: tests/integration)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from trio_mcp import StdioTransport
from trio_mcp._cli import build_parser, load_fleet, main
from trio_mcp._default_fleet import default_fleet


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIO_MCP_TOKEN", raising=False)
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.config, args.token) == ("127.0.0.1", 8000, None, None)
    assert args.allow_stdio_registration is False
    assert args.max_body_bytes == 1_000_000


def test_options_and_token_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIO_MCP_TOKEN", "from-env")
    args = build_parser().parse_args(
        ["serve", "--host", "0.0.0.0", "--port", "0", "--allow-stdio-registration", "--max-body-bytes", "10"]
    )
    assert (args.host, args.port, args.token, args.max_body_bytes) == ("0.0.0.0", 0, "from-env", 10)
    assert args.allow_stdio_registration is True
    assert build_parser().parse_args(["serve", "--token", "explicit"]).token == "explicit"


@pytest.mark.parametrize(
    "argv", [[], ["serve", "--port", "70000"], ["serve", "--port", "x"], ["serve", "--max-body-bytes", "0"]]
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2


def test_default_fleet_is_two_demo_servers_over_stdio() -> None:
    fleet = default_fleet()
    assert [c.name for c in fleet] == ["primary", "backup"]
    for config in fleet:
        assert isinstance(config.transport, StdioTransport)
        assert config.transport.command == sys.executable
        assert config.transport.args == ("-m", "trio_mcp.demo_server", "--name", config.name)
    assert [c.name for c in load_fleet(None)] == ["primary", "backup"]


def test_load_fleet_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"mcpServers": {"remote": {"url": "http://127.0.0.1:9/mcp"}}}))
    assert [c.name for c in load_fleet(path)] == ["remote"]


@pytest.mark.parametrize("content", [None, "{nope", '{"mcpServers": {"x": {"url": 5}}}'])
def test_invalid_config_exits_2(
    tmp_path: Path, content: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "servers.json"
    if content is not None:
        path.write_text(content)
    assert main(["serve", "--config", str(path)]) == 2
    assert "invalid configuration" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "grace"), [("0", 0.0), ("2.5", 2.5), ("5", 5.0)])
def test_shutdown_grace(text: str, grace: float) -> None:
    assert build_parser().parse_args(["serve"]).shutdown_grace == 5.0
    assert build_parser().parse_args(["serve", "--shutdown-grace", text]).shutdown_grace == grace


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["serve", "--shutdown-grace", "-1"], "must be a number >= 0, got -1"),
        (["serve", "--shutdown-grace", "inf"], "must be a number >= 0, got inf"),
        (["serve", "--shutdown-grace", "nan"], "must be a number >= 0, got nan"),
        (["serve", "--shutdown-grace", "soon"], "not a number: 'soon'"),
        (["serve", "--port", "x"], "not an integer: 'x'"),
        (["serve", "--port", "70000"], "must be 0-65535, got 70000"),
        (["serve", "--max-body-bytes", "0"], "must be >= 1, got 0"),
    ],
)
def test_bad_arguments_say_why(argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert complaint in capsys.readouterr().err


def test_a_config_file_that_is_not_utf8_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "servers.json"
    path.write_bytes(b"\xff\xfe{")
    assert main(["serve", "--config", str(path)]) == 2
    assert "invalid configuration" in capsys.readouterr().err


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    config = tmp_path / "empty.json"
    config.write_text(json.dumps({"mcpServers": {}}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--config", str(config), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"trio-mcp: cannot listen on 127.0.0.1:{port}: port {port} is in use"]


def test_an_invalid_host_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "empty.json"
    config.write_text(json.dumps({"mcpServers": {}}))
    assert main(["serve", "--config", str(config), "--host", "256.1.1.1", "--port", "0"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("trio-mcp: cannot listen on 256.1.1.1:0: invalid address (")

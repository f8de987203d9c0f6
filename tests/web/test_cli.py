"""The ``trio-mcp`` command: parsing, configuration loading, and every command run in this
process on scripted in-memory fleets, both one-shot (a manager opened for the command) and
through the HTTP API (an ASGI client). Real processes: tests/integration/test_cli_e2e.py."""

from __future__ import annotations

import errno
import io
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio
import trio.testing
from _fleet import policy
from mcp.server.mcpserver.exceptions import ToolError
from rich.console import Console

import trio_mcp
from trio_mcp import StdioTransport, _cli_commands, _cli_serve
from trio_mcp._cli import NO_TARGET, main, parse_pairs
from trio_mcp._cli_commands import execute, exit_code
from trio_mcp._cli_common import Target, load_fleet
from trio_mcp._cli_fleet import Fleet, HttpFleet, LocalFleet, api_root, merge_events
from trio_mcp._cli_output import (
    Output,
    clock,
    content_text,
    event_line,
    prompt_text,
    relative,
    resource_text,
    servers_table,
    status_table,
    tool_result_text,
    tools_table,
)
from trio_mcp._default_fleet import default_fleet
from trio_mcp.testing import ScriptedServer, memory_server
from web.app import create_app

ANCHOR = 1_700_000_000.0
KINDS = ["local", "http"]

# -- serve: parsing and configuration ----------------------------------------------------------------


@pytest.fixture
def serve_options(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[_cli_serve.ServeOptions]]:
    """What ``trio-mcp serve`` would serve with (the server itself is not started)."""
    seen: list[_cli_serve.ServeOptions] = []

    def capture(options: _cli_serve.ServeOptions) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(_cli_serve, "run", capture)
    yield seen


def test_defaults(monkeypatch: pytest.MonkeyPatch, serve_options: list[_cli_serve.ServeOptions]) -> None:
    monkeypatch.delenv("TRIO_MCP_TOKEN", raising=False)
    assert main(["serve"]) == 0
    assert serve_options == [
        _cli_serve.ServeOptions(
            config=None,
            host="127.0.0.1",
            port=8000,
            allow_stdio_registration=False,
            token=None,
            max_body_bytes=1_000_000,
            shutdown_grace=5.0,
        )
    ]


def test_options_and_token_from_env(
    monkeypatch: pytest.MonkeyPatch, serve_options: list[_cli_serve.ServeOptions]
) -> None:
    monkeypatch.setenv("TRIO_MCP_TOKEN", "from-env")
    argv = [
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--allow-stdio-registration",
        "--max-body-bytes",
        "10",
    ]
    assert main([*argv, "--config", "fleet.json"]) == 0
    (options,) = serve_options
    assert (options.host, options.port, options.token, options.max_body_bytes) == (
        "0.0.0.0",
        0,
        "from-env",
        10,
    )
    assert options.allow_stdio_registration is True
    assert options.config == Path("fleet.json")
    assert main(["serve", "--token", "explicit"]) == 0
    assert serve_options[-1].token == "explicit"
    assert main(["serve", "--ready-min", "2", "--log-level", "WARNING", "--log-format", "json"]) == 0
    last = serve_options[-1]
    assert (last.ready_min, last.log_level, last.log_format) == (2, "warning", "json")
    assert main(["serve", "--ready-min", "-1"]) == 2
    assert main(["serve", "--log-format", "xml"]) == 2


@pytest.mark.parametrize(
    "argv", [[], ["serve", "--port", "70000"], ["serve", "--port", "x"], ["serve", "--max-body-bytes", "0"]]
)
def test_bad_arguments_exit_2(argv: list[str], serve_options: list[_cli_serve.ServeOptions]) -> None:
    assert main(argv) == 2
    assert serve_options == []


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
    # The other commands say the same about the same file.
    assert main(["status", "--config", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("trio-mcp: invalid configuration: ")


@pytest.mark.parametrize(("text", "grace"), [("0", 0.0), ("2.5", 2.5), ("5", 5.0)])
def test_shutdown_grace(text: str, grace: float, serve_options: list[_cli_serve.ServeOptions]) -> None:
    assert main(["serve"]) == 0
    assert main(["serve", "--shutdown-grace", text]) == 0
    assert [o.shutdown_grace for o in serve_options] == [5.0, grace]


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
        (["call", "echo", "--timeout", "0", "--url", "http://x"], "must be a number > 0, got 0"),
        (["events", "--limit", "-1", "--url", "http://x"], "must be >= 0, got -1"),
    ],
)
def test_bad_arguments_say_why(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str], serve_options: list[Any]
) -> None:
    assert main(argv) == 2
    assert complaint in capsys.readouterr().err


def test_a_config_file_that_is_not_utf8_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "servers.json"
    path.write_bytes(b"\xff\xfe{")
    assert main(["serve", "--config", str(path)]) == 2
    assert "invalid configuration" in capsys.readouterr().err


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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


# -- the command line of the other commands ---------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"trio-mcp {version('trio-mcp')} (mcp {version('mcp')}, trio {version('trio')}, ")


def test_help_lists_every_command_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("serve", "servers", "status", "tools", "events", "call", "read", "prompt"):
        assert f"\n  {command} " in out
    assert "3 every candidate failed" in " ".join(out.split())


def test_the_command_line_module_imports_no_client_server_or_rendering_library() -> None:
    """Importing the entry point's module loads nothing of the SDK, trio, the HTTP client, the
    web app or rich (beyond what the ``trio_mcp`` package itself imports): ``--help`` is quick."""
    heavy = (
        "anyio httpx httpx2 hypercorn jsonschema mcp mcp_types prometheus_client pydantic rich "
        "starlette trio web"
    ).split()
    script = (
        "import sys, trio_mcp\n"
        "before = set(sys.modules)\n"
        "import trio_mcp._cli\n"
        "new = set(sys.modules) - before\n"
        f"print(sorted(m for m in new if m.split('.')[0] in {heavy!r} or m.startswith('trio_mcp._')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['trio_mcp._cli', 'trio_mcp._cli_common']"


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (["text=hi"], {"text": "hi"}),
        (
            ["n=5", "x=1.5", "yes=true", "no=false", "none=null"],
            {"n": 5, "x": 1.5, "yes": True, "no": False, "none": None},
        ),
        (['o={"a": [1, 2]}', "l=[1]"], {"o": {"a": [1, 2]}, "l": [1]}),
        (
            ['s="5"', "empty=", "eq=a=b", "nan=NaN", "inf=Infinity"],
            {"s": "5", "empty": "", "eq": "a=b", "nan": "NaN", "inf": "Infinity"},
        ),
        (["text=hello world", "brace={oops"], {"text": "hello world", "brace": "{oops"}),
    ],
)
def test_key_value_arguments_are_json_when_they_parse(pairs: list[str], expected: dict[str, Any]) -> None:
    assert parse_pairs(pairs) == expected


def test_prompt_arguments_stay_strings() -> None:
    assert parse_pairs(["n=5", "flag=true"], json_values=False) == {"n": "5", "flag": "true"}


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["call", "echo", "text", "--url", "http://x"], "expected key=value, got 'text'"),
        (["call", "echo", "=hi", "--url", "http://x"], "expected key=value, got '=hi'"),
        (["call", "echo", "a=1", "a=2", "--url", "http://x"], "'a' is given twice"),
        (["prompt", "greet", "name", "--url", "http://x"], "expected key=value, got 'name'"),
        (["call", "echo", "--failover", "sometimes", "--url", "http://x"], "'sometimes' is not one of"),
    ],
)
def test_bad_key_value_arguments_exit_2(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert complaint in capsys.readouterr().err


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Target, str, dict[str, Any]]]:
    """The commands ``main`` would run (they are not run)."""
    seen: list[tuple[Target, str, dict[str, Any]]] = []

    def capture(target: Target, command: str, **options: Any) -> int:
        seen.append((target, command, options))
        return 0

    monkeypatch.setattr(_cli_commands, "run", capture)
    monkeypatch.delenv("TRIO_MCP_URL", raising=False)
    monkeypatch.delenv("TRIO_MCP_TOKEN", raising=False)
    return seen


def test_call_builds_the_api_request(runs: list[tuple[Target, str, dict[str, Any]]]) -> None:
    argv = [
        "call",
        "add",
        "a=1",
        "b=2",
        "--url",
        "http://h:1",
        "--token",
        "t",
        "--prefer",
        "x,y",
        "--prefer",
        "z",
    ]
    assert (
        main(
            [*argv, "--failover", "always", "--timeout", "5", "--attempt-timeout", "2", "--request-id", "r1"]
        )
        == 0
    )
    assert main(["read", "demo://readme", "--config", "f.json", "--json"]) == 0
    assert main(["prompt", "greet", "name=5", "--url", "http://h:1"]) == 0
    assert runs == [
        (
            Target(url="http://h:1", token="t"),
            "call",
            {
                "json_mode": False,
                "body": {
                    "tool_name": "add",
                    "arguments": {"a": 1, "b": 2},
                    "preferred_servers": ["x", "y", "z"],
                    "failover": "always",
                    "timeout_seconds": 5.0,
                    "attempt_timeout_seconds": 2.0,
                    "request_id": "r1",
                },
            },
        ),
        (
            Target(config=Path("f.json")),
            "read",
            {
                "json_mode": True,
                "body": {"uri": "demo://readme", "preferred_servers": [], "failover": "safe"},
            },
        ),
        (
            Target(url="http://h:1"),
            "prompt",
            {
                "json_mode": False,
                "body": {
                    "name": "greet",
                    "arguments": {"name": "5"},
                    "preferred_servers": [],
                    "failover": "safe",
                },
            },
        ),
    ]


def test_events_options(runs: list[tuple[Target, str, dict[str, Any]]]) -> None:
    assert main(["events", "--url", "http://h:1"]) == 0
    assert (
        main(["events", "-f", "--server", "a", "--limit", "0", "--interval", "0.5", "--url", "http://h:1"])
        == 0
    )
    assert [options for _, _, options in runs] == [
        {"json_mode": False, "server": None, "limit": 20, "follow": False, "interval": 1.0},
        {"json_mode": False, "server": "a", "limit": 0, "follow": True, "interval": 0.5},
    ]


def test_url_and_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, runs: list[tuple[Target, str, dict[str, Any]]]
) -> None:
    monkeypatch.setenv("TRIO_MCP_URL", "http://env:1")
    monkeypatch.setenv("TRIO_MCP_TOKEN", "env-token")
    assert main(["servers"]) == 0
    assert main(["servers", "--url", "http://flag:1", "--token", "flag-token"]) == 0
    # An explicit --config wins over $TRIO_MCP_URL.
    assert main(["tools", "--config", "f.json"]) == 0
    assert [target for target, _, _ in runs] == [
        Target(url="http://env:1", token="env-token"),
        Target(url="http://flag:1", token="flag-token"),
        Target(config=Path("f.json"), token="env-token"),
    ]


@pytest.mark.parametrize(
    "command",
    [["servers"], ["status"], ["tools"], ["events"], ["call", "echo"], ["read", "x://y"], ["prompt", "p"]],
)
def test_without_a_fleet_every_command_says_what_is_missing(
    command: list[str], runs: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(command) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--url URL (or set $TRIO_MCP_URL)" in err and "--config FILE" in err
    assert " ".join(NO_TARGET.split()) in err
    assert runs == []


def test_url_and_config_exclude_each_other(runs: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["servers", "--url", "http://h:1", "--config", "f.json"]) == 2
    assert "--url and --config exclude each other" in capsys.readouterr().err
    assert runs == []


# -- the commands on scripted fleets, one-shot and over HTTP -----------------------------------------------


def scripted(name: str) -> ScriptedServer:
    """A scripted server with one more tool, ``boom``, that answers with ``isError``."""
    server = ScriptedServer(name)

    @server.mcp_server.tool(description="Answer with an error.")
    async def boom(reason: str = "it broke") -> str:
        raise ToolError(reason)

    return server


@asynccontextmanager
async def open_cli_fleet(
    kind: str, *servers: ScriptedServer, token: str | None = None
) -> AsyncIterator[Fleet]:
    """``servers`` under a manager, as the CLI sees them: in-process, or through the API."""
    configs = [memory_server(s, policy=policy()) for s in servers]
    async with trio_mcp.open_manager(configs, clock_anchor=ANCHOR) as manager:
        await manager.connect()  # as a long-running API's would be
        if kind == "local":
            yield LocalFleet(manager, description="servers.json")
            return
        transport = httpx2.ASGITransport(app=without_event_stream(create_app(manager, token=token)))
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
            yield HttpFleet(client, url="http://test", token=None)


def without_event_stream(app: Any) -> Any:
    """``app`` answering ``GET /events/stream`` as an API from before it (404): an ASGI client
    reads whole answers, so it cannot follow a stream; the CLI then polls the logs."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/events/stream"):
            body = json.dumps({"detail": {"error": "not_found", "message": "Not Found"}}).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return asgi


class Written(io.StringIO):
    """A ``StringIO`` that wakes whoever waits for it to be written to."""

    def __init__(self) -> None:
        super().__init__()
        self.written = trio.Event()

    def write(self, text: str) -> int:
        self.written.set()
        self.written = trio.Event()
        return super().write(text)


class Captured:
    def __init__(self, *, json_mode: bool = False) -> None:
        self.stdout = Written()
        self.stderr = io.StringIO()
        self.output = Output(json_mode=json_mode, stdout=self.stdout, stderr=self.stderr)

    @property
    def out(self) -> str:
        return self.stdout.getvalue()

    @property
    def err(self) -> str:
        return self.stderr.getvalue()

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines()]

    async def wait_lines(self, count: int) -> None:
        """Wait until stdout has ``count`` lines."""
        with trio.fail_after(10):
            while len(self.out.splitlines()) < count:
                await self.stdout.written.wait()


async def cli(fleet: Fleet, command: str, *, json_mode: bool = False, **options: Any) -> tuple[int, Captured]:
    captured = Captured(json_mode=json_mode)
    code = await execute(fleet, captured.output, command, **options)
    return code, captured


def tool_call(tool: str, arguments: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "body": {
            "tool_name": tool,
            "arguments": arguments or {},
            "preferred_servers": [],
            "failover": "safe",
            **extra,
        }
    }


@pytest.mark.parametrize("kind", KINDS)
async def test_servers_status_and_tools(kind: str, autojump_clock: trio.testing.MockClock) -> None:
    async with open_cli_fleet(kind, scripted("a"), scripted("b")) as fleet:
        code, servers = await cli(fleet, "servers")
        assert code == 0
        rows = servers.out.splitlines()
        assert rows[0].split() == ["NAME", "STATUS", "TRANSPORT", "ENDPOINT", "SERVER", "PROTOCOL"]
        assert [row.split()[:4] for row in rows[1:]] == [
            ["a", "healthy", "memory", "-"],
            ["b", "healthy", "memory", "-"],
        ]

        code, status = await cli(fleet, "status")
        assert code == 0
        rows = status.out.splitlines()
        assert rows[0].split() == [
            "NAME",
            "STATUS",
            "CONNECTION",
            "SESSION",
            "FAILURES",
            "CHECKED",
            "RETRY",
            "LAST",
            "ERROR",
        ]
        assert [row.split()[:5] for row in rows[1:3]] == [
            ["a", "healthy", "ready", "recent", "0"],
            ["b", "healthy", "ready", "recent", "0"],
        ]
        assert rows[3] == "2 servers: 2 healthy"

        code, tools = await cli(fleet, "tools")
        assert code == 0
        names = [row.split()[0] for row in tools.out.splitlines()[1:]]
        assert sorted(names) == ["boom", "charge", "echo", "lookup", "sleep", "work"]
        (echo,) = [row for row in tools.out.splitlines() if row.startswith("echo")]
        assert echo.split()[:4] == ["echo", "a,", "b", "text:"]


async def test_json_listings_are_the_api_answers(autojump_clock: trio.testing.MockClock) -> None:
    async with open_cli_fleet("local", scripted("a")) as local:
        assert isinstance(local, LocalFleet)
        app = create_app(local.manager)
        async with httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://test"
        ) as client:
            api = HttpFleet(client, url="http://test", token=None)
            for command, path in (("servers", "/servers"), ("status", "/servers"), ("tools", "/tools")):
                answers = []
                for fleet in (local, api):
                    code, captured = await cli(fleet, command, json_mode=True)
                    assert code == 0
                    answers.append(json.loads(captured.out))
                expected = (await client.get(f"/api/v1/mcp{path}")).json()
                assert answers == [expected, expected], command


@pytest.mark.parametrize("kind", KINDS)
async def test_call_prints_the_result(kind: str) -> None:
    async with open_cli_fleet(kind, scripted("a"), scripted("b")) as fleet:
        code, captured = await cli(fleet, "call", **tool_call("echo", {"text": "hi"}))
        assert (code, captured.out, captured.err) == (0, "hi\n", "")

        code, captured = await cli(
            fleet, "call", json_mode=True, **tool_call("echo", {"text": "hi"}, preferred_servers=["b"])
        )
        assert code == 0
        (answer,) = captured.json_lines()
        assert (answer["server"], answer["method"]) == ("b", "tools/call")
        assert answer["result"]["content"] == [{"type": "text", "text": "hi"}]
        assert [(a["server"], a["stage"], a["success"]) for a in answer["attempts"]] == [
            ("b", "invoke", True)
        ]


async def test_call_json_shows_progress_in_order_then_the_result() -> None:
    async with open_cli_fleet("local", scripted("a")) as fleet:
        code, captured = await cli(
            fleet, "call", json_mode=True, **tool_call("work", {"steps": 3, "interval": 0})
        )
        assert code == 0
        lines = captured.json_lines()
        assert lines[:3] == [
            {"progress": 1, "total": 3, "message": "step 1"},
            {"progress": 2, "total": 3, "message": "step 2"},
            {"progress": 3, "total": 3, "message": "step 3"},
        ]
        assert len(lines) == 4
        assert lines[3]["result"]["content"] == [{"type": "text", "text": "worked 3 steps"}]


async def test_over_http_there_is_no_progress_only_the_result() -> None:
    async with open_cli_fleet("http", scripted("a")) as fleet:
        code, captured = await cli(
            fleet, "call", json_mode=True, **tool_call("work", {"steps": 3, "interval": 0})
        )
        assert code == 0
        (answer,) = captured.json_lines()
        assert answer["result"]["content"] == [{"type": "text", "text": "worked 3 steps"}]


@pytest.mark.parametrize("kind", KINDS)
async def test_call_shows_a_live_bar_on_a_terminal(kind: str) -> None:
    async with open_cli_fleet(kind, scripted("a")) as fleet:
        captured = Captured()
        terminal = io.StringIO()
        captured.output.errors = Console(file=terminal, force_terminal=True, width=100)
        code = await execute(
            fleet, captured.output, "call", **tool_call("work", {"steps": 3, "interval": 0.05})
        )
        assert (code, captured.out) == (0, "worked 3 steps\n")
        drawn = terminal.getvalue()
        if kind == "local":
            for step in (1, 2, 3):
                assert f"step {step}" in drawn and f"{step}/3" in drawn
            assert "100%" in drawn
        else:
            assert "work" in drawn  # a spinner under the tool's name: the API passes no progress on


@pytest.mark.parametrize("kind", KINDS)
async def test_a_tool_error_exits_1(kind: str) -> None:
    async with open_cli_fleet(kind, scripted("a")) as fleet:
        code, captured = await cli(fleet, "call", **tool_call("boom", {"reason": "out of cheese"}))
        assert code == 1
        assert captured.out == ""
        assert captured.err.splitlines() == [
            "trio-mcp: boom answered with an error (server a):",
            "Error executing tool boom: out of cheese",
        ]
        code, captured = await cli(fleet, "call", json_mode=True, **tool_call("boom"))
        assert code == 1
        assert captured.json_lines()[0]["result"]["isError"] is True


@pytest.mark.parametrize("kind", KINDS)
async def test_every_candidate_failed_exits_3_with_the_attempts(
    kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    a, b = scripted("a"), scripted("b")
    a.go_down()
    b.go_down()
    async with open_cli_fleet(kind, a, b) as fleet:
        code, captured = await cli(
            fleet, "call", **tool_call("echo", {"text": "hi"}, preferred_servers=["a", "b"])
        )
        assert code == 3
        assert captured.out == ""
        err = captured.err.splitlines()
        assert err[0].startswith("trio-mcp: tools/call echo: ")
        assert err[1].split() == ["#", "SERVER", "STAGE", "OK", "SENT", "CATEGORY", "TIME", "ERROR"]
        rows = [line.split()[:6] for line in err[2:4]]
        # Passed over (retry window closed) or refused at the handshake: never sent either way.
        assert [row[2] in ("select", "handshake") for row in rows] == [True, True]
        assert [row[:2] + row[3:] for row in rows] == [
            ["1", "a", "no", "no", "unavailable"],
            ["2", "b", "no", "no", "unavailable"],
        ]

        code, captured = await cli(fleet, "call", json_mode=True, **tool_call("echo", {"text": "hi"}))
        assert code == 3
        (answer,) = captured.json_lines()
        assert answer["detail"]["outcome"] == "failed"
        assert answer["detail"]["error"] == "invocation_failed"


@pytest.mark.parametrize("kind", KINDS)
async def test_an_unknown_outcome_exits_4(kind: str, autojump_clock: trio.testing.MockClock) -> None:
    a, b = scripted("a"), scripted("b")
    a.fail_tool("charge", "lost the ledger")
    async with open_cli_fleet(kind, a, b) as fleet:
        code, captured = await cli(
            fleet, "call", **tool_call("charge", {"amount": 5}, preferred_servers=["a", "b"])
        )
        assert code == 4
        err = captured.err.splitlines()
        assert "outcome unknown: it may have executed" in err[0]
        assert err[2].split()[:6] == ["1", "a", "invoke", "no", "yes", "rpc_error"]
        assert b.executions("charge") == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_what_cannot_run_as_asked_exits_2(kind: str) -> None:
    async with open_cli_fleet(kind, scripted("a")) as fleet:
        code, captured = await cli(fleet, "call", **tool_call("nope"))
        assert code == 2
        assert captured.err == "trio-mcp: tools/call: no server offers tool 'nope' (catalogs checked: a)\n"

        code, captured = await cli(
            fleet, "call", **tool_call("echo", {"text": "hi"}, preferred_servers=["zz"])
        )
        assert (code, captured.err) == (2, "trio-mcp: unknown MCP server 'zz'\n")

        code, captured = await cli(fleet, "call", **tool_call("echo", {"text": 5}))
        assert code == 2
        assert "nothing was sent" in captured.err

        code, captured = await cli(fleet, "prompt", body={"name": "review", "arguments": {"code": 5}})
        assert code == 2
        assert captured.err.startswith("trio-mcp: ") and "(field arguments.code)" in captured.err

        code, captured = await cli(fleet, "events", server="zz", limit=20, follow=False, interval=1.0)
        assert (code, captured.err) == (2, "trio-mcp: unknown MCP server 'zz'\n")


@pytest.mark.parametrize("kind", KINDS)
async def test_read_and_prompt(kind: str) -> None:
    async with open_cli_fleet(kind, scripted("a")) as fleet:
        code, captured = await cli(fleet, "read", body={"uri": "docs://readme"})
        assert (code, captured.out) == (0, "readme from a\n")
        code, captured = await cli(fleet, "prompt", body={"name": "review", "arguments": {"code": "x = 1"}})
        assert (code, captured.out) == (0, "user: Please review:\nx = 1\n")
        code, captured = await cli(fleet, "read", json_mode=True, body={"uri": "docs://readme"})
        (answer,) = captured.json_lines()
        assert answer["result"]["contents"][0]["text"] == "readme from a"


@pytest.mark.parametrize("kind", KINDS)
async def test_events(kind: str, autojump_clock: trio.testing.MockClock) -> None:
    async with open_cli_fleet(kind, scripted("a"), scripted("b")) as fleet:
        await cli(
            fleet, "call", **tool_call("echo", {"text": "hi"}, preferred_servers=["b"], request_id="r-1")
        )
        code, captured = await cli(
            fleet, "events", json_mode=True, server=None, limit=0, follow=False, interval=1.0
        )
        assert code == 0
        events = captured.json_lines()
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
        connection = [(e["server"], e["from"], e["to"]) for e in events if e["log"] == "connection"]
        assert sorted(connection) == [("a", "unknown", "healthy"), ("b", "unknown", "healthy")]
        invocation = [(e["server"], e["kind"]) for e in events if e["log"] == "invocation"]
        assert invocation == [("b", "invoke_start"), ("b", "invoke_success")]

        code, captured = await cli(fleet, "events", server="b", limit=2, follow=False, interval=1.0)
        assert code == 0
        lines = captured.out.splitlines()
        assert len(lines) == 2
        assert lines[0].split()[1:] == ["b", "invoke_start", "tools/call", "echo", "[r-1]"]
        assert lines[1].split()[1:] == ["b", "invoke_success", "tools/call", "echo", "[r-1]"]


@pytest.mark.parametrize("kind", KINDS)
async def test_events_follow_prints_new_events(kind: str, autojump_clock: trio.testing.MockClock) -> None:
    async with open_cli_fleet(kind, scripted("a")) as fleet:
        captured = Captured(json_mode=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: execute(
                    fleet, captured.output, "events", server=None, limit=1, follow=True, interval=0.5
                )
            )
            await captured.wait_lines(1)
            (first,) = captured.json_lines()
            assert (first["log"], first["to"]) == ("connection", "healthy")
            await fleet.invoke(
                "tool", {"tool_name": "echo", "arguments": {"text": "hi"}, "request_id": "r-2"}
            )
            await captured.wait_lines(3)
            nursery.cancel_scope.cancel()
        kinds = [(e.get("kind"), e.get("request_id")) for e in captured.json_lines()[1:]]
        assert kinds == [("invoke_start", "r-2"), ("invoke_success", "r-2")]


# -- over HTTP: what only an API does ----------------------------------------------------------------------


async def test_the_token() -> None:
    async with open_cli_fleet("http", scripted("a"), token="sesame") as fleet:
        code, captured = await cli(fleet, "servers")
        assert (code, captured.err) == (
            2,
            "trio-mcp: the API at http://test needs a token: pass --token or set $TRIO_MCP_TOKEN\n",
        )
        assert isinstance(fleet, HttpFleet)
        fleet._token = "wrong"
        code, captured = await cli(fleet, "servers")
        assert (code, captured.err) == (2, "trio-mcp: the API at http://test refused the token\n")


def scripted_http(handler: Any, url: str = "http://test") -> HttpFleet:
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler), base_url=url)
    return HttpFleet(client, url=url, token=None)


async def test_something_else_answering() -> None:
    fleet = scripted_http(lambda request: httpx2.Response(200, text="<html>hello</html>"))
    code, captured = await cli(fleet, "servers")
    assert (code, captured.err) == (
        2,
        "trio-mcp: the API at http://test answered /servers with something that is not JSON\n",
    )

    fleet = scripted_http(
        lambda request: httpx2.Response(404, json={"detail": {"error": "not_found", "message": "Not Found"}})
    )
    code, captured = await cli(fleet, "tools")
    assert (code, captured.err) == (2, "trio-mcp: Not Found (is http://test a trio-mcp API?)\n")

    fleet = scripted_http(lambda request: httpx2.Response(502, text="Bad gateway"))
    code, captured = await cli(fleet, "servers")
    assert (code, captured.err) == (4, "trio-mcp: HTTP 502: Bad gateway\n")


async def test_losing_the_api_during_a_call_is_an_unknown_outcome() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadError("connection reset", request=request)

    code, captured = await cli(
        scripted_http(handler), "call", json_mode=True, **tool_call("charge", {"amount": 1})
    )
    assert code == 4
    (answer,) = captured.json_lines()
    assert answer["detail"]["outcome"] == "unknown"
    assert captured.err == "trio-mcp: lost the API at http://test while it answered: connection reset\n"


async def test_polling_an_api_that_goes_away_and_restarts(autojump_clock: trio.testing.MockClock) -> None:
    """Without an event stream, the logs are polled. A poll that cannot reach the API is said
    once; an API whose numbering began again (it restarted) has its events shown from the start."""
    answers: list[Any] = [
        [{"seq": 5}],
        httpx2.ConnectError("refused"),
        httpx2.ConnectError("refused"),
        [{"seq": 5}, {"seq": 6}],
        [{"seq": 1}],
    ]
    served = trio.Event()

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/events/stream"):  # an API from before the event stream
            return httpx2.Response(404, json={"detail": {"error": "not_found", "message": "Not Found"}})
        answer = answers[0] if request.url.path.endswith("/invocation-events") else []
        if request.url.path.endswith("/invocation-events"):
            answers.pop(0)
            if not answers:
                served.set()
        if isinstance(answer, Exception):
            raise answer
        events = [
            {"server": "a", "kind": "invoke_start", "method": "tools/call", "request_id": "r", **e}
            for e in answer
        ]
        return httpx2.Response(200, json={"events": events})

    captured = Captured(json_mode=True)
    fleet = scripted_http(handler)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: execute(fleet, captured.output, "events", server=None, limit=5, follow=True, interval=1.0)
        )
        await served.wait()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [e["seq"] for e in captured.json_lines()] == [5, 6, 1]
    assert captured.err.splitlines() == [
        "trio-mcp: cannot reach the API at http://test: refused; still trying",
        "trio-mcp: reached the API at http://test again",
        "trio-mcp: the API at http://test restarted; its events start again",
    ]


def sse(*frames: tuple[str, dict[str, Any]]) -> bytes:
    """A server-sent events body, as the API writes it."""
    out = [": connected\n\n"]
    for kind, data in frames:
        head = f"id: {data['seq']}\n" if "seq" in data else ""
        out.append(f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n")
    return "".join(out).encode()


def invocation(seq: int) -> dict[str, Any]:
    return {"seq": seq, "server": "a", "kind": "invoke_start", "method": "tools/call", "request_id": "r"}


async def test_following_the_event_stream(autojump_clock: trio.testing.MockClock) -> None:
    """New events come from ``GET /events/stream``; a stream that ends or breaks is resumed
    after the last event shown (``Last-Event-ID``); what interrupts it is said once."""
    streams: list[Any] = [
        sse(("invocation", invocation(6)), ("server", {"seq": 6, "name": "a"})),
        sse(
            ("dropped", {"dropped": 3}), ("connection", {**invocation(7), "from": "unknown", "to": "healthy"})
        ),
        httpx2.ConnectError("refused"),
        httpx2.ConnectError("refused"),
        sse(("invocation", invocation(2))),  # a lower number: the API restarted
        None,  # a live stream with nothing new
    ]
    resumed_after: list[str | None] = []
    idle = trio.Event()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/invocation-events"):
            return httpx2.Response(200, json={"events": [invocation(5)]})
        if request.url.path.endswith("/events"):
            return httpx2.Response(200, json={"events": []})
        assert request.url.path == "/api/v1/mcp/events/stream"
        assert request.url.params.get("server") == "a"
        resumed_after.append(request.headers.get("last-event-id"))
        answer = streams.pop(0)
        if answer is None:
            idle.set()
            await trio.sleep_forever()
        if isinstance(answer, Exception):
            raise answer
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=answer)

    captured = Captured(json_mode=True)
    fleet = scripted_http(handler)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: execute(fleet, captured.output, "events", server="a", limit=5, follow=True, interval=1.0)
        )
        await idle.wait()
        nursery.cancel_scope.cancel()
    assert [(e["log"], e["seq"]) for e in captured.json_lines()] == [
        ("invocation", 5),
        ("invocation", 6),
        ("connection", 7),
        ("invocation", 2),
    ]
    assert resumed_after == ["5", "6", "7", "7", "7", "2"]
    assert captured.err.splitlines() == [
        "trio-mcp: the API at http://test dropped events this client read too slowly",
        "trio-mcp: lost the API at http://test: refused; still trying",
        "trio-mcp: reached the API at http://test again",
        "trio-mcp: the API at http://test restarted; its events start again",
    ]


async def test_a_stream_that_refuses_the_token() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/events/stream"):
            return httpx2.Response(401, json={"detail": {"error": "unauthorized", "message": "no"}})
        return httpx2.Response(200, json={"events": []})

    code, captured = await cli(
        scripted_http(handler), "events", server=None, limit=5, follow=True, interval=1.0
    )
    assert (code, captured.err) == (
        2,
        "trio-mcp: the API at http://test needs a token: pass --token or set $TRIO_MCP_TOKEN\n",
    )


def test_an_api_that_is_not_there(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["status", "--url", f"http://127.0.0.1:{port}"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"trio-mcp: cannot reach the API at http://127.0.0.1:{port}: ")
    assert main(["status", "--url", "127.0.0.1:8000"]) == 2
    assert (
        capsys.readouterr().err
        == "trio-mcp: --url must be an http:// or https:// URL, got '127.0.0.1:8000'\n"
    )


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("http://h:1", "http://h:1"),
        ("http://h:1/", "http://h:1"),
        ("http://h:1/api/v1/mcp", "http://h:1"),
        ("http://h:1/api/v1/mcp/", "http://h:1"),
        ("https://h/base/", "https://h/base"),
    ],
)
def test_api_root(url: str, root: str) -> None:
    assert api_root(url) == root


# -- one-shot through main(), and what run() does around a command ------------------------------------------


def test_one_shot_on_a_config_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--config`` opens a manager for the command and closes it (the file's servers are
    replaced by scripted ones here: real processes are in tests/integration)."""
    servers = {"a": scripted("a")}
    monkeypatch.setattr(
        _cli_commands,
        "load_fleet",
        lambda path: [memory_server(s, policy=policy()) for s in servers.values()],
    )
    assert main(["call", "echo", "text=hi", "--config", "servers.json"]) == 0
    assert capsys.readouterr().out == "hi\n"
    assert servers["a"].live_connections == 0
    assert main(["call", "work", "steps=2", "interval=0", "--json", "--config", "servers.json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line.get("progress") for line in lines] == [1, 2, None]
    assert main(["call", "boom", "--config", "servers.json"]) == 1


@pytest.mark.parametrize(("follow", "code", "err"), [(False, 130, "trio-mcp: interrupted\n"), (True, 0, "")])
def test_ctrl_c(
    follow: bool, code: int, err: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def interrupted(fleet: Fleet, out: Output, **options: Any) -> int:
        async with trio.open_nursery() as nursery:  # as from inside a task: in a group
            nursery.start_soon(trio.sleep_forever)
            raise KeyboardInterrupt

    monkeypatch.setitem(_cli_commands.COMMANDS, "events", interrupted)
    target = Target(url="http://127.0.0.1:9")
    assert _cli_commands.run(target, "events", json_mode=False, follow=follow) == code
    assert capsys.readouterr().err == err


def test_a_bug_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(fleet: Fleet, out: Output, **options: Any) -> int:
        raise RuntimeError("bug")

    monkeypatch.setitem(_cli_commands.COMMANDS, "servers", broken)
    with pytest.raises(RuntimeError, match="bug"):
        _cli_commands.run(Target(url="http://127.0.0.1:9"), "servers", json_mode=False)


# -- pure parts ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "detail", "code"),
    [
        (503, {"outcome": "failed"}, 3),
        (503, {"outcome": "unknown"}, 4),
        (0, {"outcome": "unknown"}, 4),
        (503, {"error": "manager_closed"}, 3),
        (504, {"error": "timeout"}, 4),
        (500, {"error": "internal_error"}, 4),
        (404, {"error": "not_offered"}, 2),
        (422, {"error": "request_rejected"}, 2),
        (401, {"error": "unauthorized"}, 2),
    ],
)
def test_exit_codes(status: int, detail: dict[str, Any], code: int) -> None:
    assert exit_code(status, detail) == code


def test_merge_events_orders_both_logs_by_seq() -> None:
    connection = [{"seq": 1}, {"seq": 4}]
    invocation = [{"seq": 2}, {"seq": 3}, {"seq": 5}]
    assert merge_events(connection, invocation, None) == [
        {"log": "connection", "seq": 1},
        {"log": "invocation", "seq": 2},
        {"log": "invocation", "seq": 3},
        {"log": "connection", "seq": 4},
        {"log": "invocation", "seq": 5},
    ]
    assert [e["seq"] for e in merge_events(connection, invocation, 2)] == [4, 5]


@pytest.mark.parametrize(
    ("block", "text"),
    [
        ({"type": "text", "text": "hi"}, "hi"),
        ({"type": "image", "mimeType": "image/png", "data": "AAAA"}, "[image image/png, about 3 bytes]"),
        ({"type": "audio", "mimeType": "audio/wav", "data": "AAAAAAAA"}, "[audio audio/wav, about 6 bytes]"),
        ({"type": "resource_link", "uri": "file:///x", "name": "x"}, "[resource link file:///x]"),
        ({"type": "resource", "resource": {"uri": "a://b", "text": "inside"}}, "inside"),
        (
            {"type": "resource", "resource": {"uri": "a://b", "blob": "AAAA"}},
            "[blob application/octet-stream, about 3 bytes] a://b",
        ),
        ({"type": "future", "x": 1}, '{"type": "future", "x": 1}'),
    ],
)
def test_content_blocks_as_text(block: dict[str, Any], text: str) -> None:
    assert content_text(block) == text


def test_results_as_text() -> None:
    assert tool_result_text({"content": [], "structuredContent": {"n": 1}}) == '{\n  "n": 1\n}'
    assert tool_result_text({"content": []}) == ""
    assert (
        tool_result_text({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]})
        == "a\nb"
    )
    assert resource_text(
        {"contents": [{"uri": "x://1", "text": "one"}, {"uri": "x://2", "blob": "", "mimeType": "image/png"}]}
    ) == ("one\n[blob image/png, about 0 bytes] x://2")
    messages = [
        {"role": "user", "content": {"type": "text", "text": "q"}},
        {"role": "assistant", "content": {"type": "text", "text": "a"}},
    ]
    assert prompt_text({"messages": messages}) == "user: q\nassistant: a"


def test_times() -> None:
    assert relative(None, 100.0) == "-"
    assert relative(97.0, 100.0) == "3.0s ago"
    assert relative(101.5, 100.0) == "in 1.5s"
    assert relative(100.0 - 120, 100.0) == "2m ago"
    assert relative(100.0 + 7200, 100.0) == "in 2.0h"
    assert clock(None) == "-"
    assert len(clock(ANCHOR)) == len("HH:MM:SS.mmm")


def test_status_of_a_server_in_backoff() -> None:
    server = {
        "name": "a",
        "status": "unreachable",
        "connection": "backoff",
        "adapter_session": {"active": False},
        "consecutive_failures": 3,
        "last_checked_at": 95.0,
        "next_retry_at": 104.0,
        "retry_window_open": False,
        "last_error": "[Errno 111] connection refused",
        "last_error_category": "connect_error",
    }
    console = Console(file=io.StringIO(), width=200)
    console.print(status_table([server], 100.0))
    row = console.file.getvalue().splitlines()[1]  # type: ignore[attr-defined]
    assert " ".join(row.split()) == (
        "a unreachable backoff none 3 5.0s ago in 4.0s connect_error: [Errno 111] connection refused"
    )


def test_tool_arguments_column() -> None:
    tool = {
        "name": "t",
        "servers": ["a"],
        "description": "First line.\nMore.",
        "inputSchema": {
            "type": "object",
            "properties": {"x": {"type": "integer"}, "y": {"type": ["string", "null"]}, "z": True},
            "required": ["x"],
        },
    }
    console = Console(file=io.StringIO(), width=200)
    console.print(tools_table([tool, {"name": "u", "inputSchema": {}}]))
    rows = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert " ".join(rows[1].split()) == "t a x: integer, [y: string|null], [z: any] First line."
    assert rows[2].split() == ["u", "-"]


def test_events_as_lines() -> None:
    change = {
        "log": "connection",
        "seq": 1,
        "server": "a",
        "from": "healthy",
        "to": "degraded",
        "reason": "probe failed",
        "category": "timeout",
        "correlation_id": None,
        "timestamp": ANCHOR,
    }
    failure = {
        "log": "invocation",
        "seq": 2,
        "server": "a",
        "kind": "invoke_failure",
        "method": "resources/read",
        "target": "docs://x",
        "error": "gone",
        "category": "rpc_error",
        "correlation_id": "r-9",
        "timestamp": ANCHOR,
    }
    assert (
        event_line(change).plain
        == f"{clock(ANCHOR)}  a              healthy -> degraded  probe failed (timeout)"
    )
    assert event_line(failure).plain == (
        f"{clock(ANCHOR)}  a              invoke_failure    resources/read docs://x: gone (rpc_error)  [r-9]"
    )


def test_servers_table_endpoints() -> None:
    stdio = {"kind": "stdio", "command": "python", "args": ["-m", "srv"], "env": None, "cwd": None}
    http = {"kind": "http", "url": "http://h/mcp", "headers": None}
    snapshot = {
        "protocol_version": "2025-11-25",
        "era": "legacy",
        "server_info": {"name": "srv", "version": "1.2"},
    }
    servers = [
        {"name": "a", "status": "healthy", "transport": stdio, "capability_snapshot": snapshot},
        {"name": "b", "status": "unknown", "transport": http, "capability_snapshot": None},
        {"name": "c", "status": "degraded", "transport": None, "capability_snapshot": None},
    ]
    console = Console(file=io.StringIO(), width=200)
    console.print(servers_table(servers))
    rows = [" ".join(row.split()) for row in console.file.getvalue().splitlines()[1:]]  # type: ignore[attr-defined]
    assert rows == [
        "a healthy stdio python -m srv srv 1.2 2025-11-25 (legacy)",
        "b unknown http http://h/mcp - -",
        "c degraded - - - -",
    ]


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (OSError(errno.EACCES, "Permission denied"), "cannot listen on h:80: Permission denied"),
        (
            ExceptionGroup("g", [OSError(errno.EADDRINUSE, "in use")]),
            "cannot listen on h:80: port 80 is in use",
        ),
        (OSError(errno.EPIPE, "Broken pipe"), None),
        (ExceptionGroup("g", [OSError(errno.EACCES, "x"), OSError(errno.EACCES, "y")]), None),
        (RuntimeError("bug"), None),
    ],
)
def test_listen_problems(error: BaseException, problem: str | None) -> None:
    assert _cli_serve._listen_problem(error, "h", 80) == problem


def test_version_of_a_package_that_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.metadata

    def version(package: str) -> str:
        raise importlib.metadata.PackageNotFoundError(package)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("trio-mcp unknown (mcp unknown, trio unknown, Python ")


async def test_a_failure_under_the_live_bar() -> None:
    async with open_cli_fleet("local", scripted("a")) as fleet:
        captured = Captured()
        captured.output.errors = Console(file=io.StringIO(), force_terminal=True, width=100)
        code = await execute(fleet, captured.output, "call", **tool_call("nope"))
        assert code == 2
        assert captured.err == "trio-mcp: tools/call: no server offers tool 'nope' (catalogs checked: a)\n"


async def test_a_bug_in_the_library_is_not_turned_into_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_cli_fleet("local", scripted("a")) as fleet:
        assert isinstance(fleet, LocalFleet)

        async def broken(kind: str) -> list[Any]:
            raise RuntimeError("bug")

        monkeypatch.setattr(fleet.manager, "catalog", broken)
        with pytest.raises(RuntimeError, match="bug"):
            await execute(fleet, Captured().output, "tools")


async def test_losing_the_api_while_reading() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.RemoteProtocolError("server disconnected", request=request)

    code, captured = await cli(scripted_http(handler), "servers")
    assert (code, captured.err) == (2, "trio-mcp: lost the API at http://test: server disconnected\n")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
def test_serve_raises_the_open_files_limit_within_the_hard_one_and_never_lowers_it() -> None:
    """A fleet of a thousand needs more open files than the 1,024 many systems start a process
    with (a process of its own: the limits are the process's)."""
    script = (
        "import resource\n"
        "from trio_mcp._cli_serve import raise_open_files_limit as raise_to\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "print(raise_to(512), raise_to(300), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))\n"
        "print(raise_to(512), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "(256, 512) (512, 512) 512",  # raised, then left alone by a lower wish
        "(300, 300) 300",  # never above the hard limit
    ]

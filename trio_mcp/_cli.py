"""The ``trio-mcp`` command.

::

    trio-mcp serve [--config servers.json] [--host 127.0.0.1] [--port 8000]
                   [--allow-stdio-registration] [--token TOKEN] [--max-body-bytes N]
                   [--state sqlite:///FILE | postgresql://... | memory] [--event-retention 7d,100000]
    trio-mcp servers | status | tools | events [--follow]      (--url URL | --config FILE) [--json]
    trio-mcp call TOOL [key=value ...] [--prefer a,b] [--json]
    trio-mcp read URI | prompt NAME [key=value ...]
    trio-mcp --version

``serve`` without ``--config`` serves the demo fleet (a ``primary`` and a ``backup`` demo server
over stdio). Every other command talks to a running API (``--url``, ``--token``, or
``$TRIO_MCP_URL``, ``$TRIO_MCP_TOKEN``) or runs one-shot on an ``mcpServers`` file
(``--config``: a manager is opened in this process for the command and closed after it).

This module only parses the command line: it imports click, the standard library and
``_cli_common``, nothing else, so that ``--help`` is quick. The commands' work lives in
``_cli_serve`` and ``_cli_commands``, imported when a command runs.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ._cli_common import EXIT_INTERRUPTED, EXIT_OK, Target

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 1_000_000
DEFAULT_SHUTDOWN_GRACE = 5.0
DEFAULT_EVENT_LIMIT = 20
DEFAULT_POLL_INTERVAL = 1.0

URL_ENV = "TRIO_MCP_URL"
TOKEN_ENV = "TRIO_MCP_TOKEN"

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 the tool answered with isError; 2 usage or configuration error (also: the "
    "API is unreachable or refuses the token, the target is not offered, the arguments are "
    "refused); 3 every candidate failed and the request ran nowhere (outcome 'failed'); 4 it may "
    "have run (outcome 'unknown')."
)

# -- value types ---------------------------------------------------------------------------------


def _checked(metavar: str, parse: Callable[[str], object]) -> dict[str, Any]:
    """Keyword arguments of ``click.option`` for a value that ``parse`` checks: it raises
    ``ValueError(why)`` on a bad value, which click reports with the option's name."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

    return {"type": str, "metavar": metavar, "callback": check}


def _int_in(text: str, low: int, high: int | None, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None
    if value < low or (high is not None and value > high):
        raise ValueError(f"must be {expected}, got {value}")
    return value


def _number(text: str, *, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if positive and not 0 < value < math.inf:
        raise ValueError(f"must be a number > 0, got {text}")
    if not 0 <= value < math.inf:
        raise ValueError(f"must be a number >= 0, got {text}")
    return value


PORT = _checked("PORT", lambda text: _int_in(text, 0, 65535, "0-65535"))
POSITIVE_INT = _checked("N", lambda text: _int_in(text, 1, None, ">= 1"))
COUNT = _checked("N", lambda text: _int_in(text, 0, None, ">= 0"))
SECONDS = _checked("SECONDS", lambda text: _number(text, positive=False))
POSITIVE_SECONDS = _checked("SECONDS", lambda text: _number(text, positive=True))


def _json_value(raw: str) -> Any:
    """``raw`` as JSON when it parses as JSON (numbers, true/false/null, objects, arrays,
    quoted strings), else ``raw`` itself. NaN and Infinity stay strings: they are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    try:
        return json.loads(raw, parse_constant=refuse)
    except ValueError:
        return raw


def parse_pairs(pairs: Sequence[str], *, json_values: bool = True) -> dict[str, Any]:
    """``key=value`` arguments as a dict; values are parsed as JSON when ``json_values`` and
    they parse, else kept as strings.

    Raises:
        click.BadParameter: an argument without ``=`` or a key, or a key given twice.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="ARGUMENTS")
        if key in out:
            raise click.BadParameter(f"{key!r} is given twice", param_hint="ARGUMENTS")
        out[key] = _json_value(raw) if json_values else raw
    return out


def _split_names(values: Sequence[str]) -> list[str]:
    """``--prefer a,b --prefer c`` as ``["a", "b", "c"]``."""
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


# -- where a command runs --------------------------------------------------------------------------


NO_TARGET = (
    f"no fleet to talk to: pass --url URL (or set ${URL_ENV}) for a running trio-mcp API, "
    "or --config FILE to run on an mcpServers file in this process"
)


def _target(ctx: click.Context, url: str | None, token: str | None, config: Path | None) -> Target:
    if config is not None and url is not None:
        if ctx.get_parameter_source("url") is ParameterSource.COMMANDLINE:
            raise click.UsageError("--url and --config exclude each other: give one")
        url = None  # an explicit --config wins over $TRIO_MCP_URL
    if config is None and url is None:
        raise click.UsageError(NO_TARGET)
    return Target(url=url, token=token, config=config)


def _fleet_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--url``, ``--token``, ``--config`` and ``--json``."""
    decorators = [
        click.option(
            "--url",
            envvar=URL_ENV,
            metavar="URL",
            help=f"a running trio-mcp API, e.g. http://127.0.0.1:8000 (default: ${URL_ENV})",
        ),
        click.option(
            "--token",
            envvar=TOKEN_ENV,
            metavar="TOKEN",
            help=f"the API's bearer token (default: ${TOKEN_ENV})",
        ),
        click.option(
            "--config",
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="FILE",
            help="run on this mcpServers JSON file instead: the servers start for this command only",
        ),
        click.option("--json", "json_mode", is_flag=True, help="print JSON instead of text"),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def _run(
    ctx: click.Context,
    url: str | None,
    token: str | None,
    config: Path | None,
    json_mode: bool,
    command: str,
    **options: Any,
) -> int:
    from . import _cli_commands

    target = _target(ctx, url, token, config)
    return _cli_commands.run(target, command, json_mode=json_mode, **options)


# -- the commands ------------------------------------------------------------------------------------


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "unknown"

    python = ".".join(str(part) for part in sys.version_info[:3])
    click.echo(f"trio-mcp {of('trio-mcp')} (mcp {of('mcp')}, trio {of('trio')}, Python {python})")
    ctx.exit(0)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
def cli() -> None:
    """Manage a fleet of MCP servers.

    Every command but serve works against a running API (--url, --token, or $TRIO_MCP_URL,
    $TRIO_MCP_TOKEN) or one-shot on an mcpServers file (--config servers.json).
    """


@cli.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="an mcpServers JSON file (default: the demo fleet)",
)
@click.option("--host", default=DEFAULT_HOST, metavar="HOST", show_default=True, help="address to listen on")
@click.option("--port", **PORT, default=DEFAULT_PORT, show_default=True, help="port (0: any free port)")
@click.option(
    "--allow-stdio-registration",
    is_flag=True,
    help="let POST /servers register stdio servers (runs commands on this host)",
)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    metavar="TOKEN",
    help=f"require 'Authorization: Bearer TOKEN' (default: ${TOKEN_ENV})",
)
@click.option(
    "--max-body-bytes",
    **POSITIVE_INT,
    default=DEFAULT_MAX_BODY_BYTES,
    show_default=True,
    help="refuse larger request bodies with 413",
)
@click.option(
    "--shutdown-grace",
    **SECONDS,
    default=DEFAULT_SHUTDOWN_GRACE,
    show_default=True,
    help="seconds in-flight invocations get after SIGINT/SIGTERM before they are abandoned",
)
@click.option(
    "--ready-min",
    **_checked("N", lambda text: _int_in(text, 0, None, "an integer >= 0")),
    default="1",
    show_default=True,
    help="GET /api/v1/ready is 200 when at least N servers are healthy or recovered",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="log status changes, handshakes, failovers and shutdown phases at this level and above",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="one line per record: text (with hypercorn's access log) or JSON",
)
@click.option(
    "--allow-private-urls",
    is_flag=True,
    help="let POST /servers register HTTP servers on loopback, private and link-local addresses",
)
@click.option(
    "--allow-stdio-command",
    "allow_stdio_commands",
    multiple=True,
    metavar="PREFIX",
    help="let POST /servers register stdio servers whose command line starts with PREFIX "
    "(shell words; repeatable)",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="HOST",
    help="a Host name the API answers for (repeatable; default: --host and the loopback names)",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    metavar="ORIGIN",
    help="a browser origin (https://app.example) allowed to call the API (repeatable)",
)
@click.option("--rate-limit", metavar="N/PERIOD", help="per token or client address: N/s, N/m or N/h")
@click.option(
    "--max-invocations",
    **POSITIVE_INT,
    default=256,
    show_default=True,
    help="invocations served at once; more get 503 with Retry-After",
)
@click.option(
    "--body-timeout",
    **SECONDS,
    default=10.0,
    show_default=True,
    help="seconds a request body may take to arrive (408 after)",
)
@click.option(
    "--state",
    **_checked("URL", lambda text: _state(text)),
    envvar="TRIO_MCP_STATE",
    help="where API registrations and the event history are kept: sqlite:///FILE, "
    "postgresql://USER@HOST/DB (shared by replicas) or memory (nothing kept); default: "
    "$XDG_STATE_HOME/trio-mcp/state.db ($TRIO_MCP_STATE)",
)
@click.option(
    "--event-retention",
    **_checked("AGE,COUNT", lambda text: _retention(text)),
    default="7d,100000",
    show_default=True,
    help="event history kept in the store, per log: an age (7d, 12h), a count (100000), both, or forever",
)
def serve(
    config: Path | None,
    host: str,
    port: int,
    allow_stdio_registration: bool,
    token: str | None,
    max_body_bytes: int,
    shutdown_grace: float,
    ready_min: int,
    log_level: str,
    log_format: str,
    allow_private_urls: bool,
    allow_stdio_commands: tuple[str, ...],
    allowed_hosts: tuple[str, ...],
    allowed_origins: tuple[str, ...],
    rate_limit: str | None,
    max_invocations: int,
    body_timeout: float,
    state: str | None,
    event_retention: Any,
) -> int:
    """Serve the HTTP API (hypercorn, trio worker) over a manager of the fleet.

    With --config, SIGHUP and POST /api/v1/mcp/reload re-read the file.
    """
    from . import _cli_serve

    options = _cli_serve.ServeOptions(
        config=config,
        host=host,
        port=port,
        allow_stdio_registration=allow_stdio_registration,
        token=token or None,
        max_body_bytes=max_body_bytes,
        shutdown_grace=shutdown_grace,
        ready_min=ready_min,
        log_level=log_level.lower(),
        log_format=log_format,
        allow_private_urls=allow_private_urls,
        allow_stdio_commands=allow_stdio_commands,
        allowed_hosts=allowed_hosts,
        allowed_origins=allowed_origins,
        rate_limit=rate_limit,
        max_invocations=max_invocations,
        body_timeout=body_timeout,
        state=state,
        event_retention=event_retention,
    )
    return _cli_serve.run(options)


def _state(text: str) -> str:
    """A valid ``--state`` value, as given."""
    from .store import parse_state

    parse_state(text)
    return text


def _retention(text: str) -> object:
    from .store import parse_retention

    return parse_retention(text)


@cli.command()
@_fleet_options
@click.pass_context
def servers(ctx: click.Context, /, **options: Any) -> int:
    """List the servers: transport, endpoint, server info, protocol."""
    return _run(ctx, command="servers", **options)


@cli.command()
@_fleet_options
@click.pass_context
def status(ctx: click.Context, /, **options: Any) -> int:
    """Show each server's health: status, session, failures, retry window, last error."""
    return _run(ctx, command="status", **options)


@cli.command()
@_fleet_options
@click.pass_context
def tools(ctx: click.Context, /, **options: Any) -> int:
    """List the tools across the fleet, with the servers offering each."""
    return _run(ctx, command="tools", **options)


@cli.command()
@_fleet_options
@click.option("--server", metavar="NAME", help="only this server's events")
@click.option(
    "--limit",
    **COUNT,
    default=DEFAULT_EVENT_LIMIT,
    show_default=True,
    help="show the newest N events (0: all the logs keep)",
)
@click.option("-f", "--follow", is_flag=True, help="then print new events as they happen, until Ctrl-C")
@click.option(
    "--interval",
    **POSITIVE_SECONDS,
    default=DEFAULT_POLL_INTERVAL,
    show_default=True,
    help="with --follow and --url: seconds before reconnecting to the API's event stream "
    "(between polls for an API without one)",
)
@click.pass_context
def events(ctx: click.Context, /, **options: Any) -> int:
    """Show connection events (status changes) and invocation events, oldest first.

    With --json: one JSON object per line, each with "log": "connection" or "invocation".
    """
    return _run(ctx, command="events", **options)


def _invoke_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--prefer``, ``--failover``, ``--timeout``, ``--attempt-timeout``, ``--request-id``."""
    decorators = [
        click.option(
            "--prefer",
            "preferred",
            multiple=True,
            metavar="A,B",
            help="servers to try first, in this order (comma-separated; repeatable)",
        ),
        click.option(
            "--failover",
            type=click.Choice(["safe", "always", "never"]),
            default="safe",
            show_default=True,
            help="safe: only where it provably did not run, or is idempotent",
        ),
        click.option("--timeout", **POSITIVE_SECONDS, help="deadline of the whole invocation (seconds)"),
        click.option("--attempt-timeout", **POSITIVE_SECONDS, help="deadline of each attempt (seconds)"),
        click.option("--request-id", metavar="ID", help="correlates the invocation's events"),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def _invoke_body(
    options: dict[str, Any], preferred: Sequence[str], **fields: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The API request body of an invocation, and the options left for the fleet."""
    body: dict[str, Any] = dict(fields)
    body["preferred_servers"] = _split_names(preferred)
    body["failover"] = options.pop("failover")
    for option, key in (
        ("timeout", "timeout_seconds"),
        ("attempt_timeout", "attempt_timeout_seconds"),
        ("request_id", "request_id"),
    ):
        value = options.pop(option)
        if value is not None:
            body[key] = value
    return body, options


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("tool")
@click.argument("arguments", nargs=-1, metavar="[KEY=VALUE]...")
@_fleet_options
@_invoke_options
@click.pass_context
def call(
    ctx: click.Context, /, tool: str, arguments: tuple[str, ...], preferred: tuple[str, ...], **options: Any
) -> int:
    """Call TOOL with failover: each KEY=VALUE is one argument.

    A VALUE that parses as JSON is taken as JSON (n=5, flag=true, tags='["a"]', text='"5"'),
    any other as a string (text=hi). Run on --config, the server's progress notifications
    show as a progress bar (with --json: one {"progress", "total", "message"} line each, then
    the result).
    """
    args = parse_pairs(arguments)
    body, rest = _invoke_body(options, preferred, tool_name=tool, arguments=args)
    return _run(ctx, command="call", body=body, **rest)


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("uri")
@_fleet_options
@_invoke_options
@click.pass_context
def read(ctx: click.Context, /, uri: str, preferred: tuple[str, ...], **options: Any) -> int:
    """Read the resource URI with failover."""
    body, rest = _invoke_body(options, preferred, uri=uri)
    return _run(ctx, command="read", body=body, **rest)


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.argument("arguments", nargs=-1, metavar="[KEY=VALUE]...")
@_fleet_options
@_invoke_options
@click.pass_context
def prompt(
    ctx: click.Context, /, name: str, arguments: tuple[str, ...], preferred: tuple[str, ...], **options: Any
) -> int:
    """Get the prompt NAME with failover: each KEY=VALUE is one argument (prompt arguments are
    strings: VALUE is taken as it is)."""
    args = parse_pairs(arguments, json_values=False)
    body, rest = _invoke_body(options, preferred, name=name, arguments=args)
    return _run(ctx, command="prompt", body=body, **rest)


# -- entry point ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``trio-mcp`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None, prog_name="trio-mcp", standalone_mode=False
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:  # Ctrl-C while click was still parsing
        return EXIT_INTERRUPTED
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

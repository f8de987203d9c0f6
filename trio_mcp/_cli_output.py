"""How the CLI prints: rich tables and lines for people, plain JSON for programs.

Everything here renders the API's JSON shapes (the same whether the command ran over HTTP or
in-process). What a tool, resource or prompt returned is written as it is, never through
rich's markup.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

PIPED_WIDTH = 200

STATUS_STYLES = {
    "healthy": "green",
    "recovered": "cyan",
    "unknown": "dim",
    "degraded": "yellow",
    "unreachable": "red",
    "auth_required": "magenta",
}

SESSION_FRESHNESS = {"active_recent": "recent", "stale": "stale"}

EVENT_STYLES = {
    "handshake_start": "dim",
    "handshake_success": "green",
    "handshake_failure": "red",
    "invoke_start": "dim",
    "invoke_success": "green",
    "invoke_failure": "red",
}


class Output:
    """Where a command prints: ``stdout`` and ``stderr`` (default: ``sys.stdout`` and
    ``sys.stderr`` at the time of printing)."""

    def __init__(
        self, *, json_mode: bool, stdout: TextIO | None = None, stderr: TextIO | None = None
    ) -> None:
        self.json_mode = json_mode
        self._stdout = stdout
        self._stderr = stderr
        self.console = _console(stdout, stderr=False)
        self.errors = _console(stderr, stderr=True)

    @property
    def stdout(self) -> TextIO:
        return self._stdout or sys.stdout

    @property
    def stderr(self) -> TextIO:
        return self._stderr or sys.stderr

    def json_line(self, data: Any) -> None:
        """``data`` as one line of JSON on stdout."""
        print(json.dumps(data), file=self.stdout, flush=True)

    def json_document(self, data: Any) -> None:
        """``data`` as indented JSON on stdout."""
        print(json.dumps(data, indent=2), file=self.stdout, flush=True)

    def text(self, text: str, *, error: bool = False) -> None:
        """``text`` as it is, on stdout (or stderr)."""
        print(text, file=self.stderr if error else self.stdout, flush=True)

    def problem(self, message: str) -> None:
        """One line on stderr."""
        print(f"trio-mcp: {message}", file=self.stderr, flush=True)


def _console(file: TextIO | None, *, stderr: bool) -> Console:
    console = Console(file=file, stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or redirected: do not fold table rows at 80 columns.
        console.width = PIPED_WIDTH
    return console


# -- time ----------------------------------------------------------------------------------------


def clock(timestamp: float | None) -> str:
    """A Unix time as local ``HH:MM:SS.mmm``."""
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%H:%M:%S.%f")[:-3]


def relative(timestamp: float | None, now: float) -> str:
    """``3.2s ago`` / ``in 1.5s`` / ``-``."""
    if timestamp is None:
        return "-"
    delta = timestamp - now
    amount = _duration(abs(delta))
    return f"in {amount}" if delta > 0 else f"{amount} ago"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


# -- fleet views -----------------------------------------------------------------------------------


def _cells(*values: object) -> list[Text]:
    """Table cells taken as they are: a server's error may hold ``[...]``, which is not markup."""
    return [Text(str(value)) for value in values]


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def _endpoint(transport: Mapping[str, Any] | None) -> tuple[str, str]:
    if transport is None:
        return "-", "-"
    kind = str(transport.get("kind", "?"))
    if kind == "stdio":
        return kind, " ".join([str(transport.get("command", "")), *map(str, transport.get("args") or [])])
    if kind == "http":
        return kind, str(transport.get("url", ""))
    return kind, "-"


def servers_table(servers: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title=None, box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "STATUS", "TRANSPORT", "ENDPOINT", "SERVER", "PROTOCOL"):
        table.add_column(column, overflow="fold")
    for server in servers:
        kind, endpoint = _endpoint(server.get("transport"))
        snapshot = server.get("capability_snapshot") or {}
        info = snapshot.get("server_info") or {}
        name = " ".join(str(part) for part in (info.get("name"), info.get("version")) if part)
        protocol = f"{snapshot['protocol_version']} ({snapshot['era']})" if snapshot else "-"
        table.add_row(
            *_cells(server["name"]), _status(server["status"]), *_cells(kind, endpoint, name or "-", protocol)
        )
    return table


def status_table(servers: Sequence[Mapping[str, Any]], now: float) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "STATUS", "CONNECTION", "SESSION", "FAILURES", "CHECKED", "RETRY", "LAST ERROR"):
        table.add_column(column, overflow="fold")
    for server in servers:
        session = server.get("adapter_session") or {}
        if session.get("active"):
            session_text = SESSION_FRESHNESS.get(str(session.get("freshness")), "active")
        else:
            session_text = "none"
        if server.get("next_retry_at") is None or server.get("retry_window_open"):
            retry = "open" if server.get("next_retry_at") is not None else "-"
        else:
            retry = relative(server["next_retry_at"], now)
        error = server.get("last_error")
        category = server.get("last_error_category")
        table.add_row(
            *_cells(server["name"]),
            _status(server["status"]),
            *_cells(
                server.get("connection", "-"),
                session_text,
                server.get("consecutive_failures", 0),
                relative(server.get("last_checked_at"), now),
                retry,
                f"{category}: {error}" if category and error else (error or "-"),
            ),
        )
    return table


def status_summary(servers: Sequence[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for server in servers:
        counts[server["status"]] = counts.get(server["status"], 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    plural = "" if len(servers) == 1 else "s"
    return f"{len(servers)} server{plural}" + (f": {parts}" if parts else "")


def _arguments(schema: Mapping[str, Any] | None) -> str:
    """``a: integer, [b: string]`` from a JSON Schema (optional ones in brackets)."""
    if not schema:
        return "-"
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    parts = []
    for name, spec in properties.items():
        kind = spec.get("type", "any") if isinstance(spec, Mapping) else "any"
        if isinstance(kind, list):
            kind = "|".join(map(str, kind))
        part = f"{name}: {kind}"
        parts.append(part if name in required else f"[{part}]")
    return ", ".join(parts) or "-"


def tools_table(tools: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("TOOL", "SERVERS", "ARGUMENTS", "DESCRIPTION"):
        table.add_column(column, overflow="fold")
    for tool in tools:
        description = (tool.get("description") or "").strip().splitlines()
        table.add_row(
            Text(tool["name"]),
            Text(", ".join(tool.get("servers") or [])),
            Text(_arguments(tool.get("inputSchema"))),
            Text(description[0] if description else ""),
        )
    return table


def event_line(event: Mapping[str, Any]) -> Text:
    """One event as one line: time, server, what happened, and its correlation id."""
    line = Text()
    line.append(clock(event.get("timestamp")), style="dim")
    line.append(f"  {event['server']:<14} ")
    if event.get("log") == "connection" or "to" in event:
        line.append(f"{event['from']} -> ", style=STATUS_STYLES.get(event["from"], ""))
        line.append(event["to"], style=STATUS_STYLES.get(event["to"], ""))
        line.append(f"  {event.get('reason') or ''}")
    else:
        line.append(f"{event['kind']:<17}", style=EVENT_STYLES.get(event["kind"], ""))
        line.append(f" {event['method']} {event.get('target') or ''}".rstrip())
        if event.get("error"):
            line.append(f": {event['error']}", style="red")
    if event.get("category"):
        line.append(f" ({event['category']})")
    if event.get("correlation_id"):
        line.append(f"  [{event['correlation_id']}]", style="dim")
    return line


def attempts_table(attempts: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
    for column in ("#", "SERVER", "STAGE", "OK", "SENT", "CATEGORY", "TIME", "ERROR"):
        table.add_column(column, overflow="fold")
    for number, attempt in enumerate(attempts, 1):
        category = attempt.get("error_category") or "-"
        if attempt.get("budget"):
            category += f" ({attempt['budget']})"
        table.add_row(
            *_cells(number, attempt["server"], attempt["stage"]),
            Text("yes", style="green") if attempt["success"] else Text("no", style="red"),
            *_cells("yes" if attempt["sent"] else "no", category, f"{attempt['duration']:.3f}s"),
            *_cells(attempt.get("error") or "-"),
        )
    return table


# -- results ------------------------------------------------------------------------------------------


def _blob(kind: str, mime: str | None, data: str | None) -> str:
    size = len(data or "") * 3 // 4
    return f"[{kind} {mime or 'application/octet-stream'}, about {size} bytes]"


def _resource_contents(contents: Mapping[str, Any]) -> str:
    if "text" in contents:
        return str(contents["text"])
    return (
        f"{_blob('blob', contents.get('mimeType'), contents.get('blob'))} {contents.get('uri', '')}".rstrip()
    )


def content_text(block: Mapping[str, Any]) -> str:
    """One content block (text, image, audio, resource link, embedded resource) as text."""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind in ("image", "audio"):
        return _blob(str(kind), block.get("mimeType"), block.get("data"))
    if kind == "resource_link":
        return f"[resource link {block.get('uri', '')}]"
    if kind == "resource":
        return _resource_contents(block.get("resource") or {})
    return json.dumps(block)


def tool_result_text(result: Mapping[str, Any]) -> str:
    """A ``CallToolResult``: its content blocks, or its structured content when it has none."""
    blocks = result.get("content") or []
    if blocks:
        return "\n".join(content_text(block) for block in blocks)
    if result.get("structuredContent") is not None:
        return json.dumps(result["structuredContent"], indent=2)
    return ""


def resource_text(result: Mapping[str, Any]) -> str:
    return "\n".join(_resource_contents(contents) for contents in result.get("contents") or [])


def prompt_text(result: Mapping[str, Any]) -> str:
    lines = []
    for message in result.get("messages") or []:
        lines.append(f"{message.get('role', '?')}: {content_text(message.get('content') or {})}")
    return "\n".join(lines)


# -- progress --------------------------------------------------------------------------------------------


class ProgressBar:
    """A live progress bar on a terminal, for one invocation.

    rich refreshes it from a thread of its own unless told not to: here the caller's trio task
    refreshes it (:meth:`run_refresh`) and every update redraws it.
    """

    def __init__(self, console: Console, label: str) -> None:
        self._label = label
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(show_speed=False),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            get_time=trio.current_time,
        )
        self._task: TaskID = self._progress.add_task(label, total=None, count="")

    @contextmanager
    def shown(self) -> Iterator[ProgressBar]:
        with self._progress:
            yield self

    async def run_refresh(self, interval: float = 0.1) -> None:
        """Redraw (the spinner and the elapsed time) every ``interval`` seconds until cancelled."""
        while True:
            self._progress.refresh()
            await trio.sleep(interval)

    def update(self, progress: float, total: float | None, message: str | None) -> None:
        count = f"{progress:g}/{total:g}" if total is not None else f"{progress:g}"
        self._progress.update(
            self._task,
            completed=progress,
            total=total,
            description=message or self._label,
            count=count,
        )
        self._progress.refresh()

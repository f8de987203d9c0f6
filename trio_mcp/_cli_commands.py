"""The CLI's commands other than ``serve``: each runs on a :class:`~trio_mcp._cli_fleet.Fleet`
and returns the exit code."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._cli_common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TOOL_ERROR,
    EXIT_UNKNOWN,
    EXIT_USAGE,
    Target,
    load_fleet,
)
from ._cli_fleet import AnswerError, Fleet, UnreachableError, open_fleet
from ._cli_output import (
    Output,
    ProgressBar,
    attempts_table,
    event_line,
    prompt_text,
    resource_text,
    servers_table,
    status_summary,
    status_table,
    tool_result_text,
    tools_table,
)
from ._config import ServerConfig
from ._exceptions import ConfigError

Command = Callable[..., Awaitable[int]]


def run(target: Target, command: str, *, json_mode: bool, **options: Any) -> int:
    """Run ``command`` on the fleet ``target`` names; returns the exit code."""
    out = Output(json_mode=json_mode)
    servers: list[ServerConfig] = []
    if target.config is not None:
        try:
            servers = load_fleet(target.config)
        except ConfigError as exc:
            out.problem(f"invalid configuration: {exc}")
            return EXIT_USAGE

    async def main() -> int:
        try:
            async with open_fleet(target, servers) as fleet:
                return await execute(fleet, out, command, **options)
        except UnreachableError as exc:
            out.problem(str(exc))
            return EXIT_USAGE

    try:
        return trio.run(main)
    except BaseException as exc:
        if not _only(exc, KeyboardInterrupt):
            raise
        if options.get("follow"):
            return EXIT_OK  # Ctrl-C is how --follow ends
        out.problem("interrupted")
        return EXIT_INTERRUPTED


async def execute(fleet: Fleet, out: Output, command: str, **options: Any) -> int:
    """Run ``command`` on ``fleet``; an error is printed (an error answer with its attempts)."""
    try:
        return await COMMANDS[command](fleet, out, **options)
    except AnswerError as exc:
        return report(out, exc)
    except UnreachableError as exc:
        out.problem(str(exc))
        return EXIT_USAGE


def _only(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` is ``kind``, or a group of nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(e, kind) for e in exc.exceptions)
    return isinstance(exc, kind)


def exit_code(status: int, detail: dict[str, Any]) -> int:
    """The exit code for an error answer: 3 when the request provably ran nowhere, 4 when it
    may have run, 2 when the request itself cannot be run (unknown server, not offered,
    refused arguments, no token)."""
    outcome = detail.get("outcome")
    if outcome == "failed":
        return EXIT_FAILED
    if outcome == "unknown":
        return EXIT_UNKNOWN
    if status == 503:
        return EXIT_FAILED  # the manager is closed or shutting down: nothing was started
    if status >= 500 or status == 0:
        return EXIT_UNKNOWN
    return EXIT_USAGE


def report(out: Output, error: AnswerError) -> int:
    """Print an error answer (and its attempts); returns the exit code."""
    detail = error.detail
    if out.json_mode:
        out.json_line({"detail": detail})
    field = detail.get("field")
    message = str(detail.get("message") or error)
    out.problem(f"{message} (field {field})" if field and field not in message else message)
    attempts = detail.get("attempts")
    if attempts and not out.json_mode:
        out.errors.print(attempts_table(attempts))
    return exit_code(error.status, detail)


# -- listings -----------------------------------------------------------------------------------------


async def servers(fleet: Fleet, out: Output) -> int:
    await fleet.settle()
    answer = await fleet.servers()
    if out.json_mode:
        out.json_document(answer)
    else:
        out.console.print(servers_table(answer["servers"]))
    return EXIT_OK


async def status(fleet: Fleet, out: Output) -> int:
    await fleet.settle()
    answer = await fleet.servers()
    if out.json_mode:
        out.json_document(answer)
    else:
        # Every *_at of the API is a Unix time: shown relative to this machine's clock.
        out.console.print(status_table(answer["servers"], time.time()))
        out.console.print(status_summary(answer["servers"]))
    return EXIT_OK


async def tools(fleet: Fleet, out: Output) -> int:
    answer = await fleet.catalog("tools")
    if out.json_mode:
        out.json_document(answer)
    else:
        out.console.print(tools_table(answer["tools"]))
    return EXIT_OK


async def events(
    fleet: Fleet, out: Output, *, server: str | None, limit: int, follow: bool, interval: float
) -> int:
    def show(batch: list[dict[str, Any]]) -> None:
        for event in batch:
            if out.json_mode:
                out.json_line(event)
            else:
                out.console.print(event_line(event), soft_wrap=True)

    await fleet.settle()
    shown = await fleet.events(server=server, limit=limit)
    show(shown)
    if not follow:
        return EXIT_OK
    after = shown[-1]["seq"] if shown else 0
    await fleet.follow(server=server, after=after, interval=interval, show=show, notice=out.problem)
    return EXIT_OK  # pragma: no cover - following ends only when cancelled


# -- invocations ------------------------------------------------------------------------------------------


async def _invoke(
    fleet: Fleet,
    out: Output,
    kind: str,
    body: dict[str, Any],
    label: str,
) -> dict[str, Any]:
    """Invoke, showing the server's progress: as JSON lines with ``--json``, else as a live
    bar on a terminal (just a spinner when the fleet does not pass progress on)."""
    # A fleet that just started knows its servers' catalogs once they are connected: then it
    # routes and checks the arguments as a long-running API does.
    await fleet.settle()

    async def progress_line(progress: float, total: float | None, message: str | None) -> None:
        out.json_line({"progress": progress, "total": total, "message": message})

    async def progress_bar(progress: float, total: float | None, message: str | None) -> None:
        bar.update(progress, total, message)

    if out.json_mode or not out.errors.is_terminal:
        listener = progress_line if out.json_mode and fleet.streams_progress else None
        return await fleet.invoke(kind, body, listener)
    bar = ProgressBar(out.errors, label)
    listener = progress_bar if fleet.streams_progress else None
    answer: dict[str, Any] | None = None
    problem: Exception | None = None
    with bar.shown():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bar.run_refresh)
            try:
                answer = await fleet.invoke(kind, body, listener)
            except Exception as exc:  # re-raised below, outside the nursery (not in a group)
                problem = exc
            finally:
                nursery.cancel_scope.cancel()
    if problem is not None:
        raise problem
    assert answer is not None
    return answer


async def call(fleet: Fleet, out: Output, *, body: dict[str, Any]) -> int:
    tool = body["tool_name"]
    answer = await _invoke(fleet, out, "tool", body, tool)
    result = answer["result"]
    failed = bool(result.get("isError"))
    if out.json_mode:
        out.json_line(answer)
    elif failed:
        out.problem(f"{tool} answered with an error (server {answer['server']}):")
        out.text(tool_result_text(result), error=True)
    else:
        text = tool_result_text(result)
        if text:
            out.text(text)
    return EXIT_TOOL_ERROR if failed else EXIT_OK


async def read(fleet: Fleet, out: Output, *, body: dict[str, Any]) -> int:
    answer = await _invoke(fleet, out, "resource", body, body["uri"])
    if out.json_mode:
        out.json_line(answer)
    else:
        out.text(resource_text(answer["result"]))
    return EXIT_OK


async def prompt(fleet: Fleet, out: Output, *, body: dict[str, Any]) -> int:
    answer = await _invoke(fleet, out, "prompt", body, body["name"])
    if out.json_mode:
        out.json_line(answer)
    else:
        out.text(prompt_text(answer["result"]))
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "servers": servers,
    "status": status,
    "tools": tools,
    "events": events,
    "call": call,
    "read": read,
    "prompt": prompt,
}

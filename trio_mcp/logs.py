"""Log lines from a manager's event stream, through the standard :mod:`logging` module.

``attach_logging(manager)`` logs, one line each, to the ``trio_mcp.fleet`` logger:

- a server's status change (``WARNING`` when it gets worse, ``INFO`` otherwise), with its reason
  and category, which say e.g. that a stdio server's process exited;
- a completed handshake (era and protocol version) and a new session;
- an invocation that failed over (``INFO``: it succeeded on another server) or failed
  (``WARNING``, with its outcome and the servers tried).

Every record carries ``server`` and ``correlation_id`` (also as ``extra`` fields, so
:class:`JsonFormatter` writes them as keys). Nothing of a server's configuration is logged, so
tokens, headers and environment values never appear; error messages are cut at 300 characters.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._attempt import Stage
from ._events import InvocationFinished, StateChange, StreamEvent
from ._state import ConnectionState, ServerStatus

if TYPE_CHECKING:
    from ._manager import Manager

FLEET_LOGGER = "trio_mcp.fleet"
_WORSE = {ServerStatus.DEGRADED, ServerStatus.UNREACHABLE}
_MAX_MESSAGE = 300


def _short(text: str | None) -> str:
    if text is None:
        return ""
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


class EventLogger:
    """A stream listener that turns events into log records (see the module docstring)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def __call__(self, event: StreamEvent) -> None:
        if isinstance(event, StateChange):
            self._state(event)
        elif isinstance(event, InvocationFinished):
            self._finished(event)

    def _log(self, level: int, message: str, *, server: str | None, correlation_id: str | None) -> None:
        if self.logger.isEnabledFor(level):
            extra = {"server": server, "correlation_id": correlation_id}
            self.logger.log(level, message, extra=extra)

    def _state(self, change: StateChange) -> None:
        before, after = change.previous, change.current
        if after.status is not before.status:
            level = logging.WARNING if after.status in _WORSE else logging.INFO
            category = f" [{change.category}]" if change.category else ""
            self._log(
                level,
                f"{change.server}: {before.status.value} -> {after.status.value}: "
                f"{_short(change.reason)}{category}",
                server=change.server,
                correlation_id=change.correlation_id,
            )
        if after.handshaken_at is not None and after.handshaken_at != before.handshaken_at:
            snapshot = after.capabilities
            era = f"{snapshot.era} {snapshot.protocol_version}" if snapshot is not None else "?"
            fresh = (
                after.connection is ConnectionState.READY and before.connection is not ConnectionState.READY
            )
            self._log(
                logging.INFO,
                f"{change.server}: {'connected' if fresh else 'handshake again'} ({era})",
                server=change.server,
                correlation_id=change.correlation_id,
            )

    def _finished(self, event: InvocationFinished) -> None:
        tried = [a for a in event.attempts if a.stage is not Stage.SELECT]
        servers = list(dict.fromkeys(a.server for a in tried))
        what = f"{event.method} {event.target or ''}".strip()
        if event.outcome in ("success", "tool_error"):
            if len(servers) > 1:
                self._log(
                    logging.INFO,
                    f"{what}: failed over {' -> '.join(servers)} ({event.duration:.3f} s)",
                    server=event.server,
                    correlation_id=event.request_id,
                )
            return
        if event.outcome in ("failed", "unknown"):
            last = tried[-1] if tried else (event.attempts[-1] if event.attempts else None)
            cause = f": {_short(last.error)} [{last.category}]" if last is not None else ""
            self._log(
                logging.WARNING,
                f"{what}: {event.outcome} after trying {', '.join(servers) or 'no server'}{cause}",
                server=event.server,
                correlation_id=event.request_id,
            )


def attach_logging(manager: Manager, logger: logging.Logger | None = None) -> Callable[[], None]:
    """Log ``manager``'s state changes and failed or failed-over invocations; returns a function
    that stops it."""
    return manager.stream.add_listener(EventLogger(logger or logging.getLogger(FLEET_LOGGER)))


_STANDARD = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (Unix seconds), ``level``, ``logger``, ``message`` and
    every ``extra`` field (``server``, ``correlation_id``, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out and value is not None:
                out[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2026-11-27T10:00:00Z info trio_mcp.fleet: message (correlation_id=...)``."""

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        line = f"{when} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        correlation = getattr(record, "correlation_id", None)
        if correlation:
            line += f" (correlation_id={correlation})"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send every ``trio_mcp``, ``web`` and ``hypercorn`` log record to stderr, in ``fmt``
    (``text`` or ``json``) at ``level`` and above."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for name in ("trio_mcp", "web", "hypercorn.error", "hypercorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(numeric)
        logger.propagate = False

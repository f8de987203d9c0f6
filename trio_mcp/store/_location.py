"""Where state is kept (``--state``) and how long events are kept (``--event-retention``).

Standard library only: the command line parses these before anything else is imported.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

STATE_FILE_NAME = "state.db"
DEFAULT_BUSY_TIMEOUT = 5.0
"""Seconds a SQLite write waits for another process's lock before the store counts as unavailable."""

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


def default_state_dir(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/trio-mcp``, else ``~/.local/state/trio-mcp``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "trio-mcp"


@dataclass(frozen=True, kw_only=True)
class StateLocation:
    """A parsed ``--state`` value: a SQLite file or a PostgreSQL URL.

    Attributes:
        kind: ``"sqlite"`` or ``"postgresql"``.
        path: the SQLite file (``None`` for PostgreSQL).
        url: the PostgreSQL connection URL, as given (``None`` for SQLite).
        busy_timeout: SQLite only: seconds a write waits for another process's lock.
    """

    kind: str
    path: Path | None = None
    url: str | None = None
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT

    def __str__(self) -> str:
        """For messages and logs: the file, or the URL without its password."""
        if self.path is not None:
            return f"sqlite://{self.path}" if self.path.is_absolute() else f"sqlite:{self.path}"
        assert self.url is not None
        parts = urlsplit(self.url)
        if parts.password is not None:
            host = parts.hostname or ""
            if parts.port is not None:
                host = f"{host}:{parts.port}"
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
        return urlunsplit(parts._replace(query=""))


def parse_state(text: str, environ: dict[str, str] | None = None) -> StateLocation | None:
    """Parse a ``--state`` value.

    ``memory`` (nothing is kept: ``None``); ``sqlite:///ABSOLUTE/PATH.db`` (``sqlite:////`` too),
    ``sqlite:RELATIVE.db`` or a plain file path; ``postgresql://...`` (or ``postgres://``); an
    empty string is the default file, :func:`default_state_dir` ``/state.db``. A SQLite URL may
    end in ``?timeout=SECONDS`` (how long a write waits for another process's lock).

    Raises:
        ValueError: naming what is wrong.
    """
    text = text.strip()
    if text == "memory":
        return None
    if text == "":
        return StateLocation(kind="sqlite", path=default_state_dir(environ) / STATE_FILE_NAME)
    scheme, sep, rest = text.partition(":")
    if not sep or len(scheme) < 2 or "/" in scheme:  # a path (and not a Windows drive letter)
        return StateLocation(kind="sqlite", path=Path(text).expanduser())
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres"):
        if not rest.startswith("//"):
            raise ValueError(f"a PostgreSQL URL starts with postgresql://, got {text!r}")
        return StateLocation(kind="postgresql", url=text)
    if scheme == "sqlite":
        path, _, query = rest.partition("?")
        if path.startswith("//"):
            # sqlite:///abs and sqlite:////abs both name /abs (a file URL's empty host).
            path = "/" + path.lstrip("/")
        if not path.strip("/"):
            raise ValueError(f"a SQLite URL names a file: sqlite:///path/to/state.db, got {text!r}")
        busy = DEFAULT_BUSY_TIMEOUT
        options = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(options) - {"timeout"})
        if unknown:
            raise ValueError(f"unknown SQLite option {unknown[0]!r} (known: timeout)")
        if "timeout" in options:
            try:
                busy = float(options["timeout"][-1])
            except ValueError:
                busy = math.nan
            if not 0 <= busy < math.inf:
                raise ValueError(f"timeout must be a number of seconds >= 0, got {options['timeout'][-1]!r}")
        return StateLocation(kind="sqlite", path=Path(os.path.normpath(path)).expanduser(), busy_timeout=busy)
    raise ValueError(f"--state takes memory, sqlite:///FILE or postgresql://..., got {text!r}")


@dataclass(frozen=True, kw_only=True)
class Retention:
    """How much event history is kept, per log (connection events; invocation events).

    Attributes:
        max_age: seconds; older events are deleted (``None``: no age limit).
        max_count: the newest this many events are kept (``None``: no count limit).
    """

    max_age: float | None = None
    max_count: int | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.max_age is not None:
            for unit, seconds in sorted(_UNITS.items(), key=lambda item: -item[1]):
                if self.max_age % seconds == 0:
                    parts.append(f"{self.max_age / seconds:g}{unit}")
                    break
        if self.max_count is not None:
            parts.append(str(self.max_count))
        return ",".join(parts) or "forever"


DEFAULT_RETENTION = Retention(max_age=7 * 86400.0, max_count=100_000)


def parse_retention(text: str) -> Retention:
    """Parse an ``--event-retention`` value: an age (``7d``, ``12h``, ``30m``, ``90s``,
    ``2w``), a count (``100000``), both (``7d,100000``), or ``forever``.

    Raises:
        ValueError: naming what is wrong.
    """
    text = text.strip().lower()
    if text == "forever":
        return Retention()
    age: float | None = None
    count: int | None = None
    for part in (p.strip() for p in text.split(",")):
        match = _AGE.match(part)
        if match:
            if age is not None:
                raise ValueError(f"give one age, got {text!r}")
            age = float(match.group(1)) * _UNITS[match.group(2)]
            if age <= 0:
                raise ValueError(f"an age must be > 0, got {part!r}")
        elif part.isdigit():
            if count is not None:
                raise ValueError(f"give one count, got {text!r}")
            count = int(part)
            if count < 1:
                raise ValueError(f"a count must be >= 1, got {part!r}")
        else:
            raise ValueError(
                f"expected an age (7d, 12h, 30m, 90s), a count (100000), both (7d,100000) or "
                f"'forever', got {part!r}"
            )
    return Retention(max_age=age, max_count=count)

"""Throwaway PostgreSQL servers for the tests (``scripts/postgres.sh``), and a fresh database
per test.

Without Debian's PostgreSQL 15 the tests that need it skip, unless ``TRIO_MCP_REQUIRE_POSTGRES``
is set (CI sets it): then they fail.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "postgres.sh"
INITDB = Path("/usr/lib/postgresql/15/bin/initdb")
REQUIRE_ENV = "TRIO_MCP_REQUIRE_POSTGRES"

_databases = itertools.count(1)


def unavailable() -> str | None:
    """Why no PostgreSQL can be started here (``None``: one can)."""
    if not INITDB.exists():
        return f"PostgreSQL 15 is not installed ({INITDB}; run scripts/postgres.sh install)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser"
    return None


def skip_or_fail(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{REQUIRE_ENV} is set and {reason}")
    pytest.skip(reason)


class PostgresServer:
    """One PostgreSQL server started by ``scripts/postgres.sh`` in its own directory."""

    def __init__(self) -> None:
        # A directory the postgres user can reach (pytest's are private to root).
        self.directory = Path(tempfile.mkdtemp(prefix="trio-mcp-pg-", dir="/tmp"))
        self.url = ""

    def start(self) -> str:
        done = subprocess.run(
            [str(SCRIPT), "start", str(self.directory)], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"scripts/postgres.sh start failed:\n{done.stderr}")
        self.url = done.stdout.strip().splitlines()[-1]
        return self.url

    def stop(self, *, keep: bool = False) -> None:
        subprocess.run(
            [str(SCRIPT), "stop", str(self.directory), *(["--keep"] if keep else [])],
            capture_output=True,
            timeout=120,
            check=True,
        )

    def database(self) -> str:
        """A new, empty database on this server; its URL."""
        import psycopg

        name = f"trio_mcp_test_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def sessions(self, application_name: str = "trio-mcp") -> int:
        """Connections open now from ``application_name``."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,)
            ).fetchone()
        assert row is not None
        return int(row[0])

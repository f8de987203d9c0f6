"""The chaos suites (F1 to F6): select them with ``-m chaos``; each prints its table at the
end of the run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

_TABLES: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: fault-injection suites checked against the invariants N1 to N6"
    )


@pytest.fixture
def chaos_table() -> Iterator[list[str]]:
    """Append a suite's table here: it is printed in the terminal summary."""
    tables: list[str] = []
    yield tables
    _TABLES.extend(tables)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TABLES:
        terminalreporter.section("chaos suites")
        for table in _TABLES:
            terminalreporter.write_line(table)

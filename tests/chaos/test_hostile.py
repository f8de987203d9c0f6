"""F4: hostile servers (a 100 MiB line with no newline, a 100 MiB HTTP body, plain or gzip, a
never-ending SSE event, 100 MiB of stderr, bytes that are not UTF-8, an answer for another
request's id) against the 8 MiB default of ``max_message_bytes``. Real processes, sockets and
clock; the table is printed at the end of the run."""

from __future__ import annotations

import sys

import pytest
from _hostile import BOUND, run_hostile

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="/proc"),
]


async def test_hostile_messages_are_cut_at_the_bound(chaos_table: list[str]) -> None:
    report = await run_hostile()
    chaos_table.append(report.table())
    for row in report.rows:
        case = f"{row.case.transport} {row.case.behaviour}"
        # The outcome is the one expected: the messages over the bound (or not UTF-8) close the
        # connection as a protocol_error; stderr is not a message; a stray id is dropped.
        assert row.outcome == row.case.expect, (case, row.message)
        if row.case.expect == "protocol_error":
            assert row.closed_as == "protocol_error", case
            assert "max_message_bytes" in row.message or "not UTF-8" in row.message, (case, row.message)
        else:
            assert row.closed_as is None, case
        if row.case.behaviour == "wrong_id" and row.case.transport == "stdio":
            assert row.message == "yours", row.message  # its own answer, not the stray one
        if row.case.behaviour == "wrong_id" and row.case.transport == "http":
            # The body is the request's only answer: the call ends at its deadline.
            assert "no answer" in row.message, row.message
        # The message before the bad one arrived.
        assert row.earlier_delivered, case
        # Memory held for the hostile message: under twice the bound.
        assert row.traced_growth < 2 * BOUND, (case, row.traced_growth)
        if row.rss_growth is not None:
            assert row.rss_growth < 2 * BOUND, (case, row.rss_growth)
    # The healthy server's latency: only a loose bound (the machine is shared); the figures
    # are in the table.
    assert report.ratio < 2.0, report.ratio

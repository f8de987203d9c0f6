"""A recorded history of invocations, checked against the fleet's invariants N1 to N6.

Record every invocation: ``invoke`` (with its id), then exactly one outcome: ``ok`` (it was
answered), ``fail`` (it provably ran nowhere) or ``info`` (its outcome is unknown). The
servers keep a ledger of the executions they started, keyed by invocation id, which is
loaded into the history. :meth:`History.check` then asserts:

- **N1** every invocation has exactly one outcome, delivered once (shutdown included); what
  the manager published on its stream (``InvocationFinished``) agrees with it.
- **N2** ``ok`` ⇒ executed at least once (exactly once for a tool that is not idempotent) on
  the server that answered, and the result came from that server; ``fail`` ⇒ executed
  nowhere; ``info`` ⇒ executed at most once. Nothing executes on a server it was not sent to,
  nor more often than it was sent there.
- **N3** a tool that is not idempotent runs at most once per invocation, over all servers.
- **N4** every outcome arrives by its deadline + ``slack`` (50 ms by default).
- **N5** after the run, the process is back to its :class:`Baseline`: child processes and
  their groups, zombies, open file descriptors and sockets, trio tasks
  (:meth:`History.check_baseline`).
- **N6** once the faults stop, every server is healthy again within its retry window plus a
  handshake, and no supervisor has died or logged a bug (:meth:`History.check_recovery`,
  :meth:`History.watch`).

Run it on your own fleet::

    import trio_mcp
    from trio_mcp.testing import Baseline, History, ScriptedServer, memory_server

    async def test_my_fleet_keeps_its_promises(autojump_clock):
        servers = [ScriptedServer("a"), ScriptedServer("b")]
        baseline = Baseline.capture()
        history = History()
        async with trio_mcp.open_manager([memory_server(s) for s in servers]) as manager:
            with history.watch(manager):
                servers[0].crash_during("charge")
                for amount in range(10):
                    await history.call(manager, "charge", {"amount": amount}, idempotent=False, timeout=5)
                for server in servers:
                    server.heal()
                await history.check_recovery(manager)
        for server in servers:
            history.load_ledger(server.name, server.invocations)
        await history.check_baseline(baseline)
        print(history.table("my fleet"))
        history.check()  # raises InvariantViolationError listing every violation

:meth:`History.call` gives each call an invocation id, passes it to the server as the
``invocation_id`` argument (which :class:`ScriptedServer` keys its ledger by) and as the
manager's ``request_id``, and records the outcome. For invocations made another way (over
HTTP, say), record them with :meth:`History.invoke` and :meth:`History.ok` /
:meth:`History.fail` / :meth:`History.info`, and feed the ledger with
:meth:`History.executed`.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import trio

from .._attempt import InvocationResult, Stage
from .._events import InvocationFinished
from .._exceptions import (
    InvocationFailedError,
    ManagerClosedError,
    NotOfferedError,
    RequestRejectedError,
    UnknownServerError,
)
from .._state import ConnectionState, ServerStatus
from ._baseline import Baseline

if TYPE_CHECKING:
    from .._attempt import Attempt
    from .._events import StreamEvent
    from .._manager import Manager

__all__ = [
    "History",
    "InvariantViolationError",
    "OutcomeKind",
    "Violation",
    "format_table",
    "server_info_name",
]

OutcomeKind = Literal["ok", "fail", "info"]
"""``ok``: answered; ``fail``: provably ran nowhere; ``info``: outcome unknown."""

DEFAULT_SLACK = 0.05
"""Seconds an outcome may arrive after its deadline (N4)."""

_PUBLISHED_KIND: dict[str, tuple[OutcomeKind, ...]] = {
    "success": ("ok",),
    "tool_error": ("ok",),
    "failed": ("fail",),
    "not_offered": ("fail",),
    "unknown": ("info",),
    # A refusal after another attempt that may have run is unknown; otherwise it ran nowhere.
    "rejected": ("fail", "info"),
}


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant."""

    invariant: str
    """``N1`` to ``N6``."""
    message: str
    invocation_id: str | None = None

    def __str__(self) -> str:
        where = f" [{self.invocation_id}]" if self.invocation_id is not None else ""
        return f"{self.invariant}{where}: {self.message}"


class InvariantViolationError(AssertionError):
    """Raised by :meth:`History.check` when an invariant does not hold; ``violations`` lists
    every one."""

    def __init__(self, violations: Iterable[Violation]) -> None:
        self.violations = tuple(violations)
        shown = "\n".join(f"  {v}" for v in self.violations[:20])
        more = len(self.violations) - 20
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.violations)} invariant violation(s):\n{shown}{tail}")


@dataclass(slots=True)
class _Outcome:
    kind: OutcomeKind
    at: float
    server: str | None
    answered_by: str | None
    reason: str


@dataclass(slots=True)
class _Invocation:
    id: str
    tool: str
    idempotent: bool
    invoked_at: float
    deadline: float
    slack: float
    outcomes: list[_Outcome] = field(default_factory=list)
    sent_to: Counter[str] | None = None
    """How many times the request was sent to each server (``None``: not known)."""
    expect_published: bool = False
    """Whether the manager must publish its end (it was invoked while :meth:`History.watch`
    watched)."""
    published: list[InvocationFinished] = field(default_factory=list)


class History:
    """Invocations, their outcomes and the servers' executions, checked against N1 to N6.

    Args:
        slack: seconds an outcome may arrive after its deadline (N4).
        id_prefix: the prefix of the invocation ids :meth:`invoke` makes up.
    """

    def __init__(self, *, slack: float = DEFAULT_SLACK, id_prefix: str = "inv") -> None:
        self.slack = slack
        self._id_prefix = id_prefix
        self._ids = itertools.count(1)
        self._invocations: dict[str, _Invocation] = {}
        self._ledger: dict[str, Counter[str]] = {}
        self._violations: list[Violation] = []
        self._watches = 0

    # -- recording ---------------------------------------------------------------------------

    def invoke(
        self,
        tool: str,
        *,
        idempotent: bool,
        timeout: float | None = None,
        invocation_id: str | None = None,
        at: float | None = None,
    ) -> str:
        """Record that an invocation of ``tool`` starts now; returns its id.

        Args:
            tool: what is invoked (a tool name, or any label).
            idempotent: whether running it more than once is harmless (N2, N3).
            timeout: its deadline, in seconds from now (N4; ``None``: none).
            invocation_id: its id (default: a new one).
            at: when it starts (default: ``trio.current_time()``).
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError("timeout must be >= 0 seconds")
        if invocation_id is None:
            invocation_id = f"{self._id_prefix}-{next(self._ids)}"
        if invocation_id in self._invocations:
            raise ValueError(f"invocation {invocation_id!r} is already recorded")
        start = trio.current_time() if at is None else at
        deadline = start + timeout if timeout is not None else math.inf
        self._invocations[invocation_id] = _Invocation(
            id=invocation_id,
            tool=tool,
            idempotent=idempotent,
            invoked_at=start,
            deadline=deadline,
            slack=self.slack,
            expect_published=self._watches > 0,
        )
        return invocation_id

    def ok(
        self,
        invocation_id: str,
        *,
        server: str,
        answered_by: str | None = None,
        sent_to: Iterable[str] | None = None,
        at: float | None = None,
    ) -> None:
        """``invocation_id`` was answered by ``server``.

        Args:
            answered_by: the server the result itself names (``None``: it names none).
            sent_to: every server the request was sent to, once per sending (``None``: not
                known; the answering server counts as sent to).
            at: when the outcome arrived (default: now).
        """
        self._outcome(invocation_id, "ok", at, server=server, answered_by=answered_by, sent_to=sent_to)

    def fail(
        self,
        invocation_id: str,
        *,
        reason: str = "",
        sent_to: Iterable[str] | None = None,
        at: float | None = None,
    ) -> None:
        """``invocation_id`` failed and provably ran nowhere."""
        self._outcome(invocation_id, "fail", at, reason=reason, sent_to=sent_to)

    def info(
        self,
        invocation_id: str,
        *,
        reason: str = "",
        sent_to: Iterable[str] | None = None,
        at: float | None = None,
    ) -> None:
        """``invocation_id`` ended without an answer and may have run."""
        self._outcome(invocation_id, "info", at, reason=reason, sent_to=sent_to)

    def _outcome(
        self,
        invocation_id: str,
        kind: OutcomeKind,
        at: float | None,
        *,
        server: str | None = None,
        answered_by: str | None = None,
        reason: str = "",
        sent_to: Iterable[str] | None = None,
    ) -> None:
        record = self._invocations.get(invocation_id)
        if record is None:
            self._violations.append(Violation("N1", f"{kind} for an invocation never invoked", invocation_id))
            return
        when = trio.current_time() if at is None else at
        record.outcomes.append(_Outcome(kind, when, server, answered_by, reason))
        if sent_to is not None:
            sent = Counter(sent_to)
            record.sent_to = sent if record.sent_to is None else record.sent_to + sent

    def executed(self, invocation_id: str, server: str, times: int = 1) -> None:
        """``server`` started executing ``invocation_id`` (``times`` times)."""
        self._ledger.setdefault(invocation_id, Counter())[server] += times

    def load_ledger(self, server: str, executions: Mapping[str, int]) -> None:
        """Add ``server``'s ledger: executions started per invocation id (for example a
        :class:`ScriptedServer`'s ``invocations``)."""
        for invocation_id, times in executions.items():
            if times:
                self.executed(invocation_id, server, times)

    def drain(self, *, at: float, grace: float, slack: float | None = None) -> None:
        """Shutdown started at ``at`` with ``grace`` seconds for what is in flight: every
        invocation still without an outcome must now have one by ``at + grace`` (+ ``slack``,
        default this history's)."""
        for record in self._invocations.values():
            if not record.outcomes and record.invoked_at <= at:
                record.deadline = min(record.deadline, at + grace)
                if slack is not None:
                    record.slack = slack

    # -- driving a manager -------------------------------------------------------------------

    async def call(
        self,
        manager: Manager,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        idempotent: bool,
        timeout: float | None = None,
        id_argument: str | None = "invocation_id",
        author: Callable[[Any], str | None] | None = None,
        invocation_id: str | None = None,
        **options: Any,
    ) -> InvocationResult[Any] | None:
        """Call ``tool`` through ``manager.invoke`` and record the whole invocation.

        The invocation id goes to the server as the ``id_argument`` argument (``None``: not
        at all) and to the manager as ``request_id``. Returns the result, or ``None`` when the
        invocation failed (its outcome is recorded; the exception is not raised).
        Cancellation is recorded as ``info`` and goes on; so do the caller's own mistakes
        (:class:`UnknownServerError`, ``ValueError``), recorded as ``fail``. Any other
        exception out of ``invoke`` is an N1 violation.

        Args:
            idempotent: whether running ``tool`` more than once is harmless (N2, N3).
            timeout: the invocation's ``timeout`` (and its deadline for N4).
            id_argument: the argument that carries the invocation id (``None``: none).
            author: names the server a result came from (N2), e.g. :func:`server_info_name`
                when the fleet's names are the servers' own names (``None``: not checked).
            invocation_id: the invocation's id (default: a new one).
            options: more keyword arguments for :meth:`Manager.invoke` (``preferred``,
                ``failover``, ``attempt_timeout``, ...).
        """
        invocation_id = self.invoke(tool, idempotent=idempotent, timeout=timeout, invocation_id=invocation_id)
        record = self._invocations[invocation_id]
        if id_argument is not None:
            arguments = {**(arguments or {}), id_argument: invocation_id}
        try:
            result = await manager.invoke(
                "tools/call", tool, arguments, timeout=timeout, request_id=invocation_id, **options
            )
        except InvocationFailedError as exc:
            kind: OutcomeKind = "fail" if str(exc.outcome) == "failed" else "info"
            self._outcome(invocation_id, kind, None, reason=str(exc), sent_to=_sent(exc.attempts))
            return None
        except RequestRejectedError as exc:
            # Refused by the server (nothing ran there); unknown if an earlier attempt may have run.
            earlier = [a for a in exc.attempts[:-1] if a.sent]
            kind = "info" if earlier else "fail"
            self._outcome(invocation_id, kind, None, reason=str(exc), sent_to=_sent(earlier))
            return None
        except NotOfferedError as exc:
            self._outcome(invocation_id, "fail", None, reason=str(exc), sent_to=())
            return None
        except ManagerClosedError as exc:
            # Refused before it started: nothing was sent, nothing is published.
            record.expect_published = False
            self._outcome(invocation_id, "fail", None, reason=str(exc), sent_to=())
            return None
        except trio.Cancelled:
            record.expect_published = False
            self._outcome(invocation_id, "info", None, reason="cancelled by the caller")
            raise
        except (UnknownServerError, ValueError) as exc:
            # The call itself was wrong (a preferred server that is not registered, an invalid
            # option): refused before anything started. That is the caller's bug: it goes on.
            record.expect_published = False
            self._outcome(invocation_id, "fail", None, reason=str(exc), sent_to=())
            raise
        except Exception as exc:
            # No other exception may leave the public API (an exception group, a bug).
            self._violations.append(
                Violation("N1", f"invoke raised {type(exc).__name__}: {exc!r}", invocation_id)
            )
            record.expect_published = False
            self._outcome(invocation_id, "info", None, reason=f"raised {exc!r}")
            return None
        self._outcome(
            invocation_id,
            "ok",
            None,
            server=result.server,
            answered_by=author(result.result) if author is not None else None,
            sent_to=_sent(result.attempts),
        )
        return result

    @contextmanager
    def watch(self, manager: Manager) -> Iterator[None]:
        """While in this block, check what ``manager`` publishes against the history: the end
        of every invocation (``InvocationFinished``, N1) and every error the library logs (a
        supervisor that hit a bug, N6)."""

        def on_event(event: StreamEvent) -> None:
            if isinstance(event, InvocationFinished):
                record = self._invocations.get(event.request_id)
                if record is not None:
                    record.published.append(event)

        handler = _ErrorLog(self._violations)
        logger = logging.getLogger("trio_mcp")
        logger.addHandler(handler)
        remove = manager.stream.add_listener(on_event)
        self._watches += 1
        try:
            yield
        finally:
            self._watches -= 1
            remove()
            logger.removeHandler(handler)

    # -- checks that need the fleet ----------------------------------------------------------

    async def check_recovery(
        self,
        manager: Manager,
        names: Iterable[str] | None = None,
        *,
        handshake_time: float | None = None,
    ) -> dict[str, float]:
        """N6: call once the faults have stopped. Waits until every server (of ``names``,
        default all) is healthy again (healthy or recovered, with a live session) and records
        a violation for each that is not within its bound, or whose supervisor has died.

        The bound, from now: a server with a live session must recover on its next probe
        (``health_interval + probe_timeout``); any other reconnects when its retry window
        opens, plus ``handshake_time`` (default: its ``handshake_timeout``) to handshake.
        Servers that only connect when used (``connect_on_start=False``) are left out.

        Returns:
            how long each server took to recover, in seconds from now.
        """
        now = trio.current_time()
        took: dict[str, float] = {}
        selected = list(names) if names is not None else manager.names

        def healthy(snap: Any) -> bool:
            return bool(snap.status in (ServerStatus.HEALTHY, ServerStatus.RECOVERED) and snap.session.active)

        async def one(name: str) -> None:
            policy = manager.config(name).policy
            snap = manager.server(name)
            if snap.connection is ConnectionState.CLOSED:
                self._violations.append(Violation("N6", f"the supervisor of {name!r} has died"))
                return
            if not policy.connect_on_start and not snap.session.active:
                return
            if snap.session.active:
                bound = now + policy.health_interval + policy.probe_timeout
            else:
                opens = max(now, snap.retry_at if snap.retry_at is not None else now)
                bound = opens + (policy.handshake_timeout if handshake_time is None else handshake_time)
            with trio.move_on_at(bound):
                try:
                    await manager.wait_for(name, healthy)
                except ManagerClosedError:
                    self._violations.append(Violation("N6", f"the supervisor of {name!r} has died"))
                    return
                took[name] = trio.current_time() - now
                return
            last = manager.server(name)
            self._violations.append(
                Violation(
                    "N6",
                    f"{name} not healthy {bound - now:.3f}s after the faults stopped "
                    f"(it is {last.status}/{last.connection}: {last.last_error_category}: {last.last_error})",
                )
            )

        async with trio.open_nursery() as nursery:
            for name in selected:
                nursery.start_soon(one, name)
        return took

    async def check_baseline(
        self, baseline: Baseline, *, within: float = 5.0, groups: Iterable[int] = ()
    ) -> list[str]:
        """N5: wait up to ``within`` seconds for this process to be back to ``baseline``, then
        record what is still not (see :meth:`Baseline.differences`); returns it."""
        wanted = set(groups)
        differences: list[str] = []
        with trio.move_on_after(within):
            while True:
                differences = baseline.differences(Baseline.capture(), groups=wanted)
                if not differences:
                    return []
                # Processes have no exit event to wait on (they need not be our children).
                await trio.sleep(0.05)
        for difference in differences:
            self._violations.append(Violation("N5", difference))
        return differences

    # -- results -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._invocations)

    def outcomes(self) -> Counter[str]:
        """How many invocations ended how (``ok`` / ``fail`` / ``info``; ``none``: not yet)."""
        counts: Counter[str] = Counter()
        for record in self._invocations.values():
            counts[record.outcomes[0].kind if record.outcomes else "none"] += 1
        return counts

    def outcome(self, invocation_id: str) -> OutcomeKind | None:
        """How ``invocation_id`` ended (its first outcome; ``None``: not yet)."""
        outcomes = self._invocations[invocation_id].outcomes
        return outcomes[0].kind if outcomes else None

    def executions(self, invocation_id: str) -> Counter[str]:
        """Executions of ``invocation_id`` per server, as the ledgers say."""
        return Counter(self._ledger.get(invocation_id, {}))

    def violations(self) -> list[Violation]:
        """Every violation of N1 to N6 found so far and in the history now."""
        out = list(self._violations)
        for record in self._invocations.values():
            out.extend(self._check(record))
        for invocation_id in self._ledger.keys() - self._invocations.keys():
            where = ", ".join(f"{s} x{n}" for s, n in sorted(self._ledger[invocation_id].items()))
            out.append(Violation("N2", f"executed ({where}) but never invoked", invocation_id))
        return out

    def check(self) -> None:
        """Raise :class:`InvariantViolationError` if any invariant does not hold."""
        violations = self.violations()
        if violations:
            raise InvariantViolationError(violations)

    def table(
        self,
        title: str,
        *,
        faults: Mapping[str, int] | None = None,
        runs: int | None = None,
        notes: Mapping[str, object] | None = None,
    ) -> str:
        """A printable summary: runs, faults injected (by kind), outcomes by kind, violations
        (and ``notes``: more rows)."""
        outcomes = self.outcomes()
        violations = self.violations()
        rows: list[tuple[str, str]] = [("runs", str(len(self) if runs is None else runs))]
        if faults is not None:
            total = sum(faults.values())
            detail = ", ".join(f"{k} {v}" for k, v in sorted(faults.items()) if v)
            rows.append(("faults injected", f"{total}" + (f"  ({detail})" if detail else "")))
        rows.append(
            (
                "outcomes",
                ", ".join(
                    f"{k} {outcomes[k]}" for k in ("ok", "fail", "info", "none") if outcomes[k] or k != "none"
                ),
            )
        )
        for key, value in (notes or {}).items():
            rows.append((key, str(value)))
        by_invariant = Counter(v.invariant for v in violations)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(by_invariant.items()))
        rows.append(("violations", f"{len(violations)}" + (f"  ({detail})" if detail else "")))
        return format_table(title, rows, violations)

    def _check(self, record: _Invocation) -> Iterator[Violation]:
        rid = record.id
        # N1: exactly one outcome, delivered once; what was published agrees.
        if not record.outcomes:
            yield Violation("N1", f"{record.tool}: no outcome", rid)
            return
        if len(record.outcomes) > 1:
            kinds = ", ".join(o.kind for o in record.outcomes)
            yield Violation("N1", f"{record.tool}: {len(record.outcomes)} outcomes ({kinds})", rid)
        outcome = record.outcomes[0]
        if record.published:
            if len(record.published) > 1:
                yield Violation("N1", f"its end was published {len(record.published)} times", rid)
            event = record.published[0]
            allowed = _PUBLISHED_KIND.get(event.outcome, ())
            if outcome.kind not in allowed:
                yield Violation(
                    "N1", f"the caller got {outcome.kind} but the manager published {event.outcome}", rid
                )
            elif outcome.kind == "ok" and event.server != outcome.server:
                yield Violation(
                    "N1", f"answered by {outcome.server} but published as answered by {event.server}", rid
                )
        elif record.expect_published:
            yield Violation("N1", f"{record.tool}: its end ({outcome.kind}) was never published", rid)

        # N4: by the deadline.
        if outcome.at > record.deadline + record.slack:
            late = outcome.at - record.deadline
            yield Violation("N4", f"{outcome.kind} arrived {late:.3f}s after its deadline", rid)

        # N2 / N3: against the ledgers.
        ran = self._ledger.get(rid, Counter())
        total = sum(ran.values())
        where = ", ".join(f"{s} x{n}" for s, n in sorted(ran.items())) or "nowhere"
        if not record.idempotent and total > 1:
            yield Violation("N3", f"{record.tool} (not idempotent) executed {total} times ({where})", rid)
        # (More than one execution of a tool that is not idempotent is N3, above.)
        if outcome.kind == "ok":
            if outcome.server is None or ran[outcome.server] < 1:
                yield Violation(
                    "N2", f"ok from {outcome.server}, which never executed it (ran: {where})", rid
                )
            if outcome.answered_by is not None and outcome.answered_by != outcome.server:
                yield Violation(
                    "N2", f"ok from {outcome.server} but the result came from {outcome.answered_by}", rid
                )
        elif outcome.kind == "fail" and total:
            yield Violation("N2", f"fail, yet executed ({where})", rid)
        if record.sent_to is not None:
            # Each request delivered executes at most once, and only where it was delivered.
            for server, times in ran.items():
                sent = record.sent_to[server]
                if outcome.kind == "ok" and server == outcome.server:
                    sent = max(sent, 1)
                if times > sent:
                    yield Violation(
                        "N2", f"executed {times} time(s) on {server}, sent there {sent} time(s)", rid
                    )


class _ErrorLog(logging.Handler):
    """Errors the library logs are bugs: a supervisor's (N6) or a listener's (N1)."""

    def __init__(self, violations: list[Violation]) -> None:
        super().__init__(logging.ERROR)
        self._violations = violations

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        invariant = "N6" if message.startswith("supervisor") else "N1"
        self._violations.append(Violation(invariant, f"logged: {message}"))


def _sent(attempts: Iterable[Attempt]) -> list[str]:
    return [a.server for a in attempts if a.sent and a.stage is not Stage.SELECT]


def server_info_name(result: Any) -> str | None:
    """The name of the server a result says it came from, if it says (an SDK 2.x server
    stamps its ``serverInfo`` into the ``_meta`` of a result on a 2026-07-28 connection)."""
    meta = getattr(result, "meta", None)
    if isinstance(meta, Mapping):
        info = meta.get("io.modelcontextprotocol/serverInfo")
        if isinstance(info, Mapping) and isinstance(info.get("name"), str):
            return str(info["name"])
    return None


def format_table(title: str, rows: Sequence[tuple[str, str]], violations: Sequence[object] = ()) -> str:
    """The layout of :meth:`History.table`: ``title``, one aligned line per row, then the first
    ten ``violations`` (for a table of several histories summed, say)."""
    width = max(len(k) for k, _ in rows)
    lines = [title, *(f"  {k.ljust(width)}  {v}" for k, v in rows)]
    lines.extend(f"    {v}" for v in violations[:10])
    return "\n".join(lines)

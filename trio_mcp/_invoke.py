"""Invocation: sequential failover across candidate servers, with a trace of every attempt.

Failover never runs a side-effecting tool twice. Each attempt knows whether its request was
ever written to the server (see ``_transports.sent_marker``):

- *not sent* (no session, connect refused, handshake failed, retry window closed, the
  connection was already closed before the write): the request provably did not execute,
  so the next candidate may run it;
- *outcome unknown* (timeout, connection lost or process died after the write, server-side
  internal error): the request may have executed. The next candidate runs it only for reads
  (``resources/read``, ``prompts/get``, lists) and for tools configured as idempotent, or
  when the caller asked for ``failover="always"``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import trio
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    CallToolResult,
    GetPromptResult,
    InputRequiredResult,
    ReadResourceResult,
)

from . import _input_required as input_required
from ._attempt import Attempt, Budget, InvocationResult, Outcome, Stage
from ._backoff import RandomSource
from ._catalog import CatalogEntry, SharedItems, list_kind, listing, merge, session_pages
from ._errors import Failure, classify
from ._events import EventStream
from ._exceptions import (
    InvocationFailedError,
    ManagerClosedError,
    NotOfferedError,
    RequestRejectedError,
    ServerUnavailableError,
    SessionError,
    TrioMcpError,
    UnknownServerError,
)
from ._failover import FAILOVER_MODES, FailoverMode, may_repeat
from ._load import Load
from ._routing import (
    KIND_OF_METHOD,
    Equals,
    Route,
    equals_of,
    first_choice,
    rank_candidates,
    routes_after,
)
from ._session import Connection
from ._state import Listing
from ._tracing import NO_ATTEMPT_SPAN, NO_INVOCATION_SPAN, InvocationSpan, NoInvocationSpan, tracing
from ._transports import SentMarker, sent_marker

if TYPE_CHECKING:
    from ._clock import TimeAnchor
    from ._supervisor import ServerSupervisor

Routing = Literal["least_loaded", "ordered"]
"""How an invocation chooses among equally good servers (see :func:`trio_mcp.open_manager`)."""

ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]


_LIST_KINDS = {"tools/list": "tools", "resources/list": "resources", "prompts/list": "prompts"}
_EQUALS_KEPT = 1024
"""At most this many targets' equals are kept (callers may name any target)."""


class Invoker:
    """The invocation half of :class:`trio_mcp.Manager`."""

    _supervisors: dict[str, ServerSupervisor]
    stream: EventStream
    anchor: TimeAnchor
    _closed: bool
    _rng: RandomSource
    _balanced: bool
    _drain_at: float = math.inf
    _active_scopes: set[trio.CancelScope]
    _equals: dict[tuple[str | None, str], Equals | None]
    _equals_version: int = -1

    def drain(self, grace: float) -> None:
        """Start shutting down: invocations in flight get ``grace`` more seconds, then end with
        an ``InvocationFailedError`` whose last attempt has category ``shutdown`` (their outcome
        as usual: ``unknown`` if the request was sent). New invocations after that raise
        :class:`ManagerClosedError`."""
        if grace < 0:
            raise ValueError("grace must be >= 0")
        self._drain_at = min(self._drain_at, trio.current_time() + grace)
        for scope in self._active_scopes:
            scope.deadline = min(scope.deadline, self._drain_at)

    @property
    def draining(self) -> bool:
        return self._drain_at != math.inf

    @property
    def accepting(self) -> bool:
        """New invocations are taken: the manager is open and not shutting down."""
        return not self._closed and self._drain_at == math.inf

    def _check_accepting(self) -> None:
        """Raise :class:`ManagerClosedError` if the manager is closed or shutting down."""
        if self._closed:
            raise ManagerClosedError()
        if self._drain_at != math.inf and trio.current_time() >= self._drain_at:
            raise ManagerClosedError("the manager is shutting down")

    def _lookup(self, name: str) -> ServerSupervisor:
        try:
            return self._supervisors[name]
        except KeyError:
            raise UnknownServerError(name) from None

    # -- candidates ----------------------------------------------------------------------------

    def candidates(self, method: str, target: str | None, preferred: Sequence[str] = ()) -> list[str]:
        """The servers an invocation would try, in order.

        Preferred servers first (in the order given), then the rest by status: healthy,
        recovered, unknown, degraded, and unreachable ones only when their retry window is
        open. Servers whose known catalog lacks ``target`` are left out.
        """
        routes = self._routes(method, target, self._check_preferred(preferred), trio.current_time())
        return [route.server for route in routes if route.skip is None]

    def _check_preferred(self, preferred: Sequence[str]) -> Sequence[str]:
        if isinstance(preferred, str):
            preferred = [preferred]
        for name in preferred:
            self._lookup(name)
        return preferred

    def _routes(
        self,
        method: str,
        target: str | None,
        preferred: Sequence[str],
        now: float,
        arguments: Mapping[str, Any] | None = None,
    ) -> Iterator[Route]:
        """Every route of an invocation, in order (lazily)."""
        first = None if preferred else self._first_choice(method, target, arguments)
        rest = self._routes_from(first, method, target, preferred, now, arguments, "safe")
        return rest if first is None else itertools.chain((Route(first),), rest)

    def _first_choice(
        self, method: str, target: str | None, arguments: Mapping[str, Any] | None
    ) -> str | None:
        """The first route of an invocation without preferred servers when what is kept of the
        fleet decides it (:func:`first_choice`): the usual call is routed without ranking the
        fleet."""
        if target is None:
            return None
        equals = self._equals_of(KIND_OF_METHOD.get(method), target)
        if equals is None:
            return None
        if self._balanced:
            return first_choice(equals, arguments, self._load_of, self._draw)
        return first_choice(equals, arguments)

    def _routes_from(
        self,
        first: str | None,
        method: str,
        target: str | None,
        preferred: Sequence[str],
        now: float,
        arguments: Mapping[str, Any] | None,
        failover: FailoverMode,
    ) -> Iterator[Route]:
        """The routes of an invocation after its first choice (``first``, when it was chosen
        from the kept equals), or all of them (``first is None``); with ``failover="never"``,
        only the one server that is ever tried."""
        if first is not None:
            if failover == "never":
                return iter(())
            return routes_after(first, _StatesView(self._supervisors), method, target, now, arguments)
        routes = self._ranked(method, target, preferred, now, arguments)
        return itertools.islice(routes, 1) if failover == "never" else routes

    def _ranked(
        self,
        method: str,
        target: str | None,
        preferred: Sequence[str],
        now: float,
        arguments: Mapping[str, Any] | None,
    ) -> Iterator[Route]:
        load, draw = self._balance()
        states = _StatesView(self._supervisors)
        return rank_candidates(states, preferred, method, target, now, arguments, load=load, draw=draw)

    def _balance(self) -> tuple[Callable[[str], Load] | None, Callable[[], float] | None]:
        """What a choice among equals is made with: the servers' loads and random draws
        (``None``, ``None``: registration order)."""
        return (self._load_of, self._draw) if self._balanced else (None, None)

    def _equals_of(self, kind: str | None, target: str) -> Equals | None:
        """:func:`equals_of`, kept until a status, catalog or retry window changes (or the
        fleet does): a call then does not rank the whole fleet to choose among its equals."""
        version = self.stream.routing_version
        key = (kind, target)
        if version == self._equals_version:
            try:
                return self._equals[key]
            except KeyError:
                if len(self._equals) >= _EQUALS_KEPT:
                    self._equals.clear()
        else:
            self._equals.clear()
            self._equals_version = version
        equals = self._equals[key] = equals_of(_StatesView(self._supervisors), kind, target)
        return equals

    def _fleet_changed(self) -> None:
        self._equals.clear()

    def _load_of(self, name: str) -> Load:
        return self._supervisors[name].load()

    def _draw(self) -> float:
        return self._rng.uniform(0.0, 1.0)

    # -- events --------------------------------------------------------------------------------

    def _event(
        self,
        kind: str,
        server: str,
        method: str,
        request_id: str,
        target: str | None,
        failure: Failure | None = None,
        error: str | None = None,
        now: float | None = None,
    ) -> None:
        self.stream.invocation(
            kind,
            server,
            method,
            request_id,
            target,
            error=failure.message if failure else error,
            category=failure.category if failure else None,
            at=trio.current_time() if now is None else now,
        )

    def _finished(
        self,
        method: str,
        target: str | None,
        request_id: str,
        start: float,
        attempts: Sequence[Attempt],
        outcome: str,
        server: str | None,
    ) -> None:
        self.stream.invocation_finished(
            method,
            target,
            request_id,
            outcome=outcome,
            server=server,
            attempts=tuple(attempts),
            started_at=start,
        )

    # -- the failover loop -----------------------------------------------------------------------

    async def invoke(
        self,
        method: str,
        target: str | None = None,
        arguments: dict[str, Any] | None = None,
        *,
        preferred: Sequence[str] = (),
        failover: FailoverMode = "safe",
        timeout: float | None = None,
        attempt_timeout: float | None = None,
        progress_callback: ProgressCallback | None = None,
        request_id: str | None = None,
        hedge_after: float | Literal["p95"] | None = None,
    ) -> InvocationResult[Any]:
        """Invoke ``method`` on the first candidate server that answers.

        Args:
            method: ``tools/call``, ``resources/read``, ``prompts/get``, ``tools/list``, ...
            target: the tool name, resource URI or prompt name.
            arguments: tool or prompt arguments.
            preferred: servers to try first, in this order.
            failover: ``"safe"`` (default: fail over unless a side effect may repeat),
                ``"always"``, or ``"never"`` (only the first candidate is ever tried).
            timeout: overall seconds for the whole invocation (default: no overall limit).
            attempt_timeout: seconds per attempt (default: each server's ``call_timeout``).
            progress_callback: receives the server's progress notifications.
            request_id: correlation id for events (default: a new one).
            hedge_after: hedge a read or an idempotent tool call: when the first server has not
                answered after this many seconds (``"p95"``: its recent 95th percentile
                latency), send the same request to the next candidate that has a ready
                session; the first answer wins and the other attempt is cancelled at its server
                (category ``superseded``). A request that may not be repeated (see
                ``failover``) is never hedged.

        Raises:
            InvocationFailedError: no candidate answered; carries ``outcome`` and ``attempts``.
            RequestRejectedError: the server rejected the request itself (unknown tool,
                invalid params): no failover.
            UnknownServerError: a preferred server is not registered.
            ManagerClosedError: the manager is closed or shutting down.
        """
        if self._closed or self._drain_at != math.inf:
            self._check_accepting()
        if failover not in FAILOVER_MODES:
            raise ValueError(f"failover must be 'safe', 'always' or 'never', got {failover!r}")
        if hedge_after is not None and hedge_after != "p95":
            if not isinstance(hedge_after, int | float) or math.isnan(hedge_after) or hedge_after < 0:
                raise ValueError("hedge_after must be 'p95' or a number of seconds >= 0")
        if timeout is not None or attempt_timeout is not None:
            for name, value in (("timeout", timeout), ("attempt_timeout", attempt_timeout)):
                if value is not None and (
                    not isinstance(value, int | float) or math.isnan(value) or value <= 0
                ):
                    raise ValueError(f"{name} must be a positive number of seconds")
        request_id = request_id or self.stream.new_correlation_id()
        span = InvocationSpan(method, target, request_id) if tracing() else NO_INVOCATION_SPAN
        start = trio.current_time()
        overall_deadline = min(start + timeout if timeout is not None else math.inf, self._drain_at)
        attempts: list[Attempt] = []
        try:
            errors: list[BaseException] = []
            retried_expired: set[str] = set()

            if preferred:
                preferred = self._check_preferred(preferred)
            # The first server is chosen from what is kept of the fleet when that decides it;
            # the fleet is ranked only if another server is needed.
            first = None if preferred else self._first_choice(method, target, arguments)
            routes: Iterator[Route] | None = None  # built when a second server is needed
            first_taken = False
            retry_now: str | None = None
            rejected: tuple[str, str] | None = None  # (server, why) the first schema that refused
            touched = False  # whether any server was asked anything
            held_back: str | None = None  # where a request that may have run was not repeated from
            now = start  # the clock is read once per attempt
            while True:
                forced = retry_now is not None
                if retry_now is not None:
                    name, retry_now = retry_now, None
                elif first is not None and not first_taken:
                    name = first
                    first_taken = True
                else:
                    if routes is None:
                        routes = self._routes_from(
                            first, method, target, preferred, start, arguments, failover
                        )
                    route = next(routes, None)
                    if route is None:
                        break
                    name = route.server
                    if route.reject is not None:
                        # The server's own schema refuses these arguments: nothing is sent to it.
                        rejected = rejected or (name, route.reject)
                        if route.preferred:
                            failure = Failure("invalid_request", f"arguments refused: {route.reject}", False)
                            attempts.append(
                                self._attempt(name, Stage.SELECT, now, failure, sent=False, end=now)
                            )
                        continue
                    if route.skip is not None:
                        # A preferred server passed over: the trace says so.
                        failure = Failure("unavailable", f"skipped: {route.skip}", False)
                        attempts.append(self._attempt(name, Stage.SELECT, now, failure, sent=False, end=now))
                        self._event("handshake_failure", name, method, request_id, target, failure, now=now)
                        continue
                # A drain that started after this invocation did also ends it: no new attempt.
                deadline = min(overall_deadline, self._drain_at)
                if now >= deadline:
                    break
                sup = self._supervisors.get(name)
                if sup is None:
                    continue
                touched = True
                # Fast path: a live session with a fresh handshake is used as is.
                conn = None if forced else sup.ready_connection(now)
                if conn is None:
                    conn = await self._handshake_stage(
                        sup, method, target, request_id, deadline, attempts, errors, span, force=forced
                    )
                    now = trio.current_time()
                if conn is None:
                    continue
                contest = None
                if hedge_after is not None and not forced and failover != "never":
                    delay = self._hedge_delay(sup, hedge_after, method, target)
                    if delay is not None:
                        if routes is None:
                            routes = self._routes_from(
                                first, method, target, preferred, start, arguments, failover
                            )
                        contest = _Contest(routes, delay)
                stage = self._invoke_stage if contest is None else self._hedged_stage
                try:
                    outcome = await stage(
                        now,
                        sup,
                        conn,
                        method,
                        target,
                        arguments,
                        request_id=request_id,
                        overall_deadline=deadline,
                        attempt_timeout=attempt_timeout,
                        progress_callback=progress_callback,
                        attempts=attempts,
                        errors=errors,
                        trace=span,
                        contest=contest,
                    )
                    if contest is not None:
                        routes = contest.routes
                except RequestRejectedError:
                    self._finished(method, target, request_id, start, attempts, "rejected", name)
                    raise
                if isinstance(outcome, InvocationResult):
                    outcome.attempts = tuple(attempts)
                    answer = outcome.result
                    ending = (
                        "tool_error" if isinstance(answer, CallToolResult) and answer.is_error else "success"
                    )
                    self._finished(method, target, request_id, start, outcome.attempts, ending, name)
                    if span is not NO_INVOCATION_SPAN:
                        span.succeeded(outcome)
                    return outcome
                failure, sent = outcome
                now = trio.current_time()
                if failure.category == "session_expired" and name not in retried_expired:
                    # The server restarted and forgot our session: nothing ran. Re-handshake, retry once.
                    retried_expired.add(name)
                    retry_now = name
                    continue
                if now >= self._drain_at:
                    break
                if sent and not may_repeat(method, target, sup.config, sup.tool_info(target or ""), failover):
                    held_back = name
                    break

            if rejected is not None and not touched:
                server, why = rejected
                self._event(
                    "invoke_failure",
                    server,
                    method,
                    request_id,
                    target,
                    Failure("invalid_request", why, False),
                )
                self._finished(method, target, request_id, start, attempts, "rejected", server)
                raise RequestRejectedError(
                    f"{target}: {why} (its schema of {target!r}; nothing was sent)",
                    server=server,
                    method=method,
                    request_id=request_id,
                    attempts=attempts,
                )
            if not touched and target is not None and (kind := KIND_OF_METHOD.get(method)) is not None:
                offered = {name: sup.catalog.of(kind) for name, sup in self._supervisors.items()}
                if offered and all(known is not None and target not in known for known in offered.values()):
                    self._finished(method, target, request_id, start, attempts, "not_offered", None)
                    raise NotOfferedError(
                        method=method,
                        target=target,
                        servers=list(offered),
                        request_id=request_id,
                        attempts=attempts,
                    )
            outcome_kind = _outcome_of(attempts)
            if not attempts:
                closed = [n for n, sup in self._supervisors.items() if not sup.should_retry()]
                message = f"{method} {target or ''}: no candidate server".replace("  ", " ")
                if closed:
                    message += f" (retry window closed: {', '.join(closed)})"
            else:
                last = attempts[-1]
                used = [a.server for a in attempts if a.stage is not Stage.SELECT]
                # Which servers could have taken it (in plain order: no load, no random draw).
                ranked = rank_candidates(
                    _StatesView(self._supervisors),
                    preferred,
                    method,
                    target,
                    trio.current_time(),
                    arguments,
                )
                usable = (r.server for r in ranked if r.skip is None and r.reject is None)
                could = list(dict.fromkeys([*used, *usable]))
                plural = "s" if len(could) != 1 else ""
                tried = len(dict.fromkeys(used))
                message = (
                    f"{method} {target or ''}: tried {tried} of {len(could)} server{plural}"
                    f" (last: {last.server}: {last.error})"
                )
                rest = [n for n in could if n not in used]
                if rest and held_back is not None:
                    message += f"; not repeated on {rest[0]} because the attempt on {held_back} may have run"
                elif rest and failover == "never":
                    message += f"; not tried on {rest[0]}: failover='never'"
            if outcome_kind is Outcome.UNKNOWN:
                message += "; outcome unknown: it may have executed"
            last_server = attempts[-1].server if attempts else None
            self._finished(method, target, request_id, start, attempts, outcome_kind.value, last_server)
            raise InvocationFailedError(
                message, method=method, outcome=outcome_kind, attempts=attempts, request_id=request_id
            ) from (
                BaseExceptionGroup("attempts", [e for e in errors if isinstance(e, Exception)])
                if errors
                else None
            )
        except (RequestRejectedError, NotOfferedError, InvocationFailedError, UnknownServerError) as exc:
            span.failed(exc)
            raise  # each is raised once its end was published, or before anything began
        except BaseException as exc:
            # Cancelled by the caller (or ended by anything else): the end is published all
            # the same, so that every invocation that began also ends on the stream.
            self._finished(
                method,
                target,
                request_id,
                start,
                attempts,
                _outcome_of(attempts).value,
                attempts[-1].server if attempts else None,
            )
            span.failed(exc)
            raise

    async def _handshake_stage(
        self,
        sup: ServerSupervisor,
        method: str,
        target: str | None,
        request_id: str,
        overall_deadline: float,
        attempts: list[Attempt],
        errors: list[BaseException],
        trace: InvocationSpan | NoInvocationSpan,
        *,
        force: bool = False,
    ) -> Connection | None:
        start = trio.current_time()
        handshook = False
        span = trace.attempt(sup.name, "handshake", method, target)

        def observe(kind: str, failure: Failure | None) -> None:
            nonlocal handshook
            handshook = True
            self._event(f"handshake_{kind}", sup.name, method, request_id, target, failure)

        failure: Failure | None = None
        conn: Connection | None = None
        with trio.move_on_at(overall_deadline) as scope, span.current():
            self._active_scopes.add(scope)
            try:
                conn = await sup.acquire(request_id, observer=observe, force=force, pin=False)
            except ServerUnavailableError as exc:
                failure = Failure("unavailable", str(exc), False)
                errors.append(exc)
                if not handshook:
                    self._event("handshake_failure", sup.name, method, request_id, target, failure)
            except (SessionError, ManagerClosedError) as exc:
                failure = classify(exc)
                errors.append(exc)
            except trio.Cancelled:
                failure = Failure("cancelled", "cancelled by the caller while connecting", False)
                attempts.append(self._attempt(sup.name, Stage.HANDSHAKE, start, failure, sent=False))
                span.end(attempts[-1])
                self._event("handshake_failure", sup.name, method, request_id, target, failure)
                raise
            finally:
                self._active_scopes.discard(scope)
        if scope.cancelled_caught:
            if trio.current_time() >= self._drain_at:
                failure = Failure(
                    "shutdown", "abandoned while connecting: the manager is shutting down", False
                )
            else:
                failure = Failure("timeout", "the invocation deadline passed while connecting", False)
            if handshook:
                self._event("handshake_failure", sup.name, method, request_id, target, failure)
        if conn is not None and (handshook or failure is None):
            if handshook:
                attempts.append(self._attempt(sup.name, Stage.HANDSHAKE, start, None, sent=False))
            span.end(attempts[-1] if handshook else None)
            return conn
        assert failure is not None
        attempts.append(self._attempt(sup.name, Stage.HANDSHAKE, start, failure, sent=False))
        span.end(attempts[-1])
        return None

    def _attempt(
        self,
        server: str,
        stage: Stage,
        start: float,
        failure: Failure | None,
        *,
        sent: bool,
        end: float | None = None,
        budget: Budget | None = None,
    ) -> Attempt:
        stamp = self.anchor.at(start)
        return Attempt(
            server=server,
            stage=stage,
            success=failure is None,
            error=failure.message if failure else None,
            category=failure.category if failure else None,
            sent=sent,
            started_at=start,
            started_timestamp=stamp,
            duration=(trio.current_time() if end is None else end) - start,
            budget=budget,
        )

    async def _invoke_stage(
        self,
        start: float,
        sup: ServerSupervisor,
        conn: Connection,
        method: str,
        target: str | None,
        arguments: dict[str, Any] | None,
        *,
        request_id: str,
        overall_deadline: float,
        attempt_timeout: float | None,
        progress_callback: ProgressCallback | None,
        attempts: list[Attempt],
        errors: list[BaseException],
        trace: InvocationSpan | NoInvocationSpan,
        contest: _Contest | None = None,
    ) -> InvocationResult[Any] | tuple[Failure, bool]:
        per_attempt = attempt_timeout if attempt_timeout is not None else sup.policy.call_timeout
        hard_deadline = min(start + sup.policy.progress_hard_max, overall_deadline)
        scope = trio.CancelScope(deadline=min(start + per_attempt, overall_deadline))
        if contest is not None:
            contest.scopes[sup.name] = scope

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            # Progress proves the server is working: extend the attempt, never past the hard max
            # nor past a drain deadline set meanwhile.
            extended = min(trio.current_time() + per_attempt, hard_deadline, self._drain_at)
            scope.deadline = max(scope.deadline, extended)
            if progress_callback is not None:
                await progress_callback(progress, total, message)

        marker = SentMarker(scope)
        traced = trace is not NO_INVOCATION_SPAN
        span = trace.attempt(sup.name, "invoke", method, target) if traced else NO_ATTEMPT_SPAN
        stream = self.stream
        stream.invocation("invoke_start", sup.name, method, request_id, target, None, None, start)
        result: Any = None
        error: BaseException | None = None
        token = sent_marker.set(marker)
        limiter = sup.limiter
        acquired = False
        self._active_scopes.add(scope)
        try:
            with span.covering(scope) if traced else scope:
                try:
                    # Uncontended: no extra schedule point. Waiting counts against the deadline.
                    limiter.acquire_nowait()
                except trio.WouldBlock:
                    await limiter.acquire()
                acquired = True
                if method == "tools/call" and target is not None:
                    # The first request is sent from here, not through a helper: every frame
                    # between this task and the session is crossed at each checkpoint.
                    result = await conn.session.call_tool(
                        target, arguments, progress_callback=cast(Any, on_progress), allow_input_required=True
                    )
                    if isinstance(result, InputRequiredResult):
                        result = await input_required.call_tool(
                            conn.session, target, arguments, on_progress, first=result
                        )
                else:
                    result = await _send(conn, method, target, arguments, on_progress, sup.shared_items)
        except Exception as exc:
            error = exc
        except trio.Cancelled:
            # The caller's own cancel scope (not this attempt's): abandoned, which says nothing
            # about the server. Traced, then the cancellation goes on.
            failure = Failure(
                "cancelled", f"cancelled by the caller after {trio.current_time() - start:g}s", False
            )
            attempts.append(
                self._attempt(
                    sup.name, Stage.INVOKE, start, failure, sent=marker.delivered, budget=Budget.CALLER
                )
            )
            span.end(attempts[-1])
            self._event("invoke_failure", sup.name, method, request_id, target, failure)
            raise
        finally:
            if acquired:
                limiter.release()
            sent_marker.reset(token)
            self._active_scopes.discard(scope)

        timed_out = scope.cancelled_caught
        if timed_out and marker.cut and error is None:
            # Ended by the connection closing under it (a transport that runs the request in
            # this task cancels the attempt's scope for it): a connection failure, not a timeout.
            error = MCPError(code=CONNECTION_CLOSED, message="Connection closed")
            timed_out = False
        if error is None and not timed_out:
            end = trio.current_time()
            listing = None
            if isinstance(result, _Listing):
                listing = (result.kind, result.by_key)
                result = result.items
            if not sup.note_success(conn, start, end) or listing is not None:
                await sup.report_outcome(conn, None, "invocation", request_id, at=end, listing=listing)
            note = None
            if method == "tools/call" and isinstance(result, CallToolResult) and result.is_error:
                note = "tool returned isError"
            stream.invocation("invoke_success", sup.name, method, request_id, target, note, None, end)
            attempt = self._attempt(sup.name, Stage.INVOKE, start, None, sent=True, end=end)
            attempts.append(attempt)
            if traced:
                span.end(attempt)
            return InvocationResult(
                server=sup.name, method=method, request_id=request_id, result=result, attempts=()
            )

        budget: Budget | None = None
        if timed_out:
            now = trio.current_time()
            waited = now - start
            if contest is not None and contest.winner not in (None, sup.name):
                # Hedged, and another server answered first: this one was cancelled for it.
                failure = Failure(
                    "superseded", f"cancelled after {waited:g}s: {contest.winner} answered first", False
                )
                budget = Budget.CALLER
                sup.latency.observe_unanswered(waited, now)  # not a health signal; a slow one
            elif now >= self._drain_at:
                failure = Failure(
                    "shutdown", f"abandoned after {waited:g}s: the manager is shutting down", False
                )
                budget = Budget.CALLER
            else:
                server_deadline = start + sup.policy.call_timeout
                if now >= overall_deadline and overall_deadline < start + per_attempt:
                    message = f"the invocation deadline passed after {waited:g}s"
                else:
                    message = f"no answer within {waited:g}s"
                failure = Failure("timeout", message, False)
                # Only the server's own call_timeout says something about its health; a
                # shorter deadline that the caller chose does not.
                budget = Budget.SERVER if now >= server_deadline else Budget.CALLER
                if budget is Budget.SERVER:
                    sup.latency.observe(waited, now)
                    await sup.report_outcome(conn, failure, "invocation", request_id, at=now)
            errors.append(TimeoutError(failure.message))
        else:
            assert error is not None
            errors.append(error)
            failure = classify(error, conn.link.facts())
            if failure.is_caller_error:
                attempts.append(self._attempt(sup.name, Stage.INVOKE, start, failure, sent=marker.delivered))
                span.end(attempts[-1])
                self._event("invoke_failure", sup.name, method, request_id, target, failure)
                raise RequestRejectedError(
                    failure.message,
                    server=sup.name,
                    method=method,
                    request_id=request_id,
                    attempts=attempts,
                ) from error
            await sup.report_outcome(conn, failure, "invocation", request_id)
        sent = marker.delivered and failure.category != "session_expired"
        attempts.append(self._attempt(sup.name, Stage.INVOKE, start, failure, sent=sent, budget=budget))
        span.end(attempts[-1])
        self._event("invoke_failure", sup.name, method, request_id, target, failure)
        return failure, sent

    # -- hedging -----------------------------------------------------------------------------------

    def _hedge_delay(
        self, sup: ServerSupervisor, hedge_after: float | Literal["p95"], method: str, target: str | None
    ) -> float | None:
        """How long to wait for ``sup`` before hedging (``None``: no hedge: the request may not
        be repeated, or its 95th percentile is not known yet)."""
        if not may_repeat(method, target, sup.config, sup.tool_info(target or ""), "safe"):
            return None
        if hedge_after == "p95":
            return sup.latency.percentile(0.95)
        return float(hedge_after)

    def _hedge_partner(
        self, contest: _Contest, method: str, target: str | None, now: float
    ) -> tuple[ServerSupervisor, Connection] | None:
        """The next candidate, when it can take the same request at once (a ready session) and may
        run it too; otherwise it is left to the failover that follows (``None``)."""
        route = next(contest.routes, None)
        if route is None:
            return None
        sup = self._supervisors.get(route.server)
        if route.skip is None and route.reject is None and sup is not None:
            conn = sup.ready_connection(now)
            if conn is not None and self._hedge_delay(sup, 0.0, method, target) is not None:
                return sup, conn
        contest.routes = itertools.chain((route,), contest.routes)  # left for the failover
        return None

    async def _hedged_stage(
        self,
        start: float,
        sup: ServerSupervisor,
        conn: Connection,
        method: str,
        target: str | None,
        arguments: dict[str, Any] | None,
        *,
        contest: _Contest | None,
        **common: Any,
    ) -> InvocationResult[Any] | tuple[Failure, bool]:
        """The attempt on ``sup``, and after ``contest.delay`` the same request on the next
        candidate: the first answer wins, the other attempt is cancelled. Both are traced. When
        neither succeeds, the first server's failure is the outcome."""
        assert contest is not None
        outcomes: dict[str, InvocationResult[Any] | tuple[Failure, bool]] = {}
        refusal: list[RequestRejectedError] = []
        first_ended = trio.Event()

        async def contend(contender: ServerSupervisor, connection: Connection, begun: float) -> None:
            try:
                outcome = await self._invoke_stage(
                    begun, contender, connection, method, target, arguments, contest=contest, **common
                )
            except RequestRejectedError as exc:
                refusal.append(exc)
                contest.won_by(contender.name)  # an answer too: the other attempt is not needed
            else:
                outcomes[contender.name] = outcome
                if isinstance(outcome, InvocationResult):
                    contest.won_by(contender.name)
            finally:
                first_ended.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(contend, sup, conn, start)
            with trio.move_on_after(contest.delay):
                await first_ended.wait()
            if not first_ended.is_set():
                partner = self._hedge_partner(contest, method, target, trio.current_time())
                if partner is not None:
                    nursery.start_soon(contend, *partner, trio.current_time())
        if refusal:
            raise refusal[0]
        if contest.winner is not None:
            return outcomes[contest.winner]
        return outcomes[sup.name]

    # -- convenience -----------------------------------------------------------------------------

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        preferred: Sequence[str] = (),
        failover: FailoverMode = "safe",
        timeout: float | None = None,
        attempt_timeout: float | None = None,
        progress_callback: ProgressCallback | None = None,
        request_id: str | None = None,
        hedge_after: float | Literal["p95"] | None = None,
    ) -> CallToolResult:
        """Call tool ``name`` on the first candidate that answers. See :meth:`invoke`."""
        outcome = await self.invoke(
            "tools/call",
            name,
            arguments,
            preferred=preferred,
            failover=failover,
            timeout=timeout,
            attempt_timeout=attempt_timeout,
            progress_callback=progress_callback,
            request_id=request_id,
            hedge_after=hedge_after,
        )
        result: CallToolResult = outcome.result
        return result

    async def read_resource(
        self,
        uri: str,
        *,
        preferred: Sequence[str] = (),
        failover: FailoverMode = "safe",
        timeout: float | None = None,
        attempt_timeout: float | None = None,
        request_id: str | None = None,
        hedge_after: float | Literal["p95"] | None = None,
    ) -> ReadResourceResult:
        """Read resource ``uri`` from the first candidate that answers. See :meth:`invoke`."""
        outcome = await self.invoke(
            "resources/read",
            uri,
            preferred=preferred,
            failover=failover,
            timeout=timeout,
            attempt_timeout=attempt_timeout,
            request_id=request_id,
            hedge_after=hedge_after,
        )
        result: ReadResourceResult = outcome.result
        return result

    async def get_prompt(
        self,
        name: str,
        arguments: dict[str, str] | None = None,
        *,
        preferred: Sequence[str] = (),
        failover: FailoverMode = "safe",
        timeout: float | None = None,
        attempt_timeout: float | None = None,
        request_id: str | None = None,
        hedge_after: float | Literal["p95"] | None = None,
    ) -> GetPromptResult:
        """Get prompt ``name`` from the first candidate that answers. See :meth:`invoke`."""
        outcome = await self.invoke(
            "prompts/get",
            name,
            dict(arguments) if arguments else None,
            preferred=preferred,
            failover=failover,
            timeout=timeout,
            attempt_timeout=attempt_timeout,
            request_id=request_id,
            hedge_after=hedge_after,
        )
        result: GetPromptResult = outcome.result
        return result

    # -- catalogs --------------------------------------------------------------------------------

    async def server_catalog(self, server: str, kind: str) -> list[Any]:
        """List ``kind`` (``tools`` / ``resources`` / ``prompts``) on one server (all pages).

        Only ``server`` is ever asked.

        Raises:
            InvocationFailedError: the server could not list (its attempts say why).
        """
        if kind not in ("tools", "resources", "prompts"):
            raise ValueError("kind must be 'tools', 'resources' or 'prompts'")
        self._lookup(server)
        outcome = await self.invoke(f"{kind}/list", preferred=[server], failover="never")
        items: list[Any] = outcome.result
        return items

    async def catalog(self, kind: str) -> list[CatalogEntry]:
        """The aggregated catalog of ``kind`` across every server that can answer now.

        Servers that fail to list are left out (their failure is recorded as usual).

        Raises:
            ManagerClosedError: the manager is closed or shutting down.
        """
        if kind not in ("tools", "resources", "prompts"):
            raise ValueError("kind must be 'tools', 'resources' or 'prompts'")
        self._check_accepting()
        names = list(self._supervisors)
        found: dict[str, list[Any]] = {}

        async def one(name: str) -> None:
            try:
                found[name] = await self.server_catalog(name, kind)
            except TrioMcpError:  # failed, rejected, removed meanwhile, or shutting down
                pass

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(one, name)
        return merge(kind, [(name, found[name]) for name in names if name in found])

    async def list_tools(self) -> list[CatalogEntry]:
        return await self.catalog("tools")

    async def list_resources(self) -> list[CatalogEntry]:
        return await self.catalog("resources")

    async def list_prompts(self) -> list[CatalogEntry]:
        return await self.catalog("prompts")

    async def servers_offering(self, kind: str, key: str) -> list[str]:
        """Which servers offer tool / resource / prompt ``key``."""
        for entry in await self.catalog(kind):
            if entry.key == key:
                return list(entry.servers)
        return []


def _outcome_of(attempts: Sequence[Attempt]) -> Outcome:
    """What is known of an invocation that got no answer: it may have run if any attempt sent it."""
    return Outcome.UNKNOWN if any(a.sent for a in attempts) else Outcome.FAILED


async def _send(
    conn: Connection,
    method: str,
    target: str | None,
    arguments: dict[str, Any] | None,
    on_progress: ProgressCallback,
    shared: SharedItems | None = None,
) -> Any:
    session = conn.session
    if method == "tools/call":
        assert target is not None
        return await input_required.call_tool(session, target, arguments, on_progress)
    if method == "resources/read":
        assert target is not None
        return await input_required.read_resource(session, target)
    if method == "prompts/get":
        assert target is not None
        return await input_required.get_prompt(session, target, arguments)
    kind = _LIST_KINDS.get(method)
    if kind is not None:
        items = await list_kind(session_pages(session), kind)
        return _Listing(kind, items, listing(kind, items, shared))
    raise ValueError(f"unsupported method {method!r}")


class _StatesView(Mapping[str, Any]):
    """The supervisors' published states, by name, read when looked up (no copy per call)."""

    __slots__ = ("_sups",)

    def __init__(self, sups: dict[str, ServerSupervisor]) -> None:
        self._sups = sups

    def __getitem__(self, name: str) -> Any:
        return self._sups[name].state

    def get(self, name: str, default: Any = None) -> Any:
        sup = self._sups.get(name)
        return sup.state if sup is not None else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._sups)

    def __len__(self) -> int:
        return len(self._sups)


@dataclass(frozen=True, slots=True)
class _Listing:
    """A complete listing: the items in server order, and by key for the server's catalog."""

    kind: str
    items: list[Any]
    by_key: Listing


class _Contest:
    """A hedged attempt: the cancel scopes of its contenders, and who answered first."""

    __slots__ = ("delay", "routes", "scopes", "winner")

    def __init__(self, routes: Iterator[Route], delay: float) -> None:
        self.routes = routes
        """The rest of the invocation's routes (the hedge may take the next one)."""
        self.delay = delay
        self.scopes: dict[str, trio.CancelScope] = {}
        self.winner: str | None = None

    def won_by(self, server: str) -> None:
        if self.winner is None:
            self.winner = server
            for name, scope in self.scopes.items():
                if name != server:
                    scope.cancel()

"""Multi-round-trip requests (protocol 2026-07-28, SEP-2322): input-required results.

A 2026-07-28 server that needs something from the client to answer ``tools/call``,
``prompts/get`` or ``resources/read`` answers with an ``InputRequiredResult`` instead: the
input requests it needs answered (elicitation, sampling, roots) and an opaque
``requestState``. The client fulfils every input request through its handlers (the same
:class:`~trio_mcp.ClientFeatures` handlers that answer server-initiated requests on a
handshake-era connection, so a handler sees no difference) and sends the original request
again, as a new JSON-RPC request, with the responses and the state echoed byte for byte,
or without a state when the server sent none.

The rounds run in the caller's task, under the caller's deadline, and belong to that one
request: concurrent requests never see each other's responses or state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import trio
from mcp.client.session import ClientRequestContext, ClientSession
from mcp_types import (
    CallToolResult,
    ErrorData,
    GetPromptResult,
    InputRequest,
    InputRequiredResult,
    InputResponse,
    InputResponses,
    ReadResourceResult,
)

from ._exceptions import SessionError

MAX_ROUNDS = 10
"""A request the server still answers with "input required" after this many rounds fails
(the SDK's own client gives up at the same count)."""

STATE_ONLY_DELAY = 0.05
"""Seconds before resending a request whose server asked for nothing but sent a state (it
is not ready yet); the delay doubles on each such round, up to :data:`STATE_ONLY_DELAY_MAX`."""
STATE_ONLY_DELAY_MAX = 0.25

ResultT = TypeVar("ResultT")
ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]


async def resolve(
    session: ClientSession,
    first: ResultT | InputRequiredResult,
    send: Callable[[InputResponses | None, str | None], Awaitable[ResultT | InputRequiredResult]],
) -> ResultT:
    """The final result of a request whose first answer was ``first``.

    ``send(responses, state)`` sends the original request again with ``responses`` and
    ``state`` (each ``None`` when there is nothing to send).

    Raises:
        SessionError: a handler declined or failed an input request (category
            ``invalid_request``: another server would need the same answer), or the server
            kept asking past :data:`MAX_ROUNDS` (category ``protocol_error``).
    """
    result = first
    rounds = 0
    delay = STATE_ONLY_DELAY
    while isinstance(result, InputRequiredResult):
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise SessionError(
                f"the server still required input after {MAX_ROUNDS} rounds", category="protocol_error"
            )
        responses: InputResponses | None = None
        if result.input_requests:
            delay = STATE_ONLY_DELAY
            responses = await fulfil(session, result.input_requests)
        else:
            await trio.sleep(delay)
            delay = min(delay * 2, STATE_ONLY_DELAY_MAX)
        result = await send(responses, result.request_state)
    return result


async def fulfil(session: ClientSession, requests: dict[str, InputRequest]) -> InputResponses:
    """Answer every input request through ``session``'s handlers, concurrently.

    The first refusal (a handler's ``ErrorData`` or exception) cancels the others.
    """
    responses: InputResponses = {}
    refusals: list[tuple[str, InputRequest, ErrorData | Exception]] = []

    async def answer(key: str, request: InputRequest, cancel_scope: trio.CancelScope) -> None:
        context = ClientRequestContext(
            session=session, request_id=key, meta=request.params.meta if request.params else None
        )
        try:
            response: InputResponse | ErrorData = await session.dispatch_input_request(context, request)
        except Exception as exc:
            refusals.append((key, request, exc))
            cancel_scope.cancel()
            return
        if isinstance(response, ErrorData):
            refusals.append((key, request, response))
            cancel_scope.cancel()
        else:
            responses[key] = response

    async with trio.open_nursery() as nursery:
        for key, request in requests.items():
            nursery.start_soon(answer, key, request, nursery.cancel_scope)
    if refusals:
        key, request, refusal = refusals[0]
        reason = refusal.message if isinstance(refusal, ErrorData) else f"{type(refusal).__name__}: {refusal}"
        error = SessionError(
            f"input request {key!r} ({request.method}) was not answered: {reason}", category="invalid_request"
        )
        raise error from (refusal if isinstance(refusal, Exception) else None)
    return responses


async def call_tool(
    session: ClientSession,
    name: str,
    arguments: dict[str, Any] | None,
    progress: ProgressFn | None,
    first: CallToolResult | InputRequiredResult | None = None,
) -> CallToolResult:
    """``tools/call``, through as many input rounds as the server asks for (``first``: the
    answer to the first request, when the caller sent it itself)."""

    async def send(
        responses: InputResponses | None, state: str | None
    ) -> CallToolResult | InputRequiredResult:
        return await session.call_tool(
            name,
            arguments,
            progress_callback=cast(Any, progress),
            input_responses=responses,
            request_state=state,
            allow_input_required=True,
        )

    return await resolve(session, first if first is not None else await send(None, None), send)


async def get_prompt(session: ClientSession, name: str, arguments: dict[str, str] | None) -> GetPromptResult:
    """``prompts/get``, through as many input rounds as the server asks for."""

    async def send(
        responses: InputResponses | None, state: str | None
    ) -> GetPromptResult | InputRequiredResult:
        return await session.get_prompt(
            name, arguments, input_responses=responses, request_state=state, allow_input_required=True
        )

    return await resolve(session, await send(None, None), send)


async def read_resource(session: ClientSession, uri: str) -> ReadResourceResult:
    """``resources/read``, through as many input rounds as the server asks for."""

    async def send(
        responses: InputResponses | None, state: str | None
    ) -> ReadResourceResult | InputRequiredResult:
        return await session.read_resource(
            uri, input_responses=responses, request_state=state, allow_input_required=True
        )

    return await resolve(session, await send(None, None), send)

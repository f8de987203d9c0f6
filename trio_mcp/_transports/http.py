"""The streamable HTTP transport (the SDK's client over an ``httpx2`` client we configure)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .._config import HttpTransport
from .base import Link

LONG_POLL_METHODS = frozenset({"subscriptions/listen"})
"""Requests held open until the server has something to say: their POST failing (the server
restarted) says nothing about the connection, whose other requests go on working."""


def _request_of(request: Any) -> tuple[str | None, str | None]:
    """The JSON-RPC (id, method) of the request a POST carries, if it carries one."""
    try:
        body = json.loads(request.content)
    except Exception:  # a streamed or non-JSON body carries no request we track
        return None, None
    if isinstance(body, dict) and isinstance(body.get("method"), str) and body.get("id") is not None:
        return str(body["id"]), body["method"]
    return None, None


SYNTHETIC_HEADER = "x-trio-mcp-synthetic"
"""Marks a response made up on this side (it says nothing about the server's HTTP status)."""


def _synthetic_error(request_id: str, message: str) -> Any:
    import httpx2
    from mcp_types import CONNECTION_CLOSED

    body = {"jsonrpc": "2.0", "id": request_id, "error": {"code": CONNECTION_CLOSED, "message": message}}
    return httpx2.Response(
        502, json=body, headers={"content-type": "application/json", SYNTHETIC_HEADER: "1"}
    )


def _linked_http_transport(link: Link) -> Any:
    """An httpx2 transport that marks ``link`` dead when a POST cannot be delivered.

    The SDK runs every request's POST in its transport task group, so a failed POST (server
    down: connection refused) cancels the whole connection before any caller or probe sees an
    error. Marking the link first lets the supervisor record why the connection died. GET
    (the legacy event stream) is left alone: the SDK retries it by itself.
    """
    import httpx2

    from .._errors import classify

    class LinkedHttpTransport(httpx2.AsyncBaseTransport):
        def __init__(self) -> None:
            self._inner = httpx2.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            request_id, method = _request_of(request) if request.method == "POST" else (None, None)
            marker = link.awaiting_delivery.pop(request_id, None) if request_id is not None else None
            try:
                return await self._inner.handle_async_request(request)
            except Exception as exc:
                if method in LONG_POLL_METHODS and request_id is not None:
                    # The SDK lets a failed POST take the whole connection down; a lost
                    # long poll must not: answer it with a JSON-RPC error instead, which ends
                    # that one request (its owner subscribes again later).
                    lost: httpx2.Response = _synthetic_error(request_id, f"{method} stream lost: {exc!r}")
                    return lost
                if request.method == "POST":
                    if marker is not None and isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout):
                        # No connection, so not one byte of this request reached the server.
                        marker.refused = True
                    failure = classify(exc)
                    link.mark_dead(failure.category, failure.message)
                raise

        async def aclose(self) -> None:
            await self._inner.aclose()

    return LinkedHttpTransport()


@asynccontextmanager
async def _open_http(config: HttpTransport, link: Link) -> AsyncIterator[tuple[Any, Any]]:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    link.track_delivery = True

    async def on_response(response: httpx2.Response) -> None:
        if response.status_code >= 400 and SYNTHETIC_HEADER not in response.headers:
            link.http_status = response.status_code

    from .._auth import build_httpx_auth

    client = httpx2.AsyncClient(
        headers=dict(config.headers or {}),
        auth=build_httpx_auth(config.auth, config.url),
        timeout=httpx2.Timeout(30.0, read=300.0),
        event_hooks={"response": [on_response]},
        transport=_linked_http_transport(link),
    )
    async with client, streamable_http_client(config.url, http_client=client) as (read, write):
        yield read, write

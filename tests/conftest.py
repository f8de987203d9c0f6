from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _contract import contract

_API_PREFIXES = ("/api/v1/", "/openapi.json")


@pytest.fixture(autouse=True)
def _answers_match_the_openapi_document(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every answer of the HTTP API that a test receives is checked against the OpenAPI document."""
    send = httpx.AsyncClient.send

    async def checked_send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = await send(self, request, **kwargs)
        if request.url.path.startswith(_API_PREFIXES) and not kwargs.get("stream"):
            contract().check(
                request.method,
                request.url.path,
                response.status_code,
                response.content,
                response.headers.get("content-type", ""),
            )
        return response

    monkeypatch.setattr(httpx.AsyncClient, "send", checked_send)
    yield


def pytest_terminal_summary(terminalreporter: Any) -> None:
    checked = contract().checked
    if checked:
        terminalreporter.write_line(f"API answers checked against the OpenAPI document: {checked}")

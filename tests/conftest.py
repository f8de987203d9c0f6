from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _contract import contract
from _postgres import PostgresServer, skip_or_fail
from _postgres import unavailable as postgres_unavailable

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


@pytest.fixture(autouse=True)
def _private_state(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every `trio-mcp serve` a test starts keeps its state (the default SQLite file) in a
    directory of its own, with a secret key to encrypt registrations' secrets."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setenv("TRIO_MCP_SECRET_KEY", "Jm3BNJ55nvZCMdx8ZgzXBC2Kq3lnl-iEq3fLBiHX9pE=")
    monkeypatch.delenv("TRIO_MCP_STATE", raising=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL 15 server for the session (skips, or fails under TRIO_MCP_REQUIRE_POSTGRES,
    when PostgreSQL is not installed)."""
    reason = postgres_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A new, empty database of the session's PostgreSQL server."""
    return postgres.database()

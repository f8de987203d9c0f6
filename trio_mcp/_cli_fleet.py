"""Where the CLI's commands run: a running API over HTTP, or a manager opened in this process.

Both answer in the API's JSON shapes, and both report errors as :class:`AnswerError` carrying
the HTTP status and the API's ``detail`` object (in-process, the library's exceptions go
through the API's own table in :mod:`web.errors`), so every command prints and exits the same
way whichever fleet it talks to.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, cast

import trio

from ._exceptions import TrioMcpError

if TYPE_CHECKING:
    import httpx2

    from ._cli_common import Target
    from ._config import ServerConfig
    from ._invoke import ProgressCallback
    from ._manager import Manager

API_PREFIX = "/api/v1/mcp"

INVOKE_PATHS = {"tool": "/invoke/tool", "resource": "/invoke/resource", "prompt": "/invoke/prompt"}


class AnswerError(Exception):
    """The fleet answered with an error: the HTTP ``status`` and the API's ``detail`` object
    (``error``, ``message``, and for a failed invocation ``outcome`` and ``attempts``)."""

    def __init__(self, status: int, detail: dict[str, Any]) -> None:
        self.status = status
        self.detail = detail
        super().__init__(str(detail.get("message") or f"HTTP {status}"))


class UnreachableError(Exception):
    """The API could not be reached, or what answered is not a trio-mcp API."""


class Fleet(Protocol):
    """What the commands need from a fleet."""

    description: str
    """Where it is, for messages: the API's URL, or the config file."""
    streams_progress: bool
    """Whether :meth:`invoke` reports the server's progress notifications."""

    async def settle(self) -> None:
        """Let a fleet that just started connect its servers before it is described."""

    async def servers(self) -> dict[str, Any]:
        """``GET /servers``."""

    async def catalog(self, kind: str) -> dict[str, Any]:
        """``GET /tools`` (``/resources``, ``/prompts``)."""

    async def events(self, *, server: str | None, limit: int | None) -> list[dict[str, Any]]:
        """Connection and invocation events merged, oldest first, each with ``"log"``."""

    async def invoke(
        self, kind: str, body: dict[str, Any], progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """``POST /invoke/{kind}`` with ``body``."""

    async def follow(
        self,
        *,
        server: str | None,
        after: int,
        interval: float,
        show: Callable[[list[dict[str, Any]]], None],
        notice: Callable[[str], None],
    ) -> None:
        """Pass every event newer than ``after`` to ``show`` as it comes, and say what
        interrupts that to ``notice``; runs until cancelled."""


def merge_events(
    connection: Sequence[dict[str, Any]], invocation: Sequence[dict[str, Any]], limit: int | None
) -> list[dict[str, Any]]:
    """Both logs in one order (their ``seq`` comes from one stream), the newest ``limit``."""
    tagged = (
        [{"log": "connection", **e} for e in connection],
        [{"log": "invocation", **e} for e in invocation],
    )
    merged = list(heapq.merge(*tagged, key=lambda e: e["seq"]))
    return merged[-limit:] if limit else merged


# -- over HTTP -------------------------------------------------------------------------------------


class HttpFleet:
    """A running API, through an ``httpx2.AsyncClient`` whose ``base_url`` is the server's root."""

    streams_progress = False

    def __init__(self, client: httpx2.AsyncClient, *, url: str, token: str | None) -> None:
        self._client = client
        self.description = f"the API at {url}"
        self._url = url
        self._token = token

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        unbounded: bool = False,
    ) -> Any:
        import httpx2

        timeout = httpx2.Timeout(60.0, connect=10.0, read=None if unbounded else 60.0)
        try:
            response = await self._client.request(
                method, API_PREFIX + path, params=params, json=body, timeout=timeout
            )
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
            raise UnreachableError(f"cannot reach {self.description}: {_describe(exc)}") from None
        except httpx2.TransportError as exc:
            if method == "POST":
                # The request may have reached the API: whatever it started may have run.
                message = f"lost {self.description} while it answered: {_describe(exc)}"
                raise AnswerError(
                    0, {"error": "connection_lost", "message": message, "outcome": "unknown"}
                ) from None
            raise UnreachableError(f"lost {self.description}: {_describe(exc)}") from None
        data = _json_or_none(response)
        if response.status_code >= 400:
            raise AnswerError(response.status_code, self._detail(response, data))
        if not isinstance(data, dict):
            raise UnreachableError(f"{self.description} answered {path} with something that is not JSON")
        return data

    def _detail(self, response: httpx2.Response, data: Any) -> dict[str, Any]:
        status = response.status_code
        detail = data.get("detail") if isinstance(data, dict) else None
        if not isinstance(detail, dict) or "message" not in detail:
            text = response.text.strip().replace("\n", " ")[:200]
            detail = {"error": "http_error", "message": f"HTTP {status}: {text or response.reason_phrase}"}
        if status == 401:
            detail["message"] = (
                f"{self.description} refused the token"
                if self._token
                else f"{self.description} needs a token: pass --token or set $TRIO_MCP_TOKEN"
            )
        elif detail.get("error") == "not_found":
            detail["message"] += f" (is {self._url} a trio-mcp API?)"
        return detail

    async def settle(self) -> None:
        pass

    async def servers(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/servers")
        return result

    async def catalog(self, kind: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", f"/{kind}")
        return result

    async def events(self, *, server: str | None, limit: int | None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {}
        if server is not None:
            params["server"] = server
        if limit:
            params["limit"] = limit
        connection = await self._request("GET", "/events", params=params)
        invocation = await self._request("GET", "/invocation-events", params=params)
        return merge_events(connection["events"], invocation["events"], limit)

    async def invoke(
        self, kind: str, body: dict[str, Any], progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("POST", INVOKE_PATHS[kind], body=body, unbounded=True)
        return result

    async def follow(
        self,
        *,
        server: str | None,
        after: int,
        interval: float,
        show: Callable[[list[dict[str, Any]]], None],
        notice: Callable[[str], None],
    ) -> None:
        """Follow the API's event stream (``GET /events/stream``), resuming after a broken
        connection with ``Last-Event-ID``; an API without one is polled every ``interval``."""
        import httpx2

        params = {"server": server} if server is not None else None
        last = after
        lost = False
        while True:
            try:
                async with self._client.sse(
                    API_PREFIX + "/events/stream",
                    params=params,
                    headers={"Last-Event-ID": str(last)},
                    timeout=httpx2.Timeout(10.0, read=None),
                ) as source:
                    response = source.response
                    if response.status_code >= 400:
                        await response.aread()
                        detail = self._detail(response, _json_or_none(response))
                        if response.status_code == 404 and detail.get("error") == "not_found":
                            break  # an API from before the event stream
                        raise AnswerError(response.status_code, detail)
                    if lost:
                        notice(f"reached {self.description} again")
                        lost = False
                    # An async generator: closed here, not left to the garbage collector.
                    events = cast("AsyncGenerator[httpx2.ServerSentEvent]", aiter(source))
                    async with aclosing(events) as stream:
                        async for event in stream:
                            if event.event in ("connection", "invocation"):
                                data = event.json()
                                assert isinstance(data, dict)
                                if data["seq"] <= last:
                                    # The stream sends each event once: numbering began again.
                                    notice(f"{self.description} restarted; its events start again")
                                last = data["seq"]
                                show([{"log": event.event, **data}])
                            elif event.event == "dropped":
                                notice(f"{self.description} dropped events this client read too slowly")
            except httpx2.TransportError as exc:
                if not lost:
                    notice(f"lost {self.description}: {_describe(exc)}; still trying")
                    lost = True
            # The stream ended (the API is shutting down) or broke: try again.
            await trio.sleep(interval)
        await self._poll(server=server, after=last, interval=interval, show=show, notice=notice)

    async def _poll(
        self,
        *,
        server: str | None,
        after: int,
        interval: float,
        show: Callable[[list[dict[str, Any]]], None],
        notice: Callable[[str], None],
    ) -> None:
        last = after
        lost = False
        while True:
            await trio.sleep(interval)
            try:
                batch = await self.events(server=server, limit=None)
            except UnreachableError as exc:
                if not lost:
                    notice(f"{exc}; still trying")
                    lost = True
                continue
            if lost:
                notice(f"reached {self.description} again")
                lost = False
            if batch and batch[-1]["seq"] < last:
                # Numbering began again: the API restarted.
                notice(f"{self.description} restarted; its events start again")
                last = 0
            fresh = [event for event in batch if event["seq"] > last]
            if fresh:
                last = fresh[-1]["seq"]
                show(fresh)


def _json_or_none(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


# -- in this process ---------------------------------------------------------------------------------


class LocalFleet:
    """A manager opened in this process; answers are built by the API's own serializers."""

    streams_progress = True

    def __init__(self, manager: Manager, *, description: str) -> None:
        self.manager = manager
        self.description = description

    @asynccontextmanager
    async def _answers(self) -> AsyncIterator[None]:
        """Library errors as the API would answer them."""
        try:
            yield
        except Exception as exc:
            from web.errors import error_detail, status_for

            status, _ = status_for(exc)
            if status == 500 and not isinstance(exc, TrioMcpError):
                raise  # a bug: let it show
            raise AnswerError(status, error_detail(exc)) from exc

    async def settle(self) -> None:
        async with self._answers():
            await self.manager.connect()

    async def servers(self) -> dict[str, Any]:
        from web.schemas import server_dict

        return {"servers": [server_dict(self.manager, s) for s in self.manager.servers()]}

    async def catalog(self, kind: str) -> dict[str, Any]:
        from web.schemas import catalog_entry_dict

        async with self._answers():
            entries = await self.manager.catalog(kind)
        return {kind: [catalog_entry_dict(e) for e in entries]}

    async def events(self, *, server: str | None, limit: int | None) -> list[dict[str, Any]]:
        async with self._answers():
            connection = self.manager.connection_events(server=server, limit=limit or None)
            invocation = self.manager.invocation_events(server=server, limit=limit or None)
        return merge_events([e.to_dict() for e in connection], [e.to_dict() for e in invocation], limit)

    async def invoke(
        self, kind: str, body: dict[str, Any], progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        from web import models
        from web.schemas import invocation_dict, parse_body

        async with self._answers():
            req: models.InvokeTool | models.InvokeResource | models.InvokePrompt
            if kind == "tool":
                req = parse_body(models.InvokeTool, body)
                method, target = "tools/call", req.tool_name
            elif kind == "resource":
                req = parse_body(models.InvokeResource, body)
                method, target = "resources/read", req.uri
            else:
                req = parse_body(models.InvokePrompt, body)
                method, target = "prompts/get", req.name
            outcome = await self.manager.invoke(
                method,
                target,
                getattr(req, "arguments", None),
                preferred=req.preferred_servers,
                failover=req.failover,
                timeout=req.timeout_seconds,
                attempt_timeout=req.attempt_timeout_seconds,
                request_id=req.request_id,
                progress_callback=progress,
            )
        return invocation_dict(outcome)

    async def follow(
        self,
        *,
        server: str | None,
        after: int,
        interval: float,
        show: Callable[[list[dict[str, Any]]], None],
        notice: Callable[[str], None],
    ) -> None:
        last = after
        with self.manager.stream.subscribe() as subscription:
            async for _ in subscription.receive:
                # One look at the logs for everything that arrived meanwhile.
                while True:
                    try:
                        subscription.receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                fresh = [e for e in await self.events(server=server, limit=None) if e["seq"] > last]
                if fresh:
                    last = fresh[-1]["seq"]
                    show(fresh)


# -- opening one --------------------------------------------------------------------------------------


def api_root(url: str) -> str:
    """The server's root: ``http://h:p/api/v1/mcp/`` and ``http://h:p/`` are both ``http://h:p``."""
    root = url.rstrip("/")
    return root.removesuffix(API_PREFIX).rstrip("/")


@asynccontextmanager
async def open_fleet(target: Target, servers: Sequence[ServerConfig] = ()) -> AsyncIterator[Fleet]:
    """The fleet ``target`` names: ``servers`` (loaded from ``target.config``) under a manager
    opened for the block, or a client of the API at ``target.url``."""
    if target.config is not None:
        from ._manager import open_manager

        async with open_manager(servers) as manager:
            yield LocalFleet(manager, description=str(target.config))
        return
    import httpx2

    assert target.url is not None
    if not target.url.startswith(("http://", "https://")):
        raise UnreachableError(f"--url must be an http:// or https:// URL, got {target.url!r}")
    root = api_root(target.url)
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    async with httpx2.AsyncClient(base_url=root, headers=headers) as client:
        yield HttpFleet(client, url=root, token=target.token)

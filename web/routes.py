"""HTTP handlers: parse the input, make one manager call, serialize the answer.

Errors are not handled here: library exceptions propagate to the table in :mod:`web.errors`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import trio
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from trio_mcp import Manager, ManagerClosedError, ServerStatus

from . import guard, models, persistence, schemas
from .errors import BusyError, ConflictError, RequestTimeoutError

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, kw_only=True)
class Operation:
    """What an endpoint takes and answers: the OpenAPI document is generated from these.

    Besides ``status`` and ``errors``, every operation may answer 401 (unless ``public``), 503
    when the manager is not running (unless ``public``), 413 and 422 when it takes a body,
    422 when it takes a query string, and 404 when its path names a server.
    """

    summary: str
    status: int = 200
    response: Any = None
    """The body of a success (a model or an annotated type); ``None``: no body."""
    body: Any = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    media_type: str = "application/json"
    """Of the success answer; anything but JSON is described as text."""
    events: Mapping[str, Any] = field(default_factory=dict)
    """For ``text/event-stream``: each event name and the model of its JSON ``data``."""
    answers: Mapping[int, Any] = field(default_factory=dict)
    """Other statuses whose body is not an :class:`~web.models.Error` (status: model)."""
    public: bool = False
    links: Mapping[str, Link] = field(default_factory=dict)
    """Operations to follow this one with, fed from its answer (OpenAPI links)."""


class Link(NamedTuple):
    """An OpenAPI link: the target's ``name`` path parameter, or its body, from the answer."""

    description: str
    request_body: Any = None
    """The target's body; ``"$response.body#/..."`` strings in it are taken from the answer."""


OPERATIONS: dict[Endpoint, Operation] = {}


def operation(**description: Any) -> Callable[[Endpoint], Endpoint]:
    """Describe an endpoint (see :class:`Operation`)."""

    def register(endpoint: Endpoint) -> Endpoint:
        OPERATIONS[endpoint] = Operation(**description)
        return endpoint

    return register


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """What :func:`web.app.create_app` was told; kept on ``app.state.settings``."""

    admission: guard.Admission = field(default_factory=guard.Admission)
    """Which servers a registration may describe (stdio, commands, internal addresses)."""
    token: str | None = None
    max_body_bytes: int = 1_000_000
    body_timeout: float = 10.0
    ready_min: int = 1
    max_invocations: int = 256
    """Invocations served at once; more are refused with 503 and Retry-After."""


class InvocationCount:
    """How many invocations the API is serving now (one per app; trio is single-threaded)."""

    def __init__(self) -> None:
        self.now = 0


def _manager(request: Request) -> Manager:
    manager: Manager | None = getattr(request.app.state, "manager", None)
    if manager is None:
        raise ManagerClosedError("the manager is not running")
    return manager


def _settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


async def _body(request: Request) -> dict[str, Any]:
    settings = _settings(request)
    with trio.move_on_after(settings.body_timeout) as scope:
        return await schemas.read_json_object(request, settings.max_body_bytes)
    assert scope.cancelled_caught
    raise RequestTimeoutError(f"the request body did not arrive within {settings.body_timeout:g} s")


# -- liveness ------------------------------------------------------------------------------------


@operation(summary="Liveness (no token needed)", response=models.Health, public=True)
async def health(request: Request) -> Response:
    manager: Manager | None = getattr(request.app.state, "manager", None)
    return JSONResponse(
        {
            "status": "ok",
            "manager": "running" if manager is not None else "stopped",
            "replica": schemas.replica_of(request.app),
        }
    )


@operation(
    summary="Readiness: at least ready_min servers are healthy or recovered (no token needed)",
    response=models.Readiness,
    answers={503: models.Readiness},
    public=True,
)
async def ready(request: Request) -> Response:
    manager: Manager | None = getattr(request.app.state, "manager", None)
    counts = {status.value: 0 for status in ServerStatus}
    if manager is not None:
        for snapshot in manager.servers():
            counts[snapshot.status.value] += 1
    ready_min = _settings(request).ready_min
    usable = counts["healthy"] + counts["recovered"]
    is_ready = manager is not None and manager.accepting and usable >= ready_min
    body = {"ready": is_ready, "usable": usable, "ready_min": ready_min, "servers": counts}
    return JSONResponse(body, status_code=200 if is_ready else 503)


@operation(
    summary="The live status page (HTML; the token, if any, goes after # in its address)",
    response=str,
    media_type="text/html",
    public=True,
)
async def page(request: Request) -> Response:
    from .page import PAGE

    return Response(PAGE, media_type="text/html; charset=utf-8")


@operation(
    summary="Connection, invocation and server events as server-sent events (resumable with Last-Event-ID)",
    response=str,
    media_type="text/event-stream",
    events={
        "connection": models.ConnectionEvent,
        "invocation": models.InvocationEvent,
        "server": models.Server,
        "dropped": models.Dropped,
    },
    query=models.StreamQuery,
    errors=(404,),
)
async def event_stream(request: Request) -> Response:
    from starlette.responses import StreamingResponse

    from .stream import events

    manager = _manager(request)
    query = schemas.parse_query(models.StreamQuery, request)
    if query.server is not None:
        manager.connection_events(server=query.server, limit=0)  # 404 if it never existed
    last = request.headers.get("last-event-id", "").strip()
    last_event_id = int(last) if last.isdigit() else None
    return StreamingResponse(
        events(
            manager,
            server=query.server,
            last_event_id=last_event_id,
            replica=schemas.replica_of(request.app),
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@operation(summary="This document (OpenAPI 3.1)", response=dict[str, Any], public=True)
async def openapi(request: Request) -> Response:
    from .apidoc import openapi_document

    return JSONResponse(openapi_document())


@operation(
    summary="Prometheus metrics of the fleet (text exposition format)",
    response=str,
    media_type="text/plain",
)
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    _manager(request)
    registry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@operation(
    summary="Re-read the config file: added servers start, removed ones stop, changed ones restart",
    response=models.Reloaded,
    errors=(409, 422),
)
async def reload(request: Request) -> Response:
    _manager(request)
    reloader = getattr(request.app.state, "reloader", None)
    if reloader is None:
        raise ConflictError("this server was not started with a config file to re-read", field="config")
    plan = await reloader.reload()
    return JSONResponse(plan.summary())


# -- servers -------------------------------------------------------------------------------------


_SERVER_LINKS = {
    "get_server": Link("the server just registered"),
    "delete_server": Link("unregister it"),
    "health_check_one": Link("probe it"),
    "connect_one": Link("connect it"),
    "initialize_one": Link("handshake it"),
    "invalidate": Link("drop its session"),
    "invoke_tool": Link(
        "call a tool on it first",
        {"tool_name": "echo", "arguments": {"text": "hi"}, "preferred_servers": ["$response.body#/name"]},
    ),
}


@operation(summary="List servers", response=models.ServerList)
async def list_servers(request: Request) -> Response:
    manager = _manager(request)
    return JSONResponse({"servers": [schemas.server_dict(manager, s) for s in manager.servers()]})


@operation(
    summary="Register an mcpServers entry under a name (stdio needs --allow-stdio-registration)",
    status=201,
    response=models.Server,
    body=models.Registration,
    errors=(403, 409),
    links=_SERVER_LINKS,
)
async def register_server(request: Request) -> Response:
    manager = _manager(request)
    body = await _body(request)
    admission = _settings(request).admission
    if not admission.allow_private_urls:
        # Before parsing: an address is refused in every spelling, valid URL or not.
        await guard.check_url(body.get("url"))
    config = schemas.parse_registration(body)
    config = await admission.admit(config, url=False)
    snap = await persistence.add_server(request, manager, config, body)
    guard.logger.info(
        "registered %s (%s) for %s",
        config.name,
        config.transport.kind,
        request.client.host if request.client else "?",
        extra={"server": config.name},
    )
    return JSONResponse(
        schemas.server_dict(manager, snap),
        status_code=201,
        headers={"Location": str(request.url_for("server", name=config.name))},
    )


@operation(summary="One server", response=models.Server)
async def get_server(request: Request) -> Response:
    manager = _manager(request)
    return JSONResponse(schemas.server_dict(manager, manager.server(request.path_params["name"])))


@operation(summary="Unregister a server (its session and process are closed)", status=204)
async def delete_server(request: Request) -> Response:
    name = request.path_params["name"]
    await persistence.remove_server(request, _manager(request), name)
    guard.logger.info(
        "removed %s for %s", name, request.client.host if request.client else "?", extra={"server": name}
    )
    return Response(status_code=204)


def _fleet_action(action: str, *, one: bool, summary: str) -> Endpoint:
    """A handler running ``manager.<action>`` for the named server (``one``) or for all of them."""

    async def handler(request: Request) -> Response:
        manager = _manager(request)
        run = getattr(manager, action)
        if one:
            (snap,) = await run(request.path_params["name"])
            return JSONResponse(schemas.server_dict(manager, snap))
        snaps = await run()
        return JSONResponse({"servers": [schemas.server_dict(manager, s) for s in snaps]})

    handler.__name__ = f"{action}_{'one' if one else 'all'}"
    response = models.Server if one else models.ServerList
    return operation(summary=summary, response=response, errors=(504,))(handler)


health_check_one = _fleet_action("health_check", one=True, summary="Probe one server now")
health_check_all = _fleet_action("health_check", one=False, summary="Probe every server now")
initialize_one = _fleet_action("initialize", one=True, summary="Run one server's handshake again now")
initialize_all = _fleet_action("initialize", one=False, summary="Run every server's handshake again now")
connect_one = _fleet_action("connect", one=True, summary="Connect and probe one server now")
connect_all = _fleet_action("connect", one=False, summary="Connect and probe every server now")


# -- session controls ------------------------------------------------------------------------------


@operation(summary="Drop the session; the next use reconnects", response=models.Invalidated)
async def invalidate(request: Request) -> Response:
    manager = _manager(request)
    name = request.path_params["name"]
    was_active = manager.invalidate(name)
    return JSONResponse(
        {
            "server": name,
            "invalidated": was_active,
            "adapter_session": schemas.session_dict(manager, manager.server(name).session),
        }
    )


@operation(summary="Drop the session and open a new one now", response=models.Refreshed, errors=(409, 504))
async def refresh(request: Request) -> Response:
    manager = _manager(request)
    name = request.path_params["name"]
    if not manager.server(name).session.controls_available:
        raise ConflictError(f"session controls are not available for {name!r}", field="name")
    info = await manager.refresh(name)
    return JSONResponse({"server": name, "adapter_session": schemas.session_dict(manager, info)})


@operation(
    summary="Session diagnostics", response=models.SessionList, query=models.SessionQuery, errors=(404,)
)
async def adapter_sessions(request: Request) -> Response:
    manager = _manager(request)
    query = schemas.parse_query(models.SessionQuery, request)
    infos = manager.sessions(
        server=query.server, active_only=query.active_only, freshness=query.freshness, limit=query.limit
    )
    return JSONResponse({"sessions": [schemas.session_dict(manager, i) for i in infos]})


# -- event logs --------------------------------------------------------------------------------------


@operation(
    summary="Connection status changes, oldest first",
    response=models.ConnectionEventList,
    query=models.EventQuery,
    errors=(404,),
)
async def connection_events(request: Request) -> Response:
    query = schemas.parse_query(models.EventQuery, request)
    events = await persistence.connection_events(
        request,
        _manager(request),
        server=query.server,
        correlation_id=query.correlation_id,
        limit=query.limit,
    )
    replica = schemas.replica_of(request.app)
    return JSONResponse({"events": [schemas.event_dict(e, replica) for e in events]})


@operation(
    summary="Invocation lifecycle events, oldest first",
    response=models.InvocationEventList,
    query=models.InvocationEventQuery,
    errors=(404,),
)
async def invocation_events(request: Request) -> Response:
    query = schemas.parse_query(models.InvocationEventQuery, request)
    events = await persistence.invocation_events(
        request,
        _manager(request),
        server=query.server,
        method=query.method,
        request_id=query.request_id,
        correlation_id=query.correlation_id,
        limit=query.limit,
    )
    replica = schemas.replica_of(request.app)
    return JSONResponse({"events": [schemas.event_dict(e, replica) for e in events]})


# -- invocation ----------------------------------------------------------------------------------------


async def _invoke(request: Request, method: str, target: str, req: models.InvokeOptions) -> Response:
    manager = _manager(request)
    count: InvocationCount = request.app.state.invocations
    if count.now >= _settings(request).max_invocations:
        raise BusyError(f"{count.now} invocations are in flight: retry shortly", retry_after=1.0)
    count.now += 1
    try:
        outcome = await manager.invoke(
            method,
            target,
            getattr(req, "arguments", None),
            preferred=req.preferred_servers,
            failover=req.failover,
            timeout=req.timeout_seconds,
            attempt_timeout=req.attempt_timeout_seconds,
            request_id=req.request_id,
            hedge_after=req.hedge_after_seconds,
        )
    finally:
        count.now -= 1
    return JSONResponse(schemas.invocation_dict(outcome))


_INVOKE_ERRORS = (404, 504)
"""404: an unknown preferred server, or no server offers the target; 503 (always possible):
no candidate could answer; 504: the deadline passed."""


@operation(
    summary="Call a tool, failing over between the servers that offer it",
    response=models.ToolInvocation,
    body=models.InvokeTool,
    errors=_INVOKE_ERRORS,
)
async def invoke_tool(request: Request) -> Response:
    req = schemas.parse_body(models.InvokeTool, await _body(request))
    return await _invoke(request, "tools/call", req.tool_name, req)


@operation(
    summary="Read a resource, failing over between the servers that offer it",
    response=models.ResourceInvocation,
    body=models.InvokeResource,
    errors=_INVOKE_ERRORS,
)
async def invoke_resource(request: Request) -> Response:
    req = schemas.parse_body(models.InvokeResource, await _body(request))
    return await _invoke(request, "resources/read", req.uri, req)


@operation(
    summary="Get a prompt, failing over between the servers that offer it",
    response=models.PromptInvocation,
    body=models.InvokePrompt,
    errors=_INVOKE_ERRORS,
)
async def invoke_prompt(request: Request) -> Response:
    req = schemas.parse_body(models.InvokePrompt, await _body(request))
    return await _invoke(request, "prompts/get", req.name, req)


# -- catalogs ------------------------------------------------------------------------------------------


async def _catalog(request: Request, kind: str) -> Response:
    entries = await _manager(request).catalog(kind)
    return JSONResponse({kind: [schemas.catalog_entry_dict(e) for e in entries]})


@operation(summary="Tools across the fleet, each with the servers offering it", response=models.ToolList)
async def list_tools(request: Request) -> Response:
    return await _catalog(request, "tools")


@operation(summary="Resources across the fleet", response=models.ResourceList)
async def list_resources(request: Request) -> Response:
    return await _catalog(request, "resources")


@operation(summary="Prompts across the fleet", response=models.PromptList)
async def list_prompts(request: Request) -> Response:
    return await _catalog(request, "prompts")

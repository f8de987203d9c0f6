"""HTTP handlers: parse the input, make one manager call, serialize the answer.

Errors are not handled here: library exceptions propagate to the table in :mod:`web.errors`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from trio_mcp import Manager, ManagerClosedError, StdioTransport

from . import schemas
from .errors import ConflictError, ForbiddenError

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """What :func:`web.app.create_app` was told; kept on ``app.state.settings``."""

    allow_stdio: bool = False
    token: str | None = None
    max_body_bytes: int = 1_000_000


def _manager(request: Request) -> Manager:
    manager: Manager | None = getattr(request.app.state, "manager", None)
    if manager is None:
        raise ManagerClosedError("the manager is not running")
    return manager


def _settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


async def _body(request: Request) -> dict[str, Any]:
    return await schemas.read_json_object(request, _settings(request).max_body_bytes)


# -- liveness ------------------------------------------------------------------------------------


async def health(request: Request) -> Response:
    manager: Manager | None = getattr(request.app.state, "manager", None)
    return JSONResponse({"status": "ok", "manager": "running" if manager is not None else "stopped"})


async def openapi(request: Request) -> Response:
    from .openapi import openapi_document

    return JSONResponse(openapi_document())


# -- servers -------------------------------------------------------------------------------------


async def list_servers(request: Request) -> Response:
    manager = _manager(request)
    return JSONResponse({"servers": [schemas.server_dict(manager, s) for s in manager.servers()]})


async def register_server(request: Request) -> Response:
    manager = _manager(request)
    config = schemas.parse_registration(await _body(request))
    if isinstance(config.transport, StdioTransport) and not _settings(request).allow_stdio:
        raise ForbiddenError(
            "registering a stdio server over HTTP would run a command on this host; "
            "start the API with --allow-stdio-registration to permit it",
            field="command",
        )
    snap = await manager.add_server(config)
    return JSONResponse(
        schemas.server_dict(manager, snap),
        status_code=201,
        headers={"Location": str(request.url_for("server", name=config.name))},
    )


async def get_server(request: Request) -> Response:
    manager = _manager(request)
    return JSONResponse(schemas.server_dict(manager, manager.server(request.path_params["name"])))


async def delete_server(request: Request) -> Response:
    await _manager(request).remove_server(request.path_params["name"])
    return Response(status_code=204)


def _fleet_action(action: str, *, one: bool) -> Callable[[Request], Awaitable[Response]]:
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
    return handler


health_check_one = _fleet_action("health_check", one=True)
health_check_all = _fleet_action("health_check", one=False)
initialize_one = _fleet_action("initialize", one=True)
initialize_all = _fleet_action("initialize", one=False)
connect_one = _fleet_action("connect", one=True)
connect_all = _fleet_action("connect", one=False)


# -- session controls ------------------------------------------------------------------------------


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


async def refresh(request: Request) -> Response:
    manager = _manager(request)
    name = request.path_params["name"]
    if not manager.server(name).session.controls_available:
        raise ConflictError(f"session controls are not available for {name!r}", field="name")
    info = await manager.refresh(name)
    return JSONResponse({"server": name, "adapter_session": schemas.session_dict(manager, info)})


async def adapter_sessions(request: Request) -> Response:
    manager = _manager(request)
    infos = manager.sessions(
        server=schemas.query_str(request, "server"),
        active_only=schemas.query_bool(request, "active_only"),
        freshness=schemas.query_freshness(request),
        limit=schemas.query_limit(request),
    )
    return JSONResponse({"sessions": [schemas.session_dict(manager, i) for i in infos]})


# -- event logs --------------------------------------------------------------------------------------


async def connection_events(request: Request) -> Response:
    events = _manager(request).connection_events(
        server=schemas.query_str(request, "server"),
        correlation_id=schemas.query_str(request, "correlation_id"),
        limit=schemas.query_limit(request),
    )
    return JSONResponse({"events": [e.to_dict() for e in events]})


async def invocation_events(request: Request) -> Response:
    events = _manager(request).invocation_events(
        server=schemas.query_str(request, "server"),
        method=schemas.query_str(request, "method"),
        request_id=schemas.query_str(request, "request_id"),
        correlation_id=schemas.query_str(request, "correlation_id"),
        limit=schemas.query_limit(request),
    )
    return JSONResponse({"events": [e.to_dict() for e in events]})


# -- invocation ----------------------------------------------------------------------------------------


async def _invoke(request: Request, method: str, target_key: str) -> Response:
    manager = _manager(request)
    req = schemas.parse_invoke(await _body(request), target_key, string_arguments=method == "prompts/get")
    outcome = await manager.invoke(
        method,
        req.target,
        req.arguments,
        preferred=req.preferred,
        failover=req.failover,
        timeout=req.timeout,
        attempt_timeout=req.attempt_timeout,
        request_id=req.request_id,
    )
    return JSONResponse(schemas.invocation_dict(outcome))


async def invoke_tool(request: Request) -> Response:
    return await _invoke(request, "tools/call", "tool_name")


async def invoke_resource(request: Request) -> Response:
    return await _invoke(request, "resources/read", "uri")


async def invoke_prompt(request: Request) -> Response:
    return await _invoke(request, "prompts/get", "name")


# -- catalogs ------------------------------------------------------------------------------------------


async def _catalog(request: Request, kind: str) -> Response:
    entries = await _manager(request).catalog(kind)
    return JSONResponse({kind: [schemas.catalog_entry_dict(e) for e in entries]})


async def list_tools(request: Request) -> Response:
    return await _catalog(request, "tools")


async def list_resources(request: Request) -> Response:
    return await _catalog(request, "resources")


async def list_prompts(request: Request) -> Response:
    return await _catalog(request, "prompts")

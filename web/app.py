"""``create_app(manager)``: the route table.

``app`` is a ready-made application for ``hypercorn -k trio web.app:app``: its lifespan opens
a manager on the fleet in ``$TRIO_MCP_CONFIG`` (an ``mcpServers`` JSON file), or on the default
demo fleet, and it honours ``$TRIO_MCP_TOKEN`` and ``$TRIO_MCP_ALLOW_PRIVATE_URLS``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from trio_mcp import Manager, ServerConfig, open_manager, parse_mcp_servers
from trio_mcp._default_fleet import default_fleet
from trio_mcp.metrics import FleetCollector

from . import routes
from .errors import exception_handlers
from .guard import Admission
from .middleware import GuardMiddleware, RateLimit, TraceContextMiddleware
from .routes import OPERATIONS, ApiSettings, InvocationCount

API_PREFIX = "/api/v1/mcp"
DEFAULT_MAX_BODY_BYTES = 1_000_000


class ApiRoute(Route):
    """One path and an endpoint per method: a 405 names every method the path takes."""

    def __init__(self, path: str, endpoints: Mapping[str, routes.Endpoint], *, name: str | None = None):
        self.endpoints = dict(endpoints)

        async def by_method(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await self.endpoints[method](request)

        first = next(iter(self.endpoints.values()))
        super().__init__(path, by_method, methods=list(self.endpoints), name=name or first.__name__)


def _api(path: str, endpoint: routes.Endpoint, methods: list[str], name: str | None = None) -> Route:
    return ApiRoute(API_PREFIX + path, dict.fromkeys(methods, endpoint), name=name)


ROUTES: list[BaseRoute] = [
    ApiRoute("/", {"GET": routes.page}),
    ApiRoute("/api/v1/health", {"GET": routes.health}),
    ApiRoute("/api/v1/ready", {"GET": routes.ready}),
    ApiRoute("/openapi.json", {"GET": routes.openapi}),
    ApiRoute("/metrics", {"GET": routes.metrics}),
    _api("/openapi.json", routes.openapi, ["GET"]),
    # Fixed paths before /servers/{name} so that "health-check" is never taken for a name.
    ApiRoute(f"{API_PREFIX}/servers", {"GET": routes.list_servers, "POST": routes.register_server}),
    _api("/servers/health-check", routes.health_check_all, ["POST"]),
    _api("/servers/initialize", routes.initialize_all, ["POST"]),
    _api("/servers/connect", routes.connect_all, ["POST"]),
    ApiRoute(
        f"{API_PREFIX}/servers/{{name}}",
        {"GET": routes.get_server, "DELETE": routes.delete_server},
        name="server",
    ),
    _api("/servers/{name}/health-check", routes.health_check_one, ["POST"]),
    _api("/servers/{name}/initialize", routes.initialize_one, ["POST"]),
    _api("/servers/{name}/connect", routes.connect_one, ["POST"]),
    _api("/servers/{name}/adapter/invalidate", routes.invalidate, ["POST"]),
    _api("/servers/{name}/adapter/refresh", routes.refresh, ["POST"]),
    _api("/reload", routes.reload, ["POST"]),
    _api("/adapter-sessions", routes.adapter_sessions, ["GET"]),
    _api("/events", routes.connection_events, ["GET"]),
    _api("/events/stream", routes.event_stream, ["GET"]),
    _api("/invocation-events", routes.invocation_events, ["GET"]),
    _api("/invoke/tool", routes.invoke_tool, ["POST"]),
    _api("/invoke/resource", routes.invoke_resource, ["POST"]),
    _api("/invoke/prompt", routes.invoke_prompt, ["POST"]),
    _api("/tools", routes.list_tools, ["GET"]),
    _api("/resources", routes.list_resources, ["GET"]),
    _api("/prompts", routes.list_prompts, ["GET"]),
]

PUBLIC_PATHS = frozenset(
    route.path
    for route in ROUTES
    if isinstance(route, ApiRoute) and all(OPERATIONS[e].public for e in route.endpoints.values())
)
"""Answered without a token: liveness and the API's description."""


Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]


def create_app(
    manager: Manager | None,
    *,
    allow_stdio: bool = False,
    allow_stdio_commands: Sequence[str] = (),
    allow_private_urls: bool = False,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout: float = 10.0,
    ready_min: int = 1,
    max_invocations: int = 256,
    rate_limit: str | None = None,
    allowed_hosts: Collection[str] | None = None,
    allowed_origins: Collection[str] = (),
    lifespan: Lifespan | None = None,
) -> Starlette:
    """The HTTP API over an open ``manager``.

    Args:
        manager: an open manager (``async with open_manager(...)``). ``None`` when ``lifespan``
            sets ``app.state.manager`` itself.
        allow_stdio: allow ``POST /servers`` to register any stdio server (runs commands on
            this host).
        allow_stdio_commands: allow stdio registrations whose argv starts with one of these
            (shell words, e.g. ``"python -m trio_mcp.demo_server"``).
        allow_private_urls: allow registering HTTP servers on loopback, private and link-local
            addresses (refused with 403 otherwise: the API would reach inside this network).
        token: require ``Authorization: Bearer <token>`` on every endpoint but liveness,
            readiness, the status page and the API's description.
        max_body_bytes: larger request bodies are refused with 413.
        body_timeout: a request body that takes longer to arrive is refused with 408.
        ready_min: ``GET /api/v1/ready`` is 200 when at least this many servers are healthy
            or recovered.
        max_invocations: invocations served at once; more are refused with 503 and
            ``Retry-After`` rather than queued.
        rate_limit: ``"N/s"``, ``"N/m"`` or ``"N/h"`` per token (or client address); more are
            refused with 429 and ``Retry-After``. ``None``: no limit.
        allowed_hosts: the ``Host`` names this API answers for (400 otherwise); ``None``: any.
        allowed_origins: browser origins (``https://app.example``) allowed besides this
            server's own; a request from any other page is refused with 403.
        lifespan: an optional Starlette lifespan.
    """
    for name, value, low in (
        ("max_body_bytes", max_body_bytes, 1),
        ("ready_min", ready_min, 0),
        ("max_invocations", max_invocations, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}")
    if not (isinstance(body_timeout, int | float) and body_timeout > 0):
        raise ValueError("body_timeout must be a positive number of seconds")
    limit = RateLimit.parse(rate_limit) if rate_limit is not None else None
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(TraceContextMiddleware),
            Middleware(
                GuardMiddleware,
                token=token,
                max_body_bytes=max_body_bytes,
                public_paths=PUBLIC_PATHS,
                allowed_hosts=None if allowed_hosts is None else frozenset(allowed_hosts),
                allowed_origins=frozenset(allowed_origins),
                rate_limit=limit,
            ),
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    attach(app, manager)
    app.state.settings = ApiSettings(
        admission=Admission.from_flags(
            allow_stdio=allow_stdio,
            allow_stdio_commands=allow_stdio_commands,
            allow_private_urls=allow_private_urls,
        ),
        token=token,
        max_body_bytes=max_body_bytes,
        body_timeout=float(body_timeout),
        ready_min=ready_min,
        max_invocations=max_invocations,
    )
    app.state.invocations = InvocationCount()
    return app


def attach(app: Starlette, manager: Manager | None) -> None:
    """Serve ``manager`` from ``app`` (``None``: stop serving), with a metrics registry of its own."""
    app.state.manager = manager
    registry = CollectorRegistry(auto_describe=True)
    if manager is not None:
        registry.register(FleetCollector(manager))
    app.state.metrics = registry


def fleet_from_env() -> list[ServerConfig]:
    """The servers in ``$TRIO_MCP_CONFIG`` (an ``mcpServers`` JSON file), else the demo fleet."""
    path = os.environ.get("TRIO_MCP_CONFIG")
    if path:
        return parse_mcp_servers(Path(path).read_text(encoding="utf-8"))
    return default_fleet()


@asynccontextmanager
async def _manager_lifespan(app: Starlette) -> AsyncIterator[None]:
    async with open_manager(fleet_from_env()) as manager:
        attach(app, manager)
        try:
            yield
        finally:
            attach(app, None)


app = create_app(
    None,
    token=os.environ.get("TRIO_MCP_TOKEN") or None,
    allow_private_urls=os.environ.get("TRIO_MCP_ALLOW_PRIVATE_URLS", "") not in ("", "0", "false", "no"),
    lifespan=_manager_lifespan,
)

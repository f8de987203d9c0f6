"""Client features: answering the requests servers send us (elicitation, sampling, roots).

A :class:`ClientFeatures` is handed to :func:`trio_mcp.open_manager` (``client=``). It turns
into the keyword arguments of every SDK ``ClientSession`` the manager opens; the session then
advertises the matching capabilities in its handshake. Handlers are called with the name of
the server that asked and the request's parameters.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from mcp_types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    CreateMessageResultWithTools,
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    Implementation,
    ListRootsResult,
    Root,
)

from ._exceptions import ConfigError

ElicitationHandler: TypeAlias = Callable[
    [str | None, ElicitRequestParams], Awaitable[ElicitResult | ErrorData]
]
"""``async def handler(server, params) -> ElicitResult | ErrorData``."""
SamplingHandler: TypeAlias = Callable[
    [str | None, CreateMessageRequestParams],
    Awaitable[CreateMessageResult | CreateMessageResultWithTools | ErrorData],
]
"""``async def handler(server, params) -> CreateMessageResult | ErrorData``."""
RootsProvider: TypeAlias = Callable[[str | None], Awaitable[Sequence[Root]]]
"""``async def roots(server) -> [Root, ...]``: roots computed per request."""

session_servers: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
"""SDK ``ClientSession`` -> the name of the server it talks to; the supervisor registers each
session it opens, and the callbacks read it to tell the handlers which server asked."""

INTERNAL_ERROR = -32603


def apply_schema_defaults(schema: Mapping[str, Any], content: Mapping[str, Any] | None) -> dict[str, Any]:
    """``content`` with every top-level property's JSON-schema ``default`` filled in where the
    property is missing (values the user gave are kept, ``None`` included)."""
    out = dict(content or {})
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for name, prop in properties.items():
            if name not in out and isinstance(prop, Mapping) and "default" in prop:
                out[name] = prop["default"]
    return out


def _to_root(value: Root | str) -> Root:
    if isinstance(value, Root):
        return value
    return Root.model_validate({"uri": value})


@dataclass(frozen=True, kw_only=True, eq=False)
class ClientFeatures:
    """What this client answers when a server asks it something.

    Attributes:
        elicitation: answers ``elicitation/create`` (form and URL mode). ``None``: the
            capability is not advertised.
        apply_elicitation_defaults: fill every property the handler left out of an accepted
            form with the schema's ``default`` (SEP-1034).
        sampling: answers ``sampling/createMessage``.
        roots: the roots offered to servers (``file://`` URIs or ``Root`` objects), or an
            async callable computing them per request. ``None``: not advertised.
        client_info: the ``clientInfo`` sent in the handshake (default: the SDK's).
        servers: per-server overrides, by server name: that server gets these features
            instead (a feature it does not set falls back to this object's).
    """

    elicitation: ElicitationHandler | None = None
    apply_elicitation_defaults: bool = True
    sampling: SamplingHandler | None = None
    roots: Sequence[Root | str] | RootsProvider | None = None
    client_info: Implementation | None = None
    servers: Mapping[str, ClientFeatures] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("elicitation", "sampling"):
            value = getattr(self, key)
            if value is not None and not callable(value):
                raise ConfigError("must be an async callable", key=f"client.{key}")
        if self.roots is not None and not callable(self.roots):
            if isinstance(self.roots, str):
                raise ConfigError("must be a list of file:// URIs", key="client.roots")
            try:
                object.__setattr__(self, "roots", tuple(_to_root(r) for r in self.roots))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"invalid root: {exc}", key="client.roots") from None
        if self.client_info is not None and not isinstance(self.client_info, Implementation):
            raise ConfigError("must be an mcp_types.Implementation", key="client.client_info")
        if not isinstance(self.servers, Mapping) or not all(
            isinstance(v, ClientFeatures) for v in self.servers.values()
        ):
            raise ConfigError("must map server names to ClientFeatures", key="client.servers")
        object.__setattr__(self, "servers", dict(self.servers))

    # -- per-server resolution ----------------------------------------------------------------

    def for_server(self, server: str | None) -> ClientFeatures:
        """The features that apply to ``server`` (its override merged over these)."""
        override = self.servers.get(server) if server is not None else None
        if override is None:
            return self
        return ClientFeatures(
            elicitation=override.elicitation or self.elicitation,
            apply_elicitation_defaults=override.apply_elicitation_defaults,
            sampling=override.sampling or self.sampling,
            roots=override.roots if override.roots is not None else self.roots,
            client_info=override.client_info or self.client_info,
        )

    def _any(self, attr: str) -> bool:
        return getattr(self, attr) is not None or any(
            getattr(o, attr) is not None for o in self.servers.values()
        )

    # -- the SDK callbacks --------------------------------------------------------------------

    def session_options(self) -> dict[str, Any]:
        """Keyword arguments for ``mcp.ClientSession``."""

        def server_of(context: Any) -> str | None:
            session = getattr(context, "session", None)
            return session_servers.get(session) if session is not None else None

        options: dict[str, Any] = {}
        if self.client_info is not None:
            options["client_info"] = self.client_info

        if self._any("elicitation"):

            async def elicitation_callback(
                context: Any, params: ElicitRequestParams
            ) -> ElicitResult | ErrorData:
                server = server_of(context)
                features = self.for_server(server)
                if features.elicitation is None:
                    return ErrorData(
                        code=INTERNAL_ERROR, message="elicitation is not supported for this server"
                    )
                result = await features.elicitation(server, params)
                if (
                    features.apply_elicitation_defaults
                    and isinstance(result, ElicitResult)
                    and result.action == "accept"
                    and isinstance(params, ElicitRequestFormParams)
                ):
                    schema = params.requested_schema
                    raw_schema = schema if isinstance(schema, Mapping) else schema.model_dump(by_alias=True)
                    content = apply_schema_defaults(raw_schema, result.content)
                    result = result.model_copy(update={"content": content})
                return result

            options["elicitation_callback"] = elicitation_callback

        if self._any("sampling"):

            async def sampling_callback(
                context: Any, params: CreateMessageRequestParams
            ) -> CreateMessageResult | CreateMessageResultWithTools | ErrorData:
                server = server_of(context)
                features = self.for_server(server)
                if features.sampling is None:
                    return ErrorData(code=INTERNAL_ERROR, message="sampling is not supported for this server")
                return await features.sampling(server, params)

            options["sampling_callback"] = sampling_callback

        if self._any("roots"):

            async def list_roots_callback(context: Any) -> ListRootsResult | ErrorData:
                server = server_of(context)
                roots = self.for_server(server).roots
                if roots is None:
                    return ErrorData(code=INTERNAL_ERROR, message="roots are not offered to this server")
                if callable(roots):
                    listed = [_to_root(r) for r in await roots(server)]
                else:
                    listed = [_to_root(r) for r in roots]
                return ListRootsResult(roots=listed)

            options["list_roots_callback"] = list_roots_callback

        return options

    def __repr__(self) -> str:
        parts = [
            name
            for name, on in (
                ("elicitation", self.elicitation is not None),
                ("sampling", self.sampling is not None),
                ("roots", self.roots is not None),
            )
            if on
        ]
        extra = f" overrides={sorted(self.servers)}" if self.servers else ""
        return f"<ClientFeatures {', '.join(parts) or 'none'}{extra}>"

"""Whether a request that may have executed may be sent to another server (pure)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # a type only: keep this module free of I/O imports
    from ._config import ServerConfig

FailoverMode = Literal["safe", "always", "never"]
"""``safe``: fail over unless a side effect may repeat; ``always``; ``never``: one server only."""

FAILOVER_MODES: tuple[FailoverMode, ...] = ("safe", "always", "never")

READ_METHODS = frozenset(
    {
        "resources/read",
        "prompts/get",
        "tools/list",
        "resources/list",
        "prompts/list",
        "resources/templates/list",
    }
)
"""Methods without side effects: repeating them elsewhere is always safe."""


def may_repeat(method: str, target: str | None, config: ServerConfig, tool: Any, mode: FailoverMode) -> bool:
    """Whether a request *sent* to the server of ``config`` (so it may have executed there) may
    be sent to another server.

    Args:
        method: the JSON-RPC method.
        target: the tool name, resource URI or prompt name.
        config: the configuration of the server the request was sent to.
        tool: that server's ``Tool`` description of ``target`` (``None``: not known).
        mode: the caller's failover mode.
    """
    if mode == "always":
        return True
    if mode == "never":
        return False
    if method in READ_METHODS:
        return True
    if method != "tools/call":
        return False
    if config.idempotent or (target is not None and target in config.idempotent_tools):
        return True
    if config.trusted and tool is not None and tool.annotations is not None:
        return bool(tool.annotations.read_only_hint or tool.annotations.idempotent_hint)
    return False

"""trio_mcp: a Trio-native manager for fleets of MCP servers.

Open a manager with :func:`open_manager`; it runs one supervisor task per server that owns
the server's session, probes its health and reconnects it with backoff. Invoke tools,
resources and prompts with failover that never runs a side effect twice.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._attempt import Attempt as Attempt
    from ._attempt import Budget as Budget
    from ._attempt import Era as Era
    from ._attempt import InvocationResult as InvocationResult
    from ._attempt import Outcome as Outcome
    from ._attempt import Stage as Stage
    from ._auth import BearerAuth as BearerAuth
    from ._auth import ClientCredentialsAuth as ClientCredentialsAuth
    from ._auth import FileTokenStore as FileTokenStore
    from ._auth import IdentityAssertionAuth as IdentityAssertionAuth
    from ._auth import InMemoryTokenStore as InMemoryTokenStore
    from ._auth import OAuthAuth as OAuthAuth
    from ._auth import PrivateKeyJwtAuth as PrivateKeyJwtAuth
    from ._auth import TokenStore as TokenStore
    from ._backoff import BackoffPolicy as BackoffPolicy
    from ._backoff import RandomSource as RandomSource
    from ._catalog import CatalogEntry as CatalogEntry
    from ._client import ClientFeatures as ClientFeatures
    from ._client import apply_schema_defaults as apply_schema_defaults
    from ._config import HttpTransport as HttpTransport
    from ._config import MemoryTransport as MemoryTransport
    from ._config import ServerConfig as ServerConfig
    from ._config import ServerPolicy as ServerPolicy
    from ._config import StdioTransport as StdioTransport
    from ._config import parse_mcp_servers as parse_mcp_servers
    from ._config import parse_server_entry as parse_server_entry
    from ._events import ConnectionEvent as ConnectionEvent
    from ._events import EventStream as EventStream
    from ._events import InvocationEvent as InvocationEvent
    from ._events import InvocationFinished as InvocationFinished
    from ._events import StateChange as StateChange
    from ._exceptions import ConfigError as ConfigError
    from ._exceptions import HandshakeError as HandshakeError
    from ._exceptions import HandshakeTimeoutError as HandshakeTimeoutError
    from ._exceptions import InvalidResultError as InvalidResultError
    from ._exceptions import InvocationFailedError as InvocationFailedError
    from ._exceptions import ManagerClosedError as ManagerClosedError
    from ._exceptions import NotOfferedError as NotOfferedError
    from ._exceptions import RequestRejectedError as RequestRejectedError
    from ._exceptions import ServerExistsError as ServerExistsError
    from ._exceptions import ServerUnavailableError as ServerUnavailableError
    from ._exceptions import SessionError as SessionError
    from ._exceptions import TrioMcpError as TrioMcpError
    from ._exceptions import UnknownServerError as UnknownServerError
    from ._failover import FailoverMode as FailoverMode
    from ._failure import ERROR_CATEGORIES as ERROR_CATEGORIES
    from ._failure import ErrorCategory as ErrorCategory
    from ._invoke import ProgressCallback as ProgressCallback
    from ._manager import Manager as Manager
    from ._manager import open_manager as open_manager
    from ._session import Connection as Connection
    from ._state import CapabilitySnapshot as CapabilitySnapshot
    from ._state import ConnectionState as ConnectionState
    from ._state import Freshness as Freshness
    from ._state import ServerSnapshot as ServerSnapshot
    from ._state import ServerState as ServerState
    from ._state import ServerStatus as ServerStatus
    from ._state import SessionInfo as SessionInfo

__version__ = "0.1.0"

# Where each public name lives. A name is imported on first use, so `import trio_mcp` (and
# so the `trio-mcp` command, whose entry point is in this package) loads none of the SDK.
_EXPORTS: dict[str, str] = {
    "Attempt": "._attempt",
    "Budget": "._attempt",
    "Era": "._attempt",
    "InvocationResult": "._attempt",
    "Outcome": "._attempt",
    "Stage": "._attempt",
    "BearerAuth": "._auth",
    "ClientCredentialsAuth": "._auth",
    "FileTokenStore": "._auth",
    "IdentityAssertionAuth": "._auth",
    "InMemoryTokenStore": "._auth",
    "OAuthAuth": "._auth",
    "PrivateKeyJwtAuth": "._auth",
    "TokenStore": "._auth",
    "BackoffPolicy": "._backoff",
    "RandomSource": "._backoff",
    "CatalogEntry": "._catalog",
    "ClientFeatures": "._client",
    "apply_schema_defaults": "._client",
    "HttpTransport": "._config",
    "MemoryTransport": "._config",
    "ServerConfig": "._config",
    "ServerPolicy": "._config",
    "StdioTransport": "._config",
    "parse_mcp_servers": "._config",
    "parse_server_entry": "._config",
    "ConnectionEvent": "._events",
    "EventStream": "._events",
    "InvocationEvent": "._events",
    "InvocationFinished": "._events",
    "StateChange": "._events",
    "ConfigError": "._exceptions",
    "HandshakeError": "._exceptions",
    "HandshakeTimeoutError": "._exceptions",
    "InvalidResultError": "._exceptions",
    "InvocationFailedError": "._exceptions",
    "ManagerClosedError": "._exceptions",
    "NotOfferedError": "._exceptions",
    "RequestRejectedError": "._exceptions",
    "ServerExistsError": "._exceptions",
    "ServerUnavailableError": "._exceptions",
    "SessionError": "._exceptions",
    "TrioMcpError": "._exceptions",
    "UnknownServerError": "._exceptions",
    "FailoverMode": "._failover",
    "ERROR_CATEGORIES": "._failure",
    "ErrorCategory": "._failure",
    "ProgressCallback": "._invoke",
    "Manager": "._manager",
    "open_manager": "._manager",
    "Connection": "._session",
    "CapabilitySnapshot": "._state",
    "ConnectionState": "._state",
    "Freshness": "._state",
    "ServerSnapshot": "._state",
    "ServerState": "._state",
    "ServerStatus": "._state",
    "SessionInfo": "._state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    obj = getattr(_importlib.import_module(module, __name__), name)
    # Show the public name in reprs and tracebacks.
    if getattr(obj, "__module__", "").startswith("trio_mcp._"):
        try:
            obj.__module__ = "trio_mcp"
        except (AttributeError, TypeError):
            pass
    globals()[name] = obj
    return obj


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

"""trio_mcp: a Trio-native manager for fleets of MCP servers.

Open a manager with :func:`open_manager`; it runs one supervisor task per server that owns
the server's session, probes its health and reconnects it with backoff. Invoke tools,
resources and prompts with failover that never runs a side effect twice.
"""

from ._attempt import Attempt as Attempt
from ._attempt import Budget as Budget
from ._attempt import Era as Era
from ._attempt import InvocationResult as InvocationResult
from ._attempt import Outcome as Outcome
from ._attempt import Stage as Stage
from ._auth import BearerAuth as BearerAuth
from ._auth import ClientCredentialsAuth as ClientCredentialsAuth
from ._auth import FileTokenStore as FileTokenStore
from ._auth import InMemoryTokenStore as InMemoryTokenStore
from ._auth import OAuthAuth as OAuthAuth
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

__all__ = [
    "ERROR_CATEGORIES",
    "Attempt",
    "BackoffPolicy",
    "BearerAuth",
    "Budget",
    "CapabilitySnapshot",
    "CatalogEntry",
    "ClientCredentialsAuth",
    "ClientFeatures",
    "ConfigError",
    "Connection",
    "ConnectionEvent",
    "ConnectionState",
    "Era",
    "ErrorCategory",
    "EventStream",
    "FailoverMode",
    "FileTokenStore",
    "Freshness",
    "HandshakeError",
    "HandshakeTimeoutError",
    "HttpTransport",
    "InMemoryTokenStore",
    "InvocationEvent",
    "InvocationFailedError",
    "InvocationFinished",
    "InvocationResult",
    "Manager",
    "ManagerClosedError",
    "MemoryTransport",
    "NotOfferedError",
    "OAuthAuth",
    "Outcome",
    "ProgressCallback",
    "RandomSource",
    "RequestRejectedError",
    "ServerConfig",
    "ServerExistsError",
    "ServerPolicy",
    "ServerSnapshot",
    "ServerState",
    "ServerStatus",
    "ServerUnavailableError",
    "SessionError",
    "SessionInfo",
    "Stage",
    "StateChange",
    "StdioTransport",
    "TokenStore",
    "TrioMcpError",
    "UnknownServerError",
    "apply_schema_defaults",
    "open_manager",
    "parse_mcp_servers",
    "parse_server_entry",
]

# Show the public name in reprs and tracebacks.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("trio_mcp._"):
        try:
            _obj.__module__ = "trio_mcp"
        except (AttributeError, TypeError):
            pass
del _name, _obj

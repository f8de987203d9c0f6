"""State that survives restarts: the registry of servers registered over the API and the
event history, in SQLite (one file, embedded) or PostgreSQL (shared by replicas).

::

    async with open_store("sqlite:///var/lib/trio-mcp/state.db") as store:
        ...

- :class:`Store`: the interface (:func:`open_store` opens one and migrates its schema).
- :class:`Registry`: API registrations, committed before they are answered, followed by every
  process on the same store.
- :class:`EventWriter`: the one task that writes the event history, in batches, never
  blocking the invocation path; :class:`History` reads it back.

Exceptions::

    TrioMcpError
    ├── StoreError                      the store cannot be opened or used as asked
    │   ├── StoreUnavailableError       it cannot answer now (down, locked, too slow)
    │   └── SecretKeyRequiredError      secrets to store and no TRIO_MCP_SECRET_KEY
    └── ServerExistsError
        └── ReservedNameError           the name belongs to a server of the config file
"""

from ._base import RegistrySnapshot as RegistrySnapshot
from ._base import Store as Store
from ._base import StoredRegistration as StoredRegistration
from ._errors import SECRET_KEY_ENV as SECRET_KEY_ENV
from ._errors import ReservedNameError as ReservedNameError
from ._errors import SecretKeyRequiredError as SecretKeyRequiredError
from ._errors import StoreError as StoreError
from ._errors import StoreUnavailableError as StoreUnavailableError
from ._history import EventWriter as EventWriter
from ._history import History as History
from ._history import HistoryStatistics as HistoryStatistics
from ._location import DEFAULT_RETENTION as DEFAULT_RETENTION
from ._location import Retention as Retention
from ._location import StateLocation as StateLocation
from ._location import default_state_dir as default_state_dir
from ._location import parse_retention as parse_retention
from ._location import parse_state as parse_state
from ._metrics import HistoryCollector as HistoryCollector
from ._open import open_store as open_store
from ._registry import Admit as Admit
from ._registry import LoadedRegistry as LoadedRegistry
from ._registry import Registry as Registry
from ._registry import SyncPlan as SyncPlan
from ._registry import load_registry as load_registry
from ._registry import plan_sync as plan_sync
from ._secrets import SecretBox as SecretBox

__all__ = (
    "DEFAULT_RETENTION",
    "SECRET_KEY_ENV",
    "EventWriter",
    "History",
    "HistoryCollector",
    "HistoryStatistics",
    "LoadedRegistry",
    "Registry",
    "RegistrySnapshot",
    "ReservedNameError",
    "Retention",
    "SecretBox",
    "SecretKeyRequiredError",
    "StateLocation",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "StoredRegistration",
    "SyncPlan",
    "default_state_dir",
    "load_registry",
    "open_store",
    "parse_retention",
    "parse_state",
    "plan_sync",
)

# Show the public name in reprs and tracebacks.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj

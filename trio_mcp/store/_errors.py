"""The exceptions of the state store (see the tree in :mod:`trio_mcp.store`)."""

from __future__ import annotations

from collections.abc import Iterable

from .._exceptions import ServerExistsError, TrioMcpError, quote

SECRET_KEY_ENV = "TRIO_MCP_SECRET_KEY"
"""The environment variable holding the Fernet key(s) that encrypt stored secrets."""


class StoreError(TrioMcpError):
    """Raised when the state store cannot be opened or used as asked: a file that is not a
    database, a schema newer than this program, a secret key that is not a Fernet key, a
    stored secret that the key does not decrypt."""


class StoreUnavailableError(StoreError):
    """Raised when the state store cannot answer now: the database is down, unreachable,
    locked by another process or too slow. Nothing was changed by the call that raised it."""

    def __init__(self, reason: str, *, doing: str = "") -> None:
        self.reason = reason
        self.doing = doing
        what = f" ({doing})" if doing else ""
        super().__init__(f"the state store is unavailable{what}: {reason}")


class SecretKeyRequiredError(StoreError):
    """Raised when a registration carries secrets (``headers``, ``env``, ``auth``) and no
    ``TRIO_MCP_SECRET_KEY`` is set to encrypt them: they are never stored in clear text."""

    def __init__(self, fields: Iterable[str]) -> None:
        self.fields = tuple(fields)
        self.field = self.fields[0] if self.fields else None
        listed = " and ".join(f"'{f}'" for f in self.fields)
        super().__init__(
            f"this registration carries secrets ({listed}) and {SECRET_KEY_ENV} is not set, so they "
            f"would be stored in clear text: start the server with {SECRET_KEY_ENV} set to a Fernet "
            "key to store them encrypted, or register without them"
        )


class ReservedNameError(ServerExistsError):
    """Raised when registering, over the API, a name that a server of the config file uses."""

    def __init__(self, name: str) -> None:
        self.name = name
        TrioMcpError.__init__(
            self, f"the name {quote(name)} belongs to a server of the config file: it cannot be registered"
        )

"""Authorization for HTTP servers: a static bearer token, or OAuth 2.1 through the SDK.

:class:`BearerAuth` sends ``Authorization: Bearer <token>`` with every request.
:class:`OAuthAuth` runs the ``mcp`` SDK's ``OAuthClientProvider``: protected-resource and
authorization-server metadata discovery, dynamic client registration (or a pre-registered
client, or a client ID metadata document), the authorization-code grant with PKCE, and token
refresh. :class:`ClientCredentialsAuth` runs the SDK's client-credentials provider (machine
to machine, no user). Tokens and client registrations live in a :class:`TokenStore`:
:class:`InMemoryTokenStore` (the default) or :class:`FileTokenStore`.

No secret appears in a ``repr``: tokens, client secrets and stores print as ``***``.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import trio

from ._exceptions import ConfigError

if TYPE_CHECKING:
    import httpx2
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthToken

RedirectHandler = Callable[[str], Awaitable[None]]
"""Called with the authorization URL the user (or a headless agent) must visit."""
CallbackHandler = Callable[[], Awaitable["AuthorizationCodeResult"]]
"""Returns the ``code`` and ``state`` the authorization server redirected back with."""


@runtime_checkable
class TokenStore(Protocol):
    """Where OAuth tokens and the client registration of one server are kept.

    The same protocol as the SDK's ``mcp.client.auth.TokenStorage``.
    """

    async def get_tokens(self) -> OAuthToken | None: ...

    async def set_tokens(self, tokens: OAuthToken) -> None: ...

    async def get_client_info(self) -> OAuthClientInformationFull | None: ...

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None: ...


class InMemoryTokenStore:
    """Tokens and client registration kept in this process (lost when it exits)."""

    def __init__(self) -> None:
        self._tokens: OAuthToken | None = None
        self._client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self._tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self._tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self._client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self._client_info = client_info

    def clear(self) -> None:
        self._tokens = None
        self._client_info = None

    def __repr__(self) -> str:
        return f"<InMemoryTokenStore tokens={'***' if self._tokens else None}>"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_FILE_STORE_LOCK = threading.Lock()
"""Held (in a worker thread) across each read-modify-write of a :class:`FileTokenStore` file."""


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


class FileTokenStore:
    """Tokens and client registration kept in a JSON file (mode 0600), written atomically.

    One file may hold several servers: pass a distinct ``key`` for each. The file is read and
    written in a worker thread, never on the event loop.
    """

    def __init__(self, path: str | os.PathLike[str], *, key: str = "default") -> None:
        self.path = Path(path)
        self.key = key

    def _entry(self) -> dict[str, Any]:
        entry = _read_json(self.path).get(self.key)
        return entry if isinstance(entry, dict) else {}

    def _update(self, name: str, value: dict[str, Any]) -> None:
        # Read-modify-write: serialized, as stores of other keys may share the file.
        with _FILE_STORE_LOCK:
            data = _read_json(self.path)
            entry = data.get(self.key)
            if not isinstance(entry, dict):
                entry = {}
            entry[name] = value
            data[self.key] = entry
            _write_json(self.path, data)

    async def _get(self, name: str) -> Any:
        entry = await trio.to_thread.run_sync(self._entry)
        return entry.get(name)

    async def _set(self, name: str, value: dict[str, Any]) -> None:
        # Shielded, as the write was when it ran on the event loop: tokens just issued (a
        # rotated refresh token) are not lost to a cancellation pending at this call.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._update, name, value)

    async def get_tokens(self) -> OAuthToken | None:
        from mcp.shared.auth import OAuthToken

        raw = await self._get("tokens")
        if not isinstance(raw, dict):
            return None
        try:
            return OAuthToken.model_validate(raw)
        except ValueError:
            return None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        await self._set("tokens", tokens.model_dump(mode="json", exclude_none=True))

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        from mcp.shared.auth import OAuthClientInformationFull

        raw = await self._get("client_info")
        if not isinstance(raw, dict):
            return None
        try:
            return OAuthClientInformationFull.model_validate(raw)
        except ValueError:
            return None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        await self._set("client_info", client_info.model_dump(mode="json", exclude_none=True))

    def __repr__(self) -> str:
        return f"<FileTokenStore {str(self.path)!r} key={self.key!r}>"


def _check_store(store: Any) -> None:
    if not isinstance(store, TokenStore):
        raise ConfigError("must implement get_tokens/set_tokens/get_client_info/set_client_info", key="store")


@dataclass(frozen=True, kw_only=True)
class BearerAuth:
    """A static token sent as ``Authorization: Bearer <token>``."""

    token: str = field(repr=False)
    kind: Literal["bearer"] = field(default="bearer", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not self.token or any(c in self.token for c in "\r\n"):
            raise ConfigError("must be a non-empty single-line string", key="auth.token")

    def __repr__(self) -> str:
        return "BearerAuth(token='***')"


@dataclass(frozen=True, kw_only=True, eq=False)
class OAuthAuth:
    """OAuth 2.1 authorization-code flow with PKCE, through the SDK's ``OAuthClientProvider``.

    Attributes:
        redirect_handler: called with the authorization URL to visit.
        callback_handler: returns the code and state from the redirect back to ``redirect_uri``.
        redirect_uri: where the authorization server sends the user back.
        client_name: the name sent in dynamic client registration.
        scope: scopes to ask for (default: what the server's metadata or challenge names).
        client_id / client_secret: a pre-registered client (no dynamic registration).
        token_endpoint_auth_method: how a pre-registered client authenticates at the token endpoint.
        client_metadata_url: an HTTPS client ID metadata document URL, used as the client ID
            when the authorization server supports it.
        store: where tokens and the registration are kept.
    """

    redirect_handler: RedirectHandler
    callback_handler: CallbackHandler
    redirect_uri: str = "http://localhost:3000/callback"
    client_name: str = "trio-mcp"
    scope: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    token_endpoint_auth_method: Literal["none", "client_secret_post", "client_secret_basic"] | None = None
    client_metadata_url: str | None = None
    store: TokenStore = field(default_factory=InMemoryTokenStore)
    kind: Literal["oauth"] = field(default="oauth", init=False)

    def __post_init__(self) -> None:
        if not callable(self.redirect_handler):
            raise ConfigError("must be an async callable", key="auth.redirect_handler")
        if not callable(self.callback_handler):
            raise ConfigError("must be an async callable", key="auth.callback_handler")
        if not isinstance(self.redirect_uri, str) or not self.redirect_uri.startswith(
            ("http://", "https://")
        ):
            raise ConfigError("must be an http(s) URL", key="auth.redirect_uri")
        if self.client_secret is not None and self.client_id is None:
            raise ConfigError("a client_secret needs a client_id", key="auth.client_secret")
        _check_store(self.store)

    def __repr__(self) -> str:
        secret = ", client_secret='***'" if self.client_secret is not None else ""
        return (
            f"OAuthAuth(client_name={self.client_name!r}, client_id={self.client_id!r}{secret}, "
            f"scope={self.scope!r}, redirect_uri={self.redirect_uri!r}, store={self.store!r})"
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class ClientCredentialsAuth:
    """OAuth client-credentials grant (machine to machine) through the SDK's provider."""

    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    issuer: str | None = None
    """The authorization server the credentials belong to (recommended: they are then only
    ever sent there; without it the SDK warns and the MCP server decides)."""
    store: TokenStore = field(default_factory=InMemoryTokenStore)
    kind: Literal["client_credentials"] = field(default="client_credentials", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not self.client_id:
            raise ConfigError("must be a non-empty string", key="auth.client_id")
        if not isinstance(self.client_secret, str) or not self.client_secret:
            raise ConfigError("must be a non-empty string", key="auth.client_secret")
        _check_store(self.store)

    def __repr__(self) -> str:
        return (
            f"ClientCredentialsAuth(client_id={self.client_id!r}, client_secret='***', "
            f"scope={self.scope!r}, store={self.store!r})"
        )


AuthConfig = BearerAuth | OAuthAuth | ClientCredentialsAuth
AUTH_TYPES: tuple[type, ...] = (BearerAuth, OAuthAuth, ClientCredentialsAuth)


def _bearer_auth(token: str) -> httpx2.Auth:
    import httpx2

    class _Bearer(httpx2.Auth):
        def auth_flow(self, request: httpx2.Request) -> Any:
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

        def __repr__(self) -> str:
            return "<BearerAuth ***>"

    return _Bearer()


def build_httpx_auth(auth: AuthConfig | None, server_url: str) -> httpx2.Auth | None:
    """The ``httpx2.Auth`` for ``auth`` on ``server_url`` (``None``: no authorization)."""
    if auth is None:
        return None
    if isinstance(auth, BearerAuth):
        return _bearer_auth(auth.token)
    if isinstance(auth, ClientCredentialsAuth):
        from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider

        return ClientCredentialsOAuthProvider(
            server_url=server_url,
            storage=auth.store,
            client_id=auth.client_id,
            client_secret=auth.client_secret,
            token_endpoint_auth_method=auth.token_endpoint_auth_method,
            scope=auth.scope,
            issuer=auth.issuer,
        )
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientMetadata

    metadata_kwargs: dict[str, Any] = {
        "client_name": auth.client_name,
        "redirect_uris": [auth.redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }
    if auth.scope is not None:
        metadata_kwargs["scope"] = auth.scope
    if auth.token_endpoint_auth_method is not None:
        metadata_kwargs["token_endpoint_auth_method"] = auth.token_endpoint_auth_method
    provider = OAuthClientProvider(
        server_url=server_url,
        client_metadata=OAuthClientMetadata.model_validate(metadata_kwargs),
        storage=_PreRegistered(auth) if auth.client_id is not None else auth.store,
        redirect_handler=auth.redirect_handler,
        callback_handler=auth.callback_handler,
        client_metadata_url=auth.client_metadata_url,
    )
    return provider


class _PreRegistered:
    """A store view that answers a pre-registered client's registration when none is stored."""

    def __init__(self, auth: OAuthAuth) -> None:
        self._auth = auth
        self._store = auth.store

    async def get_tokens(self) -> OAuthToken | None:
        return await self._store.get_tokens()

    async def set_tokens(self, tokens: OAuthToken) -> None:
        await self._store.set_tokens(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        from mcp.shared.auth import OAuthClientInformationFull

        stored = await self._store.get_client_info()
        if stored is not None and stored.client_id == self._auth.client_id:
            return stored
        method = self._auth.token_endpoint_auth_method
        if method is None:
            method = "client_secret_basic" if self._auth.client_secret is not None else "none"
        return OAuthClientInformationFull.model_validate(
            {
                "client_id": self._auth.client_id,
                "client_secret": self._auth.client_secret,
                "redirect_uris": [self._auth.redirect_uri],
                "token_endpoint_auth_method": method,
            }
        )

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        await self._store.set_client_info(client_info)


def describe_auth(auth: AuthConfig | None) -> dict[str, Any] | None:
    """A secret-free description of ``auth`` (for APIs and logs)."""
    if auth is None:
        return None
    if isinstance(auth, BearerAuth):
        return {"kind": "bearer", "token": "***"}
    if isinstance(auth, ClientCredentialsAuth):
        return {
            "kind": "client_credentials",
            "client_id": auth.client_id,
            "client_secret": "***",
            "scope": auth.scope,
        }
    out: dict[str, Any] = {
        "kind": "oauth",
        "client_name": auth.client_name,
        "client_id": auth.client_id,
        "scope": auth.scope,
        "redirect_uri": auth.redirect_uri,
    }
    if auth.client_secret is not None:
        out["client_secret"] = "***"
    return out

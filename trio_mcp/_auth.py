"""Authorization for HTTP servers: a static bearer token, or OAuth 2.1 through the SDK.

:class:`BearerAuth` sends ``Authorization: Bearer <token>`` with every request.
:class:`OAuthAuth` runs the ``mcp`` SDK's ``OAuthClientProvider``: protected-resource and
authorization-server metadata discovery, dynamic client registration (or a pre-registered
client, or a client ID metadata document), the authorization-code grant with PKCE, and token
refresh. :class:`ClientCredentialsAuth` runs the SDK's client-credentials provider (machine
to machine, no user), :class:`PrivateKeyJwtAuth` the same grant with a signed JWT instead of a
secret (``private_key_jwt``), and :class:`IdentityAssertionAuth` enterprise-managed
authorization (an identity assertion from the enterprise IdP, exchanged with the JWT-bearer
grant). Tokens and client registrations live in a :class:`TokenStore`:
:class:`InMemoryTokenStore` (the default) or :class:`FileTokenStore`.

No secret appears in a ``repr`` or a description: tokens, client secrets, private keys, ID
tokens and stores print as ``***``.
"""

from __future__ import annotations

import json
import math
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


AssertionProvider = Callable[[str], Awaitable[str]]
"""``async def assertion(audience) -> str``: a signed JWT client assertion whose ``aud`` is
``audience`` (the authorization server's issuer), e.g. from a workload identity provider."""
IdentityAssertionProvider = Callable[[str, str], Awaitable[str]]
"""``async def id_jag(audience, resource) -> str``: an identity assertion authorization grant
(ID-JAG) for the authorization server ``audience`` and the MCP server ``resource``."""
IdTokenProvider = Callable[[], Awaitable[str]]
"""``async def id_token() -> str``: the user's current ID token from the enterprise IdP."""

SIGNING_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""The asymmetric JWS algorithms a ``private_key_jwt`` assertion may be signed with."""


def _check_private_key(pem: str, algorithm: str) -> None:
    """Refuse a key that cannot sign with ``algorithm``, without quoting any of it."""
    import jwt

    try:
        key = jwt.get_algorithm_by_name(algorithm).prepare_key(pem)
    except NotImplementedError:
        raise ConfigError(
            f"signing with {algorithm} needs the 'cryptography' package", key="auth.signing_algorithm"
        ) from None
    except (ValueError, TypeError, jwt.PyJWTError):
        raise ConfigError(
            f"is not a PEM private key that can sign with {algorithm}", key="auth.private_key"
        ) from None
    if not hasattr(key, "sign"):
        raise ConfigError(
            f"is a public key: {algorithm} signing needs the private key", key="auth.private_key"
        )


def _check_url(value: Any, key: str) -> None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigError("must be an http(s) URL", key=key)


@dataclass(frozen=True, kw_only=True, eq=False)
class PrivateKeyJwtAuth:
    """OAuth client-credentials grant authenticated with a signed JWT (``private_key_jwt``,
    RFC 7523 section 2.2), through the SDK's ``PrivateKeyJWTOAuthProvider``.

    Give exactly one source of assertions:

    - ``private_key``: a PEM private key; each token request carries a fresh JWT signed
      with it (``iss`` and ``sub`` = ``client_id``, ``aud`` = the authorization server's
      issuer, ``assertion_lifetime`` seconds of validity, a random ``jti``).
    - ``private_key_file``: the same, with the key read from this file for each token
      request (in a worker thread), so a rotated key is picked up.
    - ``assertion_provider``: ``async def assertion(audience) -> str`` returning a signed
      JWT minted elsewhere (a workload identity provider, a KMS).

    Attributes:
        client_id: the client registered with the authorization server.
        signing_algorithm: the JWS algorithm of ``private_key`` (RS*, PS*, ES*, EdDSA).
        scope: scopes to ask for.
        issuer: the authorization server the client is registered with (recommended:
            assertions are then only minted for, and sent to, that server).
        store: where tokens are kept.
    """

    client_id: str
    private_key: str | None = field(default=None, repr=False)
    private_key_file: str | os.PathLike[str] | None = None
    assertion_provider: AssertionProvider | None = None
    signing_algorithm: str = "RS256"
    assertion_lifetime: float = 300.0
    scope: str | None = None
    issuer: str | None = None
    store: TokenStore = field(default_factory=InMemoryTokenStore)
    kind: Literal["private_key_jwt"] = field(default="private_key_jwt", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not self.client_id:
            raise ConfigError("must be a non-empty string", key="auth.client_id")
        sources = [
            s for s in (self.private_key, self.private_key_file, self.assertion_provider) if s is not None
        ]
        if len(sources) != 1:
            raise ConfigError(
                "give exactly one of private_key, private_key_file or assertion_provider",
                key="auth.private_key",
            )
        if self.assertion_provider is not None and not callable(self.assertion_provider):
            raise ConfigError("must be an async callable", key="auth.assertion_provider")
        if self.signing_algorithm not in SIGNING_ALGORITHMS:
            raise ConfigError(
                f"must be one of {', '.join(sorted(SIGNING_ALGORITHMS))}", key="auth.signing_algorithm"
            )
        if self.private_key is not None:
            if not isinstance(self.private_key, str) or not self.private_key.strip():
                raise ConfigError("must be a PEM private key", key="auth.private_key")
            _check_private_key(self.private_key, self.signing_algorithm)
        if self.private_key_file is not None and not isinstance(self.private_key_file, str | os.PathLike):
            raise ConfigError("must be a path", key="auth.private_key_file")
        if (
            isinstance(self.assertion_lifetime, bool)
            or not isinstance(self.assertion_lifetime, int | float)
            or not 1 <= self.assertion_lifetime <= 3600
        ):
            raise ConfigError("must be between 1 and 3600 seconds", key="auth.assertion_lifetime")
        if self.issuer is not None:
            _check_url(self.issuer, "auth.issuer")
        _check_store(self.store)

    async def assertion(self, audience: str) -> str:
        """A client assertion for the authorization server ``audience``."""
        if self.assertion_provider is not None:
            return await self.assertion_provider(audience)
        from mcp.client.auth.extensions.client_credentials import SignedJWTParameters

        pem = self.private_key
        if pem is None:
            assert self.private_key_file is not None
            pem = await trio.to_thread.run_sync(Path(self.private_key_file).read_text)
        sign = SignedJWTParameters(
            issuer=self.client_id,
            subject=self.client_id,
            signing_key=pem,
            signing_algorithm=self.signing_algorithm,
            lifetime_seconds=math.ceil(self.assertion_lifetime),
        ).create_assertion_provider()
        return await sign(audience)

    def __repr__(self) -> str:
        if self.private_key is not None:
            source = "private_key='***'"
        elif self.private_key_file is not None:
            source = f"private_key_file={str(self.private_key_file)!r}"
        else:
            source = "assertion_provider=..."
        return (
            f"PrivateKeyJwtAuth(client_id={self.client_id!r}, {source}, "
            f"signing_algorithm={self.signing_algorithm!r}, scope={self.scope!r}, store={self.store!r})"
        )


def file_text(path: str | os.PathLike[str]) -> Callable[[], Awaitable[str]]:
    """``async def text() -> str``: the stripped contents of ``path``, read in a worker thread
    on each call (so a file another program refreshes is read as it is now)."""
    file = Path(path)

    async def text() -> str:
        return (await trio.to_thread.run_sync(file.read_text)).strip()

    return text


TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
ID_JAG_TYPE = "urn:ietf:params:oauth:token-type:id-jag"


@dataclass(frozen=True, kw_only=True, eq=False)
class IdentityAssertionAuth:
    """Enterprise-managed authorization (SEP-990, cross-app access): an identity assertion
    authorization grant (ID-JAG) from the enterprise identity provider, exchanged for an
    access token at the MCP server's authorization server with the RFC 7523 JWT-bearer grant,
    through the SDK's ``IdentityAssertionOAuthProvider``.

    The ID-JAG comes either from an RFC 8693 token exchange at the identity provider
    (``idp_token_endpoint``, ``idp_client_id``, optionally ``idp_client_secret``, and the
    user's ``id_token``: a string, or ``async def id_token() -> str`` for the current one), or
    from ``assertion_provider`` (``async def id_jag(audience, resource) -> str``).

    Attributes:
        client_id / client_secret: the client registered with the MCP authorization server
            (a confidential client).
        issuer: that authorization server's issuer. It is configuration: the MCP server is
            never asked which authorization server to trust, so it cannot redirect the grant.
        scope: scopes to ask for.
        token_endpoint_auth_method: how the client authenticates at the token endpoint.
        store: where tokens are kept.
    """

    client_id: str
    client_secret: str = field(repr=False)
    issuer: str
    idp_token_endpoint: str | None = None
    idp_client_id: str | None = None
    idp_client_secret: str | None = field(default=None, repr=False)
    id_token: str | IdTokenProvider | None = field(default=None, repr=False)
    assertion_provider: IdentityAssertionProvider | None = None
    scope: str | None = None
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    store: TokenStore = field(default_factory=InMemoryTokenStore)
    kind: Literal["identity_assertion"] = field(default="identity_assertion", init=False)

    def __post_init__(self) -> None:
        for key in ("client_id", "client_secret"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise ConfigError("must be a non-empty string", key=f"auth.{key}")
        _check_url(self.issuer, "auth.issuer")
        exchange = (self.idp_token_endpoint, self.idp_client_id, self.id_token)
        if self.assertion_provider is not None:
            if not callable(self.assertion_provider):
                raise ConfigError("must be an async callable", key="auth.assertion_provider")
            if any(v is not None for v in exchange):
                raise ConfigError(
                    "give either assertion_provider or the identity provider's token exchange, not both",
                    key="auth.assertion_provider",
                )
        else:
            _check_url(self.idp_token_endpoint, "auth.idp_token_endpoint")
            if not isinstance(self.idp_client_id, str) or not self.idp_client_id:
                raise ConfigError("must be a non-empty string", key="auth.idp_client_id")
            token = self.id_token
            if not callable(token) and (not isinstance(token, str) or not token):
                raise ConfigError("must be the user's ID token or an async callable", key="auth.id_token")
        if self.token_endpoint_auth_method not in ("client_secret_basic", "client_secret_post"):
            raise ConfigError(
                "must be 'client_secret_basic' or 'client_secret_post'", key="auth.token_endpoint_auth_method"
            )
        _check_store(self.store)

    async def grant(self, audience: str, resource: str) -> str:
        """An ID-JAG for the authorization server ``audience`` and the MCP server ``resource``."""
        if self.assertion_provider is not None:
            return await self.assertion_provider(audience, resource)
        return await _exchange_id_token(self, audience, resource)

    def __repr__(self) -> str:
        source = (
            "assertion_provider=..."
            if self.assertion_provider is not None
            else f"idp_token_endpoint={self.idp_token_endpoint!r}, idp_client_id={self.idp_client_id!r}"
        )
        return (
            f"IdentityAssertionAuth(client_id={self.client_id!r}, client_secret='***', "
            f"issuer={self.issuer!r}, {source}, scope={self.scope!r}, store={self.store!r})"
        )


def _idp_client() -> httpx2.AsyncClient:
    """The HTTP client of one token exchange at an identity provider."""
    import httpx2

    return httpx2.AsyncClient(follow_redirects=False)


async def _exchange_id_token(auth: IdentityAssertionAuth, audience: str, resource: str) -> str:
    """RFC 8693 token exchange at the identity provider: the user's ID token for an ID-JAG."""
    from mcp.client.auth import OAuthTokenError

    assert auth.idp_token_endpoint is not None and auth.idp_client_id is not None
    source = auth.id_token
    if callable(source):
        id_token = await source()
    else:
        assert source is not None
        id_token = source
    form = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "requested_token_type": ID_JAG_TYPE,
        "subject_token": id_token,
        "subject_token_type": ID_TOKEN_TYPE,
        "audience": audience,
        "resource": resource,
        "client_id": auth.idp_client_id,
    }
    if auth.idp_client_secret is not None:
        form["client_secret"] = auth.idp_client_secret
    async with _idp_client() as http:
        response = await http.post(auth.idp_token_endpoint, data=form, headers={"Accept": "application/json"})
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    if response.status_code != 200:
        # Only the error's code and description: never echo what the identity provider sent back.
        reason = ": ".join(
            str(body[k]) for k in ("error", "error_description") if isinstance(body.get(k), str)
        )
        raise OAuthTokenError(
            f"the identity provider refused the token exchange (HTTP {response.status_code})"
            + (f": {reason}" if reason else "")
        )
    grant = body.get("access_token")
    if not isinstance(grant, str) or not grant:
        raise OAuthTokenError("the identity provider's token exchange answer has no access_token")
    issued = body.get("issued_token_type")
    if issued is not None and issued != ID_JAG_TYPE:
        raise OAuthTokenError(f"the identity provider issued a {issued!r}, not an ID-JAG")
    return grant


AuthConfig = BearerAuth | OAuthAuth | ClientCredentialsAuth | PrivateKeyJwtAuth | IdentityAssertionAuth
AUTH_TYPES: tuple[type, ...] = (
    BearerAuth,
    OAuthAuth,
    ClientCredentialsAuth,
    PrivateKeyJwtAuth,
    IdentityAssertionAuth,
)


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
    if isinstance(auth, PrivateKeyJwtAuth):
        from mcp.client.auth.extensions.client_credentials import PrivateKeyJWTOAuthProvider

        return PrivateKeyJWTOAuthProvider(
            server_url=server_url,
            storage=auth.store,
            client_id=auth.client_id,
            assertion_provider=auth.assertion,
            scope=auth.scope,
            issuer=auth.issuer,
        )
    if isinstance(auth, IdentityAssertionAuth):
        from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider

        return IdentityAssertionOAuthProvider(
            server_url=server_url,
            storage=auth.store,
            client_id=auth.client_id,
            client_secret=auth.client_secret,
            issuer=auth.issuer,
            assertion_provider=auth.grant,
            scope=auth.scope,
            token_endpoint_auth_method=auth.token_endpoint_auth_method,
        )
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
    if isinstance(auth, PrivateKeyJwtAuth):
        return {
            "kind": "private_key_jwt",
            "client_id": auth.client_id,
            "private_key": None if auth.assertion_provider is not None else "***",
            "signing_algorithm": None if auth.assertion_provider is not None else auth.signing_algorithm,
            "scope": auth.scope,
            "issuer": auth.issuer,
        }
    if isinstance(auth, IdentityAssertionAuth):
        return {
            "kind": "identity_assertion",
            "client_id": auth.client_id,
            "client_secret": "***",
            "issuer": auth.issuer,
            "scope": auth.scope,
            "idp_token_endpoint": auth.idp_token_endpoint,
            "idp_client_id": auth.idp_client_id,
            "id_token": None if auth.id_token is None else "***",
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

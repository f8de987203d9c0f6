"""Secrets of stored registrations, encrypted at rest with Fernet.

A registration body is split in two before it is stored: its public part (``url``,
``command``, timeouts, ...) is kept as JSON, and its secrets (``headers``, ``env``, ``auth``)
as one Fernet token. Joined again, the two give back the body that was registered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._errors import SECRET_KEY_ENV, StoreError

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

SECRET_FIELDS = ("headers", "env", "auth")
"""The keys of a registration whose values are secrets."""


def split_secrets(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(public, secret)``: ``body`` without its secret keys, and those keys (the ones that
    say anything: an empty ``headers`` or a ``null`` ``auth`` stays public)."""
    public: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    for key, value in body.items():
        if key in SECRET_FIELDS and value not in (None, {}):
            secret[key] = value
        else:
            public[key] = value
    return public, secret


def join_secrets(public: Mapping[str, Any], secret: Mapping[str, Any]) -> dict[str, Any]:
    """The body that :func:`split_secrets` split."""
    return {**public, **secret}


class SecretBox:
    """Encrypts and decrypts registration secrets with one or more Fernet keys.

    The first key encrypts; every key decrypts (to rotate: put the new key first, keep the
    old one after it until every registration has been stored again).
    """

    def __init__(self, keys: str) -> None:
        """Args:
            keys: Fernet keys (URL-safe base64 of 32 bytes), separated by commas.

        Raises:
            StoreError: a key is not a Fernet key.
        """
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError as exc:  # pragma: no cover - a dependency of trio-mcp
            raise StoreError(f"encrypting secrets needs the cryptography package ({exc})") from None

        parts = [k.strip() for k in keys.split(",") if k.strip()]
        if not parts:
            raise StoreError(f"{SECRET_KEY_ENV} is empty")
        fernets: list[Fernet] = []
        for i, part in enumerate(parts, 1):
            try:
                fernets.append(Fernet(part.encode()))
            except ValueError:
                which = f"key {i} of {SECRET_KEY_ENV}" if len(parts) > 1 else SECRET_KEY_ENV
                raise StoreError(
                    f"{which} is not a Fernet key (32 bytes, URL-safe base64); generate one with: python -c "
                    "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
                ) from None
        self._fernet: MultiFernet = MultiFernet(fernets)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SecretBox | None:
        """The box for ``$TRIO_MCP_SECRET_KEY`` (``None`` when it is unset or empty)."""
        keys = environ.get(SECRET_KEY_ENV, "")
        return cls(keys) if keys.strip() else None

    def seal(self, secret: Mapping[str, Any]) -> str:
        """``secret`` as an encrypted token."""
        return self._fernet.encrypt(json.dumps(secret, separators=(",", ":")).encode()).decode("ascii")

    def open(self, token: str) -> dict[str, Any]:
        """The secrets sealed in ``token``.

        Raises:
            StoreError: no key decrypts it (the key changed), or it was altered.
        """
        from cryptography.fernet import InvalidToken

        try:
            data = json.loads(self._fernet.decrypt(token.encode("ascii")))
        except (InvalidToken, ValueError):
            raise StoreError(
                f"its secrets cannot be decrypted with {SECRET_KEY_ENV} (a different key encrypted them)"
            ) from None
        if not isinstance(data, dict):
            raise StoreError("its sealed secrets are not an object")
        return data

    def __repr__(self) -> str:
        return "<SecretBox>"

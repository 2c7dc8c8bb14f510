"""The keys tokens are signed with: :class:`SigningKey`, and the :class:`Keyring` that rotates
them."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from consentkit.errors import ValidationError

MIN_SECRET_BYTES: Final = 32
"""The shortest secret a :class:`SigningKey` accepts: 256 bits, the size of HMAC-SHA256's output."""

_KEY_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,32}")


def _key_id(value: object) -> str:
    if not isinstance(value, str) or not _KEY_ID_RE.fullmatch(value):
        raise ValidationError(
            "key.id",
            f"{value!r} is not a valid key id: use 1-32 ASCII letters, digits, '.', '_' or '-' "
            "(e.g. '2026-05')",
        )
    return value


def _secret(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise ValidationError(
            "key.secret",
            f"expected bytes, got {type(value).__name__}: decode a stored secret first, e.g. "
            "base64.urlsafe_b64decode(text), or make one with secrets.token_bytes(32)",
        )
    if len(value) < MIN_SECRET_BYTES:
        raise ValidationError(
            "key.secret",
            f"is {len(value)} bytes; use at least {MIN_SECRET_BYTES} random bytes "
            "(secrets.token_bytes(32))",
        )
    return bytes(value)


@attrs.frozen
class SigningKey:
    """One HMAC key of a :class:`Keyring`.

    Attributes:
        id: a short name written into every token it signs (1-32 ASCII letters, digits, ``.``,
            ``_``, ``-``), e.g. the month it was made, ``"2026-05"``.
        secret: at least 32 random bytes (hidden from ``repr``).  Keep it out of source code.
    """

    id: str = attrs.field(converter=_key_id)
    secret: bytes = attrs.field(converter=_secret, repr=False)

    @classmethod
    def generate(cls, key_id: str) -> SigningKey:
        """A new key with 32 random bytes from :mod:`secrets`."""
        return cls(key_id, secrets.token_bytes(MIN_SECRET_BYTES))


def _keys(value: object) -> tuple[SigningKey, ...]:
    if isinstance(value, SigningKey):
        return (value,)
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError(
            "keyring",
            f"expected SigningKeys or (key_id, secret) pairs, got {type(value).__name__}",
        )
    keys: list[SigningKey] = []
    for item in value:
        if isinstance(item, SigningKey):
            keys.append(item)
        elif isinstance(item, tuple) and len(item) == 2:
            keys.append(SigningKey(*item))
        else:
            raise ValidationError(
                "keyring", f"expected a SigningKey or a (key_id, secret) pair, got {item!r:.80}"
            )
    if not keys:
        raise ValidationError("keyring", "needs at least one key (the first one signs)")
    ids = [key.id for key in keys]
    duplicates = sorted({k for k in ids if ids.count(k) > 1})
    if duplicates:
        raise ValidationError(
            "keyring", f"key id(s) {', '.join(duplicates)} appear more than once"
        )
    return tuple(keys)


@attrs.frozen
class Keyring:
    """The keys tokens are signed and verified with: the first key signs, every key verifies.

    Attributes:
        keys: :class:`SigningKey` objects, or ``(key_id, secret)`` pairs; at least one, ids unique.
    """

    keys: tuple[SigningKey, ...] = attrs.field(converter=_keys)
    _by_id: Mapping[str, SigningKey] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {key.id: key for key in self.keys})

    @property
    def signing_key(self) -> SigningKey:
        """The key new tokens are signed with (the first)."""
        return self.keys[0]

    def get(self, key_id: str) -> SigningKey | None:
        """The key called *key_id*, or None."""
        return self._by_id.get(key_id)

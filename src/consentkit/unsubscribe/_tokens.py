"""Unsubscribe tokens: :class:`UnsubscribeTokens` issues and verifies them, in the binary format
the package docstring describes; :class:`TokenClaims` is what a verified one says, and
:class:`InvalidTokenError` and its subclasses say why one cannot be acted on."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final

import attrs

from consentkit.channels import EMAIL, Channel, ChannelRegistry, channel
from consentkit.clock import Clock, SystemClock
from consentkit.errors import ValidationError
from consentkit.model import MAX_INSTANT, ensure_aware, validate_id
from consentkit.unsubscribe._keys import Keyring

TOKEN_VERSION: Final = 1
"""The version byte of the tokens this module writes (and the only one it reads)."""
DEFAULT_LIFETIME: Final = timedelta(days=365)
"""How long a token works by default: people unsubscribe from old messages too."""
MIN_LIFETIME: Final = timedelta(days=30)
"""The shortest lifetime accepted: CAN-SPAM requires an opt-out mechanism to work for at least 30
days after the message was sent."""
MAX_LIFETIME: Final = timedelta(days=3650)
"""The longest lifetime accepted (ten years)."""

_CONTEXT: Final = b"consentkit/unsubscribe\x00"
_TAG_BYTES: Final = 16
_KEY_ID_MAX: Final = 32
_ID_BYTES_MAX: Final = 128 * 4  # validate_id allows 128 characters of up to 4 UTF-8 bytes
_CHANNEL_KEY_MAX: Final = 32
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_ISSUED: Final = (MAX_INSTANT - _EPOCH) // timedelta(seconds=1)
_MAX_BINARY: Final = (
    1 + 1 + _KEY_ID_MAX + 5 + 4 + 1 + _CHANNEL_KEY_MAX + 2 + _ID_BYTES_MAX + 2 + _ID_BYTES_MAX
) + _TAG_BYTES
MAX_TOKEN_LENGTH: Final = -(-_MAX_BINARY * 4 // 3)
"""No token is longer than this many characters; a longer string is refused before decoding."""
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")


class InvalidTokenError(ValidationError):
    """An unsubscribe token that cannot be acted on; nothing was changed.  The subclasses say
    what is wrong.

    Attributes:
        field: always ``"token"``.
    """

    code: ClassVar[str] = "invalid_token"
    http_status: ClassVar[int] = 400

    def __init__(self, message: str) -> None:
        super().__init__("token", message)


class MalformedTokenError(InvalidTokenError):
    """Not a token at all: empty, not base64url, truncated, with bytes after the signature, too
    long, or of a version this consentkit does not read."""

    code: ClassVar[str] = "malformed_token"


class UnknownTokenKeyError(InvalidTokenError):
    """The token names a key id that is not in the keyring (never was, or was removed).

    Attributes:
        key_id: the key id the token names.
    """

    code: ClassVar[str] = "unknown_token_key"

    def __init__(self, key_id: str, known: tuple[str, ...]) -> None:
        self.key_id = key_id
        super().__init__(
            f"was signed with key {key_id!r}, which is not in the keyring (it holds "
            f"{', '.join(repr(k) for k in known)}): the key was removed or never known"
        )


class TokenSignatureError(InvalidTokenError):
    """The signature does not match the token's content: it was altered, or signed with another
    secret under the same key id."""

    code: ClassVar[str] = "invalid_token_signature"


class ExpiredTokenError(InvalidTokenError):
    """The token was genuine but has expired.

    Attributes:
        expired_at: when it stopped working.
    """

    code: ClassVar[str] = "expired_token"
    http_status: ClassVar[int] = 410

    def __init__(self, expired_at: datetime) -> None:
        self.expired_at = expired_at
        super().__init__(
            f"expired at {expired_at.isoformat()}: use the unsubscribe link of a more recent "
            "message"
        )


class TokenMismatchError(InvalidTokenError):
    """The token is genuine but for another account, contact or channel than the caller expects.

    Attributes:
        mismatched: which of ``"account"``, ``"contact_id"``, ``"channel"`` differs.
    """

    code: ClassVar[str] = "token_mismatch"

    def __init__(self, mismatched: str, expected: str, found: str) -> None:
        self.mismatched = mismatched
        super().__init__(f"is for {mismatched} {found!r}, not {expected!r}")


@attrs.frozen
class TokenClaims:
    """What a verified token says.

    Attributes:
        account: the account.
        contact_id: the contact who may unsubscribe with it.
        channel: the channel it unsubscribes from.
        key_id: the key that signed it.
        issued_at: when it was issued (whole seconds).
        expires_at: the first instant it no longer works.
    """

    account: str
    contact_id: str
    channel: Channel
    key_id: str
    issued_at: datetime
    expires_at: datetime


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not _B64URL_RE.fullmatch(text):
        raise MalformedTokenError(
            "contains characters outside base64url (A-Z, a-z, 0-9, '-', '_'): pass the token "
            "exactly as it appears in the link"
        )
    if len(text) % 4 == 1:
        raise MalformedTokenError("is not base64url: its length cannot be decoded")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedTokenError("is not base64url") from None
    # Only the canonical spelling is a token: otherwise changing the last character's unused bits
    # would give a second string for the same token.
    if _b64encode(data) != text:
        raise MalformedTokenError("is not canonical base64url (its last character was altered)")
    return data


def _with_length(data: bytes, width: int) -> bytes:
    return len(data).to_bytes(width, "big") + data


class _Reader:
    """Reads the fields of a token's bytes in order, refusing to run into the signature."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._position = 0

    def take(self, size: int, what: str) -> bytes:
        end = self._position + size
        if end > len(self._data):
            raise MalformedTokenError(f"is truncated: it ends inside the {what}")
        chunk = self._data[self._position : end]
        self._position = end
        return chunk

    def number(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def sized(self, width: int, what: str) -> bytes:
        return self.take(self.number(width, f"length of the {what}"), what)

    def signed_part_and_tag(self) -> tuple[bytes, bytes]:
        rest = len(self._data) - self._position
        if rest < _TAG_BYTES:
            raise MalformedTokenError("is truncated: it ends inside the signature")
        if rest > _TAG_BYTES:
            raise MalformedTokenError(
                f"has {rest - _TAG_BYTES} unexpected byte(s) after the signature"
            )
        return self._data[: self._position], self._data[self._position :]


def _tag(secret: bytes, signed: bytes) -> bytes:
    return hmac.new(secret, _CONTEXT + signed, hashlib.sha256).digest()[:_TAG_BYTES]


def _lifetime(value: object) -> int:
    if not isinstance(value, timedelta):
        raise ValidationError("lifetime", f"expected a timedelta, got {type(value).__name__}")
    if not MIN_LIFETIME <= value <= MAX_LIFETIME:
        raise ValidationError(
            "lifetime",
            f"is {value}; use from 30 days (CAN-SPAM: an opt-out link must work for at least 30 "
            "days after sending) to 3650 days",
        )
    return value // timedelta(seconds=1)


class UnsubscribeTokens:
    """Issues and verifies unsubscribe tokens.

    Args:
        keyring: the keys; the first signs, every one verifies.
        clock: tells issue and expiry times (give the service's, ``service.clock``); the system
            clock by default.
        lifetime: how long a new token works: 30 days to 10 years, one year by default.
        channels: the channels tokens may name: the service's registry (``service.channels``),
            or the custom channels to accept besides the built-ins; any other key is refused.

    Raises:
        ValidationError: naming the argument that is not usable.
    """

    __slots__ = ("_channels", "_clock", "_keyring", "_lifetime_seconds")

    def __init__(
        self,
        keyring: Keyring,
        *,
        clock: Clock | None = None,
        lifetime: timedelta = DEFAULT_LIFETIME,
        channels: ChannelRegistry | Iterable[Channel | str] = (),
    ) -> None:
        if not isinstance(keyring, Keyring):
            raise ValidationError(
                "keyring", f"expected a Keyring, got {type(keyring).__name__}"
            )
        if clock is not None and not isinstance(clock, Clock):
            raise ValidationError(
                "clock", f"expected a Clock (an object with now()), got {type(clock).__name__}"
            )
        self._keyring = keyring
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lifetime_seconds = _lifetime(lifetime)
        self._channels = (
            channels if isinstance(channels, ChannelRegistry) else ChannelRegistry(channels)
        )

    @property
    def keyring(self) -> Keyring:
        """The keys."""
        return self._keyring

    @property
    def lifetime(self) -> timedelta:
        """How long a new token works."""
        return timedelta(seconds=self._lifetime_seconds)

    def _now(self, now: datetime | None) -> datetime:
        if now is not None:
            return ensure_aware("now", now)
        return ensure_aware("clock.now()", self._clock.now())

    def issue(
        self,
        account: str,
        contact_id: str,
        channel_: Channel | str = EMAIL,
        *,
        now: datetime | None = None,
    ) -> str:
        """A token with which *contact_id* of *account* unsubscribes from *channel_* (email by
        default), signed with the keyring's first key and valid for :attr:`lifetime` from *now*
        (the clock's time by default).

        Raises:
            ValidationError: naming the argument that is not valid.
        """
        account = validate_id("account", account)
        contact_id = validate_id("contact_id", contact_id)
        ch = self._channels.resolve(channel_, "channel")
        issued = (self._now(now) - _EPOCH) // timedelta(seconds=1)
        key = self._keyring.signing_key
        signed = b"".join(
            (
                bytes((TOKEN_VERSION,)),
                _with_length(key.id.encode("ascii"), 1),
                issued.to_bytes(5, "big"),
                self._lifetime_seconds.to_bytes(4, "big"),
                _with_length(ch.key.encode("ascii"), 1),
                _with_length(account.encode("utf-8"), 2),
                _with_length(contact_id.encode("utf-8"), 2),
            )
        )
        return _b64encode(signed + _tag(key.secret, signed))

    def verify(
        self,
        token: object,
        *,
        account: str | None = None,
        contact_id: str | None = None,
        channel_: Channel | str | None = None,
        now: datetime | None = None,
    ) -> TokenClaims:
        """Check *token* and return what it says.

        Pass *account*, *contact_id* or *channel_* to also require that the token is for them.

        Raises:
            MalformedTokenError: not a token (garbage, truncated, too long, another version).
            UnknownTokenKeyError: signed with a key the keyring does not hold.
            TokenSignatureError: altered, or signed with another secret.
            ExpiredTokenError: genuine, but expired at *now* (the clock's time by default).
            TokenMismatchError: genuine, but for another account, contact or channel.
        """
        expected = {
            "account": None if account is None else validate_id("account", account),
            "contact_id": None if contact_id is None else validate_id("contact_id", contact_id),
            "channel": None if channel_ is None else self._channels.resolve(channel_).key,
        }
        claims = self._check(token, self._now(now))
        found = {
            "account": claims.account,
            "contact_id": claims.contact_id,
            "channel": claims.channel.key,
        }
        for field, wanted in expected.items():
            if wanted is not None and wanted != found[field]:
                raise TokenMismatchError(field, wanted, found[field])
        return claims

    def _check(self, token: object, now: datetime) -> TokenClaims:
        if not isinstance(token, str):
            raise MalformedTokenError(f"expected a string, got {type(token).__name__}")
        if not token:
            raise MalformedTokenError("is missing: the link has no token")
        if len(token) > MAX_TOKEN_LENGTH:
            raise MalformedTokenError(
                f"is {len(token)} characters long; no token is longer than {MAX_TOKEN_LENGTH}"
            )
        raw = _parse(_b64decode(token))
        key = self._keyring.get(raw.key_id)
        if key is None:
            raise UnknownTokenKeyError(raw.key_id, tuple(k.id for k in self._keyring.keys))
        if not hmac.compare_digest(_tag(key.secret, raw.signed), raw.tag):
            raise TokenSignatureError(
                "does not match its signature: it was altered, or signed with another secret "
                f"under key id {raw.key_id!r}"
            )
        claims = raw.claims()
        if claims.channel.key not in self._channels.known:
            raise InvalidTokenError(
                f"is for channel {claims.channel.key!r}, which is not declared here: register it "
                "(UnsubscribeTokens(..., channels=service.channels))"
            )
        if now >= claims.expires_at:
            raise ExpiredTokenError(claims.expires_at)
        return attrs.evolve(claims, channel=self._channels.known[claims.channel.key])


@attrs.frozen
class _RawToken:
    """The fields of a token's bytes, read but not yet authenticated.

    Attributes:
        key_id: the key id (non-ASCII bytes replaced: such a key is never in a keyring).
        issued: the issue time in seconds since 1970.
        lifetime: the lifetime in seconds.
        channel: the channel key's bytes.
        account: the account's UTF-8 bytes.
        contact_id: the contact id's UTF-8 bytes.
        signed: every byte before the tag.
        tag: the 16-byte tag.
    """

    key_id: str
    issued: int
    lifetime: int
    channel: bytes
    account: bytes
    contact_id: bytes
    signed: bytes
    tag: bytes

    def claims(self) -> TokenClaims:
        """The claims, once the tag is checked.  They fail only for a token the keyring's owner
        wrote wrongly."""
        if self.issued >= _MAX_ISSUED:
            raise MalformedTokenError("has an issue time after the year 9000")
        try:
            ch = channel(self.channel.decode("ascii"))
            account = validate_id("account", self.account.decode("utf-8"))
            contact_id = validate_id("contact_id", self.contact_id.decode("utf-8"))
        except (UnicodeDecodeError, ValidationError) as error:
            raise MalformedTokenError(f"carries an invalid id or channel: {error}") from None
        issued_at = _EPOCH + timedelta(seconds=self.issued)
        return TokenClaims(
            account=account,
            contact_id=contact_id,
            channel=ch,
            key_id=self.key_id,
            issued_at=issued_at,
            expires_at=issued_at + timedelta(seconds=self.lifetime),
        )


def _parse(data: bytes) -> _RawToken:
    """Split a token's bytes into its fields; every length must add up exactly."""
    reader = _Reader(data)
    version = reader.number(1, "version")
    if version != TOKEN_VERSION:
        raise MalformedTokenError(
            f"has version {version}; this consentkit reads version {TOKEN_VERSION}"
        )
    key_id = reader.sized(1, "key id").decode("ascii", "replace")
    issued = reader.number(5, "issue time")
    lifetime = reader.number(4, "lifetime")
    raw_channel = reader.sized(1, "channel")
    account = reader.sized(2, "account")
    contact_id = reader.sized(2, "contact id")
    signed, tag = reader.signed_part_and_tag()
    return _RawToken(key_id, issued, lifetime, raw_channel, account, contact_id, signed, tag)

"""Erasure of a contact (GDPR Art. 17) that keeps its opt-outs: the keyed hashes and the audit
record (see docs/privacy.md).

An erased contact's addresses are kept only as keyed hashes, HMAC-SHA256 under a secret the host
supplies (``ConsentService(erasure_key=...)``) of each address key
(:func:`~consentkit.model.address_key`), as suppressions: an address that comes back in an
import, a sign-up or an address edit is recognised and unsubscribed, but nobody without the key
can tell which address it was.  The contact's subscriptions and events stay, under a pseudonym,
so the audit trail still adds up (state is the replay of the events).

Pure domain: nothing here reads a store.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime

import attrs

from consentkit.errors import ValidationError
from consentkit.model import Actor

__all__ = [
    "ERASED_MARKER",
    "ERASURE_REASON_CODE",
    "HASHED_KEY_PREFIX",
    "MIN_ERASURE_KEY_BYTES",
    "PSEUDONYM_PREFIX",
    "ErasureRecord",
    "check_erasure_key",
    "hashed_address_key",
    "hashed_keys",
    "pseudonym_for",
]

HASHED_KEY_PREFIX = "hmac:"
"""The prefix of a suppression's address key that is a keyed hash (no plain key starts so)."""
PSEUDONYM_PREFIX = "erased-"
"""The prefix of the id an erased contact's subscriptions and events are kept under."""
ERASED_MARKER = "[erased]"
"""What replaces the free text of an erased contact's events (justification notes)."""
ERASURE_REASON_CODE = "erasure"
"""The reason code of the events that unsubscribe an erased contact's subscribed pairs."""
MIN_ERASURE_KEY_BYTES = 16
_PSEUDONYM_HEX = 32  # 128 bits: no two erasures share a pseudonym


def check_erasure_key(value: object) -> bytes | None:
    """Check the ``erasure_key`` of a service: None, or bytes of at least 16 bytes.

    Raises:
        ValidationError: naming ``erasure_key``.
    """
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise ValidationError(
            "erasure_key",
            f"expected bytes (a secret of at least {MIN_ERASURE_KEY_BYTES} random bytes, e.g. "
            f"secrets.token_bytes(32)), got {type(value).__name__}",
        )
    if len(value) < MIN_ERASURE_KEY_BYTES:
        raise ValidationError(
            "erasure_key",
            f"is {len(value)} bytes; give at least {MIN_ERASURE_KEY_BYTES} random bytes "
            "(e.g. secrets.token_bytes(32))",
        )
    return value


def hashed_address_key(key: bytes, address_key: str) -> str:
    """The keyed hash under which an erased address is suppressed: ``"hmac:"`` and the hex
    HMAC-SHA256 of the address key under *key*."""
    digest = hmac.new(key, address_key.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return HASHED_KEY_PREFIX + digest.hexdigest()


def hashed_keys(key: bytes | None, address_keys: Iterable[str]) -> dict[str, str]:
    """``{hashed key: address key}`` for *address_keys* (empty without a key)."""
    if key is None:
        return {}
    return {hashed_address_key(key, k): k for k in address_keys}


def pseudonym_for(key: bytes, account: str, contact_id: str, erased_at: datetime) -> str:
    """The pseudonym of one erasure: ``"erased-"`` and 32 hex digits of the HMAC-SHA256 of the
    account, the contact id and the instant of the erasure under *key*.

    The instant is part of it, so the pseudonym cannot be recomputed from a contact id (not even
    with the key: the records of an erased contact are not found again by its id), and a contact
    id re-used after its erasure and erased again gets another pseudonym.
    """
    message = f"{account}\x00{contact_id}\x00{erased_at.isoformat()}"
    digest = hmac.new(key, message.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return PSEUDONYM_PREFIX + digest.hexdigest()[:_PSEUDONYM_HEX]


@attrs.frozen
class ErasureRecord:
    """The audit record of one erasure: that, when and why a contact was erased, and by whom;
    nothing about the contact but its pseudonym.

    Attributes:
        account: the account.
        pseudonym: the id the erased contact's subscriptions and events are kept under.
        erased_at: when it was erased (the service clock).
        actor: who erased it (kind and id; roles are not kept).
        reason: why, as the admin gave it: it must not contain personal data (a ticket number,
            "GDPR Art. 17 request"), since it is kept as long as the audit trail.
    """

    account: str
    pseudonym: str
    erased_at: datetime
    actor: Actor
    reason: str

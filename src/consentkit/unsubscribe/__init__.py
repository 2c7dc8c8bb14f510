"""One-click email unsubscribe (RFC 8058): signed links, the two headers, and the endpoint.

Gmail and Yahoo require bulk senders to offer one-click unsubscribe and to honour it within two
days.  A message carries two headers::

    List-Unsubscribe: <https://mail.example.com/unsubscribe?token=AQJrMQ...>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

and the mail client, when the recipient presses its "Unsubscribe" button, POSTs the body
``List-Unsubscribe=One-Click`` to that URL without cookies or credentials.  So the URL alone must
say who unsubscribes from what, in a way nobody else can forge: it carries a token signed with
HMAC-SHA256.  :class:`OneClickUnsubscribe` verifies it and records the contact's own unsubscribe
through the service (``Source.UNSUBSCRIBE_LINK``); a GET (mail scanners fetch links) never changes
anything, it answers a confirmation page.

Tokens
    A token is bound to one (account, contact, channel) pair and expires (a year by default).  It
    is base64url (no padding) of::

        version     1 byte   (1)
        key id      1-byte length + ASCII: the keyring key that signed it
        issued at   5 bytes  big-endian whole seconds since 1970-01-01T00:00Z
        lifetime    4 bytes  big-endian seconds; it expires at issued at + lifetime
        channel     1-byte length + ASCII channel key
        account     2-byte length + UTF-8
        contact id  2-byte length + UTF-8
        tag         16 bytes: HMAC-SHA256(secret, b"consentkit/unsubscribe\\0" + all of the above),
                    truncated to 128 bits

    The ids are **embedded, signed but not encrypted**: whoever sees the URL (the recipient, their
    mail provider, a link scanner, your access logs) can read the account and contact id, so use
    opaque contact ids (not email addresses) if that matters.  Embedding them is what lets the
    endpoint work without a token table.  With short ids a token is about 60 characters; with ids
    at consentkit's limit of 128 characters it may be a few hundred (the headers refuse a URL too
    long for a mail header line).

Key rotation
    A :class:`Keyring` holds one or more :class:`SigningKey` (an id and at least 32 random bytes).
    The first key signs; every key verifies.  To rotate, put the new key first and keep the old one
    until the tokens it signed have expired, then remove it: its tokens are then refused
    (:class:`UnknownTokenKeyError`).
"""

from __future__ import annotations

from consentkit.unsubscribe._endpoint import (
    OneClickUnsubscribe,
    UnsubscribeOutcome,
    UnsubscribeResponse,
    UnsubscribeResult,
)
from consentkit.unsubscribe._keys import MIN_SECRET_BYTES, Keyring, SigningKey
from consentkit.unsubscribe._links import ONE_CLICK_POST, UnsubscribeHeaders, UnsubscribeLinks
from consentkit.unsubscribe._tokens import (
    DEFAULT_LIFETIME,
    MAX_LIFETIME,
    MAX_TOKEN_LENGTH,
    MIN_LIFETIME,
    TOKEN_VERSION,
    ExpiredTokenError,
    InvalidTokenError,
    MalformedTokenError,
    TokenClaims,
    TokenMismatchError,
    TokenSignatureError,
    UnknownTokenKeyError,
    UnsubscribeTokens,
)

__all__ = [
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "MAX_TOKEN_LENGTH",
    "MIN_LIFETIME",
    "MIN_SECRET_BYTES",
    "ONE_CLICK_POST",
    "TOKEN_VERSION",
    "ExpiredTokenError",
    "InvalidTokenError",
    "Keyring",
    "MalformedTokenError",
    "OneClickUnsubscribe",
    "SigningKey",
    "TokenClaims",
    "TokenMismatchError",
    "TokenSignatureError",
    "UnknownTokenKeyError",
    "UnsubscribeHeaders",
    "UnsubscribeLinks",
    "UnsubscribeOutcome",
    "UnsubscribeResponse",
    "UnsubscribeResult",
    "UnsubscribeTokens",
]

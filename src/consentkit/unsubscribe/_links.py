"""The links and headers of each message: :class:`UnsubscribeLinks` and
:class:`UnsubscribeHeaders`, with the checks of the base URL and the mailto address."""

from __future__ import annotations

import re
import urllib.parse
from datetime import datetime
from typing import Final

import attrs

from consentkit.channels import EMAIL, Channel
from consentkit.errors import ValidationError
from consentkit.model import normalize_email
from consentkit.unsubscribe._tokens import UnsubscribeTokens

ONE_CLICK_POST: Final = "List-Unsubscribe=One-Click"
"""The value of the ``List-Unsubscribe-Post`` header, and the body a one-click POST carries."""
# A mail header line is at most 998 characters (RFC 5322 2.1.1); one URI cannot be folded.
_MAX_URI_LENGTH: Final = 900


_URL_FORBIDDEN_RE: Final = re.compile(r"[^\x21-\x7e]|[<>\",\\^`{|}]")


def _base_url(value: object, allow_http: bool) -> str:
    if not isinstance(value, str):
        raise ValidationError("base_url", f"expected a string URL, got {type(value).__name__}")
    bad = _URL_FORBIDDEN_RE.search(value)
    if bad is not None:
        raise ValidationError(
            "base_url",
            f"{value!r:.120} contains {bad.group()!r}, which a List-Unsubscribe header cannot "
            "carry: percent-encode it (and use the ASCII form of an international domain)",
        )
    try:
        parts = urllib.parse.urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number from 0 to 65535
    except ValueError as error:
        raise ValidationError("base_url", f"{value!r:.120} is not a URL: {error}") from None
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme.lower() not in allowed:
        raise ValidationError(
            "base_url",
            f"{value!r:.120} must be an https:// URL (RFC 8058 one-click needs HTTPS); "
            "allow_http=True is for tests only",
        )
    if not parts.hostname or "@" in parts.netloc:
        raise ValidationError(
            "base_url", f"{value!r:.120} needs a host and no user name or password"
        )
    if "#" in value:
        raise ValidationError("base_url", f"{value!r:.120} must not have a #fragment")
    names = [name for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    if "token" in names:
        raise ValidationError(
            "base_url", f"{value!r:.120} already has a token parameter; the links add their own"
        )
    return value


_MAILTO_LOCAL_SAFE: Final = "!$'*+-._~"
_ASCII_DOMAIN_RE: Final = re.compile(r"[A-Za-z0-9.-]+")


def _mailto(value: object) -> str | None:
    if value is None:
        return None
    address = normalize_email(value, "mailto")
    local, _, domain = address.rpartition("@")
    if not _ASCII_DOMAIN_RE.fullmatch(domain):
        raise ValidationError(
            "mailto", f"{value!r} needs an ASCII domain (give an international one as xn--...)"
        )
    return f"{urllib.parse.quote(local, safe=_MAILTO_LOCAL_SAFE)}@{domain}"


@attrs.frozen
class UnsubscribeHeaders:
    """The unsubscribe headers of one message, and the link for its body.

    Attributes:
        url: the HTTPS unsubscribe URL; Gmail also wants a visible unsubscribe link in the body,
            and this is the one to use.
        list_unsubscribe: the ``List-Unsubscribe`` value: ``<url>``, then ``<mailto:...>`` when
            the links have a mailto address (the token is in its subject).
        list_unsubscribe_post: the ``List-Unsubscribe-Post`` value,
            ``List-Unsubscribe=One-Click``.
    """

    url: str
    list_unsubscribe: str
    list_unsubscribe_post: str = ONE_CLICK_POST

    def as_dict(self) -> dict[str, str]:
        """``{"List-Unsubscribe": ..., "List-Unsubscribe-Post": ...}``, ready for a message."""
        return {
            "List-Unsubscribe": self.list_unsubscribe,
            "List-Unsubscribe-Post": self.list_unsubscribe_post,
        }


class UnsubscribeLinks:
    """Builds the unsubscribe URL and headers of each message.

    Args:
        tokens: issues the tokens.
        base_url: the endpoint served by :class:`OneClickUnsubscribe`, e.g.
            ``"https://mail.example.com/unsubscribe"``; ``token=...`` is added to its query.
            HTTPS only, without credentials or fragment.
        mailto: an address that also unsubscribes (``List-Unsubscribe`` then offers both); the
            mail's subject is ``unsubscribe <token>``, which your inbound-mail handler passes to
            :meth:`OneClickUnsubscribe.unsubscribe`.
        allow_http: accept an ``http://`` base URL: for tests against a local server only, since
            mail clients offer one-click only for HTTPS.

    Raises:
        ValidationError: naming the argument that is not usable.
    """

    __slots__ = ("_base_url", "_mailto", "_tokens")

    def __init__(
        self,
        tokens: UnsubscribeTokens,
        base_url: str,
        *,
        mailto: str | None = None,
        allow_http: bool = False,
    ) -> None:
        if not isinstance(tokens, UnsubscribeTokens):
            raise ValidationError(
                "tokens", f"expected UnsubscribeTokens, got {type(tokens).__name__}"
            )
        if not isinstance(allow_http, bool):
            raise ValidationError("allow_http", f"expected True or False, got {allow_http!r}")
        self._tokens = tokens
        self._base_url = _base_url(base_url, allow_http)
        self._mailto = _mailto(mailto)

    def url(
        self,
        account: str,
        contact_id: str,
        channel_: Channel | str = EMAIL,
        *,
        now: datetime | None = None,
    ) -> str:
        """The unsubscribe URL of one pair, with a fresh token."""
        return self._url(self._tokens.issue(account, contact_id, channel_, now=now))

    def headers(
        self,
        account: str,
        contact_id: str,
        channel_: Channel | str = EMAIL,
        *,
        now: datetime | None = None,
    ) -> UnsubscribeHeaders:
        """The ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` values for a message to
        *contact_id* on *channel_* (email by default).

        Raises:
            ValidationError: an argument is not valid, or the ids make a URL too long for a mail
                header line (field ``"url"``).
        """
        token = self._tokens.issue(account, contact_id, channel_, now=now)
        url = self._url(token)
        uris = [url]
        if self._mailto is not None:
            uris.append(f"mailto:{self._mailto}?subject=unsubscribe%20{token}")
        for uri in uris:
            if len(uri) > _MAX_URI_LENGTH:
                raise ValidationError(
                    "url",
                    f"the unsubscribe URI would be {len(uri)} characters; a mail header line "
                    f"holds at most 998, so keep it under {_MAX_URI_LENGTH}: use shorter account "
                    "or contact ids, or a shorter base URL",
                )
        return UnsubscribeHeaders(url, ", ".join(f"<{uri}>" for uri in uris))

    def _url(self, token: str) -> str:
        base = self._base_url
        separator = "" if base.endswith(("?", "&")) else "&" if "?" in base else "?"
        return f"{base}{separator}token={token}"

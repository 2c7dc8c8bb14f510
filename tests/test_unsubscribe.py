"""One-click email unsubscribe (RFC 8058): tokens, headers and the endpoint, on every store."""

from __future__ import annotations

import base64
import email.message
import email.policy
import hashlib
import hmac
import string
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consentkit import (
    EMAIL,
    SMS,
    Actor,
    ActorKind,
    ConsentError,
    ConsentService,
    Contact,
    Evidence,
    InMemoryStore,
    NotAuthorizedError,
    OptOutOrigin,
    PairRef,
    Source,
    StorageError,
    SubscriptionState,
    ValidationError,
)
from consentkit.channels import Channel, UnknownChannelError
from consentkit.policy import AdminOnlyPolicy, ProposedChange
from consentkit.storage.sqlite import SQLiteStore
from consentkit.testing import FakeClock, check_replay
from consentkit.testing.strategies import channels, contact_ids
from consentkit.unsubscribe import (
    MAX_TOKEN_LENGTH,
    ONE_CLICK_POST,
    ExpiredTokenError,
    InvalidTokenError,
    Keyring,
    MalformedTokenError,
    OneClickUnsubscribe,
    SigningKey,
    TokenClaims,
    TokenMismatchError,
    TokenSignatureError,
    UnknownTokenKeyError,
    UnsubscribeLinks,
    UnsubscribeOutcome,
    UnsubscribeTokens,
)

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
ADMIN = Actor.admin("acme", "alice")
EVIDENCE = Evidence("web_form", "Yes, email me the newsletter.", "v3")
NEW_KEY = SigningKey("2026-05", bytes(range(32)))
OLD_KEY = SigningKey("2025-11", bytes(range(100, 140)))
KEYRING = Keyring([NEW_KEY, OLD_KEY])
FORM = "application/x-www-form-urlencoded"
BODY = ONE_CLICK_POST.encode()
BASE_URL = "https://mail.example.com/unsubscribe"
B64URL = string.ascii_letters + string.digits + "-_"
UNSUB = SubscriptionState.UNSUBSCRIBED
SUB = SubscriptionState.SUBSCRIBED


def tokens_at(
    when: datetime = T0, keyring: Keyring = KEYRING, lifetime: timedelta = timedelta(days=365)
) -> UnsubscribeTokens:
    return UnsubscribeTokens(keyring, clock=FakeClock(when), lifetime=lifetime, channels=["news"])


# ----------------------------------------------------------------- the documented token layout


def encode_layout(  # noqa: PLR0917 - one argument per field of the layout
    version: int,
    key_id: bytes,
    issued: int,
    lifetime: int,
    channel_key: bytes,
    account: bytes,
    contact_id: bytes,
) -> bytes:
    """The signed part of a token, written from the layout in the module docstring."""
    return (
        bytes([version])
        + bytes([len(key_id)])
        + key_id
        + issued.to_bytes(5, "big")
        + lifetime.to_bytes(4, "big")
        + bytes([len(channel_key)])
        + channel_key
        + len(account).to_bytes(2, "big")
        + account
        + len(contact_id).to_bytes(2, "big")
        + contact_id
    )


def sign(secret: bytes, signed: bytes) -> str:
    tag = hmac.new(secret, b"consentkit/unsubscribe\x00" + signed, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(signed + tag).rstrip(b"=").decode()


def unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


GENUINE = {
    "version": 1,
    "key_id": b"2026-05",
    "issued": int(T0.timestamp()),
    "lifetime": 365 * 86400,
    "channel_key": b"email",
    "account": b"acme",
    "contact_id": b"ann",
}


def test_tokens_follow_the_documented_layout() -> None:
    """A token is exactly the documented bytes and tag, so the layout written down is the real
    one (and the tamper tests below change the fields they mean to)."""
    token = tokens_at().issue("acme", "ann", EMAIL)
    assert token == sign(NEW_KEY.secret, encode_layout(**GENUINE))  # type: ignore[arg-type]
    assert len(token) < 70


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("account", b"beta"),
        ("account", b"acmf"),
        ("contact_id", b"bob"),
        ("contact_id", b"an"),
        ("channel_key", b"sms"),
        ("channel_key", b"news"),
        ("issued", int(T0.timestamp()) + 86400),
        ("lifetime", 3650 * 86400),
        ("key_id", b"2025-11"),
    ],
)
def test_changing_any_field_under_the_old_signature_is_refused(field: str, value: object) -> None:
    """Another account, contact, channel, time, lifetime or (known) key id with the genuine tag
    is refused as a bad signature: every field is signed."""
    genuine = tokens_at().issue("acme", "ann", EMAIL)
    tag = unb64(genuine)[-16:]
    forged = b64(encode_layout(**{**GENUINE, field: value}) + tag)  # type: ignore[arg-type]
    with pytest.raises(TokenSignatureError, match="does not match its signature"):
        tokens_at().verify(forged)


def test_a_version_or_key_id_nobody_knows_is_refused_by_name() -> None:
    """Another version byte is malformed; an unknown key id is named."""
    genuine = unb64(tokens_at().issue("acme", "ann", EMAIL))
    tag = genuine[-16:]
    other_version = b64(encode_layout(**{**GENUINE, "version": 2}) + tag)  # type: ignore[arg-type]
    with pytest.raises(MalformedTokenError, match="version 2"):
        tokens_at().verify(other_version)
    unknown = b64(encode_layout(**{**GENUINE, "key_id": b"2024-01"}) + tag)  # type: ignore[arg-type]
    with pytest.raises(UnknownTokenKeyError, match="2024-01") as refused:
        tokens_at().verify(unknown)
    assert refused.value.key_id == "2024-01"


def test_a_token_signed_under_another_secret_with_the_same_key_id_is_refused() -> None:
    """Key ids are names, not proof: the secret decides."""
    same_name = Keyring([SigningKey("2026-05", b"\x07" * 32)])
    impostor = UnsubscribeTokens(same_name, clock=FakeClock(T0))
    with pytest.raises(TokenSignatureError):
        tokens_at().verify(impostor.issue("acme", "ann", EMAIL))


# ------------------------------------------------------------------------------ round trips


@given(
    account=contact_ids(),
    contact=contact_ids(),
    ch=channels(),
    issued=st.datetimes(datetime(1970, 1, 1), datetime(8990, 1, 1), timezones=st.just(UTC)),
    days=st.integers(30, 3650),
)
def test_every_issued_token_verifies_to_what_it_was_issued_for(
    account: str, contact: str, ch: Channel, issued: datetime, days: int
) -> None:
    """Round trip: any ids (non-ASCII too), channel, issue time and lifetime come back."""
    tokens = UnsubscribeTokens(
        KEYRING, clock=FakeClock(issued), lifetime=timedelta(days=days), channels=[ch]
    )
    token = tokens.issue(account, contact, ch)
    assert len(token) <= MAX_TOKEN_LENGTH
    whole_second = issued.replace(microsecond=0)
    claims = tokens.verify(token, account=account, contact_id=contact, channel_=ch)
    assert claims == TokenClaims(
        account=account,
        contact_id=contact,
        channel=ch,
        key_id="2026-05",
        issued_at=whole_second,
        expires_at=whole_second + timedelta(days=days),
    )


def test_the_longest_ids_still_make_a_token() -> None:
    """128 four-byte characters per id stay within the token's length limit."""
    tokens = tokens_at()
    token = tokens.issue("\U0001f600" * 128, "\U00010348" * 128, EMAIL)
    assert len(token) <= MAX_TOKEN_LENGTH
    assert tokens.verify(token).contact_id == "\U00010348" * 128


# ------------------------------------------------------------------------------------ tampering


@st.composite
def tokens_and_positions(draw: st.DrawFn) -> tuple[str, int]:
    token = tokens_at().issue(draw(contact_ids()), draw(contact_ids()), EMAIL)
    return token, draw(st.integers(0, len(token) - 1))


@given(tokens_and_positions(), st.sampled_from(B64URL))
def test_changing_any_character_is_refused(picked: tuple[str, int], replacement: str) -> None:
    """Every other base64url character at any position is refused (also the last one, whose
    unused bits would otherwise give a second spelling of the same token)."""
    token, position = picked
    if token[position] == replacement:
        return
    tampered = token[:position] + replacement + token[position + 1 :]
    with pytest.raises(InvalidTokenError):
        tokens_at().verify(tampered)


@given(tokens_and_positions(), st.integers(1, 255))
def test_flipping_any_bit_of_any_byte_is_refused(picked: tuple[str, int], mask: int) -> None:
    """Any change to any byte of the decoded token (fields, lengths, tag) is refused."""
    token, position = picked
    data = bytearray(unb64(token))
    index = position % len(data)
    data[index] ^= mask
    with pytest.raises(InvalidTokenError):
        tokens_at().verify(b64(bytes(data)))


def test_the_last_character_has_one_spelling() -> None:
    """A token whose last character only differs in unused bits is refused, though base64
    decoders ignore those bits."""
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    # An id length whose token is not a multiple of 3 bytes leaves unused bits at its end.
    token = next(
        t
        for t in (tokens_at().issue("acme", "a" * n) for n in range(1, 4))
        if len(unb64(t)) % 3
    )
    variant = token[:-1] + alphabet[alphabet.index(token[-1]) ^ 1]
    assert unb64(variant) == unb64(token)
    with pytest.raises(MalformedTokenError, match="canonical"):
        tokens_at().verify(variant)


def test_every_truncation_is_malformed() -> None:
    """Each prefix of a token is refused as malformed, naming where it ends."""
    token = tokens_at().issue("acme", "ann", EMAIL)
    for length in range(len(token)):
        with pytest.raises(MalformedTokenError):
            tokens_at().verify(token[:length])
    with pytest.raises(MalformedTokenError, match="truncated: it ends inside the signature"):
        tokens_at().verify(b64(unb64(token)[:-1]))


@given(st.text(B64URL, min_size=1, max_size=40))
def test_anything_appended_is_refused(extra: str) -> None:
    """A token with more characters after it is refused as malformed (over-long)."""
    token = tokens_at().issue("acme", "ann", EMAIL)
    with pytest.raises(MalformedTokenError):
        tokens_at().verify(token + extra)


def test_bytes_after_the_signature_are_named() -> None:
    """Whole extra bytes are reported as such."""
    token = tokens_at().issue("acme", "ann", EMAIL)
    with pytest.raises(MalformedTokenError, match="2 unexpected byte"):
        tokens_at().verify(b64(unb64(token) + b"\x00\x01"))


@pytest.mark.parametrize(
    ("garbage", "match"),
    [
        ("", "missing"),
        ("not a token", "outside base64url"),
        ("AQ==", "outside base64url"),
        ("A", "length"),
        ("AQ", "truncated"),
        ("A" * (MAX_TOKEN_LENGTH + 1), "no token is longer"),
        (None, "expected a string"),
        (b"AQID", "expected a string"),
        (12345, "expected a string"),
    ],
)
def test_garbage_is_malformed(garbage: object, match: str) -> None:
    """Anything that is not a token at all is a MalformedTokenError on field "token"."""
    with pytest.raises(MalformedTokenError, match=match) as refused:
        tokens_at().verify(garbage)
    assert refused.value.field == "token"
    assert isinstance(refused.value, ValidationError)


@given(st.text(max_size=200))
def test_random_text_never_crashes_verify(text: str) -> None:
    """Arbitrary text is refused with an InvalidTokenError, never another exception."""
    with pytest.raises(InvalidTokenError):
        tokens_at().verify(text)


# ----------------------------------------------------------------- mismatch, expiry, rotation


@pytest.mark.parametrize(
    ("expected", "mismatched"),
    [
        ({"account": "beta"}, "account"),
        ({"contact_id": "bob"}, "contact_id"),
        ({"channel_": SMS}, "channel"),
        ({"channel_": "news"}, "channel"),
    ],
)
def test_a_token_does_not_verify_for_another_pair(
    expected: dict[str, object], mismatched: str
) -> None:
    """A genuine token for (acme, ann, email) is refused for any other account, contact or
    channel the caller expects."""
    token = tokens_at().issue("acme", "ann", EMAIL)
    with pytest.raises(TokenMismatchError) as refused:
        tokens_at().verify(token, **expected)  # type: ignore[arg-type]
    assert refused.value.mismatched == mismatched
    assert tokens_at().verify(token, account="acme", contact_id="ann", channel_="EMAIL")


def test_expiry_boundary() -> None:
    """A token works until the last second of its lifetime and is refused from its expiry on."""
    clock = FakeClock(T0 + timedelta(microseconds=900_000))
    tokens = UnsubscribeTokens(KEYRING, clock=clock, lifetime=timedelta(days=30))
    token = tokens.issue("acme", "ann")
    expiry = T0 + timedelta(days=30)  # the issue time counts in whole seconds
    clock.set(expiry - timedelta(microseconds=1))
    assert tokens.verify(token).expires_at == expiry
    clock.set(expiry)
    with pytest.raises(ExpiredTokenError) as refused:
        tokens.verify(token)
    assert refused.value.expired_at == expiry
    assert refused.value.http_status == 410
    assert tokens.verify(token, now=expiry - timedelta(seconds=1)).contact_id == "ann"


def test_rotation_old_key_verifies_new_key_signs_removed_key_is_refused() -> None:
    """Put the new key first: it signs, the old one still verifies; once removed, the old
    key's tokens are refused by name."""
    before = tokens_at(keyring=Keyring([OLD_KEY]))
    old_token = before.issue("acme", "ann")
    rotated = tokens_at(keyring=Keyring([NEW_KEY, OLD_KEY]))
    assert rotated.verify(old_token).key_id == "2025-11"
    new_token = rotated.issue("acme", "ann")
    assert rotated.verify(new_token).key_id == "2026-05"
    with pytest.raises(UnknownTokenKeyError, match="2026-05"):
        before.verify(new_token)
    after = tokens_at(keyring=Keyring([NEW_KEY]))
    assert after.verify(new_token).key_id == "2026-05"
    with pytest.raises(UnknownTokenKeyError, match="'2025-11', which is not in the keyring"):
        after.verify(old_token)


# -------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: SigningKey("k", b"short"), "key.secret"),
        (lambda: SigningKey("k", "x" * 40), "key.secret"),
        (lambda: SigningKey("", b"x" * 32), "key.id"),
        (lambda: SigningKey("key id", b"x" * 32), "key.id"),
        (lambda: SigningKey("k" * 33, b"x" * 32), "key.id"),
        (lambda: Keyring([]), "keyring"),
        (lambda: Keyring("k1"), "keyring"),
        (lambda: Keyring([NEW_KEY, NEW_KEY]), "keyring"),
        (lambda: Keyring([("k1",)]), "keyring"),
        (lambda: UnsubscribeTokens("secret"), "keyring"),  # type: ignore[arg-type]
        (lambda: UnsubscribeTokens(KEYRING, clock="utc"), "clock"),  # type: ignore[arg-type]
        (lambda: UnsubscribeTokens(KEYRING, lifetime=timedelta(days=29)), "lifetime"),
        (lambda: UnsubscribeTokens(KEYRING, lifetime=timedelta(days=3651)), "lifetime"),
        (lambda: UnsubscribeTokens(KEYRING, lifetime=30), "lifetime"),  # type: ignore[arg-type]
        (lambda: tokens_at().issue("", "ann"), "account"),
        (lambda: tokens_at().issue("acme", " ann"), "contact_id"),
        (lambda: tokens_at().issue("acme", None), "contact_id"),  # type: ignore[arg-type]
        (lambda: tokens_at().issue("acme", "ann", "smss"), "channel"),
        (lambda: tokens_at().issue("acme", "ann", 3), "channel"),  # type: ignore[arg-type]
        (lambda: tokens_at().issue("acme", "ann", now=datetime(2026, 5, 1)), "now"),
        (lambda: tokens_at().verify("x", account=""), "account"),
    ],
)
def test_bad_arguments_name_their_field(make: object, field: str) -> None:
    """Every constructor and method refuses bad input with a ValidationError naming it."""
    assert callable(make)
    with pytest.raises(ValidationError) as refused:
        make()
    assert refused.value.field == field


def test_keys_accept_pairs_and_hide_their_secret() -> None:
    """(id, secret) pairs make keys; repr never shows a secret; generated keys are random."""
    ring = Keyring([("a", b"s" * 32), SigningKey.generate("b")])
    assert ring.signing_key.id == "a"
    assert ring.get("b") is not None
    assert ring.get("c") is None
    assert "sss" not in repr(ring)
    assert SigningKey.generate("x").secret != SigningKey.generate("x").secret


def test_an_undeclared_channel_in_a_genuine_token_is_refused() -> None:
    """A verifier that does not declare the token's custom channel refuses it."""
    token = tokens_at().issue("acme", "ann", "news")
    strict = UnsubscribeTokens(KEYRING, clock=FakeClock(T0))
    with pytest.raises(InvalidTokenError, match="'news', which is not declared"):
        strict.verify(token)


def test_token_errors_have_codes_of_their_own() -> None:
    """Each token error has its own stable code; an expired link answers 410, others 400."""
    classes: list[type[InvalidTokenError]] = [
        InvalidTokenError,
        MalformedTokenError,
        UnknownTokenKeyError,
        TokenSignatureError,
        ExpiredTokenError,
        TokenMismatchError,
    ]
    codes = [cls.code for cls in classes]
    assert len(set(codes)) == len(codes)
    assert {cls: cls.http_status for cls in classes} == {
        **dict.fromkeys(classes, 400),
        ExpiredTokenError: 410,
    }
    assert all(issubclass(cls, ValidationError) for cls in classes)


# ---------------------------------------------------------------------------------- headers


def test_headers_carry_the_https_link_and_the_one_click_post() -> None:
    """List-Unsubscribe holds <https://...?token=...> then <mailto:...> with the token in the
    subject; List-Unsubscribe-Post is List-Unsubscribe=One-Click."""
    tokens = tokens_at()
    links = UnsubscribeLinks(tokens, BASE_URL, mailto="Unsubscribe@Example.COM")
    headers = links.headers("acme", "ann")
    token = tokens.issue("acme", "ann")
    assert headers.url == f"{BASE_URL}?token={token}"
    mailto = f"mailto:Unsubscribe@example.com?subject=unsubscribe%20{token}"
    assert headers.list_unsubscribe == f"<{BASE_URL}?token={token}>, <{mailto}>"
    assert headers.as_dict() == {
        "List-Unsubscribe": headers.list_unsubscribe,
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(headers.url).query)
    assert tokens.verify(query["token"][0]).contact_id == "ann"
    assert links.url("acme", "ann") == headers.url
    assert UnsubscribeLinks(tokens, BASE_URL).headers("acme", "ann").list_unsubscribe == (
        f"<{headers.url}>"
    )


def test_headers_survive_a_real_message() -> None:
    """Set on an email.message.EmailMessage, the headers fold within mail's line limit and read
    back unchanged, even with long ids."""
    links = UnsubscribeLinks(tokens_at(), BASE_URL, mailto="unsubscribe@example.com")
    headers = links.headers("acme-" + "a" * 120, "contact-" + "c" * 120)
    # The default policies fold at 78 columns by RFC 2047-encoding a long URL, which mail
    # clients do not decode in List-Unsubscribe: docs/unsubscribe.md says to use this one.
    message = email.message.EmailMessage(policy=email.policy.SMTP.clone(max_line_length=998))
    for name, value in headers.as_dict().items():
        message[name] = value
    message.set_content("Hello")
    raw = message.as_bytes()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert b"=?" not in raw
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(parsed["List-Unsubscribe"]) == headers.list_unsubscribe
    assert str(parsed["List-Unsubscribe-Post"]) == ONE_CLICK_POST


def test_a_url_too_long_for_a_header_line_is_refused() -> None:
    """Ids at the length limit in four-byte characters would overflow a header line."""
    links = UnsubscribeLinks(tokens_at(), BASE_URL)
    with pytest.raises(ValidationError, match="998") as refused:
        links.headers("\U0001f600" * 128, "\U0001f600" * 128)
    assert refused.value.field == "url"


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://mail.example.com/u?list=news", "https://mail.example.com/u?list=news&token="),
        ("https://mail.example.com/u?", "https://mail.example.com/u?token="),
        ("https://mail.example.com:8443/u", "https://mail.example.com:8443/u?token="),
    ],
)
def test_the_token_joins_an_existing_query(base_url: str, expected: str) -> None:
    """The base URL's own query is kept and the token appended to it."""
    assert UnsubscribeLinks(tokens_at(), base_url).url("acme", "ann").startswith(expected)


@pytest.mark.parametrize(
    ("base_url", "match"),
    [
        ("http://mail.example.com/u", "https"),
        ("ftp://mail.example.com/u", "https"),
        ("mail.example.com/u", "https"),
        ("https:///u", "host"),
        ("https://user:pw@mail.example.com/u", "user name"),
        ("https://mail.example.com/u#top", "fragment"),
        ("https://mail.example.com/u?token=1", "token parameter"),
        ("https://mail.example.com/a b", "' '"),
        ("https://mail.example.com/<u>", "'<'"),
        ("https://mail.example.com/u,v", "','"),
        ("https://bücher.example/u", "ASCII"),
        ("https://mail.example.com:99999/u", "not a URL"),
        (None, "expected a string"),
    ],
)
def test_base_urls_that_cannot_serve_one_click_are_refused(base_url: object, match: str) -> None:
    """The base URL is HTTPS, has a host, no credentials, fragment, token or unsafe character."""
    with pytest.raises(ValidationError, match=match) as refused:
        UnsubscribeLinks(tokens_at(), base_url)  # type: ignore[arg-type]
    assert refused.value.field == "base_url"


def test_http_is_only_for_tests_when_asked_for() -> None:
    """allow_http=True accepts a local http:// endpoint; it must be a real bool."""
    links = UnsubscribeLinks(tokens_at(), "http://localhost:8000/u", allow_http=True)
    assert links.url("acme", "ann").startswith("http://localhost:8000/u?token=")
    with pytest.raises(ValidationError, match="allow_http"):
        UnsubscribeLinks(tokens_at(), BASE_URL, allow_http="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("mailto", ["not an address", "u@bücher.example", 42])
def test_bad_mailto_addresses_are_refused(mailto: object) -> None:
    """The mailto address must be an ASCII-domain email address."""
    with pytest.raises(ValidationError) as refused:
        UnsubscribeLinks(tokens_at(), BASE_URL, mailto=mailto)  # type: ignore[arg-type]
    assert refused.value.field == "mailto"


def test_links_need_tokens() -> None:
    """UnsubscribeLinks refuses anything but UnsubscribeTokens."""
    with pytest.raises(ValidationError, match="tokens"):
        UnsubscribeLinks(KEYRING, BASE_URL)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the endpoint


@attrs.frozen
class Setup:
    """A service with ann and bob subscribed to email and SMS in acme, and an ann in beta."""

    service: ConsentService
    clock: FakeClock
    handler: OneClickUnsubscribe

    def token(self, contact_id: str = "ann", ch: Channel | str = EMAIL) -> str:
        return self.handler.tokens.issue("acme", contact_id, ch)

    def events(self) -> int:
        return sum(
            len(self.service.history(ADMIN, cid)) for cid in ("ann", "bob")
        ) + len(self.service.history(Actor.admin("beta", "root"), "ann"))


@pytest.fixture(params=["memory", "sqlite"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """The same scenario on the in-memory store and on SQLite in a temp file."""
    store = InMemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "c.db")
    clock = FakeClock(T0, tick=timedelta(seconds=1))
    service = ConsentService(store, clock=clock, channels=["news"])
    for account in ("acme", "beta"):
        admin = Actor.admin(account, "root")
        people = ["ann", "bob"] if account == "acme" else ["ann"]
        service.upsert_contacts(
            admin, [Contact(account, cid, email=f"{cid}@example.com") for cid in people]
        )
        service.opt_in(admin, people, [EMAIL, SMS], evidence=EVIDENCE)
    yield Setup(service, clock, OneClickUnsubscribe(service, KEYRING))
    if isinstance(store, SQLiteStore):
        store.close()


def states(setup: Setup) -> dict[tuple[str, str, str], SubscriptionState]:
    found: dict[tuple[str, str, str], SubscriptionState] = {}
    for account, cid in (("acme", "ann"), ("acme", "bob"), ("beta", "ann")):
        for ch in (EMAIL, SMS):
            found[account, cid, ch.key] = setup.service.state(
                Actor.admin(account, "root"), cid, ch
            )
    return found


ALL_SUBSCRIBED = {
    (account, cid, ch): SUB
    for account, cid in (("acme", "ann"), ("acme", "bob"), ("beta", "ann"))
    for ch in ("email", "sms")
}


@pytest.mark.parametrize("method", ["GET", "HEAD", "get"])
def test_get_changes_nothing_and_offers_the_button(setup: Setup, method: str) -> None:
    """A GET (a mail scanner following the link) only answers a page whose form POSTs the
    one-click body to the same URL."""
    answer = setup.handler.handle(method, setup.token())
    assert (answer.status, answer.outcome) == (200, UnsubscribeOutcome.CONFIRM)
    assert answer.content_type.startswith("text/html")
    assert '<form method="post">' in answer.body
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in answer.body
    assert answer.claims is not None
    assert answer.claims.contact_id == "ann"
    assert answer.result is None
    assert states(setup) == ALL_SUBSCRIBED
    assert setup.events() == 6


def test_post_unsubscribes_exactly_that_pair_as_the_contact(setup: Setup) -> None:
    """A one-click POST unsubscribes ann from email only, as ann herself, from the link, and
    nothing of bob, of ann's SMS or of the other account's ann."""
    answer = setup.handler.handle("POST", setup.token(), BODY, FORM)
    assert (answer.status, answer.outcome) == (200, UnsubscribeOutcome.UNSUBSCRIBED)
    assert answer.result is not None
    assert answer.result.changed == (PairRef("ann", EMAIL),)
    assert states(setup) == {**ALL_SUBSCRIBED, ("acme", "ann", "email"): UNSUB}
    last = setup.service.history(ADMIN, "ann", EMAIL)[-1]
    assert (last.previous_state, last.new_state) == (SUB, UNSUB)
    assert last.source is Source.UNSUBSCRIBE_LINK
    assert (last.actor.kind, last.actor.id, last.actor.account) == (
        ActorKind.CONTACT,
        "ann",
        "acme",
    )
    assert last.reason == "one_click"
    subscription = setup.service.subscription(ADMIN, "ann", EMAIL)
    assert subscription is not None
    assert subscription.opted_out_by == frozenset({OptOutOrigin.CONTACT})
    assert setup.events() == 7
    check_replay(setup.service.store, "acme")
    check_replay(setup.service.store, "beta")


def test_a_second_post_changes_nothing_and_still_succeeds(setup: Setup) -> None:
    """Idempotent: the repeat answers 200 "already unsubscribed", writes no event, and the
    result names the pair as unchanged; a GET afterwards says so too."""
    token = setup.token()
    setup.handler.handle("POST", token, BODY, FORM)
    history = setup.service.history(ADMIN, "ann")
    again = setup.handler.handle("POST", token, BODY, FORM)
    assert (again.status, again.outcome) == (200, UnsubscribeOutcome.ALREADY_UNSUBSCRIBED)
    assert again.result is not None
    assert (again.result.changed, again.result.unchanged) == ((), (PairRef("ann", EMAIL),))
    assert setup.service.history(ADMIN, "ann") == history
    looked = setup.handler.handle("GET", token)
    assert looked.outcome is UnsubscribeOutcome.ALREADY_UNSUBSCRIBED
    assert setup.service.history(ADMIN, "ann") == history


def multipart(value: str, boundary: str = "b0undary") -> tuple[bytes, str]:
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"{value}\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (BODY, FORM),
        (BODY, "Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
        (BODY + b"\r\n", FORM),
        (BODY, None),
        (ONE_CLICK_POST, FORM),
        (bytearray(BODY), FORM),
        ({"List-Unsubscribe": "One-Click"}, None),
        ({"List-Unsubscribe": ["One-Click"]}, None),
        multipart("One-Click"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_the_one_click_body_is_read_in_each_form_rfc_8058_allows(
    setup: Setup, body: object, content_type: str | None
) -> None:
    """form-urlencoded (Gmail's sample), multipart/form-data (RFC 8058's SHOULD), or a form the
    framework already parsed."""
    answer = setup.handler.handle("POST", setup.token(), body, content_type)  # type: ignore[arg-type]
    assert answer.outcome is UnsubscribeOutcome.UNSUBSCRIBED


def test_a_multipart_body_built_by_an_http_client_is_read(setup: Setup) -> None:
    """The multipart body httpx writes (with its own boundary) is accepted."""
    httpx = pytest.importorskip("httpx")
    request = httpx.Request("POST", BASE_URL, files={"List-Unsubscribe": (None, "One-Click")})
    answer = setup.handler.handle(
        "POST", setup.token(), request.read(), request.headers["content-type"]
    )
    assert answer.outcome is UnsubscribeOutcome.UNSUBSCRIBED


@pytest.mark.parametrize(
    ("body", "content_type", "status", "why"),
    [
        (None, FORM, 400, "empty"),
        (b"", FORM, 400, "no List-Unsubscribe field"),
        (b"List-Unsubscribe=Yes", FORM, 400, "'Yes'"),
        (b"List-Unsubscribe=one-click", FORM, 400, "'one-click'"),
        (b"Unsubscribe=One-Click", FORM, 400, "no List-Unsubscribe field"),
        (b"List-Unsubscribe=One-Click&List-Unsubscribe=No", FORM, 400, "'No'"),
        (b"\xff\xfeList-Unsubscribe=One-Click", FORM, 400, "not a readable form"),
        (b"List-Unsubscribe", FORM, 400, "not a readable form"),
        ({"List-Unsubscribe": "no"}, None, 400, "'no'"),
        ({}, None, 400, "no List-Unsubscribe field"),
        ({"List-Unsubscribe": 1}, None, 400, "not a readable form"),
        (BODY, "text/plain", 415, "text/plain"),
        (BODY, "application/json", 415, "application/json"),
        (BODY + b"&x=" + b"y" * 9000, FORM, 413, "over 8192 bytes"),
        (*multipart("No"), 400, "'No'"),
        (multipart("One-Click")[0], "multipart/form-data", 400, "not a readable form"),
        (BODY, "multipart/form-data; boundary=b0undary", 400, "not a readable form"),
        (multipart("One-Click")[0], "multipart/form-data; boundary=b\r\nX: y", 400, "readable"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_a_post_without_the_one_click_body_is_refused_and_changes_nothing(
    setup: Setup, body: object, content_type: str | None, status: int, why: str
) -> None:
    """A POST must carry List-Unsubscribe=One-Click as a form; anything else is refused with the
    reason, and changes nothing."""
    answer = setup.handler.handle("POST", setup.token(), body, content_type)  # type: ignore[arg-type]
    assert answer.status == status
    assert why in answer.message
    assert answer.result is None
    assert states(setup) == ALL_SUBSCRIBED
    assert setup.events() == 6


def tampered(token: str) -> str:
    data = bytearray(unb64(token))
    data[10] ^= 1
    return b64(bytes(data))


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_bad_tokens_change_nothing_and_map_to_400_or_410(setup: Setup, method: str) -> None:
    """A tampered, unknown-key, missing or garbage token answers 400 and an expired one 410,
    with the error kept for logs; nothing changes."""
    token = setup.token()
    foreign = UnsubscribeTokens(Keyring([SigningKey.generate("other")]), clock=setup.clock)
    cases = [
        (tampered(token), 400, TokenSignatureError),
        (foreign.issue("acme", "ann"), 400, UnknownTokenKeyError),
        (None, 400, MalformedTokenError),
        ("", 400, MalformedTokenError),
        ("%%%", 400, MalformedTokenError),
        (["a", "b"], 400, MalformedTokenError),
    ]
    for bad, status, error in cases:
        answer = setup.handler.handle(method, bad, BODY, FORM)  # type: ignore[arg-type]
        assert (answer.status, answer.outcome) == (status, UnsubscribeOutcome.INVALID_TOKEN)
        assert isinstance(answer.error, error)
        assert answer.claims is None
    setup.clock.advance(days=366)
    expired = setup.handler.handle(method, token, BODY, FORM)
    assert (expired.status, expired.outcome) == (410, UnsubscribeOutcome.EXPIRED_TOKEN)
    assert isinstance(expired.error, ExpiredTokenError)
    assert states(setup) == ALL_SUBSCRIBED
    assert setup.events() == 6


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_contact_the_account_no_longer_has_gets_a_clear_404(setup: Setup, method: str) -> None:
    """A genuine token for a contact that is not (or no longer) in the account answers 404 and
    writes nothing."""
    answer = setup.handler.handle(method, setup.token("ghost"), BODY, FORM)
    assert (answer.status, answer.outcome) == (404, UnsubscribeOutcome.UNKNOWN_CONTACT)
    assert "no subscription" in answer.message
    assert setup.events() == 6


@pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_are_not_allowed(setup: Setup, method: str) -> None:
    """Anything but GET, HEAD and POST answers 405 with Allow, and changes nothing."""
    answer = setup.handler.handle(method, setup.token(), BODY, FORM)
    assert (answer.status, answer.outcome) == (405, UnsubscribeOutcome.METHOD_NOT_ALLOWED)
    assert ("Allow", "GET, HEAD, POST") in answer.headers
    assert states(setup) == ALL_SUBSCRIBED


def test_answers_are_never_redirects_and_never_leak_the_url(setup: Setup) -> None:
    """RFC 8058 forbids redirects; the token-bearing URL is not sent on as a referrer or
    cached."""
    answers = [
        setup.handler.handle("GET", setup.token()),
        setup.handler.handle("POST", setup.token(), BODY, FORM),
        setup.handler.handle("POST", "bad", BODY, FORM),
        setup.handler.handle("PUT", setup.token()),
    ]
    for answer in answers:
        assert not 300 <= answer.status < 400
        headers = dict(answer.headers)
        assert "Location" not in headers
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Cache-Control"] == "no-store"
        assert headers["Content-Type"] == answer.content_type


def test_the_links_channel_is_the_one_unsubscribed(setup: Setup) -> None:
    """A token for SMS, or for a registered custom channel, unsubscribes that channel only."""
    setup.handler.handle("POST", setup.token("bob", SMS), BODY, FORM)
    setup.handler.handle("POST", setup.token("bob", "news"), BODY, FORM)
    assert states(setup) == {**ALL_SUBSCRIBED, ("acme", "bob", "sms"): UNSUB}
    assert setup.service.state(ADMIN, "bob", "news") is UNSUB


def test_a_token_for_a_channel_the_service_does_not_know_is_invalid(setup: Setup) -> None:
    """Tokens issued elsewhere for a channel this service never declared are refused."""
    elsewhere = UnsubscribeTokens(KEYRING, clock=setup.clock, channels=["promo"])
    answer = setup.handler.handle("POST", elsewhere.issue("acme", "ann", "promo"), BODY, FORM)
    assert (answer.status, answer.outcome) == (400, UnsubscribeOutcome.INVALID_TOKEN)
    lax = OneClickUnsubscribe(setup.service, elsewhere)
    answer = lax.handle("POST", elsewhere.issue("acme", "ann", "promo"), BODY, FORM)
    assert (answer.status, answer.outcome) == (400, UnsubscribeOutcome.INVALID_TOKEN)
    assert "does not know" in str(answer.error)
    assert setup.events() == 6


def test_unsubscribe_is_the_endpoint_without_http(setup: Setup) -> None:
    """unsubscribe(token) (e.g. from the mailto subject) does the same change and is
    idempotent; bad tokens raise their error."""
    links = UnsubscribeLinks(setup.handler.tokens, BASE_URL, mailto="u@example.com")
    header = links.headers("acme", "ann").list_unsubscribe
    subject_token = urllib.parse.unquote(header.rsplit("subject=", 1)[1].rstrip(">"))
    first = setup.handler.unsubscribe(subject_token.removeprefix("unsubscribe "))
    assert first.changed
    assert first.claims.contact_id == "ann"
    assert not setup.handler.unsubscribe(setup.token()).changed
    with pytest.raises(TokenSignatureError):
        setup.handler.unsubscribe(tampered(setup.token()))
    assert setup.events() == 7


def test_the_policy_still_decides(setup: Setup) -> None:
    """A custom policy that refuses contacts' own unsubscribes gets a 403, and nothing changes:
    the endpoint has no path around the policy."""

    @attrs.frozen
    class NoSelfService(AdminOnlyPolicy):
        def check_change(self, change: ProposedChange) -> ConsentError | None:
            if change.actor.kind is ActorKind.CONTACT:
                return NotAuthorizedError("contacts must call us")
            return super().check_change(change)

    service = ConsentService(setup.service.store, clock=setup.clock, policy=NoSelfService())
    answer = OneClickUnsubscribe(service, KEYRING).handle("POST", setup.token(), BODY, FORM)
    assert (answer.status, answer.outcome) == (403, UnsubscribeOutcome.REFUSED)
    assert isinstance(answer.error, NotAuthorizedError)
    assert states(setup) == ALL_SUBSCRIBED


def test_a_store_failure_answers_503_so_the_client_retries(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """StorageError becomes 503 with Retry-After and the error kept."""

    def broken(*args: object, **kwargs: object) -> None:
        raise StorageError("disk full")

    monkeypatch.setattr(setup.service, "unsubscribe", broken)
    answer = setup.handler.handle("POST", setup.token(), BODY, FORM)
    assert (answer.status, answer.outcome) == (503, UnsubscribeOutcome.UNAVAILABLE)
    assert ("Retry-After", "60") in answer.headers
    assert isinstance(answer.error, StorageError)


def test_the_reason_code_is_configurable_and_checked(setup: Setup) -> None:
    """reason=None records none; an invalid code is refused at construction."""
    OneClickUnsubscribe(setup.service, KEYRING, reason=None).handle(
        "POST", setup.token(), BODY, FORM
    )
    assert setup.service.history(ADMIN, "ann", EMAIL)[-1].reason is None
    with pytest.raises(ValidationError) as refused:
        OneClickUnsubscribe(setup.service, KEYRING, reason="One Click")
    assert refused.value.field == "reason"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.handler.handle(b"POST", "t"), "method"),
        (lambda s: s.handler.handle("POST", "t", 42), "body"),
        (lambda s: s.handler.handle("POST", "t", BODY, b"form"), "content_type"),
        (lambda s: OneClickUnsubscribe("service", KEYRING), "service"),  # type: ignore[arg-type]
        (lambda s: OneClickUnsubscribe(s.service, "keys"), "tokens"),  # type: ignore[arg-type]
    ],
)
def test_the_endpoint_refuses_arguments_no_framework_gives(
    setup: Setup, call: object, field: str
) -> None:
    """Programming errors are ValidationErrors naming the argument, not TypeErrors."""
    assert callable(call)
    with pytest.raises(ValidationError) as refused:
        call(setup)
    assert refused.value.field == field


def test_unknown_channel_errors_keep_their_type_when_issuing() -> None:
    """A typo in the channel when issuing is the usual "did you mean" error."""
    with pytest.raises(UnknownChannelError, match="did you mean 'email'"):
        tokens_at().issue("acme", "ann", "emial")

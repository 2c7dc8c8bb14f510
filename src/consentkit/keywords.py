"""Classify inbound SMS/WhatsApp replies: opt-out, possible opt-out, opt-in, help or nothing.

A reply is an *opt-out* when the whole message, once normalised (:func:`normalize`), is an opt-out
keyword ("STOP", " stop! ", "Opt-Out", "ＳＴＯＰ", "🛑 stop 🛑"...).  The FCC lets a consumer revoke
consent "by any reasonable means", so a longer message that contains an opt-out keyword as whole
word(s) ("please stop texting me") is a *possible opt-out*: what happens to it is a policy setting,
never decided here.  Opt-in and help keywords only count as the whole message, as at Twilio.

The module is pure (no I/O, no global mutable state) and a :class:`KeywordMatcher` is immutable, so
one matcher can be shared by every thread of a host app.
"""

from __future__ import annotations

import enum
import re
import string
import types
import unicodedata
from collections.abc import Iterable, Mapping

import attrs

from consentkit.errors import ValidationError

__all__ = [
    "DEFAULT_KEYWORDS",
    "LOCALE_KEYWORDS",
    "Classification",
    "KeywordMatch",
    "KeywordMatcher",
    "KeywordSet",
    "normalize",
]

# A KeywordMatch keeps this much of the normalised body: one SMS segment is enough to audit why a
# reply was classified, and a 1 MB body must not be copied into every event.
_PREVIEW_CHARS = 160

# Only this much of the normalised body is searched for an opt-out keyword inside a longer message.
# A revocation in a conversational reply comes early ("stop texting me", "please remove me"), while
# this search is the one step whose cost grows with the body times the number of keywords; the cap
# keeps a pasted or hostile 1 MB body about as cheap as a long SMS.  The exact-keyword check is not
# capped: it always compares the whole normalised message.
_POSSIBLE_SCAN_CHARS = 2_000


class Classification(enum.Enum):
    """What an inbound reply asks for."""

    OPT_OUT = "opt_out"
    """The whole message is an opt-out keyword: stop sending on this channel group."""
    POSSIBLE_OPT_OUT = "possible_opt_out"
    """An opt-out keyword occurs as whole word(s) in a longer message; policy decides what to do."""
    OPT_IN = "opt_in"
    """The whole message is an opt-in keyword (START, YES, UNSTOP...)."""
    HELP = "help"
    """The whole message is a help keyword: reply with the help text, change nothing."""
    NONE = "none"
    """An ordinary reply."""


# --- normalisation -------------------------------------------------------------------------------

# Unicode categories removed wherever they occur: combining marks (accents once NFD has split them
# off, variation selectors such as the emoji VS16) and format characters (ZWJ, zero-width spaces,
# soft hyphens, bidi marks, emoji tag sequences), which are invisible in the message as displayed.
_DROPPED_CATEGORIES = frozenset({"Mn", "Me", "Cf"})
# Categories that separate words like a space: controls and NUL, lone surrogates (a broken UTF-16
# decoder upstream must not glue two words together), dashes and connectors ("opt-out", "opt_out").
_SPACE_CATEGORIES = frozenset({"Cc", "Cs", "Pd", "Pc", "Zs", "Zl", "Zp"})
# Removed only at either end of the message: punctuation, symbols, emoji, private-use characters and
# code points this Python's Unicode database does not know yet (newer emoji arrive there first).
_EDGE_JUNK_CATEGORIES = frozenset(
    {"Pe", "Pf", "Pi", "Po", "Ps", "Sc", "Sk", "Sm", "So", "Cn", "Co"}
)

_ASCII_EDGE_JUNK = string.punctuation + " "
_ASCII_PUNCTUATION_TO_SPACE = bytes.maketrans(
    string.punctuation.encode("ascii"), b" " * len(string.punctuation)
)
_ASCII_CHARS = frozenset(map(chr, range(0x80)))
_ASCII_SPACE_LIKE = frozenset(map(chr, [*range(0x20), 0x7F])) | {"-", "_"}
_ASCII_EDGE_JUNK_CHARS = frozenset(string.punctuation) - _ASCII_SPACE_LIKE
_ASCII_TABLE = bytes.maketrans(
    bytes([*range(0x20), 0x7F]) + b"-_" + string.ascii_uppercase.encode("ascii"),
    b" " * 33 + b"  " + string.ascii_lowercase.encode("ascii"),
)


def normalize(body: str) -> str:
    """Return the form of *body* that keywords are matched against.

    NFKC (full-width and compatibility forms), case folding, accents removed ("ARRÊT" is "arret"),
    hyphens and underscores read as spaces ("Opt-Out" is "opt out"; "optout" stays one word),
    whitespace, controls, NUL and lone surrogates collapsed to single spaces, invisible format
    characters and variation selectors removed, and punctuation, symbols and emoji removed at both
    ends.  Punctuation inside the message is kept.  Never raises on any ``str``.

    Raises:
        ValidationError: *body* is not a ``str``.
    """
    if not isinstance(body, str):
        raise _not_text(body)
    if body.isascii():
        return _normalize_ascii(body)
    return _normalize_unicode(body)


def _not_text(body: object) -> ValidationError:
    return ValidationError(
        "body", f"expected the message text as str, got {type(body).__name__}: decode it first"
    )


def _normalize_ascii(body: str) -> str:
    # Same result as _normalize_unicode for ASCII input (NFKC and NFD change nothing there and case
    # folding is lower()), in a few C-level passes: most replies are ASCII and this is most of what
    # classifying them costs.  One bytes.translate lowers the case and turns hyphens, underscores
    # and control characters into spaces.
    text = body.encode("ascii").translate(_ASCII_TABLE).decode("ascii")
    if "  " in text:
        text = " ".join(text.split())
    return text.strip(_ASCII_EDGE_JUNK)


def _normalize_unicode(body: str) -> str:
    text = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", body).casefold())
    # Characters are classified once per distinct character, not per occurrence, and ASCII ones by
    # fixed sets, so a long body costs a few C-level passes plus a loop over its non-ASCII alphabet.
    present = set(text)
    table: dict[int, str | None] = dict.fromkeys(map(ord, present & _ASCII_SPACE_LIKE), " ")
    edge_junk = present & _ASCII_EDGE_JUNK_CHARS
    for char in present - _ASCII_CHARS:
        category = unicodedata.category(char)
        if category in _DROPPED_CATEGORIES:
            table[ord(char)] = None
        elif category in _SPACE_CATEGORIES:
            table[ord(char)] = " "
        elif category in _EDGE_JUNK_CATEGORIES:
            edge_junk.add(char)
    if table:
        text = text.translate(table)
    text = " ".join(text.split())
    if not text.isascii():
        # NFC puts back what NFD split apart without being a mark (Hangul syllables), so the
        # normalised text still reads like the message.
        text = unicodedata.normalize("NFC", text)
    if not edge_junk:
        return text
    edge_junk.add(" ")
    start, end = 0, len(text)
    while start < end and text[start] in edge_junk:
        start += 1
    while end > start and text[end - 1] in edge_junk:
        end -= 1
    return text[start:end]


# --- keyword sets --------------------------------------------------------------------------------


def _normalized_keywords(field: str, keywords: Iterable[str]) -> frozenset[str]:
    if isinstance(keywords, str):
        raise ValidationError(
            field,
            f"got the single string {keywords!r}: pass a collection of keywords, "
            f"e.g. {{{keywords!r}}}",
        )
    normalized: set[str] = set()
    for keyword in keywords:
        if not isinstance(keyword, str):
            raise ValidationError(field, f"keyword {keyword!r} is not a str")
        form = normalize(keyword)
        if not form:
            raise ValidationError(
                field,
                f"keyword {keyword!r} is empty once normalised (case, accents, punctuation, "
                "symbols and emoji at the ends are ignored): use a word or phrase with letters "
                "or digits",
            )
        normalized.add(form)
    return frozenset(normalized)


@attrs.frozen(init=False)
class KeywordSet:
    """The keywords a matcher recognises, by class, each stored in its :func:`normalize` form.

    A keyword may belong to one class only: a reply must mean one thing.

    Attributes:
        opt_out: whole-message opt-out keywords; also searched for inside longer messages
            (possible opt-out).
        opt_in: whole-message opt-in keywords.
        help: whole-message help keywords.

    Raises:
        ValidationError: a keyword is not a str, is empty once normalised, or is in two classes.
    """

    opt_out: frozenset[str]
    opt_in: frozenset[str]
    help: frozenset[str]

    def __init__(
        self,
        *,
        opt_out: Iterable[str] = (),
        opt_in: Iterable[str] = (),
        help: Iterable[str] = (),
    ) -> None:
        self.__attrs_init__(
            _normalized_keywords("opt_out", opt_out),
            _normalized_keywords("opt_in", opt_in),
            _normalized_keywords("help", help),
        )
        for first, second in (("opt_out", "opt_in"), ("opt_out", "help"), ("opt_in", "help")):
            shared = getattr(self, first) & getattr(self, second)
            if shared:
                names = ", ".join(repr(keyword) for keyword in sorted(shared))
                raise ValidationError(
                    "keywords",
                    f"{names} is in both {first} and {second} (after normalisation): a reply "
                    "must mean one thing, so keep each keyword in one class only",
                )

    def union(self, other: KeywordSet) -> KeywordSet:
        """Return the keywords of both sets, class by class.

        Raises:
            ValidationError: the union puts a keyword in two classes.
        """
        return KeywordSet(
            opt_out=self.opt_out | other.opt_out,
            opt_in=self.opt_in | other.opt_in,
            help=self.help | other.help,
        )


DEFAULT_KEYWORDS = KeywordSet(
    opt_out={
        # FCC 2024 order, 47 CFR 64.1200(a)(10): always honoured.
        "STOP", "QUIT", "END", "REVOKE", "OPT OUT", "CANCEL", "UNSUBSCRIBE",
        # Twilio, AWS and Telnyx defaults on top of those ("OPT-OUT" normalises to "opt out").
        "STOPALL", "STOP ALL", "OPTOUT", "OPT-OUT", "REMOVE", "ARRET", "TD",
    },
    opt_in={"START", "YES", "UNSTOP"},
    help={"HELP", "INFO"},
)  # fmt: skip
"""The English-language carrier and provider keywords: the FCC's seven, Twilio's, AWS's and
Telnyx's "STOP ALL"."""

LOCALE_KEYWORDS: Mapping[str, KeywordSet] = types.MappingProxyType(
    {
        "es": KeywordSet(opt_out={"BAJA"}, opt_in={"ALTA"}, help={"AYUDA"}),
        # Canadian French compliance keywords (ARRET, AIDE, INFO); accents are ignored anyway.
        "fr": KeywordSet(opt_out={"ARRET", "ARRÊT"}, opt_in={"OUI"}, help={"AIDE", "INFO"}),
        "pt-BR": KeywordSet(opt_out={"PARAR", "SAIR"}, opt_in={"SIM"}, help={"AJUDA"}),
    }
)
"""Extra keywords by locale, to add to a base set with :meth:`KeywordMatcher.for_locales`."""

_LOCALE_BY_FOLDED_TAG = {tag.casefold(): tag for tag in LOCALE_KEYWORDS}


def _known_locale(tag: object) -> str:
    if isinstance(tag, str):
        folded = tag.replace("_", "-").casefold()
        known = _LOCALE_BY_FOLDED_TAG.get(folded) or _LOCALE_BY_FOLDED_TAG.get(
            folded.partition("-")[0]
        )
        if known is not None:
            return known
    names = ", ".join(repr(name) for name in sorted(LOCALE_KEYWORDS))
    raise ValidationError(
        "locales",
        f"unknown locale {tag!r}: known locales are {names} (a regional tag such as 'fr-CA' "
        "uses its language's words); pass other words as a KeywordSet in base=",
    )


# --- matching ------------------------------------------------------------------------------------


@attrs.frozen
class KeywordMatch:
    """The classification of one inbound reply.

    Attributes:
        classification: what the reply asks for.
        keyword: the normalised keyword that matched, or ``None`` for :attr:`Classification.NONE`.
        normalized: the normalised body (:func:`normalize`), cut to its first 160 characters.
    """

    classification: Classification
    keyword: str | None
    normalized: str


def _spellings(keyword: str) -> set[str]:
    cased = {keyword, keyword.upper(), keyword.title(), keyword.capitalize()}
    if " " in keyword:
        cased |= {form.replace(" ", "-") for form in cased}
    return {form + end for form in cased for end in ("", ".", "!")}


def _possible_opt_out_pattern(opt_out: frozenset[str]) -> re.Pattern[str] | None:
    if not opt_out:
        return None
    # Longest first, so "stop all" is reported rather than "stop".
    alternatives = sorted(opt_out, key=lambda keyword: (-len(keyword), keyword))
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, alternatives)) + r")(?!\w)")


def _ascii_words(text: str) -> list[bytes]:
    return text.encode("ascii").translate(_ASCII_PUNCTUATION_TO_SPACE).split()


class KeywordMatcher:
    """Classifies inbound replies against one :class:`KeywordSet`.

    Immutable once built; share one instance.  An exact keyword gives ``OPT_OUT``, ``OPT_IN`` or
    ``HELP``; otherwise an opt-out keyword occurring as whole word(s) in the first 2,000 normalised
    characters gives ``POSSIBLE_OPT_OUT`` ("stop texting me", but not "weekend" or "stopped by");
    anything else, including an empty body, gives ``NONE``.

    Attributes:
        keywords: the keyword set this matcher recognises.
    """

    __slots__ = ("_exact", "_keywords", "_possible", "_possible_first_words")

    def __init__(self, keywords: KeywordSet = DEFAULT_KEYWORDS) -> None:
        if not isinstance(keywords, KeywordSet):
            raise ValidationError(
                "keywords", f"expected a KeywordSet, got {type(keywords).__name__}"
            )
        self._keywords = keywords
        # One shared, immutable match per keyword, found by its normalised form or by a common raw
        # spelling ("STOP", "Stop.", "Opt-Out"): exact keywords skip normalising and allocating.
        exact: dict[str, KeywordMatch] = {}
        for classification, words in (
            (Classification.OPT_OUT, keywords.opt_out),
            (Classification.OPT_IN, keywords.opt_in),
            (Classification.HELP, keywords.help),
        ):
            for keyword in words:
                match = KeywordMatch(classification, keyword, keyword)
                for spelling in _spellings(keyword):
                    if normalize(spelling) == keyword:
                        exact[spelling] = match
        self._exact = exact
        self._possible = _possible_opt_out_pattern(keywords.opt_out)
        # In normalised ASCII text the regex's word boundaries are exactly the spaces and
        # punctuation, so a message none of whose words starts an ASCII opt-out keyword cannot
        # match it: a set test on its words rules out most replies at a third of the regex's cost.
        self._possible_first_words = frozenset(
            _ascii_words(keyword)[0] for keyword in keywords.opt_out if keyword.isascii()
        )

    @classmethod
    def for_locales(
        cls, locales: Iterable[str] = (), *, base: KeywordSet = DEFAULT_KEYWORDS
    ) -> KeywordMatcher:
        """Return a matcher for *base* plus the :data:`LOCALE_KEYWORDS` of each locale.

        Tags are matched without regard to case or ``_``/``-``, and a regional tag falls back to
        its language ("fr-CA" uses "fr").

        Raises:
            ValidationError: a locale is unknown, or the union puts a keyword in two classes.
        """
        if isinstance(locales, str):
            raise ValidationError(
                "locales", f"got the single string {locales!r}: pass a list, e.g. [{locales!r}]"
            )
        keywords = base
        for tag in locales:
            keywords = keywords.union(LOCALE_KEYWORDS[_known_locale(tag)])
        return cls(keywords)

    @property
    def keywords(self) -> KeywordSet:
        """The keyword set this matcher recognises."""
        return self._keywords

    def classify(self, body: str) -> KeywordMatch:
        """Classify one inbound message body.  Never raises on a ``str``, whatever it holds.

        Raises:
            ValidationError: *body* is not a ``str``.
        """
        if type(body) is not str and not isinstance(body, str):
            raise _not_text(body)
        # str.strip() returns the body itself when there is nothing to strip, so this costs little
        # on ordinary replies and catches " STOP\n" without normalising.
        match = self._exact.get(body.strip())
        if match is not None:
            return match
        text = _normalize_ascii(body) if body.isascii() else _normalize_unicode(body)
        match = self._exact.get(text)
        if match is not None:
            return match
        keyword = self._possible_opt_out(text)
        if keyword is None:
            return KeywordMatch(Classification.NONE, None, text[:_PREVIEW_CHARS])
        return KeywordMatch(Classification.POSSIBLE_OPT_OUT, keyword, text[:_PREVIEW_CHARS])

    def _possible_opt_out(self, text: str) -> str | None:
        if self._possible is None:
            return None
        if len(text) > _POSSIBLE_SCAN_CHARS:
            # Cut at a space so that a word cut in half ("stop|ped") cannot pass for a keyword.
            text = text[: max(text.rfind(" ", 0, _POSSIBLE_SCAN_CHARS + 1), 0)]
        if text.isascii() and self._possible_first_words.isdisjoint(_ascii_words(text)):
            return None
        found = self._possible.search(text)
        return None if found is None else found.group()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._keywords!r})"

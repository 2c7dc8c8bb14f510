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
    "CONSENT_REQUESTS",
    "DEFAULT_KEYWORDS",
    "LOCALE_KEYWORDS",
    "WHATSAPP_KEYWORDS",
    "Classification",
    "KeywordMatch",
    "KeywordMatcher",
    "KeywordSet",
    "normalize",
]

# Only this much of the normalised body is searched for an opt-out keyword inside a longer message.
# A revocation in a conversational reply comes early ("stop texting me", "please remove me"), while
# this search is the one step whose cost grows with the body times the number of keywords; the cap
# keeps a pasted or hostile 1 MB body about as cheap as a long SMS.
_POSSIBLE_SCAN_CHARS = 2_000
# Only this much of the body itself is read at all: normalising (NFKC, case folding, stripping)
# costs time in the length of what it is given, so a longer body is classified from this prefix
# alone, and classifying 10 MB takes as long as classifying 8,000 characters.  That is about twice
# WhatsApp's longest message and five times a ten-part SMS, so every message a provider delivers is
# read whole; and it leaves room for the first _POSSIBLE_SCAN_CHARS normalised characters, all the
# search reads, to come out of it unless most of it is invisible characters or spaces.  A body
# longer than this is never an exact keyword (that needs the whole message): it is a possible
# opt-out or nothing.
_EXAMINED_CHARS = 4 * _POSSIBLE_SCAN_CHARS


class Classification(enum.Enum):
    """What an inbound reply asks for."""

    OPT_OUT = "opt_out"
    """The whole message is an opt-out keyword: stop sending on this channel group."""
    POSSIBLE_OPT_OUT = "possible_opt_out"
    """An opt-out keyword occurs as whole word(s) in a longer message; policy decides what to do."""
    OPT_IN = "opt_in"
    """The whole message is an opt-in keyword (START, UNSTOP...)."""
    HELP = "help"
    """The whole message is a help keyword: reply with the help text, change nothing."""
    NONE = "none"
    """An ordinary reply."""


CONSENT_REQUESTS: frozenset[Classification] = frozenset(
    {Classification.OPT_OUT, Classification.POSSIBLE_OPT_OUT, Classification.OPT_IN}
)
"""The classifications of a reply that asks something of consent (the others change nothing)."""


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
# The ASCII characters that need no work beyond case folding; every other ASCII character is read
# as a space (_ASCII_SPACE_LIKE) or is punctuation, removed at the ends only.
_ASCII_PLAIN = frozenset(string.ascii_letters + string.digits + " ")
_ASCII_SPACE_LIKE = frozenset(map(chr, [*range(0x20), 0x7F])) | {"-", "_"}
_ASCII_EDGE_JUNK_CHARS = frozenset(string.punctuation) - _ASCII_SPACE_LIKE
# Lowers the case and turns hyphens, underscores and controls into spaces: normalize() on ASCII text
# is this, spaces collapsed and edge punctuation stripped.
_ASCII_TABLE = bytes.maketrans(
    bytes([*range(0x20), 0x7F]) + b"-_" + string.ascii_uppercase.encode("ascii"),
    b" " * 33 + b"  " + string.ascii_lowercase.encode("ascii"),
)
# Lowers the case and turns everything but letters and digits into spaces, so that .split() gives
# the words of ASCII text: the runs of letters and digits, the same for a body and its normal form.
_ASCII_WORD_TABLE = bytes.maketrans(
    bytes([*range(0x20), 0x7F])
    + string.punctuation.encode("ascii")
    + string.ascii_uppercase.encode("ascii"),
    b" " * (33 + len(string.punctuation)) + string.ascii_lowercase.encode("ascii"),
)
# Up to this many distinct characters to drop or read as spaces, one str.replace pass per character
# beats str.translate with a dict, which looks every character of the text up in the dict.
_MAX_REPLACE_PASSES = 8
# str.strip(chars) looks each end character up in *chars* by a linear scan, so many distinct edge
# characters (a body of unassigned code points) are stripped by a loop over a set instead.
_MAX_STRIP_CHARS = 32


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
    return _normalize_compatible(unicodedata.normalize("NFKC", body))


def _normalize_compatible(body: str) -> str:
    # The rest of _normalize_unicode, for a body already in NFKC.
    text = unicodedata.normalize("NFD", body.casefold())
    replacements, edge_junk = _character_roles(text)
    # Every replacement is "" or an ASCII space, which is never replaced itself, so replacing one
    # character after the other gives what one str.translate pass gives.
    if len(replacements) <= _MAX_REPLACE_PASSES:
        for char, replacement in replacements:
            text = text.replace(char, replacement)
    else:
        text = text.translate({ord(char): replacement for char, replacement in replacements})
    # Every other whitespace character is now a space (all are Cc, Zs, Zl or Zp), and spaces at
    # the ends go with the edge junk below: only runs of spaces inside are left to collapse.
    if "  " in text:
        text = " ".join(text.split())
    if not text.isascii():
        # NFC puts back what NFD split apart without being a mark (Hangul syllables), so the
        # normalised text still reads like the message.
        text = unicodedata.normalize("NFC", text)
    return _strip_edges(text, edge_junk)


def _character_roles(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The replacements (dropped or read as a space) and the edge junk among *text*'s characters.

    Characters are classified once per distinct character, not per occurrence, and ASCII ones by
    fixed sets, so a long body costs a few C-level passes plus a loop over its alphabet less the
    lowercase letters, digits and space.
    """
    replacements: list[tuple[str, str]] = []
    edge_junk = [" "]
    for char in set(text) - _ASCII_PLAIN:
        if char in _ASCII_SPACE_LIKE:
            replacements.append((char, " "))
        elif char in _ASCII_EDGE_JUNK_CHARS:
            edge_junk.append(char)
        else:
            category = unicodedata.category(char)
            if category in _DROPPED_CATEGORIES:
                replacements.append((char, ""))
            elif category in _SPACE_CATEGORIES:
                replacements.append((char, " "))
            elif category in _EDGE_JUNK_CATEGORIES:
                edge_junk.append(char)
    return replacements, edge_junk


def _strip_edges(text: str, edge_junk: list[str]) -> str:
    if len(edge_junk) <= _MAX_STRIP_CHARS:
        return text.strip("".join(edge_junk))
    junk = frozenset(edge_junk)
    start, end = 0, len(text)
    while start < end and text[start] in junk:
        start += 1
    while end > start and text[end - 1] in junk:
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
    # Not "YES": a conversational "yes" must never undo an opt-out or create consent; an account
    # with a keyword opt-in programme may make it one of the programme's keywords.
    opt_in={"START", "UNSTOP"},
    help={"HELP", "INFO"},
)  # fmt: skip
"""The English-language carrier and provider keywords: the FCC's seven, Twilio's, AWS's and
Telnyx's "STOP ALL"."""

WHATSAPP_KEYWORDS = KeywordSet(opt_out={"STOP PROMOTIONS"})
"""Extra keywords of the WhatsApp channel: the text of WhatsApp's marketing opt-out quick-reply
button ("Stop promotions"), which opts the contact out of the business's marketing messages."""

LOCALE_KEYWORDS: Mapping[str, KeywordSet] = types.MappingProxyType(
    {
        "es": KeywordSet(opt_out={"BAJA"}, opt_in={"ALTA"}, help={"AYUDA"}),
        # Canadian French compliance keywords (ARRET, AIDE, INFO); accents are ignored anyway.
        # "OUI" and "SIM" are "yes": conversational, so not opt-in keywords (see DEFAULT_KEYWORDS).
        "fr": KeywordSet(opt_out={"ARRET", "ARRÊT"}, help={"AIDE", "INFO"}),
        "pt-BR": KeywordSet(opt_out={"PARAR", "SAIR"}, help={"AJUDA"}),
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

# A body is looked up among the common spellings of the keywords only if it is at most this much
# longer than the longest of them: room for whitespace around a keyword ("  STOP\r\n").
_SPELLING_PADDING = 8


@attrs.frozen
class KeywordMatch:
    """The classification of one inbound reply.

    A match holds nothing of the message itself: a matcher hands out shared, immutable instances
    (one for ``NONE``, one per keyword and class), so classifying allocates nothing in the common
    cases and a 1 MB body is never copied into an event.  Call :func:`normalize` on the body for the
    form the keywords were matched against.

    Attributes:
        classification: what the reply asks for.
        keyword: the normalised keyword that matched, or ``None`` for :attr:`Classification.NONE`.
    """

    classification: Classification
    keyword: str | None


_NO_MATCH = KeywordMatch(Classification.NONE, None)


def _spellings(keyword: str) -> set[str]:
    cased = {keyword, keyword.upper(), keyword.title(), keyword.capitalize()}
    if " " in keyword:
        cased |= {form.replace(" ", "-") for form in cased}
    return {form + end for form in cased for end in ("", ".", "!")}


def _longest_first(keywords: Iterable[str]) -> list[str]:
    """The order in which keywords are tried at one position, so that "stop all" is reported
    rather than "stop" where both match."""
    return sorted(keywords, key=lambda keyword: (-len(keyword), keyword))


def _alternation(keywords: Iterable[str]) -> str:
    return "|".join(map(re.escape, _longest_first(keywords)))


def _possible_opt_out_pattern(opt_out: frozenset[str]) -> re.Pattern[str] | None:
    if not opt_out:
        return None
    return re.compile(r"(?<!\w)(?:" + _alternation(opt_out) + r")(?!\w)")


def _ascii_words(text: str) -> list[bytes]:
    return text.encode("ascii").translate(_ASCII_WORD_TABLE).split()


def _first_word_patterns(opt_out: frozenset[str]) -> dict[bytes, re.Pattern[str]]:
    """Return, by first word, a pattern finding the ASCII opt-out keywords that start with it.

    The word comes first and the "no word character before it" test right after it, so the pattern
    starts with a literal and the regex engine jumps between occurrences of that word instead of
    trying every position of the text.
    """
    by_first_word: dict[bytes, list[str]] = {}
    for keyword in opt_out:
        if keyword.isascii():
            by_first_word.setdefault(_ascii_words(keyword)[0], []).append(keyword)
    patterns: dict[bytes, re.Pattern[str]] = {}
    for word, keywords in by_first_word.items():
        first = re.escape(word.decode("ascii"))
        rests = _alternation(keyword[len(word) :] for keyword in keywords)
        patterns[word] = re.compile(f"{first}(?<!\\w{first})(?:{rests})(?!\\w)")
    return patterns


class KeywordMatcher:
    """Classifies inbound replies against one :class:`KeywordSet`.

    Immutable once built; share one instance.  An exact keyword gives ``OPT_OUT``, ``OPT_IN`` or
    ``HELP``; otherwise an opt-out keyword occurring as whole word(s) in the first 2,000 normalised
    characters gives ``POSSIBLE_OPT_OUT`` ("stop texting me", but not "weekend" or "stopped by");
    anything else, including an empty body, gives ``NONE``.  Only the first 8,000 characters of a
    body are read: a longer one is classified from them and is never an exact keyword.  Equal
    results are the same shared :class:`KeywordMatch` instance.

    Args:
        keywords: the keyword set to recognise.

    Attributes:
        keywords: the keyword set this matcher recognises.
    """

    __slots__ = (
        "_exact",
        "_first_word_only",
        "_first_word_patterns",
        "_first_words",
        "_keywords",
        "_max_spelling",
        "_max_words",
        "_possible",
        "_possible_first_words",
        "_possible_matches",
    )

    def __init__(self, keywords: KeywordSet = DEFAULT_KEYWORDS) -> None:
        if not isinstance(keywords, KeywordSet):
            raise ValidationError(
                "keywords", f"expected a KeywordSet, got {type(keywords).__name__}"
            )
        self._keywords = keywords
        # One shared, immutable match per keyword, found by its normalised form or by a common raw
        # spelling ("STOP", "Stop.", "Opt-Out"): exact keywords skip normalising.
        exact: dict[str, KeywordMatch] = {}
        ascii_words: list[list[bytes]] = []
        for classification, words in (
            (Classification.OPT_OUT, keywords.opt_out),
            (Classification.OPT_IN, keywords.opt_in),
            (Classification.HELP, keywords.help),
        ):
            for keyword in words:
                match = KeywordMatch(classification, keyword)
                for spelling in _spellings(keyword):
                    if normalize(spelling) == keyword:
                        exact[spelling] = match
                if keyword.isascii():
                    ascii_words.append(_ascii_words(keyword))
        self._exact = exact
        self._max_spelling = max(map(len, exact), default=0) + _SPELLING_PADDING
        self._possible_matches = {
            keyword: KeywordMatch(Classification.POSSIBLE_OPT_OUT, keyword)
            for keyword in keywords.opt_out
        }
        self._possible = _possible_opt_out_pattern(keywords.opt_out)
        self._first_word_patterns = _first_word_patterns(keywords.opt_out)
        self._possible_first_words = frozenset(self._first_word_patterns)
        # For an opt-out keyword of one word ("stop", "unsubscribe"): its match, and the other
        # words of the longer keywords starting with it ("all" for "stop all").  A message whose
        # only opt-out first word is that one, and that has none of those other words, holds that
        # keyword and no other, so it is a possible opt-out without normalising or searching.
        longer_words: dict[bytes, set[bytes]] = {}
        one_word: dict[bytes, KeywordMatch] = {}
        for keyword in keywords.opt_out:
            if keyword.isascii():
                first, *others = _ascii_words(keyword)
                longer_words.setdefault(first, set()).update(others)
                if first == keyword.encode("ascii"):
                    one_word[first] = self._possible_matches[keyword]
        self._first_word_only = {
            first: (match, frozenset(longer_words[first])) for first, match in one_word.items()
        }
        # ASCII text normalises to ASCII text with the same words (runs of letters and digits), and
        # both an exact keyword and one found inside a longer message are whole words of the
        # normalised text, starting with the keyword's first word: a message none of whose words
        # starts a keyword is NONE after one translate, one split and one set test.  An exact
        # keyword also has as many words as the message.
        self._first_words = frozenset(words[0] for words in ascii_words)
        self._max_words = max(map(len, ascii_words), default=0)

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
        # A short body is first looked up as it is: this catches " STOP\n" and "Stop." without
        # normalising, and str.strip() returns the body itself when there is nothing to strip.
        # Longer bodies skip it rather than hash a whole reply for nothing.
        if len(body) <= self._max_spelling:
            match = self._exact.get(body.strip())
            if match is not None:
                return match
        elif len(body) > _EXAMINED_CHARS:
            return self._classify_prefix(body)
        if not body.isascii():
            return self._classify_unicode(body)
        words = body.encode().translate(_ASCII_WORD_TABLE).split()
        if self._first_words.isdisjoint(words):
            return _NO_MATCH
        return self._classify_ascii_words(words, None, body)

    def _classify_unicode(self, body: str) -> KeywordMatch:
        compatible = unicodedata.normalize("NFKC", body)
        if compatible.isascii():
            # NFKC is the first step of normalize(), so "ＳＴＯＰ" classifies like "STOP".
            return self.classify(compatible)
        text = _normalize_compatible(compatible)
        if not text.isascii():
            match = self._exact.get(text)
            return match if match is not None else self._search_possible(text)
        words = _ascii_words(text)
        if self._first_words.isdisjoint(words):
            return _NO_MATCH
        return self._classify_ascii_words(words, text, body)

    def _classify_ascii_words(
        self, words: list[bytes], text: str | None, body: str
    ) -> KeywordMatch:
        """Classify a body whose normal form is ASCII, from the words of that normal form.

        *text* is ``normalize(body)``, or ``None`` if not computed yet (an ASCII body): most
        messages that get here are long and are told apart by their words alone.
        """
        if len(words) <= self._max_words:
            if text is None:
                text = _normalize_ascii(body)
            match = self._exact.get(text)
            if match is not None:
                return match
        first_words = self._possible_first_words.intersection(words)
        if not first_words:
            return _NO_MATCH
        if len(first_words) == 1 and len(body if text is None else text) <= _POSSIBLE_SCAN_CHARS:
            (word,) = first_words
            only = self._first_word_only.get(word)
            if only is not None and only[1].isdisjoint(words):
                return only[0]
        # Possible opt-out: one pattern per first word of an opt-out keyword the message has.  Two
        # first words cannot match at one position (the word there is one or the other), so the
        # leftmost match of all is the one the reference search over every keyword finds.
        if text is None:
            text = _normalize_ascii(body)
        if len(text) > _POSSIBLE_SCAN_CHARS:
            text = _possible_scan(text)
        patterns = self._first_word_patterns
        found: re.Match[str] | None = None
        for word in first_words:
            candidate = patterns[word].search(text)
            if candidate is not None and (found is None or candidate.start() < found.start()):
                found = candidate
        return _NO_MATCH if found is None else self._possible_matches[found[0]]

    def _search_possible(self, text: str) -> KeywordMatch:
        if self._possible is None:
            return _NO_MATCH
        found = self._possible.search(_possible_scan(text))
        return _NO_MATCH if found is None else self._possible_matches[found[0]]

    def _classify_prefix(self, body: str) -> KeywordMatch:
        """Classify a body longer than _EXAMINED_CHARS from its first _EXAMINED_CHARS characters.

        Only a possible opt-out can be found: whether the whole message is a keyword depends on
        all of it.  Unless the prefix ends in whitespace, its last word is left out: that word may
        go on after the prefix ("stop|ped").
        """
        prefix = body[:_EXAMINED_CHARS]
        text = normalize(prefix)
        # Whitespace is a boundary for normalisation too (NFKC composes nothing across it), so a
        # prefix ending in whitespace normalises to the start of the whole body's normal form.
        if not prefix[-1].isspace():
            text = text[: max(text.rfind(" "), 0)]
        return self._search_possible(text)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._keywords!r})"

    def __reduce__(self) -> tuple[type[KeywordMatcher], tuple[KeywordSet]]:
        # Rebuilt from its keywords: the lookup tables and patterns follow from them.
        return (KeywordMatcher, (self._keywords,))


def _possible_scan(text: str) -> str:
    """Return the part of normalised *text* searched for an opt-out keyword inside a message."""
    if len(text) <= _POSSIBLE_SCAN_CHARS:
        return text
    # Cut at a space so that a word cut in half ("stop|ped") cannot pass for a keyword.
    return text[: max(text.rfind(" ", 0, _POSSIBLE_SCAN_CHARS + 1), 0)]

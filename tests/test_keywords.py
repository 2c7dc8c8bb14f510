"""Inbound reply classification: normalisation, exact and possible opt-outs, locales, validation."""

from __future__ import annotations

import pickle
import random
import re
import string
import sys
import tracemalloc
import types
import unicodedata
from collections.abc import Callable

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from consentkit import keywords as keywords_module
from consentkit.errors import ValidationError
from consentkit.keywords import (
    _EXAMINED_CHARS,
    DEFAULT_KEYWORDS,
    LOCALE_KEYWORDS,
    WHATSAPP_KEYWORDS,
    Classification,
    KeywordMatch,
    KeywordMatcher,
    KeywordSet,
    _normalize_ascii,
    _normalize_unicode,
    normalize,
)

DEFAULT = KeywordMatcher()


@pytest.fixture(scope="module")
def matcher() -> KeywordMatcher:
    """The default matcher, shared by every classification test as a host app shares one."""
    return DEFAULT


OPT_OUT = Classification.OPT_OUT
POSSIBLE = Classification.POSSIBLE_OPT_OUT
OPT_IN = Classification.OPT_IN
HELP = Classification.HELP
NONE = Classification.NONE

# Spellings of every default keyword as providers document them.
DEFAULT_SPELLINGS = (
    "STOP", "QUIT", "END", "REVOKE", "OPT OUT", "CANCEL", "UNSUBSCRIBE", "STOPALL", "STOP ALL",
    "OPTOUT", "OPT-OUT", "REMOVE", "ARRET", "TD", "START", "UNSTOP", "HELP", "INFO",
)  # fmt: skip

# Characters that may surround a keyword without changing what it means: whitespace, controls,
# punctuation (ASCII, full-width, Spanish), symbols, emoji and the invisible characters that come
# with emoji (ZWJ, variation selector 16, zero-width space), and a lone surrogate.
EDGE_CHARACTERS = (
    " \t\n\r\x00\x0b\x1f\x7f.,;:!?¡¿'\"()[]{}<>*~#@&%$€+=/\\|^`-_…–—！？。、"
    "🛑✋🙏😡👍❤\u200d\ufe0f\u200b\u00ad\ud800"
)
edges = st.text(st.sampled_from(EDGE_CHARACTERS), max_size=6)
any_text = st.text(st.characters(exclude_categories=()))  # every code point, surrogates included


def bare_class(spelling: str) -> Classification:
    """Return the class a bare default spelling belongs to, from DEFAULT_KEYWORDS itself."""
    form = spelling.lower().replace("-", " ")
    if form in DEFAULT_KEYWORDS.opt_out:
        return OPT_OUT
    if form in DEFAULT_KEYWORDS.opt_in:
        return OPT_IN
    assert form in DEFAULT_KEYWORDS.help
    return HELP


def contains_opt_out_tokens(text: str, opt_out: frozenset[str]) -> bool:
    """Say whether the alphanumeric tokens of normalize(text) contain those of an opt-out keyword.

    Deliberately simpler and looser than the matcher: any non-alphanumeric character separates
    tokens, so "opt, out" counts as containing "opt out".
    """

    def tokens(value: str) -> list[str]:
        return "".join(c if c.isalnum() else " " for c in value).split()

    words = tokens(normalize(text))
    for keyword in opt_out:
        wanted = tokens(keyword)
        if any(words[i : i + len(wanted)] == wanted for i in range(len(words))):
            return True
    return False


# --- examples ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ("STOP", "stop"),
        ("Stop.", "stop"),
        (" STOP ", "stop"),
        ("\tstop\r\n", "stop"),
        ("ＳＴＯＰ", "stop"),
        ("stop!!", "stop"),
        ("¡STOP!", "stop"),
        ("🛑 stop 🛑", "stop"),
        ("Stop\u200d", "stop"),
        ("stop\ufe0f", "stop"),
        ("\u200bST\u00adOP", "stop"),
        ("Opt-Out", "opt out"),
        ("opt  out", "opt out"),
        ("OPT_OUT", "opt out"),
        ("opt – out", "opt out"),
        ("OPTOUT", "optout"),
        ("STOP ALL", "stop all"),
        ("stopall", "stopall"),
        ("Unsubscribe", "unsubscribe"),
        ("quit", "quit"),
        ("END.", "end"),
        ("Revoke", "revoke"),
        ("cancel!", "cancel"),
        ("REMOVE", "remove"),
        ("td", "td"),
        ("arrêt", "arret"),
        ("ARRÊT", "arret"),
    ],
)
def test_exact_opt_out_keywords(matcher: KeywordMatcher, body: str, keyword: str) -> None:
    """A whole message that normalises to an opt-out keyword is an opt-out naming that keyword."""
    assert normalize(body) == keyword
    assert matcher.classify(body) == KeywordMatch(OPT_OUT, keyword)


@pytest.mark.parametrize(
    ("body", "classification", "keyword"),
    [
        ("HELP", HELP, "help"),
        ("help?", HELP, "help"),
        ("Info", HELP, "info"),
        ("START", OPT_IN, "start"),
        ("unstop", OPT_IN, "unstop"),
        (" UnStop\n", OPT_IN, "unstop"),
    ],
)
def test_exact_opt_in_and_help_keywords(
    matcher: KeywordMatcher, body: str, classification: Classification, keyword: str
) -> None:
    """A whole message that normalises to an opt-in or help keyword gets that class."""
    assert normalize(body) == keyword
    assert matcher.classify(body) == KeywordMatch(classification, keyword)


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ("please stop texting me", "stop"),
        ("STOP PLEASE", "stop"),
        ("Stop, please!", "stop"),
        ("can you end this", "end"),
        ("Who gave you my number? Stop!", "stop"),
        ("I want to opt-out of these", "opt out"),
        ("STOP ALL messages now", "stop all"),
        ("please remove me from your list", "remove"),
        ("td pls", "td"),
        ("Je veux arrêter... ARRÊT svp", "arret"),
        ("stop🛑now", "stop"),
    ],
)
def test_keyword_inside_a_longer_message_is_a_possible_opt_out(
    matcher: KeywordMatcher, body: str, keyword: str
) -> None:
    """An opt-out keyword occurring as whole word(s) in a longer message is a possible opt-out."""
    assert matcher.classify(body) == KeywordMatch(POSSIBLE, keyword)
    assert re.search(rf"(?<!\w){re.escape(keyword)}(?!\w)", normalize(body))
    assert normalize(body) != keyword


@pytest.mark.parametrize(
    "body",
    [
        "weekend",
        "Have a great weekend!",
        "stopped by",
        "We stopped by yesterday",
        "endless",
        "It's non-stopping",
        "tdd",
        "quitting time",
        "Cancelled? No, rescheduled",
        "unsubscribed",
        "optional",
        "start the car",
        "yes please",
        "help me with my order",
        "more info please",
        "ok",
        "",
        "   ",
        "\x00",
        "🛑",
        "...!!!",
        "\u200d\ufe0f",
    ],
)
def test_ordinary_replies_are_none(matcher: KeywordMatcher, body: str) -> None:
    """Messages without an opt-out word, and opt-in or help words inside sentences, are NONE."""
    match = matcher.classify(body)
    assert match.classification is NONE
    assert match.keyword is None


def test_locale_words_only_with_their_locale() -> None:
    """BAJA, ALTA and AYUDA mean something only to a matcher built for Spanish."""
    assert DEFAULT.classify("BAJA").classification is NONE
    spanish = KeywordMatcher.for_locales(["es"])
    assert spanish.classify("BAJA") == KeywordMatch(OPT_OUT, "baja")
    assert spanish.classify("Alta").classification is OPT_IN
    assert spanish.classify("ayuda").classification is HELP
    assert spanish.classify("STOP").classification is OPT_OUT  # the base words are kept


@pytest.mark.parametrize(
    ("locale", "body", "classification"),
    [
        ("fr", "arrêt", OPT_OUT),
        ("fr", "Aide", HELP),
        ("FR-ca", "ARRÊT", OPT_OUT),
        ("fr_CA", "aide", HELP),
        ("pt-BR", "PARAR", OPT_OUT),
        ("pt-br", "Sair", OPT_OUT),
        ("pt-BR", "ajuda", HELP),
        ("es-MX", "baja", OPT_OUT),
    ],
)
def test_locale_tags_are_matched_loosely(
    locale: str, body: str, classification: Classification
) -> None:
    """Locale tags ignore case and '_' versus '-', and a regional tag uses its language's words."""
    assert KeywordMatcher.for_locales([locale]).classify(body).classification is classification


def test_several_locales_combine() -> None:
    """Words of every requested locale are recognised together."""
    matcher = KeywordMatcher.for_locales(["es", "pt-BR", "fr"])
    assert matcher.keywords == DEFAULT_KEYWORDS.union(LOCALE_KEYWORDS["es"]).union(
        LOCALE_KEYWORDS["pt-BR"]
    ).union(LOCALE_KEYWORDS["fr"])
    assert {matcher.classify(word).classification for word in ("baja", "parar", "arret")} == {
        OPT_OUT
    }


def test_unknown_locale_is_refused_with_the_known_ones() -> None:
    """An unknown locale raises ValidationError on "locales" listing the known locales."""
    with pytest.raises(ValidationError, match="known locales are 'es', 'fr', 'pt-BR'") as caught:
        KeywordMatcher.for_locales(["de"])
    assert caught.value.field == "locales"
    with pytest.raises(ValidationError, match="unknown locale 'pt'"):
        KeywordMatcher.for_locales(["pt"])


def test_locales_must_be_a_collection() -> None:
    """A bare string for locales is refused instead of being read letter by letter."""
    with pytest.raises(ValidationError, match=r"pass a list, e\.g\. \['fr'\]"):
        KeywordMatcher.for_locales("fr")


def test_for_locales_with_a_custom_base() -> None:
    """for_locales adds the locale words to the given base set instead of the defaults."""
    matcher = KeywordMatcher.for_locales(["es"], base=KeywordSet(opt_out={"basta"}))
    assert matcher.keywords == KeywordSet(
        opt_out={"basta", "baja"}, opt_in={"alta"}, help={"ayuda"}
    )
    assert matcher.classify("STOP").classification is NONE


def test_locale_table_is_read_only() -> None:
    """LOCALE_KEYWORDS cannot be changed at run time by one part of a host app for all others."""
    assert isinstance(LOCALE_KEYWORDS, types.MappingProxyType)
    with pytest.raises(TypeError):
        LOCALE_KEYWORDS["de"] = KeywordSet(opt_out={"halt"})  # type: ignore[index]


def test_default_keywords_cover_fcc_and_providers() -> None:
    """The defaults hold the FCC's seven words and the Twilio, AWS and Telnyx keywords."""
    fcc = {"stop", "quit", "end", "revoke", "opt out", "cancel", "unsubscribe"}
    providers = {"stopall", "optout", "remove", "arret", "td", "stop all"}
    assert fcc | providers <= DEFAULT_KEYWORDS.opt_out
    assert {"start", "unstop"} <= DEFAULT_KEYWORDS.opt_in
    assert {"help", "info"} <= DEFAULT_KEYWORDS.help


def test_a_conversational_yes_is_no_keyword(matcher: KeywordMatcher) -> None:
    """"Yes" (and the locale words for it) is an ordinary reply by default: it neither undoes an
    opt-out nor creates consent unless an account's opt-in programme names it."""
    for body in ("Yes", "yes!", "  YES  ", "oui", "sim"):
        assert matcher.classify(body).classification is Classification.NONE
    for locale in ("fr", "pt-BR"):
        assert not LOCALE_KEYWORDS[locale].opt_in


def test_whatsapp_stop_promotions_is_an_opt_out_keyword() -> None:
    """WhatsApp's marketing opt-out button text is an exact opt-out keyword of that channel."""
    assert KeywordMatcher(WHATSAPP_KEYWORDS).classify("Stop promotions").classification is (
        Classification.OPT_OUT
    )


def test_custom_keyword_set_is_normalised() -> None:
    """Keywords given by users are stored and matched in their normalised form."""
    keywords = KeywordSet(opt_out={"Basta!", "NO MÁS"}, opt_in={"Go"}, help={"¿Ayuda?"})
    assert keywords == KeywordSet(opt_out={"basta", "no mas"}, opt_in={"go"}, help={"ayuda"})
    matcher = KeywordMatcher(keywords)
    assert matcher.keywords is keywords
    assert matcher.classify("no-más").classification is OPT_OUT
    assert matcher.classify("basta ya").classification is POSSIBLE
    assert matcher.classify("STOP").classification is NONE


def test_matcher_without_opt_out_words_never_finds_possible_opt_outs() -> None:
    """A set without opt-out keywords still classifies, and nothing is a possible opt-out."""
    matcher = KeywordMatcher(KeywordSet(help={"help"}))
    assert matcher.classify("please stop").classification is NONE
    assert matcher.classify("HELP").classification is HELP


@pytest.mark.parametrize("bad", ["", "   ", "!!!", "🛑", "\u200d", "-_-"])
def test_keyword_empty_after_normalisation_is_refused(bad: str) -> None:
    """A keyword with no letters or digits left after normalisation raises ValidationError."""
    with pytest.raises(ValidationError, match="empty once normalised") as caught:
        KeywordSet(opt_in={"start", bad})
    assert caught.value.field == "opt_in"


def test_keyword_in_two_classes_is_refused_by_name() -> None:
    """A keyword that is both opt-out and opt-in (after normalisation) is refused, named."""
    with pytest.raises(ValidationError, match="'stop' is in both opt_out and opt_in") as caught:
        KeywordSet(opt_out={"STOP"}, opt_in={"stop!"})
    assert caught.value.field == "keywords"
    with pytest.raises(ValidationError, match="'alta'"):
        KeywordSet(opt_out={"alta"}).union(LOCALE_KEYWORDS["es"])
    with pytest.raises(ValidationError, match="'info' is in both opt_in and help"):
        KeywordMatcher.for_locales(["fr"], base=KeywordSet(opt_in={"info"}))


def test_keyword_values_must_be_strings_in_a_collection() -> None:
    """A bare string or a non-string keyword raises ValidationError instead of a TypeError."""
    with pytest.raises(ValidationError, match="single string 'stop'"):
        KeywordSet(opt_out="stop")
    with pytest.raises(ValidationError, match="is not a str"):
        KeywordSet(opt_out=[b"stop"])  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="expected a KeywordSet"):
        KeywordMatcher(keywords={"stop"})  # type: ignore[arg-type]


def test_non_string_body_is_refused(matcher: KeywordMatcher) -> None:
    """classify and normalize raise ValidationError on "body" for anything but a str."""
    for bad in (b"STOP", None, 42, ["stop"]):
        with pytest.raises(ValidationError, match="expected the message text as str") as caught:
            matcher.classify(bad)  # type: ignore[arg-type]
        assert caught.value.field == "body"
        with pytest.raises(ValidationError):
            normalize(bad)  # type: ignore[arg-type]


def test_match_keeps_nothing_of_the_body(matcher: KeywordMatcher) -> None:
    """A match holds the class and the keyword only; normalize(body) gives the matched form."""
    assert [field.name for field in attrs.fields(KeywordMatch)] == ["classification", "keyword"]
    body = "Hello " * 1_000
    assert matcher.classify(body) == KeywordMatch(NONE, None)
    assert normalize(body) == " ".join(["hello"] * 1_000)
    possible = "Please STOP " * 1_000
    assert matcher.classify(possible) == KeywordMatch(POSSIBLE, "stop")
    assert normalize(possible) == " ".join(["please stop"] * 1_000)


@pytest.mark.parametrize(
    "bodies",
    [
        ["ok", "Who is this?", "", "   ", "🛑", "Merci beaucoup 😊", "hello " * 1_000],
        ["please stop texting me", "STOP PLEASE", "stop🛑now", "ok stop"],
        ["please opt-out", "opt out now", "¿Opt out?? ya"],
        ["STOP", " stop! ", "ＳＴＯＰ", "🛑 stop 🛑", "stop\u200d"],
        ["Start", "start!", "  START  "],
        ["help", "HELP?", " Help\n"],
    ],
)
def test_equal_results_are_one_shared_instance(matcher: KeywordMatcher, bodies: list[str]) -> None:
    """Every outcome is a shared, precomputed match: classify allocates none per message."""
    first, *others = map(matcher.classify, bodies)
    for other in others:
        assert other is first


def test_possible_search_is_capped_and_exact_check_reads_the_examined_length(
    matcher: KeywordMatcher,
) -> None:
    """An opt-out word far into a huge body is not searched for; a padded keyword is exact up to
    _EXAMINED_CHARS characters, and a longer body is never exact, only read from its start."""
    assert matcher.classify("stop " + "blah " * 200_000).classification is POSSIBLE
    assert matcher.classify("blah " * 1_000 + "stop").classification is NONE
    assert matcher.classify(" " * 3_000 + "STOP" + "!" * 3_000).classification is OPT_OUT
    assert matcher.classify("🛑" * 3_000 + " Stop ").classification is OPT_OUT
    assert matcher.classify("STOP" + " " * _EXAMINED_CHARS) == KeywordMatch(POSSIBLE, "stop")
    assert matcher.classify(" " * 1_000_000 + "STOP" + "!" * 1_000_000).classification is NONE
    assert matcher.classify("🛑" * 500_000 + " Stop ").classification is NONE


def test_possible_search_cut_does_not_split_words(matcher: KeywordMatcher) -> None:
    """A word cut by the scan limit is not mistaken for a keyword ("stop|ped")."""
    filler = "x" * 1_995 + " "
    assert len(filler + "stop") == 2_000
    assert matcher.classify(filler + "stopped by").classification is NONE
    assert matcher.classify(filler + "stop now").classification is POSSIBLE


@pytest.mark.parametrize(
    "original",
    [DEFAULT, KeywordMatcher.for_locales(["fr"])],
    ids=["default", "french"],
)
def test_matcher_survives_pickling(original: KeywordMatcher) -> None:
    """A pickled matcher comes back with the same keywords and classifications."""
    copy = pickle.loads(pickle.dumps(original))
    assert isinstance(copy, KeywordMatcher)
    assert copy.keywords == original.keywords
    for body in ("STOP", "please stop now", "ok", "ＳＴＯＰ", "Arrêt!", "oui"):
        assert copy.classify(body) == original.classify(body)


def test_the_method_is_the_pure_python_code_and_subclasses_keep_their_own() -> None:
    """KeywordMatcher.classify called on the class gives the instance's result, and a subclass
    that overrides classify runs its own."""
    for body in ("STOP", "please stop", "ＳＴＯＰ", "ok", "arrêt"):
        assert KeywordMatcher.classify(DEFAULT, body) is DEFAULT.classify(body)

    class Logged(KeywordMatcher):
        def classify(self, body: str) -> KeywordMatch:
            return KeywordMatch(HELP, "logged")

    assert Logged().classify("STOP") == KeywordMatch(HELP, "logged")


def test_matcher_is_read_only() -> None:
    """A matcher's keywords cannot be replaced after construction."""
    with pytest.raises(AttributeError):
        DEFAULT.keywords = KeywordSet()  # type: ignore[misc]
    assert repr(DEFAULT).startswith("KeywordMatcher(KeywordSet(")


@pytest.mark.parametrize(
    ("body", "normal"),
    [
        ("  Hello,   World!  ", "hello, world"),
        ("Opt-Out", "opt out"),
        ("ARRÊT", "arret"),
        ("Straße", "strasse"),
        ("ＳＴＯＰ　ＡＬＬ", "stop all"),
        ("a\x00b\ud800c\u0007d", "a b c d"),
        ("«stop»", "stop"),
        ("don't stop!", "don't stop"),
        ("1️⃣", "1"),
        ("중지", "중지"),
    ],
)
def test_normalize_examples(body: str, normal: str) -> None:
    """normalize folds width, case and accents, reads dashes as spaces and trims edge junk."""
    assert normalize(body) == normal


# --- properties ----------------------------------------------------------------------------------


@st.composite
def keyword_variants(draw: st.DrawFn) -> tuple[str, str]:
    """Draw a default spelling and a variant of it in other case, padding, separators and junk."""
    spelling = draw(st.sampled_from(DEFAULT_SPELLINGS))
    flips = draw(st.lists(st.booleans(), min_size=len(spelling), max_size=len(spelling)))
    cased = "".join(c.swapcase() if flip else c for c, flip in zip(spelling, flips, strict=True))
    separator = draw(st.sampled_from([" ", "  ", "-", "_", "\t", " - ", "\u00a0", "\u3000"]))
    cased = re.sub(r"[ -]", lambda _: separator, cased)
    return spelling, draw(edges) + cased + draw(edges)


@given(keyword_variants())
def test_variants_of_a_keyword_keep_its_class(
    matcher: KeywordMatcher, drawn: tuple[str, str]
) -> None:
    """Any case, padding, punctuation or emoji around a default keyword gives the bare class."""
    spelling, variant = drawn
    match = matcher.classify(variant)
    assert match.classification is bare_class(spelling)
    assert match == matcher.classify(spelling)


near_misses = st.sampled_from(
    [
        "stopped", "stops", "nonstop", "weekend", "endless", "ending", "send", "tdd", "std",
        "quitting", "cancelled", "removed", "revoked", "unsubscribed", "optional", "opt", "out",
        "all", "arrete", "starts", "yess", "helper", "information", "hello", "thanks", "see",
        "you", "soon", "ok", "please", "me", "stop", "end", "td",
    ]
)  # fmt: skip
separators = st.sampled_from([" ", ", ", ". ", "-", "_", "!", "  ", "\n", "'", "…", " 🛑 "])


@st.composite
def replies(draw: st.DrawFn) -> str:
    """Draw a reply made of near-miss words (and some keywords) or of arbitrary letters."""
    if draw(st.booleans()):
        words = draw(st.lists(near_misses, max_size=8))
        return "".join(word + draw(separators) for word in words)
    return draw(st.text(st.sampled_from("stopendquiacvlrmbyhTDSOP é-_.!? \u200d"), max_size=30))


@given(replies())
def test_no_opt_out_without_opt_out_tokens(matcher: KeywordMatcher, body: str) -> None:
    """A message whose normalised tokens hold no opt-out keyword is never an (possible) opt-out."""
    assume(not contains_opt_out_tokens(body, DEFAULT_KEYWORDS.opt_out))
    assert matcher.classify(body).classification not in {OPT_OUT, POSSIBLE}


def reference_classify(keywords: KeywordSet, body: str) -> tuple[Classification, str | None]:
    """Classify a body of under 2,000 characters the slow way: exact set lookups on normalize(body),
    then one word search per opt-out keyword, the leftmost and then longest match winning."""
    text = normalize(body)
    if text in keywords.opt_out:
        return (OPT_OUT, text)
    if text in keywords.opt_in:
        return (OPT_IN, text)
    if text in keywords.help:
        return (HELP, text)
    found = [
        (m.start(), -len(keyword), keyword)
        for keyword in keywords.opt_out
        if (m := re.search(rf"(?<!\w){re.escape(keyword)}(?!\w)", text)) is not None
    ]
    return (POSSIBLE, min(found)[2]) if found else (NONE, None)


@given(st.one_of(replies(), any_text))
def test_classify_agrees_with_a_plain_reference(matcher: KeywordMatcher, body: str) -> None:
    """classify equals a slow reference: exact set lookups, then one word search per keyword."""
    match = matcher.classify(body)
    assert (match.classification, match.keyword) == reference_classify(DEFAULT_KEYWORDS, body)
    # The body counts only through its normal form.
    assert matcher.classify(normalize(body)) is match


# Keywords of several words, with punctuation or digits inside, sharing first words, or not ASCII:
# the shapes the word-based shortcuts of the matcher must get right.
CUSTOM_KEYWORDS = KeywordSet(
    opt_out={
        "stop", "stop all", "Stop-Now", "stopp", "don't text", "no más", "3 strikes", "halt",
        "halt.now", "中止", "ＱＵＩＴ ２",
    },
    opt_in={"go go", "start 2", "yes"},
    help={"help me", "s.o.s", "ayuda", "aide✋moi"},
)  # fmt: skip
CUSTOM = KeywordMatcher(CUSTOM_KEYWORDS)


@pytest.fixture(scope="module")
def custom() -> KeywordMatcher:
    """The CUSTOM_KEYWORDS matcher."""
    return CUSTOM


custom_fragments = st.sampled_from(
    [
        "stop", "STOP", "all", "now", "stopp", "stopping", "don't", "don", "t", "text", "no",
        "más", "mas", "MÁS", "3", "strikes", "３", "halt", "Halt", "halt.now", "中止", "中止中",
        "quit", "2", "２", "go", "start", "yes", "help", "me", "s.o.s", "s", "o", "ayuda", "aide",
        "✋", "moi", "aide✋moi", "info", "ok", "please", "x",
    ]
)  # fmt: skip
custom_separators = st.sampled_from(
    [" ", "  ", "", ".", ",", "-", "_", "'", "!", "?", "\n", "\t", "🛑", "\u200b", "\u3000", "…"]
)


@st.composite
def custom_replies(draw: st.DrawFn) -> str:
    """Draw a reply glued together from pieces of CUSTOM_KEYWORDS and separators."""
    parts = draw(st.lists(st.tuples(custom_fragments, custom_separators), max_size=7))
    return draw(custom_separators) + "".join(word + separator for word, separator in parts)


@settings(max_examples=300)
@given(custom_replies())
def test_custom_keywords_agree_with_the_reference(custom: KeywordMatcher, body: str) -> None:
    """Multi-word, punctuated, numbered and non-ASCII keywords are classified like the reference."""
    match = custom.classify(body)
    assert (match.classification, match.keyword) == reference_classify(CUSTOM_KEYWORDS, body)
    assert custom.classify(normalize(body)) is match


@pytest.mark.parametrize(
    ("body", "classification", "keyword"),
    [
        ("Stop now!", OPT_OUT, "stop now"),
        ("stop, now", POSSIBLE, "stop"),
        ("please stop now", POSSIBLE, "stop now"),
        ("stop all now", POSSIBLE, "stop all"),
        ("Don't text", OPT_OUT, "don't text"),
        ("don t text", NONE, None),
        ("dont text", NONE, None),
        ("pls don't text me", POSSIBLE, "don't text"),
        ("halt now", POSSIBLE, "halt"),
        ("ok halt.now", POSSIBLE, "halt.now"),
        ("3 strikes", OPT_OUT, "3 strikes"),
        ("３ STRIKES", OPT_OUT, "3 strikes"),
        ("33 strikes", NONE, None),
        ("quit 2", OPT_OUT, "quit 2"),
        ("go, go", NONE, None),
        ("S.O.S", HELP, "s.o.s"),
        ("s o s", NONE, None),
        ("Aide✋moi!", HELP, "aide✋moi"),
        ("aide moi", NONE, None),
        ("info", NONE, None),
        ("中止", OPT_OUT, "中止"),
        ("请中止", NONE, None),
        ("好 中止", POSSIBLE, "中止"),
        ("NO MÁS por favor", POSSIBLE, "no mas"),
    ],
)
def test_custom_keyword_examples(
    custom: KeywordMatcher, body: str, classification: Classification, keyword: str | None
) -> None:
    """Examples of the custom set, each one checked against the reference too."""
    assert reference_classify(CUSTOM_KEYWORDS, body) == (classification, keyword)
    assert custom.classify(body) == KeywordMatch(classification, keyword)


@given(any_text)
def test_classify_never_raises_on_any_text(matcher: KeywordMatcher, body: str) -> None:
    """Any str, with NUL, controls, lone surrogates or unassigned code points, is classified."""
    match = matcher.classify(body)
    assert (match.keyword is None) == (match.classification is NONE)
    assert matcher.classify(normalize(body)) is match


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(st.characters(exclude_categories=()), min_size=1, max_size=8))
def test_classify_never_raises_on_megabyte_bodies(matcher: KeywordMatcher, unit: str) -> None:
    """A 1 MB body made of any characters is classified without error."""
    body = unit * (1_000_000 // len(unit))
    assert matcher.classify(body) is matcher.classify(normalize(body))


@given(any_text)
def test_normalize_is_idempotent_and_trimmed(body: str) -> None:
    """normalize is its own fixed point and leaves no edge or doubled spaces."""
    text = normalize(body)
    assert normalize(text) == text
    assert text == text.strip()
    assert "  " not in text


@given(st.text(st.characters(max_codepoint=0x7F)))
def test_ascii_fast_path_matches_the_unicode_path(body: str) -> None:
    """The ASCII-only shortcut normalises exactly like the general Unicode path."""
    assert _normalize_ascii(body) == _normalize_unicode(body)


def reference_normalize(body: str) -> str:
    """normalize() the slow way, one character and its Unicode category at a time."""
    text = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", body).casefold())
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category in {"Cc", "Cs", "Pd", "Pc", "Zs", "Zl", "Zp"}:
            kept.append(" ")
        elif category not in {"Mn", "Me", "Cf"}:
            kept.append(char)
    text = " ".join("".join(kept).split())
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    edge = {"Pe", "Pf", "Pi", "Po", "Ps", "Sc", "Sk", "Sm", "So", "Cn", "Co", "Zs"}
    start, end = 0, len(text)
    while start < end and unicodedata.category(text[start]) in edge:
        start += 1
    while end > start and unicodedata.category(text[end - 1]) in edge:
        end -= 1
    return text[start:end]


# Characters of every kind normalize() treats differently: letters with accents, full-width forms,
# marks, format characters, dashes, spaces of several kinds, punctuation, symbols, emoji, Hangul,
# unassigned and private-use code points, controls and a lone surrogate.
UNICODE_SAMPLER = (
    "aZ09 -_.,!?'()«»¿¡…–—éÉñÑßİıǅﬁＳｔ１\u0301\u0303\u20dd\u200b\u200d\ufe0f\u00ad\u2060"
    "\u00a0\u2003\u3000\u2028\u2029\x00\x1f\x7f\x85✋🛑😊€$^`+<=>|~한국ᄀ\u1161\U0010fffd\U000e0001"
    "\ud800\U0003ffff\u0378"
)


@given(st.one_of(st.text(st.sampled_from(UNICODE_SAMPLER)), any_text))
def test_normalize_agrees_with_a_per_character_reference(body: str) -> None:
    """normalize, with its per-distinct-character shortcuts, equals the per-character reference."""
    assert normalize(body) == reference_normalize(body)


def test_every_whitespace_character_is_read_as_a_space() -> None:
    """normalize only collapses runs of spaces because every other character str.split() splits
    on is in a category it turns into a space (this Python's Unicode database)."""
    spacing = {"Cc", "Cs", "Pd", "Pc", "Zs", "Zl", "Zp"}
    others = [
        f"U+{code:04X}"
        for code in range(sys.maxunicode + 1)
        if chr(code).isspace() and code != 0x20 and unicodedata.category(chr(code)) not in spacing
    ]
    assert others == []
    assert normalize("a\u2028\u3000\x85 \tb") == "a b"


@pytest.mark.parametrize(
    ("body", "normal"),
    [
        # More than _MAX_REPLACE_PASSES characters to drop or read as spaces: one translate pass.
        (
            "a\u200bb\u200cc\u200dd\u2060e\u00adf\ufe0fg\u0301h\u0303i\u3000j\u00a0k-l_m",
            "abcdefghi j k l m",
        ),
        # More than _MAX_STRIP_CHARS distinct characters at the ends: stripped by the set loop.
        ("".join(map(chr, range(0x2190, 0x21D0))) + " stop! " + "✋" * 3, "stop"),
    ],
)
def test_normalize_with_many_distinct_characters(body: str, normal: str) -> None:
    """Bodies past the replace and strip thresholds normalise like the reference too."""
    assert normalize(body) == normal == reference_normalize(body)


@given(st.text(st.sampled_from(EDGE_CHARACTERS), max_size=10))
def test_keyword_of_only_junk_is_refused(keyword: str) -> None:
    """Any keyword made only of spaces, punctuation, symbols or emoji raises ValidationError."""
    with pytest.raises(ValidationError, match="empty once normalised"):
        KeywordSet(help={keyword})


@given(
    st.sampled_from(DEFAULT_SPELLINGS),
    st.sampled_from(["opt_out", "opt_in", "help"]),
    st.sampled_from(["opt_out", "opt_in", "help"]),
)
def test_keyword_in_two_classes_is_always_refused(keyword: str, first: str, second: str) -> None:
    """Putting one keyword (in any spelling) in two different classes raises ValidationError."""
    assume(first != second)
    with pytest.raises(ValidationError, match=re.escape(repr(normalize(keyword)))):
        KeywordSet(**{first: {keyword.upper()}, second: {keyword.lower()}})


# --- bounded work on huge bodies -----------------------------------------------------------------

HUGE_CHARS = 10_000_000


def huge_body(head: str, alphabet: str | None, seed: int) -> str:
    """Return *head* followed by random characters up to HUGE_CHARS: from *alphabet*, or any code
    point (surrogates and unassigned ones included) if it is None.  A random block of 100,000
    characters is repeated, which keeps building the body quick."""
    rng = random.Random(seed)
    if alphabet is None:
        block = "".join(map(chr, rng.choices(range(sys.maxunicode + 1), k=100_000)))
    else:
        block = "".join(rng.choices(alphabet, k=100_000))
    return head + (block * (HUGE_CHARS // len(block) + 1))[: HUGE_CHARS - len(head)]


@pytest.fixture
def normalised_lengths(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every text classify normalises, by unicodedata.normalize or the ASCII path."""
    lengths: list[int] = []
    normalize_ascii = keywords_module._normalize_ascii

    def recording_unicodedata_normalize(form: unicodedata._NormalizationForm, text: str) -> str:
        lengths.append(len(text))
        return unicodedata.normalize(form, text)

    def recording_normalize_ascii(text: str) -> str:
        lengths.append(len(text))
        return normalize_ascii(text)

    recording = types.SimpleNamespace(
        normalize=recording_unicodedata_normalize, category=unicodedata.category
    )
    monkeypatch.setattr(keywords_module, "unicodedata", recording)
    monkeypatch.setattr(keywords_module, "_normalize_ascii", recording_normalize_ascii)
    return lengths


def peak_allocation(run: Callable[[], object]) -> int:
    """Return the peak bytes Python allocated while calling *run* (tracemalloc)."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("head", "alphabet", "keyword"),
    [
        ("Please stop! ", None, "stop"),
        ("Hi, can you please stop sending these? ", string.printable, "stop"),
        ("", None, None),
        ("", string.ascii_letters + " ", None),
    ],
    ids=["unicode-with-stop", "ascii-with-stop", "unicode", "ascii"],
)
def test_ten_megabyte_body_is_classified_from_a_bounded_prefix(
    normalised_lengths: list[int], head: str, alphabet: str | None, keyword: str | None
) -> None:
    """A 10 MB body of random Unicode or ASCII classifies like its first _EXAMINED_CHARS characters,
    and neither normalisation nor anything else in classify handles more than a bounded part."""
    body = huge_body(head, alphabet, seed=len(head))
    expected = KeywordMatch(POSSIBLE, keyword) if keyword else KeywordMatch(NONE, None)
    assert DEFAULT.classify(body) == expected
    # Normalised: the prefix, and what NFKC and NFD made of it (they may lengthen it a little).
    assert normalised_lengths
    assert max(normalised_lengths) <= 2 * _EXAMINED_CHARS
    # No step copies, encodes or normalises the whole body: one copy alone would take 10 MB or more.
    assert peak_allocation(lambda: DEFAULT.classify(body)) < 4_000_000
    assert DEFAULT.classify(body) is DEFAULT.classify(body[:_EXAMINED_CHARS])


tails = st.lists(
    st.sampled_from(["stop", " STOP ", "please stop now", "ok", " ", "\u200b", "🛑", "x", "end"]),
    min_size=1,
).map(lambda parts: "".join(parts) * 1_000)


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(replies(), custom_replies()),
    st.text(st.sampled_from(" x\u200b🛑!-"), min_size=1, max_size=4),
    tails,
    tails,
)
def test_nothing_after_the_examined_prefix_counts(
    head: str, unit: str, tail: str, other_tail: str
) -> None:
    """Bodies with the same first _EXAMINED_CHARS characters classify alike, whatever follows."""
    prefix = (head + unit * _EXAMINED_CHARS)[:_EXAMINED_CHARS]
    for matcher in (DEFAULT, CUSTOM):
        assert matcher.classify(prefix + tail) is matcher.classify(prefix + other_tail)


def test_examined_prefix_cut_does_not_split_words() -> None:
    """A word cut by the end of the examined prefix is not mistaken for a keyword ("stop|ped")."""
    invisible = "\u200b" * (_EXAMINED_CHARS - 5)  # normalises to nothing
    assert len(invisible + " stop") == _EXAMINED_CHARS
    assert DEFAULT.classify(invisible + " stopped by").classification is NONE
    assert DEFAULT.classify(invisible[1:] + " stop now") == KeywordMatch(POSSIBLE, "stop")

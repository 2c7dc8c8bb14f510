"""The compiled classifier of ASCII bodies gives exactly what the pure-Python matcher gives."""

from __future__ import annotations

import gc
import os
import re
import string
import weakref
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentkit.keywords import (
    DEFAULT_KEYWORDS,
    LOCALE_KEYWORDS,
    Classification,
    KeywordMatch,
    KeywordMatcher,
    KeywordSet,
    normalize,
)


def _load() -> ModuleType | None:
    try:
        from consentkit import _speedups
    except ImportError:
        return None
    return _speedups


# The tests feed the extension type plain strings as matches, so it is used untyped here.
speedups: Any = _load()


@pytest.fixture(autouse=True, scope="module")
def _accelerator_built() -> None:
    """Skip this module where the extension was not built; CI sets CONSENTKIT_REQUIRE_COMPILED=1
    so that a build that silently fell back to pure Python fails instead."""
    if speedups is None:
        reason = "consentkit._speedups is not built (was a C compiler there at install time?)"
        if os.environ.get("CONSENTKIT_REQUIRE_COMPILED") == "1":
            pytest.fail(f"{reason}; CONSENTKIT_REQUIRE_COMPILED=1 asks for it")
        pytest.skip(reason)


# Keyword sets of every shape: the defaults, every locale at once, and custom keywords of several
# words, with digits, inner punctuation, shared first words and non-ASCII forms.
KEYWORD_SETS = {
    "default": DEFAULT_KEYWORDS,
    "all-locales": KeywordMatcher.for_locales(sorted(LOCALE_KEYWORDS)).keywords,
    "custom": KeywordSet(
        opt_out={
            "stop", "stop all", "stop now please", "stopp", "don't text", "3 strikes", "halt.now",
            "a", "x-y-z", "no más", "中止",
        },
        opt_in={"go go", "start 2", "yes"},
        help={"help me", "s.o.s"},
    ),
    "no-opt-out": KeywordSet(help={"help"}),
}  # fmt: skip
PAIRS = {
    name: (KeywordMatcher(keywords), KeywordMatcher(keywords, compiled=False))
    for name, keywords in KEYWORD_SETS.items()
}

fragments: st.SearchStrategy[str] = st.sampled_from(
    sorted(
        {
            word
            for keywords in KEYWORD_SETS.values()
            for word in keywords.opt_out | keywords.opt_in | keywords.help
            if word.isascii()
        }
        | {"STOP", "Stop", "OPT-OUT", "Opt_Out", "StopAll", "stopped", "nonstop", "send", "end",
           "weekend", "ok", "please", "all", "now", "don", "t", "2", "22", "A", "x", "y", "z"}
    )
)  # fmt: skip
separators: st.SearchStrategy[str] = st.sampled_from(
    [*string.punctuation, *string.whitespace, "", " ", "  ", "\x00", "\x7f"]
)


@st.composite
def ascii_replies(draw: st.DrawFn) -> str:
    """Draw an ASCII reply of keyword pieces and separators, or of any ASCII characters."""
    if draw(st.booleans()):
        return draw(st.text(st.characters(max_codepoint=0x7F)))
    parts = draw(st.lists(st.tuples(fragments, separators), max_size=10))
    return draw(separators) + "".join(word + separator for word, separator in parts)


def outcome(match: KeywordMatch) -> tuple[Classification, str | None]:
    return (match.classification, match.keyword)


@settings(max_examples=400)
@given(st.sampled_from(sorted(PAIRS)), ascii_replies())
def test_compiled_agrees_with_pure_python(name: str, body: str) -> None:
    """On any ASCII body and keyword set, the compiled and pure-Python matchers agree."""
    compiled, pure = PAIRS[name]
    assert compiled.compiled
    assert outcome(compiled.classify(body)) == outcome(pure.classify(body))


@settings(max_examples=60)
@given(
    st.sampled_from(sorted(PAIRS)),
    st.integers(1_960, 2_040),
    st.sampled_from([" ", "-", ".", "x", "  "]),
    ascii_replies(),
)
def test_compiled_agrees_around_the_scan_limit(
    name: str, offset: int, glue: str, tail: str
) -> None:
    """Keywords just before, across and after the 2,000-character search limit are treated alike."""
    compiled, pure = PAIRS[name]
    body = ("ab " * 1_000)[:offset] + glue + tail
    assert outcome(compiled.classify(body)) == outcome(pure.classify(body))


@pytest.mark.parametrize("count", [0, 1, 62, 63, 64, 65, 66, 200, 700])
@pytest.mark.parametrize("ending", ["stop", "stop all", "stopped", "please stop now", "sent"])
def test_compiled_agrees_after_many_word_starts(count: int, ending: str) -> None:
    """Past the word starts the first pass notes (64), the search goes on correctly."""
    compiled, pure = PAIRS["default"]
    for filler in ("send ", "stopping ", "a ", "end-"):
        body = filler * count + ending
        assert outcome(compiled.classify(body)) == outcome(pure.classify(body))


def test_str_subclasses_and_non_ascii_go_their_way() -> None:
    """A str subclass is classified like its value; non-ASCII and non-str bodies go to the
    fallback (the pure-Python code)."""

    class Body(str):
        __slots__ = ()

    compiled, pure = PAIRS["default"]
    assert outcome(compiled.classify(Body(" Stop! "))) == (Classification.OPT_OUT, "stop")
    assert outcome(compiled.classify(Body("ok"))) == outcome(pure.classify("ok"))
    assert speedups is not None
    classifier = make_classifier([("stop", "S")], [("stop", "P")])
    assert classifier.classify("ARRÊT") == "FALLBACK"
    assert classifier.classify(b"STOP") == "FALLBACK"
    assert classifier.classify(None) == "FALLBACK"
    assert classifier.classify(" stop ") == "S"


# --- the extension type on its own ---------------------------------------------------------------


def fallback(body: str) -> str:
    """Stand in for the pure-Python classifier."""
    return "FALLBACK"


def make_classifier(
    exact: list[tuple[str, str]], possible: list[tuple[str, str]], scan_chars: int = 2_000
) -> Any:
    """Build a classifier whose matches are plain strings ("NONE" for no match)."""
    assert speedups is not None
    return speedups.AsciiClassifier(exact, possible, "NONE", scan_chars, fallback)


def reference(exact: dict[str, str], possible: list[str], scan_chars: int, body: str) -> str:
    """What the classifier must return, written the slow way: normal form, exact look-up, the
    search limit cut at a space, then the leftmost keyword standing as whole word(s)."""
    text = normalize(body)
    if text in exact:
        return exact[text]
    if len(text) > scan_chars:
        text = text[: max(text.rfind(" ", 0, scan_chars + 1), 0)]
    found = [
        (m.start(), -len(keyword), keyword)
        for keyword in possible
        if (m := re.search(rf"(?<![a-z0-9]){re.escape(keyword)}(?![a-z0-9])", text)) is not None
    ]
    return f"P:{min(found)[2]}" if found else "NONE"


@settings(max_examples=300)
@given(st.integers(0, 40), ascii_replies())
def test_classifier_with_a_small_search_limit_matches_the_reference(
    scan_chars: int, body: str
) -> None:
    """With search limits from 0 to 40 characters, the cut and the search follow the reference."""
    exact = {"stop": "E:stop", "opt out": "E:opt out", "yes": "E:yes"}
    possible = ["stop all", "3 strikes", "opt out", "x y z", "stop", "a"]  # longest first
    classifier = make_classifier(
        list(exact.items()), [(keyword, f"P:{keyword}") for keyword in possible], scan_chars
    )
    assert body.isascii()
    assert classifier.classify(body) == reference(exact, possible, scan_chars, body)


@pytest.mark.parametrize(
    ("exact", "possible", "scan_chars", "error", "message"),
    [
        ([], [], -1, ValueError, "scan_chars must be between 0 and"),
        ([], [], 10**6, ValueError, "scan_chars must be between 0 and"),
        ([("arrêt", 1)], [], 10, ValueError, r"exact\[0\]: the keyword must be non-empty ASCII"),
        ([("", 1)], [], 10, ValueError, "non-empty ASCII"),
        ([("st\x00op", 1)], [], 10, ValueError, "without NUL"),
        ([(b"stop", 1)], [], 10, TypeError, r"exact\[0\]: the keyword must be a str"),
        ([("stop",)], [], 10, TypeError, r"exact\[0\]: expected a \(keyword, match\) tuple"),
        ([], [("ok", 1), "stop"], 10, TypeError, r"possible\[1\]: expected a \(keyword, match\)"),
        ([], [("!stop", 1)], 10, ValueError, "must start with a letter or digit"),
        (42, [], 10, TypeError, "expected a sequence of"),
    ],
)
def test_classifier_refuses_bad_tables(
    exact: object, possible: object, scan_chars: int, error: type[Exception], message: str
) -> None:
    """Malformed keyword tables raise a TypeError or ValueError naming the entry."""
    assert speedups is not None
    with pytest.raises(error, match=message):
        speedups.AsciiClassifier(exact, possible, "NONE", scan_chars, fallback)


def test_classifier_lifecycle_errors() -> None:
    """An uninitialised classifier refuses to classify; a second __init__ is refused."""
    assert speedups is not None
    blank = speedups.AsciiClassifier.__new__(speedups.AsciiClassifier)
    with pytest.raises(TypeError, match="not initialised"):
        blank.classify("stop")
    classifier = speedups.AsciiClassifier([], [], "NONE", 10, fallback)
    with pytest.raises(TypeError, match="already initialised"):
        classifier.__init__([], [], "NONE", 10, fallback)
    with pytest.raises(TypeError, match="fallback must be callable"):
        speedups.AsciiClassifier([], [], "NONE", 10, "not callable")
    assert classifier.classify("stop") == "NONE"


def test_classifier_holds_its_matches_for_the_garbage_collector() -> None:
    """The classifier reports the match objects it holds, so a reference cycle through it is
    collected."""
    assert speedups is not None

    class Match:
        classifier: object = None

    match = Match()
    classifier = speedups.AsciiClassifier([("stop", match)], [], "NONE", 10, fallback)
    assert any(referent is match for referent in gc.get_referents(classifier))
    assert classifier.classify("STOP") is match
    match.classifier = classifier  # a cycle: classifier -> match -> classifier
    gone = weakref.ref(match)
    del classifier, match
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("length", [2_000, 8_190, 8_191, 20_000])
def test_long_exact_keywords(length: int) -> None:
    """An exact keyword longer than the search limit still matches whole; one longer than the
    compiled code reads makes the matcher fall back to Python."""
    keyword = ("ab " * length)[:length].strip()
    matcher = KeywordMatcher(KeywordSet(help={keyword}))
    assert matcher.compiled is (len(keyword) <= 8_190)
    assert matcher.classify(f" {keyword.upper()}! ") == KeywordMatch(Classification.HELP, keyword)
    assert matcher.classify(keyword + " x").classification is Classification.NONE
    assert speedups is not None
    with pytest.raises(ValueError, match="exact keywords must be at most 8190 characters"):
        speedups.AsciiClassifier([("a" * 8_191, "E")], [], "NONE", 10, fallback)

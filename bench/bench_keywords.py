"""How fast is KeywordMatcher.classify next to a bare keyword lookup?

Run from the repository root::

    PYTHONPATH=src .venv/bin/python bench/bench_keywords.py [--messages N] [--repeats N] [--pure]

The matcher is the one a host app gets: compiled (``consentkit._speedups`` classifies ASCII bodies)
where the extension was built, which the first line of the output says; ``--pure`` measures the
pure-Python code instead.

Both contestants go over the same seeded corpus in the same run: 66% ordinary ASCII conversational
replies of varied lengths (2 to 500 characters), 20% exact keywords in mixed case, padding and
punctuation (a few with an emoji or in full-width or accented form), 10% messages with an opt-out
keyword inside, and 4% non-ASCII replies (accents, emoji).  The baseline is what a hand-rolled
webhook does, ``body.strip().upper() in KEYWORDS``, inline in the loop: it ignores punctuation,
Unicode, multi-word forms and keywords inside sentences, so it is a floor, not a competitor.

Each figure is the best of several timed passes (time.perf_counter), which filters scheduler noise
out instead of averaging it in; the passes of the two contestants alternate, so that a busy spell
of the machine slows both rather than one.  The target is a ratio of at most 3.0.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence

from consentkit.keywords import DEFAULT_KEYWORDS, KeywordMatcher

KEYWORDS = frozenset(
    keyword.upper()
    for keyword in DEFAULT_KEYWORDS.opt_out | DEFAULT_KEYWORDS.opt_in | DEFAULT_KEYWORDS.help
)

_ORDINARY = (
    "ok",
    "no",
    "Perfect",
    "Ok thanks",
    "Thanks!",
    "thank you so much",
    "Who is this?",
    "Yes please, 3pm works",
    "See you tomorrow at 10",
    "Can I reschedule to Friday?",
    "I'll be there in 5 min",
    "Sounds good, have a nice weekend",
    "Not sure yet, I'll let you know later today",
    "We stopped by yesterday but the shop was closed",
    "The delivery was left at the front door, endless thanks to the driver",
    "Is the offer still valid if I come in on Saturday afternoon with my sister?",
    "Hi, my order #48213 hasn't arrived yet. Could you check the tracking number for me?",
    "Can you send me the invoice for last month? I need it for my expense report by Tuesday.",
    "Running late, traffic on the highway is terrible this morning. Should be there by 9:30.",
    "Please call me back when you get a chance, I have a question about my appointment next"
    " week and whether I need to bring anything with me.",
    "Hello! I got your message about the promotion. Does it apply to items already on sale or only"
    " to full-price ones? Also, can I combine it with my loyalty points? Thanks in advance for your"
    " help, I really appreciate the quick replies you always give.",
)

_NON_ASCII = (
    "Merci beaucoup 😊",
    "¿Puedes llamarme mañana?",
    "Obrigado, até amanhã!",
    "Confirmed ✅",
    "Great, see you then 👍",
    "Das passt, danke schön",
)

_INSIDE = (
    "Please stop texting me",
    "STOP sending me these messages",
    "I want to unsubscribe from this list, thanks",
    "can you end this",
    "Take me off your list. Remove my number please",
    "stop please",
    "Who gave you my number? Stop!",
    "I never signed up for this, please cancel my subscription",
)

_SLICES = ("ordinary", "exact keyword", "keyword inside", "non-ASCII")


def build_corpus(size: int, seed: int = 20250411) -> list[tuple[str, str]]:
    """Return *size* ``(slice, body)`` pairs in the proportions of the module docstring."""
    rng = random.Random(seed)
    spellings = [*sorted(KEYWORDS), "Opt-Out", "stop all", "ARRÊT", "ＳＴＯＰ"]
    corpus: list[tuple[str, str]] = []
    for _ in range(size):
        roll = rng.random()
        if roll < 0.66:
            body = rng.choice(_ORDINARY)
            if rng.random() < 0.2:
                body = body + " " + rng.choice(_ORDINARY)
            corpus.append(("ordinary", body))
        elif roll < 0.86:
            word = rng.choice(spellings)
            word = rng.choice((word, word.lower(), word.title(), word.upper()))
            body = rng.choice(("", " ", "  ", "\n")) + word + rng.choice(("", " ", ".", "!", "\n"))
            if rng.random() < 0.05:
                body = "🛑 " + body
            corpus.append(("exact keyword", body))
        elif roll < 0.96:
            corpus.append(("keyword inside", rng.choice(_INSIDE)))
        else:
            corpus.append(("non-ASCII", rng.choice(_NON_ASCII)))
    return corpus


def best_times(
    runs: Sequence[Callable[[list[str]], object]], bodies: Sequence[str], repeats: int
) -> list[float]:
    """Return, for each of *runs*, the fastest of *repeats* timed calls over *bodies*, in seconds.

    The runs take turns, pass after pass.  Every call gets fresh copies of the strings, made outside
    the timed region, because CPython caches a string's hash on the string: a dict lookup on a body
    seen in an earlier pass would be cheaper than on a newly received one.
    """
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for index, run in enumerate(runs):
            fresh = [body.encode().decode() for body in bodies]
            start = time.perf_counter()
            run(fresh)
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def main(argv: Sequence[str] | None = None) -> float:
    """Run the benchmark, print the table and return the overall ratio."""
    parser = argparse.ArgumentParser(description="KeywordMatcher.classify against a bare lookup")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pure", action="store_true", help="measure the pure-Python matcher")
    options = parser.parse_args(argv)

    corpus = build_corpus(options.messages)
    subject = KeywordMatcher(compiled=not options.pure)
    classify = subject.classify
    keywords = KEYWORDS

    def baseline(bodies: list[str]) -> None:
        for body in bodies:
            body.strip().upper() in keywords  # noqa: B015 - the membership test is what is timed

    def matcher(bodies: list[str]) -> None:
        for body in bodies:
            classify(body)

    everything = [body for _, body in corpus]
    baseline_seconds, matcher_seconds = best_times((baseline, matcher), everything, options.repeats)
    ratio = matcher_seconds / baseline_seconds

    kind = "compiled (consentkit._speedups)" if subject.compiled else "pure Python"
    print(f"matcher: {kind}")
    print(f"{len(corpus):,} messages, best of {options.repeats} passes (time.perf_counter)")
    print(f"{'slice':<16}{'share':>7}{'baseline msg/s':>16}{'classify msg/s':>16}{'ratio':>7}")
    rows = [("all", everything, baseline_seconds, matcher_seconds)]
    for name in _SLICES:
        bodies = [body for slice_name, body in corpus if slice_name == name]
        base_seconds, classify_seconds = best_times((baseline, matcher), bodies, options.repeats)
        rows.append((name, bodies, base_seconds, classify_seconds))
    for name, bodies, base_seconds, classify_seconds in rows:
        print(
            f"{name:<16}{len(bodies) / len(corpus):>7.0%}{len(bodies) / base_seconds:>16,.0f}"
            f"{len(bodies) / classify_seconds:>16,.0f}{classify_seconds / base_seconds:>7.1f}"
        )
    per_message = 1e9 / len(corpus)
    print(
        f"ratio classify / `body.strip().upper() in KEYWORDS`: {ratio:.2f} (target <= 3.0); "
        f"{matcher_seconds * per_message:.0f} ns vs {baseline_seconds * per_message:.0f} ns"
        " a message"
    )
    return ratio


if __name__ == "__main__":
    main()

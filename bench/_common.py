"""Helpers shared by the store benches (bench_sqlite.py, bench_postgres.py).

Both benches measure the same figures (see issue 14), each as the store's time next to the raw
driver's *floor* (the same work written set-based by hand), on data both sides built the same way:

1. import: ``upsert_contacts`` of N new contacts with a phone each;
2. opt-in of N pairs with evidence (``details=False``);
3. bulk unsubscribe of N/2 subscribed pairs with ``details=True`` (the changed pairs listed: the
   default until issue 14) and ``details=False`` (counts);
4. ``can_send`` point lookups;
5. the audience filter over every contact id;
6. ``handle_inbound`` of a STOP from one contact's number;
7. peak memory of a bulk unsubscribe of 100k and of 1M pairs, each in a child process of its own.

This module holds what does not depend on the driver: ids and numbers, the alternating timer,
the memory measurement of the child processes, and the printed tables.
"""

from __future__ import annotations

import cProfile
import gc
import inspect
import io
import json
import pstats
import resource
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# The default channel group of an inbound STOP (consentkit.channels.DEFAULT_CHANNEL_GROUPS).
STOP_GROUP = ("sms", "mms", "rcs")
# Every contact of the memory figure is subscribed on these: each child process unsubscribes one
# channel with RSS measured and another under tracemalloc, so no run sees another's writes.
MEMORY_CHANNELS = {
    "store-details": ("sms", "mms"),  # details=True
    "store-counts": ("rcs", "whatsapp"),  # details=False
    "raw": ("voice", "email"),
}
MEMORY_KINDS = tuple(MEMORY_CHANNELS)
ALL_MEMORY_CHANNELS = tuple(ch for pair in MEMORY_CHANNELS.values() for ch in pair)
STOP_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE"})
MIB = 2**20


def contact_id(number: int) -> str:
    """The id of base contact *number*: even numbers are subscribed on SMS after the setup."""
    return f"contact-{number:07d}"


def phone(number: int) -> str:
    """The phone number of base contact *number* (E.164)."""
    return f"+1202{number:07d}"


def import_id(batch: int, number: int) -> str:
    """The id of contact *number* of import pass *batch* (a new contact)."""
    return f"import-{batch}-{number:07d}"


def import_phone(batch: int, number: int) -> str:
    """The phone number of contact *number* of import pass *batch* (E.164, no base contact's)."""
    return f"+44{batch + 1:02d}{number:08d}"


def is_stop(body: str) -> bool:
    """The raw side's keyword match: a STOP keyword, case and surrounding space ignored."""
    return body.strip().upper() in STOP_KEYWORDS


def exit_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``, ``kill``) into SystemExit, so the bench's ``finally`` blocks
    remove its temporary databases and schemas."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def code_under_test() -> str:
    """Where the measured consentkit comes from, and the default of ``details`` in bulk calls."""
    import consentkit
    from consentkit import ConsentService

    default = inspect.signature(ConsentService.unsubscribe).parameters["details"].default
    return (
        f"consentkit from {Path(consentkit.__file__ or '?').parent}, unsubscribe(details={default})"
    )


# ---------------------------------------------------------------------------- timing


def alternate(
    repeats: int,
    store_run: Callable[[int], object],
    raw_run: Callable[[int], object],
    before: Callable[[], object] | None = None,
    prepare: Callable[[int], object] | None = None,
) -> tuple[float, float]:
    """The shortest wall times of *repeats* calls of each ``run(pass_index)``.

    The two sides take turns, and take turns going first, so a burst of load from elsewhere on
    the machine (2 shared cores) hits both and neither always runs right after the other's
    writes.  Untimed: *prepare* runs once per pass before both (it builds the pass's input),
    *before* before every timed call (a checkpoint).  The objects alive before a timed call are
    frozen out of the garbage collector during it, so neither side pays for collections that
    walk the bench's own inputs.
    """
    store_times: list[float] = []
    raw_times: list[float] = []
    for index in range(repeats):
        if prepare is not None:
            prepare(index)
        order = [(store_run, store_times), (raw_run, raw_times)]
        if index % 2:
            order.reverse()
        for run, times in order:
            if before is not None:
                before()
            gc.collect()
            gc.freeze()
            try:
                started = time.perf_counter()
                run(index)
                times.append(time.perf_counter() - started)
            finally:
                gc.unfreeze()
    return min(store_times), min(raw_times)


def profile(title: str, run: Callable[[], object], lines: int = 25) -> None:
    """Run *run* under cProfile and print the top *lines* functions by cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        run()
    finally:
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(lines)
    print(f"\n--- profile: {title} (cProfile, top {lines} by cumulative time)")
    print(out.getvalue().rstrip())


# ---------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int | None:
    """A ``Vm...`` field of /proc/self/status in KiB (None where there is no /proc)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS (VmHWM) of this process to its current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_delta(run: Callable[[], object]) -> int:
    """How far *run* raised this process's peak resident set above its RSS before it, in bytes
    (VmHWM after, minus VmRSS before; the peak is reset first where the kernel allows, else
    ``getrusage`` gives the peak of the whole process so far)."""
    gc.collect()
    reset = _reset_peak_rss()
    before = _status_kib("VmRSS")
    if before is None:  # no /proc: the lifetime peak, which includes the set-up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_before = _status_kib("VmHWM") if not reset else None
    run()
    after = _status_kib("VmHWM")
    if after is None:
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if peak_before is not None and after <= peak_before:
        return 0  # the peak of the set-up was never exceeded: report no growth
    return max(0, after - before) * 1024


def traced_peak(run: Callable[[], object]) -> int:
    """Peak bytes Python allocated while *run* ran (tracemalloc; the database's own caches are
    not counted)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def child_report(rss_run: Callable[[], object], traced_run: Callable[[], object]) -> None:
    """In a memory child process: measure both runs and print one JSON line for the parent."""
    rss = rss_delta(rss_run)
    traced = traced_peak(traced_run)
    print(json.dumps({"rss": rss, "traced": traced}))


def run_child(arguments: Sequence[str]) -> dict[str, int]:
    """Run this script again with *arguments* (a memory child) and read its JSON line."""
    done = subprocess.run(
        [sys.executable, sys.argv[0], *arguments],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory child {arguments} failed:\n{done.stdout}\n{done.stderr}")
    line = done.stdout.strip().splitlines()[-1]
    report: dict[str, int] = json.loads(line)
    return report


@dataclass(frozen=True)
class Memory:
    """The peaks of one kind of memory child at each size."""

    kind: str
    sizes: tuple[int, int]
    traced: tuple[int, int]
    rss: tuple[int, int]


def ids(count: int) -> Iterator[str]:
    """The ids of base contacts ``0 .. count - 1``, streamed (a memory child's input)."""
    return (contact_id(n) for n in range(count))


# ---------------------------------------------------------------------------- printing

Row = tuple[str, float, float, float | None]
"""One timed figure: its name, store seconds, raw seconds, and the target ratio (or None)."""


def print_summary(title: str, rows: Sequence[Row], memory: Sequence[Memory]) -> int:
    """Print the figures and the memory peaks as one table; returns how many targets were
    missed (the memory target applies to the store's default call, ``details=False``; a
    detailed result lists every pair, so its peak is shown without a target)."""
    print(f"\n{title}")
    print(f"{'figure':<44}{'store':>11}{'raw':>11}{'ratio':>8}{'target':>9}")
    missed = 0

    def verdict(ratio: float, target: float | None) -> tuple[str, str]:
        nonlocal missed
        if target is None:
            return "-", ""
        missed += ratio > target
        return "<= " + format(target, ".1f"), "ok" if ratio <= target else "MISSED"

    for name, store_time, raw_time, target in rows:
        ratio = store_time / raw_time
        shown, word = verdict(ratio, target)
        print(f"{name:<44}{store_time:>10.3f}s{raw_time:>10.3f}s{ratio:>8.2f}{shown:>9}  {word}")
    if memory:
        small, large = memory[0].sizes
        print(
            f"\npeak memory of a bulk unsubscribe, one child process per run "
            f"({small:,} and {large:,} pairs; ratio = {large:,} / {small:,})"
        )
        print(f"{'run':<44}{f'{small:,}':>11}{f'{large:,}':>11}{'ratio':>8}{'target':>9}")
        for entry in memory:
            # The bar is the default call's (issue 14): with details=True the result lists every
            # changed pair, so its size grows with them by design (shown, not judged).
            target = 1.2 if entry.kind == "store-counts" else None
            for what, values in (("tracemalloc peak", entry.traced), ("RSS growth", entry.rss)):
                ratio = values[1] / values[0] if values[0] else float("inf") if values[1] else 1.0
                shown, word = verdict(ratio, target)
                print(
                    f"{entry.kind + ', ' + what:<44}{values[0] / MIB:>9.1f}MB"
                    f"{values[1] / MIB:>9.1f}MB{ratio:>8.2f}{shown:>9}  {word}"
                )
    print(f"\ntargets missed: {missed}")
    return missed

"""Helpers shared by the store benches (bench_sqlite.py, bench_postgres.py)."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Callable, Iterator, Sequence

Row = tuple[str, float, float, float | None]
"""One measured operation: its name, store seconds, raw seconds, and the target ratio (or None)."""


def contact_id(number: int) -> str:
    """The id of contact *number*: even numbers are subscribed on SMS after the setup."""
    return f"contact-{number:07d}"


def slices(numbers: Iterator[int], size: int) -> list[str]:
    """The next *size* contact ids from *numbers*."""
    return [contact_id(n) for n in itertools.islice(numbers, size)]


def peak_memory(run: Callable[[], object]) -> int:
    """Peak bytes Python allocated while *run* ran (tracemalloc; a database's own page cache is
    not counted)."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def print_comparison(rows: Sequence[Row], store_peak: int, raw_peak: int) -> int:
    """Print the store-versus-raw table; returns how many targets were missed."""
    print(f"{'operation':<34}{'store':>11}{'raw':>11}{'ratio':>8}{'target':>9}")
    missed = 0
    for name, store_time, raw_time, target in rows:
        ratio = store_time / raw_time
        if target is None:
            verdict, shown = "", "-"
        else:
            verdict = "ok" if ratio <= target else "MISSED"
            missed += ratio > target
            shown = "<= " + format(target, ".1f")
        print(
            f"{name:<34}{store_time:>10.3f}s{raw_time:>10.3f}s{ratio:>8.2f}{shown:>9}  {verdict}"
        )
    mib = 2**20
    print(
        f"{'peak Python memory, bulk':<34}{store_peak / mib:>9.1f}MB{raw_peak / mib:>9.1f}MB"
        f"{store_peak / raw_peak:>8.2f}"
    )
    return missed

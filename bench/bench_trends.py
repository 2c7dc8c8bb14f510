"""Trend reports on SQLite: does the cost stay flat as history grows?

Builds two SQLite databases through ConsentService, one with ~10,000 events and one with
~1,000,000, spread over the last six months, then times ``ConsentService.trends`` (12-month series
and spike checks) on each.  Target (issue 5): the large case takes at most 2x the small one.

Run: ``PYTHONPATH=src python bench/bench_trends.py`` (``--quick`` builds 10,000 vs 100,000).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from consentkit import EMAIL, SMS, Actor, ConsentService, Contact, Evidence
from consentkit.storage.sqlite import SQLiteStore
from consentkit.testing import FakeClock

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ADMIN = Actor.admin("bench", "alice")
IMPORTER = Actor.system("bench", "importer")
EVIDENCE = Evidence("import", "Imported with consent records", "v1")
BATCHES = 40


def build(path: Path, events: int) -> int:
    """Write about *events* events: opt-ins on two channels, then unsubscribes of half of them,
    in batches spread over the last 180 days.  Returns the number of events written."""
    store = SQLiteStore(path, synchronous="NORMAL")
    service = ConsentService(store, clock=FakeClock(NOW))
    contacts = max(events // 3, BATCHES)
    ids = [f"contact-{i:07d}" for i in range(contacts)]
    service.upsert_contacts(ADMIN, (Contact("bench", cid) for cid in ids))
    written = 0
    step = timedelta(days=180) / BATCHES
    per_batch = len(ids) // BATCHES
    for batch in range(BATCHES):
        chunk = ids[batch * per_batch : (batch + 1) * per_batch]
        when = NOW - timedelta(days=180) + step * batch
        written += service.opt_in(
            IMPORTER, chunk, [SMS, EMAIL], evidence=EVIDENCE, occurred_at=when, details=False
        ).changed_count
        written += service.unsubscribe(
            ADMIN, chunk[: len(chunk) // 2], [SMS, EMAIL], occurred_at=when + step / 2,
            details=False,
        ).changed_count
    store.close()
    return written


def time_trends(path: Path, repeats: int) -> tuple[float, float]:
    """Best and median seconds of one 12-month trend report."""
    store = SQLiteStore(path)
    service = ConsentService(store, clock=FakeClock(NOW))
    service.trends(ADMIN)  # warm the page cache and statement cache, like a long-running app
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        report = service.trends(ADMIN)
        samples.append(time.perf_counter() - start)
    store.close()
    assert report.channels, "the report should cover the generated channels"
    return min(samples), statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 vs 100,000 events")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    sizes = (10_000, 100_000 if args.quick else 1_000_000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"trends-{size}.db"
            start = time.perf_counter()
            written = build(path, size)
            built = time.perf_counter() - start
            best, median = time_trends(path, args.repeats)
            rows.append((written, built, best, median))
    print(f"trends(12 months) on SQLite, best/median of {args.repeats} runs")
    print(f"{'events':>10} {'build s':>9} {'best ms':>9} {'median ms':>10}")
    for written, built, best, median in rows:
        print(f"{written:>10,} {built:>9.1f} {best * 1000:>9.2f} {median * 1000:>10.2f}")
    ratio = rows[1][2] / rows[0][2]
    print(f"ratio large/small (best): {ratio:.2f} (target <= 2.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Racing two calls against each other, for the concurrency tests of every SQL store."""

from __future__ import annotations

import threading
from collections.abc import Callable


def race(
    first: Callable[[], object], second: Callable[[], object], *, join_timeout: float = 60.0
) -> list[str]:
    """Run *first* and *second* in two threads released together by a barrier; their errors."""
    start = threading.Barrier(2)
    errors: list[str] = []

    def run(action: Callable[[], object]) -> None:
        try:
            start.wait(30)
            action()
        except BaseException as error:  # reported by the caller: a thread must not die silently
            errors.append(repr(error))

    threads = [threading.Thread(target=run, args=(action,)) for action in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(join_timeout)
        if thread.is_alive():
            errors.append(f"a racing call did not finish within {join_timeout:g} s")
    return errors

"""``consentkit demo``: the guided tour (:mod:`consentkit.demo`), imported only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from consentkit.cli.context import Context

__all__ = ["demo", "demo_arguments"]


def demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The tour's own ``--db``."""
    parser.add_argument(
        "--db",
        dest="demo_db",
        type=Path,
        metavar="PATH",
        help="keep the tour's database at PATH, which must not exist yet (default: a temporary "
        "one, deleted at the end). The global --db and CONSENTKIT_DB are never used.",
    )


def demo(ctx: Context, args: argparse.Namespace) -> int:
    """Run the tour on a fresh database."""
    from consentkit.demo import run_demo

    factory = ctx.store_factory
    return run_demo(
        args.demo_db, ctx.out, clock=ctx.clock, store_factory=lambda p: factory(p, create=True)
    )

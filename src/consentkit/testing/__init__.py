"""Testing aids for host apps and store authors: the store conformance suite, a fake clock,
hypothesis strategies and a replay checker.

Needs pytest and hypothesis (the ``dev`` dependency group); nothing else in consentkit imports this.
"""

from consentkit.testing.clock import FakeClock
from consentkit.testing.conformance import StoreConformance
from consentkit.testing.replay import ReplayMismatch, check_replay, replay

__all__ = ["FakeClock", "ReplayMismatch", "StoreConformance", "check_replay", "replay"]

"""Testing aids for host apps and store authors: a fake clock, a replay checker, the store
conformance suite and hypothesis strategies.

``FakeClock`` and the replay checker need nothing beyond consentkit itself.  The conformance suite
(``StoreConformance``) and ``consentkit.testing.strategies`` need pytest and hypothesis: install
``consentkit[testing]``.  ``StoreConformance`` is imported from here on first use only, so
``from consentkit.testing import FakeClock`` works on a plain install.  Nothing else in consentkit
imports this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consentkit.testing.clock import FakeClock
from consentkit.testing.replay import ReplayMismatch, check_replay, replay

if TYPE_CHECKING:
    from consentkit.testing.conformance import StoreConformance

__all__ = ["FakeClock", "ReplayMismatch", "StoreConformance", "check_replay", "replay"]


def __getattr__(name: str) -> Any:
    if name == "StoreConformance":
        try:
            from consentkit.testing.conformance import StoreConformance
        except ImportError as error:  # pytest or hypothesis missing
            raise ImportError(
                "consentkit.testing.StoreConformance needs pytest and hypothesis: "
                "pip install 'consentkit[testing]'"
            ) from error
        return StoreConformance
    raise AttributeError(f"module 'consentkit.testing' has no attribute {name!r}")

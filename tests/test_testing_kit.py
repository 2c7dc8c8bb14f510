"""The testing kit: what imports without pytest and hypothesis, and what asks for the extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run_without_test_tools(code: str) -> subprocess.CompletedProcess[str]:
    # A meta-path finder that refuses pytest and hypothesis stands in for a plain install.
    blocker = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("pytest", "hypothesis", "_pytest"):
                    raise ImportError(f"No module named {name!r}")
                return None
        sys.meta_path.insert(0, Block())
        """
    )
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_fake_clock_and_replay_import_without_pytest_or_hypothesis() -> None:
    """FakeClock and check_replay, the first example of getting-started, work on a plain install."""
    run = _run_without_test_tools(
        """
        from datetime import UTC, datetime
        from consentkit import ConsentService, InMemoryStore
        from consentkit.testing import FakeClock, check_replay
        service = ConsentService(InMemoryStore(), clock=FakeClock(datetime(2026, 1, 1, tzinfo=UTC)))
        check_replay(service.store, "acme")
        print("ok")
        """
    )
    assert (run.returncode, run.stdout.strip()) == (0, "ok"), run.stderr


def test_the_conformance_suite_names_the_extra_it_needs() -> None:
    """Without pytest and hypothesis, StoreConformance raises ImportError naming the extra."""
    run = _run_without_test_tools(
        """
        try:
            from consentkit.testing import StoreConformance
        except ImportError as error:
            print(error)
        """
    )
    assert run.returncode == 0, run.stderr
    assert "consentkit[testing]" in run.stdout


def test_the_conformance_suite_is_there_with_the_extra() -> None:
    """With pytest and hypothesis installed, StoreConformance imports from consentkit.testing."""
    from consentkit.testing import StoreConformance
    from consentkit.testing.conformance import StoreConformance as Direct

    assert StoreConformance is Direct

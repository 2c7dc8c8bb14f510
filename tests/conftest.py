"""Shared test configuration: hypothesis profiles and the PostgreSQL-must-run guard."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# "ci" explores more; "fast" is for quick local loops (CONSENTKIT_HYPOTHESIS_PROFILE=fast).
settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("fast", max_examples=15, deadline=None)
settings.load_profile(os.environ.get("CONSENTKIT_HYPOTHESIS_PROFILE", "ci"))

_postgres_outcomes: dict[str, int] = {"passed": 0, "skipped": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count how PostgreSQL tests ended, so CI can refuse a run where they were skipped."""
    if "postgres" in report.keywords and (report.when == "call" or report.skipped):
        if report.skipped:
            _postgres_outcomes["skipped"] += 1
        elif report.passed:
            _postgres_outcomes["passed"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when CONSENTKIT_REQUIRE_POSTGRES=1 and PostgreSQL tests were skipped."""
    if os.environ.get("CONSENTKIT_REQUIRE_POSTGRES") != "1":
        return
    if _postgres_outcomes["skipped"] or not _postgres_outcomes["passed"]:
        session.config.get_terminal_writer().line(
            f"CONSENTKIT_REQUIRE_POSTGRES=1 but {_postgres_outcomes['skipped']} PostgreSQL tests "
            f"were skipped and {_postgres_outcomes['passed']} passed: is the server up and "
            "CONSENTKIT_TEST_POSTGRES_DSN set?",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

"""The ``consentkit demo`` tour: it runs end to end and shows each capability's key facts."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consentkit import Clock, demo
from consentkit.cli import main
from consentkit.demo import STEPS, DemoContext, run_demo
from consentkit.errors import ValidationError
from consentkit.inbound import ReplyTemplates
from consentkit.testing import FakeClock

SRC = Path(__file__).resolve().parent.parent / "src"
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")


def _tour(clock: Clock | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = run_demo(None, out, clock=clock)
    return code, out.getvalue()


def test_tour_shows_every_capability() -> None:
    """Every step runs and the output carries each step's actual results."""
    code, text = _tour()
    assert code == 0, text
    for number, step in enumerate(STEPS, 1):
        assert f"\n{number}. {step.__doc__}\n" in text
    expected = [
        "5 created",  # contacts registered
        "needs Evidence",  # opt-in without proof refused
        "chloe on whatsapp: never_subscribed (channels are independent)",
        "contact:dev, source unsubscribe_link",
        "-> 4 changed, 2 already unsubscribed",  # the bulk unsubscribe
        "unchanged  dev    email (no event written)",
        "ben    whatsapp  unsubscribed  by admin via inbox",  # the inbox toggle
        "Ask an admin of the account to do it.",  # the member
        "needs a justification",  # resubscribe without one
        "so it was not a mistake",  # mistaken_unsubscribe after the contact's own opt-out
        "All or nothing: chloe on email is still unsubscribed.",
        "changed    dev    email",  # accepted with a contact request
        "skipped    dev    sms: unsubscribed",  # the import
        "emma   email     unsubscribed  by contact via unsubscribe_link",  # the filter
        "can_send(dev,   sms) = False -> do not send (unsubscribed)",
        "history(dev): 5 events",
        "contact_request: dev called support",
        "SignatureError, code 'invalid_signature', HTTP 403",  # a forged webhook
        "(actor contact:hal, source carrier, reason provider_complaint)",  # a spam report
        "a second POST -> 200 already_unsubscribed, no event written",  # one-click
        '"channel": "whatsapp", "version": 2}',  # a result's JSON document with its versions
        "A resubscription without a justification -> HTTP 422:",
        "Done. The temporary database has been deleted.",
    ]
    for fact in expected:
        assert fact in text, fact


def test_tour_shows_inbound_replies_and_trends() -> None:
    """The inbound step shows the STOP honoured, the duplicate ignored, the review, HELP and the
    suppression; the trends step shows percentages, sparklines and the flagged spike's reason."""
    code, text = _tour()
    assert code == 0, text
    inbound = text[text.index("A contact replies STOP") : text.index("Filtering for unsub")]
    for fact in [
        'message SM0001 on sms from +14155550107: opt_out (keyword "stop")',
        "gus  sms -> unsubscribed",
        "gus  mms -> unsubscribed",
        "gus  rcs -> unsubscribed",
        f"reply to send: {ReplyTemplates().opt_out}",
        "honour by: ",
        "(duplicate delivery: already handled, nothing changed)",
        "outcome: needs review",
        "fay on sms is still subscribed",
        f"reply to send: {ReplyTemplates().help}",
        "outcome: suppressed",
        "suppressed hal sms: the number opted out before hal existed",
        "skipped    hal    sms: unsubscribed",
    ]:
        assert fact in inbound, fact
    counts = re.search(r"audit log: (\d+) events before the redelivery, (\d+) after", text)
    assert counts is not None
    assert counts[1] == counts[2]
    assert "gus    sms       unsubscribed  by contact via inbound_keyword" in text  # the filter
    assert "can_send(gus,   sms) = False" in text
    trends = text[text.index("Subscriber trends") :]
    sms_row = next(line for line in trends.splitlines() if line.strip().startswith("sms "))
    assert re.search(r" -\d+\.\d% +[▁▂▃▄▅▆▇█]{6}$", sms_row), sms_row
    assert "n/a (was 0)" in trends
    assert "unsubscribe spike on sms (last 7 days): " in trends
    assert "sd above the mean, over the 3 sd" in trends
    assert "within the 3 sd threshold" in trends  # email's ordinary week, for comparison


def test_tour_shows_the_review_queue_and_a_refused_channel() -> None:
    """The tour refuses a misspelled channel without writing, lists fay's possible opt-out in
    the review queue and decides it as an opt-out, which unsubscribes her."""
    code, text = _tour()
    assert code == 0, text
    refused = text[text.index("A misspelled channel") : text.index("Re-subscribing from the All")]
    flowed = " ".join(refused.split())  # the tour wraps long messages
    assert (
        "-> refused (UnknownChannelError): channels: 'smss' is not a known channel; did you mean"
        " 'sms'?" in flowed
    )
    assert "No event was written" in refused
    review = text[text.index("A person reviews") : text.index("Filtering for unsub")]
    for fact in [
        "STATUS  TEXT",
        "sms:SM0002",
        "open    please stop texting me",
        "review item sms:SM0002: decided an opt-out by admin:alice",
        "note: fay asks us to stop texting her",
        "changed    fay sms",
        "fay on sms is now unsubscribed; the queue has 0 open items",
    ]:
        assert fact in review, fact
    assert "can_send(fay,   sms) = False -> do not send (unsubscribed)" in text


@pytest.mark.parametrize(
    "start",
    [datetime(2026, 3, 31, 23, 30, tzinfo=UTC), datetime(2026, 3, 1, 0, 5, tzinfo=UTC)],
    ids=["end-of-march", "start-of-month"],
)
def test_trends_step_holds_at_awkward_dates(start: datetime) -> None:
    """The trends step's own checks (sms down, email up, the spike flagged) hold at month ends
    and starts, where the generated history falls differently into calendar months."""
    code, text = _tour(FakeClock(start, tick=timedelta(seconds=1)))
    assert code == 0, text


def test_output_is_deterministic_apart_from_timestamps() -> None:
    """Two tours print the same text once timestamps are masked; with a fake clock, exactly."""
    first = _tour()[1]
    second = _tour()[1]
    assert _TIMESTAMP.sub("T", first) == _TIMESTAMP.sub("T", second)
    fake = [_tour(clock=FakeClock(tick=timedelta(seconds=1)))[1] for _ in range(2)]
    assert fake[0] == fake[1]
    assert "2026-01-01T00:00" in fake[0]


def test_db_path_must_be_fresh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--db keeps the tour's database at a new path and refuses an existing one."""
    path = tmp_path / "tour.db"
    assert main(["demo", "--db", str(path)]) == 0
    assert f"consentkit --db {path} --account demo history dev" in capsys.readouterr().out
    assert path.exists()
    assert main(["--db", str(path), "--account", "demo", "history", "dev"]) == 0
    assert "contact_request" in capsys.readouterr().out
    assert main(["demo", "--db", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "already exists" in err
    with pytest.raises(ValidationError, match="already exists"):
        run_demo(path, io.StringIO())


def test_demo_ignores_the_global_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tour never touches the database named by --db before the subcommand or the env."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONSENTKIT_DB", str(tmp_path / "real.db"))
    assert main(["--db", str(tmp_path / "other.db"), "demo"]) == 0
    assert "temporary SQLite database" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_a_failed_check_stops_the_tour(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step whose claim does not hold stops the tour with exit code 1 and says where."""

    def step_broken(ctx: DemoContext) -> None:
        """A step that expects the impossible"""
        ctx.check(False, "this never holds")

    monkeypatch.setattr(demo, "STEPS", [STEPS[0], step_broken, *STEPS[1:]])
    code, text = _tour()
    assert code == 1
    assert "The tour stopped at step 2: this never holds" in text
    assert "\n3. " not in text


def test_python_m_consentkit_demo(tmp_path: Path) -> None:
    """``python -m consentkit demo`` runs the tour in a real process and exits 0."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "consentkit", "demo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "Ask an admin" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_tour_shows_the_consent_lifecycle() -> None:
    """Topics with the record of sends, double opt-in, the feed, export, purge and erasure."""
    code, text = _tour(clock=FakeClock(tick=timedelta(seconds=1)))
    assert code == 0, text
    for line in [
        "tia replies STOP -> scope topic, changed:",
        "can_send: sms True, promotions False, alerts True",
        "uma replies 'Yes!' -> confirmed; can_send: True",
        "evidence double_opt_in_reply",
        "in commit order",
        "export_contact(tia): one JSON document",
        "a later import of uma's number as 'uma2': sms unsubscribed",
    ]:
        assert line in text, line

"""The ``consentkit inbound`` and ``consentkit trends`` commands, through ``main([...])``."""

from __future__ import annotations

import io
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consentkit import EMAIL, SMS, Actor, ConsentService, Contact, Evidence
from consentkit.cli import main
from consentkit.documents import from_document, to_document
from consentkit.inbound import ReplyTemplates
from consentkit.review import ReviewItem
from consentkit.service import Page
from consentkit.storage.sqlite import SQLiteStore
from consentkit.testing import FakeClock
from consentkit.trends import TrendReport, sparkline
from tests.test_cli import CLI, EVIDENCE, Outcome

ANA_PHONE = "+14155551010"
UNKNOWN_PHONE = "+14155550199"
# A Friday; ten business days later is Friday 2025-04-18.
RECEIVED = "2025-04-04T16:00:00Z"
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
ADMIN = Actor.admin("default", "alice")
SPARK_BARS = set("▁▂▃▄▅▆▇█")


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> CLI:
    """Runs ``consentkit --db DB ...`` in-process on a fresh database path."""
    return CLI(tmp_path / "consent.db", capsys)


@pytest.fixture
def people(cli: CLI) -> CLI:
    """ana (two records share her phone: ana and ana-work) and ben, opted in to sms and email."""
    cli.ok("--as", "admin:alice", "contacts", "add", "ana", "--phone", ANA_PHONE,
           "--email", "ana@example.com")
    cli.ok("--as", "admin:alice", "contacts", "add", "ana-work", "--phone", ANA_PHONE)
    cli.ok("--as", "admin:alice", "contacts", "add", "ben", "--phone", "+14155551020")
    cli.ok("--as", "admin:alice", "opt-in", "ana", "ana-work", "ben", "--channel", "sms,email",
           *EVIDENCE)
    return cli


def _inbound(cli: CLI, body: str, message_id: str, *extra: str, sender: str = ANA_PHONE) -> str:
    return cli.ok("inbound", "--channel", "sms", "--from", sender, "--message-id", message_id,
                  "--received-at", RECEIVED, *extra, body)


def _event_count(cli: CLI) -> int:
    return len(cli.ok("export").splitlines())


def _error_line(outcome: Outcome) -> str:
    lines = outcome.err.splitlines()
    assert len(lines) == 1, outcome.err
    assert lines[0].startswith("consentkit: error: ")
    return lines[0]


# ---------------------------------------------------------------------- inbound


def test_stop_unsubscribes_the_senders_contacts_and_prints_the_reply(people: CLI) -> None:
    """A STOP unsubscribes every contact with the number from the SMS group and prints the
    confirmation and the 10-business-day deadline."""
    out = _inbound(people, "Stop.", "SM1")
    assert 'opt_out (keyword "stop")' in out
    assert "outcome: opted out: the sender's contacts are unsubscribed from sms, mms, rcs" in out
    assert "contacts: ana, ana-work" in out
    changed = re.findall(r"^  (\S+)\s+(\S+) -> unsubscribed$", out, re.MULTILINE)
    assert sorted(changed) == sorted(
        (cid, ch) for cid in ("ana", "ana-work") for ch in ("sms", "mms", "rcs")
    )
    assert f"reply to send: {ReplyTemplates().opt_out}" in out
    assert "honour by: 2025-04-18T16:00:00+00:00" in out
    status = people.ok("status", "ana")
    assert "sms       unsubscribed" in status
    assert "email     subscribed" in status
    assert "ben" not in out
    history = people.ok("history", "ana", "--channel", "sms")
    assert "contact:ana  inbound_keyword  reason stop_keyword; message SM1" in history


def test_duplicate_delivery_is_reported_and_writes_no_event(people: CLI) -> None:
    """The same provider message id handled again says so, sends no reply and adds no event."""
    first = _inbound(people, "STOP", "SM1")
    events = _event_count(people)
    again = _inbound(people, "STOP", "SM1")
    assert again.splitlines()[0] == "(duplicate delivery: already handled, nothing changed)"
    assert "(duplicate" not in first
    assert "changed at the first delivery:" in again
    assert "reply to send: none (it was due for the first delivery)" in again
    assert _event_count(people) == events


def test_help_answers_with_the_help_text_and_changes_nothing(people: CLI) -> None:
    """HELP prints the help text as the reply and writes no event."""
    events = _event_count(people)
    out = _inbound(people, "help", "SM2")
    assert "outcome: help: nothing changed" in out
    assert f"reply to send: {ReplyTemplates().help}" in out
    assert "changed:" not in out
    assert _event_count(people) == events


def test_possible_opt_out_is_recorded_for_review(people: CLI) -> None:
    """A keyword inside a longer message is recorded for review and leaves the state alone."""
    out = _inbound(people, "please stop texting me", "SM3")
    assert "outcome: needs review" in out
    assert "reply to send: none" in out
    assert "if a reviewer finds it is an opt-out" in out
    assert "sms       subscribed" in people.ok("status", "ana")


def test_naive_received_at_is_refused_and_nothing_is_recorded(people: CLI) -> None:
    """A --received-at without a UTC offset exits 1 naming received_at, and the message id stays
    unused."""
    events = _event_count(people)
    outcome = people("inbound", "--channel", "sms", "--from", ANA_PHONE, "--message-id", "SM4",
                     "--received-at", "2025-04-04T16:00:00", "STOP")
    assert outcome.code == 1
    assert outcome.out == ""
    line = _error_line(outcome)
    assert line.startswith("consentkit: error: received_at: --received-at '2025-04-04T16:00:00'")
    assert "UTC offset" in line
    garbled = people("inbound", "--channel", "sms", "--from", ANA_PHONE, "--message-id", "SM4",
                     "--received-at", "yesterday", "STOP")
    assert "is not an ISO 8601 time" in _error_line(garbled)
    assert _event_count(people) == events
    assert "(duplicate" not in _inbound(people, "STOP", "SM4")


def test_json_is_the_stored_result_plus_the_replayed_flag(people: CLI) -> None:
    """--format json prints the result's fields and replayed, false first and true on redelivery."""
    first = json.loads(_inbound(people, "STOP", "SM5", "--format", "json"))
    assert first["outcome"] == "opted_out"
    assert first["classification"] == "opt_out"
    assert first["contact_ids"] == ["ana", "ana-work"]
    assert ["ana", "sms"] in first["changed"]
    assert first["reply"] == ReplyTemplates().opt_out
    assert first["honor_by"] == "2025-04-18T16:00:00+00:00"
    assert first["replayed"] is False
    again = json.loads(_inbound(people, "STOP", "SM5", "--format", "json"))
    assert again.pop("replayed") is True
    first.pop("replayed")
    assert again == first


def test_body_from_stdin_and_no_acting_user(
    people: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The body can come from stdin; --as is refused (the sender acts) and a body is required."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("UNSUBSCRIBE\n"))
    out = people.ok("inbound", "--channel", "sms", "--from", ANA_PHONE, "--message-id", "SM6",
                    "--body-file", "-")
    assert "outcome: opted out" in out
    with_actor = people("--as", "admin:alice", "inbound", "--channel", "sms", "--from",
                        ANA_PHONE, "--message-id", "SM7", "STOP")
    assert with_actor.code == 2
    assert "inbound takes no --as" in with_actor.err
    no_body = people("inbound", "--channel", "sms", "--from", ANA_PHONE, "--message-id", "SM8")
    assert no_body.code == 2
    assert "BODY --body-file" in no_body.err


def test_stop_from_an_unknown_number_suppresses_a_later_import(people: CLI) -> None:
    """A STOP from a number no contact has is suppressed; a contact added with it starts
    unsubscribed and an opt-in skips it."""
    out = _inbound(people, "STOP", "SM9", sender=UNKNOWN_PHONE)
    assert "outcome: suppressed" in out
    assert "contacts: none with this address" in out
    added = people.ok("--as", "system:importer", "contacts", "add", "dora", "--phone",
                      UNKNOWN_PHONE)
    assert "suppressed dora sms" in added
    opted = people.ok("--as", "system:importer", "opt-in", "dora", "--channel", "sms",
                      *EVIDENCE)
    assert "skipped    dora sms: unsubscribed" in opted


def test_inbound_needs_an_existing_database(tmp_path: Path) -> None:
    """inbound on a mistyped --db exits 1 instead of creating a database."""
    missing = tmp_path / "typo.db"
    code = main(["--db", str(missing), "inbound", "--channel", "sms", "--from", ANA_PHONE,
                 "--message-id", "SM1", "STOP"])
    assert code == 1
    assert not missing.exists()


# ---------------------------------------------------------------------- trends


def _history_with_spike(db: Path) -> TrendReport:
    """400 contacts opted in in January, 3 sms unsubscribes a week, 30 in the last days; returns
    the service's own report as of NOW, to compare the command's output with."""
    store = SQLiteStore(db)
    try:
        service = ConsentService(store, clock=FakeClock(NOW))
        importer = Actor.system("default", "importer")
        ids = [f"k{i:03d}" for i in range(400)]
        service.upsert_contacts(ADMIN, [Contact("default", cid) for cid in ids])
        service.opt_in(importer, ids, [SMS, EMAIL], evidence=Evidence("web_form", "Text me", "v1"),
                       occurred_at=datetime(2026, 1, 5, tzinfo=UTC))
        leavers = iter(ids)
        week = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
        while week < NOW - timedelta(days=7):
            for day in range(3):
                service.unsubscribe(ADMIN, [next(leavers)], [SMS],
                                    occurred_at=week + timedelta(days=day))
            week += timedelta(days=7)
        burst = [next(leavers) for _ in range(30)]
        service.unsubscribe(ADMIN, burst, [SMS], occurred_at=NOW - timedelta(days=2))
        return service.trends(ADMIN, months=6)
    finally:
        store.close()


def _row(out: str, channel: str, total: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{channel} "))
    row = lines[start] if total == "subscribed" else lines[start + 1]
    return row.split()


def test_trends_table_shows_change_percentage_sparkline_and_the_spike(cli: CLI) -> None:
    """The table has the service's totals, percentages and sparklines, and the flagged spike with
    its reason."""
    report = _history_with_spike(cli.db)
    out = cli.ok("trends", "--as-of", "2026-06-15T12:00:00Z", "--months", "6")
    assert out.splitlines()[0] == (
        "subscriber trends of account 'default' as of 2026-06-15T12:00:00+00:00, compared with "
        "2026-05-15T12:00:00+00:00 (calendar months in UTC)"
    )
    assert out.splitlines()[1].split()[-1] == "2026-01..2026-06"
    sms = report.trend_of(SMS)
    assert sms is not None
    row = _row(out, "sms", "subscribed")
    expected = sparkline([t.subscribed for t in report.series_of(SMS)])
    assert row == [
        "sms", "subscribed", f"{sms.subscribed.current:,}", f"{sms.subscribed.previous:,}",
        f"{sms.subscribed.absolute:+,}", sms.subscribed.describe(), expected,
    ]
    assert re.fullmatch(r"-\d+\.\d%", row[5])
    assert set(row[6]) <= SPARK_BARS
    assert len(row[6]) == 6
    assert "n/a (was 0)" in " ".join(_row(out, "email", "unsubscribed"))
    flagged = [line for line in out.splitlines() if line.startswith("unsubscribe spike")]
    windows = {"last_7_days": "last 7 days", "month_to_date": "month to date"}
    assert flagged == [
        f"unsubscribe spike on {check.channel.key} ({windows[check.window]}): {check.reason}"
        for check in report.flagged_spikes
    ]
    assert flagged[0].startswith("unsubscribe spike on sms (last 7 days): 3")
    assert "over the 3 sd threshold" in flagged[0]


def test_trends_json_is_a_machine_readable_report(cli: CLI) -> None:
    """--format json carries the instants, per-channel figures, the monthly series and every
    spike check."""
    report = _history_with_spike(cli.db)
    document = json.loads(cli.ok("trends", "--as-of", "2026-06-15T12:00:00Z", "--months", "6",
                                 "--format", "json"))
    assert document == to_document(report)
    assert document["as_of"] == "2026-06-15T12:00:00+00:00"
    assert document["compared_with"] == "2026-05-15T12:00:00+00:00"
    assert document["timezone"] == "UTC"
    by_channel = {c["channel"]: c for c in document["channels"]}
    assert set(by_channel) == {"email", "sms"}
    sms = report.trend_of(SMS)
    assert sms is not None
    assert by_channel["sms"]["subscribed"]["percent"] == pytest.approx(sms.subscribed.percent)
    assert by_channel["sms"]["subscribed"]["direction"] == "down"
    assert by_channel["email"]["unsubscribed"]["percent"] is None
    assert by_channel["email"]["unsubscribed"]["note"] is not None
    assert [p["month"] for p in document["series"]] == [p.month for p in report.series]
    # A channel with no pairs yet at a point is absent from its totals: it counts as 0.
    assert [p["totals"].get("sms", {}).get("subscribed", 0) for p in document["series"]] == [
        t.subscribed for t in report.series_of(SMS)
    ]
    flagged = [s for s in document["spikes"] if s["flagged"]]
    assert [(s["channel"], s["window"]) for s in flagged] == [
        ("sms", "last_7_days"), ("sms", "month_to_date")
    ]
    assert flagged[0]["observed"] >= 30
    assert len(document["spikes"]) == len(report.spikes)


def test_trends_follow_the_time_zone_option_and_environment(
    cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--timezone (or CONSENTKIT_TIMEZONE) sets the account's months: an opt-in late on Mar 31
    UTC counts in April in Tokyo."""
    cli.ok("--as", "admin:alice", "contacts", "add", "ana", "--phone", ANA_PHONE)
    store = SQLiteStore(cli.db)
    try:
        ConsentService(store, clock=FakeClock(NOW)).opt_in(
            ADMIN, ["ana"], [SMS], evidence=Evidence("web_form", "Text me", "v1"),
            occurred_at=datetime(2026, 3, 31, 20, 0, tzinfo=UTC),
        )
    finally:
        store.close()
    run = ["trends", "--as-of", "2026-06-15T12:00:00Z", "--months", "4", "--format", "json"]

    def by_month(document: dict[str, object]) -> dict[str, int]:
        series = document["series"]
        assert isinstance(series, list)
        return {
            p["month"]: p["totals"].get("sms", {}).get("subscribed", 0) for p in series
        }

    utc = json.loads(cli.ok(*run))
    assert by_month(utc) == {"2026-03": 1, "2026-04": 1, "2026-05": 1, "2026-06": 1}
    tokyo = json.loads(cli.ok(*run, "--timezone", "Asia/Tokyo"))
    assert tokyo["timezone"] == "Asia/Tokyo"
    assert by_month(tokyo) == {"2026-03": 0, "2026-04": 1, "2026-05": 1, "2026-06": 1}
    monkeypatch.setenv("CONSENTKIT_TIMEZONE", "Asia/Tokyo")
    assert json.loads(cli.ok(*run))["timezone"] == "Asia/Tokyo"
    assert json.loads(cli.ok(*run, "--timezone", "UTC"))["timezone"] == "UTC"
    monkeypatch.setenv("CONSENTKIT_TIMEZONE", "Mars/Olympus")
    assert "CONSENTKIT_TIMEZONE 'Mars/Olympus'" in _error_line(cli(*run))
    assert cli("status", "ana").code == 0  # commands without --timezone do not read it


def test_trends_refuses_bad_input_and_handles_an_empty_account(cli: CLI) -> None:
    """Naive --as-of, unknown zones and silly --months exit 1 naming the field; no subscriptions
    gives a plain message."""
    cli.ok("--as", "admin:alice", "contacts", "add", "ana", "--phone", ANA_PHONE)
    naive = cli("trends", "--as-of", "2026-06-15T12:00:00")
    assert _error_line(naive).startswith("consentkit: error: as_of: --as-of '2026-06-15T12:00:00'")
    zone = cli("trends", "--timezone", "Mars/Olympus")
    assert _error_line(zone).startswith("consentkit: error: timezone: --timezone 'Mars/Olympus'")
    assert _error_line(cli("trends", "--months", "0")).startswith("consentkit: error: months:")
    out = cli.ok("trends")
    assert "no subscriptions yet: nothing to compare" in out
    assert out.splitlines()[-1] == "no unsubscribe spikes"


# ---------------------------------------------------------------------- channels of inbound


def test_inbound_on_an_unknown_channel_is_refused_and_records_nothing(people: CLI) -> None:
    """inbound --channel smss exits 1 with the did-you-mean message, and the message id stays
    unused on sms."""
    events = _event_count(people)
    outcome = people("inbound", "--channel", "smss", "--from", ANA_PHONE, "--message-id", "SM1",
                     "STOP")
    assert outcome.code == 1
    assert "channel: 'smss' is not a known channel; did you mean 'sms'?" in _error_line(outcome)
    assert _event_count(people) == events
    assert "(duplicate" not in _inbound(people, "STOP", "SM1")


# ---------------------------------------------------------------------- the review queue


def _queue(cli: CLI) -> None:
    """Two possible opt-outs: an overdue one received on RECEIVED with a long text holding an
    escape sequence, and a fresh one received now."""
    _inbound(cli, "please stop \x1b[31mtexting me " + "x" * 100, "SM1")
    cli.ok("inbound", "--channel", "sms", "--from", "+14155551020", "--message-id", "SM2",
           "stop it please")


def test_review_list_shows_open_items_oldest_first_and_marks_overdue_ones(people: CLI) -> None:
    """review list prints one row per open item, oldest first, with escaped and cut text, an
    OVERDUE status and closing line for late items, and a cursor when more follow."""
    _queue(people)
    out = people.ok("review", "list")
    header, first, second, closing = out.splitlines()
    assert header.split() == ["ID", "RECEIVED", "CHANNEL", "SENDER", "CONTACTS", "HONOUR", "BY",
                              "STATUS", "TEXT"]
    assert first.split()[:8] == ["sms:SM1", "2025-04-04T16:00:00+00:00", "sms", ANA_PHONE,
                                 "ana,", "ana-work", "2025-04-18T16:00:00+00:00", "OVERDUE"]
    assert "please stop \\x1b[31mtexting me xxx" in first
    assert "\x1b" not in out
    assert first.endswith("…")
    assert second.split()[:5] == ["sms:SM2", second.split()[1], "sms", "+14155551020", "ben"]
    assert second.split()[6] == "open"
    assert closing.startswith("OVERDUE: 1 open item is past the honour-by deadline")
    assert people.ok("review", "list", "--format", "text") == out
    page = people.ok("review", "list", "--limit", "1")
    assert "sms:SM2" not in page
    cursor = page.splitlines()[-1].removeprefix("(more: add --cursor ").removesuffix(")")
    rest = people.ok("review", "list", "--limit", "1", "--cursor", cursor)
    assert rest.splitlines()[1].startswith("sms:SM2")
    assert "(more" not in rest
    assert "OVERDUE" not in rest


def test_review_list_json_carries_every_field(people: CLI) -> None:
    """--format json prints the page's public document: the items with their full text,
    contacts, deadline and decision fields, and the next cursor."""
    _queue(people)
    document = json.loads(people.ok("review", "list", "--format", "json"))
    assert document["next_cursor"] is None
    first, second = document["items"]
    assert first["id"] == "sms:SM1"
    assert first["text"] == "please stop \x1b[31mtexting me " + "x" * 100
    assert first["contact_ids"] == ["ana", "ana-work"]
    assert first["received_at"] == "2025-04-04T16:00:00+00:00"
    assert first["honor_by"] == "2025-04-18T16:00:00+00:00"
    assert first["decision"] is None
    assert first["decided_by"] is None
    assert second["kind"] == "possible_opt_out"
    page = from_document(document, Page[ReviewItem])
    assert document == to_document(page)
    # Overdue is a question about an instant, not a key: SM1 was overdue when SM2 arrived.
    arrived = page.items[1].received_at
    assert [item.is_overdue(arrived) for item in page.items] == [True, False]


def test_review_resolve_opt_out_unsubscribes_and_is_recorded(people: CLI) -> None:
    """review resolve --opt-out unsubscribes the sender's contacts as their own request, prints
    the pairs, and --all then shows the decision with who, when and the note."""
    _queue(people)
    out = people.ok("--as", "admin:alice", "review", "resolve", "sms:SM1", "--opt-out",
                    "--note", "she means it")
    lines = out.splitlines()
    assert lines[0].startswith("review item sms:SM1: decided an opt-out by admin:alice at ")
    assert lines[1] == "note: she means it"
    assert lines[2].startswith("unsubscribed 6 pairs as the contact's own request")
    changed = {tuple(line.split()[1:]) for line in lines[3:]}
    assert changed == {(cid, ch) for cid in ("ana", "ana-work") for ch in ("sms", "mms", "rcs")}
    assert "sms       unsubscribed" in people.ok("status", "ana")
    assert "contact:ana  inbound_keyword  reason possible_opt_out; message SM1" in people.ok(
        "history", "ana", "--channel", "sms"
    )
    open_items = people.ok("review", "list")
    assert "sms:SM1" not in open_items
    assert "OVERDUE" not in open_items
    every = people.ok("review", "list", "--all").splitlines()
    assert every[0].split()[7:] == ["STATUS", "DECIDED", "BY", "DECIDED", "AT", "NOTE", "TEXT"]
    assert every[1].split()[7:9] == ["opt_out", "admin:alice"]
    assert "she means it" in every[1]
    decided = json.loads(people.ok("review", "list", "--all", "--format", "json"))["items"][0]
    assert (decided["decision"], decided["decided_by"], decided["note"]) == (
        "opt_out", "admin:alice", "she means it"
    )


def test_review_resolve_not_opt_out_and_refusals_write_nothing(people: CLI) -> None:
    """--not-opt-out changes nothing; a member, an unknown item, a second decision and a missing
    decision or note are refused (exit 1 or 2) and write nothing."""
    _queue(people)
    events = _event_count(people)
    out = people.ok("--as", "admin:alice", "review", "resolve", "sms:SM2", "--not-opt-out",
                    "--note", "a reply to our survey")
    assert "decided not an opt-out" in out
    assert out.splitlines()[-1] == "changed: nothing"
    member = people("--as", "member:bob", "review", "resolve", "sms:SM1", "--opt-out",
                    "--note", "x")
    assert "member:bob is not an admin" in _error_line(member)
    unknown = people("--as", "admin:alice", "review", "resolve", "sms:SM9", "--opt-out",
                     "--note", "x")
    assert "item_id: 'sms:SM9' is not a review item" in _error_line(unknown)
    again = people("--as", "admin:alice", "review", "resolve", "sms:SM2", "--opt-out",
                   "--note", "changed my mind")
    assert "was decided already" in _error_line(again)
    for outcome in (member, unknown, again):
        assert outcome.code == 1
        assert outcome.out == ""
    usage = [
        ["review", "resolve", "sms:SM1", "--opt-out", "--note", "x"],  # no --as
        ["--as", "admin:alice", "review", "resolve", "sms:SM1", "--note", "x"],
        ["--as", "admin:alice", "review", "resolve", "sms:SM1", "--opt-out"],
        ["--as", "admin:alice", "review", "resolve", "sms:SM1", "--opt-out", "--not-opt-out",
         "--note", "x"],
    ]
    for argv in usage:
        assert people(*argv).code == 2, argv
    assert _event_count(people) == events
    assert "sms       subscribed" in people.ok("status", "ana")
    assert people.ok("review", "list").splitlines()[1].split()[0] == "sms:SM1"


def test_review_list_of_an_empty_queue(cli: CLI) -> None:
    """An account with nothing to review says so."""
    cli.ok("--as", "admin:alice", "contacts", "add", "ana", "--phone", ANA_PHONE)
    assert cli.ok("review", "list") == "no open review items\n"
    assert cli.ok("review", "list", "--all") == "no decided or open review items\n"

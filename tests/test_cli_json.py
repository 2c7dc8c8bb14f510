"""``--format json`` of every command is the public document of what the service returns; the
toggle command, ``--version`` and progress with a total."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consentkit import (
    EMAIL,
    SMS,
    Actor,
    ChangeResult,
    ConsentService,
    Contact,
    ContactsResult,
    Page,
    PairRef,
    ReviewDecision,
    ReviewResolution,
    SubscriptionState,
    __version__,
)
from consentkit.cli import COMMANDS, main
from consentkit.documents import from_document, to_document
from consentkit.inbound import InboundMessage, InboundResult
from consentkit.storage.sqlite import SQLiteStore
from tests.test_cli import CLI, EVIDENCE

ADMIN = Actor.admin("default", "alice")
READER = Actor.member("default", "cli")
ANA_PHONE = "+14155551010"  # as the people fixture registers her
RECEIVED = "2025-04-04T16:00:00Z"
NO_JSON = {"demo", "export", "export-contact", "feed"}  # prose; JSON Lines or CSV; JSON; JSON Lines


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> CLI:
    """Runs ``consentkit --db DB ...`` in-process on a fresh database path."""
    return CLI(tmp_path / "consent.db", capsys)


@pytest.fixture
def people(cli: CLI) -> CLI:
    """ana, ben and carl registered and opted in to sms and email by admin alice."""
    for cid, number in (("ana", "101"), ("ben", "102"), ("carl", "103")):
        cli.ok("--as", "admin:alice", "contacts", "add", cid, "--phone", f"+1415555{number}0",
               "--email", f"{cid}@example.com")
    cli.ok("--as", "admin:alice", "opt-in", "ana", "ben", "carl", "--channel", "sms,email",
           *EVIDENCE)
    return cli


@pytest.fixture
def service(cli: CLI) -> Iterator[ConsentService]:
    """The service on the CLI's database, to ask what the command line printed."""
    store = SQLiteStore(cli.db)
    yield ConsentService(store)
    store.close()


def _json(cli: CLI, *argv: str) -> Any:
    return json.loads(cli.ok(*argv, "--format", "json"))


def _version(service: ConsentService, pair: PairRef) -> int:
    sub = service.subscription(ADMIN, pair.contact_id, pair.channel)
    assert sub is not None
    return sub.version


def _change(
    document: dict[str, Any],
    service: ConsentService,
    state: SubscriptionState,
    changed: tuple[PairRef, ...],
    unchanged: tuple[PairRef, ...] = (),
) -> dict[str, Any]:
    """The document of the change result the service returned: its batch id is the one the
    changed pairs' last events carry, and its versions are the ones the pairs have now."""
    for pair in changed:
        last = service.history(ADMIN, pair.contact_id, pair.channel)[-1]
        assert last.batch_id == document["batch_id"]
    return to_document(
        ChangeResult(
            document["batch_id"], state, changed=changed, unchanged=unchanged,
            changed_count=len(changed), unchanged_count=len(unchanged),
            versions={pair: _version(service, pair) for pair in (*changed, *unchanged)},
        )
    )


def test_every_command_but_the_tour_and_export_takes_format_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each command's --help offers --format with json (export keeps jsonl/csv, feed jsonl)."""
    for command in COMMANDS:
        assert main([*command.name.split(), "--help"]) == 0
        out = capsys.readouterr().out
        if command.name in NO_JSON:
            continue
        assert "--format {table,text,json}" in out, command.name


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints ``consentkit <version>`` and exits 0."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"consentkit {__version__}\n"


def test_contacts_add_import_and_list(
    cli: CLI, tmp_path: Path, service: ConsentService
) -> None:
    """contacts add/import print the ContactsResult document; list prints the page's."""
    added = _json(cli, "--as", "admin:alice", "contacts", "add", "ana", "--phone", ANA_PHONE)
    assert added == to_document(ContactsResult(created=1, updated=0))
    rows = tmp_path / "c.csv"
    rows.write_text("id,phone,email\nana,,ana@example.com\nben,+14155550102,\n", "utf-8")
    imported = _json(cli, "--as", "system:importer", "contacts", "import", str(rows))
    assert imported == to_document(ContactsResult(created=1, updated=1))
    listed = _json(cli, "contacts", "list", "--limit", "1")
    assert listed == to_document(service.list_contacts(READER, limit=1))
    assert from_document(listed, Page[Contact]).items[0].id == "ana"


def test_bulk_changes_print_the_change_result(people: CLI, service: ConsentService) -> None:
    """opt-in, unsubscribe and resubscribe print the ChangeResult document, versions included."""
    pair = PairRef("ana", SMS)
    unsubscribed = _json(people, "--as", "admin:alice", "unsubscribe", "ana", "ben",
                         "--channel", "sms", "--reason", "complaint")
    assert unsubscribed == _change(
        unsubscribed, service, SubscriptionState.UNSUBSCRIBED,
        (pair, PairRef("ben", SMS)),
    )
    assert unsubscribed["versions"][0] == {"contact_id": "ana", "channel": "sms", "version": 2}
    resubscribed = _json(people, "--as", "admin:alice", "resubscribe", "ana", "--channel", "sms",
                         "--reason", "contact_request", "--note", "asked by phone")
    assert resubscribed == _change(resubscribed, service, SubscriptionState.SUBSCRIBED, (pair,))
    people.ok("--as", "admin:alice", "contacts", "add", "dev", "--phone", "+14155550104")
    opted = _json(people, "--as", "admin:alice", "opt-in", "dev", "ana", "--channel", "sms",
                  *EVIDENCE)
    assert opted == _change(opted, service, SubscriptionState.SUBSCRIBED,
                            (PairRef("dev", SMS),), (pair,))


def test_bulk_changes_from_a_file_print_counts_only(
    people: CLI, tmp_path: Path, service: ConsentService
) -> None:
    """With --ids-file the document has the counts and no per-pair data."""
    ids = tmp_path / "ids.txt"
    ids.write_text("ana\nben\n\ncarl\n", "utf-8")
    document = _json(people, "--as", "admin:alice", "unsubscribe", "--ids-file", str(ids),
                     "--channel", "email")
    assert document == to_document(
        ChangeResult(
            document["batch_id"], SubscriptionState.UNSUBSCRIBED, changed_count=3, detailed=False
        )
    )
    assert service.state(ADMIN, "carl", EMAIL) is SubscriptionState.UNSUBSCRIBED


def test_toggle_chains_on_the_printed_version(people: CLI, service: ConsentService) -> None:
    """toggle prints the pair's new version, which works as the next --expected-version; a
    stale one exits 1 with the conflict on stderr and changes nothing."""
    text = people.ok("--as", "admin:alice", "toggle", "ana", "sms", "off",
                     "--expected-version", "1")
    assert text == "toggle ana sms: now unsubscribed (version 2)\n"
    again = people.ok("--as", "admin:alice", "toggle", "ana", "sms", "off",
                      "--expected-version", "2")
    assert again == "toggle ana sms: already unsubscribed, nothing changed (version 2)\n"
    on = _json(people, "--as", "admin:alice", "toggle", "ana", "sms", "on",
               "--expected-version", "2", "--reason", "contact_request", "--note", "by phone")
    pair = PairRef("ana", SMS)
    assert on == _change(on, service, SubscriptionState.SUBSCRIBED, (pair,))
    assert on["versions"] == [{"contact_id": "ana", "channel": "sms", "version": 3}]
    stale = people("--as", "admin:alice", "toggle", "ana", "sms", "off",
                   "--expected-version", "2", "--format", "json")
    assert stale.code == 1
    assert stale.out == ""
    assert "is at version 3, not 2" in stale.err
    assert service.state(ADMIN, "ana", SMS) is SubscriptionState.SUBSCRIBED
    half = people("--as", "admin:alice", "toggle", "ana", "email", "on", "--reason",
                  "contact_request")
    assert half.code == 1
    assert "justification: give --reason and --note together" in half.err
    member = people("--as", "member:bob", "toggle", "ana", "sms", "off")
    assert member.code == 1
    assert "member:bob is not an admin" in member.err


def test_reads_print_the_documents_of_the_service_reads(
    people: CLI, service: ConsentService
) -> None:
    """subscribers, history (paged) and status print the documents of the same reads."""
    people.ok("--as", "admin:alice", "unsubscribe", "ana", "--channel", "sms")
    assert _json(people, "subscribers", "--channel", "sms", "--limit", "1") == to_document(
        service.list_subscriptions(READER, SMS, SubscriptionState.SUBSCRIBED, limit=1)
    )
    first = _json(people, "history", "ana", "--limit", "2")
    assert first == to_document(service.history_page(READER, "ana", limit=2))
    rest = _json(people, "history", "ana", "--limit", "2", "--cursor", first["next_cursor"])
    assert rest == to_document(
        service.history_page(READER, "ana", cursor=first["next_cursor"], limit=2)
    )
    assert rest["next_cursor"] is None
    assert "(more: add --cursor " in people.ok("history", "ana", "--limit", "1")
    status = _json(people, "status", "ana")
    assert status["contact"] == to_document(service.get_contact(READER, "ana"))
    sms = next(row for row in status["channels"] if row["channel"] == "sms")
    assert sms == {
        "channel": "sms", "state": "unsubscribed", "can_send": False,
        "subscription": to_document(service.subscription(READER, "ana", SMS)),
    }


def test_inbound_and_review_print_their_documents(
    people: CLI, service: ConsentService
) -> None:
    """inbound prints the InboundResult document (the replayed one equals it but the flag),
    review list the page's and review resolve the ReviewResolution's."""
    out = _json(people, "inbound", "--channel", "sms", "--from", ANA_PHONE, "--message-id", "SM1",
                "--received-at", RECEIVED, "please stop texting me")
    assert from_document(out, InboundResult).outcome.value == "needs_review"
    message = InboundMessage("default", SMS, ANA_PHONE, "please stop texting me", "SM1",
                             datetime(2025, 4, 4, 16, tzinfo=UTC))
    assert to_document(service.handle_inbound(message)) == {**out, "replayed": True}
    listed = _json(people, "review", "list")
    assert listed == to_document(service.review_items(READER))
    resolved = _json(people, "--as", "admin:alice", "review", "resolve", "sms:SM1", "--opt-out",
                     "--note", "she means it")
    (item,) = service.review_items(READER, include_decided=True).items
    assert item.decision is ReviewDecision.OPT_OUT
    changed = from_document(resolved, ReviewResolution).changed
    assert resolved == to_document(ReviewResolution(item, changed))
    assert {(p.contact_id, p.channel.key) for p in changed} == {
        ("ana", "sms"), ("ana", "mms"), ("ana", "rcs")
    }


def test_trends_and_export_are_the_service_documents(
    people: CLI, service: ConsentService
) -> None:
    """trends prints the TrendReport document; export's JSON Lines are event documents."""
    as_of = "2030-01-01T00:00:00+00:00"
    document = _json(people, "trends", "--as-of", as_of, "--months", "3")
    assert document == to_document(
        service.trends(READER, as_of=datetime.fromisoformat(as_of), months=3)
    )
    lines = people.ok("export").splitlines()
    assert [json.loads(line) for line in lines] == [
        to_document(event) for event in service.audit_log(READER)
    ]


def test_progress_has_a_total_when_the_input_is_a_file(cli: CLI, tmp_path: Path) -> None:
    """--progress shows the line on a non-terminal stderr with the file's total; without it
    a piped run stays quiet, and the JSON document alone is on stdout."""
    rows = tmp_path / "c.csv"
    rows.write_text("id,phone\nana,+14155550101\n\nben,+14155550102\ncarl,+14155550103\n",
                    "utf-8")
    shown = cli("--as", "system:importer", "contacts", "import", str(rows), "--progress",
                "--format", "json")
    assert shown.code == 0
    assert json.loads(shown.out) == to_document(ContactsResult(created=3, updated=0))
    assert shown.err.endswith("\rimport: 3 of 3 rows (100%)\n")
    quiet = cli("--as", "system:importer", "contacts", "import", str(rows))
    assert quiet.err == ""
    ids = tmp_path / "ids.txt"
    ids.write_text("ana\n\nben\n", "utf-8")
    bulk = cli("--as", "admin:alice", "unsubscribe", "carl", "--ids-file", str(ids),
               "--channel", "sms", "--progress")
    assert bulk.code == 0
    assert bulk.err.endswith("\runsubscribe: 3 of 3 ids read (100%)\n")
    export = cli("export", "--progress", "--output", str(tmp_path / "out.jsonl"))
    assert export.err.endswith("\rexport: 3 events\n")

"""The ``consentkit`` command line, through ``main([...])`` and as a real ``python -m`` process."""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest

from consentkit import Actor, ConsentService, InMemoryStore, Source, SubscriptionState
from consentkit.channels import EMAIL, SMS
from consentkit.cli import COMMANDS, main
from consentkit.documents import from_document
from consentkit.model import ConsentEvent, Subscription
from consentkit.serialization import EVENT_CSV_FIELDS, event_from_json, make_converter
from consentkit.service import Page
from consentkit.storage.base import Store
from consentkit.storage.sqlite import SQLiteStore
from consentkit.testing import FakeClock

SRC = Path(__file__).resolve().parent.parent / "src"
EVIDENCE = ["--evidence-method", "web_form", "--wording", "Yes, text me", "--wording-version", "v1"]


@attrs.frozen
class Outcome:
    """What one command-line run returned and printed."""

    code: int
    out: str
    err: str


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database path that does not exist yet."""
    return tmp_path / "consent.db"


@pytest.fixture
def cli(db: Path, capsys: pytest.CaptureFixture[str]) -> CLI:
    """Runs ``consentkit --db DB ...`` in-process and captures what it prints."""
    return CLI(db, capsys)


@attrs.frozen
class CLI:
    """A runner bound to one database."""

    db: Path
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *argv: str) -> Outcome:
        """Run one command line and capture its output."""
        self.capsys.readouterr()
        code = main(["--db", str(self.db), *argv])
        captured = self.capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    def ok(self, *argv: str) -> str:
        """Run a command that must succeed and return its stdout."""
        outcome = self(*argv)
        assert outcome.code == 0, outcome.err
        assert outcome.err == ""
        return outcome.out


def _service(db: Path) -> tuple[ConsentService, SQLiteStore]:
    store = SQLiteStore(db)
    return ConsentService(store), store


@pytest.fixture
def people(cli: CLI) -> CLI:
    """ana, ben and carl registered and opted in to sms and email by admin alice."""
    for cid, number in (("ana", "101"), ("ben", "102"), ("carl", "103")):
        cli.ok("--as", "admin:alice", "contacts", "add", cid, "--phone", f"+1415555{number}0",
               "--email", f"{cid}@example.com")
    cli.ok("--as", "admin:alice", "opt-in", "ana", "ben", "carl", "--channel", "sms,email",
           *EVIDENCE)
    return cli


def _error_line(outcome: Outcome) -> str:
    lines = outcome.err.splitlines()
    assert len(lines) == 1, outcome.err
    assert lines[0].startswith("consentkit: error: ")
    return lines[0]


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """--help exits 0 and names every subcommand and the --as rule."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command.name.split()[0] in out
    assert "--as KIND:ID" in out
    assert "member:cli" in out


def test_add_and_list_contacts(cli: CLI) -> None:
    """Contacts added one by one are listed by id with normalised addresses, a page at a time."""
    assert "created contact ana" in cli.ok(
        "--as", "admin:alice", "contacts", "add", "ana", "--phone", "+1 (415) 555-0101",
        "--email", "ana@Example.COM",
    )
    cli.ok("--custom-channel", "telegram", "contacts", "add", "ben", "--as", "member:bob",
           "--handle", "telegram=42")
    assert "the others kept" in cli.ok(
        "contacts", "add", "ben", "--as", "member:bob", "--handle", "push=tok"
    )
    assert "push=tok telegram=42" in cli.ok("contacts", "list")  # only the given ones change
    assert "its addresses were replaced" in cli.ok(
        "contacts", "add", "ben", "--as", "member:bob", "--handle", "push=tok",
        "--replace-addresses",
    )
    listing = cli.ok("contacts", "list")
    assert listing.splitlines()[0].split() == ["ID", "PHONE", "EMAIL", "HANDLES"]
    assert "+14155550101" in listing
    assert "ana@example.com" in listing
    assert "push=tok" in listing
    assert "telegram" not in listing  # --replace-addresses removes the ones left out
    first = cli.ok("contacts", "list", "--limit", "1", "--format", "json")
    page = json.loads(first)
    assert [c["id"] for c in page["items"]] == ["ana"]
    second = json.loads(
        cli.ok("contacts", "list", "--limit", "1", "--cursor", page["next_cursor"],
               "--format", "json")
    )
    assert [c["id"] for c in second["items"]] == ["ben"]
    assert second["next_cursor"] is None


def test_import_contacts_csv(cli: CLI, tmp_path: Path) -> None:
    """A CSV import registers every row, and a bad row rejects the whole file naming its line."""
    good = tmp_path / "good.csv"
    good.write_text("id,phone,email\nana,+14155550101,\nben,,ben@example.com\n", encoding="utf-8")
    out = cli.ok("--as", "system:importer", "contacts", "import", str(good))
    assert "2 created" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("id,phone\ncarl,+14155550103\ndora,12345\n", encoding="utf-8")
    outcome = cli("--as", "system:importer", "contacts", "import", str(bad))
    assert outcome.code == 1
    line = _error_line(outcome)
    assert "line 3" in line
    assert "phone" in line
    assert "carl" not in cli.ok("contacts", "list")  # all or nothing
    wrong_header = tmp_path / "header.csv"
    wrong_header.write_text("id,phnoe\nx,1\n", encoding="utf-8")
    assert "header" in _error_line(
        cli("--as", "system:importer", "contacts", "import", str(wrong_header))
    )


def test_opt_in_unsubscribe_resubscribe_flow(people: CLI) -> None:
    """An admin unsubscribes in bulk, resubscribes with a justification, and status/history say
    so."""
    out = people.ok(
        "--as", "admin:alice", "unsubscribe", "ana", "ben", "--channel", "sms",
        "--channel", "email", "--reason", "complaint",
    )
    assert "4 changed, 0 unchanged" in out
    again = people.ok("--as", "admin:alice", "unsubscribe", "ana", "--channel", "sms")
    assert "0 changed, 1 unchanged (already unsubscribed)" in again
    out = people.ok(
        "--as", "admin:alice", "resubscribe", "ana", "--channel", "sms",
        "--reason", "mistaken_unsubscribe", "--note", "ticked by mistake",
    )
    assert "1 changed" in out
    status = people.ok("status", "ana")
    rows = {line.split()[0]: line.split() for line in status.splitlines()[2:]}
    assert rows["sms"][1:3] == ["subscribed", "yes"]
    assert rows["email"][1:3] == ["unsubscribed", "no"]
    assert rows["whatsapp"][1:3] == ["never_subscribed", "no"]
    history = people.ok("history", "ana", "--channel", "sms")
    assert "mistaken_unsubscribe: ticked by mistake" in history
    assert "reason complaint" in history
    assert len(history.splitlines()) == 4  # header + opt-in, unsubscribe, resubscribe
    page = from_document(
        json.loads(people.ok("history", "ana", "--format", "json")), Page[ConsentEvent]
    )
    assert [e.channel for e in page.items] == [SMS, EMAIL, SMS, EMAIL, SMS]
    assert page.next_cursor is None


def test_member_is_refused_with_the_service_message(people: CLI) -> None:
    """A member's unsubscribe exits 1 with one 'ask an admin' line and changes nothing."""
    outcome = people("--as", "member:bob", "unsubscribe", "ana", "--channel", "sms")
    assert outcome.code == 1
    assert outcome.out == ""
    line = _error_line(outcome)
    assert "member:bob is not an admin" in line
    assert "Ask an admin of the account" in line
    assert "subscribed        yes" in people.ok("status", "ana")


def test_changes_require_an_acting_user(people: CLI) -> None:
    """A mutating command without --as is a usage error (exit 2); reads default to a member."""
    outcome = people("unsubscribe", "ana", "--channel", "sms")
    assert outcome.code == 2
    assert "--as KIND:ID is required" in outcome.err
    assert people("status", "ana").code == 0
    assert people("--as", "alice", "status", "ana").code == 2
    contact = people("--as", "contact:ana", "unsubscribe", "ana", "--channel", "sms")
    assert contact.code == 2
    assert "not as a contact" in contact.err


def test_resubscribe_without_note_is_a_usage_error(people: CLI) -> None:
    """resubscribe needs --reason and --note: missing is exit 2, blank is exit 1."""
    people.ok("--as", "admin:alice", "unsubscribe", "ana", "--channel", "sms")
    missing = people("--as", "admin:alice", "resubscribe", "ana", "--channel", "sms",
                     "--reason", "contact_request")
    assert missing.code == 2
    assert "--note" in missing.err
    blank = people("--as", "admin:alice", "resubscribe", "ana", "--channel", "sms",
                   "--reason", "contact_request", "--note", "   ")
    assert blank.code == 1
    assert "justification.note" in _error_line(blank)


def test_mistaken_unsubscribe_refused_when_the_contact_unsubscribed_themselves(
    people: CLI,
) -> None:
    """A contact's own opt-out cannot be undone as a 'mistake', only as their request."""
    service, store = _service(people.db)
    try:
        service.unsubscribe(
            Actor.contact("default", "ben"), "ben", SMS, source=Source.UNSUBSCRIBE_LINK
        )
    finally:
        store.close()
    refused = people("--as", "admin:alice", "resubscribe", "ben", "--channel", "sms",
                     "--reason", "mistaken_unsubscribe", "--note", "oops")
    assert refused.code == 1
    assert "it was not a mistake" in _error_line(refused)
    accepted = people.ok("--as", "admin:alice", "resubscribe", "ben", "--channel", "sms",
                         "--reason", "contact_request", "--note", "ben asked by phone")
    assert "1 changed" in accepted


def test_bad_channel_names_the_field(people: CLI) -> None:
    """A malformed channel key exits 1 with a message naming the channel field."""
    outcome = people("--as", "admin:alice", "unsubscribe", "ana", "--channel", "SMS!")
    assert outcome.code == 1
    assert _error_line(outcome).startswith("consentkit: error: channel: 'SMS!'")
    assert people("subscribers", "--channel", "sms text").code == 1


def test_opt_in_needs_evidence_and_skips_unsubscribed(people: CLI) -> None:
    """An opt-in without evidence is refused naming the flags; one over an opt-out skips it."""
    people.ok("--as", "admin:alice", "contacts", "add", "dora", "--phone", "+14155550104")
    outcome = people("--as", "admin:alice", "opt-in", "dora", "--channel", "sms")
    assert outcome.code == 1
    assert "--evidence-method" in _error_line(outcome)
    partial = people("--as", "admin:alice", "opt-in", "dora", "--channel", "sms",
                     "--evidence-method", "web_form")
    assert "together" in _error_line(partial)
    people.ok("--as", "admin:alice", "unsubscribe", "ana", "--channel", "sms")
    out = people.ok("--as", "system:importer", "opt-in", "ana", "dora", "--channel", "sms",
                    "--source", "import", *EVIDENCE)
    assert "1 changed" in out
    assert "1 skipped" in out
    assert "skipped    ana sms: unsubscribed" in out
    assert "unsubscribed" in people.ok("status", "ana").splitlines()[2]


def test_subscribers_filter(people: CLI) -> None:
    """subscribers lists one channel's pairs in one state, filtered by source and reason."""
    people.ok("--as", "admin:alice", "unsubscribe", "ana", "--channel", "sms",
              "--reason", "complaint")
    people.ok("--as", "admin:alice", "unsubscribe", "ben", "--channel", "sms",
              "--source", "inbox")
    subscribed = people.ok("subscribers", "--channel", "sms")
    assert [line.split()[0] for line in subscribed.splitlines()[1:]] == ["carl"]
    unsubscribed = people.ok("subscribers", "--channel", "sms", "--state", "unsubscribed")
    assert [line.split()[0] for line in unsubscribed.splitlines()[1:]] == ["ana", "ben"]
    by_reason = people.ok("subscribers", "--channel", "sms", "--state", "unsubscribed",
                          "--reason", "complaint", "--format", "json")
    page = json.loads(by_reason)
    converter = make_converter()
    items = [converter.structure(item, Subscription) for item in page["items"]]
    assert [(s.contact_id, s.reason) for s in items] == [("ana", "complaint")]
    by_source = people.ok("subscribers", "--channel", "sms", "--state", "unsubscribed",
                          "--source", "inbox")
    assert [line.split()[0] for line in by_source.splitlines()[1:]] == ["ben"]


def test_unknown_contact_and_missing_database(people: CLI, tmp_path: Path) -> None:
    """Unknown ids and a mistyped --db are refused with a one-line hint, exit 1."""
    unknown = people("status", "nobody")
    assert unknown.code == 1
    assert "no contact 'nobody'" in _error_line(unknown)
    assert "consentkit contacts add" in unknown.err
    bulk = people("--as", "admin:alice", "unsubscribe", "ana", "zed", "--channel", "sms")
    assert "'zed'" in _error_line(bulk)
    assert "subscribed        yes" in people.ok("status", "ana")  # all or nothing
    missing = main(["--db", str(tmp_path / "typo.db"), "status", "ana"])
    assert missing == 1
    assert not (tmp_path / "typo.db").exists()


def test_accounts_are_separate(people: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    """--account and CONSENTKIT_ACCOUNT scope every command; CONSENTKIT_DB picks the file."""
    assert people.ok("--account", "other", "contacts", "list").splitlines()[1:] == []
    monkeypatch.setenv("CONSENTKIT_ACCOUNT", "other")
    monkeypatch.setenv("CONSENTKIT_DB", str(people.db))
    people.capsys.readouterr()
    assert main(["status", "ana"]) == 1
    assert main(["--account", "default", "status", "ana"]) == 0


def test_ids_file_bulk_is_quiet_when_piped(cli: CLI, tmp_path: Path) -> None:
    """A bulk change over an ids file applies to every id and prints no progress when piped."""
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(
        "id,phone\n" + "".join(f"c{i:05},+1415{i:07}\n" for i in range(3000)), encoding="utf-8"
    )
    cli.ok("--as", "system:importer", "contacts", "import", str(contacts))
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"c{i:05}" for i in range(3000)) + "\n\n", encoding="utf-8")
    opted = cli("--as", "admin:alice", "opt-in", "--ids-file", str(ids), "--channel", "sms",
                *EVIDENCE)
    assert opted.code == 0
    assert opted.err == ""
    assert "3,000 changed" in opted.out
    assert "changed    c00000" not in opted.out  # counts only for file-sized runs
    out = cli.ok("--as", "admin:alice", "unsubscribe", "c00001", "--ids-file", str(ids),
                 "--channel", "sms")
    assert "3,000 changed" in out  # the typed id repeats one from the file: counted once


def test_progress_is_shown_on_a_terminal(
    people: CLI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With stderr on a terminal, export shows a progress line there and keeps stdout clean."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    capsys.readouterr()
    assert main(["--db", str(people.db), "export"]) == 0
    assert "export: 6 events\n" in terminal.getvalue()
    assert len(capsys.readouterr().out.splitlines()) == 6


def test_export_jsonl_round_trips(people: CLI) -> None:
    """Every exported JSON line structures back to the event the store holds."""
    people.ok("--as", "admin:alice", "unsubscribe", "ana", "--channel", "sms")
    out = people.ok("export")
    converter = make_converter()
    exported = [event_from_json(converter, line) for line in out.splitlines()]
    service, store = _service(people.db)
    try:
        stored = list(service.audit_log(Actor.admin("default", "alice")))
    finally:
        store.close()
    assert exported == stored
    assert len(exported) == 7
    after = people.ok("export", "--after", str(exported[4].sequence))
    assert len(after.splitlines()) == 2


def test_export_csv_to_a_file(people: CLI, tmp_path: Path) -> None:
    """CSV export writes the documented header and one row per event, atomically to --output."""
    target = tmp_path / "audit.csv"
    out = people.ok("export", "--format", "csv", "--output", str(target))
    assert "exported 6 events" in out
    lines = target.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(EVENT_CSV_FIELDS)
    assert len(lines) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.csv", "consent.db"]
    stdout = people.ok("export", "--format", "csv")
    assert stdout.splitlines()[0] == lines[0]


def test_unknown_subcommand_is_a_usage_error(cli: CLI) -> None:
    """An unknown subcommand exits 2 with argparse's message."""
    outcome = cli("frobnicate")
    assert outcome.code == 2
    assert "invalid choice: 'frobnicate'" in outcome.err


class CountingStore(InMemoryStore):
    """An in-memory store that counts how often it was opened and closed (and keeps its data)."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = 0
        self.closed = 0

    def close(self) -> None:
        """Count the close."""
        self.closed += 1


def test_injected_store_and_clock_and_store_is_closed(capsys: pytest.CaptureFixture[str]) -> None:
    """Tests can inject a store and a clock, and the CLI closes the store, also after an error."""
    store = CountingStore()

    def factory(path: Path, *, create: bool) -> Store:
        store.opened += 1
        return store

    clock = FakeClock(datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC))
    run = ["--db", "unused.db", "--as", "admin:alice"]
    assert main([*run, "contacts", "add", "ana", "--phone", "+14155550101"],
                store_factory=factory, clock=clock) == 0
    assert main([*run, "opt-in", "ana", "--channel", "sms", *EVIDENCE],
                store_factory=factory, clock=clock) == 0
    assert main([*run, "unsubscribe", "nobody", "--channel", "sms"],
                store_factory=factory, clock=clock) == 1
    capsys.readouterr()
    assert main([*run, "history", "ana", "--format", "json"],
                store_factory=factory, clock=clock) == 0
    (event,) = json.loads(capsys.readouterr().out)["items"]
    assert event["occurred_at"] == "2026-02-03T04:05:06+00:00"
    assert store.opened == store.closed == 4
    sub = store.get_subscription("default", "ana", SMS)
    assert sub is not None
    assert sub.state is SubscriptionState.SUBSCRIBED


# ---------------------------------------------------------------------- real processes


def _run_process(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("CONSENTKIT_DB", None)
    env.pop("CONSENTKIT_ACCOUNT", None)
    return subprocess.run(
        [sys.executable, "-m", "consentkit", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_python_m_consentkit_exit_codes_and_stderr(tmp_path: Path) -> None:
    """As a real process: 0 on success, 1 with one stderr line when refused, 2 on usage errors,
    and no progress output when stderr is a pipe."""
    ids = tmp_path / "ids.txt"
    ids.write_text("ana\nben\n", encoding="utf-8")
    steps = [
        ["--as", "admin:alice", "contacts", "add", "ana", "--phone", "+14155550101"],
        ["--as", "admin:alice", "contacts", "add", "ben", "--phone", "+14155550102"],
        ["--as", "admin:alice", "opt-in", "--ids-file", "ids.txt", "--channel", "sms", *EVIDENCE],
    ]
    for argv in steps:
        done = _run_process(*argv, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # the ids-file run prints no progress into a pipe
    assert (tmp_path / "consentkit.db").exists()  # the default --db is ./consentkit.db
    refused = _run_process("--as", "member:bob", "unsubscribe", "ana", "--channel", "sms",
                           cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("consentkit: error: member:bob is not an admin")
    assert "Ask an admin" in refused.stderr
    usage = _run_process("frobnicate", cwd=tmp_path)
    assert usage.returncode == 2
    assert "usage: consentkit" in usage.stderr
    status = _run_process("status", "ana", cwd=tmp_path)
    assert status.returncode == 0
    assert "sms       subscribed        yes" in status.stdout


def test_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """When the reader of stdout goes away (``| head``), export stops without a traceback."""
    service, store = _service(tmp_path / "consentkit.db")
    try:
        from consentkit import Contact, Evidence

        admin = Actor.admin("default", "alice")
        service.upsert_contacts(
            admin, (Contact("default", f"c{i}", phone=f"+1415{i:07}") for i in range(3000))
        )
        service.opt_in(admin, (f"c{i}" for i in range(3000)), [SMS, EMAIL],
                       evidence=Evidence("web_form", "yes", "v1"), details=False)
    finally:
        store.close()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with subprocess.Popen(
        [sys.executable, "-m", "consentkit", "export"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()
        err = process.stderr.read()
        code = process.wait(timeout=120)
    assert json.loads(first)["sequence"] == 1
    assert "Traceback" not in err
    assert code in (0, 1)


# ---------------------------------------------------------------------- channels and addresses


def _events(cli: CLI) -> list[str]:
    return cli.ok("export").splitlines()


@pytest.mark.parametrize(
    ("key", "hint"),
    [("smss", "did you mean 'sms'?"), ("fax", "Known channels: email"), ("all", "push, rcs")],
)
def test_unknown_channels_are_refused_and_nothing_is_written(
    people: CLI, key: str, hint: str
) -> None:
    """A misspelled or unknown --channel exits 1 naming the key and the known channels, on every
    command that takes one, and writes nothing."""
    before = _events(people)
    commands = [
        ["--as", "admin:alice", "unsubscribe", "ana", "--channel", f"email,{key}"],
        ["--as", "admin:alice", "opt-in", "ana", "--channel", key, *EVIDENCE],
        ["--as", "admin:alice", "resubscribe", "ana", "--channel", key,
         "--reason", "contact_request", "--note", "asked"],
        ["--as", "admin:alice", "contacts", "add", "ana", "--handle", f"{key}=1"],
        ["subscribers", "--channel", key],
        ["history", "ana", "--channel", key],
    ]
    for argv in commands:
        outcome = people(*argv)
        assert outcome.code == 1, argv
        assert outcome.out == ""
        line = _error_line(outcome)
        assert f"'{key}' is not a known channel" in line
        assert hint in line
        assert "--custom-channel KEY" in line
    assert _events(people) == before
    assert "email     subscribed        yes" in people.ok("status", "ana")
    assert "push=" not in people.ok("contacts", "list")


def test_custom_channels_from_the_option_and_the_environment(
    people: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--custom-channel (before or after the subcommand, repeated or comma-separated) and
    CONSENTKIT_CUSTOM_CHANNELS register channels for the run; without them the key is refused."""
    assert people("--as", "admin:alice", "contacts", "add", "ana", "--handle",
                  "telegram=42").code == 1
    people.ok("--custom-channel", "telegram", "--as", "admin:alice", "contacts", "add", "ana",
              "--handle", "telegram=42")
    out = people.ok("--custom-channel", "line", "--as", "admin:alice", "opt-in", "ana",
                    "--channel", "telegram", "--custom-channel", "Telegram,viber", *EVIDENCE)
    assert "opt-in on telegram: 1 changed" in out
    monkeypatch.setenv("CONSENTKIT_CUSTOM_CHANNELS", "viber, telegram")
    status = people.ok("status", "ana")
    rows = {line.split()[0]: line.split() for line in status.splitlines()[2:]}
    assert rows["telegram"][1:3] == ["subscribed", "yes"]
    assert rows["viber"][1:3] == ["never_subscribed", "no"]
    assert "telegram 42" in status.splitlines()[0]
    monkeypatch.delenv("CONSENTKIT_CUSTOM_CHANNELS")
    legacy = people.ok("status", "ana")  # a record on a channel not registered in this run
    assert "telegram  subscribed        no (unknown channel)" in legacy
    bad = people("--custom-channel", "tele gram", "status", "ana")
    assert _error_line(bad).startswith("consentkit: error: --custom-channel: 'tele gram'")


def test_import_keeps_the_addresses_a_file_leaves_out(cli: CLI, tmp_path: Path) -> None:
    """By default a CSV without an email column, or with an empty cell, leaves those addresses
    alone; only the cells given change."""
    full = tmp_path / "full.csv"
    full.write_text("id,phone,email\nana,+14155550101,ana@example.com\n"
                    "ben,+14155550102,ben@example.com\n", encoding="utf-8")
    cli.ok("--as", "system:importer", "contacts", "import", str(full))
    phones = tmp_path / "phones.csv"
    phones.write_text("id,phone\nana,+14155550109\n", encoding="utf-8")
    assert "1 updated" in cli.ok("--as", "system:importer", "contacts", "import", str(phones))
    blank = tmp_path / "blank.csv"
    blank.write_text("id,phone,email\nben,,\n", encoding="utf-8")
    cli.ok("--as", "system:importer", "contacts", "import", str(blank))
    listing = json.loads(cli.ok("contacts", "list", "--format", "json"))["items"]
    assert [(c["id"], c["phone"], c["email"]) for c in listing] == [
        ("ana", "+14155550109", "ana@example.com"),
        ("ben", "+14155550102", "ben@example.com"),
    ]


def test_replace_addresses_removes_the_rest_and_warns_of_unreachable_pairs(
    people: CLI, tmp_path: Path
) -> None:
    """--replace-addresses makes the file (or the add) the whole truth, and subscribed pairs that
    lose their channel's address are named in a warning on stderr."""
    phones = tmp_path / "phones.csv"
    phones.write_text("id,phone\nana,+14155551010\n", encoding="utf-8")
    imported = people("--as", "system:importer", "contacts", "import", str(phones),
                      "--replace-addresses")
    assert imported.code == 0
    assert "1 updated" in imported.out
    warning = imported.err.splitlines()
    assert warning[0].startswith("consentkit: warning: 1 subscribed pair lost the address")
    assert warning[1].split() == ["no", "address", "ana", "email"]
    assert "email     subscribed        yes" in people.ok("status", "ana")  # consent is kept
    assert people.ok("contacts", "list").splitlines()[1].split() == ["ana", "+14155551010"]
    added = people("--as", "admin:alice", "contacts", "add", "ben", "--email",
                   "ben@example.com", "--replace-addresses")
    assert "its addresses were replaced" in added.out
    assert "no address ben sms" in added.err
    kept = people("--as", "admin:alice", "contacts", "add", "carl", "--email", "c@example.com")
    assert kept.err == ""  # without the flag, carl keeps his phone


# ---------------------------------------------------------------------- the package's imports

_PACKAGE = SRC / "consentkit" / "cli"


def _cli_imports(path: Path) -> set[str]:
    """The modules of consentkit.cli that *path* imports at run time (inside functions too;
    imports only for type checkers are left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for statement in block.body
        for node in ast.walk(statement)
    }
    modules = {f"consentkit.cli.{p.stem}" for p in _PACKAGE.glob("*.py")} | {"consentkit.cli"}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            # `from consentkit.cli import render` imports the module render, not a name of the
            # package; any other name comes from the module named.
            names = {f"{node.module}.{alias.name}" for alias in node.names}
            found |= names & modules
            if names - modules:
                found.add(node.module)
    return found & modules


def _module_name(path: Path) -> str:
    return "consentkit.cli" if path.stem == "__init__" else f"consentkit.cli.{path.stem}"


def test_cli_package_has_no_import_cycle() -> None:
    """No module of consentkit.cli imports, directly or through others, one that imports it back;
    none imports the package itself, and the package's __init__ imports no module at load."""
    graph = {_module_name(p): _cli_imports(p) for p in _PACKAGE.glob("*.py")}
    assert set(graph) >= {"consentkit.cli", "consentkit.cli.render", "consentkit.cli.commands"}
    for name, imported in graph.items():
        if name != "consentkit.cli":
            assert "consentkit.cli" not in imported, f"{name} imports the package"

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo += graph[module]
        return seen

    for name in graph:
        assert name not in reachable(name), f"{name} is part of an import cycle"
    assert graph["consentkit.cli.render"] == set()
    init = ast.parse((_PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    top_level = [n for n in init.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert not any(
        isinstance(n, ast.ImportFrom) and (n.module or "").startswith("consentkit.cli")
        for n in top_level
    )


def _loaded_after(statement: str) -> set[str]:
    """The consentkit.cli modules loaded by *statement* in a fresh interpreter."""
    probe = (
        f"{statement}\nimport sys\n"
        "print(' '.join(m for m in sys.modules if m.split('.')[:2] == ['consentkit', 'cli']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_every_cli_module_imports_alone_in_a_fresh_interpreter() -> None:
    """Each module of the package imports first in a fresh interpreter (no order dependence)."""
    for path in sorted(_PACKAGE.glob("*.py")):
        assert _module_name(path) in _loaded_after(f"import {_module_name(path)}")


def test_the_demo_imports_only_the_renderer_of_the_cli() -> None:
    """Importing consentkit.demo loads consentkit.cli.render (and the package's lazy __init__),
    never the command line; `from consentkit.cli import main` still works."""
    assert _loaded_after("import consentkit.demo") == {"consentkit.cli", "consentkit.cli.render"}
    demo_imports = _cli_imports(SRC / "consentkit" / "demo.py")
    assert demo_imports == {"consentkit.cli.render"}
    assert "consentkit.cli.commands" in _loaded_after(
        "from consentkit.cli import main\nmain(['--help'])"
    )

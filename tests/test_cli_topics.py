"""Topics on the command line: ``--topics FILE``, ``--topic`` and ``consentkit topics``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import CLI, EVIDENCE

TOPICS = {
    "topics": [
        {"key": "promotions", "title": "Offers and sales", "message_class": "marketing"},
        {
            "key": "receipts",
            "title": "Your receipts",
            "message_class": "transactional",
            "default": "opt_out",
        },
    ],
    "surviving_classes": {"email": ["transactional"]},
}


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> CLI:
    return CLI(tmp_path / "consent.db", capsys)


@pytest.fixture
def topics_file(tmp_path: Path) -> Path:
    path = tmp_path / "topics.json"
    path.write_text(json.dumps(TOPICS), encoding="utf-8")
    return path


def test_topics_lists_the_declarations(cli: CLI, topics_file: Path) -> None:
    out = cli.ok("--topics", str(topics_file), "topics")
    assert "promotions  Offers and sales  marketing      opt_in" in out
    assert "survives an unsubscribe of email: transactional" in out
    document = json.loads(cli.ok("--topics", str(topics_file), "topics", "--format", "json"))
    assert document["surviving_classes"] == {"email": ["transactional"]}
    assert [t["key"] for t in document["topics"]] == ["promotions", "receipts"]
    assert "no topics declared" in cli.ok("topics")
    assert "promotions" in cli.ok("topics", "--topics", str(topics_file))  # after the command


def test_the_file_sets_the_opt_out_scope(cli: CLI, tmp_path: Path) -> None:
    """scope, senders and revoke_all_exempt come from the file; --topic on inbound names the
    topic answered, and a topic nobody declared is refused."""
    path = tmp_path / "scoped.json"
    path.write_text(
        json.dumps({**TOPICS, "scope": "topic", "revoke_all_exempt": ["informational"]}),
        encoding="utf-8",
    )
    admin = ("--as", "admin:alice", "--topics", str(path))
    cli.ok(*admin, "contacts", "add", "ann", "--phone", "+14155550100")
    cli.ok(*admin, "opt-in", "ann", "--channel", "sms", *EVIDENCE)
    cli.ok(*admin, "opt-in", "ann", "--channel", "sms", "--topic", "promotions", *EVIDENCE)
    listing = cli.ok("--topics", str(path), "topics")
    assert "opt-out scope: topic" in listing
    assert "exempt from revoke all: informational" in listing
    bogus = cli(
        "--topics", str(path), "inbound", "--channel", "sms", "--from", "+14155550100",
        "--message-id", "m0", "--topic", "promotion", "STOP",
    )
    assert bogus.code == 1
    assert "did you mean 'promotions'" in bogus.err
    out = cli.ok(
        "--topics", str(path), "inbound", "--channel", "sms", "--from", "+14155550100",
        "--message-id", "m1", "--topic", "promotions", "STOP",
    )
    assert "ann  sms/promotions -> unsubscribed" in out
    assert "ann  sms -> unsubscribed" not in out


def test_topic_consent_from_the_command_line(
    cli: CLI, topics_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--topic on the changes and reads; the channel comes first; an unknown topic is refused
    with the command line's way to declare one."""
    monkeypatch.setenv("CONSENTKIT_TOPICS", str(topics_file))
    admin = ("--as", "admin:alice")
    cli.ok(*admin, "contacts", "add", "ann", "--phone", "+14155550100", "--email", "a@x.org")
    refused = cli(*admin, "opt-in", "ann", "--channel", "sms", "--topic", "promotions", *EVIDENCE)
    assert refused.code == 1
    assert "never subscribed to sms" in refused.err
    cli.ok(*admin, "opt-in", "ann", "--channel", "sms,email", *EVIDENCE)
    out = cli.ok(*admin, "opt-in", "ann", "--channel", "sms", "--topic", "promotions", *EVIDENCE)
    assert "changed    ann sms/promotions" in out
    cli.ok(*admin, "unsubscribe", "ann", "--channel", "email")
    cli.ok(*admin, "toggle", "ann", "email", "--topic", "receipts", "off")
    cli.ok(*admin, "toggle", "ann", "email/receipts", "on", "--reason", "contact_request",
           "--note", "asked for receipts again")
    status = cli.ok("status", "ann")
    rows = [line.split()[:3] for line in status.splitlines()]
    assert ["sms/promotions", "subscribed", "yes"] in rows
    # Transactional email survives the email unsubscribe (configured in the file).
    assert ["email/receipts", "subscribed", "yes"] in rows
    assert ["email", "unsubscribed", "no"] in rows
    listed = cli.ok("subscribers", "--channel", "sms", "--topic", "promotions")
    assert "ann      sms/promotions  subscribed" in listed
    history = cli.ok("history", "ann", "--channel", "sms/promotions")
    assert "never_subscribed -> subscribed" in history
    assert history == cli.ok("history", "ann", "--channel", "sms", "--topic", "promotions")
    unknown = cli(*admin, "unsubscribe", "ann", "--channel", "sms", "--topic", "promo")
    assert unknown.code == 1
    assert "did you mean 'promotions'" in unknown.err
    assert "--topics FILE" in unknown.err
    missing = cli("history", "ann", "--topic", "promotions")
    assert (missing.code, "--channel" in missing.err) == (1, True)
    # The inbound message's topic reaches the service (the default scope stops the group).
    out = cli.ok(
        "inbound", "--channel", "sms", "--from", "+14155550100", "--message-id", "m1",
        "--topic", "promotions", "--to", "+14155550199", "STOP",
    )
    assert "ann  sms -> unsubscribed" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not JSON"),
        ("[]", "must hold an object"),
        ('{"topics": {}}', "must be a list"),
        ('{"topics": [{"key": "x"}]}', "needs key, title and message_class"),
        ('{"topics": [{"key": "x", "title": "X", "message_class": "spam"}]}', "message_class"),
        (
            '{"topics": [{"key": "x", "title": "X", "message_class": "marketing", "y": 1}]}',
            "unknown topic field",
        ),
        ('{"surviving_classes": {"email": "transactional"}}', "must be a list"),
        ('{"surviving_classes": {"email": ["marketing"]}}', "never survive"),
        ('{"surviving_classes": {"smss": ["transactional"]}}', "not a known channel"),
        ('{"scope": "everything"}', "scope"),
        ('{"senders": {"+15550100": "Promo!"}}', "senders"),
        ('{"revoke_all_exempt": ["marketing"]}', "never exempt"),
    ],
)
def test_a_bad_topics_file_is_refused(
    cli: CLI, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "topics.json"
    path.write_text(content, encoding="utf-8")
    outcome = cli("--topics", str(path), "topics")
    assert outcome.code != 0
    assert message in outcome.err


def test_a_missing_topics_file_is_refused(cli: CLI, tmp_path: Path) -> None:
    outcome = cli("--topics", str(tmp_path / "nope.json"), "topics")
    assert outcome.code != 0
    assert "cannot read" in outcome.err

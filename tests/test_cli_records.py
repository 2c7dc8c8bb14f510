"""``consentkit purge`` and ``consentkit export-contact`` (docs/retention.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import CLI

ADMIN = ("--as", "admin:alice")
OLD = "2025-01-01T00:00:00+00:00"
LATER = ("--as-of", "2099-01-01T00:00:00+00:00")  # expiry counts from handling: now


def _fails(cli: CLI, *argv: str) -> str:
    """Run a command that must be refused (exit 1) and return its error line."""
    outcome = cli(*argv)
    assert outcome.code == 1, outcome.out
    return outcome.err


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> CLI:
    return CLI(tmp_path / "consent.db", capsys)


def _replies(cli: CLI) -> None:
    cli.ok(*ADMIN, "contacts", "add", "ann", "--phone", "+14155550100")
    for sender, message_id in (("+14155550100", "M1"), ("+14155550177", "M2")):
        cli.ok(
            "inbound", "--channel", "sms", "--from", sender, "--message-id", message_id,
            "--received-at", OLD, "thanks",
        )


def test_purge_deletes_what_expired_by_the_periods_given(cli: CLI) -> None:
    """Without periods nothing goes (and it says so); --keep-non-contact takes the stranger's
    reply, --keep-inbound then Ann's; --format json is the PurgeResult."""
    _replies(cli)
    assert "every kind is kept forever" in cli.ok(*ADMIN, "purge")
    out = cli.ok(*ADMIN, "purge", "--keep-non-contact", "7", *LATER)
    assert "non_contact_inbound: deleted 1" in out
    assert [r["message_id"] for r in json.loads(cli.ok("export-contact", "ann"))["inbound"]] == [
        "M1"
    ]
    document = json.loads(
        cli.ok(*ADMIN, "purge", "--keep-inbound", "30", "--format", "json", *LATER)
    )
    assert document["deleted"] == {"inbound_results": 1}
    assert document["complete"] is True
    assert "sent_messages" in document["kept_forever"]
    assert json.loads(cli.ok("export-contact", "ann"))["inbound"] == []


def test_purge_refuses_members_and_short_periods(cli: CLI) -> None:
    _replies(cli)
    assert "only an admin or the system" in _fails(cli, "--as", "member:mo", "purge")
    assert "at least 1 day" in _fails(cli, *ADMIN, "purge", "--keep-inbound", "0.5")
    assert "batch_size" in _fails(cli, *ADMIN, "purge", "--keep-inbound", "30", "--batch-size", "0")


def test_export_contact_prints_one_document(cli: CLI) -> None:
    _replies(cli)
    document = json.loads(cli.ok("export-contact", "ann"))
    assert document["format"] == "consentkit.contact_export/1"
    assert document["contact"]["phone"] == "+14155550100"
    assert "+14155550177" not in json.dumps(document)
    assert "nobody" in _fails(cli, "export-contact", "nobody")

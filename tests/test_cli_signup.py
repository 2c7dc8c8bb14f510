"""``consentkit signup request|confirm|list``: double opt-in on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import CLI, EVIDENCE

ADMIN = ("--as", "admin:alice")
REQUEST = ("--request-wording", "Reply YES to confirm")


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> CLI:
    return CLI(tmp_path / "consent.db", capsys)


def test_a_sign_up_is_pending_until_confirmed(cli: CLI) -> None:
    cli.ok(*ADMIN, "contacts", "add", "ann", "--phone", "+14155550100")
    document = json.loads(
        cli.ok(*ADMIN, "signup", "request", "ann", "--channel", "sms", *REQUEST, *EVIDENCE,
               "--format", "json")
    )
    assert document["status"] == "pending"
    assert "sms       never_subscribed  no" in cli.ok("status", "ann")
    assert f"{document['id']}  sms  pending" in cli.ok("signup", "list", "ann")
    out = cli.ok(*ADMIN, "signup", "confirm", document["id"], "--method", "reply")
    assert "1 pair subscribed" in out
    assert "sms       subscribed" in cli.ok("status", "ann")
    again = cli(*ADMIN, "signup", "confirm", document["id"])
    assert again.code == 1
    assert "is confirmed" in again.err
    listed = json.loads(cli.ok("signup", "list", "ann", "--format", "json"))
    assert [r["status"] for r in listed] == ["confirmed"]


def test_a_sign_up_needs_evidence_and_a_known_method(cli: CLI) -> None:
    cli.ok(*ADMIN, "contacts", "add", "ann", "--phone", "+14155550100")
    refused = cli(*ADMIN, "signup", "request", "ann", "--channel", "sms", *REQUEST)
    assert refused.code == 1
    assert "evidence" in refused.err
    usage = cli(*ADMIN, "signup", "confirm", "x", "--method", "pigeon")
    assert usage.code == 2

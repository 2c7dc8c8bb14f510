"""``consentkit erase`` and ``consentkit erasures``: the key from the environment only, the
policy, the audit record, and imports that recognise erased addresses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consentkit.channels import SMS
from consentkit.cli import build_parser, main
from consentkit.model import SubscriptionState
from consentkit.storage.sqlite import SQLiteStore

KEY = "a-cli-erasure-key-of-at-least-16-bytes"
EVIDENCE = ["--evidence-method", "web_form", "--wording", "Yes, text me", "--wording-version", "v1"]


def _run(
    db: Path, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--db", str(db), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A database with ana (subscribed on sms) and the key in the environment."""
    path = tmp_path / "consent.db"
    admin = ("--as", "admin:alice")
    assert _run(path, capsys, *admin, "contacts", "add", "ana", "--phone", "+14155550100")[0] == 0
    assert _run(path, capsys, *admin, "opt-in", "ana", "--channel", "sms", *EVIDENCE)[0] == 0
    return path


def test_erase_with_the_key_from_the_environment(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An admin erases with CONSENTKIT_ERASURE_KEY; the record is listed; a later import of the
    number, run with the same key, starts unsubscribed."""
    monkeypatch.setenv("CONSENTKIT_ERASURE_KEY", KEY)
    code, out, err = _run(
        db, capsys, "--as", "admin:alice", "erase", "ana", "--reason", "ticket 4411",
        "--format", "json",
    )
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["pseudonym"].startswith("erased-")
    assert result["unsubscribed"] == [[result["pseudonym"], "sms"]]
    code, out, _ = _run(db, capsys, "erasures", "--format", "json")
    (record,) = json.loads(out)
    assert (record["pseudonym"], record["actor"], record["reason"]) == (
        result["pseudonym"], "admin:alice", "ticket 4411",
    )
    code, out, _ = _run(db, capsys, "erasures")
    assert result["pseudonym"] in out
    assert "ticket 4411" in out
    code, _, _ = _run(
        db, capsys, "--as", "system:importer", "contacts", "add", "bo", "--phone", "+14155550100"
    )
    assert code == 0
    with SQLiteStore(db) as store:
        assert store.get_contact("default", "ana") is None
        assert store.get_state("default", "bo", SMS) is SubscriptionState.UNSUBSCRIBED


def test_the_key_file_and_refusals(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a key the erasure exits 1 naming erasure_key; a member is refused; the key file
    (with its final newline) works; the command line has no key option."""
    monkeypatch.delenv("CONSENTKIT_ERASURE_KEY", raising=False)
    monkeypatch.delenv("CONSENTKIT_ERASURE_KEY_FILE", raising=False)
    code, _, err = _run(db, capsys, "--as", "admin:alice", "erase", "ana", "--reason", "t1")
    assert code == 1
    assert "erasure_key" in err
    key_file = tmp_path / "erasure.key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv("CONSENTKIT_ERASURE_KEY_FILE", str(key_file))
    code, _, err = _run(db, capsys, "--as", "member:bob", "erase", "ana", "--reason", "t1")
    assert code == 1
    assert "admin" in err
    code, _, err = _run(db, capsys, "--as", "admin:alice", "erase", "ana", "--reason", "")
    assert code == 1
    assert "reason" in err
    code, out, err = _run(db, capsys, "--as", "admin:alice", "erase", "ana", "--reason", "t1")
    assert (code, err) == (0, ""), err
    assert "erased ana" in out
    # The same key as text in the other variable recognises the number too.
    monkeypatch.delenv("CONSENTKIT_ERASURE_KEY_FILE")
    monkeypatch.setenv("CONSENTKIT_ERASURE_KEY", KEY)
    _run(db, capsys, "--as", "admin:alice", "contacts", "add", "cy", "--phone", "+14155550100")
    with SQLiteStore(db) as store:
        assert store.get_state("default", "cy", SMS) is SubscriptionState.UNSUBSCRIBED
    monkeypatch.setenv("CONSENTKIT_ERASURE_KEY_FILE", str(tmp_path / "missing.key"))
    code, _, err = _run(db, capsys, "--as", "admin:alice", "erase", "cy", "--reason", "t2")
    assert code == 1
    assert "CONSENTKIT_ERASURE_KEY_FILE" in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["erase", "cy", "--reason", "x", "--erasure-key", KEY])

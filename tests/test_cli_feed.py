"""``consentkit feed``: the change feed as JSON Lines, the cursor file, --follow and its
interruption, in-process through ``main([...])`` and as a real ``python -m`` process."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from consentkit import (
    EMAIL,
    SMS,
    Actor,
    ConsentEvent,
    ConsentService,
    Contact,
    Evidence,
)
from consentkit.cli import main
from consentkit.documents import from_document
from consentkit.storage.sqlite import SQLiteStore

SRC = Path(__file__).resolve().parent.parent / "src"
ADMIN = Actor.admin("default", "alice")
EVIDENCE = Evidence("web_form", "Yes, text me", "v1")


@attrs.frozen
class Outcome:
    """What one command-line run returned and printed."""

    code: int
    out: str
    err: str

    def events(self) -> list[ConsentEvent]:
        """The JSON lines of stdout, read back as events."""
        return [from_document(json.loads(line), ConsentEvent) for line in self.out.splitlines()]


@attrs.frozen
class Feed:
    """Runs ``consentkit --db DB feed ...`` in-process, with a service on the same file to write
    events and read the audit log."""

    db: Path
    service: ConsentService
    capsys: pytest.CaptureFixture[str]

    def __call__(
        self, *argv: str, sleep: Callable[[float], None] | None = None, account: str = "default"
    ) -> Outcome:
        """Run ``feed`` with *argv* and capture what it prints."""
        self.capsys.readouterr()
        code = main(
            ["--db", str(self.db), "--account", account, "feed", *argv], sleep=sleep
        )
        captured = self.capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    def write(self, *contact_ids: str) -> None:
        """Register *contact_ids* and opt them in to sms and email (two events each)."""
        self.service.upsert_contacts(
            ADMIN, [Contact("default", cid, email=f"{cid}@example.com") for cid in contact_ids]
        )
        self.service.opt_in(ADMIN, contact_ids, [SMS, EMAIL], evidence=EVIDENCE, partial=True)

    def log(self) -> list[ConsentEvent]:
        """The account's audit log."""
        return list(self.service.audit_log(ADMIN))


@pytest.fixture
def feed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Feed]:
    """A feed runner on a database with two contacts opted in (four events)."""
    store = SQLiteStore(tmp_path / "consent.db")
    try:
        runner = Feed(tmp_path / "consent.db", ConsentService(store), capsys)
        runner.write("ana", "ben")
        yield runner
    finally:
        store.close()


def _error_line(outcome: Outcome) -> str:
    lines = outcome.err.splitlines()
    assert lines, outcome
    assert lines[-1].startswith("consentkit: error: "), outcome.err
    return lines[-1]


def _resume_cursor(outcome: Outcome) -> str:
    last = outcome.err.splitlines()[-1]
    assert last.startswith("consentkit: resume with --after "), outcome.err
    return last.removeprefix("consentkit: resume with --after ")


def test_jsonl_lines_are_the_event_documents_of_the_audit_log(feed: Feed) -> None:
    """Each line is one compact ConsentEvent document, in sequence order, reading back as the
    stored event; the cursor to resume with goes to stderr, and resuming prints only what
    followed."""
    outcome = feed("--format", "jsonl")
    assert outcome.code == 0, outcome.err
    assert outcome.events() == feed.log()
    assert len(outcome.events()) == 4
    first_line = outcome.out.splitlines()[0]
    assert ": " not in first_line
    assert list(json.loads(first_line)) == sorted(json.loads(first_line))
    cursor = _resume_cursor(outcome)
    again = feed("--after", cursor)
    assert (again.code, again.out) == (0, "")
    assert _resume_cursor(again) == cursor
    feed.write("carl")
    rest = feed("--after", cursor, "--limit", "1")
    assert rest.events() == feed.log()[4:]
    assert {(e.contact_id, e.channel) for e in rest.events()} == {("carl", SMS), ("carl", EMAIL)}


def test_the_cursor_file_is_read_at_start_and_stored_after_each_run(
    feed: Feed, tmp_path: Path
) -> None:
    """A missing cursor file starts at the beginning; the file then holds the cursor after the
    last event written (one line, nothing on stderr), so the next run writes only the new
    events, and no temporary file is left behind."""
    cursor_file = tmp_path / "feed.cursor"
    first = feed("--cursor-file", str(cursor_file), "--limit", "3")
    assert (first.code, first.err) == (0, "")
    assert first.events() == feed.log()
    stored = cursor_file.read_text(encoding="utf-8")
    assert stored.endswith("\n")
    assert stored.count("\n") == 1
    assert feed.service.changes(ADMIN, after=stored.strip()).events == ()
    assert feed("--cursor-file", str(cursor_file)).out == ""
    feed.write("carl", "dina")
    second = feed("--cursor-file", str(cursor_file))
    assert [e.contact_id for e in second.events()] == ["carl", "carl", "dina", "dina"]
    assert [*first.events(), *second.events()] == feed.log()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".feed.cursor.")]


def test_an_empty_account_stores_a_cursor_that_gets_every_later_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On an account without events the run writes nothing and stores the cursor of the
    beginning, which later runs resume from."""
    store = SQLiteStore(tmp_path / "consent.db")
    try:
        runner = Feed(tmp_path / "consent.db", ConsentService(store), capsys)
        runner.service.upsert_contacts(ADMIN, [Contact("default", "ana", email="a@example.com")])
        cursor_file = tmp_path / "feed.cursor"
        assert runner("--cursor-file", str(cursor_file)).out == ""
        assert cursor_file.exists()
        runner.write("ana")
        assert runner("--cursor-file", str(cursor_file)).events() == runner.log()
    finally:
        store.close()


class _BreaksAfter(io.StringIO):
    """A stdout whose reader goes away after *pages* flushed writes."""

    def __init__(self, pages: int) -> None:
        super().__init__()
        self.pages = pages

    def write(self, text: str) -> int:
        if self.pages == 0:
            raise BrokenPipeError(32, "Broken pipe")
        self.pages -= 1
        return super().write(text)


def test_a_run_that_dies_mid_way_resumes_at_the_first_page_not_stored(
    feed: Feed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cursor is stored after each page is written and flushed: when the reader of stdout
    goes away after two pages, the file names the end of the second, and the next run writes
    the rest, so nothing is skipped or repeated."""
    cursor_file = tmp_path / "feed.cursor"
    broken = _BreaksAfter(pages=2)
    monkeypatch.setattr(sys, "stdout", broken)
    assert main(["--db", str(feed.db), "feed", "--cursor-file", str(cursor_file),
                 "--limit", "1"]) == 1
    monkeypatch.undo()
    written = [from_document(json.loads(line), ConsentEvent)
               for line in broken.getvalue().splitlines()]
    assert written == feed.log()[:2]
    rest = feed("--cursor-file", str(cursor_file), "--limit", "1")
    assert [*written, *rest.events()] == feed.log()


def test_follow_polls_every_interval_until_interrupted(feed: Feed, tmp_path: Path) -> None:
    """--follow writes what there is, then waits --interval seconds (the injected sleep) and
    polls again, picking up events written meanwhile; Ctrl-C exits 130 with the cursor stored
    after the last event written."""
    cursor_file = tmp_path / "feed.cursor"
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:
            feed.write("carl")
        elif len(waits) == 2:
            feed.write("dina", "eve")
        elif len(waits) == 4:
            raise KeyboardInterrupt

    outcome = feed("--cursor-file", str(cursor_file), "--follow", "--interval", "0.25",
                   "--limit", "2", sleep=sleep)
    assert outcome.code == 130
    assert "interrupted" in outcome.err
    assert waits == [0.25] * 4
    assert outcome.events() == feed.log()
    assert len(outcome.events()) == 10
    stored = cursor_file.read_text(encoding="utf-8").strip()
    assert feed.service.changes(ADMIN, after=stored).events == ()


def test_follow_without_a_cursor_file_says_where_to_resume_when_interrupted(
    feed: Feed,
) -> None:
    """Interrupted without --cursor-file, the run prints the cursor to resume with on stderr
    before exiting 130."""

    def sleep(seconds: float) -> None:
        raise KeyboardInterrupt

    outcome = feed("--follow", sleep=sleep)
    assert outcome.code == 130
    resume = next(line for line in outcome.err.splitlines() if "resume with" in line)
    cursor = resume.removeprefix("consentkit: resume with --after ")
    assert feed.service.changes(ADMIN, after=cursor).events == ()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--after", "nonsense"], "--after: is not a cursor of the change feed"),
        (["--after", ""], "--after: is not a cursor of the change feed"),
        (["--limit", "0"], "limit: must be an integer from 1 to 10000"),
        (["--limit", "10001"], "limit: must be an integer from 1 to 10000"),
    ],
)
def test_bad_cursors_and_limits_exit_1(feed: Feed, argv: list[str], message: str) -> None:
    """A cursor that is not one and a page size out of range are refused in one line on
    stderr with exit code 1, before anything is written."""
    outcome = feed(*argv)
    assert outcome.code == 1
    assert outcome.out == ""
    assert message in _error_line(outcome)


def test_a_cursor_file_of_another_account_or_without_a_cursor_is_refused(
    feed: Feed, tmp_path: Path
) -> None:
    """The cursor file of one account is refused in another (naming the file), and so is an
    empty file (which no run writes); nothing is written and the file is left as it was."""
    cursor_file = tmp_path / "feed.cursor"
    assert feed("--cursor-file", str(cursor_file)).code == 0
    kept = cursor_file.read_text(encoding="utf-8")
    other = feed("--cursor-file", str(cursor_file), account="globex")
    assert other.code == 1
    assert other.out == ""
    line = _error_line(other)
    assert f"--cursor-file: {cursor_file}: is a cursor of account 'default'" in line
    assert cursor_file.read_text(encoding="utf-8") == kept
    cursor_file.write_text("\n", encoding="utf-8")
    empty = feed("--cursor-file", str(cursor_file))
    assert empty.code == 1
    assert "holds no cursor" in _error_line(empty)


@pytest.mark.parametrize(
    "argv",
    [
        ["--after", "x", "--cursor-file", "c"],
        ["--interval", "0"],
        ["--interval", "-1"],
        ["--interval", "nan"],
        ["--interval", "soon"],
        ["--format", "json"],
        ["--limit", "many"],
    ],
)
def test_usage_errors_exit_2(feed: Feed, argv: list[str]) -> None:
    """Both a cursor and a cursor file, an interval that is not a positive number of seconds
    and a format other than jsonl are usage errors."""
    outcome = feed(*argv)
    assert outcome.code == 2
    assert outcome.out == ""


def _wait_for_lines(path: Path, count: int, timeout: float = 60.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{path} has {path.read_text(encoding='utf-8')!r}, not {count} lines")


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to the child")
def test_follow_in_a_real_process_streams_new_events_and_exits_130_on_sigint(
    feed: Feed, tmp_path: Path
) -> None:
    """``python -m consentkit feed --follow`` writes the existing events, then the ones another
    process commits while it runs; SIGINT stops it with exit code 130 and the cursor file names
    the last event written."""
    cursor_file = tmp_path / "feed.cursor"
    out_path = tmp_path / "feed.jsonl"
    # Buffered as a real pipe or file is, so only the feed's own flush makes the lines appear.
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("PYTHONUNBUFFERED", None)
    with out_path.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "consentkit", "--db", str(feed.db), "feed", "--follow",
             "--interval", "0.05", "--cursor-file", str(cursor_file), "--limit", "3"],
            stdout=out, stderr=subprocess.PIPE, env=env, text=True,
        )
        try:
            _wait_for_lines(out_path, 4)
            feed.write("carl", "dina")
            lines = _wait_for_lines(out_path, 8)
            time.sleep(0.2)  # a poll or two more: still nothing new
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    events = [from_document(json.loads(line), ConsentEvent) for line in lines]
    assert events == feed.log()
    assert out_path.read_text(encoding="utf-8").splitlines() == lines
    stored = cursor_file.read_text(encoding="utf-8").strip()
    assert feed.service.changes(ADMIN, after=stored).events == ()

"""The SQLite store with real processes and real files: concurrent writers, SIGKILL in the middle
of a bulk call, fork() while a thread writes, close and reopen, read-only files.

The child processes run ``_sqlite_worker.py`` next to this file.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

import consentkit
from consentkit import (
    EMAIL,
    MMS,
    SMS,
    WHATSAPP,
    Actor,
    ConsentService,
    Contact,
    Evidence,
    Justification,
    ResubscribeReason,
    Source,
    StorageError,
    SubscriptionState,
    channel,
)
from consentkit.errors import ConsentError
from consentkit.inbound import InboundMessage
from consentkit.storage.sqlite import SCHEMA_VERSION, SQLiteStore
from consentkit.testing import FakeClock, check_replay

pytestmark = pytest.mark.skipif(os.name != "posix", reason="uses SIGKILL and POSIX processes")

WORKER = Path(__file__).with_name("_sqlite_worker.py")
ACCOUNT = "acme"
ADMIN = Actor.admin(ACCOUNT, "alice")
EVIDENCE = Evidence("web_form", "Yes, send me texts. Reply STOP to stop.", "v7")
BULK = 100_000
T0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)


def spawn(*args: str) -> subprocess.Popen[str]:
    """Start the worker script with *args*, able to import this consentkit."""
    source_root = str(Path(consentkit.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(process: subprocess.Popen[str], timeout: float = 120) -> str:
    """Wait for *process*; return its output, failing the test with its stderr if it failed."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"worker failed ({process.returncode}):\n{err}"
    return out


def integrity(path: Path) -> list[tuple[str]]:
    """``PRAGMA integrity_check`` through a plain connection (which also recovers the WAL)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


# ---------------------------------------------------------------------------- concurrent writers


def test_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    """Four processes making random calls on overlapping contacts of one file meet no lock error,
    every change they were told about has its event, and state == replay(events)."""
    path = tmp_path / "shared.db"
    with SQLiteStore(path) as store:
        ConsentService(store).upsert_contacts(
            ADMIN,
            [
                Contact(ACCOUNT, f"c{i:02d}", phone=f"+1415555{i:04d}", email=f"c{i}@ex.com")
                for i in range(24)
            ],
        )
    go = tmp_path / "go"
    workers = [spawn("churn", str(path), str(n), "250", str(go)) for n in range(4)]
    go.touch()
    reports = [json.loads(finish(worker).strip().splitlines()[-1]) for worker in workers]
    print("worker reports:", reports)

    assert [r["unexpected"] for r in reports] == [[], [], [], []]
    reported = sum(r["changed"] for r in reports)
    assert reported > 100  # the workers really wrote, not only got refused
    with SQLiteStore(path) as store:
        events = list(store.events(ACCOUNT))
        assert len(events) == reported
        replayed = check_replay(store, ACCOUNT)
        # Every recorded pair has events, and every pair with events has its record.
        recorded = {
            (s.contact_id, s.channel)
            for i in range(24)
            for s in store.subscriptions_of(ACCOUNT, f"c{i:02d}")
        }
        assert recorded == set(replayed)
        assert len({e.sequence for e in events}) == len(events)
    assert integrity(path) == [("ok",)]


def test_processes_opening_a_fresh_file_at_once(tmp_path: Path) -> None:
    """Four processes creating the same new database at once all succeed; the schema is made
    once."""
    path = tmp_path / "fresh.db"
    go = tmp_path / "go"
    workers = [spawn("open", str(path), f"p{n}", str(go)) for n in range(4)]
    go.touch()
    assert [finish(worker).strip() for worker in workers] == ["ok"] * 4
    with SQLiteStore(path) as store:
        assert [c.id for c in store.list_contacts(ACCOUNT, after=None, limit=10)] == [
            "p0",
            "p1",
            "p2",
            "p3",
        ]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


# ---------------------------------------------------------------------------- SIGKILL


@pytest.fixture(scope="module")
def bulk_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpointed database with 100,000 contacts, all subscribed on SMS."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    with SQLiteStore(path) as store:
        service = ConsentService(store, clock=FakeClock(T0))
        ids = [f"n{number:07d}" for number in range(BULK)]
        service.upsert_contacts(ADMIN, (Contact(ACCOUNT, cid) for cid in ids))
        service.opt_in(ADMIN, ids, SMS, evidence=EVIDENCE, details=False)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


def counts(path: Path) -> tuple[int, int]:
    """(unsubscribed SMS pairs, events of the bulk call) in the file."""
    conn = sqlite3.connect(path)
    try:
        unsubscribed = conn.execute(
            "SELECT count(*) FROM subscriptions WHERE state = 'unsubscribed'"
        ).fetchone()[0]
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()
    return unsubscribed, events - BULK  # minus the opt-ins of the template


def replay_mismatches(path: Path) -> int:
    """Pairs whose version is not their number of events or whose state is not the new state of
    their last event (check_replay in SQL: 200,000 events are too slow to load for it)."""
    conn = sqlite3.connect(path)
    try:
        mismatches: int = conn.execute(
            "SELECT count(*) FROM subscriptions AS s WHERE s.version != "
            "(SELECT count(*) FROM events AS e WHERE e.account = s.account "
            "AND e.contact_id = s.contact_id AND e.channel = s.channel) "
            "OR s.state IS NOT (SELECT new_state FROM events AS e WHERE e.account = s.account "
            "AND e.contact_id = s.contact_id AND e.channel = s.channel "
            "ORDER BY e.sequence DESC LIMIT 1)"
        ).fetchone()[0]
    finally:
        conn.close()
    return mismatches


@pytest.mark.parametrize(
    ("signal_after", "delay"),
    [
        # Chunks written, nothing spilled to the WAL yet.
        pytest.param(10_000, 0.0, id="early"),
        # The page cache overflowed: uncommitted frames are in the WAL.
        pytest.param(95_000, 0.0, id="late"),
        # Every chunk written; killed while COMMIT writes the WAL (or, rarely, just after).
        pytest.param(BULK, 0.03, id="at-commit"),
    ],
)
def test_sigkill_during_a_bulk_call_applies_all_or_nothing(
    tmp_path: Path, bulk_template: Path, signal_after: int, delay: float
) -> None:
    """A process killed with SIGKILL during a 100,000-contact unsubscribe leaves a sound file
    with either the whole batch or none of it, events included."""
    path = tmp_path / "killed.db"
    shutil.copyfile(bulk_template, path)
    child = spawn("bulk", str(path), str(BULK), str(signal_after))
    assert child.stdout is not None
    line = child.stdout.readline()
    if delay:
        time.sleep(delay)
    still_running = child.poll() is None
    child.send_signal(signal.SIGKILL)
    rest, err = child.communicate(timeout=60)
    assert line == "in-transaction\n", err
    wal = path.with_name(path.name + "-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0

    assert still_running, "the child finished before it could be killed"
    assert child.returncode == -signal.SIGKILL
    assert integrity(path) == [("ok",)]
    unsubscribed, events = counts(path)
    print(f"killed after {signal_after:,} ids: {unsubscribed:,} applied, WAL {wal_bytes:,} bytes")
    assert (unsubscribed, events) in ((0, 0), (BULK, BULK)), (unsubscribed, events, wal_bytes)
    if signal_after < BULK:
        # Killed with thousands of ids still to process: the batch cannot have committed.
        assert "done" not in rest
        assert (unsubscribed, events) == (0, 0)
    assert replay_mismatches(path) == 0


def test_sigkill_after_a_bulk_call_returned_keeps_all_of_it(
    tmp_path: Path, bulk_template: Path
) -> None:
    """Once the bulk call has returned, a SIGKILL loses none of it: the whole batch is there."""
    path = tmp_path / "killed.db"
    shutil.copyfile(bulk_template, path)
    child = spawn("bulk", str(path), str(BULK), str(BULK))
    assert child.stdout is not None
    lines = [child.stdout.readline(), child.stdout.readline()]
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    assert lines == ["in-transaction\n", f"done {BULK}\n"]
    assert integrity(path) == [("ok",)]
    assert counts(path) == (BULK, BULK)
    assert replay_mismatches(path) == 0


# ---------------------------------------------------------------------------- fork

needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork()"
)


def _write_in_forked_child(
    store: SQLiteStore,
    path: str,
    parent_done: Any,
    report: Any,
) -> None:
    """In the child: once the parent's transaction has ended, write through the inherited store
    and through a new one, and send the errors met (none, when fork is handled)."""
    errors: list[str] = []
    if not parent_done.wait(30):
        errors.append("the parent never finished its transaction")
    for contact_id, made in (("child-inherited", None), ("child-new", path)):
        try:
            target = store if made is None else SQLiteStore(made, busy_timeout=2)
            with target.transaction(ACCOUNT) as tx:
                tx.put_contacts([Contact(ACCOUNT, contact_id)])
        except ConsentError as error:
            errors.append(f"{contact_id}: {type(error).__name__}: {error}")
    report.send(errors)
    report.close()
    sys.exit(1 if errors else 0)


@needs_fork
def test_a_child_forked_while_a_thread_writes_can_write(tmp_path: Path) -> None:
    """A child forked while another thread of the parent holds a write transaction can write to
    the file, through the store it inherited and through a new one, once that transaction ended
    (issue 10, defect 10: it used to meet ConflictError after every busy timeout)."""
    path = tmp_path / "forked.db"
    # Longer than the transaction below, so that a fork waits for it to end.
    store = SQLiteStore(path, busy_timeout=10)
    holding = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with store.transaction(ACCOUNT) as tx:
                tx.put_contacts([Contact(ACCOUNT, "parent")])
                holding.set()
                # Bounded on its own: fork() may wait for this transaction to end.
                release.wait(1.0)
        except BaseException as error:  # reported below
            errors.append(error)
            holding.set()

    context = multiprocessing.get_context("fork")
    parent_done = context.Event()
    receive, send = context.Pipe(duplex=False)
    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        child = context.Process(
            target=_write_in_forked_child, args=(store, str(path), parent_done, send)
        )
        child.start()
        release.set()
        thread.join(10)
        parent_done.set()
        try:
            assert receive.poll(60), "the child reported nothing"
            reported = receive.recv()
        finally:
            child.join(30)
            if child.is_alive():
                child.kill()
                child.join(10)
        assert errors == []
        assert reported == []
        assert child.exitcode == 0
        ids = {c.id for c in store.list_contacts(ACCOUNT, after=None, limit=10)}
        assert ids == {"parent", "child-inherited", "child-new"}
        with store.transaction(ACCOUNT) as tx:  # and the parent writes on
            tx.put_contacts([Contact(ACCOUNT, "after")])
    finally:
        release.set()
        thread.join(10)
        store.close()
    assert integrity(path) == [("ok",)]


def _fork_inside_a_transaction(store: SQLiteStore) -> int:
    """Fork inside a write transaction and leave the block normally in both processes; the
    child exits with 0 if its leaving was refused with StorageError, 1 if it committed, 2 on any
    other error.  Returns the child's pid (in the parent)."""
    pid = -1
    try:
        with store.transaction(ACCOUNT) as tx:
            tx.put_contacts([Contact(ACCOUNT, "before-fork")])
            pid = os.fork()
    except StorageError:
        if pid == 0:
            os._exit(0)
        raise
    except BaseException:
        if pid == 0:
            os._exit(2)
        raise
    if pid == 0:
        os._exit(1)
    return pid


@needs_fork
def test_a_fork_inside_a_transaction_leaves_it_to_the_parent(tmp_path: Path) -> None:
    """fork() from the thread that holds a write transaction does not wait for it; the child
    cannot commit the transaction it inherited (StorageError), the parent commits it once, and
    both processes can write afterwards."""
    path = tmp_path / "inside.db"
    with SQLiteStore(path, busy_timeout=2) as store:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pid = _fork_inside_a_transaction(store)
        deadline = time.monotonic() + 30
        while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if waited[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        assert os.waitstatus_to_exitcode(waited[1]) == 0
        assert [w.message for w in caught if issubclass(w.category, RuntimeWarning)] == []
        assert [c.id for c in store.list_contacts(ACCOUNT, after=None, limit=10)] == ["before-fork"]
        context = multiprocessing.get_context("fork")
        child = context.Process(target=_put_contact, args=(store, "child"))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert {c.id for c in store.list_contacts(ACCOUNT, after=None, limit=10)} == {
            "before-fork",
            "child",
        }
    assert integrity(path) == [("ok",)]


def _put_contact(store: SQLiteStore, contact_id: str) -> None:
    """Register one contact through *store* (run in a child process)."""
    with store.transaction(ACCOUNT) as tx:
        tx.put_contacts([Contact(ACCOUNT, contact_id)])


# ---------------------------------------------------------------------------- close and reopen


def snapshot(store: SQLiteStore, ids: list[str]) -> dict[str, object]:
    """Everything the store can tell about ACCOUNT, as comparable data."""
    with store.transaction(ACCOUNT) as tx:
        inbound = {m: tx.get_inbound(SMS, m) for m in ("SM-known", "SM-stranger")}
        suppressions = tx.get_suppressions(["phone:+14155550999"])
        addresses = tx.find_contacts_by_address(["phone:+14155550001", "email:c2@ex.com"])
    instants = [T0 + timedelta(hours=h) for h in range(0, 30, 3)]
    return {
        "contacts": store.list_contacts(ACCOUNT, after=None, limit=100),
        "subscriptions": [store.subscriptions_of(ACCOUNT, cid) for cid in ids],
        "events": list(store.events(ACCOUNT)),
        "inbound": inbound,
        "suppressions": suppressions,
        "addresses": addresses,
        "totals": store.totals_at(ACCOUNT, instants),
        "transitions": store.transition_counts(ACCOUNT, instants),
    }


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, list[str]]:
    """A file with contacts, every kind of change, an inbound STOP from a contact and one from a
    stranger; the store is closed when the test gets it."""
    path = tmp_path / "reopen.db"
    clock = FakeClock(T0, tick=timedelta(minutes=13))
    ids = [f"c{i}" for i in range(5)]
    with SQLiteStore(path) as store:
        service = ConsentService(store, clock=clock, channels=["telegram"])
        service.upsert_contacts(
            ADMIN,
            [
                Contact(
                    ACCOUNT,
                    cid,
                    phone=f"+141555500{i:02d}",
                    email=f"c{i}@ex.com",
                    handles={channel("telegram"): f"tg{i}"},
                )
                for i, cid in enumerate(ids)
            ],
        )
        service.opt_in(ADMIN, ids, [SMS, EMAIL, WHATSAPP], evidence=EVIDENCE)
        service.unsubscribe(ADMIN, ids[:3], [EMAIL], reason="complaint")
        service.resubscribe(
            ADMIN,
            ids[:1],
            [EMAIL],
            justification=Justification(ResubscribeReason.MISTAKEN_UNSUBSCRIBE, "wrong row"),
        )
        service.unsubscribe(
            Actor.system(ACCOUNT, "carrier"), ids[4], [WHATSAPP], source=Source.CARRIER
        )
        for message_id, sender in (("SM-known", "+14155550001"), ("SM-stranger", "+14155550999")):
            service.handle_inbound(
                InboundMessage(ACCOUNT, SMS, sender, "STOP", message_id, clock.now())
            )
    return path, ids


def test_close_and_reopen_keeps_everything(filled: tuple[Path, list[str]]) -> None:
    """Contacts, subscriptions, events, inbound results, suppressions and trends read the same
    after the store is closed and the file reopened."""
    path, ids = filled
    with SQLiteStore(path) as store:
        before = snapshot(store, ids)
    with SQLiteStore(path) as store:
        after = snapshot(store, ids)
        replayed = check_replay(store, ACCOUNT)
    assert after == before
    # 15 opt-ins, 3 unsubscribes, 1 resubscribe, 1 carrier opt-out, and the STOP of c1 on the
    # SMS group (SMS, MMS, RCS).
    assert len(before["events"]) == 23  # type: ignore[arg-type]
    assert before["inbound"]["SM-known"] is not None  # type: ignore[index]
    assert [s.channel for s in before["suppressions"]] == [SMS, MMS, channel("rcs")]  # type: ignore[attr-defined]
    assert replayed[("c1", SMS)] is SubscriptionState.UNSUBSCRIBED
    assert integrity(path) == [("ok",)]


def test_a_redelivered_webhook_after_reopen_changes_nothing(
    filled: tuple[Path, list[str]],
) -> None:
    """The record of a handled inbound message survives a reopen: a redelivery is a replay."""
    path, _ = filled
    with SQLiteStore(path) as store:
        service = ConsentService(store, clock=FakeClock(T0 + timedelta(days=1)))
        count = len(list(store.events(ACCOUNT)))
        again = service.handle_inbound(
            InboundMessage(ACCOUNT, SMS, "+14155550001", "STOP", "SM-known", T0)
        )
        assert again.replayed
        assert len(list(store.events(ACCOUNT))) == count


# ---------------------------------------------------------------------------- read-only files

NOBODY = 65534  # the unprivileged user the read-only runs use when the tests run as root
T = TypeVar("T")


class ChildError(Exception):
    """An exception raised in an unprivileged child, as ``"Type: message"``."""


def start_unprivileged(work: Callable[[], object]) -> tuple[int, int]:
    """Fork a child that file permissions apply to and run *work* in it; its pid and the pipe
    its outcome comes back on (see :func:`finish_unprivileged`).

    As root (for whom chmod stops nothing) the child drops to ``nobody`` first.  It is forked,
    not spawned: this Python may live where ``nobody`` cannot read, and a forked child needs no
    file it has not loaded.  Fork only while this process has no store of the file open: the
    child would share that store's SQLite state of the file instead of opening its own.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and never return into pytest
        try:
            os.close(read_end)
            try:
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(NOBODY)
                    os.setuid(NOBODY)
            except OSError as error:
                outcome: tuple[str, object] = ("skip", f"cannot drop root privileges: {error}")
            else:
                try:
                    outcome = ("ok", work())
                except Exception as error:  # reported to the parent
                    outcome = ("error", f"{type(error).__name__}: {error}")
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(pickle.dumps(outcome))
        finally:
            os._exit(0)
    os.close(write_end)
    return pid, read_end


def finish_unprivileged(child: tuple[int, int]) -> Any:
    """Wait for a child of :func:`start_unprivileged`; its result, or its exception as a
    ChildError (or a skip, when it could not drop root's privileges)."""
    pid, read_end = child
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    assert data, "the unprivileged child died without a word"
    kind, value = pickle.loads(data)
    if kind == "skip":
        pytest.skip(str(value))
    if kind == "error":
        raise ChildError(value)
    return value


def unprivileged(work: Callable[[], T]) -> T:
    """Run *work* in an unprivileged child (see :func:`start_unprivileged`); its result."""
    result: T = finish_unprivileged(start_unprivileged(work))
    return result


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A fresh directory the unprivileged child owns (pytest's own are private to their user)."""
    made = Path(tempfile.mkdtemp(prefix="consentkit-ro-"))
    if os.geteuid() == 0:
        os.chown(made, NOBODY, NOBODY)
    try:
        yield made
    finally:
        made.chmod(0o700)
        shutil.rmtree(made)


def files(directory: Path) -> dict[str, str]:
    """The files of *directory* and their permissions, as octal strings."""
    return {p.name: oct(p.stat().st_mode & 0o777) for p in sorted(directory.iterdir())}


def write_contacts(path: Path, *ids: str) -> list[str]:
    """Register contacts through a store on *path*; the ids of every contact it then has."""
    with SQLiteStore(path) as store:
        with store.transaction(ACCOUNT) as tx:
            tx.put_contacts([Contact(ACCOUNT, cid) for cid in ids])
        return [c.id for c in store.list_contacts(ACCOUNT, after=None, limit=100)]


def read_then_try_to_write(path: Path) -> tuple[list[str], str]:
    """What a read-only run does: read the contacts, then attempt a write (its error message)."""
    with SQLiteStore(path) as store:
        ids = [c.id for c in store.list_contacts(ACCOUNT, after=None, limit=100)]
        try:
            with store.transaction(ACCOUNT) as tx:
                tx.put_contacts([Contact(ACCOUNT, "intruder")])
        except StorageError as error:
            return ids, str(error)
    return ids, ""


@pytest.mark.parametrize("made_read_only", ["file", "directory"])
def test_a_read_only_run_leaves_nothing_that_blocks_a_later_writer(
    shared_dir: Path, made_read_only: str
) -> None:
    """A store on a file it may not write (or whose directory it may not write) reads it,
    refuses writes with a StorageError, and creates no file; once the permissions are back, a
    writer writes."""
    path = shared_dir / "consent.db"
    assert unprivileged(lambda: write_contacts(path, "ann")) == ["ann"]
    assert files(shared_dir) == {"consent.db": "0o644"}
    target = path if made_read_only == "file" else shared_dir
    original = target.stat().st_mode & 0o777
    target.chmod(0o444 if made_read_only == "file" else 0o555)
    ids, refused = unprivileged(lambda: read_then_try_to_write(path))
    assert ids == ["ann"]
    assert set(files(shared_dir)) == {"consent.db"}
    target.chmod(original)
    assert unprivileged(lambda: write_contacts(path, "bob")) == ["ann", "bob"]
    assert files(shared_dir) == {"consent.db": "0o644"}
    assert "opened it read-only" in refused
    assert str(path) in refused


def test_a_read_only_run_reads_through_a_running_writer(shared_dir: Path) -> None:
    """While a writer process has the file open, a store that may not write it sees the
    writer's latest commits (still in the write-ahead log) and changes none of its files."""
    path = shared_dir / "consent.db"
    ready_read, ready_write = os.pipe()
    go_read, go_write = os.pipe()

    def writer() -> list[str]:
        with SQLiteStore(path) as store:
            with store.transaction(ACCOUNT) as tx:
                tx.put_contacts([Contact(ACCOUNT, "ann")])
            os.write(ready_write, b"!")
            os.read(go_read, 1)
            with store.transaction(ACCOUNT) as tx:
                tx.put_contacts([Contact(ACCOUNT, "bob")])
            return [c.id for c in store.list_contacts(ACCOUNT, after=None, limit=100)]

    running = start_unprivileged(writer)
    os.close(ready_write)  # the writer's ends: a writer that dies early ends the wait below
    os.close(go_read)
    try:
        assert os.read(ready_read, 1) == b"!"
        path.chmod(0o444)
        before = files(shared_dir)
        assert set(before) == {"consent.db", "consent.db-wal", "consent.db-shm"}
        ids, refused = unprivileged(lambda: read_then_try_to_write(path))
        assert (ids, "opened it read-only" in refused) == (["ann"], True)
        assert files(shared_dir) == before
    finally:
        with suppress(BrokenPipeError):
            os.write(go_write, b"!")
        os.close(go_write)
        os.close(ready_read)
        assert finish_unprivileged(running) == ["ann", "bob"]
    assert set(files(shared_dir)) == {"consent.db"}
    path.chmod(0o644)
    assert unprivileged(lambda: write_contacts(path, "cy")) == ["ann", "bob", "cy"]


def test_files_left_read_only_by_an_earlier_read_only_run_no_longer_block_writers(
    shared_dir: Path,
) -> None:
    """The -wal and -shm files a plain SQLite read of a read-only file leaves behind, read-only
    (as older consentkit versions did), do not stop a store from writing once the file is
    writable again."""
    path = shared_dir / "consent.db"
    assert unprivileged(lambda: write_contacts(path, "ann")) == ["ann"]
    path.chmod(0o444)

    def plain_read() -> int:
        conn = sqlite3.connect(path)
        count = int(conn.execute("SELECT count(*) FROM contacts").fetchone()[0])
        conn.close()
        return count

    assert unprivileged(plain_read) == 1
    assert files(shared_dir) == {
        "consent.db": "0o444",
        "consent.db-shm": "0o444",
        "consent.db-wal": "0o444",
    }
    path.chmod(0o644)
    assert unprivileged(lambda: write_contacts(path, "bob")) == ["ann", "bob"]
    assert files(shared_dir) == {"consent.db": "0o644"}


def test_a_file_another_user_may_write_is_not_read_while_no_writer_has_it(
    shared_dir: Path,
) -> None:
    """A store that may not write a file its owner may, with no writer running, refuses to
    open it rather than create a -shm file the owner could not write; the owner then writes."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to own the file while another user reads it")
    path = shared_dir / "consent.db"
    assert write_contacts(path, "ann") == ["ann"]  # as root: the file is root's, mode 0644
    with pytest.raises(ChildError, match=r"StorageError: .*no writer has it open"):
        unprivileged(lambda: read_then_try_to_write(path))
    assert set(files(shared_dir)) == {"consent.db"}
    assert write_contacts(path, "bob") == ["ann", "bob"]


_left_open: list[SQLiteStore] = []  # stores a child exits without closing


def test_a_read_only_run_refuses_a_write_ahead_log_nobody_checkpointed(
    shared_dir: Path,
) -> None:
    """A store that may not write a file whose write-ahead log still holds commits (its writer
    died, and its -shm is gone) refuses to read it rather than miss them; a writer recovers
    them."""
    path = shared_dir / "consent.db"
    assert unprivileged(lambda: write_contacts(path, "ann")) == ["ann"]

    def write_and_exit_without_closing() -> None:
        store = SQLiteStore(path)
        with store.transaction(ACCOUNT) as tx:
            tx.put_contacts([Contact(ACCOUNT, "bob")])
        _left_open.append(store)  # the child exits with the commit in the write-ahead log

    unprivileged(write_and_exit_without_closing)
    (shared_dir / "consent.db-shm").unlink()
    assert (shared_dir / "consent.db-wal").stat().st_size > 0
    path.chmod(0o444)
    with pytest.raises(ChildError, match=r"StorageError: .*were not written back"):
        unprivileged(lambda: read_then_try_to_write(path))
    assert set(files(shared_dir)) == {"consent.db", "consent.db-wal"}
    path.chmod(0o644)
    assert unprivileged(lambda: write_contacts(path, "cy")) == ["ann", "bob", "cy"]

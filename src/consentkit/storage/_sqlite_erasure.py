"""Erasure in the SQLite store: the statements of :meth:`ErasureTransaction.erase_contact` and
the read of the erasure records (the ``erasures`` table, schema version 8).

Each statement is set-based over one contact (through the indexes by contact where there is one;
inbound results and review items of the account are scanned once, as their sender and contacts
are only in their documents for rows written before schema version 7).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Final

from consentkit.erasure import ErasureRecord
from consentkit.model import Actor
from consentkit.storage._time import instant, micros
from consentkit.storage.base import Erasure

__all__ = ["MIGRATION", "erase", "erasures"]

MIGRATION: Final = (
    """
    CREATE TABLE erasures (
        account TEXT NOT NULL,
        pseudonym TEXT NOT NULL,
        erased_at INTEGER NOT NULL,  -- micros, like every time
        actor_kind TEXT NOT NULL,
        actor_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (account, pseudonym)
    ) WITHOUT ROWID
    """,
)
"""Schema migration: the audit records of erasures."""

_KEYS: Final = "(SELECT value FROM json_each(:keys))"
_SENDERS: Final = "(SELECT value FROM json_each(:senders))"
_STATEMENTS: Final = (
    "DELETE FROM contacts WHERE account = :account AND id = :cid",
    "DELETE FROM contact_addresses WHERE account = :account AND contact_id = :cid",
    "DELETE FROM address_departures WHERE account = :account AND contact_id = :cid",
    # Its double opt-in requests (their evidence can hold where it signed up).
    "DELETE FROM pending_opt_ins WHERE account = :account AND contact_id = :cid",
    f"DELETE FROM suppressions WHERE account = :account AND address_key IN {_KEYS}",
    f"DELETE FROM sent_messages WHERE account = :account AND address_key IN {_KEYS}",
    f"""
    DELETE FROM inbound_messages WHERE account = :account AND (
        sender_key IN {_KEYS}
        OR (json_valid(result) AND (
            lower(json_extract(result, '$.sender')) IN {_SENDERS}
            OR EXISTS (SELECT 1 FROM json_each(result, '$.contact_ids') WHERE value = :cid)
            OR EXISTS (
                SELECT 1 FROM json_each(result, '$.changed')
                WHERE json_type(value) = 'array' AND json_extract(value, '$[0]') = :cid
            )
        ))
    )
    """,
    f"""
    DELETE FROM review_items WHERE account = :account AND (
        lower(sender) IN {_SENDERS}
        OR EXISTS (SELECT 1 FROM json_each(review_items.contact_ids) WHERE value = :cid)
    )
    """,
    """
    UPDATE subscriptions SET
        contact_id = :pseudonym,
        opted_out_via = (
            SELECT v.value FROM json_each(:via) AS v WHERE v.key = subscriptions.opted_out_via
        )
    WHERE account = :account AND contact_id = :cid
    """,
    """
    UPDATE events SET
        contact_id = :pseudonym,
        actor_id = CASE WHEN actor_kind = 'contact' AND actor_id = :cid
            THEN :pseudonym ELSE actor_id END,
        justification_note = CASE WHEN justification_note IS NULL THEN NULL ELSE :marker END,
        evidence = CASE WHEN evidence IS NULL THEN NULL
            ELSE json_remove(evidence, '$.location', '$.reference') END
    WHERE account = :account AND contact_id = :cid
    """,
    """
    INSERT INTO erasures (account, pseudonym, erased_at, actor_kind, actor_id, reason)
    VALUES (:account, :pseudonym, :erased_at, :actor_kind, :actor_id, :reason)
    """,
)


def erase(conn: sqlite3.Connection, account: str, erasure: Erasure) -> None:
    """Run the erasure's statements in the open transaction of *conn* (the caller records the
    hashed suppressions after them and translates driver errors)."""
    record = erasure.record
    params = {
        "account": account,
        "cid": erasure.contact_id,
        "pseudonym": record.pseudonym,
        "keys": json.dumps(list(erasure.address_keys)),
        "senders": json.dumps(list(erasure.senders)),
        "via": json.dumps(dict(erasure.via)),
        "marker": erasure.marker,
        "erased_at": micros(record.erased_at),
        "actor_kind": record.actor.kind.value,
        "actor_id": record.actor.id,
        "reason": record.reason,
    }
    for statement in _STATEMENTS:
        conn.execute(statement, params)


def erasures(conn: sqlite3.Connection, account: str) -> list[ErasureRecord]:
    """The account's erasure records, oldest first."""
    rows = conn.execute(
        "SELECT pseudonym, erased_at, actor_kind, actor_id, reason FROM erasures "
        "WHERE account = ? ORDER BY erased_at, pseudonym",
        (account,),
    ).fetchall()
    return [
        ErasureRecord(account, pseudonym, instant(at), Actor(kind, actor_id, account), reason)
        for pseudonym, at, kind, actor_id, reason in rows
    ]

"""Erasure in the PostgreSQL store: the statements of :meth:`ErasureTransaction.erase_contact`
and the read of the erasure records (the ``erasures`` table).

Each statement is set-based over one contact, through the indexes by contact where there is one
(inbound results and review items of the account are scanned once: their sender and contacts are
only in their documents for rows written before the inbound columns).
"""

from __future__ import annotations

import json
from typing import Any, Final

import psycopg

from consentkit.erasure import ErasureRecord
from consentkit.model import Actor
from consentkit.storage.base import Erasure

__all__ = ["MIGRATION", "ErasureQueries"]

MIGRATION: Final = (
    """CREATE TABLE __S__.erasures (
        account text COLLATE "C" NOT NULL,
        pseudonym text COLLATE "C" NOT NULL,
        erased_at timestamptz NOT NULL,
        actor_kind text NOT NULL,
        actor_id text NOT NULL,
        reason text NOT NULL,
        PRIMARY KEY (account, pseudonym)
    )""",
)
"""The statements of the schema version that adds the erasure records ("__S__": the schema)."""

_PENDING: Final = "pg_temp.consentkit_pending_changes"

Conn = psycopg.Connection[tuple[Any, ...]]


class ErasureQueries:
    """The erasure statements, rendered once for one schema."""

    def __init__(self, schema: str) -> None:
        s = f'"{schema}"'
        where = "account = %(account)s AND contact_id = %(cid)s"
        changed = "result::jsonb -> 'changed'"
        self.erase: tuple[str, ...] = (
            f"DELETE FROM {s}.contacts WHERE {where}",
            f"DELETE FROM {s}.contact_addresses WHERE {where}",
            f"DELETE FROM {s}.address_departures WHERE {where}",
            # Its double opt-in requests (their evidence can hold where it signed up).
            f"DELETE FROM {s}.pending_opt_ins WHERE {where}",
            f"""DELETE FROM {s}.suppressions
                WHERE account = %(account)s AND address_key = ANY(%(keys)s::text[])""",
            f"""DELETE FROM {s}.sent_messages
                WHERE account = %(account)s AND address_key = ANY(%(keys)s::text[])""",
            f"""DELETE FROM {s}.inbound_messages WHERE account = %(account)s AND (
                sender_key = ANY(%(keys)s::text[])
                OR lower(result::jsonb ->> 'sender') = ANY(%(senders)s::text[])
                OR (result::jsonb -> 'contact_ids') ? %(cid)s
                OR EXISTS (
                    SELECT 1 FROM jsonb_array_elements(
                        CASE WHEN jsonb_typeof({changed}) = 'array' THEN {changed}
                            ELSE '[]'::jsonb END
                    ) AS c WHERE c ->> 0 = %(cid)s
                ))""",
            f"""DELETE FROM {s}.review_items WHERE account = %(account)s AND (
                lower(sender) = ANY(%(senders)s::text[]) OR %(cid)s = ANY(contact_ids))""",
            # Placeholder rows (locks of absent pairs) name the contact too.
            f"DELETE FROM {s}.subscriptions WHERE {where} AND state = 'never_subscribed'",
            f"""UPDATE {s}.subscriptions SET contact_id = %(pseudonym)s,
                    opted_out_via = %(via)s::jsonb ->> opted_out_via
                WHERE {where}""",
            f"""UPDATE {s}.events SET contact_id = %(pseudonym)s,
                    actor_id = CASE WHEN actor_kind = 'contact' AND actor_id = %(cid)s
                        THEN %(pseudonym)s ELSE actor_id END,
                    justification_note = CASE WHEN justification_note IS NULL THEN NULL
                        ELSE %(marker)s END,
                    evidence = evidence - 'location' - 'reference'
                WHERE {where}""",
            f"""INSERT INTO {s}.erasures
                    (account, pseudonym, erased_at, actor_kind, actor_id, reason)
                VALUES (%(account)s, %(pseudonym)s, %(erased_at)s, %(actor_kind)s,
                    %(actor_id)s, %(reason)s)""",
        )
        # The events this transaction staged (numbered at commit) move to the pseudonym too.
        self.erase_pending = (
            f"UPDATE {_PENDING} SET contact_id = %(pseudonym)s WHERE contact_id = %(cid)s"
        )
        self.erasures = f"""
            SELECT pseudonym, erased_at, actor_kind, actor_id, reason FROM {s}.erasures
            WHERE account = %s ORDER BY erased_at, pseudonym"""

    def run_erase(self, conn: Conn, account: str, erasure: Erasure, *, pending: bool) -> None:
        """Run the erasure's statements on *conn* in its open transaction (*pending*: this
        transaction staged events, in the pending table)."""
        record = erasure.record
        params = {
            "account": account,
            "cid": erasure.contact_id,
            "pseudonym": record.pseudonym,
            "keys": list(erasure.address_keys),
            "senders": list(erasure.senders),
            "via": json.dumps(dict(erasure.via)),
            "marker": erasure.marker,
            "erased_at": record.erased_at,
            "actor_kind": record.actor.kind.value,
            "actor_id": record.actor.id,
            "reason": record.reason,
        }
        with conn.pipeline():
            if pending:
                conn.execute(self.erase_pending, params)
            for statement in self.erase:
                conn.execute(statement, params)

    def read(self, conn: Conn, account: str) -> list[ErasureRecord]:
        """The account's erasure records, oldest first."""
        rows = conn.execute(self.erasures, (account,)).fetchall()
        return [
            ErasureRecord(account, pseudonym, at, Actor(kind, actor_id, account), reason)
            for pseudonym, at, kind, actor_id, reason in rows
        ]

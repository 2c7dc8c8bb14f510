"""Column encodings shared by the SQL stores: enum look-ups and the evidence document."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from consentkit.model import (
    ActorKind,
    Evidence,
    OptOutOrigin,
    ResubscribeReason,
    Source,
    SubscriptionState,
)
from consentkit.review import ReviewDecision, ReviewKind

__all__ = [
    "DECISIONS",
    "KINDS",
    "ORIGINS",
    "REASONS",
    "REVIEW_KINDS",
    "SOURCES",
    "STATES",
    "evidence_document",
    "evidence_from_document",
]

STATES: Final = {s.value: s for s in SubscriptionState}
# A state column read through an outer join or a scalar subquery, where None is no row.
STATE_OR_NEVER: Final[dict[str | None, SubscriptionState]] = {
    None: SubscriptionState.NEVER_SUBSCRIBED,
    **{s.value: s for s in SubscriptionState},
}
KINDS: Final = {k.value: k for k in ActorKind}
SOURCES: Final = {s.value: s for s in Source}
REASONS: Final = {r.value: r for r in ResubscribeReason}
ORIGINS: Final = {o.value: o for o in OptOutOrigin}
REVIEW_KINDS: Final = {k.value: k for k in ReviewKind}
DECISIONS: Final = {d.value: d for d in ReviewDecision}


def evidence_document(evidence: Evidence) -> dict[str, Any]:
    """Evidence as a JSON-compatible dict (optional fields only when set)."""
    document: dict[str, Any] = {
        "method": evidence.method,
        "wording": evidence.wording,
        "wording_version": evidence.wording_version,
    }
    if evidence.location is not None:
        document["location"] = evidence.location
    if evidence.captured_at is not None:
        document["captured_at"] = evidence.captured_at.isoformat()
    if evidence.reference is not None:
        document["reference"] = evidence.reference
    return document


def evidence_from_document(data: dict[str, Any]) -> Evidence:
    """The evidence stored by :func:`evidence_document`."""
    captured = data.get("captured_at")
    return Evidence(
        method=data["method"],
        wording=data["wording"],
        wording_version=data["wording_version"],
        location=data.get("location"),
        captured_at=None if captured is None else datetime.fromisoformat(captured),
        reference=data.get("reference"),
    )

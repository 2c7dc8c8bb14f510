"""Turning consentkit values into JSON-compatible data and back, with cattrs.

:func:`make_converter` builds a :class:`cattrs.Converter` that knows the consentkit model.  There
is no module-level converter on purpose: callers build one, keep it, and may register hooks of
their own on it without affecting anyone else.

The JSON shapes are:

* datetimes: ISO 8601 strings with their UTC offset (``"2026-03-01T12:00:00+00:00"``); naive
  datetimes are refused in both directions;
* channels: their key (``"sms"``); custom keys come back as handle-addressed channels, exactly as
  :func:`consentkit.channels.channel` makes them;
* enums (states, sources, actor kinds, resubscribe reasons): their value (``"unsubscribed"``);
  read back from the value or the name in any case (``"UNSUBSCRIBED"``), as every input is;
* actor roles: a sorted list;
* ``Contact.handles``: an object ``{channel_key: handle}``;
* everything else: an object with one key per attribute.

Example::

    converter = make_converter()
    document = converter.unstructure(event)          # a dict of JSON types
    same = converter.structure(document, ConsentEvent)
    line = event_to_json(converter, event)           # compact, sorted keys
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, TypeVar, get_args, get_origin

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.v import format_exception

from consentkit.channels import Channel, channel
from consentkit.errors import ConsentError, ValidationError
from consentkit.model import (
    Actor,
    ConsentEvent,
    Contact,
    Evidence,
    Justification,
    Subscription,
    Suppression,
    ensure_aware,
    enum_value,
)

__all__ = [
    "EVENT_CSV_FIELDS",
    "SERIALIZABLE_TYPES",
    "event_from_json",
    "event_to_csv_row",
    "event_to_json",
    "make_converter",
    "register_field_hooks",
    "structure_checked",
]

T = TypeVar("T")

SERIALIZABLE_TYPES: Final = (
    Actor,
    ConsentEvent,
    Contact,
    Evidence,
    Justification,
    Subscription,
    Suppression,
)
"""The model classes a converter from :func:`make_converter` round-trips."""

EVENT_CSV_FIELDS: Final = (
    "sequence",
    "account",
    "contact_id",
    "channel",
    "previous_state",
    "new_state",
    "transition",
    "actor_kind",
    "actor_id",
    "actor_roles",
    "source",
    "occurred_at",
    "recorded_at",
    "reason",
    "justification_reason",
    "justification_note",
    "evidence_method",
    "evidence_wording",
    "evidence_wording_version",
    "evidence_location",
    "evidence_captured_at",
    "evidence_reference",
    "inbound_message_id",
    "batch_id",
)
"""The columns of a CSV export of events, in order (see :func:`event_to_csv_row`)."""


def _unstructure_datetime(value: datetime) -> str:
    return ensure_aware("datetime", value).isoformat()


def _structure_datetime(value: object, _: object) -> datetime:
    if isinstance(value, datetime):
        return ensure_aware("datetime", value)
    if not isinstance(value, str):
        raise ValidationError(
            "datetime", f"expected an ISO 8601 string, got {type(value).__name__}"
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            "datetime", f"{value!r} is not an ISO 8601 date and time with an offset"
        ) from None
    return ensure_aware("datetime", parsed)


def _unstructure_channel(value: Channel) -> str:
    return value.key


def _structure_channel(value: object, _: object) -> Channel:
    if isinstance(value, (str, Channel)):
        return channel(value)
    raise ValidationError("channel", f"expected a channel key string, got {type(value).__name__}")


def _is_string_set(type_: Any) -> bool:
    return get_origin(type_) in (frozenset, set) and get_args(type_) == (str,)


def _unstructure_roles(value: frozenset[str]) -> list[str]:
    # Sorted, so the same actor always serialises to the same bytes (diffable exports).
    return sorted(value)


def _is_enum_set(type_: Any) -> bool:
    args = get_args(type_)
    return (
        get_origin(type_) in (frozenset, set)
        and len(args) == 1
        and isinstance(args[0], type)
        and issubclass(args[0], enum.Enum)
    )


def _unstructure_enum_set(value: frozenset[enum.Enum]) -> list[Any]:
    return sorted(member.value for member in value)


def _is_enum(type_: Any) -> bool:
    return isinstance(type_, type) and issubclass(type_, enum.Enum)


def _structure_enum(value: object, type_: type[enum.Enum]) -> enum.Enum:
    # The one rule for enum inputs: a member's value or name, in any case.
    return enum_value(type_, type_.__name__, value)


def _unstructure_handles(value: tuple[tuple[Channel, str], ...]) -> dict[str, str]:
    return {ch.key: handle for ch, handle in value}


def _structure_handles(value: object, _: object) -> tuple[tuple[Channel, str], ...]:
    if not isinstance(value, Mapping):
        raise ValidationError(
            "handles", f"expected an object {{channel: handle}}, got {type(value).__name__}"
        )
    # Contact's own converter validates, normalises and sorts the pairs.
    return tuple((channel(key), handle) for key, handle in value.items())


def make_converter() -> cattrs.Converter:
    """Build a converter for the consentkit model (see the module docstring for the shapes).

    Structuring re-runs the model's validation, so a document that structures is a valid value;
    a bad one raises a :class:`cattrs.BaseValidationError` (use :func:`event_from_json` to get a
    :class:`~consentkit.errors.ValidationError` instead).
    """
    converter = cattrs.Converter()
    converter.register_unstructure_hook(datetime, _unstructure_datetime)
    converter.register_structure_hook(datetime, _structure_datetime)
    converter.register_unstructure_hook(Channel, _unstructure_channel)
    converter.register_structure_hook(Channel, _structure_channel)
    converter.register_unstructure_hook_func(_is_string_set, _unstructure_roles)
    converter.register_unstructure_hook_func(_is_enum_set, _unstructure_enum_set)
    converter.register_structure_hook_func(_is_enum, _structure_enum)
    register_field_hooks(converter, Contact, "handles", _unstructure_handles, _structure_handles)
    return converter


def register_field_hooks(
    converter: cattrs.Converter,
    cls: type,
    field: str,
    unstructure: Callable[[Any], Any],
    structure: Callable[[Any, Any], Any],
) -> None:
    """Make *converter* read and write *cls* as an object of its attributes, *field* through the
    hooks given (every other attribute through the converter's own)."""
    writes: dict[str, Any] = {field: override(unstruct_hook=unstructure)}
    reads: dict[str, Any] = {field: override(struct_hook=structure)}
    converter.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, converter, **writes))
    converter.register_structure_hook(cls, make_dict_structure_fn(cls, converter, **reads))


def event_to_json(converter: cattrs.Converter, event: ConsentEvent) -> str:
    """One event as compact JSON with sorted keys (one line: suitable for JSON Lines)."""
    return json.dumps(
        converter.unstructure(event, ConsentEvent),
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )


def event_from_json(converter: cattrs.Converter, text: str) -> ConsentEvent:
    """Parse one event written by :func:`event_to_json`.

    Raises:
        ValidationError: the text is not JSON or not a valid event.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValidationError("event", f"is not JSON: {e}") from None
    return structure_checked(converter, document, ConsentEvent, "event", "a valid consent event")


def structure_checked(
    converter: cattrs.Converter, document: object, kind: type[T], field: str, what: str
) -> T:
    """``converter.structure(document, kind)``, with a bad document refused as one
    :class:`~consentkit.errors.ValidationError` naming *field* and every problem found (the
    model's own messages where it gave one), e.g. ``event: is not a valid consent event: ...``.
    """
    try:
        return converter.structure(document, kind)
    except cattrs.BaseValidationError as e:
        details = "; ".join(cattrs.transform_error(e, path=field, format_exception=_describe_error))
        raise ValidationError(field, f"is not {what}: {details}") from e


def _describe_error(error: BaseException, type_: Any) -> str:
    # The model's own messages name the field and say what to do; cattrs' generic ones do not.
    if isinstance(error, ConsentError):
        return str(error)
    return format_exception(error, type_)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return str(value)


def event_to_csv_row(converter: cattrs.Converter, event: ConsentEvent) -> dict[str, str]:
    """One event flattened to the columns of :data:`EVENT_CSV_FIELDS` (absent values are ``""``).

    Text is written verbatim, also when it starts with ``=`` or ``+``: an audit export must say
    exactly what was recorded, so open it in a spreadsheet with formulas disabled.
    """
    data: dict[str, Any] = converter.unstructure(event, ConsentEvent)
    actor: dict[str, Any] = data["actor"]
    justification: dict[str, Any] = data["justification"] or {}
    evidence: dict[str, Any] = data["evidence"] or {}
    transition = event.transition
    row = {
        "sequence": data["sequence"],
        "account": data["account"],
        "contact_id": data["contact_id"],
        "channel": data["channel"],
        "previous_state": data["previous_state"],
        "new_state": data["new_state"],
        "transition": None if transition is None else transition.value,
        "actor_kind": actor["kind"],
        "actor_id": actor["id"],
        "actor_roles": ";".join(actor["roles"]),
        "source": data["source"],
        "occurred_at": data["occurred_at"],
        "recorded_at": data["recorded_at"],
        "reason": data["reason"],
        "justification_reason": justification.get("reason"),
        "justification_note": justification.get("note"),
        "evidence_method": evidence.get("method"),
        "evidence_wording": evidence.get("wording"),
        "evidence_wording_version": evidence.get("wording_version"),
        "evidence_location": evidence.get("location"),
        "evidence_captured_at": evidence.get("captured_at"),
        "evidence_reference": evidence.get("reference"),
        "inbound_message_id": data["inbound_message_id"],
        "batch_id": data["batch_id"],
    }
    return {field: _cell(row[field]) for field in EVENT_CSV_FIELDS}

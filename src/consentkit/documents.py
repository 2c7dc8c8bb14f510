"""Public JSON documents of consentkit's results: what a host app returns from its endpoints and
what ``consentkit ... --format json`` prints.

:func:`to_document` turns a result into a dict of JSON types (``json.dumps`` takes it as is) and
:func:`from_document` reads one back, validating it like the model does::

    document = to_document(result)                    # ChangeResult -> dict
    same = from_document(document, ChangeResult)      # == result
    page = from_document(doc, Page[Subscription])     # a page names its item type

The documented types are :data:`DOCUMENT_TYPES`: :class:`~consentkit.service.ChangeResult`,
:class:`~consentkit.service.ContactsResult`, :class:`~consentkit.service.ReviewResolution`,
:class:`~consentkit.service.Page`, :class:`~consentkit.service.ChangesPage` (the change
feed's), :class:`~consentkit.model.Subscription`,
:class:`~consentkit.model.ConsentEvent`, :class:`~consentkit.model.Contact`,
:class:`~consentkit.inbound.InboundResult`, :class:`~consentkit.trends.TrendReport`,
:class:`~consentkit.review.ReviewItem`, and the inputs :class:`~consentkit.model.Evidence` and
:class:`~consentkit.model.Justification`.  Their keys are stable and listed in docs/json.md; in all
of them:

* datetimes are ISO 8601 strings with their UTC offset (``"2026-03-01T12:00:00+00:00"``);
* channels are their key (``"sms"``), enums their value (``"unsubscribed"``);
* a (contact, channel) pair is ``{"contact_id": ..., "channel": ...}``;
* every other value is an object with one key per attribute, tuples are lists, and absent
  optional values are ``null`` (the key is always there).

A :class:`~consentkit.service.ChangeResult`'s ``versions`` mapping is a list of
``{"contact_id", "channel", "version"}`` objects; a refused pair's error is
``{"type": "NotAuthorizedError", "code": "not_authorized", "message": "..."}``: the class name
and :meth:`~consentkit.errors.ConsentError.to_document` (read back as an error of that class
with that message; other attributes of the error are not kept).  An
:class:`~consentkit.inbound.InboundResult`'s document is the one of its own
:meth:`~consentkit.inbound.InboundResult.to_document`.

The converter: :func:`make_document_converter` builds a fresh :class:`cattrs.Converter` (from
:func:`consentkit.serialization.make_converter`) that knows these documents, for callers that
want to register hooks of their own.  :func:`to_document` and :func:`from_document` use one built
on first use and private to this module (never returned, so nobody can change it), unless given
``converter=``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Final, TypeVar, get_args, get_origin

import cattrs

from consentkit import errors
from consentkit.channels import Channel, channel
from consentkit.errors import ConsentError, ValidationError
from consentkit.inbound import InboundResult
from consentkit.model import (
    ConsentEvent,
    Contact,
    Evidence,
    Justification,
    Subscription,
    ensure_aware,
    validate_id,
)
from consentkit.review import ReviewItem
from consentkit.serialization import make_converter, register_field_hooks, structure_checked
from consentkit.service import (
    ChangeResult,
    ChangesPage,
    ContactsResult,
    Page,
    PairRef,
    ReviewResolution,
)
from consentkit.trends import ChannelTotals, SeriesPoint, TrendReport

__all__ = ["DOCUMENT_TYPES", "from_document", "make_document_converter", "to_document"]

T = TypeVar("T")

DOCUMENT_TYPES: Final = (
    ChangeResult,
    ChangesPage,
    ConsentEvent,
    Contact,
    ContactsResult,
    Evidence,
    InboundResult,
    Justification,
    Page,
    ReviewItem,
    ReviewResolution,
    Subscription,
    TrendReport,
)
"""The types with a public JSON document (a :class:`~consentkit.service.Page` of any other one
of them too).  :class:`~consentkit.model.Evidence` and :class:`~consentkit.model.Justification`
are inputs: a host reads them from its own requests with :func:`from_document`."""

_ERROR_TYPES: Final[dict[str, type[ConsentError]]] = {
    name: getattr(errors, name) for name in errors.__all__
}


# ---------------------------------------------------------------------- hooks


def _key(value: object, key: str, field: str) -> Any:
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"expected an object, got {type(value).__name__}")
    if key not in value:
        raise ValidationError(field, f"the key {key!r} is missing")
    return value[key]


def _pair_document(pair: PairRef) -> dict[str, Any]:
    return {"contact_id": pair.contact_id, "channel": pair.channel.key}


def _pair_of(value: object, _: object = None) -> PairRef:
    return PairRef(
        validate_id("contact_id", _key(value, "contact_id", "pair")),
        channel(_key(value, "channel", "pair")),
    )


def _versions_document(versions: Mapping[PairRef, int]) -> list[dict[str, Any]]:
    return [{**_pair_document(pair), "version": version} for pair, version in versions.items()]


def _versions_of(value: object, _: object) -> dict[PairRef, int]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, list | tuple):
        raise ValidationError(
            "versions",
            f"expected a list of {{contact_id, channel, version}} objects, got "
            f"{type(value).__name__}",
        )
    return {_pair_of(item): _key(item, "version", "versions") for item in value}


def _error_document(error: ConsentError) -> dict[str, Any]:
    return {"type": type(error).__name__, **error.to_document()}


def _error_of(value: object, _: object) -> ConsentError:
    name = _key(value, "type", "error")
    message = _key(value, "message", "error")
    if not isinstance(name, str) or not isinstance(message, str):
        raise ValidationError("error", "type and message are strings")
    kind = _ERROR_TYPES.get(name, ConsentError)
    # The classes' own constructors build their message from parts the document does not keep.
    error = kind.__new__(kind)
    Exception.__init__(error, message)
    if isinstance(error, ValidationError):
        error.field = message.partition(": ")[0]
    elif isinstance(error, errors.UnknownContactError):
        error.account, error.contact_ids = "", ()
    return error


def _is_error(type_: Any) -> bool:
    return isinstance(type_, type) and issubclass(type_, ConsentError)


def _totals_document(
    converter: cattrs.Converter,
) -> Any:
    def unstructure(totals: tuple[tuple[Channel, ChannelTotals], ...]) -> dict[str, Any]:
        return {ch.key: converter.unstructure(figures, ChannelTotals) for ch, figures in totals}

    return unstructure


def _totals_of(converter: cattrs.Converter) -> Any:
    def structure(value: object, _: object) -> tuple[tuple[Channel, ChannelTotals], ...]:
        if not isinstance(value, Mapping):
            raise ValidationError(
                "totals", f"expected an object {{channel: totals}}, got {type(value).__name__}"
            )
        return tuple(
            (channel(key), converter.structure(figures, ChannelTotals))
            for key, figures in value.items()
        )

    return structure


def _inbound_document(result: InboundResult) -> dict[str, Any]:
    return result.to_document()


def _inbound_of(value: Mapping[str, Any], _: object) -> InboundResult:
    result = InboundResult.from_document(value)
    ensure_aware("received_at", result.received_at)
    if result.honor_by is not None:
        ensure_aware("honor_by", result.honor_by)
    return result


def make_document_converter() -> cattrs.Converter:
    """A new converter for every document of :data:`DOCUMENT_TYPES` (and the model's values, as
    :func:`~consentkit.serialization.make_converter` makes them).  Each call builds a fresh one,
    so hooks registered on it affect nobody else."""
    converter = make_converter()
    converter.register_unstructure_hook(PairRef, _pair_document)
    converter.register_structure_hook(PairRef, _pair_of)
    converter.register_unstructure_hook_func(_is_error, _error_document)
    converter.register_structure_hook_func(_is_error, _error_of)
    converter.register_unstructure_hook(InboundResult, _inbound_document)
    converter.register_structure_hook(InboundResult, _inbound_of)
    register_field_hooks(converter, ChangeResult, "versions", _versions_document, _versions_of)
    register_field_hooks(
        converter, SeriesPoint, "totals", _totals_document(converter), _totals_of(converter)
    )
    return converter


@functools.cache
def _private_converter() -> cattrs.Converter:
    # Built once per process and never handed out: nobody can register a hook on it.
    return make_document_converter()


# ---------------------------------------------------------------------- the public pair


def _item_type(item: object) -> type:
    kind = type(item)
    if kind not in DOCUMENT_TYPES or kind is Page:
        raise ValidationError(
            "value", f"a page of {kind.__name__} has no public document; see DOCUMENT_TYPES"
        )
    return kind


def _converter(converter: object) -> cattrs.Converter:
    if converter is None:
        return _private_converter()
    if not isinstance(converter, cattrs.Converter):
        raise ValidationError(
            "converter",
            f"expected a converter from make_document_converter(), got {type(converter).__name__}",
        )
    return converter


def to_document(value: object, *, converter: cattrs.Converter | None = None) -> dict[str, Any]:
    """The public JSON document of *value*, one of :data:`DOCUMENT_TYPES` (docs/json.md lists
    the keys): a dict of JSON types, for ``json.dumps``.

    Args:
        value: the result.
        converter: a converter from :func:`make_document_converter` (with hooks of yours);
            this module's own by default.

    Raises:
        ValidationError: *value* is not of a documented type.
    """
    kind = type(value)
    if kind not in DOCUMENT_TYPES:
        raise ValidationError(
            "value",
            f"{kind.__name__} has no public document; expected one of "
            f"{', '.join(t.__name__ for t in DOCUMENT_TYPES)}",
        )
    if isinstance(value, Page):
        for item in value.items:
            _item_type(item)
    document: dict[str, Any] = _converter(converter).unstructure(value, kind)
    return document


def _check_kind(kind: object) -> str:
    origin = get_origin(kind) or kind
    if origin not in DOCUMENT_TYPES:
        raise ValidationError(
            "kind",
            f"{kind!r} has no public document; expected one of "
            f"{', '.join(t.__name__ for t in DOCUMENT_TYPES)}",
        )
    if origin is not Page:
        return str(getattr(origin, "__name__", origin))
    (item,) = get_args(kind) or (None,)
    if item is None or item not in DOCUMENT_TYPES or item is Page:
        raise ValidationError("kind", "name the type of the page's items, e.g. Page[Subscription]")
    return f"page of {item.__name__}"


def from_document(
    document: Mapping[str, Any], kind: type[T], *, converter: cattrs.Converter | None = None
) -> T:
    """The value of type *kind* (one of :data:`DOCUMENT_TYPES`; a page as
    ``Page[Subscription]``) a document of :func:`to_document` describes.

    ``from_document(to_document(value), type(value)) == value`` for every documented value.

    Args:
        document: the document, as ``json.loads`` returns it.
        kind: its type.
        converter: a converter from :func:`make_document_converter`; this module's own by
            default.

    Raises:
        ValidationError: *kind* has no document, or *document* is not a valid one (naming
            every problem found).
    """
    what = _check_kind(kind)
    chosen = _converter(converter)
    if not isinstance(document, Mapping):
        raise ValidationError("document", f"expected a JSON object, got {type(document).__name__}")
    return structure_checked(chosen, document, kind, "document", f"a valid {what}")

"""Per-account settings, passed to the service explicitly (nothing is configured globally)."""

from __future__ import annotations

from typing import Any

import attrs

from consentkit.errors import ValidationError
from consentkit.inbound import InboundSettings
from consentkit.retention import RetentionSettings
from consentkit.trends import SpikeSettings, validate_timezone

__all__ = ["AccountSettings"]


def _timezone(value: object) -> str:
    return str(validate_timezone(value).key)  # type: ignore[arg-type]


def _instance_of(kind: type, field: str) -> Any:
    def check(_: object, __: object, value: object) -> None:
        if not isinstance(value, kind):
            raise ValidationError(
                field, f"expected {kind.__name__}, got {type(value).__name__}"
            )

    return check


@attrs.frozen
class AccountSettings:
    """How one account behaves.

    Attributes:
        timezone: the account's IANA time zone; months of the trend report are its local months.
        inbound: keyword lists, what to do with possible opt-outs, reply templates, opt-out scope.
        spikes: thresholds of unsubscribe spike detection.
        retention: how long message records are kept (docs/retention.md); forever by default.
    """

    timezone: str = attrs.field(default="UTC", converter=_timezone)
    inbound: InboundSettings = attrs.field(
        factory=InboundSettings, validator=_instance_of(InboundSettings, "inbound")
    )
    spikes: SpikeSettings = attrs.field(
        factory=SpikeSettings, validator=_instance_of(SpikeSettings, "spikes")
    )
    retention: RetentionSettings = attrs.field(
        factory=RetentionSettings, validator=_instance_of(RetentionSettings, "retention")
    )

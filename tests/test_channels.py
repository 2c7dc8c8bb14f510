"""Channels: built-ins, custom keys and channel groups."""

import pytest

from consentkit.channels import (
    DEFAULT_CHANNEL_GROUPS,
    EMAIL,
    MMS,
    RCS,
    SMS,
    WHATSAPP,
    AddressKind,
    Channel,
    ChannelGroups,
    channel,
)
from consentkit.errors import ValidationError


def test_builtin_lookup_is_case_insensitive() -> None:
    """Built-in channels are found by key in any case and keep their address kind."""
    assert channel("SMS") is SMS
    assert channel("whatsapp").address_kind is AddressKind.PHONE
    assert channel(EMAIL) is EMAIL


def test_custom_channel_by_valid_slug() -> None:
    """A custom channel key is accepted as a handle-addressed channel."""
    telegram = channel("telegram")
    assert telegram == Channel("telegram")
    assert telegram.address_kind is AddressKind.HANDLE


@pytest.mark.parametrize("bad", ["", "Tele gram", "9lives", "x" * 33, "tg!", "ТГ"])
def test_invalid_channel_keys_are_refused(bad: str) -> None:
    """Keys that are not lower-case slugs raise ValidationError naming the channel field."""
    with pytest.raises(ValidationError, match="channel"):
        channel(bad)


def test_default_groups_join_sms_mms_rcs_only() -> None:
    """SMS, MMS and RCS share one group; WhatsApp and custom channels stand alone."""
    assert DEFAULT_CHANNEL_GROUPS.group_of(MMS) == {SMS, MMS, RCS}
    assert DEFAULT_CHANNEL_GROUPS.group_of(WHATSAPP) == {WHATSAPP}
    assert DEFAULT_CHANNEL_GROUPS.group_of(channel("telegram")) == {channel("telegram")}


def test_groups_are_configurable_and_disjoint() -> None:
    """A host can group channels its own way, but one channel cannot be in two groups."""
    groups = ChannelGroups([("sms", "whatsapp")])
    assert groups.group_of(WHATSAPP) == {SMS, WHATSAPP}
    assert groups.group_of(MMS) == {MMS}
    with pytest.raises(ValidationError, match="more than one group"):
        ChannelGroups([(SMS, MMS), (MMS, RCS)])

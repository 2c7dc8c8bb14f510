"""consentkit: per-channel contact consent for messaging apps.

The names most host apps need are importable from here; the modules hold the rest.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from consentkit.channels import (
    EMAIL,
    MMS,
    PUSH,
    RCS,
    SMS,
    VOICE,
    WHATSAPP,
    AddressKind,
    Channel,
    ChannelGroups,
    channel,
)
from consentkit.clock import Clock, SystemClock
from consentkit.errors import (
    ChannelConsentRequiredError,
    ConflictError,
    ConsentError,
    JustificationError,
    NotAuthorizedError,
    PayloadError,
    SignatureError,
    StorageError,
    UnknownContactError,
    ValidationError,
)
from consentkit.model import (
    Actor,
    ActorKind,
    ConsentEvent,
    Contact,
    Evidence,
    Justification,
    OptOutOrigin,
    ResubscribeReason,
    Source,
    Subscription,
    SubscriptionState,
    Transition,
)
from consentkit.policy import AdminOnlyPolicy, Policy, ProposedChange
from consentkit.review import ReviewDecision, ReviewItem, ReviewKind
from consentkit.sends import SentMessage
from consentkit.service import (
    ChangeResult,
    ChangesPage,
    ConsentService,
    ContactsResult,
    Page,
    PairRef,
    ReviewResolution,
)
from consentkit.storage import LAZY_STORES, InMemoryStore, Store, open_store
from consentkit.topics import MessageClass, Topic, TopicDefault, UnknownTopicError

if TYPE_CHECKING:
    from consentkit.storage.postgres import PostgresStore
    from consentkit.storage.sqlite import SQLiteStore

try:
    __version__ = version("consentkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "EMAIL",
    "MMS",
    "PUSH",
    "RCS",
    "SMS",
    "VOICE",
    "WHATSAPP",
    "Actor",
    "ActorKind",
    "AddressKind",
    "AdminOnlyPolicy",
    "ChangeResult",
    "ChangesPage",
    "Channel",
    "ChannelConsentRequiredError",
    "ChannelGroups",
    "Clock",
    "ConflictError",
    "ConsentError",
    "ConsentEvent",
    "ConsentService",
    "Contact",
    "ContactsResult",
    "Evidence",
    "InMemoryStore",
    "Justification",
    "JustificationError",
    "MessageClass",
    "NotAuthorizedError",
    "OptOutOrigin",
    "Page",
    "PairRef",
    "PayloadError",
    "Policy",
    "PostgresStore",
    "ProposedChange",
    "ResubscribeReason",
    "ReviewDecision",
    "ReviewItem",
    "ReviewKind",
    "ReviewResolution",
    "SQLiteStore",
    "SentMessage",
    "SignatureError",
    "Source",
    "StorageError",
    "Store",
    "Subscription",
    "SubscriptionState",
    "SystemClock",
    "Topic",
    "TopicDefault",
    "Transition",
    "UnknownContactError",
    "UnknownTopicError",
    "ValidationError",
    "__version__",
    "channel",
    "open_store",
]


def __getattr__(name: str) -> Any:
    """The stores of :data:`consentkit.storage.LAZY_STORES`, imported when first asked for (so
    ``import consentkit`` never needs psycopg)."""
    if name in LAZY_STORES:
        import consentkit.storage

        return getattr(consentkit.storage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

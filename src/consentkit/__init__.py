"""consentkit: per-channel contact consent for messaging apps.

The names most host apps need are importable from here; the modules hold the rest.
"""

from importlib.metadata import PackageNotFoundError, version

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
    ConflictError,
    ConsentError,
    JustificationError,
    NotAuthorizedError,
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
from consentkit.service import (
    ChangeResult,
    ConsentService,
    ContactsResult,
    Page,
    PairRef,
    ReviewResolution,
)
from consentkit.storage import InMemoryStore, Store

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
    "Channel",
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
    "NotAuthorizedError",
    "OptOutOrigin",
    "Page",
    "PairRef",
    "Policy",
    "ProposedChange",
    "ResubscribeReason",
    "ReviewDecision",
    "ReviewItem",
    "ReviewKind",
    "ReviewResolution",
    "Source",
    "StorageError",
    "Store",
    "Subscription",
    "SubscriptionState",
    "SystemClock",
    "Transition",
    "UnknownContactError",
    "ValidationError",
    "__version__",
    "channel",
]

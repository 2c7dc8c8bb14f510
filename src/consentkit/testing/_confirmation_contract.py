"""Double opt-in of the conformance suite (docs/double-opt-in.md), mixed into
:class:`~consentkit.testing.conformance.StoreConformance`: a pending pair is not sendable and
writes no event, the contact's confirmation completes it with linked evidence, and a request
never outlives its expiry or an opt-out that came after it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from consentkit.channels import EMAIL, SMS
from consentkit.confirmation import PendingStatus
from consentkit.errors import (
    ConflictError,
    NotAuthorizedError,
    StorageError,
    UnknownContactError,
    ValidationError,
)
from consentkit.inbound import InboundMessage, InboundOutcome
from consentkit.model import Actor, Contact, Evidence, SubscriptionState
from consentkit.service import ConsentService
from consentkit.storage.base import PendingReads
from consentkit.testing.clock import FakeClock
from consentkit.testing.replay import check_replay

if TYPE_CHECKING:
    from consentkit.storage.base import Store

_ACCOUNT = "acme"
_ADMIN = Actor.admin(_ACCOUNT, "alice")
_ANN = Actor.contact(_ACCOUNT, "ann")
_PHONE = "+14155550100"
_SIGNUP = Evidence("web_form", "Yes, text me offers. Msg&data rates may apply.", "v3", "https://x.test/join")
_REQUEST = "Reply YES to confirm offers from Acme. Reply STOP to cancel."


class ConfirmationContract:
    """Pending opt-ins and their confirmation."""

    def _double(self, store: Store, clock: FakeClock) -> ConsentService:
        service = ConsentService(store, clock=clock)
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "ann", phone=_PHONE)])
        if not isinstance(store, PendingReads):
            with pytest.raises(StorageError, match="Pending"):
                service.request_opt_in(
                    _ADMIN, "ann", SMS, evidence=_SIGNUP, request_wording=_REQUEST
                )
            pytest.skip(f"{type(store).__name__} keeps no pending opt-ins (checked the refusal)")
        return service

    def test_a_pending_pair_is_not_sendable_until_the_contact_confirms(
        self, store: Store, clock: FakeClock
    ) -> None:
        """The request writes no event and changes no pair; the confirmation writes one opt-in
        event by the contact whose evidence names the request and keeps the sign-up's wording;
        a second confirmation is refused."""
        service = self._double(store, clock)
        pending = service.request_opt_in(
            _ADMIN, "ann", SMS, evidence=_SIGNUP, request_wording=_REQUEST
        )
        assert pending.status is PendingStatus.PENDING
        assert pending.expires_at == pending.requested_at + timedelta(hours=48)
        assert not service.can_send(_ADMIN, "ann", SMS)
        assert list(service.audit_log(_ADMIN)) == []
        assert service.pending_opt_ins(_ADMIN, "ann") == [pending]
        clock.advance(timedelta(hours=1))
        result = service.confirm_opt_in(_ANN, pending.id, method="reply")
        assert result.changed_count == 1
        assert service.can_send(_ADMIN, "ann", SMS)
        (event,) = service.audit_log(_ADMIN)
        assert event.actor == _ANN
        assert event.new_state is SubscriptionState.SUBSCRIBED
        assert event.evidence is not None
        assert event.evidence.reference == f"pending:{pending.id}"
        assert event.evidence.method == "double_opt_in_reply"
        assert (event.evidence.wording, event.evidence.wording_version) == (
            _SIGNUP.wording,
            _SIGNUP.wording_version,
        )
        (closed,) = service.pending_opt_ins(_ADMIN, "ann")
        assert closed.status is PendingStatus.CONFIRMED
        assert closed.closed_at == event.occurred_at
        with pytest.raises(ConflictError, match="confirmed"):
            service.confirm_opt_in(_ANN, pending.id)
        check_replay(store, _ACCOUNT)

    def test_a_request_expires(self, store: Store, clock: FakeClock) -> None:
        """A confirmation after ``expires_after`` is refused, recorded as expired, changes
        nothing."""
        service = self._double(store, clock)
        pending = service.request_opt_in(
            _ADMIN,
            "ann",
            SMS,
            evidence=_SIGNUP,
            request_wording=_REQUEST,
            expires_after=timedelta(hours=2),
        )
        clock.advance(timedelta(hours=3))
        with pytest.raises(ConflictError, match="expired"):
            service.confirm_opt_in(_ANN, pending.id)
        assert not service.can_send(_ADMIN, "ann", SMS)
        assert [p.status for p in service.pending_opt_ins(_ADMIN, "ann")] == [
            PendingStatus.EXPIRED
        ]
        assert list(service.audit_log(_ADMIN)) == []

    def test_a_confirmation_never_overrides_an_opt_out(
        self, store: Store, clock: FakeClock
    ) -> None:
        """STOP after the request voids it: the later YES (or click) is refused and the pair
        stays unsubscribed; an admin may not even ask an opted-out contact again, but the
        contact's own new sign-up may, and its confirmation resubscribes."""
        service = self._double(store, clock)
        pending = service.request_opt_in(
            _ADMIN, "ann", SMS, evidence=_SIGNUP, request_wording=_REQUEST
        )
        clock.advance(timedelta(minutes=1))
        service.handle_inbound(InboundMessage(_ACCOUNT, SMS, _PHONE, "STOP", "SM1", clock.now()))
        clock.advance(timedelta(minutes=1))
        with pytest.raises(ConflictError, match="void"):
            service.confirm_opt_in(_ANN, pending.id, method="link")
        assert service.state(_ADMIN, "ann", SMS) is SubscriptionState.UNSUBSCRIBED
        assert [p.status for p in service.pending_opt_ins(_ADMIN, "ann")] == [PendingStatus.VOID]
        with pytest.raises(NotAuthorizedError, match="opted out"):
            service.request_opt_in(_ADMIN, "ann", SMS, evidence=_SIGNUP, request_wording=_REQUEST)
        again = service.request_opt_in(
            _ANN, "ann", SMS, evidence=_SIGNUP, request_wording=_REQUEST
        )
        clock.advance(timedelta(minutes=1))
        service.confirm_opt_in(_ADMIN, again.id, method="link")
        assert service.can_send(_ADMIN, "ann", SMS)
        check_replay(store, _ACCOUNT)

    def test_who_may_request_and_confirm(self, store: Store, clock: FakeClock) -> None:
        """Members may do neither; a contact signs up and confirms only themselves; a
        subscribed pair needs no request; arguments are checked before anything is written."""
        service = self._double(store, clock)
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "bob", phone="+14155550101")])
        member = Actor.member(_ACCOUNT, "mo")
        with pytest.raises(NotAuthorizedError):
            service.request_opt_in(member, "ann", SMS, evidence=_SIGNUP, request_wording=_REQUEST)
        with pytest.raises(NotAuthorizedError):
            service.request_opt_in(_ANN, "bob", SMS, evidence=_SIGNUP, request_wording=_REQUEST)
        pending = service.request_opt_in(
            _ADMIN, "bob", SMS, evidence=_SIGNUP, request_wording=_REQUEST
        )
        for actor in (member, _ANN):
            with pytest.raises(NotAuthorizedError):
                service.confirm_opt_in(actor, pending.id)
        with pytest.raises(UnknownContactError):
            service.request_opt_in(_ADMIN, "nobody", SMS, evidence=_SIGNUP, request_wording="x")
        with pytest.raises(ValidationError, match="request_id"):
            service.confirm_opt_in(_ADMIN, "no-such-request")
        bad: list[dict[str, object]] = [
            {"evidence": "yes"},
            {"request_wording": ""},
            {"expires_after": 3600},
            {"expires_after": timedelta(days=400)},
        ]
        for arguments in bad:
            call: dict[str, object] = {"evidence": _SIGNUP, "request_wording": _REQUEST}
            call.update(arguments)
            with pytest.raises(ValidationError):
                service.request_opt_in(_ADMIN, "ann", SMS, **call)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="method"):
            service.confirm_opt_in(_ADMIN, pending.id, method="carrier-pigeon")
        service.opt_in(_ADMIN, ["ann"], [SMS], evidence=_SIGNUP)
        with pytest.raises(ValidationError, match="subscribed"):
            service.request_opt_in(_ADMIN, "ann", SMS, evidence=_SIGNUP, request_wording=_REQUEST)
        assert [p.id for p in service.pending_opt_ins(_ADMIN, "bob")] == [pending.id]
        assert service.pending_opt_ins(_ADMIN, "ann") == []

    def test_a_yes_reply_confirms_the_sender_s_pending_sign_ups_on_its_channel(
        self, store: Store, clock: FakeClock
    ) -> None:
        """"Yes!" from Ann's phone completes her pending SMS sign-up (evidence method
        ``double_opt_in_reply``, the message's id on the event), not her email one; a second
        YES, a YES from a contact without a pending sign-up and a YES after expiry are ordinary
        messages that create no consent."""
        service = self._double(store, clock)
        service.upsert_contacts(
            _ADMIN, [Contact(_ACCOUNT, "ann", phone=_PHONE, email="ann@example.com")]
        )
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "bob", phone="+14155550101")])
        sms = service.request_opt_in(_ADMIN, "ann", SMS, evidence=_SIGNUP, request_wording=_REQUEST)
        service.request_opt_in(_ADMIN, "ann", EMAIL, evidence=_SIGNUP, request_wording=_REQUEST)
        clock.advance(timedelta(minutes=2))
        result = service.handle_inbound(
            InboundMessage(_ACCOUNT, SMS, _PHONE, "Yes!", "SM-yes", clock.now())
        )
        assert result.outcome is InboundOutcome.CONFIRMED
        assert result.changed == (("ann", SMS),)
        assert service.can_send(_ADMIN, "ann", SMS)
        assert not service.can_send(_ADMIN, "ann", EMAIL)
        (event,) = service.audit_log(_ADMIN)
        assert event.evidence is not None
        assert event.evidence.method == "double_opt_in_reply"
        assert event.evidence.reference == f"pending:{sms.id}"
        assert event.inbound_message_id == "SM-yes"
        statuses = {p.channel.key: p.status for p in service.pending_opt_ins(_ADMIN, "ann")}
        assert statuses == {"sms": PendingStatus.CONFIRMED, "email": PendingStatus.PENDING}
        for sender, message_id in ((_PHONE, "SM-yes-2"), ("+14155550101", "SM-bob")):
            again = service.handle_inbound(
                InboundMessage(_ACCOUNT, SMS, sender, "YES", message_id, clock.now())
            )
            assert again.outcome is InboundOutcome.NONE
            assert again.changed == ()
        late = service.request_opt_in(
            _ADMIN, "bob", SMS, evidence=_SIGNUP, request_wording=_REQUEST,
            expires_after=timedelta(hours=1),
        )
        clock.advance(timedelta(hours=2))
        expired = service.handle_inbound(
            InboundMessage(_ACCOUNT, SMS, "+14155550101", "yes", "SM-bob-late", clock.now())
        )
        assert expired.outcome is InboundOutcome.NONE
        assert not service.can_send(_ADMIN, "bob", SMS)
        (closed,) = service.pending_opt_ins(_ADMIN, "bob")
        assert (closed.id, closed.status) == (late.id, PendingStatus.EXPIRED)
        check_replay(store, _ACCOUNT)

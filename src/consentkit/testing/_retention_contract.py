"""Retention and exports of the conformance suite (docs/retention.md), mixed into
:class:`~consentkit.testing.conformance.StoreConformance`: ``purge`` removes exactly what expired
and nothing else, in bounded batches; ``export_contact`` holds everything kept about a contact.

A store without :class:`~consentkit.storage.base.Purging` or
:class:`~consentkit.storage.base.AddressReads` is held to the refusal (``StorageError``).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from consentkit.channels import EMAIL, SMS
from consentkit.errors import NotAuthorizedError, StorageError, UnknownContactError, ValidationError
from consentkit.inbound import InboundMessage
from consentkit.model import Actor, Contact, Evidence
from consentkit.retention import PurgeKind, RetentionSettings
from consentkit.sends import SentMessage
from consentkit.service import ConsentService
from consentkit.settings import AccountSettings
from consentkit.storage.base import AddressReads, Purging, SentLog
from consentkit.testing.clock import FakeClock

if TYPE_CHECKING:
    from consentkit.storage.base import Store

_ACCOUNT = "acme"
_ADMIN = Actor.admin(_ACCOUNT, "alice")
_ANN = "+14155550100"
_STRANGER = "+14155550177"
_EVIDENCE = Evidence("web_form", "Yes, text me offers.", "v1")
_RETENTION = RetentionSettings(
    inbound_results=timedelta(days=30),
    non_contact_inbound=timedelta(days=2),
    review_texts=timedelta(days=30),
    sent_messages=timedelta(days=10),
    address_departures=timedelta(days=30),
)


class RetentionContract:
    """Purging what expired, and a contact's export."""

    def _records_service(
        self, store: Store, clock: FakeClock, retention: RetentionSettings = _RETENTION
    ) -> ConsentService:
        service = ConsentService(
            store, clock=clock, settings=AccountSettings(retention=retention)
        )
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "ann", phone=_ANN)])
        service.opt_in(_ADMIN, ["ann"], [SMS], evidence=_EVIDENCE)
        return service

    @staticmethod
    def _reply(
        service: ConsentService, sender: str, text: str, message_id: str, at: datetime
    ) -> bool:
        """Handle a reply; True when it had been handled before (its record was kept)."""
        return service.handle_inbound(
            InboundMessage(_ACCOUNT, SMS, sender, text, message_id, at)
        ).replayed

    def test_purge_removes_exactly_what_expired(self, store: Store, clock: FakeClock) -> None:
        """Ann's and a stranger's replies, review items open and decided, sends and an address
        edit, at ages on both sides of each period: the purge deletes the expired ones and
        keeps the rest (redelivery still replays what is kept; consent is untouched)."""
        service = self._records_service(store, clock)
        if not isinstance(store, Purging):
            with pytest.raises(StorageError, match="Purging"):
                service.purge(_ADMIN)
            pytest.skip(f"{type(store).__name__} cannot purge (checked the refusal)")
        # Each message is handled when it is received (retention counts from handling).
        now = clock.now() + timedelta(days=41)
        age = {name: now - timedelta(days=days) for name, days in [
            ("40d", 40), ("20d", 20), ("3d", 3), ("1d", 1)
        ]}
        for name, at in age.items():
            clock.set(at)
            self._reply(service, _ANN, "thanks", f"ann-{name}", at)
            self._reply(service, _STRANGER, "hello", f"stranger-{name}", at)
            # Review items: an open one 40 days old (its message is kept too), a decided one 40
            # days old (deleted) and a decided one 20 days old (kept).
            for item, when in (("open", "40d"), ("old", "40d"), ("recent", "20d")):
                if when == name:
                    self._reply(service, _ANN, "please stop texting me", f"review-{item}", at)
        clock.set(now)
        items = {i.message_id: i for i in service.review_items(_ADMIN).items}
        for name in ("old", "recent"):
            service.decide_review(_ADMIN, items[f"review-{name}"].id, "not_opt_out", note="ok")
        if isinstance(store, SentLog):
            for sent, sender in ((age["20d"], "+14155550001"), (age["3d"], "+14155550002")):
                service.record_sent(_ADMIN, SentMessage(SMS, _ANN, sent, sender=sender))
        before = service.subscriptions(_ADMIN, "ann")

        result = service.purge(_ADMIN, now=now, batch_size=2)

        assert result.complete
        assert result.kept_forever == ()
        assert result.deleted == {
            PurgeKind.INBOUND_RESULTS: 3,  # ann-40d, stranger-40d, review-old
            PurgeKind.NON_CONTACT_INBOUND: 2,  # stranger-20d, stranger-3d
            PurgeKind.DECIDED_REVIEW_ITEMS: 1,  # review-old
            PurgeKind.SENT_MESSAGES: 1 if isinstance(store, SentLog) else 0,
            PurgeKind.ADDRESS_DEPARTURES: 0,
        }
        kept = {
            "ann-40d": False, "ann-20d": True, "ann-3d": True, "ann-1d": True,
            "stranger-40d": False, "stranger-20d": False, "stranger-3d": False,
            "stranger-1d": True, "review-open": True, "review-recent": True,
        }
        for message_id, replayed in kept.items():
            sender = _STRANGER if message_id.startswith("stranger") else _ANN
            text = "hello" if sender == _STRANGER else "thanks"
            if message_id.startswith("review"):
                text = "please stop texting me"
            at = age.get(message_id.rsplit("-", 1)[-1], age["40d"])
            if message_id == "review-recent":
                at = age["20d"]
            assert self._reply(service, sender, text, message_id, at) is replayed, message_id
        open_items = [i.message_id for i in service.review_items(_ADMIN).items]
        assert "review-open" in open_items
        decided = {
            i.message_id
            for i in service.review_items(_ADMIN, include_decided=True).items
            if i.decision is not None
        }
        assert "review-recent" in decided
        assert "review-old" not in decided
        assert service.subscriptions(_ADMIN, "ann") == before  # consent is never purged

    def test_purge_runs_in_bounded_batches_and_resumes(
        self, store: Store, clock: FakeClock
    ) -> None:
        """``max_batches`` stops a purge early (``complete`` False); the next run finishes."""
        service = self._records_service(store, clock)
        if not isinstance(store, Purging):
            pytest.skip("checked in test_purge_removes_exactly_what_expired")
        for k in range(5):
            self._reply(service, _ANN, "thanks", f"old-{k}", clock.now())
        clock.advance(timedelta(days=45))
        first = service.purge(_ADMIN, batch_size=2, max_batches=2)
        assert not first.complete
        assert sum(first.deleted.values()) == 4
        second = service.purge(_ADMIN, batch_size=2)
        assert second.complete
        assert second.deleted[PurgeKind.INBOUND_RESULTS] == 1
        assert sum(second.deleted.values()) == 1

    def test_nothing_is_purged_unless_configured(self, store: Store, clock: FakeClock) -> None:
        """The default keeps everything, and says so."""
        service = self._records_service(store, clock, RetentionSettings())
        if not isinstance(store, Purging):
            pytest.skip("checked in test_purge_removes_exactly_what_expired")
        first = clock.now()
        self._reply(service, _ANN, "thanks", "m-1", first)
        clock.advance(timedelta(days=900))
        result = service.purge(_ADMIN)
        assert result.deleted == {}
        assert set(result.kept_forever) == set(PurgeKind)
        assert self._reply(service, _ANN, "thanks", "m-1", first)

    def test_purge_checks_who_and_what(self, store: Store, clock: FakeClock) -> None:
        """Admins and the system purge; members and contacts may not; arguments are checked."""
        service = self._records_service(store, clock)
        for actor in (Actor.member(_ACCOUNT, "mo"), Actor.contact(_ACCOUNT, "ann")):
            with pytest.raises(NotAuthorizedError):
                service.purge(actor)
        for bad in ({"batch_size": 0}, {"batch_size": True}, {"max_batches": 0}):
            with pytest.raises(ValidationError):
                service.purge(_ADMIN, **bad)
        with pytest.raises(ValidationError, match="now"):
            service.purge(_ADMIN, now=datetime(2026, 1, 1))
        with pytest.raises(ValidationError, match="inbound_results"):
            RetentionSettings(inbound_results=timedelta(hours=1))
        with pytest.raises(ValidationError, match="sent_messages"):
            RetentionSettings(sent_messages=timedelta(0))
        with pytest.raises(ValidationError, match="review_texts"):
            RetentionSettings(review_texts=30)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="retention"):
            AccountSettings(retention="30d")  # type: ignore[arg-type]

    def test_export_holds_everything_kept_about_a_contact(
        self, store: Store, clock: FakeClock
    ) -> None:
        """One JSON document: the contact, its pairs, its events with evidence, its replies'
        results, its review items, its address's last words and the sends to it; nothing of
        another contact."""
        service = self._records_service(store, clock)
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "bob", phone="+14155550101")])
        service.opt_in(_ADMIN, ["bob"], [SMS], evidence=_EVIDENCE)
        if not isinstance(store, AddressReads):
            with pytest.raises(StorageError, match="AddressReads"):
                service.export_contact(_ADMIN, "ann")
            pytest.skip(f"{type(store).__name__} cannot export (checked the refusal)")
        if isinstance(store, SentLog):
            service.record_sent(_ADMIN, SentMessage(SMS, _ANN, clock.now()))
        self._reply(service, _ANN, "please stop texting me", "SM-review", clock.now())
        self._reply(service, _ANN, "STOP", "SM-stop", clock.now())
        self._reply(service, "+14155550101", "thanks", "SM-bob", clock.now())
        document = service.export_contact(_ADMIN, "ann")
        assert json.loads(json.dumps(document)) == document
        assert document["format"] == "consentkit.contact_export/1"
        assert document["contact"]["phone"] == _ANN
        states = {s["channel"]: s["state"] for s in document["subscriptions"]}
        assert states == dict.fromkeys(("mms", "rcs", "sms"), "unsubscribed")  # STOP: the group
        assert [e["new_state"] for e in document["events"]] == ["subscribed"] + 3 * [
            "unsubscribed"
        ]
        assert document["events"][0]["evidence"]["wording"] == _EVIDENCE.wording
        assert [r["message_id"] for r in document["inbound"]] == ["SM-review", "SM-stop"]
        assert [i["message_id"] for i in document["review_items"]] == ["SM-review"]
        assert {(s["channel"], s["active"]) for s in document["suppressions"]} >= {("sms", True)}
        assert len(document["sent"]) == (1 if isinstance(store, SentLog) else 0)
        assert "+14155550101" not in json.dumps(document)
        # A contact exports their own records, not another's; unknown ids are refused.
        assert service.export_contact(Actor.contact(_ACCOUNT, "ann"), "ann")["contact_id"] == "ann"
        with pytest.raises(NotAuthorizedError):
            service.export_contact(Actor.contact(_ACCOUNT, "ann"), "bob")
        with pytest.raises(UnknownContactError):
            service.export_contact(_ADMIN, "nobody")


    def test_an_export_holds_nothing_of_an_address_s_earlier_owner(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A recycled number: Ann's messages from it are not in Bob's export after he takes the
        number; an email reply whose local part differs in case is still the contact's."""
        service = self._records_service(store, clock)
        if not isinstance(store, AddressReads):
            pytest.skip("checked in test_export_holds_everything_kept_about_a_contact")
        self._reply(service, _ANN, "my code is 1234", "SM-ann", clock.now())
        self._reply(service, _ANN, "please stop texting me", "SM-ann-review", clock.now())
        clock.advance(timedelta(days=1))
        service.upsert_contacts(
            _ADMIN, [Contact(_ACCOUNT, "ann", phone="+14155550111", email="Ann.Smith@X.org")]
        )
        service.upsert_contacts(_ADMIN, [Contact(_ACCOUNT, "bob", phone=_ANN)])
        self._reply(service, _ANN, "hi, bob here", "SM-bob", clock.now())
        bob = service.export_contact(_ADMIN, "bob")
        assert [r["message_id"] for r in bob["inbound"]] == ["SM-bob"]
        assert bob["review_items"] == []
        assert "1234" not in json.dumps(bob)
        service.handle_inbound(
            InboundMessage(
                _ACCOUNT, EMAIL, "ann.smith@x.org", "please stop emailing me", "EM-1", clock.now()
            )
        )
        ann = service.export_contact(_ADMIN, "ann")
        assert [i["message_id"] for i in ann["review_items"]] == ["EM-1"]

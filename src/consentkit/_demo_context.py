"""What the steps of ``consentkit demo`` share: the demo account, its people and the context."""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

import attrs

from consentkit.channels import Channel
from consentkit.errors import ConsentError
from consentkit.model import Actor, SubscriptionState
from consentkit.service import ChangeResult, ConsentService

__all__ = [
    "ACCOUNT",
    "ADMIN",
    "IMPORTED",
    "MEMBER",
    "PEOPLE",
    "WRAP",
    "DemoCheckError",
    "DemoContext",
]

ACCOUNT = "demo"
PEOPLE = (
    ("ana", "+14155550101", "ana@example.com"),
    ("ben", "+14155550102", "ben@example.com"),
    ("chloe", "+14155550103", "chloe@example.com"),
    ("dev", "+14155550104", "dev@example.com"),
    ("emma", "+14155550105", "emma@example.com"),
)
IMPORTED = (("fay", "+14155550106", "fay@example.com"), ("gus", "+14155550107", None))
ADMIN = Actor.admin(ACCOUNT, "alice")
MEMBER = Actor.member(ACCOUNT, "mia")
_INDENT = "   "
WRAP = 92  # long reasons are wrapped to fit a terminal with the indentation


class DemoCheckError(AssertionError):
    """The service did not behave as the tour says it does."""


@attrs.define
class DemoContext:
    """What the steps share.

    Attributes:
        service: the consent service on the tour's fresh database.
        out: where the narrative goes.
        admin: alice, an admin of the demo account.
        member: mia, a member (not an admin).
    """

    service: ConsentService
    out: TextIO
    admin: Actor = ADMIN
    member: Actor = MEMBER

    def say(self, text: str = "") -> None:
        """Print one line of the current step (indented under its title)."""
        self.out.write(f"{_INDENT}{text}".rstrip() + "\n")

    def check(self, condition: bool, claim: str) -> None:
        """Stop the tour if *claim* is not true."""
        if not condition:
            raise DemoCheckError(claim)

    def refused(self, action: Callable[[], object]) -> ConsentError:
        """Run *action*, which must be refused, and return the error."""
        try:
            action()
        except ConsentError as error:
            return error
        raise DemoCheckError("the service accepted a request the tour expects it to refuse")

    def say_refusal(self, error: ConsentError) -> None:
        """Print a refusal the way a host app would show it."""
        self.say(f"-> refused ({type(error).__name__}): {error}")

    def state(self, contact_id: str, ch: Channel) -> SubscriptionState:
        """The state of one pair, as the admin sees it."""
        return self.service.state(self.admin, contact_id, ch)

    def say_result(self, result: ChangeResult) -> None:
        """Print what a change did, pair by pair."""
        verb = result.new_state.value
        self.say(
            f"-> {result.changed_count} changed, {result.unchanged_count} already {verb}"
            + (f", {len(result.skipped)} skipped" if result.skipped else "")
        )
        for pair in result.changed:
            self.say(f"     changed    {pair.contact_id:<6} {pair.channel.key}")
        for pair in result.unchanged:
            self.say(f"     unchanged  {pair.contact_id:<6} {pair.channel.key} (no event written)")
        for skip in result.skipped:
            self.say(f"     skipped    {skip.contact_id:<6} {skip.channel.key}: {skip.reason}")

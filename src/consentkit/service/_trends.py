"""Subscriber trends, assembled from the store's roll-ups."""

from __future__ import annotations

from datetime import datetime

from consentkit.model import (
    Actor,
    ensure_aware,
)
from consentkit.service._core import ServiceCore
from consentkit.trends import (
    TrendReport,
    plan_report,
    totals_by_channel,
)


class TrendsMixin(ServiceCore):
    """Month-over-month trends."""

    def trends(
        self,
        actor: Actor,
        *,
        as_of: datetime | None = None,
        months: int = 12,
    ) -> TrendReport:
        """Subscriber trends of the actor's account: per channel, subscribed and unsubscribed
        totals now against one calendar month earlier (in the account's time zone), the monthly
        series for the last *months* months, and unsubscribe spike checks.

        The store answers from roll-ups, so the cost depends on months and channels, not on the
        number of contacts or events.
        """
        account = self._account_scope(actor, "read the account's trends")
        settings = self.settings_for(account)
        when = self._now() if as_of is None else ensure_aware("as_of", as_of)
        plan = plan_report(when, settings.timezone, months=months, spike_settings=settings.spikes)
        instants = plan.totals_instants()
        totals = {
            instant: totals_by_channel(states)
            for instant, states in zip(
                instants, self.store.totals_at(account, instants), strict=True
            )
        }
        # One store call counts every elementary interval between all window edges; the plan
        # sums them into its windows.
        edges = plan.count_edges()
        elementary = self.store.transition_counts(account, edges) if len(edges) > 1 else []
        counts = plan.sum_counts(edges, elementary)
        return plan.build(totals=totals, counts=counts)



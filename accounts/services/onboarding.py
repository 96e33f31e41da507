"""Onboarding writes: staff confirming that an account has the role its app's flavour
needs at Meta (a tester whose owner accepted the invitation), recorded in the event log."""

from __future__ import annotations

from datetime import datetime

from ..models import Account, Event
from ..selectors.onboarding import ROLE_CONFIRMED, ROLE_UNCONFIRMED, account_role_confirmation
from .common import Actor, event_record


def account_role_confirm(*, account: Account, confirmed: bool, actor: Actor,
                         now: datetime) -> Event | None:
    """Record that staff confirmed (or withdrew the confirmation) that the account has its
    role on the app at Meta. The checklist reads the last such event; nothing else
    changes. Ticking what is already ticked records nothing new and returns the tick;
    unticking what was never ticked records nothing and returns None."""
    last = account_role_confirmation(account=account)
    wanted = ROLE_CONFIRMED if confirmed else ROLE_UNCONFIRMED
    if last is not None and last.action == wanted:
        return last
    if last is None and not confirmed:
        return None  # never given: nothing to withdraw, nothing to record
    wanted_message = ("Staff confirmed the account's role on the app at Meta (tester, "
                      "invitation accepted)." if confirmed else
                      "Staff withdrew the confirmation of the account's role at Meta.")
    return event_record(account=account, action=wanted, outcome=Event.Outcome.OK,
                        message=wanted_message, actor=actor, now=now)

"""Which Instagram account an answer is about: the ids Instagram gives, and the rule that
decides "same account".

Instagram gives an account up to three ids (shared/instagram-api.md, sections 2 and 5):
/me's `id` (app-scoped with Instagram Login; the user's id with Basic Display), /me's
`user_id` (Instagram Login only: the professional account's id, the one webhooks and
publishing use) and the code exchange's `user_id` (which may equal either, or neither).
/me answers flat or in a `data` envelope without `id`, so which ids an answer carries
changes with its shape. Ids are compared as a set: two sides are the same account when
they share any id, whatever each side calls it, and different only when both know ids
and share none. A change of shape therefore never reports a wrong account, and an id
filed under another name (rows from before the ids had fields of their own) still
matches. No Django imports.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstagramIds:
    """The ids one side knows, each as Instagram named it; "" for unknown. Text of ASCII
    digits (they exceed 2**53)."""

    id: str = ""
    user_id: str = ""
    exchange_user_id: str = ""

    def known(self) -> frozenset[str]:
        """Every id this side knows, whatever its name."""
        return frozenset(i for i in (self.id, self.user_id, self.exchange_user_id) if i)

    def merged_into(self, stored: InstagramIds) -> InstagramIds:
        """`stored` with each id this side knows put in its field; ids this side does not
        know are kept (an answer in another shape never erases one)."""
        return InstagramIds(
            id=self.id or stored.id,
            user_id=self.user_id or stored.user_id,
            exchange_user_id=self.exchange_user_id or stored.exchange_user_id,
        )

    def describe(self) -> str:
        """For messages to staff, e.g. "id 1789, user_id 1784"."""
        parts = [f"{name} {value}" for name, value in
                 (("id", self.id), ("user_id", self.user_id),
                  ("code exchange user_id", self.exchange_user_id)) if value]
        return ", ".join(parts) or "no id"


def same_account(stored: InstagramIds, answered: InstagramIds) -> bool | None:
    """True when the two sides share an id (under any name), False when both know ids
    and share none, None when either side knows no id (nothing to compare: a first
    authorization)."""
    mine, theirs = stored.known(), answered.known()
    if not mine or not theirs:
        return None
    return bool(mine & theirs)

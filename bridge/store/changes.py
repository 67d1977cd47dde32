"""The writer of one account change: account row, grants, identity link, audit event, outbox rows.

Contract: `bridge.provision.apply` is the only caller that writes a transition. It turns a `Plan`
into rows and hands them here; the account's status, its grants, its audit events and its outbox
rows are written on the caller's connection, in the caller's transaction, so they commit together
or not at all. Nothing here commits, decides a transition or checks a rule.

`set_account_flags` writes the two columns a transition does not carry: `admin_hold` (set by an
administrator's or the expiry job's archive, cleared by a reactivation, so that a sync does not
bring the account back meanwhile) and `expires_at` (renewed when an external account is
reactivated). `bridge.provision.replan` calls it after the transition in the same transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, update

from bridge.store.tables import Account

accounts = Account.__table__


def set_account_flags(conn: Connection, account_id: str, **values: Any) -> None:
    """Set `admin_hold` and/or `expires_at` on one account."""
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))

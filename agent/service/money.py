"""Money: payments and single ledger lines (a repeated ``ref`` credits nothing twice), the purchase gate
(``can_spend``) and the admin's overrides (outstanding-balance date, exemption, guaranteed payment).
Each write is one transaction and marks the account to be looked at on the next tick."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from agent.service.errors import InvalidInput, Refused
from agent.service.results import LedgerResult, OverrideResult, PaymentResult, SpendVerdict
from agent.service.values import check_instant, check_method, parse_moment, parse_money
from agent.store import models as m
from agent.store.repo import audit, get_account, lock_account, spend_snapshot

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from agent.service.arrears import Arrears

__all__ = ["add_override", "can_spend", "exempt", "guarantee", "payment", "post_ledger", "set_debt_date"]


def _repeated_ref(account: str, ref: str) -> Refused:
    return Refused(f"account {account} already has a ledger entry with ref {ref!r}; nothing recorded")


def payment(svc: Arrears, account: str, amount: Decimal | str, *, method: str, ref: str | None,
            at: datetime | None, now: datetime, actor: str | None, apply_now: bool) -> PaymentResult:
    """Record a payment (see :meth:`agent.service.Arrears.payment`)."""
    from agent.imports import touch

    check_method(method)
    ref = ref or f"payment:{uuid.uuid4().hex}"
    paid_at = check_instant(at, what="at") if at is not None else now
    if apply_now:
        _ = svc.inventory  # applying it works on hosts: an invalid inventory refuses it before it is recorded
    with svc.session() as s:
        lock_account(s, account)  # the same ref sent twice at once: the second waits and finds the first
        acc = get_account(s, account)
        value = parse_money(amount, "amount", acc.currency)
        if value <= 0:
            raise InvalidInput(f"amount must be positive, got {value}", "amount")
        first = s.scalars(select(m.LedgerEntry).where(m.LedgerEntry.account == acc.id,
                                                      m.LedgerEntry.ref == ref)).first()
        if first is not None:
            if (first.kind, first.amount, first.method) != ("payment", value, method):
                raise _repeated_ref(acc.id, ref)
            result = PaymentResult(account=account, amount=first.amount, method=method, ref=ref, at=first.at,
                                   repeated=True)
        else:
            s.add(m.LedgerEntry(account=acc.id, at=paid_at, amount=value, kind="payment", method=method, ref=ref,
                                imported_at=now))
            touch(acc, now)
            audit(s, at=now, actor=svc.actor_of(actor), action="payment", account=acc.id,
                  reason=f"{method} payment", details={"amount": str(value), "method": method, "ref": ref})
            result = PaymentResult(account=account, amount=value, method=method, ref=ref, at=paid_at)
    if apply_now and not result.repeated:  # a repeat is the first answer: that call applied it, or the next run
        return PaymentResult(account=result.account, amount=result.amount, method=result.method, ref=result.ref,
                             at=result.at, applied=svc.apply_at_once(now=now))
    return result


def post_ledger(svc: Arrears, line: Mapping[str, Any], *, now: datetime, actor: str | None,
                apply_now: bool) -> LedgerResult:
    """Post one ledger line through the importer's validation (see :meth:`agent.service.Arrears.post_ledger`)."""
    from agent.imports import Records, import_ledger, ledger_entry
    from agent.service.intake import located

    if apply_now:
        _ = svc.inventory
    name = "ledger line"
    with svc.session() as s, located(name, single=True):
        entry = ledger_entry(s, name, line)
        aid, ref = entry["account"], entry["ref"]
        lock_account(s, aid)
        first = s.scalars(select(m.LedgerEntry).where(m.LedgerEntry.account == aid,
                                                      m.LedgerEntry.ref == ref)).first()
        if first is not None:
            if (first.at, first.amount, first.kind, first.method) != (entry["at"], entry["amount"], entry["kind"],
                                                                      entry["method"]):
                raise _repeated_ref(aid, ref)
            result = LedgerResult(account=aid, at=first.at, amount=first.amount, kind=first.kind,
                                  method=first.method, ref=ref, repeated=True)
        else:
            import_ledger(s, Records(name, [line]), now)
            audit(s, at=now, actor=svc.actor_of(actor), action="ledger", account=aid,
                  reason=f"{entry['kind']} posted", details={"amount": str(entry["amount"]), "kind": entry["kind"],
                                                             "method": entry["method"], "ref": ref})
            result = LedgerResult(account=aid, at=entry["at"], amount=entry["amount"], kind=entry["kind"],
                                  method=entry["method"], ref=ref)
    if apply_now and not result.repeated:
        return LedgerResult(account=result.account, at=result.at, amount=result.amount, kind=result.kind,
                            method=result.method, ref=result.ref, applied=svc.apply_at_once(now=now))
    return result


def can_spend(svc: Arrears, account: str, amount: Decimal | str, now: datetime,
              connection: Connection | None = None) -> SpendVerdict:
    from policy import can_spend as verdict_of

    if connection is None:
        with svc.store.engine.connect() as c:  # a read of one account: two Core statements, no ORM objects
            acc, snap = spend_snapshot(c, account)
    else:
        acc, snap = spend_snapshot(connection, account)
    value = parse_money(amount, "amount", acc.currency)
    if value < 0:
        raise InvalidInput(f"amount must not be negative, got {value}", "amount")
    verdict = verdict_of(snap, svc.resolve(acc), now, value)
    return SpendVerdict(verdict.allowed, verdict.available, verdict.reason)


# --- the admin's overrides ------------------------------------------------------------------------


def add_override(svc: Arrears, account: str, *, kind: str, actor: str | None, reason: str, now: datetime,
                 expires_at: datetime | None = None, amount: Decimal | None = None,
                 at: datetime | None = None) -> OverrideResult:
    """Record an override of ``kind``; a new outstanding-balance date replaces the previous one."""
    from agent.imports import touch

    with svc.session() as s:
        acc = get_account(s, account)
        if kind == "debt_date":
            for o in s.scalars(select(m.Override).where(m.Override.account == acc.id, m.Override.kind == kind,
                                                        m.Override.revoked_at.is_(None))):
                o.revoked_at = now
        o = m.Override(account=acc.id, kind=kind, actor=svc.actor_of(actor), reason=reason, created_at=now,
                       expires_at=expires_at, amount=amount, at=at)
        s.add(o)
        touch(acc, now)
        result = OverrideResult(acc.id, kind, o.actor, reason, expires_at, amount, at)
        json = result.to_json()
        audit(s, at=now, actor=o.actor, action=f"override.{kind}", account=acc.id, reason=reason,
              details={k: json[k] for k in ("expires_at", "amount", "at")})
        return result


def set_debt_date(svc: Arrears, account: str, when: datetime | date | str, *, reason: str, now: datetime,
                  actor: str | None) -> OverrideResult:
    moment = parse_moment(when, svc.policy, "when")
    return add_override(svc, account, kind="debt_date", actor=actor, reason=reason, now=now, at=moment)


def exempt(svc: Arrears, account: str, until: datetime | date | str, *, reason: str, now: datetime,
           actor: str | None) -> OverrideResult:
    end = parse_moment(until, svc.policy, "until")
    if end <= now:
        shown = until if isinstance(until, str) else end.isoformat()
        raise InvalidInput(f"until {shown} is not in the future (now is {now.isoformat()})", "until")
    return add_override(svc, account, kind="exempt", actor=actor, reason=reason, now=now, expires_at=end)


def guarantee(svc: Arrears, account: str, amount: Decimal | str, *, days: int | None, reason: str, now: datetime,
              actor: str | None) -> OverrideResult:
    with svc.session(write=False) as s:
        acc = get_account(s, account)
        value = parse_money(amount, "amount", acc.currency)
        if value <= 0:
            raise InvalidInput(f"amount must be positive, got {value}", "amount")
        limit = svc.resolve(acc).guaranteed_payment
    if value > limit.limit:
        raise Refused(f"amount {value} is over the policy's guaranteed payment limit {limit.limit} for {account}")
    days = days if days is not None else limit.days
    if days <= 0 or days > limit.days:
        raise InvalidInput(f"days must be between 1 and the policy's {limit.days} days for {account}", "days")
    return add_override(svc, account, kind="guarantee", actor=actor, reason=reason, now=now,
                        expires_at=now + timedelta(days=days), amount=value)

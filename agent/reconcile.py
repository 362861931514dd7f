"""Reconcile: compare what the hosts really do with what the store recorded, and repair on request.

Every placement of every account is read with the connectors' ``status`` action, in one fleet call
(the fleet runs one batch per host, hosts in parallel). What the host does for the account is the
result's ``observed``: the service's own connector reads its facts (``observe``, see
:mod:`connectors.observed`); nothing here decodes facts. A placement whose facts do not tell is
reported as an error, not guessed. An account whose work is still in flight is skipped: the
executor is bringing it to its recorded state already. With ``fix``, the jobs that bring each
differing host back to the recorded state are queued through the outbox (a manual transition named
``reconcile-<n>``), in the same transaction as their audit record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.actions import host_job, manual_job
from agent.store import models as m
from agent.store.repo import audit
from connectors.fleet import Fleet, Job
from connectors.observed import Observed

__all__ = ["Difference", "ReconcileReport", "expected_state", "reconcile"]


def expected_state(account_state: str) -> str:
    """What every host should do for an account in ``account_state``."""
    return {"suspended": "suspended", "deleted": "deleted"}.get(account_state, "active")


def _fix_action(expected: str, observed: Observed) -> str | None:
    if expected == "deleted":
        return "delete"  # archive -> verify -> remove, as always; a repeat finds the content gone
    if observed.gone:
        return None  # content is gone: only `arrears restore` can bring it back
    return {"suspended": "suspend", "active": "resume"}[expected]


@dataclass
class Difference:
    account: str
    service: str
    host: str
    recorded: str  # the account's state in the store
    expected: str  # what the host should do
    observed: str  # what the host does, as the service's connector reads its facts
    detail: str  # what the connector saw
    fix: str | None  # the action that repairs it (None: needs an admin)
    facts: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"account": self.account, "service": self.service, "host": self.host, "recorded": self.recorded,
                "expected": self.expected, "observed": self.observed, "detail": self.detail, "fix": self.fix,
                "facts": self.facts}


@dataclass
class ReconcileReport:
    at: datetime
    checked: int = 0
    differences: list[Difference] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # accounts with work in flight: not compared
    errors: list[dict[str, str]] = field(default_factory=list)  # hosts or placements that could not be read
    queued: list[dict[str, str]] = field(default_factory=list)  # --fix: the jobs queued

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "checked": self.checked,
                "differences": [d.as_dict() for d in self.differences], "busy": self.busy, "errors": self.errors,
                "queued": self.queued}


def _busy(session: Session) -> set[str]:
    rows = session.scalars(select(m.Job.account).where(
        m.Job.status.in_(("pending", "claimed", "waiting")), m.Job.kind.in_(("host", "manual"))).distinct())
    return set(rows)


def _flat(state: Mapping[str, Any]) -> dict[str, str]:
    flat: dict[str, str] = {}
    for part in ("suspend", "delete"):
        for k, v in (state.get(part) or {}).items():
            flat[str(k)] = str(v)
    return flat


def reconcile(session: Session, fleet: Fleet, now: datetime, *, fix: bool = False,
              actor: str = "agent") -> ReconcileReport:
    """Read every host's facts and compare; with ``fix`` queue the repairs (the caller commits)."""
    report = ReconcileReport(at=now)
    accounts = {a.id: a for a in session.scalars(select(m.Account))}
    busy = _busy(session)
    report.busy = sorted(a for a in busy if a in accounts)
    placements: dict[str, m.Placement] = {}
    jobs: list[Job] = []
    for p in session.scalars(select(m.Placement).order_by(m.Placement.account, m.Placement.service,
                                                          m.Placement.host)):
        acc = accounts.get(p.account)
        if acc is None or acc.id in busy:
            continue
        key = f"reconcile:{p.account}:{p.service}:{p.host}"
        placements[key] = p
        jobs.append(Job(key=key, account=p.account, action="status", service=p.service, host=p.host,
                        resource={**p.resource, "host": p.host}, state=_flat(p.state or {})))
    results = fleet.apply(jobs) if jobs else {}
    fixes: dict[str, list[tuple[m.Placement, str]]] = {}
    for key, p in placements.items():
        r = results.get(key)
        if r is None or not r.ok:
            report.errors.append({"account": p.account, "service": p.service, "host": p.host,
                                  "error": (r.error if r is not None else None) or "no result from the fleet"})
            continue
        observed = r.observed
        if observed is None or observed.state == "unknown":
            report.errors.append({"account": p.account, "service": p.service, "host": p.host,
                                  "error": "the status facts do not tell the state"
                                  + (f": {observed.detail}" if observed is not None and observed.detail else "")})
            continue
        report.checked += 1
        acc = accounts[p.account]
        expected = expected_state(acc.state)
        if observed.agrees(expected):
            continue
        action = _fix_action(expected, observed)
        report.differences.append(Difference(p.account, p.service, p.host, acc.state, expected, observed.state,
                                             observed.detail, action, dict(r.facts)))
        if action is not None:
            fixes.setdefault(p.account, []).append((p, action))
    if fix:
        for account, items in fixes.items():
            acc = accounts[account]
            entry = audit(session, at=now, actor=actor, action="manual.reconcile", account=account,
                          reason="the hosts differ from the recorded state",
                          details={"fixes": [{"service": p.service, "host": p.host, "action": a} for p, a in items]})
            parent = manual_job(session, acc, entry, "reconcile", now, stage=None)
            for p, action in items:
                job = host_job(session, acc, parent.stage, action, p, now)
                report.queued.append({"key": job.key, "account": account, "service": p.service, "host": p.host,
                                      "action": action})
    return report

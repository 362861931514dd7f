"""The admin's manual actions (suspend, resume, delete, restore), mass mail, reconcile and moving a
resource between accounts. Each runs in one transaction (rolled back for a dry run or a refusal) through
:mod:`agent.actions`; what this module adds is what an action needs around it: the notice it sends once it
took effect, applying it at once, the account's state after it, and idempotency keys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.service.errors import InvalidInput, Refused
from agent.service.results import (
    ActionOutcome,
    Difference,
    MailOutcome,
    MoveResult,
    QueuedMail,
    ReconcileOutcome,
)
from agent.store import models as m
from agent.store.repo import audit, get_account, load_snapshots, lock_account

if TYPE_CHECKING:
    from agent.service.arrears import Arrears

__all__ = ["ADMIN_TEMPLATES", "IDEMPOTENCY", "manual_action", "mass_mail", "move_resource", "reconcile",
           "stage_template"]

T = TypeVar("T")

ADMIN_TEMPLATES = {"suspend": "admin_suspended", "delete": "admin_deleted"}
IDEMPOTENCY = "idempotency"  # the audit action that records an idempotency key and the answer it gave


def in_transaction(svc: Arrears, dry_run: bool, action: Callable[[Session], T], *, hosts: bool = True) -> T:
    """Run ``action`` in one transaction: committed, or rolled back for a dry run or a refusal. ``hosts``:
    the action works on hosts, so inventory.yaml is checked first (an invalid one refuses it)."""
    from agent.actions import ActionRefused

    if hosts:
        _ = svc.inventory
    s = svc.store.sessions()
    try:
        s.begin()
        try:
            result = action(s)
        except ActionRefused as exc:
            raise Refused(str(exc)) from None
        if dry_run:
            s.rollback()
        else:
            s.commit()
        return result
    finally:
        s.rollback()
        s.close()


def stage_template(svc: Arrears, s: Session, acc: m.Account, action: str, now: datetime) -> str | None:
    """The notice sent when a manual ``action`` (suspend, delete) takes effect: while the account is in
    debt, the policy's own notice for that measure (its text speaks of the debt); otherwise
    ``admin_suspended`` / ``admin_deleted``, which say nothing of money. None without notices."""
    from policy import evaluate

    if svc.notice_settings is None:
        return None
    resolved = svc.resolve(acc)
    if not evaluate(load_snapshots(s, [acc])[acc.id], resolved, now).in_debt:
        return ADMIN_TEMPLATES[action]
    stage = next((st for st in resolved.stages if st.enabled and st.action == action and st.template), None)
    return stage.template if stage is not None else {"suspend": "suspended", "delete": "deleted"}[action]


def _applied(svc: Arrears, now: datetime) -> dict[str, Any]:
    """Apply at once: ``applied`` (the message) and, when it ran here, ``run`` and ``errors``."""
    got = svc.apply_at_once(now=now)
    out: dict[str, Any] = {"applied": got.message}
    if got.run is not None:
        run = got.run.to_json()
        out["run"] = run["executor"]
        out["errors"] = [*run["errors"], *run["executor"]["errors"]]
    return out


# --- idempotency keys -----------------------------------------------------------------------------


def _remembered(s: Session, account: str, key: str) -> m.AuditEntry | None:
    return s.scalars(select(m.AuditEntry).where(m.AuditEntry.account == account, m.AuditEntry.action == IDEMPOTENCY,
                                                m.AuditEntry.reason == key).order_by(m.AuditEntry.id)).first()


def _outcome(data: dict[str, Any]) -> ActionOutcome:
    from agent.instants import parse_instant

    return ActionOutcome(**{**data, "at": parse_instant(data["at"])})


class _Answered(Exception):
    """The key was used before: its first answer, given instead of doing the action again."""

    def __init__(self, outcome: ActionOutcome) -> None:
        super().__init__(outcome.account)
        self.outcome = outcome


def _first_answer(s: Session, operation: str, account: str, key: str) -> ActionOutcome | None:
    entry = _remembered(s, account, key)
    if entry is None:
        return None
    details = entry.details or {}
    if details.get("operation") != operation:
        raise Refused(f"idempotency key {key!r} was used for {details.get('operation')} of {account}; "
                      "give a new key for another action")
    return _outcome(details["result"])


def _remember(svc: Arrears, account: str, key: str, outcome: ActionOutcome) -> None:
    """The whole answer, once applying it at once added to it (the rest was recorded with the action)."""
    with svc.session() as s:
        entry = _remembered(s, account, key)
        if entry is not None:
            entry.details = {**(entry.details or {}), "result": outcome.to_json()}


def _after(s: Session, account: str) -> dict[str, Any]:
    """The account's state after the action and the jobs still waiting for it."""
    acc = get_account(s, account)
    return {"state_after": acc.state, "waiting": len(list(s.scalars(select(m.Job.id).where(
        m.Job.account == acc.id, m.Job.status.in_(("pending", "claimed", "waiting"))))))}


# --- the actions ----------------------------------------------------------------------------------


def manual_action(svc: Arrears, action: str, account: str, *, now: datetime, actor: str | None, dry_run: bool,
                  apply_now: bool, idempotency_key: str | None, **options: Any) -> ActionOutcome:
    """``suspend``, ``resume`` (``reason``, ``grace_days``), ``delete`` or ``restore`` of ``account``.

    Actions on one account are serialised: each takes the account's row lock first
    (:func:`agent.store.repo.lock_account`), so a second one, or the same key sent twice at once, reads
    what the first one did: its idempotency key and answer, its holds."""
    from agent import actions

    if idempotency_key is not None and (not idempotency_key.strip() or len(idempotency_key) > 200):
        raise InvalidInput("idempotency key must be 1 to 200 characters", "idempotency_key")
    who = svc.actor_of(actor)

    def act(s: Session) -> dict[str, Any]:
        lock_account(s, account)
        if idempotency_key is not None:
            first = _first_answer(s, action, account, idempotency_key)
            if first is not None:
                raise _Answered(first)
        if action == "suspend":
            template = stage_template(svc, s, get_account(s, account), "suspend", now)
            result = actions.suspend(s, account, actor=who, reason=options["reason"], now=now,
                                     notice_template=template)
        elif action == "resume":
            result = actions.resume(s, account, svc.policy, actor=who, reason=options.get("reason"), now=now,
                                    grace_days=options.get("grace_days"))
        elif action == "delete":
            template = stage_template(svc, s, get_account(s, account), "delete", now)
            result = actions.delete(s, account, actor=who, reason=options.get("reason"), now=now,
                                    notice_template=template)
        elif action == "restore":
            result = actions.restore(s, account, actor=who, reason=options.get("reason"), now=now)
        else:
            raise InvalidInput(f"action {action!r} is not one of suspend, resume, delete, restore", "action")
        info = {**result.as_dict(), "dry_run": dry_run}
        if not dry_run:
            s.flush()
            info.update(_after(s, result.account))
            if idempotency_key is not None:
                audit(s, at=now, actor=who, action=IDEMPOTENCY, account=result.account, reason=idempotency_key,
                      details={"operation": action, "result": info})
        return info

    try:
        info = in_transaction(svc, dry_run, act)
    except _Answered as answered:
        return answered.outcome
    if apply_now and not dry_run:
        info.update(_applied(svc, now))
        with svc.session(write=False) as s:
            info.update(_after(s, info["account"]))
        if idempotency_key is not None:
            _remember(svc, info["account"], idempotency_key, _outcome(info))
    return _outcome(info)


def mass_mail(svc: Arrears, *, template: str, stage: str | None, now: datetime, actor: str | None, dry_run: bool,
              apply_now: bool) -> MailOutcome:
    from agent import actions
    from agent.notices import Templates

    who = svc.actor_of(actor)
    if svc.notice_settings is None:
        raise Refused(f"{svc.config.policy_path}: notices are not configured (notices: section)")
    if stage is not None:
        names = {st.name for layer in svc.all_resolved() for st in layer.stages}
        if stage not in names:
            raise InvalidInput(f"stage {stage!r} is not a stage of the policy ({', '.join(sorted(names))})", "stage")
    tdir = svc.config.templates_dir
    Templates.load(tdir if tdir.is_dir() else None).require([template])
    result = in_transaction(svc, dry_run, lambda s: actions.mass_mail(s, svc.policy, template=template, now=now,
                                                                      actor=who, stage=stage), hosts=apply_now)
    extra = _applied(svc, now) if apply_now and not dry_run else {}
    return MailOutcome(template=result.template, date=result.date, stage=result.stage,
                       queued=[QueuedMail(q["account"], q["to"]) for q in result.queued], already=result.already,
                       no_address=result.no_address, dry_run=dry_run, **extra)


def reconcile(svc: Arrears, *, fix: bool, now: datetime, actor: str | None, dry_run: bool,
              apply_now: bool) -> ReconcileOutcome:
    from agent.reconcile import reconcile as compare
    from agent.service.running import LazyFleet

    who = svc.actor_of(actor)
    own = svc.fleet is None
    fleet: Any = svc.fleet if svc.fleet is not None else LazyFleet(svc)
    try:
        report = in_transaction(svc, dry_run, lambda s: compare(s, fleet, now, fix=fix, actor=who))
    finally:
        if own:
            fleet.close()
    extra = _applied(svc, now) if apply_now and fix and not dry_run and report.queued else {}
    return ReconcileOutcome(
        at=report.at, checked=report.checked,
        differences=[Difference(d.account, d.service, d.host, d.recorded, d.expected, d.observed, d.detail, d.fix,
                                dict(d.facts)) for d in report.differences],
        busy=report.busy, errors=report.errors, queued=report.queued, dry_run=dry_run, fix=fix,
        applied=extra.get("applied"), run=extra.get("run"), run_errors=extra.get("errors"))


def move_resource(svc: Arrears, source: str, target: str, *, service: str, host: str, reason: str, now: datetime,
                  actor: str | None, dry_run: bool) -> MoveResult:
    from agent.store.placements import MoveRefused, move_placement

    who = svc.actor_of(actor)

    def act(s: Session) -> dict[str, Any]:
        try:
            moved = move_placement(s, source, target, service, host)
        except MoveRefused as exc:
            raise Refused(str(exc)) from None
        details = {**moved, "dry_run": dry_run}
        for aid in (source, target):
            audit(s, at=now, actor=who, action="accounts.move-resource", account=aid, reason=reason,
                  details=details)
        return details

    d = in_transaction(svc, dry_run, act, hosts=False)
    return MoveResult(d["from"], d["to"], d["service"], d["host"], d["keys"], d["resource"], dry_run)

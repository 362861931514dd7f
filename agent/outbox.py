"""The outbox's rows: one job per unit of work, named by a key that makes it happen once.

Keys: a notice ``{account}:{episode}:{stage}``, a host job ``{account}:{episode}:{stage}:{service}:{host}``,
a hook ``{account}:{episode}:{stage}:event``, an event for billing ``{account}:{episode}:{stage}:event:{type}``
and the message telling staff about a failed notice ``{notice key}:staff`` (episode ``0`` when there is
none). The ``*_row`` functions build the rows; :func:`insert_jobs` writes any number of them with one
statement, skipping the keys that exist already, so queueing the same work twice queues it once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from agent.store import models as m
from agent.store.bulk import insert_ignore

if TYPE_CHECKING:
    from agent.claims import Claimed

__all__ = [
    "STAFF_TEMPLATE",
    "event_job",
    "event_row",
    "hook_row",
    "host_rows",
    "insert_jobs",
    "job_row",
    "notice_job",
    "notice_row",
    "placements_of",
    "staff_notice_job",
]

STAFF_TEMPLATE = "notice_failed"
JOBS: Table = m.Job.__table__  # type: ignore[assignment]


def _ep(episode: int | None) -> int:
    return episode if episode is not None else 0


def job_row(*, key: str, account: str, episode: int | None, stage: str, kind: str, action: str, now: datetime,
            service: str | None = None, host: str | None = None,
            payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """A new pending job, due at ``now``."""
    return {"key": key, "account": account, "episode": episode, "stage": stage, "kind": kind, "action": action,
            "service": service, "host": host, "payload": payload or {}, "status": "pending", "attempts": 0,
            "next_attempt_at": now, "created_at": now}


def insert_jobs(session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    """Queue ``rows`` (from the ``*_row`` functions); a key queued before is left as it is. Returns how
    many were new."""
    return len(insert_ignore(session, JOBS, rows, key=("key",)))


def notice_row(account: str, episode: int | None, stage: str, template: str | None, now: datetime) -> dict[str, Any]:
    return job_row(key=f"{account}:{_ep(episode)}:{stage}", account=account, episode=episode, stage=stage,
                   kind="notice", action="notice", now=now, payload={"template": template or stage})


def host_rows(account: str, episode: int | None, stage: str, action: str, placements: Iterable[tuple[str, str]],
              now: datetime) -> list[dict[str, Any]]:
    """One job per placement ``(service, host)`` of the account."""
    return [job_row(key=f"{account}:{_ep(episode)}:{stage}:{service}:{host}", account=account, episode=episode,
                    stage=stage, kind="host", action=action, service=service, host=host, now=now)
            for service, host in placements]


def hook_row(account: str, episode: int | None, stage: str, hook: str | None, now: datetime) -> dict[str, Any]:
    return job_row(key=f"{account}:{_ep(episode)}:{stage}:event", account=account, episode=episode, stage=stage,
                   kind="event", action="hook", now=now, payload={"hook": hook, "stage": stage})


def event_row(account: str, episode: int | None, stage: str, type_: str, now: datetime, *,
              reason: str | None = None, suspended_from: datetime | None = None) -> dict[str, Any]:
    """An event for billing (``debt_started``, ``notice_sent``, ``suspended``, ``resumed``, ``deleted``)."""
    from agent.events import build_event

    event = build_event(type_, account=account, at=now, episode=episode, stage=stage, reason=reason,  # type: ignore[arg-type]
                        suspended_from=suspended_from)
    return job_row(key=f"{account}:{_ep(episode)}:{stage}:event:{type_}", account=account, episode=episode,
                   stage=stage, kind="event", action=type_, now=now, payload={"event": event})


def placements_of(session: Session, accounts: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """The ``(service, host)`` placements of each of ``accounts``, in key order, with one query."""
    ids = sorted(set(accounts))
    out: dict[str, list[tuple[str, str]]] = {a: [] for a in ids}
    for i in range(0, len(ids), 500):
        for account, service, host in session.execute(
                select(m.Placement.account, m.Placement.service, m.Placement.host)
                .where(m.Placement.account.in_(ids[i:i + 500]))
                .order_by(m.Placement.account, m.Placement.service, m.Placement.host)):
            out[account].append((service, host))
    return out


def notice_job(session: Session, acc: m.Account, episode: int | None, stage: str, template: str | None,
               now: datetime) -> int:
    return insert_jobs(session, [notice_row(acc.id, episode, stage, template, now)])


def event_job(session: Session, account: str, episode: int | None, stage: str, type_: str, now: datetime, *,
              reason: str | None = None, suspended_from: datetime | None = None) -> int:
    return insert_jobs(session, [event_row(account, episode, stage, type_, now, reason=reason,
                                           suspended_from=suspended_from)])


def staff_notice_job(session: Session, notice: m.Job | Claimed, now: datetime) -> int:
    """The message that tells staff (``notices.staff_email``) that ``notice`` failed for good: one per
    failed notice."""
    return insert_jobs(session, [job_row(key=f"{notice.key}:staff", account=notice.account, episode=notice.episode,
                                         stage=notice.stage, kind="notice", action="notice", now=now,
                                         payload={"template": STAFF_TEMPLATE, "staff": True, "notice": notice.key})])

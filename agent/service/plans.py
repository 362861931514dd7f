"""The plan (``arrears plan``, ``GET /plan``): what a run at a moment would do, changing nothing, paged, and
its answers (:class:`PlanPage` of :class:`PlannedMeasure`; :mod:`agent.service.results` lists them with the
others). It reads on one Core connection (:mod:`agent.planning`): the ORM is not loaded for it, nor the
other answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from agent.service.paging import after, limited, page
from agent.service.records import Page, Record

if TYPE_CHECKING:
    from agent.service.arrears import Arrears

__all__ = ["PlanPage", "PlannedMeasure", "plan"]


@dataclass(frozen=True)
class PlannedMeasure(Record):
    """One measure (or resume) a run would take now (``arrears plan --json`` prints a list of these)."""

    account: str
    stage: str
    action: str
    due_at: datetime
    reason: str


@dataclass(frozen=True)
class PlanPage(Page[PlannedMeasure]):
    """A page of ``plan``; ``errors``: the accounts that could not be evaluated (the CLI warns of them)."""

    errors: list[str] = field(default_factory=list)


def plan(svc: Arrears, now: datetime, cursor: str | None, limit: int | None) -> PlanPage:
    from agent.planning import plan as plan_run

    key = after(cursor, 1)
    limit = limited(limit)
    start = int(key[0]) if key is not None else 0
    with svc.store.reading() as conn:
        found, errors = plan_run(conn, svc.policy, now)
    items, next_cursor = page((((n + 1,), PlannedMeasure(i.account, i.stage, i.action, i.due_at, i.reason))
                               for n, i in enumerate(found) if n >= start), limit)
    return PlanPage(items, next_cursor, errors=errors)

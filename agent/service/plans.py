"""The plan (``arrears plan``, ``GET /plan``): what a run at a moment would do, changing nothing, paged. It
reads on one Core connection (:mod:`agent.planning`): the ORM is not loaded for it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from agent.service.paging import after, limited, page
from agent.service.results import PlannedMeasure, PlanPage

if TYPE_CHECKING:
    from agent.service.arrears import Arrears

__all__ = ["plan"]


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

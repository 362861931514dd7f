"""Writing placements: the one place where an account is given (or loses) a resource on a host.

Every writer (the importer, ``accounts move-resource``, a script using the Python API) goes through
:func:`put_placement`, which stores the placement together with its :class:`~agent.store.models.ResourceClaim`
rows. The claims' unique key (host, service, key) refuses a resource that another account holds, whoever
writes; a home path that lies inside another account's home on the same host, or contains one, cannot be
a unique key and is refused here.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from agent.store import models as m

__all__ = ["MoveRefused", "OwnershipError", "claims_of", "move_placement", "owner_of", "put_placement",
           "remove_placement"]

NESTED_SERVICES = ("home",)  # services whose keys are paths: one may not lie inside another's


@dataclass
class OwnershipError(ValueError):
    """``key`` (a resource field's normalised value) on ``host`` is held by account ``owner``."""

    service: str
    host: str
    key: str
    owner: str
    field: str = ""
    other: str | None = None  # for nesting: the other account's path
    inside: bool = False  # for nesting: ``key`` lies inside ``other`` (else it contains it)

    def __str__(self) -> str:
        if self.other is None:
            return f"{self.key} on {self.host} belongs to account {self.owner}"
        if self.inside:
            return f"{self.key} on {self.host} lies inside {self.other}, the {self.service} of account {self.owner}"
        return f"{self.key} on {self.host} contains {self.other}, the {self.service} of account {self.owner}"


def _ancestors(p: str) -> list[str]:
    out = []
    while p not in ("/", ""):
        p = posixpath.dirname(p)
        out.append(p)
    return out


def _like_prefix(p: str) -> str:
    escaped = p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.rstrip("/") + "/%"


def owner_of(session: Session, service: str, host: str, key: str, *, account: str,
             placement: int | None = None) -> OwnershipError | None:
    """Why ``account`` may not claim ``key`` of ``service`` on ``host`` (another account holds it, or, for
    paths, a path inside or around it), or None; the claims of ``placement`` itself do not count."""
    stmt = select(m.ResourceClaim).where(m.ResourceClaim.host == host, m.ResourceClaim.service == service,
                                         m.ResourceClaim.account != account)
    if placement is not None:
        stmt = stmt.where(m.ResourceClaim.placement != placement)
    same = session.scalars(stmt.where(m.ResourceClaim.key == key).limit(1)).first()
    if same is not None:
        return OwnershipError(service, host, key, same.account)
    if service not in NESTED_SERVICES:
        return None
    around = session.scalars(stmt.where(m.ResourceClaim.key.in_(_ancestors(key))).order_by(m.ResourceClaim.key)
                             .limit(1)).first()
    if around is not None:
        return OwnershipError(service, host, key, around.account, other=around.key, inside=True)
    within = session.scalars(stmt.where(m.ResourceClaim.key.like(_like_prefix(key), escape="\\"))
                             .order_by(m.ResourceClaim.key).limit(1)).first()
    if within is not None:
        return OwnershipError(service, host, key, within.account, other=within.key)
    return None


def claims_of(session: Session, placement: m.Placement) -> list[str]:
    return list(session.scalars(select(m.ResourceClaim.key).where(m.ResourceClaim.placement == placement.id)
                                .order_by(m.ResourceClaim.id)))


def put_placement(session: Session, account: str, service: str, host: str, resource: dict[str, Any],
                  keys: Sequence[tuple[str, str]], *, placement: m.Placement | None = None) -> m.Placement:
    """Store ``account``'s placement of ``service`` on ``host`` (a new one, or ``placement`` updated) with
    the claims ``keys`` (``(field, key)`` pairs from :func:`connectors.resources.resource_keys`).
    Raises :class:`OwnershipError` (with the field) when another account holds one of them; nothing of
    this placement is written then."""
    for field, key in keys:
        problem = owner_of(session, service, host, key, account=account,
                           placement=placement.id if placement is not None else None)
        if problem is not None:
            problem.field = field
            raise problem
    if placement is None:
        placement = m.Placement(account=account, service=service, host=host, resource=resource, state={})
        session.add(placement)
        session.flush()
    else:
        placement.account, placement.resource = account, resource
    wanted = list(dict.fromkeys(key for _field, key in keys))
    existing = {c.key: c for c in session.scalars(select(m.ResourceClaim)
                                                  .where(m.ResourceClaim.placement == placement.id))}
    for key, claim in existing.items():
        if key not in wanted:
            session.delete(claim)
        else:
            claim.account = account
    session.flush()
    for key in wanted:
        if key not in existing:
            session.add(m.ResourceClaim(placement=placement.id, account=account, host=host, service=service, key=key))
    session.flush()
    return placement


def remove_placement(session: Session, placement: m.Placement) -> None:
    """Remove a placement and its claims (the resource is free for another account afterwards)."""
    session.execute(delete(m.ResourceClaim).where(m.ResourceClaim.placement == placement.id))
    session.delete(placement)
    session.flush()


class MoveRefused(ValueError):
    """The resource cannot be moved now; nothing was written."""


def _work_in_progress(session: Session, account: str) -> str | None:
    job = session.scalars(select(m.Job).where(m.Job.account == account,
                                              m.Job.status.in_(("pending", "claimed", "waiting")))
                          .order_by(m.Job.id).limit(1)).first()
    if job is not None:
        where = f" on {job.host}" if job.host else ""
        return f"its {job.action} ({job.kind}{where}) is {job.status}"
    stage = session.scalars(select(m.StageTaken).where(m.StageTaken.account == account,
                                                       m.StageTaken.status == "in_flight").limit(1)).first()
    if stage is not None:
        return f"its {stage.stage} ({stage.action}) is in flight"
    return None


def _entries(resources: dict[str, Any], service: str) -> list[dict[str, Any]]:
    value = resources.get(service)
    items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    return [e for e in items if isinstance(e, dict)]


def move_placement(session: Session, source: str, target: str, service: str, host: str) -> dict[str, Any]:
    """Give ``source``'s placement of ``service`` on ``host`` (its resource, its claims and the facts its
    connector saved) to ``target``, and move the entry in both accounts' ``resources``. Refused with
    :class:`MoveRefused` while either account has work in progress, when ``target`` already has that
    service on that host, or when a claim would clash. Returns what moved."""
    if source == target:
        raise MoveRefused(f"{source} and {target} are the same account")
    for aid in (source, target):
        if session.get(m.Account, aid) is None:
            raise MoveRefused(f"unknown account {aid!r}")
    placement = session.scalars(select(m.Placement).where(m.Placement.account == source, m.Placement.service == service,
                                                          m.Placement.host == host)).first()
    if placement is None:
        raise MoveRefused(f"account {source} has no {service} on {host}; `arrears show {source}` lists its placements")
    if session.scalars(select(m.Placement).where(m.Placement.account == target, m.Placement.service == service,
                                                 m.Placement.host == host)).first() is not None:
        raise MoveRefused(f"account {target} already has {service} on {host}; move or remove that one first")
    for aid in (source, target):
        busy = _work_in_progress(session, aid)
        if busy is not None:
            raise MoveRefused(f"account {aid} has an action in progress ({busy}); run `arrears run` until it is "
                              "done, then move the resource")
    keys = claims_of(session, placement)
    put_placement(session, target, service, host, placement.resource,
                  [("", k) for k in keys], placement=placement)
    src, dst = session.get(m.Account, source), session.get(m.Account, target)
    assert src is not None and dst is not None
    moved = [e for e in _entries(src.resources or {}, service) if e.get("host") == host]
    kept = [e for e in _entries(src.resources or {}, service) if e.get("host") != host]
    src_res = {k: v for k, v in (src.resources or {}).items() if k != service}
    if kept:
        src_res[service] = kept if len(kept) > 1 else kept[0]
    dst_res = dict(dst.resources or {})
    gained = _entries(dst_res, service) + (moved or [{"host": host, **placement.resource}])
    dst_res[service] = gained if len(gained) > 1 else gained[0]
    src.resources, dst.resources = src_res, dst_res
    session.flush()
    return {"from": source, "to": target, "service": service, "host": host, "keys": keys,
            "resource": placement.resource}

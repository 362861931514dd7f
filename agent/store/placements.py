"""Writing placements: the one place where an account is given (or loses) a resource on a host.

Every writer goes through this module: the importer through :func:`sync_placements` (a chunk of
accounts at a time), ``accounts move-resource`` and a script using the Python API through
:func:`put_placement`; both store a placement together with its :class:`~agent.store.models.ResourceClaim`
rows and ask the same :class:`ClaimIndex` whether the claims are free. The claims' unique key
(host, service, key) refuses a resource that another account holds, whoever writes; a home path that
lies inside another account's home on the same host, or contains one, cannot be a unique key and is
refused here.
"""

from __future__ import annotations

import posixpath
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, delete, or_, select, update
from sqlalchemy.orm import Session

from agent.store import models as m
from agent.store.bulk import table_of, write_rows

__all__ = ["ClaimIndex", "MoveRefused", "OwnershipError", "PlacementsRefused", "Wanted", "claims_of", "load_claims",
           "move_placement", "owner_of", "put_placement", "remove_placement", "sync_placements"]

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


def _below(p: str) -> tuple[str, str]:
    """The keys that lie below path ``p`` are those from the first bound (inclusive) to the second: ``p/``
    up to ``p0`` ('0' follows '/'), in the byte order of the keys."""
    stem = p.rstrip("/")
    return stem + "/", stem + "0"


Claim = tuple[str, str, str]  # (host, service, key)


class ClaimIndex:
    """Who holds which claims, in memory: the stored claims a batch of placements could clash with (see
    :func:`load_claims`) plus what the batch itself claims and gives up as it goes. :meth:`problem` is the
    one-owner rule, nesting of paths included; every placement write asks it."""

    def __init__(self) -> None:
        self.owners: dict[Claim, str] = {}
        self._paths: dict[tuple[str, str], list[str]] = {}  # sorted keys of nested services per (host, service)

    def add(self, host: str, service: str, key: str, account: str) -> None:
        if (host, service, key) not in self.owners and service in NESTED_SERVICES:
            insort(self._paths.setdefault((host, service), []), key)
        self.owners[(host, service, key)] = account

    def discard(self, host: str, service: str, key: str) -> None:
        if self.owners.pop((host, service, key), None) is not None and service in NESTED_SERVICES:
            keys = self._paths[(host, service)]
            del keys[bisect_left(keys, key)]

    def problem(self, service: str, host: str, key: str, account: str) -> OwnershipError | None:
        """Why ``account`` may not claim ``key`` of ``service`` on ``host``: another account holds it, or
        (for paths) a path around it or inside it; None when it may."""
        owner = self.owners.get((host, service, key))
        if owner is not None and owner != account:
            return OwnershipError(service, host, key, owner)
        if service not in NESTED_SERVICES:
            return None
        for other in sorted(_ancestors(key)):
            owner = self.owners.get((host, service, other))
            if owner is not None and owner != account:
                return OwnershipError(service, host, key, owner, other=other, inside=True)
        keys = self._paths.get((host, service), [])
        low, high = _below(key)
        for i in range(bisect_left(keys, low), len(keys)):
            other = keys[i]
            if other >= high:
                break
            owner = self.owners[(host, service, other)]
            if owner != account:
                return OwnershipError(service, host, key, owner, other=other)
        return None


_TERMS_PER_QUERY = 200  # OR-ed conditions in one statement (SQLite parses an expression at most 1000 deep)
_KEYS_PER_TERM = 2000


def load_claims(session: Session, index: ClaimIndex, wanted: Iterable[Claim], *, accounts: Sequence[str] = (),
                skip_placement: int | None = None) -> dict[int, list[str]]:
    """Add to ``index`` every stored claim that one of ``wanted`` could clash with (the same key; for paths
    a path around or inside it) and every claim of ``accounts``; those of ``skip_placement`` are left out.
    Returns the keys of the loaded claims by placement. One query per 200 conditions."""
    groups: dict[tuple[str, str], set[str]] = {}
    ranges: list[Any] = []
    column = m.ResourceClaim.key
    if session.get_bind().dialect.name == "postgresql":
        column = column.collate("C")  # type: ignore[assignment]  # byte order, as the bounds assume
    for host, service, key in wanted:
        keys = groups.setdefault((host, service), set())
        keys.add(key)
        if service in NESTED_SERVICES:
            keys.update(_ancestors(key))
            low, high = _below(key)
            ranges.append(and_(m.ResourceClaim.host == host, m.ResourceClaim.service == service,
                               column >= low, column < high))
    terms: list[Any] = []
    for (host, service), keys in groups.items():
        ordered = sorted(keys)
        for i in range(0, len(ordered), _KEYS_PER_TERM):
            terms.append(and_(m.ResourceClaim.host == host, m.ResourceClaim.service == service,
                              m.ResourceClaim.key.in_(ordered[i:i + _KEYS_PER_TERM])))
    accounts = list(accounts)
    for i in range(0, len(accounts), _KEYS_PER_TERM):
        terms.append(m.ResourceClaim.account.in_(accounts[i:i + _KEYS_PER_TERM]))
    terms += ranges
    by_placement: dict[int, list[str]] = {}
    seen: set[int] = set()
    t = m.ResourceClaim
    for i in range(0, len(terms), _TERMS_PER_QUERY):
        stmt = select(t.id, t.placement, t.account, t.host, t.service, t.key).where(
            or_(*terms[i:i + _TERMS_PER_QUERY])).order_by(t.id)
        for cid, placement, account, host, service, key in session.execute(stmt):
            if placement == skip_placement or cid in seen:
                continue
            seen.add(cid)
            index.add(host, service, key, account)
            by_placement.setdefault(placement, []).append(key)
    return by_placement


def owner_of(session: Session, service: str, host: str, key: str, *, account: str,
             placement: int | None = None) -> OwnershipError | None:
    """Why ``account`` may not claim ``key`` of ``service`` on ``host`` (another account holds it, or, for
    paths, a path inside or around it), or None; the claims of ``placement`` itself do not count."""
    index = ClaimIndex()
    load_claims(session, index, [(host, service, key)], skip_placement=placement)
    return index.problem(service, host, key, account)


def claims_of(session: Session, placement: m.Placement) -> list[str]:
    return list(session.scalars(select(m.ResourceClaim.key).where(m.ResourceClaim.placement == placement.id)
                                .order_by(m.ResourceClaim.id)))


def put_placement(session: Session, account: str, service: str, host: str, resource: dict[str, Any],
                  keys: Sequence[tuple[str, str]], *, placement: m.Placement | None = None) -> m.Placement:
    """Store ``account``'s placement of ``service`` on ``host`` (a new one, or ``placement`` updated) with
    the claims ``keys`` (``(field, key)`` pairs from :func:`connectors.resources.resource_keys`).
    Raises :class:`OwnershipError` (with the field) when another account holds one of them; nothing of
    this placement is written then."""
    index = ClaimIndex()
    load_claims(session, index, [(host, service, key) for _field, key in keys],
                skip_placement=placement.id if placement is not None else None)
    for field, key in keys:
        problem = index.problem(service, host, key, account)
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


@dataclass
class Wanted:
    """A placement an account should have: ``keys`` are its claims as ``(field, key)`` pairs."""

    service: str
    host: str
    resource: dict[str, Any]
    keys: list[tuple[str, str]]


class PlacementsRefused(ValueError):
    """A wanted placement clashes with another account's claim; nothing of the batch was written."""

    def __init__(self, position: int, wanted: int, problem: OwnershipError) -> None:
        super().__init__(str(problem))
        self.position, self.wanted, self.problem = position, wanted, problem


def sync_placements(session: Session, batch: Sequence[tuple[str, Sequence[Wanted]]]) -> None:
    """Give each account of ``batch`` (in order, each once) exactly its wanted placements: a placement it no
    longer wants is removed (unless its connector saved state there), a wanted one is added or updated,
    with its claims. The accounts are taken in order, as if one after the other: what an earlier one gives
    up is free for a later one. The one-owner rule is checked for the whole batch first (one query per
    200 conditions, see :func:`load_claims`), then it is written with a few statements; on a clash
    :class:`PlacementsRefused` says which account (its position in ``batch``) and which wanted placement,
    and nothing is written."""
    accounts = [aid for aid, _ in batch]
    if not accounts:
        return
    p = table_of(m.Placement)
    existing: dict[str, dict[tuple[str, str], Any]] = {}
    for i in range(0, len(accounts), _KEYS_PER_TERM):
        for r in session.execute(select(p.c.id, p.c.account, p.c.service, p.c.host, p.c.resource, p.c.state)
                                 .where(p.c.account.in_(accounts[i:i + _KEYS_PER_TERM]))):
            existing.setdefault(r.account, {})[(r.service, r.host)] = r
    index = ClaimIndex()
    wanted_claims = [(w.host, w.service, key) for _, ws in batch for w in ws for _f, key in w.keys]
    claims = load_claims(session, index, wanted_claims, accounts=accounts)
    gone: list[int] = []
    lost_claims: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    added_claims: list[dict[str, Any]] = []
    new: list[tuple[dict[str, Any], list[str]]] = []
    for position, (aid, wanted) in enumerate(batch):
        have = existing.get(aid, {})
        keep = {(w.service, w.host) for w in wanted}
        for where, r in have.items():
            if where not in keep and not r.state:  # first: what this account gives up is free for the rest
                gone.append(r.id)
                for key in claims.get(r.id, []):
                    index.discard(r.host, r.service, key)
        for n, w in enumerate(wanted):
            for field, key in w.keys:
                problem = index.problem(w.service, w.host, key, aid)
                if problem is not None:
                    problem.field = field
                    raise PlacementsRefused(position, n, problem)
            keys = list(dict.fromkeys(key for _field, key in w.keys))
            current = have.get((w.service, w.host))
            if current is None:
                new.append(({"account": aid, "service": w.service, "host": w.host, "resource": w.resource,
                             "state": {}}, keys))
            else:
                if current.resource != w.resource:
                    changed.append({"pid": current.id, "resource": w.resource})
                held = claims.get(current.id, [])
                for key in held:
                    if key not in keys:
                        lost_claims.append({"pid": current.id, "k": key})
                        index.discard(w.host, w.service, key)
                added_claims += [{"placement": current.id, "account": aid, "host": w.host, "service": w.service,
                                  "key": key} for key in keys if key not in held]
            for key in keys:
                index.add(w.host, w.service, key, aid)
    c = table_of(m.ResourceClaim)
    for i in range(0, len(gone), _KEYS_PER_TERM):
        session.execute(delete(c).where(c.c.placement.in_(gone[i:i + _KEYS_PER_TERM])))
        session.execute(delete(p).where(p.c.id.in_(gone[i:i + _KEYS_PER_TERM])))
    if lost_claims:
        session.execute(delete(c).where(c.c.placement == bindparam("pid"), c.c.key == bindparam("k")), lost_claims)
    if changed:
        session.execute(update(p).where(p.c.id == bindparam("pid")).values(resource=bindparam("resource")), changed)
    ids = write_rows(session, p, [row for row, _ in new], returning=("id",), ordered=True)
    for (row, keys), (pid,) in zip(new, ids, strict=True):
        added_claims += [{"placement": pid, "account": row["account"], "host": row["host"],
                          "service": row["service"], "key": key} for key in keys]
    write_rows(session, c, added_claims)


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

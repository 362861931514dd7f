"""The agent's view of the hands: jobs for accounts' resources in, per-job results out.

The agent hands a list of :class:`Job` to a :class:`Fleet`; the fleet groups them per host, opens one
connection per host, runs one batch per host (hosts in parallel, bounded) and answers one
:class:`JobResult` per job. One failing host never stops the others. A ``status`` job's result also
carries ``observed``: what the job's own connector reads from its facts (:mod:`connectors.observed`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from connectors.base import Action
from connectors.observed import Observed

__all__ = ["Fleet", "Job", "JobResult", "Progress"]


@dataclass(frozen=True)
class Job:
    """One measure on one service of one account, e.g. suspend the web sites of account 42."""

    key: str  # unique and stable, e.g. "42:7:suspension:web"
    account: str
    action: Action
    service: str  # web | mail | login | home
    host: str
    resource: Mapping[str, Any]  # the account's resources[service] entry, e.g. {"sites": [...]}
    state: Mapping[str, str] = field(default_factory=dict)  # facts saved by an earlier job (restore)


@dataclass
class JobResult:
    key: str
    host: str
    ok: bool
    changed: bool = False
    error: str | None = None
    transient: bool = False  # the host could not be reached: try again later
    facts: dict[str, str] = field(default_factory=dict)
    operations: list[dict[str, Any]] = field(default_factory=list)  # per operation: id, rc, changed, error
    observed: Observed | None = None  # a status job that ran: its connector's reading of the facts


Progress = Callable[[str, int, int], None]  # (host, done, total)


class Fleet(Protocol):
    def apply(self, jobs: Sequence[Job], *, progress: Progress | None = None) -> dict[str, JobResult]: ...

    def close(self) -> None: ...

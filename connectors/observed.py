"""What a host does for one account's resource of one service, as that service's connector reads the facts
of a ``status`` job.

Each connector's ``observe(facts)`` is the one place that decides what its facts mean; ``reconcile``
compares the answer with the recorded state and never decodes facts itself.

``state``   ``active`` (serving), ``suspended``, ``deleted`` (the content is gone: only a restore brings it
            back), ``partial`` (the parts of the resource, sites or mailboxes, differ: ``parts`` says how)
            or ``unknown`` (the facts do not tell).
``detail``  what was seen, in words (which site, which flag, which file).
``also``    recorded states this backend cannot tell apart from ``state``: a home dir has no suspension
            of its own (present is right for an active and for a suspended account), a deleted login
            stays locked exactly like a suspended one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["STATES", "Observed", "ObservedState", "combine"]

ObservedState = Literal["active", "suspended", "deleted", "partial", "unknown"]
STATES: tuple[str, ...] = ("active", "suspended", "deleted", "partial", "unknown")


@dataclass(frozen=True)
class Observed:
    state: ObservedState
    detail: str = ""
    also: frozenset[str] = frozenset()
    parts: tuple[str, ...] = ()  # partial: the distinct states of the parts, in STATES order

    def agrees(self, expected: str) -> bool:
        """Whether the host does what an account recorded ``expected`` (active|suspended|deleted) needs."""
        return self.state == expected or expected in self.also

    @property
    def gone(self) -> bool:
        """Some of the content is deleted (a suspend or resume cannot bring it back)."""
        return self.state == "deleted" or "deleted" in self.parts

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"state": self.state, "detail": self.detail}
        if self.also:
            out["also"] = sorted(self.also)
        if self.parts:
            out["parts"] = list(self.parts)
        return out


def combine(parts: Mapping[str, Observed], *, what: str = "part") -> Observed:
    """One resource made of named parts (sites, mailboxes): their common state, else ``partial``; any
    unknown part makes the whole unknown, no part at all too."""
    if not parts:
        return Observed("unknown", f"the facts name no {what}")
    detail = "; ".join(f"{name}: {o.state}" + (f" ({o.detail})" if o.detail else "") for name, o in parts.items())
    states = {o.state for o in parts.values()}
    if "unknown" in states:
        return Observed("unknown", detail)
    if len(states) == 1:
        also = frozenset.intersection(*(o.also for o in parts.values()))
        return Observed(next(iter(parts.values())).state, detail, also)
    return Observed("partial", detail, parts=tuple(s for s in STATES if s in states))

"""arrears' Python API: one entry point, :class:`Arrears`, through which every operation goes.

The CLI, the daemon and the HTTP API are presentations of it; a billing system or a panel written in
Python may embed it the same way (docs/python-api.md)::

    from agent.service import Arrears

    with Arrears.open("/etc/arrears") as svc:
        svc.payment("acme", "120.00", method="card", ref="inv-2026-0042", apply_now=True)
        print(svc.show("acme").state)

Answers are the typed records of :mod:`agent.service.results` (``.to_json()`` is exactly what the CLI's
``--json`` prints); refusals are the exceptions of :mod:`agent.service.errors`. Importing this package
imports no database or template library, and none of its own modules until a name is first looked up
(``from agent.service import Arrears``): a submodule such as :mod:`agent.service.values` comes alone, and
each call loads what it uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.service.arrears import Amount, Arrears, ImportKind, JobStatus, Moment, Source
    from agent.service.errors import Busy, InvalidInput, NotFound, Refused, ServiceError
    from agent.service.results import (
        AccountRow,
        AccountView,
        ActionOutcome,
        Applied,
        Backlog,
        DebtorRow,
        Explanation,
        ForecastItem,
        History,
        ImportResult,
        InitResult,
        JobView,
        LedgerResult,
        MailOutcome,
        MoveResult,
        OverrideResult,
        Page,
        PaymentResult,
        PlannedMeasure,
        PlanPage,
        ReconcileOutcome,
        Record,
        RunSummary,
        SpendVerdict,
        StatusReport,
    )

__all__ = [
    "AccountRow",
    "AccountView",
    "ActionOutcome",
    "Amount",
    "Applied",
    "Arrears",
    "Backlog",
    "Busy",
    "DebtorRow",
    "Explanation",
    "ForecastItem",
    "History",
    "ImportKind",
    "ImportResult",
    "InitResult",
    "InvalidInput",
    "JobStatus",
    "JobView",
    "LedgerResult",
    "MailOutcome",
    "Moment",
    "MoveResult",
    "NotFound",
    "OverrideResult",
    "Page",
    "PaymentResult",
    "PlanPage",
    "PlannedMeasure",
    "ReconcileOutcome",
    "Record",
    "Refused",
    "RunSummary",
    "ServiceError",
    "Source",
    "SpendVerdict",
    "StatusReport",
]

# the module each name of __all__ is defined in (tests/agent/test_fast_start.py holds the two in step)
_FROM = {name: module for module, names in {
    "arrears": ("Amount", "Arrears", "ImportKind", "JobStatus", "Moment", "Source"),
    "errors": ("Busy", "InvalidInput", "NotFound", "Refused", "ServiceError"),
}.items() for name in names}


def __getattr__(name: str) -> Any:
    """A name of :data:`__all__`, imported from its module when first looked up (PEP 562)."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_FROM.get(name, 'results')}"), name)
    globals()[name] = value
    return value

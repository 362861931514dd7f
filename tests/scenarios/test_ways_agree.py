"""One answer whichever way it is asked: ``show``, ``explain``, ``forecast`` and ``plan`` give the same data
through the CLI's ``--json`` and through the Python API (:mod:`agent.service`), along a timeline with an
episode, notices, a suspension and a payment.

A way is a function ``(timeline, operation, account, at) -> JSON data``; :data:`WAYS` lists them, and every
way is compared with the CLI's. Another way in (the HTTP API) adds itself to :data:`WAYS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.imports import parse_instant
from agent.service import Arrears as Service
from tests.scenarios.harness import Arrears, day

OPERATIONS = ("show", "explain", "forecast", "plan")
ACCOUNTS = [
    {"id": "acme-01", "username": "acme", "billing_email": "billing@acme.example", "plan": "basic"},
    {"id": "bravo-02", "username": "bravo", "billing_email": "billing@bravo.example", "plan": "basic"},
    {"id": "calm-03", "username": "calm", "billing_email": "billing@calm.example", "plan": "basic"},
]
MOMENTS = (day(1), day(6), day(9), day(23))  # day 23: bravo's deletion warning is due

Way = Callable[[Arrears, str, str, str], Any]


def _by_cli(a: Arrears, operation: str, account: str, at: str) -> Any:
    args = {"show": ["show", account], "explain": ["explain", account],
            "forecast": ["forecast", account, "--days", "60"], "plan": ["plan"]}[operation]
    return a.json(*args, "--at", at)


def _by_python(a: Arrears, operation: str, account: str, at: str) -> Any:
    now = parse_instant(at)
    with Service.open(a.folder, db=a.db) as svc:
        if operation == "show":
            data: Any = svc.show(account, now=now).to_json()
        elif operation == "explain":
            data = svc.explain(account, now=now).to_json()
        elif operation == "forecast":
            data = [f.to_json() for f in svc.forecast(account, days=60, now=now)]
        else:
            data = [p.to_json() for p in svc.plan(now=now).items]
    return json.loads(json.dumps(data))  # what a caller that serialises it reads


WAYS: dict[str, Way] = {"python": _by_python}


@pytest.fixture
def _on_each_backend() -> None:
    """On SQLite only (tests/scenarios/conftest.py runs the other scenarios on both): the ways are compared
    on one module-wide timeline, and each reads the same rows whichever the database."""


@pytest.fixture(scope="module")
def timeline(tmp_path_factory: pytest.TempPathFactory) -> Arrears:
    """acme and bravo fall into debt on day 0 and are warned on day 5; acme pays on day 7, before its
    suspension; bravo is suspended on day 8; calm never owes anything."""
    a = Arrears.create(Path(tmp_path_factory.mktemp("ways")) / "cfg", accounts=ACCOUNTS)
    for account in ("acme-01", "bravo-02"):
        a.charge(account, 0, "40.00", f"c-{account}")
    for n in (0, 5):
        a.run(n)
    a.ok("payment", "acme-01", "40.00", "--ref", "p-acme", "--at", day(7))
    for n in (8, 9):
        a.run(n)
    assert a.show("bravo-02", 9)["state"] == "suspended"
    return a


@pytest.mark.parametrize("way", sorted(WAYS))
@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("at", MOMENTS)
def test_every_way_gives_the_clis_data(timeline: Arrears, way: str, operation: str, at: str) -> None:
    for account in [a["id"] for a in ACCOUNTS] if operation != "plan" else ["-"]:
        expected = _by_cli(timeline, operation, account, at)
        assert WAYS[way](timeline, operation, account, at) == expected, (operation, account, at)


def test_the_timeline_has_something_to_compare(timeline: Arrears) -> None:
    """The data compared is not empty: stages taken, measures to come and a plan with work in it."""
    assert _by_cli(timeline, "show", "bravo-02", day(9))["stages_taken"]
    assert _by_cli(timeline, "forecast", "bravo-02", day(9))
    assert _by_cli(timeline, "plan", "-", day(23))
    assert _by_cli(timeline, "explain", "acme-01", day(9))["triggers"]

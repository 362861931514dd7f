"""pytest plugin: with ``CI`` set (``CI=true``; .ci/run sets it) every skip is reported as a failure.

A skipped test, a skipped fixture or a whole skipped module means something the suite needs (a server, a
package, a tool) is missing; CI must fail on it instead of passing with less tested than it says.
Expected failures (``xfail``) are left as they are."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.servers.base import in_ci


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_skip_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.longrepr = f"skipped in CI (CI is set, so a skip is an error): {_reason(report)}"
        report.outcome = "failed"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                            pytest.TestReport]:
    report = yield
    _fail_skip_in_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, pytest.CollectReport,
                                                                          pytest.CollectReport]:
    report = yield
    _fail_skip_in_ci(report)
    return report

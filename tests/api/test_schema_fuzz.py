"""Schemathesis against docs/openapi.json on a real ``arrears serve``: at least 100 generated requests per
operation, and none may get a 5xx, a status, content type or body the document does not promise.

The requests carry an admin token, so they reach the endpoints' own validation; they never set ``now``
(applying at once runs a tick on hosts, which the end-to-end tests cover), so the fuzz stays on input.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.server import ApiServer, serve
from tests.scenarios.harness import POLICY, Arrears, day

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
schema = schemathesis.openapi.from_path(DOC)

settings.register_profile("api-schema", max_examples=100, deadline=None, database=None, derandomize=True,
                          phases=[Phase.explicit, Phase.generate],
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                 HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    arrears = Arrears.create(tmp_path_factory.mktemp("schema") / "cfg", policy=POLICY.replace("{resume}", "[card]"),
                             accounts=[{"id": "acme-01", "billing_email": "billing@acme.example"}])
    arrears.charge("acme-01", 0, "30.00", "inv-1")
    arrears.run(0)
    with serve(arrears.folder, at=day(1)) as server:
        yield server


@schema.parametrize()
@settings(settings.get_profile("api-schema"))
def test_no_request_gets_a_5xx_or_an_answer_outside_the_document(case: schemathesis.Case, api: ApiServer) -> None:
    if isinstance(case.body, dict) and "now" in case.body:
        case.body["now"] = False
    case.call_and_validate(base_url=api.url, headers={"Authorization": f"Bearer {api.token('admin')}"},
                           checks=CHECKS)

"""docs/openapi.json is the document the API serves at /v1/openapi.json."""

from __future__ import annotations

import json
from pathlib import Path

from agent.api.app import build_app, openapi_document

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_committed_openapi_document_is_the_one_served() -> None:
    served = openapi_document(build_app())
    assert DOC.read_text() == served, (
        "docs/openapi.json differs from what the API serves; regenerate it with "
        "`python -m agent.api.openapi > docs/openapi.json` and commit it")


def test_the_document_is_openapi_3_1_and_every_operation_needs_a_token() -> None:
    doc = json.loads(DOC.read_text())
    assert doc["openapi"].startswith("3.1")
    operations = [op for item in doc["paths"].values() for op in item.values()]
    assert len(operations) >= 14
    for op in operations:
        assert op["security"] == [{"HTTPBearer": []}], op["operationId"]
        for code in ("401", "403", "422"):
            assert list(op["responses"][code]["content"]) == ["application/problem+json"], (op["operationId"], code)

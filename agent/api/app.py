"""The FastAPI application: its context, middleware, error handling and routes.

:func:`create_app` takes the Python API (:class:`agent.service.Arrears`) every endpoint calls; its clock is
the API's (``arrears serve --at`` stands it still). The routes live in :mod:`agent.api.routes`. The
OpenAPI 3.1 document is served at ``/v1/openapi.json`` and committed as docs/openapi.json
(tests/api/test_openapi.py holds the two equal).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from agent.api import errors
from agent.api.limits import MAX_BODY, BodyLimit

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from agent.api.gate import SpendGate
    from agent.service import Arrears
    from agent.store.db import Store

__all__ = ["VERSION", "Api", "build_app", "create_app", "openapi_document"]

VERSION = "1"

DESCRIPTION = """\
The HTTP API of arrears, for billing systems, control panels and admin tools (docs/http-api.md).

Every request carries a bearer token made with `arrears tokens add NAME --scope S`; its name is the
actor of the audit log. Scopes: `billing` (accounts, ledger, payments, can-spend), `read` (every read),
`admin` (everything, including suspend, resume, delete and restore).

Amounts are decimal strings in the account's currency (`"12.50"`); times are ISO-8601 with a zone. Read
endpoints take `at`, the moment to answer for (the command line's `--at`). Errors are RFC 9457
`application/problem+json` documents; an input error names each bad field with a JSON Pointer.
"""


@dataclass
class Api:
    """What every request works with: the Python API (whose database keeps the tokens too)."""

    service: Arrears

    @property
    def store(self) -> Store:
        return self.service.store


class _Application(FastAPI):
    """FastAPI, with the purchase gate's shortcut (:mod:`agent.api.gate`) ahead of all of it: FastAPI's
    own handling of a request (its middleware, the routing) costs more than the gate's answer."""

    gate: SpendGate | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.gate is None or not await self.gate(scope, receive, send):
            await super().__call__(scope, receive, send)


def build_app(*, max_body: int = MAX_BODY) -> FastAPI:
    """The application's routes, middleware and error handling, serving nothing yet (its OpenAPI document
    needs no database)."""
    from agent.api.gate import SpendGate
    from agent.api.routes import router

    app = _Application(title="arrears", version=VERSION, description=DESCRIPTION, openapi_url="/v1/openapi.json",
                       docs_url=None, redoc_url=None)
    errors.install(app)
    app.include_router(router)
    app.add_middleware(BodyLimit, limit=max_body)
    app.gate = SpendGate(app.state)
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = errors.problem_media_types(plain())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def create_app(service: Arrears, *, max_body: int = MAX_BODY) -> FastAPI:
    """The application serving ``service``'s database."""
    app = build_app(max_body=max_body)
    app.state.api = Api(service)
    return app


def openapi_document(app: FastAPI | None = None) -> str:
    """The OpenAPI document as docs/openapi.json holds it (sorted keys, two-space indent, final newline).
    Regenerate the file with ``python -m agent.api.openapi > docs/openapi.json``."""
    return json.dumps((app or build_app()).openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

"""The purchase gate's shortcut: ``GET /v1/accounts/{id}/can-spend?amount=`` answered ahead of FastAPI's
routing and dependency injection, which cost more CPU than the answer itself (bench/README.md, http_api).

It answers only the plain request: a GET without a body for the route's path, with one ``amount`` and no
other parameter, both within the route's limits, from a bearer token in force whose scopes the route takes
(:func:`agent.api.auth.check`, which reads the token on every request: a revocation holds from the next one),
for which the Python API gives a verdict. Everything else, every refusal and every error, goes on to the route
itself (:func:`agent.api.routes.can_spend`), which stays the one place that answers them and that the OpenAPI
document describes: the shortcut answers what the route would, byte for byte, or nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from agent.api.auth import bearer, check
from agent.api.routes import AMOUNT_LENGTH, ID_LENGTH, READ_OR_BILLING, answer

if TYPE_CHECKING:
    from starlette.datastructures import State
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["SpendGate"]

_HEAD, _TAIL = "/v1/accounts/", "/can-spend"


class SpendGate:
    """ASGI middleware: the purchase gate's plain requests answered here, every other request passed on."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state  # the application's: its ``api`` is set once it serves a database

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            response = await self._answer(scope)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope) -> Response | None:
        path: str = scope["path"]
        if scope.get("root_path") or not (path.startswith(_HEAD) and path.endswith(_TAIL)):
            return None
        account = path[len(_HEAD):-len(_TAIL)]
        if not account or "/" in account or len(account) > ID_LENGTH:  # the route's {id}: [^/]+, its limit
            return None
        request = Request(scope)
        if "content-length" in request.headers or "transfer-encoding" in request.headers:
            return None
        query = request.query_params.multi_items()
        if len(query) != 1 or query[0][0] != "amount" or len(query[0][1]) > AMOUNT_LENGTH:
            return None
        credentials = await bearer(request)  # the route's own reading of the Authorization header
        if credentials is None:
            return None
        try:
            api = self.state.api
            check(api.store, credentials, READ_OR_BILLING.allowed)
            verdict = api.service.can_spend(account, query[0][1])
        except Exception:  # the route answers it: a problem document, or a logged 500
            return None
        return answer(verdict)

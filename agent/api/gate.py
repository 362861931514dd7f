"""The purchase gate's shortcut: ``GET /v1/accounts/{id}/can-spend?amount=`` answered ahead of FastAPI's
middleware, routing and dependency injection, which cost more CPU than the answer itself (bench/README.md,
http_api).

It answers only the plain request: a GET without a body for the route's path, with one ``amount`` of digits,
a point or a sign and no other parameter, both within the route's limits, from a bearer token in force whose
scopes the route takes (:func:`agent.api.auth.authorize`, which reads the token on every request: a
revocation holds from the next one), for which the Python API gives a verdict. Everything else, every
refusal and every error, goes on to the route itself (:func:`agent.api.routes.can_spend`), which stays the
one place that answers them and that the OpenAPI document describes: the shortcut answers what the route
would, byte for byte, or nothing.

It reads on one connection that it keeps open per thread serving requests (the event loop's), instead of
taking one from the pool twice a request. Each request ends its transaction, so every request reads what
is committed when it comes (with SQLite a read takes no transaction at all); a connection that fails is
closed and the next request opens a new one.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from agent.api.auth import authorize
from agent.api.routes import AMOUNT_LENGTH, ID_LENGTH, READ_OR_BILLING, answer
from agent.store.prepared import end_reads

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from starlette.datastructures import State
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send

    from agent.store.db import Store

__all__ = ["SpendGate"]

_HEAD, _TAIL = "/v1/accounts/", "/can-spend"
# the one query the shortcut takes: ``amount`` and a value that needs no decoding (no %, no +), within the limit
_QUERY = re.compile(rb"amount=([0-9.-]{1,%d})" % AMOUNT_LENGTH)
_BEARER = b"Bearer "


class SpendGate:
    """The purchase gate's plain requests answered ahead of the application (:func:`agent.api.app.build_app`
    calls it first); it tells whether it answered."""

    def __init__(self, state: State) -> None:
        self.state = state  # the application's: its ``api`` is set once it serves a database
        self._local = threading.local()  # per thread: the store and the connection kept open on it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        if scope["type"] != "http" or scope["method"] != "GET":
            return False
        response = self._answer(scope)  # on the event loop: two indexed reads, no thread hop
        if response is None:
            return False
        await response(scope, receive, send)
        return True

    def _answer(self, scope: Scope) -> Response | None:
        path: str = scope["path"]
        if not (path.startswith(_HEAD) and path.endswith(_TAIL)) or scope.get("root_path"):
            return None
        account = path[len(_HEAD):-len(_TAIL)]
        if not account or "/" in account or len(account) > ID_LENGTH:  # the route's {id}: [^/]+, its limit
            return None
        query = _QUERY.fullmatch(scope["query_string"])
        if query is None:
            return None
        authorization = None
        for name, value in scope["headers"]:  # lower-case names (ASGI)
            if name == b"authorization":
                if authorization is None:  # the first, as the route's reading of the header takes it
                    authorization = value
            elif name in (b"content-length", b"transfer-encoding"):
                return None
        if authorization is None or not authorization.startswith(_BEARER):
            return None
        token = authorization[len(_BEARER):].decode("latin-1")
        if not token or token != token.strip():
            return None
        try:
            api = self.state.api
            connection = self._connection(api.store)
            try:
                authorize(connection, token, READ_OR_BILLING.allowed)
                verdict = api.service.can_spend(account, query[1].decode("ascii"), connection=connection)
            finally:
                end_reads(connection)
        except SQLAlchemyError:  # the connection may be broken: a new one next time; the route answers this
            self._drop()
            return None
        except Exception:  # a refusal or an error: the route answers it (a problem document, or a logged 500)
            return None
        return answer(verdict)

    def _connection(self, store: Store) -> Connection:
        local = self._local
        if getattr(local, "store", None) is not store:
            self._drop()
            local.connection = store.engine.connect()
            local.store = store
        connection: Connection = local.connection
        return connection

    def _drop(self) -> None:
        local = self._local
        connection = getattr(local, "connection", None)
        local.store = local.connection = None
        if connection is not None:
            try:
                connection.close()
            except SQLAlchemyError:
                connection.invalidate()

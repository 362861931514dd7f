"""Bearer authentication and scopes: 401 without a valid token, 403 when its scopes do not cover the endpoint.

The ``admin`` scope covers every endpoint; an endpoint names the other scopes that may call it.
:func:`authorize` decides (:func:`check` reads the bearer header for it); :class:`Require` makes it an
endpoint's dependency, and the purchase gate's shortcut (:mod:`agent.api.gate`) calls it as well, on the
connection it keeps open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agent.api.errors import Problem
from agent.api.tokens import TokenInfo, authenticate

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from agent.store.db import Store

__all__ = ["Caller", "Require", "authorize", "bearer", "check"]

bearer = HTTPBearer(auto_error=False, description="a token made with `arrears tokens add NAME --scope S`")
Caller = TokenInfo

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="arrears"'}


def check(store: Store, credentials: HTTPAuthorizationCredentials | None, allowed: frozenset[str]) -> TokenInfo:
    """The calling token, read from the database on every call (a revocation holds from the next request);
    :class:`Problem` 401 without a token in force, 403 unless it has one of the scopes ``allowed``."""
    # on the event loop: one indexed read (WAL: readers never wait), cheaper than a worker-thread hop
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(401, "unauthorized", "this endpoint needs a bearer token (Authorization: Bearer TOKEN)",
                      headers=_CHALLENGE)
    with store.engine.connect() as c:  # no session: one statement, no ORM objects
        return authorize(c, credentials.credentials, allowed)


def authorize(connection: Connection, token: str, allowed: frozenset[str]) -> TokenInfo:
    """The token in force that ``token`` is, read on ``connection``; :class:`Problem` 401 when there is
    none, 403 unless it has one of the scopes ``allowed``."""
    info = authenticate(connection, token)
    if info is None:
        raise Problem(401, "unauthorized", "the bearer token is unknown or revoked",
                      headers={"WWW-Authenticate": 'Bearer realm="arrears", error="invalid_token"'})
    if not allowed & set(info.scopes):
        need = " or ".join(sorted(allowed))
        raise Problem(403, "forbidden", f"token {info.name!r} has the scopes {', '.join(info.scopes)}; "
                                        f"this endpoint needs {need}",
                      headers={"WWW-Authenticate": 'Bearer realm="arrears", error="insufficient_scope"'})
    return info


class Require:
    """A dependency that answers the calling token, refused unless it has ``admin`` or one of ``scopes``."""

    def __init__(self, *scopes: str) -> None:
        self.allowed = frozenset((*scopes, "admin"))

    async def __call__(self, request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> TokenInfo:
        return check(request.app.state.api.store, credentials, self.allowed)


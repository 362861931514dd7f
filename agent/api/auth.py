"""Bearer authentication and scopes: 401 without a valid token, 403 when its scopes do not cover the endpoint.

The ``admin`` scope covers every endpoint; an endpoint names the other scopes that may call it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agent.api.errors import Problem
from agent.api.tokens import TokenInfo, authenticate

__all__ = ["Caller", "bearer", "require"]

bearer = HTTPBearer(auto_error=False, description="a token made with `arrears tokens add NAME --scope S`")
Caller = TokenInfo

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="arrears"'}


def require(*scopes: str) -> Callable[..., Awaitable[TokenInfo]]:
    """A dependency that answers the calling token, refused unless it has ``admin`` or one of ``scopes``."""
    allowed = frozenset((*scopes, "admin"))

    async def dependency(request: Request,
                         credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> TokenInfo:
        # on the event loop: one indexed read (WAL: readers never wait), cheaper than a worker-thread hop
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Problem(401, "unauthorized", "this endpoint needs a bearer token (Authorization: Bearer TOKEN)",
                          headers=_CHALLENGE)
        with request.app.state.api.store.engine.connect() as c:  # no session: one statement, no ORM objects
            info = authenticate(c, credentials.credentials)
        if info is None:
            raise Problem(401, "unauthorized", "the bearer token is unknown or revoked",
                          headers={"WWW-Authenticate": 'Bearer realm="arrears", error="invalid_token"'})
        if not allowed & set(info.scopes):
            need = " or ".join(sorted(allowed))
            raise Problem(403, "forbidden", f"token {info.name!r} has the scopes {', '.join(info.scopes)}; "
                                            f"this endpoint needs {need}",
                          headers={"WWW-Authenticate": 'Bearer realm="arrears", error="insufficient_scope"'})
        return info

    return dependency

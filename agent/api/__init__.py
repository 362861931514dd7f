"""The HTTP API of arrears (``arrears serve``, ``arrears daemon --api``): FastAPI on uvicorn.

:mod:`~agent.api.tokens` keeps the bearer tokens (hashed) and their scopes; :mod:`~agent.api.app` builds
the application; :mod:`~agent.api.errors` answers every error as RFC 9457 ``application/problem+json``;
:mod:`~agent.api.server` runs it on uvicorn and decides which addresses it may listen on. Nothing is
imported here, so the command line's ``tokens`` command does not load FastAPI.
"""

from __future__ import annotations

__all__: list[str] = []

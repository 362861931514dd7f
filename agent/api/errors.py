"""Every error the HTTP API answers, as RFC 9457 ``application/problem+json``.

A problem has ``type``, ``title``, ``status`` and ``detail``; an input error adds ``errors``: one
``{"pointer", "detail"}`` per bad field, the pointer a JSON Pointer into the request (``#/amount``,
``#/entries/2/ref``) or the name of a query or path parameter (``?amount``, ``{id}``). Bad input is a
4xx; a 500 is only ever a bug, and says nothing of it but that it happened (it is logged).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["PROBLEM", "FieldError", "Problem", "ProblemModel", "field_pointer", "install", "problem_media_types",
           "problem_response"]

log = logging.getLogger("arrears.api")

PROBLEM = "application/problem+json"
_TYPES = "https://arrears.invalid/problems/"  # a problem type names itself; nothing is served there


class FieldError(BaseModel):
    pointer: str = Field(description="where in the request: a JSON Pointer into the body (#/amount), ?name for a "
                                     "query parameter, {name} for a path parameter")
    detail: str


class ProblemModel(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


class Problem(Exception):
    """An answer other than success: raised anywhere below an endpoint, answered by :func:`install`'s handler."""

    def __init__(self, status: int, kind: str, detail: str, *, title: str | None = None,
                 errors: Sequence[tuple[str, str]] = (), headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.title = title or kind.replace("-", " ")
        self.errors = list(errors)
        self.headers = headers or {}


def problem_response(p: Problem) -> JSONResponse:
    body: dict[str, Any] = {"type": _TYPES + p.kind, "title": p.title, "status": p.status, "detail": p.detail}
    if p.errors:
        body["errors"] = [{"pointer": ptr, "detail": d} for ptr, d in p.errors]
    return JSONResponse(body, status_code=p.status, media_type=PROBLEM, headers=p.headers)


def field_pointer(loc: Sequence[Any]) -> str:
    """The pointer of a pydantic/FastAPI error location: ``("body", "entries", 2, "ref")`` -> ``#/entries/2/ref``."""
    if not loc:
        return "#"
    where, *rest = loc
    if where == "body":
        return "#" + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in rest)
    name = ".".join(str(p) for p in rest)
    if where == "query":
        return f"?{name}"
    if where == "path":
        return f"{{{name}}}"
    return f"{where}:{name}"


def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [(field_pointer(e.get("loc", ())), str(e.get("msg", "invalid"))) for e in exc.errors()]
    first = errors[0] if errors else ("#", "invalid request")
    return problem_response(Problem(422, "invalid-request", f"{first[0]}: {first[1]}", errors=errors))


def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kinds = {400: "unreadable-body", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
             413: "body-too-large", 415: "unsupported-media-type"}
    kind = kinds.get(exc.status_code, "http-error")
    return problem_response(Problem(exc.status_code, kind, str(exc.detail), headers=dict(exc.headers or {})))


def _problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc)


def _bug(request: Request, exc: Exception) -> JSONResponse:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(Problem(500, "internal-error", "internal error; it is logged on the server"))


def _configuration(request: Request, exc: Exception) -> JSONResponse:
    log.error("the configuration is invalid (%s %s): %s", request.method, request.url.path, exc)
    return problem_response(Problem(503, "configuration-invalid", "the server's configuration (policy, inventory "
                                    "or templates) is invalid; it is logged on the server",
                                    headers={"Retry-After": "60"}))


def install(app: FastAPI) -> None:
    """Answer validation errors, HTTP errors, :class:`Problem`, a broken configuration folder (not the
    caller's mistake: 503) and anything unforeseen (500, logged) as problems."""
    from agent.config import ConfigError
    from agent.notices import TemplateError
    from connectors.inventory import InventoryError
    from policy import PolicyError

    for kind in (ConfigError, TemplateError, InventoryError, PolicyError):
        app.add_exception_handler(kind, _configuration)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(Exception, _bug)


def problem_media_types(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with every error response (4xx, 5xx) as ``application/problem+json``, which is
    what the handlers above answer (FastAPI would document them as ``application/json``)."""
    for item in document.get("paths", {}).values():
        for operation in item.values():
            for code, response in operation.get("responses", {}).items():
                content = response.get("content")
                if code[:1] in ("4", "5") and content:
                    schema = content.get("application/json", {}).get("schema")
                    response["content"] = {PROBLEM: {"schema": schema}} if schema else {PROBLEM: {}}
    return document

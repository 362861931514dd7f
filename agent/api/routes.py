"""The endpoints of ``/v1``: each parses its request, calls the Python API (:class:`agent.service.Arrears`)
and answers the record's JSON, the document the matching CLI command prints with ``--json``.

The token's name is the actor of every write; ``at`` on a read is the moment it answers for (the CLI's
``--at``, default the API's clock). A write is one call of the Python API, which makes it one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from agent.api.auth import Caller, Require
from agent.api.errors import Problem, ProblemModel
from agent.service import (
    AccountView,
    ActionOutcome,
    Arrears,
    Busy,
    DebtorRow,
    Explanation,
    ForecastItem,
    History,
    ImportResult,
    InvalidInput,
    JobView,
    LedgerResult,
    NotFound,
    PaymentResult,
    PlannedMeasure,
    Record,
    Refused,
    ServiceError,
    SpendVerdict,
)

__all__ = ["AMOUNT_LENGTH", "ID_LENGTH", "READ_OR_BILLING", "answer", "router"]

T = TypeVar("T")

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemModel, "description": text}
    for code, text in ((400, "the body cannot be read as JSON"), (401, "no valid bearer token"),
                       (403, "the token's scopes do not cover this endpoint"),
                       (404, "no such account"), (409, "refused by the rules as asked"),
                       (413, "the request body is over the limit"), (422, "an invalid value (see errors)"),
                       (503, "the database is busy, or the server's configuration is invalid; retry later"))
}

router = APIRouter(prefix="/v1", responses=_PROBLEMS)

ID_LENGTH = 64  # the longest account id a path takes
AMOUNT_LENGTH = 40  # the longest amount a query takes

AccountId = Annotated[str, Path(description="the account's id, as billing knows it", max_length=ID_LENGTH)]


async def _moment(at: Annotated[AwareDatetime | None, Query(description="the moment to answer for (ISO-8601 with a "
                                                                        "zone), as the CLI's --at; default now")] = None
                  ) -> datetime | None:
    """``at`` within the instants arrears accepts (:func:`agent.imports.check_instant`), else a 422. Pure: it
    runs on the event loop (a plain ``def`` dependency costs a worker-thread hop on every request)."""
    if at is None:
        return None
    from agent.imports import check_instant

    try:
        return check_instant(at, what="at")
    except ValueError as exc:
        raise Problem(422, "invalid-value", str(exc), errors=[("?at", str(exc))]) from None


At = Annotated[datetime | None, Depends(_moment)]
Cursor = Annotated[str | None, Query(description="a page's next_cursor, for the page after it", max_length=200)]
Limit = Annotated[int, Query(ge=1, le=1000, description="rows per page")]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200,
                                              description="the same key again returns the first answer and does "
                                                          "nothing more")]

_KEY = {"idempotency_key": "header:Idempotency-Key"}

BILLING = Require("billing")
READ = Require("read")
READ_OR_BILLING = Require("read", "billing")
ADMIN = Require()


def _service(request: Request) -> Arrears:
    service: Arrears = request.app.state.api.service
    return service


def _pointer(field: str, where: Mapping[str, str]) -> str:
    """``records[3].currency`` -> ``#/records/3/currency``; a name in ``where`` (a query or path parameter)
    is that parameter's own pointer (``?amount``, ``{id}``)."""
    if not field:
        return "#"
    head = field.split(".", 1)[0].split("[", 1)[0]
    if head in where:
        return where[head]
    parts = field.replace("]", "").replace("[", ".").split(".")
    return "#" + "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts if p)


def _call(fn: Callable[[], T], *, where: Mapping[str, str] | None = None) -> T:
    """Run one call of the Python API, its refusals answered as problems."""
    from sqlalchemy.exc import OperationalError

    try:
        return fn()
    except NotFound as exc:
        raise Problem(404, "not-found", str(exc)) from None
    except Busy as exc:
        raise Problem(503, "busy", str(exc), headers={"Retry-After": "5"}) from None
    except Refused as exc:
        raise Problem(409, "refused", str(exc)) from None
    except InvalidInput as exc:
        pointer = _pointer(exc.field, where or {})
        raise Problem(422, "invalid-value", str(exc), errors=[(pointer, str(exc))]) from None
    except ServiceError as exc:
        raise Problem(409, "refused", str(exc)) from None
    except OperationalError as exc:  # the database is locked or gone: the caller retries
        raise Problem(503, "database-unavailable", f"the database cannot answer now: {type(exc.orig).__name__}",
                      headers={"Retry-After": "5"}) from None


def answer(value: Record | list[Any] | dict[str, Any], status: int = 200) -> JSONResponse:
    from agent.service.results import jsonable

    return JSONResponse(jsonable(value), status_code=status)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- billing: payments, ledger lines, accounts ------------------------------------------------------

class PaymentIn(_Body):
    """A payment: a ledger line of kind payment."""

    account: str = Field(max_length=64)
    amount: str = Field(max_length=40, description="positive, in the account's currency, e.g. \"12.50\"")
    method: str = Field("card", max_length=32, description="card, check, transfer ... (card payers are resumed "
                                                           "as the policy's resume_on_payment says)")
    ref: str | None = Field(None, max_length=200, description="billing's reference, unique per account: posting "
                                                              "it again returns the first payment")
    at: AwareDatetime | None = Field(None, description="when it was paid; default now")
    now: bool = Field(False, description="apply it at once (resume a suspended card payer now)")


class LedgerIn(_Body):
    """A ledger line, as in a ledger file."""

    account: str = Field(max_length=64)
    at: AwareDatetime
    amount: str = Field(max_length=40, description="charges negative, payments and credits positive")
    kind: Literal["charge", "payment", "credit", "refund", "adjustment"] | None = None
    method: str | None = Field(None, max_length=32)
    ref: str | None = Field(None, max_length=200, description="posting the same ref again returns the first line")
    now: bool = Field(False, description="apply it at once")


class AccountIn(_Body):
    """An account, as a line of an accounts file (without its id, which is the path's)."""

    username: str | None = None
    billing_email: str | None = None
    plan: str | None = None
    reseller: str | None = None
    currency: str | None = None
    trial_ends_at: str | None = Field(None, description="ISO-8601 with a zone")
    has_billing_profile: bool | None = None
    policy: dict[str, Any] | None = Field(None, description="the account's own policy layer")
    resources: dict[str, Any] | None = Field(None, description="its placements: web, mail, login, home")


def _money_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in fields.items()}


@router.post("/payments", response_model=PaymentResult, status_code=201, tags=["billing"], summary="Record a payment",
             responses={200: {"model": PaymentResult, "description": "the ref was recorded before: the first payment"}})
def post_payment(request: Request, body: PaymentIn, caller: Annotated[Caller, Depends(BILLING)]) -> JSONResponse:
    """Record a payment (`arrears payment`). A `ref` recorded before with the same amount and method answers
    that first payment and credits nothing twice; with another amount it is refused (409). With `now` it
    takes effect at once (wakes the daemon, or runs here), else on the next run."""
    svc = _service(request)
    result = _call(lambda: svc.payment(body.account, body.amount, method=body.method, ref=body.ref, at=body.at,
                                       actor=caller.name, apply_now=body.now))
    return answer(result, 200 if result.repeated else 201)


@router.post("/ledger", response_model=LedgerResult, status_code=201, tags=["billing"], summary="Post a ledger line",
             responses={200: {"model": LedgerResult, "description": "the ref was posted before: the first line"}})
def post_ledger(request: Request, body: LedgerIn, caller: Annotated[Caller, Depends(BILLING)]) -> JSONResponse:
    """Post one ledger line (a line of `arrears ledger import`): a repeated `ref` answers the first line and
    credits nothing twice."""
    svc = _service(request)
    line = _money_fields(body.model_dump(exclude={"now"}, exclude_none=True))
    result = _call(lambda: svc.post_ledger(line, actor=caller.name, apply_now=body.now))
    return answer(result, 200 if result.repeated else 201)


class LedgerLine(_Body):
    account: str = Field(max_length=64)
    at: AwareDatetime
    amount: str = Field(max_length=40)
    kind: Literal["charge", "payment", "credit", "refund", "adjustment"] | None = None
    method: str | None = Field(None, max_length=32)
    ref: str | None = Field(None, max_length=200)


class LedgerBatchIn(_Body):
    """Ledger lines, as the lines of a ledger file; all are written or none."""

    records: list[LedgerLine] = Field(max_length=10_000)
    now: bool = Field(False, description="apply them at once")


@router.post("/ledger/import", response_model=ImportResult, tags=["billing"], summary="Import ledger lines")
def import_ledger(request: Request, body: LedgerBatchIn, caller: Annotated[Caller, Depends(BILLING)]) -> JSONResponse:
    """`arrears ledger import` of the lines in the body, in one transaction: a line whose `ref` the account
    already has is skipped; one invalid line refuses the batch (422, its pointer `#/records/N/FIELD`) and
    nothing is written."""
    svc = _service(request)
    records = [_money_fields(r.model_dump(exclude_none=True)) for r in body.records]
    return answer(_call(lambda: svc.import_records("ledger", records, actor=caller.name, apply_now=body.now,
                                                   source="request")))


@router.put("/accounts/{id}", response_model=AccountView, tags=["billing"], summary="Create or update an account")
def put_account(request: Request, id: AccountId, body: AccountIn,
                caller: Annotated[Caller, Depends(BILLING)]) -> JSONResponse:
    """Create or update the account (a line of `arrears accounts import`, validated the same way); answers it
    as `GET /v1/accounts/{id}` does."""
    svc = _service(request)
    record = {"id": id, **body.model_dump(exclude_unset=True)}
    return answer(_call(lambda: svc.upsert_account(record, actor=caller.name), where={"id": "{id}"}))


@router.get("/accounts/{id}/can-spend", response_model=SpendVerdict, tags=["billing"],
            summary="May the account pay an order from its balance?")
async def can_spend(request: Request, id: AccountId, caller: Annotated[Caller, Depends(READ_OR_BILLING)],
                    amount: Annotated[str, Query(max_length=AMOUNT_LENGTH,
                                                 description="the order's amount, not negative")],
                    at: At) -> JSONResponse:
    """The purchase gate (`arrears can-spend`): `{allowed, available, reason}`."""
    # Its plain requests are answered by agent.api.gate ahead of the routing (and the same way); this answers
    # the rest. On the event loop, not a worker thread: the purchase gate is the hot read (two indexed
    # statements, which the thread hop would add to; a reader never waits for a lock under WAL).
    svc = _service(request)
    return answer(_call(lambda: svc.can_spend(id, amount, now=at), where={"amount": "?amount", "id": "{id}"}))


# --- reads ----------------------------------------------------------------------------------------

@router.get("/accounts/{id}", response_model=AccountView, tags=["accounts"], summary="An account now")
def get_account(request: Request, id: AccountId, caller: Annotated[Caller, Depends(READ_OR_BILLING)],
                at: At) -> JSONResponse:
    """What `arrears show --json` prints: state, balance, holds, episode, stages taken, next measure, work
    waiting on hosts."""
    svc = _service(request)
    return answer(_call(lambda: svc.show(id, now=at)))


@router.get("/accounts/{id}/explain", response_model=Explanation, tags=["accounts"],
            summary="Why the account is where it is")
def explain(request: Request, id: AccountId, caller: Annotated[Caller, Depends(READ)], at: At) -> JSONResponse:
    """What `arrears explain --json` prints: triggers, thresholds, inputs, and which policy layer set what."""
    svc = _service(request)
    return answer(_call(lambda: svc.explain(id, now=at)))


@router.get("/accounts/{id}/forecast", response_model=list[ForecastItem], tags=["accounts"],
            summary="The account's measures to come")
def forecast(request: Request, id: AccountId, caller: Annotated[Caller, Depends(READ)], at: At,
             days: Annotated[int, Query(ge=1, le=3650, description="how far ahead")] = 30) -> JSONResponse:
    """What `arrears forecast ACCOUNT --json` prints: every measure in the next `days` days, assuming nothing
    is paid."""
    svc = _service(request)
    return answer(_call(lambda: svc.forecast(id, days=days, now=at)))


@router.get("/accounts/{id}/history", response_model=History, tags=["accounts"], summary="What happened to it")
def history(request: Request, id: AccountId, caller: Annotated[Caller, Depends(READ)]) -> JSONResponse:
    """What `arrears history --json` prints: episodes, stages, holds, ledger, overrides, notices, audit."""
    svc = _service(request)
    return answer(_call(lambda: svc.history(id)))


class DebtorsPage(BaseModel):
    items: list[DebtorRow]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last")


class PlanPageOut(BaseModel):
    items: list[PlannedMeasure]
    next_cursor: str | None
    errors: list[str] = Field(description="accounts that could not be evaluated")


class JobsPage(BaseModel):
    items: list[JobView]
    next_cursor: str | None


@router.get("/debtors", response_model=DebtorsPage, tags=["reports"], summary="The billing balance report")
def debtors(request: Request, caller: Annotated[Caller, Depends(READ)], at: At, cursor: Cursor = None,
            limit: Limit = 100) -> JSONResponse:
    """`arrears debtors --json`, a page at a time: every account with a negative balance or in a debt episode."""
    svc = _service(request)
    return answer(_call(lambda: svc.debtors(now=at, cursor=cursor, limit=limit), where={"cursor": "?cursor"}))


@router.get("/plan", response_model=PlanPageOut, tags=["reports"], summary="What a run would do now")
def plan(request: Request, caller: Annotated[Caller, Depends(READ)], at: At, cursor: Cursor = None,
         limit: Limit = 100) -> JSONResponse:
    """`arrears plan --json`, a page at a time: the measures (and resumes) of the accounts due, changing
    nothing."""
    svc = _service(request)
    return answer(_call(lambda: svc.plan(now=at, cursor=cursor, limit=limit), where={"cursor": "?cursor"}))


@router.get("/jobs", response_model=JobsPage, tags=["reports"], summary="Outbox jobs")
def jobs(request: Request, caller: Annotated[Caller, Depends(READ)],
         status: Annotated[Literal["pending", "claimed", "waiting", "done", "failed", "cancelled"] | None,
                           Query(description="only jobs in this status (failed: what needs an admin)")] = None,
         account: Annotated[str | None, Query(max_length=64)] = None, cursor: Cursor = None,
         limit: Limit = 100) -> JSONResponse:
    """The outbox's jobs by id (`GET /v1/jobs?status=failed`: the work that failed for good)."""
    svc = _service(request)
    return answer(_call(lambda: svc.jobs(status=status, account=account, cursor=cursor, limit=limit),
                        where={"cursor": "?cursor", "account": "?account"}))


# --- admin: manual actions --------------------------------------------------------------------------

class ActionIn(_Body):
    reason: str | None = Field(None, max_length=2000, description="why (audited)")
    now: bool = Field(False, description="apply it on the hosts at once")
    dry_run: bool = Field(False, description="say what would be done, write nothing")


class SuspendIn(ActionIn):
    reason: str = Field(min_length=1, max_length=2000, description="why (audited)")


class ResumeIn(ActionIn):
    grace_days: int | None = Field(None, ge=1, le=3650, description="resume in debt: a promise to pay within "
                                                                    "these days")


@router.post("/accounts/{id}/suspend", response_model=ActionOutcome, tags=["admin"], summary="Suspend by hand")
def suspend(request: Request, id: AccountId, body: SuspendIn, caller: Annotated[Caller, Depends(ADMIN)],
            key: IdempotencyKey = None) -> JSONResponse:
    """`arrears suspend`: an admin hold that payments do not lift, applied on every host."""
    svc = _service(request)
    return answer(_call(lambda: svc.suspend(id, reason=body.reason, actor=caller.name, dry_run=body.dry_run,
                                            apply_now=body.now, idempotency_key=key), where=_KEY))


@router.post("/accounts/{id}/resume", response_model=ActionOutcome, tags=["admin"], summary="Lift the admin hold")
def resume(request: Request, id: AccountId, body: ResumeIn, caller: Annotated[Caller, Depends(ADMIN)],
           key: IdempotencyKey = None) -> JSONResponse:
    """`arrears resume`: refused (409) while the account is in debt, unless `grace_days` records a promise."""
    svc = _service(request)
    return answer(_call(lambda: svc.resume(id, reason=body.reason, grace_days=body.grace_days, actor=caller.name,
                                           dry_run=body.dry_run, apply_now=body.now, idempotency_key=key), where=_KEY))


@router.post("/accounts/{id}/delete", response_model=ActionOutcome, tags=["admin"], summary="Delete on every host")
def delete(request: Request, id: AccountId, body: ActionIn, caller: Annotated[Caller, Depends(ADMIN)],
           key: IdempotencyKey = None) -> JSONResponse:
    """`arrears delete --yes`: archive, verify, remove on every host."""
    svc = _service(request)
    return answer(_call(lambda: svc.delete(id, reason=body.reason, actor=caller.name, dry_run=body.dry_run,
                                           apply_now=body.now, idempotency_key=key), where=_KEY))


@router.post("/accounts/{id}/restore", response_model=ActionOutcome, tags=["admin"],
             summary="Restore a deleted account")
def restore(request: Request, id: AccountId, body: ActionIn, caller: Annotated[Caller, Depends(ADMIN)],
            key: IdempotencyKey = None) -> JSONResponse:
    """`arrears restore`: back from its archives, suspended (admin hold) until an admin resumes it."""
    svc = _service(request)
    return answer(_call(lambda: svc.restore(id, reason=body.reason, actor=caller.name, dry_run=body.dry_run,
                                            apply_now=body.now, idempotency_key=key), where=_KEY))

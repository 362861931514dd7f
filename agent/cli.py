"""The ``arrears`` command line: set-up, imports, the operator's read commands, admin actions and ``run``.

Every command finds its configuration folder from ``--config DIR`` / ``ARREARS_CONFIG`` / the current
directory and its database from ``--db URL`` / ``ARREARS_DB`` / ``arrears.db`` in that folder. Read
commands take ``--json``; time-dependent commands take ``--at ISO-8601`` (with a zone). A bad input
gives one message on stderr and a non-zero exit (2; ``can-spend`` answers "no" with 1), and writes
nothing.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from agent.config import AgentSettings, Config, ConfigError, agent_settings, discover, load_policy_file
from agent.imports import ASAP, ImportFileError, parse_amount, parse_instant, touch
from agent.store import models as m
from agent.store.db import Store, StoreError, open_store
from agent.store.repo import UnknownAccount, audit, get_account, load_snapshots, open_episode, open_holds

if TYPE_CHECKING:
    import threading

    from agent.notices import NoticeSettings, Templates
    from connectors.fleet import Fleet, Job, JobResult, Progress
    from policy.loader import PolicySet
    from policy.model import ResolvedPolicy

__all__ = ["CliError", "CliState", "agent_lock", "check_config", "checked_templates", "cli", "main", "run_once"]

SAMPLE = Path(__file__).with_name("sample")
SAMPLE_CONFIG = ("policy.yaml", "inventory.yaml")
SAMPLE_DATA = ("accounts.jsonl", "ledger.jsonl", "invoices.jsonl")


class CliError(click.ClickException):
    """One clear message, exit code 2."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class _Internal(CliError):
    exit_code = 3


def _known_errors() -> tuple[type[BaseException], ...]:
    from agent.notices import TemplateError
    from connectors.inventory import InventoryError
    from policy import PolicyError

    return (PolicyError, ConfigError, ImportFileError, UnknownAccount, StoreError, TemplateError, InventoryError)


class _Group(click.Group):
    """Turns every error into one message (never a traceback) with a non-zero exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except _known_errors() as exc:
            raise CliError(str(exc)) from None
        except SQLAlchemyError as exc:
            raise CliError(f"database error: {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from None
        except Exception as exc:
            if os.environ.get("ARREARS_DEBUG"):
                raise
            raise _Internal(f"internal error: {type(exc).__name__}: {exc} (set ARREARS_DEBUG=1 for details)") from None


# --- shared state --------------------------------------------------------------------------------


@dataclass
class CliState:
    """What every command needs, opened lazily: the config, the database, the policy."""

    config: Config
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    _store: Store | None = None
    _policy: PolicySet | None = None

    # names other command groups (templates, hosts) look for
    @property
    def inventory_path(self) -> Path:
        return self.config.inventory_path

    @property
    def templates_dir(self) -> Path:
        return self.config.templates_dir

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.config.db_url)
        return self._store

    @property
    def policy(self) -> PolicySet:
        if self._policy is None:
            self._policy = load_policy_file(self.config)
        return self._policy

    @property
    def settings(self) -> AgentSettings:
        return agent_settings(self.policy.extra.get("agent"), str(self.config.policy_path))

    @property
    def notice_settings(self) -> NoticeSettings | None:
        section = self.policy.extra.get("notices")
        if section is None:
            return None
        from pydantic import ValidationError

        from agent.notices import NoticeSettings

        data = dict(section)
        spool = data.get("spool_dir")
        if isinstance(spool, str) and not Path(spool).is_absolute():
            data["spool_dir"] = str(self.config.folder / spool)
        try:
            return NoticeSettings.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{self.config.policy_path}: notices.{where}: {err['msg']}") from None

    def account_fields(self, account_id: str) -> Mapping[str, Any] | None:
        """The fields a notice template sees for ``account_id`` (used by ``templates preview``)."""
        from policy import balance_at, evaluate

        with self.store.session() as s:
            acc = s.get(m.Account, account_id)
            if acc is None:
                return None
            snap = load_snapshots(s, [acc])[acc.id]
            resolved = _resolve(self.policy, acc)
            d = evaluate(snap, resolved, self.now)
            ep = snap.episode
            return {"id": acc.id, "username": acc.username, "billing_email": acc.billing_email, "plan": acc.plan,
                    "currency": acc.currency, "balance": balance_at(snap, self.now),
                    "credit_limit": resolved.credit_limit, "debt_start": ep.started_at if ep else None,
                    "stage": ep.stages_taken[-1].stage if ep and ep.stages_taken else None,
                    "next_measure": d.next, "next_due": d.next.due_at if d.next else None,
                    "timezone": resolved.timezone}

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def _state(ctx: click.Context) -> CliState:
    obj = ctx.find_object(CliState)
    assert obj is not None
    return obj


@contextmanager
def _session(state: CliState, *, write: bool = True) -> Iterator[Session]:
    """A session: committed at the end for writes, always rolled back for reads."""
    s = state.store.sessions()
    try:
        if write:
            with s.begin():
                yield s
        else:
            yield s
    finally:
        s.rollback()
        s.close()


def _resolve(policy: PolicySet, acc: m.Account) -> ResolvedPolicy:
    return policy.resolve(acc.id, acc.plan, acc.reseller, acc.policy)


def _parse_at(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_instant(value, what="--at")
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _at_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--at", "at", callback=_parse_at, metavar="ISO-8601",
                        help="the moment to act at (simulation clock), with a zone, e.g. 2026-03-01T09:00:00Z")(f)


def _json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="print JSON")(f)


def _actor_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--actor", default=None, help="who does this (default: the login name); audited")(f)


def _now(state: CliState, at: datetime | None) -> datetime:
    if at is not None:
        state.now = at
    return state.now


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _console() -> Console:
    return Console(width=max(100, shutil.get_terminal_size((120, 40)).columns), soft_wrap=False)


def _table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    _console().print(table)


def _amount(text: str, what: str) -> Decimal:
    try:
        return parse_amount(text, what=what)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _moment(text: str, policy: PolicySet, what: str) -> datetime:
    """A date (local midnight in the policy's time zone) or an ISO instant with a zone."""
    raw = text.strip()
    if len(raw) == 10:
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise CliError(f"{what} {text!r} is not a date (YYYY-MM-DD) or a time with a zone") from None
        return datetime.combine(day, time(0), tzinfo=ZoneInfo(policy.timezone)).astimezone(UTC)
    try:
        return parse_instant(raw, what=what)
    except ValueError as exc:
        raise CliError(str(exc)) from None


# --- the group -----------------------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", type=click.Path(file_okay=False), default=None,
              help="configuration folder (inventory.yaml, policy.yaml, templates/); default $ARREARS_CONFIG or .")
@click.option("--db", "db", default=None, help="database URL; default $ARREARS_DB or sqlite:///<config>/arrears.db")
@click.pass_context
def cli(ctx: click.Context, config: str | None, db: str | None) -> None:
    """arrears: decides and applies notices, suspension, resumption and deletion of debtors."""
    state = CliState(discover(config, db))
    ctx.obj = state
    ctx.call_on_close(state.close)


def main() -> None:
    cli.main(prog_name="arrears")


# --- init and imports ----------------------------------------------------------------------------


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="overwrite existing sample files")
@_json_option
@click.pass_context
def init(ctx: click.Context, directory: str | None, force: bool, as_json: bool) -> None:
    """Write a sample configuration (policy.yaml, inventory.yaml, sample data) and create the database."""
    state = _state(ctx)
    folder = Path(directory).resolve() if directory else state.config.folder
    db_url = state.config.db_url
    if directory and not os.environ.get("ARREARS_DB") and ctx.parent is not None and not ctx.parent.params.get("db"):
        db_url = discover(folder).db_url
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    kept: list[str] = []
    for name in (*SAMPLE_CONFIG, *SAMPLE_DATA):
        target = folder / name
        if target.exists() and not force:
            kept.append(name)
            continue
        shutil.copyfile(SAMPLE / name, target)
        written.append(name)
    (folder / "templates").mkdir(exist_ok=True)
    state.config = Config(folder=folder, db_url=db_url)
    state._store = None
    load_policy_file(state.config)  # the folder's policy must be valid (it is ours, or the operator's)
    state.store.engine.dispose()  # opening the store created and migrated the database
    result = {"folder": str(folder), "database": db_url, "written": written, "kept": kept}
    if as_json:
        _emit_json(result)
        return
    click.echo(f"configuration in {folder}: wrote {', '.join(written) or 'nothing'}"
               + (f"; kept existing {', '.join(kept)}" if kept else ""))
    click.echo(f"database ready: {db_url}")
    click.echo(f"next: arrears --config {folder} accounts import {folder / 'accounts.jsonl'}")


def _import_command(kind: str) -> Callable[..., None]:
    @click.argument("file", type=click.Path(dir_okay=False))
    @click.option("--now", "apply_now", is_flag=True, help="apply it at once (wakes a running daemon)")
    @_json_option
    @click.pass_context
    def command(ctx: click.Context, file: str, apply_now: bool, as_json: bool) -> None:
        from agent import imports

        state = _state(ctx)
        now = datetime.now(UTC)
        path = Path(file)
        with _session(state) as s:
            if kind == "accounts":
                policy = state.policy if state.config.policy_path.is_file() else None
                summary = imports.import_accounts(s, path, now, policy)
            elif kind == "ledger":
                summary = imports.import_ledger(s, path, now)
            else:
                summary = imports.import_invoices(s, path, now)
            audit(s, at=now, actor=_actor(None), action=f"import.{kind}", reason=str(path),
                  details=summary.as_dict())
        result: dict[str, Any] = {"file": str(path), **summary.as_dict()}
        if apply_now:
            result["applied"] = apply_at_once(state, now)
        if as_json:
            _emit_json(result)
        else:
            click.echo(f"{path}: {summary.created} new, {summary.updated} updated, {summary.skipped} already known")
            if apply_now:
                click.echo(result["applied"]["message"])

    return command


@cli.group()
def accounts() -> None:
    """Accounts and their placements on hosts."""


@cli.group()
def ledger() -> None:
    """Charges, payments and credits."""


@cli.group()
def invoices() -> None:
    """Invoices (postpay expiration)."""


accounts.command("import", help="Import accounts from JSON lines or CSV (creates or updates).")(
    _import_command("accounts"))
ledger.command("import", help="Import ledger entries from JSON lines or CSV; a known ref is skipped.")(
    _import_command("ledger"))
invoices.command("import", help="Import invoices from JSON lines or CSV (creates or updates).")(
    _import_command("invoices"))


@accounts.command("list")
@_json_option
@click.pass_context
def accounts_list(ctx: click.Context, as_json: bool) -> None:
    """List accounts with their state."""
    state = _state(ctx)
    with _session(state, write=False) as s:
        rows = [{"id": a.id, "username": a.username, "plan": a.plan, "reseller": a.reseller, "state": a.state,
                 "next_check_at": _iso(a.next_check_at) if a.next_check_at != ASAP else "next tick"}
                for a in s.scalars(select(m.Account).order_by(m.Account.id))]
    if as_json:
        _emit_json(rows)
    else:
        _table("accounts", ["id", "username", "plan", "reseller", "state", "next check"],
               [list(r.values()) for r in rows])


# --- payments and admin actions ------------------------------------------------------------------


@cli.command()
@click.argument("account")
@click.argument("amount")
@click.option("--method", default="card", show_default=True, help="card, check, transfer ...")
@click.option("--ref", default=None, help="billing's reference (unique per account)")
@click.option("--now", "apply_now", is_flag=True, help="apply it at once (wakes a running daemon)")
@_at_option
@_actor_option
@_json_option
@click.pass_context
def payment(ctx: click.Context, account: str, amount: str, method: str, ref: str | None, apply_now: bool,
            at: datetime | None, actor: str | None, as_json: bool) -> None:
    """Record a payment; it takes effect on the next run, or at once with --now."""
    import re
    import uuid

    state = _state(ctx)
    now = _now(state, at)
    value = _amount(amount, "amount")
    if value <= 0:
        raise CliError(f"amount must be positive, got {value}")
    if not re.match(r"^[a-z][a-z0-9_-]{0,31}$", method):
        raise CliError(f"method {method!r} is not valid (lower-case letters, digits, - and _)")
    ref = ref or f"payment:{uuid.uuid4().hex}"
    with _session(state) as s:
        acc = get_account(s, account)
        if s.scalar(select(m.LedgerEntry.id).where(m.LedgerEntry.account == acc.id, m.LedgerEntry.ref == ref)):
            raise CliError(f"account {acc.id} already has a ledger entry with ref {ref!r}; nothing recorded")
        s.add(m.LedgerEntry(account=acc.id, at=now, amount=value, kind="payment", method=method, ref=ref,
                            imported_at=now))
        touch(acc)
        audit(s, at=now, actor=_actor(actor), action="payment", account=acc.id, reason=f"{method} payment",
              details={"amount": str(value), "method": method, "ref": ref})
    result: dict[str, Any] = {"account": account, "amount": str(value), "method": method, "ref": ref,
                              "at": _iso(now)}
    if apply_now:
        result["applied"] = apply_at_once(state, now)
    if as_json:
        _emit_json(result)
    elif apply_now:
        click.echo(f"{account}: payment of {value} by {method} recorded (ref {ref}); {result['applied']['message']}")
    else:
        click.echo(f"{account}: payment of {value} by {method} recorded (ref {ref}); it takes effect on the next run")


def _add_override(state: CliState, account: str, *, kind: str, actor: str | None, reason: str, now: datetime,
                  expires_at: datetime | None = None, amount: Decimal | None = None,
                  at: datetime | None = None) -> dict[str, Any]:
    with _session(state) as s:
        acc = get_account(s, account)
        if kind == "debt_date":
            # a new outstanding-balance date replaces the previous one
            for o in s.scalars(select(m.Override).where(m.Override.account == acc.id, m.Override.kind == kind,
                                                        m.Override.revoked_at.is_(None))):
                o.revoked_at = now
        o = m.Override(account=acc.id, kind=kind, actor=_actor(actor), reason=reason, created_at=now,
                       expires_at=expires_at, amount=amount, at=at)
        s.add(o)
        touch(acc)
        details = {"expires_at": _iso(expires_at), "amount": str(amount) if amount is not None else None,
                   "at": _iso(at)}
        audit(s, at=now, actor=o.actor, action=f"override.{kind}", account=acc.id, reason=reason, details=details)
        return {"account": acc.id, "kind": kind, "actor": o.actor, "reason": reason, **details}


@cli.command("set-debt-date")
@click.argument("account")
@click.argument("when", metavar="DATE")
@click.option("--reason", default="outstanding balance date set by an admin", show_default=True)
@_at_option
@_actor_option
@_json_option
@click.pass_context
def set_debt_date(ctx: click.Context, account: str, when: str, reason: str, at: datetime | None,
                  actor: str | None, as_json: bool) -> None:
    """Set the outstanding-balance date: the debt episode counts from DATE (YYYY-MM-DD or a time with zone)."""
    state = _state(ctx)
    now = _now(state, at)
    moment = _moment(when, state.policy, "DATE")
    result = _add_override(state, account, kind="debt_date", actor=actor, reason=reason, now=now, at=moment)
    _emit_json(result) if as_json else click.echo(f"{account}: outstanding balance date set to {_iso(moment)}")


@cli.command()
@click.argument("account")
@click.option("--until", "until", required=True, help="end of the exemption (YYYY-MM-DD or a time with zone)")
@click.option("--reason", required=True, help="why (audited)")
@_at_option
@_actor_option
@_json_option
@click.pass_context
def exempt(ctx: click.Context, account: str, until: str, reason: str, at: datetime | None, actor: str | None,
           as_json: bool) -> None:
    """Exempt an account from automatic measures until a date."""
    state = _state(ctx)
    now = _now(state, at)
    end = _moment(until, state.policy, "--until")
    if end <= now:
        raise CliError(f"--until {until} is not in the future (now is {_iso(now)})")
    result = _add_override(state, account, kind="exempt", actor=actor, reason=reason, now=now, expires_at=end)
    _emit_json(result) if as_json else click.echo(f"{account}: exempt from automatic measures until {_iso(end)}")


@cli.command()
@click.argument("account")
@click.argument("amount")
@click.option("--days", type=click.IntRange(min=1), default=None, help="how long (default: the policy's maximum)")
@click.option("--reason", default="guaranteed payment", show_default=True)
@_at_option
@_actor_option
@_json_option
@click.pass_context
def guarantee(ctx: click.Context, account: str, amount: str, days: int | None, reason: str, at: datetime | None,
              actor: str | None, as_json: bool) -> None:
    """Grant a guaranteed payment: temporary credit of AMOUNT for some days, within the policy's limits."""
    state = _state(ctx)
    now = _now(state, at)
    value = _amount(amount, "amount")
    if value <= 0:
        raise CliError(f"amount must be positive, got {value}")
    with _session(state, write=False) as s:
        acc = get_account(s, account)
        limit = _resolve(state.policy, acc).guaranteed_payment
    if value > limit.limit:
        raise CliError(f"amount {value} is over the policy's guaranteed payment limit {limit.limit} for {account}")
    days = days if days is not None else limit.days
    if days <= 0 or days > limit.days:
        raise CliError(f"--days must be between 1 and the policy's {limit.days} days for {account}")
    result = _add_override(state, account, kind="guarantee", actor=actor, reason=reason, now=now,
                           expires_at=now + timedelta(days=days), amount=value)
    _emit_json(result) if as_json else click.echo(f"{account}: guaranteed payment of {value} for {days} days")


@cli.command("can-spend")
@click.argument("account")
@click.argument("amount")
@_at_option
@_json_option
@click.pass_context
def can_spend_command(ctx: click.Context, account: str, amount: str, at: datetime | None, as_json: bool) -> None:
    """May ACCOUNT pay an order of AMOUNT from its balance? Exit 0 when allowed, 1 when not."""
    from policy import can_spend

    state = _state(ctx)
    now = _now(state, at)
    value = _amount(amount, "amount")
    if value < 0:
        raise CliError(f"amount must not be negative, got {value}")
    with _session(state, write=False) as s:
        acc = get_account(s, account)
        snap = load_snapshots(s, [acc])[acc.id]
        verdict = can_spend(snap, _resolve(state.policy, acc), now, value)
    if as_json:
        _emit_json({"allowed": verdict.allowed, "available": str(verdict.available), "reason": verdict.reason})
    else:
        click.echo(f"{verdict.reason} (available {verdict.available})")
    ctx.exit(0 if verdict.allowed else 1)


# --- plan and run --------------------------------------------------------------------------------


@cli.command("plan")
@_at_option
@_json_option
@click.pass_context
def plan_command(ctx: click.Context, at: datetime | None, as_json: bool) -> None:
    """What `run` would do now (only the accounts that are due), changing nothing."""
    from agent.tick import plan

    state = _state(ctx)
    now = _now(state, at)
    with _session(state, write=False) as s:
        items, errors = plan(s, state.policy, now)
    for e in errors:
        click.echo(f"warning: {e}", err=True)
    if as_json:
        _emit_json([i.as_dict() for i in items])
        return
    if not items:
        click.echo(f"nothing to do at {_iso(now)}")
        return
    _table(f"plan at {_iso(now)}", ["account", "stage", "action", "due at", "reason"],
           [[i.account, i.stage, i.action, _iso(i.due_at), i.reason] for i in items])


class _LazyFleet:
    """Loads inventory.yaml and builds the fleet only when host jobs exist."""

    def __init__(self, state: CliState) -> None:
        self.state = state
        self._fleet: Fleet | None = None

    def _get(self) -> Fleet:
        if self._fleet is None:
            from connectors.inventory import load_inventory
            from connectors.runner import InventoryFleet

            path = self.state.config.inventory_path
            if not path.is_file():
                raise ConfigError(f"{path}: no inventory; host jobs cannot run without it")
            self._fleet = InventoryFleet(load_inventory(path.read_text(encoding="utf-8"), str(path)))
        return self._fleet

    def apply(self, jobs: list[Job], *, progress: Progress | None = None) -> dict[str, JobResult]:
        return self._get().apply(jobs, progress=progress)

    def close(self) -> None:
        if self._fleet is not None:
            self._fleet.close()


def run_once(state: CliState, now: datetime, *, fleet: Fleet | None = None,
             sole_worker: bool = False, stop: threading.Event | None = None) -> dict[str, Any]:
    """One tick and one executor pass at ``now`` (also used by the daemon and the demo).

    ``sole_worker``: the caller holds the database's instance lock (see :mod:`agent.lock`).
    ``stop``: once set, the executor finishes the batches in flight and claims nothing new.
    """
    from agent.executor import TemplateComposer, execute
    from agent.notices import make_notifier
    from agent.tick import tick

    policy = state.policy
    settings = state.settings
    notice_settings = state.notice_settings
    notifier = composer = None
    templates = checked_templates(state)
    if notice_settings is not None and templates is not None:
        notifier = make_notifier(notice_settings, clock=lambda: now)
        composer = TemplateComposer(templates, notice_settings, policy)
    events = None
    section = policy.extra.get("events")
    if section is not None:
        from pydantic import ValidationError

        from agent.events import EventSettings, make_sink
        from agent.executor import event_sink

        try:
            sink = make_sink(EventSettings.model_validate(section))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{state.config.policy_path}: events.{where}: {err['msg']}") from None
        events = event_sink(sink) if sink is not None else None
    own_fleet = fleet is None
    active_fleet: Any = fleet if fleet is not None else _LazyFleet(state)
    try:
        with state.store.sessions() as s:
            t = tick(s, policy, now, settings)
            x = execute(s, active_fleet, notifier, now, composer=composer, settings=settings, events=events,
                        sole_worker=sole_worker, stop=stop)
    finally:
        if own_fleet:
            active_fleet.close()
    return {**t.as_dict(), "executor": x.as_dict()}


def checked_templates(state: CliState) -> Templates | None:
    """The notice templates, each stage's template present and valid; None when notices are off."""
    from agent.notices import Templates

    if state.notice_settings is None:
        return None
    tdir = state.config.templates_dir
    templates = Templates.load(tdir if tdir.is_dir() else None)
    stage_templates = {st.template for layer in _all_resolved(state) for st in layer.stages if st.template}
    templates.require(sorted(stage_templates))
    return templates


def check_config(state: CliState) -> None:
    """Load and check policy.yaml, the notice templates and inventory.yaml; raise on the first mistake."""
    from connectors.inventory import load_inventory

    _ = state.policy, state.settings
    checked_templates(state)
    path = state.config.inventory_path
    if path.is_file():
        load_inventory(path.read_text(encoding="utf-8"), str(path))


@contextmanager
def agent_lock(state: CliState, role: str = "run") -> Iterator[None]:
    """Hold the database's instance lock (SQLite) for a run: one agent at a time works on it.
    ``role`` ``daemon`` marks a holder that ``payment --now`` may wake with SIGUSR1."""
    from agent.lock import AlreadyRunning, InstanceLock, lock_path_for

    path = lock_path_for(state.config.db_url)
    if path is None:
        yield
        return
    try:
        lock = InstanceLock(path, role).acquire()
    except AlreadyRunning as exc:
        raise CliError(str(exc)) from None
    try:
        yield
    finally:
        lock.release()


def apply_at_once(state: CliState, now: datetime) -> dict[str, Any]:
    """Make recorded money take effect now: wake the daemon holding the database, else run here."""
    from agent.lock import AlreadyRunning, lock_path_for, wake_holder

    path = lock_path_for(state.config.db_url)
    try:
        pid = wake_holder(path) if path is not None else None
    except AlreadyRunning as busy:  # a run (not a daemon) is working on the database: never signalled
        who = f"pid {busy.holder}" if busy.holder else "another process"
        return {"busy": busy.holder, "message": f"another arrears run ({who}) is working on the database; "
                                                "it takes effect on the next run"}
    if pid is not None:
        return {"daemon": pid, "message": f"the daemon (pid {pid}) runs a tick now"}
    with agent_lock(state):
        result = run_once(state, now, sole_worker=True)
    taken = result["executor"]["taken"]
    return {"run": result, "message": f"applied now: {len(taken)} measures taken"
            + "".join(f"; {t['account']} {t['stage']}" for t in taken)}


def _all_resolved(state: CliState) -> list[ResolvedPolicy]:
    ps = state.policy
    out = [ps.resolve("-", None, None)]
    out += [ps.resolve("-", None, r) for r in ps.resellers]
    out += [ps.resolve("-", p, None) for p in ps.plans]
    return out


@cli.command("run")
@_at_option
@_json_option
@click.pass_context
def run_command(ctx: click.Context, at: datetime | None, as_json: bool) -> None:
    """Evaluate the due accounts, queue their measures and apply them (hosts, notices)."""
    state = _state(ctx)
    now = _now(state, at)
    with agent_lock(state):
        result = run_once(state, now, sole_worker=True)
    if as_json:
        _emit_json(result)
        return
    x = result["executor"]
    click.echo(f"run at {result['now']}: {result['accounts']} accounts due, {result['episodes_started']} episodes "
               f"started, {result['episodes_ended']} ended, {len(result['measures'])} measures queued, "
               f"{len(result['resumes'])} resumes")
    if x["taken"]:
        _table("taken", ["account", "stage", "action", "at"],
               [[t["account"], t["stage"], t["action"], t["at"]] for t in x["taken"]])
    click.echo(f"jobs: {x['done']} done, {x['retrying']} to retry, {x['failed']} failed; "
               f"{x['notices_sent']} notices sent")
    for e in [*result["errors"], *x["errors"]]:
        click.echo(f"warning: {e}", err=True)


# --- read commands -------------------------------------------------------------------------------


def _show(s: Session, state: CliState, acc: m.Account, now: datetime) -> dict[str, Any]:
    from policy import balance_at, evaluate

    snap = load_snapshots(s, [acc])[acc.id]
    resolved = _resolve(state.policy, acc)
    d = evaluate(snap, resolved, now)
    ep = open_episode(s, acc.id)
    stages: list[dict[str, Any]] = []
    in_flight: list[str] = []
    if ep is not None:
        for st in s.scalars(select(m.StageTaken).where(m.StageTaken.episode == ep.id,
                                                      m.StageTaken.action != "resume").order_by(m.StageTaken.id)):
            if st.status == "taken":
                stages.append({"stage": st.stage, "at": _iso(st.at)})
            elif st.status == "in_flight":
                in_flight.append(st.stage)
    jobs: dict[str, dict[str, Any]] = {}
    for j in s.scalars(select(m.Job).where(m.Job.account == acc.id,
                                           m.Job.status.in_(("pending", "claimed", "failed"))).order_by(m.Job.id)):
        where = j.host if j.kind == "host" and j.host else j.kind
        entry = jobs.setdefault(where, {"pending": 0, "claimed": 0, "failed": 0, "last_error": None,
                                        "next_attempt_at": None})
        entry[j.status] += 1
        if j.last_error:
            entry["last_error"] = j.last_error
        if j.status == "pending":
            entry["next_attempt_at"] = _iso(j.next_attempt_at)
    failed_notices = [{"stage": n.stage, "error": n.error, "permanent": n.permanent}
                      for n in s.scalars(select(m.Notice).where(m.Notice.account == acc.id,
                                                                m.Notice.status == "failed"))]
    return {
        "id": acc.id,
        "username": acc.username,
        "billing_email": acc.billing_email,
        "plan": acc.plan,
        "reseller": acc.reseller,
        "currency": acc.currency,
        "state": acc.state,
        "balance": str(balance_at(snap, now)),
        "credit_limit": str(resolved.credit_limit),
        "in_debt": d.in_debt,
        "holds": [h.kind for h in open_holds(s, acc.id)],
        "episode": ({"id": ep.id, "started_at": _iso(ep.started_at), "trigger": ep.trigger} if ep else None),
        "stages_taken": stages,
        "in_flight": in_flight,
        "next": ({"stage": d.next.stage, "action": d.next.action, "due_at": _iso(d.next.due_at)} if d.next else None),
        "held_back": d.held_back.text if d.held_back else None,
        "next_check_at": _iso(acc.next_check_at),
        "jobs": jobs,
        "failed_notices": failed_notices,
        "placements": [{"service": p.service, "host": p.host}
                       for p in s.scalars(select(m.Placement).where(m.Placement.account == acc.id)
                                          .order_by(m.Placement.service, m.Placement.host))],
        "at": _iso(now),
    }


@cli.command()
@click.argument("account")
@_at_option
@_json_option
@click.pass_context
def show(ctx: click.Context, account: str, at: datetime | None, as_json: bool) -> None:
    """An account's state, balance, holds, episode, stages taken, next measure and waiting host work."""
    state = _state(ctx)
    now = _now(state, at)
    with _session(state, write=False) as s:
        info = _show(s, state, get_account(s, account), now)
    if as_json:
        _emit_json(info)
        return
    con = _console()
    con.print(f"[bold]{info['id']}[/bold] ({info['username'] or '-'}) state [bold]{info['state']}[/bold], "
              f"balance {info['balance']} {info['currency']}, credit limit {info['credit_limit']}")
    con.print(f"holds: {', '.join(info['holds']) or 'none'}")
    ep = info["episode"]
    con.print(f"episode: since {ep['started_at']} ({ep['trigger']})" if ep else "episode: none")
    for st in info["stages_taken"]:
        con.print(f"  taken {st['stage']} at {st['at']}")
    for st in info["in_flight"]:
        con.print(f"  in flight: {st}")
    nxt = info["next"]
    con.print(f"next: {nxt['stage']} ({nxt['action']}) due {nxt['due_at']}" if nxt else "next: nothing scheduled")
    if info["held_back"]:
        con.print(f"held back: {info['held_back']}")
    for where, jobs in info["jobs"].items():
        con.print(f"waiting work on {where}: {jobs['pending']} pending, {jobs['claimed']} running, "
                  f"{jobs['failed']} failed" + (f"; last error: {jobs['last_error']}" if jobs["last_error"] else ""))
    for n in info["failed_notices"]:
        con.print(f"[red]notice {n['stage']} failed[/red]: {n['error']}")


@cli.command()
@click.argument("account")
@_at_option
@_json_option
@click.pass_context
def explain(ctx: click.Context, account: str, at: datetime | None, as_json: bool) -> None:
    """Why the account is where it is: triggers, thresholds, inputs, and which policy layer set what."""
    from policy import explain as explain_account

    state = _state(ctx)
    now = _now(state, at)
    with _session(state, write=False) as s:
        acc = get_account(s, account)
        snap = load_snapshots(s, [acc])[acc.id]
        resolved = _resolve(state.policy, acc)
        info = explain_account(snap, resolved, now)
    info = {"account": account, "at": _iso(now), **info, "sources": dict(resolved.sources)}
    if as_json:
        _emit_json(info)
        return
    from rich.pretty import Pretty

    _console().print(Pretty(json.loads(json.dumps(info, default=_json_default))))


@cli.command("forecast")
@click.argument("account", required=False)
@click.option("--days", type=click.IntRange(min=0, max=3650), default=30, show_default=True)
@_at_option
@_json_option
@click.pass_context
def forecast_command(ctx: click.Context, account: str | None, days: int, at: datetime | None, as_json: bool) -> None:
    """Every measure to come in the next DAYS days, assuming nothing is paid and each takes effect when due."""
    from agent.store.repo import due_accounts
    from policy import forecast

    state = _state(ctx)
    now = _now(state, at)
    until = now + timedelta(days=days)
    items: list[dict[str, Any]] = []
    with _session(state, write=False) as s:
        accs = [get_account(s, account)] if account else due_accounts(s, now, until=until)
        for i in range(0, len(accs), 500):
            batch = accs[i:i + 500]
            snaps = load_snapshots(s, batch)
            for acc in batch:
                for f in forecast(snaps[acc.id], _resolve(state.policy, acc), now, until):
                    items.append({"account": acc.id, "stage": f.stage, "action": f.action,
                                  "due_at": _iso(f.due_at), "reason": f.reason})
    items.sort(key=lambda x: (x["due_at"], x["account"]))
    if as_json:
        _emit_json(items)
        return
    if not items:
        click.echo(f"nothing due until {_iso(until)}")
        return
    _table(f"forecast {_iso(now)} .. {_iso(until)}", ["due at", "account", "stage", "action", "reason"],
           [[i["due_at"], i["account"], i["stage"], i["action"], i["reason"]] for i in items])


def _debtors(s: Session, state: CliState, now: datetime) -> list[dict[str, Any]]:
    from policy import balance_at, evaluate

    rows: list[dict[str, Any]] = []
    accs = list(s.scalars(select(m.Account).where(m.Account.state != "deleted").order_by(m.Account.id)))
    for i in range(0, len(accs), 500):
        batch = accs[i:i + 500]
        snaps = load_snapshots(s, batch)
        for acc in batch:
            snap = snaps[acc.id]
            balance = balance_at(snap, now)
            if balance >= 0 and acc.state == "active" and snap.episode is None:
                continue
            resolved = _resolve(state.policy, acc)
            d = evaluate(snap, resolved, now)
            ep = snap.episode
            tz = ZoneInfo(resolved.timezone)
            rows.append({
                "account": acc.id, "username": acc.username, "billing_email": acc.billing_email, "plan": acc.plan,
                "reseller": acc.reseller, "currency": acc.currency, "balance": str(balance),
                "credit_limit": str(resolved.credit_limit), "state": acc.state, "in_debt": d.in_debt,
                "holds": [h.kind for h in snap.holds],
                "debt_since": _iso(ep.started_at) if ep else None,
                "days_in_debt": ((now.astimezone(tz).date() - ep.started_at.astimezone(tz).date()).days
                                 if ep else None),
                "last_stage": ep.stages_taken[-1].stage if ep and ep.stages_taken else None,
                "next_stage": d.next.stage if d.next else None,
                "next_due": _iso(d.next.due_at) if d.next else None,
            })
    rows.sort(key=lambda r: (Decimal(r["balance"]), r["account"]))
    return rows


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@_at_option
@_json_option
@click.pass_context
def debtors(ctx: click.Context, fmt: str, at: datetime | None, as_json: bool) -> None:
    """The billing balance report: every account with a negative balance or in a debt episode."""
    state = _state(ctx)
    now = _now(state, at)
    with _session(state, write=False) as s:
        rows = _debtors(s, state, now)
    if as_json or fmt == "json":
        _emit_json(rows)
        return
    columns = ["account", "username", "billing_email", "plan", "reseller", "currency", "balance", "credit_limit",
               "state", "in_debt", "holds", "debt_since", "days_in_debt", "last_stage", "next_stage", "next_due"]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([" ".join(r[c]) if c == "holds" else ("" if r[c] is None else r[c]) for c in columns])
        click.echo(buf.getvalue(), nl=False)
        return
    _table(f"debtors at {_iso(now)}", ["account", "balance", "limit", "state", "holds", "since", "days", "next", "due"],
           [[r["account"], f"{r['balance']} {r['currency']}", r["credit_limit"], r["state"], ",".join(r["holds"]),
             r["debt_since"], r["days_in_debt"], r["next_stage"], r["next_due"]] for r in rows])


@cli.command()
@click.argument("account")
@_json_option
@click.pass_context
def history(ctx: click.Context, account: str, as_json: bool) -> None:
    """Episodes, stages, holds, payments, notices and the audit trail of an account."""
    state = _state(ctx)
    with _session(state, write=False) as s:
        acc = get_account(s, account)
        eps = list(s.scalars(select(m.Episode).where(m.Episode.account == acc.id).order_by(m.Episode.id)))
        info: dict[str, Any] = {
            "account": acc.id,
            "state": acc.state,
            "episodes": [{
                "id": e.id, "started_at": _iso(e.started_at), "trigger": e.trigger, "ended_at": _iso(e.ended_at),
                "end_reason": (e.end_reason or {}).get("text"),
                "stages": [{"stage": st.stage, "action": st.action, "status": st.status,
                            "queued_at": _iso(st.queued_at), "at": _iso(st.at), "reason": (st.reason or {}).get("text")}
                           for st in s.scalars(select(m.StageTaken).where(m.StageTaken.episode == e.id)
                                               .order_by(m.StageTaken.id))],
            } for e in eps],
            "holds": [{"kind": h.kind, "since": _iso(h.since), "released_at": _iso(h.released_at), "reason": h.reason,
                       "actor": h.actor}
                      for h in s.scalars(select(m.Hold).where(m.Hold.account == acc.id).order_by(m.Hold.id))],
            "ledger": [{"at": _iso(e.at), "amount": str(e.amount), "kind": e.kind, "method": e.method, "ref": e.ref}
                       for e in s.scalars(select(m.LedgerEntry).where(m.LedgerEntry.account == acc.id)
                                          .order_by(m.LedgerEntry.at, m.LedgerEntry.id))],
            "overrides": [{"kind": o.kind, "actor": o.actor, "reason": o.reason, "created_at": _iso(o.created_at),
                           "expires_at": _iso(o.expires_at), "amount": str(o.amount) if o.amount is not None else None,
                           "at": _iso(o.at), "revoked_at": _iso(o.revoked_at)}
                          for o in s.scalars(select(m.Override).where(m.Override.account == acc.id)
                                             .order_by(m.Override.id))],
            "notices": [{"stage": n.stage, "status": n.status, "to": n.to, "subject": n.subject,
                         "message_id": n.message_id, "sent_at": _iso(n.sent_at), "error": n.error}
                        for n in s.scalars(select(m.Notice).where(m.Notice.account == acc.id).order_by(m.Notice.id))],
            "audit": [{"at": _iso(a.at), "actor": a.actor, "action": a.action, "reason": a.reason,
                       "details": a.details}
                      for a in s.scalars(select(m.AuditEntry).where(m.AuditEntry.account == acc.id)
                                         .order_by(m.AuditEntry.at, m.AuditEntry.id))],
        }
    if as_json:
        _emit_json(info)
        return
    con = _console()
    con.print(f"[bold]{info['account']}[/bold] state {info['state']}")
    events: list[tuple[str, str]] = []
    for e in info["episodes"]:
        events.append((e["started_at"], f"episode {e['id']} starts ({e['trigger']})"))
        for st in e["stages"]:
            events.append((st["at"] or st["queued_at"], f"  {st['stage']} ({st['action']}) {st['status']}"))
        if e["ended_at"]:
            events.append((e["ended_at"], f"episode {e['id']} ends: {e['end_reason'] or ''}"))
    for h in info["holds"]:
        events.append((h["since"], f"hold {h['kind']} placed ({h['reason'] or ''})"))
        if h["released_at"]:
            events.append((h["released_at"], f"hold {h['kind']} released"))
    for le in info["ledger"]:
        events.append((le["at"], f"{le['kind']} {le['amount']}" + (f" by {le['method']}" if le["method"] else "")
                       + f" ref {le['ref']}"))
    for a in info["audit"]:
        events.append((a["at"], f"[dim]audit[/dim] {a['actor']}: {a['action']} {a['reason'] or ''}"))
    for n in info["notices"]:
        events.append((n["sent_at"] or "", f"notice {n['stage']} to {n['to']}: {n['status']}"
                       + (f" ({n['error']})" if n["error"] else "")))
    _table(f"history of {info['account']}", ["at", "what"],
           [[at_, what] for at_, what in sorted(events, key=lambda x: x[0])])


@cli.command()
@_json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Counts of accounts per state and of outbox jobs per status."""
    state = _state(ctx)
    with _session(state, write=False) as s:
        states = dict(s.execute(select(m.Account.state, func.count()).group_by(m.Account.state)).tuples().all())
        jobs = dict(s.execute(select(m.Job.status, func.count()).group_by(m.Job.status)).tuples().all())
    info = {"accounts": states, "jobs": jobs, "database": state.config.db_url}
    if as_json:
        _emit_json(info)
    else:
        click.echo(f"accounts: {states}; jobs: {jobs}")


# --- manual actions: suspend, resume, delete, restore, mass mail, reconcile ----------------------


def _dry_run_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--dry-run", is_flag=True, help="print what it would do; write nothing")(f)


def _now_flag(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--now", "run_now", is_flag=True,
                        help="apply it at once (as `arrears run` would) instead of on the next run")(f)


def _manual(state: CliState, dry_run: bool, action: Callable[[Session], Any]) -> Any:
    """Runs ``action`` in one transaction: committed, or rolled back for a dry run or a refusal."""
    from agent.actions import ActionRefused

    s = state.store.sessions()
    try:
        s.begin()
        try:
            result = action(s)
        except ActionRefused as exc:
            raise CliError(str(exc)) from None
        if dry_run:
            s.rollback()
        else:
            s.commit()
        return result
    finally:
        s.rollback()
        s.close()


ADMIN_TEMPLATES = {"suspend": "admin_suspended", "delete": "admin_deleted"}


def _stage_template(state: CliState, s: Session, acc: m.Account, action: str) -> str | None:
    """The notice sent when a manual ``action`` takes effect: while the account is in debt, the policy's
    own notice for that measure (its text speaks of the debt); otherwise ``admin_suspended`` /
    ``admin_deleted``, which say nothing of money. None without notices."""
    from policy import evaluate

    if state.notice_settings is None:
        return None
    resolved = _resolve(state.policy, acc)
    if not evaluate(load_snapshots(s, [acc])[acc.id], resolved, state.now).in_debt:
        return ADMIN_TEMPLATES[action]
    stage = next((st for st in resolved.stages if st.enabled and st.action == action and st.template), None)
    return stage.template if stage is not None else {"suspend": "suspended", "delete": "deleted"}[action]


def _apply_now(state: CliState, now: datetime, info: dict[str, Any]) -> None:
    """``--now``: wake the daemon holding the database, else run the tick and the executor here."""
    got = apply_at_once(state, now)
    info["applied"] = got["message"]
    if "run" in got:
        info["run"] = got["run"]["executor"]
        info["errors"] = [*got["run"]["errors"], *got["run"]["executor"]["errors"]]


def _after_manual(state: CliState, info: dict[str, Any], now: datetime, run_now: bool, dry_run: bool,
                  account: str | None) -> dict[str, Any]:
    info = {**info, "dry_run": dry_run}
    if run_now and not dry_run:
        _apply_now(state, now, info)
    if account is not None and not dry_run:
        with _session(state, write=False) as s:
            acc = get_account(s, account)
            info["state_after"] = acc.state
            info["waiting"] = len(list(s.scalars(select(m.Job.id).where(
                m.Job.account == acc.id, m.Job.status.in_(("pending", "claimed", "waiting"))))))
    return info


def _say_manual(info: dict[str, Any], as_json: bool, what: str) -> None:
    if as_json:
        _emit_json(info)
        return
    prefix = "dry run: would " if info["dry_run"] else ""
    click.echo(f"{info['account']}: {prefix}{what}")
    for kind in info.get("holds_placed", []):
        click.echo(f"  {'would place' if info['dry_run'] else 'placed'} hold {kind}")
    for kind in info.get("holds_released", []):
        click.echo(f"  {'would release' if info['dry_run'] else 'released'} hold {kind}")
    for o in info.get("overrides", []):
        click.echo(f"  {'would record' if info['dry_run'] else 'recorded'} {o['kind']} until {o['expires_at']} "
                   f"({o['actor']}: {o['reason']})")
    for j in info.get("jobs", []):
        click.echo(f"  {'would queue' if info['dry_run'] else 'queued'} {j['action']} of {j['service']} on {j['host']}")
    if info.get("notice"):
        click.echo(f"  notice {info['notice']} to the billing address once it took effect")
    for note in info.get("notes", []):
        click.echo(f"  {note}")
    if info["dry_run"]:
        click.echo("nothing was written")
    elif "run" in info:
        click.echo(f"applied: state {info['state_after']}"
                   + (f", {info['waiting']} jobs still waiting (see arrears show {info['account']})"
                      if info["waiting"] else ""))
        for e in info.get("errors", []):
            click.echo(f"warning: {e}", err=True)
    elif "applied" in info:
        click.echo(f"{info['applied']}; state {info['state_after']}")
    elif info.get("waiting"):
        click.echo(f"state {info['state_after']}; it takes effect on the next run (arrears run)")
    else:
        click.echo(f"state {info['state_after']}")


@cli.command()
@click.argument("account")
@click.option("--reason", required=True, help="why (audited)")
@_actor_option
@_at_option
@_dry_run_option
@_now_flag
@_json_option
@click.pass_context
def suspend(ctx: click.Context, account: str, reason: str, actor: str | None, at: datetime | None, dry_run: bool,
            run_now: bool, as_json: bool) -> None:
    """Suspend ACCOUNT by hand: an admin hold that payments do not lift, applied on every host.

    Once every host applied it, the billing address gets the template ``admin_suspended`` when the
    templates folder has one, else (only while the account is in debt) the policy's suspension notice."""
    from agent import actions

    state = _state(ctx)
    now = _now(state, at)
    who = _actor(actor)

    def act(s: Session) -> dict[str, Any]:
        template = _stage_template(state, s, get_account(s, account), "suspend")
        return actions.suspend(s, account, actor=who, reason=reason, now=now, notice_template=template).as_dict()

    info = _after_manual(state, _manual(state, dry_run, act), now, run_now, dry_run, account)
    _say_manual(info, as_json, f"suspend by {who} ({reason})")


@cli.command()
@click.argument("account")
@click.option("--reason", default=None, help="why (audited)")
@click.option("--grace", "grace", type=int, default=None, metavar="DAYS",
              help="the account is still in debt: record a promise to pay within DAYS days (measures wait)")
@_actor_option
@_at_option
@_dry_run_option
@_now_flag
@_json_option
@click.pass_context
def resume(ctx: click.Context, account: str, reason: str | None, grace: int | None, actor: str | None,
           at: datetime | None, dry_run: bool, run_now: bool, as_json: bool) -> None:
    """Lift the admin hold of ACCOUNT; refused while it is in debt unless --grace DAYS records a promise to pay."""
    from agent import actions

    state = _state(ctx)
    now = _now(state, at)
    who = _actor(actor)

    def act(s: Session) -> dict[str, Any]:
        return actions.resume(s, account, state.policy, actor=who, reason=reason, now=now,
                              grace_days=grace).as_dict()

    info = _after_manual(state, _manual(state, dry_run, act), now, run_now, dry_run, account)
    _say_manual(info, as_json, f"resume by {who} ({info['reason']})")


@cli.command()
@click.argument("account")
@click.option("--yes", is_flag=True, help="confirm: the account's files are archived, verified, then removed")
@click.option("--reason", default=None, help="why (audited)")
@_actor_option
@_at_option
@_dry_run_option
@_now_flag
@_json_option
@click.pass_context
def delete(ctx: click.Context, account: str, yes: bool, reason: str | None, actor: str | None, at: datetime | None,
           dry_run: bool, run_now: bool, as_json: bool) -> None:
    """Delete ACCOUNT on every host (archive -> verify -> remove); needs --yes.

    The account is recorded deleted once every host's deletion took effect; then the billing address gets
    ``admin_deleted`` when the templates folder has one, else (only while in debt) the policy's deletion notice."""
    from agent import actions

    state = _state(ctx)
    now = _now(state, at)
    who = _actor(actor)
    if not yes and not dry_run:
        raise CliError(f"deleting {account} removes its sites, mail and home (after archiving them); "
                       "add --yes to confirm, or --dry-run to see what it would do")

    def act(s: Session) -> dict[str, Any]:
        template = _stage_template(state, s, get_account(s, account), "delete")
        return actions.delete(s, account, actor=who, reason=reason, now=now, notice_template=template).as_dict()

    info = _after_manual(state, _manual(state, dry_run, act), now, run_now, dry_run, account)
    _say_manual(info, as_json, f"delete by {who} ({info['reason']})")


@cli.command()
@click.argument("account")
@click.option("--reason", default=None, help="why (audited)")
@_actor_option
@_at_option
@_dry_run_option
@_now_flag
@_json_option
@click.pass_context
def restore(ctx: click.Context, account: str, reason: str | None, actor: str | None, at: datetime | None,
            dry_run: bool, run_now: bool, as_json: bool) -> None:
    """Restore a deleted ACCOUNT from its archives; it comes back suspended (admin hold) until an admin resumes it."""
    from agent import actions

    state = _state(ctx)
    now = _now(state, at)
    who = _actor(actor)

    def act(s: Session) -> dict[str, Any]:
        return actions.restore(s, account, actor=who, reason=reason, now=now).as_dict()

    info = _after_manual(state, _manual(state, dry_run, act), now, run_now, dry_run, account)
    _say_manual(info, as_json, f"restore by {who} ({info['reason']})")


@cli.command()
@click.option("--debtors", is_flag=True, required=True, help="send to every debtor (billing addresses only)")
@click.option("--stage", "stage", default=None, help="only debtors whose last measure taken is this stage")
@click.option("--template", "template", required=True, help="the notice template to send")
@_actor_option
@_at_option
@_dry_run_option
@_now_flag
@_json_option
@click.pass_context
def mail(ctx: click.Context, debtors: bool, stage: str | None, template: str, actor: str | None, at: datetime | None,
         dry_run: bool, run_now: bool, as_json: bool) -> None:
    """Mass mail to debtors through the notices outbox: once per account, template and day."""
    from agent import actions
    from agent.notices import Templates

    state = _state(ctx)
    now = _now(state, at)
    who = _actor(actor)
    if not debtors:
        raise CliError("say who receives it: --debtors")
    if state.notice_settings is None:
        raise CliError(f"{state.config.policy_path}: notices are not configured (notices: section)")
    if stage is not None:
        names = {st.name for layer in _all_resolved(state) for st in layer.stages}
        if stage not in names:
            raise CliError(f"--stage {stage!r} is not a stage of the policy ({', '.join(sorted(names))})")
    tdir = state.config.templates_dir
    Templates.load(tdir if tdir.is_dir() else None).require([template])

    def act(s: Session) -> dict[str, Any]:
        return actions.mass_mail(s, state.policy, template=template, now=now, actor=who, stage=stage).as_dict()

    info: dict[str, Any] = {**_manual(state, dry_run, act), "dry_run": dry_run}
    if run_now and not dry_run:
        _apply_now(state, now, info)
    if as_json:
        _emit_json(info)
        return
    verb = "would queue" if dry_run else "queued"
    click.echo(f"mass mail {template} ({info['date']}): {verb} {len(info['queued'])}, "
               f"{len(info['already'])} already queued today, {len(info['no_address'])} without a billing address")
    for q in info["queued"]:
        click.echo(f"  {q['account']} -> {q['to']}")
    if dry_run:
        click.echo("nothing was written")
    elif "run" in info:
        click.echo(f"{info['run']['notices_sent']} sent")
    elif "applied" in info:
        click.echo(info["applied"])
    else:
        click.echo("they are sent on the next run (arrears run)")


@cli.command("reconcile")
@click.option("--fix", is_flag=True, help="queue the jobs that bring the hosts back to the recorded state")
@_actor_option
@_at_option
@_dry_run_option
@_now_flag
@_json_option
@click.pass_context
def reconcile_command(ctx: click.Context, fix: bool, actor: str | None, at: datetime | None, dry_run: bool,
                      run_now: bool, as_json: bool) -> None:
    """Read every host's facts and report accounts whose real state differs from the recorded one.

    Exit 0 when the hosts agree (or --fix queued the repairs), 1 when differences are left unrepaired."""
    from agent.reconcile import reconcile

    state = _state(ctx)
    now = _now(state, at)
    who = _actor(actor)
    fleet: Any = _LazyFleet(state)
    try:
        report = _manual(state, dry_run, lambda s: reconcile(s, fleet, now, fix=fix, actor=who))
    finally:
        fleet.close()
    info: dict[str, Any] = {**report.as_dict(), "dry_run": dry_run, "fix": fix}
    if run_now and fix and not dry_run and report.queued:
        _apply_now(state, now, info)
    unrepaired = [d for d in report.differences if not fix or d.fix is None]
    if as_json:
        _emit_json(info)
    else:
        click.echo(f"reconcile at {_iso(now)}: {report.checked} placements read, {len(report.differences)} differ"
                   + (f", {len(report.busy)} accounts with work in flight skipped" if report.busy else ""))
        if report.differences:
            _table("differences", ["account", "service", "host", "recorded", "observed", "fix"],
                   [[d.account, d.service, d.host, d.recorded, d.observed, d.fix or "admin (restore?)"]
                    for d in report.differences])
        for e in report.errors:
            click.echo(f"warning: {e['account']} {e['service']} on {e['host']}: {e['error']}", err=True)
        if report.queued:
            verb = "would queue" if dry_run else "queued"
            click.echo(f"{verb} {len(report.queued)} repair jobs"
                       + ("" if dry_run else f"; {info['applied']}" if "applied" in info
                          else "; they run on the next run (arrears run)"))
        if dry_run:
            click.echo("nothing was written")
    if unrepaired:
        ctx.exit(1)


def _register_optional_groups() -> None:
    """Command groups that live in their own modules (templates, hosts)."""
    import importlib

    for module, name in (("agent.templates_cli", "templates"), ("agent.hosts_cli", "hosts"),
                         ("agent.demo_cli", "demo"), ("agent.daemon_cli", "daemon")):
        try:
            group = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        cli.add_command(group, name)


_register_optional_groups()

if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)

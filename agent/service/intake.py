"""Billing's data coming in: imports of accounts, ledger lines and invoices (from a file, a stream or
records already parsed), each in one transaction and audited; and ``init``, the sample configuration and
a ready database. The importer (:mod:`agent.imports`) checks every record; its located errors become
:class:`InvalidInput` here."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from agent.config import Config, discover, load_policy_file
from agent.service.errors import InvalidInput
from agent.service.results import ImportResult, InitResult

if TYPE_CHECKING:
    from agent.imports import ImportSummary, Records
    from agent.service.arrears import Arrears

__all__ = ["SAMPLE", "import_records", "import_stream", "init", "located", "upsert_account"]

SAMPLE = Path(__file__).parent.parent / "sample"
SAMPLE_CONFIG = ("policy.yaml", "inventory.yaml")
SAMPLE_DATA = ("accounts.jsonl", "ledger.jsonl", "invoices.jsonl")


@contextmanager
def located(name: str, *, records: bool = False, single: bool = False) -> Iterator[None]:
    """Turn the importer's located error about ``name`` into :class:`InvalidInput`: for a file or stream
    its ``location`` is ``name:line``; for parsed ``records`` the field path is ``records[N].FIELD``
    (``FIELD`` alone for a ``single`` record) and the message starts with it."""
    from agent.imports import ImportFileError

    try:
        yield
    except ImportFileError as exc:
        if not (records or single) or exc.filename != name:
            where = exc.filename if exc.line is None else f"{exc.filename}:{exc.line}"
            raise InvalidInput(str(exc), exc.field, where) from None
        field = "" if exc.field == "line" else exc.field
        if records:
            index = f"records[{(exc.line or 1) - 1}]"
            field = f"{index}.{field}" if field else index
        raise InvalidInput(f"{field}: {exc.message}" if field else exc.message, field) from None


def _run(svc: Arrears, kind: str, source: Path | Records, now: datetime, actor: str | None,
         apply_now: bool) -> tuple[ImportSummary, Any]:
    from agent import imports
    from agent.store.repo import audit

    if apply_now:
        _ = svc.inventory  # applying it works on hosts: an invalid inventory refuses the import first
    with svc.session() as s:
        if kind == "accounts":
            policy = svc.policy if svc.has_policy else None
            summary = imports.import_accounts(s, source, now, policy, svc.inventory)
        elif kind == "ledger":
            summary = imports.import_ledger(s, source, now)
        elif kind == "invoices":
            summary = imports.import_invoices(s, source, now)
        else:
            raise InvalidInput(f"kind {kind!r} is not one of accounts, ledger, invoices", "kind")
        audit(s, at=now, actor=svc.actor_of(actor), action=f"import.{kind}", reason=str(source),
              details=summary.as_dict())
    return summary, svc.apply_at_once(now=now) if apply_now else None


def import_stream(svc: Arrears, kind: str, source: str | os.PathLike[str] | IO[str], now: datetime,
                  actor: str | None, apply_now: bool) -> ImportResult:
    from agent.imports import Records

    where: Path | Records
    if isinstance(source, str | os.PathLike):
        where = Path(source)
    else:
        name = getattr(source, "name", None)
        stream = source if source.seekable() else io.StringIO(source.read())
        where = Records(name if isinstance(name, str) else "stream", stream=stream)
    with located(str(where)):
        summary, applied = _run(svc, kind, where, now, actor, apply_now)
    return ImportResult(str(where), summary.created, summary.updated, summary.skipped, applied)


def import_records(svc: Arrears, kind: str, records: Iterable[Mapping[str, Any]], now: datetime,
                   actor: str | None, apply_now: bool, source: str) -> ImportResult:
    from agent.imports import Records

    with located(source, records=True):
        summary, applied = _run(svc, kind, Records(source, list(records)), now, actor, apply_now)
    return ImportResult(source, summary.created, summary.updated, summary.skipped, applied)


def upsert_account(svc: Arrears, record: Mapping[str, Any], now: datetime, actor: str | None) -> str:
    """Create or update one account; returns its id."""
    from agent.imports import Records

    name = "account"
    with located(name, single=True):
        summary, _ = _run(svc, "accounts", Records(name, [record]), now, actor, False)
    (aid,) = summary.accounts
    return aid


def init(folder: Path, db: str | None, force: bool) -> InitResult:
    """Write the sample files into ``folder`` (kept when present, unless ``force``) and make the database."""
    from agent.store.db import open_store

    folder = folder.resolve()
    db_url = db or discover(folder).db_url
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
    config = Config(folder=folder, db_url=db_url)
    load_policy_file(config)  # the folder's policy must be valid (it is ours, or the operator's)
    store = open_store(config.db_url)  # opening the store creates and migrates the database
    store.engine.dispose()
    store.close()
    return InitResult(str(folder), db_url, written, kept)

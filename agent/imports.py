"""Importing accounts, ledger entries and invoices from JSON lines or CSV files.

A file is read as a stream and validated and written a chunk of :data:`CHUNK_ROWS` lines at a time (one
query loads what the chunk's lines refer to, a few bulk statements write it), all in the caller's one
transaction: a bad line, in whichever chunk, rejects the whole file with ``file:line: field: message``
and the caller rolls everything back. Memory stays flat in the file's size (what is kept across chunks
is the set of account ids the file names). Placements are checked
by their kind's validator (:mod:`connectors.resources`, the one the connectors use) against the host in
the inventory; who owns a resource is checked as each chunk's placements are written
(:mod:`agent.store.placements`), so a clash with a stored account or an earlier line also rejects the
whole file. Ledger entries are
keyed by ``(account, ref)``: importing the same file twice imports nothing the second time. An entry
without ``ref`` gets one derived from its content, so the same line is never imported twice either.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec
from sqlalchemy import bindparam, or_, select, tuple_, union, update
from sqlalchemy.orm import Session

from agent.instants import EARLIEST, LATEST, check_instant, parse_instant
from agent.store import models as m
from agent.store.bulk import in_keys, insert_ignore, table_of, write_rows
from agent.store.placements import PlacementsRefused, Wanted, sync_placements
from connectors.resources import resource_keys
from connectors.validate import UnsafeValue, account_id, unpaired_surrogate
from policy.errors import LocatedError
from policy.money import DEFAULT_CURRENCY, check_currency, parse_amount

if TYPE_CHECKING:
    from connectors.inventory import Inventory
    from policy.loader import PolicySet

__all__ = [
    "ASAP",
    "CHUNK_ROWS",
    "EARLIEST",
    "LATEST",
    "LEDGER_KINDS",
    "ImportFileError",
    "ImportSummary",
    "Records",
    "check_instant",
    "import_accounts",
    "import_invoices",
    "import_ledger",
    "ledger_entry",
    "parse_amount",
    "parse_instant",
    "parse_json",
    "read_records",
    "touch",
]

ASAP = datetime(1970, 1, 1, tzinfo=UTC)  # next_check_at for "look at it on the next tick"
CHUNK_ROWS = 5000  # lines validated and written together
LEDGER_KINDS = ("charge", "payment", "credit", "refund", "adjustment")
_SERVICE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_METHOD = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ImportFileError(LocatedError, ValueError):
    """One bad line of an import file; nothing of the file was written."""


@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    accounts: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, int]:
        return {"created": self.created, "updated": self.updated, "skipped": self.skipped}


# --- values --------------------------------------------------------------------------------------


class _Row:
    __slots__ = ("data", "filename", "line")

    def __init__(self, filename: str, line: int, data: Mapping[str, Any]) -> None:
        self.filename = filename
        self.line = line
        self.data = data

    def fail(self, name: str, message: str) -> ImportFileError:
        return ImportFileError(self.filename, self.line, name, message)

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def text(self, name: str, *, required: bool = False, pattern: re.Pattern[str] | None = None,
             max_len: int = 300) -> str | None:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self.fail(name, "is required")
            return None
        if type(value) is not str:
            value = _as_text(value)
            if not isinstance(value, str):
                raise self.fail(name, f"must be text, got {_kind(value)}")
        if not value or len(value) > max_len or "\x00" in value or "\r" in value or "\n" in value:
            raise self.fail(name, f"must be 1 to {max_len} characters on one line")
        if not value.isascii() and (half := unpaired_surrogate(value)) is not None:
            raise self.fail(name, half)
        if pattern is not None and not pattern.match(value):
            raise self.fail(name, f"{value!r} is not valid (expected {pattern.pattern})")
        return value

    def instant(self, name: str, *, required: bool = False) -> datetime | None:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self.fail(name, "is required")
            return None
        if not isinstance(value, str):
            raise self.fail(name, f"must be an ISO-8601 time with a zone, got {_kind(value)}")
        try:
            return parse_instant(value, what=name)
        except ValueError as exc:
            raise self.fail(name, str(exc)) from None

    def amount(self, name: str, currency: str) -> Decimal:
        value = self.data.get(name)
        if value is None:
            raise self.fail(name, "is required")
        try:
            return parse_amount(value, currency=currency, what=name)
        except ValueError as exc:
            raise self.fail(name, str(exc)) from None

    def currency(self, name: str = "currency") -> str | None:
        value = self.text(name, max_len=3)
        if value is None:
            return None
        try:
            return check_currency(value)
        except ValueError as exc:
            raise self.fail(name, str(exc)) from None

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        raise self.fail(name, f"must be true or false, got {value!r}")

    def account(self, name: str = "account") -> str:
        value = self.text(name, required=True, max_len=64)
        assert value is not None
        try:
            return account_id(value)
        except UnsafeValue as exc:
            raise self.fail(name, str(exc)) from None


def _as_text(value: object) -> object:
    """A number read where text is wanted as its text (as :meth:`_Row.text` takes it); anything else as is."""
    return str(value) if isinstance(value, int | Decimal) and not isinstance(value, bool) else value


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", bool: "true/false", str: "text"}.get(type(value), type(value).__name__)


# --- reading files -------------------------------------------------------------------------------

_JSON_COLUMNS = ("resources", "policy")
MAX_JSON_DEPTH = 32  # levels of nesting in one record; a billing record needs three or four
_MAX_NUMBER = 100  # characters of one JSON number


class _BadJSON(ValueError):
    pass


def _json_number(text: str) -> str:
    if len(text) > _MAX_NUMBER:
        raise _BadJSON(f"has a number of {len(text)} characters; at most {_MAX_NUMBER} are accepted")
    return text


def _json_constant(text: str) -> object:
    raise _BadJSON(f"has {text}, which is not a JSON value; write numbers as decimals or text")


def _json_depth_ok(value: object) -> bool:
    level: list[object] = [value]
    for _ in range(MAX_JSON_DEPTH + 1):
        level = [v for item in level if isinstance(item, dict | list)
                 for v in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return True
    return False


_DECODER = json.JSONDecoder(parse_float=lambda t: Decimal(_json_number(t)), parse_int=lambda t: int(_json_number(t)),
                            parse_constant=_json_constant)
# msgspec's decoder gives the same values (fractions and exponents as Decimal of their text, integers as int)
# several times faster; a text it refuses, or that may hold a number too long to accept, goes to the
# decoder above, which decides what is accepted and says what is wrong (tests/agent/test_import_fast_paths.py)
_FAST_DECODER = msgspec.json.Decoder(float_hook=Decimal)
_LONG_NUMBER = re.compile(f"[-+.eE0-9]{{{_MAX_NUMBER + 1}}}")


def _decode(text: str) -> Any:
    if _LONG_NUMBER.search(text) is None:
        try:
            return _FAST_DECODER.decode(text)
        except Exception:  # whatever msgspec refuses, the exact decoder decides and explains
            pass
    return _DECODER.decode(text)


def parse_json(text: str) -> Any:
    """One JSON value, numbers as Decimal/int (never float); ValueError (with what to do) for malformed
    JSON, NaN/Infinity, numbers over 100 digits and nesting deeper than :data:`MAX_JSON_DEPTH`."""
    try:
        value = _decode(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON: {exc.msg} at column {exc.colno}") from None
    except _BadJSON as exc:
        raise ValueError(str(exc)) from None
    except RecursionError:
        value = None
    else:
        # nesting is never deeper than the brackets opened: most lines need no walk
        if text.count("{") + text.count("[") <= MAX_JSON_DEPTH or _json_depth_ok(value):
            if "\\u" in text:  # only an escape makes half a pair: the file's own text is valid Unicode
                _no_surrogates(value)
            return value
    raise ValueError(f"is nested deeper than {MAX_JSON_DEPTH} levels; flatten the record")


def _no_surrogates(value: object) -> None:
    level: list[object] = [value]
    while level:
        item = level.pop()
        if isinstance(item, str):
            if (half := unpaired_surrogate(item)) is not None:
                raise ValueError(half)
        elif isinstance(item, dict):
            level.extend(item)
            level.extend(item.values())
        elif isinstance(item, list):
            level.extend(item)


class Records:
    """Records that are not read from a file: already parsed (``records``, numbered from 1 as lines are)
    or JSON lines in a text stream that can be read again (``stream``). ``name`` stands for the file's
    path in errors (``name:line: field: ...``). Every import takes one where it takes a path."""

    def __init__(self, name: str, records: Sequence[Mapping[str, Any]] | None = None, *,
                 stream: IO[str] | None = None) -> None:
        self.name = name
        self.records = records
        self.stream = stream

    def __str__(self) -> str:
        return self.name

    def read(self) -> Iterator[tuple[int, dict[str, Any]]]:
        if self.stream is not None:
            self.stream.seek(0)
            yield from _json_records(self.name, self.stream)
            return
        for n, record in enumerate(self.records or (), 1):
            if not isinstance(record, Mapping):
                raise ImportFileError(self.name, n, "line", f"must be a JSON object, got {_kind(record)}")
            yield n, dict(record)


def read_records(path: Path | Records) -> Iterator[tuple[int, dict[str, Any]]]:
    """The records of a JSON lines or CSV file (by the ``.csv`` suffix), each with its line number, read
    as a stream (one line at a time); or those of :class:`Records`.

    JSON numbers are read as Decimal or int (never float). In CSV, empty cells are absent and the
    ``resources`` and ``policy`` columns hold JSON. A cell may hold up to 128 KiB (the csv module's limit).
    """
    if isinstance(path, Records):
        yield from path.read()
        return
    name = str(path)
    is_csv = path.suffix.lower() == ".csv"
    try:
        f = path.open(encoding="utf-8", newline="" if is_csv else None)
    except FileNotFoundError:
        raise ImportFileError(name, None, "file", "no such file") from None
    except OSError as exc:
        raise ImportFileError(name, None, "file", f"cannot read: {exc}") from None
    with f:
        try:
            yield from (_csv_records(name, f) if is_csv else _json_records(name, f))
        except (OSError, UnicodeDecodeError) as exc:
            raise ImportFileError(name, None, "file", f"cannot read: {exc}") from None


def _csv_records(name: str, f: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(f)
    try:
        if not reader.fieldnames:
            return
        for row in reader:
            line = reader.line_num
            if None in row:
                raise ImportFileError(name, line, "line", "has more cells than the header")
            rec: dict[str, Any] = {}
            for key, cell in row.items():
                key = (key or "").strip()
                if cell is None or cell == "":
                    continue
                if key in _JSON_COLUMNS:
                    try:
                        rec[key] = parse_json(cell)
                    except ValueError as exc:
                        raise ImportFileError(name, line, key, str(exc)) from None
                else:
                    rec[key] = cell
            yield line, rec
    except csv.Error as exc:
        # line_num counts the lines of the records read completely; the bad one starts on the next
        raise ImportFileError(name, reader.line_num + 1, "line",
                              f"is not valid CSV ({exc}); quote cells, keep each under 128 KiB") from None


def _json_records(name: str, f: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    n = 0
    for physical in f:
        for raw in physical.splitlines():  # the line breaks str.splitlines knows, as when the text was split whole
            n += 1
            start = raw.lstrip()
            if not start or start[0] == "#":
                continue
            try:
                value = parse_json(raw)
            except ValueError as exc:
                raise ImportFileError(name, n, "line", str(exc)) from None
            if not isinstance(value, dict):
                raise ImportFileError(name, n, "line", f"must be a JSON object, got {_kind(value)}")
            yield n, value


class _Chunk:
    """Up to :data:`CHUNK_ROWS` records and their line numbers, iterated as ``(line, record)`` pairs.

    Kept as two lists rather than a list of pairs: a pair that holds a record stays tracked by the garbage
    collector, and a chunk's 5,000 of them, alive across collections, made the collector's full passes
    (each a walk over every object of the process) run every other chunk."""

    __slots__ = ("lines", "records")

    def __init__(self) -> None:
        self.lines: list[int] = []
        self.records: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.lines)

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return zip(self.lines, self.records, strict=True)


def _chunks(records: Iterable[tuple[int, dict[str, Any]]]) -> Iterator[_Chunk]:
    chunk = _Chunk()
    for line, data in records:
        chunk.lines.append(line)
        chunk.records.append(data)
        if len(chunk.lines) == CHUNK_ROWS:
            yield chunk
            chunk = _Chunk()
    if chunk.lines:
        yield chunk


@lru_cache(maxsize=8)
def _field_set(known: Sequence[str]) -> frozenset[str]:
    return frozenset(known)


def _check_fields(row: _Row, known: Sequence[str]) -> None:
    if row.data.keys() <= _field_set(known):
        return
    for key in row.data:
        if key not in known:
            raise row.fail(str(key), f"unknown field; known fields: {', '.join(known)}")


# built once: a statement built per chunk leaves reference cycles behind (its bound values), which only a
# full garbage collection frees
_ACCOUNTS = table_of(m.Account)
_CURRENCIES = select(_ACCOUNTS.c.id, _ACCOUNTS.c.currency).where(in_keys(_ACCOUNTS.c.id, "ids"))
_STORED_ACCOUNTS = select(_ACCOUNTS).where(in_keys(_ACCOUNTS.c.id, "ids"))


def _account_currencies(session: Session, records: Iterable[tuple[int, Mapping[str, Any]]]) -> dict[str, str]:
    """The currency of every stored account the ``account`` fields of ``records`` (a chunk) name."""
    wanted = list({aid for _, d in records if isinstance(aid := d.get("account"), str)})
    if not wanted:
        return {}
    found: dict[str, str] = {}
    # a few hundred rows at a time: a chunk's result rows, alive at once, would keep the garbage collector busy
    for rows in session.connection().execute(_CURRENCIES, {"ids": wanted}).partitions(500):
        found.update(rows)
    return found


def _stored_account(row: _Row, currencies: Mapping[str, str]) -> tuple[str, str]:
    """The account a ledger or invoice line names, and its currency."""
    aid = row.account()
    if aid not in currencies:
        raise row.fail("account", f"unknown account {aid!r}; import it with `arrears accounts import`")
    return aid, currencies[aid]


def touch(acc: m.Account, now: datetime) -> None:
    """Something the decision reads changed at ``now`` (the command's clock): look at the account on the next
    tick, and let a tick that evaluated it before this change know its decision is stale. ``changed_at`` only
    ever moves forward, so a second change at the same ``--at`` still differs from what the tick saw."""
    acc.next_check_at = ASAP
    acc.changed_at = _after(acc.changed_at, now)


def _after(previous: datetime | None, now: datetime) -> datetime:
    if previous is None or previous < now:
        return now
    return previous + timedelta(microseconds=1)


_CHANGED_SINCE = select(_ACCOUNTS.c.id).where(in_keys(_ACCOUNTS.c.id, "ids"),
                                               _ACCOUNTS.c.changed_at >= bindparam("now"))
_MARK_DUE = (update(_ACCOUNTS).where(in_keys(_ACCOUNTS.c.id, "ids"))
             .where(or_(_ACCOUNTS.c.changed_at.is_(None), _ACCOUNTS.c.changed_at < bindparam("now")))
             .values(next_check_at=bindparam("asap"), changed_at=bindparam("now")))


def _mark_due(session: Session, ids: Iterable[str], now: datetime) -> None:
    wanted = sorted(set(ids))
    conn = session.connection()
    loaded = [obj for obj in session.identity_map.values() if isinstance(obj, m.Account)]
    for i in range(0, len(wanted), CHUNK_ROWS):
        chunk = wanted[i:i + CHUNK_ROWS]
        # the rare account changed at or after ``now`` already (a second import at the same clock, a replay
        # going back): one step past its stamp; then every other one at ``now``, with one statement
        later = list(conn.execute(_CHANGED_SINCE, {"ids": chunk, "now": now}).scalars())
        for acc in session.scalars(select(m.Account).where(m.Account.id.in_(later))) if later else ():
            touch(acc, now)
        session.flush()
        conn.execute(_MARK_DUE, {"ids": chunk, "now": now, "asap": ASAP})
    marked = set(wanted)
    for acc in loaded:  # accounts this session holds see the new values when next read
        if acc.id in marked:
            session.expire(acc, ["next_check_at", "changed_at"])


# --- accounts ------------------------------------------------------------------------------------

_ACCOUNT_FIELDS = ("id", "username", "billing_email", "plan", "reseller", "currency", "trial_ends_at",
                   "has_billing_profile", "policy", "resources")


@dataclass
class _Placement(Wanted):
    at: str  # where it is in the line: resources.web or resources.web[1]


def _placements(row: _Row, inventory: Inventory | None) -> list[_Placement]:
    """The placements of a line, each resource checked by its kind's validator (the one its connector
    uses) with the host's settings from ``inventory``: the host must be there and run the service."""
    resources = row.data.get("resources")
    if resources is None:
        return []
    if not isinstance(resources, dict):
        raise row.fail("resources", f"must be a mapping of service to {{host, ...}}, got {_kind(resources)}")
    out: list[_Placement] = []
    seen: set[tuple[str, str]] = set()
    for service, entries in resources.items():
        where = f"resources.{service}"
        if not isinstance(service, str) or not _SERVICE.match(service):
            raise row.fail(where, "is not a valid service name (web, mail, login, home ...)")
        items = entries if isinstance(entries, list) else [entries]
        for i, entry in enumerate(items):
            at = where if not isinstance(entries, list) else f"{where}[{i}]"
            if not isinstance(entry, dict):
                raise row.fail(at, f"must be a mapping with a host, got {_kind(entry)}")
            host = entry.get("host")
            if not isinstance(host, str) or not _HOST.match(host):
                raise row.fail(f"{at}.host", "is required: the inventory name of the host")
            if (service, host) in seen:
                raise row.fail(at, f"names host {host!r} twice for {service}")
            seen.add((service, host))
            resource = {k: _plain(v) for k, v in entry.items() if k != "host"}
            settings = None
            if inventory is not None:
                cfg = inventory.hosts.get(host)
                if cfg is None:
                    known = ", ".join(sorted(inventory.hosts)) or "none"
                    raise row.fail(f"{at}.host", f"host {host!r} is not in {inventory.source} (known hosts: "
                                                 f"{known}); add it there or name a host that is")
                svc = cfg.services.get(service)
                if svc is None:
                    runs = ", ".join(sorted(cfg.services)) or "nothing"
                    raise row.fail(at, f"host {host!r} does not run {service} in {inventory.source} (it runs: "
                                       f"{runs}); name a host that runs {service}, or add the service to {host}")
                settings = svc.settings
            try:
                keys = resource_keys(service, resource, settings)
            except UnsafeValue as exc:
                name = getattr(exc, "field", "")
                raise row.fail(f"{at}.{name}" if name else at,
                               f"{exc}; fix it in the billing export (the {service} connector refuses it)") from None
            out.append(_Placement(service, host, resource, keys, at))
    return out


def _plain(value: Any) -> Any:
    """JSON-storable: Decimals from the parser become int or str."""
    if isinstance(value, Decimal):
        # a whole number of sane size as int; anything else (1e999999 would be a million digits) as text
        return int(value) if value.adjusted() < 18 and value == value.to_integral_value() else str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _with_money(session: Session, ids: Sequence[str]) -> set[str]:
    """Those of ``ids`` with a ledger entry or an invoice (one query)."""
    if not ids:
        return set()
    return set(session.scalars(union(select(m.LedgerEntry.account).where(m.LedgerEntry.account.in_(ids)),
                                     select(m.Invoice.account).where(m.Invoice.account.in_(ids)))))


def _account_currency(row: _Row, aid: str, stored: str | None, has_money: bool) -> str | None:
    """The currency of an account: billing's ``currency`` when the line has one, else the one it was first
    imported with (``stored``); ``None`` for a new account without one (the policy's default then applies).
    A currency never changes under recorded money (``has_money``: it has ledger entries or invoices)."""
    currency = row.currency()
    if stored is None or currency is None or currency == stored:
        return currency or stored
    if has_money:
        raise row.fail("currency", f"account {aid} has ledger entries or invoices in {stored}; "
                       f"its currency cannot change to {currency}")
    return currency


def _first_line(path: Path | Records, key: Callable[[Mapping[str, Any]], object], wanted: object,
                before: int) -> int | None:
    """The first line before ``before`` whose record's ``key`` is ``wanted`` (the file is read again: only
    for the message of a line that repeats an earlier one)."""
    for line, data in read_records(path):
        if line >= before:
            return None
        try:
            if key(data) == wanted:
                return line
        except (TypeError, ValueError):
            continue
    return None


def _refusal(row: _Row, pl: _Placement, aid: str, exc: PlacementsRefused) -> ImportFileError:
    problem = exc.problem
    return row.fail(f"{pl.at}.{problem.field}", f"{problem}; if it has moved to {aid}, run `arrears accounts "
                                                f"move-resource {problem.owner} {aid} --service {pl.service} "
                                                f"--host {pl.host} --reason WHY` first")


_ACCOUNT_COLUMNS = ("username", "billing_email", "plan", "reseller", "currency", "trial_ends_at", "has_billing_profile",
                    "policy", "resources")


def import_accounts(session: Session, path: Path | Records, now: datetime, policy: PolicySet | None = None,
                    inventory: Inventory | None = None) -> ImportSummary:
    """Create or update the accounts of ``path`` and their placements; each is looked at on the next tick.

    Each placement is validated for its host in ``inventory`` (when given); a resource that another
    account holds (stored, or earlier in the same file), or a home inside or around another account's
    home, refuses the file with the line and field. Nothing of the file is written then (the caller's
    transaction is rolled back on the error). Each distinct (plan, reseller, currency) is resolved
    against ``policy`` once; an account with its own policy layer is resolved alone."""
    name = str(path)
    summary = ImportSummary()
    resolved: dict[tuple[str | None, str | None, str | None], str] = {}
    table = table_of(m.Account)
    session.flush()
    for chunk in _chunks(read_records(path)):
        ids = sorted({aid for _, d in chunk if isinstance(aid := _as_text(d.get("id")), str)})
        stored = {r.id: r for r in session.connection().execute(_STORED_ACCOUNTS, {"ids": ids})} if ids else {}
        money = _with_money(session, [aid for _, d in chunk if isinstance(aid := _as_text(d.get("id")), str)
                                      and aid in stored and d.get("currency") is not None
                                      and d["currency"] != stored[aid].currency])
        parsed: list[tuple[_Row, dict[str, Any], list[_Placement]]] = []
        for line, data in chunk:
            row = _Row(name, line, data)
            _check_fields(row, _ACCOUNT_FIELDS)
            aid = row.account("id")
            if aid in summary.accounts:
                first = _first_line(path, lambda d: account_id(_as_text(d.get("id"))), aid, line)
                raise row.fail("id", f"account {aid!r} already appears on line {first}")
            summary.accounts.add(aid)
            email = row.text("billing_email", pattern=_EMAIL, max_len=320)
            layer = row.data.get("policy")
            if layer is not None and not isinstance(layer, dict):
                raise row.fail("policy", f"must be a mapping of policy settings, got {_kind(layer)}")
            plan = row.text("plan", max_len=100)
            reseller = row.text("reseller", max_len=100)
            layer = _plain(layer) if layer else None
            before = stored.get(aid)
            currency = _account_currency(row, aid, before.currency if before is not None else None, aid in money)
            if policy is not None:
                currency = _resolved_currency(row, policy, resolved, aid, plan, reseller, layer, currency)
            parsed.append((row, {
                "id": aid,
                "username": row.text("username", max_len=200),
                "billing_email": email,
                "plan": plan,
                "reseller": reseller,
                "currency": currency or DEFAULT_CURRENCY,
                "trial_ends_at": row.instant("trial_ends_at"),
                "has_billing_profile": row.boolean("has_billing_profile", True),
                "policy": layer,
                "resources": _plain(row.data.get("resources") or {}),
            }, _placements(row, inventory)))
        new, changed = [], []
        for _row, rec, _pls in parsed:
            before = stored.get(rec["id"])
            if before is None:
                new.append({**rec, "state": "active", "next_check_at": ASAP, "changed_at": now, "created_at": now,
                            "updated_at": now})
            elif any(getattr(before, k) != rec[k] for k in _ACCOUNT_COLUMNS):
                changed.append({**rec, "next_check_at": ASAP, "changed_at": _after(before.changed_at, now),
                                "updated_at": now})
            else:
                summary.skipped += 1
        summary.created += len(new)
        summary.updated += len(changed)
        write_rows(session, table, new)
        write_rows(session, table, changed, key=("id",),
                   update=(*_ACCOUNT_COLUMNS, "next_check_at", "changed_at", "updated_at"))
        # a new account without placements has nothing to sync (it holds nothing, and gives up nothing)
        placed = [p for p in parsed if p[2] or p[1]["id"] in stored]
        try:
            sync_placements(session, [(rec["id"], list(pls)) for _row, rec, pls in placed])
        except PlacementsRefused as exc:
            row, rec, pls = placed[exc.position]
            raise _refusal(row, pls[exc.wanted], rec["id"], exc) from None
    return summary


def _resolved_currency(row: _Row, policy: PolicySet, cache: dict[tuple[str | None, str | None, str | None], str],
                       aid: str, plan: str | None, reseller: str | None, layer: dict[str, Any] | None,
                       currency: str | None) -> str:
    """The account's currency after its policy (the policy's default when billing names none); the policy's
    amounts are checked against it. Accounts without their own layer share the result of their
    (plan, reseller, currency)."""
    from policy import PolicyError

    key = (plan, reseller, currency)
    if layer is None and key in cache:
        return cache[key]
    try:
        result = policy.resolve(aid, plan, reseller, layer, currency).currency
    except PolicyError as exc:
        if exc.filename != f"account {aid}":  # the policy file's amount does not fit this currency
            raise row.fail("currency", f"{currency}: {exc}" if currency else str(exc)) from None
        raise row.fail(f"policy.{exc.field}" if exc.field else "policy", exc.message) from None
    if layer is None:
        cache[key] = result
    return result


# --- ledger --------------------------------------------------------------------------------------

_LEDGER_FIELDS = ("account", "at", "amount", "kind", "method", "ref")


def _auto_ref(aid: str, at: datetime, amount: Decimal, kind: str, method: str | None) -> str:
    digest = hashlib.sha256(f"{aid}|{at.isoformat()}|{amount}|{kind}|{method or ''}".encode()).hexdigest()
    return f"auto:{digest[:24]}"


def _ledger_line(row: _Row, currencies: Mapping[str, str]) -> dict[str, Any]:
    """The ledger entry of one checked record: ``account``, ``at``, ``amount``, ``kind``, ``method``, ``ref``
    (derived from the content when the record has none)."""
    _check_fields(row, _LEDGER_FIELDS)
    aid, currency = _stored_account(row, currencies)
    at = row.instant("at", required=True)
    assert at is not None
    amount = row.amount("amount", currency)
    if amount == 0:
        raise row.fail("amount", "must not be zero")
    kind = row.text("kind", max_len=32) or ("payment" if amount > 0 else "charge")
    if kind not in LEDGER_KINDS:
        raise row.fail("kind", f"{kind!r} is not one of {', '.join(LEDGER_KINDS)}")
    if kind in ("payment", "credit") and amount < 0:
        raise row.fail("amount", f"a {kind} is positive (charges are negative), got {amount}")
    if kind == "charge" and amount > 0:
        raise row.fail("amount", f"a charge is negative (payments are positive), got {amount}")
    method = row.text("method", pattern=_METHOD, max_len=32)
    ref = row.text("ref", max_len=200) or _auto_ref(aid, at, amount, kind, method)
    return {"account": aid, "at": at, "amount": amount, "kind": kind, "method": method, "ref": ref}


def ledger_entry(session: Session, name: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The ledger entry one record (``name`` line 1 in errors) stands for, checked as an import checks it,
    without writing it: ``account``, ``at``, ``amount``, ``kind``, ``method``, ``ref``."""
    return _ledger_line(_Row(name, 1, data), _account_currencies(session, [(1, data)]))


def import_ledger(session: Session, path: Path | Records, now: datetime) -> ImportSummary:
    """Add the entries of ``path``; an entry whose ``(account, ref)`` is already known (stored, or earlier
    in the file) is skipped."""
    name = str(path)
    summary = ImportSummary()
    table = table_of(m.LedgerEntry)
    session.flush()
    for chunk in _chunks(read_records(path)):
        currencies = _account_currencies(session, chunk)
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        row = _Row(name, 0, {})  # one for the chunk, pointed at each line in turn
        for row.line, row.data in chunk:
            entry = _ledger_line(row, currencies)
            entry["imported_at"] = now
            rows.setdefault((entry["account"], entry["ref"]), entry)
        written = insert_ignore(session, table, list(rows.values()), key=("account", "ref"))
        summary.created += len(written)
        summary.skipped += len(chunk) - len(written)
        summary.accounts.update(aid for aid, _ref in written)
    _mark_due(session, summary.accounts, now)
    return summary


# --- invoices ------------------------------------------------------------------------------------

_INVOICE_FIELDS = ("account", "id", "issued_at", "due_at", "amount", "paid_at")


def _invoice_key(data: Mapping[str, Any]) -> tuple[str, str] | None:
    aid, inv = data.get("account"), _as_text(data.get("id"))
    return (account_id(aid), inv) if isinstance(aid, str) and isinstance(inv, str) else None


def import_invoices(session: Session, path: Path | Records, now: datetime) -> ImportSummary:
    """Create or update invoices by ``(account, id)`` (a later file may add ``paid_at``)."""
    name = str(path)
    summary = ImportSummary()
    table = table_of(m.Invoice)
    seen: set[int] = set()  # hashes of the (account, id) of the lines before
    columns = ("issued_at", "due_at", "amount", "paid_at")
    session.flush()
    for chunk in _chunks(read_records(path)):
        currencies = _account_currencies(session, chunk)
        rows: list[dict[str, Any]] = []
        for line, data in chunk:
            row = _Row(name, line, data)
            _check_fields(row, _INVOICE_FIELDS)
            aid, currency = _stored_account(row, currencies)
            inv = row.text("id", required=True, max_len=200)
            assert inv is not None
            if hash((aid, inv)) in seen:
                first = _first_line(path, _invoice_key, (aid, inv), line)
                if first is not None:
                    raise row.fail("id", f"invoice {inv!r} of account {aid!r} already appears on line {first}")
            seen.add(hash((aid, inv)))
            issued = row.instant("issued_at", required=True)
            due = row.instant("due_at", required=True)
            assert issued is not None and due is not None
            if due < issued:
                raise row.fail("due_at", "is before issued_at")
            amount = row.amount("amount", currency)
            if amount <= 0:
                raise row.fail("amount", f"an invoice amount is positive, got {amount}")
            rows.append({"account": aid, "invoice_id": inv, "issued_at": issued, "due_at": due, "amount": amount,
                         "paid_at": row.instant("paid_at")})
        keys = [(r["account"], r["invoice_id"]) for r in rows]
        stored = {(r.account, r.invoice_id): r for r in session.execute(
            select(table).where(tuple_(table.c.account, table.c.invoice_id).in_(keys)))} if keys else {}
        writes = []
        for rec in rows:
            cur = stored.get((rec["account"], rec["invoice_id"]))
            if cur is None:
                summary.created += 1
            elif any(getattr(cur, k) != rec[k] for k in columns):
                summary.updated += 1
            else:
                summary.skipped += 1
                continue
            writes.append(rec)
            summary.accounts.add(rec["account"])
        write_rows(session, table, writes, key=("account", "invoice_id"), update=columns)
    _mark_due(session, summary.accounts, now)
    return summary

"""The ``arrears`` group itself: its state (:class:`CliState`), its error handling and the helpers commands share.

Every command finds its configuration folder from ``--config DIR`` / ``ARREARS_CONFIG`` / the current
directory and its database from ``--db URL`` / ``ARREARS_DB`` / ``arrears.db`` in that folder. Read
commands take ``--json``; time-dependent commands take ``--at ISO-8601`` (with a zone). A bad input
gives one message on stderr and a non-zero exit (2; ``can-spend`` answers "no" with 1), and writes
nothing. The commands live in the sibling modules; :mod:`agent.cli` registers them on :data:`cli`.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from agent.config import Config, ConfigError, discover
from agent.service.values import wall_clock

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from agent.notices import NoticeSettings
    from agent.service import Arrears

    class InertTable(Table):
        def __init__(self, title: object = None, columns: list[str] | None = None, **kwargs: Any) -> None: ...

__all__ = [
    "CliError",
    "CliState",
    "InertTable",
    "actor_option",
    "api",
    "at_option",
    "cli",
    "console",
    "csv_cell",
    "echo",
    "emit_csv",
    "emit_json",
    "emit_json_array",
    "get_state",
    "inert",
    "iso",
    "json_default",
    "json_option",
    "option_names",
    "set_now",
    "start_up",
    "table",
    "wall_clock",
]


class CliError(click.ClickException):
    """One clear message, exit code 2."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        first, *more = self.format_message().split("\n")
        echo(f"error: {first}", err=True, file=file)
        for line in more:
            echo(line, err=True, file=file)


class _Internal(CliError):
    exit_code = 3


def _known_errors() -> tuple[type[BaseException], ...]:
    from agent.notices import TemplateError
    from agent.service import ServiceError
    from agent.store.db import StoreError
    from connectors.inventory import InventoryError
    from policy import PolicyError

    return (PolicyError, ConfigError, ServiceError, StoreError, TemplateError, InventoryError)


class _Group(click.Group):
    """Turns every error into one message (never a traceback) with a non-zero exit code, and imports a
    command's module only when that command runs (:meth:`add_lazy`): ``--help`` lists the commands from
    their short help, known without importing them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, tuple[Callable[[], click.Command], str]] = {}
        self.commands = _LoadedCommands(self, self.commands)

    def add_lazy(self, name: str, load: Callable[[], click.Command], short_help: str) -> None:
        """Register the command ``name``, made by ``load()`` the first time it is needed; ``short_help`` is
        the first line of its docstring (tests/agent/test_fast_start.py holds the two equal)."""
        self.lazy[name] = (load, short_help)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            return self.commands[cmd_name]  # loaded on first use (_LoadedCommands)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(self.lazy))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = [n for n in self.list_commands(ctx) if n in self.lazy or not self.commands[n].hidden]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = [(n, self.commands[n].get_short_help_str(limit) if n in self.commands
                 else click.Command(n, help=self.lazy[n][1]).get_short_help_str(limit)) for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            error = _cli_error(ctx, exc)
            if error is None:
                if os.environ.get("ARREARS_DEBUG"):
                    raise
                error = _Internal(f"internal error: {type(exc).__name__}: {exc} (set ARREARS_DEBUG=1 for details)")
            raise error from None


class _LoadedCommands(dict[str, click.Command]):
    """A group's commands by name: a lazy command (:meth:`_Group.add_lazy`) is loaded when first looked up
    by name, so ``group.commands[name]`` works for every command; ``in`` tells whether it is loaded yet."""

    def __init__(self, group: _Group, commands: Mapping[str, click.Command]) -> None:
        super().__init__(commands)
        self.group = group

    def __missing__(self, name: str) -> click.Command:
        if name not in self.group.lazy:
            raise KeyError(name)
        command = self[name] = self.group.lazy[name][0]()
        return command


def _cli_error(ctx: click.Context, exc: Exception) -> CliError | None:
    """The message for an error that is not a bug: the machine's (database locked, disk full), the
    input's or the configuration's; None for anything else."""
    from sqlalchemy.exc import SQLAlchemyError

    from agent.cli.failures import describe

    config = getattr(ctx.obj, "config", None)
    message = describe(exc, getattr(config, "db_url", None))
    if message is not None:
        return CliError(message)
    if isinstance(exc, _known_errors()):
        return CliError(str(exc))
    if isinstance(exc, SQLAlchemyError):
        return CliError(f"database error: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
    return None


# --- shared state --------------------------------------------------------------------------------




@dataclass
class CliState:
    """What every command needs: the configuration, the command's clock and the Python API for them
    (:class:`agent.service.Arrears`, opened when first used)."""

    config: Config
    now: datetime = field(default_factory=wall_clock)
    _service: Arrears | None = None

    @property
    def service(self) -> Arrears:
        if self._service is None or self._service.config != self.config:
            from agent.service import Arrears

            if self._service is not None:
                self._service.close()
            self._service = Arrears(self.config, clock=lambda: self.now)
        return self._service

    # names other command groups (templates, hosts) look for
    @property
    def inventory_path(self) -> Path:
        return self.config.inventory_path

    @property
    def templates_dir(self) -> Path:
        return self.config.templates_dir

    @property
    def notice_settings(self) -> NoticeSettings | None:
        return self.service.notice_settings

    def account_fields(self, account_id: str) -> Mapping[str, Any] | None:
        """The fields a notice template sees for ``account_id`` (used by ``templates preview``)."""
        return self.service.notice_fields(account_id, now=self.now)

    def close(self) -> None:
        if self._service is not None:
            self._service.close()
            self._service = None


def get_state(ctx: click.Context) -> CliState:
    obj = ctx.find_object(CliState)
    assert obj is not None
    return obj


def api(ctx: click.Context, at: datetime | None = None) -> tuple[Arrears, datetime]:
    """The command's Python API and its clock: ``--at`` when given (kept in the state), else its start."""
    state = get_state(ctx)
    return state.service, set_now(state, at)


@contextmanager
def option_names(**names: str) -> Iterator[None]:
    """Word an invalid value by the command's own name for it: ``until=\"--until\"`` turns the service's
    ``until 2026-01-01 is not in the future`` into ``--until 2026-01-01 is not in the future``."""
    from agent.service import InvalidInput

    try:
        yield
    except InvalidInput as exc:
        label = names.get(exc.field)
        if label is None or not exc.message.startswith(exc.field):
            raise
        raise CliError(label + exc.message[len(exc.field):]) from None


@contextmanager
def start_up() -> Iterator[None]:
    """A command's start-up (imports, the database opened, the policy loaded): the collector does not run
    during it, as what it makes (modules, classes, the policy) lives to the end; at its end all of that
    is frozen out of the collector's later walks (``gc.freeze``), and the collector runs again."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


# --- shared options and parsing ------------------------------------------------------------------


def _parse_at(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    from agent.service.values import parse_instant

    try:
        return parse_instant(value, what="--at")
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def at_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--at", "at", callback=_parse_at, metavar="ISO-8601",
                        help="the moment to act at (simulation clock), with a zone, e.g. 2026-03-01T09:00:00Z")(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="print JSON")(f)


def actor_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--actor", default=None, help="who does this (default: the login name); audited")(f)


def set_now(state: CliState, at: datetime | None) -> datetime:
    """The command's clock: ``--at`` when given (kept in the state), else the state's start time."""
    if at is not None:
        state.now = at
    return state.now


# --- output --------------------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def emit_json(value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Print ``value`` as JSON, exactly (JSON escapes control characters itself)."""
    click.echo(json.dumps(value, indent=indent, default=json_default, ensure_ascii=False, sort_keys=sort_keys))


_FLUSH_EVERY = 200  # items printed per write: a report still streams, without one write per row


def emit_json_array(items: Iterable[Any]) -> None:
    """Print ``items`` as one JSON array, each item as it comes (the same text :func:`emit_json` prints for
    the list): a report streams its rows instead of building the whole document first."""
    first = True
    pending: list[str] = []
    for item in items:
        text = _flat_item(item)
        if text is None:
            text = json.dumps(item, indent=2, default=json_default, ensure_ascii=False).replace("\n", "\n  ")
        pending.append(("[\n  " if first else ",\n  ") + text)
        first = False
        if len(pending) >= _FLUSH_EVERY:
            click.echo("".join(pending), nl=False)
            pending.clear()
    click.echo("".join(pending) + ("[]" if first else "\n]"))


def _flat_item(item: Any) -> str | None:
    """An array item that is a non-empty object of text, true, false or null values as ``json.dumps`` with
    ``indent=2`` writes it one level in (the common report row, without the pure-Python indenting
    encoder); None for anything else, which ``json.dumps`` writes."""
    if type(item) is not dict or not item:
        return None
    parts = []
    for key, value in item.items():
        if type(key) is not str:
            return None
        if type(value) is str:
            parts.append(f"{encode_basestring(key)}: {encode_basestring(value)}")
        elif value is None or value is True or value is False:
            parts.append(f"{encode_basestring(key)}: {json.dumps(value)}")
        else:
            return None
    return "{\n    " + ",\n    ".join(parts) + "\n  }"


def json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# Human output. Whatever a command prints for a person comes from billing or from hosts in part
# (usernames, plans, refs, job errors) and goes through inert(): control characters are shown as
# escapes (ESC as the four characters \x1b) and nothing in it is ever read as Rich markup or emoji.
# echo() and table() apply it to every value they are given; styled pieces are inert(value, style).

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def inert(value: object, style: str = "") -> Text:
    """``value`` as text that prints literally: C0/C1 control characters, DEL, line separators and
    bidirectional overrides shown as ``\\xNN`` / ``\\uNNNN``; a :class:`rich.text.Text`, which Rich
    never parses for markup or emoji. ``None`` is the empty text. The only way data reaches a person."""
    from rich.text import Text  # Rich is imported by the first output for a person, not by every command

    text = "" if value is None else str(value)
    return Text(_UNSAFE.sub(_escape_char, text), style=style)


def _inert_part(part: object) -> Text:
    from rich.text import Text

    return part if isinstance(part, Text) else inert(part)


def console(*, err: bool = False, file: IO[str] | None = None) -> Console:
    """The console every human output is printed on: it never reads markup, emoji codes or highlights in
    a plain string (data goes through :func:`inert` all the same)."""
    from rich.console import Console

    return Console(width=max(100, shutil.get_terminal_size((120, 40)).columns), soft_wrap=False, stderr=err,
                   file=file, highlight=False, emoji=False, markup=False)


def echo(*parts: object, err: bool = False, file: IO[str] | None = None) -> None:
    """Print one line made of ``parts``: each a :class:`Text` made with :func:`inert` (styled), or any
    value, made inert here. Never wrapped (like ``click.echo``)."""
    from rich.text import Text

    line = Text()
    for part in parts:
        line.append_text(_inert_part(part))
    console(err=err, file=file).print(line, soft_wrap=True)


@cache
def _inert_table() -> type[InertTable]:
    """:class:`InertTable`, defined when first used (it is a Rich table: Rich comes with it)."""
    from rich.table import Table

    class InertTable(Table):
        """A Rich table whose title and cells are made inert (a cell that is a :class:`Text` is kept)."""

        def __init__(self, title: object = None, columns: list[str] | None = None, **kwargs: Any) -> None:
            super().__init__(title=None if title is None else _inert_part(title), **kwargs)
            for c in columns or []:
                self.add_column(c, overflow="fold")

        def add_row(self, *cells: Any, **kwargs: Any) -> None:
            super().add_row(*(_inert_part(c) for c in cells), **kwargs)

    InertTable.__module__ = __name__
    return InertTable


def __getattr__(name: str) -> Any:
    if name == "InertTable":
        return _inert_table()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def table(title: object, columns: list[str], rows: list[list[Any]]) -> None:
    """Print a table of ``rows`` (None shows as an empty cell); every cell is made inert."""
    out = _inert_table()(title, columns, show_lines=False)
    for r in rows:
        out.add_row(*r)
    console().print(out)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


def csv_cell(value: object, *, numeric: bool = False) -> str:
    """One CSV cell that a spreadsheet will not run (OWASP's rule for CSV injection): a cell starting
    with ``=``, ``+``, ``-``, ``@``, tab or CR gets a leading single quote. A number in a ``numeric``
    column (``-12.50``) is left as it is: a plain number is no formula, and it stays a number."""
    text = "" if value is None else str(value)
    if numeric and _NUMBER.match(text):
        return text
    return "'" + text if text.startswith(_FORMULA_START) else text


def emit_csv(columns: list[str], rows: Iterable[list[Any]], *, numeric: frozenset[str] = frozenset(),
             chunk: int = 500) -> None:
    """Print ``rows`` as CSV under a header of ``columns``, every cell through :func:`csv_cell`, written
    out every ``chunk`` rows as they come."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for n, r in enumerate(rows, 1):
        w.writerow([csv_cell(v, numeric=c in numeric) for c, v in zip(columns, r, strict=True)])
        if n % chunk == 0:
            _echo_data(buf)
    _echo_data(buf)


def _echo_data(buf: io.StringIO) -> None:
    click.echo(buf.getvalue(), nl=False, color=True)  # data, kept exact: click would strip "ESC [...m" from it
    buf.seek(0)
    buf.truncate()


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

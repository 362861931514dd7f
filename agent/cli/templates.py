"""``arrears templates``: the variables notices can use, and a preview of one template for one account.

The CLI's context object (a mapping or an object with attributes) may carry: ``templates`` (a loaded
:class:`~agent.notices.Templates`), else ``templates_dir`` or ``config.templates_dir`` (the operator's
folder, used when it exists; otherwise the defaults alone); and what :func:`agent.notices.preview_context`
reads (``account_fields``, ``notice_settings``, ``now``; ``--at`` sets ``now``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from agent.cli.app import at_option, echo, emit_json, inert
from agent.notices import (
    VARIABLES,
    TemplateError,
    Templates,
    preview_context,
    render_page,
    sample_context,
)

__all__ = ["templates"]


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _context_mapping(obj: Any, at: datetime | None) -> dict[str, Any]:
    """What :func:`preview_context` reads; ``--at`` becomes the clock of the state, so the account's own
    fields (its balance, its next measure) are computed for the same moment the dates are rendered at."""
    if at is not None:
        if isinstance(obj, Mapping):
            obj = {**obj, "now": at}
        elif obj is not None:
            obj.now = at
    return {key: _get(obj, key) for key in ("account_fields", "notice_settings", "now")}


def _load(obj: Any) -> Templates:
    loaded = _get(obj, "templates")
    if isinstance(loaded, Templates):
        return loaded
    directory: Path | None = None
    for folder in (_get(obj, "templates_dir"), _get(_get(obj, "config"), "templates_dir")):
        if folder is not None and Path(folder).is_dir():
            directory = Path(folder)  # the operator's folder; without one, the defaults alone
            break
    try:
        return Templates.load(directory)
    except TemplateError as exc:
        raise _error(exc) from exc


def _error(message: object) -> click.ClickException:
    """An error whose text (it may quote a template, an account) prints literally."""
    return click.ClickException(inert(message).plain)


def _print(text: str) -> None:
    """A rendered notice or page, line by line, each made inert (billing's data is in it)."""
    for line in text.split("\n"):
        echo(line)


@click.group("templates")
def templates() -> None:
    """Notice templates: the variables they can use, and a preview."""


@templates.command("vars")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def vars_command(as_json: bool) -> None:
    """List the variables (AutoInserts) templates can use, with an example value each."""
    example = sample_context()
    if as_json:
        emit_json([{"name": name, "description": text, "example": str(example[name])}
                   for name, text in VARIABLES.items()])
        return
    width = max(len(name) for name in VARIABLES) + len("{{  }}")
    for name, text in VARIABLES.items():
        echo(f"{'{{ ' + name + ' }}':<{width}}  {text} (e.g. {example[name]})")


@templates.command("preview")
@click.argument("name")
@click.argument("account")
@click.option("--html", "show_html", is_flag=True, help="Print the HTML part instead of the text.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@at_option
@click.pass_context
def preview_command(ctx: click.Context, name: str, account: str, show_html: bool, as_json: bool,
                    at: datetime | None) -> None:
    """Render template NAME for ACCOUNT as it would be sent at --at (default: now); nothing is sent."""
    loaded = _load(ctx.obj)
    try:
        context = preview_context(_context_mapping(ctx.obj, at), account)
    except LookupError as exc:
        raise _error(exc.args[0] if exc.args else exc) from exc
    except ValueError as exc:
        raise _error(f"account {account}: {exc}") from exc
    try:
        if name in loaded.pages():
            page = render_page(loaded, context, name)
            if as_json:
                emit_json({"name": name, "html": page})
            else:
                _print(page)
            return
        rendered = loaded.render(name, context)
    except TemplateError as exc:
        raise _error(exc) from exc
    if as_json:
        emit_json({"name": name, "to": context["billing_email"], "subject": rendered.subject,
                   "text": rendered.text, "html": rendered.html})
        return
    if show_html:
        if rendered.html is None:
            raise _error(f"template {name!r} has no HTML part")
        _print(rendered.html)
        return
    echo(f"To: {context['billing_email']}")
    echo(f"Subject: {rendered.subject}")
    echo("")
    _print(rendered.text.removesuffix("\n"))

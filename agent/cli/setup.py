"""Setting up: ``arrears init`` (a sample configuration and the database) and the imports of billing's data
(``accounts import``, ``ledger import``, ``invoices import``) with the groups that hold them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click

from agent.cli.app import api, echo, emit_json, get_state, json_option
from agent.config import Config, discover
from agent.service import Arrears

__all__ = ["accounts", "import_accounts", "import_invoices", "import_ledger", "init", "invoices", "ledger"]


@click.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="overwrite existing sample files")
@json_option
@click.pass_context
def init(ctx: click.Context, directory: str | None, force: bool, as_json: bool) -> None:
    """Write a sample configuration (policy.yaml, inventory.yaml, sample data) and create the database."""
    state = get_state(ctx)
    folder = Path(directory).resolve() if directory else state.config.folder
    db_url = state.config.db_url
    if directory and not os.environ.get("ARREARS_DB") and ctx.parent is not None and not ctx.parent.params.get("db"):
        db_url = discover(folder).db_url
    made = Arrears.init(folder, db=db_url, force=force)
    state.config = Config(folder=Path(made.folder), db_url=made.database)
    result = made.to_json()
    written = made.written
    kept = made.kept
    if as_json:
        emit_json(result)
        return
    echo(f"configuration in {folder}: wrote {', '.join(written) or 'nothing'}"
               + (f"; kept existing {', '.join(kept)}" if kept else ""))
    echo(f"database ready: {db_url}")
    echo(f"next: arrears --config {folder} accounts import {folder / 'accounts.jsonl'}")


def _import_command(kind: str) -> Callable[..., None]:
    @click.argument("file", type=click.Path(dir_okay=False))
    @click.option("--now", "apply_now", is_flag=True, help="apply it at once (wakes a running daemon)")
    @json_option
    @click.pass_context
    def command(ctx: click.Context, file: str, apply_now: bool, as_json: bool) -> None:
        svc, now = api(ctx)
        path = Path(file)
        summary = svc.import_stream(kind, path, now=now, apply_now=apply_now)
        result = summary.to_json()
        if as_json:
            emit_json(result)
        else:
            echo(f"{path}: {summary.created} new, {summary.updated} updated, {summary.skipped} already known")
            if summary.applied is not None:
                echo(summary.applied.message)

    return command


@click.group()
def accounts() -> None:
    """Accounts and their placements on hosts."""


@click.group()
def ledger() -> None:
    """Charges, payments and credits."""


@click.group()
def invoices() -> None:
    """Invoices (postpay expiration)."""


import_accounts = click.command("import", help="Import accounts from JSON lines or CSV (creates or updates).")(
    _import_command("accounts"))
import_ledger = click.command("import", help="Import ledger entries from JSON lines or CSV; a known ref is skipped.")(
    _import_command("ledger"))
import_invoices = click.command("import", help="Import invoices from JSON lines or CSV (creates or updates).")(
    _import_command("invoices"))

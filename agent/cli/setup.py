"""Setting up: ``arrears init`` (a sample configuration and the database) and the imports of billing's data
(``accounts import``, ``ledger import``, ``invoices import``) with the groups that hold them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agent.cli.app import actor_name, echo, emit_json, get_state, json_option, session
from agent.cli.run import apply_at_once
from agent.config import Config, discover, load_policy_file
from agent.store.repo import audit

if TYPE_CHECKING:
    from connectors.inventory import Inventory

__all__ = ["SAMPLE", "accounts", "import_accounts", "import_invoices", "import_ledger", "init", "invoices", "ledger"]

SAMPLE = Path(__file__).parent.parent / "sample"
SAMPLE_CONFIG = ("policy.yaml", "inventory.yaml")
SAMPLE_DATA = ("accounts.jsonl", "ledger.jsonl", "invoices.jsonl")


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
        emit_json(result)
        return
    echo(f"configuration in {folder}: wrote {', '.join(written) or 'nothing'}"
               + (f"; kept existing {', '.join(kept)}" if kept else ""))
    echo(f"database ready: {db_url}")
    echo(f"next: arrears --config {folder} accounts import {folder / 'accounts.jsonl'}")


def _inventory(config: Config) -> Inventory | None:
    """The folder's inventory, when it has one: placements are checked against its hosts and services."""
    from connectors.inventory import load_inventory_file

    return load_inventory_file(config.inventory_path) if config.inventory_path.is_file() else None


def _import_command(kind: str) -> Callable[..., None]:
    @click.argument("file", type=click.Path(dir_okay=False))
    @click.option("--now", "apply_now", is_flag=True, help="apply it at once (wakes a running daemon)")
    @json_option
    @click.pass_context
    def command(ctx: click.Context, file: str, apply_now: bool, as_json: bool) -> None:
        from agent import imports

        state = get_state(ctx)
        now = state.now
        path = Path(file)
        if apply_now:
            _ = state.inventory  # applying it works on hosts: an invalid inventory refuses the import first
        with session(state) as s:
            if kind == "accounts":
                policy = state.policy if state.config.policy_path.is_file() else None
                summary = imports.import_accounts(s, path, now, policy, _inventory(state.config))
            elif kind == "ledger":
                summary = imports.import_ledger(s, path, now)
            else:
                summary = imports.import_invoices(s, path, now)
            audit(s, at=now, actor=actor_name(None), action=f"import.{kind}", reason=str(path),
                  details=summary.as_dict())
        result: dict[str, Any] = {"file": str(path), **summary.as_dict()}
        if apply_now:
            result["applied"] = apply_at_once(state, now)
        if as_json:
            emit_json(result)
        else:
            echo(f"{path}: {summary.created} new, {summary.updated} updated, {summary.skipped} already known")
            if apply_now:
                echo(result["applied"]["message"])

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

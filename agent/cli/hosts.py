"""``arrears hosts``: commands about the inventory's hosts (``check``, ``prune``, ``prepare``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from agent.cli.app import emit_json

__all__ = ["hosts"]


def _inventory_path(ctx: click.Context, inventory: str | None, config: str | None) -> Path:
    if inventory:
        return Path(inventory)
    from_parent = getattr(ctx.obj, "inventory_path", None)  # a Config the main command may have put there
    if config is None and isinstance(from_parent, Path):
        return from_parent
    from agent.config import discover

    return discover(config).inventory_path


def _render(report: dict[str, Any]) -> None:
    from rich.text import Text

    from agent.cli.app import InertTable, console, echo, inert

    if not report["hosts"]:
        echo(f"no hosts in {report['inventory']}")
        return
    table = InertTable(f"hosts in {report['inventory']}", ["host", "address", "reachable", "host key", "services"])
    problems: list[str] = []
    for h in report["hosts"]:
        where = f"{h.get('user')}@{h['address']}:{h['port']}" if h.get("address") else h.get("transport", "")
        services = Text(" ").join(inert(f"{s['service']}/{s['backend']}", "green" if s["ok"] else "red")
                                  for s in h.get("services", []))
        key = h.get("host_key", "")
        reach = inert("yes", "green") if h.get("reachable") else inert("no", "red")
        if h.get("connect_ms") is not None and h.get("reachable"):
            reach.append(f" ({h['connect_ms']:.0f} ms)")
        table.add_row(h["host"], where or "", reach, inert(key, "green" if key in ("ok", "not applicable") else "red"),
                      services)
        if h.get("error"):
            problems.append(f"{h['host']}: {h['error']}" + (" (transient: retry later)" if h.get("transient") else ""))
        for s in h.get("services", []):
            if not s["ok"] and s.get("detail") not in (None, "", "not checked"):
                problems.append(f"{h['host']}: {s['service']}/{s['backend']}: {s['detail']}")
    console().print(table)
    for line in problems:
        echo(inert("-", "red"), " ", line)
    echo(inert("all hosts ok", "green") if report["ok"] else inert("some hosts have problems", "red"))


def _say_error(exc: Exception) -> None:
    from agent.cli.app import echo

    for line in str(exc).split("\n"):
        echo(line, err=True)


@click.group("hosts")
def hosts() -> None:
    """Inspect the hosts of the inventory."""


@hosts.command("check")
@click.option("--inventory", "inventory", type=click.Path(dir_okay=False), default=None,
              help="inventory.yaml (default: the one in the configuration folder)")
@click.option("--config", "config", type=click.Path(file_okay=False), default=None, envvar="ARREARS_CONFIG",
              help="configuration folder holding inventory.yaml")
@click.option("--host", "only", multiple=True, help="check only this host (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.pass_context
def check(ctx: click.Context, inventory: str | None, config: str | None, only: tuple[str, ...],
          as_json: bool) -> None:
    """Connect to every host: reachability, host-key status and which backends answer.

    Exit status: 0 when every host is fine, 1 when some host has a problem, 2 when the inventory is invalid.
    """
    from connectors.hosts_check import check_hosts
    from connectors.inventory import InventoryError, load_inventory_file

    path = _inventory_path(ctx, inventory, config)
    try:
        inv = load_inventory_file(path)
    except InventoryError as exc:
        _say_error(exc)
        ctx.exit(2)
    report = check_hosts(inv, hosts=list(only) or None)
    if as_json:
        emit_json(report, sort_keys=True)
    else:
        _render(report)
    ctx.exit(0 if report["ok"] else 1)


@hosts.command("prune")
@click.option("--inventory", "inventory", type=click.Path(dir_okay=False), default=None,
              help="inventory.yaml (default: the one in the configuration folder)")
@click.option("--config", "config", type=click.Path(file_okay=False), default=None, envvar="ARREARS_CONFIG",
              help="configuration folder holding inventory.yaml")
@click.option("--host", "only", multiple=True, help="only this host (repeatable)")
@click.option("--dry-run", is_flag=True, help="list the archives that would go; remove nothing")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.pass_context
def prune(ctx: click.Context, inventory: str | None, config: str | None, only: tuple[str, ...], dry_run: bool,
          as_json: bool) -> None:
    """Remove archives older than the home service's retention_days on every host (the daemon does it daily).

    Exit status: 0 when every host pruned, 1 when some host could not, 2 when the inventory is invalid.
    """
    from connectors.inventory import InventoryError, load_inventory_file
    from connectors.maintenance import prune_archives

    path = _inventory_path(ctx, inventory, config)
    try:
        inv = load_inventory_file(path)
    except InventoryError as exc:
        _say_error(exc)
        ctx.exit(2)
    report = prune_archives(inv, hosts=list(only) or None, dry_run=dry_run)
    if as_json:
        emit_json(report, sort_keys=True)
    else:
        verb = "would remove" if dry_run else "removed"
        from agent.cli.app import echo

        for h in report["hosts"]:
            what = f"{verb} {h['pruned']} files" + (f": {' '.join(h['files'])}" if h["files"] else "")
            echo(f"{h['host']}: {what if h['ok'] else 'failed: ' + str(h['error'])}")
    ctx.exit(0 if report["ok"] else 1)


def _render_prepare(report: dict[str, Any]) -> None:
    from agent.cli.app import echo, inert

    verb = "would run" if report["dry_run"] else "ran"
    for h in report["hosts"]:
        if h.get("error"):
            echo(f"{h['host']}: ", inert("failed", "red"), f": {h['error']}")
            continue
        for s in h["services"]:
            name = f"{h['host']} {s['service']}/{s['backend']}"
            for line in s["folders"]:
                echo(f"{name}: {line}")
            for d in s["diffs"]:
                for line in d["diff"].splitlines():  # tabs as spaces here; --json has the exact text
                    echo(line.expandtabs(8))
            for c in s["commands"]:
                echo(f"{name}: {verb}: {c}")
            for m in s["manual"]:
                echo(f"{name}: ", inert("edit by hand", "red"), f": {m['path']}: add {m['where']}:")
                echo(f"    {m['line']}")
            for note in s["notes"]:
                echo(f"{name}: {note}")
            if s.get("error"):
                echo(f"{name}: ", inert("failed", "red"), f": {s['error']}")
            elif not (s["folders"] or s["diffs"] or s["commands"] or s["manual"]):
                echo(f"{name}: ", inert("prepared", "green"), " (nothing to change)")
    if report["ok"]:
        echo(inert("all hosts prepared" if not report["dry_run"] else "dry run: nothing was changed", "green"))
    else:
        echo(inert("some hosts need attention", "red"))


@hosts.command("prepare")
@click.argument("names", metavar="[HOST...]", nargs=-1)
@click.option("--inventory", "inventory", type=click.Path(dir_okay=False), default=None,
              help="inventory.yaml (default: the one in the configuration folder)")
@click.option("--config", "config", type=click.Path(file_okay=False), default=None, envvar="ARREARS_CONFIG",
              help="configuration folder holding inventory.yaml")
@click.option("--dry-run", is_flag=True, help="print the changes as unified diffs; change nothing")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.pass_context
def prepare(ctx: click.Context, names: tuple[str, ...], inventory: str | None, config: str | None, dry_run: bool,
            as_json: bool) -> None:
    """Make the one-time changes each host needs (include hooks, deny passdb, postfix restrictions, folders).

    Every change is printed as a unified diff; a second run changes nothing. A file too unusual to edit
    safely is left alone and the line to add by hand is printed. Exit status: 0 when every host is
    prepared, 1 when some host failed or needs a change by hand, 2 when the inventory or a host name is invalid.
    """
    from connectors.inventory import InventoryError, load_inventory_file
    from connectors.prepare import prepare_hosts

    path = _inventory_path(ctx, inventory, config)
    try:
        inv = load_inventory_file(path)
        report = prepare_hosts(inv, hosts=list(names) or None, dry_run=dry_run)
    except InventoryError as exc:
        _say_error(exc)
        ctx.exit(2)
    except KeyError as exc:
        _say_error(ValueError(exc.args[0]))
        ctx.exit(2)
    if as_json:
        emit_json(report, sort_keys=True)
    else:
        _render_prepare(report)
    ctx.exit(0 if report["ok"] else 1)

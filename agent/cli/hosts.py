"""``arrears hosts``: commands about the inventory's hosts (``check``, ``prune``)."""

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

"""``arrears demo [DIR]``: build the demo fleet and replay 60 days of it, day by day."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from agent.cli.app import CliError, InertTable, emit_json, inert
from agent.cli.app import console as app_console
from agent.demo import DEMO_START, DemoAccount, DemoError, build_demo, final_states, import_cast, replay_day
from agent.service import Arrears

if TYPE_CHECKING:
    from agent.service.running import Working

__all__ = ["demo"]

_ICON = {"notice": "✉", "suspend": "⛔", "delete": "🗑", "resume": "✅", "hook": "↪"}


def _stage_name(stage: str) -> str:
    """``admin-resume-23`` -> ``admin resume``; ``pre_suspension`` -> ``pre suspension``."""
    return re.sub(r"-\d+$", "", stage).replace("_", " ").replace("-", " ")


def _host_view(folder: Path, acc: DemoAccount) -> tuple[str, str, str]:
    """What the demo hosts show for the account: site, mailbox and home, read from the files themselves."""
    web, mail = folder / "hosts" / "web1", folder / "hosts" / "mail1"
    vhost = web / "etc/nginx/sites-available" / acc.site
    snippet = web / "etc/nginx/arrears.d" / f"{acc.site}.conf"
    site = "deleted (archived)" if not vhost.exists() else ("302 → suspended page" if snippet.exists() else "serving")
    flags = [p.name for p in (mail / "etc/dovecot/arrears").glob("deny.*")
             if acc.mailbox in p.read_text().split()]
    lock = mail / "etc/dovecot/arrears/password-lock"
    bounce = mail / "etc/postfix/arrears/bounce"
    local, _, domain = acc.mailbox.partition("@")
    mailbox = "deleted (archived)" if not (mail / "var/mail/vhosts" / domain / local).exists() else (
        "restricted" if flags or (lock.exists() and acc.mailbox in lock.read_text().split())
        or (bounce.exists() and acc.mailbox in bounce.read_text()) else "open")
    home = "present" if (web / "home" / acc.username).exists() else "archived + removed"
    return site, mailbox, home


@click.command("demo")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"))
@click.option("--days", type=click.IntRange(1, 366), default=60, show_default=True, help="days to replay")
@click.option("--replace", is_flag=True, help="build the demo anew if FOLDER already holds one")
@click.option("--json", "as_json", is_flag=True, help="print each day's summary as JSON lines instead")
def demo(folder: Path, days: int, replace: bool, as_json: bool) -> None:
    """Build a demo fleet under FOLDER (local transport) and replay DAYS days of debtors with --at."""

    try:
        cast = build_demo(folder, replace=replace)
    except DemoError as exc:
        raise CliError(str(exc)) from None
    folder = folder.resolve()
    svc = Arrears.open(folder)
    console = app_console()
    import_cast(svc, folder)

    def run_day(day: int, now: datetime, agent: Working) -> dict[str, Any]:
        return replay_day(svc, folder, cast, day, now, agent)

    totals: Counter[str] = Counter()
    try:
        columns = (TextColumn("[bold]replaying[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("days"),
                   TimeElapsedColumn())
        with svc.lock(role="demo") as agent, \
                Progress(*columns, console=console, transient=True, disable=as_json) as bar:
            task = bar.add_task("days", total=days + 1)
            for day in range(days + 1):
                now = DEMO_START + timedelta(days=day)
                summary = run_day(day, now, agent)
                bar.advance(task)
                if as_json:
                    emit_json({"day": day, **summary}, indent=None)
                    continue
                events = [(t["account"], t["stage"], t["action"]) for t in summary["executor"]["taken"]]
                for _account, _stage, action in events:
                    totals[action] += 1
                if events:
                    what = "; ".join(f"{_ICON.get(action, '•')} {account} {_stage_name(stage)}"
                                     for account, stage, action in events)
                    bar.console.print(Text.assemble(inert(f"day {day:2d}", "bold"), inert(f" {now:%a %d %b}  {what}")))
                for error in summary["errors"] + summary["executor"]["errors"]:
                    bar.console.print(Text.assemble(inert(f"day {day:2d} warning:", "yellow"), inert(f" {error}")))
    finally:
        svc.close()
    if as_json:
        return
    _final_table(console, folder, cast)
    notices = len(list((folder / "outbox").glob("*.eml"))) if (folder / "outbox").exists() else 0
    console.print(inert(f"{sum(totals.values())} measures over {days} days ({dict(totals)}); "
                        f"{notices} notices in {folder / 'outbox'}"))
    console.print(inert(f"explore: arrears --config {folder} show acme-01   ·   arrears --config {folder} history "
                        "bravo-02"))


def _final_table(console: Console, folder: Path, cast: list[DemoAccount]) -> None:
    with Arrears.open(folder) as svc:
        states = final_states(svc)
    table = InertTable("after the replay", show_lines=False)
    for col in ("account", "story", "state", "site", "mailbox", "home"):
        table.add_column(col)
    for acc in cast:
        site, mailbox, home = _host_view(folder, acc)
        table.add_row(acc.id, acc.story, states.get(acc.id, "?"), site, mailbox, home)
    console.print(table)

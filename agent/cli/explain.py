"""``arrears explain ACCOUNT``: why the account is where it is, as tables (or the whole account as JSON).

The readable view has the policy's fields with their value and the layer that set each, every trigger
(fired?, since, thresholds, inputs), the episode and holds, and the decision (measures due, next, next
check, held back)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from agent.cli.app import (
    InertTable,
    api,
    at_option,
    console,
    emit_json,
    inert,
    json_default,
    json_option,
)

__all__ = ["explain", "render_explain"]


@click.command()
@click.argument("account")
@at_option
@json_option
@click.pass_context
def explain(ctx: click.Context, account: str, at: datetime | None, as_json: bool) -> None:
    """Why the account is where it is: triggers, thresholds, inputs, and which policy layer set what."""
    svc, now = api(ctx, at)
    info = svc.explain(account, now=now).to_json()
    if as_json:
        emit_json(info)
        return
    render_explain(console(), json.loads(json.dumps(info, default=json_default)))


def _text(value: Any) -> Text:
    """One cell: ``-`` for nothing, yes/no for flags, lists joined; the value printed literally."""
    if value is None:
        return inert("-")
    if isinstance(value, bool):
        return inert("yes" if value else "no")
    if isinstance(value, list):
        return inert(", ".join(str(v) for v in value) or "-")
    return inert(value)


def _lines(lines: list[Text]) -> Text:
    """Several inert lines in one cell."""
    return Text("\n").join(lines) if lines else inert("-")


def _pairs(values: dict[str, Any]) -> Text:
    return _lines([Text.assemble(inert(k), " = ", _text(v)) for k, v in values.items()])


def _table(title: str, columns: list[str], *, no_wrap: tuple[str, ...] = ()) -> InertTable:
    """A table whose first column (the names) and the ``no_wrap`` columns (times) never wrap."""
    out = InertTable(title, title_justify="left", show_lines=False)
    for i, c in enumerate(columns):
        out.add_column(c, overflow="fold", no_wrap=i == 0 or c in no_wrap)
    return out


def _after(stage: dict[str, Any]) -> str:
    if stage["after_days"] is not None:
        return f"after {stage['after_days']} days"
    if stage["after_seconds"] is not None:
        return f"after {stage['after_seconds']} seconds"
    return "at once"


def _stages(stages: list[dict[str, Any]]) -> Text:
    lines = []
    for st in stages:
        extra = [f"template {st['template']}"] if st["template"] else []
        extra += [f"hook {st['hook']}"] if st["hook"] else []
        extra += [] if st["enabled"] else ["disabled"]
        lines.append(inert(f"{st['name']}: {st['action']} {_after(st)}"
                           + (f" ({', '.join(extra)})" if extra else "")))
    return _lines(lines)


def _reason(reason: dict[str, Any] | None) -> Text:
    return inert("-" if reason is None else reason["text"])


def render_explain(con: Console, info: dict[str, Any]) -> None:
    """Print :func:`policy.explain`'s account (JSON-able, as ``explain --json`` prints it) as tables."""
    con.print(Text.assemble(inert(info["account"], "bold"), inert(f" at {info['at']}: balance {info['balance']}, "),
                            inert("in debt", "red") if info["in_debt"] else "not in debt",
                            inert(f"; layers: {', '.join(info['layers']) or 'built-in defaults only'}")),
              soft_wrap=True)

    policy = _table("policy", ["field", "value", "set by"])
    for name, entry in info["policy"].items():
        value = _stages(entry["value"]) if name == "stages" else _text(entry["value"])
        policy.add_row(name, value, entry["source"])
    con.print(policy)

    triggers = _table("triggers", ["trigger", "enabled", "fired", "since", "thresholds", "inputs", "why"],
                      no_wrap=("since",))
    for t in info["triggers"]:
        since = t["at"] or (f"upcoming {t['upcoming']}" if t["upcoming"] else "-")
        fired = inert("yes", "red") if t["fired"] else "no"
        triggers.add_row(t["trigger"], _text(t["enabled"]), fired, since, _pairs(t["thresholds"]),
                         _pairs(t["inputs"]), t["text"])
    con.print(triggers)

    ep = info["episode"]
    if ep is None:
        con.print(inert("episode: none"))
    else:
        counted = (f", counted from {ep['counted_from']}"
                   if ep["counted_from"] and ep["counted_from"] != ep["started_at"] else "")
        con.print(inert(f"episode: since {ep['started_at']} ({ep['trigger']}){counted}; stages taken: "
                        + (", ".join(f"{st['stage']} at {st['at']}" for st in ep["stages_taken"]) or "none")),
                  soft_wrap=True)
    con.print(inert("holds: " + ("; ".join(f"{h['kind']} since {h['since']} by {h['actor']}"
                                           + (f" ({h['reason']})" if h["reason"] else "") for h in info["holds"])
                                 or "none")), soft_wrap=True)

    d = info["decision"]
    if d["measures"]:
        due = _table("measures due", ["stage", "action", "due at", "why"], no_wrap=("due at",))
        for mes in d["measures"]:
            due.add_row(mes["stage"], mes["action"], mes["due_at"], _reason(mes["reason"]))
        con.print(due)
    decision = _table("decision", ["", ""])
    decision.show_header = False
    rows: list[tuple[str, Text | str]] = [("measures due", str(len(d["measures"])) if d["measures"] else "none")]
    if d["start_episode"]:
        rows.append(("starts an episode", f"{d['start_episode']['trigger']} at {d['start_episode']['at']}"))
    if d["end_episode"]:
        rows.append(("ends the episode", _reason(d["end_episode"])))
    if d["resume"]:
        rows.append(("resume", "yes"))
    if d["release_holds"]:
        rows.append(("releases holds", _text(d["release_holds"])))
    nxt = d["next"]
    rows.append(("next", f"{nxt['stage']} ({nxt['action']}) due {nxt['due_at']}" if nxt else "nothing scheduled"))
    rows.append(("next check", d["next_check"] or "-"))
    rows.append(("held back", _reason(d["held_back"])))
    for label, cell in rows:
        decision.add_row(label, cell)
    con.print(decision)

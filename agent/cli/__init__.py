"""The ``arrears`` command line: the group (:mod:`agent.cli.app`) with every command registered on it.

Presentation only: each command parses its arguments, calls the Python API (:mod:`agent.service`) and
prints the answer. One module per concern: :mod:`~agent.cli.setup` (init, imports), :mod:`~agent.cli.money`
(payments and the admin's overrides), :mod:`~agent.cli.reports` and :mod:`~agent.cli.account` /
:mod:`~agent.cli.explain` (read commands), :mod:`~agent.cli.run` (plan, run), :mod:`~agent.cli.admin` (manual
actions), :mod:`~agent.cli.templates`, :mod:`~agent.cli.hosts`, :mod:`~agent.cli.demo`, :mod:`~agent.cli.daemon`,
:mod:`~agent.cli.agents`.

A command's module is imported only when the command runs (or its own help is shown), so a command
pays for the libraries it uses and no others; ``arrears --help`` lists them from :data:`COMMANDS`.
"""

from __future__ import annotations

import importlib
from functools import partial
from typing import Any

import click

from agent.cli.app import CliError, CliState, cli

__all__ = ["COMMANDS", "CliError", "CliState", "cli", "load_command", "main"]

# name -> (module in agent.cli, attribute, the first line of its docstring)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("setup", "init",
             "Write a sample configuration (policy.yaml, inventory.yaml, sample data) and create the database."),
    "accounts": ("setup", "accounts", "Accounts and their placements on hosts."),
    "ledger": ("setup", "ledger", "Charges, payments and credits."),
    "invoices": ("setup", "invoices", "Invoices (postpay expiration)."),
    "payment": ("money", "payment", "Record a payment; it takes effect on the next run, or at once with --now."),
    "set-debt-date": ("money", "set_debt_date", "Set the outstanding-balance date: the debt episode counts from "
                      "DATE (YYYY-MM-DD or a time with zone)."),
    "exempt": ("money", "exempt", "Exempt an account from automatic measures until a date."),
    "guarantee": ("money", "guarantee", "Grant a guaranteed payment: temporary credit of AMOUNT for some days, "
                  "within the policy's limits."),
    "can-spend": ("money", "can_spend_command", "May ACCOUNT pay an order of AMOUNT from its balance? Exit 0 when "
                  "allowed, 1 when not."),
    "plan": ("run", "plan_command", "What `run` would do now (only the accounts that are due), changing nothing."),
    "run": ("run", "run_command", "Evaluate the due accounts, queue their measures and apply them (hosts, notices)."),
    "show": ("account", "show", "An account's state, balance, holds, episode, stages taken, next measure and "
             "waiting host work."),
    "history": ("account", "history", "Episodes, stages, holds, payments, notices and the audit trail of an "
                "account."),
    "explain": ("explain", "explain", "Why the account is where it is: triggers, thresholds, inputs, and which "
                "policy layer set what."),
    "forecast": ("reports", "forecast_command", "Every measure to come in the next DAYS days, assuming nothing is "
                 "paid and each takes effect when due."),
    "debtors": ("reports", "debtors", "The billing balance report: every account with a negative balance or in a "
                "debt episode."),
    "status": ("reports", "status", "Counts of accounts per state and of outbox jobs per status, and every notice "
               "that failed for good."),
    "suspend": ("admin", "suspend", "Suspend ACCOUNT by hand: an admin hold that payments do not lift, applied on "
                "every host."),
    "resume": ("admin", "resume", "Lift the admin hold of ACCOUNT; refused while it is in debt unless --grace DAYS "
               "records a promise to pay."),
    "delete": ("admin", "delete", "Delete ACCOUNT on every host (archive -> verify -> remove); needs --yes."),
    "restore": ("admin", "restore", "Restore a deleted ACCOUNT from its archives; it comes back suspended (admin "
                "hold) until an admin resumes it."),
    "mail": ("admin", "mail", "Mass mail to debtors through the notices outbox: once per account, template and day."),
    "reconcile": ("admin", "reconcile_command", "Read every host's facts and report accounts whose real state "
                  "differs from the recorded one."),
    "templates": ("templates", "templates", "Notice templates: the variables they can use, and a preview."),
    "hosts": ("hosts", "hosts", "Inspect the hosts of the inventory."),
    "demo": ("demo", "demo", "Build a demo fleet under FOLDER (local transport) and replay DAYS days of debtors "
             "with --at."),
    "tokens": ("tokens", "tokens", "Bearer tokens of the HTTP API (arrears serve): made, listed and revoked; stored "
               "hashed."),
    "serve": ("serve", "serve", "Serve the HTTP API (FastAPI on uvicorn) on loopback, or behind TLS or a proxy."),
    "daemon": ("daemon", "daemon", "Run a tick every INTERVAL seconds until SIGTERM; one daemon per SQLite "
               "database, any number per PostgreSQL database (one per --name; see `arrears agents` and "
               "docs/scale.md)."),
    "agents": ("agents", "agents", "The agents working on this database: their last heartbeat and tick, the jobs "
               "they hold claimed and the hosts whose batch they run."),
}

# the subcommands of the groups accounts, ledger and invoices: group -> (module, attribute) of each
_SUBCOMMANDS: dict[str, tuple[tuple[str, str], ...]] = {
    "accounts": (("setup", "import_accounts"), ("reports", "accounts_list"), ("account", "move_resource")),
    "ledger": (("setup", "import_ledger"),),
    "invoices": (("setup", "import_invoices"),),
}


def _attribute(module: str, attribute: str) -> Any:
    return getattr(importlib.import_module(f"agent.cli.{module}"), attribute)


def load_command(name: str) -> click.Command:
    """The command ``name`` of :data:`COMMANDS`, importing its module (and its subcommands' modules)."""
    module, attribute, _ = COMMANDS[name]
    command: click.Command = _attribute(module, attribute)
    if isinstance(command, click.Group):
        for sub in _SUBCOMMANDS.get(name, ()):
            command.add_command(_attribute(*sub))
    return command


for _name, (_module, _attr, _help) in COMMANDS.items():
    cli.add_lazy(_name, partial(load_command, _name), _help)


def main() -> None:
    """The ``arrears`` console script."""
    cli.main(prog_name="arrears")

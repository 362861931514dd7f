"""The ``arrears`` command line: the group (:mod:`agent.cli.app`) with every command registered on it.

One module per concern: :mod:`~agent.cli.setup` (init, imports), :mod:`~agent.cli.money` (payments and
the admin's overrides), :mod:`~agent.cli.reports` and :mod:`~agent.cli.account` / :mod:`~agent.cli.explain`
(read commands), :mod:`~agent.cli.run` (plan, run), :mod:`~agent.cli.admin` (manual actions),
:mod:`~agent.cli.templates`, :mod:`~agent.cli.hosts`, :mod:`~agent.cli.demo`, :mod:`~agent.cli.daemon`.
"""

from __future__ import annotations

from agent.cli import account, admin, money, reports, run, setup
from agent.cli import daemon as daemon_module
from agent.cli import demo as demo_module
from agent.cli import explain as explain_module
from agent.cli import hosts as hosts_module
from agent.cli import templates as templates_module
from agent.cli.app import CliError, CliState, cli
from agent.cli.run import agent_lock, apply_at_once, check_config, checked_templates, run_once

__all__ = [
    "CliError",
    "CliState",
    "agent_lock",
    "apply_at_once",
    "check_config",
    "checked_templates",
    "cli",
    "main",
    "run_once",
]

for _command in (
    setup.init, setup.accounts, setup.ledger, setup.invoices,
    money.payment, money.set_debt_date, money.exempt, money.guarantee, money.can_spend_command,
    run.plan_command, run.run_command,
    account.show, account.history, explain_module.explain,
    reports.forecast_command, reports.debtors, reports.status,
    admin.suspend, admin.resume, admin.delete, admin.restore, admin.mail, admin.reconcile_command,
    templates_module.templates, hosts_module.hosts, demo_module.demo, daemon_module.daemon,
):
    cli.add_command(_command)
setup.accounts.add_command(setup.import_accounts)
setup.accounts.add_command(reports.accounts_list)
setup.accounts.add_command(account.move_resource)
setup.ledger.add_command(setup.import_ledger)
setup.invoices.add_command(setup.import_invoices)


def main() -> None:
    """The ``arrears`` console script."""
    cli.main(prog_name="arrears")

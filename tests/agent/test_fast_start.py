"""Start-up: a command imports only what it uses, so ``arrears --help`` and the light commands start fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import COMMANDS, cli, load_command

HEAVY = ("sqlalchemy", "pydantic", "jinja2", "babel", "paramiko", "alembic", "rich", "fastapi")
# what plan's work does not use: templates, SSH, the HTTP API, migrations, terminal tables (for --json), the
# ORM and its mapped classes (the plan reads on SQLAlchemy Core alone), the tick's writing
NOT_FOR_PLAN = ("pydantic", "jinja2", "paramiko", "alembic", "rich", "fastapi", "uvicorn", "agent.imports",
                "agent.notices", "agent.executor", "connectors.fleet", "sqlalchemy.orm", "agent.store.models",
                "agent.tick", "agent.transitions", "agent.outbox")


def _run(code: str) -> tuple[str, set[str]]:
    """What ``code`` printed, and the modules (and their top packages) it had imported at its end."""
    probe = (f"import sys\n{code}\nprint(' '.join(sorted({{p for n in sys.modules for p in (n, n.split('.')[0])}})),"
             " file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout, set(out.stderr.split())


def _imported_after(code: str) -> list[str]:
    return [name for name in HEAVY if name in _run(code)[1]]


def test_importing_the_command_line_imports_no_heavy_library() -> None:
    assert _imported_after("import agent.cli") == []


def test_the_group_help_imports_no_command_module() -> None:
    code = ("from agent.cli import main\nsys.argv = ['arrears', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass")
    assert _imported_after(code) == []


def test_plan_imports_only_what_it_uses(tmp_path: Path) -> None:
    folder = tmp_path / "cfg"
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(folder), "init"]).exit_code == 0
    for kind in ("accounts", "ledger"):
        result = runner.invoke(cli, ["--config", str(folder), kind, "import", str(folder / f"{kind}.jsonl")])
        assert result.exit_code == 0, result.output
    argv = ["arrears", "--config", str(folder), "plan", "--at", "2026-03-10T12:00:00Z", "--json"]
    printed, modules = _run(f"from agent.cli import main\nsys.argv = {argv!r}\n"
                            "try:\n    main()\nexcept SystemExit:\n    pass")
    assert json.loads(printed), "the sample has accounts due then: the probe ran a plan that found them"
    assert [name for name in NOT_FOR_PLAN if name in modules] == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_listed_short_help_is_the_commands_own(name: str) -> None:
    command = load_command(name)
    assert command.name == name
    assert command.get_short_help_str(limit=10_000) == COMMANDS[name][2]


def test_every_command_and_subcommand_is_reachable() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output
    accounts = CliRunner().invoke(cli, ["accounts", "--help"])
    listed = {line.split()[0] for line in accounts.output.split("Commands:")[1].splitlines() if line.strip()}
    assert {"import", "list", "move-resource"} <= listed

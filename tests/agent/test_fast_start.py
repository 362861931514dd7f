"""Start-up: a command imports only what it uses, so ``arrears --help`` and the light commands start fast."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.cli import COMMANDS, cli, load_command

HEAVY = ("sqlalchemy", "pydantic", "jinja2", "babel", "paramiko", "alembic")


def _imported_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted({{n.split('.')[0] for n in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    return [name for name in out.stdout.split() if name in HEAVY]


def test_importing_the_command_line_imports_no_heavy_library() -> None:
    assert _imported_after("import agent.cli") == []


def test_the_group_help_imports_no_command_module() -> None:
    code = ("from agent.cli import main\nsys.argv = ['arrears', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass")
    assert _imported_after(code) == []


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

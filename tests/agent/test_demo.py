"""The README's main command: `arrears demo` replays 60 days on a local fleet and the hosts show it."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from agent.cli import cli
from agent.demo import host_dirs


def test_the_demo_replays_sixty_days_on_its_hosts(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    runner = CliRunner()
    result = runner.invoke(cli, ["demo", str(folder)])
    assert result.exit_code == 0, result.output
    assert "day  8" in result.output and "acme-01 suspension" in result.output

    def state(account: str) -> str:
        shown = runner.invoke(cli, ["--config", str(folder), "show", account, "--json"])
        assert shown.exit_code == 0, shown.output
        return str(json.loads(shown.output)["state"])

    assert {a: state(a) for a in ("acme-01", "bravo-02", "cheque-03", "delta-04", "echo-05", "foxtrot-06",
                                  "golf-07")} == {
        "acme-01": "deleted", "bravo-02": "active", "cheque-03": "active", "delta-04": "active",
        "echo-05": "deleted", "foxtrot-06": "active", "golf-07": "active"}
    web = host_dirs(folder)["web1"]
    assert not (web / "home/acme").exists() and (web / "home/bravo").exists()
    assert not list((web / "etc/nginx/arrears.d").glob("*.conf"))  # nobody is left suspended
    assert list((web / "var/backups/arrears").glob("acme-01-home-*.tar.gz"))
    assert len(list((folder / "outbox").glob("*.eml"))) == 18

    again = runner.invoke(cli, ["demo", str(folder)])
    assert again.exit_code != 0 and "--replace" in again.output

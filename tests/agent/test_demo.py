"""The README's main command: `arrears demo` replays 60 days on a local fleet and the hosts show it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from agent.cli import cli
from agent.demo import DEMO_START, host_dirs


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


def test_after_the_demo_the_hosts_agree_and_hand_made_changes_converge(tmp_path: Path) -> None:
    """Every host ends as the records say (deleted mailboxes, homes and sites included); a snippet removed
    by hand and a deleted mailbox opened by hand are found, and --fix then run brings them back."""
    folder = tmp_path / "demo"
    runner = CliRunner()
    assert runner.invoke(cli, ["demo", str(folder)]).exit_code == 0
    at = (DEMO_START + timedelta(days=61)).isoformat()

    def arrears(*args: str) -> tuple[int, dict[str, Any]]:
        result = runner.invoke(cli, ["--config", str(folder), *args, "--json", "--at", at])
        return result.exit_code, json.loads(result.stdout)

    code, report = arrears("reconcile")
    assert (code, report["differences"], report["errors"]) == (0, [], [])
    assert report["checked"] == 36  # 12 accounts: web and home on web1, mail on mail1

    assert arrears("suspend", "golf-07", "--reason", "abuse", "--now")[0] == 0
    web, mail = host_dirs(folder)["web1"], host_dirs(folder)["mail1"]
    (web / "etc/nginx/arrears.d/golf.example.conf").unlink()  # someone resumes the site by hand
    for deny in [*mail.glob("etc/dovecot/arrears/*"), *mail.glob("etc/postfix/arrears/*")]:
        if deny.is_file():  # and opens the deleted mailbox of acme-01 again
            deny.write_text("".join(ln for ln in deny.read_text().splitlines(True) if "info@acme.example" not in ln))
    code, report = arrears("reconcile")
    assert code == 1
    assert [(d["account"], d["service"], d["recorded"], d["observed"], d["fix"]) for d in report["differences"]] == [
        ("acme-01", "mail", "deleted", "active", "delete"), ("golf-07", "web", "suspended", "active", "suspend")]

    code, report = arrears("reconcile", "--fix")
    assert code == 0 and len(report["queued"]) == 2
    assert arrears("run")[0] == 0
    code, report = arrears("reconcile")
    assert (code, report["differences"], report["errors"]) == (0, [], [])
    assert (web / "etc/nginx/arrears.d/golf.example.conf").exists()
    assert "info@acme.example" in (mail / "etc/postfix/arrears/bounce").read_text()

"""`arrears hosts prune`: archives past the home service's retention go; newer ones and other files stay."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from click.testing import CliRunner

from agent.cli import cli
from agent.demo import build_demo, host_dirs


def _age(path: Path, days: float) -> None:
    then = time.time() - days * 86400
    os.utime(path, (then, then))


def test_prune_removes_only_archives_past_retention(tmp_path: Path) -> None:
    folder = tmp_path / "fleet"
    build_demo(folder)
    archives = host_dirs(folder)["web1"] / "var/backups/arrears"
    old = archives / "acme-01-home-20250101T000000Z.tar.gz"
    old_list = archives / "acme-01-home-20250101T000000Z.tar.gz.list"
    recent = archives / "bravo-02-home-20261101T000000Z.tar.gz"
    unrelated = archives / "notes.txt"
    for f in (old, old_list, recent, unrelated):
        f.write_text("x")
    for f in (old, old_list, unrelated):
        _age(f, 91)  # the demo's retention is 90 days
    _age(recent, 30)
    runner = CliRunner()

    dry = runner.invoke(cli, ["--config", str(folder), "hosts", "prune", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    (web1,) = json.loads(dry.output)["hosts"]
    assert (web1["host"], web1["pruned"], sorted(web1["files"])) == ("web1", 2, sorted([old.name, old_list.name]))
    assert old.exists() and old_list.exists()

    real = runner.invoke(cli, ["--config", str(folder), "hosts", "prune"])
    assert real.exit_code == 0, real.output
    assert "web1: removed 2 files" in real.output
    assert not old.exists() and not old_list.exists()
    assert recent.exists() and unrelated.exists()

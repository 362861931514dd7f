"""Many agents on one PostgreSQL database, one per name: a second agent under a name in use is refused;
agents under other names share the work, and each measure is taken, and each notice sent, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli import cli
from agent.lock import DatabaseLock
from tests.backends import query
from tests.scenarios.harness import Arrears, day

pytestmark = pytest.mark.servers

DEBTORS = [f"debtor-{i}" for i in range(4)]


def _setup(tmp_path: Path, url: str) -> Arrears:
    a = Arrears.create(tmp_path / "cfg")
    accounts = a.write("accounts.jsonl", [
        {"id": name, "username": name.replace("-", ""), "billing_email": f"{name}@example.org", "currency": "USD"}
        for name in DEBTORS])
    ledger = a.write("ledger.jsonl", [
        {"account": name, "at": day(0, 8), "amount": "-50.00", "kind": "charge", "ref": f"c-{name}"}
        for name in DEBTORS])
    for args in (["accounts", "import", str(accounts)], ["ledger", "import", str(ledger)]):
        result = _cli(a, url, *args)
        assert result.exit_code == 0, result.output
    return a


def _notices(a: Arrears) -> list[tuple[str, str]]:
    """(account, stage) of each spooled notice (files are named ACCOUNT:EPISODE:STAGE.eml)."""
    return [(n.split(":")[0], n.split(":")[2].removesuffix(".eml")) for n in a.spool()]


def _cli(a: Arrears, url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(a.folder), "--db", url, *args], catch_exceptions=False,
                              env={"ARREARS_CONFIG": None, "ARREARS_DB": None, "ARREARS_DEBUG": None})


def test_a_second_agent_under_a_name_in_use_is_refused_and_named(tmp_path: Path, pg_url: str) -> None:
    a = _setup(tmp_path, pg_url)
    holder = DatabaseLock(pg_url, role="daemon", name="billing-1").acquire()
    try:
        refused = _cli(a, pg_url, "run", "--at", day(0), "--name", "billing-1")
        assert refused.exit_code == 2, refused.output
        assert "already working on this database" in refused.stderr and "'billing-1'" in refused.stderr
        assert f"arrears daemon pid {os.getpid()}" in refused.stderr
        assert a.spool() == []  # refused before anything was evaluated or sent
        # a payment with --now cannot wake an agent that may run elsewhere: recorded for its next tick
        paid = _cli(a, pg_url, "payment", DEBTORS[0], "50.00", "--method", "card", "--now", "--at", day(0))
        assert paid.exit_code == 0 and "takes effect on the next run" in paid.stdout
        # another name is another agent: it works beside the first one
        ran = _cli(a, pg_url, "run", "--at", day(0), "--json", "--name", "billing-2")
        assert ran.exit_code == 0, ran.output
    finally:
        holder.release()
    # the paid debtor is no debtor any more; each of the others gets its outstanding-balance notice
    assert _notices(a) == [(name, "outstanding_notice") for name in DEBTORS[1:]]
    listed = _cli(a, pg_url, "agents", "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = [r for r in json.loads(listed.stdout) if r["name"] == "billing-2"]
    assert (row["role"], row["state"], row["ticks"], row["claims"]) == ("run", "stopped", 1, 0)
    assert row["last_tick"]["taken"] == 3 and row["last_tick"]["notices_sent"] == 3


def test_agents_at_the_same_moment_take_each_measure_and_send_each_notice_once(tmp_path: Path,
                                                                                pg_url: str) -> None:
    a = _setup(tmp_path, pg_url)
    argv = [sys.executable, "-m", "agent.cli", "--config", str(a.folder), "--db", pg_url, "run", "--at", day(0)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARREARS_")}
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outcomes = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    for code, err in outcomes:  # none is refused: each is an agent of its own
        assert code == 0 and "Traceback" not in err, (code, err)
    notices = a.spool()  # one outstanding-balance notice per debtor, in one debt episode each: never two
    assert _notices(a) == [(name, "outstanding_notice") for name in DEBTORS]
    assert len({n.split(":")[1] for n in notices}) == len(DEBTORS)
    assert query(pg_url, "SELECT account, count(*) FROM episodes GROUP BY account ORDER BY account") == \
        [(name, 1) for name in DEBTORS]
    assert query(pg_url, "SELECT account, stage, count(*) FROM stages_taken WHERE status = 'taken' "
                 "GROUP BY account, stage ORDER BY account") == [(name, "outstanding_notice", 1) for name in DEBTORS]
    assert query(pg_url, "SELECT account, count(*) FROM audit WHERE action = 'stage.notice' "
                 "GROUP BY account ORDER BY account") == [(name, 1) for name in DEBTORS]
    assert query(pg_url, "SELECT count(*) FROM jobs WHERE status <> 'done'") == [(0,)]
    assert len(query(pg_url, "SELECT name FROM agents WHERE stopped_at IS NOT NULL")) == 3
    again = _cli(a, pg_url, "run", "--at", day(0))
    assert again.exit_code == 0 and a.spool() == notices


def _end_lock_sessions(url: str) -> None:
    """What a database restart or fail-over does to the holder: its session, and so its lock, is gone."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name LIKE 'arrears %' AND pid <> pg_backend_pid()"))
    engine.dispose()


def test_a_lock_lost_with_its_session_is_taken_again_or_given_up(pg_url: str) -> None:
    from agent.lock import AlreadyRunning

    first = DatabaseLock(pg_url, role="daemon", name="billing-1").acquire()
    _end_lock_sessions(pg_url)
    first.verify()  # nobody took it meanwhile: held again before the next tick
    with pytest.raises(AlreadyRunning):
        DatabaseLock(pg_url, name="billing-1").acquire()
    DatabaseLock(pg_url, name="billing-2").acquire().release()  # another name is another agent
    _end_lock_sessions(pg_url)
    second = DatabaseLock(pg_url, name="billing-1").acquire()  # another agent took the name while it was cut off
    try:
        with pytest.raises(AlreadyRunning):
            first.verify()  # so the first does no more work
    finally:
        second.release()
        first.release()


def test_a_released_lock_is_free_at_once(pg_url: str) -> None:
    """One run after another in a process (a daemon's restart, a test's runs): the lock the first let go is
    the next one's at once, not once the first's server session has ended on its own time."""
    for _ in range(30):
        DatabaseLock(pg_url, role="run", name="billing-1").acquire().release()

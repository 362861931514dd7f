"""The batch protocol: one script per host, one JSON result per operation, handlers once per batch."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import Handler, Operation, build_script, run_batch
from connectors.local import LocalTransport


@pytest.fixture
def local() -> LocalTransport:
    return LocalTransport("local")


def test_each_operation_reports_on_its_own(local: LocalTransport) -> None:
    ops = [
        Operation("a:1", "a", "t", "echo done; changed; fact saved 'x y'"),
        Operation("b:1", "b", "t", "echo 'disk full' >&2; false; echo never"),
        Operation("c:1", "c", "t", "[ -d / ]"),
    ]
    batch = run_batch(local, ops)
    a, b, c = (batch.results[k] for k in ("a:1", "b:1", "c:1"))
    assert (a.ok, a.changed, a.stdout, a.facts) == (True, True, "done\n", {"saved": "x y"})
    assert (b.ok, b.changed, b.error, b.stdout) == (False, False, "disk full", "")
    assert (c.ok, c.changed) == (True, False)
    assert batch.for_account("b") == [b]


def test_handler_runs_once_for_the_changed_operations_and_can_roll_one_back(local: LocalTransport) -> None:
    ops = [Operation(f"s:{n}", f"acct{n}", "t", "changed" if n != 2 else ":", ("reload",)) for n in range(4)]
    handler = Handler("reload", 'echo "$ARREARS_CHANGED"; override s:3 1 "config test failed"')
    batch = run_batch(local, ops, [handler, Handler("unused", "echo no")])
    assert list(batch.handlers) == ["handler:reload"]
    assert batch.handlers["handler:reload"].stdout.split() == ["s:0", "s:1", "s:3"]
    assert batch.results["s:3"].error == "config test failed" and not batch.results["s:3"].ok
    assert all(batch.results[f"s:{n}"].ok for n in range(3))


def test_a_commit_reports_each_operation_done_or_failed_alone(local: LocalTransport) -> None:
    """A commit fails one queued operation with its own message and the others go on; a change an operation
    made itself (besides the queued one) counts, and only changed operations notify the handler."""
    queue = 'printf "%s\\n" "$_ar_id" >> "$_ar_tmp/q"'
    ops = [Operation("q:0", "a", "t", queue, ("reload",), "apply", inline=True),
           Operation("q:1", "b", "t", queue, ("reload",), "apply", inline=True),
           Operation("q:2", "c", "t", f"changed; {queue}", ("reload",), "apply"),
           Operation("q:3", "d", "t", queue, ("reload",), "apply", inline=True)]
    commit = Handler("apply", """while read -r id; do
  case $id in
    q:0) echo "@@arrears-done $id 1" ;;
    q:1) echo "@@arrears-fact $id why=no hook"
         echo "@@arrears-fail $id site b.test has no 'hook'; nothing was changed" ;;
    *) echo "@@arrears-done $id 0" ;;
  esac
done < "$_ar_tmp/q"
""", commit=True)
    batch = run_batch(local, ops, [commit, Handler("reload", 'echo "$ARREARS_CHANGED"')])
    r = batch.results
    assert (r["q:0"].ok, r["q:0"].changed) == (True, True)
    assert (r["q:1"].ok, r["q:1"].error, r["q:1"].facts) == (
        False, "site b.test has no 'hook'; nothing was changed", {"why": "no hook"})
    assert (r["q:2"].ok, r["q:2"].changed) == (True, True)
    assert (r["q:3"].ok, r["q:3"].changed) == (True, False)
    assert batch.handlers["handler:reload"].stdout.split() == ["q:0", "q:2"]


def test_no_handler_when_nothing_changed(local: LocalTransport) -> None:
    batch = run_batch(local, [Operation("s:0", "a", "t", ":", ("reload",))], [Handler("reload", "echo ran")])
    assert batch.handlers == {}


def test_a_handler_interrupted_by_a_crash_runs_on_the_next_batch(local: LocalTransport, tmp_path: Path) -> None:
    """The agent dies after a file changed but before the reload: the next batch still reloads."""
    reloads = tmp_path / "reloads"
    crash = Handler("reload", "kill -KILL $$")
    first = run_batch(local, [Operation("s:0", "a", "t", "changed", ("reload",))], [crash], state_dir=str(tmp_path))
    assert first.handlers == {}  # the batch died before the handler reported
    reload = Handler("reload", f"echo x >> {reloads}")
    again = run_batch(local, [Operation("s:0", "a", "t", ":", ("reload",))], [reload], state_dir=str(tmp_path))
    assert again.results["s:0"].changed is False
    assert again.handlers["handler:reload"].ok
    assert reloads.read_text() == "x\n"
    third = run_batch(local, [Operation("s:0", "a", "t", ":", ("reload",))], [reload], state_dir=str(tmp_path))
    assert third.handlers == {} and reloads.read_text() == "x\n"


def test_ids_and_names_are_checked_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="characters outside"):
        Operation("a;rm -rf /", "a", "t", ":")
    with pytest.raises(ValueError, match="twice"):
        build_script([Operation("a", "a", "t", ":"), Operation("a", "a", "t", ":")])


def test_operations_not_reached_are_reported_as_not_run(local: LocalTransport) -> None:
    ops = [Operation("a:1", "a", "t", "kill -KILL $$"), Operation("b:1", "b", "t", ":")]
    batch = run_batch(local, ops)
    assert batch.results["a:1"].error is not None and batch.results["a:1"].error.startswith("not run")
    assert batch.results["b:1"].error is not None and not batch.results["b:1"].ok


def test_batches_on_one_host_never_overlap(local: LocalTransport, tmp_path: Path) -> None:
    """A batch left running by an agent that died finishes before the next batch starts."""
    import subprocess
    import threading

    from tests.servers.base import wait_for

    log = tmp_path / "log"
    gate = tmp_path / "gate"
    slow = build_script([Operation("a:1", "a", "t", f"echo first-start >> {log}; while [ ! -e {gate} ]; do "
                                                    f"sleep 0.05; done; echo first-end >> {log}")],
                        state_dir=str(tmp_path))
    orphan = subprocess.Popen(["sh", "-s"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert orphan.stdin is not None
    orphan.stdin.write(slow.encode())
    orphan.stdin.close()
    wait_for(lambda: log.exists() and "first-start" in log.read_text(), timeout=10, what="the first batch")
    results = []
    second = threading.Thread(target=lambda: results.append(
        run_batch(local, [Operation("b:1", "b", "t", f"echo second >> {log}")], state_dir=str(tmp_path))))
    second.start()
    # the second batch is queued on the host lock (a blocked request shows as '->' in /proc/locks) ...
    wait_for(lambda: "->" in Path("/proc/locks").read_text(), timeout=10, what="the second batch to wait")
    assert log.read_text().split() == ["first-start"]
    gate.touch()  # ... and runs once the first one is through
    second.join(timeout=20)
    orphan.wait(timeout=10)
    assert results and results[0].results["b:1"].ok
    assert log.read_text().split() == ["first-start", "first-end", "second"]


def test_a_batch_killed_right_after_a_change_still_gets_its_handler_next_time(
        local: LocalTransport, tmp_path: Path) -> None:
    """The change is on disk, the batch dies before its result line: the handler was recorded before the
    change, so the next batch, which finds nothing to change, runs it."""
    done, reloads = tmp_path / "done", tmp_path / "reloads"
    op = Operation("s:0", "a", "t", f"if [ -e {done} ]; then return 0; fi; : > {done}; changed; kill -KILL $$",
                   ("reload",))
    reload = Handler("reload", f"echo x >> {reloads}")
    first = run_batch(local, [op], [reload], state_dir=str(tmp_path))
    assert first.results["s:0"].error is not None and first.results["s:0"].error.startswith("not run")
    assert done.exists() and not reloads.exists()
    again = run_batch(local, [op], [reload], state_dir=str(tmp_path))
    assert again.results["s:0"].changed is False and again.handlers["handler:reload"].ok
    assert reloads.read_text() == "x\n"
    assert list((tmp_path / "pending").iterdir()) == []


def test_a_batch_that_changes_nothing_leaves_no_handler_pending(local: LocalTransport, tmp_path: Path) -> None:
    reload = Handler("reload", "echo ran")
    batch = run_batch(local, [Operation("s:0", "a", "t", ":", ("reload",))], [reload], state_dir=str(tmp_path))
    assert batch.ok and batch.handlers == {}
    assert list((tmp_path / "pending").iterdir()) == []


def test_an_operation_whose_handler_cannot_be_recorded_is_not_run(local: LocalTransport, tmp_path: Path) -> None:
    (tmp_path / "pending").write_text("a file where the folder should be\n")
    touched = tmp_path / "touched"
    ops = [Operation("s:0", "a", "t", f": > {touched}; changed", ("reload",)), Operation("s:1", "b", "t", "echo ok")]
    batch = run_batch(local, ops, [Handler("reload", "echo ran")], state_dir=str(tmp_path))
    r = batch.results["s:0"]
    assert not r.ok and r.error is not None and "cannot record the pending handlers (reload)" in r.error
    assert not touched.exists() and batch.handlers == {}
    assert batch.results["s:1"].ok and batch.results["s:1"].stdout == "ok\n"  # the others still run


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_script_cut_anywhere_runs_nothing(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """What ``sh -s`` gets when the connection is lost during the upload: any prefix of the script."""
    import subprocess

    folder = tmp_path_factory.mktemp("cut")
    log = folder / "log"
    ops = [Operation(f"s:{n}", f"a{n}", "t", f"echo {n} >> {log}; changed", ("reload",)) for n in range(5)]
    script = build_script(ops, [Handler("reload", f"echo reload >> {log}")], state_dir=str(folder))
    where = data.draw(st.floats(0, 1, exclude_max=True))
    cut = int(where * (len(script) - 1))  # at most: short of the seal's last character
    subprocess.run(["sh", "-s"], input=script[:cut].encode(), capture_output=True, check=False, timeout=30)
    assert not log.exists(), f"cut at {cut} of {len(script)} ran: {log.read_text()!r}"
    subprocess.run(["sh", "-s"], input=script.encode(), capture_output=True, check=False, timeout=30)
    assert log.read_text().split() == ["0", "1", "2", "3", "4", "reload"]

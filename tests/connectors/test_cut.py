"""A connection cut in the middle of a batch, through a TCP proxy between paramiko and a real sshd.

Cut during the upload: nothing of the partial script runs on the host, the transport reports the
transient "connection lost during the batch", and the batch run again applies every operation once.
Cut while the batch runs: the same error; the batch left on the host finishes before the next one
starts, and the next one runs the handler that the cut one could not. A batch whose shell is killed on
the host ends without an exit status too: transient, never reported as its operations' failure.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.base import BatchResult, Handler, Operation, TransportError, build_script, run_batch
from connectors.ssh import LOST, SshTransport
from tests.servers.base import wait_for
from tests.servers.cutproxy import CutProxy
from tests.servers.sshd import SshdServer

pytestmark = pytest.mark.servers


@pytest.fixture
def proxy(sshd: SshdServer) -> Iterator[CutProxy]:
    p = CutProxy(sshd.host, sshd.port).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def via_proxy(sshd: SshdServer, proxy: CutProxy, tmp_path: Path) -> Iterator[SshTransport]:
    known = tmp_path / "known_hosts"
    key = sshd.host_key_line.split(" ", 1)[1]
    known.write_text(f"[{proxy.host}]:{proxy.port} {key}\n")
    transport = SshTransport("cut-test", sshd.settings(port=proxy.port, known_hosts=known))
    try:
        yield transport
    finally:
        transport.close()


def _lost(exc: pytest.ExceptionInfo[TransportError]) -> None:
    assert exc.value.transient is True
    assert LOST in str(exc.value)


@pytest.mark.parametrize("cut_at", [2_000, 60_000, 250_000])
def test_a_cut_during_the_upload_runs_nothing_and_the_batch_again_runs_every_operation_once(
        via_proxy: SshTransport, proxy: CutProxy, tmp_path: Path, cut_at: int) -> None:
    log = tmp_path / "log"
    pad = "# " + "x" * 1500  # a large script of few operations: the upload spans many SSH packets
    ops = [Operation(f"op:{n}", f"acct{n}", "t", f"{pad}\nprintf '%s\\n' {n} >> {log}; changed", ("reload",))
           for n in range(200)]
    reload = Handler("reload", f"echo reload >> {log}")
    size = len(build_script(ops, [reload], state_dir=str(tmp_path)))
    assert cut_at < size / 1.2  # the cut comes well before the end of the script
    via_proxy.connect()
    proxy.cut_after(cut_at)
    with pytest.raises(TransportError) as exc:
        run_batch(via_proxy, ops, [reload], state_dir=str(tmp_path), timeout=60)
    _lost(exc)
    assert proxy.cuts == 1

    batch = run_batch(via_proxy, ops, [reload], state_dir=str(tmp_path), timeout=60)  # waits for any batch left
    assert batch.ok
    assert log.read_text().split() == [*map(str, range(200)), "reload"]
    assert list((tmp_path / "pending").iterdir()) == []


def test_a_cut_while_the_batch_runs_is_transient_and_the_next_batch_runs_the_handler(
        via_proxy: SshTransport, proxy: CutProxy, tmp_path: Path) -> None:
    log, gate, done = tmp_path / "log", tmp_path / "gate", tmp_path / "done"
    op = Operation("op:0", "a", "t",
                   f"if [ -e {done} ]; then return 0; fi\necho started >> {log}\n"
                   f"while [ ! -e {gate} ]; do sleep 0.02; done\n: > {done}\nchanged\n", ("reload",))
    reload = Handler("reload", f"echo reload >> {log}")
    errors: list[TransportError] = []

    def first() -> None:
        try:
            run_batch(via_proxy, [op], [reload], state_dir=str(tmp_path), timeout=60)
        except TransportError as e:
            errors.append(e)

    thread = threading.Thread(target=first)
    thread.start()
    wait_for(lambda: log.exists() and "started" in log.read_text(), timeout=20, what="the batch to start")
    proxy.cut_now()
    thread.join(timeout=30)
    assert len(errors) == 1 and errors[0].transient and LOST in str(errors[0])
    gate.touch()  # the batch left on the host goes on; its change is on disk, its handler may never run

    again: BatchResult = run_batch(via_proxy, [op], [reload], state_dir=str(tmp_path), timeout=60)
    assert again.ok and again.results["op:0"].changed is False
    assert log.read_text().split()[-1] == "reload"  # the change is loaded
    assert list((tmp_path / "pending").iterdir()) == []


def test_a_batch_killed_on_the_host_is_transient_not_an_operation_failure(
        ssh_transport: SshTransport, tmp_path: Path) -> None:
    ops = [Operation("op:0", "a", "t", "kill -KILL $$"), Operation("op:1", "b", "t", ":")]
    with pytest.raises(TransportError) as exc:
        run_batch(ssh_transport, ops, state_dir=str(tmp_path))
    assert exc.value.transient is True and "without an exit status" in str(exc.value)
    assert run_batch(ssh_transport, ops[1:], state_dir=str(tmp_path)).ok  # the transport goes on

"""The SSH connection of one host cut in the middle of a suspension, through the ``arrears`` command.

The inventory's ``web-nginx`` host (web, login and home of every account) is reached through a TCP proxy
(tests/servers/cutproxy.py) that cuts its connection once during the day-2 run: early in the script's
upload, late in it, or after the upload while the batch runs (its changes on disk, its nginx config test
held back until the cut happened). The run retries the batch on a new connection: every job completes
in that same run with no failed attempt counted, and every server has loaded every change.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import yaml

from connectors.ssh import SshTransport
from tests.e2e.conftest import SLOTS, Fleet, eventually
from tests.servers.base import wait_for
from tests.servers.cutproxy import CutProxy

pytestmark = pytest.mark.servers


@pytest.fixture
def proxy(fleet: Fleet) -> Iterator[CutProxy]:
    p = CutProxy(fleet.sshd.host, fleet.sshd.port).start()
    try:
        yield p
    finally:
        p.stop()


def _host_jobs(folder: Path, account: str) -> list[tuple[str, str, int]]:
    con = sqlite3.connect(folder / "arrears.db")
    try:
        rows = con.execute("select key, status, attempts from jobs where account = ? and kind = 'host' "
                           "order by key", (account,)).fetchall()
    finally:
        con.close()
    return [(str(k), str(s), int(a)) for k, s, a in rows]


@pytest.mark.parametrize("account, cut", [("acct-1", "upload-early"), ("acct-2", "upload-late"),
                                           ("acct-3", "running")])
def test_a_cut_connection_is_retried_in_the_run_and_every_change_is_loaded(
        fleet: Fleet, proxy: CutProxy, tmp_path: Path, account: str, cut: str) -> None:
    slot = SLOTS[account]
    nginx = fleet.web["nginx"]
    gate = tmp_path / "gate"  # the nginx config test of web-nginx waits for it
    if cut != "running":
        gate.touch()
    arrears = fleet.config(tmp_path / "cfg", [fleet.account(account)])
    known = tmp_path / "known_hosts"
    key = fleet.sshd.host_key_line.split(" ", 1)[1]
    known.write_text(f"{fleet.sshd.host_key_line}\n[{proxy.host}]:{proxy.port} {key}\n")
    inventory = fleet.inventory({"web-nginx": proxy.port})
    inventory["defaults"]["known_hosts"] = str(known)
    web = inventory["hosts"]["web-nginx"]["services"]["web"]
    web["config_test"] = ["sh", "-c", f'while [ ! -e {gate} ]; do sleep 0.05; done; exec "$0" "$@"',
                          *web["config_test"]]
    (arrears.folder / "inventory.yaml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    arrears.charge(account, 0, "30.00", f"inv-{account}")
    for n in (0, 1):
        assert arrears.run(n)["executor"]["errors"] == []

    # the size of the SSH handshake, on a connection of its own
    probe = SshTransport("probe", fleet.sshd.settings(port=proxy.port, known_hosts=known))
    probe.connect()
    handshake = proxy.upstream[-1]
    probe.close()
    wait_for(lambda: proxy.open_connections == 0, what="the probe connection to close")

    watcher = None
    if cut == "upload-early":
        proxy.cut_after(handshake + 300)
    elif cut == "upload-late":
        proxy.cut_after(handshake + 6000)
    else:
        def cut_when_on_disk() -> None:
            wait_for(lambda: (nginx.hook_dir / f"{slot.site}.conf").exists(), timeout=60,
                     what="the suspension to reach the disk")
            proxy.cut_now()
            gate.touch()

        watcher = threading.Thread(target=cut_when_on_disk, daemon=True)
        watcher.start()
    connections = len(proxy.upstream)

    result = arrears.run(2)

    if watcher is not None:
        watcher.join(timeout=60)
    executor = result["executor"]
    assert (executor["retrying"], executor["failed"], executor["errors"]) == (0, 0, [])
    assert (account, "suspension", "suspend") in [(t["account"], t["stage"], t["action"]) for t in executor["taken"]]
    jobs = _host_jobs(arrears.folder, account)
    assert any(key.endswith(":web-nginx") for key, _, _ in jobs), jobs
    assert all((status, attempts) == ("done", 1) for _, status, attempts in jobs), jobs  # the cut is not counted
    assert proxy.cuts == 1 and len(proxy.upstream) == connections + 2  # cut once, then one new connection
    if cut.startswith("upload"):
        cut_at = proxy.upstream[connections] - handshake
        assert cut_at < proxy.upstream[-1] - handshake - 1000  # the retry sent much more: the cut was mid-upload

    # every server has loaded every change
    for backend in ("nginx", "apache"):
        eventually(partial(fleet.redirected, backend, slot.site), f"{slot.site} on {backend} to redirect")
    assert fleet.ssh_login(account) is None
    assert not fleet.imap_ok(slot.mailbox)
    assert fleet.incoming(slot.mailbox) != 250
    assert arrears.show(account, 2)["state"] == "suspended"
    assert list((fleet.state_dir / "pending").iterdir()) == []

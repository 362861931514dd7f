"""InventoryFleet: one batch and one connection per host, hosts in parallel, failures kept to their job/host."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from connectors import registry
from connectors.base import ScriptOutput, Transport
from connectors.fleet import Job
from connectors.inventory import Inventory, load_inventory
from connectors.local import LocalTransport
from connectors.runner import InventoryFleet
from connectors.testing import flag_backends, flag_inventory_yaml
from tests.servers.base import free_port
from tests.servers.sshd import SshdServer


@pytest.fixture(autouse=True)
def _flag_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, target in flag_backends().items():
        monkeypatch.setitem(registry.BACKENDS, key, target)


def _jobs(action: str, accounts: list[str], host: str, service: str = "web", **resource: str) -> list[Job]:
    return [Job(f"{a}:{action}:{service}@{host}", a, action, service, host, dict(resource))  # type: ignore[arg-type]
            for a in accounts]


def _local_inventory(tmp_path: Path, hosts: list[str], parallel: int = 4) -> Inventory:
    text = flag_inventory_yaml({h: str(tmp_path / h) for h in hosts}, parallel=parallel)
    return load_inventory(text, str(tmp_path / "inventory.yaml"))


def _ssh(sshd: SshdServer, **over: object) -> dict[str, object]:
    return {"address": sshd.host, "port": sshd.port, "user": "root", "key": str(sshd.client_key),
            "known_hosts": str(sshd.known_hosts), **over}


def test_suspend_resume_and_suspend_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    inv = _local_inventory(tmp_path, ["h1", "h2"])
    jobs = _jobs("suspend", ["a1", "a2"], "h1") + _jobs("suspend", ["b1"], "h2", service="mail")
    with InventoryFleet(inv) as fleet:
        first = fleet.apply(jobs)
        assert all(r.ok and r.changed for r in first.values()), first
        assert (tmp_path / "h1/web/a1.suspended").exists() and (tmp_path / "h2/mail/b1.suspended").exists()
        assert first["a1:suspend:web@h1"].facts == {"state": "suspended"}
        assert first["a1:suspend:web@h1"].operations[0]["id"] == "a1:web:suspend"

        second = fleet.apply(jobs)
        assert all(r.ok for r in second.values())
        assert [op["changed"] for r in second.values() for op in r.operations] == [False, False, False]
        assert not any(r.changed for r in second.values())
        # the reload handler ran once for the first batch (two accounts) and not for the no-op batch
        assert (tmp_path / "h1/web.reloads").read_text().split() == ["a1:web:suspend", "a2:web:suspend"]

        resumed = fleet.apply(_jobs("resume", ["a1"], "h1"))
        assert resumed["a1:resume:web@h1"].changed and not (tmp_path / "h1/web/a1.suspended").exists()
        assert (tmp_path / "h1/web/a2.suspended").exists()


def test_one_failing_operation_fails_only_its_job(tmp_path: Path) -> None:
    inv = _local_inventory(tmp_path, ["h1"])
    jobs = _jobs("suspend", ["a1"], "h1", fail="disk full") + _jobs("suspend", ["a2"], "h1")
    with InventoryFleet(inv) as fleet:
        results = fleet.apply(jobs)
    bad, good = results["a1:suspend:web@h1"], results["a2:suspend:web@h1"]
    assert not bad.ok and "disk full" in (bad.error or "") and not bad.transient
    assert bad.operations[0]["rc"] == 1
    assert good.ok and good.changed


@pytest.mark.parametrize("account", ["x;rm -rf /", "../../etc", "a\nb", "$(reboot)", ""])
def test_unsafe_account_is_refused_before_anything_runs(tmp_path: Path, account: str) -> None:
    inv = _local_inventory(tmp_path, ["h1"])
    made: list[str] = []

    def factory(host: str) -> Transport:
        made.append(host)
        return LocalTransport(host)

    with InventoryFleet(inv, transport_factory=factory) as fleet:
        results = fleet.apply([Job("bad", account, "delete", "web", "h1", {})])
    assert not results["bad"].ok and "refused" in (results["bad"].error or "")
    assert "nothing was run" in (results["bad"].error or "")
    assert made == [], "no transport may be opened for a refused job"
    assert not (tmp_path / "h1").exists()


def test_unknown_host_and_missing_service_fail_their_job_only(tmp_path: Path) -> None:
    inv = _local_inventory(tmp_path, ["h1"])
    jobs = [Job("j1", "a1", "suspend", "web", "nohost", {}), Job("j2", "a1", "suspend", "home", "h1", {}),
            *_jobs("suspend", ["a3"], "h1")]
    with InventoryFleet(inv) as fleet:
        results = fleet.apply(jobs)
    assert list(results) == ["j1", "j2", "a3:suspend:web@h1"]
    assert "unknown host 'nohost'" in (results["j1"].error or "") and "h1" in (results["j1"].error or "")
    assert "no 'home' service" in (results["j2"].error or "") and "mail, web" in (results["j2"].error or "")
    assert results["a3:suspend:web@h1"].ok


class _SlowTransport:
    """A fake transport that records how many hosts run at the same time."""

    active = 0
    peak = 0
    lock = threading.Lock()

    def __init__(self, host: str) -> None:
        self.host = host
        self.closed = False
        self.inner = LocalTransport(host)

    def run_script(self, script: str, *, timeout: float | None = None) -> ScriptOutput:
        with _SlowTransport.lock:
            _SlowTransport.active += 1
            _SlowTransport.peak = max(_SlowTransport.peak, _SlowTransport.active)
        try:
            time.sleep(0.05)  # hold the slot so overlapping hosts are visible
            return self.inner.run_script(script, timeout=timeout)
        finally:
            with _SlowTransport.lock:
                _SlowTransport.active -= 1

    def put(self, path: str, data: bytes, *, mode: int = 0o600) -> None:
        raise NotImplementedError

    def get(self, path: str) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


def test_hosts_run_in_parallel_bounded_by_the_setting_and_close_closes_them(tmp_path: Path) -> None:
    hosts = [f"h{i}" for i in range(6)]
    inv = _local_inventory(tmp_path, hosts, parallel=2)
    made: dict[str, _SlowTransport] = {}

    def factory(host: str) -> Transport:
        made[host] = _SlowTransport(host)
        return made[host]

    seen: list[tuple[str, int, int]] = []
    fleet = InventoryFleet(inv, transport_factory=factory)
    _SlowTransport.peak = 0
    jobs = [j for h in hosts for j in _jobs("suspend", ["a1", "a2"], h)]
    results = fleet.apply(jobs, progress=lambda host, done, total: seen.append((host, done, total)))
    assert all(r.ok for r in results.values())
    assert _SlowTransport.peak == 2
    assert sorted(h for h, _, _ in seen) == hosts and seen[-1][1:] == (12, 12)
    fleet.apply(_jobs("resume", ["a1"], "h0"))
    assert len(made) == 6, "transports are kept across apply() calls"
    assert not any(t.closed for t in made.values())
    fleet.close()
    assert all(t.closed for t in made.values())


@pytest.mark.servers
def test_200_accounts_to_one_ssh_host_use_one_connection(sshd: SshdServer, tmp_path: Path) -> None:
    root = tmp_path / "sshhost"
    text = flag_inventory_yaml({"sshhost": str(root)}, ssh={"sshhost": _ssh(sshd)})
    inv = load_inventory(text, str(tmp_path / "inventory.yaml"))
    accounts = [f"acct{i}" for i in range(200)]
    before = sshd.connections("root")
    with InventoryFleet(inv) as fleet:
        started = time.perf_counter()
        first = fleet.apply(_jobs("suspend", accounts, "sshhost"))
        elapsed = time.perf_counter() - started
        second = fleet.apply(_jobs("suspend", accounts, "sshhost"))
    print(f"\n200 suspensions on one SSH host, one batch (connect included): {elapsed * 1000:.0f} ms")
    assert all(r.ok and r.changed for r in first.values())
    assert len(list(root.glob("web/*.suspended"))) == 200
    assert all(r.ok and not r.changed for r in second.values())
    assert all(not op["changed"] for r in second.values() for op in r.operations)
    assert sshd.connections("root") - before == 1


@pytest.mark.servers
def test_unreachable_and_mismatched_hosts_fail_alone(sshd: SshdServer, tmp_path: Path) -> None:
    wrong_known = tmp_path / "wrong_known_hosts"
    wrong_known.write_text(
        f"[{sshd.host}]:{sshd.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9H0uY9GqhnxIhS4OXS4gStSqyz3eLj0Ufz3qTeYF9b\n"
    )
    roots = {h: str(tmp_path / h) for h in ("good", "down", "spoofed")}
    ssh = {
        "good": _ssh(sshd),
        "down": _ssh(sshd, port=free_port()),
        "spoofed": _ssh(sshd, known_hosts=str(wrong_known)),
    }
    inv = load_inventory(flag_inventory_yaml(roots, ssh=ssh), str(tmp_path / "inventory.yaml"))
    jobs = [j for h in roots for j in _jobs("suspend", ["a1", "a2"], h)]
    with InventoryFleet(inv) as fleet:
        started = time.monotonic()
        results = fleet.apply(jobs)
        elapsed = time.monotonic() - started
    assert results["a1:suspend:web@good"].ok and results["a2:suspend:web@good"].ok
    for account in ("a1", "a2"):
        down = results[f"{account}:suspend:web@down"]
        assert not down.ok and down.transient and "refused" in (down.error or "").lower()
        spoofed = results[f"{account}:suspend:web@spoofed"]
        assert not spoofed.ok and not spoofed.transient and "CHANGED" in (spoofed.error or "")
    assert not (tmp_path / "spoofed").exists() and not (tmp_path / "down").exists()
    assert elapsed < 15


@pytest.mark.servers
def test_hosts_check_reports_reachability_host_keys_and_backends(sshd: SshdServer, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from agent.cli.hosts import hosts

    empty_known = tmp_path / "empty_known_hosts"
    empty_known.write_text("")
    wrong_known = tmp_path / "wrong_known_hosts"
    wrong_known.write_text(
        f"[{sshd.host}]:{sshd.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9H0uY9GqhnxIhS4OXS4gStSqyz3eLj0Ufz3qTeYF9b\n"
    )
    roots = {"good": str(tmp_path / "good"), "down": str(tmp_path / "down"), "spoofed": str(tmp_path / "s"),
             "unknown": str(tmp_path / "u"), "demo": str(tmp_path / "no" / "such" / "dir")}
    ssh = {"good": _ssh(sshd), "down": _ssh(sshd, port=free_port()),
           "spoofed": _ssh(sshd, known_hosts=str(wrong_known)), "unknown": _ssh(sshd, known_hosts=str(empty_known))}
    path = tmp_path / "inventory.yaml"
    path.write_text(flag_inventory_yaml(roots, ssh=ssh))

    result = CliRunner().invoke(hosts, ["check", "--inventory", str(path), "--json"])
    assert result.exit_code == 1, result.output
    report = {h["host"]: h for h in json.loads(result.output)["hosts"]}
    good = report["good"]
    assert good["ok"] and good["reachable"] and good["host_key"] == "ok"
    assert [(s["service"], s["ok"]) for s in good["services"]] == [("web", True), ("mail", True)]
    assert report["down"]["reachable"] is False and report["down"]["transient"] is True
    assert report["spoofed"]["host_key"] == "changed" and not report["spoofed"]["ok"]
    assert report["unknown"]["host_key"] == "unknown"
    assert report["unknown"]["fingerprint"].startswith("SHA256:")
    assert report["unknown"]["fingerprint"] in report["unknown"]["error"]
    demo = report["demo"]
    assert demo["reachable"] and demo["host_key"] == "not applicable" and not demo["ok"]
    assert "does not exist" in demo["services"][0]["detail"]

    table = CliRunner().invoke(hosts, ["check", "--inventory", str(path), "--host", "good"])
    assert table.exit_code == 0, table.output
    assert "good" in table.output and "all hosts ok" in table.output

    path.write_text("hosts:\n  web1:\n    transport: telnet\n")
    bad = CliRunner().invoke(hosts, ["check", "--inventory", str(path)])
    assert bad.exit_code == 2 and f"{path}:3: hosts.web1.transport" in bad.output


def test_a_host_with_a_state_dir_of_its_own_does_not_wait_for_the_default_ones_batch_lock(tmp_path: Path) -> None:
    import fcntl

    text = flag_inventory_yaml({h: str(tmp_path / h) for h in ("h1", "h2")}).replace(
        "retry_max_time: 10}", f"retry_max_time: 10, batch_timeout: 30, state_dir: {tmp_path}/shared}}")
    text = text.replace("  h2:\n    transport: local\n",
                        f"  h2:\n    transport: local\n    state_dir: {tmp_path}/h2-state\n")
    inv = load_inventory(text, str(tmp_path / "inventory.yaml"))
    assert inv.state_dir("h1") == f"{tmp_path}/shared" and inv.state_dir("h2") == f"{tmp_path}/h2-state"
    (tmp_path / "shared").mkdir()
    held = (tmp_path / "shared" / "batch.lock").open("a")  # a batch still running on h1's machine
    fcntl.flock(held, fcntl.LOCK_EX)
    got: dict[str, bool] = {}
    with InventoryFleet(inv) as fleet:
        waiting = threading.Thread(target=lambda: got.update(
            (k, r.ok) for k, r in fleet.apply(_jobs("suspend", ["a1"], "h1")).items()))
        waiting.start()
        other = fleet.apply(_jobs("suspend", ["b1"], "h2"))  # a lock of its own: it runs at once
        assert other["b1:suspend:web@h2"].ok and (tmp_path / "h2/web/b1.suspended").exists()
        assert waiting.is_alive() and not (tmp_path / "h1/web/a1.suspended").exists()  # h1 waits
        fcntl.flock(held, fcntl.LOCK_UN)
        held.close()
        waiting.join(timeout=60)
    assert got == {"a1:suspend:web@h1": True} and (tmp_path / "h1/web/a1.suspended").exists()

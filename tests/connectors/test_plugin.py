"""The testing kit: FakeFleet behaviour, and the pytest plugin as an integrator's test suite sees it."""

from __future__ import annotations

import pytest

from connectors.fleet import Job
from connectors.testing import FakeFleet

pytest_plugins = ["pytester"]


def _job(key: str, account: str, action: str, service: str = "web", host: str = "web1") -> Job:
    return Job(key, account, action, service, host, {})  # type: ignore[arg-type]


def test_fake_fleet_is_idempotent_and_records_jobs() -> None:
    fleet = FakeFleet()
    first = fleet.apply([_job("k1", "42", "suspend")])
    again = fleet.apply([_job("k2", "42", "suspend")])
    assert first["k1"].changed and not again["k2"].changed
    assert fleet.state("web1", "web", "42") == "suspended"
    resumed = fleet.apply([_job("k3", "42", "resume")])
    assert resumed["k3"].changed and fleet.state("web1", "web", "42") == "active"
    assert [j.key for j in fleet.applied(account="42")] == ["k1", "k2", "k3"]
    assert len(fleet.batches) == 3


def test_fake_fleet_failures_and_facts() -> None:
    fleet = FakeFleet()
    fleet.fail_host("web2")
    fleet.fail_job("*:mail", "doveadm failed", times=1)
    fleet.set_facts("web1", "web", "7", vhost="example.org")
    jobs = [_job("7:mail", "7", "suspend", service="mail"), _job("7:web", "7", "status"),
            _job("8:web", "8", "suspend", host="web2"), _job("bad", "x;rm -rf /", "delete")]
    results = fleet.apply(jobs)
    assert not results["7:mail"].ok and "doveadm failed" in (results["7:mail"].error or "")
    assert fleet.state("web1", "mail", "7") == "active", "a failed job changes nothing"
    assert results["7:web"].facts == {"vhost": "example.org", "state": "active"}
    assert not results["8:web"].ok and results["8:web"].transient
    assert not results["bad"].ok and "refused" in (results["bad"].error or "")
    fleet.heal_host("web2")
    retry = fleet.apply([_job("7:mail", "7", "suspend", service="mail"), _job("8:web", "8", "suspend", host="web2")])
    assert all(r.ok and r.changed for r in retry.values())


def test_delete_reports_archive_facts_and_restore_brings_back() -> None:
    fleet = FakeFleet()
    deleted = fleet.apply([_job("d", "9", "delete", service="home")])["d"]
    assert deleted.changed and deleted.facts["archive"].endswith(".tar.gz") and len(deleted.facts["sha256"]) == 64
    assert fleet.state("web1", "home", "9") == "deleted"
    assert not fleet.apply([_job("s", "9", "suspend", service="home")])["s"].changed
    assert fleet.apply([_job("r", "9", "restore", service="home")])["r"].changed
    assert fleet.state("web1", "home", "9") == "active"


INTEGRATOR_TESTS = '''
from connectors.fleet import Job
from connectors.runner import InventoryFleet


def test_fake_fleet_fixture(fake_fleet):
    fake_fleet.fail_host("mail1")
    out = fake_fleet.apply([Job("1", "42", "suspend", "web", "web1", {}),
                            Job("2", "42", "suspend", "mail", "mail1", {})])
    assert out["1"].ok and out["1"].changed
    assert not out["2"].ok and out["2"].transient
    assert fake_fleet.state("web1", "web", "42") == "suspended"


def test_fake_inventory_runs_real_batches(fake_inventory, tmp_path):
    assert sorted(fake_inventory.hosts) == ["mail1", "web1"]
    with InventoryFleet(fake_inventory) as fleet:
        out = fleet.apply([Job("1", "42", "suspend", "web", "web1", {}),
                           Job("2", "42", "suspend", "mail", "mail1", {})])
        again = fleet.apply([Job("1", "42", "suspend", "web", "web1", {})])
    assert all(r.ok and r.changed for r in out.values())
    assert not again["1"].changed
    assert (tmp_path / "hosts" / "web1" / "web" / "42.suspended").exists()


def test_fixture_is_fresh_per_test(fake_fleet):
    assert fake_fleet.jobs == [] and fake_fleet.state("web1", "web", "42") == "active"
'''


def test_plugin_fixtures_in_an_integrators_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_integration=INTEGRATOR_TESTS)
    # the plugin comes from the installed package's pytest11 entry point, not from this repository's conftest
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_integration="def test_x(fake_fleet):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:arrears")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'fake_fleet' not found*"])

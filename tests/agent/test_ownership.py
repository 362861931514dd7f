"""Every resource has one owner: an import cannot claim another account's home, site or mailbox (on the demo
fleet, through the CLI), the database refuses a second owner whoever writes, homes cannot nest, placements
are validated at import for their host, and ``accounts move-resource`` is the audited way to move one."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import IntegrityError

from agent.cli import cli
from agent.demo import host_dirs
from agent.imports import ImportFileError, import_accounts
from agent.store import models as m
from agent.store.db import Store, open_store
from agent.store.placements import OwnershipError, put_placement
from tests.scenarios.harness import day


def invoke(folder: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(folder), *args], catch_exceptions=False,
                              env={"ARREARS_CONFIG": None, "ARREARS_DB": None, "ARREARS_DEBUG": None})


def ok(folder: Path, *args: str) -> Result:
    result = invoke(folder, *args)
    assert result.exit_code == 0, result.output
    return result


def refused(folder: Path, *args: str) -> str:
    result = invoke(folder, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    return result.stderr


def dump(folder: Path) -> list[str]:
    with sqlite3.connect(folder / "arrears.db") as conn:
        return list(conn.iterdump())


def lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def build_demo(folder: Path) -> Path:
    """A demo fleet with one day replayed: bravo-02 owns bravo.example, info@bravo.example and its home."""
    result = CliRunner().invoke(cli, ["demo", str(folder), "--days", "1"])
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo shared by the tests that are refused (each checks that nothing was written)."""
    return build_demo(tmp_path_factory.mktemp("fleet") / "d")


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return build_demo(tmp_path / "d")


def bravo_home(folder: Path) -> Path:
    return host_dirs(folder)["web1"] / "home" / "bravo"


@pytest.mark.parametrize("service, resource, field, claimed", [
    ("home", {"host": "web1", "path": "{home}"}, "resources.home.path", "{home} on web1"),
    ("web", {"host": "web1", "sites": ["mallory.example", "Bravo.Example."]}, "resources.web.sites[1]",
     "bravo.example on web1"),
    ("mail", {"host": "mail1", "mailboxes": ["INFO@bravo.example"]}, "resources.mail.mailboxes[0]",
     "info@bravo.example on mail1"),
])
def test_an_import_cannot_claim_another_accounts_resource_on_the_demo_fleet(
    demo: Path, service: str, resource: dict[str, Any], field: str, claimed: str
) -> None:
    home = str(bravo_home(demo))
    resource = json.loads(json.dumps(resource).replace("{home}", home))
    before = dump(demo)
    path = lines(demo / "mallory.jsonl", [
        {"id": "mallory-00", "resources": {"web": {"host": "web1", "sites": ["decoy.example"]}}},
        {"id": "mallory-99", "billing_email": "m@evil.example", "resources": {service: resource}},
    ])

    message = refused(demo, "accounts", "import", str(path))

    assert message.startswith(f"error: {path}:2: {field}: {claimed.replace('{home}', home)} belongs to account "
                              "bravo-02; ")
    assert "arrears accounts move-resource bravo-02 mallory-99" in message
    assert dump(demo) == before  # nothing of the file was written, not even its good first line
    assert "unknown account 'mallory-99'" in refused(demo, "delete", "mallory-99", "--yes", "--reason", "gone")
    ok(demo, "run", "--at", day(2))
    # bravo-02's home, site and mailbox are untouched
    web, mail = host_dirs(demo).values()
    assert (bravo_home(demo) / "public_html" / "index.php").is_file()
    assert not (web / "etc/nginx/arrears.d/bravo.example.conf").exists()
    bounce = mail / "etc/postfix/arrears/bounce"
    assert not bounce.exists() or "bravo" not in bounce.read_text()
    assert json.loads(ok(demo, "show", "bravo-02", "--json", "--at", day(2)).stdout)["state"] != "deleted"


def test_a_duplicate_in_the_same_file_is_refused_at_its_second_line(fleet: Path) -> None:
    before = dump(fleet)
    path = lines(fleet / "twins.jsonl", [
        {"id": "twin-1", "resources": {"mail": {"host": "mail1", "mailboxes": ["o'neil@twins.example"]}}},
        {"id": "twin-2", "resources": {"mail": {"host": "mail1", "mailboxes": ["O'Neil@twins.example"]}}},
    ])
    message = refused(fleet, "accounts", "import", str(path))
    assert message.startswith(f"error: {path}:2: resources.mail.mailboxes[0]: o'neil@twins.example on mail1 "
                              "belongs to account twin-1")
    assert dump(fleet) == before


def test_a_mailbox_with_an_apostrophe_imports(demo: Path) -> None:
    path = lines(demo / "oneil.jsonl", [
        {"id": "oneil-01", "resources": {"mail": {"host": "mail1", "mailboxes": ["o'neil@example.com"]}}}])
    ok(demo, "accounts", "import", str(path))
    shown = json.loads(ok(demo, "show", "oneil-01", "--json").stdout)
    assert shown["placements"] == [{"service": "mail", "host": "mail1"}]


@pytest.mark.parametrize("resource, field, says", [
    ({"web": {"host": "web1", "sites": ["ok.example", "x;reboot"]}}, "resources.web.sites[1]",
     "refused domain 'x;reboot'"),
    ({"web": {"host": "web1", "sites": ["ok.example"], "suspended_url": "javascript:alert(1)"}},
     "resources.web.suspended_url", "refused URL"),
    ({"mail": {"host": "mail1", "mailboxes": ["info@ok.example", "in fo@ok.example"]}},
     "resources.mail.mailboxes[1]", "refused mailbox"),
    ({"mail": {"host": "mail1", "mailboxes": ["info@ok.example"], "flags": "dxz"}}, "resources.mail.flags",
     "unknown flag letters"),
    ({"home": {"host": "web1", "path": "/etc"}}, "resources.home.path", "is not below the configured roots"),
    ({"home": {"host": "web1", "path": "{root}/../../etc"}}, "resources.home.path", "'..'"),
    ({"home": {"host": "web1"}}, "resources.home.path", "is required"),
    ({"login": {"host": "web1", "user": "root"}}, "resources.login",
     "host 'web1' does not run login in"),
    ({"mail": {"host": "web1", "mailboxes": ["info@ok.example"]}}, "resources.mail",
     "host 'web1' does not run mail in"),
    ({"web": {"host": "web9", "sites": ["ok.example"]}}, "resources.web.host", "host 'web9' is not in"),
])
def test_placements_are_validated_at_import_for_their_host(fleet: Path, resource: dict[str, Any], field: str,
                                                           says: str) -> None:
    root = str(host_dirs(fleet)["web1"] / "home")
    resource = json.loads(json.dumps(resource).replace("{root}", root))
    before = dump(fleet)
    path = lines(fleet / "bad.jsonl", [{"id": "fine-01"}, {"id": "new-02", "resources": resource}])
    message = refused(fleet, "accounts", "import", str(path))
    assert message.startswith(f"error: {path}:2: {field}: ")
    assert says in message
    # and it says what to do
    assert "fix it in the billing export" in message or "name a host" in message
    assert dump(fleet) == before
    assert refused(fleet, "delete", "new-02", "--yes")  # never "queued"


# -- the store: whoever writes ------------------------------------------------------------------------------


def test_the_unique_key_refuses_a_second_owner_on_a_direct_insert(store: Store) -> None:
    with store.session() as s:
        s.add_all([m.Account(id="a1", resources={}), m.Account(id="b2", resources={})])
        s.flush()
        p = m.Placement(account="a1", service="home", host="web1", resource={"path": "/home/a"}, state={})
        q = m.Placement(account="b2", service="home", host="web1", resource={"path": "/home/a"}, state={})
        s.add_all([p, q])
        s.flush()
        s.add(m.ResourceClaim(placement=p.id, account="a1", host="web1", service="home", key="/home/a"))
    with pytest.raises(IntegrityError), store.session() as s:
        s.add(m.ResourceClaim(placement=q.id, account="b2", host="web1", service="home", key="/home/a"))
    with store.session() as s:  # another host, or another kind of resource, is another thing
        s.add(m.ResourceClaim(placement=q.id, account="b2", host="web2", service="home", key="/home/a"))
        s.add(m.ResourceClaim(placement=q.id, account="b2", host="web1", service="login", key="/home/a"))


def test_the_python_api_goes_through_the_same_check(store: Store) -> None:
    with store.session() as s:
        s.add_all([m.Account(id="a1", resources={}), m.Account(id="b2", resources={})])
        s.flush()
        put_placement(s, "a1", "web", "web1", {"sites": ["a.example"]}, [("sites[0]", "a.example")])
    with pytest.raises(OwnershipError, match=r"a\.example on web1 belongs to account a1"), store.session() as s:
        put_placement(s, "b2", "web", "web1", {"sites": ["a.example"]}, [("sites[0]", "a.example")])


def _import(store: Store, tmp_path: Path, name: str, records: list[dict[str, Any]]) -> None:
    from datetime import UTC, datetime

    with store.session() as s:
        import_accounts(s, lines(tmp_path / name, records), datetime(2026, 3, 1, tzinfo=UTC))


def _home(aid: str, path: str) -> dict[str, Any]:
    return {"id": aid, "resources": {"home": {"host": "web1", "path": path}}}


@pytest.mark.parametrize("first, second, says", [
    ("/home/bob", "/home/bob/www", "/home/bob/www on web1 lies inside /home/bob, the home of account bob"),
    ("/home/bob/www", "/home/bob", "/home/bob on web1 contains /home/bob/www, the home of account bob"),
    ("/home/bob", "/home/bob/", "/home/bob on web1 belongs to account bob"),
])
def test_nested_homes_are_refused_both_ways(store: Store, tmp_path: Path, first: str, second: str,
                                            says: str) -> None:
    _import(store, tmp_path, "a.jsonl", [_home("bob", first)])
    with pytest.raises(ImportFileError) as stored:
        _import(store, tmp_path, "b.jsonl", [_home("eve", second)])
    assert str(stored.value).startswith(f"{tmp_path / 'b.jsonl'}:1: resources.home.path: {says}")
    with store.session() as s:
        assert s.get(m.Account, "eve") is None
    # the same within one file, into an empty database
    fresh = open_store(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        with pytest.raises(ImportFileError) as same_file:
            _import(fresh, tmp_path, "c.jsonl", [_home("bob", first), _home("eve", second)])
        assert str(same_file.value).startswith(f"{tmp_path / 'c.jsonl'}:2: resources.home.path: {says}")
    finally:
        fresh.close()


@settings(max_examples=60, deadline=None)
@given(a=st.lists(st.sampled_from(["home", "bob", "bobby", "b", "www", "x.y"]), min_size=1, max_size=4),
       b=st.lists(st.sampled_from(["home", "bob", "bobby", "b", "www", "x.y"]), min_size=1, max_size=4))
def test_two_homes_may_coexist_exactly_when_neither_contains_the_other(tmp_path_factory: pytest.TempPathFactory,
                                                                     a: list[str], b: list[str]) -> None:
    folder = tmp_path_factory.mktemp("nest")
    pa, pb = "/srv/" + "/".join(a), "/srv/" + "/".join(b)
    store = open_store(f"sqlite:///{folder / 'arrears.db'}")
    try:
        _import(store, folder, "a.jsonl", [_home("a1", pa)])
        nested = pa == pb or pb.startswith(pa + "/") or pa.startswith(pb + "/")
        try:
            _import(store, folder, "b.jsonl", [_home("b2", pb)])
            accepted = True
        except ImportFileError:
            accepted = False
        assert accepted == (not nested), (pa, pb)
    finally:
        store.close()


# -- moving a resource ----------------------------------------------------------------------------------------


def test_move_resource_is_explicit_audited_and_refused_while_work_is_in_progress(demo: Path) -> None:
    home = str(host_dirs(demo)["web1"] / "home" / "golf")
    ok(demo, "accounts", "import", str(lines(demo / "new.jsonl", [{"id": "golf-new"}])))
    move = ("accounts", "move-resource", "golf-07", "golf-new", "--service", "home", "--host", "web1",
            "--reason", "customer split the account", "--actor", "alice")

    before = dump(demo)
    dry = json.loads(ok(demo, *move, "--dry-run", "--json").stdout)
    assert (dry["keys"], dry["dry_run"]) == ([home], True)
    assert dump(demo) == before

    ok(demo, "suspend", "golf-07", "--reason", "abuse", "--at", day(2))  # queued, not run yet
    assert "golf-07 has an action in progress" in refused(demo, *move, "--at", day(2))
    ok(demo, "run", "--at", day(2))  # the suspension is applied: nothing in progress any more

    assert "moved home on web1" in ok(demo, *move, "--at", day(2)).stdout
    placements = {a: json.loads(ok(demo, "show", a, "--json").stdout)["placements"] for a in ("golf-07", "golf-new")}
    assert {"service": "home", "host": "web1"} not in placements["golf-07"]
    assert placements["golf-new"] == [{"service": "home", "host": "web1"}]
    for aid in ("golf-07", "golf-new"):
        audit = [a for a in json.loads(ok(demo, "history", aid, "--json").stdout)["audit"]
                 if a["action"] == "accounts.move-resource"]
        assert [(a["actor"], a["reason"], a["details"]["from"], a["details"]["to"]) for a in audit] == [
            ("alice", "customer split the account", "golf-07", "golf-new")]

    # billing's next export gives the home to its new owner; the old one can no longer claim it
    ok(demo, "accounts", "import", str(lines(demo / "n2.jsonl", [_home("golf-new", home)])))
    old = json.loads((demo / "billing" / "accounts.jsonl").read_text().splitlines()[6])
    assert old["id"] == "golf-07"
    message = refused(demo, "accounts", "import", str(lines(demo / "old.jsonl", [old])))
    assert f"resources.home.path: {home} on web1 belongs to account golf-new" in message
    assert "unknown account" in refused(demo, "accounts", "move-resource", "golf-07", "nobody", "--service", "home",
                                        "--host", "web1", "--reason", "x")

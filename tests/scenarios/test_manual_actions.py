"""The admin's manual actions through the CLI, applied on local hosts by the flag-file connector:
suspend / resume (with and without a promise to pay), delete / restore, mass mail, reconcile, and
``--dry-run`` writing nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connectors import registry
from connectors.testing import flag_backends, flag_inventory_yaml
from tests.scenarios.harness import Arrears, day

ACCOUNTS = [
    {"id": "acme-01", "username": "acme", "billing_email": "billing@acme.example",
     "resources": {"web": {"host": "web1", "sites": ["acme.example"]},
                   "mail": {"host": "mail1", "mailboxes": ["info@acme.example"]}}},
    {"id": "bravo-02", "billing_email": "ap@bravo.example",
     "resources": {"web": {"host": "web1", "sites": ["bravo.example"]}}},
    {"id": "nomail-03",
     "resources": {"web": {"host": "web1", "sites": ["nomail.example"]}}},
]


@pytest.fixture
def arrears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Arrears:
    for key, target in flag_backends().items():
        monkeypatch.setitem(registry.BACKENDS, key, target)
    a = Arrears.create(tmp_path / "cfg", accounts=ACCOUNTS)
    roots = {"web1": str(tmp_path / "hosts" / "web1"), "mail1": str(tmp_path / "hosts" / "mail1")}
    (a.folder / "inventory.yaml").write_text(flag_inventory_yaml(roots, services=("web", "mail")))
    return a


def flags(tmp_path: Path, kind: str = "suspended") -> list[str]:
    root = tmp_path / "hosts"
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"*.{kind}")) if root.is_dir() else []


def audit_of(a: Arrears, account: str, action: str) -> list[dict[str, Any]]:
    return [e for e in a.json("history", account)["audit"] if e["action"] == action]


def spooled(a: Arrears) -> list[str]:
    """The recipients and subjects of the spooled notices."""
    out = []
    for name in a.spool():
        text = (a.folder / "outbox" / name).read_text(errors="replace")
        to = next(line for line in text.splitlines() if line.lower().startswith("to:"))
        subject = next(line for line in text.splitlines() if line.lower().startswith("subject:"))
        out.append(f"{to[3:].strip()} | {subject[8:].strip()}")
    return sorted(out)


def test_admin_suspend_holds_through_a_payment_until_an_admin_resumes(arrears: Arrears, tmp_path: Path) -> None:
    arrears.charge("acme-01", 0, "30.00", "inv-1")
    arrears.run(0)  # in debt: the outstanding balance notice
    out = arrears.ok("suspend", "acme-01", "--reason", "abuse report 4711", "--actor", "alice", "--at", day(1))
    assert "takes effect on the next run" in out.stdout
    assert flags(tmp_path) == []  # not yet: through the outbox
    assert arrears.show("acme-01", 1)["holds"] == ["admin"]
    taken = arrears.run(1)["executor"]["taken"]
    assert [(t["account"], t["action"]) for t in taken] == [("acme-01", "suspend")]
    assert flags(tmp_path) == ["mail1/mail/acme-01.suspended", "web1/web/acme-01.suspended"]
    assert arrears.show("acme-01", 1)["state"] == "suspended"
    # the suspension notice went out after the hosts applied it, to the billing address, dated that day
    assert [m for m in spooled(arrears) if "suspended" in m] == [
        "billing@acme.example | Your account acme-01 has been suspended"]
    suspended = next(n for n in arrears.spool() if "admin-suspend" in n)
    assert "was suspended on 2026-03-03" in (arrears.folder / "outbox" / suspended).read_text().replace("=\n", "")
    record = audit_of(arrears, "acme-01", "manual.suspend")
    assert [(r["actor"], r["reason"], r["at"]) for r in record] == [("alice", "abuse report 4711", day(1))]

    arrears.ok("payment", "acme-01", "30", "--method", "card", "--at", day(2))
    arrears.run(2)
    arrears.run(3)
    assert flags(tmp_path) == ["mail1/mail/acme-01.suspended", "web1/web/acme-01.suspended"]
    info = arrears.show("acme-01", 3)
    assert (info["state"], info["episode"], info["holds"]) == ("suspended", None, ["admin"])

    arrears.ok("resume", "acme-01", "--reason", "cleaned up", "--actor", "bob", "--at", day(4), "--now")
    assert flags(tmp_path) == []
    info = arrears.show("acme-01", 4)
    assert (info["state"], info["holds"]) == ("active", [])
    assert [(r["actor"], r["reason"]) for r in audit_of(arrears, "acme-01", "manual.resume")] == [
        ("bob", "cleaned up")]


def test_the_notice_of_an_admin_suspension(arrears: Arrears) -> None:
    # not in debt: not the policy's suspension notice (which speaks of a debt) but admin_suspended ...
    info = arrears.json("suspend", "bravo-02", "--reason", "abuse", "--at", day(0), "--now")
    assert info["notice"] == "admin_suspended" and info["state_after"] == "suspended"
    assert spooled(arrears) == ["ap@bravo.example | Your account bravo-02 has been suspended by our administrators"]
    # ... and the operator's own admin_suspended template wins over the packaged one
    for name in arrears.spool():
        (arrears.folder / "outbox" / name).unlink()
    (arrears.folder / "templates").mkdir()
    (arrears.folder / "templates" / "admin_suspended.txt.j2").write_text(
        "Subject: {{ account_id }} suspended by our staff\nDear {{ username }}, see you on {{ suspended_at }}.\n")
    info = arrears.json("suspend", "acme-01", "--reason", "abuse", "--at", day(0), "--now")
    assert info["notice"] == "admin_suspended"
    assert spooled(arrears) == ["billing@acme.example | acme-01 suspended by our staff"]


def test_suspend_twice_is_refused_and_the_actor_defaults_to_the_login(arrears: Arrears) -> None:
    arrears.ok("suspend", "bravo-02", "--reason", "r1", "--at", day(0))
    before = arrears.dump()
    assert "already suspended by an admin" in arrears.fails("suspend", "bravo-02", "--reason", "r2", "--at", day(0))
    assert arrears.dump() == before
    import getpass

    assert audit_of(arrears, "bravo-02", "manual.suspend")[0]["actor"] == getpass.getuser()


def test_resume_in_debt_is_refused_unless_a_promise_to_pay_is_given(arrears: Arrears, tmp_path: Path) -> None:
    arrears.charge("acme-01", 0, "30.00", "inv-1")
    for n in (0, 5, 8):
        arrears.run(n)
    assert arrears.show("acme-01", 8)["state"] == "suspended"
    before = arrears.dump()
    message = arrears.fails("resume", "acme-01", "--at", day(9))
    assert "still in debt" in message and "--grace" in message
    assert arrears.dump() == before

    arrears.ok("resume", "acme-01", "--grace", "7", "--reason", "pays on Friday", "--actor", "carol",
               "--at", day(9), "--now")
    assert flags(tmp_path) == []
    info = arrears.show("acme-01", 9)
    assert (info["state"], info["holds"]) == ("debtor", [])
    assert "pays on Friday" in info["held_back"]
    pause = [o for o in arrears.json("history", "acme-01")["overrides"] if o["kind"] == "pause"]
    assert [(o["actor"], o["reason"], o["expires_at"]) for o in pause] == [
        ("carol", "pays on Friday", "2026-03-18T10:00:00+00:00")]
    # the promise holds the measures back: nothing happens while it runs
    for n in range(10, 16):
        assert arrears.run(n)["executor"]["taken"] == [], f"day {n}"


def test_delete_needs_yes_then_restore_brings_the_account_back_suspended(arrears: Arrears, tmp_path: Path) -> None:
    before = arrears.dump()
    assert "--yes" in arrears.fails("delete", "acme-01", "--at", day(0))
    assert arrears.dump() == before

    info = arrears.json("delete", "acme-01", "--yes", "--reason", "contract ended", "--actor", "alice",
                        "--at", day(0), "--now")
    assert info["state_after"] == "deleted"
    assert flags(tmp_path, "deleted") == ["mail1/mail/acme-01.deleted", "web1/web/acme-01.deleted"]
    saved = {(s, h): json.loads(st) if isinstance(st, str) else st for s, h, st in arrears.query(
        "select service, host, state from placements where account='acme-01'")}
    assert saved == {("mail", "mail1"): {"delete": {"state": "deleted"}},
                     ("web", "web1"): {"delete": {"state": "deleted"}}}
    assert "already" in arrears.fails("delete", "acme-01", "--yes", "--at", day(1))

    info = arrears.json("restore", "acme-01", "--actor", "alice", "--at", day(1), "--now")
    assert info["state_after"] == "suspended"
    assert flags(tmp_path, "deleted") == []
    assert flags(tmp_path) == ["mail1/mail/acme-01.suspended", "web1/web/acme-01.suspended"]
    holds = [h for h in arrears.json("history", "acme-01")["holds"] if h["released_at"] is None]
    assert [(h["kind"], h["reason"]) for h in holds] == [("admin", "restored from archive")]

    arrears.ok("resume", "acme-01", "--at", day(2), "--now")
    assert flags(tmp_path) == []
    assert arrears.show("acme-01", 2)["state"] == "active"


def test_restore_of_an_account_that_is_not_deleted_is_refused(arrears: Arrears) -> None:
    assert "is not deleted" in arrears.fails("restore", "acme-01", "--at", day(0))


def test_mass_mail_to_debtors_once_per_day(arrears: Arrears) -> None:
    for account, ref in (("acme-01", "inv-1"), ("bravo-02", "inv-2"), ("nomail-03", "inv-3")):
        arrears.charge(account, 0, "30.00", ref)
    arrears.run(0)
    sent_before = set(arrears.spool())
    info = arrears.json("mail", "--debtors", "--template", "mass_mail", "--at", day(1), "--now")
    assert [q["account"] for q in info["queued"]] == ["acme-01", "bravo-02"]
    assert info["no_address"] == ["nomail-03"]
    new = set(arrears.spool()) - sent_before
    assert len(new) == 2
    again = arrears.json("mail", "--debtors", "--template", "mass_mail", "--at", day(1, 15), "--now")
    assert again["queued"] == [] and again["already"] == ["acme-01", "bravo-02"]
    assert set(arrears.spool()) - sent_before == new
    # the next day is a new mailing; --stage narrows it to those at a stage
    arrears.ok("payment", "bravo-02", "30", "--at", day(2, 8))
    nxt = arrears.json("mail", "--debtors", "--stage", "outstanding_notice", "--template", "mass_mail",
                       "--at", day(2), "--now")
    assert [q["account"] for q in nxt["queued"]] == ["acme-01"]
    assert len(set(arrears.spool()) - sent_before) == 3
    assert "not a stage of the policy" in arrears.fails("mail", "--debtors", "--stage", "nope", "--template",
                                                        "mass_mail")
    assert "mass_mail_typo" in arrears.fails("mail", "--debtors", "--template", "mass_mail_typo")


def test_reconcile_finds_a_hand_made_change_and_fix_repairs_it(arrears: Arrears, tmp_path: Path) -> None:
    arrears.ok("suspend", "acme-01", "--reason", "abuse", "--at", day(0), "--now")
    clean = arrears.invoke("reconcile", "--json", "--at", day(0))
    assert clean.exit_code == 0 and json.loads(clean.stdout)["differences"] == []
    # someone removes the suspended snippet by hand, and suspends an active site
    (tmp_path / "hosts" / "web1" / "web" / "acme-01.suspended").unlink()
    (tmp_path / "hosts" / "web1" / "web" / "bravo-02.suspended").touch()
    found = arrears.invoke("reconcile", "--json", "--at", day(1))
    assert found.exit_code == 1
    diffs = [(d["account"], d["service"], d["host"], d["recorded"], d["observed"], d["fix"])
             for d in json.loads(found.stdout)["differences"]]
    assert diffs == [("acme-01", "web", "web1", "suspended", "active", "suspend"),
                     ("bravo-02", "web", "web1", "active", "suspended", "resume")]
    text = arrears.invoke("reconcile", "--at", day(1)).stdout
    assert "2 differ" in text

    fixed = arrears.invoke("reconcile", "--fix", "--json", "--at", day(1))
    assert fixed.exit_code == 0
    assert sorted((q["account"], q["action"]) for q in json.loads(fixed.stdout)["queued"]) == [
        ("acme-01", "suspend"), ("bravo-02", "resume")]
    arrears.run(1)
    assert flags(tmp_path) == ["mail1/mail/acme-01.suspended", "web1/web/acme-01.suspended"]
    after = arrears.invoke("reconcile", "--json", "--at", day(1))
    assert after.exit_code == 0 and json.loads(after.stdout)["differences"] == []
    assert arrears.show("bravo-02", 1)["state"] == "active"
    assert audit_of(arrears, "acme-01", "manual.reconcile")[0]["reason"] == "the hosts differ from the recorded state"


def test_dry_run_writes_nothing(arrears: Arrears, tmp_path: Path) -> None:
    arrears.charge("acme-01", 0, "30.00", "inv-1")
    arrears.run(0)
    arrears.ok("suspend", "bravo-02", "--reason", "abuse", "--at", day(0), "--now")
    (tmp_path / "hosts" / "web1" / "web" / "bravo-02.suspended").unlink()
    before = arrears.dump()
    hosts_before = flags(tmp_path)
    commands = [
        ("suspend", "acme-01", "--reason", "x"),
        ("resume", "bravo-02"),
        ("delete", "acme-01"),
        ("delete", "acme-01", "--yes"),
        ("mail", "--debtors", "--template", "mass_mail"),
        ("reconcile", "--fix"),
    ]
    for args in commands:
        result = arrears.invoke(*args, "--dry-run", "--at", day(1), "--now")
        assert result.exit_code in (0, 1), f"{args}: {result.output}"
        assert "nothing was written" in result.stdout, args
    info = arrears.json("suspend", "acme-01", "--reason", "x", "--dry-run", "--at", day(1))
    assert info["dry_run"] is True and [j["host"] for j in info["jobs"]] == ["mail1", "web1"]
    assert arrears.dump() == before
    assert flags(tmp_path) == hosts_before


def test_resuming_an_expired_trial_without_billing_profile_suspends_it_again(arrears: Arrears,
                                                                             tmp_path: Path) -> None:
    arrears.ok("accounts", "import", str(arrears.write("trial.jsonl", [
        {"id": "trial-04", "billing_email": "t@trial.example", "trial_ends_at": day(0, 0),
         "has_billing_profile": False, "resources": {"web": {"host": "web1", "sites": ["trial.example"]}}},
    ])))
    for n in (0, 5, 8):
        arrears.run(n)
    assert arrears.show("trial-04", 8)["holds"] == ["trial"]
    assert flags(tmp_path) == ["web1/web/trial-04.suspended"]
    # not in debt (a trial): the admin may resume it
    arrears.ok("resume", "trial-04", "--reason", "customer asked", "--at", day(9))
    assert arrears.show("trial-04", 9)["holds"] == []
    arrears.run(9)
    info = arrears.show("trial-04", 10)
    assert info["holds"] == ["trial"] and info["state"] == "suspended"
    assert flags(tmp_path) == ["web1/web/trial-04.suspended"]
    assert any(s["stage"].startswith("trial_resuspend") for s in info["stages_taken"])


def test_an_admin_resumes_after_crediting_a_cheque(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, target in flag_backends().items():
        monkeypatch.setitem(registry.BACKENDS, key, target)
    a = Arrears.create(tmp_path / "cfg", resume="[card]", accounts=ACCOUNTS[1:2])
    (a.folder / "inventory.yaml").write_text(flag_inventory_yaml({"web1": str(tmp_path / "hosts" / "web1")},
                                                                 services=("web",)))
    a.charge("bravo-02", 0, "20.00", "inv-2")
    for n in (0, 5, 8):
        a.run(n)
    a.ok("payment", "bravo-02", "20", "--method", "check", "--at", day(9))
    a.run(9)
    info = a.show("bravo-02", 9)
    assert (info["state"], info["holds"]) == ("suspended", ["debt"])
    assert "an admin must resume" in info["held_back"]
    a.ok("resume", "bravo-02", "--reason", "cheque credited", "--at", day(9, 11), "--now")
    assert flags(tmp_path) == []
    info = a.show("bravo-02", 10)
    assert (info["state"], info["holds"]) == ("active", [])
    resumed = [e for e in a.json("history", "bravo-02")["audit"] if e["action"] == "manual.resume"]
    assert resumed[0]["details"]["released"] == ["debt"]

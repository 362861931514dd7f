"""The vpopmail mail connector: pw_gid bit logic against stand-in vuserinfo/vmoduser tools.

vpopmail is not packaged for Debian, so the test writes two small shell tools that behave like the real
ones for what the connector uses (``vuserinfo -g``: the gid value on the first line; ``vmoduser``: flag
letters OR bits into ``pw_gid``, ``-x`` clears them all first) over a stand-in
``domains/<domain>/vpasswd`` file. Every vmoduser call is logged so tests can show what was run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.base import BatchResult, Transport, run_batch
from connectors.mail.vpopmail import VMODUSER_BITS, VpopmailConnector, VpopmailSettings
from connectors.validate import UnsafeValue

A, B = "acct-a", "acct-b"

VUSERINFO = r"""#!/bin/sh
# stand-in for vpopmail's vuserinfo: -g prints pw_gid, then one line per set flag
DOMAINS=@DOMAINS@
show_gid=0
while getopts anpugcdqQvlD:C opt; do
  case $opt in
    g) show_gid=1 ;;
    \?) echo "vuserinfo: usage: [options] email_address"; exit 255 ;;
  esac
done
shift $((OPTIND - 1))
user=${1%@*}; domain=${1#*@}
line=$(awk -F: -v u="$user" '$1 == u' "$DOMAINS/$domain/vpasswd" 2>/dev/null)
if [ -z "$line" ]; then echo "no such user $user@$domain"; exit 255; fi
gid=$(printf '%s\n' "$line" | cut -d: -f4)
if [ "$show_gid" = 1 ]; then
  echo "$gid"
  [ "$gid" -ne 0 ] || echo "all services available"
  [ $((gid & 1)) -eq 0 ] || echo "password can not be changed by user"
  [ $((gid & 2)) -eq 0 ] || echo "pop access closed"
  [ $((gid & 4)) -eq 0 ] || echo "webmail access closed"
  [ $((gid & 8)) -eq 0 ] || echo "imap access closed"
  [ $((gid & 16)) -eq 0 ] || echo "mail will be bounced back to sender"
  [ $((gid & 32)) -eq 0 ] || echo "user not allowed to relay mail"
fi
exit 0
"""

VMODUSER = r"""#!/bin/sh
# stand-in for vpopmail's vmoduser: flag letters OR bits into pw_gid; -x clears every bit first
DOMAINS=@DOMAINS@
echo "vmoduser $*" >> "$DOMAINS/../vmoduser.log"
clear=0; bits=0
while getopts D:avunxc:q:dpswibro0123he:C:fFSEm opt; do
  case $opt in
    x) clear=1 ;;
@CASES@
    \?) echo "vmoduser: usage: [options] email_addr"; exit 255 ;;
  esac
done
shift $((OPTIND - 1))
user=${1%@*}; domain=${1#*@}
file=$DOMAINS/$domain/vpasswd
old=$(awk -F: -v u="$user" '$1 == u { print $4 }' "$file" 2>/dev/null)
if [ -z "$old" ]; then echo "no such user $user@$domain"; exit 255; fi
if [ "$clear" = 1 ]; then new=$bits; else new=$((old | bits)); fi
awk -F: -v OFS=: -v u="$user" -v g="$new" '$1 == u { $4 = g } { print }' "$file" > "$file.tmp" && mv "$file.tmp" "$file"
"""


class Vpopmail:
    """A stand-in vpopmail tree: ``domains/<domain>/vpasswd`` and the two tools."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.domains = root / "domains"
        self.bin = root / "bin"
        self.bin.mkdir()
        cases = "\n".join(f"    {c}) bits=$((bits | {b})) ;;" for c, b in VMODUSER_BITS.items())
        for name, text in (("vuserinfo", VUSERINFO), ("vmoduser", VMODUSER.replace("@CASES@", cases))):
            tool = self.bin / name
            tool.write_text(text.replace("@DOMAINS@", str(self.domains)))
            tool.chmod(0o755)

    def add(self, box: str, gid: int = 0) -> None:
        user, _, domain = box.partition("@")
        vpasswd = self.domains / domain / "vpasswd"
        vpasswd.parent.mkdir(parents=True, exist_ok=True)
        with vpasswd.open("a") as fh:
            fh.write(f"{user}:$1$x$y:1:{gid}:{user}:{self.domains}/{domain}/{user}:NOQUOTA\n")

    def gid(self, box: str) -> int:
        user, _, domain = box.partition("@")
        for line in (self.domains / domain / "vpasswd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user:
                return int(fields[3])
        raise KeyError(box)

    def calls(self) -> list[str]:
        log = self.root / "vmoduser.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def transport(ssh_transport: Transport) -> Transport:
    return ssh_transport


@pytest.fixture
def vpop(tmp_path: Path) -> Vpopmail:
    tmp_path.chmod(0o755)
    v = Vpopmail(tmp_path)
    v.add("info@a.test", 0)
    v.add("sales@a.test", 0x02 | 0x1000)  # the owner closed POP3; qmailadmin privileges
    v.add("info@b.test", 0x08)  # B's own -i
    return v


@pytest.fixture
def connector(vpop: Vpopmail) -> VpopmailConnector:
    settings = VpopmailSettings(
        vuserinfo_command=str(vpop.bin / "vuserinfo"),
        vmoduser_command=str(vpop.bin / "vmoduser"),
        state_dir=str(vpop.root / "state"),
        domains_dir=str(vpop.domains),
        archive_dir=str(vpop.root / "archive"),
    )
    return VpopmailConnector(settings, "vpop-test")


def apply(transport: Transport, connector: VpopmailConnector, action: str, account: str,
          boxes: list[str], flags: str | None = None) -> BatchResult:
    resource: dict[str, object] = {"mailboxes": boxes}
    if flags is not None:
        resource["flags"] = flags
    return run_batch(transport, connector.operations(action, account, resource), connector.handlers())  # type: ignore[arg-type]


def test_suspend_sets_the_six_bits_and_resume_restores_the_exact_gid(
    vpop: Vpopmail, connector: VpopmailConnector, transport: Transport
) -> None:
    batch = apply(transport, connector, "suspend", A, ["info@a.test", "sales@a.test"])
    assert batch.ok, batch.results
    assert vpop.gid("info@a.test") == 0x3F
    assert vpop.gid("sales@a.test") == 0x3F | 0x1000
    assert vpop.gid("info@b.test") == 0x08
    sales = batch.results[f"{A}:mail:suspend:sales@a.test"].facts
    assert (sales["before:sales@a.test"], sales["added:sales@a.test"]) == ("p", "dwibr")
    # only the missing letters were ORed in
    assert vpop.calls() == ["vmoduser -d -p -w -i -b -r info@a.test", "vmoduser -d -w -i -b -r sales@a.test"]

    resumed = apply(transport, connector, "resume", A, ["info@a.test", "sales@a.test"])
    assert resumed.ok, resumed.results
    assert all(r.changed for r in resumed.results.values())
    assert vpop.gid("info@a.test") == 0
    # the owner's -p and the qmailadmin bit survive
    assert vpop.gid("sales@a.test") == 0x02 | 0x1000
    assert vpop.calls()[2:] == ["vmoduser -x info@a.test", "vmoduser -x -p -a sales@a.test"]
    assert resumed.results[f"{A}:mail:resume:sales@a.test"].facts["flags:sales@a.test"] == "p"
    assert vpop.gid("info@b.test") == 0x08


def test_suspending_twice_changes_nothing_the_second_time(
    vpop: Vpopmail, connector: VpopmailConnector, transport: Transport
) -> None:
    first = apply(transport, connector, "suspend", A, ["info@a.test", "sales@a.test"])
    assert [r.changed for r in first.results.values()] == [True, True]
    calls = vpop.calls()
    second = apply(transport, connector, "suspend", A, ["info@a.test", "sales@a.test"])
    assert second.ok
    assert [r.changed for r in second.results.values()] == [False, False]
    assert vpop.calls() == calls
    # the record of what was there before is not overwritten by the suspended state
    assert second.results[f"{A}:mail:suspend:sales@a.test"].facts["before:sales@a.test"] == "p"
    apply(transport, connector, "resume", A, ["info@a.test", "sales@a.test"])
    assert vpop.gid("sales@a.test") == 0x02 | 0x1000
    again = apply(transport, connector, "resume", A, ["info@a.test", "sales@a.test"])
    assert [r.changed for r in again.results.values()] == [False, False]


def test_partial_suspension_undoes_only_what_it_set(
    vpop: Vpopmail, connector: VpopmailConnector, transport: Transport
) -> None:
    batch = apply(transport, connector, "suspend", B, ["info@b.test"], flags="ib")
    assert batch.ok
    assert vpop.gid("info@b.test") == 0x08 | 0x10
    assert batch.results[f"{B}:mail:suspend:info@b.test"].facts["added:info@b.test"] == "b"
    resumed = apply(transport, connector, "resume", B, ["info@b.test"])
    assert resumed.ok
    assert vpop.gid("info@b.test") == 0x08


def test_status_reports_flags_and_the_saved_state(
    vpop: Vpopmail, connector: VpopmailConnector, transport: Transport
) -> None:
    before = apply(transport, connector, "status", A, ["sales@a.test"])
    assert before.results[f"{A}:mail:status:sales@a.test"].facts == {
        "flags:sales@a.test": "p", "suspended:sales@a.test": "no", "maildir:sales@a.test": "absent",
        "deleted:sales@a.test": "no"}
    assert connector.observe(before.results[f"{A}:mail:status:sales@a.test"].facts).state == "active"
    apply(transport, connector, "suspend", A, ["sales@a.test"])
    during = apply(transport, connector, "status", A, ["sales@a.test"]).results[f"{A}:mail:status:sales@a.test"]
    assert during.facts["flags:sales@a.test"] == "dpwibr"
    assert during.facts["before:sales@a.test"] == "p"
    assert during.facts["suspended:sales@a.test"] == "yes"
    assert not during.changed
    assert connector.observe(during.facts).state == "suspended"
    vpasswd = vpop.domains / "a.test" / "vpasswd"  # someone resets the gid by hand: the owner's -p is left
    vpasswd.write_text(vpasswd.read_text().replace(f"sales:$1$x$y:1:{vpop.gid('sales@a.test')}:",
                                                   f"sales:$1$x$y:1:{0x02 | 0x1000}:"))
    undone = apply(transport, connector, "status", A, ["sales@a.test"]).results[f"{A}:mail:status:sales@a.test"]
    assert connector.observe(undone.facts).state == "active"


def test_a_missing_mailbox_fails_alone(vpop: Vpopmail, connector: VpopmailConnector, transport: Transport) -> None:
    ops = (connector.operations("suspend", A, {"mailboxes": ["nobody@a.test"]})
           + connector.operations("suspend", B, {"mailboxes": ["info@b.test"]}))
    batch = run_batch(transport, ops, connector.handlers())
    failed = batch.results[f"{A}:mail:suspend:nobody@a.test"]
    assert not failed.ok and "not a gid value" in (failed.error or "")
    assert not (vpop.root / "state" / "mail" / "nobody@a.test.flags").exists()
    assert batch.results[f"{B}:mail:suspend:info@b.test"].ok
    assert vpop.gid("info@b.test") == 0x3F


def test_a_bit_vmoduser_cannot_set_again_is_refused_not_lost(
    vpop: Vpopmail, connector: VpopmailConnector, transport: Transport
) -> None:
    vpop.add("odd@a.test", 0x80000)
    assert apply(transport, connector, "suspend", A, ["odd@a.test"]).ok
    resumed = apply(transport, connector, "resume", A, ["odd@a.test"])
    result = resumed.results[f"{A}:mail:resume:odd@a.test"]
    assert not result.ok and "cannot set again" in (result.error or "")
    assert vpop.gid("odd@a.test") == 0x80000 | 0x3F


def test_delete_archives_the_maildir_and_restore_brings_it_back(
    vpop: Vpopmail, connector: VpopmailConnector, transport: Transport
) -> None:
    maildir = vpop.domains / "a.test" / "info" / "Maildir" / "new"
    maildir.mkdir(parents=True)
    (maildir / "1.msg").write_text("hello\n")
    deleted = apply(transport, connector, "delete", A, ["info@a.test"])
    assert deleted.ok, deleted.results
    facts = deleted.results[f"{A}:mail:delete:maildirs"].facts
    assert not (vpop.domains / "a.test" / "info").exists()
    assert vpop.gid("info@a.test") == 0x3F  # a deleted mailbox stays suspended: mail to it bounces

    def observed() -> str:
        status = apply(transport, connector, "status", A, ["info@a.test"]).results[f"{A}:mail:status:info@a.test"]
        return connector.observe(status.facts).state

    assert observed() == "deleted"
    restored = run_batch(transport, connector.operations("restore", A, {"mailboxes": ["info@a.test"], **facts}))
    assert restored.ok, restored.results
    assert (maildir / "1.msg").read_text() == "hello\n"
    assert observed() == "suspended"  # resume follows on payment


@pytest.mark.parametrize("account, box", [("x;rm -rf /", "info@a.test"), (A, "../../etc@a.test"),
                                          (A, "info@a.test`id`")])
def test_unsafe_values_are_refused(connector: VpopmailConnector, account: str, box: str) -> None:
    with pytest.raises(UnsafeValue):
        connector.operations("suspend", account, {"mailboxes": [box]})


def test_commands_with_shell_syntax_are_refused() -> None:
    with pytest.raises(ValueError, match="does not match"):
        VpopmailSettings(vmoduser_command="/bin/vmoduser; rm -rf /")

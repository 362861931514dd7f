"""The home connector over a real sshd: archive -> verify -> remove, restore, refusals, prune.

Mount tests use a second sshd in a private mount namespace: a bind mount made there (with ``nsenter``)
is seen by the connector's scripts and by nothing else on the machine."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.base import OpResult, Transport, run_batch
from connectors.home import HomeConnector
from connectors.observed import Observed
from connectors.validate import UnsafeValue
from tests.servers.base import require_binary
from tests.servers.sshd import SshdServer, start_sshd

pytestmark = pytest.mark.servers

Snapshot = dict[str, tuple[Any, ...]]


def _snapshot(top: Path) -> Snapshot:
    """Every entry below ``top`` (and ``top`` itself): type, mode, owner, and content or link target."""
    entries: Snapshot = {}
    for path in [top, *sorted(top.rglob("*"))]:
        st = path.lstat()
        rel = str(path.relative_to(top))
        if stat.S_ISLNK(st.st_mode):
            entries[rel] = ("link", st.st_uid, st.st_gid, os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            entries[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            entries[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime), digest)
    return entries


@pytest.fixture(scope="module")
def owner() -> Iterator[tuple[int, int]]:
    """A unix user who owns the test home dirs (uid, gid)."""
    require_binary("useradd", "userdel", "tar", "gzip", "sha256sum", "realpath")
    name = f"arh{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
    try:
        pw = subprocess.run(["getent", "passwd", name], capture_output=True, text=True, check=True).stdout
        fields = pw.split(":")
        yield int(fields[2]), int(fields[3])
    finally:
        subprocess.run(["userdel", "--force", name], capture_output=True, check=False)


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    dirs = {name: tmp_path / name for name in ("homes", "archives", "outside", "extract")}
    for d in dirs.values():
        d.mkdir()
    return dirs


@pytest.fixture
def connector(layout: dict[str, Path]) -> HomeConnector:
    settings = HomeConnector.Settings(roots=[str(layout["homes"])], archive_dir=str(layout["archives"]),
                                      retention_days=30)
    return HomeConnector(settings, "sshd-test")


def _make_home(home: Path, uid: int, gid: int, *, big: bool = False) -> Path:
    home.mkdir(parents=True)
    (home / ".ssh").mkdir()
    (home / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA test\n")
    (home / "public_html" / "img").mkdir(parents=True)
    (home / "public_html" / "index.html").write_text("<h1>hello</h1>\n")
    (home / "public_html" / "img" / "logo.bin").write_bytes(os.urandom(4096))
    (home / "bin").mkdir()
    (home / "bin" / "run.sh").write_text("#!/bin/sh\necho run\n")
    (home / "notes with space.txt").write_text("a note\n")
    (home / "empty").touch()
    (home / "data.bin").write_bytes(os.urandom(1_000_000 if big else 20_000))
    (home / "link-to-notes").symlink_to("notes with space.txt")
    os.link(home / "public_html" / "index.html", home / "index-hardlink.html")
    for p in [home, *home.rglob("*")]:
        os.lchown(p, uid, gid)
    (home / "root-owned.log").write_text("owned by root\n")
    os.chmod(home, 0o750)
    os.chmod(home / ".ssh", 0o700)
    os.chmod(home / ".ssh" / "authorized_keys", 0o600)
    os.chmod(home / "bin" / "run.sh", 0o755)
    os.chmod(home / "public_html", 0o2755)
    os.chmod(home / "notes with space.txt", 0o640)
    return home


def _one(transport: Transport, connector: HomeConnector, action: str, account: str,
         resource: dict[str, Any]) -> OpResult:
    batch = run_batch(transport, connector.operations(action, account, resource))  # type: ignore[arg-type]
    (result,) = batch.results.values()
    return result


def test_delete_archives_every_file_verifies_then_removes(
    ssh_transport: Transport, connector: HomeConnector, layout: dict[str, Path], owner: tuple[int, int]
) -> None:
    home = _make_home(layout["homes"] / "alice", *owner)
    before = _snapshot(home)

    result = _one(ssh_transport, connector, "delete", "acct-1", {"path": str(home)})

    assert result.ok, result.error
    assert result.changed
    assert not home.exists()
    archive = Path(result.facts["archive"])
    assert archive.parent == layout["archives"]
    assert archive.name.startswith("acct-1-home-") and archive.name.endswith("Z.tar.gz")
    assert result.facts["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert int(result.facts["size"]) == archive.stat().st_size
    assert int(result.facts["entries"]) == len(before)
    assert int(result.facts["files"]) == sum(1 for e in before.values() if e[0] == "file") - 1  # the hard link
    listing = Path(result.facts["listing"]).read_text()
    assert all(f"alice/{name}" in listing for name in before if name != ".")
    # the archive holds every file with its content, mode and owner
    subprocess.run(["tar", "-C", str(layout["extract"]), "-xzpf", str(archive)], check=True)
    assert _snapshot(layout["extract"] / str(home).lstrip("/")) == before

    again = _one(ssh_transport, connector, "delete", "acct-1", {"path": str(home)})

    assert again.ok and not again.changed
    assert again.facts["archive"] == str(archive)
    assert again.facts["sha256"] == result.facts["sha256"]
    assert sorted(p.name for p in layout["archives"].iterdir()) == [archive.name, archive.name + ".list"]


def test_restore_brings_the_files_back_identical(
    ssh_transport: Transport, connector: HomeConnector, layout: dict[str, Path], owner: tuple[int, int]
) -> None:
    home = _make_home(layout["homes"] / "bob", *owner)
    before = _snapshot(home)

    def observed() -> Observed:
        return connector.observe(_one(ssh_transport, connector, "status", "acct-2", {"path": str(home)}).facts)

    present = observed()  # the home connector does not suspend: present is right while suspended too
    assert present.state == "active" and present.agrees("suspended") and not present.agrees("deleted")
    deleted = _one(ssh_transport, connector, "delete", "acct-2", {"path": str(home)})
    assert deleted.ok and not home.exists()
    assert observed().state == "deleted"
    resource = {"path": str(home), "archive": deleted.facts["archive"], "sha256": deleted.facts["sha256"]}

    restored = _one(ssh_transport, connector, "restore", "acct-2", resource)

    assert restored.ok, restored.error
    assert restored.changed
    assert _snapshot(home) == before
    assert observed().state == "active"
    again = _one(ssh_transport, connector, "restore", "acct-2", resource)
    assert again.ok and not again.changed

    (home / "data.bin").write_bytes(b"changed since the restore")
    changed_since = _snapshot(home)
    refused = _one(ssh_transport, connector, "restore", "acct-2", resource)
    assert not refused.ok
    assert "exists and is not empty" in (refused.error or "")
    assert _snapshot(home) == changed_since


def test_restore_refuses_an_archive_whose_sha256_differs(
    ssh_transport: Transport, connector: HomeConnector, layout: dict[str, Path], owner: tuple[int, int]
) -> None:
    home = _make_home(layout["homes"] / "carol", *owner)
    deleted = _one(ssh_transport, connector, "delete", "acct-3", {"path": str(home)})
    assert deleted.ok
    resource = {"path": str(home), "archive": deleted.facts["archive"], "sha256": "0" * 64}

    refused = _one(ssh_transport, connector, "restore", "acct-3", resource)

    assert not refused.ok and not refused.changed
    assert "expected " + "0" * 64 in (refused.error or "")
    assert not home.exists()


@pytest.fixture(params=["full-tmpfs", "read-only"])
def broken_archive_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """An archive dir that cannot take the archive: a tiny tmpfs, or a read-only bind mount."""
    require_binary("mount", "umount")
    target = tmp_path / "broken-archives"
    target.mkdir()
    if request.param == "full-tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)], check=True)
    else:
        subprocess.run(["mount", "--bind", str(target), str(target)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_a_failed_archive_leaves_the_home_untouched(
    ssh_transport: Transport, layout: dict[str, Path], owner: tuple[int, int], broken_archive_dir: Path
) -> None:
    settings = HomeConnector.Settings(roots=[str(layout["homes"])], archive_dir=str(broken_archive_dir))
    connector = HomeConnector(settings, "sshd-test")
    home = _make_home(layout["homes"] / "dave", *owner, big=True)
    before = _snapshot(home)

    result = _one(ssh_transport, connector, "delete", "acct-4", {"path": str(home)})

    assert not result.ok
    assert not result.changed
    assert "nothing was removed" in (result.error or "")
    assert _snapshot(home) == before
    assert list(broken_archive_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("account", "where", "refused"),
    [
        ("acct-5", "/etc", "not below the configured roots"),
        ("acct-5", "../../etc", "refused path '../../etc'"),
        ("acct-5", "{homes}/../../etc", "'..' component"),
        ("acct-5", "{homes}", "not below the configured roots"),
        ("acct-5", "{homes}/eve;rm -rf /", "refused path"),
        ("x;rm -rf /", "{homes}/eve", "refused account id 'x;rm -rf /'"),
    ],
)
def test_unsafe_paths_and_names_are_refused_before_anything_runs(
    connector: HomeConnector, layout: dict[str, Path], owner: tuple[int, int], account: str, where: str,
    refused: str
) -> None:
    home = _make_home(layout["homes"] / "eve", *owner)
    before = _snapshot(home)

    with pytest.raises(UnsafeValue, match=re.escape(refused)):
        connector.operations("delete", account, {"path": where.format(homes=layout["homes"])})

    assert _snapshot(home) == before


@pytest.mark.parametrize("escape", ["home-is-a-link", "parent-is-a-link"])
def test_symlink_escapes_are_refused_on_the_host(
    ssh_transport: Transport, connector: HomeConnector, layout: dict[str, Path], owner: tuple[int, int], escape: str
) -> None:
    victim = _make_home(layout["outside"] / "victim", *owner)
    before = _snapshot(layout["outside"])
    if escape == "home-is-a-link":
        home = layout["homes"] / "mallory"
        home.symlink_to(victim)
        expected = "it is a symbolic link"
    else:
        (layout["homes"] / "via").symlink_to(layout["outside"])
        home = layout["homes"] / "via" / "victim"
        expected = f"it resolves to {victim}, not below the roots"

    result = _one(ssh_transport, connector, "delete", "acct-6", {"path": str(home)})

    assert not result.ok and not result.changed
    assert f"refused {home}: {expected}" in (result.error or "")
    assert _snapshot(layout["outside"]) == before
    assert list(layout["archives"].iterdir()) == []


def test_prune_removes_only_old_archives_in_the_archive_dir(
    ssh_transport: Transport, connector: HomeConnector, layout: dict[str, Path]
) -> None:
    archives = layout["archives"]
    old = [archives / "acct-7-home-20200101T000000Z.tar.gz", archives / "acct-7-home-20200101T000000Z.tar.gz.list"]
    fresh = archives / "acct-8-home-20261001T000000Z.tar.gz"
    unrelated = archives / "notes.txt"
    nested = archives / "keep" / "acct-9-home-20200101T000000Z.tar.gz"
    nested.parent.mkdir()
    for p in [*old, fresh, unrelated, nested]:
        p.write_bytes(b"x")
    for p in [*old, unrelated, nested]:
        os.utime(p, (0, 1_000_000_000))

    batch = run_batch(ssh_transport, connector.prune_operations())
    (result,) = batch.results.values()

    assert result.ok and result.changed
    assert result.facts["pruned"] == "2"
    assert not any(p.exists() for p in old)
    assert fresh.exists() and unrelated.exists() and nested.exists()
    (again,) = run_batch(ssh_transport, connector.prune_operations()).results.values()
    assert again.ok and not again.changed


@pytest.fixture(scope="module")
def mount_ns_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """An sshd (and so every session of it) in a mount namespace of its own, with private propagation."""
    require_binary("unshare", "nsenter", "mount", "umount")
    server = start_sshd(tmp_path_factory.mktemp("sshd-mount-ns"),
                        wrapper=["unshare", "--mount", "--propagation", "private"])
    try:
        yield server
    finally:
        server.stop()


def _in_mount_ns(server: SshdServer, *argv: str) -> None:
    assert server.daemon.proc is not None
    subprocess.run(["nsenter", "--target", str(server.daemon.proc.pid), "--mount", "--", *argv],
                   check=True, capture_output=True)


def _canary(folder: Path) -> Path:
    """A folder outside the roots holding a canary file, to be bind-mounted into a home."""
    folder.mkdir()
    (folder / "canary").write_text("still here\n")
    return folder


# the mount table escapes a space, a tab and a backslash (\040, \011, \134): the message names them as they are
@pytest.mark.parametrize("mount_at", ["mnt", "deep/dir with space", "tab\there and back\\slash", "."])
def test_delete_never_crosses_a_bind_mount(
    mount_ns_sshd: SshdServer, connector: HomeConnector, layout: dict[str, Path], owner: tuple[int, int],
    mount_at: str
) -> None:
    home = _make_home(layout["homes"] / "frank", *owner)
    shared = _canary(layout["outside"] / "shared")
    target = home / mount_at
    target.mkdir(parents=True, exist_ok=True)
    before_home, before_outside = _snapshot(home), _snapshot(layout["outside"])
    _in_mount_ns(mount_ns_sshd, "mount", "--bind", str(shared), str(target))
    try:
        transport = mount_ns_sshd.transport()
        try:
            result = _one(transport, connector, "delete", "acct-10", {"path": str(home)})
        finally:
            transport.close()
    finally:
        _in_mount_ns(mount_ns_sshd, "umount", str(target))

    assert not result.ok and not result.changed
    assert f"refused {home}: {target} is mounted at or below {home}" in (result.error or "")
    assert "nothing was archived or removed" in (result.error or "")
    assert (shared / "canary").read_text() == "still here\n"
    assert _snapshot(layout["outside"]) == before_outside
    assert _snapshot(home) == before_home
    assert list(layout["archives"].iterdir()) == []


def test_restore_never_extracts_into_a_mount(
    mount_ns_sshd: SshdServer, connector: HomeConnector, layout: dict[str, Path], owner: tuple[int, int]
) -> None:
    home = _make_home(layout["homes"] / "gina", *owner)
    elsewhere = layout["outside"] / "empty"
    elsewhere.mkdir()
    transport = mount_ns_sshd.transport()
    try:
        deleted = _one(transport, connector, "delete", "acct-11", {"path": str(home)})
        assert deleted.ok and not home.exists()
        home.mkdir()
        _in_mount_ns(mount_ns_sshd, "mount", "--bind", str(elsewhere), str(home))
        try:
            restored = _one(transport, connector, "restore", "acct-11", {
                "path": str(home), "archive": deleted.facts["archive"], "sha256": deleted.facts["sha256"]})
        finally:
            _in_mount_ns(mount_ns_sshd, "umount", str(home))
    finally:
        transport.close()

    assert not restored.ok and not restored.changed
    assert f"refused {home}: {home} is mounted at or below {home}" in (restored.error or "")
    assert "nothing was restored" in (restored.error or "")
    assert list(elsewhere.iterdir()) == []


def test_an_account_is_only_ever_given_its_own_archive(
    ssh_transport: Transport, connector: HomeConnector, layout: dict[str, Path], owner: tuple[int, int]
) -> None:
    """Accounts ``a`` and ``a-home-1`` on one host: ``a-home-1``'s archives start with ``a-home-``."""
    other = _one(ssh_transport, connector, "delete", "a-home-1",
                 {"path": str(_make_home(layout["homes"] / "a-home-1", *owner))})
    assert other.ok and other.changed
    home = layout["homes"] / "a"

    nothing = _one(ssh_transport, connector, "delete", "a", {"path": str(home)})

    assert nothing.ok and not nothing.changed
    assert nothing.facts == {"absent": str(home)}

    own = _one(ssh_transport, connector, "delete", "a", {"path": str(_make_home(home, *owner))})
    assert own.ok and own.changed
    later = time.time() + 60  # the other account's archive is the newest one in the folder
    os.utime(other.facts["archive"], (later, later))

    again = _one(ssh_transport, connector, "delete", "a", {"path": str(home)})
    other_again = _one(ssh_transport, connector, "delete", "a-home-1", {"path": str(layout["homes"] / "a-home-1")})

    assert again.ok and not again.changed
    assert (again.facts["archive"], again.facts["sha256"]) == (own.facts["archive"], own.facts["sha256"])
    assert (other_again.facts["archive"], other_again.facts["sha256"]) == (other.facts["archive"],
                                                                            other.facts["sha256"])


@pytest.mark.parametrize(
    ("name", "picked"),
    [
        ("a-home-20261201T101010Z.tar.gz", True),
        ("a-home-20261201T101010Z-2.tar.gz", True),
        ("a-home-1-home-20261201T101010Z.tar.gz", False),
        ("a-home-20261201T101010Z-2x.tar.gz", False),
        ("a-home-20261201T101010Z-.tar.gz", False),
        ("a-home-20261201T101010Zx.tar.gz", False),
        ("a-mail-20261201T101010Z.tar.gz", False),
        ("b-a-home-20261201T101010Z.tar.gz", False),
    ],
)
def test_an_already_deleted_home_finds_its_archive_by_its_exact_name(
    ssh_transport: Transport, connector: HomeConnector, layout: dict[str, Path], name: str, picked: bool
) -> None:
    planted = layout["archives"] / name
    planted.write_bytes(b"an archive")

    result = _one(ssh_transport, connector, "delete", "a", {"path": str(layout["homes"] / "a")})

    assert result.ok and not result.changed
    assert result.facts.get("archive") == (str(planted) if picked else None)

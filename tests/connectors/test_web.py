"""The web connectors against real nginx and apache2, through the SSH transport.

Two accounts on one host, two sites each (tests.servers.web.SITES). Every test leaves the servers as it
found them: no snippet in the hook dir, the original vhosts, every site serving its own content.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.base import BatchResult, Handler, Operation, Transport, build_script, run_batch
from connectors.validate import UnsafeValue
from connectors.web.apache import ApacheConnector
from connectors.web.common import WebConnector
from connectors.web.nginx import NginxConnector
from tests.connectors.crash_window import crash, stop_after
from tests.servers.base import wait_for
from tests.servers.sshd import SshdServer
from tests.servers.web import HOOKLESS_SITE, SITES, WebServer

pytestmark = pytest.mark.servers

SUSPENDED_URL = "http://billing.example/suspended.html"
OTHER_URL = "http://billing.example/account-42.html"
A, B = "acct-a", "acct-b"
PATHS = ["/", "/a/b/c.html", "/?x=1&y=2"]
HTACCESS = (
    "RewriteEngine On\n"
    "RewriteRule ^ - [L]\n"
    "Redirect 302 /probe http://htaccess.invalid/probe\n"
    "ErrorDocument 503 \"served by htaccess\"\n"
    "Header always set X-Htaccess active\n"
)
CONNECTORS: dict[str, type[WebConnector]] = {"nginx": NginxConnector, "apache": ApacheConnector}


@pytest.fixture(scope="module", params=["nginx", "apache"])
def server(request: pytest.FixtureRequest) -> WebServer:
    srv: WebServer = request.getfixturevalue(f"{request.param}_server")
    if srv.backend == "apache":
        for site in SITES[A]:
            (srv.docroots[site] / ".htaccess").write_text(HTACCESS)
            (srv.docroots[site] / ".htaccess").chmod(0o644)
    return srv


@pytest.fixture
def transport(ssh_transport: Transport) -> Transport:
    return ssh_transport


def connector(server: WebServer, **overrides: Any) -> WebConnector:
    cls = CONNECTORS[server.backend]
    values: dict[str, Any] = {
        "hook_dir": str(server.hook_dir),
        "vhost_dir": str(server.vhost_dir),
        "enabled_dir": str(server.enabled_dir),
        "vhost_name": "{site}.conf",
        "state_dir": str(server.state_dir),
        "archive_dir": str(server.root / "archive"),
        "suspended_url": SUSPENDED_URL,
        "config_test": server.config_test,
        "reload": server.reload,
    }
    values.update(overrides)
    return cls(cls.Settings(**values), "web-test")


def run(server: WebServer, transport: Transport, ops: list[Operation], handlers: list[Handler], *,
        settle: bool = True) -> BatchResult:
    """Run one batch; after a reload, wait until the server's old workers are gone."""
    old = server.workers()
    batch = run_batch(transport, ops, handlers)
    if settle and any(h.facts.get("reloads", "0") != "0" for h in batch.handlers.values()):
        server.wait_settled(old)
    return batch


def apply(server: WebServer, transport: Transport, conn: WebConnector, action: str, account: str, *,
          settle: bool = True, **resource: Any) -> BatchResult:
    resource.setdefault("sites", SITES[account])
    ops = conn.operations(action, account, resource)  # type: ignore[arg-type]
    return run(server, transport, ops, conn.handlers(), settle=settle)


def serves_own_content(server: WebServer, site: str, path: str = "/") -> bool:
    r = server.get(site, path)
    return r.status_code == 200 and (f"of {site}" in r.text or f"to {site}" in r.text)


def redirected(server: WebServer, site: str, target: str = SUSPENDED_URL) -> bool:
    r = server.get(site, "/")
    return r.status_code == 302 and r.headers.get("location") == target


def wait_reloads(server: WebServer, expected: int) -> None:
    wait_for(lambda: server.reloads() >= expected, timeout=15, what=f"{server.backend} reload #{expected}",
             log=server.log)


def vhost_hashes(server: WebServer) -> dict[str, str]:
    """The vhost files' content and the sites-enabled links: what must come back byte for byte."""
    hashes = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in server.vhost_files()}
    return {**hashes, **{f"link:{name}": target for name, target in server.enabled_links().items()}}


def handler(conn: WebConnector, batch: BatchResult) -> dict[str, str]:
    h = batch.handlers[f"handler:{conn.handler_name}"]
    assert h.ok, h.stderr
    return h.facts


@pytest.fixture(autouse=True)
def clean(server: WebServer) -> Iterator[None]:
    """Every test starts and ends with no snippet and every site serving its own content."""
    yield
    snippets = list(server.hook_dir.glob("*"))
    for p in snippets:
        p.unlink()
    shutil.rmtree(server.state_dir / f"web-{server.backend}", ignore_errors=True)
    if snippets:
        old = server.workers()
        subprocess.run(server.reload, check=True, capture_output=True)
        server.wait_settled(old)
    for site in (s for sites in SITES.values() for s in sites):
        wait_for(lambda site=site: serves_own_content(server, site), timeout=15,  # type: ignore[misc]
                 what=f"{site} to serve its content again", log=server.log)


def test_suspend_redirects_every_url_of_one_account_and_resume_restores_it(
        server: WebServer, transport: Transport) -> None:
    conn = connector(server)
    before = vhost_hashes(server)
    for site in (s for sites in SITES.values() for s in sites):
        for path in PATHS:
            assert serves_own_content(server, site, path), (site, path)
    if server.backend == "apache":  # the .htaccess in A's docroots is live before the suspension
        probe = server.get(SITES[A][0], "/probe")
        assert probe.status_code == 302 and probe.headers["location"] == "http://htaccess.invalid/probe"
    reloads = server.reloads()

    batch = apply(server, transport, conn, "suspend", A)

    assert batch.ok, batch.results
    assert [r.changed for r in batch.results.values()] == [True, True]
    assert handler(conn, batch) == {"config_test": "ok", "reloads": "1", "kept": "2"}
    wait_for(lambda: all(redirected(server, s) for s in SITES[A]), timeout=15, what="A's sites to redirect")
    wait_reloads(server, reloads + 1)
    for site in SITES[A]:
        for path in [*PATHS, "/probe", "/a/b/"]:
            r = server.get(site, path)
            assert (r.status_code, r.headers.get("location")) == (302, SUSPENDED_URL), (site, path)
            assert "x-htaccess" not in r.headers
        assert serves_own_content(server, site, "/a/b/c.html") is False
    for site in SITES[B]:
        for path in PATHS:
            assert serves_own_content(server, site, path), (site, path)

    again = apply(server, transport, conn, "suspend", A)
    assert again.ok
    assert {op_id: r.changed for op_id, r in again.results.items()} == {
        f"{A}:web:{server.backend}:suspend:{s}": False for s in SITES[A]}
    assert again.handlers == {}

    resumed = apply(server, transport, conn, "resume", A)
    assert resumed.ok and all(r.changed for r in resumed.results.values())
    assert handler(conn, resumed)["reloads"] == "1"
    wait_for(lambda: all(serves_own_content(server, s) for s in SITES[A]), timeout=15, what="A's content back")
    for site in (s for sites in SITES.values() for s in sites):
        for path in PATHS:
            assert serves_own_content(server, site, path), (site, path)
    if server.backend == "apache":
        assert server.get(SITES[A][0], "/probe").headers["location"] == "http://htaccess.invalid/probe"
    assert vhost_hashes(server) == before
    assert list(server.hook_dir.iterdir()) == []
    assert server.reloads() == reloads + 2

    twice = apply(server, transport, conn, "resume", A)
    assert twice.ok and not any(r.changed for r in twice.results.values()) and twice.handlers == {}


def test_an_accounts_own_suspended_url_overrides_the_setting(server: WebServer, transport: Transport) -> None:
    conn = connector(server)
    batch = apply(server, transport, conn, "suspend", B, suspended_url=OTHER_URL)
    assert batch.ok
    wait_for(lambda: all(redirected(server, s, OTHER_URL) for s in SITES[B]), timeout=15, what="B's redirect")
    assert all(serves_own_content(server, s) for s in SITES[A])
    # switching to the host's default URL is a change of the snippet
    switched = apply(server, transport, conn, "suspend", B)
    assert all(r.changed for r in switched.results.values())
    wait_for(lambda: all(redirected(server, s) for s in SITES[B]), timeout=15, what="B's default redirect")


def test_page_mode_answers_503_with_retry_after_on_every_url(server: WebServer, transport: Transport) -> None:
    conn = connector(server, mode="page", page_root=str(server.page_root), retry_after=7200)
    batch = apply(server, transport, conn, "suspend", A)
    assert batch.ok, batch.results
    wait_for(lambda: server.get(SITES[A][0]).status_code == 503, timeout=15, what="503 page")
    for site in SITES[A]:
        for path in [*PATHS, "/.arrears-suspended.html", "/probe"]:
            r = server.get(site, path)
            assert r.status_code == 503, (site, path, r.status_code)
            assert r.headers.get("retry-after") == "7200"
            assert "This site is suspended" in r.text
            assert "x-htaccess" not in r.headers and "served by htaccess" not in r.text
    assert all(serves_own_content(server, s) for s in SITES[B])


def test_page_mode_serves_the_page_rendered_for_the_account(server: WebServer, transport: Transport) -> None:
    conn = connector(server, mode="page", page_root=str(server.page_root), retry_after=60)
    html = "<h1>Account A is suspended</h1><p>Pay 49,90 € at https://billing.example.net/pay/A</p>"
    batch = apply(server, transport, conn, "suspend", A, page_html=html)
    assert batch.ok, batch.results
    wait_for(lambda: server.get(SITES[A][0]).status_code == 503, timeout=15, what="503 page")
    for site in SITES[A]:
        r = server.get(site, "/any/path?q=1")
        assert (r.status_code, r.text) == (503, html)
    again = apply(server, transport, conn, "suspend", A, page_html=html)
    assert not any(r.changed for r in again.results.values()) and again.handlers == {}
    assert apply(server, transport, conn, "resume", A).ok
    wait_for(lambda: all(serves_own_content(server, s) for s in SITES[A]), timeout=15, what="A's content back")
    assert not list(server.page_root.glob("arrears-*.html"))


def test_a_change_the_config_test_rejects_is_rolled_back_and_the_valid_one_kept(
        server: WebServer, transport: Transport) -> None:
    good = connector(server)
    broken = connector(server, extra_lines=["arrears_no_such_directive on;"])
    before = vhost_hashes(server)
    reloads = server.reloads()
    ops: list[Operation] = [*broken.operations("suspend", A, {"sites": SITES[A]}),
                            *good.operations("suspend", B, {"sites": SITES[B]})]

    batch = run(server, transport, ops, good.handlers())

    for site in SITES[A]:
        r = batch.results[f"{A}:web:{server.backend}:suspend:{site}"]
        assert not r.ok and not r.changed
        assert r.error is not None and r.error.startswith("config test failed: ")
        assert "arrears_no_such_directive" in r.error
        assert not (server.hook_dir / f"{site}.conf").exists()
    for site in SITES[B]:
        assert batch.results[f"{B}:web:{server.backend}:suspend:{site}"].ok
        assert (server.hook_dir / f"{site}.conf").exists()
    facts = handler(good, batch)
    assert (facts["config_test"], facts["kept"], facts["reloads"]) == ("failed", "2", "1")
    wait_for(lambda: all(redirected(server, s) for s in SITES[B]), timeout=15, what="B suspended")
    wait_reloads(server, reloads + 1)
    assert server.reloads() == reloads + 1
    for site in SITES[A]:
        for path in PATHS:
            assert serves_own_content(server, site, path), (site, path)
    assert vhost_hashes(server) == before
    assert list((server.state_dir / f"web-{server.backend}" / "pending").iterdir()) == []


@pytest.mark.parametrize("then", ["cont", "kill"])
def test_a_change_on_disk_when_the_agent_dies_is_loaded_by_the_next_batch(
        server: WebServer, transport: Transport, sshd: SshdServer, tmp_path: Path, then: str) -> None:
    """The batch stops right after the snippet reached the disk, the agent is SIGKILLed, the batch goes
    on without its connection (or is killed too): the next batch finds nothing to change and still
    reloads, so the site answers 302."""
    conn = connector(server)
    sites = SITES[A][:1]  # one change: the first one that notifies the handler
    ops = conn.operations("suspend", A, {"sites": sites})
    script = build_script(*stop_after(ops, conn.handlers(), tmp_path / "pid"), state_dir=str(tmp_path))
    reloads = server.reloads()
    crash(sshd.settings(), script, tmp_path / "pid", then=then)  # type: ignore[arg-type]
    assert all((server.hook_dir / f"{site}.conf").exists() for site in sites)  # on disk ...
    assert server.reloads() == reloads and all(serves_own_content(server, s) for s in sites)  # ... not loaded

    again = run_batch(transport, ops, conn.handlers(), state_dir=str(tmp_path))
    for site in sites:
        wait_for(lambda site=site: redirected(server, site), timeout=15,  # type: ignore[misc]
                 what=f"{site} to answer 302", log=server.log)
    assert again.ok and not any(r.changed for r in again.results.values())
    assert handler(conn, again)["reloads"] == "1"
    assert list((tmp_path / "pending").iterdir()) == []
    third = run_batch(transport, ops, conn.handlers(), state_dir=str(tmp_path))
    assert third.ok and third.handlers == {}  # loaded once: no reload is left to do
    assert server.reloads() == reloads + 1


def test_all_changes_failing_rolls_back_everything_without_a_reload(server: WebServer, transport: Transport) -> None:
    broken = connector(server, extra_lines=["arrears_no_such_directive on;"])
    reloads = server.reloads()
    batch = apply(server, transport, broken, "suspend", A)
    assert not batch.ok
    assert all(r.error and r.error.startswith("config test failed") for r in batch.results.values())
    assert handler(broken, batch)["reloads"] == "0"
    assert list(server.hook_dir.iterdir()) == []
    assert server.reloads() == reloads
    assert all(serves_own_content(server, s) for s in SITES[A])


def test_a_failing_reload_rolls_back_the_batch_and_reports_it(server: WebServer, transport: Transport) -> None:
    conn = connector(server, reload=["sh", "-c", "echo 'no running server found' >&2; exit 1"])
    batch = apply(server, transport, conn, "suspend", A)
    h = batch.handlers[f"handler:{conn.handler_name}"]
    assert not h.ok and "reload failed: no running server found" in h.stderr
    for r in batch.results.values():
        assert not r.ok and r.error == "reload failed: no running server found; change rolled back"
    assert list(server.hook_dir.iterdir()) == []
    # nothing was left behind that would make a retry look like "no change"
    retry = apply(server, transport, connector(server), "suspend", A)
    assert retry.ok and all(r.changed for r in retry.results.values())
    wait_for(lambda: all(redirected(server, s) for s in SITES[A]), timeout=15, what="A suspended on retry")


def test_a_rolled_back_resume_or_replacement_puts_the_previous_snippet_back(
        server: WebServer, transport: Transport) -> None:
    """The records of a batch: a resume whose reload fails moves each snippet back; a replacement the config
    test rejects restores the snippet it replaced, byte for byte, and the sites stay suspended."""
    good = connector(server)
    assert apply(server, transport, good, "suspend", A).ok
    wait_for(lambda: all(redirected(server, s) for s in SITES[A]), timeout=15, what="A suspended")
    before = {site: (server.hook_dir / f"{site}.conf").read_bytes() for site in SITES[A]}

    failing = connector(server, reload=["sh", "-c", "echo 'no running server found' >&2; exit 1"])
    resumed = apply(server, transport, failing, "resume", A)
    assert all(not r.ok and "change rolled back" in (r.error or "") for r in resumed.results.values())
    assert {site: (server.hook_dir / f"{site}.conf").read_bytes() for site in SITES[A]} == before

    broken = connector(server, extra_lines=["arrears_no_such_directive on;"])
    replaced = apply(server, transport, broken, "suspend", A)
    assert all(not r.ok and (r.error or "").startswith("config test failed") for r in replaced.results.values())
    assert {site: (server.hook_dir / f"{site}.conf").read_bytes() for site in SITES[A]} == before
    assert list((server.state_dir / f"web-{server.backend}" / "pending").iterdir()) == []
    assert all(redirected(server, s) for s in SITES[A])


def test_a_failed_reload_is_reported_by_its_cause(server: WebServer, transport: Transport) -> None:
    """nginx: the reload signals a master that is not there (its pid file is missing), so its output starts
    with "[notice] signal process started" and names the cause on the next line; apache: the graceful
    restart meets a syntax error after a harmless first line. The error names the cause."""
    broken = server.root / "broken-reload.conf"
    config = server.config.read_text()
    if server.backend == "nginx":
        broken.write_text(config.replace(f"pid {server.root}/run/nginx.pid;", f"pid {server.root}/run/gone.pid;"))
        reload = ["nginx", "-c", str(broken), "-s", "reload"]
        first_line, wanted = "signal process started", f'open() "{server.root}/run/gone.pid" failed'
    else:
        broken.write_text(config + "ArrearsNoSuchDirective on\n")
        reload = ["apache2", "-d", str(server.root), "-f", str(broken), "-k", "graceful"]
        first_line, wanted = "", f"Syntax error on line {len(config.splitlines()) + 1} of {broken}: Invalid command"
    raw = subprocess.run(reload, capture_output=True, text=True, check=False)
    assert raw.returncode != 0
    if first_line:
        assert first_line in next(line for line in (raw.stdout + raw.stderr).splitlines() if line.strip())
    reloads = server.reloads()

    batch = apply(server, transport, connector(server, reload=reload), "suspend", A)

    for r in batch.results.values():
        assert not r.ok and r.error is not None
        assert r.error.startswith("reload failed: ") and r.error.endswith("; change rolled back")
        if server.backend == "nginx":
            assert "[error]" in r.error and wanted in r.error, r.error
            assert "signal process started" not in r.error
        else:
            assert wanted in r.error and "'ArrearsNoSuchDirective'" in r.error, r.error
    assert list(server.hook_dir.iterdir()) == []
    assert server.reloads() == reloads
    assert all(serves_own_content(server, s) for s in SITES[A])


def test_a_site_without_the_hook_fails_alone_and_status_reports_facts(
        server: WebServer, transport: Transport) -> None:
    conn = connector(server)
    batch = apply(server, transport, conn, "suspend", A, sites=[SITES[A][0], HOOKLESS_SITE])
    missing = batch.results[f"{A}:web:{server.backend}:suspend:{HOOKLESS_SITE}"]
    assert not missing.ok and missing.error is not None
    assert "has no arrears hook" in missing.error and conn.hook_line(HOOKLESS_SITE) in missing.error
    assert not (server.hook_dir / f"{HOOKLESS_SITE}.conf").exists()
    assert batch.results[f"{A}:web:{server.backend}:suspend:{SITES[A][0]}"].ok
    wait_for(lambda: redirected(server, SITES[A][0]), timeout=15, what="the hooked site to redirect")

    status = apply(server, transport, conn, "status", A, sites=[*SITES[A], HOOKLESS_SITE])
    facts: dict[str, str] = {}
    for r in status.results.values():
        assert r.ok and not r.changed
        facts.update(r.facts)
    a1, a2 = SITES[A]
    assert facts[f"{a1}.hook"] == facts[f"{a2}.hook"] == "present"
    assert facts[f"{HOOKLESS_SITE}.hook"] == "missing"
    assert (facts[f"{a1}.suspended"], facts[f"{a2}.suspended"]) == ("yes", "no")
    assert status.handlers == {}
    assert conn.observe(facts).state == "partial"  # one site redirects, the others serve


def test_unsafe_values_are_refused_before_anything_runs(server: WebServer) -> None:
    conn = connector(server)
    resources: list[dict[str, Any]] = [
        {"sites": ["a1.test; rm -rf /"]}, {"sites": ["../../etc"]}, {"sites": []},
        {"sites": ["a1.test", "A1.test"]}, {"sites": ["a1.test"], "suspended_url": "http://x/$(reboot)"},
    ]
    for resource in resources:
        with pytest.raises(UnsafeValue):
            conn.operations("suspend", A, resource)
    with pytest.raises(UnsafeValue):
        conn.operations("suspend", "x;rm -rf /", {"sites": ["a1.test"]})
    with pytest.raises(ValueError, match="config line"):
        connector(server, extra_lines=["ok;\nreturn 200;"])
    with pytest.raises(ValueError, match="suspended_url"):
        connector(server, suspended_url=None)


def test_a_download_in_flight_survives_the_reload_of_a_suspension(
        server: WebServer, transport: Transport) -> None:
    site = SITES[A][0]
    big = server.docroots[site] / "big.bin"
    chunk = hashlib.sha256(b"arrears").digest() * 1024  # 32 KiB
    with big.open("wb") as fh:
        for _ in range(64 * 32):  # 64 MiB: far more than the socket buffers hold
            fh.write(chunk)
    big.chmod(0o644)
    expected = hashlib.sha256(big.read_bytes()).hexdigest()
    conn = connector(server)
    digest = hashlib.sha256()
    try:
        with httpx.Client(timeout=30.0) as client, client.stream(
                "GET", server.site_url("/big.bin"), headers={"Host": site}) as resp:
            assert resp.status_code == 200
            stream = resp.iter_bytes(65536)
            digest.update(next(stream))
            old = server.workers()
            batch = apply(server, transport, conn, "suspend", A, settle=False)
            assert batch.ok and handler(conn, batch)["reloads"] == "1"
            wait_for(lambda: redirected(server, site), timeout=15, what="the suspension to take effect")
            for part in stream:
                digest.update(part)
        server.wait_settled(old)
        assert server.get(site, "/big.bin").status_code == 302  # new requests are suspended
    finally:
        big.unlink()
    assert digest.hexdigest() == expected


def observed(server: WebServer, transport: Transport, conn: WebConnector, account: str) -> str:
    """What the connector reads from the real server's status facts for the account's sites."""
    facts: dict[str, str] = {}
    for r in apply(server, transport, conn, "status", account).results.values():
        facts.update(r.facts)
    return conn.observe(facts).state


def test_delete_archives_the_vhosts_and_restore_brings_them_back(server: WebServer, transport: Transport) -> None:
    conn = connector(server)
    before = vhost_hashes(server)
    assert observed(server, transport, conn, A) == "active"
    assert apply(server, transport, conn, "suspend", A).ok
    wait_for(lambda: all(redirected(server, s) for s in SITES[A]), timeout=15, what="A suspended")
    assert observed(server, transport, conn, A) == "suspended"

    deleted = apply(server, transport, conn, "delete", A)
    assert deleted.ok, deleted.results
    archive = deleted.results[f"{A}:web:{server.backend}:delete:_vhosts"].facts
    assert Path(archive["archive"]).is_file()
    for site in SITES[A]:
        assert not (server.vhost_dir / f"{site}.conf").exists()
        assert not (server.enabled_dir / f"{site}.conf").is_symlink()
        assert not (server.hook_dir / f"{site}.conf").exists()
    listing = Path(archive["listing"]).read_text()
    assert all(f"sites-available/{site}.conf" in listing for site in SITES[A])
    assert handler(conn, deleted)["reloads"] == "1"
    def gone(site: str) -> bool:
        r = server.get(site)
        return r.status_code != 302 and f"to {site}" not in r.text  # another vhost answers for it now

    wait_for(lambda: all(gone(s) for s in SITES[A]), timeout=15, what="A's sites to be gone")
    assert all(serves_own_content(server, s) for s in SITES[B])
    assert observed(server, transport, conn, A) == "deleted"
    assert not apply(server, transport, conn, "delete", A).results[f"{A}:web:{server.backend}:delete:_vhosts"].changed

    restored = apply(server, transport, conn, "restore", A, archive=archive["archive"], sha256=archive["sha256"],
                     paths=archive["paths"])
    assert restored.ok, restored.results
    assert vhost_hashes(server) == before
    wait_for(lambda: all(redirected(server, s) for s in SITES[A]), timeout=15, what="restored sites, suspended")
    assert observed(server, transport, conn, A) == "suspended"
    assert apply(server, transport, conn, "resume", A).ok
    wait_for(lambda: all(serves_own_content(server, s) for s in SITES[A]), timeout=15, what="A's content back")
    assert observed(server, transport, conn, A) == "active"

"""Real nginx and apache2 for tests: foreground daemons with their own configuration trees on loopback.

Fixtures (registered for the whole suite through ``pytest_plugins`` in tests/conftest.py):

``nginx_server``   module-scoped :class:`WebServer` running nginx with the sites of :data:`SITES`.
``apache_server``  module-scoped :class:`WebServer` running apache2 (``AllowOverride All``, mod_rewrite
                   and mod_headers loaded) with the same sites.

Every site's vhost carries the arrears include hook (``include <hook_dir>/<site>.con[f];`` for nginx,
``IncludeOptional <hook_dir>/<site>.conf`` for apache) and serves its own ``index.html`` and
``a/b/c.html``; vhosts follow Debian's layout (the file in ``sites-available``, a symlink to it in
``sites-enabled``, which the server includes). :data:`HOOKLESS_SITE` has a vhost without the hook.
Reloads are counted from the server's error log. The tree lives in a world-readable
temporary folder (apache's workers run as www-data) that is removed at the end of the module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.servers.base import Daemon, free_port, require_binary, wait_for

__all__ = ["HOOKLESS_SITE", "SITES", "WebServer", "apache_server", "nginx_server", "start_apache", "start_nginx"]

SITES: dict[str, list[str]] = {
    "acct-a": ["a1.test", "a2.test"],
    "acct-b": ["b1.test", "b2.test"],
}
HOOKLESS_SITE = "nohook.test"

APACHE_MODULES = ["mpm_event", "authz_core", "authz_host", "alias", "dir", "mime", "rewrite", "headers"]
APACHE_MODULE_DIR = Path("/usr/lib/apache2/modules")


@dataclass
class WebServer:
    """A running test web server and the paths its connector settings need."""

    backend: str  # nginx | apache
    root: Path
    port: int
    hook_dir: Path
    vhost_dir: Path  # sites-available: the vhost files
    enabled_dir: Path  # sites-enabled: a symlink per vhost, the folder the server includes
    state_dir: Path
    page_root: Path
    log: Path
    config: Path
    config_test: list[str]
    reload: list[str]
    docroots: dict[str, Path] = field(default_factory=dict)
    daemon: Daemon | None = None

    def site_url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, site: str, path: str = "/", **kwargs: object) -> httpx.Response:
        """One request for ``site`` (by Host header), redirects not followed."""
        return httpx.get(self.site_url(path), headers={"Host": site}, follow_redirects=False, timeout=10.0,
                         **kwargs)  # type: ignore[arg-type]

    def vhost_files(self) -> list[Path]:
        return sorted(p for p in self.vhost_dir.rglob("*") if p.is_file())

    def enabled_links(self) -> dict[str, str]:
        return {p.name: os.readlink(p) for p in sorted(self.enabled_dir.iterdir())}

    def workers(self) -> set[int]:
        """The pids of the server's worker processes (children of the foreground master)."""
        if self.daemon is None or self.daemon.proc is None:
            return set()
        master = self.daemon.proc.pid
        pids = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                pids.add(int(stat.parent.name))
        return pids

    def wait_settled(self, old_workers: set[int], timeout: float = 20.0) -> None:
        """Wait until a reload has fully taken over: the workers from before it are gone (they may still
        accept a connection or two between the reload signal and their shutdown)."""
        wait_for(lambda: bool(self.workers()) and not old_workers & self.workers(), timeout=timeout,
                 what=f"{self.backend}'s old workers to exit after the reload", log=self.log)

    def reloads(self) -> int:
        """Graceful reloads the server has received so far, counted from its error log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        needle = "signal 1 (SIGHUP) received" if self.backend == "nginx" else "Doing graceful restart"
        return text.count(needle)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()


def _make_tree(backend: str) -> tuple[Path, dict[str, Path]]:
    root = Path(tempfile.mkdtemp(prefix=f"arrears-{backend}-"))
    root.chmod(0o755)
    docroots: dict[str, Path] = {}
    for site in [*(s for sites in SITES.values() for s in sites), HOOKLESS_SITE]:
        doc = root / "www" / site
        (doc / "a" / "b").mkdir(parents=True)
        (doc / "index.html").write_text(f"<h1>welcome to {site}</h1>\n")
        (doc / "a" / "b" / "c.html").write_text(f"<p>deep page of {site}</p>\n")
        docroots[site] = doc
    for sub in ("hooks", "sites-available", "sites-enabled", "state", "page", "logs", "run"):
        (root / sub).mkdir()
    (root / "page" / "suspended.html").write_text("<h1>This site is suspended</h1>\n")
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root, docroots


def _enable(root: Path, site: str, vhost: str) -> None:
    """Debian's layout: the vhost in sites-available, a symlink to it in sites-enabled."""
    available = root / "sites-available" / f"{site}.conf"
    available.write_text(vhost)
    available.chmod(0o644)
    (root / "sites-enabled" / f"{site}.conf").symlink_to(available)


def _nginx_vhost(site: str, port: int, doc: Path, hook_dir: Path, hook: bool) -> str:
    hook_line = f"    include {hook_dir}/{site}.con[f];\n" if hook else ""
    return (
        "server {\n"
        f"    listen 127.0.0.1:{port};\n"
        f"    server_name {site};\n"
        f"{hook_line}"
        f"    root {doc};\n"
        "    index index.html;\n"
        "    location / {\n"
        "        try_files $uri $uri/ =404;\n"
        "    }\n"
        "    location /a/ {\n"
        "        add_header X-Site-Location deep;\n"
        "    }\n"
        "}\n"
    )


def start_nginx() -> WebServer:
    """Start nginx on a free loopback port with the sites of :data:`SITES` (caller stops it)."""
    require_binary("nginx")
    root, docroots = _make_tree("nginx")
    port = free_port()
    log = root / "logs" / "error.log"
    conf = root / "nginx.conf"
    conf.write_text(
        "worker_processes 1;\n"
        f"pid {root}/run/nginx.pid;\n"
        f"error_log {log} notice;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    include /etc/nginx/mime.types;\n"
        "    default_type application/octet-stream;\n"
        f"    access_log {root}/logs/access.log;\n"
        f"    client_body_temp_path {root}/run/body;\n"
        f"    proxy_temp_path {root}/run/proxy;\n"
        f"    fastcgi_temp_path {root}/run/fastcgi;\n"
        f"    uwsgi_temp_path {root}/run/uwsgi;\n"
        f"    scgi_temp_path {root}/run/scgi;\n"
        "    sendfile on;\n"
        f"    include {root}/sites-enabled/*.conf;\n"
        "}\n"
    )
    for site, doc in docroots.items():
        vhost = _nginx_vhost(site, port, doc, root / "hooks", hook=site != HOOKLESS_SITE)
        _enable(root, site, vhost)
    base = ["nginx", "-e", str(log), "-c", str(conf)]
    server = WebServer(
        backend="nginx", root=root, port=port, hook_dir=root / "hooks",
        vhost_dir=root / "sites-available", enabled_dir=root / "sites-enabled",
        state_dir=root / "state", page_root=root / "page", log=log, config=conf,
        config_test=[*base, "-t", "-q"], reload=[*base, "-s", "reload"], docroots=docroots,
    )
    server.daemon = Daemon("nginx", [*base, "-g", "daemon off;"], log=root / "logs" / "stdout.log",
                           ports=[port])
    return _launch(server)


def _apache_vhost(site: str, port: int, doc: Path, hook_dir: Path, hook: bool) -> str:
    hook_line = f"    IncludeOptional {hook_dir}/{site}.conf\n" if hook else ""
    return (
        f"<VirtualHost 127.0.0.1:{port}>\n"
        f"    ServerName {site}\n"
        f"{hook_line}"
        f"    DocumentRoot {doc}\n"
        f"    <Directory {doc}>\n"
        "        AllowOverride All\n"
        "        Require all granted\n"
        "    </Directory>\n"
        "</VirtualHost>\n"
    )


def start_apache() -> WebServer:
    """Start apache2 on a free loopback port with the sites of :data:`SITES` (caller stops it)."""
    require_binary("apache2")
    root, docroots = _make_tree("apache")
    port = free_port()
    log = root / "logs" / "error.log"
    conf = root / "apache2.conf"
    modules = "".join(f"LoadModule {m}_module {APACHE_MODULE_DIR}/mod_{m}.so\n" for m in APACHE_MODULES)
    conf.write_text(
        f"ServerRoot {root}\n"
        f"{modules}"
        "ServerName localhost\n"
        f"PidFile {root}/run/apache2.pid\n"
        f"DefaultRuntimeDir {root}/run\n"
        f"Mutex file:{root}/run default\n"
        f"Listen 127.0.0.1:{port}\n"
        "User www-data\n"
        "Group www-data\n"
        f"ErrorLog {log}\n"
        "LogLevel notice\n"
        "TypesConfig /etc/mime.types\n"
        "DirectoryIndex index.html\n"
        "AccessFileName .htaccess\n"
        "StartServers 1\n"
        "<Directory />\n"
        "    AllowOverride None\n"
        "    Require all denied\n"
        "</Directory>\n"
        f"IncludeOptional {root}/sites-enabled/*.conf\n"
    )
    for site, doc in docroots.items():
        vhost = _apache_vhost(site, port, doc, root / "hooks", hook=site != HOOKLESS_SITE)
        _enable(root, site, vhost)
    base = ["apache2", "-d", str(root), "-f", str(conf)]
    server = WebServer(
        backend="apache", root=root, port=port, hook_dir=root / "hooks",
        vhost_dir=root / "sites-available", enabled_dir=root / "sites-enabled",
        state_dir=root / "state", page_root=root / "page", log=log, config=conf,
        config_test=[*base, "-t"], reload=[*base, "-k", "graceful"], docroots=docroots,
    )
    server.daemon = Daemon("apache2", [*base, "-DFOREGROUND"], log=root / "logs" / "stdout.log",
                           ports=[port])
    return _launch(server)


def _launch(server: WebServer) -> WebServer:
    """Config test, then start; on any failure stop what started and remove the tree."""
    try:
        subprocess.run(server.config_test, check=True, capture_output=True)
        assert server.daemon is not None
        server.daemon.start()
    except BaseException:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
        raise
    return server


def _serve(server: WebServer) -> Iterator[WebServer]:
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="module")
def nginx_server() -> Iterator[WebServer]:
    yield from _serve(start_nginx())


@pytest.fixture(scope="module")
def apache_server() -> Iterator[WebServer]:
    yield from _serve(start_apache())

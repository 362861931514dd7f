"""Debian 12's own nginx, apache2, dovecot and postfix configurations, as the packages install them.

Each tree is copied from the package's files (the ``.deb`` in apt's cache, or the copies the package keeps
under /usr/share), then relocated into a temporary root: every absolute path of the package's own folders
(``/etc/nginx``, ``/run/nginx.pid``, ``/var/log/...``) points into the root, and listeners use a free
loopback port. Nothing else is changed. What the package's ``postinst`` does on a fresh install is
repeated: apache's default modules, confs and ``000-default`` enabled with its own ``a2enmod`` /
``a2enconf`` / ``a2ensite``; postfix's ``main.cf`` from ``main.cf.debian`` (+ ``main.cf.tls``) and the
``smtpd_relay_restrictions`` it sets. Two customer vhosts per web server are made the way an operator
makes them: a copy of the package's default site with its ``server_name``/``ServerName`` and document
root set (for apache with the ``<Directory>`` that grants it, and ``a2enmod rewrite`` as docs/web.md asks).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers.base import Daemon, free_port, in_ci, require_binary

__all__ = ["CUSTOMER_SITES", "StockMail", "StockWeb", "stock_apache", "stock_mail", "stock_nginx"]

CUSTOMER_SITES = ("shop.test", "blog.test")
APT_CACHE = Path("/var/cache/apt/archives")


def _missing(message: str) -> None:
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def _extract(package: str, root: Path) -> Path:
    """The package's files extracted below ``root`` (from the newest .deb in apt's cache)."""
    debs = sorted(glob.glob(str(APT_CACHE / f"{package}_*.deb")))
    if not debs:
        _missing(f"no {package} .deb in {APT_CACHE}: run apt-get install --reinstall --download-only {package}")
    target = root / "pkg" / package
    target.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "-x", debs[-1], str(target)], check=True, capture_output=True)
    return target


def _relocate(path: Path, pairs: list[tuple[str, str]]) -> None:
    text = path.read_text()
    for old, new in pairs:
        text = text.replace(old, new)
    path.write_text(text)


@dataclass
class StockWeb:
    backend: str
    root: Path
    port: int
    settings: dict[str, object]
    vhost_dir: Path
    docroots: dict[str, Path] = field(default_factory=dict)
    daemon: Daemon | None = None

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _docroots(root: Path) -> dict[str, Path]:
    out = {}
    for site in CUSTOMER_SITES:
        doc = root / "www" / site
        doc.mkdir(parents=True)
        (doc / "index.html").write_text(f"<h1>welcome to {site}</h1>\n")
        out[site] = doc
    for p in [root, root / "www", *(root / "www").rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return out


def stock_nginx(suspended_url: str) -> StockWeb:
    """nginx with the package's nginx.conf and default site plus two customer sites copied from it (not started)."""
    require_binary("nginx", "dpkg-deb")
    root = Path(tempfile.mkdtemp(prefix="arrears-stock-nginx-"))
    root.chmod(0o755)
    port = free_port()
    etc = root / "etc" / "nginx"
    shutil.copytree(_extract("nginx-common", root) / "etc" / "nginx", etc, symlinks=True)
    (root / "run").mkdir()
    (root / "log").mkdir()
    pairs = [("/etc/nginx", str(etc)), ("/run/nginx.pid", f"{root}/run/nginx.pid"), ("/var/log/nginx", f"{root}/log")]
    _relocate(etc / "nginx.conf", pairs)
    docroots = _docroots(root)
    default = (etc / "sites-available" / "default").read_text()
    for site, doc in docroots.items():
        vhost = (default.replace("listen 80 default_server;", f"listen 127.0.0.1:{port};")
                 .replace("listen [::]:80 default_server;", f"listen [::1]:{port};")
                 .replace("server_name _;", f"server_name {site};")
                 .replace("root /var/www/html;", f"root {doc};"))
        (etc / "sites-available" / site).write_text(vhost)
        (etc / "sites-enabled" / site).symlink_to(etc / "sites-available" / site)
    base = ["nginx", "-c", str(etc / "nginx.conf"), "-e", f"{root}/log/error.log"]
    web = StockWeb("nginx", root, port, {
        "backend": "nginx", "hook_dir": f"{etc}/arrears.d", "vhost_dir": f"{etc}/sites-available",
        "enabled_dir": f"{etc}/sites-enabled", "state_dir": f"{root}/state", "archive_dir": f"{root}/archive",
        "suspended_url": suspended_url, "config_test": [*base, "-t", "-q"], "reload": [*base, "-s", "reload"],
    }, etc / "sites-available", docroots)
    web.daemon = Daemon("nginx", [*base, "-g", "daemon off;"], log=root / "log" / "stdout.log", ports=[port])
    return web


def stock_apache(suspended_url: str) -> StockWeb:
    """apache2 as its package installs it, with two customer sites copied from 000-default (not started)."""
    require_binary("apache2", "apache2ctl", "a2enmod", "dpkg-deb")
    root = Path(tempfile.mkdtemp(prefix="arrears-stock-apache-"))
    root.chmod(0o755)
    port = free_port()
    etc = root / "etc" / "apache2"
    shutil.copytree(_extract("apache2", root) / "etc" / "apache2", etc, symlinks=True)
    for sub in ("run", "lock", "log"):
        (root / sub).mkdir()
    _relocate(etc / "envvars", [("/var/run/apache2$SUFFIX", f"{root}/run"),
                                ("/var/lock/apache2$SUFFIX", f"{root}/lock"),
                                ("/var/log/apache2$SUFFIX", f"{root}/log")])
    _relocate(etc / "ports.conf", [("Listen 80\n", f"Listen 127.0.0.1:{port}\n")])
    env = {**os.environ, "APACHE_CONFDIR": str(etc)}

    def tool(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, env=env)

    # the package's postinst on a fresh install, then the operator's a2enmod rewrite of docs/web.md
    tool("a2enmod", "-m", "-q", "mpm_event")
    for module in ("authz_host", "auth_basic", "access_compat", "authn_file", "authz_user", "alias", "dir",
                   "autoindex", "env", "mime", "negotiation", "setenvif", "filter", "deflate", "status",
                   "reqtimeout", "rewrite"):
        tool("a2enmod", "-m", "-q", module)
    for conf in ("charset", "localized-error-pages", "other-vhosts-access-log", "security", "serve-cgi-bin"):
        tool("a2enconf", "-m", "-q", conf)
    docroots = _docroots(root)
    default = (etc / "sites-available" / "000-default.conf").read_text()
    _relocate(etc / "sites-available" / "000-default.conf", [("<VirtualHost *:80>", f"<VirtualHost *:{port}>")])
    tool("a2ensite", "-q", "000-default")
    for site, doc in docroots.items():
        vhost = (default.replace("<VirtualHost *:80>", f"<VirtualHost *:{port}>")
                 .replace("#ServerName www.example.com", f"ServerName {site}")
                 .replace("DocumentRoot /var/www/html", f"DocumentRoot {doc}\n\t<Directory {doc}>\n"
                          "\t\tRequire all granted\n\t</Directory>"))
        (etc / "sites-available" / f"{site}.conf").write_text(vhost)
        tool("a2ensite", "-q", site)
    ctl = ["env", f"APACHE_CONFDIR={etc}", "apache2ctl"]
    web = StockWeb("apache", root, port, {
        "backend": "apache", "hook_dir": f"{etc}/arrears.d", "vhost_dir": f"{etc}/sites-available",
        "enabled_dir": f"{etc}/sites-enabled", "state_dir": f"{root}/state", "archive_dir": f"{root}/archive",
        "suspended_url": suspended_url, "config_test": [*ctl, "-t"], "reload": [*ctl, "-k", "graceful"],
    }, etc / "sites-available", docroots)
    web.daemon = Daemon("apache2", [*ctl, "-DFOREGROUND"], log=root / "log" / "stdout.log", ports=[port])
    return web


@dataclass
class StockMail:
    root: Path
    dovecot_dir: Path
    postfix_dir: Path
    settings: dict[str, object]

    def stop(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def stock_mail() -> StockMail:
    """dovecot's configuration as dovecot-core installs it (from /usr/share/dovecot) and postfix's main.cf and
    master.cf as its postinst writes them, in a temporary root; the daemons are not started."""
    require_binary("doveconf", "postconf", "postfix", "postmap")
    root = Path(tempfile.mkdtemp(prefix="arrears-stock-mail-"))
    root.chmod(0o755)
    dovecot = root / "etc" / "dovecot"
    shutil.copytree("/usr/share/dovecot", dovecot, ignore=shutil.ignore_patterns("dh.pem", "*.sh", "*.cnf",
                                                                                  "stopwords", "protocols.d"))
    postfix = root / "etc" / "postfix"
    postfix.mkdir(parents=True)
    main = Path("/usr/share/postfix/main.cf.debian").read_text()
    if Path("/etc/ssl/private/ssl-cert-snakeoil.key").exists():
        main += Path("/usr/share/postfix/main.cf.tls").read_text()
    (postfix / "main.cf").write_text(main)
    shutil.copy("/usr/share/postfix/master.cf.dist", postfix / "master.cf")
    subprocess.run(["postconf", "-c", str(postfix), "-e",
                    "smtpd_relay_restrictions=permit_mynetworks permit_sasl_authenticated defer_unauth_destination"],
                   check=True, capture_output=True)
    arrears = root / "arrears"
    return StockMail(root, dovecot, postfix, {
        "backend": "dovecot-postfix", "deny_dir": f"{arrears}/dovecot", "password_lock_file": f"{arrears}/dovecot/lock",
        "bounce_map": f"{arrears}/postfix/bounce", "norelay_map": f"{arrears}/postfix/norelay",
        "postmap_command": f"postmap -c {postfix}",
        # the mail daemons are not started here: their reloads and kicks are no-ops
        "postfix_reload_command": "true", "dovecot_reload_command": "true", "kick_command": "true",
        "dovecot_config_dir": str(dovecot), "postfix_config_dir": str(postfix), "state_dir": f"{root}/state",
        "mail_roots": [f"{root}/mail"], "maildir_template": f"{root}/mail/{{domain}}/{{local}}",
        "archive_dir": f"{root}/archive",
    })

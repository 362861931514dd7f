"""Debian 12's own nginx, apache2, dovecot and postfix configurations, as the packages install them.

Each tree is copied from the package's files (the ``.deb`` in apt's cache, else the installed package's
files when ``dpkg -V`` finds them unchanged, or the copies the package keeps under /usr/share), then
relocated into a temporary root: every absolute path of the package's own folders (``/etc/nginx``,
``/run/nginx.pid``, ``/var/log/...``, postfix's queue) points into the root, and listeners use a free
loopback port. Nothing else is changed. What the package's ``postinst`` does on a fresh install is
repeated: apache's default modules, confs and ``000-default`` enabled with its own ``a2enmod`` /
``a2enconf`` / ``a2ensite``; postfix's ``main.cf`` from ``main.cf.debian`` (+ ``main.cf.tls``) and the
``smtpd_relay_restrictions`` it sets; dovecot's ``private/dovecot.{pem,key}`` (the snakeoil pair, or a
self-signed one without it). Dovecot runs with a ``local.conf`` (the stock ``dovecot.conf`` includes it last)
for its relocation, after the operator's switch to virtual mailboxes (:meth:`StockMail.serve_mailboxes`).
Customer vhosts are made the way an operator makes them: a copy of
the package's default site with its ``server_name``/``ServerName`` and document root set (for apache
with the ``<Directory>`` that grants it, and ``a2enmod rewrite`` as docs/web.md asks).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers.base import Daemon, free_port, in_ci, require_binary
from tests.servers.mail import stop_mail
from tests.servers.web import WebServer

__all__ = ["CUSTOMER_SITES", "StockMail", "stock_apache", "stock_mail", "stock_nginx", "web_settings"]

CUSTOMER_SITES = ("shop.test", "blog.test")
APT_CACHE = Path("/var/cache/apt/archives")


def _missing(message: str) -> None:
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def _extract(package: str, root: Path) -> Path:
    """The package's own files below ``root``: from the newest .deb in apt's cache, or else the installed
    package's files (``dpkg -L``; only when ``dpkg -V`` finds none of them changed)."""
    target = root / "pkg" / package
    target.mkdir(parents=True)
    debs = sorted(glob.glob(str(APT_CACHE / f"{package}_*.deb")))
    if debs:
        subprocess.run(["dpkg-deb", "-x", debs[-1], str(target)], check=True, capture_output=True)
        return target
    changed = subprocess.run(["dpkg", "-V", package], capture_output=True, text=True, check=False).stdout
    listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    if listed.returncode != 0 or changed.strip():
        _missing(f"no {package} .deb in {APT_CACHE} and the installed files differ from the package "
                 f"({changed.strip() or listed.stderr.strip()}): apt-get install --download-only --reinstall {package}")
    for name in listed.stdout.splitlines():
        source = Path(name)
        if not name.startswith("/etc/") or not (source.is_file() or source.is_symlink()):
            continue
        copy = target / name.lstrip("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy, follow_symlinks=False)
    for name in listed.stdout.splitlines():  # the package's own (maybe empty) folders
        if name.startswith("/etc/") and Path(name).is_dir():
            (target / name.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return target


def _relocate(path: Path, pairs: list[tuple[str, str]]) -> None:
    text = path.read_text()
    for old, new in pairs:
        text = text.replace(old, new)
    path.write_text(text)


def web_settings(server: WebServer, suspended_url: str, vhost_name: str) -> dict[str, object]:
    """The web connector's settings for a stock server (``vhost_name`` as its customer vhosts are named)."""
    return {"backend": server.backend, "hook_dir": str(server.hook_dir), "vhost_dir": str(server.vhost_dir),
            "enabled_dir": str(server.enabled_dir), "vhost_name": vhost_name, "state_dir": str(server.state_dir),
            "archive_dir": str(server.root / "archive"), "suspended_url": suspended_url,
            "config_test": server.config_test, "reload": server.reload}


def _docroots(root: Path, sites: Sequence[str]) -> dict[str, Path]:
    out = {}
    for site in sites:
        doc = root / "www" / site
        (doc / "a" / "b").mkdir(parents=True)
        (doc / "index.html").write_text(f"<h1>welcome to {site}</h1>\n")
        (doc / "a" / "b" / "c.html").write_text(f"<p>deep page of {site}</p>\n")
        out[site] = doc
    for p in [root, root / "www", *(root / "www").rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return out


def stock_nginx(sites: Sequence[str] = CUSTOMER_SITES, vhost_name: str = "{site}") -> WebServer:
    """nginx with the package's nginx.conf and default site, plus a customer vhost per site copied from the
    default one and named by ``vhost_name`` (not started: ``server.daemon.start()``)."""
    require_binary("nginx", "dpkg-deb")
    root = Path(tempfile.mkdtemp(prefix="arrears-stock-nginx-"))
    root.chmod(0o755)
    port = free_port()
    etc = root / "etc" / "nginx"
    shutil.copytree(_extract("nginx-common", root) / "etc" / "nginx", etc, symlinks=True)
    for sub in ("run", "log", "state", "page"):
        (root / sub).mkdir()
    pairs = [("/etc/nginx", str(etc)), ("/run/nginx.pid", f"{root}/run/nginx.pid"), ("/var/log/nginx", f"{root}/log")]
    _relocate(etc / "nginx.conf", pairs)
    docroots = _docroots(root, sites)
    default = (etc / "sites-available" / "default").read_text()
    for site, doc in docroots.items():
        vhost = (default.replace("listen 80 default_server;", f"listen 127.0.0.1:{port};")
                 .replace("listen [::]:80 default_server;", f"listen [::1]:{port};")
                 .replace("server_name _;", f"server_name {site};")
                 .replace("root /var/www/html;", f"root {doc};"))
        name = vhost_name.format(site=site)
        (etc / "sites-available" / name).write_text(vhost)
        (etc / "sites-enabled" / name).symlink_to(etc / "sites-available" / name)
    base = ["nginx", "-c", str(etc / "nginx.conf"), "-e", f"{root}/log/error.log"]
    server = WebServer(
        backend="nginx", root=root, port=port, hook_dir=etc / "arrears.d", vhost_dir=etc / "sites-available",
        enabled_dir=etc / "sites-enabled", state_dir=root / "state", page_root=root / "page",
        log=root / "log" / "error.log", config=etc / "nginx.conf", config_test=[*base, "-t", "-q"],
        reload=[*base, "-s", "reload"], docroots=docroots,
    )
    server.daemon = Daemon("nginx", [*base, "-g", "daemon off;"], log=root / "log" / "stdout.log", ports=[port])
    return server


def stock_apache(sites: Sequence[str] = CUSTOMER_SITES) -> WebServer:
    """apache2 as its package installs it, with a customer vhost per site (``<site>.conf``) copied from
    000-default (not started: ``server.daemon.start()``)."""
    require_binary("apache2", "apache2ctl", "a2enmod", "dpkg-deb")
    root = Path(tempfile.mkdtemp(prefix="arrears-stock-apache-"))
    root.chmod(0o755)
    port = free_port()
    etc = root / "etc" / "apache2"
    shutil.copytree(_extract("apache2", root) / "etc" / "apache2", etc, symlinks=True)
    for sub in ("run", "lock", "log", "state", "page"):
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
    docroots = _docroots(root, sites)
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
    server = WebServer(
        backend="apache", root=root, port=port, hook_dir=etc / "arrears.d", vhost_dir=etc / "sites-available",
        enabled_dir=etc / "sites-enabled", state_dir=root / "state", page_root=root / "page",
        log=root / "log" / "error.log", config=etc / "apache2.conf", config_test=[*ctl, "-t"],
        reload=[*ctl, "-k", "graceful"], docroots=docroots,
    )
    server.daemon = Daemon("apache2", [*ctl, "-DFOREGROUND"], log=root / "log" / "stdout.log", ports=[port])
    return server


VMAIL_UID = 5000  # the virtual mailboxes' owner, as operators name it ``vmail`` (no system user needed)


@dataclass
class StockMail:
    root: Path
    dovecot_dir: Path
    postfix_dir: Path
    settings: dict[str, object]
    smtp_port: int = 0
    imap_port: int = 0
    pop3_port: int = 0
    postfix: Daemon | None = None
    dovecot: Daemon | None = None

    def serve_mailboxes(self, boxes: dict[str, str]) -> None:
        """What an operator does to the stock dovecot to serve ``user@domain`` mailboxes (the connector's
        mailboxes; the stock passdb is PAM, for system users): ``10-auth.conf`` switched from
        ``auth-system.conf.ext`` to the ``auth-passwdfile.conf.ext`` it lists, and the users file (its path
        below the root) with each mailbox's password, owner and maildir."""
        conf_d = self.dovecot_dir / "conf.d"
        _relocate(conf_d / "10-auth.conf", [("\n!include auth-system.conf.ext\n", "\n#!include auth-system.conf.ext\n"),
                                            ("\n#!include auth-passwdfile.conf.ext\n",
                                             "\n!include auth-passwdfile.conf.ext\n")])
        users = self.dovecot_dir / "users"
        _relocate(conf_d / "auth-passwdfile.conf.ext", [("/etc/dovecot/users", str(users))])
        mail = self.root / "mail"
        mail.mkdir(exist_ok=True)
        os.chown(mail, VMAIL_UID, VMAIL_UID)
        # dovecot looks a user up in a passwd-file with ' escaped as \' (docs/mail.md)
        users.write_text("".join(f"{box.replace(chr(39), chr(92) + chr(39))}:{{PLAIN}}{pw}:{VMAIL_UID}:{VMAIL_UID}::"
                                 f"{mail}/{box.partition('@')[2]}/{box.partition('@')[0]}::\n"
                                 for box, pw in boxes.items()))
        shutil.chown(users, "root", "dovecot")  # dovecot's auth process reads it as the dovecot user
        users.chmod(0o640)

    def start_dovecot(self) -> None:
        """Run dovecot from the stock tree with ``local.conf`` (the stock ``dovecot.conf`` includes it last)
        relocating what the package points outside it: runtime, state and log below the root, IMAP and POP3
        on free loopback ports (no IMAPS/POP3S), plaintext logins allowed (the test's clients do not
        STARTTLS) and no failure delay; mail in maildirs where the connector's ``maildir_template`` says.
        Its reload and kick become the connector's commands."""
        root, conf = self.root, self.dovecot_dir / "dovecot.conf"
        self.imap_port, self.pop3_port = free_port(), free_port()
        (root / "run").mkdir(exist_ok=True)
        (self.dovecot_dir / "local.conf").write_text(f"""\
base_dir = {root}/run/dovecot
state_dir = {root}/dovecot-state
instance_name = arrears-{root.name}
log_path = {root}/dovecot.log
listen = 127.0.0.1
disable_plaintext_auth = no
auth_failure_delay = 0
mail_location = maildir:{root}/mail/%d/%n
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
""")
        self.settings.update(imap_ports=[self.imap_port], pop3_ports=[self.pop3_port], webmail_ports=[],
                             dovecot_reload_command=f"doveadm -c {conf} reload",
                             kick_command=f"doveadm -c {conf} kick")
        self.dovecot = Daemon("dovecot", ["dovecot", "-F", "-c", str(conf)], log=root / "dovecot.out",
                              ports=[self.imap_port, self.pop3_port]).start()

    def start_postfix(self) -> None:
        """Run postfix from the stock tree, relocated: its queue, data and log below the root, smtpd on a free
        loopback port. Its reload becomes the connector's ``postfix_reload_command``."""
        root, pf = self.root, self.postfix_dir
        for sub in ("queue", "data"):
            (root / sub).mkdir()
        shutil.chown(root / "data", "postfix")
        self.smtp_port = free_port()
        subprocess.run(["postconf", "-c", str(pf), "-e", f"queue_directory={root}/queue",
                        f"data_directory={root}/data", f"maillog_file={root}/postfix.log",
                        f"maillog_file_prefixes={root}", "inet_interfaces=127.0.0.1", "inet_protocols=ipv4"],
                       check=True, capture_output=True)
        _relocate(pf / "master.cf", [("\nsmtp      inet", f"\n127.0.0.1:{self.smtp_port} inet")])
        self.settings["postfix_reload_command"] = f"postfix -c {pf} reload"
        self.postfix = Daemon("postfix", ["postfix", "-c", str(pf), "start-fg"], log=root / "postfix.out",
                              ports=[self.smtp_port]).start()

    def stop(self) -> None:
        stop_mail(self.postfix, self.postfix_dir, self.dovecot, self.root)


def stock_mail() -> StockMail:
    """dovecot's configuration as dovecot-core installs it (from /usr/share/dovecot) and postfix's main.cf and
    master.cf as its postinst writes them, in a temporary root. Nothing runs until :meth:`StockMail.start_postfix`
    and :meth:`StockMail.start_dovecot` (after :meth:`StockMail.serve_mailboxes`: the stock passdb is PAM, for
    system users, not the connector's mailboxes)."""
    require_binary("doveconf", "postconf", "postfix", "postmap")
    root = Path(tempfile.mkdtemp(prefix="arrears-stock-mail-"))
    root.chmod(0o755)
    dovecot = root / "etc" / "dovecot"
    shutil.copytree("/usr/share/dovecot", dovecot, ignore=shutil.ignore_patterns("dh.pem", "*.sh", "*.cnf",
                                                                                  "stopwords", "protocols.d"))
    # dovecot-core's postinst links the ssl-cert snakeoil pair as private/dovecot.{pem,key}; without one (no
    # ssl-cert package) a self-signed pair stands in, since dovecot reads 10-ssl.conf's files when it starts
    private = dovecot / "private"
    private.mkdir(mode=0o700)
    snakeoil = Path("/etc/ssl/certs/ssl-cert-snakeoil.pem"), Path("/etc/ssl/private/ssl-cert-snakeoil.key")
    if all(p.exists() for p in snakeoil):
        (private / "dovecot.pem").symlink_to(snakeoil[0])
        (private / "dovecot.key").symlink_to(snakeoil[1])
    else:
        require_binary("openssl")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
                        "/CN=mail.test", "-keyout", str(private / "dovecot.key"), "-out", str(private / "dovecot.pem")],
                       check=True, capture_output=True)
    _relocate(dovecot / "conf.d" / "10-ssl.conf", [("/etc/dovecot/private/", f"{private}/")])
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
        # until the daemons are started, their reloads and kicks are no-ops
        "postfix_reload_command": "true", "dovecot_reload_command": "true", "kick_command": "true",
        "dovecot_config_dir": str(dovecot), "postfix_config_dir": str(postfix), "state_dir": f"{root}/state",
        "mail_roots": [f"{root}/mail"], "maildir_template": f"{root}/mail/{{domain}}/{{local}}",
        "archive_dir": f"{root}/archive",
    })

"""What the nginx and apache connectors share: settings, the include-hook operations and the reload handler.

Mechanism. Each site's vhost carries, once, a hook line that includes ``<hook_dir>/<site>.conf`` when it
exists (nginx: ``include <hook_dir>/<site>.con[f];``, a glob that matching nothing is no error; apache:
``IncludeOptional <hook_dir>/<site>.conf``). Put it first in the server block / VirtualHost, so the
snippet's rules run before the vhost's own rewrites. Suspending a site writes that snippet; resuming
removes it. The vhost file itself is never written, so it stays byte-for-byte what the operator made.

Operations (one per site; ids ``<account>:web:<backend>:<action>:<site>``):

``suspend``  fails that site's operation when the hook is missing from every file below ``vhost_dir``;
             otherwise writes the snippet, unless an identical one is already there (then: no change).
``resume``   removes the snippet (absent already: no change).
``status``   facts ``<site>.hook`` (present|missing), ``<site>.suspended`` (yes|no: the snippet exists),
             ``<site>.vhost`` (present|absent); :meth:`WebConnector.observe` reads them.
``delete``   archives the account's vhost files (``<vhost_dir>/<vhost_name>``) with
             :func:`connectors.archive.archive_ops` (archive -> verify -> remove; facts ``archive``,
             ``sha256``, ``paths``...), then per site removes a dangling ``<enabled_dir>`` link and the
             snippet, but only once no file below ``vhost_dir`` or ``enabled_dir`` carries the site's hook
             any more: a site whose vhost lives elsewhere is reported and stays suspended.
``restore``  extracts the vhost files from the archive named by the ``archive`` and ``sha256`` facts of
             the delete, re-creates the ``enabled_dir`` link, and leaves each site suspended (resume
             follows on payment).

Suspend, resume and status run in the batch's own shell: each queues one line (and a suspension its
snippet text), and the commit ``web-<backend>-snippets`` (connectors/web/commit.sh) does the work for the
whole batch in one pass: one ``grep`` of the vhost folders for hook lines, one ``awk`` that works out every
site's change, one ``rm`` and one ``mv`` (the new snippets are staged in ``<hook_dir>/.arrears-snippets``,
the account's own pages in ``<page_root>/.arrears-pages``, and renamed in). Its results go out once the
change is on disk; a site without its hook fails alone.

Before a snippet changes, its previous state (content or absence) and the new one are saved under
``<state_dir>/web-<backend>/pending``. The handler ``web-<backend>`` runs once per batch:
it runs the config test; when it passes, one graceful reload. When it fails, every change of the batch
is rolled back to its previous state, then each is re-applied alone with a config test: those that pass
stay, those that fail are rolled back and their operation is reported failed with ``config test failed:
<the cause>``, the lines of the test's output that name it (nginx's ``[emerg]``/``[error]`` lines,
apache's syntax error; else its last line). One reload follows if anything stayed. A reload that fails rolls
back every change of the batch. Facts of the handler: ``config_test`` (ok|failed), ``reloads``, ``kept``.

Commands used on the host (for a sudoers list): the configured config test and reload commands, ``grep``,
``cp``, ``mv``, ``rm``, ``rmdir``, ``mkdir``, ``chmod``, ``ln``, ``awk``, ``cut``, ``find``, ``xargs``, ``printf``,
and those of :mod:`connectors.archive` for delete and restore.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.archive import archive_ops, check_archive_dir, probe_lines, restore_ops
from connectors.base import Action, Handler, Operation
from connectors.observed import Observed, combine
from connectors.probe import require_commands
from connectors.resources import web_sites
from connectors.validate import UnsafeValue, account_id, path, path_under, q, url

__all__ = ["CAUSE_SH", "WebConnector", "WebSettings", "config_line", "ere"]

SERVICE = "web"
_PAGE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
_VHOST_NAME = re.compile(r"^[A-Za-z0-9_.@+-]*\{site\}[A-Za-z0-9_.@+-]*$")


def config_line(value: object) -> str:
    """One operator-written configuration line: printable, no NUL and no line break."""
    if not isinstance(value, str):
        raise UnsafeValue("config line", value, "not a string")
    if any(ch in value for ch in "\x00\r\n") or not value.isprintable():
        raise UnsafeValue("config line", value, "contains NUL, a line break or a control character")
    return value


def _command(value: object) -> list[str]:
    if isinstance(value, str):
        value = shlex.split(value)
    if not isinstance(value, list) or not value:
        raise UnsafeValue("command", value, "must be a non-empty command line")
    return [config_line(arg) for arg in value]


def ere(value: str) -> str:
    """Escape a validated path or domain for a POSIX extended regular expression."""
    return re.sub(r"([.+\[\]()*?^$|{}\\])", r"\\\1", value)


class WebSettings(BaseModel):
    """Settings shared by the web backends (``services.web`` of a host in the inventory)."""

    model_config = ConfigDict(extra="forbid")

    hook_dir: str
    vhost_dir: str
    enabled_dir: str | None = None
    vhost_name: str = "{site}.conf"
    state_dir: str = "/var/lib/arrears"
    archive_dir: str = "/var/backups/arrears"
    mode: Literal["redirect", "page"] = "redirect"
    suspended_url: str | None = None
    page_root: str | None = None
    page_file: str = "suspended.html"
    retry_after: int = Field(default=3600, ge=0, le=31_536_000)
    config_test: list[str]
    reload: list[str]
    extra_lines: list[str] = Field(default_factory=list)

    @field_validator("hook_dir", "vhost_dir", "state_dir", "archive_dir")
    @classmethod
    def _path(cls, value: str) -> str:
        return path(value)

    @field_validator("enabled_dir", "page_root")
    @classmethod
    def _opt_path(cls, value: str | None) -> str | None:
        return None if value is None else path(value)

    @field_validator("suspended_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else url(value)

    @field_validator("page_file")
    @classmethod
    def _page_file(cls, value: str) -> str:
        if not _PAGE_FILE.match(value) or ".." in value:
            raise UnsafeValue("page file", value, f"does not match {_PAGE_FILE.pattern}")
        return value

    @field_validator("vhost_name")
    @classmethod
    def _vhost_name(cls, value: str) -> str:
        if not _VHOST_NAME.match(value) or ".." in value:
            raise UnsafeValue("vhost name", value, "must contain {site} and only [A-Za-z0-9_.@+-]")
        return value

    @field_validator("config_test", "reload", mode="before")
    @classmethod
    def _cmd(cls, value: object) -> list[str]:
        return _command(value)

    @field_validator("extra_lines")
    @classmethod
    def _lines(cls, value: list[str]) -> list[str]:
        return [config_line(v) for v in value]

    @model_validator(mode="after")
    def _mode(self) -> WebSettings:
        if self.mode == "redirect" and self.suspended_url is None:
            raise ValueError("mode 'redirect' needs suspended_url (the page every URL of a suspended site goes to)")
        if self.mode == "page" and self.page_root is None:
            raise ValueError("mode 'page' needs page_root (the folder holding page_file, served with 503)")
        if self.hook_dir == self.vhost_dir or self.hook_dir.startswith(self.vhost_dir + "/"):
            raise ValueError("hook_dir must not lie inside vhost_dir (snippets are not vhosts)")
        check_archive_dir(self.archive_dir, [self.vhost_dir])
        return self


CAUSE_SH = Path(__file__).with_name("cause.sh")  # _w_first: what a failed config test or reload said
_ROLLBACK = CAUSE_SH.read_text() + Path(__file__).with_name("rollback.sh").read_text()
_COMMIT = Path(__file__).with_name("commit.sh").read_text()  # the one pass over a batch's snippets
_UNQUEUED = "|| { echo 'cannot queue the change' >&2; return 1; }"


class WebConnector:
    """Suspends, resumes, deletes and restores an account's sites through the include hook."""

    service: ClassVar[str] = SERVICE
    backend: ClassVar[str] = ""
    Settings: ClassVar[type[WebSettings]] = WebSettings

    def __init__(self, settings: WebSettings, host: str) -> None:
        self.settings = settings
        self.host = host

    # -- what a backend provides ------------------------------------------------------------------

    def hook_line(self, site: str) -> str:
        """The line the operator puts in the site's vhost."""
        raise NotImplementedError

    def hook_regex(self, site: str) -> str:
        """An extended regular expression (for ``grep -iE``, anchored at the line's start) matching an
        active hook line whose site part matches the expression ``site``."""
        raise NotImplementedError

    def hook_pattern(self, site: str) -> str:
        """An extended regular expression matching an active hook line for ``site``."""
        return self.hook_regex(ere(site))

    def redirect_snippet(self, site: str, target: str) -> list[str]:
        raise NotImplementedError

    def page_snippet(self, site: str, page: str) -> list[str]:
        """Lines serving ``<page_root>/<page>`` with 503 and Retry-After for every URL of ``site``."""
        raise NotImplementedError

    # -- snippets ---------------------------------------------------------------------------------

    @property
    def handler_name(self) -> str:
        return f"{SERVICE}-{self.backend}"

    @property
    def commit_name(self) -> str:
        return f"{SERVICE}-{self.backend}-snippets"

    @property
    def pending_dir(self) -> str:
        return f"{self.settings.state_dir}/{SERVICE}-{self.backend}/pending"

    def snippet_path(self, site: str) -> str:
        return f"{self.settings.hook_dir}/{site}.conf"

    def vhost_path(self, site: str) -> str:
        return path_under(f"{self.settings.vhost_dir}/{self.settings.vhost_name.format(site=site)}",
                          [self.settings.vhost_dir])

    @staticmethod
    def own_page(site: str) -> str:
        """The file name of a site's own suspended page, rendered by the agent for that account."""
        return f"arrears-{site}.html"

    def snippet(self, account: str, site: str, target: str | None, page: str | None = None) -> str:
        """The whole snippet text for one suspended site (``page``: the page file, default ``page_file``)."""
        s = self.settings
        head = [f"# arrears: {site} of account {account} is suspended. This file is managed by arrears:",
                "# it is removed on resume; the vhost itself is never changed."]
        body = (self.page_snippet(site, page or s.page_file) if s.mode == "page"
                else self.redirect_snippet(site, target or ""))
        return "\n".join([*head, *s.extra_lines, *body]) + "\n"

    # -- operations -------------------------------------------------------------------------------

    def _sites(self, resource: dict[str, Any]) -> list[str]:
        return web_sites(resource)

    def _target(self, resource: dict[str, Any]) -> str | None:
        override = resource.get("suspended_url")
        return url(override) if override else self.settings.suspended_url

    def _op(self, account: str, action: str, site: str, script: str, *, notify: bool = True) -> Operation:
        return Operation(
            id=f"{account}:{SERVICE}:{self.backend}:{action}:{site}",
            account=account,
            kind=f"{SERVICE}:{action}",
            script=script,
            handlers=(self.handler_name,) if notify else (),
        )

    def operations(self, action: Action, account: str, resource: dict[str, Any]) -> list[Operation]:
        acct = account_id(account)
        sites = self._sites(resource)
        if action in ("suspend", "resume", "status"):
            make = {"suspend": self._suspend, "resume": self._resume, "status": self._status}[action]
            return [make(acct, site, resource) for site in sites]
        if action == "delete":
            return self._delete(acct, sites)
        if action == "restore":
            return self._restore(acct, sites, resource)
        raise ValueError(f"web connector: unknown action {action!r}")

    def _vars(self, site: str) -> str:
        return (
            f"_w_site={q(site)}\n"
            f"_w_snip={q(self.snippet_path(site))}\n"
            f"_w_pend={q(self.pending_dir)}\n"
            f"_w_hooks={q(self.settings.hook_dir)}\n"
        )

    def _hook_check(self, site: str) -> str:
        """A shell test: does a vhost carry the site's hook? The site's own vhost file is read first;
        only when the hook is not there are the whole vhost folders searched."""
        s = self.settings
        dirs = " ".join(q(d) for d in (s.vhost_dir, s.enabled_dir) if d)
        pattern = q(self.hook_pattern(site))
        return f"{{ grep -qsiE -- {pattern} {q(self.vhost_path(site))} || grep -RqsiE -- {pattern} {dirs}; }}"

    def _queue(self, action: str, site: str, *, pattern: str = "-", path: str = "-", message: str = "-",
               text: str = "") -> str:
        """Script line: queue one site's change (or report) for the batch's one pass, connectors/web/commit.sh;
        the snippet ``text`` last, its lines joined by tabs (no line of it holds one: see :func:`config_line`)."""
        if "\t" in text:
            raise UnsafeValue("snippet", text, "contains a tab")
        queue = "wr" if action == "status" else "wq"
        return (f"printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' {action} \"$_ar_id\" {q(site)} {q(pattern)} {q(path)} "
                f"{q(message)} {q(text.replace(chr(10), chr(9)))} >> \"$_ar_tmp/{queue}.{self.backend}\" {_UNQUEUED}\n")

    def _queued(self, account: str, action: str, site: str, script: str, *, notify: bool = True) -> Operation:
        op = self._op(account, action, site, script, notify=notify)
        return Operation(op.id, op.account, op.kind, op.script, op.handlers, self.commit_name, inline=True)

    def _suspend(self, account: str, site: str, resource: dict[str, Any], action: str = "suspend") -> Operation:
        """Queues the snippet (and the account's own page) for the commit, which writes it unless an
        identical one is there, once a vhost carries the site's hook."""
        target = self._target(resource)
        missing = (f"site {site} has no arrears hook in {self.settings.vhost_dir}: add the line "
                   f"'{self.hook_line(site)}' to its vhost (first in the server block); nothing was changed")
        html = resource.get("page_html")
        own = self.settings.mode == "page" and isinstance(html, str) and bool(html)
        page = "-"
        script = ""
        if own:
            assert self.settings.page_root is not None and isinstance(html, str)
            if "\x00" in html:
                raise UnsafeValue("page html", html[:80], "contains NUL")
            page = f"{self.settings.page_root}/{self.own_page(site)}"
            script = (f"printf '%s' {q(html)} > \"$_ar_tmp/wp.$_ar_id\" && "
                      f"printf '' > \"$_ar_tmp/wpage.{self.backend}\" {_UNQUEUED}\n")
        text = self.snippet(account, site, target, self.own_page(site) if own else None)
        script += self._queue("suspend", site, pattern=self.hook_pattern(site), path=page, message=missing, text=text)
        return self._queued(account, action, site, script)

    def _resume(self, account: str, site: str, resource: dict[str, Any]) -> Operation:
        """Queues the removal of the snippet (and of the account's own page) for the commit."""
        page = "-" if self.settings.page_root is None else f"{self.settings.page_root}/{self.own_page(site)}"
        return self._queued(account, "resume", site, self._queue("resume", site, path=page))

    def _status(self, account: str, site: str, resource: dict[str, Any]) -> Operation:
        """Queues the site for the commit's report: its hook, its snippet, its vhost file."""
        script = self._queue("status", site, pattern=self.hook_pattern(site), path=self.vhost_path(site))
        return self._queued(account, "status", site, script, notify=False)

    def observe(self, facts: Mapping[str, str]) -> Observed:
        """Each site from its ``status`` facts: suspended while its snippet exists *and* a vhost carries
        the hook that includes it; deleted once its vhost file and every hook are gone; active otherwise."""
        sites = {k[: -len(".suspended")]: v for k, v in facts.items() if k.endswith(".suspended")}
        return combine({site: self._observe_site(site, snippet, facts) for site, snippet in sites.items()},
                       what="site")

    @staticmethod
    def _observe_site(site: str, snippet: str, facts: Mapping[str, str]) -> Observed:
        hook, vhost = facts.get(f"{site}.hook"), facts.get(f"{site}.vhost")
        if snippet not in ("yes", "no") or hook not in ("present", "missing") or vhost not in ("present", "absent"):
            return Observed("unknown", f"incomplete facts: snippet {snippet}, hook {hook}, vhost {vhost}")
        if hook == "present":
            if snippet == "yes":
                return Observed("suspended", "snippet in place")
            return Observed("active", "no snippet" + ("" if vhost == "present" else "; served by a vhost elsewhere"))
        if vhost == "absent":
            return Observed("deleted", "vhost gone" + ("; a stale snippet is left" if snippet == "yes" else ""))
        return Observed("active", "the vhost has no hook: its snippet is not included" if snippet == "yes"
                        else "the vhost has no hook")

    def check_script(self) -> str:
        """The configured config test and reload commands exist, what deletions need
        (:func:`connectors.archive.probe_lines`), and ``hook_dir`` is not a file."""
        s = self.settings
        lines = require_commands([("config_test", s.config_test), ("reload", s.reload)]) + probe_lines(s.archive_dir)
        lines.append(f'[ ! -e {q(s.hook_dir)} ] || [ -d {q(s.hook_dir)} ] || '
                     f'fail {q(f"hook_dir {s.hook_dir} is not a folder")}')
        lines.append(self.version_script())
        return "\n".join(lines)

    def version_script(self) -> str:
        """Script lines reporting the server's ``version`` fact."""
        return ":"

    def _kind(self) -> str:
        return f"{self.backend}_vhost"

    def _delete(self, account: str, sites: list[str]) -> list[Operation]:
        s = self.settings
        vhosts = [self.vhost_path(site) for site in sites]
        ops = [Operation(
            id=f"{account}:{SERVICE}:{self.backend}:delete:_vhosts",
            account=account,
            kind=f"{SERVICE}:delete",
            script=archive_ops(account, vhosts, [s.vhost_dir], s.archive_dir, self._kind(), remove=True),
            handlers=(self.handler_name,),
        )]
        for site, vhost in zip(sites, vhosts, strict=True):
            name = s.vhost_name.format(site=site)
            unlink = ""
            if s.enabled_dir:
                link = f"{s.enabled_dir}/{name}"
                unlink = f"""if [ -L {q(link)} ] && [ ! -e {q(link)} ]; then rm -f -- {q(link)}; changed; fi\n"""
            still = (f"site {site}: a vhost carrying its hook is still present (expected it in {vhost}, "
                     "archived and removed by this delete); the site stays suspended")
            script = self._vars(site) + f"""
if [ -e {q(vhost)} ]; then fail {q(f"site {site}: {vhost} was not archived and removed; the site stays suspended")}; fi
{unlink}if {self._hook_check(site)}; then fail {q(still)}; fi
rm -f -- "$_w_pend/$_w_site.conf" "$_w_pend/$_w_site.new"
if [ -e "$_w_snip" ]; then rm -f -- "$_w_snip"; changed; fi
fact "$_w_site.deleted" yes
"""
            ops.append(self._op(account, "delete", site, script))
        return ops

    def _restore(self, account: str, sites: list[str], resource: dict[str, Any]) -> list[Operation]:
        s = self.settings
        for key in ("archive", "sha256"):
            if not resource.get(key):
                raise UnsafeValue("web restore", resource, f"needs {key!r} (a fact of the delete that archived it)")
        paths_fact = resource.get("paths")
        if isinstance(paths_fact, str) and paths_fact.strip():
            vhosts = [path_under(p, [s.vhost_dir]) for p in paths_fact.split()]
        else:
            vhosts = [self.vhost_path(site) for site in sites]
        ops = [Operation(
            id=f"{account}:{SERVICE}:{self.backend}:restore:_vhosts",
            account=account,
            kind=f"{SERVICE}:restore",
            script=restore_ops(account, vhosts, [s.vhost_dir], s.archive_dir,
                               str(resource["archive"]), str(resource["sha256"])),
            handlers=(self.handler_name,),
        )]
        for site in sites:
            op = self._suspend(account, site, resource, action="restore")
            vhost = self.vhost_path(site)
            link = ""
            if s.enabled_dir and vhost in vhosts:
                target = f"{s.enabled_dir}/{s.vhost_name.format(site=site)}"
                link = (f"if [ -e {q(vhost)} ] && [ ! -e {q(target)} ] && [ ! -L {q(target)} ]; then "
                        f"ln -s -- {q(vhost)} {q(target)}; changed; fi\n")
            # the link needs ln and set -e: a subshell of its own (restores are few)
            ops.append(Operation(op.id, op.account, op.kind, link + op.script, op.handlers, op.commit, inline=not link))
        return ops

    # -- handler ----------------------------------------------------------------------------------

    def handlers(self) -> list[Handler]:
        """The commit (one pass over the batch's snippets) and the handler (config test, reload, rollback)."""
        s = self.settings
        dirs = " ".join(d for d in (s.vhost_dir, s.enabled_dir) if d)
        commit = (f"_w_b={self.backend}\n_w_hooks={q(s.hook_dir)}\n_w_pend={q(self.pending_dir)}\n"
                  f"_w_dirs={q(dirs)}\n_w_any={q(self.hook_regex('[^/]+'))}\n"
                  + ("" if s.page_root is None else f"_w_proot={q(s.page_root)}\n"))
        data = (f"_w_pend={q(self.pending_dir)}\n_w_hooks={q(s.hook_dir)}\n"
                f"_w_prefix={q(f'*:{SERVICE}:{self.backend}:*')}\n"
                f"_w_test_cmd={q(' '.join(q(a) for a in s.config_test))}\n"
                f"_w_reload_cmd={q(' '.join(q(a) for a in s.reload))}\n")
        return [Handler(self.commit_name, commit + _COMMIT, commit=True), Handler(self.handler_name, data + _ROLLBACK)]

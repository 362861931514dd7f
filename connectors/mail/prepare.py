"""The one-time dovecot and postfix configuration of docs/mail.md, for ``arrears hosts prepare``.

Dovecot (``dovecot_config_dir``): nothing is done when ``doveconf -n passdb`` shows the deny passdb first
already (however it got there). Otherwise ``conf.d/auth-arrears.conf.ext`` holds the deny passdb, and
``conf.d/10-auth.conf`` includes it on the line above its first active ``!include auth-*.conf.ext``
(Debian's layout), so it comes before the real passdb. Without such a line the file is left alone and the
include to add is printed. Config test: ``doveconf -c <dir>/dovecot.conf -n``; then the configured reload.

Postfix (``postfix_config_dir``/main.cf): the restriction class (added to ``smtpd_restriction_classes``
and defined as ``permit_auth_destination, reject``) and the two ``check_*_access`` lookups put first in
``smtpd_recipient_restrictions`` (an existing value keeps its own lines after them; without one the
list of docs/mail.md is added). The maps are created empty (``0644``) and ``postmap`` builds each map
whose database is missing. A ``master.cf`` service overriding ``smtpd_recipient_restrictions`` without
the lookups is not edited: the override to use is printed. Config test: ``postfix -c <dir> check``; then
the configured reload.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from pydantic import BaseModel

from connectors.mail import command
from connectors.mail.dovecot_postfix import DovecotPostfixSettings
from connectors.prepare import SHARED, Folder, Manual, Plan, Remote, Write, base_folders
from connectors.validate import q

__all__ = ["PASSDB_FILE", "edit_auth_conf", "edit_main_cf", "passdb", "plan_dovecot_postfix"]

PASSDB_FILE = "auth-arrears.conf.ext"
_INCLUDE = f"!include {PASSDB_FILE}"
_AUTH_INCLUDE = re.compile(r"^\s*!include(_try)?\s+auth-[A-Za-z0-9_.-]+\.conf\.ext\s*$")
_OURS = re.compile(rf"^\s*!include(_try)?\s+{re.escape(PASSDB_FILE)}\s*$")
Files = dict[str, tuple[str, int] | None]  # path -> (text, mode) as Remote.read_many gives them
_DB_SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb"}


def passdb(deny_dir: str) -> str:
    return ("# arrears: mailboxes denied per service (%s = imap, pop3) and per listener port (%{lport})\n"
            "passdb {\n"
            "  driver = passwd-file\n"
            f"  args = {deny_dir}/deny.%s.%{{lport}}\n"
            "  deny = yes\n"
            "}\n")


def edit_auth_conf(text: str) -> str | None:
    """10-auth.conf with the arrears include above its first passdb include (unchanged when it has it);
    None when it has no active ``!include auth-*.conf.ext`` to go above."""
    lines = text.splitlines(keepends=True)
    if any(_OURS.match(line) for line in lines):
        return text
    for n, line in enumerate(lines):
        if _AUTH_INCLUDE.match(line):
            indent = line[: len(line) - len(line.lstrip())]
            lines.insert(n, f"{indent}{_INCLUDE}\n")
            return "".join(lines)
    return None


def _logical(lines: list[str]) -> dict[str, tuple[int, int, str]]:
    """main.cf's parameters: name -> (first line, line after the last, value); the last definition wins."""
    out: dict[str, tuple[int, int, str]] = {}
    n = 0
    while n < len(lines):
        match = re.match(r"^([A-Za-z0-9_]+)\s*=\s*(.*)$", lines[n].rstrip("\n"))
        if not match:
            n += 1
            continue
        end = n + 1
        value = [match.group(2)]
        while end < len(lines) and lines[end][:1] in (" ", "\t"):
            if not lines[end].lstrip().startswith("#"):
                value.append(lines[end].strip())
            end += 1
        out[match.group(1)] = (n, end, " ".join(v for v in value if v))
        n = end
    return out


def _items(value: str) -> list[str]:
    return [v for v in re.split(r"[\s,]+", value) if v]


def edit_main_cf(text: str, s: DovecotPostfixSettings) -> str:
    """main.cf with the restriction class and the two lookups (unchanged when it has them)."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    params = _logical(lines)
    bounce = f"check_recipient_access {s.map_type}:{s.bounce_map}"
    norelay = f"check_sasl_access {s.map_type}:{s.norelay_map}"
    added: list[str] = []
    cls = s.norelay_class
    if "smtpd_recipient_restrictions" in params:
        start, end, value = params["smtpd_recipient_restrictions"]
        have = " ".join(_items(value))
        missing = [c for c in (bounce, norelay) if " ".join(c.split()) not in have]
        if missing:
            first = re.match(r"^([A-Za-z0-9_]+\s*=)\s*(.*)$", lines[start].rstrip("\n"))
            assert first is not None
            rest = [f"    {first.group(2)}\n"] if first.group(2) else []
            lines[start:start + 1] = [f"{first.group(1)}\n", *(f"    {c},\n" for c in missing), *rest]
    else:
        added += ["smtpd_recipient_restrictions =\n", f"    {bounce},\n", f"    {norelay},\n",
                  "    permit_mynetworks,\n", "    permit_sasl_authenticated,\n", "    reject_unauth_destination\n"]
    params = _logical(lines)
    if "smtpd_restriction_classes" in params:
        start, end, value = params["smtpd_restriction_classes"]
        if cls not in _items(value):
            lines[start:end] = [f"smtpd_restriction_classes = {', '.join([*_items(value), cls])}\n"]
    else:
        added.insert(0, f"smtpd_restriction_classes = {cls}\n")
    if cls not in _logical(lines):
        added.insert(1 if added and added[0].startswith("smtpd_restriction_classes") else 0,
                     f"{cls} = permit_auth_destination, reject\n")
    if added:
        lines += ["\n", "# arrears: suspended mailboxes bounce (-b) and may not relay (-r); see docs/mail.md\n", *added]
    return "".join(lines)


def _master_overrides(text: str, s: DovecotPostfixSettings) -> list[tuple[str, str]]:
    """(service, the override to use) for each master.cf service that sets its own recipient restrictions."""
    out = []
    service = ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[:1] not in (" ", "\t"):
            service = line.split()[0]
            continue
        match = re.match(r"^\s+-o\s+smtpd_recipient_restrictions=(\S*)\s*$", line)
        if match and "check_sasl_access" not in match.group(1):
            value = match.group(1)
            if value.startswith("$"):  # a main.cf parameter of its own: the operator's to change
                out.append((service, f"{value[1:]} in main.cf: put the two check_*_access lookups first"))
                continue
            lookups = (f"check_recipient_access,{s.map_type}:{s.bounce_map},"  # no blanks in a master.cf -o
                       f"check_sasl_access,{s.map_type}:{s.norelay_map}")
            out.append((service, "  -o smtpd_recipient_restrictions=" + ",".join(filter(None, [lookups, value]))))
    return out


def plan_dovecot_postfix(service: str, backend: str, settings: BaseModel, connector: Any, remote: Remote) -> Plan:
    assert isinstance(settings, DovecotPostfixSettings)
    s = settings
    map_dirs = sorted({posixpath.dirname(s.bounce_map), posixpath.dirname(s.norelay_map)})
    plan = Plan(service, backend, folders=[Folder(s.deny_dir, SHARED), *(Folder(d, SHARED) for d in map_dirs),
                                           *base_folders(s)])
    conf_d = f"{s.dovecot_config_dir}/conf.d"
    files = remote.read_many([f"{conf_d}/{PASSDB_FILE}", f"{conf_d}/10-auth.conf", f"{s.postfix_config_dir}/main.cf",
                              f"{s.postfix_config_dir}/master.cf", s.bounce_map, s.norelay_map])
    _plan_dovecot(plan, s, remote, files)
    _plan_postfix(plan, s, files)
    dovecot_conf = f"{s.dovecot_config_dir}/dovecot.conf"
    plan.test = (f"doveconf -c {q(dovecot_conf)} -n >/dev/null && "
                 f"postfix -c {q(s.postfix_config_dir)} check")
    plan.on_change = [command(s.dovecot_reload_command, "dovecot_reload_command"),
                      command(s.postfix_reload_command, "postfix_reload_command")]
    return plan


def _passdbs(s: DovecotPostfixSettings, remote: Remote) -> list[str] | None:
    """The passdb sections dovecot reads, in order (``doveconf -n passdb``); None when doveconf cannot say."""
    rc, out, _ = remote.run(f"doveconf -c {q(s.dovecot_config_dir + '/dovecot.conf')} -n passdb 2>/dev/null\n")
    if rc != 0:
        return None
    return re.split(r"^passdb\b[^{]*\{", out, flags=re.MULTILINE)[1:]


def _plan_dovecot(plan: Plan, s: DovecotPostfixSettings, remote: Remote, files: Files) -> None:
    args = f"args = {s.deny_dir}/deny.%s.%{{lport}}"
    effective = _passdbs(s, remote)
    if effective and any(args in block for block in effective):
        if args in effective[0] and "deny = yes" in effective[0]:
            return  # configured already, by hand or by an earlier run
        plan.manual.append(Manual(f"{s.dovecot_config_dir}/dovecot.conf", args,
                                  "in a passdb with deny = yes that comes before every other passdb"))
        return
    conf_d = f"{s.dovecot_config_dir}/conf.d"
    ext = f"{conf_d}/{PASSDB_FILE}"
    want = passdb(s.deny_dir)
    found = files[ext]
    if found is None or found[0] != want:
        plan.writes.append(Write(ext, None if found is None else found[0], want, 0o644))
    auth = files[f"{conf_d}/10-auth.conf"]
    edited = None if auth is None else edit_auth_conf(auth[0])
    if auth is None or edited is None:
        where = f"{conf_d}/10-auth.conf" if auth is not None else f"{s.dovecot_config_dir}/dovecot.conf"
        plan.manual.append(Manual(where, f"!include {ext}", "above the first passdb (the deny passdb must come first)"))
    elif edited != auth[0]:
        plan.writes.append(Write(f"{conf_d}/10-auth.conf", auth[0], edited, auth[1]))


def _plan_postfix(plan: Plan, s: DovecotPostfixSettings, files: Files) -> None:
    main_cf = f"{s.postfix_config_dir}/main.cf"
    main = files[main_cf]
    if main is None:
        plan.manual.append(Manual(main_cf, f"smtpd_restriction_classes = {s.norelay_class}",
                                  "and the rest of docs/mail.md: there is no main.cf to edit"))
    else:
        after = edit_main_cf(main[0], s)
        if after != main[0]:
            plan.writes.append(Write(main_cf, main[0], after, main[1]))
    master = files[f"{s.postfix_config_dir}/master.cf"]
    for svc, line in _master_overrides(master[0] if master else "", s):
        plan.manual.append(Manual(f"{s.postfix_config_dir}/master.cf", line, f"in the service {svc}"))
    for m in (s.bounce_map, s.norelay_map):
        if files[m] is None:
            plan.writes.append(Write(m, None, "", 0o644))
        plan.ensure.append((f"[ -e {q(m + _DB_SUFFIX[s.map_type])} ]",
                            f"{command(s.postmap_command, 'postmap_command')} {q(f'{s.map_type}:{m}')}"))

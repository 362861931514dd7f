"""The dovecot+postfix mail backend: the six flags as deny lists and postfix access maps.

==== ==================================================================================
flag where it lives
==== ==================================================================================
d    ``password_lock_file``: one mailbox per line, honoured by the panel/webmail password plugin
p    ``<deny_dir>/deny.pop3.<port>`` for every POP3 listener port
w    ``<deny_dir>/deny.imap.<port>`` for the webmail's own IMAP listener port(s)
i    ``<deny_dir>/deny.imap.<port>`` for every other IMAP listener port
b    ``bounce_map``: ``<mailbox> 550 5.2.1 Mailbox disabled`` (``check_recipient_access``)
r    ``norelay_map``: ``<mailbox> arrears_norelay`` (``check_sasl_access`` to a restriction class
     that permits local destinations and rejects the rest)
==== ==================================================================================

Dovecot reads the deny files through a passdb placed before the real one
(``driver = passwd-file``, ``args = <deny_dir>/deny.%s.%{lport}``, ``deny = yes``); a missing file
denies nobody. Changed deny files are followed, once per batch, by ``doveadm reload`` (passwd-file
notices changes by mtime and size, so a same-second rewrite could be missed) and ``doveadm kick`` of
every mailbox that lost a login (open IMAP/POP3 sessions are closed). Changed postfix maps are
followed, once per batch, by ``postmap`` of each map and one ``postfix reload``. The operator's
one-time configuration is in docs/mail.md.

Commands used on the host (for a sudoers list): ``awk``, ``mkdir``, ``mv``, ``rm``, ``chmod``, ``sort``,
the configured ``postmap``, ``postfix reload``, ``doveadm reload``,
``doveadm kick``; ``delete``/``restore`` add those of :mod:`connectors.archive`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.archive import check_archive_dir, check_roots, probe_lines
from connectors.base import Action, Handler, Operation
from connectors.mail import (
    FlagShell,
    command,
    flag_script,
    maildir_operation,
    observe_mailboxes,
    op_id,
    status_maildir,
)
from connectors.mail.flags import FLAGS, difference
from connectors.observed import Observed
from connectors.probe import require_commands
from connectors.resources import mail_resource
from connectors.validate import account_id, path, path_under, q

__all__ = ["DovecotPostfixConnector", "DovecotPostfixSettings", "passwd_key"]

DOVECOT_HANDLER = "mail-dovecot"
POSTFIX_HANDLER = "mail-postfix"
_CLASS = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_REPLY = re.compile(r"^[45][0-9][0-9] [45]\.[0-9]{1,3}\.[0-9]{1,3}( [A-Za-z0-9 .,()-]{0,200})?$")
_MAP_SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb"}

# The flags of one mailbox for ``status``: ``$m`` is the mailbox, ``$_dp_k`` its passwd-file key,
# ``$_dp_1``... the list files; see connectors/mail/dovecot_status.sh. Suspend and resume queue a line
# each for the batch's one pass over the files, connectors/mail/dovecot_commit.sh.
_STATUS = (Path(__file__).with_name("dovecot_status.sh")).read_text()
_COMMIT = (Path(__file__).with_name("dovecot_commit.sh")).read_text()
COMMIT = "mail-dovecot-lists"


def passwd_key(box: str) -> str:
    """The mailbox as dovecot looks it up in a passwd-file: ``%u`` is expanded with ``\\``, ``"`` and ``'``
    escaped by a backslash (``o\\'neil@example.com``), so a deny line must be written that way to match."""
    return re.sub(r"""(["'\\])""", r"\\\1", box)


def _ports(value: list[int]) -> list[int]:
    for port in value:
        if isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError(f"port {port!r} is not between 1 and 65535")
    return sorted(set(value))


class DovecotPostfixSettings(BaseModel):
    """Per-host settings of the dovecot+postfix backend (``services.mail`` in the inventory)."""

    model_config = ConfigDict(extra="forbid")

    deny_dir: str = "/etc/dovecot/arrears"
    imap_ports: list[int] = Field(default_factory=lambda: [143, 993])
    pop3_ports: list[int] = Field(default_factory=lambda: [110, 995])
    webmail_ports: list[int] = Field(default_factory=list)
    password_lock_file: str = "/etc/dovecot/arrears/password-lock"
    bounce_map: str = "/etc/postfix/arrears/bounce"
    norelay_map: str = "/etc/postfix/arrears/norelay"
    map_type: Literal["hash", "btree", "lmdb", "cdb"] = "hash"
    norelay_class: str = "arrears_norelay"
    bounce_reply: str = "550 5.2.1 Mailbox disabled"
    postmap_command: str = "postmap"
    postfix_reload_command: str = "postfix reload"
    dovecot_reload_command: str = "doveadm reload"
    kick_command: str = "doveadm kick"
    state_dir: str = "/var/lib/arrears"
    maildir_template: str = "/var/mail/vhosts/{domain}/{local}"
    mail_roots: list[str] = Field(default_factory=lambda: ["/var/mail/vhosts"], min_length=1)
    archive_dir: str = "/var/backups/arrears"
    dovecot_config_dir: str = "/etc/dovecot"  # where ``arrears hosts prepare`` adds the deny passdb
    postfix_config_dir: str = "/etc/postfix"  # whose main.cf ``arrears hosts prepare`` adds the restrictions to

    @field_validator("deny_dir", "password_lock_file", "bounce_map", "norelay_map", "state_dir", "archive_dir",
                     "dovecot_config_dir", "postfix_config_dir")
    @classmethod
    def _path(cls, value: str) -> str:
        return path(value)

    @field_validator("imap_ports", "pop3_ports", "webmail_ports")
    @classmethod
    def _port_list(cls, value: list[int]) -> list[int]:
        return _ports(value)

    @field_validator("norelay_class")
    @classmethod
    def _class(cls, value: str) -> str:
        if not _CLASS.match(value):
            raise ValueError(f"restriction class {value!r} does not match {_CLASS.pattern}")
        return value

    @field_validator("bounce_reply")
    @classmethod
    def _reply(cls, value: str) -> str:
        if not _REPLY.match(value):
            raise ValueError(f"bounce reply {value!r} does not match {_REPLY.pattern}")
        return value

    @field_validator("postmap_command", "postfix_reload_command", "dovecot_reload_command", "kick_command")
    @classmethod
    def _command(cls, value: str) -> str:
        command(value, "command")
        return value

    @field_validator("mail_roots")
    @classmethod
    def _roots(cls, value: list[str]) -> list[str]:
        return check_roots(value)

    @model_validator(mode="after")
    def _consistent(self) -> DovecotPostfixSettings:
        both = set(self.webmail_ports) & set(self.imap_ports)
        if both:
            raise ValueError(f"webmail_ports {sorted(both)} are also imap_ports: -w and -i need separate listeners")
        try:
            sample = self.maildir_template.format(domain="example.com", local="info")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"maildir_template may only use {{domain}} and {{local}}: {exc}") from None
        path_under(sample, self.mail_roots)
        check_archive_dir(self.archive_dir, self.mail_roots)
        return self


class DovecotPostfixConnector:
    """Sets and restores the six mail flags of mailboxes on one dovecot+postfix host."""

    service = "mail"
    Settings = DovecotPostfixSettings

    def __init__(self, settings: DovecotPostfixSettings, host: str) -> None:
        self.settings = settings
        self.host = host

    # -- where each flag lives --------------------------------------------------------------------

    def _targets(self, box: str) -> dict[str, list[tuple[str, str, str]]]:
        """flag -> [(file, line, kind)] where kind names what must be reloaded after a change."""
        s = self.settings
        deny = s.deny_dir
        key = passwd_key(box)
        return {
            "d": [(s.password_lock_file, box, "none")],
            "p": [(f"{deny}/deny.pop3.{port}", key, "dovecot") for port in s.pop3_ports],
            "w": [(f"{deny}/deny.imap.{port}", key, "dovecot") for port in s.webmail_ports],
            "i": [(f"{deny}/deny.imap.{port}", key, "dovecot") for port in s.imap_ports],
            "b": [(s.bounce_map, f"{box} {s.bounce_reply}", "postfix")],
            "r": [(s.norelay_map, f"{box} {s.norelay_class}", "postfix")],
        }

    def supported(self) -> str:
        """The flags this host can represent (``w`` needs a webmail listener port)."""
        targets = self._targets("x@example.com")
        return "".join(c for c in FLAGS if targets[c])

    def _shell(self, box: str) -> FlagShell:
        """The status shell of one mailbox: a flag is set when every file of it lists the mailbox."""
        targets = self._targets(box)
        files = list(dict.fromkeys(f for flag in FLAGS for f, _, _ in targets[flag]))
        var = {f: f'"$_dp_{n}"' for n, f in enumerate(files, 1)}
        prelude = (_STATUS + f"_dp_k={q(passwd_key(box))}\n"
                   + "".join(f"_dp_{n}={q(f)}\n" for n, f in enumerate(files, 1)))
        read = [f'  [ -n "$_dp_scanned" ] || _dp_scan {" ".join(var.values())}']
        for flag in FLAGS:
            entries = targets[flag]
            if entries:
                test = " && ".join(f"_dp_has {var[f]}" for f, _, _ in entries)
                read.append(f"  if {test}; then cur=${{cur}}{flag}; fi")
        return FlagShell(prelude, "\n".join(read), "", "")

    def _commit(self) -> Handler:
        """The one pass over the list files of a batch's suspensions and resumptions (data only here)."""
        s = self.settings
        rows = []
        for flag, entries in self._targets("x@example.com").items():
            for file, line, kind in entries:
                form = "key" if file.startswith(s.deny_dir + "/deny.") else "box"
                rows.append(f"{flag}\t{file}\t{kind}\t{form}\t{line.removeprefix('x@example.com')}")
        files = " ".join(dict.fromkeys(f for flag in FLAGS for f, _, _ in self._targets("x@example.com")[flag]))
        data = (f"_dp_st={q(s.state_dir + '/mail')}\n_dp_targets={q(chr(10).join(rows))}\n"
                f"_dp_files={q(files)}\n")
        return Handler(COMMIT, data + _COMMIT, commit=True)

    def _maildir(self, box: str) -> str:
        local, _, dom = box.partition("@")
        return path_under(self.settings.maildir_template.format(domain=dom, local=local), self.settings.mail_roots)

    # -- the connector protocol -------------------------------------------------------------------

    def operations(self, action: Action, account: str, resource: dict[str, Any]) -> list[Operation]:
        acct = account_id(account)
        res = mail_resource(resource)
        s = self.settings
        ops = []
        if action in ("suspend", "resume", "status", "delete"):
            supported = self.supported()
            requested = "".join(c for c in res.flags if c in supported)
            unsupported = difference(res.flags, supported)
            handlers = (DOVECOT_HANDLER, POSTFIX_HANDLER) if action != "status" else ()
            flag_action = "suspend" if action == "delete" else action  # a deleted mailbox stays suspended
            for box in res.mailboxes:
                oid = op_id(acct, action, box)
                if action == "status":
                    script = flag_script(action, box, s.state_dir, requested, self._shell(box),
                                         status_maildir(self._maildir, box))
                    ops.append(Operation(oid, acct, f"mail:{action}", script))
                    continue
                script = (f"printf '%s\\t%s\\t%s\\t%s\\t%s\\n' {flag_action} \"$_ar_id\" {q(box)} "
                          f"{q(passwd_key(box))} {q(requested or '-')} >> \"$_ar_tmp/dp.req\" || "
                          "{ echo 'cannot queue the change' >&2; return 1; }")
                if flag_action == "suspend" and unsupported:
                    script += f'\nfact "unsupported:"{q(box)} {q(unsupported)}'
                ops.append(Operation(oid, acct, f"mail:{action}", script, handlers, COMMIT, inline=True))
            if action != "delete":
                return ops
        if not res.mailboxes:
            return []
        dirs = [self._maildir(box) for box in res.mailboxes]
        return [*ops, maildir_operation(action, acct, res.mailboxes, dirs, s.mail_roots, s.archive_dir, s.state_dir,
                                        resource)]

    def observe(self, facts: Mapping[str, str]) -> Observed:
        return observe_mailboxes(facts)

    def check_script(self) -> str:
        """The configured dovecot and postfix commands and what deletions need exist; the version of both."""
        s = self.settings
        lines = require_commands([("postmap_command", s.postmap_command),
                                  ("postfix_reload_command", s.postfix_reload_command),
                                  ("dovecot_reload_command", s.dovecot_reload_command),
                                  ("kick_command", s.kick_command)]) + probe_lines(s.archive_dir)
        lines.append('fact version "dovecot $(dovecot --version 2>/dev/null | cut -d" " -f1), '
                     'postfix $(postconf -h mail_version 2>/dev/null)"')
        return "\n".join(lines)

    def handlers(self) -> list[Handler]:
        s = self.settings
        st = q(s.state_dir + "/mail")
        words = shlex.split(s.kick_command)
        who = "on="
        if words[-1] == "kick":  # doveadm kicks one user mask per call, and lists every login at once
            who = (f"on=; if {command(shlex.join([*words[:-1], 'who', '-1']), 'kick_command')} "
                   """> "$_ar_tmp/who" 2>/dev/null; then on=" $(awk '{ printf "%s ", $1 }' "$_ar_tmp/who")-"; fi""")
        dovecot = f"""
set -f
st={st}
if [ -f "$st/dovecot.reload" ]; then
  {command(s.dovecot_reload_command, "dovecot_reload_command")} >&2 || fail "dovecot reload failed"
  rm -f "$st/dovecot.reload"
  fact reloaded yes
else
  fact reloaded no
fi
kicked=
if [ -f "$st/dovecot.kick" ]; then
  # who is logged in, asked once: only those are kicked (one kick each); without the answer, every one
  {who}
  for k in $(sort -u "$st/dovecot.kick"); do
    # names come from our own operations (connectors.validate.mailbox); never pass one as an option
    case $k in ''|-*|*/*) continue ;; esac
    kicked="$kicked $k"
    if [ -n "$on" ]; then case $on in *" $k "*) ;; *) continue ;; esac; fi
    rc=0
    {command(s.kick_command, "kick_command")} "$k" >/dev/null 2>&1 || rc=$?
    # 68: nobody of that name was logged in
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 68 ]; then fail "kicking $k failed with exit $rc"; fi
  done
  rm -f "$st/dovecot.kick"
fi
fact kicked "${{kicked# }}"
"""
        suffix = _MAP_SUFFIX[s.map_type]
        rebuild = "\n".join(
            f"""if [ -f {q(m)} ] && {{ [ -n "$need" ] || [ ! -f {q(m + suffix)} ] || [ {q(m)} -nt {q(m + suffix)} ]; }}
then
  {command(s.postmap_command, "postmap_command")} {q(f"{s.map_type}:{m}")} >&2 || fail postmap failed for {q(m)}
  rebuilt=1
fi"""
            for m in (s.bounce_map, s.norelay_map)
        )
        postfix = f"""
st={st}
need=
if [ -f "$st/postfix.rebuild" ]; then need=1; fi
rebuilt=
{rebuild}
if [ -n "$rebuilt" ]; then
  {command(s.postfix_reload_command, "postfix_reload_command")} >&2 || fail "postfix reload failed"
  rm -f "$st/postfix.rebuild"
  fact reloaded yes
else
  fact reloaded no
fi
"""
        return [self._commit(), Handler(DOVECOT_HANDLER, dovecot), Handler(POSTFIX_HANDLER, postfix)]

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
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.archive import archive_ops, check_archive_dir, check_roots, probe_lines, restore_ops
from connectors.base import Action, Handler, Operation
from connectors.mail import (
    FlagShell,
    command,
    flag_script,
    mark_deleted,
    observe_mailboxes,
    op_id,
    status_maildir,
)
from connectors.mail.flags import FLAGS, difference
from connectors.observed import Observed
from connectors.probe import require_commands
from connectors.resources import mail_resource
from connectors.validate import UnsafeValue, account_id, path, path_under, q

__all__ = ["DovecotPostfixConnector", "DovecotPostfixSettings", "passwd_key"]

DOVECOT_HANDLER = "mail-dovecot"
POSTFIX_HANDLER = "mail-postfix"
_CLASS = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_REPLY = re.compile(r"^[45][0-9][0-9] [45]\.[0-9]{1,3}\.[0-9]{1,3}( [A-Za-z0-9 .,()-]{0,200})?$")
_MAP_SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb"}

# Helpers of one operation; ``$m`` is the mailbox, ``$st`` the state dir, ``$_dp_1``... the list files.
# A line "belongs" to the mailbox when its first field (split on blanks or ':') is the mailbox, or
# ``$_dp_k``, its passwd-file key (see :func:`passwd_key`; awk reads it from the environment, as ``-v``
# would interpret its backslashes). Few
# processes per operation: ``_dp_scan FILE...`` reads every list file with one awk and keeps the ones
# that list the mailbox in ``$_dp_found`` (" file file "), which the flag checks read and every change
# keeps up to date. ``_dp_add``/``_dp_del`` queue a file; ``_dp_commit`` writes every queued file's
# new content with one awk (``<file>.arrears-tmp``; a missing file's is just its new line), gives them
# their mode with one chmod and renames each over its file. Paths hold no blanks or glob characters
# (connectors.validate.path), so lists of them are split on blanks. ``$_mf_nl`` (a newline) comes from
# connectors.mail's shell.
_PRELUDE = r"""
umask 022
_dp_found=
_dp_scanned=
_dp_scan() {
  _dp_on=
  for _dp_f; do if [ -f "$_dp_f" ]; then _dp_on="$_dp_on $_dp_f"; fi; done
  _dp_found=' '
  if [ -n "$_dp_on" ]; then
    _dp_found=" $(_dp_k=$_dp_k awk -F'[ \t:]' -v m="$m" 'BEGIN { k = ENVIRON["_dp_k"] }
      ($1 == m || $1 == k) && !(FILENAME in s) { s[FILENAME]; printf "%s ", FILENAME }' \
      $_dp_on) " || fail "cannot read the lists of $m"
  fi
  _dp_scanned=1
}
_dp_has() { case $_dp_found in *" $1 "*) return 0 ;; esac; return 1; }
_dp_begin() { _dp_spec=; _dp_todo=; }
_dp_add() {
  if _dp_has "$1"; then return 0; fi
  _dp_found="$_dp_found$1 "
  [ -d "${1%/*}" ] || mkdir -p "${1%/*}"
  if [ -f "$1" ]; then
    _dp_spec="${_dp_spec}a $1 $2$_mf_nl"
  else
    printf '%s\n' "$2" > "$1.arrears-tmp" || fail "cannot write $1"
  fi
  case $3 in dovecot) _dp_todo="$_dp_todo kick:$1" ;; *) _dp_todo="$_dp_todo $3:$1" ;; esac
}
_dp_del() {
  if ! _dp_has "$1"; then return 0; fi
  _dp_found=${_dp_found%%" $1 "*}" "${_dp_found#*" $1 "}
  _dp_spec="${_dp_spec}d $1$_mf_nl"
  _dp_todo="$_dp_todo $2:$1"
}
_dp_commit() {
  [ -n "$_dp_todo" ] || return 0
  if [ -n "$_dp_spec" ]; then
    _dp_k=$_dp_k awk -v m="$m" 'BEGIN { k = ENVIRON["_dp_k"] }
NF >= 2 {
  f = $2; t = f ".arrears-tmp"; printf "" > t
  while ((r = (getline l < f)) > 0) {
    if ($1 == "a") print l > t
    else { split(l, x, /[ \t:]/); if (x[1] != m && x[1] != k) print l > t }
  }
  if (r < 0) { printf "cannot read %s\n", f > "/dev/stderr"; exit 2 }
  close(f)
  if ($1 == "a") print substr($0, length($1) + length(f) + 3) > t
  close(t)
}' <<_DP_SPEC_ || fail "cannot write the new lists of $m"
$_dp_spec
_DP_SPEC_
  fi
  _dp_tmp=
  for _dp_x in $_dp_todo; do _dp_tmp="$_dp_tmp ${_dp_x#*:}.arrears-tmp"; done
  chmod 0644 $_dp_tmp || fail "cannot set the mode of$_dp_tmp"
  for _dp_x in $_dp_todo; do
    _dp_f=${_dp_x#*:}
    # what the handler must do is written before the change it stands for: a batch that dies between
    # the two leaves a reload to do, never a change that is on disk but not loaded
    [ -d "$st" ] || mkdir -p "$st"
    case ${_dp_x%%:*} in
      dovecot) : > "$st/dovecot.reload" ;;
      kick) : > "$st/dovecot.reload"; printf '%s\n' "$m" >> "$st/dovecot.kick" ;;
      postfix) : > "$st/postfix.rebuild" ;;
    esac || fail "cannot record the reload for $_dp_f in $st"
    mv -f "$_dp_f.arrears-tmp" "$_dp_f" || fail "cannot write $_dp_f"
    changed
  done
}
"""


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

    @field_validator("deny_dir", "password_lock_file", "bounce_map", "norelay_map", "state_dir", "archive_dir")
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
        targets = self._targets(box)
        files = list(dict.fromkeys(f for flag in FLAGS for f, _, _ in targets[flag]))
        var = {f: f'"$_dp_{n}"' for n, f in enumerate(files, 1)}
        prelude = (_PRELUDE + f"_dp_k={q(passwd_key(box))}\n"
                   + "".join(f"_dp_{n}={q(f)}\n" for n, f in enumerate(files, 1)))
        read = [f'  [ -n "$_dp_scanned" ] || _dp_scan {" ".join(var.values())}']
        set_, clear = ["  _dp_begin"], ["  _dp_begin"]
        for flag in FLAGS:
            entries = targets[flag]
            if not entries:
                continue
            read.append(f"  if {' && '.join(f'_dp_has {var[f]}' for f, _, _ in entries)}; then cur=${{cur}}{flag}; fi")
            adds = "; ".join(f"_dp_add {var[f]} {q(line)} {kind}" for f, line, kind in entries)
            dels = "; ".join(f"_dp_del {var[f]} {kind}" for f, _, kind in entries)
            set_.append(f"  case $new in *{flag}*) {adds} ;; esac")
            clear.append(f"  case $drop in *{flag}*) {dels} ;; esac")
        set_.append("  _dp_commit")
        clear.append("  _dp_commit")
        return FlagShell(prelude, "\n".join(read), "\n".join(set_), "\n".join(clear))

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
                maildir = status_maildir(self._maildir, box) if action == "status" else None
                script = flag_script(flag_action, box, s.state_dir, requested, self._shell(box), maildir)
                if flag_action == "suspend" and unsupported:
                    script += f'\nfact "unsupported:$m" {q(unsupported)}\n'
                ops.append(Operation(op_id(acct, action, box), acct, f"mail:{action}", script, handlers))
            if action != "delete":
                return ops
        if not res.mailboxes:
            return []
        dirs = [self._maildir(box) for box in res.mailboxes]
        if action == "delete":
            script = archive_ops(acct, dirs, s.mail_roots, s.archive_dir, "mail")
            script = mark_deleted(script, s.state_dir, res.mailboxes, deleted=True)
        elif action == "restore":
            for key in ("archive", "sha256"):
                if not resource.get(key):
                    raise UnsafeValue("mail restore", resource,
                                      f"needs {key!r} (a fact of the delete that archived it)")
            script = restore_ops(acct, dirs, s.mail_roots, s.archive_dir, resource["archive"], resource["sha256"])
            script = mark_deleted(script, s.state_dir, res.mailboxes, deleted=False)
        else:
            raise ValueError(f"mail connector: unknown action {action!r}")
        return [*ops, Operation(op_id(acct, action, "maildirs"), acct, f"mail:{action}", script)]

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
  for k in $(sort -u "$st/dovecot.kick"); do
    # names come from our own operations (connectors.validate.mailbox); never pass one as an option
    case $k in ''|-*|*/*) continue ;; esac
    rc=0
    {command(s.kick_command, "kick_command")} "$k" >/dev/null 2>&1 || rc=$?
    # 68: nobody of that name was logged in
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 68 ]; then fail "kicking $k failed with exit $rc"; fi
    kicked="$kicked $k"
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
        return [Handler(DOVECOT_HANDLER, dovecot), Handler(POSTFIX_HANDLER, postfix)]

"""The vpopmail mail backend: the six flags are bits of ``pw_gid`` in the domain's ``vpasswd``.

``vuserinfo -g <mailbox>`` prints the gid value on its first line; ``vmoduser -<letters> <mailbox>``
ORs flag bits in and ``vmoduser -x ...`` clears every bit first. Suspend saves the flags as they were
(see :mod:`connectors.mail`), then ORs in only the requested flags that were not set. Resume computes
the gid without the bits the suspension added and writes exactly that with ``vmoduser -x`` followed by
the letters of every remaining bit (vpopmail's other bits, such as qmailadmin privileges, included),
then checks the result; a bit vmoduser has no letter for is refused rather than lost.

Commands used on the host (for a sudoers list): the configured ``vuserinfo`` and ``vmoduser`` (and
``kick_command`` when set), ``head``, ``sed``, ``cat``, ``mkdir``, ``mv``, ``rm``; ``delete``/``restore``
add those of :mod:`connectors.archive`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from connectors.archive import check_archive_dir, probe_lines
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
from connectors.observed import Observed
from connectors.probe import require_commands
from connectors.resources import mail_resource
from connectors.validate import account_id, path, path_under, q

__all__ = ["VMODUSER_BITS", "VpopmailConnector", "VpopmailSettings"]

# Every vmoduser letter and the pw_gid bit it sets (vpopmail.h); the first six are the suspension flags.
VMODUSER_BITS: dict[str, int] = {
    "d": 0x01, "p": 0x02, "w": 0x04, "i": 0x08, "b": 0x10, "r": 0x20, "u": 0x40,
    "0": 0x80, "1": 0x100, "2": 0x200, "3": 0x400, "s": 0x800, "a": 0x1000, "o": 0x2000,
    "f": 0x4000, "F": 0x8000, "S": 0x10000, "E": 0x20000, "m": 0x40000,
}
_SIX = " ".join(f"{c}:{VMODUSER_BITS[c]}" for c in "dpwibr")
_EVERY = " ".join(f"{c}:{b}" for c, b in VMODUSER_BITS.items())


class VpopmailSettings(BaseModel):
    """Per-host settings of the vpopmail backend (``services.mail`` in the inventory)."""

    model_config = ConfigDict(extra="forbid")

    vuserinfo_command: str = "/home/vpopmail/bin/vuserinfo"
    vmoduser_command: str = "/home/vpopmail/bin/vmoduser"
    kick_command: str | None = None  # e.g. "doveadm kick" when dovecot serves vpopmail's users
    state_dir: str = "/var/lib/arrears"
    domains_dir: str = "/home/vpopmail/domains"
    archive_dir: str = "/var/backups/arrears"

    @field_validator("vuserinfo_command", "vmoduser_command", "kick_command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None:
            command(value, "command")
        return value

    @field_validator("state_dir", "domains_dir", "archive_dir")
    @classmethod
    def _path(cls, value: str) -> str:
        return path(value)

    @model_validator(mode="after")
    def _separate(self) -> VpopmailSettings:
        check_archive_dir(self.archive_dir, [self.domains_dir])
        return self


class VpopmailConnector:
    """Sets and restores the six mail flags of vpopmail mailboxes on one host."""

    service = "mail"
    Settings = VpopmailSettings

    def __init__(self, settings: VpopmailSettings, host: str) -> None:
        self.settings = settings
        self.host = host

    def _shell(self) -> FlagShell:
        s = self.settings
        vuserinfo = command(s.vuserinfo_command, "vuserinfo_command")
        vmoduser = command(s.vmoduser_command, "vmoduser_command")
        kick = ""
        if s.kick_command:
            kick = f"""
  case $new in *[pwi]*)
    rc=0; {command(s.kick_command, "kick_command")} "$m" >/dev/null 2>&1 || rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 68 ]; then fail "kicking $m failed with exit $rc"; fi ;;
  esac"""
        prelude = f"""
_vp_gid() {{
  g=$({vuserinfo} -g "$m" | head -n 1)
  case $g in ''|*[!0-9]*) fail "vuserinfo -g $m answered '$g', not a gid value; nothing was changed" ;; esac
}}
"""
        read = f"""  _vp_gid
  for _vp_p in {_SIX}; do
    if [ $(( g & ${{_vp_p#*:}} )) -ne 0 ]; then cur=$cur${{_vp_p%%:*}}; fi
  done"""
        set_ = f"""  _vp_args=
  for _vp_c in d p w i b r; do case $new in *$_vp_c*) _vp_args="$_vp_args -$_vp_c" ;; esac; done
  {vmoduser} $_vp_args "$m" >&2 || fail "vmoduser$_vp_args $m failed"
  changed
  _mf_read
  [ -z "$(_mf_minus "$new" "$cur")" ] || fail "after vmoduser$_vp_args $m the flags are '$cur'"{kick}"""
        clear = f"""  _vp_gid
  _vp_drop=0
  for _vp_p in {_SIX}; do case $drop in *${{_vp_p%%:*}}*) _vp_drop=$(( _vp_drop | ${{_vp_p#*:}} )) ;; esac; done
  if [ $(( g & _vp_drop )) -ne 0 ]; then
    _vp_target=$(( g & ~_vp_drop ))
    _vp_rest=$_vp_target
    _vp_args=-x
    for _vp_p in {_EVERY}; do
      if [ $(( _vp_target & ${{_vp_p#*:}} )) -ne 0 ]; then
        _vp_args="$_vp_args -${{_vp_p%%:*}}"
        _vp_rest=$(( _vp_rest & ~${{_vp_p#*:}} ))
      fi
    done
    [ "$_vp_rest" -eq 0 ] || fail "gid $g of $m has bits ($_vp_rest) vmoduser cannot set again; nothing was changed"
    {vmoduser} $_vp_args "$m" >&2 || fail "vmoduser $_vp_args $m failed"
    changed
    _vp_gid
    [ "$g" -eq "$_vp_target" ] || fail "after vmoduser $_vp_args $m the gid is $g, expected $_vp_target"
  fi"""
        return FlagShell(prelude, read, set_, clear)

    def _maildir(self, box: str) -> str:
        local, _, dom = box.partition("@")
        return path_under(f"{self.settings.domains_dir}/{dom}/{local}", [self.settings.domains_dir])

    def operations(self, action: Action, account: str, resource: dict[str, Any]) -> list[Operation]:
        acct = account_id(account)
        res = mail_resource(resource)
        s = self.settings
        ops = []
        if action in ("suspend", "resume", "status", "delete"):
            shell = self._shell()
            flag_action = "suspend" if action == "delete" else action  # a deleted mailbox stays suspended
            ops = [
                Operation(op_id(acct, action, box), acct, f"mail:{action}",
                          flag_script(flag_action, box, s.state_dir, res.flags, shell,
                                      status_maildir(self._maildir, box) if action == "status" else None))
                for box in res.mailboxes
            ]
            if action != "delete":
                return ops
        if not res.mailboxes:
            return []
        dirs = [self._maildir(box) for box in res.mailboxes]
        return [*ops, maildir_operation(action, acct, res.mailboxes, dirs, [s.domains_dir], s.archive_dir, s.state_dir,
                                        resource)]

    def observe(self, facts: Mapping[str, str]) -> Observed:
        return observe_mailboxes(facts)

    def check_script(self) -> str:
        """The configured vuserinfo and vmoduser and what deletions need exist."""
        s = self.settings
        lines = require_commands([("vuserinfo_command", s.vuserinfo_command),
                                  ("vmoduser_command", s.vmoduser_command)]) + probe_lines(s.archive_dir)
        lines.append(f'fact version {q(f"vpopmail tools: {s.vuserinfo_command}, {s.vmoduser_command}")}')
        return "\n".join(lines)

    def handlers(self) -> list[Handler]:
        return []

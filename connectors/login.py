"""The unix login lock: expire the account, end its sessions, move its crontab aside; resume restores each.

Resource: ``{"user": "alice"}`` (a unix user on the host). One operation per user and action, id
``<account>:login:<action>:<user>``.

``suspend``  records the account's expiry date (``/etc/shadow`` field 8, days since 1970, often empty)
             in ``<state_dir>/login/<user>/expire`` unless a record is already there, expires the
             account with ``usermod -e 1`` (a locked password does not stop key logins under PAM and a
             nologin shell does not stop internal-sftp; an expired account stops both), ends every
             process of the user (``loginctl terminate-user`` where systemd-logind runs, then
             ``pkill -KILL -u``) and moves ``<crontab_dir>/<user>`` to ``<state_dir>/login/<user>/crontab``.
             Facts: ``expire_before`` (the recorded field), ``crontab`` (``saved`` or ``none``),
             ``processes_ended`` (processes of the user that were running).
``resume``   moves the crontab back with its recorded owner and mode, sets the recorded expiry again
             exactly (``usermod -e ''`` for none) and removes the record. Facts: ``expire_restored``,
             ``crontab`` (``restored`` or ``none``).
``delete``   removes nothing and keeps the account locked (the same steps as ``suspend``).
``restore``  keeps the account locked as well: access comes back with ``resume``.
``status``   reports ``suspended`` (yes/no: the record exists), ``expire`` (current field 8) and
             ``crontab_saved``; :meth:`UnixLoginConnector.observe` reads them.

Each step checks first and changes only what differs: repeating a measure reports no change. Users
with a uid below ``min_uid`` (root, system accounts) are refused.

Commands used on the host (for a sudoers list): ``getent``, ``id``, ``usermod``, ``pkill``, ``ps``,
``loginctl``, ``stat``, ``mv``, ``chown``, ``chmod``, ``cmp``, ``mkdir``, ``rm``, ``rmdir``, ``sleep``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.base import Action, Handler, Operation
from connectors.observed import Observed
from connectors.probe import require_commands
from connectors.resources import login_user
from connectors.validate import account_id, path, q

__all__ = ["LoginSettings", "UnixLoginConnector"]

SERVICE = "login"
_COMMAND = re.compile(r"^(/[A-Za-z0-9_./+-]+|[A-Za-z0-9_.+-]+)$")


class LoginSettings(BaseModel):
    """Per-host settings of the login lock (``services.login`` in the inventory)."""

    model_config = ConfigDict(extra="forbid")

    state_dir: str = "/var/lib/arrears"
    crontab_dir: str = "/var/spool/cron/crontabs"
    min_uid: int = Field(default=1000, ge=1)
    usermod_command: str = "usermod"
    kill_command: str = "pkill"
    loginctl_command: str | None = "loginctl"  # None: never ask systemd-logind

    @field_validator("state_dir", "crontab_dir")
    @classmethod
    def _path(cls, value: str) -> str:
        v = path(value)
        if v == "/":
            raise ValueError("must not be '/'")
        return v

    @field_validator("usermod_command", "kill_command", "loginctl_command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None and (not _COMMAND.match(value) or ".." in value.split("/")):
            raise ValueError(f"{value!r} is not a command name or an absolute path")
        return value


class UnixLoginConnector:
    """Locks and unlocks unix logins of one account's users on one host."""

    service = SERVICE
    Settings = LoginSettings

    def __init__(self, settings: LoginSettings, host: str) -> None:
        self.settings = settings
        self.host = host

    def _prelude(self, user: str) -> str:
        s = self.settings
        sd = f"{s.state_dir}/{SERVICE}/{user}"
        return f"""
_lg_u={q(user)}
_lg_sd={q(sd)}
_lg_cron={q(s.crontab_dir)}/{q(user)}
_lg_ent=$(getent shadow "$_lg_u") || fail "login: {user} has no entry in the shadow database"
_lg_uid=$(id -u "$_lg_u") || fail "login: {user} is not a unix user here"
[ "$_lg_uid" -ge {s.min_uid} ] || \\
  fail "login: refused {user}: uid $_lg_uid is below min_uid {s.min_uid} (a system account)"
_lg_exp=$(printf '%s\\n' "$_lg_ent" | cut -d: -f8)
"""

    def _lock(self, user: str) -> str:
        s = self.settings
        logind = ""
        if s.loginctl_command:
            logind = (
                f"  if [ -d /run/systemd/system ] && command -v {q(s.loginctl_command)} >/dev/null 2>&1; then\n"
                f"    {q(s.loginctl_command)} terminate-user \"$_lg_u\" >/dev/null 2>&1 || :\n"
                f"  fi\n"
            )
        return self._prelude(user) + f"""
mkdir -p -- "$_lg_sd"
if [ ! -e "$_lg_sd/expire" ]; then
  printf '%s\\n' "$_lg_exp" > "$_lg_sd/expire.tmp"
  mv -f -- "$_lg_sd/expire.tmp" "$_lg_sd/expire"
  changed
fi
fact expire_before "$(cat -- "$_lg_sd/expire")"
if [ "$_lg_exp" != 1 ]; then
  {q(s.usermod_command)} -e 1 "$_lg_u" >&2 || fail "login: usermod -e 1 {user} failed"
  changed
fi
_lg_live() {{ ps -o stat= -u "$_lg_u" 2>/dev/null | grep -qv '^Z'; }}
if _lg_live; then
  fact processes_ended "$(ps -o stat= -u "$_lg_u" | grep -cv '^Z')"
{logind}  _lg_i=0
  while _lg_live; do
    {q(s.kill_command)} -KILL -u "$_lg_u" || :
    _lg_i=$((_lg_i + 1))
    [ "$_lg_i" -le 50 ] || fail "login: processes of {user} survive SIGKILL"
    sleep 0.1
  done
  changed
else
  fact processes_ended 0
fi
if [ -e "$_lg_cron" ] || [ -L "$_lg_cron" ]; then
  [ -f "$_lg_cron" ] && [ ! -L "$_lg_cron" ] || fail "login: refused $_lg_cron: not a regular file"
  [ ! -e "$_lg_sd/crontab" ] || \\
    fail "login: {user} has a crontab and a saved one in $_lg_sd; both left in place"
  stat -c '%u %g %a' -- "$_lg_cron" > "$_lg_sd/crontab.meta"
  mv -- "$_lg_cron" "$_lg_sd/crontab" || fail "login: cannot move $_lg_cron aside"
  changed
fi
if [ -e "$_lg_sd/crontab" ]; then fact crontab saved; else fact crontab none; fi
"""

    def _unlock(self, user: str) -> str:
        s = self.settings
        return self._prelude(user) + f"""
if [ -e "$_lg_sd/crontab" ]; then
  if [ -e "$_lg_cron" ]; then
    cmp -s -- "$_lg_sd/crontab" "$_lg_cron" || \\
      fail "login: {user} has a new crontab; the saved one stays in $_lg_sd/crontab"
    rm -f -- "$_lg_sd/crontab"
  else
    read -r _lg_cu _lg_cg _lg_cm < "$_lg_sd/crontab.meta" || fail "login: $_lg_sd/crontab.meta is unreadable"
    mv -- "$_lg_sd/crontab" "$_lg_cron" || fail "login: cannot move the crontab back to $_lg_cron"
    chown -- "$_lg_cu:$_lg_cg" "$_lg_cron"
    chmod -- "$_lg_cm" "$_lg_cron"
  fi
  rm -f -- "$_lg_sd/crontab.meta"
  fact crontab restored
  changed
else
  fact crontab none
fi
if [ -e "$_lg_sd/expire" ]; then
  _lg_prev=$(cat -- "$_lg_sd/expire")
  case $_lg_prev in *[!0-9]*) fail "login: the saved expiry '$_lg_prev' in $_lg_sd/expire is not a day count" ;; esac
  if [ "$_lg_exp" != "$_lg_prev" ]; then
    {q(s.usermod_command)} -e "$_lg_prev" "$_lg_u" >&2 || fail "login: usermod -e '$_lg_prev' {user} failed"
    _lg_now=$(getent shadow "$_lg_u" | cut -d: -f8)
    [ "$_lg_now" = "$_lg_prev" ] || fail "login: expiry of {user} is '$_lg_now' after restoring '$_lg_prev'"
  fi
  rm -f -- "$_lg_sd/expire"
  fact expire_restored "$_lg_prev"
  changed
elif [ "$_lg_exp" = 1 ]; then
  fact note "{user} is expired but no saved expiry is recorded in $_lg_sd: left as it is"
fi
if [ -d "$_lg_sd" ]; then rmdir -- "$_lg_sd" 2>/dev/null || :; fi
"""

    def _status(self, user: str) -> str:
        return self._prelude(user) + """
if [ -e "$_lg_sd/expire" ]; then fact suspended yes; else fact suspended no; fi
fact expire "$_lg_exp"
if [ -e "$_lg_sd/crontab" ]; then fact crontab_saved yes; else fact crontab_saved no; fi
"""

    def operations(self, action: Action, account: str, resource: dict[str, Any]) -> list[Operation]:
        acct = account_id(account)
        user = login_user(resource)
        if action in ("suspend", "delete", "restore"):
            script = self._lock(user)
        elif action == "resume":
            script = self._unlock(user)
        elif action == "status":
            script = self._status(user)
        else:
            raise ValueError(f"login connector: unknown action {action!r}")
        return [Operation(f"{acct}:{SERVICE}:{action}:{user}", acct, f"{SERVICE}:{action}", script)]

    def observe(self, facts: Mapping[str, str]) -> Observed:
        """Locked while the account is expired (``/etc/shadow`` field 8 is 1): suspended, which is also
        what a deleted account looks like here (delete keeps it locked and removes nothing)."""
        record, expire = facts.get("suspended"), facts.get("expire")
        if record not in ("yes", "no") or expire is None:
            return Observed("unknown", f"incomplete facts: suspended {record}, expire {expire}")
        crontab = "; crontab saved" if facts.get("crontab_saved") == "yes" else ""
        if expire == "1":
            detail = "expired" + crontab + ("" if record == "yes" else "; expired by someone else (no saved expiry)")
            return Observed("suspended", detail, also=frozenset({"deleted"}))
        if record == "yes":
            return Observed("active", f"the lock is recorded but the expiry is {expire or 'none'}: unlocked by hand"
                            + crontab)
        return Observed("active", f"expiry {expire or 'none'}")

    def check_script(self) -> str:
        """The configured usermod and kill commands, and the tools the lock uses, exist."""
        s = self.settings
        tools = [("usermod_command", s.usermod_command), ("kill_command", s.kill_command)]
        tools += [("", c) for c in ("getent", "id", "ps", "stat")]
        return "\n".join(require_commands(tools))

    def handlers(self) -> list[Handler]:
        return []

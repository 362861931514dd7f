"""Mail connectors (dovecot+postfix, vpopmail) and what they share: the resource, operation ids, the
saved-flags record and the shell that suspends, resumes and reports one mailbox.

Resource: ``{"mailboxes": ["info@example.com", ...], "flags": "dpwibr"}``; ``flags`` (optional, default
all six) says which flags a suspension sets. For ``restore`` also ``archive`` and ``sha256``, the facts
of the delete that archived the maildirs.

Suspend first records the mailbox's flags as they were (``<state_dir>/mail/<mailbox>.flags``, written
only when absent, so a repeat changes nothing), then sets the requested flags that were not set yet and
records them as the ones the agent added. Resume clears exactly the flags the agent added and removes
the record: a flag the owner or an admin had set before the suspension stays set.

Facts (per mailbox, keyed so that several mailboxes of one job do not collide):
``flags:<mailbox>`` the flags now, ``before:<mailbox>`` the flags before the suspension,
``added:<mailbox>`` what the suspension set, ``suspended:<mailbox>`` yes/no.

A backend supplies the shell that reads the flags into ``$cur``, sets the flags listed in ``$new`` and
clears the flags listed in ``$drop`` (see :class:`FlagShell`).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.base import OP_ID
from connectors.mail.flags import ALL, parse_flags
from connectors.validate import UnsafeValue, mailbox, q

__all__ = [
    "FlagShell",
    "MailResource",
    "command",
    "flag_script",
    "op_id",
    "parse_resource",
    "record_path",
]

_TOKEN = re.compile(r"^[A-Za-z0-9_./:=@+,%-]{1,200}$")

_SETS = Path(__file__).with_name("flags.sh").read_text()  # set arithmetic on flag letters


@dataclass(frozen=True)
class MailResource:
    mailboxes: tuple[str, ...]
    flags: str


def parse_resource(resource: Mapping[str, Any]) -> MailResource:
    """Validated, lower-cased mailboxes (each through :func:`connectors.validate.mailbox`) and the
    requested flags."""
    boxes = resource.get("mailboxes")
    if isinstance(boxes, str) or not isinstance(boxes, (list, tuple)):
        raise UnsafeValue("mail resource", resource, "needs 'mailboxes', a list of addresses")
    checked: list[str] = []
    for box in boxes:
        # dovecot looks names up lower-cased (auth_username_format = %Lu), postfix maps fold case
        # and vpopmail lower-cases its users: a mixed-case entry would never match
        m = mailbox(box).lower()
        if m not in checked:
            checked.append(m)
    raw = resource.get("flags")
    flags = ALL if raw is None else parse_flags(raw)
    return MailResource(tuple(checked), flags)


def op_id(account: str, action: str, target: str) -> str:
    """``<account>:mail:<action>:<target>``; a long one, or one whose mailbox holds characters that an
    operation id does not (``o'neil@...``), ends in a digest instead (ids are at most 200)."""
    oid = f"{account}:mail:{action}:{target}"
    if len(oid) > 200 or not OP_ID.match(oid):
        oid = f"{account}:mail:{action}:{hashlib.sha256(target.encode()).hexdigest()[:24]}"
    return oid


def command(value: str, what: str) -> str:
    """An operator-configured command line (``postfix reload``), each word checked and quoted."""
    if not isinstance(value, str):
        raise UnsafeValue(what, value, "not a string")
    if "\x00" in value or "\n" in value or "\r" in value:
        raise UnsafeValue(what, value, "contains NUL or a line break")
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise UnsafeValue(what, value, str(exc)) from None
    if not words:
        raise UnsafeValue(what, value, "is empty")
    for word in words:
        if not _TOKEN.match(word):
            raise UnsafeValue(what, value, f"word {word!r} does not match {_TOKEN.pattern}")
    return " ".join(q(w) for w in words)


def record_path(state_dir: str, box: str) -> str:
    return f"{state_dir}/mail/{box}.flags"


@dataclass(frozen=True)
class FlagShell:
    """A backend's shell for one mailbox (``$m`` holds it): ``read`` sets ``$cur`` to the flags now;
    ``set`` sets the flags in ``$new``; ``clear`` clears the flags in ``$drop``; ``prelude`` defines
    helper functions. ``set`` and ``clear`` call ``changed`` themselves when they change something. They
    may use ``_mf_sub``/``_mf_or`` (set arithmetic into ``$_mf_r``), ``_mf_minus``/``_mf_plus`` (the same,
    printed) and ``$_mf_nl`` (a newline)."""

    prelude: str
    read: str
    set: str
    clear: str


def flag_script(action: str, box: str, state_dir: str, requested: str, backend: FlagShell) -> str:
    """The script of one suspend/resume/status operation on one mailbox."""
    rec = record_path(state_dir, box)
    head = f"""{_SETS}
m={q(box)}
rec={q(rec)}
{backend.prelude}
_mf_read() {{
  cur=
{backend.read}
}}
_mf_record() {{
  before=; added=; _mf_raw=
  while IFS= read -r _mf_l || [ -n "$_mf_l" ]; do
    _mf_raw=$_mf_raw$_mf_l$_mf_nl
    case $_mf_l in before=*) before=$before${{_mf_l#before=}} ;; added=*) added=$added${{_mf_l#added=}} ;; esac
  done < "$rec"
  while :; do case $_mf_raw in *"$_mf_nl") _mf_raw=${{_mf_raw%"$_mf_nl"}} ;; *) break ;; esac; done
  _mf_or "$before" ''; before=$_mf_r
  _mf_or "$added" ''; added=$_mf_r
}}
_mf_read
"""
    if action == "suspend":
        body = f"""
st={q(state_dir + "/mail")}
req={q(requested)}
if [ -f "$rec" ]; then _mf_record; else before=$cur; added=; _mf_raw=; fi
_mf_sub "$req" "$cur"; new=$_mf_r
_mf_or "$added" "$new"; added=$_mf_r
want="before=$before${{_mf_nl}}added=$added"
if [ ! -f "$rec" ] || [ "$_mf_raw" != "$want" ]; then
  (umask 077; {{ [ -d "$st" ] || mkdir -p "$st"; }} && printf '%s\\n' "$want" > "$rec.tmp" &&
    mv -f "$rec.tmp" "$rec") || fail "cannot record the flags of $m in $rec; nothing was changed"
  changed
fi
if [ -n "$new" ]; then
{backend.set}
fi
_mf_read
fact "flags:$m" "$cur"
fact "before:$m" "$before"
fact "added:$m" "$added"
fact "suspended:$m" yes
"""
    elif action == "resume":
        body = f"""
if [ ! -f "$rec" ]; then
  fact "flags:$m" "$cur"
  fact "suspended:$m" no
  exit 0
fi
_mf_record
_mf_sub "$added" "$before"; drop=$_mf_r
if [ -n "$drop" ]; then
{backend.clear}
fi
rm -f "$rec"
changed
_mf_read
fact "flags:$m" "$cur"
fact "before:$m" "$before"
fact "added:$m" ''
fact "suspended:$m" no
"""
    elif action == "status":
        body = """
fact "flags:$m" "$cur"
if [ -f "$rec" ]; then
  _mf_record
  fact "before:$m" "$before"
  fact "added:$m" "$added"
  fact "suspended:$m" yes
else
  fact "suspended:$m" no
fi
"""
    else:
        raise ValueError(f"mail: no flag script for action {action!r}")
    return head + body

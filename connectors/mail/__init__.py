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
``added:<mailbox>`` what the suspension set, ``suspended:<mailbox>`` yes/no (the record exists);
``status`` adds ``maildir:<mailbox>`` (present/absent) and ``deleted:<mailbox>`` (yes/no: a delete left
its record ``<state_dir>/mail/<mailbox>.deleted``, removed by restore), and :func:`observe_mailboxes`
reads them all.

Delete keeps the mailbox suspended (the same operation as a suspend first) and then archives and removes
its maildir: a deleted mailbox bounces its mail instead of delivering it into a new, empty maildir.

A backend supplies the shell that reads the flags into ``$cur``, sets the flags listed in ``$new`` and
clears the flags listed in ``$drop`` (see :class:`FlagShell`).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.archive import archive_ops, restore_ops
from connectors.base import OP_ID, Operation
from connectors.mail.flags import ALL, difference, parse_flags
from connectors.observed import Observed, combine
from connectors.validate import UnsafeValue, mailbox, q

__all__ = [
    "FlagShell",
    "MailResource",
    "command",
    "deleted_path",
    "flag_script",
    "maildir_operation",
    "mark_deleted",
    "observe_mailboxes",
    "op_id",
    "parse_resource",
    "record_path",
    "status_maildir",
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


def status_maildir(maildir: Callable[[str], str], box: str) -> str | None:
    """The maildir ``status`` looks at: ``maildir(box)``, or None when the mailbox's name cannot be a path
    (``o'neil@``): such a mailbox is suspended and resumed, but never deleted, so there is nothing to see."""
    try:
        return maildir(box)
    except UnsafeValue:
        return None


def deleted_path(state_dir: str, box: str) -> str:
    """The host's record that a delete archived and removed the mailbox's maildir."""
    return f"{state_dir}/mail/{box}.deleted"


def mark_deleted(script: str, state_dir: str, boxes: Sequence[str], *, deleted: bool) -> str:
    """A delete's (``deleted``) or a restore's archive script, followed, once it succeeded, by writing or
    removing each mailbox's :func:`deleted_path` record. The archive script runs in a subshell: it may end
    early with ``exit 0`` (nothing left to do) and the record is still brought up to date."""
    paths = [q(deleted_path(state_dir, box)) for box in boxes]
    if deleted:
        mark = "\n".join([f'mkdir -p -- {q(state_dir + "/mail")}', *(f"[ -e {p} ] || : > {p}" for p in paths)])
    else:
        mark = f"rm -f -- {' '.join(paths)}"
    return f"(\n{script}\n) || exit $?\n{mark}\n"


def maildir_operation(action: str, account: str, boxes: Sequence[str], dirs: Sequence[str], roots: Sequence[str],
                      archive_dir: str, state_dir: str, resource: Mapping[str, Any]) -> Operation:
    """The one operation that deletes (archive -> verify -> remove) or restores the maildirs ``dirs`` of the
    mailboxes ``boxes``, with the host's record of the delete (:func:`mark_deleted`). A restore needs the
    ``archive`` and ``sha256`` facts its delete reported."""
    if action == "delete":
        script = mark_deleted(archive_ops(account, dirs, roots, archive_dir, "mail"), state_dir, boxes, deleted=True)
    elif action == "restore":
        for key in ("archive", "sha256"):
            if not resource.get(key):
                raise UnsafeValue("mail restore", resource, f"needs {key!r} (a fact of the delete that archived it)")
        script = mark_deleted(restore_ops(account, dirs, roots, archive_dir, str(resource["archive"]),
                                          str(resource["sha256"])), state_dir, boxes, deleted=False)
    else:
        raise ValueError(f"mail connector: unknown action {action!r}")
    return Operation(op_id(account, action, "maildirs"), account, f"mail:{action}", script)


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


def flag_script(action: str, box: str, state_dir: str, requested: str, backend: FlagShell,
                maildir: str | None = None) -> str:
    """The script of one suspend/resume/status operation on one mailbox (``maildir``: its folder, whose
    presence ``status`` reports; None for a mailbox no maildir path can name, which no delete removes)."""
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
        body = "" if maildir is None else f"""
if [ -d {q(maildir)} ]; then fact "maildir:$m" present; else fact "maildir:$m" absent; fi
if [ -e {q(deleted_path(state_dir, box))} ]; then fact "deleted:$m" yes; else fact "deleted:$m" no; fi
"""
        body += """
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


def observe_mailboxes(facts: Mapping[str, str]) -> Observed:
    """Each mailbox from its ``status`` facts: suspended while the record of its suspension exists and
    every flag that suspension set is still set; deleted when, suspended so, a delete removed its maildir
    (the host's record of the delete is there and the maildir is not: a mailbox that never received mail
    has no maildir either); active otherwise (flags cleared by hand count as active: a suspend sets them again)."""
    boxes = [k[len("suspended:"):] for k in facts if k.startswith("suspended:")]
    return combine({box: _observe_box(box, facts) for box in boxes}, what="mailbox")


def _observe_box(box: str, facts: Mapping[str, str]) -> Observed:
    record, now = facts[f"suspended:{box}"], facts.get(f"flags:{box}")
    gone = facts.get(f"deleted:{box}") == "yes" and facts.get(f"maildir:{box}") == "absent"
    if record not in ("yes", "no") or now is None:
        return Observed("unknown", f"incomplete facts: suspended {record}, flags {now}")
    try:
        cleared = difference(facts.get(f"added:{box}", ""), now) if record == "yes" else ""
    except UnsafeValue:
        return Observed("unknown", f"unreadable flags: {now!r}")
    if record == "yes" and not cleared:
        return Observed("deleted", "maildir deleted, flags " + now) if gone else Observed("suspended", "flags " + now)
    detail = f"flags {now or 'none'}"
    if cleared:
        detail = f"flags {cleared} of the suspension were cleared by hand; " + detail
    return Observed("active", detail + ("; its maildir was deleted" if gone else ""))

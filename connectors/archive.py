"""Shell-script builders for archive -> verify -> remove, restore and prune, shared by every connector
that deletes account data (home dirs, maildirs, vhost configs).

Each builder validates its arguments in Python (raising :class:`connectors.validate.UnsafeValue`
before anything runs) and returns the body of one :class:`connectors.base.Operation` script; it uses
the batch helpers ``changed``, ``fact`` and ``fail`` (see :mod:`connectors.base`). Use one builder per
operation: the facts below are reported under fixed names.

``archive_ops(account, paths, roots, archive_dir, kind, *, remove=True) -> str``
    ``paths`` (each strictly below one of ``roots``) go into one gzip'ed tar in ``archive_dir`` (named
    as below), written under a temporary name and
    renamed only once it verified: ``gzip -t``, ``tar --compare`` against the live tree, and the
    archive's member count equal to the live tree's entry count (sockets excepted, tar skips them).
    Beside it ``<archive>.list`` holds the verbose listing. Then, with ``remove``, each path goes with
    ``rm -rf --one-file-system`` (without ``remove`` every run makes a new archive). On the host
    every path is re-checked with ``realpath -e``: a path that is itself a symlink, or resolves
    outside the (resolved) roots, or is a root, is refused and nothing is touched. So is a path at
    or below which anything is mounted, by the host's mount table (``/proc/self/mountinfo``):
    ``--one-file-system`` stops only at another device, and a bind mount of a folder from the same
    file system would be archived and emptied through the path. The mount table is read again just
    before the removal. Facts: ``archive``, ``sha256``, ``size`` (bytes), ``entries`` (archive
    members), ``files`` (regular files, a second hard link not counted), ``listing`` (the .list
    path), ``paths`` (the archived paths, space-separated). Paths that no longer exist are
    skipped; when none exists the operation changes nothing (a repeated delete is a no-op) and
    reports ``absent`` (the paths) plus the ``archive``, ``sha256``, ``size`` and ``listing`` of
    the newest archive of this account and kind, so a delete retried after a lost connection still
    hands back its archive.

Archive names: ``<account>-<kind>-<stamp>.tar.gz``, or ``<account>-<kind>-<stamp>-<n>.tar.gz`` (``n``
from 2) when that name is taken; ``<stamp>`` is the UTC time as ``YYYYmmddTHHMMSSZ``. A kind has no
``-``, so a name reads back exactly one way from its end: the stamp (and ``n``), then the kind (the
segment before the stamp); the account is all that is left. An account's own archives are those whose
name is exactly its id, ``-``, the kind, ``-`` and a stamp: the archives of account ``a-home-1``
(``a-home-1-home-<stamp>.tar.gz``) are never those of account ``a``.

``restore_ops(account, paths, roots, archive_dir, archive, sha256) -> str``
    Checks the archive (inside ``archive_dir``, its sha256, ``gzip -t``), then extracts each path
    back in place with owners and modes (``tar -xzpf``), and compares the result with the archive.
    A target that exists and is not empty (or is a file) is refused, unless it already matches the
    archive (a repeated restore is a no-op); so is an empty target with anything mounted at or below
    it. A failed extraction removes what it had written. Facts:
    ``restored`` (paths extracted now, space-separated).

``prune_ops(archive_dir, retention_days) -> str``
    Removes archives (``*.tar.gz``), their listings and stale temporary files older than
    ``retention_days`` from ``archive_dir`` itself (never below it, never outside it). Fact:
    ``pruned`` (count).

``check_roots(roots)`` and ``check_archive_dir(archive_dir, roots)`` validate settings the same way
(for pydantic validators): roots are absolute and never ``/``; the archive dir never overlaps a root.

Commands used on the host (for a sudoers list): ``tar``, ``gzip``, ``sha256sum``, ``realpath``,
``find``, ``rm``, ``mv``, ``mkdir``, ``stat``, ``sync``, ``date``, ``wc``, ``cut``, ``grep``, ``awk``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from connectors.probe import require_commands
from connectors.validate import UnsafeValue, account_id, path, path_under, q

__all__ = ["archive_ops", "check_archive_dir", "check_roots", "probe_lines", "prune_ops", "restore_ops"]

_KIND = re.compile(r"^[a-z][a-z0-9_]{0,15}$")  # no '-': archive names read back one way (module doc)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_STAMP_GLOB = "[0-9]" * 8 + "T" + "[0-9]" * 6 + "Z"  # what ``date -u +%Y%m%dT%H%M%SZ`` writes

# ``_av_under RESOLVED ROOT...``: true when RESOLVED lies strictly below one of the roots as the host
# resolves them (a root that is a symlink counts as where it points).
_UNDER = r"""
_av_under() {
  _avu_p=$1; shift
  for _avu_r in "$@"; do
    _avu_rr=$(realpath -e -- "$_avu_r" 2>/dev/null) || continue
    case $_avu_p in "$_avu_rr"/?*) return 0 ;; esac
  done
  return 1
}
"""

# ``_av_mounts PATH``: the mount points at or below PATH in this shell's mount table, its octal escapes
# (``\040`` for a space ...) decoded, separated by ", "; empty when there is none. Fails (status 2) when
# /proc/self/mountinfo cannot be read. PATH travels in the environment: ``awk -v`` would decode escapes.
# ``_av_no_mounts PATH RESOLVED WHAT``: fail, naming the mounts, when anything is mounted at or below
# RESOLVED (PATH resolved); WHAT ends the message (what was left alone).
_MOUNTS = r"""
_av_mounts() {
  _AV_MP=$1 awk '
    function dec(s,   out, i, c) {
      out = ""
      while ((i = index(s, "\\")) > 0) {
        c = substr(s, i + 1, 3)
        if (c ~ /^[0-7][0-7][0-7]$/) {
          out = out substr(s, 1, i - 1) sprintf("%c", substr(c, 1, 1) * 64 + substr(c, 2, 1) * 8 + substr(c, 3, 1))
          s = substr(s, i + 4)
        } else {
          out = out substr(s, 1, i)
          s = substr(s, i + 1)
        }
      }
      return out s
    }
    BEGIN { p = ENVIRON["_AV_MP"]; found = "" }
    {
      m = dec($5)
      if (m == p || substr(m, 1, length(p) + 1) == p "/") found = found (found == "" ? "" : ", ") m
    }
    END { printf "%s", found }
  ' /proc/self/mountinfo
}
_av_no_mounts() {
  _avm_m=$(_av_mounts "$2") || fail "refused $1: cannot read the mount table /proc/self/mountinfo; $3"
  [ -z "$_avm_m" ] || \
    fail "refused $1: $_avm_m is mounted at or below $2 (a deletion never crosses a mount: unmount it first); $3"
}
"""


def check_roots(roots: Sequence[str]) -> list[str]:
    """Validated roots: absolute, normalised, never ``/`` itself."""
    if isinstance(roots, str) or not roots:
        raise UnsafeValue("roots", roots, "must be a non-empty list of absolute paths")
    checked = []
    for root in roots:
        r = path(root)
        if r == "/":
            raise UnsafeValue("root", root, "'/' cannot be a root for deletions")
        checked.append(r)
    return checked


def check_archive_dir(archive_dir: str, roots: Sequence[str]) -> str:
    """A validated archive dir that is neither a root, nor inside one, nor contains one."""
    ad = path(archive_dir)
    if ad == "/":
        raise UnsafeValue("archive dir", archive_dir, "cannot be '/'")
    for r in check_roots(roots):
        if ad == r or ad.startswith(r + "/") or r.startswith(ad + "/"):
            raise UnsafeValue("archive dir", archive_dir, f"overlaps the deletion root {r}")
    return ad


def _kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise UnsafeValue("archive kind", kind, f"does not match {_KIND.pattern}")
    return kind


def _paths(paths: Sequence[str], roots: list[str]) -> list[str]:
    if isinstance(paths, str) or not paths:
        raise UnsafeValue("paths", paths, "must be a non-empty list of paths")
    checked = [path_under(p, roots) for p in paths]
    for a in checked:
        for b in checked:
            if a != b and b.startswith(a + "/"):
                raise UnsafeValue("path", b, f"lies inside {a}, which is archived as well")
    return sorted(set(checked))


def _root_args(roots: list[str]) -> str:
    return " ".join(q(r) for r in roots)


def _member(p: str) -> str:
    """The tar member name of an absolute path (archives are made with ``-C /``)."""
    return p.lstrip("/")


def archive_ops(
    account: str,
    paths: Sequence[str],
    roots: Sequence[str],
    archive_dir: str,
    kind: str,
    *,
    remove: bool = True,
) -> str:
    """Script text: archive ``paths`` into ``archive_dir``, verify the archive, then remove the paths."""
    acct = account_id(account)
    rts = check_roots(roots)
    ad = check_archive_dir(archive_dir, rts)
    knd = _kind(kind)
    pths = _paths(paths, rts)
    prefix = f"{acct}-{knd}-"
    lines = [_UNDER, _MOUNTS, f"_av_ad={q(ad)}", "_av_members=''", "_av_live=''"]
    for p in pths:
        lines.append(
            f"""
if [ -L {q(p)} ]; then fail "refused {p}: it is a symbolic link; nothing was archived or removed"; fi
if [ -e {q(p)} ]; then
  _av_rp=$(realpath -e -- {q(p)}) || fail "refused {p}: cannot resolve it; nothing was archived or removed"
  _av_under "$_av_rp" {_root_args(rts)} || \\
    fail "refused {p}: it resolves to $_av_rp, not below the roots {' '.join(rts)}; nothing was archived or removed"
  _av_no_mounts {q(p)} "$_av_rp" "nothing was archived or removed"
  _av_members="$_av_members {q(_member(p))}"
  _av_live="$_av_live {q(p)}"
fi"""
        )
    lines.append(
        f"""
if [ -z "$_av_members" ]; then
  # nothing left to archive (a repeated delete): report the newest archive of this account and kind again,
  # matching its names exactly (<account>-<kind>-<stamp>[-<n>].tar.gz, see the module doc)
  _av_last=''
  for _av_f in "$_av_ad"/{q(prefix)}{_STAMP_GLOB}*.tar.gz; do
    [ -f "$_av_f" ] && [ ! -L "$_av_f" ] || continue
    _av_x=${{_av_f#"$_av_ad"/{q(prefix)}}}
    _av_x=${{_av_x%.tar.gz}}
    case ${{_av_x#{_STAMP_GLOB}}} in
      '') ;;
      -|-*[!0-9]*) continue ;;
      -*) ;;
      *) continue ;;
    esac
    if [ -z "$_av_last" ] || [ "$_av_f" -nt "$_av_last" ]; then _av_last=$_av_f; fi
  done
  if [ -n "$_av_last" ]; then
    fact archive "$_av_last"
    fact sha256 "$(sha256sum < "$_av_last" | cut -d' ' -f1)"
    fact size "$(stat -c %s -- "$_av_last")"
    fact listing "$_av_last.list"
  fi
  fact absent {q(" ".join(pths))}
  exit 0
fi
mkdir -p -- "$_av_ad" || fail "cannot create archive dir $_av_ad; nothing was removed"
_av_rad=$(realpath -e -- "$_av_ad") || fail "cannot resolve archive dir $_av_ad; nothing was removed"
for _av_p in $_av_live; do
  _av_rp=$(realpath -e -- "$_av_p") || fail "cannot resolve $_av_p; nothing was removed"
  case $_av_rad/ in "$_av_rp"/*) fail "refused: archive dir $_av_rad lies inside $_av_p; nothing was removed" ;; esac
done
_av_stamp=$(date -u +%Y%m%dT%H%M%SZ)
_av_name={q(acct)}-{knd}-$_av_stamp
_av_n=1
while [ -e "$_av_ad/$_av_name.tar.gz" ] || [ -e "$_av_ad/$_av_name.tar.gz.list" ]; do
  _av_n=$((_av_n + 1)); _av_name={q(acct)}-{knd}-$_av_stamp-$_av_n
done
_av_final="$_av_ad/$_av_name.tar.gz"
_av_tmp="$_av_ad/.$_av_name.tar.gz.tmp"
_av_ltmp="$_av_ad/.$_av_name.tar.gz.list.tmp"
_av_abort() {{ rm -f -- "$_av_tmp" "$_av_ltmp"; fail "$1; nothing was removed"; }}
# $_av_members holds quoted, validated names: word splitting after eval is intended
eval "set -- $_av_members"
_av_e=$(tar -C / --one-file-system -czf "$_av_tmp" -- "$@" 2>&1) || \\
  _av_abort "archive of$_av_live failed: $(printf '%s\\n' "$_av_e" | tail -n 1)"
gzip -t -- "$_av_tmp" 2>/dev/null || _av_abort "archive $_av_final failed gzip -t"
tar -C / -dzf "$_av_tmp" -- "$@" >&2 || _av_abort "archive $_av_final differs from the live tree (tar --compare)"
_av_entries=$(tar -tzf "$_av_tmp" | wc -l) || _av_abort "cannot list archive $_av_final"
_av_count=$(cd / && find "$@" -xdev ! -type s -printf x | wc -c) || _av_abort "cannot count the live tree"
[ "$_av_entries" -eq "$_av_count" ] || \\
  _av_abort "archive $_av_final holds $_av_entries entries but the live tree has $_av_count"
tar -tvzf "$_av_tmp" --full-time > "$_av_ltmp" || _av_abort "cannot write the listing of $_av_final"
_av_files=$(grep -c '^-' "$_av_ltmp") || :
_av_sha=$(sha256sum < "$_av_tmp" | cut -d' ' -f1) || _av_abort "cannot hash $_av_final"
_av_size=$(stat -c %s -- "$_av_tmp") || _av_abort "cannot stat $_av_final"
sync -- "$_av_tmp" "$_av_ltmp" || _av_abort "cannot sync $_av_final"
mv -f -- "$_av_ltmp" "$_av_final.list" || _av_abort "cannot rename the listing of $_av_final"
mv -f -- "$_av_tmp" "$_av_final" || _av_abort "cannot rename $_av_final"
sync -- "$_av_ad" || :
changed
fact archive "$_av_final"
fact sha256 "$_av_sha"
fact size "$_av_size"
fact entries "$_av_entries"
fact files "${{_av_files:-0}}"
fact listing "$_av_final.list"
fact paths "${{_av_live# }}"
"""
    )
    if remove:
        lines.append(
            """
for _av_p in $_av_live; do
  _av_no_mounts "$_av_p" "$(realpath -e -- "$_av_p")" "it was archived to $_av_final but not removed"
done
for _av_p in $_av_live; do
  rm -rf --one-file-system -- "$_av_p" || fail "removing $_av_p failed after it was archived to $_av_final"
  [ ! -e "$_av_p" ] || fail "$_av_p still exists after removal (archived to $_av_final)"
done
"""
        )
    return "\n".join(lines)


def restore_ops(
    account: str,
    paths: Sequence[str],
    roots: Sequence[str],
    archive_dir: str,
    archive: str,
    sha256: str,
) -> str:
    """Script text: check ``archive`` against ``sha256`` and extract ``paths`` from it back in place."""
    account_id(account)
    rts = check_roots(roots)
    ad = check_archive_dir(archive_dir, rts)
    arc = path_under(archive, [ad])
    if not arc.endswith(".tar.gz") or "/" in arc[len(ad) + 1:]:
        raise UnsafeValue("archive", archive, f"is not a .tar.gz file directly inside {ad}")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise UnsafeValue("sha256", sha256, "is not 64 lower-case hex digits")
    pths = _paths(paths, rts)
    lines = [
        _UNDER,
        _MOUNTS,
        f"""
_av_arc={q(arc)}
[ -f "$_av_arc" ] && [ ! -L "$_av_arc" ] || fail "archive $_av_arc does not exist; nothing was restored"
_av_rarc=$(realpath -e -- "$_av_arc") || fail "cannot resolve archive $_av_arc"
_av_under "$_av_rarc" {q(ad)} || fail "refused archive $_av_arc: it resolves to $_av_rarc, outside {ad}"
_av_sha=$(sha256sum < "$_av_arc" | cut -d' ' -f1) || fail "cannot hash $_av_arc"
[ "$_av_sha" = {q(sha256)} ] || \\
  fail "archive $_av_arc has sha256 $_av_sha, expected {sha256}; nothing was restored"
gzip -t -- "$_av_arc" 2>/dev/null || fail "archive $_av_arc failed gzip -t; nothing was restored"
_av_todo=''
_av_new=''
_av_empty=''
""",
    ]
    for p in pths:
        m = _member(p)
        parent = p.rsplit("/", 1)[0] or "/"
        lines.append(
            f"""
tar -tzf "$_av_arc" -- {q(m)} >/dev/null 2>&1 || fail "archive $_av_arc holds no {p}; nothing was restored"
[ ! -L {q(p)} ] || fail "refused {p}: it is a symbolic link; nothing was restored"
_av_rp=$(realpath -e -- {q(parent)}) || fail "refused {p}: its parent {parent} does not exist; nothing was restored"
# the parent may be a root itself: test a child of it
if ! _av_under "$_av_rp/x" {_root_args(rts)}; then
  fail "refused {p}: its parent resolves to $_av_rp, outside the roots {' '.join(rts)}; nothing was restored"
fi
if [ ! -e {q(p)} ]; then
  _av_new="$_av_new {q(p)}"
  _av_todo="$_av_todo {q(m)}"
elif [ -d {q(p)} ] && [ -z "$(ls -A -- {q(p)})" ]; then
  _av_no_mounts {q(p)} "$(realpath -e -- {q(p)})" "nothing was restored"
  _av_empty="$_av_empty {q(p)}"
  _av_todo="$_av_todo {q(m)}"
elif ! tar -C / -dzf "$_av_arc" -- {q(m)} >/dev/null 2>&1; then
  fail "refused {p}: it exists and is not empty (and differs from $_av_arc); nothing was restored"
fi"""
        )
    lines.append(
        """
[ -n "$_av_todo" ] || { fact restored ''; exit 0; }
eval "set -- $_av_todo"
_av_undo() {
  for _av_p in $_av_new; do rm -rf --one-file-system -- "$_av_p"; done
  for _av_p in $_av_empty; do find "$_av_p" -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system -- {} +; done
  fail "$1; what it had written was removed"
}
changed
tar -C / -xzpf "$_av_arc" -- "$@" >&2 || _av_undo "extracting $* from $_av_arc failed"
tar -C / -dzf "$_av_arc" -- "$@" >&2 || _av_undo "restored $* differs from $_av_arc"
_av_done=''
for _av_m in "$@"; do _av_done="$_av_done /$_av_m"; done
fact restored "${_av_done# }"
"""
    )
    return "\n".join(lines)


def prune_ops(archive_dir: str, retention_days: int, *, dry_run: bool = False) -> str:
    """Script text: remove archives, listings and stale temporaries older than ``retention_days``
    (``dry_run``: only list them). Facts: ``pruned`` (count) and ``files`` (their names)."""
    ad = path(archive_dir)
    if ad == "/":
        raise UnsafeValue("archive dir", archive_dir, "cannot be '/'")
    if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 1:
        raise UnsafeValue("retention days", retention_days, "must be a whole number of days, at least 1")
    minutes = retention_days * 1440
    return f"""
_av_ad={q(ad)}
[ -d "$_av_ad" ] || {{ fact pruned 0; exit 0; }}
[ ! -L "$_av_ad" ] || fail "refused archive dir $_av_ad: it is a symbolic link"
find "$_av_ad" -mindepth 1 -maxdepth 1 -type f -mmin +{minutes} \\
  \\( -name '*.tar.gz' -o -name '*.tar.gz.list' -o -name '.*.tar.gz.tmp' -o -name '.*.tar.gz.list.tmp' \\) \\
  -printf '%f\\n' {"" if dry_run else "-delete"} > "$_ar_tmp/pruned" || fail "cannot prune $_av_ad"
_av_n=$(wc -l < "$_ar_tmp/pruned")
[ "$_av_n" -eq 0 ] || {"true" if dry_run else "changed"}
fact pruned "$_av_n"
fact files "$(tr '\\n' ' ' < "$_ar_tmp/pruned")"
"""


def probe_lines(archive_dir: str) -> list[str]:
    """``arrears hosts check`` lines for a connector that deletes through this module: its tools are there,
    the mount table is readable (deletions are refused without it), the archive dir (when it exists) is
    writable."""
    a = q(path(archive_dir))
    return [
        *require_commands([("", c) for c in ("tar", "gzip", "sha256sum", "awk")]),
        "[ -r /proc/self/mountinfo ] || fail 'cannot read the mount table /proc/self/mountinfo: deletions would be "
        "refused'",
        f"if [ -d {a} ]; then [ -w {a} ] || fail {q(f'archive dir {archive_dir} is not writable')}; fi",
    ]

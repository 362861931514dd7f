# The batch protocol's shell (connectors.base): defined once at the top of every batch script.
# shellcheck shell=sh
# shellcheck disable=SC2034  # variables set here are read by the operations and handlers
set -u
umask 077
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
_ar_tmp=$(mktemp -d "${TMPDIR:-/tmp}/arrears.XXXXXX") || { echo "@@arrears-fatal mktemp failed"; exit 97; }
trap 'rm -rf "$_ar_tmp"' EXIT
exec 6>&1  # the batch's own stdout: fact lines and results go here, whatever an operation redirects
_ar_nl='
'
_ar_id=
_ar_hs=
changed() { echo x >&3; }
# one line per fact, printed as it is made; a line break in a value would end the line, so it becomes a blank
fact() {
  _ar_v=$2
  while :; do
    case $_ar_v in *"$_ar_nl"*) _ar_v=${_ar_v%%"$_ar_nl"*}" "${_ar_v#*"$_ar_nl"} ;; *) break ;; esac
  done
  printf '@@arrears-fact %s %s=%s\n' "$_ar_id" "$1" "$_ar_v" >&6
}
fail() { printf '%s\n' "$*" >&2; exit 1; }
_ar_b64() { if [ -s "$1" ]; then base64 -w0 < "$1" 2>/dev/null; fi; }
_ar_emit() {
  if [ -s "$_ar_tmp/c" ]; then _ar_ch=true; else _ar_ch=false; fi
  _ar_o=; _ar_e=
  if [ -s "$_ar_tmp/o" ]; then _ar_o=$(_ar_b64 "$_ar_tmp/o"); fi
  if [ -s "$_ar_tmp/e" ]; then _ar_e=$(_ar_b64 "$_ar_tmp/e"); fi
  printf '@@arrears {"id":"%s","rc":%d,"changed":%s,"out":"%s","err":"%s"}\n' "$1" "$2" "$_ar_ch" "$_ar_o" "$_ar_e" >&6
}
_ar_mark() {
  for _ar_h in $1; do
    [ ! -e "$_ar_tmp/m.$_ar_h" ] || continue
    if [ -n "$_ar_pending" ]; then
      true 2> "$_ar_tmp/e" > "$_ar_pending/$_ar_h" || return 1  # not ':', whose failed redirection ends sh
      sync -- "$_ar_pending/$_ar_h" "$_ar_pending" 2>/dev/null || sync
    fi
    : > "$_ar_tmp/m.$_ar_h"
  done
}
# _ar_do ID FUNCTION 'HANDLERS' [COMMIT|-] [inline]: run one operation; with COMMIT, an operation that
# succeeded only queued its change: its result line is the commit's to print, once the change is on disk
# (_ar_commit). An inline operation runs in the batch's shell, without a subshell: it never calls fail or
# exit, and returns non-zero after printing its error to stderr.
_ar_do() {
  : > "$_ar_tmp/c"; : > "$_ar_tmp/o"; : > "$_ar_tmp/e"
  _ar_id=$1; _ar_hs=$3
  if ! _ar_mark "$3"; then
    printf 'cannot record the pending handlers (%s) in %s; nothing was changed\n' "$3" "$_ar_pending" >> "$_ar_tmp/e"
    _ar_rc=1
    _ar_emit "$1" "$_ar_rc"
    return 0
  fi
  case ${5-} in
    inline) { "$2"; } > "$_ar_tmp/o" 2> "$_ar_tmp/e" 3> "$_ar_tmp/c" < /dev/null ;;  # no fail, no exit in it
    *) ( set -e; "$2" ) > "$_ar_tmp/o" 2> "$_ar_tmp/e" 3> "$_ar_tmp/c" < /dev/null ;;
  esac
  _ar_rc=$?
  if [ "${4:--}" != - ] && [ "$_ar_rc" -eq 0 ]; then
    if [ -s "$_ar_tmp/c" ]; then _ar_ch=1; else _ar_ch=0; fi  # a change of its own, besides the queued one
    printf '%s %s %s\n' "$1" "$_ar_ch" "$3" >> "$_ar_tmp/k.$4"
    return 0
  fi
  if [ -s "$_ar_tmp/c" ] && [ "$_ar_rc" -eq 0 ]; then
    for _ar_h in $3; do printf '%s\n' "$1" >> "$_ar_tmp/h.$_ar_h"; done
  fi
  _ar_emit "$1" "$_ar_rc"
}
# _ar_commit NAME FUNCTION: run a commit (one pass over the files its operations queued changes to); it
# prints "@@arrears-done ID CHANGED(0|1)", "@@arrears-fail ID MESSAGE" (that operation failed, nothing of it
# changed) and "@@arrears-fact ID KEY=VALUE" lines, which go out only after it returned. When it fails, each
# of its operations fails with its message, and the handlers its operations name still run: part of the
# change may be on disk.
_ar_commit() {
  [ -s "$_ar_tmp/k.$1" ] || return 0
  : > "$_ar_tmp/c"; : > "$_ar_tmp/e"
  _ar_id="commit:$1"; _ar_hs=
  ( set -e; "$2" ) > "$_ar_tmp/r.$1" 2> "$_ar_tmp/e" < /dev/null
  _ar_rc=$?
  _ar_err=
  if [ "$_ar_rc" -ne 0 ]; then
    [ -s "$_ar_tmp/e" ] || printf 'commit %s failed with exit %d\n' "$1" "$_ar_rc" > "$_ar_tmp/e"
    _ar_err=$(_ar_b64 "$_ar_tmp/e")
  fi
  LC_ALL=C awk -v tmp="$_ar_tmp" -v err="$_ar_err" -v k="$_ar_tmp/k.$1" '
    function b64(s,   o, i, n, v, B) {
      B = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"; o = ""; n = length(s)
      for (i = 1; i <= n; i += 3) {
        v = ord[substr(s, i, 1)] * 65536 + (i < n ? ord[substr(s, i + 1, 1)] * 256 : 0) + (i + 1 < n ? ord[substr(s, i + 2, 1)] : 0)
        o = o substr(B, int(v / 262144) + 1, 1) substr(B, int(v / 4096) % 64 + 1, 1)
        o = o (i < n ? substr(B, int(v / 64) % 64 + 1, 1) : "=") (i + 1 < n ? substr(B, v % 64 + 1, 1) : "=")
      }
      return o
    }
    BEGIN {
      for (i = 1; i < 256; i++) ord[sprintf("%c", i)] = i
      while ((getline l < k) > 0) { n = split(l, w, " "); ids[++c] = w[1]; hs[w[1]] = l; own[w[1]] = w[2] }
    }
    err == "" && /^@@arrears-fact / { print; next }
    err == "" && $1 == "@@arrears-done" && ($2 in hs) && !($2 in done) {
      done[$2]; ch = ($3 == 1 || own[$2] == 1)
      printf "@@arrears {\"id\":\"%s\",\"rc\":0,\"changed\":%s,\"out\":\"\",\"err\":\"\"}\n", $2, ch ? "true" : "false"
      if (ch) { n = split(hs[$2], w, " "); for (i = 3; i <= n; i++) print $2 >> (tmp "/h." w[i]) }
    }
    err == "" && $1 == "@@arrears-fail" && ($2 in hs) && !($2 in done) {
      done[$2]; m = $0; sub(/^@@arrears-fail [^ ]+ /, "", m)
      printf "@@arrears {\"id\":\"%s\",\"rc\":1,\"changed\":false,\"out\":\"\",\"err\":\"%s\"}\n", $2, b64(m "\n")
    }
    END {
      for (i = 1; i <= c; i++) {
        id = ids[i]; if (id in done) continue
        e = err; if (e == "") e = "bm90IHJlcG9ydGVkIGJ5IGl0cyBjb21taXQK"  # "not reported by its commit"
        printf "@@arrears {\"id\":\"%s\",\"rc\":1,\"changed\":false,\"out\":\"\",\"err\":\"%s\"}\n", id, e
        if (err != "") { n = split(hs[id], w, " "); for (j = 3; j <= n; j++) print "pending" >> (tmp "/h." w[j]) }
      }
    }' "$_ar_tmp/r.$1" >&6
  echo >&6  # a builtin's write: with the connection gone the batch ends here, as after an operation's line
}
override() {
  printf '%s\n' "$3" > "$_ar_tmp/ov"
  printf '@@arrears {"id":"%s","rc":%d,"changed":false,"override":true,"out":"","err":"%s"}\n' \
    "$1" "$2" "$(_ar_b64 "$_ar_tmp/ov")" >&6
}
# _ar_handler NAME FUNCTION: run a handler when an operation naming it changed something, or a batch
# before this one left it pending; forget the pending record once it succeeded, or once no operation
# naming it changed anything
_ar_handler() {
  if [ -s "$_ar_tmp/h.$1" ]; then
    # a shell variable, not exported: thousands of ids would not fit in the environment of a command
    # shellcheck disable=SC2034  # read by the handler
    ARREARS_CHANGED=$(tr '\n' ' ' < "$_ar_tmp/h.$1")
    _ar_do "handler:$1" "$2" ''
    [ "$_ar_rc" -ne 0 ] || [ -z "$_ar_pending" ] || rm -f "$_ar_pending/$1"
  elif [ -e "$_ar_tmp/m.$1" ] && [ -n "$_ar_pending" ]; then
    rm -f "$_ar_pending/$1"
  fi
}
# _ar_was_pending NAME: a batch before this one recorded the handler and did not see it through
_ar_was_pending() {
  if [ -n "$_ar_pending" ] && [ -e "$_ar_pending/$1" ]; then printf 'pending\n' >> "$_ar_tmp/h.$1"; fi
}
# _ar_lock PATH: one batch at a time per host: a batch left running by an agent that died (or lost its
# connection) finishes before the next one starts, so the two never interleave their changes
_ar_lock() {
  command -v flock >/dev/null 2>&1 || return 0
  exec 9>>"$1" || { echo "@@arrears-fatal cannot open the host lock $1"; exit 97; }
  flock -w 600 9 || { echo "@@arrears-fatal another batch has held $1 for 600 s"; exit 97; }
}

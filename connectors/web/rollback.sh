# The web handler (connectors.web.common): the config test, one graceful reload, and the rollback of a
# batch's snippet changes when the test or the reload fails. Set by Python before this: _w_pend (the
# pending records), _w_hooks (the snippets' folder), _w_prefix (a case pattern for this backend's
# operation ids), _w_test_cmd and _w_reload_cmd (command lines, each word quoted); and _w_first (cause.sh).
# shellcheck shell=sh
_w_test() { eval "$_w_test_cmd" > "$_ar_tmp/web.out" 2>&1 < /dev/null; }
_w_reload() { eval "$_w_reload_cmd" > "$_ar_tmp/web.out" 2>&1 < /dev/null; }
_w_put() {  # site file: install file as the site's snippet
  cp -- "$2" "$_w_hooks/$1.conf.arrears-tmp" && chmod 644 -- "$_w_hooks/$1.conf.arrears-tmp" &&
    mv -f -- "$_w_hooks/$1.conf.arrears-tmp" "$_w_hooks/$1.conf"
}
# The records (commit.sh): $_w_pend/<site>.conf is the snippet as it was before this batch changed it; no
# record: there was none. The state this batch wrote is the snippet in place (none, for a resume), saved as
# <site>.new only here, before a rollback.
_w_old() {  # site: back to the state before this batch
  if [ -f "$_w_pend/$1.conf" ]; then _w_put "$1" "$_w_pend/$1.conf"; else rm -f -- "$_w_hooks/$1.conf"; fi
}
_w_keep() {  # id: save the state its operation wrote, before the rollback
  case $1 in
    *:resume:*) ;;
    *) if [ -f "$_w_hooks/${1##*:}.conf" ]; then cp -p -- "$_w_hooks/${1##*:}.conf" "$_w_pend/${1##*:}.new"; fi ;;
  esac
}
_w_new() {  # id: the state its operation wrote
  case $1 in
    *:resume:*) rm -f -- "$_w_hooks/${1##*:}.conf" ;;
    *) if [ -f "$_w_pend/${1##*:}.new" ]; then _w_put "${1##*:}" "$_w_pend/${1##*:}.new"; fi ;;
  esac
}
_w_forget() { rm -f -- "$_w_pend/$1.conf" "$_w_pend/$1.new"; }
_w_ids=''
_w_n=0
for _w_id in $ARREARS_CHANGED; do
  # shellcheck disable=SC2254  # the pattern is the backend's prefix
  case $_w_id in $_w_prefix) ;; *) continue ;; esac
  _w_s=${_w_id##*:}
  case $_w_s in ''|.*|*[!a-z0-9.-]*) continue ;; esac
  _w_ids="$_w_ids $_w_id"
  _w_n=$((_w_n + 1))
done
if _w_test; then
  fact config_test ok
  if _w_reload; then
    # every change on disk is loaded: no record is needed any more (one pass for the whole batch, when
    # there are any: records are named after their sites, never hidden)
    for _w_f in "$_w_pend"/*; do
      if [ -e "$_w_f" ] || [ -L "$_w_f" ]; then find "$_w_pend" -mindepth 1 -maxdepth 1 ! -type d -delete; fi
      break
    done
    fact reloads 1
    fact kept "$_w_n"
    return 0
  fi
  _w_msg="reload failed: $(_w_first)"
  for _w_id in $_w_ids; do
    _w_old "${_w_id##*:}"; _w_forget "${_w_id##*:}"; override "$_w_id" 1 "$_w_msg; change rolled back"
  done
  fact reloads 0
  fail "$_w_msg"
fi
fact config_test failed
fact first_error "$(_w_first)"
for _w_id in $_w_ids; do _w_keep "$_w_id"; _w_old "${_w_id##*:}"; done
_w_kept=0
for _w_id in $_w_ids; do
  _w_s=${_w_id##*:}
  _w_new "$_w_id"
  if _w_test; then
    _w_kept=$((_w_kept + 1))
  else
    override "$_w_id" 1 "config test failed: $(_w_first)"
    _w_old "$_w_s"
  fi
  _w_forget "$_w_s"
done
fact kept "$_w_kept"
if [ "$_w_kept" -eq 0 ]; then fact reloads 0; return 0; fi
if _w_reload; then fact reloads 1; return 0; fi
fact reloads 0
fail "reload failed after the rollback: $(_w_first)"

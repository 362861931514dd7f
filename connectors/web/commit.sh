# The web commit (connectors.web.common): one pass over the snippets of every site a batch suspends,
# resumes or reports. Set by Python before this: _w_b (the backend), _w_hooks (the snippets' folder),
# _w_pend (the pending records), _w_dirs (the vhost folders, blank-separated), _w_any (an extended regular
# expression matching any site's hook line). The operations queued one line each, "action<TAB>id<TAB>site
# <TAB>hook pattern<TAB>path<TAB>message", in $_ar_tmp/wq.$_w_b (suspend, resume) or $_ar_tmp/wr.$_w_b
# (status), a suspension's snippet text last (its lines joined by tabs), its own page in $_ar_tmp/wp.<id>
# (path: the page's file; for a resume the page to remove, for a status the site's vhost file).
# One grep reads every vhost for hook lines, once. One awk then reads the queue and each site's snippet, and
# works out every change: it saves a snippet about to be replaced as its pending record
# ($_w_pend/<site>.conf; none: there was no snippet), writes each new snippet (and page) into a staging
# folder beside its target, and lists the stale records and pages to remove and the snippets that leave,
# all before any rename. Then one rm removes the stale records, one mv moves the snippets of resumed sites
# into the pending records, and one mv renames the staged pages, then the staged snippets, in. The facts
# and results it prints go out once all of that is done.
# shellcheck shell=sh
_w_stage=$_w_hooks/.arrears-snippets
_w_pstage=
if [ -s "$_ar_tmp/wq.$_w_b" ]; then
  [ -d "$_w_hooks" ] || mkdir -p -- "$_w_hooks" || fail "cannot make $_w_hooks"
  [ -d "$_w_pend" ] || mkdir -p -- "$_w_pend" || fail "cannot make $_w_pend"
  [ ! -e "$_w_stage" ] || rm -rf -- "$_w_stage"  # left by a batch that died: never renamed in
  mkdir -- "$_w_stage" || fail "cannot make $_w_stage"
  if [ -n "${_w_proot-}" ] && [ -e "$_ar_tmp/wpage.$_w_b" ]; then
    _w_pstage=$_w_proot/.arrears-pages
    [ -d "$_w_proot" ] || mkdir -p -- "$_w_proot" || fail "cannot make $_w_proot"
    [ ! -e "$_w_pstage" ] || rm -rf -- "$_w_pstage"
    mkdir -- "$_w_pstage" || fail "cannot make $_w_pstage"
  fi
fi
# one read of every vhost; a hook in no file, or no vhost folder at all, is a missing hook
# shellcheck disable=SC2086  # the folders, split on blanks (paths hold none)
grep -RhoisE -- "$_w_any" $_w_dirs > "$_ar_tmp/wh.$_w_b" 2>/dev/null || true
umask 022
_w_tmp=$_ar_tmp _w_stage=$_w_stage _w_pstage=$_w_pstage _w_hooks=$_w_hooks _w_pend=$_w_pend _w_b=$_w_b \
awk -F '\t' '
function slurp(f,   r, s, all, n) {  # the bytes of f into got; 1 when it exists
  RS = "\001"; all = ""; n = 0
  while ((r = (getline s < f)) > 0) all = all (n++ ? RS : "") s
  close(f); RS = "\n"; got = all
  return r == 0
}
function put(f, text) {
  printf "%s", text > f
  if (close(f) != 0) { printf "cannot write %s\n", f > "/dev/stderr"; exit 2 }
}
function fact(i, k, v) { printf "@@arrears-fact %s %s.%s=%s\n", id[i], site[i], k, v }
function read_queue(f,   l, w, k, j) {
  while ((getline l < f) > 0) {
    if ((k = split(l, w, "\t")) < 7) continue
    n++; act[n] = w[1]; id[n] = w[2]; site[n] = w[3]; path[n] = w[5]; msg[n] = w[6]; text[n] = w[7]
    for (j = 8; j <= k; j++) text[n] = text[n] "\n" w[j]
    if (w[4] != "-") pat[w[3]] = tolower(w[4])  # one backend, one pattern per site
  }
  close(f)
}
BEGIN {
  tmp = ENVIRON["_w_tmp"]; b = ENVIRON["_w_b"]; stage = ENVIRON["_w_stage"]; pstage = ENVIRON["_w_pstage"]
  hooks = ENVIRON["_w_hooks"]; pend = ENVIRON["_w_pend"]
  read_queue(tmp "/wq." b); read_queue(tmp "/wr." b)
  # the hook lines: the site is what follows the last "/" up to one of its dots; its own pattern decides
  while ((getline l < (tmp "/wh." b)) > 0) {
    l = tolower(l); s = l; sub(/.*\//, "", s)
    for (p = 1; p <= length(s); p++) {
      if (substr(s, p, 1) != ".") continue
      c = substr(s, 1, p - 1)
      if ((c in pat) && !(c in hooked) && l ~ pat[c]) hooked[c]
    }
  }
  close(tmp "/wh." b)
  rm = tmp "/w.rm"; printf "" > rm; mvs = tmp "/w.mv"; printf "" > mvs
  for (i = 1; i <= n; i++) {
    s = site[i]; snip = hooks "/" s ".conf"; rec = pend "/" s ".conf"; ch = 0
    if (act[i] == "status") {
      fact(i, "hook", (s in hooked) ? "present" : "missing")
      fact(i, "suspended", slurp(snip) ? "yes" : "no")
      fact(i, "vhost", slurp(path[i]) ? "present" : "absent")
      printf "@@arrears-done %s 0\n", id[i]
      continue
    }
    if (s in changing) { printf "@@arrears-fail %s site %s is changed twice in one batch\n", id[i], s; continue }
    changing[s]
    if (act[i] == "suspend") {
      if (!(s in hooked)) { fact(i, "hook", "missing"); printf "@@arrears-fail %s %s\n", id[i], msg[i]; continue }
      fact(i, "hook", "present")
      if (path[i] != "-") {  # the page of the account, before the snippet that serves it
        slurp(tmp "/wp." id[i]); page = got
        if (!slurp(path[i]) || got != page) { p = path[i]; sub(/.*\//, "", p); put(pstage "/" p, page); pages = 1; ch = 1 }
      }
      if (slurp(snip)) {
        if (got != text[i]) { put(rec, got); ch = 2 }
      } else { if (slurp(rec)) print rec > rm; ch = 2 }  # no record: there was no snippet
      if (ch == 2) { put(stage "/" s ".conf", text[i]); staged = 1 }
      fact(i, "suspended", "yes")
    } else {
      if (path[i] != "-" && slurp(path[i])) { print path[i] > rm; ch = 1 }
      if (slurp(snip)) { print snip > mvs; ch = 1 }  # it leaves, kept as the state before this batch
      fact(i, "suspended", "no")
    }
    printf "@@arrears-done %s %d\n", id[i], ch ? 1 : 0
  }
  close(rm); close(mvs)
  if (pages) put(tmp "/w.pages", "")
  if (staged) put(tmp "/w.staged", "")
}' || fail "cannot work out the snippets"
if [ -s "$_ar_tmp/w.rm" ]; then xargs -d '\n' rm -f -- < "$_ar_tmp/w.rm" || fail "cannot remove the old records"; fi
if [ -s "$_ar_tmp/w.mv" ]; then
  xargs -d '\n' mv -f -t "$_w_pend" -- < "$_ar_tmp/w.mv" || fail "cannot remove the snippets"
fi
if [ -e "$_ar_tmp/w.pages" ]; then mv -f -- "$_w_pstage"/* "$_w_proot/" || fail "cannot write the pages"; fi
if [ -e "$_ar_tmp/w.staged" ]; then mv -f -- "$_w_stage"/* "$_w_hooks/" || fail "cannot write the snippets"; fi
if [ -e "$_w_stage" ]; then rmdir -- "$_w_stage" 2>/dev/null || true; fi
if [ -n "$_w_pstage" ]; then rmdir -- "$_w_pstage" 2>/dev/null || true; fi

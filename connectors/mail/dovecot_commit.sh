# The dovecot+postfix commit (connectors.mail.dovecot_postfix): one pass over the list files for every
# mailbox a batch suspends or resumes. Set by Python before this: _dp_st (the saved-flags folder),
# _dp_targets (lines "flag<TAB>file<TAB>kind<TAB>form<TAB>suffix"), _dp_files (the list files). The
# operations queued one line each in $_ar_tmp/dp.req: "action<TAB>id<TAB>mailbox<TAB>passwd key<TAB>flags".
# One awk reads every list file once and every saved record, works out each mailbox's flags, writes each
# changed file's new content beside it (<file>.arrears-tmp), the new records into a staging folder and
# what the handlers must do ($_dp_st/dovecot.reload, dovecot.kick, postfix.rebuild), all before any
# rename. Then: the records are renamed in (one mv: a suspension's record is in place before its lists
# change), each changed file is renamed over itself, and the records of resumed mailboxes are removed
# (after their lists changed). The facts and results it prints go out once all of that is done.
# shellcheck shell=sh
umask 022

_dp_stage=$_dp_st/.arrears-stage
[ -d "$_dp_st" ] || mkdir -p -- "$_dp_st"
[ ! -e "$_dp_stage" ] || rm -rf -- "$_dp_stage"  # left by a batch that died: never renamed in
mkdir -m 700 -- "$_dp_stage" || fail "cannot make $_dp_stage"
for _dp_f in $_dp_files; do
  if [ -e "$_dp_f" ] && [ ! -r "$_dp_f" ]; then fail "cannot read $_dp_f"; fi
  [ -d "${_dp_f%/*}" ] || mkdir -p -- "${_dp_f%/*}" || fail "cannot make the folder of $_dp_f"
done
_dp_stage=$_dp_stage _dp_st=$_dp_st _dp_targets=$_dp_targets _dp_plan=$_ar_tmp/dp.plan _dp_rm=$_ar_tmp/dp.rm \
awk -F '\t' '
function has_all(c, b,   t, any, all) {
  any = 0; all = 1
  for (t = 1; t <= nt; t++) if (tflag[t] == c) { any = 1; if (!((tfile[t], b) in has)) all = 0 }
  return any && all
}
function flags(b,   i, c, s) {
  s = ""
  for (i = 1; i <= 6; i++) { c = substr(ALL, i, 1); if (has_all(c, b)) s = s c }
  return s
}
function minus(a, b,   i, c, s) {
  s = ""
  for (i = 1; i <= 6; i++) { c = substr(ALL, i, 1); if (index(a, c) && !index(b, c)) s = s c }
  return s
}
function plus(a, b) { return minus(a b, "") }
function record(b,   f, l, r, raw) {
  if (b in recon) return
  f = st "/" b ".flags"; rb[b] = ""; ra[b] = ""; raw = ""; recon[b] = 0
  while ((r = (getline l < f)) > 0) {
    recon[b] = 1; raw = raw l "\n"
    if (l ~ /^before=/) rb[b] = rb[b] substr(l, 8); else if (l ~ /^added=/) ra[b] = ra[b] substr(l, 7)
  }
  close(f)
  sub(/\n+$/, "", raw); recraw[b] = raw; rb[b] = plus(rb[b], ""); ra[b] = plus(ra[b], "")
}
function line_for(t, b) { return (tform[t] == "key" ? key[b] : b) tsuf[t] }
function touch(t, b, adding) {
  dirty[tfile[t]] = 1
  if (tkind[t] == "dovecot") { reload = 1; if (adding) kick[b] = 1 }
  if (tkind[t] == "postfix") rebuild = 1
}
function fact(i, k, v) { printf "@@arrears-fact %s %s:%s=%s\n", id[i], k, box[i], v }
BEGIN {
  ALL = "dpwibr"; st = ENVIRON["_dp_st"]; stage = ENVIRON["_dp_stage"]
  nt = split(ENVIRON["_dp_targets"], tl, "\n")
  for (t = 1; t <= nt; t++) {
    split(tl[t], w, "\t"); tflag[t] = w[1]; tfile[t] = w[2]; tkind[t] = w[3]; tform[t] = w[4]; tsuf[t] = w[5]
    if (!(w[2] in known)) { known[w[2]]; files[++nf] = w[2] }
  }
}
NF >= 4 { n++; act[n] = $1; id[n] = $2; box[n] = $3; key[$3] = $4; req[n] = $5; who[$3] = $3; who[$4] = $3 }
END {
  for (j = 1; j <= nf; j++) {  # one read of every list file
    f = files[j]; c = 0
    while ((r = (getline l < f)) > 0) {
      line[f, ++c] = l; split(l, x, /[ \t:]/)
      if (x[1] in who) { owner[f, c] = who[x[1]]; has[f, who[x[1]]] = 1 }
    }
    cnt[f] = c; close(f)
  }
  for (i = 1; i <= n; i++) {
    b = box[i]; record(b); cur = flags(b); ch = 0
    if (act[i] == "suspend") {
      if (recon[b]) { before = rb[b]; added = ra[b] } else { before = cur; added = "" }
      new = minus(req[i], cur); added = plus(added, new)
      want = "before=" before "\nadded=" added
      if (!recon[b] || recraw[b] != want) {
        print want > (stage "/" b ".flags"); close(stage "/" b ".flags"); staged = 1
        recon[b] = 1; rb[b] = before; ra[b] = added; recraw[b] = want; delete gone[b]; ch = 1
      }
      for (t = 1; t <= nt; t++) {
        if (!index(new, tflag[t]) || ((tfile[t], b) in has)) continue
        has[tfile[t], b] = 1; addb[tfile[t], ++addn[tfile[t]]] = b; addl[tfile[t], addn[tfile[t]]] = line_for(t, b)
        touch(t, b, 1); ch = 1
      }
      fact(i, "flags", flags(b)); fact(i, "before", before); fact(i, "added", added); fact(i, "suspended", "yes")
    } else if (!recon[b]) {
      fact(i, "flags", cur); fact(i, "suspended", "no")
    } else {
      drop = minus(ra[b], rb[b])
      for (t = 1; t <= nt; t++) {
        if (!index(drop, tflag[t]) || !((tfile[t], b) in has)) continue
        delete has[tfile[t], b]; del[tfile[t], b] = 1; touch(t, b, 0)
      }
      before = rb[b]; recon[b] = 0; gone[b] = 1; ch = 1
      fact(i, "flags", flags(b)); fact(i, "before", before); fact(i, "added", ""); fact(i, "suspended", "no")
    }
    done[i] = ch
  }
  plan = ENVIRON["_dp_plan"]; printf "" > plan
  for (j = 1; j <= nf; j++) {
    f = files[j]; if (!(f in dirty)) continue
    tmp = f ".arrears-tmp"; printf "" > tmp
    for (c = 1; c <= cnt[f]; c++) if (!(((f, c) in owner) && ((f, owner[f, c]) in del))) print line[f, c] > tmp
    for (k = 1; k <= addn[f]; k++) if ((f, addb[f, k]) in has) print addl[f, k] > tmp
    if (close(tmp) != 0) { printf "cannot write %s\n", tmp > "/dev/stderr"; exit 2 }
    print f > plan
  }
  close(plan)
  # what the handlers must do is written before the change it stands for
  if (reload) { printf "" > (st "/dovecot.reload"); close(st "/dovecot.reload") }
  for (b in kick) print b >> (st "/dovecot.kick")
  close(st "/dovecot.kick")
  if (rebuild) { printf "" > (st "/postfix.rebuild"); close(st "/postfix.rebuild") }
  rm = ENVIRON["_dp_rm"]; printf "" > rm
  for (b in gone) print st "/" b ".flags" > rm
  close(rm)
  if (staged) print "" > (stage "/.staged")
  for (i = 1; i <= n; i++) printf "@@arrears-done %s %d\n", id[i], done[i]
}' "$_ar_tmp/dp.req" || fail "cannot work out the new lists"
if [ -e "$_dp_stage/.staged" ]; then
  rm -f -- "$_dp_stage/.staged"
  chmod 600 -- "$_dp_stage"/* || fail "cannot set the mode of the saved flags in $_dp_stage"
  mv -f -- "$_dp_stage"/* "$_dp_st/" || fail "cannot save the flags records in $_dp_st"
fi
while IFS= read -r _dp_f; do
  mv -f -- "$_dp_f.arrears-tmp" "$_dp_f" || fail "cannot write $_dp_f"
done < "$_ar_tmp/dp.plan"
if [ -s "$_ar_tmp/dp.rm" ]; then xargs -d '\n' rm -f -- < "$_ar_tmp/dp.rm" || fail "cannot remove the saved flags"; fi
rmdir -- "$_dp_stage" 2>/dev/null || true

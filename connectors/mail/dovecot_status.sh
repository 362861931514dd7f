# The flags of one mailbox as the dovecot+postfix lists hold them (connectors.mail.dovecot_postfix, status).
# A line belongs to the mailbox $m when its first field (split on blanks or ':') is $m or $_dp_k, its
# passwd-file key (awk reads it from the environment, as -v would interpret its backslashes).
# _dp_scan FILE... reads every list file with one awk and keeps those listing the mailbox in $_dp_found.
# shellcheck shell=sh
_dp_found=
_dp_scanned=
_dp_scan() {
  _dp_on=
  for _dp_f; do if [ -f "$_dp_f" ]; then _dp_on="$_dp_on $_dp_f"; fi; done
  _dp_found=' '
  if [ -n "$_dp_on" ]; then
    # shellcheck disable=SC2086  # the list of files, split on blanks (paths hold none)
    _dp_found=" $(_dp_k=$_dp_k awk -F'[ \t:]' -v m="$m" 'BEGIN { k = ENVIRON["_dp_k"] }
      ($1 == m || $1 == k) && !(FILENAME in s) { s[FILENAME]; printf "%s ", FILENAME }' \
      $_dp_on) " || fail "cannot read the lists of $m"
  fi
  _dp_scanned=1
}
_dp_has() { case $_dp_found in *" $1 "*) return 0 ;; esac; return 1; }

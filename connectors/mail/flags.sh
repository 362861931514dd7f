# Set arithmetic on flag letters (canonical order kept), all shell builtins (connectors.mail):
# _mf_sub A B sets $_mf_r to A without B, _mf_or A B to A or B (no subshell needed); _mf_minus and
# _mf_plus print the same. $_mf_nl is a newline.
# shellcheck shell=sh
_mf_nl='
'
_mf_sub() {
  _mf_r=
  for _mf_c in d p w i b r; do
    case $1 in *$_mf_c*) case $2 in *$_mf_c*) ;; *) _mf_r=$_mf_r$_mf_c ;; esac ;; esac
  done
}
_mf_or() {
  _mf_r=
  for _mf_c in d p w i b r; do case "$1$2" in *$_mf_c*) _mf_r=$_mf_r$_mf_c ;; esac; done
}
_mf_minus() { _mf_sub "$1" "$2"; printf '%s' "$_mf_r"; }
_mf_plus() { _mf_or "$1" "$2"; printf '%s' "$_mf_r"; }

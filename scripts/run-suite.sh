#!/usr/bin/env bash
# The whole suite, and beside it (on the other core) every server-less test again under libfaketime five
# years ahead, so a test that depends on today's date fails. Both runs must pass; the second one's output
# is printed after the first's.
#
# NO_FAKE_STAT: libfaketime would shift the times some of tar's stat calls see and not others', so
# tar --compare of a fresh archive reports "Mod time differs"; file times stay the disk's.
# realtime: tests of threads that wait with a timeout (a heartbeat, a server thread): libfaketime shifts
# the monotonic clock Python computes their deadline with, and the kernel's wait never reaches it.
set -uo pipefail
bin=${1:-.venv/bin}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

NO_FAKE_STAT=1 faketime -f +1826d "$bin/pytest" -q -m "not servers and not realtime" --basetemp="$work/ahead" \
    >"$work/ahead.log" 2>&1 &
ahead=$!

"$bin/pytest" -q --basetemp="$work/now"
now_rc=$?

wait "$ahead"
ahead_rc=$?
echo
echo "== every server-less test again, five years ahead (faketime -f +1826d) =="
cat "$work/ahead.log"
if [ "$now_rc" -ne 0 ] || [ "$ahead_rc" -ne 0 ]; then
    echo "FAILED: the suite exited $now_rc, the run five years ahead exited $ahead_rc" >&2
    exit 1
fi

#!/usr/bin/env bash
# Install the Debian servers and tools the test suite needs (sshd, nginx, apache2, dovecot, postfix,
# PostgreSQL, sudo, faketime, ShellCheck; strace for the bench) without letting the package scripts
# start system services: the tests start their own servers on a private loopback.
set -euo pipefail
pkgs=(openssh-server openssh-client nginx-light apache2 dovecot-core dovecot-imapd dovecot-pop3d
      postfix curl iproute2 procps psmisc cron tar gzip coreutils passwd sudo faketime shellcheck
      postgresql strace)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: missing ${missing[*]}; run this script as root" >&2
  exit 1
fi
echo "install-test-deps: installing ${missing[*]}"
# Package scripts must not start system-wide daemons: the tests start their own.
restore_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  restore_policy=1
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -q --no-install-recommends "${missing[@]}"
[ -n "$restore_policy" ] && rm -f /usr/sbin/policy-rc.d
exit 0

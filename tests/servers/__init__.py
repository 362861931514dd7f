"""Real servers (sshd, nginx, apache2, dovecot, postfix) started on loopback by the test setup."""

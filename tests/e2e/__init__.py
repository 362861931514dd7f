"""End-to-end tests: the ``arrears`` command against one real fleet (sshd, nginx, apache2, dovecot, postfix, SMTP)."""

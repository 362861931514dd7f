"""A real SMTP server for tests (aiosmtpd on loopback): keeps every message it accepts and counts connections.

Fixtures (registered for the whole suite through ``pytest_plugins`` in tests/conftest.py):

``smtp_server``      module-scoped plain :class:`SmtpServer` (no TLS, no login).
``smtp_tls_server``  module-scoped :class:`SmtpServer` that requires STARTTLS and then AUTH, with a
                     self-signed certificate made for the test (``ca_file`` trusts it) and the login
                     ``SMTP_USER`` / ``SMTP_PASSWORD``.

Recipients in ``server.reject`` get ``550`` at RCPT (a hard bounce), those in ``server.reject_data`` get
``550`` at the end of DATA (a message refused for good after it was sent), those in ``server.defer`` get
``451`` at RCPT (try again later), those in ``server.closing`` get ``421`` at RCPT (the server is closing
the connection; the client must open a new one). The server offers PIPELINING (RFC 2920), as Postfix does, unless
``server.pipelining`` is set to False. Call ``reset()`` at the start of a test to forget earlier messages,
connections and rejections (and to offer PIPELINING again).
"""

from __future__ import annotations

import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.servers.base import free_port, wait_for

__all__ = ["SMTP_PASSWORD", "SMTP_USER", "Received", "SmtpServer", "make_certificate", "smtp_server",
           "smtp_tls_server"]

SMTP_USER = "notices"
SMTP_PASSWORD = "s3cret-Test-Pass"


def make_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (IP and ``localhost``): returns (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "arrears test smtp")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    authenticated: bool
    tls: bool

    @property
    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_EHLO(self, smtp: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        if self.server.pipelining:  # aiosmtpd reads commands in order from one stream: pipelined ones too
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, smtp: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        with self.server.lock:
            self.server.mails += 1
        envelope.mail_from = address  # what aiosmtpd does itself when there is no hook
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, smtp: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.server.reject:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address in self.server.defer:
            return f"451 4.3.0 <{address}>: Temporary failure, try again later"
        if address in self.server.closing:
            return "421 4.3.2 smtp.test Service shutting down, closing transmission channel"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        refused = [a for a in envelope.rcpt_tos if a in self.server.reject_data]
        if refused:
            return f"550 5.7.1 <{refused[0]}>: Message rejected: mailbox unavailable"
        data = envelope.original_content or b""
        with self.server.lock:
            self.server.messages.append(Received(
                mail_from=str(envelope.mail_from), rcpt_tos=tuple(envelope.rcpt_tos), data=data,
                authenticated=bool(session.authenticated), tls=session.ssl is not None,
            ))
        return "250 2.0.0 Message accepted"


class _Controller(Controller):
    def __init__(self, server: SmtpServer, **kwargs: Any) -> None:
        self.owner = server
        super().__init__(_Handler(server), **kwargs)

    def factory(self) -> SMTP:
        # one protocol object per TCP connection
        with self.owner.lock:
            self.owner.connections += 1
        return super().factory()  # type: ignore[no-any-return,no-untyped-call]


class SmtpServer:
    """aiosmtpd in a thread on ``127.0.0.1:port``; optionally STARTTLS-only with required AUTH."""

    def __init__(self, workdir: Path, *, tls: bool = False, auth: bool = False) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.lock = threading.Lock()
        self.messages: list[Received] = []
        self.connections = 0
        self.mails = 0  # MAIL commands answered
        self.logins: list[str] = []
        self.reject: set[str] = set()
        self.reject_data: set[str] = set()
        self.defer: set[str] = set()
        self.closing: set[str] = set()
        self.pipelining = True
        self.ca_file: Path | None = None
        kwargs: dict[str, Any] = {"hostname": self.host, "port": self.port, "server_hostname": "smtp.test",
                                  "ready_timeout": 10.0}
        if tls:
            cert, key = make_certificate(workdir, self.host)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            self.ca_file = cert
            kwargs.update(tls_context=context, require_starttls=True)
        if auth:
            kwargs.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=tls)
        self.controller = _Controller(self, **kwargs)

    def _authenticate(self, smtp: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
                SMTP_USER.encode(), SMTP_PASSWORD.encode()):
            with self.lock:
                self.logins.append(auth_data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def start(self) -> SmtpServer:
        self.controller.start()
        self.reset()  # forget the controller's own readiness probe
        return self

    def stop(self) -> None:
        self.controller.stop()

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.logins.clear()
            self.connections = 0
            self.mails = 0
        self.reject.clear()
        self.reject_data.clear()
        self.defer.clear()
        self.closing.clear()
        self.pipelining = True

    def wait_messages(self, count: int, timeout: float = 10.0) -> list[Received]:
        wait_for(lambda: len(self.messages) >= count, timeout=timeout, what=f"{count} messages on the SMTP server")
        with self.lock:
            return list(self.messages)


@pytest.fixture(scope="module")
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path_factory.mktemp("smtp")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def smtp_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path_factory.mktemp("smtp-tls"), tls=True, auth=True).start()
    try:
        yield server
    finally:
        server.stop()

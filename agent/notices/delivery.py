"""Delivery of notices to the account's billing address, over SMTP or into a spool folder.

:func:`make_notifier` returns an :class:`SmtpNotifier` (one connection per batch; 5xx answers are
permanent failures, 4xx and connection errors temporary) or a :class:`SpoolNotifier` (one ``.eml`` file
per notice, written atomically, never twice). Both report each notice's result as soon as it is known
(``on_result``), so the caller records it before the next one. Over SMTP that leaves one message that can
arrive twice: the one in flight when the agent dies after the server accepted it and before its result
was recorded; the next run sends it again with the same Message-ID. A spool file cannot be written twice.
"""

from __future__ import annotations

import email.policy
import email.utils
import os
import smtplib
import ssl
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from agent.notices.context import _atom
from agent.notices.settings import NoticeSettings
from agent.notices.templates import RenderedNotice

__all__ = [
    "Notifier",
    "OutgoingNotice",
    "ResultCallback",
    "SendResult",
    "SmtpNotifier",
    "SpoolNotifier",
    "make_notifier",
]


@dataclass(frozen=True)
class OutgoingNotice:
    key: str  # unique per (account, episode, stage)
    to: str  # the billing address
    message_id: str
    rendered: RenderedNotice
    date: datetime | None = None  # the Date header; default: when it is sent


@dataclass(frozen=True)
class SendResult:
    ok: bool
    permanent: bool = False  # retrying will not help (5xx, invalid address)
    error: str | None = None


ResultCallback = Callable[[OutgoingNotice, SendResult], None]


class Notifier(Protocol):
    """Delivers a batch of notices; returns each notice's result by key.

    ``on_result`` (when given) is called in the caller's thread with each notice and its result as soon as
    that result is known: right after the mail server accepted or refused the message (or the spool file
    is in place), before the next message is sent. The caller can record each notice at once, so a crash
    in the middle of a batch leaves only the message in flight unrecorded: over SMTP the next run sends that
    one again (same Message-ID), so it may arrive twice; a spool file that exists is not written again. An
    exception it raises stops the batch (nothing more is sent) and propagates."""

    def send(self, notices: Sequence[OutgoingNotice], *,
             on_result: ResultCallback | None = None) -> dict[str, SendResult]: ...


def _bad_address(addr: str) -> SendResult:
    what = "the account has no billing address" if not addr.strip() else f"invalid billing address {addr!r}"
    return SendResult(False, True, what)


def _envelope_address(addr: str) -> str | None:
    if "\n" in addr or "\r" in addr:
        return None
    bare = email.utils.parseaddr(addr)[1]
    if not bare or "@" not in bare or any(c.isspace() for c in bare):
        return None
    return bare


def _build_message(settings: NoticeSettings, notice: OutgoingNotice, now: datetime) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = settings.from_addr
    msg["To"] = notice.to
    msg["Subject"] = notice.rendered.subject
    msg["Date"] = email.utils.format_datetime((notice.date or now).astimezone(UTC))
    msg["Message-ID"] = notice.message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Arrears-Notice"] = notice.key
    msg.set_content(notice.rendered.text)
    if notice.rendered.html is not None:
        msg.add_alternative(notice.rendered.html, subtype="html")
    return msg


def _reply(code: int, message: bytes | str) -> str:
    """The server's reply on one line, as it sent it; a control character is written as its escape
    (``\\x1b``), so the reply can be printed and mailed as it is."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    line = " ".join(text.split())
    return f"{code} " + "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                                for ch in line)


def _failure(code: int, message: bytes | str, what: str) -> SendResult:
    return SendResult(ok=False, permanent=500 <= code < 600, error=f"{what}: {_reply(code, message)}")


class SmtpNotifier:
    """Sends a batch over one SMTP connection (TLS and login when configured)."""

    def __init__(self, settings: NoticeSettings, *, clock: Callable[[], datetime],
                 environ: Mapping[str, str] | None = None) -> None:
        if settings.smtp is None:
            raise ValueError("SmtpNotifier needs notices.smtp")
        self.settings = settings
        self.smtp = settings.smtp
        self.clock = clock
        self.environ = os.environ if environ is None else environ

    def _connect(self) -> smtplib.SMTP:
        s = self.smtp
        password = None
        if s.password_env is not None:
            password = self.environ.get(s.password_env)
            if not password:
                raise _ConfigProblem(f"the SMTP password's environment variable {s.password_env} is not set")
        context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
        client: smtplib.SMTP
        if s.ssl:
            client = smtplib.SMTP_SSL(s.host, s.effective_port, local_hostname=s.helo, timeout=s.timeout,
                                      context=context)
        else:
            client = smtplib.SMTP(s.host, s.effective_port, local_hostname=s.helo, timeout=s.timeout)
        try:
            client.ehlo()
            if s.starttls:
                client.starttls(context=context)
                client.ehlo()
            if s.username is not None and password is not None:
                client.login(s.username, password)
        except BaseException:
            client.close()
            raise
        return client

    def send(self, notices: Sequence[OutgoingNotice], *,
             on_result: ResultCallback | None = None) -> dict[str, SendResult]:
        results: dict[str, SendResult] = {}

        def report(notice: OutgoingNotice, result: SendResult) -> None:
            results[notice.key] = result
            if on_result is not None:
                on_result(notice, result)

        def report_all(items: Sequence[tuple[OutgoingNotice, str, EmailMessage]], result: SendResult) -> None:
            for notice, _, _ in items:
                report(notice, result)

        ready: list[tuple[OutgoingNotice, str, EmailMessage]] = []
        sender = _envelope_address(self.settings.from_addr) or self.settings.from_addr
        now = self.clock()
        for notice in notices:
            rcpt = _envelope_address(notice.to)
            if rcpt is None:
                report(notice, _bad_address(notice.to))
                continue
            try:
                ready.append((notice, rcpt, _build_message(self.settings, notice, now)))
            except (ValueError, TypeError) as exc:
                report(notice, SendResult(False, True, f"cannot build the message: {exc}"))
        if not ready:
            return results
        where = f"{self.smtp.host}:{self.smtp.effective_port}"
        try:
            client = self._connect()
        except _ConfigProblem as exc:
            report_all(ready, SendResult(False, False, str(exc)))
            return results
        except smtplib.SMTPAuthenticationError as exc:
            error = f"SMTP login to {where} refused: {_reply(exc.smtp_code, exc.smtp_error)}"
            report_all(ready, SendResult(False, False, error))
            return results
        except smtplib.SMTPNotSupportedError as exc:
            report_all(ready, SendResult(False, False, f"SMTP server {where}: {exc}"))
            return results
        except (OSError, smtplib.SMTPException) as exc:
            error = f"cannot connect to SMTP server {where}: {type(exc).__name__}: {exc}"
            report_all(ready, SendResult(False, False, error))
            return results
        try:
            for index, (notice, rcpt, msg) in enumerate(ready):
                result, lost = self._send_one(client, msg, sender, rcpt, where)
                if lost:  # the connection is gone: this one and the rest wait for the next run
                    report_all(ready[index:], result)
                    break
                report(notice, result)  # reported before the next message goes out
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()
        return results

    @staticmethod
    def _send_one(client: smtplib.SMTP, msg: EmailMessage, sender: str, rcpt: str,
                  where: str) -> tuple[SendResult, bool]:
        """One message over the open connection: its result, and whether the connection was lost."""
        try:
            client.send_message(msg, from_addr=sender, to_addrs=[rcpt])
            return SendResult(True), False
        except smtplib.SMTPRecipientsRefused as exc:
            code, message = exc.recipients.get(rcpt, (450, b"refused"))
            return _failure(code, message, f"recipient {rcpt} refused"), False
        except smtplib.SMTPSenderRefused as exc:
            # the sender is the provider's own configuration, never the notice's fault: retry later
            error = f"sender {sender} refused: {_reply(exc.smtp_code, exc.smtp_error)}"
            return SendResult(False, False, error), False
        except smtplib.SMTPDataError as exc:
            return _failure(exc.smtp_code, exc.smtp_error, "message refused"), False
        except smtplib.SMTPNotSupportedError as exc:
            return SendResult(False, True, f"SMTP server {where}: {exc}"), False
        except (OSError, smtplib.SMTPException) as exc:
            error = f"connection to SMTP server {where} lost: {type(exc).__name__}: {exc}"
            return SendResult(False, False, error), True


class _ConfigProblem(Exception):
    pass


class SpoolNotifier:
    """Writes each notice as ``<spool_dir>/<key>.eml`` (atomically: temporary file, then rename). A notice
    whose file exists already is not written again. Characters of the key other than letters, digits and
    ``_-.@+:`` are written as ``=XX``, so a key never leaves the folder."""

    def __init__(self, settings: NoticeSettings, *, clock: Callable[[], datetime]) -> None:
        if settings.spool_dir is None:
            raise ValueError("SpoolNotifier needs notices.spool_dir")
        self.settings = settings
        self.directory = Path(settings.spool_dir)
        self.clock = clock

    def path_for(self, key: str) -> Path:
        name = _atom(key, safe=".@+:")
        if name.startswith("."):
            name = "=2E" + name[1:]
        return self.directory / f"{name}.eml"

    def send(self, notices: Sequence[OutgoingNotice], *,
             on_result: ResultCallback | None = None) -> dict[str, SendResult]:
        results: dict[str, SendResult] = {}
        now = self.clock()
        for notice in notices:
            results[notice.key] = self._write(notice, now)
            if on_result is not None:
                on_result(notice, results[notice.key])
        return results

    def _write(self, notice: OutgoingNotice, now: datetime) -> SendResult:
        if _envelope_address(notice.to) is None:
            return _bad_address(notice.to)
        target = self.path_for(notice.key)
        try:
            if target.exists():
                return SendResult(True)
            data = _build_message(self.settings, notice, now).as_bytes(policy=email.policy.default)
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".eml")
            try:
                os.fchmod(fd, 0o640)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return SendResult(True)
        except (ValueError, TypeError) as exc:
            return SendResult(False, True, f"cannot build the message: {exc}")
        except OSError as exc:
            return SendResult(False, False, f"cannot write {target}: {exc}")


def make_notifier(settings: NoticeSettings, *, clock: Callable[[], datetime]) -> Notifier:
    """The notifier ``settings`` ask for: SMTP, or the spool folder."""
    if settings.smtp is not None:
        return SmtpNotifier(settings, clock=clock)
    return SpoolNotifier(settings, clock=clock)

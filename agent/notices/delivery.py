"""Delivery of notices to the account's billing address, over SMTP or into a spool folder.

:func:`make_notifier` returns an :class:`SmtpNotifier` (one connection per batch, commands pipelined when
the server offers PIPELINING; 5xx answers are permanent failures, 4xx and connection errors temporary) or
a :class:`SpoolNotifier` (one ``.eml`` file per notice, written atomically and never twice; the folder
``fsync``ed once per batch). A batch is what the caller
sends at once (the executor's chunk): the SMTP notifier builds each message just before it goes out,
never the batch first, and reports each result the moment the server answered (``on_result``), so the
caller records it before the next one; the spool reports its files once they are all durable. Over SMTP
that leaves one message that can arrive twice: the one in flight when the agent dies after the server
accepted it and before its result was recorded; the next run sends it again with the same Message-ID.
A spool file cannot be written twice.
"""

from __future__ import annotations

import contextlib
import email.charset
import email.policy
import email.utils
import functools
import os
import re
import secrets
import smtplib
import ssl
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Protocol, cast

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
    that result is known: right after the mail server accepted or refused the message, before the next
    message is sent. The caller can record each notice at once, so a crash in the middle of a batch
    leaves only the message in flight unrecorded: over SMTP the next run sends that one again (same
    Message-ID), so it may arrive twice. An exception it raises stops the batch (nothing more is
    sent) and propagates. A notifier whose ``resends_nothing`` is true (the spool) never delivers a notice
    twice, whatever was recorded: it reports once the batch is durable and its caller may record the
    batch at once."""

    def send(self, notices: Sequence[OutgoingNotice], *,
             on_result: ResultCallback | None = None) -> dict[str, SendResult]: ...


def _bad_address(addr: str) -> SendResult:
    what = "the account has no billing address" if not addr.strip() else f"invalid billing address {addr!r}"
    return SendResult(False, True, what)


_BARE = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")  # a dot-atom address


def _envelope_address(addr: str) -> str | None:
    if _BARE.fullmatch(addr):
        return addr  # what parseaddr gives for it, without parsing
    if "\n" in addr or "\r" in addr:
        return None
    bare = email.utils.parseaddr(addr)[1]
    if not bare or "@" not in bare or any(c.isspace() for c in bare):
        return None
    return bare


_POLICY = email.policy.SMTP  # CRLF line ends, 8-bit bodies: what goes over the wire


class _Plain(email.policy.Compat32):
    """compat32 that writes a header whose value is plain ASCII, on one line and short enough as it is
    (every header of a notice but a long or non-ASCII subject); any other header is folded by
    compat32 itself. The same bytes, without building a ``Header`` per header."""

    def fold_binary(self, name: str, value: str) -> bytes:
        if isinstance(value, str) and value.isascii() and len(name) + len(value) + 2 <= 78 \
                and "\n" not in value and "\r" not in value:
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


_PLAIN = _Plain(linesep="\r\n")  # the fast path's policy, set once
_PLAIN_SPOOL = _Plain()
_EIGHT_BIT = email.charset.Charset("utf-8")
_EIGHT_BIT.body_encoding = None  # type: ignore[assignment]  # 8bit: lines are short enough for SMTP
_BASE64 = email.charset.Charset("utf-8")  # a body with a line too long for 8bit
_LONGEST_8BIT_LINE = 900  # SMTP allows 998 octets per line


def _build_message(settings: NoticeSettings, notice: OutgoingNotice, now: datetime) -> EmailMessage:
    """The MIME message of one notice (the general path: any address, SMTPUTF8 when needed)."""
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = settings.from_addr
    msg["To"] = notice.to
    msg["Subject"] = notice.rendered.subject
    msg["Date"] = _date(notice.date or now)
    msg["Message-ID"] = notice.message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Arrears-Notice"] = notice.key
    msg.set_content(notice.rendered.text)
    if notice.rendered.html is not None:
        msg.add_alternative(notice.rendered.html, subtype="html")
    return msg


def _plain_headers(settings: NoticeSettings, notice: OutgoingNotice) -> bool:
    """Whether every header but the subject is plain ASCII on one line (the fast path can write it)."""
    values = (settings.from_addr, notice.to, notice.message_id, notice.key, notice.rendered.subject)
    return all("\r" not in v and "\n" not in v for v in values) and all(v.isascii() for v in values[:4])


def _part(text: str, subtype: str) -> MIMEText:
    longest = max(map(len, text.encode().splitlines()), default=0)
    return MIMEText(text, subtype, _EIGHT_BIT if longest <= _LONGEST_8BIT_LINE else _BASE64,  # type: ignore[arg-type]
                    policy=email.policy.compat32)


@functools.lru_cache(maxsize=16)
def _date(at: datetime) -> str:
    """The Date header's value for ``at`` (a chunk's notices share one)."""
    return email.utils.format_datetime(at.astimezone(UTC))


def _boundary_of(token: str) -> str:
    return f"==============={token}=="


def _boundary(*texts: str) -> str:
    """A multipart boundary that is in none of ``texts`` (the generator would otherwise compile a
    regular expression per message to check its own)."""
    while True:
        boundary = _boundary_of(secrets.token_hex(10))
        if not any(boundary in t for t in texts):
            return boundary


_MULTIPART: dict[str, tuple[bytes, bytes]] = {}  # line end -> the folded header around its boundary


def _multipart_header(policy: _Plain, boundary: str) -> bytes:
    """The multipart/alternative Content-Type header as ``policy`` folds it (compat32: too long for one
    line). Every boundary :func:`_boundary` makes has the same length and characters, so the header
    folds the same way around it: it is folded once per line end and the boundary put in its place."""
    parts = _MULTIPART.get(policy.linesep)
    if parts is None:
        mark = _boundary_of("0" * 20)
        folded = policy.fold_binary("Content-Type", f'multipart/alternative; boundary="{mark}"')
        before, _, after = folded.partition(mark.encode("ascii"))
        parts = _MULTIPART[policy.linesep] = (before, after)
    if len(boundary) != len(_boundary_of("0" * 20)):
        return policy.fold_binary("Content-Type", f'multipart/alternative; boundary="{boundary}"')
    return parts[0] + boundary.encode("ascii") + parts[1]


def message_bytes(settings: NoticeSettings, notice: OutgoingNotice, now: datetime, *, spool: bool = False) -> bytes:
    """The notice as it goes out (CRLF line ends) or into the spool (``spool``: the system's), built just
    before it is sent. Plain ASCII headers (every address, key and Message-ID; any subject) and bodies that
    go as 8bit are written directly (:func:`_direct_bytes`), exactly as the email package's compat32 MIME
    classes write them (:func:`_compat32_bytes`, which writes the rest of them: a body with a long line
    goes as base64); any other message is built by :class:`~email.message.EmailMessage`."""
    if not _plain_headers(settings, notice):
        return _build_message(settings, notice, now).as_bytes(policy=email.policy.default if spool else _POLICY)
    rendered = notice.rendered
    boundary = _boundary(rendered.text, rendered.html) if rendered.html is not None else None
    policy = _PLAIN_SPOOL if spool else _PLAIN
    direct = _direct_bytes(settings, notice, now, policy, boundary)
    return direct if direct is not None else _compat32_bytes(settings, notice, now, policy, boundary)


def _headers(settings: NoticeSettings, notice: OutgoingNotice, now: datetime) -> list[tuple[str, str | Header]]:
    """The notice's own headers, in the order they are written (after the MIME ones)."""
    subject = notice.rendered.subject
    return [("From", settings.from_addr), ("To", notice.to),
            ("Subject", subject if subject.isascii() else Header(subject, "utf-8")),
            ("Date", _date(notice.date or now)),
            ("Message-ID", notice.message_id), ("Auto-Submitted", "auto-generated"),
            ("X-Arrears-Notice", notice.key)]


def _compat32_bytes(settings: NoticeSettings, notice: OutgoingNotice, now: datetime, policy: _Plain,
                    boundary: str | None) -> bytes:
    """The message built with compat32 MIME classes (``boundary``: of the multipart/alternative, when
    the notice has HTML) and flattened once with ``policy``."""
    text = _part(notice.rendered.text, "plain")
    msg: MIMEText | MIMEMultipart = text
    if notice.rendered.html is not None:
        msg = MIMEMultipart("alternative", _subparts=[text, _part(notice.rendered.html, "html")],
                            boundary=boundary, policy=email.policy.compat32)
    for name, value in _headers(settings, notice, now):
        msg[name] = value  # type: ignore[assignment]  # a Header is what compat32 folds
    return msg.as_bytes(policy=policy)


_NEWLINE = re.compile(r"\r\n|\r|\n")  # what the generator takes for a line end


def _direct_part(text: str, subtype: str, policy: _Plain) -> tuple[bytes, bytes] | None:
    """A text part as :func:`_part`'s MIMEText is flattened (8bit or 7bit): its headers and its
    body; None when it goes as base64 (a line too long for 8bit)."""
    body = text.encode("utf-8")
    if max(map(len, body.splitlines()), default=0) > _LONGEST_8BIT_LINE:
        return None
    nl = policy.linesep
    head = (f'Content-Type: text/{subtype}; charset="utf-8"{nl}MIME-Version: 1.0{nl}'
            f"Content-Transfer-Encoding: {'7bit' if body.isascii() else '8bit'}{nl}")
    lines = text.replace("\n", nl) if "\r" not in text else _NEWLINE.sub(nl, text)  # the same, without the regex
    return head.encode("ascii"), lines.encode("utf-8")


def _direct_bytes(settings: NoticeSettings, notice: OutgoingNotice, now: datetime, policy: _Plain,
                  boundary: str | None) -> bytes | None:
    """What :func:`_compat32_bytes` writes, written without building MIME objects and flattening them
    (about half of a spooled notice's CPU went there); None for a message it does not write (a part
    that goes as base64)."""
    nl = policy.linesep
    text = _direct_part(notice.rendered.text, "plain", policy)
    if text is None:
        return None
    own = b"".join(policy.fold_binary(name, value) for name, value in _headers(settings, notice, now))  # type: ignore[arg-type]
    if notice.rendered.html is None:
        head, body = text
        return b"".join((head, own, nl.encode("ascii"), body))
    html = _direct_part(notice.rendered.html, "html", policy)
    if html is None:
        return None
    assert boundary is not None
    top = _multipart_header(policy, boundary) + f"MIME-Version: 1.0{nl}".encode("ascii")
    sep = f"--{boundary}{nl}".encode("ascii")
    end = nl.encode("ascii")
    out = [top, own, end, sep]
    for index, (head, body) in enumerate((text, html)):
        if index:
            out += [end, sep]
        out += [head, end, body]
    out += [end, f"--{boundary}--{nl}".encode("ascii")]
    return b"".join(out)


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
        # only a TLS connection needs the context (loading the CA store costs ~40 ms per connection)
        context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None) \
            if s.ssl or s.starttls else None
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
        """The batch over one connection. Each message is built just before it goes out (one message
        ahead over a server that offers PIPELINING: its envelope goes behind the message before it, see
        :class:`_Pipeline`). A connection lost in the middle is opened again (up to ``RECONNECTS`` times
        per batch) and the batch goes on; the message in flight when it was lost is a temporary failure
        (sent again later with the same Message-ID: the server may have accepted it)."""
        results: dict[str, SendResult] = {}

        def report(notice: OutgoingNotice, result: SendResult) -> None:
            results[notice.key] = result
            if on_result is not None:
                on_result(notice, result)

        sender = _envelope_address(self.settings.from_addr) or self.settings.from_addr
        now = self.clock()
        where = f"{self.smtp.host}:{self.smtp.effective_port}"

        def sendable(start: int) -> tuple[_Item | None, list[tuple[OutgoingNotice, SendResult]]]:
            """The first notice from ``start`` on that can go out (its index, recipient and message), and
            the results of those before it that cannot (no usable address, a message that cannot be built),
            for the caller to report in the batch's order."""
            skipped: list[tuple[OutgoingNotice, SendResult]] = []
            for index in range(start, len(notices)):
                notice = notices[index]
                rcpt = _envelope_address(notice.to)
                if rcpt is None:
                    skipped.append((notice, _bad_address(notice.to)))
                    continue
                try:
                    msg = message_bytes(self.settings, notice, now) if sender.isascii() and rcpt.isascii() \
                        else _build_message(self.settings, notice, now)
                except (ValueError, TypeError) as exc:
                    skipped.append((notice, SendResult(False, True, f"cannot build the message: {exc}")))
                    continue
                return (index, rcpt, msg), skipped
            return None, skipped

        def not_sent(start: int, result: SendResult) -> None:
            for rest in notices[start:]:  # nothing more goes out in this batch
                if rest.key not in results:
                    report(rest, result if _envelope_address(rest.to) else _bad_address(rest.to))

        client: smtplib.SMTP | None = None
        pipeline: _Pipeline | None = None
        reconnects = 0
        try:
            item, skipped = sendable(0)
            for notice, result in skipped:
                report(notice, result)
            while item is not None:
                index, rcpt, msg = item
                if client is None:
                    client, problem = self._open(where)
                    if client is None:
                        assert problem is not None
                        not_sent(index, problem)
                        break
                    pipeline = _Pipeline(client, sender) if client.has_extn("pipelining") else None
                if pipeline is not None and isinstance(msg, bytes):
                    following, skipped = sendable(index + 1)  # its envelope goes out behind this message
                    ahead = (following[1], following[2]) if following is not None and isinstance(following[2], bytes) \
                        else None
                    result, lost = pipeline.send(rcpt, msg, where, ahead=ahead)
                    report(notices[index], result)  # reported before the next message goes out
                else:
                    result, lost = self._send_one(client, msg, sender, rcpt, where)
                    report(notices[index], result)
                    following, skipped = sendable(index + 1)
                for notice, failed in skipped:
                    report(notice, failed)
                if lost:
                    _close(client)
                    client = pipeline = None
                    reconnects += 1
                    if reconnects > self.RECONNECTS:
                        not_sent(index + 1, SendResult(False, False, f"{result.error} (and {self.RECONNECTS} "
                                                                     "times again): not sent in this run"))
                        break
                item = following
        finally:
            if client is not None and pipeline is not None and pipeline.ahead is not None:
                # the server waits for the content of a message that will not come (the batch stopped):
                # the connection is dropped, which discards it (a QUIT would be taken for its content)
                _close(client)
            elif client is not None:
                try:
                    client.quit()
                except (OSError, smtplib.SMTPException):
                    client.close()
        return results

    RECONNECTS = 3  # connections opened again after one was lost, per batch

    def _open(self, where: str) -> tuple[smtplib.SMTP | None, SendResult | None]:
        """A new connection, or why there is none (a temporary failure for every notice left)."""
        try:
            return self._connect(), None
        except _ConfigProblem as exc:
            return None, SendResult(False, False, str(exc))
        except smtplib.SMTPAuthenticationError as exc:
            return None, SendResult(False, False, f"SMTP login to {where} refused: "
                                                  f"{_reply(exc.smtp_code, exc.smtp_error)}")
        except smtplib.SMTPNotSupportedError as exc:
            return None, SendResult(False, False, f"SMTP server {where}: {exc}")
        except (OSError, smtplib.SMTPException) as exc:
            return None, SendResult(False, False, f"cannot connect to SMTP server {where}: "
                                                  f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _send_one(client: smtplib.SMTP, msg: bytes | EmailMessage, sender: str, rcpt: str,
                  where: str) -> tuple[SendResult, bool]:
        """One message over the open connection: its result, and whether the connection was lost (a
        ``421`` answer too: the server is closing it, and smtplib has closed it)."""
        try:
            if isinstance(msg, bytes):
                client.sendmail(sender, [rcpt], msg)  # flattened once, as it goes out
            else:  # an international address: smtplib asks for SMTPUTF8
                client.send_message(msg, from_addr=sender, to_addrs=[rcpt])
            return SendResult(True), False
        except smtplib.SMTPRecipientsRefused as exc:
            code, message = exc.recipients.get(rcpt, (450, b"refused"))
            return _failure(code, message, f"recipient {rcpt} refused"), code == 421
        except smtplib.SMTPSenderRefused as exc:
            # the sender is the provider's own configuration, never the notice's fault: retry later
            error = f"sender {sender} refused: {_reply(exc.smtp_code, exc.smtp_error)}"
            return SendResult(False, False, error), exc.smtp_code == 421
        except smtplib.SMTPDataError as exc:
            return _failure(exc.smtp_code, exc.smtp_error, "message refused"), exc.smtp_code == 421
        except smtplib.SMTPNotSupportedError as exc:
            return SendResult(False, True, f"SMTP server {where}: {exc}"), False
        except (OSError, smtplib.SMTPException) as exc:
            error = f"connection to SMTP server {where} lost: {type(exc).__name__}: {exc}"
            return SendResult(False, False, error), True


class _ConfigProblem(Exception):
    pass


_Item = tuple[int, str, "bytes | EmailMessage"]  # a notice that can go out: its index, recipient and message


def _dot_stuffed(msg: bytes) -> bytes:
    """``msg`` as DATA carries it (RFC 5321 4.5.2), ended by the lone dot: what smtplib's ``data`` sends."""
    if msg.startswith(b".") or b"\n." in msg:
        msg = re.sub(rb"(?m)^\.", b"..", msg)
    return msg + (b".\r\n" if msg.endswith(b"\r\n") else b"\r\n.\r\n")


class _Pipeline:
    """One connection's exchange with a server that offers PIPELINING (RFC 2920): a message's MAIL, RCPT and
    DATA go in one write, and that write goes behind the previous message's content (the content and its
    end-of-data dot may be followed by the next commands in one group). So each message costs one write
    and one wait for the server, instead of four with smtplib's ``sendmail``.

    The window stays one message: a message's content goes out only once the one before it has been
    answered and reported (the caller records it in between); what goes ahead is the next envelope, which
    delivers nothing by itself. The commands and answers are smtplib's own (``SIZE`` when offered; the
    same results as :meth:`SmtpNotifier._send_one` for each answer)."""

    def __init__(self, client: smtplib.SMTP, sender: str) -> None:
        self.client = client
        self.sender = sender
        self.mail = f"MAIL FROM:{smtplib.quoteaddr(sender)}"
        self.size = client.has_extn("size")
        self.ahead: tuple[str, int] | None = None  # the envelope sent ahead (recipient, size), answers unread
        self.reset = False  # an RSET went out before it, its answer unread

    def _envelope(self, rcpt: str, size: int) -> bytes:
        option = f" SIZE={size}" if self.size else ""
        to = f"<{rcpt}>" if _BARE.fullmatch(rcpt) else smtplib.quoteaddr(rcpt)  # the same, without parsing
        return f"{self.mail}{option}\r\nRCPT TO:{to}\r\nDATA\r\n".encode("ascii")

    def _answer(self) -> tuple[int, bytes]:
        code, text = self.client.getreply()
        if code == 421:  # the server is closing the connection
            raise smtplib.SMTPServerDisconnected(_reply(code, text))
        return code, text

    def send(self, rcpt: str, msg: bytes, where: str, *,
             ahead: tuple[str, bytes] | None) -> tuple[SendResult, bool]:
        """``msg`` to ``rcpt`` and, behind it, ``ahead``'s envelope (the next message's recipient and
        message): its result, and whether the connection was lost."""
        try:
            return self._send(rcpt, msg, ahead), False
        except (OSError, smtplib.SMTPException) as exc:
            error = f"connection to SMTP server {where} lost: {type(exc).__name__}: {exc}"
            return SendResult(False, False, error), True

    def _send(self, rcpt: str, msg: bytes, ahead: tuple[str, bytes] | None) -> SendResult:
        if self.ahead != (rcpt, len(msg)):
            self.client.send((b"RSET\r\n" if self.reset else b"") + self._envelope(rcpt, len(msg)))
        if self.reset:
            self._answer()
            self.reset = False
        self.ahead = None
        mail, rcpt_answer, data = self._answer(), self._answer(), self._answer()
        following = self._envelope(ahead[0], len(ahead[1])) if ahead is not None else b""
        if mail[0] == 250 and rcpt_answer[0] in (250, 251) and data[0] == 354:
            self.client.send(_dot_stuffed(msg) + following)
            self.ahead = (ahead[0], len(ahead[1])) if ahead is not None else None
            code, text = self._answer()
            return SendResult(True) if code == 250 else _failure(code, text, "message refused")
        if data[0] == 354:  # DATA taken although MAIL or RCPT was refused: the empty content ends it
            self.client.send(b".\r\n")
            self._answer()
        else:
            self.reset = True  # the transaction is still open: RSET before the next one
        if ahead is not None:
            self.client.send((b"RSET\r\n" if self.reset else b"") + following)
            self.ahead = (ahead[0], len(ahead[1]))
        if mail[0] != 250:
            # the sender is the provider's own configuration, never the notice's fault: retry later
            return SendResult(False, False, f"sender {self.sender} refused: {_reply(*mail)}")
        if rcpt_answer[0] not in (250, 251):
            return _failure(rcpt_answer[0], rcpt_answer[1], f"recipient {rcpt} refused")
        return _failure(data[0], data[1], "message refused")


def _fsync_path(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs() -> Callable[[int], int] | None:
    """Linux's ``syncfs(2)`` (every dirty file of one filesystem written out by one call), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    return cast(Callable[[int], int], fn)


_SYNCFS = _syncfs()


def _sync_files(folder: Path, paths: Sequence[str]) -> dict[str, OSError]:
    """Make the files ``paths`` (in ``folder``, closed) durable. With ``syncfs(2)`` that is one call for all
    of them (it returns once every dirty file of ``folder``'s filesystem is written), else (or when it
    fails) one ``fsync`` per file. Returns the error of each file that could not be made durable."""
    if paths and _SYNCFS is not None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            if _SYNCFS(fd) == 0:
                return {}
        finally:
            os.close(fd)
    errors: dict[str, OSError] = {}
    for path in paths:
        try:
            _fsync_path(path)
        except OSError as exc:
            errors[path] = exc
    return errors


def _close(client: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        client.close()


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

    resends_nothing = True  # a notice whose file is in place is never written again: recording can wait

    def send(self, notices: Sequence[OutgoingNotice], *,
             on_result: ResultCallback | None = None) -> dict[str, SendResult]:
        """The batch's files: each written to a temporary file, all of them made durable at once
        (:func:`_sync_files`), then each renamed into place and the folder ``fsync``ed once. A notice is
        reported once its file is durable."""
        results: dict[str, SendResult] = {}
        now = self.clock()
        written: list[tuple[OutgoingNotice, str, Path]] = []  # temporary files, not yet durable
        with contextlib.suppress(OSError):  # once per batch; a folder that cannot be made fails each file
            self.directory.mkdir(parents=True, exist_ok=True)
        placed: set[str] = set()  # temporary files renamed into place
        try:
            for notice in notices:
                got = self._write(notice, now)
                if isinstance(got, SendResult):
                    results[notice.key] = got
                else:
                    written.append((notice, *got))
            unsynced = _sync_files(self.directory, [tmp for _, tmp, _ in written])
            for notice, tmp, target in written:
                if tmp in unsynced:
                    results[notice.key] = SendResult(False, False, f"cannot write {target}: {unsynced[tmp]}")
                    continue
                try:
                    os.replace(tmp, target)
                    placed.add(tmp)
                except OSError as exc:
                    results[notice.key] = SendResult(False, False, f"cannot write {target}: {exc}")
            if placed:
                _fsync_path(self.directory)  # the renames are durable too
            for notice, _, _ in written:
                results.setdefault(notice.key, SendResult(True))
        finally:
            for _, tmp, _ in written:
                if tmp not in placed:
                    Path(tmp).unlink(missing_ok=True)
        if on_result is not None:
            for notice in notices:
                on_result(notice, results[notice.key])
        return results

    def _write(self, notice: OutgoingNotice, now: datetime) -> SendResult | tuple[str, Path]:
        """The notice's temporary file (written, not yet durable) and its place, or its result without one."""
        if _envelope_address(notice.to) is None:
            return _bad_address(notice.to)
        target = self.path_for(notice.key)
        try:
            if target.exists():
                return SendResult(True)
            data = message_bytes(self.settings, notice, now, spool=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".eml")
            try:
                os.fchmod(fd, 0o640)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return tmp, target
        except (ValueError, TypeError) as exc:
            return SendResult(False, True, f"cannot build the message: {exc}")
        except OSError as exc:
            return SendResult(False, False, f"cannot write {target}: {exc}")


def make_notifier(settings: NoticeSettings, *, clock: Callable[[], datetime]) -> Notifier:
    """The notifier ``settings`` ask for: SMTP, or the spool folder."""
    if settings.smtp is not None:
        return SmtpNotifier(settings, clock=clock)
    return SpoolNotifier(settings, clock=clock)

"""A notice's bytes and envelope: the fast paths against the email package (MIME classes, standard policy,
parseaddr)."""

from __future__ import annotations

import email
import email.policy
import email.utils
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.notices import OutgoingNotice, RenderedNotice, Templates
from agent.notices import delivery as d
from tests.agent.test_notices import STAGE_TEMPLATES, notice_for, settings_for

NOW = datetime(2026, 3, 20, 9, 30, tzinfo=UTC)
BOUNDARY = "===============0123456789abcdef0123=="
SETTINGS = settings_for()

CASES = {
    "plain ASCII": RenderedNotice("Your account is overdue", "Dear Bob,\n\nplease pay.\n"),
    "non-ASCII name": RenderedNotice("Zahlungserinnerung für Jürgen Weiß", "Hallo Jürgen Weiß,\nbitte zahlen.\n",
                                     "<p>Hallo J&uuml;rgen Wei&szlig;, Zoë</p>\n"),
    "long ASCII subject": RenderedNotice("Reminder: " + "your hosting account is overdue " * 5, "Hello\r\nthere\r"),
    "long non-ASCII subject": RenderedNotice("Relance : facture impayée de Zoë Brontë " * 4, "Bonjour Zoë\n",
                                             "<p>Bonjour Zoë</p>\n"),
    "a line too long for 8bit": RenderedNotice("Overdue", "é" * 700 + "\n", "<p>" + "x" * 1000 + "</p>\n"),
    "HTML only too long": RenderedNotice("Overdue", "short\n", "<p>" + "ü" * 600 + "</p>\n"),
    "From at a line start": RenderedNotice("Overdue", "From now on\n.\n..\n", "<p>x</p>\n"),
}


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates.load()


def outgoing(rendered: RenderedNotice, to: str = "Zoë Brontë <zoe@customer.example>") -> OutgoingNotice:
    return OutgoingNotice(key="acct-1:7:pre_suspension", to=to, message_id="<arrears.acct-1.7.pre@example.com>",
                          rendered=rendered, date=NOW)


def standard(notice: OutgoingNotice, *, spool: bool = False) -> EmailMessage:
    """The message as the email package's standard policy builds it (``_build_message``), parsed back."""
    raw = d._build_message(SETTINGS, notice, NOW).as_bytes(policy=email.policy.default if spool else email.policy.SMTP)
    return email.message_from_bytes(raw, policy=email.policy.default)


def assert_same_message(raw: bytes, reference: EmailMessage) -> None:
    """``raw`` says what ``reference`` says: every header (decoded) and every part's text (its line ends
    as a mail reader takes them: a base64 body's line ends are LF here, CRLF in the standard's)."""
    got = email.message_from_bytes(raw, policy=email.policy.default)
    names = ("From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "X-Arrears-Notice")
    assert {n: str(got[n]) for n in names} == {n: str(reference[n]) for n in names}
    assert got.get_content_type() == reference.get_content_type()
    parts = [(p.get_content_type(), p.get_content().replace("\r\n", "\n")) for p in got.walk()
             if not p.is_multipart()]
    ref = [(p.get_content_type(), p.get_content().replace("\r\n", "\n")) for p in reference.walk()
           if not p.is_multipart()]
    assert parts == ref


@pytest.mark.parametrize("spool", [False, True], ids=["smtp", "spool"])
@pytest.mark.parametrize("case", list(CASES))
def test_direct_bytes_are_the_mime_classes_bytes(case: str, spool: bool) -> None:
    notice = outgoing(CASES[case], to="zoe@customer.example")
    policy = d._PLAIN_SPOOL if spool else d._PLAIN
    boundary = BOUNDARY if notice.rendered.html is not None else None
    reference = d._compat32_bytes(SETTINGS, notice, NOW, policy, boundary)
    direct = d._direct_bytes(SETTINGS, notice, NOW, policy, boundary)
    if case.endswith("too long") or case == "a line too long for 8bit":
        assert direct is None  # base64: written by the MIME classes
    else:
        assert direct == reference
    raw = d.message_bytes(SETTINGS, notice, NOW, spool=spool)
    assert raw.count(b"\r\n") == (0 if spool else raw.count(b"\n"))
    assert_same_message(raw, standard(notice, spool=spool))


def test_default_templates_are_written_byte_for_byte(templates: Templates) -> None:
    for n, stage in enumerate(STAGE_TEMPLATES):
        notice = notice_for(templates, SETTINGS, n, stage=stage)
        for policy in (d._PLAIN, d._PLAIN_SPOOL):
            boundary = BOUNDARY if notice.rendered.html is not None else None
            assert d._direct_bytes(SETTINGS, notice, NOW, policy, boundary) == \
                d._compat32_bytes(SETTINGS, notice, NOW, policy, boundary)
        assert_same_message(d.message_bytes(SETTINGS, notice, NOW), standard(notice))


_line = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=60)


@settings(max_examples=150, deadline=None)
@given(subject=_line, lines=st.lists(_line, max_size=6), ends=st.sampled_from(["\n", "\r\n", "\r"]),
       html=st.none() | _line)
def test_any_notice_is_written_as_the_mime_classes_write_it(subject: str, lines: list[str], ends: str,
                                                            html: str | None) -> None:
    notice = outgoing(RenderedNotice(" ".join(subject.split()), ends.join(lines) + "\n", html),
                      to="bob@customer.example")
    for policy in (d._PLAIN, d._PLAIN_SPOOL):
        boundary = BOUNDARY if html is not None else None
        assert d._direct_bytes(SETTINGS, notice, NOW, policy, boundary) == \
            d._compat32_bytes(SETTINGS, notice, NOW, policy, boundary)


_address_chars = st.sampled_from(list("aZ09_+-.@ \"<>()[],;:\\é\t\n"))


@settings(max_examples=300, deadline=None)
@given(addr=st.text(_address_chars, min_size=1, max_size=16) | st.emails())
def test_envelope_address_without_parsing_is_what_parsing_gives(addr: str) -> None:
    bare = email.utils.parseaddr(addr)[1]
    parsed = bare if "\n" not in addr and "@" in bare and not any(c.isspace() for c in bare) else None
    assert d._envelope_address(addr) == parsed

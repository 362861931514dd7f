"""Notices: templates checked at load and sandboxed, the variables, Message-IDs, and delivery to a real
SMTP server on loopback (plain, and STARTTLS with login) or to a spool folder."""

from __future__ import annotations

import email.utils
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from agent.cli.templates import templates as templates_group
from agent.notices import (
    VARIABLES,
    NoticeSettings,
    OutgoingNotice,
    SmtpNotifier,
    SpoolNotifier,
    TemplateError,
    Templates,
    build_context,
    format_money,
    make_notifier,
    message_id,
    render_page,
    sample_context,
)
from policy.model import UpcomingMeasure
from tests.servers.base import free_port, wait_for
from tests.servers.smtp import SMTP_PASSWORD, SMTP_USER, SmtpServer

NOW = datetime(2026, 3, 20, 9, 30, tzinfo=UTC)
STAGE_TEMPLATES = ["outstanding", "pre_suspension", "suspended", "deletion_warning", "deleted", "mass_mail"]


def notice_settings(**values: Any) -> NoticeSettings:
    """Settings as the policy loader builds them: from the mapping of the ``notices:`` section."""
    return NoticeSettings.model_validate(values)


def settings_for(server: SmtpServer | None = None, *, spool: Path | None = None, **smtp: Any) -> NoticeSettings:
    values: dict[str, Any] = {
        "from_addr": "Example Hosting <billing@example.com>",
        "company": "Example Hosting",
        "payment_url": "https://pay.example.com/?account={account_id}",
        "support_email": "support@example.com",
        "domain": "notices.example.com",
    }
    if server is not None:
        values["smtp"] = {"host": server.host, "port": server.port, "timeout": 5, **smtp}
    else:
        values["spool_dir"] = spool or Path("unused-spool")
    return notice_settings(**values)


def account(n: int, currency: str = "EUR") -> dict[str, Any]:
    return {"id": f"acct-{n}", "username": f"user{n}", "billing_email": f"billing{n}@customer.example",
            "currency": currency}


def notice_for(templates: Templates, settings: NoticeSettings, n: int, *, stage: str = "pre_suspension",
               balance: str = "-1234.5", currency: str = "EUR", locale: str = "de") -> OutgoingNotice:
    acct = account(n, currency)
    ctx = build_context(
        account=acct, balance=Decimal(balance), credit_limit=Decimal("100"),
        debt_start=datetime(2026, 3, 1, 8, tzinfo=UTC), now=NOW, stage=stage,
        next_measure=UpcomingMeasure("suspend", "suspend", datetime(2026, 3, 27, tzinfo=UTC)),
        settings=settings, locale=locale,
    )
    return OutgoingNotice(key=f"{acct['id']}:7:{stage}", to=acct["billing_email"],
                          message_id=message_id(acct["id"], 7, stage, settings.message_domain),
                          rendered=templates.render(stage, ctx))


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates.load(None)


@pytest.fixture(params=[True, False], ids=["pipelining", "no-pipelining"])
def smtp(smtp_server: SmtpServer, request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    """The plain server, offering PIPELINING (as Postfix does) and not (one command at a time)."""
    smtp_server.reset()
    smtp_server.pipelining = request.param
    yield smtp_server


@pytest.fixture
def tls_smtp(smtp_tls_server: SmtpServer) -> Iterator[SmtpServer]:
    smtp_tls_server.reset()
    yield smtp_tls_server


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


# --- templates -----------------------------------------------------------------------------------


def test_defaults_cover_every_stage_and_the_suspended_page(templates: Templates) -> None:
    assert set(STAGE_TEMPLATES) <= set(templates.names())
    assert templates.pages() == ["suspended_page"]
    templates.require(STAGE_TEMPLATES)
    with pytest.raises(TemplateError, match="'final_demand' not found"):
        templates.require(["final_demand"])


def test_unknown_variable_stops_load_with_file_line_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "outstanding.txt.j2", "Subject: Debt on {{ account_id }}\n\nDear {{ username }},\n"
                                                 "you owe {{ balanse }}.\n")
    with pytest.raises(TemplateError) as err:
        Templates.load(tmp_path)
    message = str(err.value)
    assert f"{path}:4: unknown variable 'balanse'" in message
    assert "did you mean 'balance'?" in message
    assert "arrears templates vars" in message


def test_unknown_variable_in_subject_is_on_line_one(tmp_path: Path) -> None:
    path = write(tmp_path, "custom.txt.j2", "Subject: {{ acount_id }}\n\nbody\n")
    with pytest.raises(TemplateError, match=f"{path}:1: unknown variable 'acount_id'"):
        Templates.load(tmp_path)


def test_a_template_failing_as_it_renders_stops_load_with_its_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "custom.txt.j2", "Subject: {{ account_id }}\n\nDear {{ username }},\n"
                                            "{{ days_in_debt // 0 }}\n")
    with pytest.raises(TemplateError, match=f"{path}:4: ZeroDivisionError: .*; fix the template"):
        Templates.load(tmp_path)


def test_a_set_in_one_part_of_a_notice_changes_no_other_part(tmp_path: Path) -> None:
    write(tmp_path, "custom.txt.j2", "Subject: {% set company = 'Subject Co' %}{{ company }}\n"
                                     "{% set username = 'someone else' %}{{ username }} / {{ company }}\n")
    write(tmp_path, "custom.html.j2", "<p>{{ username }} / {{ company }}</p>\n")
    context = sample_context()
    notice = Templates.load(tmp_path).render("custom", context)
    assert notice.subject == "Subject Co"
    assert notice.text == f"someone else / {context['company']}\n"
    assert notice.html == f"<p>{context['username']} / {context['company']}</p>\n"
    assert context["username"] == "acme"


def test_syntax_error_stops_load_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "pre_suspension.txt.j2", "Subject: Warning\n\nline three\n{% if debt %}\nno end\n")
    write(tmp_path, "broken.html.j2", "<p>\n{{ company }\n</p>\n")
    with pytest.raises(TemplateError) as err:
        Templates.load(tmp_path)
    problems = err.value.problems
    assert any(p.startswith(f"{path}:") and "syntax error" in p and "endif" in p for p in problems), problems
    assert any(p.startswith(f"{tmp_path / 'broken.html.j2'}:2: syntax error") for p in problems), problems


def test_text_template_needs_a_subject_line(tmp_path: Path) -> None:
    path = write(tmp_path, "outstanding.txt.j2", "Dear {{ username }}\n")
    with pytest.raises(TemplateError, match=f"{path}:1: the first line must be 'Subject: ...'"):
        Templates.load(tmp_path)


@pytest.mark.parametrize("expression", ["''.__class__", "''.__class__.__mro__", "company.__class__.__subclasses__()",
                                        "cycler.__init__.__globals__"])
def test_sandbox_refuses_internal_attributes(tmp_path: Path, expression: str) -> None:
    path = write(tmp_path, "evil.txt.j2", f"Subject: hi\n\n{{{{ {expression} }}}}\n")
    with pytest.raises(TemplateError) as err:
        Templates.load(tmp_path)
    assert f"{path}:3" in str(err.value)
    assert "unsafe" in str(err.value) or "SecurityError" in str(err.value)


def test_operator_template_replaces_the_whole_default(tmp_path: Path) -> None:
    write(tmp_path, "outstanding.txt.j2", "Subject: {{ company }}: please pay {{ debt }}\n\nPay {{ payment_url }}\n")
    write(tmp_path, "final_demand.txt.j2", "Subject: Final demand for {{ account_id }}\n\n{{ amount_to_pay }}\n")
    loaded = Templates.load(tmp_path)
    ctx = sample_context()
    rendered = loaded.render("outstanding", ctx)
    assert rendered.subject == "Example Hosting: please pay $120.50"
    assert rendered.text == "Pay https://billing.example.com/pay?account=acme-01\n"
    assert rendered.html is None  # the packaged HTML does not go out beside an edited text
    assert "final_demand" in loaded.names()
    write(tmp_path, "suspended.html.j2", "<p>{{ company }}</p>\n")
    with pytest.raises(TemplateError, match="the notice 'suspended' needs its text too"):
        Templates.load(tmp_path)
    assert loaded.origin("pre_suspension") == Templates.load(None).origin("pre_suspension")  # still the default


def test_html_is_escaped_and_text_is_not(tmp_path: Path, templates: Templates) -> None:
    settings = settings_for().model_copy(update={"company": "Smith & <Sons>"})
    ctx = build_context(account=account(1), balance=Decimal("-50"), credit_limit=Decimal(0), debt_start=NOW,
                        now=NOW, stage="outstanding", settings=settings)
    rendered = templates.render("outstanding", ctx)
    assert "Smith & <Sons>" in rendered.text
    assert rendered.html is not None
    assert "Smith &amp; &lt;Sons&gt;" in rendered.html and "<Sons>" not in rendered.html
    page = render_page(templates, {"company": "Smith & <Sons>", "support_email": "help@example.com"})
    assert "Smith &amp; &lt;Sons&gt;" in page and "mailto:help@example.com" in page


def test_subject_never_spans_lines(tmp_path: Path) -> None:
    write(tmp_path, "custom.txt.j2", "Subject: Hello {{ company }}\n\nbody\n")
    loaded = Templates.load(tmp_path)
    ctx = dict(sample_context(), company="Evil\r\nBcc: victim@example.com")
    assert loaded.render("custom", ctx).subject == "Hello Evil Bcc: victim@example.com"


def test_suspended_page_renders_without_an_account(templates: Templates) -> None:
    page = render_page(templates, {"company": "Example Hosting"})
    assert page.startswith("<!DOCTYPE html>")
    assert "This site is suspended" in page and "Example Hosting" in page


# --- context, money, Message-IDs -----------------------------------------------------------------


def test_context_amounts_days_and_next_measure() -> None:
    ctx = build_context(
        account={"id": "a1", "billing_email": "b@x.example", "currency": "USD"}, balance=Decimal("-1520.256"),
        credit_limit=Decimal("20"), debt_start=datetime(2026, 3, 1, 23, 30, tzinfo=UTC),
        now=datetime(2026, 3, 10, 12, tzinfo=UTC), stage="deletion_warning",
        next_measure=UpcomingMeasure("delete", "delete", datetime(2026, 4, 1, 22, 30, tzinfo=UTC)),
        settings=settings_for(), timezone="Europe/Berlin",
    )
    assert set(ctx) == set(VARIABLES)
    assert ctx["balance"] == "-$1,520.26"
    assert ctx["debt"] == "$1,520.26"
    assert ctx["amount_to_pay"] == "$1,500.26"
    assert ctx["credit_limit"] == "$20.00"
    assert ctx["debt_start"] == "2026-03-02"  # 23:30 UTC is already the 2nd in Berlin
    assert ctx["days_in_debt"] == 8
    assert ctx["next_measure"] == "deletion of the account and all its files"
    assert ctx["next_measure_date"] == ctx["deletion_date"] == "2026-04-02"
    assert ctx["days_to_next_measure"] == 23
    assert ctx["username"] == "a1"
    assert ctx["payment_url"] == "https://pay.example.com/?account=a1"


@pytest.mark.parametrize(("amount", "currency", "locale", "expected"), [
    ("1234.5", "USD", "en", "$1,234.50"),
    ("-1234.5", "EUR", "de", "-1.234,50\u00a0€"),
    ("-0.004", "USD", "en", "$0.00"),
    ("1234567", "JPY", "en", "¥1,234,567"),
    ("5", "BHD", "en", "BHD5.000"),
    ("1234.5", "EUR", "fr", "1\u202f234,50\u00a0€"),
])
def test_format_money(amount: str, currency: str, locale: str, expected: str) -> None:
    assert format_money(Decimal(amount), currency, locale) == expected


def test_message_id_is_deterministic_and_distinct() -> None:
    a = message_id("acct.1", 7, "pre_suspension", "example.com")
    assert a == message_id("acct.1", 7, "pre_suspension", "example.com")
    assert a == "<arrears.acct=2E1.7.pre_suspension@example.com>"
    others = {message_id("acct", 1, "7.pre_suspension", "example.com"), message_id("acct.1", 8, "pre_suspension",
              "example.com"), message_id("acct.1", 7, "suspended", "example.com")}
    assert a not in others and len(others) == 3
    parsed = email.utils.parseaddr(message_id("a@b c<d>", 1, "x", "example.com"))[1]
    assert parsed.endswith("@example.com") and " " not in parsed and "<" not in parsed


def test_settings_reject_unknown_keys_and_passwords_in_files() -> None:
    base = {"from_addr": "billing@example.com", "spool_dir": "/tmp/spool"}
    with pytest.raises(ValidationError, match="extra"):
        notice_settings(**base, colour="red")
    with pytest.raises(ValidationError, match="password_env"):
        notice_settings(from_addr="billing@example.com",
                       smtp={"host": "mx", "starttls": True, "username": "u", "password": "p"})
    with pytest.raises(ValidationError, match="exactly one"):
        notice_settings(from_addr="billing@example.com")
    with pytest.raises(ValidationError, match="starttls or ssl"):
        notice_settings(from_addr="billing@example.com", smtp={"host": "mx", "username": "u", "password_env": "P"})
    assert notice_settings(**base).message_domain == "example.com"
    with pytest.raises(ValidationError, match="is not an e-mail address"):
        notice_settings(**base, staff_email="staff\nBcc: x@evil.example")
    assert notice_settings(**base, staff_email="Billing staff <staff@example.com>").staff_email


def test_the_staff_message_about_a_notice_has_its_own_message_id() -> None:
    notice = message_id("acct-1", 7, "pre_suspension", "example.com")
    staff = message_id("acct-1", 7, "pre_suspension", "example.com", copy="staff")
    assert staff == "<arrears.acct-1.7.pre_suspension.staff@example.com>" and staff != notice
    assert staff == message_id("acct-1", 7, "pre_suspension", "example.com", copy="staff")
    # no stage name can produce it: a '.' in a stage is written =2E
    assert staff != message_id("acct-1", 7, "pre_suspension.staff", "example.com")


def test_5xx_at_the_end_of_data_is_a_permanent_failure(templates: Templates, smtp: SmtpServer) -> None:
    settings = settings_for(smtp)
    smtp.reject_data.add("billing1@customer.example")
    batch = [notice_for(templates, settings, 1), notice_for(templates, settings, 2)]
    results = SmtpNotifier(settings, clock=lambda: NOW).send(batch)
    bounced = results["acct-1:7:pre_suspension"]
    assert not bounced.ok and bounced.permanent and bounced.error is not None
    assert bounced.error.startswith("message refused: 550 5.7.1 <billing1@customer.example>")
    assert results["acct-2:7:pre_suspension"].ok
    assert [r.rcpt_tos for r in smtp.messages] == [("billing2@customer.example",)]


# --- SMTP delivery -------------------------------------------------------------------------------


def test_batch_goes_over_one_connection_to_the_billing_addresses(templates: Templates, smtp: SmtpServer) -> None:
    settings = settings_for(smtp)
    batch = [notice_for(templates, settings, n) for n in (1, 2, 3)]
    results = make_notifier(settings, clock=lambda: NOW).send(batch)
    assert results == {n.key: results[n.key] for n in batch}
    assert all(r.ok and r.error is None for r in results.values())
    received = smtp.wait_messages(3)
    assert smtp.connections == 1
    assert [m.rcpt_tos for m in received] == [(f"billing{n}@customer.example",) for n in (1, 2, 3)]
    assert {m.mail_from for m in received} == {"billing@example.com"}
    first = received[0].message
    assert first["To"] == "billing1@customer.example"
    assert first["From"] == "Example Hosting <billing@example.com>"
    assert first["Subject"] == "Your account acct-1 will be suspended on 2026-03-27"
    assert first["Message-ID"] == "<arrears.acct-1.7.pre_suspension@notices.example.com>"
    assert email.utils.parsedate_to_datetime(first["Date"]) is not None
    assert first["Auto-Submitted"] == "auto-generated"
    assert first.get_content_type() == "multipart/alternative"
    text = first.get_body(("plain",))
    html = first.get_body(("html",))
    assert text is not None and html is not None
    assert "-1.234,50\u00a0€" in text.get_content() and "1.134,50\u00a0€" in text.get_content()
    assert "<strong>-1.234,50\u00a0€</strong>" in html.get_content()


def test_text_only_notice_is_a_single_part(templates: Templates, smtp: SmtpServer) -> None:
    settings = settings_for(smtp)
    notice = notice_for(templates, settings, 4, stage="deleted", currency="USD", locale="en")
    assert notice.rendered.html is None
    assert make_notifier(settings, clock=lambda: NOW).send([notice])[notice.key].ok
    msg = smtp.wait_messages(1)[0].message
    assert msg.get_content_type() == "text/plain"
    assert "-$1,234.50" in msg.get_content()


def test_starttls_and_login(templates: Templates, tls_smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARREARS_TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    settings = settings_for(tls_smtp, starttls=True, username=SMTP_USER, password_env="ARREARS_TEST_SMTP_PASSWORD",
                            ca_file=str(tls_smtp.ca_file))
    batch = [notice_for(templates, settings, n) for n in (1, 2)]
    results = make_notifier(settings, clock=lambda: NOW).send(batch)
    assert all(r.ok for r in results.values()), results
    received = tls_smtp.wait_messages(2)
    assert all(m.tls and m.authenticated for m in received)
    assert tls_smtp.logins == [SMTP_USER]
    assert tls_smtp.connections == 1


def test_tls_server_not_trusted_is_not_sent_to(templates: Templates, tls_smtp: SmtpServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARREARS_TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    settings = settings_for(tls_smtp, starttls=True, username=SMTP_USER, password_env="ARREARS_TEST_SMTP_PASSWORD")
    notice = notice_for(templates, settings, 1)
    result = make_notifier(settings, clock=lambda: NOW).send([notice])[notice.key]
    assert not result.ok and not result.permanent
    assert "CERTIFICATE_VERIFY_FAILED" in (result.error or "")
    assert tls_smtp.messages == [] and tls_smtp.logins == []


def test_wrong_or_missing_password_is_a_temporary_failure(templates: Templates, tls_smtp: SmtpServer) -> None:
    settings = settings_for(tls_smtp, starttls=True, username=SMTP_USER, password_env="ARREARS_TEST_SMTP_PASSWORD",
                            ca_file=str(tls_smtp.ca_file))
    notice = notice_for(templates, settings, 1)
    wrong = SmtpNotifier(settings, clock=lambda: NOW,
                         environ={"ARREARS_TEST_SMTP_PASSWORD": "not-it"}).send([notice])[notice.key]
    assert not wrong.ok and not wrong.permanent
    assert "login" in (wrong.error or "") and "535" in (wrong.error or "")
    assert "not-it" not in (wrong.error or "")
    missing = SmtpNotifier(settings, clock=lambda: NOW, environ={}).send([notice])[notice.key]
    assert not missing.ok and not missing.permanent
    assert "ARREARS_TEST_SMTP_PASSWORD" in (missing.error or "")
    assert tls_smtp.messages == []


def test_5xx_for_one_recipient_fails_only_that_notice(templates: Templates, smtp: SmtpServer) -> None:
    settings = settings_for(smtp)
    batch = [notice_for(templates, settings, n) for n in (1, 2, 3, 4)]
    smtp.reject.add("billing2@customer.example")
    smtp.defer.add("billing3@customer.example")
    results = make_notifier(settings, clock=lambda: NOW).send(batch)
    assert results[batch[0].key].ok and results[batch[3].key].ok
    bounced, deferred = results[batch[1].key], results[batch[2].key]
    assert not bounced.ok and bounced.permanent and "550" in (bounced.error or "")
    assert not deferred.ok and not deferred.permanent and "451" in (deferred.error or "")
    assert [m.rcpt_tos for m in smtp.wait_messages(2)] == [("billing1@customer.example",),
                                                          ("billing4@customer.example",)]
    assert smtp.connections == 1


def test_a_server_closing_the_connection_costs_one_notice_and_the_batch_goes_on(templates: Templates,
                                                                               smtp: SmtpServer) -> None:
    settings = settings_for(smtp)
    batch = [notice_for(templates, settings, n) for n in (1, 2, 3)]
    smtp.closing.add("billing2@customer.example")  # 421 at its RCPT
    results = make_notifier(settings, clock=lambda: NOW).send(batch)
    closed = results[batch[1].key]
    assert results[batch[0].key].ok and results[batch[2].key].ok
    assert not closed.ok and not closed.permanent and "421" in (closed.error or "")  # sent again next run
    assert [m.rcpt_tos for m in smtp.wait_messages(2)] == [("billing1@customer.example",),
                                                          ("billing3@customer.example",)]
    assert smtp.connections == 2  # a new connection for the rest of the batch


def test_each_result_is_reported_before_the_next_message_goes_out(templates: Templates, smtp: SmtpServer) -> None:
    settings = settings_for(smtp)
    batch = [notice_for(templates, settings, n) for n in (1, 2, 3)]
    bad = OutgoingNotice(key="k-bad", to="not an address", message_id=batch[0].message_id,
                         rendered=batch[0].rendered)
    smtp.reject.add("billing2@customer.example")
    reported: list[tuple[str, bool, int]] = []  # key, accepted, messages the server had at that moment

    def on_result(notice: OutgoingNotice, result: Any) -> None:
        if not reported:
            # while the first result is recorded the second message has not gone out; with PIPELINING
            # its envelope (MAIL, RCPT, DATA) is with the server already, its content is not
            if smtp.pipelining:
                wait_for(lambda: smtp.mails == 2, timeout=5, what="the next envelope")
            assert smtp.mails == (2 if smtp.pipelining else 1)
        with smtp.lock:
            reported.append((notice.key, result.ok, len(smtp.messages)))

    results = make_notifier(settings, clock=lambda: NOW).send([*batch, bad], on_result=on_result)
    assert reported == [(batch[0].key, True, 1), (batch[1].key, False, 1), (batch[2].key, True, 2),
                        ("k-bad", False, 2)]  # in the batch's order, each message built as it goes out
    assert {k: r.ok for k, r in results.items()} == {k: ok for k, ok, _ in reported}


def test_a_failing_report_stops_the_batch(templates: Templates, smtp: SmtpServer) -> None:
    settings = settings_for(smtp)
    batch = [notice_for(templates, settings, n) for n in (1, 2)]

    def on_result(notice: OutgoingNotice, result: Any) -> None:
        raise RuntimeError("cannot record")

    with pytest.raises(RuntimeError, match="cannot record"):
        make_notifier(settings, clock=lambda: NOW).send(batch, on_result=on_result)
    assert [m.rcpt_tos for m in smtp.wait_messages(1)] == [("billing1@customer.example",)]
    with smtp.lock:
        assert len(smtp.messages) == 1  # what cannot be recorded is not followed by more


def test_connection_failure_is_reported_for_every_notice(templates: Templates) -> None:
    settings = notice_settings(from_addr="billing@example.com", smtp={"host": "127.0.0.1", "port": free_port(),
                                                                      "timeout": 2})
    batch = [notice_for(templates, settings, n) for n in (1, 2)]
    reported: dict[str, Any] = {}
    results = make_notifier(settings, clock=lambda: NOW).send(
        batch, on_result=lambda n, r: reported.__setitem__(n.key, r))
    assert reported == results and len(results) == 2


def test_server_down_is_a_temporary_failure_for_all(templates: Templates) -> None:
    settings = notice_settings(from_addr="billing@example.com", smtp={"host": "127.0.0.1", "port": free_port(),
                                                                      "timeout": 2})
    batch = [notice_for(templates, settings, n) for n in (1, 2)]
    results = make_notifier(settings, clock=lambda: NOW).send(batch)
    assert set(results) == {n.key for n in batch}
    for result in results.values():
        assert not result.ok and not result.permanent
        assert "cannot connect" in (result.error or "")


def test_invalid_billing_address_fails_permanently_without_connecting(templates: Templates,
                                                                      smtp: SmtpServer) -> None:
    settings = settings_for(smtp)
    good = notice_for(templates, settings, 1)
    bad = OutgoingNotice(key="k-bad", to="not an address", message_id=good.message_id, rendered=good.rendered)
    none = OutgoingNotice(key="k-none", to="", message_id=good.message_id, rendered=good.rendered)
    results = make_notifier(settings, clock=lambda: NOW).send([bad, none])
    assert not results["k-bad"].ok and results["k-bad"].permanent
    assert not results["k-none"].ok and results["k-none"].permanent
    assert results["k-none"].error == "the account has no billing address"
    assert smtp.connections == 0
    assert make_notifier(settings, clock=lambda: NOW).send([]) == {}
    assert smtp.connections == 0


# --- spool ---------------------------------------------------------------------------------------


def test_spool_writes_each_notice_once(templates: Templates, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    settings = settings_for(spool=spool)
    notifier = make_notifier(settings, clock=lambda: NOW)
    assert isinstance(notifier, SpoolNotifier)
    batch = [notice_for(templates, settings, n) for n in (1, 2)]
    assert all(r.ok for r in notifier.send(batch).values())
    files = sorted(spool.glob("*.eml"))
    assert [f.name for f in files] == ["acct-1:7:pre_suspension.eml", "acct-2:7:pre_suspension.eml"]
    before = {f: f.read_bytes() for f in files}
    again = make_notifier(settings, clock=lambda: NOW).send(batch)
    assert all(r.ok for r in again.values())
    assert {f: f.read_bytes() for f in sorted(spool.glob("*.eml"))} == before
    assert not list(spool.glob(".tmp-*"))
    msg = email.message_from_bytes(before[files[0]], policy=email.policy.default)
    assert msg["Message-ID"] == "<arrears.acct-1.7.pre_suspension@notices.example.com>"
    assert msg["To"] == "billing1@customer.example"


def test_spool_reports_the_batch_once_its_files_are_in_place(templates: Templates, tmp_path: Path) -> None:
    settings = settings_for(spool=tmp_path / "spool")
    notifier = SpoolNotifier(settings, clock=lambda: NOW)
    batch = [notice_for(templates, settings, n) for n in (1, 2)]
    seen: list[tuple[str, bool, list[str]]] = []

    def on_result(notice: OutgoingNotice, result: Any) -> None:
        seen.append((notice.key, result.ok, sorted(p.name for p in (tmp_path / "spool").iterdir())))

    notifier.send(batch, on_result=on_result)
    both = ["acct-1:7:pre_suspension.eml", "acct-2:7:pre_suspension.eml"]  # no temporary file left
    assert seen == [(batch[0].key, True, both), (batch[1].key, True, both)]


def test_spool_key_cannot_escape_the_folder(templates: Templates, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    settings = settings_for(spool=spool)
    good = notice_for(templates, settings, 1)
    notice = OutgoingNotice(key="../../etc/evil", to=good.to, message_id=good.message_id, rendered=good.rendered)
    assert make_notifier(settings, clock=lambda: NOW).send([notice])[notice.key].ok
    written = list(tmp_path.rglob("*.eml"))
    assert len(written) == 1 and written[0].parent == spool


# --- the CLI -------------------------------------------------------------------------------------


def test_cli_vars_lists_every_variable() -> None:
    result = CliRunner().invoke(templates_group, ["vars", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [v["name"] for v in listed] == list(VARIABLES)
    plain = CliRunner().invoke(templates_group, ["vars"])
    assert "{{ days_in_debt }}" in plain.output


def test_cli_preview_uses_the_account_hook(tmp_path: Path) -> None:
    fields = {"id": "acct-9", "username": "nine", "billing_email": "pay@nine.example", "currency": "GBP",
              "balance": "-75", "credit_limit": "10", "debt_start": "2026-03-01T00:00:00+00:00",
              "next_measure": "suspend", "next_due": "2026-03-25T00:00:00+00:00"}
    obj = {"account_fields": lambda account_id: fields if account_id == "acct-9" else None,
           "notice_settings": settings_for(), "now": NOW}
    result = CliRunner().invoke(templates_group, ["preview", "pre_suspension", "acct-9"], obj=obj)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("To: pay@nine.example\n"
                                    "Subject: Your account acct-9 will be suspended on 2026-03-25\n")
    assert "-£75.00" in result.output and "£65.00" in result.output
    page = CliRunner().invoke(templates_group, ["preview", "suspended_page", "acct-9"], obj=obj)
    assert page.exit_code == 0 and "This site is suspended" in page.output
    unknown = CliRunner().invoke(templates_group, ["preview", "pre_suspension", "nobody"], obj=obj)
    assert unknown.exit_code != 0 and "no account 'nobody'" in unknown.output


def test_cli_preview_reports_a_broken_operator_template(tmp_path: Path) -> None:
    path = write(tmp_path, "outstanding.txt.j2", "Subject: x\n\n{{ nope }}\n")
    result = CliRunner().invoke(templates_group, ["preview", "outstanding", "a1"], obj={"templates_dir": tmp_path})
    assert result.exit_code != 0
    assert f"{path}:3: unknown variable 'nope'" in result.output


def test_windows_edited_template_is_read(tmp_path: Path) -> None:
    (tmp_path / "custom.txt.j2").write_bytes(b"\xef\xbb\xbfSubject: Debt of {{ account_id }}\r\n\r\nPay {{ debt }}\r\n")
    rendered = Templates.load(tmp_path).render("custom", sample_context())
    assert rendered.subject == "Debt of acme-01"
    assert rendered.text == "Pay $120.50\n"


def test_a_servers_reply_is_kept_on_one_printable_line() -> None:
    from agent.notices.delivery import _reply

    reply = _reply(550, b"5.1.1 <a@b.example>\x1b[2J gone\r\n 550 second line\x07")
    assert reply == "550 5.1.1 <a@b.example>\\x1b[2J gone 550 second line\\x07"
    assert reply.isprintable()

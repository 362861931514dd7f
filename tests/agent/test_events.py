"""Events to billing: a webhook to a real HTTP server on loopback (JSON body, HMAC signature, retries) and a
command that reads the payload on stdin."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.events import EventSettings, EventSink, build_event
from tests.servers.base import free_port

SECRET = "webhook-test-secret"
SUSPENDED = datetime(2026, 3, 27, 0, 0, tzinfo=UTC)
RESUMED = datetime(2026, 4, 3, 14, 5, tzinfo=UTC)
FAST = {"retry_wait": 0.01, "retry_max_wait": 0.05, "timeout": 5}


def event_settings(**values: Any) -> EventSettings:
    """Settings as the policy loader builds them: from the mapping of the ``events:`` section."""
    return EventSettings.model_validate(values)


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Billing:
    """A small HTTP endpoint: /ok answers 200, /fail 500, /flaky 503 twice then 200, /gone 404,
    /moved a redirect to /ok."""

    url: str
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == path]


@pytest.fixture(scope="module")
def billing_http() -> Iterator[Billing]:
    billing = Billing(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with billing.lock:
                billing.hits.append(Hit(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                flaky_seen = sum(1 for h in billing.hits if h.path == "/flaky")
            status = {"/ok": 200, "/fail": 500, "/gone": 404, "/moved": 302}.get(self.path, 200)
            if self.path == "/flaky":
                status = 503 if flaky_seen <= 2 else 204
            self.send_response(status)
            if status == 302:
                self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    billing.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield billing
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def billing(billing_http: Billing) -> Billing:
    with billing_http.lock:
        billing_http.hits.clear()
    return billing_http


def resumed_event() -> dict[str, Any]:
    return build_event("resumed", account="acct-1", at=RESUMED, episode=7, reason="debt paid by card",
                       suspended_from=SUSPENDED, data={"balance": Decimal("5.00"), "holds_released": ["debt"]})


def test_resumed_event_carries_the_suspension_period() -> None:
    event = resumed_event()
    assert event["type"] == "resumed"
    assert event["suspension"] == {"start": "2026-03-27T00:00:00Z", "end": "2026-04-03T14:05:00Z"}
    assert event["id"] == build_event("resumed", account="acct-1", at=RESUMED, episode=7,
                                      suspended_from=SUSPENDED)["id"]
    with pytest.raises(ValueError, match="suspension's start"):
        build_event("resumed", account="acct-1", at=RESUMED)
    with pytest.raises(ValueError, match="unknown event type"):
        build_event("paid", account="acct-1", at=RESUMED)  # type: ignore[arg-type]


def test_webhook_receives_the_json_and_its_signature(billing: Billing, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARREARS_TEST_EVENT_SECRET", SECRET)
    sink = EventSink(event_settings(webhook=billing.url + "/ok", secret_env="ARREARS_TEST_EVENT_SECRET", **FAST))
    result = sink.emit(resumed_event())
    assert result.ok and result.attempts == 1 and result.error is None
    [hit] = billing.on("/ok")
    payload = json.loads(hit.body)
    assert payload["type"] == "resumed" and payload["account"] == "acct-1" and payload["episode"] == 7
    assert payload["suspension"] == {"start": "2026-03-27T00:00:00Z", "end": "2026-04-03T14:05:00Z"}
    assert payload["data"] == {"balance": "5.00", "holds_released": ["debt"]}
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["x-arrears-event"] == "resumed"
    expected = "sha256=" + hmac.new(SECRET.encode(), hit.body, hashlib.sha256).hexdigest()
    assert hit.headers["x-arrears-signature"] == expected
    assert SECRET not in json.dumps(hit.headers)


def test_unsigned_when_no_secret_is_configured(billing: Billing) -> None:
    assert EventSink(event_settings(webhook=billing.url + "/ok", **FAST)).emit(resumed_event()).ok
    [hit] = billing.on("/ok")
    assert "x-arrears-signature" not in hit.headers


def test_missing_secret_sends_nothing(billing: Billing) -> None:
    sink = EventSink(event_settings(webhook=billing.url + "/ok", secret_env="ARREARS_TEST_EVENT_SECRET", **FAST),
                     environ={})
    result = sink.emit(resumed_event())
    assert not result.ok and result.attempts == 0 and "ARREARS_TEST_EVENT_SECRET" in (result.error or "")
    assert billing.hits == []


def test_failing_endpoint_is_retried_then_reported(billing: Billing) -> None:
    result = EventSink(event_settings(webhook=billing.url + "/fail", retries=2, **FAST)).emit(resumed_event())
    assert not result.ok and not result.permanent
    assert result.attempts == 3
    assert "500" in (result.error or "")
    assert len(billing.on("/fail")) == 3


def test_flaky_endpoint_succeeds_on_a_retry(billing: Billing) -> None:
    result = EventSink(event_settings(webhook=billing.url + "/flaky", retries=3, **FAST)).emit(resumed_event())
    assert result.ok and result.attempts == 3
    bodies = {h.body for h in billing.on("/flaky")}
    assert len(bodies) == 1  # every attempt sends the same payload


def test_client_error_and_redirect_are_not_retried(billing: Billing) -> None:
    gone = EventSink(event_settings(webhook=billing.url + "/gone", retries=3, **FAST)).emit(resumed_event())
    assert not gone.ok and gone.permanent and gone.attempts == 1 and "404" in (gone.error or "")
    moved = EventSink(event_settings(webhook=billing.url + "/moved", retries=3, **FAST)).emit(resumed_event())
    assert not moved.ok and moved.attempts == 1
    assert billing.on("/ok") == []  # the payload never follows a redirect


def test_unreachable_webhook_is_a_temporary_failure() -> None:
    sink = EventSink(event_settings(webhook=f"http://127.0.0.1:{free_port()}/hook", retries=1, **FAST))
    result = sink.emit(resumed_event())
    assert not result.ok and not result.permanent and result.attempts == 2
    assert "unreachable" in (result.error or "")


def test_event_types_not_configured_are_skipped(billing: Billing) -> None:
    sink = EventSink(event_settings(webhook=billing.url + "/ok", on=["suspended", "resumed"], **FAST))
    notice = build_event("notice_sent", account="acct-1", at=RESUMED, episode=7, stage="pre_suspension")
    assert sink.emit(notice).skipped
    assert sink.emit(resumed_event()).ok
    assert [json.loads(h.body)["type"] for h in billing.hits] == ["resumed"]


def test_command_receives_the_payload_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "payload.json"
    script = ("import json, os, sys; data = sys.stdin.read(); "
              "open(sys.argv[1], 'w').write(json.dumps({'stdin': data, 'event': os.environ['ARREARS_EVENT']}))")
    sink = EventSink(event_settings(command=[sys.executable, "-c", script, str(out)], **FAST))
    event = build_event("suspended", account="acct-2", at=SUSPENDED, episode=3, stage="suspend",
                        reason="balance below the credit limit for 14 days")
    result = sink.emit(event)
    assert result.ok and result.attempts == 1
    written = json.loads(out.read_text())
    assert written["event"] == "suspended"
    payload = json.loads(written["stdin"])
    assert payload["account"] == "acct-2" and payload["stage"] == "suspend" and payload["at"] == "2026-03-27T00:00:00Z"


def test_command_arguments_are_never_given_to_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    out = tmp_path / "argv.json"
    script = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"
    argv = [sys.executable, "-c", script, str(out), f"; touch {marker}", "$(id)"]
    assert EventSink(event_settings(command=argv, **FAST)).emit(resumed_event()).ok
    assert json.loads(out.read_text()) == [f"; touch {marker}", "$(id)"]
    assert not marker.exists()


def test_failing_command_is_retried_then_reported(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    script = "import sys; open(sys.argv[1], 'a').write('x\\n'); sys.stderr.write('billing is down\\n'); sys.exit(3)"
    sink = EventSink(event_settings(command=[sys.executable, "-c", script, str(runs)], retries=2, **FAST))
    result = sink.emit(resumed_event())
    assert not result.ok and result.attempts == 3
    assert "exited with 3" in (result.error or "") and "billing is down" in (result.error or "")
    assert runs.read_text().count("x") == 3


def test_missing_command_is_reported_at_once(tmp_path: Path) -> None:
    sink = EventSink(event_settings(command=[str(tmp_path / "no-such-program")], retries=3, **FAST))
    result = sink.emit(resumed_event())
    assert not result.ok and result.permanent and result.attempts == 1
    assert "not found" in (result.error or "")


def test_settings_validation() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        event_settings(command=["true"], webhook="https://billing.example.com/hook")
    with pytest.raises(ValidationError, match="exactly one"):
        event_settings()
    with pytest.raises(ValidationError, match="http"):
        event_settings(webhook="file:///etc/passwd")
    with pytest.raises(ValidationError, match="secret_env"):
        event_settings(webhook="https://billing.example.com/hook", secret="inline")
    with pytest.raises(ValidationError, match="extra"):
        event_settings(webhook="https://billing.example.com/hook", colour="red")
    with pytest.raises(ValidationError):
        event_settings(webhook="https://billing.example.com/hook", retries=1000)


@pytest.mark.parametrize("secret_env", ["ARREARS_WEBHOOK_SECRET", "ARREARS_EVENT_SECRET"])
def test_command_sees_none_of_the_agents_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 secret_env: str) -> None:
    monkeypatch.setenv("ARREARS_SMTP_PASSWORD", "smtp-password")  # named by notices.smtp.password_env
    monkeypatch.setenv(secret_env, "hmac-secret")  # named by events.secret_env
    monkeypatch.setenv("ARREARS_DB", "postgresql://arrears:db-password@db/arrears")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ARREARS_EVENT_SOURCE", "agent-7")
    monkeypatch.setenv("BILLING_TOKEN", "for-the-hook")
    monkeypatch.setenv("NOT_LISTED", "x")
    out = tmp_path / "env.json"
    script = "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"
    sink = EventSink(event_settings(command=[sys.executable, "-c", script, str(out)], secret_env=secret_env,
                                    env=["BILLING_TOKEN", "NOT_SET_ANYWHERE"], **FAST))

    result = sink.emit(resumed_event())

    assert result.ok, result.error
    seen = json.loads(out.read_text())
    assert not {"smtp-password", "hmac-secret"} & set(seen.values())
    assert not any("db-password" in value for value in seen.values())
    assert set(seen) - {"LC_CTYPE"} == {"PATH", "LANG", "HOME", "ARREARS_EVENT", "ARREARS_EVENT_ID",
                                        "ARREARS_EVENT_SOURCE", "BILLING_TOKEN"}
    assert seen["ARREARS_EVENT"] == "resumed" and seen["ARREARS_EVENT_ID"] == resumed_event()["id"]
    assert (seen["ARREARS_EVENT_SOURCE"], seen["BILLING_TOKEN"], seen["LANG"]) == ("agent-7", "for-the-hook",
                                                                                    "C.UTF-8")


def test_event_env_takes_variable_names_only() -> None:
    with pytest.raises(ValidationError, match="not an environment variable name"):
        event_settings(command=["true"], env=["BILLING_TOKEN=secret"])

"""Events to billing: each transition runs a configured command or POSTs a JSON webhook, retried.

The payload is one JSON object (:func:`build_event`): ``id`` (the same for the same transition, so the
receiver can drop duplicates), ``type``, ``account``, ``at``, ``episode``, ``stage``, ``reason``, and for
``resumed`` the ``suspension`` with its ``start`` and ``end`` (billing opens a new period when the one the
account was suspended in has ended).

A command gets the payload on stdin (argv list, never a shell) and ``ARREARS_EVENT`` / ``ARREARS_EVENT_ID``
in its environment; exit 0 is success. It does not inherit the agent's environment (which holds the SMTP
password, the webhook secret, database URLs ...): it sees only ``PATH``, ``LANG`` and ``HOME`` (``PATH``
defaults to ``/usr/local/bin:/usr/bin:/bin``), the agent's ``ARREARS_EVENT*`` variables, and the variables
``events.env`` names (a list of names; one the agent does not have is left out)::

    events:
      command: [/usr/local/bin/billing-hook]
      env: [BILLING_API_TOKEN, TZ]
 A webhook is a POST with ``Content-Type: application/json``;
any 2xx is success. With ``secret_env`` set, ``X-Arrears-Signature: sha256=<hex>`` is the HMAC-SHA256 of
the body under the secret read from that environment variable.

Failures are retried (bounded) with exponential back-off; an answer retrying cannot change (a 4xx other
than 408/429, a command that does not exist) is reported at once. The caller records the
:class:`EventResult`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

__all__ = [
    "EVENT_TYPES",
    "SIGNATURE_HEADER",
    "EventResult",
    "EventSettings",
    "EventSink",
    "EventType",
    "build_event",
    "encode_event",
    "make_sink",
    "sign",
]

EventType = Literal["debt_started", "notice_sent", "suspended", "resumed", "deleted", "restored"]
EVENT_TYPES: tuple[str, ...] = ("debt_started", "notice_sent", "suspended", "resumed", "deleted", "restored")
SIGNATURE_HEADER = "X-Arrears-Signature"
PAYLOAD_VERSION = 1
_RETRYABLE_HTTP = {408, 425, 429}
_OUTPUT_LIMIT = 500
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMMAND_BASE_ENV = ("PATH", "LANG", "HOME")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_COMMAND_ENV_PREFIX = "ARREARS_EVENT"


class EventSettings(BaseModel):
    """The ``events:`` section of policy.yaml: exactly one of ``command`` (argv list) and ``webhook`` (URL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: list[str] | None = None
    webhook: str | None = None
    timeout: float = Field(default=10.0, gt=0, le=300)
    retries: int = Field(default=3, ge=0, le=10)  # further attempts after the first
    retry_wait: float = Field(default=1.0, ge=0, le=60)  # first back-off, doubled per attempt
    retry_max_wait: float = Field(default=30.0, ge=0, le=300)
    secret_env: str | None = None  # NAME of the environment variable holding the HMAC secret
    on: list[EventType] | None = None  # the event types to send; default: all
    env: list[str] = Field(default_factory=list)  # NAMES of further variables the command sees

    @model_validator(mode="before")
    @classmethod
    def _no_secret(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "secret" in data:
            raise ValueError("events.secret is not allowed: put the secret in an environment variable and give "
                             "its name as events.secret_env")
        return data

    @field_validator("command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not value[0]):
            raise ValueError("command must be a non-empty list: the program, then its arguments")
        return value

    @field_validator("webhook")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.lower().startswith(("http://", "https://")):
                raise ValueError(f"webhook must be an http:// or https:// URL, got {value!r}")
            if any(c.isspace() for c in value):
                raise ValueError("webhook URL contains white space")
        return value

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> EventSettings:
        if (self.command is None) == (self.webhook is None):
            raise ValueError("set exactly one of events.command (a program) and events.webhook (a URL)")
        return self


@dataclass(frozen=True)
class EventResult:
    ok: bool
    attempts: int
    error: str | None = None
    permanent: bool = False  # retrying later will not help
    skipped: bool = False  # the event type is not configured to be sent


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build_event(type: EventType, *, account: str, at: datetime, episode: int | None = None,
                stage: str | None = None, reason: str | None = None, suspended_from: datetime | None = None,
                suspended_until: datetime | None = None, data: Mapping[str, Any] | None = None,
                id: str | None = None) -> dict[str, Any]:
    """The payload of one event. ``resumed`` needs ``suspended_from`` (the suspension's start); its end
    defaults to ``at``. ``data`` holds anything else for billing (amounts, template, actor ...)."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}; one of {', '.join(EVENT_TYPES)}")
    event: dict[str, Any] = {
        "version": PAYLOAD_VERSION,
        "id": id or ":".join([type, account, str(episode if episode is not None else "-"), stage or "-",
                              _iso(at) or ""]),
        "type": type,
        "account": account,
        "at": _iso(at),
        "episode": episode,
        "stage": stage,
        "reason": reason,
    }
    if type == "resumed":
        if suspended_from is None:
            raise ValueError("a resumed event carries the suspension's start (suspended_from)")
        event["suspension"] = {"start": _iso(suspended_from), "end": _iso(suspended_until or at)}
    elif suspended_from is not None:
        event["suspension"] = {"start": _iso(suspended_from), "end": _iso(suspended_until)}
    if data:
        event["data"] = dict(data)
    return event


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_event(event: Mapping[str, Any]) -> bytes:
    """The body sent: compact JSON with sorted keys (amounts as strings, times in ISO 8601 UTC)."""
    return json.dumps(event, default=_json_default, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def sign(body: bytes, secret: str) -> str:
    """The signature header value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class _Retry(Exception):
    """A failure worth another attempt."""


class _Fail(Exception):
    """A failure no attempt will change."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:
        return None  # a redirect is answered as the error it is, never followed with the payload


def _tail(data: bytes | str | None) -> str:
    if not data:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    return text[-_OUTPUT_LIMIT:]


class EventSink:
    """Delivers events as ``settings`` say; :meth:`emit` never raises for delivery problems."""

    def __init__(self, settings: EventSettings, *, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = os.environ if environ is None else environ
        self._opener = urllib.request.build_opener(_NoRedirect)

    def wants(self, event_type: str) -> bool:
        return self.settings.on is None or event_type in self.settings.on

    def emit(self, event: Mapping[str, Any]) -> EventResult:
        event_type = str(event.get("type", ""))
        if not self.wants(event_type):
            return EventResult(ok=True, attempts=0, skipped=True)
        try:
            body = encode_event(event)
        except (TypeError, ValueError) as exc:
            return EventResult(ok=False, attempts=0, error=f"cannot encode the event: {exc}", permanent=True)
        secret = None
        if self.settings.secret_env is not None:
            secret = self.environ.get(self.settings.secret_env)
            if not secret:
                return EventResult(ok=False, attempts=0,
                                   error=f"the event secret's environment variable {self.settings.secret_env} "
                                         f"is not set")
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            if self.settings.command is not None:
                self._run_command(self.settings.command, body, event)
            else:
                assert self.settings.webhook is not None
                self._post(self.settings.webhook, body, event, secret)

        s = self.settings
        retrying = Retrying(
            stop=stop_after_attempt(s.retries + 1),
            wait=wait_exponential(multiplier=s.retry_wait, min=s.retry_wait, max=max(s.retry_wait, s.retry_max_wait)),
            retry=retry_if_exception_type(_Retry),
            reraise=True,
        )
        try:
            retrying(attempt)
        except _Retry as exc:
            return EventResult(ok=False, attempts=attempts, error=f"{exc} (after {attempts} attempts)")
        except _Fail as exc:
            return EventResult(ok=False, attempts=attempts, error=str(exc), permanent=True)
        return EventResult(ok=True, attempts=attempts)

    def _command_env(self, event: Mapping[str, Any]) -> dict[str, str]:
        """The whole environment of the event command for ``event`` (see the module doc)."""
        env = {name: self.environ[name] for name in _COMMAND_BASE_ENV if name in self.environ}
        env.setdefault("PATH", _DEFAULT_PATH)
        env.update({name: value for name, value in self.environ.items()
                    if name.startswith(_COMMAND_ENV_PREFIX) and name != self.settings.secret_env})
        env.update({name: self.environ[name] for name in self.settings.env if name in self.environ})
        env.update(ARREARS_EVENT=str(event.get("type", "")), ARREARS_EVENT_ID=str(event.get("id", "")))
        return env

    def _run_command(self, argv: Sequence[str], body: bytes, event: Mapping[str, Any]) -> None:
        env = self._command_env(event)
        try:
            proc = subprocess.run(list(argv), input=body, capture_output=True, timeout=self.settings.timeout,
                                  env=env, shell=False, check=False)
        except FileNotFoundError as exc:
            raise _Fail(f"event command {argv[0]!r} not found: {exc.strerror}") from exc
        except PermissionError as exc:
            raise _Fail(f"event command {argv[0]!r} cannot be run: {exc.strerror}") from exc
        except subprocess.TimeoutExpired as exc:
            raise _Retry(f"event command timed out after {self.settings.timeout}s") from exc
        except OSError as exc:
            raise _Retry(f"event command failed to start: {exc}") from exc
        if proc.returncode != 0:
            detail = _tail(proc.stderr) or _tail(proc.stdout)
            raise _Retry(f"event command exited with {proc.returncode}" + (f": {detail}" if detail else ""))

    def _post(self, url: str, body: bytes, event: Mapping[str, Any], secret: str | None) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "arrears-events/1",
            "X-Arrears-Event": str(event.get("type", "")),
            "X-Arrears-Delivery": str(event.get("id", "")),
        }
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, secret)
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.settings.timeout) as response:
                response.read(_OUTPUT_LIMIT)
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            detail = _tail(exc.read(_OUTPUT_LIMIT)) if exc.fp is not None else ""
            message = f"webhook answered {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
            if exc.code >= 500 or exc.code in _RETRYABLE_HTTP:
                raise _Retry(message) from exc
            raise _Fail(message) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retry(f"webhook unreachable: {reason}") from exc
        if not 200 <= status < 300:
            raise _Retry(f"webhook answered {status}")


def make_sink(settings: EventSettings | None) -> EventSink | None:
    """The sink for ``settings``; ``None`` when no ``events:`` section is configured."""
    return None if settings is None else EventSink(settings)

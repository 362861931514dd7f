"""The ``notices:`` section of policy.yaml: who notices come from, how amounts are written, and how they
leave (:class:`SmtpSettings` for SMTP, or a spool folder of ``.eml`` files)."""

from __future__ import annotations

import email.utils
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["NoticeSettings", "SmtpSettings"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SmtpSettings(BaseModel):
    """``notices.smtp`` of policy.yaml. The password is read from the environment variable named by
    ``password_env`` when sending; it is never written in a file or a log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password_env: str | None = None
    timeout: float = Field(default=30.0, gt=0, le=600)
    ca_file: Path | None = None  # trust this CA bundle instead of the system's (a private relay)
    helo: str | None = None  # the name given in EHLO; default: this machine's name

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "password" in data:
            raise ValueError("notices.smtp.password is not allowed: put the password in an environment variable "
                             "and give its name as notices.smtp.password_env")
        return data

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SmtpSettings:
        if self.starttls and self.ssl:
            raise ValueError("choose one of starttls (port 587) and ssl (port 465), not both")
        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env go together")
        if self.username is not None and not (self.starttls or self.ssl):
            raise ValueError("username needs starttls or ssl: the password would cross the network in clear")
        return self

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 465 if self.ssl else 587 if self.starttls else 25


class NoticeSettings(BaseModel):
    """The ``notices:`` section of policy.yaml. Exactly one of ``smtp`` and ``spool_dir`` says how notices
    leave: over SMTP, or as ``.eml`` files for another system to deliver."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    from_addr: str = Field(min_length=3)
    company: str = ""
    payment_url: str = ""  # "{account_id}" in it is replaced by the account's id (URL-quoted)
    support_email: str = ""
    domain: str | None = None  # right-hand side of Message-IDs; default: the domain of from_addr
    locale: str = "en"  # how amounts are written (en, de, fr ...)
    smtp: SmtpSettings | None = None
    spool_dir: Path | None = None
    # where a message goes for each notice that failed for good (none: only `arrears status` tells)
    staff_email: str | None = None
    # validated by the policy loader, which gives it to the evaluator (policy.model.ResolvedPolicy)
    proceed_after_failed_notice: bool = True

    @field_validator("from_addr", "staff_email")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and ("\n" in value or "\r" in value or "@" not in email.utils.parseaddr(value)[1]):
            raise ValueError(f"{value!r} is not an e-mail address")
        return value

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str) -> str:
        from agent.notices.context import money_locale

        money_locale(value)
        return value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$", value):
            raise ValueError(f"{value!r} is not a domain name")
        return value

    @model_validator(mode="after")
    def _one_way_out(self) -> NoticeSettings:
        if (self.smtp is None) == (self.spool_dir is None):
            raise ValueError("set exactly one of notices.smtp (send by SMTP) and notices.spool_dir (write .eml files)")
        return self

    @property
    def message_domain(self) -> str:
        return self.domain or email.utils.parseaddr(self.from_addr)[1].rpartition("@")[2]

    def payment_url_for(self, account_id: str) -> str:
        return self.payment_url.replace("{account_id}", urllib.parse.quote(account_id, safe=""))

"""Notices to debtors: templates, the variables they may use, Message-IDs, and delivery (SMTP or a spool).

The package is split by job: :mod:`~agent.notices.settings` (the ``notices:`` section of policy.yaml),
:mod:`~agent.notices.templates` (the sandboxed templates, their load-time checks, the suspended page),
:mod:`~agent.notices.context` (the variables, the context that fills them, Message-IDs) and
:mod:`~agent.notices.delivery` (the SMTP and spool notifiers). Every public name is importable from here.
"""

from agent.notices.context import (
    ACCOUNT_FIELDS,
    VARIABLES,
    build_context,
    context_from_fields,
    format_money,
    message_id,
    preview_context,
    sample_context,
)
from agent.notices.delivery import (
    Notifier,
    OutgoingNotice,
    ResultCallback,
    SendResult,
    SmtpNotifier,
    SpoolNotifier,
    make_notifier,
)
from agent.notices.settings import NoticeSettings, SmtpSettings
from agent.notices.templates import PAGE, RenderedNotice, TemplateError, Templates, render_page

__all__ = [
    "ACCOUNT_FIELDS",
    "PAGE",
    "VARIABLES",
    "NoticeSettings",
    "Notifier",
    "OutgoingNotice",
    "RenderedNotice",
    "ResultCallback",
    "SendResult",
    "SmtpNotifier",
    "SmtpSettings",
    "SpoolNotifier",
    "TemplateError",
    "Templates",
    "build_context",
    "context_from_fields",
    "format_money",
    "make_notifier",
    "message_id",
    "preview_context",
    "render_page",
    "sample_context",
]

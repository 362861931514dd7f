"""The errors of the Python API: every refusal is one of these, with a message a person can act on.

The CLI prints ``str(error)`` (``error: ...``, exit 2); the HTTP API answers a problem document whose
status follows the class (:class:`NotFound` 404, :class:`Refused` 409, :class:`InvalidInput` 422) and whose
field path is :attr:`InvalidInput.field`. Whatever raised one of them wrote nothing.

A mistake in the configuration folder (policy.yaml, inventory.yaml, a template) is not an error of the
call: it raises the located error of the file (``agent.config.ConfigError``, ``policy.PolicyError``,
``connectors.inventory.InventoryError``, ``agent.notices.TemplateError``), as every command does.
"""

from __future__ import annotations

__all__ = ["Busy", "InvalidInput", "NotFound", "Refused", "ServiceError"]


class ServiceError(Exception):
    """A call that was not done; nothing was written. ``message`` is ``str(error)``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFound(ServiceError, LookupError):
    """What the call names does not exist: ``what`` (``account``) ``key`` (its id)."""

    def __init__(self, what: str, key: str, message: str | None = None) -> None:
        super().__init__(message if message is not None else f"unknown {what} {key!r}")
        self.what = what
        self.key = key


class Refused(ServiceError):
    """The rules refuse the call as asked (an admin action that cannot be done now, an amount over the
    policy's limit, a ``ref`` already used for a different payment)."""


class Busy(Refused):
    """Another arrears run holds the database's instance lock (``holder``: its pid, when known)."""

    def __init__(self, message: str, holder: int | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class InvalidInput(ServiceError, ValueError):
    """A value of the call cannot be used. ``field`` is the dotted path of the offending value in the call
    (``amount``, ``records[3].currency``; empty when it is the call as a whole); ``location`` is
    ``file:line`` for a value read from a stream, else None."""

    def __init__(self, message: str, field: str = "", location: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.location = location

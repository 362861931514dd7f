"""Errors located in a source: a file, a line and a field, with what to do (policies, import files)."""

from __future__ import annotations

__all__ = ["LocatedError", "PolicyError"]


class LocatedError(Exception):
    """An input that cannot be used, located as precisely as possible.

    ``filename`` names the source (a file, or ``account <id>`` for a per-account layer), ``line`` is
    1-based (``None`` when the source has no lines), ``field`` is the dotted path of the offending
    setting (``defaults.stages[2].after``) and ``message`` says what is wrong and what to do.
    """

    def __init__(self, filename: str, line: int | None, field: str, message: str) -> None:
        self.filename = filename
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.filename if self.line is None else f"{self.filename}:{self.line}"
        return f"{where}: {self.field}: {self.message}"


class PolicyError(LocatedError):
    """A policy (or a per-account policy layer) that cannot be used."""

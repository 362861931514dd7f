"""The one error a bad policy (or a bad per-account policy layer) raises."""

from __future__ import annotations

__all__ = ["PolicyError"]


class PolicyError(Exception):
    """A policy that cannot be used, located as precisely as possible.

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

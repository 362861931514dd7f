"""The six mail restriction flags of a suspended account, shared by every mail backend.

They are vpopmail's ``vmoduser`` options and the bits of its ``pw_gid`` field:

====  ======  =======================================
flag  bit     effect
====  ======  =======================================
d     0x01    no password change
p     0x02    no POP3
w     0x04    no webmail
i     0x08    no IMAP
b     0x10    incoming mail bounced
r     0x20    no external relay
====  ======  =======================================

A set of flags is written as its letters in this canonical order (``"dpwibr"``); ``""`` is none.
"""

from __future__ import annotations

from collections.abc import Iterable

from connectors.validate import UnsafeValue

__all__ = [
    "ALL",
    "BITS",
    "FLAGS",
    "MASK",
    "difference",
    "format_flags",
    "from_bits",
    "parse_flags",
    "to_bits",
    "union",
]

FLAGS = "dpwibr"
BITS: dict[str, int] = {"d": 0x01, "p": 0x02, "w": 0x04, "i": 0x08, "b": 0x10, "r": 0x20}
MASK = 0x3F
ALL = FLAGS


def parse_flags(value: object) -> str:
    """Canonical letters of ``value`` (letters from ``dpwibr``, any order, optional leading ``-``
    per letter such as ``"-d -p"``); anything else is refused."""
    if not isinstance(value, str):
        raise UnsafeValue("mail flags", value, "not a string")
    letters = value.replace("-", "").replace(" ", "").replace(",", "")
    bad = sorted({c for c in letters if c not in FLAGS})
    if bad:
        raise UnsafeValue("mail flags", value, f"unknown flag letters {bad}; known: {FLAGS}")
    return format_flags(letters)


def format_flags(letters: Iterable[str]) -> str:
    """Letters in canonical order, each once."""
    present = set(letters)
    return "".join(c for c in FLAGS if c in present)


def to_bits(letters: str) -> int:
    return sum(BITS[c] for c in parse_flags(letters))


def from_bits(value: int) -> str:
    """The six flags present in a ``pw_gid`` value (other bits ignored)."""
    return "".join(c for c in FLAGS if value & BITS[c])


def union(a: str, b: str) -> str:
    return format_flags(parse_flags(a) + parse_flags(b))


def difference(a: str, b: str) -> str:
    """Flags in ``a`` that are not in ``b``."""
    bb = set(parse_flags(b))
    return "".join(c for c in parse_flags(a) if c not in bb)

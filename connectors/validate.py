"""Strict patterns for every value that reaches a shell, and the one quoting function.

Every user name, domain, mailbox, path and URL is checked here before it is quoted into a script;
``../``, NUL, newlines and shell metacharacters are refused with :class:`UnsafeValue`.
"""

from __future__ import annotations

import posixpath
import re
import shlex

__all__ = [
    "UnsafeValue",
    "account_id",
    "domain",
    "mailbox",
    "path",
    "path_under",
    "q",
    "unix_user",
    "unpaired_surrogate",
    "url",
]


class UnsafeValue(ValueError):
    """A value that would be unsafe to hand to a shell; nothing was run."""

    def __init__(self, kind: str, value: object, why: str) -> None:
        super().__init__(f"refused {kind} {value!r}: {why}")
        self.kind = kind
        self.value = value


_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# RFC 5322 ``atext`` (what postfix and dovecot accept unquoted) less ``/`` (a maildir and the saved-flags
# record are named after the mailbox) and ``=`` (it separates a fact's key from its value); the first
# character is a letter, digit or ``_`` (a leading ``#`` would be a comment in a map or passwd-file).
# Every use quotes the value, so ``o'neil`` is as safe as ``info``.
_LOCAL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+'!#$%&*?^`{|}~-]{0,63}$")
_PATH = re.compile(r"^/[A-Za-z0-9_./@+-]*$")
_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9_./~%+-]*)?(\?[A-Za-z0-9_.~%+=&-]*)?$")


def _check(kind: str, value: object, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str):
        raise UnsafeValue(kind, value, "not a string")
    if "\x00" in value or "\n" in value or "\r" in value:
        raise UnsafeValue(kind, value, "contains NUL or a line break")
    if not pattern.match(value):
        raise UnsafeValue(kind, value, f"does not match {pattern.pattern}")
    return value


def account_id(value: object) -> str:
    v = _check("account id", value, _ACCOUNT)
    if ".." in v:
        raise UnsafeValue("account id", value, "contains '..'")
    return v


def unix_user(value: object) -> str:
    return _check("unix user", value, _USER)


def domain(value: object) -> str:
    v = _check("domain", value, re.compile(r"^[A-Za-z0-9.-]{1,253}$"))
    labels = v.rstrip(".").split(".")
    if len(labels) < 1 or not all(_LABEL.match(label) for label in labels):
        raise UnsafeValue("domain", value, "not a valid host name")
    return v.lower()


def mailbox(value: object) -> str:
    v = _check("mailbox", value, re.compile(r"^[^@\s]+@[^@\s]+$"))
    local, _, dom = v.partition("@")
    _check("mailbox local part", local, _LOCAL)
    if ".." in local or local.endswith("."):
        raise UnsafeValue("mailbox", value, "contains '..' or ends with '.'")
    return f"{local}@{domain(dom)}"


def path(value: object) -> str:
    """An absolute, normalised path with no ``..`` component and only safe characters."""
    v = _check("path", value, _PATH)
    if any(part == ".." for part in v.split("/")):
        raise UnsafeValue("path", value, "contains a '..' component")
    if posixpath.normpath(v) != v.rstrip("/") and v != "/":
        raise UnsafeValue("path", value, "is not normalised")
    return v.rstrip("/") or "/"


def path_under(value: object, roots: list[str] | tuple[str, ...]) -> str:
    """A path strictly below one of ``roots`` (never a root itself)."""
    v = path(value)
    for root in roots:
        r = path(root)
        if v != r and v.startswith(r.rstrip("/") + "/"):
            return v
    raise UnsafeValue("path", value, f"is not below the configured roots {list(roots)}")


def url(value: object) -> str:
    return _check("URL", value, _URL)


def q(value: str) -> str:
    """Quote a validated value for ``sh``."""
    return shlex.quote(value)


_SURROGATE = re.compile("[\ud800-\udfff]")


def unpaired_surrogate(text: str) -> str | None:
    """What is wrong with ``text`` when it holds half of a UTF-16 surrogate pair (``"\\ud800"`` in JSON,
    which decodes to no character and cannot be stored), else None."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (f"holds \\u{ord(found.group()):04x}, half of a UTF-16 surrogate pair and no character; "
            "write the character itself, or both halves of its pair")

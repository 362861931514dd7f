"""Placing the include hook in vhost files, for ``arrears hosts prepare`` (see connectors/prepare.py).

Every regular file directly in ``vhost_dir`` whose name fits ``vhost_name`` is a site's vhost (the site
is the ``{site}`` part: ``a1.test.conf`` with ``{site}.conf``). The hook line goes first into each of its
``server { ... }`` blocks (nginx) or ``<VirtualHost ...>`` sections (apache) that does not carry it yet,
indented like the block's first line. A file is edited only when its blocks are plain: the opening on a
line of its own at the top level (nginx, outside comments and quoted strings) and, for apache, not
nested. Anything else (no block at all, ``server {`` sharing a line with directives, a block opened by
an include) is left alone, and the exact line to add is printed instead.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from connectors.prepare import SHARED, Folder, Manual, Plan, Remote, Write, base_folders, shell_words
from connectors.validate import UnsafeValue, domain
from connectors.web.common import WebConnector

__all__ = ["insert_hook", "plan_web", "site_of"]

_NGINX_OPEN = re.compile(r"^(\s*)server\s*\{\s*$")
_APACHE_OPEN = re.compile(r"^(\s*)<VirtualHost(\s[^>]*)?>\s*$", re.IGNORECASE)
_APACHE_CLOSE = re.compile(r"^\s*</VirtualHost\s*>\s*$", re.IGNORECASE)


def site_of(file_name: str, vhost_name: str) -> str | None:
    """The site a vhost file belongs to (``vhost_name`` with ``{site}`` matched), or None."""
    before, _, after = vhost_name.partition("{site}")
    if not (file_name.startswith(before) and file_name.endswith(after)) or len(file_name) <= len(before + after):
        return None
    try:
        return domain(file_name[len(before):len(file_name) - len(after)])
    except UnsafeValue:
        return None


def _python_pattern(ere: str) -> re.Pattern[str]:
    return re.compile(ere.replace("[[:space:]]", r"\s"), re.IGNORECASE)


def _nginx_code(line: str) -> str:
    """The line without quoted strings and comments (what brace counting looks at)."""
    code = re.sub(r"\"(\\.|[^\"\\])*\"|'(\\.|[^'\\])*'", '""', line)
    return code.split("#", 1)[0]


def _nginx_blocks(lines: list[str]) -> list[tuple[int, int]] | None:
    """(opening line, closing line) of each top-level ``server`` block; None when the file is unusual."""
    blocks: list[tuple[int, int]] = []
    depth = 0
    start = -1
    for n, line in enumerate(lines):
        code = _nginx_code(line)
        if depth == 0 and re.search(r"\bserver\b", code):
            if not _NGINX_OPEN.match(code.rstrip("\n")):
                return None
            start = n
        elif depth == 0 and "{" in code:
            return None  # some other top-level block in a vhost file: not what we know how to edit
        depth += code.count("{") - code.count("}")
        if depth < 0:
            return None
        if depth == 0 and start >= 0:
            blocks.append((start, n))
            start = -1
    return blocks if blocks and depth == 0 else None


def _apache_blocks(lines: list[str]) -> list[tuple[int, int]] | None:
    blocks: list[tuple[int, int]] = []
    start = -1
    for n, line in enumerate(lines):
        text = line.rstrip("\n")
        if text.lstrip().startswith("#"):
            continue
        if _APACHE_OPEN.match(text):
            if start >= 0:
                return None
            start = n
        elif _APACHE_CLOSE.match(text):
            if start < 0:
                return None
            blocks.append((start, n))
            start = -1
        elif re.search(r"<\s*/?\s*VirtualHost", text, re.IGNORECASE):
            return None
    return blocks if blocks and start < 0 else None


def _indent(lines: list[str], start: int, end: int, opening_indent: str) -> str:
    for line in lines[start + 1:end]:
        if line.strip() and not line.lstrip().startswith("#"):
            found = line[: len(line) - len(line.lstrip())]
            if len(found) > len(opening_indent):
                return found
            break
    return opening_indent + "    "


def insert_hook(text: str, backend: str, hook_line: str, hook_pattern: str) -> str | None:
    """``text`` with ``hook_line`` first in every server block / VirtualHost that lacks it (``text``
    itself when none does); None when the file is unusual and must be edited by hand."""
    lines = text.splitlines(keepends=True)
    blocks = _nginx_blocks(lines) if backend == "nginx" else _apache_blocks(lines)
    if blocks is None:
        return None
    present = _python_pattern(hook_pattern)
    opening = _NGINX_OPEN if backend == "nginx" else _APACHE_OPEN
    for start, end in reversed(blocks):
        if any(present.search(line) for line in lines[start + 1:end]):
            continue
        match = opening.match(_nginx_code(lines[start]) if backend == "nginx" else lines[start].rstrip("\n"))
        assert match is not None
        if not lines[start].endswith("\n"):
            lines[start] += "\n"
        lines.insert(start + 1, _indent(lines, start, end, match.group(1)) + hook_line + "\n")
    return "".join(lines)


def plan_web(service: str, backend: str, settings: BaseModel, connector: Any, remote: Remote) -> Plan:
    assert isinstance(connector, WebConnector)
    s = connector.settings
    plan = Plan(service, backend, folders=[Folder(s.hook_dir, SHARED), *base_folders(settings)])
    vhosts: dict[str, str] = {}
    for file in remote.files(s.vhost_dir):
        site = site_of(file.rsplit("/", 1)[-1], s.vhost_name)
        if site is None:
            plan.notes.append(f"{file}: skipped, its name does not fit vhost_name {s.vhost_name!r}")
        else:
            vhosts[file] = site
    for file, found in remote.read_many(list(vhosts)).items():
        if found is None:
            continue
        site = vhosts[file]
        text, mode = found
        hook = connector.hook_line(site)
        after = insert_hook(text, backend, hook, connector.hook_pattern(site))
        if after is None:
            block = "server block" if backend == "nginx" else "<VirtualHost> section"
            plan.manual.append(Manual(file, hook, f"first in every {block} (the file is too unusual to edit)"))
        elif after != text:
            plan.writes.append(Write(file, text, after, mode))
    plan.test = shell_words(s.config_test)
    plan.on_change = [shell_words(s.reload)]
    return plan


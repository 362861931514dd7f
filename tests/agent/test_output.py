"""The one function that makes data inert for a person's terminal (agent.cli.app.inert), and the CSV cell rule.

Property: any text, printed through inert() to a real (forced) terminal console, comes out as exactly its
characters, each control character (C0, DEL, C1), line separator and bidirectional override shown as
its ``\\xNN`` / ``\\uNNNN`` escape: no control character reaches the terminal, and nothing is read as Rich
markup or an emoji code. With a style, the only escape sequences are that style's own."""

from __future__ import annotations

import io
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rich.console import Console

from agent.cli.app import csv_cell, echo, inert

_SHOWN_ESCAPED = {"\u2028", "\u2029", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))}


def expected(text: str) -> str:
    """The oracle, written independently of the code: by Unicode category."""
    out = []
    for c in text:
        if unicodedata.category(c) == "Cc" or c in _SHOWN_ESCAPED:
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out)


def terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, color_system="truecolor", width=60), buf


HOSTILE = ["[/bold]", "[link=https://evil.example]pay[/link]", "[emerg]", "\x1bc", "\x1b[8mhidden", ":smile:",
           "\x9b31m", "a\rb", "x\u202eevil", "[bold red]x[/]", "\\[escaped]", "tab\there"]


@given(st.text() | st.sampled_from(HOSTILE) | st.lists(st.sampled_from(HOSTILE)).map("".join))
@example("[/bold]")
@example("\x1bc\x1b[8m")
def test_any_text_prints_literally_with_control_characters_escaped(text: str) -> None:
    con, buf = terminal()
    con.print(inert(text), soft_wrap=True)
    assert buf.getvalue() == expected(text) + "\n"
    assert not any(unicodedata.category(c) == "Cc" for c in buf.getvalue()[:-1])


@given(st.text())
def test_a_styled_piece_carries_only_its_own_escape_sequences(text: str) -> None:
    con, buf = terminal()
    con.print(inert(text, "bold"), soft_wrap=True)
    out = buf.getvalue()
    if expected(text):
        assert out == f"\x1b[1m{expected(text)}\x1b[0m\n"
    else:
        assert out == "\n"


@given(st.lists(st.text(), max_size=4))
def test_echo_prints_every_part_inert(parts: list[str]) -> None:
    buf = io.StringIO()
    echo(*parts, file=buf)
    assert buf.getvalue() == "".join(expected(p) for p in parts) + "\n"


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted() -> None:
    for formula in ('=HYPERLINK("https://evil.example","x")', "+1", "-2+3+cmd|' /C calc'!A0", "@SUM(A1)",
                    "\tx", "\rx"):
        assert csv_cell(formula) == "'" + formula
        assert csv_cell(formula, numeric=True) == "'" + formula
    assert csv_cell("-12.50", numeric=True) == "-12.50"
    assert csv_cell("-3", numeric=True) == "-3"
    assert csv_cell("-12.50") == "'-12.50"  # a text column keeps it text
    assert csv_cell("acme [emerg]") == "acme [emerg]"
    assert csv_cell(None) == ""


def test_hosts_check_prints_what_a_host_answered_literally(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli.hosts import _render

    answer = "[/bold][link=https://evil.example]x[/link] [emerg] \x1bc\x1b[8mhidden"
    report = {"inventory": "inventory.yaml", "ok": False, "hosts": [
        {"host": "web1", "address": "192.0.2.1", "port": 22, "user": "arrears", "reachable": True,
         "connect_ms": 3.0, "host_key": "ok", "error": answer, "transient": False,
         "services": [{"service": "web", "backend": "nginx", "ok": False, "detail": answer}]}]}
    _render(report)
    out = capsys.readouterr().out
    assert f"web1: {expected(answer)}" in out
    assert f"web1: web/nginx: {expected(answer)}" in out
    assert "\x1b" not in out

"""docs/python-api.md runs as written: its ```python blocks, in order, in one namespace, in an empty folder
(each block's own asserts are the checks; a block that raises fails the test)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[str]:
    return _BLOCK.findall(text)


def test_the_examples_of_the_python_api_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 10
    monkeypatch.chdir(tmp_path)
    for name in ("ARREARS_CONFIG", "ARREARS_DB"):
        monkeypatch.delenv(name, raising=False)
    namespace: dict[str, object] = {"__name__": "python_api_doc"}
    for n, block in enumerate(blocks, 1):
        code = compile(block, f"{DOC.name} block {n}", "exec")
        exec(code, namespace)  # the documentation's own example, nothing from outside
    assert (tmp_path / "billing-demo" / "arrears.db").is_file()


def test_every_block_is_found() -> None:
    text = "```python\na = 1\n```\ntext\n```python\nb = 2\n```\n```sh\nls\n```\n"
    assert python_blocks(text) == ["a = 1\n", "b = 2\n"]

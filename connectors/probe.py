"""Shell lines the connectors' ``check_script()`` probes (``arrears hosts check``) are made of."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from connectors.validate import q

__all__ = ["require_commands"]


def require_commands(commands: Sequence[tuple[str, str | Sequence[str]]]) -> list[str]:
    """One line per ``(setting, command line)``: fail naming the setting (``""``: a fixed tool) when the
    command's program is not on the host's PATH (nor, for an absolute path, executable)."""
    lines = []
    for setting, cmd in commands:
        program = (shlex.split(cmd) if isinstance(cmd, str) else list(cmd))[0]
        message = f"{program} not found" + (f" ({setting})" if setting else "")
        lines.append(f"command -v {q(program)} >/dev/null || fail {q(message)}")
    return lines

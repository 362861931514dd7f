"""Operations, batches, results and the transport interface that every connector speaks.

A connector turns a measure for one account into :class:`Operation` objects: small POSIX ``sh``
fragments that check the host's state and change it only when needed. All operations for one host
are joined into one script (:func:`build_script`), sent over one transport call, and every operation
reports back as one JSON line (:func:`parse_output`), so a failing operation is reported against its
own account while the others complete.

Inside an operation's script these shell functions are available:

``changed``            mark that this operation changed the host (absent = nothing to do).
``fact KEY VALUE``     return a single-line fact to the caller (saved state, archive digest...); printed
                       at once as its own line (a line break in VALUE becomes a blank).
``fail MESSAGE``       print MESSAGE to stderr and end the operation with status 1.

Handlers run once at the end of the batch when at least one operation that names them changed
something (reload nginx once for 200 sites). A handler sees the ids of those operations in
``$ARREARS_CHANGED`` and may call ``override ID RC MESSAGE`` to turn an operation's result into a
failure after the fact (a config test failed and that operation's change was rolled back).

Given the host's ``state_dir``, batches on one host never overlap (``flock`` on
``<state_dir>/batch.lock``), and every handler an operation names is recorded on the host as pending
(``<state_dir>/pending/<handler>``, created and fsynced) *before* that operation runs. The record is
removed once the handler succeeded, or once every operation naming it reported no change. So when the
batch dies, or the agent or its connection does, after a change reached the disk but before the reload,
the next batch that carries that handler runs it even though its operations now find nothing to change.
An operation whose handler cannot be recorded is not run.

An operation may name a *commit* (a :class:`Handler` with ``commit=True``): then the operation only
checks and queues its change (into a file under ``$_ar_tmp``), and the commit, run once after all
operations and before the handlers, applies every queued change to each shared file in one pass (one
read, one write, one rename per file) and prints each operation's result: done (changed or not; a change
the operation made itself counts too), or failed with its own message. Those results go out only
once the commit returned, so an operation is reported done only when its change is on disk; the pending
handler records were written and fsynced when the operations ran, before any file changed. When the
commit fails, each of its operations fails with the commit's message and their handlers still run.

The shell itself is connectors/batch.sh; Python only adds data (ids, quoted paths) and the operations.

A batch runs whole or not at all: the script is one function definition, called by its last line with
the script's sha256 (:func:`whole_script`). ``sh -s`` parses a function definition completely before it
runs any of it, so a script cut short (a lost connection during the upload) is a syntax error or a call
with the wrong seal, and nothing of it runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from connectors.observed import Observed
from connectors.validate import path, q

__all__ = [
    "OP_ID",
    "Action",
    "BatchResult",
    "Connector",
    "Handler",
    "OpResult",
    "Operation",
    "ScriptOutput",
    "Transport",
    "TransportError",
    "build_script",
    "parse_output",
    "run_batch",
    "whole_script",
]

Action = Literal["suspend", "resume", "delete", "restore", "status"]

OP_ID = re.compile(r"^[A-Za-z0-9_.:@+=-]{1,200}$")  # what an operation or handler id may hold
_ID = OP_ID
_MARK = "@@arrears "
_FACT = "@@arrears-fact "


@dataclass(frozen=True)
class Operation:
    """One idempotent step on one host for one account."""

    id: str
    account: str
    kind: str
    script: str
    handlers: tuple[str, ...] = ()
    commit: str = ""  # a commit handler that applies what this operation queued, and reports its result
    inline: bool = False  # runs in the batch's shell (no subshell): never calls fail or exit

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ValueError(f"operation id {self.id!r} has characters outside [A-Za-z0-9_.:@+=-]")
        for name in (*self.handlers, *([self.commit] if self.commit else [])):
            if not _ID.match(name):
                raise ValueError(f"handler name {name!r} has characters outside [A-Za-z0-9_.:@+=-]")


@dataclass(frozen=True)
class Handler:
    """A step run once per batch after the operations that notified it changed something; or, with
    ``commit``, the one pass that applies what its operations queued (see the module doc)."""

    name: str
    script: str
    commit: bool = False


@dataclass
class OpResult:
    id: str
    account: str
    kind: str
    rc: int
    changed: bool
    stdout: str = ""
    stderr: str = ""
    facts: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.error is None


@dataclass
class BatchResult:
    host: str
    results: dict[str, OpResult] = field(default_factory=dict)
    handlers: dict[str, OpResult] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.results.values())

    def for_account(self, account: str) -> list[OpResult]:
        return [r for r in self.results.values() if r.account == account]


@dataclass(frozen=True)
class ScriptOutput:
    stdout: str
    stderr: str
    exit_status: int


class TransportError(Exception):
    """The host could not be reached or the channel broke. ``transient`` errors are worth a retry."""

    def __init__(self, host: str, message: str, *, transient: bool) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host
        self.message = message
        self.transient = transient


class Transport(Protocol):
    """The one narrow interface to a host: run a script on stdin, put and get a file."""

    host: str

    def run_script(self, script: str, *, timeout: float | None = None) -> ScriptOutput: ...

    def put(self, path: str, data: bytes, *, mode: int = 0o600) -> None: ...

    def get(self, path: str) -> bytes: ...

    def close(self) -> None: ...


class Connector(Protocol):
    """Turns a measure on one account's resource of one service into operations."""

    service: str

    def operations(self, action: Action, account: str, resource: dict[str, object]) -> list[Operation]: ...

    def handlers(self) -> list[Handler]: ...

    def observe(self, facts: Mapping[str, str]) -> Observed:
        """What the host does for the account, read from the facts of this connector's ``status``
        operations (see :mod:`connectors.observed`); the one place that decides what those facts mean."""
        ...

    def check_script(self) -> str:
        """The ``arrears hosts check`` probe: fails when the backend's tools or folders are missing, and
        may report a ``version`` fact."""
        ...


_PRELUDE = (Path(__file__).with_name("batch.sh")).read_text()


def build_script(
    operations: Sequence[Operation], handlers: Iterable[Handler] = (), *, state_dir: str | None = None
) -> str:
    """Join operations, their commits and their handlers into one ``sh -s`` script printing one JSON
    line each. Python writes data here (ids, paths, quoted values); the shell is connectors/batch.sh."""
    handlers = list(handlers)
    for handler in handlers:
        if not _ID.match(handler.name):
            raise ValueError(f"handler name {handler.name!r} has characters outside [A-Za-z0-9_.:@+=-]")
    seen: set[str] = set()
    parts = [_PRELUDE]
    if state_dir is None:
        parts.append("_ar_pending=''\n")
    else:
        parts.append(f"_ar_pending={q(path(state_dir) + '/pending')}\n"
                     "[ -d \"$_ar_pending\" ] || mkdir -p \"$_ar_pending\" 2>/dev/null || true\n")
        parts.append(f"_ar_lock {q(path(state_dir) + '/batch.lock')}\n")
        parts.extend(f"_ar_was_pending {h.name}\n" for h in handlers if not h.commit)
    for n, op in enumerate(operations):
        if op.id in seen:
            raise ValueError(f"operation id {op.id!r} appears twice in one batch")
        seen.add(op.id)
        call = (f"_ar_do '{op.id}' _ar_op_{n} '{' '.join(op.handlers)}' {op.commit or '-'}"
                + (" inline" if op.inline else ""))
        parts.append(f"_ar_op_{n}() {{\n{op.script}\n}}\n{call}\n")
    for n, handler in enumerate(h for h in handlers if h.commit):
        parts.append(f"_ar_c_{n}() {{\n{handler.script}\n}}\n_ar_commit {handler.name} _ar_c_{n}\n")
    for n, handler in enumerate(h for h in handlers if not h.commit):
        parts.append(f"_ar_h_{n}() {{\n{handler.script}\n}}\n_ar_handler {handler.name} _ar_h_{n}\n")
    return whole_script("".join(parts))


def whole_script(body: str) -> str:
    """``body`` as a script that runs whole or not at all on ``sh -s``: one function definition, called
    by the last line with the body's sha256, which the function checks before anything else. A script
    cut anywhere is an unfinished definition (a syntax error), an uncalled function or a wrong seal."""
    seal = hashlib.sha256(body.encode()).hexdigest()
    return (
        "_ar_batch() {\n"
        f"[ \"${{1-}}\" = {seal} ] || {{ echo '@@arrears-fatal the script arrived incomplete; nothing was run'; "
        "exit 96; }\n"
        f"{body}\n}}\n_ar_batch {seal}\n"
    )


def _b64(text: str) -> str:
    return base64.b64decode(text).decode("utf-8", "replace") if text else ""


def parse_output(host: str, operations: Sequence[Operation], output: ScriptOutput) -> BatchResult:
    """Read the JSON result lines of a batch; an operation with no line is reported as not run."""
    by_id = {op.id: op for op in operations}
    batch = BatchResult(host=host)
    facts_of: dict[str, dict[str, str]] = {}
    for line in output.stdout.splitlines():
        if line.startswith("@@arrears-fatal"):
            batch.error = line.removeprefix("@@arrears-fatal").strip()
            continue
        if line.startswith(_FACT):
            op_id, _, fact = line[len(_FACT):].partition(" ")
            key, sep, value = fact.partition("=")
            if sep:
                facts_of.setdefault(op_id, {})[key] = value
            continue
        if not line.startswith(_MARK):
            continue
        data = json.loads(line[len(_MARK):])
        op_id = data["id"]
        facts = facts_of.get(op_id, {})
        if op_id.startswith("handler:"):
            batch.handlers[op_id] = OpResult(
                op_id, "", "handler", data["rc"], data["changed"], _b64(data["out"]), _b64(data["err"]), facts
            )
            continue
        op = by_id.get(op_id)
        if op is None:
            continue
        if data.get("override"):
            previous = batch.results.get(op_id)
            message = _b64(data["err"]).strip()
            batch.results[op_id] = OpResult(
                op.id, op.account, op.kind, data["rc"] or 1, False,
                previous.stdout if previous else "", message,
                previous.facts if previous else facts, message or "rolled back by its handler",
            )
            continue
        batch.results[op_id] = OpResult(
            op.id, op.account, op.kind, data["rc"], data["changed"], _b64(data["out"]), _b64(data["err"]), facts,
            None if data["rc"] == 0 else (_b64(data["err"]).strip().splitlines() or [f"exit {data['rc']}"])[-1],
        )
    for op in operations:
        if op.id not in batch.results:
            reason = batch.error or (output.stderr.strip().splitlines() or [f"batch exited {output.exit_status}"])[-1]
            batch.results[op.id] = OpResult(op.id, op.account, op.kind, -1, False, error=f"not run: {reason}")
    return batch


def run_batch(
    transport: Transport,
    operations: Sequence[Operation],
    handlers: Iterable[Handler] = (),
    *,
    timeout: float | None = None,
    state_dir: str | None = None,
) -> BatchResult:
    """Run every operation for one host in one script over one transport call.

    A :class:`TransportError` propagates (the caller decides to retry); everything else is reported
    per operation in the result.
    """
    if not operations:
        return BatchResult(host=transport.host)
    script = build_script(operations, handlers, state_dir=state_dir)
    output = transport.run_script(script, timeout=timeout)
    return parse_output(transport.host, operations, output)

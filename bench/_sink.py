"""The bench's SMTP servers: Postfix's ``smtp-sink`` (C, one process) or aiosmtpd (tests/servers/smtp.py).

``smtp-sink`` answers from a compiled event loop and offers PIPELINING; it dumps each message to a file of
its own (``-d``), so what it received can still be counted by Message-ID, and prints its running counters
(``-c``: sessions, messages) on stdout, which give the connections. Its dump folder is on ``/dev/shm``
when there is one (a file per message on a disk would cost the sink more than the SMTP exchange).
aiosmtpd is pure Python in a thread of the bench's own process: on a 2-core machine it takes the CPU the
agent needs, and its turn-around bounds what any client can send.

Both have ``host``, ``port``, ``start()``, ``stop()``, ``reset()`` (forget what was received),
``connections`` and ``message_ids(count, timeout)`` (the Message-ID of each message received, once
``count`` are in).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMTP_SINK = "/usr/sbin/smtp-sink"
SINKS = ("smtp-sink", "aiosmtpd")  # scale.py --sink

__all__ = ["SINKS", "AiosmtpdSink", "PostfixSink", "make_sink"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_SESSIONS = re.compile(rb"sess=(\d+)")


class PostfixSink:
    """``smtp-sink`` on ``127.0.0.1:port``, each message dumped to a file of its own; ``reset()`` starts a
    new one (fresh counters, empty folder)."""

    name = "smtp-sink"

    def __init__(self, workdir: Path) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        shm = Path("/dev/shm")
        self.base = Path(tempfile.mkdtemp(prefix="arrears-sink-", dir=shm if shm.is_dir() else workdir))
        self.base.chmod(0o755)  # the sink, as nobody, writes below it
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = 0
        self.dump = self.base / "0"
        self.counters = self.base / "counters"

    def start(self) -> PostfixSink:
        import socket

        self.generation += 1
        self.dump = self.base / str(self.generation)
        self.dump.mkdir()
        self.port = _free_port()
        # one folder per second of the clock: the dump names end in a 32-bit random number, which two of
        # 10,000 messages in one folder would share about once in a hundred runs
        argv = [SMTP_SINK, "-c", "-d", f"{self.dump}/%H%M%S/", f"127.0.0.1:{self.port}", "256"]
        if os.geteuid() == 0:  # it will not run as root: it drops to nobody, who must write the folder
            shutil.chown(self.dump, user="nobody")
            argv[1:1] = ["-u", "nobody"]
        with self.counters.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"smtp-sink exited: {self.counters.read_bytes()[-2000:].decode(errors='replace')}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2) as conn:
                    conn.recv(512)  # its greeting; the probe's session is counted, see connections
                    conn.sendall(b"QUIT\r\n")
                    conn.recv(512)
                return True
            except OSError:
                return False

        _wait(ready, 10, f"smtp-sink on port {self.port}")
        _wait(lambda: self._sessions() >= 1, 10, "smtp-sink to count its probe")
        return self

    def _sessions(self) -> int:
        found = _SESSIONS.findall(self.counters.read_bytes())
        return int(found[-1]) if found else 0

    @property
    def connections(self) -> int:
        """Sessions since the start, less the readiness probe's."""
        return max(self._sessions() - 1, 0)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def reset(self) -> None:
        self.stop()
        shutil.rmtree(self.dump, ignore_errors=True)
        self.start()

    def _files(self) -> list[Path]:
        return [f for d in self.dump.iterdir() if d.is_dir() for f in d.iterdir()]

    def message_ids(self, count: int, timeout: float) -> list[str]:
        _wait(lambda: len(self._files()) >= count, timeout, f"{count} messages in {self.dump}")
        ids: list[str] = []
        for f in self._files():
            found = _MESSAGE_ID.search(f.read_bytes())
            ids.append(found.group(1).decode() if found else "")
        return ids

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


class AiosmtpdSink:
    """tests/servers/smtp.py's aiosmtpd server, in a thread of this process."""

    name = "aiosmtpd"

    def __init__(self, workdir: Path) -> None:
        sys.path.insert(0, str(ROOT))
        from tests.servers.smtp import SmtpServer

        self.server = SmtpServer(workdir)
        self.host, self.port = self.server.host, self.server.port

    @property
    def connections(self) -> int:
        return self.server.connections

    def start(self) -> AiosmtpdSink:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def reset(self) -> None:
        self.server.reset()

    def message_ids(self, count: int, timeout: float) -> list[str]:
        return [str(r.message["Message-ID"]) for r in self.server.wait_messages(count, timeout=timeout)]

    def close(self) -> None:
        self.stop()


def make_sink(name: str, workdir: Path) -> PostfixSink | AiosmtpdSink:
    if name == "smtp-sink":
        if not Path(SMTP_SINK).exists():
            raise SystemExit(f"{SMTP_SINK} is missing (Debian's postfix package); or choose --sink aiosmtpd")
        return PostfixSink(workdir)
    return AiosmtpdSink(workdir)

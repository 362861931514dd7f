"""A TCP proxy on loopback that cuts connections on cue: a flaky link between paramiko and the test sshd.

``CutProxy(target_host, target_port).start()`` listens on a free loopback port and forwards every
connection to the target. It counts the bytes each connection sent upstream (client -> server), and
cuts (closes both sides of) a connection:

``cut_after(n)``   the next byte count: the connection open now (or, if none, the next one) is cut once
                   ``n`` more bytes went upstream; bytes beyond ``n`` are never forwarded. One shot.
``cut_now()``      every open connection, at once.

``cuts`` counts the connections cut so far; ``upstream`` lists each connection's upstream byte count;
``open_connections`` counts those still open.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from dataclasses import dataclass, field

from tests.servers.base import free_port

__all__ = ["CutProxy"]


@dataclass
class _Conn:
    client: socket.socket
    server: socket.socket
    upstream: int = 0
    budget: int | None = None  # upstream bytes still allowed before the cut
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class CutProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.cuts = 0
        self._conns: list[_Conn] = []
        self._armed: int | None = None
        self._lock = threading.Lock()
        self._listener = socket.create_server((self.host, self.port))
        self._stop = threading.Event()

    @property
    def upstream(self) -> list[int]:
        with self._lock:
            return [c.upstream for c in self._conns]

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(not c.closed for c in self._conns)

    def start(self) -> CutProxy:
        threading.Thread(target=self._accept, name="cutproxy-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()

    def cut_after(self, n: int) -> None:
        with self._lock:
            open_now = [c for c in self._conns if not c.closed]
            if open_now:
                open_now[-1].budget = n
            else:
                self._armed = n

    def cut_now(self) -> None:
        with self._lock:
            conns = [c for c in self._conns if not c.closed]
            self.cuts += len(conns)
        for c in conns:
            c.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(client, server)
            with self._lock:
                conn.budget, self._armed = self._armed, None
                self._conns.append(conn)
            threading.Thread(target=self._pump, args=(conn,), name="cutproxy-pump", daemon=True).start()

    def _pump(self, conn: _Conn) -> None:
        try:
            while not conn.closed:
                readable, _, _ = select.select([conn.client, conn.server], [], [], 0.5)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        conn.close()
                        return
                    if s is conn.client:
                        with self._lock:
                            budget = conn.budget
                            if budget is not None:
                                data = data[:budget]
                                conn.budget = budget - len(data)
                            conn.upstream += len(data)
                        if data:
                            conn.server.sendall(data)
                        if budget is not None and conn.budget == 0:
                            with self._lock:
                                self.cuts += 1
                            conn.close()
                            return
                    else:
                        conn.client.sendall(data)
        except (OSError, ValueError):
            conn.close()

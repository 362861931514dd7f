"""Running the API on uvicorn: which address it may listen on, and the server itself (alone or in a thread
beside the daemon's ticks).

It listens on loopback unless told otherwise; any other address is refused unless TLS is given (a
certificate and its key) or the operator says a reverse proxy terminates TLS in front of it
(``behind_proxy``, which also makes it read the client's address from the proxy's headers).
"""

from __future__ import annotations

import gc
import ipaddress
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

__all__ = ["Listen", "ListenError", "background", "parse_listen", "server"]


class ListenError(ValueError):
    """An address the API may not (or cannot) listen on, with what to do."""


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    behind_proxy: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(text: str, *, tls_cert: Path | None = None, tls_key: Path | None = None,
                 behind_proxy: bool = False) -> Listen:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) checked against the rules above."""
    raw = text.strip()
    host, sep, port_text = raw.rpartition(":")
    if not sep or not host:
        raise ListenError(f"--listen {text!r} is not HOST:PORT, e.g. 127.0.0.1:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ListenError(f"--listen {text!r}: the port must be a number from 0 to 65535")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ListenError(f"--listen {text!r}: give an IP address (127.0.0.1, ::1, 0.0.0.0, ...)") from None
    if (tls_cert is None) != (tls_key is None):
        raise ListenError("--tls-cert and --tls-key go together: give both, or neither")
    for what, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path is not None and not path.is_file():
            raise ListenError(f"{what} {path}: no such file")
    if not _loopback(host) and tls_cert is None and not behind_proxy:
        raise ListenError(f"--listen {text!r} is not a loopback address: the API would take tokens in clear text. "
                          "Give --tls-cert and --tls-key, or --behind-proxy when a reverse proxy in front of it "
                          "terminates TLS (docs/http-api.md)")
    return Listen(host, port, tls_cert, tls_key, behind_proxy)


def server(app: FastAPI, listen: Listen, *, log_level: str = "warning") -> uvicorn.Server:
    """A uvicorn server for ``app`` on ``listen`` (not started)."""
    import uvicorn

    config = uvicorn.Config(
        app, host=listen.host, port=listen.port, log_level=log_level, access_log=False,
        ssl_certfile=str(listen.tls_cert) if listen.tls_cert else None,
        ssl_keyfile=str(listen.tls_key) if listen.tls_key else None,
        proxy_headers=listen.behind_proxy, forwarded_allow_ips="127.0.0.1,::1" if listen.behind_proxy else None,
        server_header=False, date_header=True, timeout_keep_alive=30, lifespan="off",
        http="httptools",  # the C parser: about 0.3 ms of CPU less per request than h11's (bench/README.md)
    )
    config.load()  # the protocol classes and the middleware stack, built before the freeze below
    # What exists now lives as long as the server: kept out of the collector's full passes, which would walk
    # every object of FastAPI, pydantic and SQLAlchemy (tens of milliseconds) every so many requests.
    gc.freeze()
    return uvicorn.Server(config)


def background(srv: uvicorn.Server, *, timeout: float = 10.0) -> threading.Thread:
    """Start ``srv`` in a thread beside the caller (the daemon's ticks); returns once it listens.

    Raises :class:`ListenError` when it could not start (the address is in use)."""
    thread = threading.Thread(target=srv.run, name="arrears-api", daemon=True)
    thread.start()
    stopped = threading.Event()
    while not srv.started and thread.is_alive() and not stopped.wait(0.02):
        timeout -= 0.02
        if timeout <= 0:
            break
    if not srv.started:
        srv.should_exit = True
        raise ListenError(f"the API could not listen on {srv.config.host}:{srv.config.port} (see the log above)")
    return thread

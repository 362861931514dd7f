"""The SSH transport: one verified, key-authenticated paramiko connection per host, reused for every batch.

The connection is opened lazily on the first call and kept until :meth:`SshTransport.close`. Each batch
runs as ``sh -s`` (``sudo -n /bin/sh -s`` for a non-root user with ``sudo: true``) with the script on
stdin. A channel that closes without an exit status, or a script that could not be sent whole, is the
transient :class:`TransportError` "connection lost during the batch": the scripts are sealed
(:func:`connectors.base.whole_script`), so nothing of an upload cut short has run, and the caller retries.
The TCP socket is created here with ``TCP_NODELAY`` (and ``TCP_QUICKACK`` where the platform has
it): without it every exchange on an open connection stalls ~40 ms on Nagle + delayed ACK.

Host keys are checked against the ``known_hosts`` file named in the host's settings and never added: a
missing key is a :class:`HostKeyError` carrying the server's fingerprint and the command to trust it
after an out-of-band check; a changed key names both fingerprints. Refused, reset, timed-out or
unroutable connections are transient and retried with exponential back-off and jitter (bounded in
attempts and total time); authentication and host-key problems are not retried.

A private key file that its group or others may access is refused before anything connects, as OpenSSH
refuses it ("Permissions 0644 for 'KEY' are too open"), with the ``chmod 600`` to run
(:func:`key_permission_problem`; the inventory loader reports the same at its line). Stricter than
OpenSSH, which only looks at keys owned by the user it runs as: a key of another owner that the agent
reads through its group is refused too, with the ``chown`` that makes it the agent's own.

Reaching a host the way operators do: ``jump`` (:attr:`SshSettings.jump`) reaches the host through a
bastion: the bastion's own connection is verified against its known_hosts exactly like a direct one,
then a ``direct-tcpip`` channel through it carries the host's SSH session, whose key is verified in turn
(every hop, never added). A chain of bastions nests the same way. ``allow_agent`` offers the keys of
ssh-agent (``SSH_AUTH_SOCK``; a hardware token behind an agent works the same), ``key_passphrase_env``
names the environment variable holding the key file's passphrase (read when connecting, never stored or
logged). :func:`ssh_config_host` reads a Host alias from an OpenSSH ``ssh_config`` (paramiko's
``SSHConfig``): ``HostName``, ``User``, ``Port``, ``IdentityFile``, ``ProxyJump``; the inventory builds
the settings from it (connectors/inventory.py). ``UserKnownHostsFile``, ``StrictHostKeyChecking`` and
``ProxyCommand`` in that file are not used: the inventory's ``known_hosts`` stays the only authority.

paramiko's client is used directly rather than through ``fabric.Connection``: Fabric's connection
installs ``AutoAddPolicy`` in its constructor and loads the user's own ``~/.ssh/known_hosts`` (an open
Fabric issue, fabric/fabric#2071), so the inventory's ``known_hosts`` would not be the only authority;
its ``gateway`` opens the bastion as another such ``Connection``, so a bastion's key would be trusted on
first use too. A ``direct-tcpip`` channel of paramiko's own ``Transport`` is all a jump needs.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import os
import posixpath
import pwd
import select
import shlex
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from connectors.base import ScriptOutput, TransportError, whole_script
from connectors.validate import path as safe_path
from connectors.validate import q

__all__ = ["LOST", "HostKeyError", "SshConfigHost", "SshSettings", "SshTransport", "key_fingerprint",
           "key_permission_problem", "ssh_config_host"]

LOST = "connection lost during the batch"

_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EHOSTDOWN,
    errno.ENETDOWN,
    errno.EPIPE,
}


@dataclass(frozen=True)
class SshSettings:
    """How to reach one host. ``known_hosts`` and ``key`` are paths on the agent's machine."""

    address: str
    port: int = 22
    user: str = "root"
    key: str | None = None
    known_hosts: str | None = None
    sudo: bool = False
    allow_agent: bool = False
    connect_timeout: float = 10.0
    retries: int = 3
    retry_max_time: float = 60.0
    retry_initial_wait: float = 0.5
    retry_max_wait: float = 10.0
    jump: SshSettings | None = None  # the bastion this host is reached through (itself maybe through another)
    key_passphrase_env: str | None = None  # the environment variable holding the key's passphrase

    def hops(self) -> list[SshSettings]:
        """The bastions on the way, first hop first (without this host)."""
        return [*self.jump.hops(), self.jump] if self.jump is not None else []


@dataclass(frozen=True)
class SshConfigHost:
    """What an ``ssh_config`` says about one Host alias (None where it says nothing)."""

    hostname: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    proxy_jump: list[tuple[str | None, str, int | None]] | None = None  # [(user, host, port)], first hop first


def ssh_config_host(path: str, alias: str) -> SshConfigHost:
    """The alias looked up in the ssh_config file at ``path`` (OpenSSH's first-match rules, by paramiko).
    ``ProxyJump none`` is no jump; a relative ``IdentityFile`` is relative to the file's folder. Raises
    OSError for an unreadable file, ValueError for a bad value."""
    found = paramiko.SSHConfig.from_path(path).lookup(alias)
    port = found.get("port")
    identity = found.get("identityfile")
    jumps: list[tuple[str | None, str, int | None]] | None = None
    proxy = found.get("proxyjump")
    if proxy and proxy.lower() != "none":
        jumps = []
        for hop in proxy.split(","):
            user, _, rest = hop.strip().rpartition("@")
            name, _, hop_port = rest.partition(":")
            jumps.append((user or None, name, int(hop_port) if hop_port else None))
    key = os.path.expanduser(identity[0]) if identity else None
    if key is not None and not os.path.isabs(key):  # the agent runs from anywhere: as the inventory's key paths
        key = os.path.join(os.path.dirname(os.path.abspath(path)), key)
    return SshConfigHost(
        hostname=str(found.get("hostname", alias)),
        user=found.get("user"),
        port=int(port) if port is not None else None,
        identity_file=key,
        proxy_jump=jumps,
    )


class HostKeyError(TransportError):
    """The host's key is unknown or differs from the one in known_hosts. Never retried, never auto-added."""

    def __init__(self, host: str, message: str, *, fingerprint: str, expected: str | None = None) -> None:
        super().__init__(host, message, transient=False)
        self.fingerprint = fingerprint
        self.expected = expected


def key_fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as ``ssh`` prints it: ``SHA256:<base64 without padding>``."""
    return str(key.fingerprint)


def key_permission_problem(key: str) -> tuple[str, str] | None:
    """``(problem, what to run)`` when the private key file ``key`` may be accessed by its group or others
    (any of the mode bits 077, OpenSSH's rule); None when it may not, or does not exist (a missing key is
    reported when it is loaded). When the file belongs to another user, what to run makes it the agent's."""
    try:
        st = os.stat(key)
    except OSError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return None
    fix = f"chmod 600 {shlex.quote(key)}"
    me = os.geteuid()
    if st.st_uid != me:  # chmod 600 alone would lock the agent out of a key it reads through its group
        try:
            user = pwd.getpwuid(me).pw_name
        except KeyError:
            user = str(me)
        fix = f"chown {shlex.quote(user)} {shlex.quote(key)} && {fix}"
    return f"Permissions {mode:04o} for '{key}' are too open: a private key must not be accessible by others", fix


def _known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class _RejectWithFingerprint(paramiko.MissingHostKeyPolicy):
    """paramiko's RejectPolicy, but the error says which key was offered and how to trust it."""

    def __init__(self, host: str, settings: SshSettings) -> None:
        self._host = host
        self._settings = settings

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        s = self._settings
        fp = key_fingerprint(key)
        raise HostKeyError(
            self._host,
            f"host key for {_known_hosts_name(s.address, s.port)} (address {s.address}, port {s.port}) is not in "
            f"{s.known_hosts}: the server offered {key.get_name()} {fp}. Check this fingerprint out of band "
            f"(on the server: ssh-keygen -lf /etc/ssh/ssh_host_{_key_file_kind(key)}_key.pub), then add it with: "
            f"ssh-keyscan -p {s.port} {s.address} >> {s.known_hosts}",
            fingerprint=fp,
        )


def _key_file_kind(key: paramiko.PKey) -> str:
    name = key.get_name()
    if "ed25519" in name:
        return "ed25519"
    if "ecdsa" in name:
        return "ecdsa"
    return "rsa"


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransportError) and exc.transient


def _tune_socket(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


def _quickack(sock: socket.socket | None) -> None:
    """Re-arm TCP_QUICKACK (Linux clears it again after some ACKs)."""
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if sock is None or quickack is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


def _transport_active(chan: paramiko.Channel) -> bool:
    transport = chan.get_transport()
    return transport is not None and transport.is_active()


def _quiet_paramiko() -> None:
    """paramiko logs handshake failures with tracebacks from its own thread; the same failure reaches the
    caller as a TransportError, so without logging configured they would only be noise on stderr."""
    logger = logging.getLogger("paramiko")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())


class SshTransport:
    """Runs scripts on one host over one lazily opened, reused SSH connection."""

    def __init__(self, host: str, settings: SshSettings) -> None:
        _quiet_paramiko()
        self.host = host
        self.settings = settings
        self._client: paramiko.SSHClient | None = None
        self._sock: socket.socket | None = None  # the TCP socket (to the first bastion when jumping)
        self._hops: list[paramiko.SSHClient] = []  # the bastions' connections, first hop first
        self._lock = threading.Lock()
        self.connects = 0  # how many SSH connections this transport opened (for reports and tests)

    # -- connection -------------------------------------------------------------------------------

    @property
    def use_sudo(self) -> bool:
        return self.settings.sudo and self.settings.user != "root"

    def connect(self) -> None:
        """Open the connection now (it is otherwise opened by the first call). Retries transient errors."""
        with self._lock:
            self._ensure_connected()

    def _ensure_connected(self) -> paramiko.Transport:
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return transport
            self._drop()
        s = self.settings
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(max(1, s.retries)) | stop_after_delay(s.retry_max_time),
            wait=wait_random_exponential(multiplier=s.retry_initial_wait, max=s.retry_max_wait),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._open_once()
        except TransportError as exc:
            tries = retrying.statistics.get("attempt_number", 1)
            if not exc.transient or tries <= 1:
                raise
            raise TransportError(self.host, f"{exc.message} (gave up after {tries} attempts)",
                                 transient=True) from exc
        assert self._client is not None
        transport = self._client.get_transport()
        assert transport is not None
        return transport

    def _open_once(self) -> None:
        s = self.settings
        for hop in [*s.hops(), s]:
            self._check_files(hop)
        hops: list[paramiko.SSHClient] = []
        tcp: list[socket.socket] = []
        try:
            stream = self._stream_to(s, hops, tcp)
            client = self._handshake(s, stream)
        except BaseException:
            for c in reversed(hops):
                c.close()
            for sock in tcp:
                sock.close()
            raise
        self._client = client
        self._sock = tcp[0]
        self._hops = hops
        self.connects += 1

    def _check_files(self, s: SshSettings) -> None:
        if not s.known_hosts:
            raise TransportError(self.host, "no known_hosts file is configured; host keys must be verified",
                                 transient=False)
        if not Path(s.known_hosts).is_file():
            raise TransportError(
                self.host,
                f"known_hosts file {s.known_hosts} does not exist; create it with the host's verified key "
                f"(ssh-keyscan -p {s.port} {s.address} >> {s.known_hosts}, after checking the fingerprint)",
                transient=False,
            )
        if s.key is not None:
            problem = key_permission_problem(s.key)
            if problem is not None:
                raise TransportError(self.host, f"{problem[0]}; run: {problem[1]}", transient=False)
        if s.key_passphrase_env is not None and s.key_passphrase_env not in os.environ:
            raise TransportError(self.host, f"the passphrase of {s.key} is read from the environment variable "
                                 f"{s.key_passphrase_env}, which is not set for the agent", transient=False)

    def _stream_to(self, s: SshSettings, hops: list[paramiko.SSHClient],
                   tcp: list[socket.socket]) -> socket.socket | paramiko.Channel:
        """A byte stream to ``s.address:s.port``: a TCP socket, or a channel through its verified bastion."""
        if s.jump is None:
            sock = self._tcp(s)
            tcp.append(sock)
            return sock
        bastion = s.jump
        client = self._handshake(bastion, self._stream_to(bastion, hops, tcp))
        hops.append(client)
        transport = client.get_transport()
        assert transport is not None
        where = f"{s.address} port {s.port}"
        via = f"the bastion {bastion.address} port {bastion.port}"
        try:
            return transport.open_channel("direct-tcpip", (s.address, s.port), ("127.0.0.1", 0),
                                          timeout=s.connect_timeout)
        except paramiko.ChannelException as exc:
            transient = exc.code == paramiko.common.OPEN_FAILED_CONNECT_FAILED
            raise TransportError(self.host, f"{via} cannot reach {where}: {exc.text}", transient=transient) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TransportError(self.host, f"{via} lost the connection to {where}: {exc or type(exc).__name__}",
                                 transient=True) from exc

    def _tcp(self, s: SshSettings) -> socket.socket:
        where = f"{s.address} port {s.port}"
        try:
            sock = socket.create_connection((s.address, s.port), timeout=s.connect_timeout)
        except socket.gaierror as exc:
            transient = exc.errno == socket.EAI_AGAIN
            raise TransportError(self.host, f"cannot resolve {s.address}: {exc}", transient=transient) from exc
        except TimeoutError as exc:
            raise TransportError(self.host, f"connection to {where} timed out after {s.connect_timeout}s",
                                 transient=True) from exc
        except OSError as exc:
            transient = exc.errno in _TRANSIENT_ERRNOS or exc.errno is None
            raise TransportError(self.host, f"cannot connect to {where}: {exc.strerror or exc}",
                                 transient=transient) from exc
        _tune_socket(sock)
        return sock

    def _handshake(self, s: SshSettings, sock: socket.socket | paramiko.Channel) -> paramiko.SSHClient:
        """An authenticated client to ``s`` over ``sock``, its host key verified against ``s.known_hosts``."""
        assert s.known_hosts is not None
        where = f"{s.address} port {s.port}"
        client = paramiko.SSHClient()
        client.get_host_keys().load(s.known_hosts)  # not load_host_keys(): nothing is ever written back
        client.set_missing_host_key_policy(_RejectWithFingerprint(self.host, s))
        passphrase = os.environ.get(s.key_passphrase_env) if s.key_passphrase_env else None
        try:
            client.connect(
                s.address,
                port=s.port,
                username=s.user,
                key_filename=s.key,
                passphrase=passphrase,
                sock=sock,
                timeout=s.connect_timeout,
                banner_timeout=s.connect_timeout,
                auth_timeout=s.connect_timeout,
                allow_agent=s.allow_agent,
                look_for_keys=False,
            )
        except HostKeyError:
            client.close()
            sock.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            sock.close()
            got, expected = key_fingerprint(exc.key), key_fingerprint(exc.expected_key)
            raise HostKeyError(
                self.host,
                f"HOST KEY CHANGED for {_known_hosts_name(s.address, s.port)}: the server offered "
                f"{exc.key.get_name()} {got} but {s.known_hosts} expects {expected}. This may be an attack; "
                f"nothing was run. If the change is legitimate, verify {got} out of band and replace the entry "
                f"(ssh-keygen -R '{_known_hosts_name(s.address, s.port)}' -f {s.known_hosts})",
                fingerprint=got,
                expected=expected,
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            sock.close()
            keys = " and ".join(filter(None, [f"key {s.key}" if s.key else None,
                                              "the ssh-agent's keys" if s.allow_agent else None])) or "no key"
            raise TransportError(
                self.host, f"authentication as {s.user} on {where} with {keys} failed: {exc}", transient=False
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            # dropped during banner/key exchange (MaxStartups, restart, reset): worth another try
            client.close()
            sock.close()
            raise TransportError(self.host, f"SSH handshake with {where} failed: {exc or type(exc).__name__}",
                                 transient=True) from exc
        return client

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
        for hop in reversed(self._hops):
            hop.close()
        if self._sock is not None:
            self._sock.close()
        self._client = None
        self._hops = []
        self._sock = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- scripts ----------------------------------------------------------------------------------

    def _command(self) -> str:
        return "sudo -n /bin/sh -s" if self.use_sudo else "sh -s"

    def _open_channel(self) -> paramiko.Channel:
        transport = self._ensure_connected()
        try:
            return transport.open_session(timeout=self.settings.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError):
            # the cached connection died while idle; nothing has been sent yet, so reconnecting is safe
            self._drop()
            transport = self._ensure_connected()
            try:
                return transport.open_session(timeout=self.settings.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self._drop()
                raise TransportError(self.host, f"cannot open a session: {exc}", transient=True) from exc

    def run_script(self, script: str, *, timeout: float | None = None) -> ScriptOutput:
        with self._lock:
            chan = self._open_channel()
            try:
                return self._run(chan, script.encode(), timeout)
            except TransportError:
                self._drop()
                raise
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self._drop()
                raise TransportError(self.host, f"{LOST}: {exc or type(exc).__name__}", transient=True) from exc
            finally:
                chan.close()

    def _run(self, chan: paramiko.Channel, data: bytes, timeout: float | None) -> ScriptOutput:
        deadline = None if timeout is None else time.monotonic() + timeout
        chan.exec_command(self._command())
        send_error: list[BaseException] = []

        def feed() -> None:
            try:
                chan.sendall(data)
                chan.shutdown_write()
            except Exception as exc:  # reported by the reader below
                send_error.append(exc)

        feeder = threading.Thread(target=feed, name=f"ssh-stdin-{self.host}", daemon=True)
        feeder.start()
        out: list[bytes] = []
        err: list[bytes] = []
        while True:
            _quickack(self._sock)
            while chan.recv_ready():
                out.append(chan.recv(65536))
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(65536))
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TransportError(self.host, f"batch timed out after {timeout}s", transient=True)
            wait = 1.0 if remaining is None else min(remaining, 1.0)
            if chan.eof_received:
                chan.status_event.wait(wait)
            else:
                select.select([chan], [], [], wait)
        feeder.join(timeout=1.0)
        status = chan.exit_status  # paramiko's -1: the channel closed without an exit status
        stderr = b"".join(err).decode("utf-8", "replace")
        if status == -1:
            if send_error:
                why = f"{LOST} (sending the script failed: {send_error[0] or type(send_error[0]).__name__})"
            elif chan.eof_received and _transport_active(chan):
                why = "the batch ended without an exit status (killed by a signal on the host?)"
            else:
                why = LOST
            raise TransportError(self.host, why, transient=True)
        if send_error and status != 0:
            # the script is sealed (connectors.base.whole_script): an upload cut short ran nothing
            raise TransportError(self.host, f"{LOST}: sending the script failed: "
                                 f"{send_error[0] or type(send_error[0]).__name__}", transient=True)
        if self.use_sudo and status == 1 and "sudo:" in stderr and "password" in stderr:
            raise TransportError(
                self.host,
                f"sudo refused to run /bin/sh -s for {self.settings.user} without a password; install the "
                f"sudoers rule from docs/sudoers.md ({stderr.strip().splitlines()[-1]})",
                transient=False,
            )
        return ScriptOutput(b"".join(out).decode("utf-8", "replace"), stderr, status)

    # -- files ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _sftp(self, doing: str) -> Iterator[paramiko.SFTPClient]:
        """An SFTP session on the open connection; its failures become :class:`TransportError`."""
        with self._lock:
            try:
                sftp = self._ensure_connected().open_sftp_client()
                if sftp is None:
                    raise TransportError(self.host, "the server refused the SFTP subsystem", transient=False)
                try:
                    yield sftp
                finally:
                    sftp.close()
            except TransportError:
                raise
            except OSError as exc:
                raise TransportError(self.host, f"cannot {doing}: {exc}", transient=False) from exc
            except (paramiko.SSHException, EOFError) as exc:
                self._drop()
                raise TransportError(self.host, f"SFTP failed to {doing}: {exc}", transient=True) from exc

    def put(self, path: str, data: bytes, *, mode: int = 0o600) -> None:
        target = safe_path(path)
        if self.use_sudo:
            self._put_via_shell(target, data, mode)
            return
        tmp = posixpath.join(posixpath.dirname(target), f".{posixpath.basename(target)}.arrears-tmp")
        with self._sftp(f"write {target}") as sftp:
            with sftp.open(tmp, "wb") as fh:
                fh.write(data)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, target)

    def get(self, path: str) -> bytes:
        target = safe_path(path)
        if self.use_sudo:
            return self._get_via_shell(target)
        with self._sftp(f"read {target}") as sftp, sftp.open(target, "rb") as fh:
            return bytes(fh.read())

    def _put_via_shell(self, target: str, data: bytes, mode: int) -> None:
        tmp = posixpath.join(posixpath.dirname(target), f".{posixpath.basename(target)}.arrears-tmp")
        encoded = base64.b64encode(data).decode()
        script = (
            f"set -e\numask 077\nbase64 -d > {q(tmp)} <<'ARREARS_EOF'\n{encoded}\nARREARS_EOF\n"
            f"chmod {mode:o} {q(tmp)}\nmv -f {q(tmp)} {q(target)}\n"
        )
        result = self.run_script(whole_script(script))
        if result.exit_status != 0:
            raise TransportError(self.host, f"cannot write {target}: {result.stderr.strip()}", transient=False)

    def _get_via_shell(self, target: str) -> bytes:
        result = self.run_script(whole_script(f"set -e\nbase64 -w0 < {q(target)}\n"))
        if result.exit_status != 0:
            raise TransportError(self.host, f"cannot read {target}: {result.stderr.strip()}", transient=False)
        return base64.b64decode(result.stdout.strip())

    def __repr__(self) -> str:
        s = self.settings
        return f"SshTransport({self.host!r}, {s.user}@{s.address}:{s.port}, sudo={self.use_sudo})"


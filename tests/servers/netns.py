"""Give the test run its own network namespace, so its daemons live on a private loopback."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

__all__ = ["Namespaces", "bastion_and_target", "enter_private_netns"]

CLONE_NEWNET = 0x40000000


def enter_private_netns(*, force: bool = False) -> bool:
    """unshare(CLONE_NEWNET) for the calling thread (and what it starts) and bring ``lo`` up.

    Returns False when not possible (not root, the kernel refuses, or ``ARREARS_TEST_NETNS=off``): the
    run then uses the machine's loopback. Without ``force`` a process that already entered one (or was
    started from one) stays where it is; with ``force`` it gets a fresh one (a new test module)."""
    setting = os.environ.get("ARREARS_TEST_NETNS")
    if os.geteuid() != 0 or setting == "off" or (setting == "inherit" and not force):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return False
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ["ARREARS_TEST_NETNS"] = "inherit"  # processes started from here stay inside
    return True


@dataclass
class Namespaces:
    """Named network namespaces joined by veth pairs: ``address[name]`` is each one's address on its link."""

    names: dict[str, str] = field(default_factory=dict)  # role -> the namespace's name for ``ip netns exec``
    address: dict[str, str] = field(default_factory=dict)  # role -> its address ("bastion@target": on that link)

    def exec(self, role: str) -> list[str]:
        """The command prefix that runs a command inside the role's namespace."""
        return ["ip", "netns", "exec", self.names[role]]


@contextlib.contextmanager
def bastion_and_target() -> Iterator[Namespaces]:
    """A ``bastion`` namespace this process reaches at 10.250.1.2 and a ``target`` namespace at 10.250.2.2
    that only the bastion reaches: this process has no route to it and the bastion does not forward.
    Only inside a test run's private namespace (the veth ends here must not touch the machine's network)."""
    if os.environ.get("ARREARS_TEST_NETNS") != "inherit":
        raise RuntimeError("bastion_and_target() needs the test run's private network namespace (run as root)")
    tag = f"arrears-{os.getpid()}-{secrets.token_hex(3)}"
    ns = Namespaces({"bastion": f"{tag}-b", "target": f"{tag}-t"},
                    {"bastion": "10.250.1.2", "target": "10.250.2.2", "bastion@target": "10.250.2.1"})
    run = partial(subprocess.run, check=True, capture_output=True)
    try:
        for name in ns.names.values():
            run(["ip", "netns", "add", name])
            run(["ip", "-n", name, "link", "set", "lo", "up"])
        b, t = ns.names["bastion"], ns.names["target"]
        run(["ip", "link", "add", f"{tag[-6:]}h", "type", "veth", "peer", "name", "eth-here", "netns", b])
        run(["ip", "addr", "add", "10.250.1.1/30", "dev", f"{tag[-6:]}h"])
        run(["ip", "link", "set", f"{tag[-6:]}h", "up"])
        run(["ip", "-n", b, "addr", "add", "10.250.1.2/30", "dev", "eth-here"])
        run(["ip", "-n", b, "link", "set", "eth-here", "up"])
        run(["ip", "-n", b, "link", "add", "eth-target", "type", "veth", "peer", "name", "eth-bastion", "netns", t])
        run(["ip", "-n", b, "addr", "add", "10.250.2.1/30", "dev", "eth-target"])
        run(["ip", "-n", b, "link", "set", "eth-target", "up"])
        run(["ip", "-n", t, "addr", "add", "10.250.2.2/30", "dev", "eth-bastion"])
        run(["ip", "-n", t, "link", "set", "eth-bastion", "up"])
        yield ns
    finally:
        for name in ns.names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)

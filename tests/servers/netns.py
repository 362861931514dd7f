"""Give the test run its own network namespace, so its daemons live on a private loopback."""

from __future__ import annotations

import ctypes
import os
import subprocess

__all__ = ["enter_private_netns"]

CLONE_NEWNET = 0x40000000


def enter_private_netns() -> bool:
    """unshare(CLONE_NEWNET) for this process and bring ``lo`` up. Returns False when not possible
    (not root, or the kernel refuses): the run then uses the machine's loopback."""
    if os.geteuid() != 0 or os.environ.get("ARREARS_TEST_NETNS") == "0":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return False
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ["ARREARS_TEST_NETNS"] = "0"  # children are already inside
    return True

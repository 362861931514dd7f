"""Give the test run its own network namespace, so its daemons live on a private loopback."""

from __future__ import annotations

import ctypes
import os
import subprocess

__all__ = ["enter_private_netns"]

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

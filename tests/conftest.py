"""Test-wide setup: private network namespaces, so test daemons live on a loopback of their own, and no
skips in CI (tests/ci_skips.py).

The run enters one before anything starts; each test module then gets a fresh one before its
(module-scoped) servers start, so no two modules' daemons ever share a loopback."""

from __future__ import annotations

import pytest

from tests.servers.netns import enter_private_netns

pytest_plugins = ["tests.ci_skips", "tests.servers.sshd", "tests.servers.smtp", "tests.servers.web",
                  "tests.servers.mail", "pytester"]


def pytest_configure(config: pytest.Config) -> None:
    enter_private_netns()


@pytest.fixture(scope="module", autouse=True)
def module_network_namespace() -> None:
    enter_private_netns(force=True)

"""Test-wide setup: the run gets a private network namespace before any daemon starts."""

from __future__ import annotations

import pytest

from tests.servers.netns import enter_private_netns

pytest_plugins = ["tests.servers.sshd", "tests.servers.smtp", "tests.servers.web", "tests.servers.mail"]


def pytest_configure(config: pytest.Config) -> None:
    enter_private_netns()

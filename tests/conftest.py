"""Test-wide setup: private network namespaces, so test daemons live on a loopback of their own, and no
skips in CI (tests/ci_skips.py).

The run enters one before anything starts; each test module then gets a fresh one before its
(module-scoped) servers start, so no two modules' daemons ever share a loopback.

A test that uses a real daemon's fixture is marked ``servers`` here, whether or not its module says so:
``-m "not servers"`` (the libfaketime step of ``make test``) must select exactly the tests that need none."""

from __future__ import annotations

import pytest

from tests.servers.netns import enter_private_netns

pytest_plugins = ["tests.ci_skips", "tests.backends", "tests.servers.sshd", "tests.servers.smtp", "tests.servers.web",
                  "tests.servers.mail", "tests.servers.postgres", "pytester"]


# The fixtures that start real daemons (tests/servers); anything using one, directly or through another
# fixture, needs servers.
SERVER_FIXTURES = frozenset({"sshd", "ssh_transport", "nginx_server", "apache_server", "mail_server", "pg_cluster",
                             "pg_url"})


def pytest_configure(config: pytest.Config) -> None:
    enter_private_netns()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


@pytest.fixture(scope="module", autouse=True)
def module_network_namespace() -> None:
    enter_private_netns(force=True)

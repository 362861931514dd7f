"""pytest plugin (``pytest11`` entry point ``arrears``): fleet fixtures for code that drives arrears.

``fake_fleet``      a fresh :class:`connectors.testing.FakeFleet` (in memory, any host).
``fake_inventory``  an :class:`connectors.inventory.Inventory` with two local hosts, ``web1`` (web, login,
                    home) and ``mail1`` (mail), served by the flag-file connector under ``tmp_path``;
                    ``connectors.runner.InventoryFleet(fake_inventory)`` runs real shell batches on it.

Imports happen inside the fixtures, so merely having arrears installed costs other test runs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from connectors.inventory import Inventory
    from connectors.testing import FakeFleet

__all__ = ["fake_fleet", "fake_inventory"]


@pytest.fixture
def fake_fleet() -> Iterator[FakeFleet]:
    from connectors.testing import FakeFleet

    fleet = FakeFleet()
    yield fleet
    fleet.close()


@pytest.fixture
def fake_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Inventory:
    from connectors import registry
    from connectors.inventory import load_inventory
    from connectors.testing import FLAG_BACKEND, flag_backends

    for key, target in flag_backends().items():
        monkeypatch.setitem(registry.BACKENDS, key, target)
    roots = {"web1": tmp_path / "hosts" / "web1", "mail1": tmp_path / "hosts" / "mail1"}
    text = (
        "defaults: {parallel: 4}\n"
        "hosts:\n"
        "  web1:\n"
        "    transport: local\n"
        "    services:\n"
        f"      web: {{backend: {FLAG_BACKEND}, root: {roots['web1']}}}\n"
        f"      login: {{backend: {FLAG_BACKEND}, root: {roots['web1']}}}\n"
        f"      home: {{backend: {FLAG_BACKEND}, root: {roots['web1']}}}\n"
        "  mail1:\n"
        "    transport: local\n"
        "    services:\n"
        f"      mail: {{backend: {FLAG_BACKEND}, root: {roots['mail1']}}}\n"
    )
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    return load_inventory(text, str(path))

"""docs/formats.md says what the code accepts: it is regenerated from the models and compared."""

from __future__ import annotations

import pytest

from agent import docs
from connectors import inventory, registry


def test_docs_formats_md_matches_the_code() -> None:
    assert docs.OUTPUT.read_text() == docs.render(), (
        f"{docs.OUTPUT} is out of date with the code; run: {docs.COMMAND}")


def test_every_inventory_setting_is_in_the_docs_with_its_default() -> None:
    text = docs.render()
    models = [inventory.Defaults, inventory._RawHost]
    models += [registry.settings_model(s, b) for s in inventory.SERVICES for b in registry.backends_for(s)]
    for model in models:
        for name in model.model_fields:
            assert f"| `{name}` |" in text, f"{model.__name__}.{name} is missing from docs/formats.md"
    assert "| `min_uid` | whole number | `1000` |" in text
    assert "| `vhost_name` | text | `{site}` |" in text  # nginx's own default, not the shared one


def test_a_field_without_words_stops_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import imports

    monkeypatch.setattr(imports, "_LEDGER_FIELDS", (*imports._LEDGER_FIELDS, "memo"))
    with pytest.raises(docs.DocsError, match=r"'memo'.*python -m agent\.docs"):
        docs.render()

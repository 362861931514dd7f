"""The schema revision this code expects, known without loading Alembic.

Each migration in ``migrations/versions`` is named after its revision (``0002_resource_claims.py`` is
revision ``0002``) and each one follows the one before, so the head is the highest of those names;
tests/agent/test_store.py holds it equal to Alembic's own head. :func:`agent.store.db.open_store`
compares it with the database's ``alembic_version`` (one SELECT) and runs Alembic only when they differ.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["HEAD", "VERSIONS"]

VERSIONS = Path(__file__).with_name("migrations") / "versions"
HEAD = max(p.name.split("_", 1)[0] for p in VERSIONS.glob("[0-9]*_*.py"))

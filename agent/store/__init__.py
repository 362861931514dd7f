"""The account store: SQLAlchemy models, the engine/session factory, queries and Alembic migrations."""

from agent.store.db import Store, make_engine, migrate, open_store

__all__ = ["Store", "make_engine", "migrate", "open_store"]

"""Bearer tokens of the HTTP API: made, listed, revoked and checked; only their SHA-256 is stored.

A token is ``arr_`` and 43 URL-safe characters (256 random bits); it is shown once, when it is made. Its
``name`` is the actor that the audit log names for whatever the token does. Scopes:

``billing``  accounts, ledger, payments and can-spend (what a billing system writes and asks);
``read``     every read endpoint;
``admin``    suspend, resume, delete and restore, and every other endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Select, String, bindparam, select
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session

from agent.store import models as m
from agent.store.prepared import Prepared
from agent.store.repo import audit

__all__ = ["NAME", "PREFIX", "SCOPES", "TokenError", "TokenInfo", "add_token", "authenticate", "list_tokens",
           "revoke_token"]

SCOPES = ("billing", "read", "admin")
PREFIX = "arr_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


class TokenError(ValueError):
    """A token that cannot be made or revoked as asked (a bad name or scope, a name in use, an unknown name)."""


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed (never the token itself)."""

    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    created_by: str
    revoked_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "scopes": list(self.scopes), "created_at": self.created_at,
                "created_by": self.created_by, "revoked_at": self.revoked_at}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    wanted = list(dict.fromkeys(scopes))
    if not wanted:
        raise TokenError(f"a token needs at least one scope ({', '.join(SCOPES)})")
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise TokenError(f"unknown scope {unknown[0]!r}: the scopes are {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in wanted)


def _active(session: Session, name: str) -> m.ApiToken | None:
    return session.scalar(select(m.ApiToken).where(m.ApiToken.name == name, m.ApiToken.revoked_at.is_(None)))


def add_token(session: Session, name: str, scopes: Sequence[str], *, actor: str,
              now: datetime) -> tuple[str, TokenInfo]:
    """Make a token called ``name`` with ``scopes``; returns the token (shown once) and what is stored."""
    if not NAME.match(name):
        raise TokenError(f"token name {name!r} is not valid: 1-100 letters, digits, '.', '_', '@' or '-', "
                         "starting with a letter or digit")
    chosen = _scopes(scopes)
    if _active(session, name) is not None:
        raise TokenError(f"a token called {name!r} exists; revoke it first (arrears tokens revoke {name})")
    token = PREFIX + secrets.token_urlsafe(32)
    row = m.ApiToken(name=name, hash=_digest(token), scopes=list(chosen), created_at=now, created_by=actor)
    session.add(row)
    audit(session, at=now, actor=actor, action="token.add", reason=name, details={"scopes": list(chosen)})
    return token, _info(row)


def _info(row: m.ApiToken) -> TokenInfo:
    return TokenInfo(row.name, tuple(row.scopes), row.created_at, row.created_by, row.revoked_at)


def list_tokens(session: Session, *, revoked: bool = False) -> list[TokenInfo]:
    """The tokens in force (and the revoked ones with ``revoked``), oldest first."""
    stmt = select(m.ApiToken).order_by(m.ApiToken.id)
    if not revoked:
        stmt = stmt.where(m.ApiToken.revoked_at.is_(None))
    return [_info(r) for r in session.scalars(stmt)]


def revoke_token(session: Session, name: str, *, actor: str, now: datetime) -> TokenInfo:
    """Revoke the token called ``name``: it is refused from the next request on."""
    row = _active(session, name)
    if row is None:
        raise TokenError(f"no token called {name!r} is in force (arrears tokens list)")
    row.revoked_at = now
    audit(session, at=now, actor=actor, action="token.revoke", reason=name)
    return _info(row)


@cache
def _by_hash() -> Select[str, str, list[str], datetime, str, datetime | None]:
    """The token row of a hash (parameter ``hash``): built once, it is read on every request."""
    return (select(m.ApiToken.name, m.ApiToken.hash, m.ApiToken.scopes, m.ApiToken.created_at,
                   m.ApiToken.created_by, m.ApiToken.revoked_at)
            .where(m.ApiToken.hash == bindparam("hash", type_=String())))


@cache
def _by_hash_prepared(dialect: Dialect) -> Prepared:
    return Prepared(_by_hash(), dialect)


def authenticate(session: Session | Connection, token: str) -> TokenInfo | None:
    """The token in force that ``token`` is, or None (unknown, malformed or revoked). Read from the database
    on every call (one indexed statement, run prepared: :mod:`agent.store.prepared`), so a revocation holds
    from the next request on."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    digest = _digest(token)
    connection = session if isinstance(session, Connection) else session.connection()
    found = _by_hash_prepared(connection.dialect).rows(connection, {"hash": digest})
    row = found[0] if found else None
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.hash, digest):
        return None
    return TokenInfo(row.name, tuple(row.scopes), row.created_at, row.created_by, row.revoked_at)

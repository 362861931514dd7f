"""API tokens: made with scopes, shown once, stored hashed, listed without the token, revoked."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from agent.api.tokens import SCOPES, authenticate
from agent.cli.tokens import _SCOPES
from agent.store.db import open_store
from tests.scenarios.harness import Arrears


@pytest.fixture
def arrears(tmp_path: Path) -> Arrears:
    return Arrears.create(tmp_path / "cfg")


def test_the_command_line_offers_the_scopes_the_api_knows() -> None:
    assert _SCOPES == SCOPES


def test_a_token_is_shown_once_and_stored_only_as_its_hash(arrears: Arrears) -> None:
    made = arrears.json("tokens", "add", "billing-system", "--scope", "billing", "--scope", "read")
    assert made["name"] == "billing-system" and made["scopes"] == ["billing", "read"]
    token = made["token"]
    assert token.startswith("arr_") and len(token) >= 40
    con = sqlite3.connect(arrears.folder / "arrears.db")
    try:
        rows = con.execute("select name, hash, scopes from api_tokens").fetchall()
        everything = json.dumps(arrears.dump())
    finally:
        con.close()
    assert rows == [("billing-system", hashlib.sha256(token.encode()).hexdigest(), '["billing", "read"]')]
    assert token not in everything
    listed = arrears.json("tokens", "list")
    assert [(t["name"], t["scopes"], t["revoked_at"]) for t in listed] == [("billing-system", ["billing", "read"],
                                                                            None)]
    assert token not in json.dumps(listed)


def test_a_revoked_token_no_longer_authenticates(arrears: Arrears) -> None:
    token = arrears.json("tokens", "add", "panel", "--scope", "admin")["token"]
    store = open_store(f"sqlite:///{arrears.folder / 'arrears.db'}")
    try:
        with store.session() as s:
            info = authenticate(s, token)
            assert info is not None and info.name == "panel" and info.scopes == ("admin",)
            assert authenticate(s, token + "x") is None
            assert authenticate(s, "not-a-token") is None
        arrears.ok("tokens", "revoke", "panel")
        with store.session() as s:
            assert authenticate(s, token) is None
    finally:
        store.close()
    assert arrears.json("tokens", "list") == []
    assert [t["name"] for t in arrears.json("tokens", "list", "--revoked")] == ["panel"]
    # the name may be given to a new token once the old one is revoked; the new one is another secret
    again = arrears.json("tokens", "add", "panel", "--scope", "read")["token"]
    assert again != token
    actions = [a[3] for a in arrears.dump()["audit"]]
    assert sorted(actions) == ["token.add", "token.add", "token.revoke"]


@pytest.mark.parametrize(("args", "message"), [
    (("tokens", "add", "x"), "Missing option '--scope'"),
    (("tokens", "add", "x", "--scope", "root"), "'root' is not one of"),
    (("tokens", "add", "bad name", "--scope", "read"), "token name 'bad name' is not valid"),
    (("tokens", "revoke", "nobody"), "no token called 'nobody' is in force"),
])
def test_bad_token_commands_are_refused_and_write_nothing(arrears: Arrears, args: tuple[str, ...],
                                                          message: str) -> None:
    arrears.ok("tokens", "add", "panel", "--scope", "read")
    before = arrears.dump()
    result = arrears.invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert arrears.dump() == before


def test_a_name_in_force_is_refused(arrears: Arrears) -> None:
    arrears.ok("tokens", "add", "panel", "--scope", "read")
    assert "a token called 'panel' exists; revoke it first" in arrears.fails("tokens", "add", "panel", "--scope",
                                                                            "admin")

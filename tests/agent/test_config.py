"""Config discovery: --config, else ARREARS_CONFIG, else the current directory; the database likewise."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, agent_settings, discover


def test_option_beats_environment_beats_cwd(tmp_path: Path) -> None:
    env = {"ARREARS_CONFIG": str(tmp_path / "env")}
    assert discover(str(tmp_path / "opt"), environ=env, cwd=tmp_path).folder == tmp_path / "opt"
    assert discover(None, environ=env, cwd=tmp_path).folder == tmp_path / "env"
    assert discover(None, environ={}, cwd=tmp_path).folder == tmp_path


def test_database_defaults_to_the_config_folder(tmp_path: Path) -> None:
    assert discover(str(tmp_path), environ={}).db_url == f"sqlite:///{tmp_path / 'arrears.db'}"
    env = {"ARREARS_DB": "sqlite:////var/lib/arrears/a.db"}
    assert discover(str(tmp_path), environ=env).db_url == "sqlite:////var/lib/arrears/a.db"
    assert discover(str(tmp_path), "postgresql://agent@db/arrears", environ=env).db_url == \
        "postgresql://agent@db/arrears"
    assert discover(str(tmp_path), str(tmp_path / "x.db"), environ={}).db_url == f"sqlite:///{tmp_path / 'x.db'}"


def test_agent_settings_are_validated() -> None:
    assert agent_settings({"lease_seconds": 30}).lease_seconds == 30
    with pytest.raises(ConfigError, match=r"agent\.lease_seconds: must be a positive whole number"):
        agent_settings({"lease_seconds": -1})
    with pytest.raises(ConfigError, match="agent: must be a mapping"):
        agent_settings(["x"])
    assert agent_settings({"tick_chunk": 50}).tick_chunk == 50
    with pytest.raises(ConfigError, match=r"agent\.tick_chunk: at most 10000, got 20000"):
        agent_settings({"tick_chunk": 20000})

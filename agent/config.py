"""Where a command finds its configuration folder and database, and the agent's own settings.

The folder (``inventory.yaml``, ``policy.yaml``, ``templates/``) comes from ``--config DIR``, else
``ARREARS_CONFIG``, else the current directory. The database comes from ``--db URL``, else
``ARREARS_DB``, else ``sqlite:///<folder>/arrears.db``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policy.loader import PolicySet

__all__ = ["AgentSettings", "Config", "ConfigError", "agent_settings", "discover", "load_policy_file"]


class ConfigError(Exception):
    """The configuration cannot be used; the message says what and where."""


@dataclass(frozen=True)
class Config:
    folder: Path
    db_url: str

    @property
    def policy_path(self) -> Path:
        return self.folder / "policy.yaml"

    @property
    def inventory_path(self) -> Path:
        return self.folder / "inventory.yaml"

    @property
    def templates_dir(self) -> Path:
        return self.folder / "templates"


def discover(config: str | os.PathLike[str] | None = None, db: str | None = None,
             environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Config:
    """The configuration folder and database URL, from the options, else the environment, else defaults."""
    env = os.environ if environ is None else environ
    raw = config if config is not None else (env.get("ARREARS_CONFIG") or None)
    folder = Path(raw).expanduser() if raw is not None else (cwd or Path.cwd())
    folder = folder.resolve()
    url = db if db is not None else (env.get("ARREARS_DB") or None)
    if url is None:
        url = f"sqlite:///{folder / 'arrears.db'}"
    elif "://" not in url:
        # a bare path is taken as an SQLite file
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    return Config(folder=folder, db_url=url)


def load_policy_file(cfg: Config) -> PolicySet:
    """Load and validate ``policy.yaml`` of the config folder (raises PolicyError or ConfigError)."""
    from policy import load_policy

    path = cfg.policy_path
    if not path.is_file():
        raise ConfigError(f"{path}: no policy file; run `arrears init {cfg.folder}` or pass --config DIR")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    ps = load_policy(text, str(path))
    agent_settings(ps.extra.get("agent"), str(path))
    return ps


@dataclass(frozen=True)
class AgentSettings:
    """The ``agent:`` section of policy.yaml."""

    lease_seconds: int = 600  # a claimed job older than this is taken again (its worker died)
    backoff_seconds: int = 60  # first retry delay; doubles per attempt
    backoff_max_seconds: int = 3600
    max_attempts: int = 8  # a job failing for other reasons than an unreachable host gives up after this
    recheck_seconds: int = 300  # how soon an account with work in flight is looked at again
    tick_chunk: int = 500  # due accounts a tick evaluates and records per transaction


_AGENT_KEYS = {f: int for f in AgentSettings.__dataclass_fields__}
_AGENT_MAX = {"tick_chunk": 10_000}  # a chunk's ids are bound as parameters of one statement


def agent_settings(section: Any, filename: str = "policy.yaml") -> AgentSettings:
    """Validate the outbox settings of the ``agent:`` section (positive whole numbers); other keys of the
    section belong to the daemon and are validated there."""
    if section is None:
        return AgentSettings()
    if not isinstance(section, dict):
        raise ConfigError(f"{filename}: agent: must be a mapping")
    values: dict[str, int] = {}
    for key, value in section.items():
        if key not in _AGENT_KEYS:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{filename}: agent.{key}: must be a positive whole number, got {value!r}")
        if key in _AGENT_MAX and value > _AGENT_MAX[key]:
            raise ConfigError(f"{filename}: agent.{key}: at most {_AGENT_MAX[key]}, got {value!r}")
        values[key] = value
    return AgentSettings(**values)

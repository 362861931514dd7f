"""The home connector: delete = archive -> verify -> remove of an account's home dir; restore from the archive.

Resource: ``{"path": "/home/alice"}``; for ``restore`` also ``"archive"`` and ``"sha256"``, the facts of
the delete that made the archive. ``suspend`` and ``resume`` do nothing (the login lock and the web and
mail connectors handle access); ``status`` reports whether the home dir exists.

``delete`` uses :func:`connectors.archive.archive_ops`: the home dir is archived into
``<archive_dir>/<account>-home-<UTC timestamp>.tar.gz``, verified, and only then removed; a path
outside the configured roots, a root itself, a symlink escape, a home with anything mounted at or below
it (a bind mount included) and an archive that did not verify are refused with nothing touched. The
facts (``archive``, ``sha256``, ``size``, ``entries``, ``files``, ``listing``) are what the store keeps
for a later restore. :meth:`HomeConnector.prune_operations`
removes archives older than ``retention_days`` from ``archive_dir``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.archive import archive_ops, check_archive_dir, check_roots, probe_lines, prune_ops, restore_ops
from connectors.base import Action, Handler, Operation
from connectors.observed import Observed
from connectors.resources import home_path
from connectors.validate import UnsafeValue, account_id, path, q

__all__ = ["HomeConnector", "HomeSettings"]

SERVICE = "home"


class HomeSettings(BaseModel):
    """Per-host settings of the home connector (``services.home`` in the inventory)."""

    model_config = ConfigDict(extra="forbid")

    roots: list[str] = Field(default_factory=lambda: ["/home"], min_length=1)
    archive_dir: str = "/var/backups/arrears"
    retention_days: int = Field(default=90, ge=1)
    state_dir: str = "/var/lib/arrears"  # the host's arrears state dir; archives and their listings hold all

    @field_validator("roots")
    @classmethod
    def _roots(cls, value: list[str]) -> list[str]:
        return check_roots(value)

    @field_validator("archive_dir", "state_dir")
    @classmethod
    def _path(cls, value: str) -> str:
        return path(value)

    @model_validator(mode="after")
    def _separate(self) -> HomeSettings:
        check_archive_dir(self.archive_dir, self.roots)
        return self


def _op_id(account: str, action: str, target: str) -> str:
    op_id = f"{account}:{SERVICE}:{action}:{target.strip('/').replace('/', ':')}"
    if len(op_id) > 200:
        op_id = f"{account}:{SERVICE}:{action}:{hashlib.sha256(target.encode()).hexdigest()[:24]}"
    return op_id


class HomeConnector:
    """Archives, removes and restores one home dir per resource on one host."""

    service = SERVICE
    Settings = HomeSettings

    def __init__(self, settings: HomeSettings, host: str) -> None:
        self.settings = settings
        self.host = host

    def _path(self, resource: dict[str, Any]) -> str:
        return home_path(resource, self.settings.roots)

    def operations(self, action: Action, account: str, resource: dict[str, Any]) -> list[Operation]:
        acct = account_id(account)
        home = self._path(resource)
        s = self.settings
        if action in ("suspend", "resume"):
            return []
        if action == "status":
            script = f"if [ -d {q(home)} ]; then fact exists yes; else fact exists no; fi"
        elif action == "delete":
            script = archive_ops(acct, [home], s.roots, s.archive_dir, SERVICE)
        elif action == "restore":
            for key in ("archive", "sha256"):
                if not resource.get(key):
                    raise UnsafeValue("home restore", resource,
                                      f"needs {key!r} (a fact of the delete that archived it)")
            script = restore_ops(acct, [home], s.roots, s.archive_dir, resource["archive"], resource["sha256"])
        else:
            raise ValueError(f"home connector: unknown action {action!r}")
        return [Operation(_op_id(acct, action, home), acct, f"{SERVICE}:{action}", script)]

    def observe(self, facts: Mapping[str, str]) -> Observed:
        """Deleted once the home dir is gone; present otherwise, which is right for an active and for a
        suspended account alike (the home connector does not suspend)."""
        exists = facts.get("exists")
        if exists == "yes":
            return Observed("active", "home dir present", also=frozenset({"suspended"}))
        if exists == "no":
            return Observed("deleted", "home dir gone")
        return Observed("unknown", f"incomplete facts: exists {exists}")

    def check_script(self) -> str:
        """What deletions need (:func:`connectors.archive.probe_lines`) and every root exists."""
        s = self.settings
        lines = probe_lines(s.archive_dir)
        lines += [f"[ -d {q(root)} ] || fail {q(f'home root {root} does not exist')}" for root in s.roots]
        lines.append('fact version "$(tar --version | head -n1)"')
        return "\n".join(lines)

    def prune_operations(self, *, dry_run: bool = False) -> list[Operation]:
        """One operation removing archives older than ``retention_days`` from ``archive_dir``
        (``dry_run``: listing them only)."""
        s = self.settings
        script = prune_ops(s.archive_dir, s.retention_days, dry_run=dry_run)
        return [Operation(f"arrears:{SERVICE}:prune", "", f"{SERVICE}:prune", script)]

    def handlers(self) -> list[Handler]:
        return []

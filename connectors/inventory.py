"""inventory.yaml: the hosts, how to reach them, and per host the services with their backend settings.

:func:`load_inventory` parses and validates YAML text. Every problem is reported with the file, the line
of the offending YAML node, the dotted field and what to do; unknown keys are errors. Backend settings
are validated by the connector's own ``Settings`` model (see :mod:`connectors.registry`).

Example::

    defaults: {parallel: 16, connect_timeout: 10, retries: 3, state_dir: /var/lib/arrears}
    hosts:
      web1:
        transport: ssh
        address: 203.0.113.10
        user: root
        key: /etc/arrears/id_ed25519
        known_hosts: /etc/arrears/known_hosts
        services:
          web:  {backend: nginx, ...}
          home: {backend: archive, roots: [/home], archive_dir: /var/backups/arrears, retention_days: 90}
      web2:
        address: web2-prod           # a Host alias of ssh_config (HostName, User, Port, IdentityFile, ProxyJump)
        ssh_config: /etc/arrears/ssh_config
        jump: web1                   # or through another inventory host, its key verified like any other
        allow_agent: true            # keys of ssh-agent (SSH_AUTH_SOCK); key_passphrase_env: VAR for a passphrase

See docs/ssh.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connectors import registry
from connectors.base import Connector, Transport
from connectors.local import LocalTransport
from connectors.ssh import SshConfigHost, SshSettings, SshTransport, key_permission_problem, ssh_config_host
from connectors.validate import path
from policy import safe_yaml

__all__ = [
    "SERVICES",
    "Defaults",
    "HostConfig",
    "Inventory",
    "InventoryError",
    "Problem",
    "ServiceConfig",
    "load_inventory",
    "load_inventory_file",
]

SERVICES = ("web", "mail", "login", "home")
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ADDRESS = re.compile(r"^(?!-)[A-Za-z0-9.-]{1,253}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _state_path(value: str | None) -> str | None:
    """A state folder: an absolute, normalised path of safe characters (it reaches the host's shell)."""
    return None if value is None else path(value)


def _env_name(value: str | None) -> str | None:
    if value is not None and not _ENV_NAME.match(value):
        raise ValueError("must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
    return value


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    field: str
    message: str
    hint: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.field or '(top level)'}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class InventoryError(ValueError):
    """The inventory is invalid; ``problems`` lists each one with file, line, field and what to do."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("invalid inventory:\n" + "\n".join(f"  {p}" for p in self.problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Strict):
    parallel: int = Field(16, ge=1, le=512, description="hosts worked on at the same time")
    connect_timeout: float = Field(10.0, gt=0, le=600)
    retries: int = Field(3, ge=1, le=20, description="connection attempts for transient errors")
    retry_max_time: float = Field(60.0, gt=0, le=3600, description="seconds spent retrying one connection at most")
    batch_timeout: float = Field(900.0, gt=0, description="seconds one host's batch may run")
    state_dir: str = "/var/lib/arrears"
    port: int = Field(22, ge=1, le=65535)
    user: str = "root"
    key: str | None = None
    known_hosts: str | None = None
    sudo: bool = False
    ssh_config: str | None = Field(None, description="an OpenSSH ssh_config whose Host aliases `address` may name")
    allow_agent: bool = Field(False, description="also offer the keys of ssh-agent (SSH_AUTH_SOCK)")
    key_passphrase_env: str | None = Field(None, description="environment variable holding the key's passphrase")

    _passphrase_env = field_validator("key_passphrase_env")(_env_name)
    _state_dir = field_validator("state_dir")(_state_path)


@dataclass(frozen=True)
class ServiceConfig:
    """A service on a host: its backend and the connector's validated settings."""

    service: str
    backend: str
    settings: BaseModel


@dataclass(frozen=True)
class HostConfig:
    """One host as the inventory describes it (paths already resolved)."""

    name: str
    transport: Literal["ssh", "local"] = "ssh"
    address: str | None = None
    port: int | None = None
    user: str | None = None
    key: str | None = None
    known_hosts: str | None = None
    sudo: bool | None = None
    services: dict[str, ServiceConfig] = field(default_factory=dict)
    jump: str | None = None  # the inventory host this one is reached through
    ssh_config: str | None = None
    allow_agent: bool | None = None
    key_passphrase_env: str | None = None
    state_dir: str | None = None  # its arrears state folder (batch lock, pending handlers); None: the default

    def ssh_config_entry(self, defaults: Defaults) -> tuple[str, SshConfigHost] | None:
        """The ssh_config file and what it says about ``address`` (an alias), when one is configured."""
        path = self.ssh_config or defaults.ssh_config
        if path is None or self.address is None:
            return None
        return path, ssh_config_host(path, self.address)

    def ssh_settings(self, defaults: Defaults, jump: SshSettings | None = None) -> SshSettings:
        """How to reach the host: its own settings first, then its ssh_config entry, then the defaults.
        ``jump`` is the bastion of its ``jump:``; without one, a ``ProxyJump`` of its ssh_config entry is."""
        assert self.address is not None
        found = self.ssh_config_entry(defaults)
        cfg = found[1] if found else SshConfigHost(self.address)
        common: dict[str, Any] = {
            "known_hosts": self.known_hosts or defaults.known_hosts,
            "connect_timeout": defaults.connect_timeout,
            "retries": defaults.retries,
            "retry_max_time": defaults.retry_max_time,
            "allow_agent": self.allow_agent if self.allow_agent is not None else defaults.allow_agent,
        }
        if jump is None and found is not None and cfg.proxy_jump:
            for user, name, port in cfg.proxy_jump:  # each hop is looked up in the same ssh_config
                hop = ssh_config_host(found[0], name)
                jump = SshSettings(address=hop.hostname, port=port or hop.port or defaults.port,
                                   user=user or hop.user or defaults.user, key=hop.identity_file or defaults.key,
                                   key_passphrase_env=defaults.key_passphrase_env, jump=jump, **common)
        return SshSettings(
            address=cfg.hostname,
            port=_first(self.port, cfg.port, defaults.port),
            user=_first(self.user, cfg.user, defaults.user),
            key=_first(self.key, cfg.identity_file, defaults.key),
            sudo=self.sudo if self.sudo is not None else defaults.sudo,
            key_passphrase_env=self.key_passphrase_env or defaults.key_passphrase_env,
            jump=jump,
            **common,
        )


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


class _RawService(BaseModel):
    model_config = ConfigDict(extra="allow")
    backend: str


class _RawHost(_Strict):
    transport: Literal["ssh", "local"] = "ssh"
    address: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    user: str | None = None
    key: str | None = None
    known_hosts: str | None = None
    sudo: bool | None = None
    jump: str | None = None
    ssh_config: str | None = None
    allow_agent: bool | None = None
    key_passphrase_env: str | None = None
    state_dir: str | None = None
    services: dict[str, _RawService] = Field(default_factory=dict)

    _passphrase_env = field_validator("key_passphrase_env")(_env_name)
    _state_dir = field_validator("state_dir")(_state_path)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        if not _ADDRESS.match(value) or ".." in value:
            raise ValueError("must be an IP address or a host name")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", value):
            raise ValueError("must be a unix user name")
        return value


class _RawInventory(_Strict):
    defaults: Defaults = Field(default_factory=Defaults)  # type: ignore[arg-type]
    hosts: dict[str, _RawHost]

    @model_validator(mode="after")
    def _names(self) -> _RawInventory:
        for name in self.hosts:
            if not _HOST_NAME.match(str(name)):
                raise ValueError(f"host name {name!r} must match {_HOST_NAME.pattern}")
        return self


@dataclass
class Inventory:
    """The validated inventory. Builds transports and connectors for its hosts."""

    defaults: Defaults
    hosts: dict[str, HostConfig]
    source: str = "inventory.yaml"
    _connectors: dict[tuple[str, str], Connector] = field(default_factory=dict, repr=False)

    def host(self, name: str) -> HostConfig:
        try:
            return self.hosts[name]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none"
            raise KeyError(f"host {name!r} is not in {self.source} (known hosts: {known})") from None

    def state_dir(self, name: str) -> str:
        """The host's arrears state folder: its batch lock (one batch at a time on it) and its pending
        handlers. Its own ``state_dir``, else ``defaults.state_dir``; hosts that share a machine
        (``transport: local``) each need their own, or their batches wait for one another."""
        return self.host(name).state_dir or self.defaults.state_dir

    def transport(self, name: str) -> Transport:
        """A new transport for the host (not connected yet)."""
        host = self.host(name)
        if host.transport == "local":
            return LocalTransport(name)
        return SshTransport(name, self.ssh_settings(name))

    def ssh_settings(self, name: str) -> SshSettings:
        """The host's SSH settings with its bastions (``jump:``, itself maybe reached through another)."""
        host = self.host(name)
        jump = self.ssh_settings(host.jump) if host.jump is not None else None
        return host.ssh_settings(self.defaults, jump)

    def connector(self, name: str, service: str) -> Connector:
        """The host's connector for ``service`` (created once and cached)."""
        cached = self._connectors.get((name, service))
        if cached is not None:
            return cached
        host = self.host(name)
        try:
            svc = host.services[service]
        except KeyError:
            have = ", ".join(sorted(host.services)) or "none"
            raise KeyError(f"host {name!r} has no {service!r} service in {self.source} (it has: {have})") from None
        connector = registry.connector_for(svc.service, svc.backend, svc.settings, name)
        self._connectors[(name, service)] = connector
        return connector


# -- locating YAML nodes --------------------------------------------------------------------------


def _node_at(root: yaml.Node | None, loc: Sequence[Any]) -> tuple[yaml.Node | None, bool]:
    """The deepest node along ``loc`` and whether the whole path was found."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if str(key.value) == str(part):
                    node = value
                    break
            else:
                return node, False
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            return node, False
    return node, True


def _key_node(root: yaml.Node | None, loc: Sequence[Any]) -> yaml.Node | None:
    """The key node of the last part of ``loc`` (to point at an unknown key itself)."""
    parent, found = _node_at(root, loc[:-1])
    if found and isinstance(parent, yaml.MappingNode):
        for key, _value in parent.value:
            if str(key.value) == str(loc[-1]):
                found_key: yaml.Node = key
                return found_key
    return None


def _line(node: yaml.Node | None) -> int | None:
    return None if node is None else node.start_mark.line + 1


def _duplicate_keys(node: yaml.Node | None, path: tuple[str, ...],
                    out: list[tuple[tuple[str, ...], yaml.Node]]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                out.append(((*path, name), key))
            seen.add(name)
            _duplicate_keys(value, (*path, name), out)
    elif isinstance(node, yaml.SequenceNode):
        for n, item in enumerate(node.value):
            _duplicate_keys(item, (*path, str(n)), out)


def _hint(error: Any, allowed: Sequence[str] = ()) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        extra = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        return f"remove it or fix its spelling{extra}"
    if kind == "missing":
        return "add this key"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"got {error.get('input')!r}; give a value of the expected type"
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        return f"got {error.get('input')!r}"
    if kind == "literal_error":
        return f"got {error.get('input')!r}"
    return ""


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return sorted(model.model_fields)


def _problems_from(exc: ValidationError, root: yaml.Node | None, filename: str, prefix: tuple[Any, ...] = (),
                   model: type[BaseModel] | None = None) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc = (*prefix, *error["loc"])
        if error["type"] == "extra_forbidden":
            node = _key_node(root, loc) or _node_at(root, loc)[0]
        else:
            node = _node_at(root, loc)[0]
        allowed: list[str] = []
        if error["type"] == "extra_forbidden":
            allowed = _allowed_for(loc, model)
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
        problems.append(Problem(filename, _line(node), ".".join(str(p) for p in loc), message, _hint(error, allowed)))
    return problems


def _allowed_for(loc: Sequence[Any], model: type[BaseModel] | None) -> list[str]:
    if model is not None and len(loc) == 5 and loc[0] == "hosts" and loc[2] == "services":
        return ["backend", *_allowed_keys(model)]
    if len(loc) == 1:
        return _allowed_keys(_RawInventory)
    if loc[0] == "defaults" and len(loc) == 2:
        return _allowed_keys(Defaults)
    if loc[0] == "hosts" and len(loc) == 3:
        return _allowed_keys(_RawHost)
    return []


def _key_problem(filename: str, root: yaml.Node | None, loc: tuple[Any, ...], key: str | None) -> list[Problem]:
    """The key at ``loc`` when OpenSSH would refuse it for its permissions (see :mod:`connectors.ssh`)."""
    problem = None if key is None else key_permission_problem(key)
    if problem is None:
        return []
    return [Problem(filename, _line(_node_at(root, loc)[0]), ".".join(map(str, loc)), problem[0],
                    f"run: {problem[1]}")]


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else str((base / expanded).resolve())


def _ssh_config_problems(filename: str, root: yaml.Node | None, loc: tuple[Any, ...], host: _RawHost,
                         defaults: Defaults, base: Path) -> tuple[SshConfigHost | None, list[Problem]]:
    """The host's ssh_config entry, or why it cannot be read (a missing file, a bad Port or ProxyJump)."""
    own = host.ssh_config is not None
    path = _resolve(host.ssh_config if own else defaults.ssh_config, base)
    if path is None or host.address is None:
        return None, []
    at = (*loc, "ssh_config") if own else ("defaults", "ssh_config")
    try:
        return ssh_config_host(path, host.address), []
    except OSError as exc:
        why, hint = f"cannot read {path}: {exc.strerror or exc}", "check the path (relative to the inventory's folder)"
    except (ValueError, TypeError) as exc:
        why, hint = f"{path}: Host {host.address}: {exc}", "fix Port or ProxyJump there"
    return None, [Problem(filename, _line(_node_at(root, at)[0]), ".".join(map(str, at)), why, hint)]


def _jump_problems(filename: str, root: yaml.Node | None, name: str, hosts: dict[str, _RawHost]) -> list[Problem]:
    """``jump:`` must name another ssh host of the inventory, and the chain of bastions must end."""
    jump = hosts[name].jump
    if jump is None:
        return []
    line = _line(_node_at(root, ("hosts", name, "jump"))[0])
    field_name = f"hosts.{name}.jump"
    seen = [name]
    while jump is not None:
        target = hosts.get(jump)
        if target is None:
            known = ", ".join(sorted(h for h in hosts if h != name)) or "none"
            return [Problem(filename, line, field_name, f"unknown host {jump!r}", f"name an inventory host: {known}")]
        if target.transport != "ssh":
            return [Problem(filename, line, field_name, f"host {jump!r} is not reached over ssh",
                            "a bastion must be a transport: ssh host")]
        if jump in seen:
            circle = " -> ".join([*seen, jump])
            return [Problem(filename, line, field_name, f"the bastions go round in a circle: {circle}",
                            "end the chain at a host without jump:")]
        seen.append(jump)
        jump = target.jump
    return []


# -- loading --------------------------------------------------------------------------------------


def load_inventory(text: str, filename: str = "inventory.yaml") -> Inventory:
    """Parse and validate inventory YAML. Relative key/known_hosts paths are relative to ``filename``'s folder."""
    try:
        root = safe_yaml.compose(text)
        data = safe_yaml.load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise InventoryError([Problem(filename, line, "", f"YAML syntax error: {exc.problem or exc}",
                                      "fix the YAML syntax at this line")]) from exc
    except yaml.YAMLError as exc:
        raise InventoryError([Problem(filename, None, "", f"YAML error: {exc}", "fix the YAML")]) from exc
    if not isinstance(data, dict):
        raise InventoryError([Problem(filename, _line(root), "", "the inventory must be a mapping",
                                      "start with 'hosts:' (and optionally 'defaults:')")])

    duplicates: list[tuple[tuple[str, ...], yaml.Node]] = []
    _duplicate_keys(root, (), duplicates)
    problems = [Problem(filename, _line(node), ".".join(path), "key appears twice", "keep only one of them")
                for path, node in duplicates]

    try:
        raw = _RawInventory.model_validate(data)
    except ValidationError as exc:
        raise InventoryError(problems + _problems_from(exc, root, filename)) from exc

    base = Path(filename).resolve().parent
    hosts: dict[str, HostConfig] = {}
    if any(h.transport == "ssh" and h.key is None for h in raw.hosts.values()):
        problems.extend(_key_problem(filename, root, ("defaults", "key"), _resolve(raw.defaults.key, base)))
    for name, host in raw.hosts.items():
        loc: tuple[Any, ...] = ("hosts", name)
        if host.transport == "ssh":
            for needed in ("address",):
                if getattr(host, needed) is None:
                    problems.append(Problem(filename, _line(_node_at(root, loc)[0]), f"hosts.{name}.{needed}",
                                            "required for transport: ssh", f"add '{needed}:' to host {name}"))
            if host.known_hosts is None and raw.defaults.known_hosts is None:
                problems.append(Problem(
                    filename, _line(_node_at(root, loc)[0]), f"hosts.{name}.known_hosts",
                    "required for transport: ssh (host keys are always verified)",
                    f"add 'known_hosts: /etc/arrears/known_hosts' to host {name} or to defaults",
                ))
            cfg, cfg_problems = _ssh_config_problems(filename, root, loc, host, raw.defaults, base)
            problems.extend(cfg_problems)
            agent = host.allow_agent if host.allow_agent is not None else raw.defaults.allow_agent
            if host.key is None and raw.defaults.key is None and not agent and not (cfg and cfg.identity_file):
                problems.append(Problem(filename, _line(_node_at(root, loc)[0]), f"hosts.{name}.key",
                                        "required for transport: ssh (keys only: a key file, an ssh_config "
                                        "IdentityFile, or allow_agent: true)",
                                        f"add 'key: /etc/arrears/id_ed25519' to host {name} or to defaults"))
            problems.extend(_key_problem(filename, root, (*loc, "key"), _resolve(host.key, base)))
            problems.extend(_jump_problems(filename, root, name, raw.hosts))
        services: dict[str, ServiceConfig] = {}
        for service, raw_svc in host.services.items():
            sloc = (*loc, "services", service)
            if service not in SERVICES:
                problems.append(Problem(filename, _line(_key_node(root, sloc)), ".".join(map(str, sloc)),
                                        "unknown service", f"use one of: {', '.join(SERVICES)}"))
                continue
            backends = registry.backends_for(service)
            if raw_svc.backend not in backends:
                problems.append(Problem(filename, _line(_node_at(root, (*sloc, "backend"))[0]),
                                        ".".join(map(str, (*sloc, "backend"))),
                                        f"unknown backend {raw_svc.backend!r}",
                                        f"use one of: {', '.join(backends)}"))
                continue
            settings_dict = dict(raw_svc.model_extra or {})
            try:
                model = registry.settings_model(service, raw_svc.backend)
            except ImportError as exc:
                problems.append(Problem(filename, _line(_node_at(root, (*sloc, "backend"))[0]),
                                        ".".join(map(str, (*sloc, "backend"))),
                                        f"the {raw_svc.backend} connector cannot be loaded: {exc}",
                                        "check the arrears installation"))
                continue
            try:
                settings = model.model_validate(settings_dict)
            except ValidationError as exc:
                problems.extend(_problems_from(exc, root, filename, sloc, model))
                continue
            services[service] = ServiceConfig(service=service, backend=raw_svc.backend, settings=settings)
        hosts[name] = HostConfig(
            name=name,
            transport=host.transport,
            address=host.address,
            port=host.port,
            user=host.user,
            key=_resolve(host.key, base),
            known_hosts=_resolve(host.known_hosts, base),
            sudo=host.sudo,
            services=services,
            jump=host.jump,
            ssh_config=_resolve(host.ssh_config, base),
            allow_agent=host.allow_agent,
            key_passphrase_env=host.key_passphrase_env,
            state_dir=host.state_dir,
        )
    if problems:
        raise InventoryError(problems)
    defaults = raw.defaults.model_copy(update={"key": _resolve(raw.defaults.key, base),
                                               "known_hosts": _resolve(raw.defaults.known_hosts, base),
                                               "ssh_config": _resolve(raw.defaults.ssh_config, base)})
    return Inventory(defaults=defaults, hosts=hosts, source=filename)


def load_inventory_file(path: str | os.PathLike[str]) -> Inventory:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InventoryError([Problem(str(p), None, "", f"cannot read the inventory: {exc.strerror or exc}",
                                      "check the path (--inventory or ARREARS_INVENTORY)")]) from exc
    return load_inventory(text, str(p))

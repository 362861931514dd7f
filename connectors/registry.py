"""Which connector class serves a (service, backend) pair; classes are imported only when first asked for.

Every connector class has ``service: str``, a pydantic model ``Settings`` (its backend settings from the
inventory), ``__init__(settings, host)``, ``operations(action, account, resource)``, ``handlers()``,
``observe(facts)`` (what the facts of its ``status`` operations say the host does for the account, see
:mod:`connectors.observed`) and ``check_script()`` (its ``arrears hosts check`` probe).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from connectors.base import Connector

__all__ = [
    "BACKENDS",
    "UnknownBackend",
    "backends_for",
    "connector_class",
    "connector_for",
    "register",
    "settings_model",
    "validate_settings",
]

BACKENDS: dict[tuple[str, str], str] = {
    ("web", "nginx"): "connectors.web.nginx:NginxConnector",
    ("web", "apache"): "connectors.web.apache:ApacheConnector",
    ("mail", "dovecot-postfix"): "connectors.mail.dovecot_postfix:DovecotPostfixConnector",
    ("mail", "vpopmail"): "connectors.mail.vpopmail:VpopmailConnector",
    ("login", "unix"): "connectors.login:UnixLoginConnector",
    ("home", "archive"): "connectors.home:HomeConnector",
}


class UnknownBackend(LookupError):
    """No connector is registered for this service/backend pair."""

    def __init__(self, service: str, backend: str) -> None:
        services = sorted({s for s, _ in BACKENDS})
        if service not in services:
            hint = f"known services: {', '.join(services)}"
        else:
            hint = f"backends for {service}: {', '.join(backends_for(service))}"
        super().__init__(f"no connector for service {service!r} with backend {backend!r} ({hint})")
        self.service = service
        self.backend = backend


def register(service: str, backend: str, target: str) -> None:
    """Add or replace a connector, as ``"package.module:ClassName"``."""
    if ":" not in target:
        raise ValueError(f"connector target {target!r} must look like 'package.module:ClassName'")
    BACKENDS[(service, backend)] = target


def backends_for(service: str) -> list[str]:
    return sorted(b for s, b in BACKENDS if s == service)


def connector_class(service: str, backend: str) -> type[Any]:
    """Import and return the connector class for ``service``/``backend``."""
    try:
        target = BACKENDS[(service, backend)]
    except KeyError:
        raise UnknownBackend(service, backend) from None
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    try:
        cls: type[Any] = getattr(module, attr)
    except AttributeError:
        raise ImportError(f"{module_name} has no connector class {attr} (registered for {service}/{backend})") from None
    return cls


def settings_model(service: str, backend: str) -> type[BaseModel]:
    model: type[BaseModel] = connector_class(service, backend).Settings
    return model


def validate_settings(service: str, backend: str, settings: Mapping[str, Any]) -> BaseModel:
    """Validate backend settings (``backend`` itself may be present and is ignored). Raises pydantic's
    ValidationError, whose locations are relative to the settings mapping."""
    values = {k: v for k, v in settings.items() if k != "backend"}
    return settings_model(service, backend).model_validate(values)


def connector_for(service: str, backend: str, settings: Mapping[str, Any] | BaseModel, host: str) -> Connector:
    """A connector instance for one host, its settings validated by the connector's own model."""
    cls = connector_class(service, backend)
    if isinstance(settings, cls.Settings):
        model = settings
    else:
        values = settings.model_dump() if isinstance(settings, BaseModel) else settings
        model = validate_settings(service, backend, values)
    connector: Connector = cls(model, host)
    return connector

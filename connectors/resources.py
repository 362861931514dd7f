"""What a placement names on its host: one validator per kind of resource, shared by the connectors (before
anything runs) and the importer (before anything is stored), and the keys that say who owns what.

=======  ==================================================  ==========================================
service  resource                                            keys (what the account owns on the host)
=======  ==================================================  ==========================================
web      ``{"sites": ["example.com", ...]}``                 each site, lower-cased, without a final dot
mail     ``{"mailboxes": ["info@example.com", ...]}``        each mailbox, lower-cased
login    ``{"user": "alice"}``                               the unix user
home     ``{"path": "/home/alice"}``                         the home path (normalised, below the roots)
=======  ==================================================  ==========================================

Each validator raises :class:`~connectors.validate.UnsafeValue` with ``field`` set to the resource field
at fault (``sites[1]``, ``path``...), so the importer can say ``resources.web.sites[1]: ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connectors.mail import MailResource, parse_resource
from connectors.validate import UnsafeValue, domain, path, path_under, unix_user, url

__all__ = ["KINDS", "ResourceError", "home_path", "login_user", "mail_resource", "resource_keys", "web_sites"]


class ResourceError(UnsafeValue):
    """A resource field the servers could not act on; ``field`` names it within the resource."""

    def __init__(self, field: str, problem: UnsafeValue | str, value: object = None) -> None:
        ValueError.__init__(self, str(problem))
        self.kind = problem.kind if isinstance(problem, UnsafeValue) else field
        self.value = problem.value if isinstance(problem, UnsafeValue) else value
        self.field = field


def web_sites(resource: Mapping[str, Any]) -> list[str]:
    """The sites of a web resource: valid host names, lower-cased, without a final dot, each once; and a
    ``suspended_url`` (optional) that is a valid URL."""
    sites = resource.get("sites")
    if isinstance(sites, str) or not isinstance(sites, list) or not sites:
        raise ResourceError("sites", "needs 'sites': a non-empty list of domains", sites)
    checked: list[str] = []
    for i, site in enumerate(sites):
        try:
            name = domain(site).rstrip(".")
        except UnsafeValue as exc:
            raise ResourceError(f"sites[{i}]", exc) from None
        if name in checked:
            raise ResourceError(f"sites[{i}]", f"names the site {name} twice", sites)
        checked.append(name)
    override = resource.get("suspended_url")
    if override:
        try:
            url(override)
        except UnsafeValue as exc:
            raise ResourceError("suspended_url", exc) from None
    return checked


def mail_resource(resource: Mapping[str, Any]) -> MailResource:
    """The mailboxes (lower-cased, each once) and the requested flags of a mail resource."""
    boxes = resource.get("mailboxes")
    if isinstance(boxes, (list, tuple)) and not isinstance(boxes, str):
        for i, box in enumerate(boxes):  # locate the bad entry; parse_resource then checks the whole
            try:
                parse_resource({"mailboxes": [box]})
            except UnsafeValue as exc:
                raise ResourceError(f"mailboxes[{i}]", exc) from None
    try:
        return parse_resource(resource)
    except UnsafeValue as exc:
        raise ResourceError("flags" if isinstance(boxes, (list, tuple)) else "mailboxes", exc) from None


def login_user(resource: Mapping[str, Any]) -> str:
    """The unix user of a login resource."""
    if "user" not in resource:
        raise ResourceError("user", "is required: the unix user name", resource)
    try:
        return unix_user(resource["user"])
    except UnsafeValue as exc:
        raise ResourceError("user", exc) from None


def home_path(resource: Mapping[str, Any], roots: Sequence[str] | None) -> str:
    """The home path of a home resource: normalised and strictly below one of ``roots`` (the host's
    configured roots; ``None`` when no inventory is at hand: then only the path itself is checked)."""
    if "path" not in resource:
        raise ResourceError("path", "is required: the home directory", resource)
    try:
        return path(resource["path"]) if roots is None else path_under(resource["path"], list(roots))
    except UnsafeValue as exc:
        raise ResourceError("path", exc) from None


def _web_keys(resource: Mapping[str, Any], _settings: Any) -> list[tuple[str, str]]:
    return [(f"sites[{i}]", site) for i, site in enumerate(web_sites(resource))]


def _mail_keys(resource: Mapping[str, Any], _settings: Any) -> list[tuple[str, str]]:
    boxes = mail_resource(resource).mailboxes
    raw = [str(b).lower() for b in resource.get("mailboxes") or ()]
    return [(f"mailboxes[{raw.index(box) if box in raw else n}]", box) for n, box in enumerate(boxes)]


def _login_keys(resource: Mapping[str, Any], _settings: Any) -> list[tuple[str, str]]:
    return [("user", login_user(resource))]


def _home_keys(resource: Mapping[str, Any], settings: Any) -> list[tuple[str, str]]:
    return [("path", home_path(resource, getattr(settings, "roots", None)))]


KINDS: dict[str, Callable[[Mapping[str, Any], Any], list[tuple[str, str]]]] = {
    "web": _web_keys,
    "mail": _mail_keys,
    "login": _login_keys,
    "home": _home_keys,
}


def resource_keys(service: str, resource: Mapping[str, Any], settings: Any = None) -> list[tuple[str, str]]:
    """Validate ``resource`` of ``service`` (with the host's connector ``settings`` when known) and return
    what it claims on the host as ``(field, key)`` pairs (``("sites[0]", "example.com")``); a service
    without a validator here claims nothing."""
    check = KINDS.get(service)
    return [] if check is None else check(resource, settings)

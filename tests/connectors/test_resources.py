"""The validator of each kind of resource: what the connectors and the importer both accept, and the keys
(what an account owns on its host) that they yield."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.home import HomeSettings
from connectors.resources import ResourceError, resource_keys
from connectors.validate import UnsafeValue

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40)
    | st.sampled_from(["a.example", "Info@A.Example", "o'neil@a.example", "/home/a", "/home/a/../b", "alice"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["sites", "mailboxes", "flags", "user", "path", "suspended_url", "other"])
HOME = HomeSettings(roots=["/home"], archive_dir="/var/backups/arrears")


@settings(max_examples=500, deadline=None)
@given(service=st.sampled_from(["web", "mail", "login", "home"]),
       resource=st.dictionaries(fields, json_values, max_size=4))
def test_a_resource_is_accepted_with_stable_keys_or_refused_with_its_field(service: str,
                                                                          resource: dict[str, Any]) -> None:
    try:
        keys = resource_keys(service, resource, HOME if service == "home" else None)
    except ResourceError as exc:
        assert exc.field.split("[")[0] in ("sites", "mailboxes", "flags", "user", "path", "suspended_url")
        return
    assert all(isinstance(f, str) and isinstance(k, str) for f, k in keys)
    if not keys:
        assert service == "mail" and resource["mailboxes"] == []  # a mail placement may hold no mailbox yet
        return
    # a key is its own normal form: validating what is stored gives the same claim
    again = {"web": {"sites": [k for _, k in keys]}, "mail": {"mailboxes": [k for _, k in keys]},
             "login": {"user": keys[0][1]}, "home": {"path": keys[0][1]}}[service]
    assert [k for _, k in resource_keys(service, again, HOME if service == "home" else None)] == [k for _, k in keys]


@pytest.mark.parametrize("service, resource, keys", [
    ("web", {"sites": ["Shop.Example.", "www.shop.example"]}, [("sites[0]", "shop.example"),
                                                              ("sites[1]", "www.shop.example")]),
    ("mail", {"mailboxes": ["O'Neil@Example.COM", "info@example.com"]}, [("mailboxes[0]", "o'neil@example.com"),
                                                                         ("mailboxes[1]", "info@example.com")]),
    ("login", {"user": "alice"}, [("user", "alice")]),
    ("home", {"path": "/home/alice/"}, [("path", "/home/alice")]),
    ("dns", {"zone": "whatever"}, []),
])
def test_keys_are_normalised(service: str, resource: dict[str, Any], keys: list[tuple[str, str]]) -> None:
    assert resource_keys(service, resource, HOME) == keys


@pytest.mark.parametrize("service, resource, field", [
    ("web", {"sites": ["a.example", "A.example"]}, "sites[1]"),
    ("mail", {"mailboxes": ["info@a.example", "x/../y@a.example"]}, "mailboxes[1]"),
    ("login", {"user": "Root;"}, "user"),
    ("home", {"path": "/home"}, "path"),
    ("home", {"path": "/srv/alice"}, "path"),
])
def test_refusals_name_the_field_and_are_what_the_connectors_refuse(service: str, resource: dict[str, Any],
                                                                   field: str) -> None:
    with pytest.raises(UnsafeValue) as exc:
        resource_keys(service, resource, HOME)
    assert isinstance(exc.value, ResourceError) and exc.value.field == field

"""Fuzzing the ``policy.yaml`` and ``inventory.yaml`` loaders: a valid file with one setting replaced by a
hostile value, random YAML (aliases included), alias bombs and plain garbage. The loader either returns a
usable result or raises its own located error (:class:`PolicyError`, :class:`InventoryError`); nothing else."""

from __future__ import annotations

import re
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from connectors.inventory import InventoryError, load_inventory
from policy import PolicyError, load_policy
from tests.fuzz.strategies import amounts, json_values
from tests.scenarios.harness import POLICY

BASE_POLICY = POLICY.replace("{resume}", "true")
BASE_INVENTORY = """\
defaults: {parallel: 4, connect_timeout: 10, retries: 3, key: /etc/arrears/id_ed25519,
           known_hosts: /etc/arrears/known_hosts}
hosts:
  web1:
    transport: ssh
    address: 203.0.113.10
    services:
      web: {backend: nginx, suspended_url: "https://example.net/suspended"}
      home: {backend: archive, roots: [/home], archive_dir: /var/backups/arrears, retention_days: 90}
  local1:
    transport: local
    services:
      login: {backend: unix}
"""

_SCALARS = st.one_of(
    st.sampled_from(["", "null", "~", "yes", "no", "-1", "0", "1e999999", ".nan", "-.inf", "0x10", "0o7", "1_000",
                     "0.001", "12.50", "2026-02-30", "2026-03-01", "1:30", "1" + "0" * 5000, "36h", "9" * 5000 + "s",
                     "&a x", "*a", "*nope", "!!python/object:os.system ls", "!!binary AAAA", "[", "{", "'",
                     "'unterminated", "|", ">", "- x", "{a: *a}", "&a [*a, *a]", "[[[[[[[[]]]]]]]]"]),
    amounts().map(str),
    st.builds("{}{}".format, st.integers(1, 6000).map(lambda n: "9" * n), st.sampled_from(["", "w", "d", "h", "m", "s",
                                                                                          "d12h", ".5"])),
    st.builds("{}{}".format, st.integers(4000, 6000).map(lambda n: "9" * n), st.sampled_from(["", "s", "d"])),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.text(alphabet=st.sampled_from("[]{}&*!|>:-,'\"#%@` \\\n0123456789abcxyz.+e"), max_size=20),
)


_VALUE = re.compile(r"(?<=: )[^,{}\[\]\n#]+")


def _mutate(base: str) -> st.SearchStrategy[str]:
    """``base`` with one value (of a block or a flow mapping) replaced, a line inserted, or cut short."""
    spans = [m.span() for m in _VALUE.finditer(base)]
    lines = base.splitlines()
    valued = [i for i, line in enumerate(lines) if ":" in line]

    def replace(changes: list[tuple[tuple[int, int], str]]) -> str:
        text = base
        for (start, end), value in sorted(dict(changes).items(), reverse=True):
            text = text[:start] + value + text[end:]
        return text

    def insert(i: int, text: str) -> str:
        indent = " " * (len(lines[i]) - len(lines[i].lstrip()))
        return "\n".join([*lines[:i], indent + text.replace("\n", "\n" + indent), *lines[i:]]) + "\n"

    return st.one_of(
        st.lists(st.tuples(st.sampled_from(spans), _SCALARS), min_size=1, max_size=3).map(replace),
        st.lists(st.tuples(st.sampled_from(spans), _SCALARS), min_size=1, max_size=3).map(replace),
        st.builds(insert, st.sampled_from(valued), st.one_of(_SCALARS.map(lambda v: f"extra: {v}"), _bombs())),
        st.integers(min_value=0, max_value=len(base)).map(lambda n: base[:n]),
    )


def _bomb(width: int, depth: int) -> str:
    rows = [f"b0: &b0 [{', '.join(['x'] * width)}]"]
    rows += [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    return "\n".join(rows)


def _bombs() -> st.SearchStrategy[str]:
    return st.one_of(st.builds(_bomb, st.integers(1, 9), st.integers(1, 7)),
                     st.integers(1, 200).map(lambda n: "deep: " + "[" * n + "]" * n),
                     st.just("loop: &l [*l]"), st.just("loop: &l {k: *l}"))


def _shared_yaml() -> st.SearchStrategy[str]:
    """Random documents in which values are shared, so PyYAML writes anchors and aliases."""
    def dump(parts: list[Any], picks: list[int]) -> str:
        doc = {f"k{i}": parts[p % len(parts)] for i, p in enumerate(picks)}
        return yaml.safe_dump(doc)

    return st.builds(dump, st.lists(json_values(8).filter(lambda v: isinstance(v, dict | list)), min_size=1,
                                    max_size=3), st.lists(st.integers(0, 5), max_size=6))


def _texts(base: str) -> st.SearchStrategy[str]:
    appended = _bombs().map(lambda bomb: f"{base}\n{bomb}\n")
    return st.one_of(_mutate(base), _mutate(base), _shared_yaml(), appended, st.text(max_size=80))


def policy_texts() -> st.SearchStrategy[str]:
    return _texts(BASE_POLICY)


def inventory_texts() -> st.SearchStrategy[str]:
    return _texts(BASE_INVENTORY)


@given(text=policy_texts())
def test_fuzz_policy_loader(text: str) -> None:
    try:
        ps = load_policy(text, "policy.yaml")
    except PolicyError as exc:
        assert str(exc).startswith("policy.yaml")
        return
    for plan in [None, *ps.plans]:
        for reseller in [None, *ps.resellers]:
            try:
                ps.resolve("acct", plan, reseller, None, "JPY")
            except PolicyError as exc:  # an amount that does not fit yen: located in the file
                assert str(exc).startswith("policy.yaml:") and "JPY" in str(exc)


@given(text=inventory_texts())
def test_fuzz_inventory_loader(text: str) -> None:
    try:
        inventory = load_inventory(text, "inventory.yaml")
    except InventoryError as exc:
        assert all(p.file == "inventory.yaml" for p in exc.problems), str(exc)
        return
    for name in inventory.hosts:
        inventory.host(name)


def test_the_base_files_load() -> None:
    assert load_policy(BASE_POLICY, "policy.yaml").resolve("a", None, None).currency == "USD"
    assert sorted(load_inventory(BASE_INVENTORY, "inventory.yaml").hosts) == ["local1", "web1"]

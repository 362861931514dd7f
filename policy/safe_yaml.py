"""The YAML loader for operator files (``policy.yaml``, ``inventory.yaml``): PyYAML's safe loader with limits.

:class:`BoundedLoader` refuses, with a located :class:`yaml.MarkedYAMLError`, what would otherwise exhaust
the stack or the clock: nesting deeper than :data:`MAX_DEPTH` levels (counting what aliases pull in), an
alias that refers to the node it is inside of (``&a [*a]``), aliases that together expand to more than
:data:`MAX_ALIAS_NODES` nodes (an "alias bomb": eight aliases of eight aliases ... grow eightfold per level),
and scalars that cannot be built (an integer of thousands of digits, the 30th of February).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

__all__ = ["MAX_ALIAS_NODES", "MAX_DEPTH", "BoundedLoader", "compose", "load"]

MAX_DEPTH = 64  # levels of nesting, aliases expanded
MAX_ALIAS_NODES = 20_000  # nodes that aliases may add to a document (a `<<: *defaults` per host is far below)
_MAX_INT_DIGITS = 100


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that bounds nesting and alias expansion and locates every construction error."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._alias_nodes = 0
        # id(node) -> (node, expanded size, expanded height), for every node composed so far
        self._shape: dict[int, tuple[yaml.Node, int, int]] = {}

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor) if event.anchor is not None else None
            if target is not None:
                shape = self._shape.get(id(target))
                if shape is None:
                    raise ComposerError("while composing the node anchored here", target.start_mark,
                                        f"found the alias *{event.anchor} inside the node it refers to "
                                        f"(a recursive alias); remove it", mark)
                _, size, height = shape
                self._alias_nodes += size
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise ComposerError(None, None, f"aliases expand this document by more than "
                                        f"{MAX_ALIAS_NODES} nodes; write the values out or use fewer aliases",
                                        mark)
                if self._depth + height > MAX_DEPTH:
                    raise ComposerError(None, None, f"the alias *{event.anchor} nests values deeper than "
                                        f"{MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"values are nested deeper than {MAX_DEPTH} levels", mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return None
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        shapes = [self._shape[id(c)] for c in children]
        self._shape[id(node)] = (node, 1 + sum(s[1] for s in shapes), 1 + max((s[2] for s in shapes), default=0))
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise ConstructorError(None, None, f"cannot read this value: {exc}", node.start_mark) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(str(node.value)) > _MAX_INT_DIGITS:
            raise ConstructorError(None, None, f"a number of more than {_MAX_INT_DIGITS} digits", node.start_mark)
        return super().construct_yaml_int(node)


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)


def compose(text: str) -> yaml.Node | None:
    """The node tree of ``text`` (one document), within the limits."""
    return yaml.compose(text, Loader=BoundedLoader)


def load(text: str) -> Any:
    """The Python value of ``text`` (one document), within the limits."""
    return yaml.load(text, Loader=BoundedLoader)

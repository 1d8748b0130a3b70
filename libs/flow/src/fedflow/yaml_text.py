"""YAML documents that people write (pipelines, security policies), read strictly.

`load_yaml` is yaml.safe_load (no Python tags, no code) that also refuses a mapping naming the
same key twice. PyYAML's own loaders keep the last value silently, so a policy with two
`grants:` blocks, or a component with two `params:`, would drop the first without a word;
here it is a yaml.YAMLError (a ConstructorError) marked at the repeated key, which callers
already turn into their own error.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode

_MERGE = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]  # (PyYAML has no stubs here)
    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue  # "<<: *defaults" merges; keys it brings may be overridden
            key = self.construct_object(key_node, deep=True)
            try:
                if key in first_line:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"key {key!r} given twice (first on line {first_line[key]})",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
            except TypeError:
                continue  # an unhashable key: safe_load's own error follows
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def load_yaml(text: str) -> Any:
    """The document in `text`, as yaml.safe_load reads it; yaml.YAMLError on a repeated key."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass

"""Import paths (`package.module:attr`) that a pipeline param names, checked before anything
is imported.

Importing a module runs its code (and its parent packages'), so a param that names code is a
way to run code at every party that reads it: the policy decides whose strings may be imported
(fedflow.policy, `allow_code`), and `find_module` tells whether a module is there at all without
running any of it, so that a path that does not exist is refused before any package along it
executes. Light (stdlib only): the policy module imports it.
"""

from __future__ import annotations

import importlib
import re
import sys
from importlib.machinery import ModuleSpec
from typing import Final

IMPORT_PATH: Final = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$"
"""`package.module:attr`: dotted identifiers, one colon, one identifier."""

_IMPORT_PATH: Final = re.compile(IMPORT_PATH, re.ASCII)


def is_import_path(value: object) -> bool:
    """Whether `value` is a string of the form `package.module:attr`."""
    return isinstance(value, str) and _IMPORT_PATH.fullmatch(value) is not None


def split_import_path(path: str) -> tuple[str, str]:
    """(module, attr) of `package.module:attr`; ValueError naming the expected form."""
    if not is_import_path(path):
        raise ValueError(f"{path!r} is not an import path 'package.module:attr'")
    module, _, attr = path.partition(":")
    return module, attr


def find_module(name: str) -> ModuleSpec | None:
    """The spec of module `name`, found without importing it or any package above it; None
    when there is none.

    importlib.util.find_spec imports the parent packages (running their __init__) to read
    their __path__; this asks the import system's finders directly, one name at a time, with
    the search locations of the spec found one level up. Modules already imported are taken
    from sys.modules (their code has run already)."""
    spec: ModuleSpec | None = None
    search: list[str] | None = None
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        prefix = ".".join(parts[:depth])
        loaded = sys.modules.get(prefix)
        if loaded is None and depth > 1 and search is None:
            return None  # the level above is a module, not a package: no submodules
        if loaded is not None:
            spec = getattr(loaded, "__spec__", None)
            found_search = getattr(loaded, "__path__", None)
            search = list(found_search) if found_search is not None else None
            if spec is None and depth == len(parts):
                return ModuleSpec(prefix, None)  # __main__ and the like: imported, no spec
            continue
        spec = _ask_finders(prefix, search)
        if spec is None:
            return None
        locations = spec.submodule_search_locations
        if locations is not None and spec.origin is None:
            # A namespace package (a folder without __init__): it has no code to run, and
            # its search path is only complete once it is in sys.modules.
            search = list(importlib.import_module(prefix).__path__)
        else:
            search = list(locations) if locations is not None else None
    return spec


def _ask_finders(name: str, search: list[str] | None) -> ModuleSpec | None:
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        spec = find_spec(name, search)
        if spec is not None:
            return spec  # type: ignore[no-any-return]
    return None


__all__ = ["IMPORT_PATH", "find_module", "is_import_path", "split_import_path"]

"""What code a component type runs: its release and a SHA-256 of its source.

The worker reports both when a task starts (task.status "running"); the party's audit compares
them with what the party's operator approved (docs/audit.md, control.component_code). Light:
it reads source files, it imports no component code (the audit imports it without numpy).

The hash covers every `.py` file of the package that holds each of the type's entry modules
(fedflow/components/hetero_lr/ for hetero_lr and hetero_lr_predict), in sorted relative-path
order, plus the entries themselves:

    SHA-256("fedmq.component.code.v1" || for each entry "entry" NUL || for each file:
            relpath NUL len(content) as 8 bytes big-endian || content)

So a changed line anywhere in the component's package, or an entry pointing elsewhere, changes
it. It does not cover the shared runtime (fedflow itself, fedcrypto, numpy): the release covers
those, as far as releases are bumped.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

from fedflow.components import CATALOGUE

DOMAIN = b"fedmq.component.code.v1"
DISTRIBUTION = "fedmq-flow"


@dataclass(frozen=True)
class ComponentCode:
    component_type: str
    version: str
    sha256: str


def release() -> str:
    """The installed fedflow release (the components ship with it)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def _sources(module: str) -> list[Path]:
    """The source files of the package holding `module` (the module's own file when it is a
    top-level module)."""
    parent = module.rpartition(".")[0]
    if parent:
        package = importlib.import_module(parent)  # a package __init__: light, no component code
        roots = [Path(p) for p in getattr(package, "__path__", [])]
        if roots:
            return sorted(f for root in roots for f in root.rglob("*.py"))
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LookupError(f"component module {module!r} not found")
    return [Path(spec.origin)]


def entries(component_type: str) -> list[str]:
    """The type's code entries ("package.module:function"), one per distinct role entry."""
    descriptor = CATALOGUE[component_type]
    return sorted({descriptor.entry_for(role) for role in descriptor.roles})


def code_files(component_type: str) -> dict[str, Path]:
    """Relative path (from fedflow's parent directory) -> file, of every source file the hash
    covers."""
    files: dict[str, Path] = {}
    for entry in entries(component_type):
        for path in _sources(entry.partition(":")[0]):
            files.setdefault(_relative(path), path)
    return files


def digest(entry_list: list[str], contents: dict[str, bytes]) -> str:
    """The code hash of these entries and files (layout in the module docstring)."""
    h = hashlib.sha256(DOMAIN)
    for entry in entry_list:
        h.update(entry.encode() + b"\0")
    for rel in sorted(contents):
        content = contents[rel]
        h.update(rel.encode() + b"\0" + len(content).to_bytes(8, "big") + content)
    return h.hexdigest()


@cache
def component_code(component_type: str) -> ComponentCode:
    """The release and source hash of a component type of the catalogue (KeyError if unknown)."""
    contents = {rel: path.read_bytes() for rel, path in code_files(component_type).items()}
    return ComponentCode(component_type, release(), digest(entries(component_type), contents))


def _relative(path: Path) -> str:
    """A path relative to the fedflow package root (the same on every machine)."""
    root = Path(importlib.import_module("fedflow").__path__[0]).parent
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def main() -> None:
    """`python -m fedflow.code_identity [TYPE...]`: the release and hash of each type as JSON,
    in the form the audit's FEDMQ_AUDIT_APPROVED_CODE setting takes."""
    names = sys.argv[1:] or sorted(CATALOGUE)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        sys.exit(f"unknown component type(s): {', '.join(unknown)}")
    codes = [component_code(n) for n in names]
    print(json.dumps({c.component_type: [c.sha256] for c in codes}, indent=2))
    print(f"release: {release()}", file=sys.stderr)


if __name__ == "__main__":
    main()

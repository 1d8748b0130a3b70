"""Export the JSON Schema of every message type and of the Envelope; check for drift.

    python -m fedschemas.export [--out DIR]          write the files
    python -m fedschemas.export --check [--out DIR]  exit 1 listing drifted/missing/extra files

One file per (message type, version) readable by this build, named `<type>.v<version>.json`,
plus `envelope.v1.json`. Formatting is fixed (sorted keys, two-space indent, trailing newline)
so the files are stable under version control. The schemas describe the msgpack data model:
`bytes` are msgpack bin (`"format": "binary"`; length limits count bytes), timestamps int
microseconds UTC, arrays the NDArray map; the envelope itself travels as an array in the
order `x-fedmq-wire-order` gives.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedschemas.base import Payload
from fedschemas.envelope import ENVELOPE_FIELDS, ENVELOPE_FORMAT, Envelope
from fedschemas.registry import MESSAGE_TYPES, UPGRADES

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ENVELOPE_FILE = "envelope.v1.json"
# Default output: schemas/json next to this package's source tree (schemas/src/fedschemas).
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "json"


def _wire_bytes(node: Any) -> None:
    """pydantic describes bytes in their JSON (base64url) form; on the wire they are bin."""
    if isinstance(node, dict):
        if node.get("format") == "base64url":
            node["format"] = "binary"
        for value in node.values():
            _wire_bytes(value)
    elif isinstance(node, list):
        for value in node:
            _wire_bytes(value)


def _payload_schema(type_name: str, version: int, model: type[Payload]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    _wire_bytes(schema)
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = f"fedmq:{type_name}.v{version}"
    schema["x-fedmq-type"] = type_name
    schema["x-fedmq-version"] = version
    return schema


def _envelope_schema() -> dict[str, Any]:
    schema = Envelope.model_json_schema(mode="validation")
    _wire_bytes(schema)
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = f"fedmq:{ENVELOPE_FORMAT}"
    # The registry is part of the contract: adding a type changes this file.
    schema["properties"]["type"]["enum"] = sorted(MESSAGE_TYPES)
    schema["x-fedmq-wire-order"] = [ENVELOPE_FORMAT, *ENVELOPE_FIELDS, "signature"]
    return schema


def render(schema: dict[str, Any]) -> str:
    """The stable text form of a schema file."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files() -> dict[str, str]:
    """File name -> content for every schema this build exports."""
    files = {ENVELOPE_FILE: render(_envelope_schema())}
    for type_name, model in MESSAGE_TYPES.items():
        files[f"{type_name}.v{model.payload_version}.json"] = render(
            _payload_schema(type_name, model.payload_version, model)
        )
    for (type_name, version), upgrade in UPGRADES.items():
        files[f"{type_name}.v{version}.json"] = render(
            _payload_schema(type_name, version, upgrade.model)
        )
    return dict(sorted(files.items()))


def write(out: Path) -> list[str]:
    """Write every schema file into `out`, remove stale *.json there; returns names written."""
    out.mkdir(parents=True, exist_ok=True)
    files = expected_files()
    for stale in sorted(out.glob("*.json")):
        if stale.name not in files:
            stale.unlink()
    for name, text in files.items():
        path = out / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return list(files)


def check(out: Path) -> list[str]:
    """Problems between `out` and the models, one line each; empty when in sync."""
    files = expected_files()
    present = {p.name for p in out.glob("*.json")} if out.is_dir() else set()
    problems = [f"missing: {name}" for name in files if name not in present]
    problems += [f"extra: {name}" for name in sorted(present - set(files))]
    problems += [
        f"drifted: {name}"
        for name, text in files.items()
        if name in present and (out / name).read_text(encoding="utf-8") != text
    ]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fedschemas.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="schema folder")
    parser.add_argument(
        "--check", action="store_true", help="compare instead of writing; exit 1 on drift"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.out)
        for line in problems:
            print(f"{args.out}: {line}", file=sys.stderr)
        if problems:
            print(
                "JSON Schema files drifted from the models; regenerate with "
                "`python -m fedschemas.export` and commit them",
                file=sys.stderr,
            )
            return 1
        print(f"{args.out}: {len(expected_files())} schema files in sync")
        return 0
    names = write(args.out)
    print(f"wrote {len(names)} schema files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""JSON Schema export: one stable file per type and version; --check catches any drift."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fedschemas import MESSAGE_TYPES, Payload, registry
from fedschemas.export import main

REPO = Path(__file__).resolve().parents[2]


def _check(out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["--check", "--out", str(out)])
    return code, capsys.readouterr().err


def test_export_writes_one_file_per_type_and_the_envelope(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0

    names = sorted(p.name for p in tmp_path.iterdir())
    expected = sorted(
        ["envelope.v1.json"] + [f"{t}.v{m.payload_version}.json" for t, m in MESSAGE_TYPES.items()]
    )
    assert names == expected
    ping = json.loads((tmp_path / "demo.ping.v1.json").read_text())
    assert ping["additionalProperties"] is False
    assert ping["x-fedmq-type"] == "demo.ping"
    envelope = json.loads((tmp_path / "envelope.v1.json").read_text())
    assert envelope["properties"]["type"]["enum"] == sorted(MESSAGE_TYPES)
    assert envelope["x-fedmq-wire-order"][-1] == "signature"


def test_export_is_byte_for_byte_stable(tmp_path: Path) -> None:
    main(["--out", str(tmp_path / "a")])
    main(["--out", str(tmp_path / "b")])

    for path in (tmp_path / "a").iterdir():
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes()


def test_check_passes_on_fresh_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--out", str(tmp_path)])

    code, err = _check(tmp_path, capsys)

    assert code == 0
    assert err == ""


def test_check_fails_naming_a_hand_edited_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: loosen one schema by hand.
    main(["--out", str(tmp_path)])
    path = tmp_path / "demo.ping.v1.json"
    schema = json.loads(path.read_text())
    schema["additionalProperties"] = True
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")

    # Execute
    code, err = _check(tmp_path, capsys)

    # Assert
    assert code == 1
    assert "drifted: demo.ping.v1.json" in err


def test_check_fails_naming_missing_and_extra_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--out", str(tmp_path)])
    (tmp_path / "demo.pong.v1.json").unlink()
    (tmp_path / "demo.old.v1.json").write_text("{}\n")

    code, err = _check(tmp_path, capsys)

    assert code == 1
    assert "missing: demo.pong.v1.json" in err
    assert "extra: demo.old.v1.json" in err


def test_check_fails_when_a_model_changes_without_regenerating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: files from today's models, then a new type is registered.
    main(["--out", str(tmp_path)])

    class Added(Payload):
        x: int

    monkeypatch.setitem(registry._MESSAGE_TYPES, "test.added", Added)

    # Execute
    code, err = _check(tmp_path, capsys)

    # Assert: the new type's file is missing and the envelope's type list drifted.
    assert code == 1
    assert "missing: test.added.v1.json" in err
    assert "drifted: envelope.v1.json" in err


def test_writing_again_removes_stale_files(tmp_path: Path) -> None:
    (tmp_path / "demo.old.v1.json").write_text("{}\n")

    main(["--out", str(tmp_path)])

    assert not (tmp_path / "demo.old.v1.json").exists()


def test_checked_in_schema_files_match_the_models() -> None:
    env = {**os.environ, "FEDMQ_VENV": str(Path(sys.executable).parents[1])}

    result = subprocess.run(
        [str(REPO / "scripts" / "check-schemas")], env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr

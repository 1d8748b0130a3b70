"""docker/Dockerfile, the lock files and .dockerignore, checked by reading them (no engine here)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from fedcommon.service_registry import SERVICES
from packaging.requirements import Requirement

from tests.deploy.helpers import REPO

DOCKERFILE = REPO / "docker" / "Dockerfile"
LOCK = REPO / "requirements" / "lock.txt"
GPU_LOCK = REPO / "docker" / "gpu-lock.txt"
FEDMQ_DISTRIBUTIONS = (
    "fedmq",
    "fedmq-schemas",
    "fedmq-common",
    "fedmq-bus",
    "fedcrypto",
    "fedmq-accel",
    "fedmq-flow",
    "fedmq-control",
    *(s.distribution for s in SERVICES),
)


def stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined, comments dropped), in order."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = match[2] or match[1]
            out[current] = []
        out[current].append(line)
    return out


def lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line.strip())
        assert match, f"{path.name}: {line!r} is not NAME==VERSION"
        pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return pins


def test_the_last_stage_is_the_cpu_runtime_and_every_image_runs_as_non_root() -> None:
    all_stages = stages()
    names = list(all_stages)
    assert names[-1] == "runtime", "a plain `docker build` must give the CPU image"
    for final in ("runtime", "gpu"):
        users = [i.split()[1] for i in all_stages[final] if i.upper().startswith("USER ")]
        assert users, f"{final} sets no USER (it would run as root)"
        uid = users[-1].split(":")[0]
        assert uid not in ("0", "root"), f"{final} runs as {users[-1]}"
        # ${FEDMQ_UID} must resolve to a fixed non-zero uid
        assert uid == "${FEDMQ_UID}"
    uid_default = re.search(r"ARG FEDMQ_UID=(\d+)", DOCKERFILE.read_text())
    assert uid_default and int(uid_default[1]) >= 1000


def test_no_cupy_in_the_cpu_image_and_the_gpu_target_adds_it() -> None:
    all_stages = stages()
    for name in ("builder", "runtime"):
        text = " ".join(all_stages[name]).lower()
        assert "cupy" not in text and "gpu-lock" not in text, name
    assert "cupy" not in LOCK.read_text().lower()
    assert "cupy-cuda12x" in lock_pins(GPU_LOCK)
    gpu = " ".join(all_stages["gpu"])
    assert "/wheels/gpu-lock.txt" in gpu
    assert all_stages["gpu"][0].startswith("FROM ${CUDA_IMAGE}")
    assert re.search(r"ARG CUDA_IMAGE=nvidia/cuda:[\d.]+-runtime-", DOCKERFILE.read_text())


def test_runtime_stage_has_no_compiler_and_installs_only_from_the_lock() -> None:
    runtime = " ".join(stages()["runtime"])
    assert "gcc" not in runtime and "libgmp-dev" not in runtime
    assert "libgmp10" in runtime
    assert "--no-index" in runtime and "-r /wheels/lock.txt" in runtime
    assert "pip check" in runtime
    builder = " ".join(stages()["builder"])
    assert "gcc" in builder and "libgmp-dev" in builder


def test_base_images_are_pinned() -> None:
    for name, value in re.findall(r"ARG (\w+_IMAGE)=(\S+)", DOCKERFILE.read_text()):
        tag = value.rpartition(":")[2]
        assert tag != "latest" and re.match(r"\d+\.\d+\.\d+", tag), (name, value)
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim", DOCKERFILE.read_text())


@pytest.mark.parametrize("path", [LOCK, GPU_LOCK], ids=lambda p: p.name)
def test_lock_files_are_fully_pinned(path: Path) -> None:
    assert len(lock_pins(path)) >= 2


def test_the_lock_satisfies_every_runtime_requirement_of_the_fedmq_packages() -> None:
    # Prepare: what the installed fedmq distributions require (no extras: those are opt-in)
    pins = lock_pins(LOCK)
    own = {re.sub(r"[-_.]+", "-", d) for d in FEDMQ_DISTRIBUTIONS}
    missing = []
    for dist in FEDMQ_DISTRIBUTIONS:
        for line in metadata.requires(dist) or []:
            req = Requirement(line)
            name = re.sub(r"[-_.]+", "-", req.name).lower()
            if name in own or (req.marker and not req.marker.evaluate({"extra": ""})):
                continue
            # Assert: pinned, at a version the requirement accepts
            if name not in pins or not req.specifier.contains(pins[name], prereleases=True):
                missing.append(f"{dist}: {line} (lock: {pins.get(name)})")
    assert missing == [], "regenerate: .venv/bin/python docker/lock.py > requirements/lock.txt"
    # The PostgreSQL driver the compose file's URLs name
    assert "psycopg" in pins and "psycopg-binary" in pins


def test_the_lock_matches_what_the_tested_environment_runs() -> None:
    # The images get the versions the test suite passed with.
    for name, version in lock_pins(LOCK).items():
        assert metadata.version(name) == version, f"{name}: lock {version}, venv differs"


def test_dockerignore_keeps_environments_state_and_secrets_out() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".fedmq", "tests", ".env", "**/*.key.pem"} <= ignored

"""Helpers for the deployment files: docker-compose.yml read the way compose reads it.

`interpolate` substitutes ${VAR}, ${VAR:-default} and ${VAR:?message} like compose does, so the
structural checks run without docker-compose; the tests that need the real tool
(`docker-compose config`) skip, saying so, only where it is not installed (scripts/setup
installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fedcommon.service_registry import SERVICE_NAMES

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
FEDMQ_SERVICES = SERVICE_NAMES
"""The fedmq services, from the one registry (fedcommon.service_registry)."""

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name, "")
        if op == ":?" and not value:
            raise MissingVariable(f"{name}: {arg}")
        if op == ":-" and not value:
            return arg
        return value

    # $$ is compose's escape for a literal $.
    return _VAR.sub(sub, text.replace("$$", "\0")).replace("\0", "$")


def _walk(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _walk(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_walk(value, env) for value in node]
    return interpolate(node, env) if isinstance(node, str) else node


def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def load_compose(env: dict[str, str]) -> dict[str, Any]:
    """The file as compose sees it: YAML first, then ${...} in string values (so values stay
    strings: compose converts them where the specification wants a number)."""
    data = _walk(raw_compose(), env)
    assert isinstance(data, dict)
    return data


def read_env_file(path: Path) -> dict[str, str]:
    from fedmq.site_cli import read_env

    return read_env(path)


def compose_tool() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (scripts/setup installs it)")
    return exe


def compose_config(env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose -f docker-compose.yml --env-file <env_file> config`, from the repository."""
    return subprocess.run(
        [
            compose_tool(),
            "-f",
            str(COMPOSE_FILE),
            "--project-directory",
            str(REPO),
            "--env-file",
            str(env_file),
            *extra,
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        # Only the env file speaks: variables in the caller's shell would override it.
        env={k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")},
    )

"""Write requirements/lock.txt: the exact versions of fedmq's runtime dependencies.

    .venv/bin/python docker/lock.py > requirements/lock.txt

It walks the requirements of the fedmq distributions installed in the running environment (the
development venv that the test suite passed in) and pins every distribution they pull in,
recursively, at the version installed there. A plain `pip freeze` would also pin the
development tools (pytest, ruff, mypy, scikit-learn...) and put them in the images; walking the
runtime requirements keeps them out. Extras are followed only where named below: the PostgreSQL
driver (psycopg is a dev extra of the repository, but the services need it against PostgreSQL).
The CuPy extra is left out on purpose: the GPU image installs it on top (docker/Dockerfile).
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

from fedcommon.service_registry import SERVICES
from packaging.requirements import Requirement

# The repository's own distributions: installed from wheels built from the source tree. The
# services' come from the one service registry.
LIBRARIES = (
    "fedmq",
    "fedmq-schemas",
    "fedmq-common",
    "fedmq-bus",
    "fedcrypto",
    "fedmq-accel",
    "fedmq-flow",
    "fedmq-control",
)
OWN = LIBRARIES + tuple(s.distribution for s in SERVICES)
# Runtime needs that no fedmq distribution declares as a plain dependency.
EXTRA_ROOTS = ("psycopg[binary]",)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure() -> dict[str, str]:
    """Canonical name -> installed version of everything the runtime roots require."""
    pinned: dict[str, str] = {}
    queue: list[Requirement] = [Requirement(r) for r in EXTRA_ROOTS]
    seen: set[tuple[str, frozenset[str]]] = set()
    for own in OWN:
        queue.extend(_requirements(own, frozenset()))
    while queue:
        req = queue.pop()
        key = (canonical(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        if key[0] not in {canonical(o) for o in OWN}:
            pinned[key[0]] = metadata.version(req.name)
        queue.extend(_requirements(req.name, frozenset(req.extras)))
    return pinned


def _requirements(dist: str, extras: frozenset[str]) -> list[Requirement]:
    out = []
    for line in metadata.requires(dist) or []:
        req = Requirement(line)
        if req.marker is None:
            out.append(req)
            continue
        # Applies if its marker holds with no extra or with one of the extras asked for.
        if any(req.marker.evaluate({"extra": e}) for e in {"", *extras}):
            out.append(req)
    return out


def main() -> int:
    pins = closure()
    if "cupy-cuda12x" in pins:
        print("cupy must not be in the CPU lock", file=sys.stderr)
        return 1
    print("# Runtime dependencies of the fedmq images, exact versions. Generated: do not edit.")
    print("# Regenerate: .venv/bin/python docker/lock.py > requirements/lock.txt")
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

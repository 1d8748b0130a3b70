"""Refuse an image build whose fedcrypto wheel lacks its C extension (fedcrypto._native).

    python docker/check_native_wheel.py /wheels

The extension is optional in setup.py (a machine without GMP still installs fedcrypto); an image
must not silently lose it, so both builder stages of docker/Dockerfile run this on their wheels.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path


def has_native_extension(wheel_dir: Path) -> bool:
    wheels = sorted(wheel_dir.glob("fedcrypto-*.whl"))
    return bool(wheels) and any("_native" in n for n in zipfile.ZipFile(wheels[0]).namelist())


if __name__ == "__main__":
    sys.exit(0 if has_native_extension(Path(sys.argv[1])) else "fedcrypto wheel has no C extension")

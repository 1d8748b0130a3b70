"""Build of the optional C extension fedcrypto._native (metadata lives in pyproject.toml).

The extension links GMP (Debian/Ubuntu: libgmp-dev) and is optional: where it cannot be
compiled the package still installs and every kernel runs on gmpy2
(`fedcrypto.paillier.native_available()` tells which). AVX-512 IFMA code is compiled with
per-function target attributes and chosen at run time, so no -march flag is needed.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "fedcrypto._native",
            sources=["native/_native.c"],
            libraries=["gmp"],
            extra_compile_args=["-O3", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)

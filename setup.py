"""Build the compiled twins of ``ipfs_accelerate_api.core`` (everything else is in pyproject.toml).

* ``IPFS_ACCEL_NO_EXTENSIONS=1`` builds a pure-Python install (no compiler needed).
* ``IPFS_ACCEL_REQUIRE_EXTENSIONS=1`` (set by cibuildwheel) makes any doubt about the
  extensions a hard error, so a wheel never ships without its C core.
* ``IPFS_ACCEL_DEBUG_BUILD=1`` compiles with ``-O0 -g`` and Cython's bounds checks on.

There is no silent fallback: if a compiler is present and an extension fails to build,
the build fails.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup

EXTENSIONS = ("pqueue", "ratelimit", "breaker", "packer", "vecmath")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0", "false", "False", "no")


def _extensions() -> list[Extension]:
    if _flag("IPFS_ACCEL_NO_EXTENSIONS"):
        if _flag("IPFS_ACCEL_REQUIRE_EXTENSIONS"):
            raise SystemExit(
                "IPFS_ACCEL_NO_EXTENSIONS and IPFS_ACCEL_REQUIRE_EXTENSIONS are both set"
            )
        print("ipfs-accelerate-api: IPFS_ACCEL_NO_EXTENSIONS set, building pure Python")
        return []

    from Cython.Build import cythonize

    debug = _flag("IPFS_ACCEL_DEBUG_BUILD")
    if sys.platform == "win32":
        compile_args = ["/O2"] if not debug else ["/Od", "/Zi"]
        fast_math: list[str] = []
    else:
        compile_args = ["-O3", "-Wno-unreachable-code"] if not debug else ["-O0", "-g"]
        # Only the vector kernels: lets the compiler vectorise sums and comparisons.
        fast_math = ["-fno-math-errno", "-fno-trapping-math"]

    exts = []
    for name in EXTENSIONS:
        extra = list(compile_args)
        include_dirs = ["cython_core"]
        if name in ("vecmath", "packer"):
            extra += fast_math
        exts.append(
            Extension(
                f"ipfs_accelerate_api.core._c.{name}",
                [f"cython_core/{name}.pyx"],
                include_dirs=include_dirs,
                extra_compile_args=extra,
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    print(f"ipfs-accelerate-api: building {len(exts)} C extensions ({'debug' if debug else 'release'})")
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={
            "boundscheck": debug,
            "wraparound": False,
            "initializedcheck": debug,
            "cdivision": True,
            "embedsignature": True,
        },
    )


setup(ext_modules=_extensions())

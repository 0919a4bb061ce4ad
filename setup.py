"""Build the Cython kernels of ``cython_ops``; everything else is declared in pyproject.toml.

Portable flags only (no ``-march=native`` / ``-ffast-math``); set ``FLIP_NATIVE=1`` to opt in to
``-O3 -march=native`` for a local build. ``-ffp-contract=off`` keeps the compiler from fusing multiply-adds, so the
kernels' floating-point results match the NumPy reference bit for bit on every CPU. The kernels draw random
numbers through numpy's C distribution functions, linked from numpy's static ``npyrandom`` library.
"""

import os
import sys
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

_COMPILE_ARGS = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off"]
if os.environ.get("FLIP_NATIVE") == "1":
    _COMPILE_ARGS.append("-march=native")
_MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
_NPYRANDOM_DIR = str(Path(np.get_include()).parents[1] / "random" / "lib")


def _extensions():
    exts = []
    for pyx in sorted(Path("cython_ops").glob("_*.pyx")):
        exts.append(
            Extension(
                f"cython_ops.{pyx.stem}",
                [str(pyx)],
                include_dirs=[np.get_include()],
                library_dirs=[_NPYRANDOM_DIR],
                libraries=["npyrandom"] + ([] if sys.platform == "win32" else ["m"]),
                define_macros=_MACROS,
                extra_compile_args=_COMPILE_ARGS,
            )
        )
    return exts


setup(ext_modules=cythonize(_extensions(), compiler_directives={"language_level": "3"}))

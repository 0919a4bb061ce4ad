"""Build the Cython kernels of ``cython_ops``; everything else is declared in pyproject.toml.

Portable flags only (no ``-march=native`` / ``-ffast-math``); set ``FLIP_NATIVE=1`` to opt in to
``-O3 -march=native`` for a local build.
"""

import os
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

_COMPILE_ARGS = ["-O3"] + (["-march=native"] if os.environ.get("FLIP_NATIVE") == "1" else [])
_MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]


def _extensions():
    exts = []
    for pyx in sorted(Path("cython_ops").glob("_*.pyx")):
        exts.append(
            Extension(
                f"cython_ops.{pyx.stem}",
                [str(pyx)],
                include_dirs=[np.get_include()],
                define_macros=_MACROS,
                extra_compile_args=_COMPILE_ARGS,
            )
        )
    return exts


setup(ext_modules=cythonize(_extensions(), compiler_directives={"language_level": "3"}))

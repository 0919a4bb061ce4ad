"""Build the Cython kernels of ``cython_ops``; everything else is declared in pyproject.toml.

Portable flags only (no ``-march=native`` / ``-ffast-math``); set ``FLIP_NATIVE=1`` to opt in to
``-O3 -march=native`` for a local build. ``-ffp-contract=off`` keeps the compiler from fusing multiply-adds, so the
kernels' floating-point results match the NumPy reference bit for bit on every CPU. The kernels draw random
numbers through numpy's C distribution functions, linked from numpy's static ``npyrandom`` library.

``cython_ops._jpeg`` (region decoding for the training loader) links the system libjpeg-turbo (>= 1.5: Debian/Ubuntu
``libjpeg-dev``, Fedora ``libjpeg-turbo-devel``, conda ``libjpeg-turbo``). Without its headers it is skipped with a
warning and the loader decodes whole images (same pixels, slower); ``FLIP_REQUIRE_JPEG=1`` turns the warning into an
error.
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


def _have_libjpeg_turbo() -> bool:
    """True when a program calling ``jpeg_skip_scanlines`` compiles and links against ``-ljpeg``."""
    import tempfile

    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text("#include <stdio.h>\n#include <jpeglib.h>\n"
                       "int main(void) { void *f = (void *)jpeg_skip_scanlines; return f == (void *)1; }\n")
        try:
            objects = compiler.compile([str(src)], output_dir=tmp)
            compiler.link_executable(objects, "probe", output_dir=tmp, libraries=["jpeg"])
        except Exception:  # CompileError / LinkError: headers or library missing
            return False
    return True


def _extensions():
    exts = []
    for pyx in sorted(Path("cython_ops").glob("_*.pyx")):
        libraries = ["npyrandom"] + ([] if sys.platform == "win32" else ["m"])
        if pyx.stem == "_jpeg":
            if not _have_libjpeg_turbo():
                message = ("cython_ops._jpeg not built: libjpeg-turbo headers/library (jpeglib.h, -ljpeg, >= 1.5) "
                           "not found; the training loader will decode whole images (same pixels, slower). "
                           "Install libjpeg-dev (Debian/Ubuntu) or libjpeg-turbo-devel (Fedora) and reinstall.")
                if os.environ.get("FLIP_REQUIRE_JPEG") == "1":
                    raise SystemExit(message)
                print(f"WARNING: {message}", file=sys.stderr)
                continue
            libraries = ["jpeg"]
        exts.append(
            Extension(
                f"cython_ops.{pyx.stem}",
                [str(pyx)],
                include_dirs=[np.get_include()],
                library_dirs=[_NPYRANDOM_DIR],
                libraries=libraries,
                define_macros=_MACROS,
                extra_compile_args=_COMPILE_ARGS,
            )
        )
    return exts


setup(ext_modules=cythonize(_extensions(), compiler_directives={"language_level": "3"}))

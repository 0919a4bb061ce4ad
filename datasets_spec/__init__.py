"""Dataset format specs: one module per source format, all implementing ``datasets_spec.base.DatasetSpec``.

``SPECS`` maps the ``flip convert <name>`` name to the module that implements it. Each module exposes
``add_cli_arguments(parser)`` and ``from_cli_args(args) -> DatasetSpec``; its docstring documents the layout.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SPECS: dict[str, str] = {
    "coco": "datasets_spec.coco",
    "lvis": "datasets_spec.lvis",
    "procedural": "datasets_spec.procedural",
    "openimages": "datasets_spec.openimages",
    "hypersim": "datasets_spec.hypersim",
    "kitti360": "datasets_spec.kitti360",
    "sa1b": "datasets_spec.sa1b",
    "grabcut": "datasets_spec.grabcut",
    "berkeley": "datasets_spec.berkeley",
    "davis": "datasets_spec.davis",
    "coco_mval": "datasets_spec.coco_mval",
    "sbd": "datasets_spec.sbd",
}


def spec_module(name: str) -> ModuleType:
    """Import the spec module registered as ``name``. Raises ValueError listing the known names."""
    if name not in SPECS:
        raise ValueError(f"unknown dataset format {name!r}; known formats: {', '.join(sorted(SPECS))}")
    return importlib.import_module(SPECS[name])

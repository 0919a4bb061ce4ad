"""COCO_MVal (RITM layout), ``flip convert coco_mval --root DIR --out DIR``.

Expected layout (the fBRS/RITM ``COCO_MVal.zip``)::

    DIR/
      img/<class><nn>_<coco id>.jpg     800 COCO val2017 JPEGs (one grayscale); names may contain spaces
      gt/<class><nn>_<coco id>.png      one binary 0/255 grayscale mask per image

Same loader as DAVIS (RITM ``inference/utils.py``): a non-palette mask is one instance, max over channels > 0.
Two files may show the same COCO image (``spoon01_…`` and ``toaster00_000000066841``); they stay separate samples.
Keys are the index of the image file name in the sorted folder listing; the COCO id is kept in ``file_name``.
"""

from __future__ import annotations

import argparse

from datasets_spec._interactive import PairedFolderSpec, add_root_argument

__all__ = ["coco_mval_spec", "add_cli_arguments", "from_cli_args"]


def coco_mval_spec(*, root, name: str = "coco_mval", images_dir: str = "img", masks_dir: str = "gt"):
    """The COCO_MVal spec: a :class:`~datasets_spec._interactive.PairedFolderSpec` with the ``index`` rule."""
    return PairedFolderSpec(name=name, root=root, images_dir=images_dir, masks_dir=masks_dir, mask_rule="index")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    add_root_argument(parser, "coco_mval")
    parser.add_argument("--images-dir", default="img", help="image folder under --root (default img)")
    parser.add_argument("--masks-dir", default="gt", help="mask folder under --root (default gt)")


def from_cli_args(args: argparse.Namespace) -> PairedFolderSpec:
    return coco_mval_spec(root=args.root, name=args.name, images_dir=args.images_dir, masks_dir=args.masks_dir)

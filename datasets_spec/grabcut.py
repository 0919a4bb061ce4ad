"""GrabCut (RITM layout), ``flip convert grabcut --root DIR --out DIR``.

Expected layout (the fBRS/RITM ``GrabCut.zip``)::

    DIR/
      data_GT/<stem>.{jpg,JPG,bmp}      50 images (24-bit BMP or JPEG; extensions of any case)
      boundary_GT/<stem>.bmp            8-bit masks: 0 background, 128 uncertain band, 255 object

Each mask gives one instance: value > 128 is the object, value == 128 the ignore band (stored in the shards'
``ignore_masks``), read from the first channel in OpenCV order as RITM does. Keys are the index of the image file
name in the sorted folder listing. Images without a mask and masks without an image are reported as rejects.
"""

from __future__ import annotations

import argparse

from datasets_spec._interactive import PairedFolderSpec, add_root_argument

__all__ = ["grabcut_spec", "add_cli_arguments", "from_cli_args"]


def grabcut_spec(*, root, name: str = "grabcut", images_dir: str = "data_GT", masks_dir: str = "boundary_GT"):
    """The GrabCut spec: a :class:`~datasets_spec._interactive.PairedFolderSpec` with the ``band128`` rule."""
    return PairedFolderSpec(name=name, root=root, images_dir=images_dir, masks_dir=masks_dir, mask_rule="band128")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    add_root_argument(parser, "grabcut")
    parser.add_argument("--images-dir", default="data_GT", help="image folder under --root (default data_GT)")
    parser.add_argument("--masks-dir", default="boundary_GT", help="mask folder under --root (default boundary_GT)")


def from_cli_args(args: argparse.Namespace) -> PairedFolderSpec:
    return grabcut_spec(root=args.root, name=args.name, images_dir=args.images_dir, masks_dir=args.masks_dir)

"""DAVIS-345 (RITM layout, from BRS), ``flip convert davis --root DIR --out DIR [--merge-objects]``.

Expected layout (the fBRS/RITM ``DAVIS.zip``; SimpleClick/SegNext call the folder ``DAVIS345``)::

    DIR/
      img/<nnn>.jpg                     345 frames, 854x480 JPEG
      gt/<nnn>.png                      palette PNGs: 0 background, 1..k object indices, 255 void

Each object index of a palette mask is one instance; the 255 void pixels are stored as the ``ignore_masks`` of every
instance of that frame. ``--merge-objects`` merges all object indices into one instance per frame, which is the
RITM evaluation protocol (RITM also counts void as object; we never do). Non-palette masks are binary (max over
channels > 0). Keys are the index of the image file name in the sorted folder listing.
"""

from __future__ import annotations

import argparse

from datasets_spec._interactive import PairedFolderSpec, add_root_argument

__all__ = ["davis_spec", "add_cli_arguments", "from_cli_args"]


def davis_spec(*, root, name: str = "davis", images_dir: str = "img", masks_dir: str = "gt",
               merge_objects: bool = False):
    """The DAVIS spec: a :class:`~datasets_spec._interactive.PairedFolderSpec` with the ``index`` rule."""
    return PairedFolderSpec(
        name=name, root=root, images_dir=images_dir, masks_dir=masks_dir, mask_rule="index", merge_objects=merge_objects
    )


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    add_root_argument(parser, "davis")
    parser.add_argument("--images-dir", default="img", help="image folder under --root (default img)")
    parser.add_argument("--masks-dir", default="gt", help="mask folder under --root (default gt)")
    parser.add_argument("--merge-objects", action="store_true",
                        help="one instance per frame: the union of all object indices (RITM protocol)")


def from_cli_args(args: argparse.Namespace) -> PairedFolderSpec:
    return davis_spec(root=args.root, name=args.name, images_dir=args.images_dir, masks_dir=args.masks_dir,
                     merge_objects=args.merge_objects)

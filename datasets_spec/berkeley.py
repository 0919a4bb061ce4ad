"""Berkeley (RITM layout), ``flip convert berkeley --root DIR --out DIR``.

Expected layout (the fBRS/RITM ``Berkeley.zip``)::

    DIR/
      images/<id>.jpg                   96 BSDS images
      masks/<id>[a|b].png               100 masks; ``189011a.png`` / ``189011b.png`` are extra objects on 189011.jpg

Masks are 8-bit RGB PNGs read like GrabCut's (RITM's ``BerkeleyDataset`` subclasses ``GrabCutDataset``): the first
channel in OpenCV's BGR order (= blue) > 128 is object, == 128 ignore. Stray pixels follow that rule: grey 197/243
and magenta (255, 0, 255) count as object, exactly as in RITM. A mask whose stem has no image falls back to the stem
without its trailing letter. Keys are the index of the image file name in the sorted folder listing.
"""

from __future__ import annotations

import argparse

from datasets_spec._interactive import PairedFolderSpec, add_root_argument

__all__ = ["berkeley_spec", "add_cli_arguments", "from_cli_args"]


def berkeley_spec(*, root, name: str = "berkeley", images_dir: str = "images", masks_dir: str = "masks"):
    """The Berkeley spec: a :class:`~datasets_spec._interactive.PairedFolderSpec` with the ``band128`` rule."""
    return PairedFolderSpec(name=name, root=root, images_dir=images_dir, masks_dir=masks_dir, mask_rule="band128")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    add_root_argument(parser, "berkeley")
    parser.add_argument("--images-dir", default="images", help="image folder under --root (default images)")
    parser.add_argument("--masks-dir", default="masks", help="mask folder under --root (default masks)")


def from_cli_args(args: argparse.Namespace) -> PairedFolderSpec:
    return berkeley_spec(root=args.root, name=args.name, images_dir=args.images_dir, masks_dir=args.masks_dir)

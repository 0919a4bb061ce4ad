"""Shared by tests/test_data*.py and tests/test_train*.py: COCO val2017 sample converted once per session."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import shared_path


def converted_coco(tmp_path_factory) -> Path:
    """``../shared/data/coco`` val2017 converted with ``flip_core.convert.convert_dataset`` (shard size 8).

    Cached under the session's base temp dir so every test module reuses one conversion.
    """
    images = shared_path("coco", "val2017")
    annotations = shared_path("coco", "annotations", "instances_val2017.json")
    out = tmp_path_factory.getbasetemp() / "flip-coco-val2017"
    if not (out / "index.json").is_file():
        from datasets_spec.coco import CocoSpec
        from flip_core.convert import convert_dataset

        convert_dataset(CocoSpec(images=images, annotations=annotations), out, shard_size=8, num_workers=2,
                        progress=False)
    return out

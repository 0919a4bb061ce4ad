"""Image-level index of a converted dataset, with the reference's deterministic loader filters applied up front.

The manifest (one row per instance) is grouped into images. Instances that can never pass the reference's loader
filters (flip-spec §1.5, checked in frame M) are removed here, once, and counted instead of being rejected again
and again at load time:

* ground-truth sigma: ``sigma_minor > 0.005`` and ``sigma_major > 0.005`` (frame M, after
  ``flip_core.gaussian.position_n_to_m`` with the configured convention);
* bbox half extents ``(x1 - x0) / 2 / 128`` and ``(y1 - y0) / 2 / 128`` both in ``(0.005, 25)`` (frame M units;
  this rejects masks one pixel wide or tall).

Images left with no usable instance are excluded from sampling and counted. The random filters (too few realised
tokens, failed mask sampling) are applied per draw by :mod:`flip_core.data.dataset`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flip_core.gaussian import moments_to_position, position_n_to_m

__all__ = ["ImageIndex", "build_image_index", "MIN_SIGMA_M", "BBOX_HALF_EXTENT_M"]

logger = logging.getLogger(__name__)

MIN_SIGMA_M = 0.005
"""Reference loader filter on the ground-truth sigmas, frame M (spec §1.5)."""
BBOX_HALF_EXTENT_M = (0.005, 25.0)
"""Open interval for both bbox half extents, frame M (spec §1.5)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ImageIndex:
    """Usable images of one converted dataset (arrays are aligned per image / per instance)."""

    name: str
    """Dataset name (from the manifest)."""
    root: Path
    """Directory holding the shards."""
    shards: tuple[Path, ...]
    """Shard files in index order."""
    image_shard: np.ndarray
    """(n_img,) int64 shard index of each usable image."""
    image_row: np.ndarray
    """(n_img,) int64 image row inside its shard."""
    image_size: np.ndarray
    """(n_img, 2) int64 ``[H, W]`` in px."""
    inst_start: np.ndarray
    """(n_img + 1,) int64 CSR offsets into the instance arrays."""
    inst_row: np.ndarray
    """(n_inst,) int64 instance row inside the shard, usable instances only."""
    inst_position: np.ndarray
    """(n_inst, 6) float32 ground-truth position ``[mu_x, mu_y, s_minor, s_major, a, b]``, frame N."""
    rejects: dict[str, int] = field(default_factory=dict)
    """Instances/images removed by reason."""

    @property
    def num_images(self) -> int:
        return len(self.image_row)

    def instances(self, i: int) -> slice:
        """Slice of image ``i``'s usable instances in the instance arrays."""
        return slice(int(self.inst_start[i]), int(self.inst_start[i + 1]))


def _column(table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


def _instance_filter(table, convention: str) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Ground-truth positions (frame N) and the spec §1.5 deterministic filter mask of every manifest row."""
    moments = np.stack([_column(table, c) for c in ("mu_x", "mu_y", "var_x", "var_y", "cov_xy")], 1)
    positions = moments_to_position(moments.astype(np.float32))
    width, height = _column(table, "width").astype(np.int64), _column(table, "height").astype(np.int64)
    sig_ok = np.ones(len(positions), dtype=bool)
    for (w, h) in set(zip(width.tolist(), height.tolist())):
        rows = (width == w) & (height == h)
        pos_m = position_n_to_m(positions[rows], int(w), int(h), convention=convention)
        sig_ok[rows] = (pos_m[:, 2] > MIN_SIGMA_M) & (pos_m[:, 3] > MIN_SIGMA_M)
    lo, hi = BBOX_HALF_EXTENT_M
    half_x = (_column(table, "bbox_x1") - _column(table, "bbox_x0")) / 2 / 128
    half_y = (_column(table, "bbox_y1") - _column(table, "bbox_y0")) / 2 / 128
    bbox_ok = (half_x > lo) & (half_x < hi) & (half_y > lo) & (half_y < hi)
    rejects = {"instance: gt sigma <= 0.005 (frame M)": int((~sig_ok).sum()),
               "instance: bbox half extent outside (0.005, 25) (frame M)": int((sig_ok & ~bbox_ok).sum())}
    return positions, sig_ok & bbox_ok, rejects


def build_image_index(dataset, *, convention: str = "exact") -> ImageIndex:
    """Group a converted dataset's manifest by image, keeping usable instances (module docstring).

    Args:
        dataset: a ``flip_core.manifest.ConvertedDataset`` (``.name``, ``.root``, ``.shards``, ``.manifest``).
        convention: frame N -> M convention used for the sigma filter.

    Raises:
        ValueError: the manifest names a shard that is not in the dataset index, or nothing usable is left.
    """
    table = dataset.manifest
    shard_pos = {}
    for k, p in enumerate(dataset.shards):  # manifest "shard" is relative to the dataset dir
        shard_pos[Path(p).name] = shard_pos[Path(p).relative_to(dataset.root).as_posix()] = k
    names = _column(table, "shard")
    unknown = sorted(set(names.tolist()) - set(shard_pos))
    if unknown:
        raise ValueError(f"{dataset.root}: manifest rows name shards missing from the index: {unknown[:5]}")
    positions, keep, rejects = _instance_filter(table, convention)
    shard = np.array([shard_pos[n] for n in names], dtype=np.int64)
    image_row = _column(table, "image_row").astype(np.int64)
    order = np.lexsort((_column(table, "instance_row"), image_row, shard))
    all_keys = np.unique(np.stack([shard, image_row], 1), axis=0)
    order = order[keep[order]]
    keys = np.stack([shard[order], image_row[order]], 1)
    uniq, first = np.unique(keys, axis=0, return_index=True)
    rejects["image: no usable instance"] = len(all_keys) - len(uniq)
    if len(uniq) == 0:
        raise ValueError(f"{dataset.root}: no usable image (instance filters: {rejects})")
    sizes = np.stack([_column(table, "height"), _column(table, "width")], 1).astype(np.int64)[order[first]]
    logger.info("%s: %d usable images, %d usable instances; removed %s", dataset.name, len(uniq), len(order),
                {k: v for k, v in rejects.items() if v})
    return ImageIndex(name=dataset.name, root=Path(dataset.root), shards=tuple(Path(p) for p in dataset.shards),
                      image_shard=uniq[:, 0].copy(), image_row=uniq[:, 1].copy(), image_size=sizes,
                      inst_start=np.append(first, len(order)).astype(np.int64),
                      inst_row=_column(table, "instance_row").astype(np.int64)[order],
                      inst_position=positions[order].astype(np.float32), rejects=rejects)

"""FLIP HDF5 shards: the reference schema (spec section 1.1), written whole and atomically, plus a lazy reader.

One shard is one HDF5 file holding N images and their M instances. Every dataset the reference converter
(``model/scripts/convert_coco_to_hdf5.py``) writes is present with the same name, dtype and shape, so the reference
loader (``HDF5_Dataset``) and evaluation scripts read our shards:

=========================== =========== ================= =====================================================
dataset                     shape       dtype             content
=========================== =========== ================= =====================================================
``rgb_images``              (N,)        vlen uint8        JPEG bytes (source bytes when kept, see ``flip_core.images``)
``instance_masks``          (M,)        vlen uint8        PNG bytes, single channel {0, 255}
``sequence_indices``        (N, 2)      int64             ``[image_index, 1]``
``image_instance_indices``  (N, 2)      int64             ``[first_instance, num_instances]``
``instance_masks_images``   (M, 1)      int64             image index of each instance
``instance_mask_bboxes``    (M, 4)      float32           inclusive ``[x0, y0, x1, y1]``, frame P (row/col 0 count)
``positions``               (M, 5)      float32           ``[mu_x, mu_y, var_x, var_y, cov_xy]``, frame N (spec 1.2)
``coco_image_ids``          (N,)        int64             source image id (``Sample.key``)
``license_ids``             (N,)        uint8             source licence id, 0 when unknown
``file_names``              (N,)        vlen str (UTF-8)  relative source path
``flickr_urls``             (N,)        vlen str          ``""`` when unknown
``coco_urls``               (N,)        vlen str          ``""`` when unknown
``transform_notes``         (N,)        vlen str          what was done to the pixels
group ``metadata``          attrs                         ``dataset_name``, ``type``, ``coco_licenses`` + spec extras
=========================== =========== ================= =====================================================

Extra datasets (ours; the reference ignores them): ``image_encodings`` (N,) str (``"source-jpeg"`` |
``"reencoded-jpeg"``), ``source_formats`` (N,) str (``"JPEG/RGB"``, ``"PNG/L"``...), ``image_shapes`` (N, 2) int64
``[H, W]``, ``image_source_ids`` (N,) str, ``image_metadata`` (N,) str (JSON), ``category_ids`` (M,) int64,
``areas`` (M,) int64 (mask pixel count), ``source_ids`` (M,) str, ``ignore_masks`` (M,) vlen uint8 (PNG like
``instance_masks``; empty = no ignore region), ``instance_metadata`` (M,) str (JSON). ``metadata`` also gets
``flip_shard_version``.

Differences from the reference writer: the whole file is written at once (no per-row resizes) to
``<name>.tmp-<pid>``, fsynced and renamed into place; object timestamps are off and the numeric datasets use fixed
chunking, so the same content always gives the same bytes; bboxes include row and column 0 (spec 9.6).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from flip_core.images import decode_mask_png, decode_rgb

__all__ = [
    "SHARD_FORMAT_VERSION",
    "ShardInstance",
    "ShardImage",
    "write_shard",
    "ShardReader",
    "sha256_file",
    "TRANSFORM_NOTE_SOURCE",
    "TRANSFORM_NOTE_REENCODED",
]

SHARD_FORMAT_VERSION = 1
TRANSFORM_NOTE_SOURCE = "source JPEG bytes kept unchanged; no edits"
TRANSFORM_NOTE_REENCODED = "recompressed JPEG; no creative edits"
_GZIP = {"compression": "gzip", "compression_opts": 5, "shuffle": False, "fletcher32": False}
_VLEN_U8 = h5py.vlen_dtype(np.uint8)
_STR = h5py.string_dtype("utf-8")


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardInstance:
    """One instance row of a shard."""

    mask_png: bytes
    """PNG bytes of the full-size {0, 255} mask (``flip_core.images.encode_mask_png``)."""
    bbox: np.ndarray
    """(4,) float32 inclusive ``[x0, y0, x1, y1]`` in frame P."""
    moments: np.ndarray
    """(5,) float32 ``[mu_x, mu_y, var_x, var_y, cov_xy]`` in frame N (``gaussian.mask_moments``)."""
    category_id: int = -1
    area_px: int = 0
    """Number of mask pixels."""
    source_id: str = ""
    ignore_png: bytes = b""
    """PNG of the ignore region, or empty when there is none."""
    metadata_json: str = "{}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardImage:
    """One image row of a shard with its instances (contiguous in the shard, in this order)."""

    image_id: int
    file_name: str
    jpeg: bytes
    encoding: str
    """``"source-jpeg"`` or ``"reencoded-jpeg"`` (``flip_core.images``)."""
    width: int
    height: int
    source_format: str = ""
    source_id: str = ""
    license_id: int = 0
    flickr_url: str = ""
    coco_url: str = ""
    metadata_json: str = "{}"
    instances: tuple[ShardInstance, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if not 0 <= self.license_id <= 255:
            raise ValueError(f"{self.source_id or self.file_name}: license_id {self.license_id} not in 0..255 (uint8)")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"{self.source_id or self.file_name}: bad image size {self.width}x{self.height}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _vlen_array(items: Sequence[bytes]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = np.frombuffer(item, dtype=np.uint8)
    return out


def _create(f: h5py.File, name: str, data: np.ndarray, dtype, *, chunk_rows: int | None = None) -> None:
    """Create a fixed-shape dataset with timestamps off; numeric ones gzip-5 chunked like the reference."""
    kwargs: dict = {"track_times": False}
    if chunk_rows is not None and len(data) > 0:
        kwargs.update(_GZIP, chunks=(min(chunk_rows, len(data)),) + tuple(np.shape(data)[1:]))
    f.create_dataset(name, shape=np.shape(data) if len(data) else (0,) + tuple(np.shape(data)[1:]), dtype=dtype, **kwargs)
    if len(data):
        if data.dtype == object and dtype is _VLEN_U8:
            # write_direct: ``d[...] = data`` mis-reads an object array of equal-length items as 2-D
            f[name].write_direct(data)
        else:
            f[name][...] = data


def _image_columns(images: Sequence[ShardImage]) -> dict[str, tuple[np.ndarray, object, int | None]]:
    counts = np.array([len(im.instances) for im in images], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(images) else counts
    n = len(images)
    notes = [TRANSFORM_NOTE_SOURCE if im.encoding == "source-jpeg" else TRANSFORM_NOTE_REENCODED for im in images]
    return {
        "rgb_images": (_vlen_array([im.jpeg for im in images]), _VLEN_U8, None),
        "sequence_indices": (np.stack([np.arange(n), np.ones(n)], axis=1).astype(np.int64).reshape(n, 2), np.int64, 512),
        "image_instance_indices": (np.stack([starts, counts], axis=1).reshape(n, 2), np.int64, 512),
        "coco_image_ids": (np.array([im.image_id for im in images], dtype=np.int64), np.int64, None),
        "license_ids": (np.array([im.license_id for im in images], dtype=np.uint8), np.uint8, None),
        "file_names": (np.array([im.file_name for im in images], dtype=object), _STR, None),
        "flickr_urls": (np.array([im.flickr_url for im in images], dtype=object), _STR, None),
        "coco_urls": (np.array([im.coco_url for im in images], dtype=object), _STR, None),
        "transform_notes": (np.array(notes, dtype=object), _STR, None),
        "image_encodings": (np.array([im.encoding for im in images], dtype=object), _STR, None),
        "source_formats": (np.array([im.source_format for im in images], dtype=object), _STR, None),
        "image_shapes": (np.array([[im.height, im.width] for im in images], dtype=np.int64).reshape(n, 2), np.int64, 512),
        "image_source_ids": (np.array([im.source_id for im in images], dtype=object), _STR, None),
        "image_metadata": (np.array([im.metadata_json for im in images], dtype=object), _STR, None),
    }


def _instance_columns(images: Sequence[ShardImage]) -> dict[str, tuple[np.ndarray, object, int | None]]:
    inst = [ins for im in images for ins in im.instances]
    owner = np.array([i for i, im in enumerate(images) for _ in im.instances], dtype=np.int64)
    m = len(inst)
    return {
        "instance_masks": (_vlen_array([x.mask_png for x in inst]), _VLEN_U8, None),
        "instance_masks_images": (owner.reshape(m, 1), np.int64, 1024),
        "instance_mask_bboxes": (np.array([x.bbox for x in inst], dtype=np.float32).reshape(m, 4), np.float32, 512),
        "positions": (np.array([x.moments for x in inst], dtype=np.float32).reshape(m, 5), np.float32, 512),
        "category_ids": (np.array([x.category_id for x in inst], dtype=np.int64), np.int64, None),
        "areas": (np.array([x.area_px for x in inst], dtype=np.int64), np.int64, None),
        "source_ids": (np.array([x.source_id for x in inst], dtype=object), _STR, None),
        "ignore_masks": (_vlen_array([x.ignore_png for x in inst]), _VLEN_U8, None),
        "instance_metadata": (np.array([x.metadata_json for x in inst], dtype=object), _STR, None),
    }


def write_shard(
    path: str | os.PathLike,
    images: Sequence[ShardImage],
    *,
    dataset_name: str,
    dataset_type: str,
    file_metadata: Mapping[str, str] | None = None,
) -> str:
    """Write one complete shard atomically and return the sha256 of its bytes.

    The file is written to ``<path>.tmp-<pid>``, flushed, fsynced, then renamed over ``path`` (and the directory
    fsynced), so a reader never sees a partial shard and a killed writer leaves only a ``.tmp-*`` file behind.
    The same arguments always produce the same bytes (object timestamps off, fixed chunking).

    Args:
        path: destination file, conventionally ``shard-NNNNN.h5``.
        images: the rows, in order; each image's instances follow each other in the instance datasets.
        dataset_name: ``metadata.attrs["dataset_name"]`` (reference: ``"coco-val2017"``).
        dataset_type: ``metadata.attrs["type"]`` (reference: the split, ``"val2017"``).
        file_metadata: more ``metadata`` attributes (strings), e.g. ``coco_licenses`` (JSON of the licences list).

    Returns:
        Hex sha256 of the written file.

    Raises:
        ValueError: an instance array has the wrong shape, or a metadata value is not a string.
    """
    path = Path(path)
    for im in images:
        for ins in im.instances:
            if np.shape(ins.bbox) != (4,) or np.shape(ins.moments) != (5,):
                raise ValueError(f"{ins.source_id}: bbox must be (4,) and moments (5,), got {np.shape(ins.bbox)}, "
                                 f"{np.shape(ins.moments)}")
    attrs = {"dataset_name": dataset_name, "type": dataset_type, "coco_licenses": "[]"}
    attrs.update(file_metadata or {})
    attrs["flip_shard_version"] = str(SHARD_FORMAT_VERSION)
    for key, value in attrs.items():
        if not isinstance(value, str):
            raise ValueError(f"metadata attribute {key!r} must be a str, got {type(value).__name__}")
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    columns = {**_image_columns(images), **_instance_columns(images)}
    try:
        with h5py.File(tmp, "w", libver="earliest") as f:
            for name, (data, dtype, chunk_rows) in columns.items():
                _create(f, name, data, dtype, chunk_rows=chunk_rows)
            group = f.create_group("metadata")
            for key in sorted(attrs):
                group.attrs.create(key, attrs[key], dtype=_STR)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return digest


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _VlenRows:
    """Single-row reads of a 1-D variable-length uint8 dataset through h5py's low-level API.

    ``dataset[i]`` costs about 50 us of Python-side selection set-up per call (160 us with the group lookup);
    reusing one file space, memory space and output buffer brings a row read to about 20 us, which matters when the
    training loader reads an image and several masks per sample.
    """

    def __init__(self, dataset: h5py.Dataset):
        if dataset.ndim != 1:
            raise ValueError(f"{dataset.name}: expected a 1-D variable-length dataset, got shape {dataset.shape}")
        self.dataset, self.length = dataset, dataset.shape[0]
        self._file_space = dataset.id.get_space()
        self._mem_space = h5py.h5s.create_simple((1,))
        self._out = np.empty((1,), dtype=dataset.dtype)

    def read(self, i: int) -> np.ndarray:
        """Row ``i`` as a fresh 1-D uint8 array (h5py allocates one per vlen element; nothing here reuses it)."""
        i = int(i)
        if not 0 <= i < self.length:
            raise IndexError(f"{self.dataset.file.filename}:{self.dataset.name}: row {i} out of range "
                             f"[0, {self.length})")
        self._file_space.select_hyperslab((i,), (1,))
        self.dataset.id.read(self._mem_space, self._file_space, self._out)
        return self._out[0]


class ShardReader:
    """Random access to one shard. Opens the file lazily, so it can be pickled before first use (Ray tasks,
    DataLoader workers) and reopens itself in each process. Use as a context manager or call :meth:`close`.

    Index arrays (instance ranges, owners, positions, bboxes, ids) are read once on first use and kept in memory;
    images and masks are read per call.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._cache: dict[str, np.ndarray] = {}
        self._rows: dict[str, _VlenRows | h5py.Dataset] = {}

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    @property
    def file(self) -> h5py.File:
        """The open ``h5py.File`` (opened on first access in this process)."""
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
            self._rows = {}
        return self._file

    def _vlen_row(self, name: str, i: int) -> np.ndarray:
        """Row ``i`` of the variable-length uint8 dataset ``name`` as a 1-D uint8 array (loader hot path, see
        :class:`_VlenRows`)."""
        file = self.file  # first: reopens (and drops the cached row readers) in a new process
        rows = self._rows.get(name)
        if rows is None:
            ds = file[name]
            vlen = ds.ndim == 1 and h5py.check_vlen_dtype(ds.dtype) is not None
            rows = self._rows[name] = _VlenRows(ds) if vlen else ds
        return rows.read(i) if isinstance(rows, _VlenRows) else rows[i]

    def _array(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = self.file[name][...]
        return self._cache[name]

    # -- shard-level -------------------------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        return int(self.file["rgb_images"].shape[0])

    @property
    def num_instances(self) -> int:
        return int(self.file["instance_masks"].shape[0])

    @property
    def dataset_name(self) -> str:
        return _as_str(self.file["metadata"].attrs["dataset_name"])

    @property
    def metadata(self) -> dict[str, str]:
        """All ``metadata`` group attributes as strings."""
        return {k: _as_str(v) for k, v in self.file["metadata"].attrs.items()}

    @property
    def has_masks(self) -> bool:
        return "instance_masks" in self.file and self.num_instances > 0

    # -- images ------------------------------------------------------------------------------------------------
    def image_bytes(self, i: int) -> bytes:
        """Stored JPEG bytes of image ``i``."""
        return self._vlen_row("rgb_images", i).tobytes()

    def image_data(self, i: int) -> np.ndarray | bytes:
        """Stored bytes of image ``i`` without a copy (a 1-D uint8 array for vlen datasets), e.g. for
        :func:`flip_core.images.open_rgb`."""
        return self._vlen_row("rgb_images", i)

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` decoded to (H, W, 3) uint8 RGB."""
        return decode_rgb(self._vlen_row("rgb_images", i))

    def image_id(self, i: int) -> int:
        return int(self._array("coco_image_ids")[i])

    def file_name(self, i: int) -> str:
        return _as_str(self.file["file_names"][i])

    def image_size(self, i: int) -> tuple[int, int]:
        """``(H, W)`` of image ``i`` without decoding it (from ``image_shapes``; decodes for reference files)."""
        if "image_shapes" in self.file:
            h, w = self._array("image_shapes")[i]
            return int(h), int(w)
        return tuple(self.image(i).shape[:2])

    def image_encoding(self, i: int) -> str:
        return _as_str(self.file["image_encodings"][i]) if "image_encodings" in self.file else "reencoded-jpeg"

    def instances_of(self, i: int) -> range:
        """Instance rows of image ``i``."""
        start, count = self._array("image_instance_indices")[i]
        return range(int(start), int(start + count))

    # -- instances ---------------------------------------------------------------------------------------------
    def image_of(self, j: int) -> int:
        return int(self._array("instance_masks_images")[j, 0])

    def mask(self, j: int) -> np.ndarray:
        """Instance ``j`` mask as (H, W) bool (PNG value > 128)."""
        return decode_mask_png(self._vlen_row("instance_masks", j))

    def ignore_mask(self, j: int) -> np.ndarray | None:
        """(H, W) bool ignore region of instance ``j``, or None when it has none (or the file has no such dataset)."""
        if "ignore_masks" not in self.file:
            return None
        data = self.file["ignore_masks"][j]
        return decode_mask_png(data.tobytes()) if len(data) else None

    def moments(self, j: int) -> np.ndarray:
        """(5,) float32 ``[mu_x, mu_y, var_x, var_y, cov_xy]`` in frame N."""
        return self._array("positions")[j].copy()

    def bbox(self, j: int) -> np.ndarray:
        """(4,) float32 inclusive ``[x0, y0, x1, y1]`` in frame P."""
        return self._array("instance_mask_bboxes")[j].copy()

    def category_id(self, j: int) -> int:
        return int(self._array("category_ids")[j]) if "category_ids" in self.file else -1

    def source_id(self, j: int) -> str:
        return _as_str(self.file["source_ids"][j]) if "source_ids" in self.file else ""

    def column(self, name: str) -> np.ndarray:
        """A whole dataset as an array (strings decoded to ``str`` objects)."""
        data = self.file[name][...]
        if data.dtype == object and len(data) and isinstance(data[0], bytes):
            data = np.array([_as_str(x) for x in data], dtype=object)
        return data


def _as_str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)

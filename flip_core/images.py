"""Image and mask encodings of the FLIP shard format.

``rgb_images`` items are JPEG bytes (the reference decodes them with turbojpeg, spec 1.1). We keep the source bytes
unchanged when the source already is what that decoder expects: an 8-bit, 3-channel RGB (YCbCr-coded) baseline or
progressive JPEG. Anything else (PNG, grayscale, CMYK, palette, 16-bit, decoded arrays) is re-encoded once with
Pillow at quality 95 (the reference's OpenCV default quality). EXIF orientation is never applied: annotations refer
to the stored pixel order, like COCO's.

``instance_masks`` items are single-channel 8-bit PNGs with values {0, 255} (spec 1.1). We write them with a small
fixed encoder: filter type 0 on every row and the IDAT deflate stream from ISA-L (``isal.isal_zlib``, level 1), a
standard zlib stream that every PNG decoder reads. The bytes are a pure function of the mask for a given ISA-L build
(so reruns are byte-identical), and encoding is dozens of times faster than Pillow's PNG writer (zlib with adaptive
filtering), which dominated the reference converter's time on COCO. Our own masks are decoded by a direct inflate
(:func:`decode_mask_png`); any other PNG by Pillow.

Decoding ``rgb_images`` (:func:`decode_rgb`) uses simplejpeg (libjpeg-turbo, decoding straight into a NumPy array,
about 20% faster per image than Pillow in the training loader) with the same decoder settings as Pillow (accurate
integer DCT, fancy upsampling), so the pixels are identical (``tests/test_shards.py`` checks every JPEG under
``../shared/data``); only YCbCr and greyscale JPEGs take that path, everything else (other formats, CMYK/YCCK or
RGB-coded JPEGs, whose colour conversion differs) goes to Pillow.

The training loader opens an item with :func:`open_rgb` and decodes only the pixel box its patch crops read
(:meth:`RgbSource.decode_region`, libjpeg-turbo's row skipping and column cropping through ``cython_ops._jpeg``):
the same pixels as the whole decode, without the rows below the box and with the rows above it only
entropy-decoded. When that extension is not built (no libjpeg-turbo headers at install time) or a JPEG is not one
it decodes, the whole image is decoded as above.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import simplejpeg
from isal import isal_zlib
from PIL import Image

from datasets_spec.base import RecordError

try:
    from cython_ops._jpeg import DECODABLE as _REGION_COLORSPACES
    from cython_ops._jpeg import JpegRegionDecoder
except ImportError:  # built without libjpeg-turbo headers (setup.py warned): whole-image decoding only
    JpegRegionDecoder = None
    _REGION_COLORSPACES = ()

__all__ = [
    "ENCODING_SOURCE_JPEG",
    "ENCODING_REENCODED_JPEG",
    "JPEG_QUALITY",
    "DEFAULT_MAX_PIXELS",
    "EncodedImage",
    "prepare_image",
    "decode_rgb",
    "RgbSource",
    "open_rgb",
    "region_decoding_available",
    "encode_mask_png",
    "decode_mask_png",
]

ENCODING_SOURCE_JPEG = "source-jpeg"
"""``image_encodings`` value: the stored bytes are the source file's bytes."""
ENCODING_REENCODED_JPEG = "reencoded-jpeg"
"""``image_encodings`` value: the source was decoded and re-encoded as JPEG (quality :data:`JPEG_QUALITY`)."""
JPEG_QUALITY = 95
DEFAULT_MAX_PIXELS = 89_478_485
"""Decompression-bomb limit in pixels (Pillow's default warning threshold); larger images are rejected."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_DEFLATE_LEVEL = 1
"""ISA-L level 1: mask PNGs about 25% larger than zlib level 6, compressed about 30-70x faster."""
MASK_ROW_INDEX_CHUNK = b"rwIX"
"""Private ancillary PNG chunk of our mask PNGs (payload ``>BIIII``: version 1, first row, end row (exclusive),
start and stop byte offsets in the IDAT zlib stream). Rows outside ``[first, end)`` are all 0; the bytes
``[start, stop)`` are a raw-deflate segment that inflates to exactly those rows (filter byte + pixels each)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class EncodedImage:
    """An image ready for ``rgb_images``."""

    data: bytes
    """JPEG bytes."""
    encoding: str
    """:data:`ENCODING_SOURCE_JPEG` or :data:`ENCODING_REENCODED_JPEG`."""
    source_format: str
    """``"<Pillow format>/<Pillow mode>"`` of the source, e.g. ``"JPEG/RGB"``, ``"PNG/L"``, ``"JPEG/CMYK"``;
    ``"array/RGB"`` for decoded arrays."""
    width: int
    height: int


def _open_checked(data: bytes, source_id: str, max_pixels: int) -> Image.Image:
    """Open ``data`` with Pillow, check the header size against ``max_pixels`` before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise RecordError("decompression_bomb", f"{source_id}: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for garbage input
        raise RecordError("unreadable", f"{source_id}: cannot identify image ({type(exc).__name__}: {exc})") from exc
    width, height = img.size
    if width * height > max_pixels:
        raise RecordError(
            "decompression_bomb",
            f"{source_id}: image of {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "pixels (possible decompression bomb); raise --max-pixels if it is genuine",
        )
    return img


def _is_keepable_jpeg(img: Image.Image) -> bool:
    """8-bit 3-channel RGB baseline/progressive JPEG (no lossless, no arithmetic/12-bit variants Pillow refuses)."""
    return img.format == "JPEG" and img.mode == "RGB" and getattr(img, "bits", 8) == 8


def _load_pixels(img: Image.Image, source_id: str, *, draft: bool) -> None:
    """Decode every pixel (or, with ``draft``, every DCT block at 1/8 scale: the whole entropy-coded stream is still
    read, so truncation and corruption are detected at a fraction of the cost)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if draft:
                img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except Exception as exc:
        raise RecordError(
            "unreadable", f"{source_id}: corrupt or truncated image data ({type(exc).__name__}: {exc})"
        ) from exc


def _encode_jpeg(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def prepare_image(data: bytes | np.ndarray, *, source_id: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> EncodedImage:
    """Turn what a spec's ``load_image`` returned into ``rgb_images`` bytes.

    Args:
        data: encoded file bytes, or a decoded (H, W, 3) uint8 RGB array.
        source_id: record id used in error messages.
        max_pixels: images with more pixels are rejected before decoding.

    Returns:
        The JPEG bytes (the source bytes when they are a keepable JPEG), their encoding tag and size.

    Raises:
        RecordError: ``unreadable`` (not an image, truncated, corrupt), ``decompression_bomb`` (too many pixels),
            ``bad_array`` (an array that is not (H, W, 3) uint8).
    """
    if isinstance(data, np.ndarray):
        if data.ndim != 3 or data.shape[2] != 3 or data.dtype != np.uint8:
            raise RecordError("bad_array", f"{source_id}: expected an (H, W, 3) uint8 array, got {data.shape} {data.dtype}")
        if data.shape[0] * data.shape[1] > max_pixels:
            raise RecordError("decompression_bomb", f"{source_id}: {data.shape[1]}x{data.shape[0]} exceeds {max_pixels} pixels")
        rgb = np.ascontiguousarray(data)
        return EncodedImage(
            data=_encode_jpeg(rgb),
            encoding=ENCODING_REENCODED_JPEG,
            source_format="array/RGB",
            width=rgb.shape[1],
            height=rgb.shape[0],
        )
    img = _open_checked(bytes(data), source_id, max_pixels)
    source_format = f"{img.format}/{img.mode}"
    width, height = img.size
    if _is_keepable_jpeg(img):
        _load_pixels(img, source_id, draft=True)
        return EncodedImage(
            data=bytes(data), encoding=ENCODING_SOURCE_JPEG, source_format=source_format, width=width, height=height
        )
    _load_pixels(img, source_id, draft=False)
    rgb = np.asarray(_to_rgb(img))
    return EncodedImage(
        data=_encode_jpeg(rgb), encoding=ENCODING_REENCODED_JPEG, source_format=source_format, width=width, height=height
    )


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (16-bit grayscale is scaled to 8 bits, alpha is dropped)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def decode_rgb(data: bytes | np.ndarray) -> np.ndarray:
    """Decode ``rgb_images`` bytes (or a 1-D uint8 array of them) to a writable, C-contiguous (H, W, 3) uint8 RGB
    array (no EXIF rotation).

    JPEGs go through simplejpeg (module docstring); other formats, and JPEGs it cannot convert to RGB, through
    Pillow. Both give the same pixels for 8-bit JPEGs.
    """
    if not isinstance(data, (bytes, np.ndarray)):
        data = bytes(data)
    if bytes(data[:2]) == b"\xff\xd8":
        try:
            if simplejpeg.decode_jpeg_header(data)[2] in ("YCbCr", "Gray"):  # CMYK/YCCK/RGB-coded: Pillow's rules
                return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False)
        except ValueError:
            pass  # anything libjpeg-turbo calls corrupt gets Pillow's error (or Pillow's tolerance)
    with Image.open(io.BytesIO(data)) as img:
        return np.array(img.convert("RGB") if img.mode != "RGB" else img)


def region_decoding_available() -> bool:
    """True when ``cython_ops._jpeg`` (JPEG region decoding, linked against libjpeg-turbo) is built."""
    return JpegRegionDecoder is not None


class RgbSource:
    """One ``rgb_images`` item, size known from its header, pixels decoded on demand (use :func:`open_rgb`).

    Attributes:
        height, width: image size in px.
        region_decoding: whether :meth:`decode_region` decodes only the box (a YCbCr or greyscale JPEG and the
            extension built); otherwise it returns the whole image.
    """

    __slots__ = ("_data", "_jpeg", "_full", "height", "width", "region_decoding")

    def __init__(self, data: bytes | np.ndarray):
        if not isinstance(data, (bytes, np.ndarray)):
            data = bytes(data)
        self._data, self._jpeg, self._full = data, None, None
        if JpegRegionDecoder is not None and bytes(data[:2]) == b"\xff\xd8":
            try:
                jpeg = JpegRegionDecoder(data)
            except ValueError:
                jpeg = None  # decode_rgb gives Pillow's error, or Pillow's tolerance
            if jpeg is not None and jpeg.colorspace in _REGION_COLORSPACES:
                self._jpeg = jpeg
        if self._jpeg is not None:
            self.height, self.width = self._jpeg.height, self._jpeg.width
        else:
            self._full = decode_rgb(data)
            self.height, self.width = self._full.shape[:2]
        self.region_decoding = self._jpeg is not None

    def decode_region(self, box: tuple[int, int, int, int]) -> tuple[np.ndarray, tuple[int, int]]:
        """Pixels of the half-open box ``(x0, y0, x1, y1)`` (image px; clipped to the image), decoded once.

        Returns:
            ``(region, (x, y))``: (h, w, 3) uint8 RGB covering the clipped box, whose pixel (0, 0) is image pixel
            ``(x, y)``; pixels are contiguous within a row, rows may be strided (a column slice of the decoded
            buffer). It may be larger than the box (JPEG columns are decoded in whole iMCUs; the whole image when
            region decoding is not available); its pixels equal :func:`decode_rgb`'s.

        Raises:
            ValueError: a second call, or an undecodable image (Pillow's message).
        """
        if self._jpeg is None:
            if self._full is None:
                raise ValueError("RgbSource.decode_region may be called once")
            full, self._full = self._full, None
            return full, (0, 0)
        jpeg, self._jpeg = self._jpeg, None
        try:
            region, x, y = jpeg.decode(*box)
        except ValueError:  # corrupt/truncated data libjpeg-turbo warns about: Pillow's rules, like decode_rgb
            return decode_rgb(self._data), (0, 0)
        return region, (x, y)


def open_rgb(data: bytes | np.ndarray) -> RgbSource:
    """Open ``rgb_images`` bytes (or a 1-D uint8 array of them) for region decoding; see :class:`RgbSource`.

    Raises:
        ValueError / PIL.UnidentifiedImageError: not a decodable image (as :func:`decode_rgb`).
    """
    return RgbSource(data)


def _png_chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF)


def encode_mask_png(
    mask: np.ndarray, *, origin: tuple[int, int] = (0, 0), image_shape: tuple[int, int] | None = None
) -> bytes:
    """Encode a binary mask as a single-channel 8-bit PNG with values {0, 255} (spec 1.1 ``instance_masks``).

    Layout: signature, ``IHDR`` (8-bit grey, no interlace), an ``rwIX`` row-index chunk when the mask has a non-zero
    row, one ``IDAT``, ``IEND``; filter type 0 on every row. The zlib stream is cut with two full flushes (dictionary
    reset, byte-aligned) at the first and after the last row holding a non-zero pixel, and ``rwIX`` records those
    rows and the two byte offsets, so :func:`decode_mask_png` inflates only the object's rows (see
    :data:`MASK_ROW_INDEX_CHUNK`). Any PNG decoder reads the file as usual and ignores the chunk (ancillary,
    private, unsafe-to-copy: editors that rewrite ``IDAT`` drop it).

    Args:
        mask: (h, w) bool/uint8 (nonzero = inside). With ``image_shape``, a crop whose outside is all 0.
        origin: ``(row, col)`` of ``mask[0, 0]`` in the full image (only with ``image_shape``).
        image_shape: ``(H, W)`` of the full mask; None when ``mask`` is the full mask.

    Returns:
        PNG bytes; decoding them gives exactly ``255 * (full_mask != 0)``. The crop form and the full form of the
        same mask give the same bytes.
    """
    mask = np.asarray(mask)
    height, width = mask.shape if image_shape is None else image_shape
    r0, c0 = (0, 0) if image_shape is None else origin
    raw = np.zeros((height, width + 1), dtype=np.uint8)  # column 0 is each row's filter byte (0 = None)
    crop = raw[r0 : r0 + mask.shape[0], 1 + c0 : 1 + c0 + mask.shape[1]]
    np.multiply(mask != 0, np.uint8(255), out=crop, casting="unsafe")
    rows = np.flatnonzero(crop.any(axis=1))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale, no interlace
    if len(rows) == 0:  # empty mask: one plain stream, no row index
        idat, index = isal_zlib.compress(raw.data, _PNG_DEFLATE_LEVEL), b""
    else:
        first, end = r0 + int(rows[0]), r0 + int(rows[-1]) + 1
        flat, stride = raw.reshape(-1), width + 1
        z = isal_zlib.compressobj(_PNG_DEFLATE_LEVEL, isal_zlib.DEFLATED, 15)
        head = z.compress(flat[: first * stride].data) + z.flush(isal_zlib.Z_FULL_FLUSH)
        body = z.compress(flat[first * stride : end * stride].data) + z.flush(isal_zlib.Z_FULL_FLUSH)
        idat = head + body + z.compress(flat[end * stride :].data) + z.flush(isal_zlib.Z_FINISH)
        index = _png_chunk(MASK_ROW_INDEX_CHUNK, struct.pack(">BIIII", 1, first, end, len(head), len(head) + len(body)))
    return (_PNG_SIGNATURE + _png_chunk(b"IHDR", header) + index + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def _decode_own_mask_png(data: bytes) -> np.ndarray | None:
    """Fast path for the PNGs :func:`encode_mask_png` writes (8-bit grey, one IDAT, filter 0 on every row).

    Returns the (H, W) bool mask (``> 128``), or None for any other PNG layout (the caller then uses Pillow). With
    an ``rwIX`` chunk only the rows it names are inflated (a raw-deflate segment between two full flushes) and every
    other row is 0; without one (masks written before the chunk existed) the whole stream is inflated. The loader
    decodes several masks per image, and Pillow's generic PNG path costs several times this.
    """
    pos = 8 + 8 + 13 + 4  # signature, IHDR length+tag, IHDR payload, CRC
    if len(data) < pos + 8 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if (depth, colour, interlace) != (8, 0, 0):
        return None
    index = None
    length, tag = struct.unpack(">I4s", data[pos : pos + 8])
    if tag == MASK_ROW_INDEX_CHUNK and length == 17:
        index = struct.unpack(">BIIII", data[pos + 8 : pos + 25])
        pos += 8 + length + 4
        length, tag = struct.unpack(">I4s", data[pos : pos + 8])
    if tag != b"IDAT" or data[pos + 8 + length + 4 + 4 : pos + 8 + length + 4 + 8] != b"IEND":
        return None
    stream = data[pos + 8 : pos + 8 + length]
    stride = width + 1
    if index is not None and index[0] == 1 and index[1] < index[2] <= height and index[3] <= index[4] <= length:
        _, first, end, start, stop = index
        raw = isal_zlib.decompressobj(-15).decompress(stream[start:stop])  # rows [first, end) only
    else:
        first, end = 0, height
        raw = isal_zlib.decompress(stream)
    if len(raw) != (end - first) * stride:
        return None
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(end - first, stride)
    if rows[:, 0].any():  # a filtered row: leave it to a full decoder
        return None
    if (first, end) == (0, height):
        return rows[:, 1:] > 128
    out = np.zeros((height, width), dtype=bool)
    np.greater(rows[:, 1:], 128, out=out[first:end])
    return out


def decode_mask_png(data: bytes) -> np.ndarray:
    """Decode ``instance_masks`` bytes to an (H, W) bool mask (``> 128`` like the reference loader, spec 1.1).

    Our own masks take a direct inflate path; any other PNG (e.g. written by the reference converter with OpenCV)
    is decoded by Pillow.
    """
    data = bytes(data)
    own = _decode_own_mask_png(data)
    if own is not None:
        return own
    with Image.open(io.BytesIO(data)) as img:
        arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr > 128

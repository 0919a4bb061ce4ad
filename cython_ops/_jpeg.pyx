# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Region decoding of baseline/progressive JPEGs with libjpeg-turbo (``jpeg_crop_scanline``/``jpeg_skip_scanlines``).

Private: use :func:`flip_core.images.open_rgb` (``RgbSource.decode_region``). The training loader places every
patch of an image's prompts before it decodes the image (placement needs only the image size), then decodes only
the pixel box the crops read: rows below the box are never decoded, rows above it are entropy-decoded and skipped
(no IDCT, upsampling or colour conversion), and columns outside it are skipped by libjpeg-turbo's horizontal crop
(widened to the iMCU grid). The decoder settings are libjpeg's defaults, the ones the full decode uses (accurate
integer IDCT, fancy upsampling), and libjpeg-turbo produces the same pixels for a region as for the whole image, so a
region is bit-identical to the same box of the full decode (tested against simplejpeg and Pillow).

Errors: every libjpeg error *and warning* (corrupt or truncated data) raises ``ValueError`` with libjpeg's message;
the caller then decodes the whole image the tolerant way.
"""

from libc.string cimport memset

import numpy as np

cimport numpy as cnp

cnp.import_array()

cdef extern from *:
    """
    #include <stdio.h>
    #include <string.h>
    #include <setjmp.h>
    #include <jpeglib.h>

    /* libjpeg reports errors through error_exit (must not return) and warnings through emit_message(-1): both jump
       back to the setjmp of the flip_jpeg_* call that is running, with libjpeg's message. */
    typedef struct {
        struct jpeg_error_mgr pub;
        jmp_buf jump;
        char message[JMSG_LENGTH_MAX];
    } flip_jpeg_err;

    typedef struct {
        struct jpeg_decompress_struct cinfo;
        flip_jpeg_err err;
        int created, started;
    } flip_jpeg;

    static void flip_jpeg_error_exit(j_common_ptr cinfo) {
        flip_jpeg_err *e = (flip_jpeg_err *)cinfo->err;
        (*cinfo->err->format_message)(cinfo, e->message);
        longjmp(e->jump, 1);
    }

    static void flip_jpeg_emit_message(j_common_ptr cinfo, int level) {
        if (level < 0) flip_jpeg_error_exit(cinfo);  /* warnings (corrupt data) are errors here; traces are not */
    }

    /* Parse the header; 0 or -1 (message in j->err.message). */
    static int flip_jpeg_open(flip_jpeg *j, const unsigned char *data, unsigned long size) {
        memset(j, 0, sizeof(*j));
        j->cinfo.err = jpeg_std_error(&j->err.pub);
        j->err.pub.error_exit = flip_jpeg_error_exit;
        j->err.pub.emit_message = flip_jpeg_emit_message;
        if (setjmp(j->err.jump)) return -1;
        jpeg_create_decompress(&j->cinfo);
        j->created = 1;
        jpeg_mem_src(&j->cinfo, data, size);
        jpeg_read_header(&j->cinfo, TRUE);
        return 0;
    }

    /* Start RGB decompression, crop columns [*x0, *x0 + *w) (widened by libjpeg to the iMCU grid; the actual
       offset and width come back in *x0, *w) and skip the first `y0` rows. 0 or -1. */
    static int flip_jpeg_start(flip_jpeg *j, unsigned int *x0, unsigned int *w, unsigned int y0) {
        JDIMENSION xoff = *x0, width = *w;
        if (setjmp(j->err.jump)) return -1;
        j->cinfo.out_color_space = JCS_RGB;
        j->cinfo.dct_method = JDCT_ISLOW;
        j->cinfo.do_fancy_upsampling = TRUE;
        jpeg_start_decompress(&j->cinfo);
        j->started = 1;
        if (xoff > 0 || width < j->cinfo.output_width) {
            jpeg_crop_scanline(&j->cinfo, &xoff, &width);
        }
        if (y0 > 0 && jpeg_skip_scanlines(&j->cinfo, y0) != y0) {
            strcpy(j->err.message, "fewer rows than the image header says");
            return -1;
        }
        *x0 = xoff;
        *w = j->cinfo.output_width;
        return 0;
    }

    /* Decode `rows` rows into out (row stride `stride` bytes). 0 or -1. */
    static int flip_jpeg_read(flip_jpeg *j, unsigned char *out, unsigned int rows, size_t stride) {
        JSAMPROW ptrs[16];
        unsigned int done = 0, k, n, got;
        if (setjmp(j->err.jump)) return -1;
        while (done < rows) {
            n = rows - done < 16 ? rows - done : 16;
            for (k = 0; k < n; k++) ptrs[k] = out + (size_t)(done + k) * stride;
            got = jpeg_read_scanlines(&j->cinfo, ptrs, n);
            if (got == 0) {
                strcpy(j->err.message, "fewer rows than the image header says");
                return -1;
            }
            done += got;
        }
        return 0;
    }

    static void flip_jpeg_close(flip_jpeg *j) {
        if (j->created) jpeg_destroy_decompress(&j->cinfo);  /* also abandons an unfinished decompression */
        j->created = 0;
    }

    static int flip_jpeg_width(flip_jpeg *j) { return (int)j->cinfo.image_width; }
    static int flip_jpeg_height(flip_jpeg *j) { return (int)j->cinfo.image_height; }
    static int flip_jpeg_colorspace(flip_jpeg *j) { return (int)j->cinfo.jpeg_color_space; }
    static const char *flip_jpeg_message(flip_jpeg *j) { return j->err.message; }
    """
    ctypedef struct flip_jpeg:
        pass
    int flip_jpeg_open(flip_jpeg* j, const unsigned char* data, unsigned long size) nogil
    int flip_jpeg_start(flip_jpeg* j, unsigned int* x0, unsigned int* w, unsigned int y0) nogil
    int flip_jpeg_read(flip_jpeg* j, unsigned char* out, unsigned int rows, size_t stride) nogil
    void flip_jpeg_close(flip_jpeg* j) nogil
    int flip_jpeg_width(flip_jpeg* j)
    int flip_jpeg_height(flip_jpeg* j)
    int flip_jpeg_colorspace(flip_jpeg* j)
    const char* flip_jpeg_message(flip_jpeg* j)
    int JCS_GRAYSCALE, JCS_YCbCr

# Colour spaces decoded here (everything else, e.g. CMYK/YCCK or RGB-coded JPEGs, goes to Pillow's rules).
DECODABLE = ("YCbCr", "Gray")


cdef class JpegRegionDecoder:
    """One JPEG, header parsed on construction, decoded once (whole or a region) with :meth:`decode`.

    Args:
        data: the JPEG bytes (bytes or a 1-D uint8 array); kept alive by the decoder.

    Attributes:
        width, height: image size in px.
        colorspace: ``"YCbCr"``, ``"Gray"`` or ``"other"``.

    Raises:
        ValueError: libjpeg cannot parse the header (its message).
    """

    cdef flip_jpeg j
    cdef object _data
    cdef const unsigned char[::1] _view
    cdef bint _used
    cdef readonly int width, height
    cdef readonly str colorspace

    def __cinit__(self, data):
        cdef int err
        self._data = data
        self._view = memoryview(data).cast("B") if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
        memset(&self.j, 0, sizeof(flip_jpeg))
        if self._view.shape[0] < 4:
            raise ValueError(f"JPEG header: {self._view.shape[0]} bytes is not a JPEG")
        with nogil:
            err = flip_jpeg_open(&self.j, &self._view[0], self._view.shape[0])
        if err:
            raise ValueError(f"JPEG header: {flip_jpeg_message(&self.j).decode('latin-1')}")
        self.width = flip_jpeg_width(&self.j)
        self.height = flip_jpeg_height(&self.j)
        space = flip_jpeg_colorspace(&self.j)
        self.colorspace = "YCbCr" if space == JCS_YCbCr else "Gray" if space == JCS_GRAYSCALE else "other"
        self._used = False

    def __dealloc__(self):
        flip_jpeg_close(&self.j)

    def decode(self, int x0, int y0, int x1, int y1):
        """Decode the pixels ``[y0, y1) x [x0, x1)`` (clipped to the image) as RGB.

        libjpeg-turbo's horizontal crop (``jpeg_crop_scanline``) starts and ends on its iMCU grid and treats the crop
        edges as image edges, so with fancy upsampling the first and last decoded columns can differ from the whole
        decode (unless they are the image's own edges). The decode therefore asks for one more column on each side
        and leaves those edge columns out of the returned view.

        Returns:
            ``(region, x_origin, y_origin)``: (h, w, 3) uint8 holding image rows ``[y_origin, y_origin + h)`` (the
            clipped ``[y0, y1)``) and columns ``[x_origin, x_origin + w)``, with ``x_origin <= x0`` and
            ``x_origin + w >= x1``; pixels are contiguous within a row, rows may be strided (a column slice of the
            decoded buffer).

        Raises:
            ValueError: empty or out-of-image box, a second call, or a libjpeg error/warning (its message).
        """
        cdef unsigned int ux0, uw, uy0
        cdef int err, dx0, dx1, vx0, vx1
        cdef cnp.ndarray out
        cdef unsigned char* ptr
        cdef size_t stride
        cdef unsigned int rows
        if self._used:
            raise ValueError("JpegRegionDecoder.decode may be called once")
        self._used = True
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, self.width), min(y1, self.height)
        if x0 >= x1 or y0 >= y1:
            raise ValueError(f"empty region [{y0}, {y1}) x [{x0}, {x1}) of a {self.height}x{self.width} JPEG")
        if self.colorspace not in DECODABLE:
            raise ValueError(f"JPEG colour space {self.colorspace} is not decoded here")
        dx0, dx1 = max(x0 - 1, 0), min(x1 + 1, self.width)  # one spare column each side (see above)
        ux0, uw, uy0 = dx0, dx1 - dx0, y0
        with nogil:
            err = flip_jpeg_start(&self.j, &ux0, &uw, uy0)
        if err:
            raise ValueError(f"JPEG: {flip_jpeg_message(&self.j).decode('latin-1')}")
        rows = y1 - y0
        out = np.empty((rows, uw, 3), dtype=np.uint8)
        ptr = <unsigned char*>cnp.PyArray_DATA(out)
        stride = 3 * <size_t>uw
        with nogil:
            err = flip_jpeg_read(&self.j, ptr, rows, stride)
        flip_jpeg_close(&self.j)
        if err:
            raise ValueError(f"JPEG: {flip_jpeg_message(&self.j).decode('latin-1')}")
        dx0, dx1 = ux0, ux0 + uw
        vx0 = dx0 + 1 if dx0 > 0 else 0  # an edge column that is not the image's own edge is not trusted
        vx1 = dx1 - 1 if dx1 < self.width else dx1
        return out[:, vx0 - dx0:vx1 - dx0], vx0, int(y0)

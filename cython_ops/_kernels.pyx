# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython kernels of ``cython_ops``: patch placement, patch crops and mask-target sampling.

Private: call them through :mod:`cython_ops` (the wrappers in ``_cython_backend.py`` validate every argument; the
kernels trust theirs). All kernels run without the GIL; the two that draw (placement, mask targets) hold the
``rng.bit_generator.lock`` meanwhile (as numpy requires for direct ``bitgen_t`` use), so calls with *different*
generators run in parallel threads. The crops draw nothing, so they can run after placement, on an image region
decoded once the placement of every prompt is known (``flip_core.data.dataset``). Random numbers
come only from numpy's C distribution functions on that ``bitgen_t`` (``random_standard_normal``,
``random_standard_uniform``, ``random_bounded_uint64``), the same functions ``numpy.random.Generator`` uses, so
the NumPy reference (:mod:`cython_ops.reference`) reproduces every draw.
"""

from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from numpy.random cimport bitgen_t
from numpy.random.c_distributions cimport (
    random_bounded_uint64,
    random_standard_normal,
    random_standard_uniform,
)

cdef enum:
    NUM_GROUPS = 7
    DIST_CAP = 65  # distances are saturated here: 0..64 exact, 65 means "> 64" (group 6 only)


cdef bitgen_t* _bitgen(object rng) except NULL:
    return <bitgen_t*>PyCapsule_GetPointer(rng.bit_generator.capsule, "BitGenerator")


# ---------------------------------------------------------------------------------------------------------------
# Patch sampling (spec 3.3) with the nominal overlap rule on a uniform grid (spec 3.4 done right)
# ---------------------------------------------------------------------------------------------------------------

cdef struct Grid:
    int cell          # cell edge in px (twice the smallest patch size with a non-zero quota)
    int gw, gh        # grid size in cells
    int32_t* head     # (gw * gh,) first entry of each cell's list, -1 = empty
    int32_t* ent_box  # entry -> box id
    int32_t* ent_next # entry -> next entry of the same cell, -1 = end
    int64_t n_ent
    double* box       # (4 * n_boxes,) x0, y0, x1, y1 of accepted boxes
    int32_t* stamp    # box -> id of the last query that counted it
    int n_box


cdef inline double _dmin(double a, double b) noexcept nogil:
    return a if a < b else b


cdef inline double _dmax(double a, double b) noexcept nogil:
    return a if a > b else b


cdef void _grid_free(Grid* g) noexcept nogil:
    free(g.head)
    free(g.ent_box)
    free(g.ent_next)
    free(g.box)
    free(g.stamp)


cdef int _grid_init(Grid* g, int cell, int width, int height, int64_t max_boxes, int64_t max_entries) noexcept nogil:
    cdef int64_t i
    g.cell = cell
    g.gw = width // cell + 1
    g.gh = height // cell + 1
    g.n_ent = 0
    g.n_box = 0
    g.head = <int32_t*>malloc(<int64_t>g.gw * g.gh * sizeof(int32_t))
    g.ent_box = <int32_t*>malloc(max_entries * sizeof(int32_t) + 1)
    g.ent_next = <int32_t*>malloc(max_entries * sizeof(int32_t) + 1)
    g.box = <double*>malloc(4 * max_boxes * sizeof(double) + 1)
    g.stamp = <int32_t*>malloc(max_boxes * sizeof(int32_t) + 1)
    if g.head == NULL or g.ent_box == NULL or g.ent_next == NULL or g.box == NULL or g.stamp == NULL:
        _grid_free(g)
        return -1
    for i in range(<int64_t>g.gw * g.gh):
        g.head[i] = -1
    return 0


cdef bint _overlaps_too_much(Grid* g, double x0, double y0, double x1, double y1, double limit,
                             int32_t query) noexcept nogil:
    """True when the summed intersection area with placed boxes exceeds ``limit`` (each box counted once)."""
    cdef int cx, cy, e, k
    cdef double ix, iy, total = 0.0
    cdef double* bb
    for cy in range(<int>(y0 / g.cell), <int>(y1 / g.cell) + 1):
        for cx in range(<int>(x0 / g.cell), <int>(x1 / g.cell) + 1):
            e = g.head[cy * g.gw + cx]
            while e >= 0:
                k = g.ent_box[e]
                e = g.ent_next[e]
                if g.stamp[k] == query:
                    continue
                g.stamp[k] = query
                bb = g.box + 4 * k
                ix = _dmin(bb[2], x1) - _dmax(bb[0], x0)
                if ix <= 0.0:
                    continue
                iy = _dmin(bb[3], y1) - _dmax(bb[1], y0)
                if iy <= 0.0:
                    continue
                total += ix * iy
                if total > limit:
                    return True
    return False


cdef void _grid_add(Grid* g, double x0, double y0, double x1, double y1) noexcept nogil:
    cdef int cx, cy, c
    cdef int32_t k = g.n_box
    g.box[4 * k] = x0
    g.box[4 * k + 1] = y0
    g.box[4 * k + 2] = x1
    g.box[4 * k + 3] = y1
    g.stamp[k] = -1
    g.n_box += 1
    for cy in range(<int>(y0 / g.cell), <int>(y1 / g.cell) + 1):
        for cx in range(<int>(x0 / g.cell), <int>(x1 / g.cell) + 1):
            c = cy * g.gw + cx
            g.ent_box[g.n_ent] = k
            g.ent_next[g.n_ent] = g.head[c]
            g.head[c] = <int32_t>g.n_ent
            g.n_ent += 1


cdef void _bilinear(const uint8_t[:, :, :] img, int ox, int oy, double cx, double cy, int p, uint8_t* out,
                    float* hbuf, uint8_t* row) noexcept nogil:
    """(3, p, p) native-scale bilinear crop, separable; see ``reference._bilinear_patch`` for the exact formula.
    ``(cx, cy)`` is in image pixels (frame P); ``img`` holds the image from pixel ``(ox, oy)`` on.

    Horizontal float32 blend of the p + 1 source rows into ``hbuf`` ((p + 1) x 3p), vertical blend into one
    interleaved RGB row, then de-interleaving into the channel planes. Row loops are contiguous with pointer-sized
    indices so the compiler vectorises them. ``hbuf``/``row`` are scratch of (p + 1) 3p floats / 3p bytes.
    """
    cdef double h = 0.5 * p
    cdef double bx = cx - h + 0.5, by = cy - h + 0.5
    cdef int x0 = <int>bx, y0 = <int>by
    cdef float ax = <float>(1.0 - (bx - x0)), dx = <float>(bx - x0)
    cdef float ay = <float>(1.0 - (by - y0)), dy = <float>(by - y0)
    cdef int yy, xx
    cdef Py_ssize_t j, n = 3 * p  # pointer-sized index: the build's -fwrapv blocks vectorising int offsets
    cdef const uint8_t* src
    cdef const uint8_t* src3
    cdef float* hr
    cdef float* hn
    for yy in range(p + 1):
        src = &img[y0 - oy + yy, x0 - ox, 0]
        src3 = src + 3
        hr = hbuf + yy * n
        for j in range(n):
            hr[j] = ax * src[j] + dx * src3[j]
    for yy in range(p):
        hr = hbuf + yy * n
        hn = hr + n
        for j in range(n):
            row[j] = <uint8_t>(<int>(ay * hr[j] + dy * hn[j] + <float>0.5))
        for xx in range(p):
            out[yy * p + xx] = row[3 * xx]
            out[(p + yy) * p + xx] = row[3 * xx + 1]
            out[(2 * p + yy) * p + xx] = row[3 * xx + 2]


cdef enum:
    MAX_RES = 16  # patch sizes are distinct powers of two <= 256 (validated by the wrapper): at most 9


cdef int _place(int width, int height, double mx, double my, double sx, double sy, double a, double b, int nres,
                const int* sizes, const int* quota, double thr, double* pcen, float* cout, int* counts,
                int* box, bitgen_t* bg) noexcept nogil:
    """Placement loop; ``box`` gets the half-open (x0, y0, x1, y1) pixel box the crops of the placed patches read
    (x1 = -1 when nothing was placed)."""
    cdef int r, p, q, att, acc, total = 0, cell = 0, span, bx, by
    cdef int64_t cofs = 0, entries = 0
    cdef int32_t query = 0
    cdef double h, limit, z1, z2, u, v, cx, cy
    cdef Grid g
    box[0] = width
    box[1] = height
    box[2] = -1
    box[3] = -1
    for r in range(nres):
        counts[r] = 0
        total += quota[r]
        if quota[r] > 0 and cell == 0:
            cell = 2 * sizes[r]  # grid cell: twice the smallest requested patch size
    if total == 0:
        return 0
    for r in range(nres):  # a box of size p covers at most (p // cell + 2)^2 cells
        span = sizes[r] // cell + 2
        entries += <int64_t>quota[r] * span * span
    if entries >= 2147483647:  # list entries are indexed with int32
        return -1
    if _grid_init(&g, cell, width, height, total, entries) != 0:
        return -1
    for r in range(nres):
        p = sizes[r]
        q = quota[r]
        h = 0.5 * p
        limit = thr * p * p
        acc = 0
        for att in range(10 * q):
            if acc == q:
                break
            z1 = random_standard_normal(bg)
            z2 = random_standard_normal(bg)
            u = sx * z1
            v = sy * z2
            cx = mx + (a * u + b * v)
            cy = my + (-b * u + a * v)
            if not (cx - h >= 0.0 and cx + h < width - 1 and cy - h >= 0.0 and cy + h < height - 1):
                continue
            query += 1
            if _overlaps_too_much(&g, cx - h, cy - h, cx + h, cy + h, limit, query):
                continue
            _grid_add(&g, cx - h, cy - h, cx + h, cy + h)
            bx = <int>(cx - h + 0.5)  # first column/row the bilinear crop reads (see _bilinear); it reads p + 1
            by = <int>(cy - h + 0.5)
            if bx < box[0]:
                box[0] = bx
            if by < box[1]:
                box[1] = by
            if bx + p + 1 > box[2]:
                box[2] = bx + p + 1
            if by + p + 1 > box[3]:
                box[3] = by + p + 1
            pcen[2 * (cofs + acc)] = cx
            pcen[2 * (cofs + acc) + 1] = cy
            cout[2 * (cofs + acc)] = <float>(cx / 128.0 - width / 256.0)
            cout[2 * (cofs + acc) + 1] = <float>(cy / 128.0 - height / 256.0)
            acc += 1
        counts[r] = acc
        cofs += q
    _grid_free(&g)
    return 0


cdef int _to_c(tuple values, int* out) except -1:
    cdef int i, n = len(values)
    if n > MAX_RES:
        raise ValueError(f"at most {MAX_RES} patch sizes, got {n}")
    for i in range(n):
        out[i] = values[i]
    return n


def place_patches(int width, int height, double mx, double my, double sx, double sy, double a, double b,
                  tuple sizes, tuple quota, double thr, double[:, ::1] centres_out, float[:, ::1] coords_out,
                  object rng):
    """Place patches (spec 3.3) into quota-sized slots of the output buffers: frame-P centres (float64) and frame-M
    coordinates (float32); see :func:`cython_ops.place_patches`. Returns ``(counts, box)``: patches placed per
    resolution and the half-open pixel box ``(x0, y0, x1, y1)`` their crops read (None without patches).
    Raises MemoryError."""
    cdef bitgen_t* bg = _bitgen(rng)
    cdef int err, r, nres
    cdef int c_sizes[MAX_RES]
    cdef int c_quota[MAX_RES]
    cdef int c_counts[MAX_RES]
    cdef int box[4]
    cdef double* pcen = &centres_out[0, 0] if centres_out.shape[0] > 0 else NULL
    cdef float* cout = &coords_out[0, 0] if coords_out.shape[0] > 0 else NULL
    nres = _to_c(sizes, c_sizes)
    _to_c(quota, c_quota)
    with rng.bit_generator.lock:
        with nogil:
            err = _place(width, height, mx, my, sx, sy, a, b, nres, c_sizes, c_quota, thr, pcen, cout, c_counts,
                         box, bg)
    if err:
        raise MemoryError("cython_ops: out of memory in place_patches")
    counts = tuple([c_counts[r] for r in range(nres)])
    return counts, ((box[0], box[1], box[2], box[3]) if box[2] >= 0 else None)


cdef int _crop(const uint8_t[:, :, :] img, int ox, int oy, int nres, const int* sizes, const int* quota,
               const int* counts, const double* pcen, uint8_t* pout) noexcept nogil:
    cdef int r, p, k, pmax = 1
    cdef int64_t pofs = 0, cofs = 0
    cdef uint8_t row[3 * 256]  # bilinear scratch; patch sizes are <= 256 (validated by the wrapper)
    cdef float* hbuf
    for r in range(nres):
        if counts[r] > 0:
            pmax = sizes[r]
    hbuf = <float*>malloc(<int64_t>(pmax + 1) * 3 * pmax * sizeof(float))
    if hbuf == NULL:
        return -1
    for r in range(nres):
        p = sizes[r]
        for k in range(counts[r]):
            _bilinear(img, ox, oy, pcen[2 * (cofs + k)], pcen[2 * (cofs + k) + 1], p,
                      pout + pofs + <int64_t>k * 3 * p * p, hbuf, row)
        pofs += <int64_t>quota[r] * 3 * p * p
        cofs += quota[r]
    free(hbuf)
    return 0


def crop_patches(const uint8_t[:, :, :] image, int ox, int oy, tuple sizes, tuple quota, tuple counts,
                 const double[:, ::1] centres, uint8_t[::1] patches_out):
    """Bilinear crops (spec 3.3 step 5) of placed patches into quota-sized slots of ``patches_out``; ``image`` is
    the image region whose pixel (0, 0) is image pixel (ox, oy) and which covers every crop, with contiguous rows
    (strides (any, 3, 1); rows may be strided, e.g. a column slice; the wrapper checks both).
    See :func:`cython_ops.crop_patches`. Raises MemoryError."""
    cdef int err, nres
    cdef int c_sizes[MAX_RES]
    cdef int c_quota[MAX_RES]
    cdef int c_counts[MAX_RES]
    cdef uint8_t* pout = &patches_out[0] if patches_out.shape[0] > 0 else NULL
    cdef const double* pcen = &centres[0, 0] if centres.shape[0] > 0 else NULL
    if pout == NULL or pcen == NULL:
        return
    nres = _to_c(sizes, c_sizes)
    _to_c(quota, c_quota)
    _to_c(counts, c_counts)
    with nogil:
        err = _crop(image, ox, oy, nres, c_sizes, c_quota, c_counts, pcen, pout)
    if err:
        raise MemoryError("cython_ops: out of memory in crop_patches")


# ---------------------------------------------------------------------------------------------------------------
# Mask targets (spec 3.6): boundary, exact two-pass L1 distance (saturated), cumulative groups, sampling
#
# Layout. Pixels of the crop are addressed by their flat crop index i = y * cw + x. Only the window "inside-pixel
# bounding box grown by DIST_CAP" can hold pixels with d <= 64 (a boundary pixel is an inside pixel or a 4-neighbour
# of one); everything else in the crop is an outside pixel with d > 64 (bucket 6). The distance transform runs on the
# window only. The per-label lists of the reference ("flat indices sorted by bucket, raster order within a bucket")
# are stored as runs of equal (label, bucket) key in raster order; the k-th list entry is found by a binary search
# over the runs of its bucket.
# ---------------------------------------------------------------------------------------------------------------

cdef inline uint8_t _umin(uint8_t a, uint8_t b) noexcept nogil:
    return a if a < b else b


cdef inline uint64_t _load8(const uint8_t* p) noexcept nogil:
    """8 bytes as one word (unaligned-safe), to skip uniform stretches 8 pixels at a time."""
    cdef uint64_t w
    memcpy(&w, p, 8)
    return w


cdef void _inside_stats(const uint8_t* base, Py_ssize_t stride, int cw, int chh, int64_t* n_in,
                        int* box) noexcept nogil:
    """Count the inside (non-zero) pixels of the crop and their bounding box ``box = (x0, y0, x1, y1)``."""
    cdef int x, y, s
    cdef const uint8_t* row
    n_in[0] = 0
    box[0] = cw
    box[1] = chh
    box[2] = -1
    box[3] = -1
    for y in range(chh):
        row = base + y * stride
        s = 0
        for x in range(cw):
            s += row[x] != 0
        if s == 0:
            continue
        n_in[0] += s
        if box[1] > y:
            box[1] = y
        box[3] = y
        x = 0
        while x + 8 <= cw and _load8(row + x) == 0:
            x += 8
        while row[x] == 0:
            x += 1
        if box[0] > x:
            box[0] = x
        x = cw
        while x >= 8 and _load8(row + x - 8) == 0:
            x -= 8
        x -= 1
        while row[x] == 0:
            x -= 1
        if box[2] < x:
            box[2] = x


cdef extern from *:
    """
    /* One doubling step of the in-row min-plus scan of cython_ops/_kernels.pyx:
       dst[x] = min(src[x], src[x - k] + k) (from_left) or min(src[x], src[x + k] + k). Plain C only for __restrict,
       which tells the compiler the two rows do not overlap, so it vectorises the loop for every k; kept out of line
       so that the vectorised body is not lost when inlined into the large caller. */
    #if defined(__GNUC__)
    #define FLIP_NOINLINE __attribute__((noinline))
    #elif defined(_MSC_VER)
    #define FLIP_NOINLINE __declspec(noinline)
    #else
    #define FLIP_NOINLINE
    #endif
    static FLIP_NOINLINE void flip_shift_min(unsigned char *__restrict dst, const unsigned char *__restrict src,
                                             int n, int k, int from_left) {
        ptrdiff_t x, m = n > k ? (ptrdiff_t)(n - k) : 0, kk = k < n ? k : n;
        const unsigned char *__restrict a = from_left ? src + kk : src;  /* value kept */
        const unsigned char *__restrict b = from_left ? src : src + kk;  /* shifted neighbour */
        unsigned char *__restrict o = from_left ? dst + kk : dst;
        unsigned char v, kc = (unsigned char)k;
        for (x = 0; x < m; x++) { v = (unsigned char)(b[x] + kc); o[x] = a[x] < v ? a[x] : v; }
        if (from_left) memcpy(dst, src, (size_t)kk);
        else memcpy(dst + m, src + m, (size_t)kk);
    }
    """
    void flip_shift_min(uint8_t* dst, const uint8_t* src, int n, int k, bint from_left) noexcept nogil


cdef void _scan(uint8_t* d, uint8_t* tmp, int w, int row_min, bint from_left) noexcept nogil:
    """In-row min-plus propagation ``d[x] = min_{x'} d[x'] + |x - x'|`` over x' on one side (left or right), by
    doubling (offsets 1, 2, 4, ..., 64; exact up to the saturation) with contiguous, vectorised sweeps that ping-pong
    between ``d`` and ``tmp``. Values stay <= DIST_CAP (+ 64 < 256 before the min)."""
    cdef int k = 1, x
    cdef uint8_t* src = d
    cdef uint8_t* dst = tmp
    cdef uint8_t* t
    if row_min >= DIST_CAP - 1:
        return
    while k < w and k <= DIST_CAP - 1 - row_min:
        flip_shift_min(dst, src, w, k, from_left)
        t = src
        src = dst
        dst = t
        k *= 2
    if src != d:
        memcpy(d, src, w)


cdef inline uint8_t _fwd_pixel(const uint8_t* cur, const uint8_t* up, const uint8_t* dn, const uint8_t* du,
                               int x, int ww) noexcept nogil:
    """Forward-pass value of an edge pixel x (0 or ww - 1): 0 on the boundary, else 1 + the value above."""
    cdef uint8_t c = cur[x] != 0
    cdef uint8_t b = (c ^ (up[x] != 0)) | (c ^ (dn[x] != 0))
    if x > 0:
        b = b | (c ^ (cur[x - 1] != 0))
    if x < ww - 1:
        b = b | (c ^ (cur[x + 1] != 0))
    return 0 if b else _umin(du[x] + 1, DIST_CAP)


cdef void _distance(const uint8_t* base, Py_ssize_t stride, int ww, int wh, uint8_t* d, uint8_t* tmp) noexcept nogil:
    """Saturated L1 distance to the boundary over a ww x wh window into rows 1..wh of ``d`` ((wh + 2) x ww; rows 0
    and wh + 1 are DIST_CAP sentinels written here).

    Boundary pixels (a 4-neighbour inside the window with the other value) get 0. Forward pass top-down (from the
    row above, then from the left), backward pass bottom-up (from the row below, then from the right): the classic
    two-pass city-block transform, exact; saturating at DIST_CAP keeps it exact below the cap.
    """
    cdef int x, y
    cdef const uint8_t* cur
    cdef const uint8_t* up
    cdef const uint8_t* dn
    cdef uint8_t* dr
    cdef uint8_t* du
    cdef uint8_t c, b, t, row_min
    for x in range(ww):
        d[x] = DIST_CAP
        d[(wh + 1) * ww + x] = DIST_CAP
    for y in range(wh):
        cur = base + y * stride
        up = cur - stride if y > 0 else cur
        dn = cur + stride if y < wh - 1 else cur
        dr = d + (y + 1) * ww
        du = dr - ww
        dr[0] = _fwd_pixel(cur, up, dn, du, 0, ww)
        for x in range(1, ww - 1):  # branch-free interior (vectorised)
            c = cur[x] != 0
            b = (c ^ (up[x] != 0)) | (c ^ (dn[x] != 0)) | (c ^ (cur[x - 1] != 0)) | (c ^ (cur[x + 1] != 0))
            t = _umin(du[x] + 1, DIST_CAP)
            dr[x] = t & <uint8_t>(b - 1)
        dr[ww - 1] = _fwd_pixel(cur, up, dn, du, ww - 1, ww)
        row_min = DIST_CAP
        for x in range(ww):
            row_min = _umin(row_min, dr[x])
        _scan(dr, tmp, ww, row_min, True)
    for y in range(wh - 1, -1, -1):
        dr = d + (y + 1) * ww
        du = dr + ww
        for x in range(ww):
            dr[x] = _umin(dr[x], du[x] + 1)
        row_min = DIST_CAP
        for x in range(ww):
            row_min = _umin(row_min, dr[x])
        _scan(dr, tmp, ww, row_min, False)


cdef struct Runs:
    int32_t* start    # flat crop index of the first pixel
    int32_t* length
    uint8_t* key      # label * 8 + bucket
    int64_t n


cdef inline void _emit(Runs* r, uint8_t key, int32_t start, int32_t length) noexcept nogil:
    cdef int64_t last = r.n - 1
    if last >= 0 and r.key[last] == key and r.start[last] + r.length[last] == start:
        r.length[last] += length
        return
    r.start[r.n] = start
    r.length[r.n] = length
    r.key[r.n] = key
    r.n += 1


cdef void _build_runs(const uint8_t* base, Py_ssize_t stride, int cw, int chh, int wx0, int wy0, int ww, int wh,
                      const uint8_t* d, uint8_t* keys, Runs* r) noexcept nogil:
    """Runs of equal key = label * 8 + bucket over the whole crop in raster order (outside the window: key 6)."""
    cdef int x, y, s, wy
    cdef const uint8_t* cur
    cdef const uint8_t* dr
    cdef uint8_t dd, k
    cdef uint64_t pattern
    r.n = 0
    for y in range(chh):
        wy = y - wy0
        if wy < 0 or wy >= wh:
            _emit(r, 6, y * cw, cw)
            continue
        if wx0 > 0:
            _emit(r, 6, y * cw, wx0)
        cur = base + y * stride + wx0
        dr = d + (wy + 1) * ww
        for x in range(ww):
            dd = dr[x]
            keys[x] = ((cur[x] != 0) << 3) + (dd > 2) + (dd > 4) + (dd > 8) + (dd > 16) + (dd > 32) + (dd > 64)
        x = 0
        while x < ww:
            k = keys[x]
            s = x
            x += 1
            pattern = k * <uint64_t>0x0101010101010101
            while x + 8 <= ww and _load8(keys + x) == pattern:
                x += 8
            while x < ww and keys[x] == k:
                x += 1
            _emit(r, k, y * cw + wx0 + s, x - s)
        if wx0 + ww < cw:
            _emit(r, 6, y * cw + wx0 + ww, cw - wx0 - ww)


cdef int _source_group(const int64_t* sizes, int g) noexcept nogil:
    """First non-empty group in the order g, g-1, g+1, g-2, g+2, ... (spec 3.6 step 4); -1 if none."""
    cdef int off, cand
    for off in range(NUM_GROUPS):
        cand = g - off
        if cand >= 0 and sizes[cand] > 0:
            return cand
        cand = g + off
        if cand < NUM_GROUPS and sizes[cand] > 0:
            return cand
    return -1


cdef int64_t _build_rank_table(const int64_t* cum, int64_t lo, int64_t hi, int64_t n_pix, int32_t* tab,
                               int* shift) noexcept nogil:
    """Rank -> run lookup table for the runs [lo, hi) of one key (``cum`` = pixels before each run within the key).

    Entry t is the run holding rank ``t << shift``, with the smallest shift that gives at most ``hi - lo + 1``
    entries, so an entry spans at most about two average runs and :func:`_select` walks a run or two from it
    instead of binary-searching. Returns the number of entries written."""
    cdef int64_t n_runs = hi - lo, t, size, r = lo
    shift[0] = 0
    if n_runs <= 0:
        return 0
    while (n_pix >> shift[0]) > n_runs:
        shift[0] += 1
    size = ((n_pix - 1) >> shift[0]) + 1
    for t in range(size):
        while r + 1 < hi and cum[r + 1] <= (t << shift[0]):
            r += 1
        tab[t] = <int32_t>r
    return size


cdef inline int32_t _select(const int32_t* start, const int64_t* cum, const int32_t* tab, int shift, int64_t hi,
                            int64_t k) noexcept nogil:
    """Pixel of rank k among the runs of one key: table entry, then forward to the run holding k (runs end at hi)."""
    cdef int64_t r = tab[k >> shift]
    while r + 1 < hi and cum[r + 1] <= k:
        r += 1
    return start[r] + <int32_t>(k - cum[r])


cdef int _mask_targets(const uint8_t[:, ::1] mask, int x0, int y0, int x1, int y1, const int64_t[::1] spg,
                       float* cout, uint8_t* lout, bitgen_t* bg) noexcept nogil:
    """Returns 0 on success, 1 when the crop has no inside or no outside pixel, -1 when out of memory."""
    cdef int width = mask.shape[1], height = mask.shape[0]
    cdef int cw = x1 - x0 + 1, chh = y1 - y0 + 1
    cdef Py_ssize_t stride = mask.shape[1]
    cdef const uint8_t* base = &mask[y0, x0]
    cdef int64_t n = <int64_t>cw * chh, n_in, i, j, k, out = 0, max_k = 0, rank
    cdef int box[4]
    cdef int wx0, wy0, ww, wh, g, lab, src, b, key
    cdef int64_t pix_count[16]
    cdef int64_t run_count[16]
    cdef int64_t run_first[17]
    cdef int64_t tab_first[16]
    cdef int tab_shift[16]
    cdef int64_t fill[16]
    cdef int64_t sizes[2][NUM_GROUPS]
    cdef int32_t pix
    cdef double px, py
    cdef uint8_t* d = NULL
    cdef uint8_t* tmp = NULL
    cdef uint64_t* draw = NULL
    cdef int32_t* s_start = NULL
    cdef int64_t* s_cum = NULL
    cdef int32_t* tab = NULL
    cdef Runs runs
    runs.start = NULL
    runs.length = NULL
    runs.key = NULL

    _inside_stats(base, stride, cw, chh, &n_in, box)
    if n_in == 0 or n_in == n:
        return 1
    wx0 = box[0] - DIST_CAP if box[0] > DIST_CAP else 0
    wy0 = box[1] - DIST_CAP if box[1] > DIST_CAP else 0
    ww = (box[2] + DIST_CAP if box[2] + DIST_CAP < cw else cw - 1) - wx0 + 1
    wh = (box[3] + DIST_CAP if box[3] + DIST_CAP < chh else chh - 1) - wy0 + 1
    for g in range(NUM_GROUPS):
        if spg[g] > max_k:
            max_k = spg[g]
    k = <int64_t>ww * wh + 2 * <int64_t>chh + 2  # worst-case number of runs
    d = <uint8_t*>malloc(<int64_t>(wh + 2) * ww)
    tmp = <uint8_t*>malloc(ww)
    draw = <uint64_t*>malloc((max_k + 1) * sizeof(uint64_t))
    runs.start = <int32_t*>malloc(k * sizeof(int32_t))
    runs.length = <int32_t*>malloc(k * sizeof(int32_t))
    runs.key = <uint8_t*>malloc(k)
    s_start = <int32_t*>malloc(k * sizeof(int32_t))
    s_cum = <int64_t*>malloc(k * sizeof(int64_t))
    tab = <int32_t*>malloc((k + 16) * sizeof(int32_t))  # rank tables: at most runs + 1 entries per key
    if (d == NULL or tmp == NULL or draw == NULL or runs.start == NULL or runs.length == NULL or runs.key == NULL
            or s_start == NULL or s_cum == NULL or tab == NULL):
        out = -1
    else:
        _distance(base + wy0 * stride + wx0, stride, ww, wh, d, tmp)
        _build_runs(base, stride, cw, chh, wx0, wy0, ww, wh, d, tmp, &runs)
        # counting sort of the runs by key, keeping raster order within a key
        for key in range(16):
            pix_count[key] = 0
            run_count[key] = 0
        for i in range(runs.n):
            pix_count[runs.key[i]] += runs.length[i]
            run_count[runs.key[i]] += 1
        run_first[0] = 0
        for key in range(16):
            run_first[key + 1] = run_first[key] + run_count[key]
            fill[key] = run_first[key]
            pix_count[key] = 0
        for i in range(runs.n):
            key = runs.key[i]
            s_start[fill[key]] = runs.start[i]
            s_cum[fill[key]] = pix_count[key]
            pix_count[key] += runs.length[i]
            fill[key] += 1
        j = 0
        for key in range(16):
            tab_first[key] = j
            j += _build_rank_table(s_cum, run_first[key], run_first[key + 1], pix_count[key], tab + j,
                                   &tab_shift[key])
        for lab in range(2):
            sizes[lab][0] = pix_count[lab * 8]
            for g in range(1, NUM_GROUPS):
                sizes[lab][g] = sizes[lab][g - 1] + pix_count[lab * 8 + g]
        for g in range(NUM_GROUPS):
            for lab in range(1, -1, -1):
                k = spg[g] // 2 if lab == 1 else spg[g] - spg[g] // 2
                if k == 0:
                    continue
                src = _source_group(sizes[lab], g)
                for j in range(k):
                    draw[j] = random_bounded_uint64(bg, 0, <uint64_t>(sizes[lab][src] - 1), 0, 0)
                for j in range(k):
                    rank = <int64_t>draw[j]
                    b = 0
                    while rank >= pix_count[lab * 8 + b]:
                        rank -= pix_count[lab * 8 + b]
                        b += 1
                    key = lab * 8 + b
                    pix = _select(s_start, s_cum, tab + tab_first[key], tab_shift[key], run_first[key + 1], rank)
                    px = <double>(pix % cw + x0) + (random_standard_uniform(bg) - 0.5)
                    py = <double>(pix // cw + y0) + (random_standard_uniform(bg) - 0.5)
                    cout[2 * out] = <float>(px / 128.0 - width / 256.0)
                    cout[2 * out + 1] = <float>(py / 128.0 - height / 256.0)
                    lout[out] = lab
                    out += 1
        out = 0
    free(d)
    free(tmp)
    free(draw)
    free(runs.start)
    free(runs.length)
    free(runs.key)
    free(s_start)
    free(s_cum)
    free(tab)
    return <int>out


def mask_targets(const uint8_t[:, ::1] mask, int x0, int y0, int x1, int y1, const int64_t[::1] spg,
                 float[:, ::1] coords_out, uint8_t[::1] labels_out, object rng):
    """Sample mask targets in the inclusive crop ``[x0, x1] x [y0, y1]`` (frame P) into the output buffers; see
    :func:`cython_ops.sample_mask_targets`. Returns False when the crop has no inside or no outside pixel."""
    cdef bitgen_t* bg = _bitgen(rng)
    cdef int err
    with rng.bit_generator.lock:
        with nogil:
            err = _mask_targets(mask, x0, y0, x1, y1, spg, &coords_out[0, 0], &labels_out[0], bg)
    if err < 0:
        raise MemoryError("cython_ops: out of memory in mask_targets")
    return err == 0

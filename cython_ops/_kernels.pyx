# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython kernels of ``cython_ops``: patch placement/extraction and mask-target sampling.

Private: call them through :mod:`cython_ops` (the wrappers in ``_cython_backend.py`` validate every argument; the
kernels trust theirs). Both kernels run without the GIL while holding the ``rng.bit_generator.lock`` (as numpy
requires for direct ``bitgen_t`` use), so calls with *different* generators run in parallel threads. Random numbers
come only from numpy's C distribution functions on that ``bitgen_t`` (``random_standard_normal``,
``random_standard_uniform``, ``random_bounded_uint64``), the same functions ``numpy.random.Generator`` uses, so
the NumPy reference (:mod:`cython_ops.reference`) reproduces every draw.
"""

from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
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
    int cell          # cell edge in px (the largest patch size with a non-zero quota)
    int gw, gh        # grid size in cells
    int32_t* head     # (gw * gh,) first entry of each cell's list, -1 = empty
    int32_t* ent_box  # entry -> box id
    int32_t* ent_next # entry -> next entry of the same cell, -1 = end
    int n_ent
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


cdef int _grid_init(Grid* g, int cell, int width, int height, int max_boxes) noexcept nogil:
    cdef int i
    g.cell = cell
    g.gw = width // cell + 1
    g.gh = height // cell + 1
    g.n_ent = 0
    g.n_box = 0
    g.head = <int32_t*>malloc(g.gw * g.gh * sizeof(int32_t))
    # a box of size <= cell covers at most 2 x 2 cells
    g.ent_box = <int32_t*>malloc(4 * max_boxes * sizeof(int32_t) + 1)
    g.ent_next = <int32_t*>malloc(4 * max_boxes * sizeof(int32_t) + 1)
    g.box = <double*>malloc(4 * max_boxes * sizeof(double) + 1)
    g.stamp = <int32_t*>malloc(max_boxes * sizeof(int32_t) + 1)
    if g.head == NULL or g.ent_box == NULL or g.ent_next == NULL or g.box == NULL or g.stamp == NULL:
        _grid_free(g)
        return -1
    for i in range(g.gw * g.gh):
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
    cdef int cx, cy, c, k = g.n_box
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
            g.head[c] = g.n_ent
            g.n_ent += 1


cdef void _bilinear(const uint8_t[:, :, ::1] img, double cx, double cy, int p, uint8_t* out) noexcept nogil:
    """(3, p, p) native-scale bilinear crop; see ``reference._bilinear_patch`` for the exact formula."""
    cdef double h = 0.5 * p
    cdef double bx = cx - h + 0.5, by = cy - h + 0.5
    cdef int x0 = <int>bx, y0 = <int>by
    cdef double dx = bx - x0, dy = by - y0
    cdef double w00 = (1.0 - dx) * (1.0 - dy), w01 = dx * (1.0 - dy)
    cdef double w10 = (1.0 - dx) * dy, w11 = dx * dy
    cdef int ch, yy, xx, xi
    cdef const uint8_t* r0
    cdef const uint8_t* r1
    cdef double v
    for yy in range(p):
        r0 = &img[y0 + yy, x0, 0]
        r1 = &img[y0 + yy + 1, x0, 0]
        for ch in range(3):
            for xx in range(p):
                xi = 3 * xx + ch
                v = w00 * r0[xi] + w01 * r0[xi + 3] + w10 * r1[xi] + w11 * r1[xi + 3]
                out[(ch * p + yy) * p + xx] = <uint8_t>(<int>(v + 0.5))


cdef int _place(const uint8_t[:, :, ::1] img, double mx, double my, double sx, double sy, double a, double b,
                const int32_t[::1] sizes, const int32_t[::1] quota, double thr, uint8_t* pout, float* cout,
                int32_t[::1] counts, bitgen_t* bg) noexcept nogil:
    cdef int height = img.shape[0], width = img.shape[1], nres = sizes.shape[0]
    cdef int r, p, q, att, acc, total = 0, cell = 1
    cdef int64_t pofs = 0, cofs = 0
    cdef int32_t query = 0
    cdef double h, limit, z1, z2, u, v, cx, cy
    cdef Grid g
    for r in range(nres):
        total += quota[r]
        if quota[r] > 0:
            cell = sizes[r]
    for r in range(nres):
        counts[r] = 0
    if total == 0:
        return 0
    if _grid_init(&g, cell, width, height, total) != 0:
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
            _bilinear(img, cx, cy, p, pout + pofs + <int64_t>acc * 3 * p * p)
            cout[2 * (cofs + acc)] = <float>(cx / 128.0 - width / 256.0)
            cout[2 * (cofs + acc) + 1] = <float>(cy / 128.0 - height / 256.0)
            acc += 1
        counts[r] = acc
        pofs += <int64_t>q * 3 * p * p
        cofs += q
    _grid_free(&g)
    return 0


def place_patches(const uint8_t[:, :, ::1] image, double mx, double my, double sx, double sy, double a, double b,
                  const int32_t[::1] sizes, const int32_t[::1] quota, double thr, uint8_t[::1] patches_out,
                  float[:, ::1] coords_out, int32_t[::1] counts_out, object rng):
    """Place and crop patches (spec 3.3) into quota-sized slots of the flat output buffers; see
    :func:`cython_ops.sample_patches`. Frame P in, frame M coordinates out. Raises MemoryError."""
    cdef bitgen_t* bg = _bitgen(rng)
    cdef int err
    cdef uint8_t* pout = &patches_out[0] if patches_out.shape[0] > 0 else NULL
    cdef float* cout = &coords_out[0, 0] if coords_out.shape[0] > 0 else NULL
    with rng.bit_generator.lock:
        with nogil:
            err = _place(image, mx, my, sx, sy, a, b, sizes, quota, thr, pout, cout, counts_out, bg)
    if err:
        raise MemoryError("cython_ops: out of memory in place_patches")


# ---------------------------------------------------------------------------------------------------------------
# Mask targets (spec 3.6): boundary, exact two-pass L1 distance (saturated), cumulative groups, sampling
# ---------------------------------------------------------------------------------------------------------------

cdef inline uint8_t _umin(uint8_t a, uint8_t b) noexcept nogil:
    return a if a < b else b


cdef inline int _bucket(uint8_t d) noexcept nogil:
    """Smallest g with d <= (2, 4, 8, 16, 32, 64)[g]; 6 for d > 64."""
    if d <= 2:
        return 0
    if d <= 4:
        return 1
    if d <= 8:
        return 2
    if d <= 16:
        return 3
    if d <= 32:
        return 4
    if d <= 64:
        return 5
    return 6


cdef int _distance(const uint8_t[:, ::1] mask, int x0, int y0, int cw, int chh, uint8_t* d) noexcept nogil:
    """Saturated L1 distance to the boundary over the crop into ``d`` (cw * chh); returns the inside count.

    Pass 1 (raster order) marks boundary pixels (a 4-neighbour inside the crop with the other value) with 0 and
    propagates from the top and left; pass 2 (reverse order) from the bottom and right. Two passes give the exact
    city-block distance; saturating at DIST_CAP keeps it exact below the cap.
    """
    cdef int x, y, i, n_in = 0
    cdef bint v, bnd
    cdef const uint8_t* row
    cdef uint8_t dd
    for y in range(chh):
        row = &mask[y0 + y, x0]
        for x in range(cw):
            v = row[x] != 0
            n_in += v
            bnd = (x > 0 and (row[x - 1] != 0) != v) or (x < cw - 1 and (row[x + 1] != 0) != v)
            if not bnd:
                bnd = (y > 0 and (mask[y0 + y - 1, x0 + x] != 0) != v) or (
                    y < chh - 1 and (mask[y0 + y + 1, x0 + x] != 0) != v)
            i = y * cw + x
            if bnd:
                d[i] = 0
            else:
                dd = DIST_CAP
                if y > 0:
                    dd = _umin(dd, d[i - cw] + 1)
                if x > 0:
                    dd = _umin(dd, d[i - 1] + 1)
                d[i] = dd
    for y in range(chh - 1, -1, -1):
        for x in range(cw - 1, -1, -1):
            i = y * cw + x
            dd = d[i]
            if y < chh - 1:
                dd = _umin(dd, d[i + cw] + 1)
            if x < cw - 1:
                dd = _umin(dd, d[i + 1] + 1)
            d[i] = dd
    return n_in


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


cdef int _mask_targets(const uint8_t[:, ::1] mask, int x0, int y0, int x1, int y1, const int64_t[::1] spg,
                       float* cout, uint8_t* lout, bitgen_t* bg) noexcept nogil:
    """Returns 0 on success, 1 when the crop has no inside or no outside pixel, -1 when out of memory."""
    cdef int width = mask.shape[1], height = mask.shape[0]
    cdef int cw = x1 - x0 + 1, chh = y1 - y0 + 1
    cdef int64_t n = <int64_t>cw * chh, i, j, k, out = 0, max_k = 0
    cdef int n_in, g, lab, src, b
    cdef int64_t counts[2][NUM_GROUPS]
    cdef int64_t sizes[2][NUM_GROUPS]
    cdef int64_t fill[2][NUM_GROUPS]
    cdef uint8_t* d = <uint8_t*>malloc(n)
    cdef int32_t* lists = NULL
    cdef uint64_t* draw = NULL
    cdef int32_t pix
    cdef double ux, uy, px, py
    if d == NULL:
        return -1
    n_in = _distance(mask, x0, y0, cw, chh, d)
    if n_in == 0 or n_in == n:
        free(d)
        return 1
    for g in range(NUM_GROUPS):
        if spg[g] > max_k:
            max_k = spg[g]
    lists = <int32_t*>malloc(n * sizeof(int32_t))
    draw = <uint64_t*>malloc((max_k + 1) * sizeof(uint64_t))
    if lists == NULL or draw == NULL:
        free(d)
        free(lists)
        free(draw)
        return -1
    for lab in range(2):
        for g in range(NUM_GROUPS):
            counts[lab][g] = 0
    for i in range(n):
        counts[mask[y0 + i // cw, x0 + i % cw] != 0][_bucket(d[i])] += 1
    # lists: inside pixels first (label 1), then outside; within a label by bucket, raster order within a bucket
    for lab in range(2):
        fill[lab][0] = 0 if lab == 1 else n_in
        sizes[lab][0] = counts[lab][0]
        for g in range(1, NUM_GROUPS):
            fill[lab][g] = fill[lab][g - 1] + counts[lab][g - 1]
            sizes[lab][g] = sizes[lab][g - 1] + counts[lab][g]
    for i in range(n):
        lab = mask[y0 + i // cw, x0 + i % cw] != 0
        b = _bucket(d[i])
        lists[fill[lab][b]] = <int32_t>i
        fill[lab][b] += 1
    for g in range(NUM_GROUPS):
        for lab in range(1, -1, -1):
            k = spg[g] // 2 if lab == 1 else spg[g] - spg[g] // 2
            if k == 0:
                continue
            src = _source_group(sizes[lab], g)
            for j in range(k):
                draw[j] = random_bounded_uint64(bg, 0, <uint64_t>(sizes[lab][src] - 1), 0, 0)
            for j in range(k):
                pix = lists[(0 if lab == 1 else n_in) + <int64_t>draw[j]]
                ux = random_standard_uniform(bg)
                uy = random_standard_uniform(bg)
                px = <double>(pix % cw + x0) + (ux - 0.5)
                py = <double>(pix // cw + y0) + (uy - 0.5)
                cout[2 * out] = <float>(px / 128.0 - width / 256.0)
                cout[2 * out + 1] = <float>(py / 128.0 - height / 256.0)
                lout[out] = lab
                out += 1
    free(d)
    free(lists)
    free(draw)
    return 0


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

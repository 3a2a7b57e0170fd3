"""Periodic cell list for short-range contact search (vectorised numpy, float32)."""

from __future__ import annotations

import numpy as np

from .arrays import _cat, _pmap, _sort_keys
from .params import _CELL_OCCUPANCY, _CHUNK
from .pbc import Box


def _columns(p):
    """Coordinates as 3 1-D arrays: from an (m, 3) array, or a sequence of x, y, z arrays."""
    if isinstance(p, (list, tuple)):
        return [np.asarray(v).ravel() for v in p]
    p = np.asarray(p).reshape(-1, 3)
    return [p[:, d] for d in range(3)]


def _starts(key: np.ndarray, ncell: int) -> np.ndarray:
    """``start[c]``: first index of cell c in the sorted ``key`` (``start[ncell] = len``);
    counted in cache-sized slabs of cells (threads; no grid-sized int64 temporary)."""
    t = np.int32 if len(key) < 2**31 - 1 else np.int64
    start = np.empty(ncell + 1, dtype=t)
    start[0] = 0
    step = 1 << 18
    # (search values of the key's type: no int64 copy of the key)
    bounds = np.searchsorted(key, np.arange(0, ncell + step, step, dtype=(
        key.dtype if ncell + step < 2**31 - 1 else np.int64)))

    def slab(i):
        c0 = i * step
        c1 = min(c0 + step, ncell)
        lo, hi = bounds[i], bounds[i + 1]
        cnt = np.bincount(key[lo:hi] - c0 if c0 else key[lo:hi], minlength=c1 - c0)
        s = start[c0 + 1:c1 + 1]
        np.cumsum(cnt, dtype=t, out=s)
        if lo:
            s += t(lo)

    _pmap(slab, range(-(-ncell // step)))
    return start


def _expand(lo: np.ndarray, hi: np.ndarray):
    """Index ranges ``[lo, hi)`` (flattened) -> (range number, index) pairs, one slot at a
    time (cells hold ~0.2 points: no np.repeat over mostly empty ranges)."""
    c = hi - lo
    f = np.flatnonzero(c)
    c, s = c[f], lo[f]
    fs, js = [f], [s]
    k = 1
    while len(f):
        keep = np.flatnonzero(c > k)
        f, s, c = f[keep], s[keep], c[keep]
        fs.append(f)
        js.append(s + k)
        k += 1
    return np.concatenate(fs), np.concatenate(js)


class _CellGrid:
    """Periodic cell list for short-range contact search (vectorised numpy, float32).

    Points ``p`` ((m, 3) array, or x, y, z arrays) may be in any periodic image; they are
    wrapped into the box and the faces, edges and corners are copied (shifted by a box
    length) into a ghost layer of cells, so distances need no minimum image.  Cells are
    >= 2r wide in x and y and >= r in z, sorted z-fastest, so a "row" of 3 cells along z is
    one contiguous index range; a point within r of another lies in the point's own x-y
    column or in the neighbour columns on the sides of the cell half it sits in: 4 rows
    per query, and for :meth:`pairs` the own row's later points plus the side rows that
    come later in column order (1.5 on average).  Distances are tested in float32 (error
    ~1e-6 nm at 50 nm).  Boxes of fewer than 2 x 2 x 3 cells fall back to cKDTree.  ``ids``
    (default ``arange(m)``) name the points in the results; :meth:`update` replaces the
    points of some ids without a full rebuild.

    Triclinic boxes (``box`` a :class:`~.pbc.Box`, or (3, 3) GROMACS box vectors): the grid
    covers the box's brick ``[0, ax) x [0, by) x [0, cz)`` (a fundamental domain, see
    :mod:`.pbc`) and the ghost layer holds every lattice image that falls into it (made
    axis by axis: z with c, then y with b, then x with a, each shifted copy brought back
    into the brick in the axes below), so queries are unchanged; the half-shell of
    :meth:`pairs` relies on ghost cells being translates of real ones, which the sheared
    images are not, so there each real point is queried in full and a pair is kept from
    its lower point index.
    """

    def __init__(self, p, box, r: float, ids: np.ndarray | None = None,
                 wrapped: bool = False):
        """``box``: a :class:`~.pbc.Box`, (3,) edge lengths or (3, 3) box vectors;
        ``wrapped``: ``p`` are float32 arrays already in [0, L] (the brick: used in place)."""
        p = _columns(p)
        m = len(p[0])
        self.m, self.r = m, float(r)
        self.r2 = np.float32(self.r * self.r)
        self.pbox = box if isinstance(box, Box) else Box(box)
        self.box = box = self.pbox.lengths
        ids = np.arange(m) if ids is None else np.asarray(ids)
        vol = _CELL_OCCUPANCY * float(np.prod(box)) / max(m, 1)  # target cell volume
        wxy = max(2 * r, (2 * vol) ** (1.0 / 3.0))
        wz = max(r, vol / wxy**2)
        nc = np.floor(box / np.array([wxy, wxy, wz])).astype(np.int64)
        self.kd = None
        if nc[0] < 2 or nc[1] < 2 or nc[2] < 3:
            self.kd = self.pbox.tree(np.stack(p, axis=1).astype(np.float64), self.r)
            self.kd_ids = ids
            return
        self.nc, self.pc = nc, nc + 2
        self.ncell = ncell = int(np.prod(self.pc))
        self.kdt = t = np.int32 if ncell < 2**31 - 8 else np.int64
        self.dx, self.dy = t(self.pc[1] * self.pc[2]), t(self.pc[2])  # key steps
        self.key, self.xyz, self.ids, real = self._entries(p, ids, wrapped)
        self.src = self._src if not self.pbox.ortho else None  # point index per entry
        self.real = np.flatnonzero(real).astype(self.ids.dtype if m < 2**31 - 1 else np.int64)
        del real
        self.start = _starts(self.key, ncell)

    def _wrap(self, p, sides: bool = True, wrapped: bool = False):
        """float32 coordinates wrapped into the box, padded cell indices (1..nc) and, in x
        and y, the side of the cell half each point is in (see :meth:`_sides`)."""
        xyz, ci = [], []
        if not (wrapped or self.pbox.ortho):
            p = [np.array(v, dtype=np.float32) for v in p]
            self.pbox.brick(p)
            wrapped = True
        for d in range(3):
            L = self.box[d]
            if wrapped:
                x = p[d]
            else:
                x = np.array(p[d], dtype=np.float32)
                x -= np.float32(L) * np.floor(x * np.float32(1.0 / L))
            c = (x * np.float32(self.nc[d] / L)).astype(np.int32)
            np.minimum(c, self.nc[d] - 1, out=c)  # x == L after round-off (x >= 0)
            c += 1
            xyz.append(x)
            ci.append(c)
        return xyz, ci, (self._sides(xyz, ci) if sides else None)

    def _sides(self, xyz, ci):
        """Key steps to the x and y neighbour columns on the side of the cell half each
        point (coordinates ``xyz``, padded cells ``ci``) is in: +-dx, +-dy."""
        out = []
        for d, step in ((0, self.dx), (1, self.dy)):
            f = xyz[d] * np.float32(self.nc[d] / self.box[d])
            f -= ci[d] - 1  # position in the cell, in cell widths (the cell, not floor(f):
            out.append(np.where(f >= 0.5, step, -step))  # x may round to the upper edge)
        return out

    def _key(self, ci):
        t = self.kdt
        return ci[0].astype(t) * self.dx + ci[1].astype(t) * self.dy + ci[2]

    def _cell(self, x, d):
        """Padded cell indices (1..nc) along axis d of coordinates x (float32)."""
        c = (x * np.float32(self.nc[d] / self.box[d])).astype(np.int32)
        np.clip(c, 0, self.nc[d] - 1, out=c)
        c += 1
        return c

    def _ghosts_triclinic(self, xyz, ci):
        """Ghost images of the brick points (coordinates ``xyz``, padded cells ``ci``) that
        fall into the ghost layer: (source point, coordinates, padded cells)."""
        m, nc = len(xyz[0]), self.nc
        mat = self.pbox.matrix.astype(np.float32)
        src, pos, cel = [np.arange(m)], [[v] for v in xyz], [[c] for c in ci]
        for d in (2, 1, 0):  # copies of copies fill the edges and corners
            cur_src = np.concatenate(src)
            cur = [np.concatenate(v) for v in pos]
            curc = [np.concatenate(c) for c in cel]
            for c, sign in ((1, 1), (nc[d], -1)):
                a = np.flatnonzero(curc[d] == c)
                g = [cur[e][a] + np.float32(sign) * mat[d, e] for e in range(3)]
                gc = [curc[e][a] for e in range(3)]
                gc[d] = gc[d] + np.int32(sign * nc[d])
                for e in range(d - 1, -1, -1):  # back into the brick below axis d
                    k = np.floor(g[e] * (np.float32(1) / mat[e, e]))
                    for f in range(e + 1):
                        g[f] -= k * mat[e, f]
                    gc[e] = self._cell(g[e], e)
                src.append(cur_src[a])
                for e in range(3):
                    pos[e].append(g[e])
                    cel[e].append(gc[e])
        return (np.concatenate(src[1:]), [np.concatenate(v[1:]) for v in pos],
                [np.concatenate(c[1:]) for c in cel])

    def _entries_triclinic(self, p, ids, wrapped: bool = False):
        """:meth:`_entries` of a triclinic box (ghosts by lattice vectors)."""
        m = len(p[0])
        xyz, ci, _ = self._wrap(p, sides=False, wrapped=wrapped)
        gsrc, gxyz, gci = self._ghosts_triclinic(xyz, ci)
        key = np.concatenate([self._key(ci), self._key(gci)])
        del gci, ci
        order, key = _sort_keys(key)
        src = np.concatenate([np.arange(m), gsrc])[order]
        out = [np.concatenate([xyz[d], gxyz[d]])[order] for d in range(3)]
        real = order < m
        self._src = src
        return key, out, ids[src], real

    def _entries(self, p, ids, wrapped: bool = False):
        """Sorted cell keys, coordinates, ids and real-point flags of points ``p`` and their
        ghost copies."""
        if not self.pbox.ortho:
            return self._entries_triclinic(p, ids, wrapped)
        m = len(p[0])
        nc, box = self.nc, self.box
        xyz, ci, _ = self._wrap(p, sides=False, wrapped=wrapped)
        # ghosts: (source point, image shift per axis); axis by axis, so copies of copies
        # fill the edges and corners
        gsrc = np.zeros(0, dtype=np.int64)
        gsh = np.zeros((3, 0), dtype=np.int8)
        for d in range(3):
            parts, shifts = [], []
            for c, sign in ((1, 1), (nc[d], -1)):
                a = np.flatnonzero(ci[d] == c)
                g = np.flatnonzero(ci[d][gsrc] == c)
                parts += [a, gsrc[g]]
                sh = np.concatenate([np.zeros((3, len(a)), np.int8), gsh[:, g]], axis=1)
                sh[d] = sign
                shifts.append(sh)
            gsrc = np.concatenate([gsrc] + parts)
            gsh = np.concatenate([gsh] + shifts, axis=1)
        gci = [ci[d][gsrc] + gsh[d].astype(ci[d].dtype) * np.int32(nc[d]) for d in range(3)]
        key = np.concatenate([self._key(ci), self._key(gci)])
        del gci, ci
        order, key = _sort_keys(key)
        ghost = np.flatnonzero(order >= m)
        gi = order[ghost] - m
        src = order.astype(np.int32 if len(order) < 2**31 - 1 else np.int64)
        src[ghost] = gsrc[gi]
        out = []
        for d in range(3):
            v = xyz[d][src]
            v[ghost] += gsh[d][gi].astype(np.float32) * np.float32(box[d])
            out.append(v)
        real = order < m
        del order
        return key, out, ids[src], real

    def update(self, drop: np.ndarray, p, ids: np.ndarray):
        """Remove the points whose id has ``drop[id]`` set, add points ``p`` named ``ids``
        (a merge of sorted arrays: no full re-sort).  :meth:`pairs` is not kept up to date
        (real-point list), :meth:`query` is."""
        p = _columns(p)
        if self.kd is not None:
            keep = ~drop[self.kd_ids]
            old = self.kd.points()[keep]
            new = self.pbox.wrap(np.stack(p, axis=1).astype(np.float64))
            self.kd = self.pbox.tree(np.concatenate([old, new]), self.r)
            self.kd_ids = np.concatenate([self.kd_ids[keep], np.asarray(ids)])
            return
        keep = ~drop[self.ids]
        key, xyz, nid, _ = self._entries(p, np.asarray(ids, dtype=self.ids.dtype))
        self.real = self.src = None
        at = np.searchsorted(self.key[keep], key, side="right")
        # one array at a time (memory); np.insert places values before the given indices
        self.key = np.insert(self.key[keep], at, key)
        for d in range(3):
            self.xyz[d] = np.insert(self.xyz[d][keep], at, xyz[d])
        self.ids = np.insert(self.ids[keep], at, nid)
        del keep, at
        self.start = _starts(self.key, self.ncell)

    def _close(self, q, qi, j):
        """Pairs (query, sorted point) closer than r among candidates ``qi, j`` (x tested
        first: it drops about half of them before the other gathers)."""
        x = self.xyz
        d = q[0][qi] - x[0][j]
        k = np.flatnonzero(np.abs(d) < self.r)
        qi, j, d = qi[k], j[k], d[k]
        s2 = d * d
        d = q[1][qi] - x[1][j]
        s2 += d * d
        d = q[2][qi] - x[2][j]
        s2 += d * d
        h = np.flatnonzero(s2 < self.r2)
        return qi[h], j[h]

    def pairs(self, div: int = 0):
        """All unordered pairs (ids) of points closer than r, as two index arrays; with
        ``div`` > 0 only pairs whose ids differ after integer division by ``div`` (e.g. atoms
        ``3 * molecule + atom`` of different molecules: filtered per chunk, so the many
        bonded pairs never pile up)."""
        if self.kd is not None:
            pp = self.kd.query_pairs(self.r).reshape(-1, 2)
            a, b = self.kd_ids[pp[:, 0]], self.kd_ids[pp[:, 1]]
            if div:
                k = a // div != b // div
                a, b = a[k], b[k]
            return a, b
        if self.real is None:
            raise RuntimeError("pairs() after update(): rebuild the grid")
        if not self.pbox.ortho:
            return self._pairs_full(div)
        start, key, x = self.start, self.key, self.xyz

        def one(i0):
            ix = self.real[i0:i0 + _CHUNK]
            q = [v[ix] for v in x]
            k = key[ix]
            cx = k // self.dx
            sx, sy = self._sides(q, [cx, (k - cx * self.dx) // self.dy])
            lo = np.empty((len(ix), 4), dtype=start.dtype)
            hi = np.empty_like(lo)
            lo[:, 0], hi[:, 0] = ix + 1, start[k + 2]  # own row: later points, next cell
            base = k - 1
            for c, nk, use in ((1, base + sx, sx > 0),
                               (2, base + sy, sy > 0),
                               (3, base + sx + sy, sx > 0)):
                lo[:, c] = start[nk]
                hi[:, c] = np.where(use, start[nk + 3], lo[:, c])  # later columns only
            f, j = _expand(lo.ravel(), hi.ravel())
            a, b = self._close(q, f >> 2, j)
            a = ix[a]
            if div:
                ia, ib = self.ids[a], self.ids[b]
                k = np.flatnonzero(ia // div != ib // div)
                return ia[k], ib[k]
            return a, b

        res = _pmap(one, range(0, len(self.real), _CHUNK))
        a, b = _cat([v[0] for v in res]), _cat([v[1] for v in res])
        return (a, b) if div else (self.ids[a], self.ids[b])

    def _pairs_full(self, div: int = 0):
        """:meth:`pairs` of a triclinic grid: every real point against its 4 rows; of the
        two finds of a pair (each point meets the other's image) the one from the lower
        point index is kept."""
        start, key, x, src = self.start, self.key, self.xyz, self.src

        def one(i0):
            ix = self.real[i0:i0 + _CHUNK]
            q = [v[ix] for v in x]
            k = key[ix]
            cx = k // self.dx
            sx, sy = self._sides(q, [cx, (k - cx * self.dx) // self.dy])
            nk = np.empty((len(ix), 4), dtype=k.dtype)
            nk[:, 0] = k - 1
            nk[:, 1] = nk[:, 0] + sx
            nk[:, 2] = nk[:, 0] + sy
            nk[:, 3] = nk[:, 1] + sy
            f, j = _expand(start[nk].ravel(), start[nk + 3].ravel())
            a, b = self._close(q, f >> 2, j)
            a = ix[a]
            k = np.flatnonzero(src[a] < src[b])
            a, b = self.ids[a[k]], self.ids[b[k]]
            if div:
                k = np.flatnonzero(a // div != b // div)
                a, b = a[k], b[k]
            return a, b

        res = _pmap(one, range(0, len(self.real), _CHUNK))
        return _cat([v[0] for v in res]), _cat([v[1] for v in res])

    def query(self, q):
        """Pairs (index of the query point, point id) closer than r, for points ``q`` (any
        image, same forms as the grid points) that are not in the grid."""
        q = _columns(q)
        if self.kd is not None:
            nbl = self.kd.query_ball_point(np.stack(q, axis=1).astype(np.float64), self.r)
            i = np.repeat(np.arange(len(q[0])), [len(v) for v in nbl])
            j = np.fromiter((k for v in nbl for k in v), dtype=np.int64, count=len(i))
            return i, self.kd_ids[j]
        xyz, ci, side = self._wrap(q)
        qk = self._key(ci)
        start = self.start

        def one(a):
            b = a + _CHUNK
            base = qk[a:b] - 1
            sx, sy = side[0][a:b], side[1][a:b]
            nk = np.empty((len(base), 4), dtype=base.dtype)
            nk[:, 0] = base
            nk[:, 1] = base + sx
            nk[:, 2] = base + sy
            nk[:, 3] = nk[:, 1] + sy
            f, j = _expand(start[nk].ravel(), start[nk + 3].ravel())
            i, j = self._close([v[a:b] for v in xyz], f >> 2, j)
            return i + a, j

        res = _pmap(one, range(0, len(qk), _CHUNK))
        return _cat([v[0] for v in res]), self.ids[_cat([v[1] for v in res])]


"""CG -> AA water: each Martini 3 ``W`` bead becomes 4 TIP3P molecules from a cluster bank.

The bank holds real 4-water clusters cut out of atomistic frames with the same grouping used
going AA -> CG (:func:`multiscale.water.group_waters`), stored relative to their centre of mass.
Placing a randomly chosen cluster with a uniformly random rotation at each bead reproduces the
within-cluster structure of the source liquid exactly; between clusters, overlaps are removed
by re-drawing only the offending beads.  Every bead position is reproduced exactly as the
centre of mass of its 12 atoms (O 15.9994, H 1.008).

Clash criteria (module constants, overridable per call):

* :data:`MIN_DIST_OO` = 0.17 nm between oxygens of different beads: the clearance GROMACS
  itself accepts for new water (``gmx solvate``/``insert-molecules`` default ``-scale 0.57``
  x (0.152 + 0.152) nm O van der Waals radii = 0.173 nm).  Real liquid water has no O-O pair
  below ~0.24 nm (first g_OO peak 0.28 nm), but randomly oriented rigid clusters on a
  Martini-density lattice cannot all be separated that far (re-draws stall above ~0.19 nm,
  measured); 0.17 nm is reached for > 99 % of beads and leaves compressions that a short
  steepest-descent minimisation removes.  It also keeps every H >= 0.074 nm (O-H 0.0957 nm)
  from a foreign O; the minimisation resolves these since H moves rigidly with its O.
* :data:`MIN_DIST_OTHERS` = 0.15 nm between any water atom and any ``others`` atom (the
  non-water atoms, all elements).  That is ``gmx solvate``'s scaled clearance for O...H
  (0.57 x (0.152 + 0.12) = 0.155 nm), shorter than any equilibrium non-bonded contact
  (hydrogen bonds H...O/N ~0.17-0.20 nm), so waters may still hydrogen-bond to the solute.

Placement is vectorised numpy (no per-bead Python loops).  Contacts are found with a periodic
cell list in float32 (:class:`_CellGrid`: ghost copies of the boundary cells, 2r x 2r x r
cells, 4 contiguous index ranges per query point), built once on the first draw's oxygens and
merged with the re-drawn beads after each round; only re-drawn beads are checked, and they
try their candidates one at a time (a bead that found a clash-free one stops drawing), so the
work follows the number of clashes.  Measured (``benchmarks/bench_water.py --repeat 2``,
2-CPU VM shared with other jobs, load 1.1-3.9, i.e. often ~1 free core): 10k beads at
Martini density 150-180k beads/s; 97k beads in 0.41-0.54 s (180-240k beads/s); 1M beads in
3.9-6.6 s (150-250k beads/s; 230-250k/s at load < 2), peak RSS +380-640 MB (allocator
noise; traced numpy peak 340 MB, of which the float64 output is 275 MiB); ~0.13 % of beads
left unresolved.  (Before: 56-61k beads/s at 10k-100k, 38-42k/s at 1M, +1.7-1.75 GB,
0.75-0.8 % unresolved.)

Lengths nm; coordinates ``(..., 3)``; water atom order O, H1, H2.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import numpy as np
from scipy.spatial import cKDTree

from multiscale.errors import MultiscaleError
from multiscale.geometry import wrap
from multiscale.water import group_waters, orthorhombic_box

__all__ = [
    "WaterBank",
    "O_MASS",
    "H_MASS",
    "MIN_DIST_OO",
    "MIN_DIST_OTHERS",
    "DEFAULT_BANK_FILE",
    "random_rotations",
]

O_MASS = 15.9994
H_MASS = 1.008
#: Masses (amu) of the 12 atoms of one bead, order (water, atom) = O, H1, H2 per water.
CLUSTER_MASSES = np.tile(np.array([O_MASS, H_MASS, H_MASS]), 4)
MIN_DIST_OO = 0.17
MIN_DIST_OTHERS = 0.15
#: Clusters whose farthest oxygen is more than this from the COM are dropped by from_frames.
MAX_CLUSTER_RADIUS = 0.40
DEFAULT_BANK_FILE = "water_clusters_tip3p.npz"
_FORMAT = "multiscale.WaterBank/1"


def _rot_entries(q: np.ndarray, dtype=np.float64):
    """Rotation matrix entries ``r[i][j]`` (each an (n,) array) of quaternions ``q`` (n, 4)
    (w, x, y, z; any non-zero norm: the matrix is exactly orthogonal either way)."""
    w, x, y, z = np.asarray(q, dtype=dtype).T
    s = 2 / (w * w + x * x + y * y + z * z)
    xs, ys, zs = x * s, y * s, z * s
    wx, wy, wz, xx, xy, xz = w * xs, w * ys, w * zs, x * xs, x * ys, x * zs
    yy, yz, zz = y * ys, y * zs, z * zs
    return ((1 - (yy + zz), xy - wz, xz + wy),
            (xy + wz, 1 - (xx + zz), yz - wx),
            (xz - wy, yz + wx, 1 - (xx + yy)))


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniformly distributed rotation matrices ``(n, 3, 3)`` (normalised Gaussian
    quaternions, i.e. Haar measure on SO(3))."""
    r = _rot_entries(rng.standard_normal((n, 4)))
    return np.stack([np.stack(row, axis=-1) for row in r], axis=-2)


def _com(xyz: np.ndarray) -> np.ndarray:
    """Centre of mass of (..., 12, 3) cluster coordinates -> (..., 3)."""
    return np.einsum("...ak,a->...k", xyz, CLUSTER_MASSES) / CLUSTER_MASSES.sum()


def _tree(x: np.ndarray, box: np.ndarray) -> cKDTree:
    return cKDTree(x, boxsize=box, balanced_tree=False, compact_nodes=False)


#: threads for the contact search (at most; capped by the CPUs this process may use)
_MAX_THREADS = 4
#: target points per cell of the contact grid (sets the cell size of sparse grids; at water
#: density the cells are the smallest allowed: 2r x 2r x r)
_CELL_OCCUPANCY = 0.5
#: query points per work item of the contact search (bounds temporaries, feeds the threads)
_CHUNK = 1 << 15
#: re-drawn candidates per contact query at least (several slots at once when few beads
#: are left: fewer, larger queries)
_BATCH = 4096
#: beads are processed in the order of cubic cells of this many O-O cut-offs (cache locality
#: of the contact search: 1M beads 6.3 -> 5.2 s CPU against 1 nm cells)
_BEAD_CELL = 4.0

_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _n_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (non-Linux)
        n = os.cpu_count() or 1
    return max(1, min(n, _MAX_THREADS))


def _pmap(fn, items):
    """``[fn(x) for x in items]``, on a small thread pool (numpy releases the GIL in the
    heavy array operations); order-preserving, hence deterministic."""
    global _POOL
    n = _n_threads()
    items = list(items)
    if n == 1 or len(items) < 2:
        return [fn(x) for x in items]
    if _POOL is None or _POOL[0] != n:
        _POOL = (n, ThreadPoolExecutor(n, thread_name_prefix="multiscale-water"))
    return list(_POOL[1].map(fn, items))


def _cat(parts, dtype=np.int64):
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _cover(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """Vertex cover of the clash graph (edges i-j over n beads), greedy by degree: for each
    edge mark the endpoint with more clashes (ties: higher index).  Unmarked beads are then
    pairwise clash-free; re-drawing only the marked ones keeps the accepted set growing."""
    mark = np.zeros(n, dtype=bool)
    if len(i) == 0:
        return mark
    deg = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    pick_i = (deg[i] > deg[j]) | ((deg[i] == deg[j]) & (i > j))
    mark[np.where(pick_i, i, j)] = True
    return mark


def _argsort_int(key: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative integer keys: LSD radix sort in 16-bit digits (numpy's
    stable sort of uint16 is a radix sort; 2-3x faster than a comparison sort here)."""
    kmax = int(key.max()) if len(key) else 0
    perm, shift = None, 0
    while True:
        k = key if perm is None else key[perm]
        p = np.argsort((k >> shift).astype(np.uint16), kind="stable")  # low 16 bits
        perm = p if perm is None else perm[p]
        shift += 16
        if kmax >> shift == 0:
            return perm


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
    bounds = np.searchsorted(key, np.arange(0, ncell + step, step))

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
    """

    def __init__(self, p, box: np.ndarray, r: float, ids: np.ndarray | None = None):
        p = _columns(p)
        m = len(p[0])
        self.m, self.r = m, float(r)
        self.r2 = np.float32(self.r * self.r)
        self.box = box = np.asarray(box, dtype=np.float64)
        ids = np.arange(m) if ids is None else np.asarray(ids)
        vol = _CELL_OCCUPANCY * float(np.prod(box)) / max(m, 1)  # target cell volume
        wxy = max(2 * r, (2 * vol) ** (1.0 / 3.0))
        wz = max(r, vol / wxy**2)
        nc = np.floor(box / np.array([wxy, wxy, wz])).astype(np.int64)
        self.kd = None
        if nc[0] < 2 or nc[1] < 2 or nc[2] < 3:
            self.kd = _tree(wrap(np.stack(p, axis=1).astype(np.float64), box), box)
            self.kd_ids = ids
            return
        self.nc, self.pc = nc, nc + 2
        self.ncell = ncell = int(np.prod(self.pc))
        self.kdt = t = np.int32 if ncell < 2**31 - 8 else np.int64
        self.dx, self.dy = t(self.pc[1] * self.pc[2]), t(self.pc[2])  # key steps
        self.key, self.xyz, self.ids, real = self._entries(p, ids)
        self.real = np.flatnonzero(real).astype(self.ids.dtype if m < 2**31 - 1 else np.int64)
        del real
        self.start = _starts(self.key, ncell)

    def _wrap(self, p, sides: bool = True):
        """float32 coordinates wrapped into the box, padded cell indices (1..nc) and, in x
        and y, the side of the cell half each point is in (see :meth:`_sides`)."""
        xyz, ci = [], []
        for d in range(3):
            L = self.box[d]
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

    def _entries(self, p, ids):
        """Sorted cell keys, coordinates, ids and real-point flags of points ``p`` and their
        ghost copies."""
        m = len(p[0])
        nc, box = self.nc, self.box
        xyz, ci, _ = self._wrap(p, sides=False)
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
        order = _argsort_int(key)
        key = key[order]
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
            old = self.kd.data[keep]
            new = wrap(np.stack(p, axis=1).astype(np.float64), self.box)
            self.kd = _tree(np.concatenate([old, new]), self.box)
            self.kd_ids = np.concatenate([self.kd_ids[keep], np.asarray(ids)])
            return
        keep = ~drop[self.ids]
        key, xyz, nid, _ = self._entries(p, np.asarray(ids, dtype=self.ids.dtype))
        self.real = None
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

    def pairs(self):
        """All unordered pairs (ids) of points closer than r, as two index arrays."""
        if self.kd is not None:
            pp = self.kd.query_pairs(self.r, output_type="ndarray").reshape(-1, 2)
            return self.kd_ids[pp[:, 0]], self.kd_ids[pp[:, 1]]
        if self.real is None:
            raise RuntimeError("pairs() after update(): rebuild the grid")
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
            return ix[a], b

        res = _pmap(one, range(0, len(self.real), _CHUNK))
        return self.ids[_cat([v[0] for v in res])], self.ids[_cat([v[1] for v in res])]

    def query(self, q):
        """Pairs (index of the query point, point id) closer than r, for points ``q`` (any
        image, same forms as the grid points) that are not in the grid."""
        q = _columns(q)
        if self.kd is not None:
            nbl = self.kd.query_ball_point(
                wrap(np.stack(q, axis=1).astype(np.float64), self.box), self.r)
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


class WaterBank:
    """A bank of real 4-water clusters used to turn Martini ``W`` beads into TIP3P waters.

    Attributes
    ----------
    clusters : (K, 4, 3, 3) float32 nm, centre of mass at the origin, atom order O, H1, H2.
    n_source : number of clusters the bank was drawn from (>= K).
    note : free text describing the origin.
    last_stats : dict filled by :meth:`place` (``n_beads``, ``n_initial_clash``,
        ``n_unresolved``, ``retries``, ``unresolved``: indices of beads still clashing).
    """

    def __init__(self, clusters, n_source: int | None = None, note: str = ""):
        c = np.asarray(clusters, dtype=np.float64)
        if c.ndim != 4 or c.shape[1:] != (4, 3, 3) or len(c) == 0:
            raise MultiscaleError(
                f"water clusters have shape {c.shape}: expected (K>0, 4, 3, 3) nm "
                "(4 waters x O,H1,H2 x xyz)"
            )
        if not np.all(np.isfinite(c)):
            raise MultiscaleError("water clusters contain NaN/inf: rebuild the water bank")
        flat = c.reshape(len(c), 12, 3)
        if np.abs(_com(flat)).max() > 1e-6:  # centre (a no-op for a saved bank: exact reload)
            flat = flat - _com(flat)[:, None]
        self.clusters = flat.reshape(-1, 4, 3, 3).astype(np.float32)
        self.n_source = int(n_source if n_source is not None else len(c))
        self.note = str(note)
        self.last_stats: dict = {}
        self._stats()

    def _stats(self):
        c = self.clusters.astype(np.float64)
        self._flat = c.reshape(len(c), 12, 3)
        # residual COM of the float32 coordinates (removed again at placement)
        self._flat = self._flat - _com(self._flat)[:, None]
        # coordinate-major copies for placement: (3, 12, K) float64, oxygens (3, 4, K) float32
        self._fT = np.ascontiguousarray(self._flat.transpose(2, 1, 0))
        self._oT = np.ascontiguousarray(self._fT[:, 0::3], dtype=np.float32)
        #: largest atom distance from the COM over the bank (nm)
        self.extent = float(np.linalg.norm(self._flat, axis=-1).max())
        o = c[:, :, 0]
        d = np.linalg.norm(o[:, :, None] - o[:, None], axis=-1)
        d[:, np.arange(4), np.arange(4)] = np.inf
        #: smallest O-O distance inside any cluster (nm)
        self.min_intra_oo = float(d.min())

    def __len__(self) -> int:
        return len(self.clusters)

    def __repr__(self) -> str:
        return f"WaterBank({len(self)} clusters, extent {self.extent:.3f} nm)"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frames(cls, water_xyz, box, groups=None, max_clusters: int = 20000, seed: int = 0,
                    max_radius: float | None = MAX_CLUSTER_RADIUS, note: str = ""):
        """Build a bank from atomistic frames.

        Parameters
        ----------
        water_xyz : (F, n_w, 3, 3) nm, atom order O, H1, H2 (a single frame (n_w, 3, 3) is
            accepted).  Molecules may be split by PBC; they are made whole (minimum image).
        box : (F, 3) nm orthorhombic edge lengths (or (3,) for all frames, or (F, 3, 3)
            matrices with zero off-diagonal).
        groups : optional per-frame (n_w // 4, 4) int index arrays (a single array is used for
            every frame); default: :func:`group_waters` with seed ``seed + frame``.
        max_clusters : keep at most this many clusters, drawn at random (seed).
        seed : seeds grouping tie-breaks and the subsampling.
        max_radius : drop clusters whose farthest oxygen is more than this from the COM (nm);
            None keeps all.
        """
        x = np.asarray(water_xyz, dtype=np.float64)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[2:] != (3, 3):
            raise MultiscaleError(
                f"water_xyz has shape {np.shape(water_xyz)}: expected (frames, n_waters, 3, 3) "
                "nm with atom order O, H1, H2"
            )
        f, n_w = x.shape[:2]
        b = np.asarray(box, dtype=np.float64)
        if b.shape in [(3,), (3, 3)]:
            b = np.broadcast_to(b, (f,) + b.shape)
        if len(b) != f:
            raise MultiscaleError(f"box has {len(b)} frames but water_xyz has {f}: pass one box "
                                  "per frame")
        rng = np.random.default_rng(seed)
        out = []
        for i in range(f):
            bi = orthorhombic_box(b[i], name=f"box[{i}]")
            xi = x[i]
            # make molecules whole: H minimum image relative to their O
            d = xi[:, 1:] - xi[:, :1]
            xi = np.concatenate([xi[:, :1], xi[:, :1] + d - bi * np.round(d / bi)], axis=1)
            if groups is None:
                g = group_waters(xi[:, 0], bi, 4, seed=seed + i)
            else:
                g = np.asarray(groups[i] if not isinstance(groups, np.ndarray) or
                               groups.ndim == 3 else groups, dtype=np.int64)
                if g.ndim != 2 or g.shape[1] != 4 or np.any(g < 0) or np.any(g >= n_w):
                    raise MultiscaleError(
                        f"groups for frame {i} have shape {g.shape} or bad indices: expected "
                        f"(n_groups, 4) indices in [0, {n_w})"
                    )
            cl = xi[g]  # (G, 4, 3, 3)
            shift = cl[:, :, :1] - cl[:, :1, :1]
            cl = cl - bi * np.round(shift / bi)  # whole molecules, minimum image to water 0
            out.append(cl)
        cl = np.concatenate(out, axis=0)
        flat = cl.reshape(len(cl), 12, 3)
        flat = flat - _com(flat)[:, None]
        if max_radius is not None:
            r = np.linalg.norm(flat.reshape(-1, 4, 3, 3)[:, :, 0], axis=-1).max(axis=1)
            flat = flat[r <= max_radius]
        n_source = len(flat)
        if n_source == 0:
            raise MultiscaleError("no water clusters left: pass frames with >= 4 waters or "
                                  "raise max_radius")
        if n_source > max_clusters:
            flat = flat[np.sort(rng.choice(n_source, size=max_clusters, replace=False))]
        return cls(flat.reshape(-1, 4, 3, 3), n_source=n_source, note=note)

    @classmethod
    def default(cls) -> "WaterBank":
        """The bundled TIP3P bank (``multiscale/data/water_clusters_tip3p.npz``, made by
        ``scripts/make_water_clusters.py`` from a 20 ps NVT TIP3P run)."""
        return _default_bank()

    # ------------------------------------------------------------------ persistence
    def to_dict(self, tensors: bool = True) -> dict:
        """Plain dict for ``torch.save`` (loads with ``weights_only=True``): ``clusters`` as a
        float32 torch tensor (numpy array if ``tensors=False``), plus str/int metadata."""
        c = self.clusters
        if tensors:
            import torch

            c = torch.from_numpy(c.copy())
        return {"format": _FORMAT, "clusters": c, "n_source": self.n_source, "note": self.note}

    @classmethod
    def from_dict(cls, d: dict) -> "WaterBank":
        """Inverse of :meth:`to_dict` (accepts tensors or arrays)."""
        if not isinstance(d, dict) or "clusters" not in d:
            raise MultiscaleError("water bank dict has no 'clusters' entry: pass the output of "
                                  "WaterBank.to_dict()")
        fmt = d.get("format", _FORMAT)
        if fmt != _FORMAT:
            raise MultiscaleError(f"water bank format {fmt!r} is not supported ({_FORMAT!r})")
        c = d["clusters"]
        if hasattr(c, "detach"):
            c = c.detach().cpu().numpy()
        return cls(np.asarray(c, dtype=np.float32), n_source=d.get("n_source"),
                   note=d.get("note", ""))

    def save(self, path, note: str | None = None) -> None:
        """Write a compressed ``.npz`` (clusters float32, n_source, note)."""
        if note is not None:
            self.note = str(note)
        np.savez_compressed(path, clusters=self.clusters, n_source=np.int64(self.n_source),
                            note=np.array(self.note), format=np.array(_FORMAT))

    @classmethod
    def load(cls, path) -> "WaterBank":
        """Read a bank written by :meth:`save`."""
        if not os.path.exists(path):
            raise MultiscaleError(f"water bank file {path} does not exist: build it with "
                                  "WaterBank.save() or use WaterBank.default()")
        with np.load(path, allow_pickle=False) as z:
            if "clusters" not in z:
                raise MultiscaleError(f"{path} has no 'clusters' array: not a water bank file")
            return cls(z["clusters"], n_source=int(z["n_source"]) if "n_source" in z else None,
                       note=str(z["note"]) if "note" in z else "")

    # ------------------------------------------------------------------ placement
    def _draw(self, rng: np.random.Generator, m: int):
        """``m`` random (cluster index, quaternion) pairs: Gaussian quaternions (float32,
        not normalised: :func:`_rot_entries` divides by the norm) give uniform rotations."""
        return rng.integers(len(self), size=m), rng.standard_normal((m, 4), dtype=np.float32)

    def _oxygens(self, k: np.ndarray, quat: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """Oxygens of clusters ``k`` rotated by ``quat`` at ``centres`` (3, m): float32
        (3, 4, m) (coordinate, atom, cluster: long contiguous rows, fast broadcasting)."""
        rot = _rot_entries(quat, np.float32)
        c = [np.take(self._oT[d], k, axis=1) for d in range(3)]  # (4, m) each
        out = np.empty((3, 4, len(k)), dtype=np.float32)
        for i in range(3):
            o = out[i]
            np.multiply(c[0], rot[i][0], out=o)
            o += c[1] * rot[i][1]
            o += c[2] * rot[i][2]
            o += centres[i]
        return out

    def _coords(self, k: np.ndarray, quat: np.ndarray, centres: np.ndarray,
                out: np.ndarray | None = None) -> np.ndarray:
        """Full clusters ``k`` rotated by ``quat`` at ``centres`` (m, 3): (m, 12, 3) float64.

        The bank clusters have their COM at the origin (float64), a rotation keeps it there
        (for any matrix: the COM is linear), so the COM is ``centres`` to round-off."""
        rot = _rot_entries(quat, np.float64)
        c = [np.take(self._fT[d], k, axis=1) for d in range(3)]  # (12, m) each
        out = np.empty((len(k), 12, 3)) if out is None else out
        for i in range(3):
            v = c[0] * rot[i][0]
            v += c[1] * rot[i][1]
            v += c[2] * rot[i][2]
            v += centres[:, i]
            out[:, :, i] = v.T
        return out

    def place(self, beads, box, seed: int = 0, others=None, min_dist: float = MIN_DIST_OO,
              min_dist_others: float = MIN_DIST_OTHERS, max_retries: int = 5,
              n_candidates: int = 16, first_candidates: int = 8, return_stats: bool = False):
        """Replace each W bead by 4 waters (O, H1, H2), vectorised.

        Parameters
        ----------
        beads : (n, 3) nm W bead positions (any image).
        box : (3,) nm orthorhombic edge lengths (or a diagonal (3, 3) matrix).
        seed : seeds every random draw; same seed and inputs -> same output.
        others : optional (m, 3) nm positions of the non-water atoms to keep away from.
        min_dist : O-O cut-off (nm) between waters of different beads (see module doc).
        min_dist_others : cut-off (nm) between any water atom and any ``others`` atom.
        max_retries : rounds of re-drawing clashing beads.  A small set of beads covering
            every clash (greedy vertex cover of the clash graph) is re-drawn; the beads not in
            it form a clash-free accepted set.  Each re-drawn bead tries up to
            ``first_candidates`` candidates ((cluster, rotation) pairs) in round 1 and
            ``n_candidates`` in later rounds, one at a time against the accepted beads, and
            keeps the first clash-free one (else the one with the fewest clashing atoms);
            only the beads still clashing draw another candidate, so the cost follows the
            number of clashes, not ``n_candidates`` (hence the defaults 16 and 8, were 8 and
            2: ~0.13 % instead of ~0.75 % of beads left unresolved at the same cost).
            Clashes among the beads re-drawn in the same round that are clash-free otherwise
            are covered again.  A bead still stuck after an ``n_candidates`` round also
            releases the accepted neighbours it clashes with, so they are re-drawn together
            in the next round.
        n_candidates, first_candidates : see ``max_retries``.
        return_stats : also return :attr:`last_stats`.

        Returns
        -------
        (n, 4, 3, 3) float64 nm, molecules whole (not wrapped), the 12-atom centre of mass of
        row i equals ``beads[i]`` (float64 round-off).  ``self.last_stats`` (and the second
        return value with ``return_stats``) holds ``n_initial_clash`` (beads re-drawn after the
        first draw), ``clashing_after_retry`` and ``n_unresolved`` / ``unresolved`` (beads
        that may still clash: their best candidate is kept, energy minimisation fixes them).
        """
        x = np.asarray(beads, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != 3:
            raise MultiscaleError(f"W bead positions have shape {x.shape}: pass an (n, 3) "
                                  "array in nm")
        if not np.all(np.isfinite(x)):
            raise MultiscaleError("W bead positions contain NaN/inf: check the CG frame")
        b = orthorhombic_box(box)
        if max_retries < 0 or n_candidates < 1 or first_candidates < 1:
            raise MultiscaleError("max_retries must be >= 0, n_candidates and "
                                  "first_candidates >= 1")
        r_oo, r_ot = float(min_dist), float(min_dist_others)
        if not 0 < r_oo < self.min_intra_oo:
            raise MultiscaleError(
                f"min_dist={r_oo} nm must be > 0 and below the closest O-O distance inside a "
                f"bank cluster ({self.min_intra_oo:.3f} nm)"
            )
        # the search runs in float32: widen the cut-off by a few float32 ulps of the box
        # (~2.5e-5 nm at 50 nm) so no pair the float64 output has below r_oo is missed
        r_grid = r_oo + 1e-6 + 5e-7 * float(b.max())
        rng = np.random.default_rng(seed)
        n = len(x)
        if n == 0:
            self.last_stats = dict(n_beads=0, n_initial_clash=0, n_unresolved=0, retries=0,
                                   clashing_after_retry=[],
                                   unresolved=np.zeros(0, dtype=np.int64))
            out = np.zeros((0, 4, 3, 3))
            return (out, self.last_stats) if return_stats else out

        # spatial order (cache-friendly grids); results are mapped back at the end
        xw = wrap(x, b)
        nbc = np.maximum(np.floor(b / (_BEAD_CELL * r_oo)), 1).astype(np.int64)
        cell = np.minimum((xw * (nbc / b)).astype(np.int64), nbc - 1)
        order = _argsort_int((cell[:, 0] * nbc[1] + cell[:, 1]) * nbc[2] + cell[:, 2])
        del cell
        xw32 = np.ascontiguousarray(xw[order].T, dtype=np.float32)  # (3, n), sorted beads

        # 'others': a tree, and the beads close enough to touch them
        ot = None
        near = np.zeros(n, dtype=bool)
        if others is not None:
            oth = np.asarray(others, dtype=np.float64).reshape(-1, 3)
            if not np.all(np.isfinite(oth)):
                raise MultiscaleError("others positions contain NaN/inf: check the AA frame")
            if len(oth):
                ot = _tree(wrap(oth, b), b)
                dn, _ = ot.query(xw[order], k=1, distance_upper_bound=self.extent + r_ot,
                                 workers=-1)
                near = np.isfinite(dn)

        def other_clash(beads_, k, quat):
            """Number of atoms closer than r_ot to an 'others' atom, per candidate."""
            cnt = np.zeros(len(k), dtype=np.int64)
            rows = np.flatnonzero(near[beads_]) if ot is not None else []
            if len(rows) == 0:
                return cnt
            xyz = self._coords(k[rows], quat[rows], x[order[beads_[rows]]])
            d, _ = ot.query(wrap(xyz.reshape(-1, 3), b), k=1, distance_upper_bound=r_ot,
                            workers=-1)
            cnt[rows] = np.isfinite(d).reshape(len(rows), 12).sum(axis=1)
            return cnt

        del xw
        kk, qq = self._draw(rng, n)
        ox = self._oxygens(kk, qq, xw32)  # (3, 4, n) float32
        pts = tuple(ox.reshape(3, -1))  # oxygen (atom, bead) is point atom * n + bead
        bead_of = np.tile(np.arange(n, dtype=np.int32 if n < 2**31 else np.int64), 4)
        grid = _CellGrid(pts, b, r_grid, ids=bead_of)  # holds the oxygens from now on
        del pts, bead_of, ox
        bi, bj = grid.pairs()
        grid.real = None
        moved = np.zeros(n, dtype=bool)
        offender = _cover(bi, bj, n)
        del bi, bj
        offender |= other_clash(np.arange(n), kk, qq) > 0
        n_initial = int(offender.sum())

        retries, per_retry, last, last_o = 0, [], None, None
        for _ in range(max_retries):
            off = np.flatnonzero(offender)
            a = len(off)
            if a == 0:
                break
            retries += 1
            m = min(first_candidates, n_candidates) if retries == 1 else n_candidates
            accepted = ~offender  # grid entries of other beads are ignored
            if retries > 1:  # the beads re-drawn last round have moved
                grid.update(moved, tuple(last_o.reshape(3, -1)), np.tile(last, 4))

            best = np.full(a, np.iinfo(np.int64).max)
            bk = np.zeros(a, dtype=kk.dtype)
            bq = np.zeros((a, 4), dtype=qq.dtype)
            bo = np.zeros((3, 4, a), dtype=np.float32)
            bslot = np.zeros(a, dtype=np.int64)  # slot of the kept candidate
            partners = []  # (offender position, accepted bead, slot) of candidate clashes
            todo = np.arange(a)
            s = 0
            while s < m and len(todo):
                t = len(todo)
                nb = min(m - s, max(1, _BATCH // t))  # slots drawn at once when few remain
                beads_s = np.tile(off[todo], nb)  # candidate c: slot s + c // t
                ck, cq = self._draw(rng, t * nb)
                co = self._oxygens(ck, cq, xw32[:, beads_s])
                # query point 4 * cand + atom: a cluster's oxygens together (cache-friendly)
                qi, hb = grid.query(tuple(co.transpose(0, 2, 1).reshape(3, -1)))
                keep = accepted[hb]
                qi, hb = qi[keep], hb[keep]
                hit = np.zeros(4 * t * nb, dtype=bool)
                hit[qi] = True  # clashing oxygens
                cnt = hit.reshape(t * nb, 4).sum(axis=1)
                qi >>= 2  # candidate
                cnt += other_clash(beads_s, ck, cq)
                partners.append((todo[qi % t], hb, s + qi // t))
                for j in range(nb):  # in slot order: the first best candidate is kept
                    c = slice(j * t, (j + 1) * t)
                    better = np.flatnonzero(cnt[c] < best[todo])
                    w = todo[better]
                    better += j * t
                    best[w], bk[w], bq[w] = cnt[better], ck[better], cq[better]
                    bo[:, :, w] = co[:, :, better]
                    bslot[w] = s + j
                s += nb
                todo = todo[best[todo] > 0]
            bad = best > 0
            kk[off], qq[off] = bk, bq
            last_o = bo
            moved[:] = False
            moved[off] = True
            last = off
            # clashes among the re-drawn beads that are clash-free otherwise: cover them
            good = np.flatnonzero(~bad)
            ci, cj = _CellGrid(tuple(bo[:, :, good].reshape(3, -1)), b, r_grid,
                               ids=np.tile(good, 4)).pairs()
            bad |= _cover(ci, cj, a)
            offender[:] = False
            offender[off[bad]] = True
            if m == n_candidates and retries < max_retries:
                # beads stuck against accepted ones: release those neighbours too, so the
                # pair is re-drawn together next round (the accepted set stays clash-free)
                for pos, hb, sl in partners:
                    offender[hb[(bslot[pos] == sl) & (best[pos] > 0)]] = True
            per_retry.append(int(offender.sum()))
        grid = last_o = None  # free before the float64 output

        # output rows in the caller's order; bead order[i] of the sorted arrays is row i
        out = np.empty((n, 12, 3))
        src = np.empty(n, dtype=np.int64)
        src[order] = np.arange(n)
        step = 1 << 13  # chunks bound the temporaries, and spread over the threads

        def fill(i):
            rows = slice(i, min(i + step, n))
            j = src[rows]
            self._coords(kk[j], qq[j], x[rows], out=out[rows])

        _pmap(fill, list(range(0, n, step)))
        unresolved = np.sort(order[np.flatnonzero(offender)])
        self.last_stats = dict(n_beads=n, n_initial_clash=n_initial,
                               n_unresolved=int(len(unresolved)), retries=retries,
                               clashing_after_retry=per_retry, unresolved=unresolved)
        out = out.reshape(n, 4, 3, 3)
        return (out, self.last_stats) if return_stats else out


@functools.lru_cache(maxsize=1)
def _default_bank() -> WaterBank:
    ref = resources.files("multiscale") / "data" / DEFAULT_BANK_FILE
    with resources.as_file(ref) as p:
        if not os.path.exists(p):
            raise MultiscaleError(
                f"bundled water bank {DEFAULT_BANK_FILE} is missing from the installation: "
                "reinstall multiscale or run scripts/make_water_clusters.py"
            )
        return WaterBank.load(p)

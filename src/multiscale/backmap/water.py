"""CG -> AA water: each Martini 3 ``W`` bead becomes 4 TIP3P molecules from a cluster bank.

The bank holds real 4-water clusters cut out of atomistic frames with the same grouping used
going AA -> CG (:func:`multiscale.water.group_waters`), stored relative to their centre of mass.
Placing a randomly chosen cluster with a uniformly random rotation at each bead reproduces the
within-cluster structure of the source liquid exactly; between clusters, overlaps are removed
by re-drawing only the offending beads (O-O test), then the atom contacts left by turning or
moving single molecules (all atoms).  Every bead position is reproduced exactly as the centre
of mass of its 12 atoms (O 15.9994, H 1.008).

Clash criteria (module constants, overridable per call):

* :data:`MIN_DIST_OO` = 0.17 nm between oxygens of different beads: the clearance GROMACS
  itself accepts for new water (``gmx solvate``/``insert-molecules`` default ``-scale 0.57``
  x (0.152 + 0.152) nm O van der Waals radii = 0.173 nm).  Real liquid water has no O-O pair
  below ~0.24 nm (first g_OO peak 0.28 nm), but randomly oriented rigid clusters on a
  Martini-density lattice cannot all be separated that far (re-draws stall above ~0.19 nm,
  measured); 0.17 nm is reached for > 99 % of beads and leaves compressions that a short
  steepest-descent minimisation removes.
* :data:`MIN_DIST_ATOMS` = 0.085 nm between any two atoms of different water molecules (H-H,
  O-H, O-O; same bead or not), enforced by the contact stage below.  The O-O test alone let
  H come within 0.0015 nm of foreign atoms (pairs < 0.08 nm in the output: 1,138 at 10k beads,
  10,304 at 97k, 105,505 at 1M; bench below), which the backmapping engine's clash check
  (0.08 nm) then had to re-place bead by bead, and beads 0.29-0.34 nm apart could not be
  fixed that way at all.  0.085 nm keeps 0.005 nm of margin over that 0.08 nm check (a .gro
  file rounds to 0.001 nm per coordinate, < 0.002 nm per distance); each step up costs
  placement speed (97k beads, same machine state: 0.085 nm 150k beads/s, 12.4k contacts;
  0.09 nm 135k/s, 16.0k; stage off 212k/s; 0.10 nm: 28.7k contacts).
* :data:`MIN_DIST_OTHERS` = 0.15 nm between any water atom and any ``others`` atom (the
  non-water atoms, all elements).  That is ``gmx solvate``'s scaled clearance for O...H
  (0.57 x (0.152 + 0.12) = 0.155 nm), shorter than any equilibrium non-bonded contact
  (hydrogen bonds H...O/N ~0.17-0.20 nm), so waters may still hydrogen-bond to the solute.

Placement is vectorised numpy (no per-bead Python loops).  Bead stage: clashes are found with a
periodic cell list in float32 (:class:`_CellGrid`: ghost copies of the boundary cells,
2r x 2r x r cells, 4 contiguous index ranges per query point), built once on the first draw's
oxygens and merged with the re-drawn beads after each round; only re-drawn beads are checked,
and they try their candidates one at a time (a bead that found a clash-free one stops
drawing), so the work follows the number of clashes; ~0.13 % of beads are left unresolved
(O-O below 0.17 nm).

Contact stage (:meth:`WaterBank._contacts`, after the bead stage; ``min_dist_atoms=0`` skips
it and gives the bead stage's output bit for bit).  Every atom of a water lies within
0.076 nm of the midpoint P of its H and within 0.092 nm of its centre of mass (COM), so one
cell list of the P (radius 0.09 + 0.076 + 0.092 nm) yields every pair of molecules that can
touch (checked atom by atom, dense) and every molecule that can touch one turned about, or
moved to, a given COM.  One molecule per contact is moved (the one whose H touches the
other's O, else the one with more contacts; greedy cover per molecule pair), rigidly:

1. spun about its own C2 axis (15 angles, 90, 45, 135 ... degrees; O, P and COM stay, so the
   O-O clearance and the bead's COM are untouched): fixes ~95 % of them;
2. else turned freely about its COM (2 x 16 random orientations; the O moves <= 0.013 nm and
   must keep ``min_dist`` from other beads' oxygens);
3. else shifted: the molecule moves by d (0.02-0.12 nm) and turns, its three cluster-mates
   move by -d/3 (the 12-atom COM stays on the bead: equal molecule masses); repeated
   failures get 4x the candidates, then all four molecules turned and moved (zero sum).

Candidates are tested against every molecule not moving in the round (and ``others``); in
round one molecules moving at once are checked against each other afterwards, later rounds
move only molecules that cannot reach each other.  A final search over every molecule that
moved (its P pairs, or its COM neighbours if turned or shifted) verifies the result; pairs
still closer, if any, are reported in ``last_stats`` (``n_contacts``/``contacts``), never
dropped.  Waters stay rigid (moved ones get their own rotation of the bank molecule's
shape), the COM of each bead stays exact (float64 round-off, 2e-14 nm at 1M beads).

Measured (``benchmarks/bench_water.py --repeat 2``, 2-CPU VM shared with other jobs, load
~1; lattice at Martini W density with 0.05 nm jitter, so some beads are 0.2-0.3 nm apart),
with the default 0.085 nm: 10,648 beads: 1,468 contacts -> 0 in 2 rounds (1,394 molecules
moved, 5 beads shifted), 73k beads/s (fixed numpy costs dominate at this size; 142k/s
without the contact stage); 97,336 beads: 13,476 -> 0 in 3 rounds, 135k beads/s (was
205k/s); 1M beads: 137,502 -> 0 in 6 rounds (131,330 moved, 760 shifted), 7.8 s, 128k
beads/s (was 203k/s), peak RSS +578 MB.  Minimum distance between atoms of different water
molecules in the output: 0.0850 nm at every size (was 0.0044, 0.0048, 0.0015 nm); with 0.09
nm the same runs gave 88-95k, 115-137k and 119-142k beads/s.
Unresolved (O-O) beads unchanged: the stage keeps the bead stage's O-O clearance.  Where the
time goes at 97k beads (CPU): cell list of the P and its pairs ~0.13 s, atom checks ~0.06 s,
rounds ~0.15 s, final check ~0.03 s; at 10k the rounds' fixed numpy costs dominate.
(History of the bead stage: 56-61k beads/s at 10k-100k, 38-42k/s at 1M, +1.7 GB, 0.75-0.8 %
unresolved before lazy candidates and the row cell list; 150-250k/s after.)

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
    "MIN_DIST_ATOMS",
    "DEFAULT_BANK_FILE",
    "random_rotations",
]

O_MASS = 15.9994
H_MASS = 1.008
#: Masses (amu) of the 12 atoms of one bead, order (water, atom) = O, H1, H2 per water.
CLUSTER_MASSES = np.tile(np.array([O_MASS, H_MASS, H_MASS]), 4)
MIN_DIST_OO = 0.17
MIN_DIST_OTHERS = 0.15
MIN_DIST_ATOMS = 0.085
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


def _rotmat(q: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Rotation matrices (m, 3, 3) of quaternions ``q`` (m, 4) (see :func:`_rot_entries`)."""
    r = _rot_entries(q, dtype)
    return np.stack([np.stack(row, axis=-1) for row in r], axis=-2)


def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Quaternion products ``a * b`` (rotation b, then a), (m, 4) (w, x, y, z)."""
    aw, av = a[:, :1], a[:, 1:]
    bw, bv = b[:, :1], b[:, 1:]
    return np.concatenate([aw * bw - (av * bv).sum(1, keepdims=True),
                           aw * bv + bw * av + np.cross(av, bv)], axis=1)


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

#: contact stage (:meth:`WaterBank._contacts`): fails[molecule] counts its failed rounds; at
#: 0 it is spun about its own C2 axis (O, H-H midpoint and centre of mass fixed) and, if no
#: spin clears it, turned freely about its centre of mass; from _TURN_AFTER on only turned;
#: from _SHIFT_AFTER on shifted (it moves, its 3 cluster-mates move back by a third: the
#: bead's centre of mass is kept); from _SCRAMBLE_AFTER on all 4 waters of the bead are
#: turned and moved (random zero-sum vectors, _SCRAMBLE_SIGMA nm per coordinate)
_TURN_AFTER = 1
_SHIFT_AFTER = 2
_SCRAMBLE_AFTER = 4
_SCRAMBLE_SIGMA = 0.04
#: spin angles, in this order (degrees; pi swaps the two H: 90 moves them furthest)
_SPIN_FIRST = (90.0, 45.0, 135.0, 67.5, 112.5, 22.5, 157.5, 33.75, 146.25, 56.25, 123.75, 78.75,
               101.25, 11.25, 168.75)
#: length of a shift (nm); also bounds every move of a scramble
_SHIFT_RANGE = (0.02, 0.12)
#: shift candidates per contact query at least (several slots at once when few are left)
_SHIFT_BATCH = 1024

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


def _sort_keys(key: np.ndarray):
    """Stable sort of non-negative integer keys: ``(order, key[order])``.  Key and index are
    packed into one int64 and sorted by numpy's SIMD sort (unique values: the result is the
    stable order, deterministic); 2x faster than the LSD radix sort below, which remains the
    fallback for keys >= 2**31 or more than 2**32 keys."""
    n = len(key)
    if n == 0:
        return np.zeros(0, dtype=np.int64), key[:0]
    if n < 2**32 and int(key.max()) < 2**31:
        c = key.astype(np.int64)
        c <<= 32
        c |= np.arange(n, dtype=np.int64)
        c.sort()
        order = c & 0xFFFFFFFF
        c >>= 32
        return order, c.astype(key.dtype)
    order = _radix_argsort(key)
    return order, key[order]


def _cover_atoms(ai: np.ndarray, aj: np.ndarray) -> np.ndarray:
    """Molecules (sorted ids) to move so that every contact ``ai``-``aj`` (atom ids
    ``3 * molecule + atom``, atom 0 = O) loses one end, decided per pair of molecules: the
    molecule whose hydrogen touches the other's oxygen (spinning it about its C2 axis moves
    the H, not the O), else the one with more contacting partners (ties: higher id)."""
    if len(ai) == 0:
        return np.zeros(0, dtype=np.int64)
    mi, mj = ai // 3, aj // 3
    u, inv = np.unique(np.concatenate([mi, mj]), return_inverse=True)
    i, j = inv[:len(mi)], inv[len(mi):]
    swap = i > j
    i, j = np.where(swap, j, i), np.where(swap, i, j)  # i < j
    oi, oj = ai % 3 == 0, aj % 3 == 0
    oi, oj = np.where(swap, oj, oi), np.where(swap, oi, oj)
    key = i * len(u) + j
    pk, pinv = np.unique(key, return_inverse=True)
    i, j = pk // len(u), pk % len(u)
    pref_j = np.bincount(pinv, weights=oi & ~oj, minlength=len(pk)) > 0  # H of j on O of i
    pref_i = np.bincount(pinv, weights=oj & ~oi, minlength=len(pk)) > 0
    deg = np.bincount(i, minlength=len(u)) + np.bincount(j, minlength=len(u))
    pick_i = (pref_i & ~pref_j) | ((pref_i == pref_j) &
                                   ((deg[i] > deg[j]) | ((deg[i] == deg[j]) & (i > j))))
    return np.unique(u[np.where(pick_i, i, j)])


class _Moves:
    """Molecules moved by the contact stage of :meth:`WaterBank.place`: sorted ids
    ``4 * bead + water`` (sorted bead order), each with its own orientation (quaternion; it
    replaces the cluster's rotation for that molecule) and the translation of its centre of
    mass (nm, float64).  Molecules not listed keep their cluster's rotation and place."""

    def __init__(self):
        self.ids = np.zeros(0, dtype=np.int64)
        self.q = np.zeros((0, 4))
        self.t = np.zeros((0, 3))

    def _find(self, mol):
        pos = np.minimum(np.searchsorted(self.ids, mol), max(len(self.ids) - 1, 0))
        hit = self.ids[pos] == mol if len(self.ids) else np.zeros(len(mol), dtype=bool)
        return pos, hit

    def get(self, mol, qdef):
        """Orientations (default ``qdef``) and translations of molecules ``mol``."""
        q = np.array(qdef, dtype=np.float64)
        t = np.zeros((len(mol), 3))
        pos, hit = self._find(mol)
        q[hit], t[hit] = self.q[pos[hit]], self.t[pos[hit]]
        return q, t

    def set(self, mol, q, t):
        """Record orientations ``q`` and translations ``t`` of (distinct) molecules ``mol``."""
        pos, hit = self._find(mol)
        self.q[pos[hit]], self.t[pos[hit]] = q[hit], t[hit]
        new = ~hit
        if new.any():
            ids = np.concatenate([self.ids, mol[new]])
            o = np.argsort(ids, kind="stable")
            self.ids = ids[o]
            self.q = np.concatenate([self.q, q[new]])[o]
            self.t = np.concatenate([self.t, t[new]])[o]


def _argsort_int(key: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative integer keys (see :func:`_sort_keys`)."""
    return _sort_keys(key)[0]


def _radix_argsort(key: np.ndarray) -> np.ndarray:
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
    """

    def __init__(self, p, box: np.ndarray, r: float, ids: np.ndarray | None = None,
                 wrapped: bool = False):
        """``wrapped``: ``p`` are float32 arrays already in [0, L] (used in place)."""
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
        self.key, self.xyz, self.ids, real = self._entries(p, ids, wrapped)
        self.real = np.flatnonzero(real).astype(self.ids.dtype if m < 2**31 - 1 else np.int64)
        del real
        self.start = _starts(self.key, ncell)

    def _wrap(self, p, sides: bool = True, wrapped: bool = False):
        """float32 coordinates wrapped into the box, padded cell indices (1..nc) and, in x
        and y, the side of the cell half each point is in (see :meth:`_sides`)."""
        xyz, ci = [], []
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

    def _entries(self, p, ids, wrapped: bool = False):
        """Sorted cell keys, coordinates, ids and real-point flags of points ``p`` and their
        ghost copies."""
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

    def pairs(self, div: int = 0):
        """All unordered pairs (ids) of points closer than r, as two index arrays; with
        ``div`` > 0 only pairs whose ids differ after integer division by ``div`` (e.g. atoms
        ``3 * molecule + atom`` of different molecules: filtered per chunk, so the many
        bonded pairs never pile up)."""
        if self.kd is not None:
            pp = self.kd.query_pairs(self.r, output_type="ndarray").reshape(-1, 2)
            a, b = self.kd_ids[pp[:, 0]], self.kd_ids[pp[:, 1]]
            if div:
                k = a // div != b // div
                a, b = a[k], b[k]
            return a, b
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
            a = ix[a]
            if div:
                ia, ib = self.ids[a], self.ids[b]
                k = np.flatnonzero(ia // div != ib // div)
                return ia[k], ib[k]
            return a, b

        res = _pmap(one, range(0, len(self.real), _CHUNK))
        a, b = _cat([v[0] for v in res]), _cat([v[1] for v in res])
        return (a, b) if div else (self.ids[a], self.ids[b])

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
        # all atoms per coordinate (K, 12) float32 (contact stage), and each molecule split
        # into its own centre of mass g (K, 4, 3) and rigid shape about it v (K, 4, 3, 3)
        self._aT = tuple(np.ascontiguousarray(self._flat[:, :, d], dtype=np.float32)
                         for d in range(3))
        w4 = self._flat.reshape(len(c), 4, 3, 3)
        m3 = CLUSTER_MASSES[:3]
        self._g64 = np.einsum("cwad,a->cwd", w4, m3) / m3.sum()
        self._v64 = w4 - self._g64[:, :, None]
        self._g32 = self._g64.astype(np.float32)
        #: largest distance of an atom from its molecule's COM, and from its H-H midpoint
        self._rho = float(np.linalg.norm(self._v64, axis=-1).max())
        pm = self._v64[:, :, 1:].mean(axis=2, keepdims=True)
        self._rho_p = float(np.linalg.norm(self._v64 - pm, axis=-1).max())
        #: each molecule's C2 axis (COM -> O, unit vector) in its bank frame
        self._axis64 = self._v64[:, :, 0] / np.linalg.norm(self._v64[:, :, 0], axis=-1)[..., None]
        self._v32 = self._v64.astype(np.float32)
        #: largest atom distance from the COM over the bank (nm)
        self.extent = float(np.linalg.norm(self._flat, axis=-1).max())
        o = c[:, :, 0]
        d = np.linalg.norm(o[:, :, None] - o[:, None], axis=-1)
        d[:, np.arange(4), np.arange(4)] = np.inf
        #: smallest O-O distance inside any cluster (nm)
        self.min_intra_oo = float(d.min())
        a = c.reshape(len(c), 4, 1, 3, 1, 3) - c.reshape(len(c), 1, 4, 1, 3, 3)
        a = np.linalg.norm(a, axis=-1)
        a[:, np.arange(4), np.arange(4)] = np.inf
        #: smallest distance between atoms of different molecules inside any cluster (nm)
        self.min_intra_atoms = float(a.min())

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

    def _molecules32(self, k: np.ndarray, quat: np.ndarray, centres: np.ndarray,
                     box: np.ndarray):
        """Centres of mass (4 m, 3) (wrapped into the box) and atoms relative to them
        (4 m, 3, 3) of the molecules of clusters ``k`` rotated by ``quat`` at ``centres``
        (3, m), float32; molecule id ``4 * cluster + water``."""
        m = len(k)
        com = np.empty((m, 4, 3), dtype=np.float32)
        rel = np.empty((m, 4, 3, 3), dtype=np.float32)
        bl = box.astype(np.float32)
        step = 1 << 14

        def one(i0):
            sl = slice(i0, min(i0 + step, m))
            rot = _rot_entries(quat[sl], np.float32)
            kk = k[sl]
            g = self._g32[kk]  # (m', 4, 3)
            v = self._v32[kk]  # (m', 4, 3, 3)
            for i in range(3):
                r0, r1, r2 = (rot[i][j][:, None] for j in range(3))
                c = g[:, :, 0] * r0 + g[:, :, 1] * r1 + g[:, :, 2] * r2
                c += centres[i, sl, None]
                c -= bl[i] * np.floor(c / bl[i])
                c[c >= bl[i]] = 0
                com[sl, :, i] = c
                r0, r1, r2 = (x[:, :, None] for x in (r0, r1, r2))
                rel[sl, :, :, i] = v[..., 0] * r0 + v[..., 1] * r1 + v[..., 2] * r2

        _pmap(one, range(0, m, step))
        return com.reshape(-1, 3), rel.reshape(-1, 3, 3)

    def _contacts(self, rng, kk, qq, xw32, box, r_at, r_og, unres, ot, near, r_ot, rounds,
                  n_cand):
        """Contact stage of :meth:`place` (sorted bead order; see there).

        Every atom of a water lies within ``rho_p`` (0.076 nm) of the midpoint P of its two H
        and within ``rho`` (0.092 nm) of its centre of mass (COM).  One cell list of the P (4
        per bead), radius ``r_p = r_at + rho + rho_p``, gives every molecule pair that can
        touch (P closer than ``r_at + 2 rho_p``), checked atom by atom (dense numpy), and
        every molecule that can touch one turned about, or moved to, a given COM (P within
        ``r_p`` of it).  One molecule per contact is moved (the one whose H touches the
        other's O, else the one with more contacts): spun about its C2 axis (O, P and COM
        fixed; 90, 45, 135 ... degrees: tested against its pair list), else turned about its
        COM, later shifted (one molecule by d, its three cluster-mates by -d/3: the bead's
        COM is kept).  The P of turned and shifted molecules (stale in the cell list) sit in
        a small second list.  Turned and shifted oxygens keep ``r_og`` from the oxygens of
        other beads (beads in ``unres`` aside, as in the bead stage).  Returns the moves
        (:class:`_Moves`), counters, the atom pairs (atom ids ``3 * molecule + atom``, sorted
        bead order) still closer than ``r_at`` (float32 test, cut-off widened by round-off),
        the molecules still closer than ``r_ot`` to ``others`` and the beads whose oxygens
        ended closer than ``r_og`` to another bead's."""
        n = len(kk)
        nm = 4 * n
        Lf = box.astype(np.float32)
        slop = 2e-6 + 1e-6 * float(box.max())  # float32 round-off of the positions
        r2 = np.float32((r_at + slop) ** 2)
        ro2 = np.float32(r_og * r_og)
        r_otg = r_ot + 1e-5
        rho, rho_p = self._rho, self._rho_p
        r_c = r_at + 2 * rho + 2 * slop
        # one cell list of the P serves the pairs (P within r_at + 2 rho_p) and the molecules
        # that can touch one turned about, or moved to, a centre of mass (P within
        # r_at + rho + rho_p of it)
        r_p = r_at + rho + rho_p + 2 * slop
        r_turn2 = np.float32((r_at + rho + 2 * slop) ** 2)
        r_spin2 = np.float32((r_at + rho_p + 2 * slop) ** 2)
        idt = np.int32 if nm < 2**31 - 1 else np.int64
        com, rel = self._molecules32(kk, qq, xw32, box)

        def p_of(mols):
            """H-H midpoints (m, 3), wrapped into the box."""
            p = com[mols] + 0.5 * (rel[mols, 1] + rel[mols, 2])
            p -= Lf * np.floor(p / Lf)
            p[p >= Lf] = 0
            return p

        pall = np.empty((3, nm), dtype=np.float32)
        for d in range(3):
            x = pall[d]
            np.add(rel[:, 1, d], rel[:, 2, d], out=x)
            x *= np.float32(0.5)
            x += com[:, d]
            x[x < 0] += Lf[d]  # P is within rho of the wrapped COM
            x[x >= Lf[d]] -= Lf[d]
        pgrid = _CellGrid(tuple(pall), box, r_p, ids=np.arange(nm, dtype=idt), wrapped=True)
        del pall
        pi, pj = pgrid.pairs()  # every molecule pair whose atoms may touch
        pgrid.real = None
        moves = _Moves()
        moved = np.zeros(nm, dtype=bool)
        omoved = np.zeros(nm, dtype=bool)  # turned or shifted: O and P moved (pgrid stale)
        moving = np.zeros(nm, dtype=bool)
        fails = np.zeros(nm, dtype=np.int8)
        umap = np.full(nm, -1, dtype=np.int64)
        ogrid = None  # P of the turned and shifted molecules

        def atoms_of(mols):
            return com[mols][:, None] + rel[mols]

        def dvec(p, nb):
            """Minimum-image vectors (float32) from positions p (e, 3) to COMs of nb."""
            d = com[nb] - p
            d -= Lf * np.round(d / Lf)
            return d

        def pair_hits(i, j):
            """Atom pairs (ids) closer than r_at among molecule pairs (i, j), now."""
            def one(s):
                a, b = i[s:s + _CHUNK], j[s:s + _CHUNK]
                d = dvec(com[a], b)
                ra, rb = rel[a], rel[b]
                s2 = None
                for k in range(3):  # per coordinate: no 4-d temporaries
                    x = (rb[:, None, :, k] + d[:, k, None, None]) - ra[:, :, None, k]
                    x *= x
                    s2 = x if s2 is None else s2 + x
                p, x, y = np.nonzero(s2 < r2)
                return 3 * a[p] + x, 3 * b[p] + y

            res = _pmap(one, range(0, len(i), _CHUNK))
            return (_cat([v[0] for v in res]).astype(np.int64),
                    _cat([v[1] for v in res]).astype(np.int64))

        def p_neighbours(mols):
            """(index into mols, molecule): every other molecule whose P is within r_p of
            the P of mols (none of them turned or shifted): the P list, less the molecules
            whose P moved, plus those (their grid)."""
            ks, nbs = [], []
            if len(mols) > len(pi) // 256:  # many: a pass over the P list
                umap[mols] = np.arange(len(mols))
                for a, b in ((pi, pj), (pj, pi)):
                    e = np.flatnonzero(umap[a] >= 0)
                    b = b[e]
                    k = np.flatnonzero(~omoved[b])
                    ks.append(umap[a[e[k]]])
                    nbs.append(b[k].astype(np.int64))
                umap[mols] = -1
            else:  # few: queries
                qi, h = pgrid.query(tuple(p_of(mols).T))
                h = h.astype(np.int64)
                k = np.flatnonzero(~omoved[h] & (h != mols[qi]))
                ks.append(qi[k])
                nbs.append(h[k])
            if ogrid is not None:
                qi, h = ogrid.query(tuple(p_of(mols).T))
                k = np.flatnonzero(h != mols[qi])
                ks.append(qi[k])
                nbs.append(h[k])
            return _cat(ks), _cat(nbs)

        def c_neighbours(mols, pos=None):
            """(index into mols, molecule): every other molecule that can touch a molecule
            of mols turned about, or moved to, the centre of mass ``pos`` (default: the
            present COMs of mols): the P within r_p of it."""
            mols = np.asarray(mols, dtype=np.int64)
            p = com[mols] if pos is None else pos
            qi, h = pgrid.query(tuple(p.T))
            h = h.astype(np.int64)
            k = np.flatnonzero(~omoved[h] & (h != mols[qi]))
            ks, nbs = [qi[k]], [h[k]]
            if ogrid is not None and len(mols):
                qi, h = ogrid.query(tuple(p.T))
                k = np.flatnonzero(h != mols[qi])
                ks.append(qi[k])
                nbs.append(h[k])
            return _cat(ks), _cat(nbs)

        def other_hits(beads, atoms):
            """Atoms closer than r_ot to an 'others' atom, per row of atoms (c, na, 3)."""
            cnt = np.zeros(len(beads), dtype=np.int64)
            rows = np.flatnonzero(near[beads]) if ot is not None else []
            if len(rows) == 0:
                return cnt
            a = wrap(atoms[rows].reshape(-1, 3).astype(np.float64), box)
            d, _ = ot.query(a, k=1, distance_upper_bound=r_otg, workers=-1)
            cnt[rows] = np.isfinite(d).reshape(len(rows), -1).sum(axis=1)
            return cnt

        def spun(r, phi):
            """Atoms (u, 3, 3) relative to their COM spun by angles phi (u, K) about their
            C2 axis (Rodrigues): (u, K, 3, 3)."""
            a = r[:, 0] / np.linalg.norm(r[:, 0], axis=1, keepdims=True)  # COM -> O
            c, s = np.cos(phi).astype(np.float32), np.sin(phi).astype(np.float32)
            ax = np.cross(a[:, None], r)  # (u, 3, 3)
            along = a[:, None] * np.einsum("ux,uax->ua", a, r)[:, :, None]
            return (r[:, None] * c[:, :, None, None] + ax[:, None] * s[:, :, None, None]
                    + along[:, None] * (1 - c)[:, :, None, None])

        def spin_quat(units, q0, phi):
            """Orientations after spins phi (u,) of molecules with orientations q0."""
            ax = self._axis64[kk[units // 4], units % 4]
            qb = np.concatenate([np.cos(phi / 2)[:, None], np.sin(phi / 2)[:, None] * ax], 1)
            return _qmul(q0, qb)

        def first_best(cnt):
            """Per row of cnt (u, K): the first zero, else the first of the fewest."""
            zero = cnt == 0
            first = np.argmax(zero, axis=1)
            ok = zero[np.arange(len(cnt)), first]
            return np.where(ok, first, cnt.argmin(axis=1))

        def reach(units, ek, nb, r_near2, centre):
            """Neighbour atoms (molecules nb of entries ek) in the frame of their unit's COM,
            within sqrt(r_near2) of ``centre`` (u, 3) (same frame): (entry unit, atoms (e, 3),
            O-O applies)."""
            X = (dvec(com[units[ek]], nb)[:, None] + rel[nb]).reshape(-1, 3)
            ea = np.repeat(ek, 3)
            oo = np.zeros((len(ek), 3), dtype=bool)
            bead = units[ek] // 4
            oo[:, 0] = (nb // 4 != bead) & ~unres[nb // 4] & ~unres[bead]
            dc = X - centre[ea]
            e = np.flatnonzero(np.einsum("ex,ex->e", dc, dc) < r_near2)
            return ea[e], X[e], oo.ravel()[e]

        def trial(units, sel, Y, ea, X, oo, check_oo):
            """Contacts (len(sel), K) of candidate atoms Y (len(sel), K, 3, 3) (unit frame)
            of units[sel] with the neighbour atoms (ea, X)."""
            K = Y.shape[1]
            m_ = np.full(len(units), -1, dtype=np.int64)
            m_[sel] = np.arange(len(sel))
            e = np.flatnonzero(m_[ea] >= 0)
            pos = m_[ea[e]]
            d = X[e][:, None, None] - Y[pos]  # (e, K, a, 3)
            d2 = np.einsum("ekax,ekax->eka", d, d)
            h = (d2 < r2).sum(axis=2)
            if check_oo:
                h += (d2[:, :, 0] < ro2) & oo[e][:, None]
            cnt = np.bincount((pos[:, None] * K + np.arange(K)).ravel(), weights=h.ravel(),
                              minlength=len(sel) * K).reshape(len(sel), K).astype(np.int64)
            if ot is not None:
                cnt += other_hits(np.repeat(units[sel] // 4, K),
                                  (com[units[sel]][:, None, None] + Y).reshape(-1, 3, 3)
                                  ).reshape(len(sel), K)
            return cnt

        def rotate(units, spin_first):
            """Dense trials of new orientations (COM fixed) for molecules ``units``: spins
            about the C2 axis where ``spin_first`` (the P list), then free turns (the COM
            list); the first contact-free candidate is kept, else the first with the fewest
            contacts.  Returns (contacts, turned)."""
            u = len(units)
            best = np.full(u, np.iinfo(np.int64).max)
            bturn = np.zeros(u, dtype=bool)
            if u == 0:
                return best, bturn
            bead = units // 4
            q0, t0 = moves.get(units, qq[bead])
            r0 = rel[units]  # spins start from the present orientation (q0)
            bq = q0.copy()

            def keep(sel, cnt, Y):
                """Rows ``sel`` whose best candidate (:func:`first_best` of cnt (len(sel), K))
                beats their best so far take it (relative atoms from Y (len(sel), K, 3, 3));
                returns (those rows, their positions in sel, the pick per sel row)."""
                pick = first_best(cnt)
                val = cnt[np.arange(len(sel)), pick]
                better = np.flatnonzero(val < best[sel])
                s = sel[better]
                best[s] = val[better]
                rel[units[s]] = Y[better, pick[better]]
                return s, better, pick

            todo = np.arange(u)
            sp = np.flatnonzero(spin_first)
            if len(sp):
                ek, nb = p_neighbours(units[sp])
                k = np.flatnonzero(~moving[nb])
                P = 0.5 * (r0[sp, 1] + r0[sp, 2])  # spins keep it
                ea, X, oo = reach(units[sp], ek[k], nb[k], r_spin2, P)
                ea = sp[ea]
                for arg in (_SPIN_FIRST[:4], _SPIN_FIRST[4:]):
                    sel = todo[spin_first[todo]]
                    if len(sel) == 0:
                        break
                    phi = np.broadcast_to(np.radians(arg), (len(sel), len(arg)))
                    Y = spun(r0[sel], phi)
                    s, better, pick = keep(sel, trial(units, sel, Y, ea, X, oo, False), Y)
                    bq[s] = spin_quat(units[s], q0[s], phi[better, pick[better]])
                    todo = todo[best[todo] > 0]
            if len(todo):
                ek, nb = c_neighbours(units[todo])
                k = np.flatnonzero(~moving[nb])
                ea, X, oo = reach(units[todo], ek[k], nb[k], r_turn2,
                                  np.zeros((len(todo), 3), dtype=np.float32))
                ea = todo[ea]
                v = self._v32[kk[bead[todo]], units[todo] % 4]
                vmap = np.full(u, -1, dtype=np.int64)
                vmap[todo] = np.arange(len(todo))
                for K in (n_cand // 2, n_cand - n_cand // 2):
                    sel = todo
                    if len(sel) == 0 or K == 0:
                        continue
                    cq = rng.standard_normal((len(sel), K, 4))
                    R = _rotmat(cq.reshape(-1, 4), np.float32).reshape(len(sel), K, 3, 3)
                    Y = np.matmul(v[vmap[sel]][:, None], R.transpose(0, 1, 3, 2))
                    s, better, pick = keep(sel, trial(units, sel, Y, ea, X, oo, True), Y)
                    bturn[s] = True
                    bq[s] = cq[better, pick[better]]
                    todo = todo[best[todo] > 0]
            moves.set(units, bq, t0)
            return best, bturn

        def oo_close(i, j):
            """Indices of molecule pairs (i, j) of different beads, neither in unres, whose
            oxygens are closer than r_og."""
            bi, bj = i // 4, j // 4
            k = np.flatnonzero((bi != bj) & ~unres[bi] & ~unres[bj])
            d = dvec(com[i[k]] + rel[i[k], 0], j[k]) + rel[j[k], 0]
            return k[np.einsum("pk,pk->p", d, d) < ro2]

        def shift(units):
            """Trials of moving the molecules of units (u, 4) (one bead each): the first by d
            and the others by -d/3, the first one also turned; after _SCRAMBLE_AFTER failed
            rounds all four by random zero-sum vectors, all turned.  One candidate at a time
            (several at once when few are left), against the COM cell list.  Returns
            (contacts, contact partners of the stuck units)."""
            u = len(units)
            best = np.full(u, np.iinfo(np.int64).max)
            if u == 0:
                return best, np.zeros(0, dtype=np.int64)
            mol = units.ravel()
            q0, t0 = moves.get(mol, qq[mol // 4])
            bq, bt = q0.reshape(u, 4, 4).copy(), np.zeros((u, 4, 3))
            kslot = np.zeros(u, dtype=np.int64)
            bead = units[:, 0] // 4
            c0 = com[mol].reshape(u, 4, 3)
            rl = rel[mol].reshape(u, 4, 3, 3)
            v = self._v32[kk[mol // 4], mol % 4].reshape(u, 4, 3, 3)
            scr = fails[units[:, 0]] >= _SCRAMBLE_AFTER
            m = n_cand * (4 if np.any(fails[units[:, 0]] > _SHIFT_AFTER) else 1)
            ii, jj = np.triu_indices(4, 1)
            stuck = []
            todo = np.arange(u)
            s = 0
            while s < m and len(todo):
                tn = len(todo)
                nb_ = min(m - s, max(1, _SHIFT_BATCH // tn))
                cu = np.tile(todo, nb_)  # candidate c: slot s + c // tn
                c = len(cu)
                sc = scr[cu]
                cq = q0.reshape(u, 4, 4)[cu].copy()
                cq[:, 0] = rng.standard_normal((c, 4))
                d = rng.standard_normal((c, 3))
                d *= (rng.uniform(*_SHIFT_RANGE, size=c) / np.linalg.norm(d, axis=1))[:, None]
                tt = np.zeros((c, 4, 3))
                tt[:, 0] = d
                tt[:, 1:] = -d[:, None] / 3
                ns = int(sc.sum())
                if ns:  # scramble: all four turned and moved (zero sum)
                    cq[sc, 1:] = rng.standard_normal((ns, 3, 4))
                    g = rng.standard_normal((ns, 4, 3)) * _SCRAMBLE_SIGMA
                    g -= g.mean(axis=1, keepdims=True)
                    big = np.linalg.norm(g, axis=2).max(axis=1) / _SHIFT_RANGE[1]
                    g /= np.maximum(big, 1)[:, None, None]  # none moves further than a shift
                    tt[sc] = g
                pos = c0[cu] + tt.astype(np.float32)
                ra = rl[cu].copy()
                turned = np.zeros((c, 4), dtype=bool)
                turned[:, 0] = True
                turned[sc] = True
                tc, tw = np.nonzero(turned)
                ra[tc, tw] = np.matmul(v[cu[tc], tw],
                                       _rotmat(cq[tc, tw], np.float32).transpose(0, 2, 1))
                # the four against each other (O-O too: the cluster stays open)
                dc = pos[:, jj] - pos[:, ii]
                dc -= Lf * np.round(dc / Lf)  # the bead may straddle the box
                dd = dc[:, :, None, None] + ra[:, jj, None] - ra[:, ii, :, None]  # (c,6,a,b,3)
                dd = np.einsum("...x,...x->...", dd, dd)
                cnt = (dd < r2).reshape(c, -1).sum(1) + (dd[:, :, 0, 0] < ro2).sum(1)
                # against everything else that is not moving
                pos -= Lf * np.floor(pos / Lf)
                qk, nb = c_neighbours(units[cu].ravel(), pos.reshape(-1, 3))
                k = np.flatnonzero(~moving[nb])
                qk, nb = qk[k], nb[k]
                ci, wi = qk // 4, qk % 4
                dv = (dvec(pos.reshape(-1, 3)[qk], nb)[:, None, None] + rel[nb][:, None]
                      - ra[ci, wi][:, :, None])  # (e, a, b, 3)
                h = (np.einsum("eabx,eabx->eab", dv, dv) < r2).sum(axis=(1, 2))
                oo = (nb // 4 != bead[cu[ci]]) & ~unres[nb // 4] & ~unres[bead[cu[ci]]]
                h += oo & (np.einsum("ex,ex->e", dv[:, 0, 0], dv[:, 0, 0]) < ro2)
                cnt = cnt + np.bincount(ci, weights=h, minlength=c).astype(np.int64)
                cnt += other_hits(bead[cu], (pos[:, :, None] + ra).reshape(c, 12, 3))
                hit = h > 0
                stuck.append((cu[ci[hit]], nb[hit], s + ci[hit] // tn))
                # per unit, in slot order: the first contact-free candidate, else the first
                # of the fewest
                cm = cnt.reshape(nb_, tn).T
                pick = first_best(cm)
                val = cm[np.arange(tn), pick]
                better = np.flatnonzero(val < best[todo])
                wu, cb = todo[better], pick[better] * tn + better
                best[wu], bq[wu], bt[wu], kslot[wu] = val[better], cq[cb], tt[cb], s + pick[better]
                com[units[wu].ravel()] = pos[cb].reshape(-1, 3)
                rel[units[wu].ravel()] = ra[cb].reshape(-1, 3, 3)
                s += nb_
                todo = todo[best[todo] > 0]
            moves.set(mol, bq.reshape(-1, 4), (t0.reshape(u, 4, 3) + bt).reshape(-1, 3))
            part = [nb[(best[pu] > 0) & (kslot[pu] == sl)] for pu, nb, sl in stuck]
            return best, _cat(part)

        # 'others': molecules of the unresolved beads (all other beads are clear of them)
        forced = np.zeros(0, dtype=np.int64)
        sus = np.flatnonzero(unres)
        if ot is not None and len(sus):
            sm = (4 * sus[:, None] + np.arange(4)).ravel()
            forced = sm[other_hits(sm // 4, atoms_of(sm)) > 0]
        forced0 = forced
        # the contacts (molecules of one bead are at least min_intra_atoms > r_at apart)
        k = np.flatnonzero(pi // 4 != pj // 4)
        ai, aj = pair_hits(pi[k].astype(np.int64), pj[k].astype(np.int64))
        del k
        n_initial = len(ai)
        fails[forced] = _TURN_AFTER  # spins do not move the O
        # a molecule whose O is in a contact cannot clear it by a spin, nor by a turn (the O
        # moves 0.013 nm at most) if the other atom is an O too
        oi, oj = ai % 3 == 0, aj % 3 == 0
        for mo, lim in ((np.concatenate([ai[oi], aj[oj]]) // 3, _TURN_AFTER),
                        (np.concatenate([ai[oi & oj], aj[oi & oj]]) // 3, _SHIFT_AFTER)):
            fails[mo] = np.maximum(fails[mo], lim)
        edges = (ai, aj)
        n_turned = n_shifted = n_spun = rnd = 0

        def independent(mols, uid, mreach, nu):
            """Units (ids uid of molecules mols, nu units) that cannot touch another one of
            them when each molecule moves by up to ``reach``: COMs further apart than
            r_c + both reaches; of two that can, the later waits.  Returns a bool (nu,)."""
            ok = np.ones(nu, dtype=bool)
            if nu < 2:
                return ok
            p = wrap(com[mols].astype(np.float64), box)
            pp = _tree(p, box).query_pairs(r_c + 2 * float(mreach.max()), output_type="ndarray")
            a, b = uid[pp[:, 0]], uid[pp[:, 1]]
            dd = p[pp[:, 1]] - p[pp[:, 0]]
            dd -= box * np.round(dd / box)
            k = (a != b) & (np.linalg.norm(dd, axis=1) < r_c + mreach[pp[:, 0]]
                            + mreach[pp[:, 1]])
            ok[np.maximum(a[k], b[k])] = False
            return ok

        def shift_units(mols):
            """Units (u, 4) for the beads of molecules mols: the first of them in each bead
            first (it is moved), then its mates."""
            sb, first = np.unique(mols // 4, return_index=True)
            shifter = mols[first]
            all4 = 4 * sb[:, None] + np.arange(4)
            return np.concatenate([shifter[:, None],
                                   all4[all4 != shifter[:, None]].reshape(-1, 3)], axis=1)

        empty = np.zeros(0, dtype=np.int64)
        per_round = []  # molecules marked per round
        while rnd < rounds:
            mark = np.union1d(_cover_atoms(*edges), forced)
            if len(mark) == 0:
                break
            rnd += 1
            units = shift_units(mark[fails[mark] >= _SHIFT_AFTER])
            rot = mark[~np.isin(mark // 4, units[:, 0] // 4)]
            forced = []
            if rnd > 1:
                # after the first round few are left, mostly stuck next to each other: move
                # only units that cannot touch another moving one, the others wait a round
                mols = np.concatenate([rot, units.ravel()])
                uid = np.concatenate([np.arange(len(rot)),
                                      len(rot) + np.repeat(np.arange(len(units)), 4)])
                mr = np.concatenate([np.zeros(len(rot)), np.full(units.size, _SHIFT_RANGE[1])])
                ok = independent(mols, uid, mr, len(rot) + len(units))
                forced += [rot[~ok[:len(rot)]], units[~ok[len(rot):], 0]]
                rot, units = rot[ok[:len(rot)]], units[ok[len(rot):]]
            # phase 1: spins and turns (centres of mass stay)
            moving[rot] = True
            rb, rturn = rotate(rot, fails[rot] < _TURN_AFTER)
            moving[rot] = False
            moved[rot] = True
            tu = rot[rturn]
            omoved[tu] = True
            fails[tu] = np.maximum(fails[tu], _TURN_AFTER)  # their P list is out of date
            if len(tu):  # (their P moved)
                om = np.flatnonzero(omoved)
                ogrid = _CellGrid(tuple(p_of(om).T), box, r_p, ids=om)
            bad_r = rb > 0
            n_spun += int((~rturn).sum())
            n_turned += int(rturn.sum())
            edges = (empty, empty)
            if rnd == 1:
                # contacts among the molecules moved at once, contact-free otherwise: spun
                # ones (the P list) ...
                good = np.zeros(nm, dtype=bool)
                good[rot[~bad_r]] = True
                k = np.flatnonzero(good[pi] & good[pj] & ~omoved[pi] & ~omoved[pj])
                ei, ej = [pi[k].astype(np.int64)], [pj[k].astype(np.int64)]
                # ... and turned ones (their COM neighbours), whose oxygens moved: closer
                # than r_og to another's, the turned one is turned again
                gt = np.flatnonzero(good & omoved)
                if len(gt):
                    ek, nb = c_neighbours(gt)
                    k = np.flatnonzero(good[nb] & (~omoved[nb] | (nb > gt[ek])))
                    ti, tj = gt[ek[k]], nb[k]
                    ei.append(ti)
                    ej.append(tj)
                    k = oo_close(ti, tj)
                    oo_f = np.where(omoved[tj[k]] & (tj[k] > ti[k]), tj[k], ti[k])
                    forced.append(oo_f)
                edges = pair_hits(_cat(ei), _cat(ej))
            # the failed ones are shifted now; shifts that may touch each other wait
            fr = rot[bad_r]
            fails[fr] = _SHIFT_AFTER
            more = shift_units(fr)
            more = more[~np.isin(more[:, 0] // 4, units[:, 0] // 4)]
            allu = np.concatenate([units, more])
            ok = independent(allu.ravel(), np.repeat(np.arange(len(allu)), 4),
                             np.full(allu.size, _SHIFT_RANGE[1]), len(allu))
            forced.append(allu[~ok, 0])
            units = allu[ok]
            # phase 2: shifts (one bead each)
            moving[units.ravel()] = True
            sbst, sstuck = shift(units)
            moving[units.ravel()] = False
            if len(units):
                um = units.ravel()
                moved[um] = omoved[um] = True
                fails[um] = np.maximum(fails[um], _TURN_AFTER)
                om = np.flatnonzero(omoved)
                ogrid = _CellGrid(tuple(p_of(om).T), box, r_p, ids=om)
            bad_s = sbst > 0
            fails[units[bad_s, 0]] += 1
            n_turned += len(units)
            n_shifted += len(units)
            # stuck shifts are tried again (more candidates, then scrambled), and the
            # neighbours they are stuck against are released
            forced += [units[bad_s, 0], sstuck]
            forced = np.unique(_cat(forced))
            per_round.append(int(len(mark)))
        # final check, complete: the first search's contacts between molecules that did not
        # move; the P list of the moved ones whose P did not move (spun); for the turned and
        # shifted ones their COM neighbours, found again
        keep = ~(moved[ai // 3] | moved[aj // 3])
        k = np.flatnonzero((moved[pi] | moved[pj]) & ~omoved[pi] & ~omoved[pj])
        li, lj = pair_hits(pi[k].astype(np.int64), pj[k].astype(np.int64))
        left_i, left_j = [ai[keep], li], [aj[keep], lj]
        om = np.flatnonzero(omoved)
        ek, nb = c_neighbours(om)
        k = np.flatnonzero(~omoved[nb] | (nb > om[ek]))
        ti, tj = om[ek[k]], nb[k]
        li, lj = pair_hits(ti, tj)
        left_i.append(li)
        left_j.append(lj)
        k = oo_close(ti, tj)  # oxygens that moved closer than r_og to another bead's
        oo_bad = np.unique(np.concatenate([ti[k] // 4, tj[k] // 4]))
        mv = np.flatnonzero(moved)
        oth = forced0[~moved[forced0]]
        if len(mv):
            oth = np.concatenate([oth, mv[other_hits(mv // 4, atoms_of(mv)) > 0]])
        stats = dict(n_contacts_initial=int(n_initial), contact_rounds=rnd,
                     moved_per_round=per_round,
                     n_molecules_moved=int(len(mv)), n_molecules_spun=int(n_spun),
                     n_molecules_turned=int(n_turned), n_beads_shifted=int(n_shifted))
        return moves, stats, _cat(left_i), _cat(left_j), np.unique(oth), oo_bad

    def place(self, beads, box, seed: int = 0, others=None, min_dist: float = MIN_DIST_OO,
              min_dist_others: float = MIN_DIST_OTHERS, max_retries: int = 5,
              n_candidates: int = 16, first_candidates: int = 8,
              min_dist_atoms: float = MIN_DIST_ATOMS, contact_rounds: int = 16,
              contact_candidates: int = 32, return_stats: bool = False):
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
        min_dist_atoms : contact stage, after the bead retries: no two atoms of different
            water molecules (any elements, same bead or not) end closer than this (nm);
            0 switches the stage off (the output is then the bead stage's, bit for bit).
            Every pair closer is found (cell list of the molecules' H-H midpoints, atoms
            checked pairwise) and one molecule of each moved: spun about its C2 axis,
            else turned about its own centre of mass, else shifted with its 3 cluster-mates
            shifted back by a third (module doc).  Each water stays rigid and each bead's
            centre of mass stays on the bead; turned and shifted oxygens keep ``min_dist``
            from the oxygens of other beads (the unresolved beads aside) and every moved
            atom ``min_dist_others`` from ``others``.  A final search over every molecule
            that moved verifies the result; what is left is reported, not hidden.
        contact_rounds : rounds of the contact stage at most (each moves one molecule per
            contact left; later rounds only molecules that cannot touch each other).
        contact_candidates : free turns (and shifts) tried per molecule and round, after
            the 15 spins.
        return_stats : also return :attr:`last_stats`.

        Returns
        -------
        (n, 4, 3, 3) float64 nm, molecules whole (not wrapped), the 12-atom centre of mass of
        row i equals ``beads[i]`` (float64 round-off).  ``self.last_stats`` (and the second
        return value with ``return_stats``) holds ``n_initial_clash`` (beads re-drawn after the
        first draw), ``clashing_after_retry`` and ``n_unresolved`` / ``unresolved`` (beads
        whose oxygens may still be closer than ``min_dist`` to another bead's: their best
        candidate is kept, energy minimisation fixes them), and for the contact stage
        ``n_contacts_initial`` (atom pairs of different molecules closer than
        ``min_dist_atoms`` after the bead stage), ``contact_rounds``, ``moved_per_round``,
        ``n_molecules_moved`` (molecules given a new orientation and/or place),
        ``n_molecules_spun``, ``n_molecules_turned``, ``n_beads_shifted``, and what is left:
        ``n_contacts`` / ``contacts`` ((P, 2) atom indices into ``out.reshape(-1, 3)``) /
        ``contact_dist`` / ``min_contact`` (None when none), ``n_others_close`` /
        ``others_close`` (molecules ``4 * row + water`` still closer than
        ``min_dist_others`` to ``others``, i.e. of unresolved beads the stage could not fix).
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
        r_oo, r_ot, r_at = float(min_dist), float(min_dist_others), float(min_dist_atoms)
        if not 0 <= r_at < self.min_intra_atoms or contact_rounds < 0 or contact_candidates < 1:
            raise MultiscaleError(
                f"min_dist_atoms={r_at} nm must be >= 0 and below the closest approach of two "
                f"molecules inside a bank cluster ({self.min_intra_atoms:.3f} nm), "
                "contact_rounds >= 0 and contact_candidates >= 1"
            )
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
                                   unresolved=np.zeros(0, dtype=np.int64),
                                   **_contact_stats(dict(), np.zeros((0, 2), dtype=np.int64),
                                                    np.zeros(0), np.zeros(0, dtype=np.int64)))
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
        moves, cst = None, {}
        left = np.zeros((0, 2), dtype=np.int64)
        left_oth = np.zeros(0, dtype=np.int64)
        if r_at > 0:
            grid = last_o = None
            moves, cst, li, lj, left_oth, oo_bad = self._contacts(
                rng, kk, qq, xw32, b, r_at, r_grid, offender.copy(), ot, near, r_ot,
                contact_rounds, contact_candidates)
            offender[oo_bad] = True  # reported with the unresolved beads
            # sorted atom ids 12 * bead + k -> output atom 12 * row + k
            left = np.stack([12 * order[li // 12] + li % 12, 12 * order[lj // 12] + lj % 12], 1)
            left_oth = order[left_oth // 4] * 4 + left_oth % 4
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
        if moves is not None and len(moves.ids):
            # moved molecules: own centre of mass (+ translation, zero sum per bead) and own
            # orientation of the bank molecule's rigid shape
            bead, w = moves.ids // 4, moves.ids % 4
            k, rows = kk[bead], order[bead]
            com = np.matmul(_rotmat(qq[bead]), self._g64[k, w][:, :, None])[:, :, 0]
            com += x[rows]
            com += moves.t
            at = np.matmul(self._v64[k, w], _rotmat(moves.q).transpose(0, 2, 1))
            at += com[:, None]
            out[rows[:, None], 3 * w[:, None] + np.arange(3)] = at
        flat = out.reshape(-1, 3)
        dv = flat[left[:, 1]] - flat[left[:, 0]]
        dv -= b * np.round(dv / b)
        dist = np.sqrt(np.einsum("ij,ij->i", dv, dv))
        unresolved = np.sort(order[np.flatnonzero(offender)])
        self.last_stats = dict(n_beads=n, n_initial_clash=n_initial,
                               n_unresolved=int(len(unresolved)), retries=retries,
                               clashing_after_retry=per_retry, unresolved=unresolved,
                               **_contact_stats(cst, left, dist, left_oth, r_at))
        out = out.reshape(n, 4, 3, 3)
        return (out, self.last_stats) if return_stats else out


def _contact_stats(cst: dict, pairs: np.ndarray, dist: np.ndarray, oth: np.ndarray,
                   r_at: float = 0.0) -> dict:
    """last_stats entries of the contact stage (see :meth:`WaterBank.place`)."""
    close = dist < r_at
    out = dict(n_contacts_initial=0, contact_rounds=0, moved_per_round=[],
               n_molecules_moved=0, n_molecules_spun=0, n_molecules_turned=0,
               n_beads_shifted=0)
    out.update(cst)
    out.update(n_contacts=int(close.sum()), contacts=pairs[close],
               contact_dist=dist[close],
               min_contact=float(dist[close].min()) if close.any() else None,
               n_others_close=int(len(oth)), others_close=oth)
    return out


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

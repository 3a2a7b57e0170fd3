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

Contacts are found with a vectorised periodic cell list (no per-bead Python loops).  Measured
(``benchmarks/bench_water.py``, 2-CPU VM shared with other jobs, load 4-6): 97k beads at
Martini density in 2.3-2.5 s wall / 1.6-1.8 s CPU (~40k beads/s wall, ~57k/s CPU; the
100k/s goal is not reached), ~0.8 % of beads left unresolved, +250 MB peak; 1M beads in
34-48 s wall / 27-31 s CPU, +1.7-1.8 GB.

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
from multiscale.water import group_waters, orthorhombic_box, wrap

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


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniformly distributed rotation matrices ``(n, 3, 3)`` (normalised Gaussian
    quaternions, i.e. Haar measure on SO(3))."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    r = np.empty((n, 3, 3))
    r[:, 0, 0] = 1 - 2 * (y * y + z * z)
    r[:, 0, 1] = 2 * (x * y - w * z)
    r[:, 0, 2] = 2 * (x * z + w * y)
    r[:, 1, 0] = 2 * (x * y + w * z)
    r[:, 1, 1] = 1 - 2 * (x * x + z * z)
    r[:, 1, 2] = 2 * (y * z - w * x)
    r[:, 2, 0] = 2 * (x * z - w * y)
    r[:, 2, 1] = 2 * (y * z + w * x)
    r[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return r


def _com(xyz: np.ndarray) -> np.ndarray:
    """Centre of mass of (..., 12, 3) cluster coordinates -> (..., 3)."""
    return np.einsum("...ak,a->...k", xyz, CLUSTER_MASSES) / CLUSTER_MASSES.sum()


def _tree(x: np.ndarray, box: np.ndarray) -> cKDTree:
    return cKDTree(x, boxsize=box, balanced_tree=False, compact_nodes=False)


#: re-drawn candidates per retry round, as a fraction of all beads (caps the work per round)
_CANDIDATE_BUDGET = 1.0
#: threads for the contact search (at most; capped by the CPUs this process may use)
_MAX_THREADS = 4
#: target points per cell of the contact grid (cells are never narrower than the cut-off)
_CELL_OCCUPANCY = 0.5
_OFF = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
_HALF = _OFF[[tuple(v) > (0, 0, 0) for v in _OFF]]


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
    if n == 1 or len(items) < 2:
        return [fn(x) for x in items]
    if _POOL is None or _POOL[0] != n:
        _POOL = (n, ThreadPoolExecutor(n, thread_name_prefix="multiscale-water"))
    return list(_POOL[1].map(fn, items))


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


class _CellGrid:
    """Periodic cell list for short-range contact search (vectorised numpy).

    Points (m, 3) may be in any periodic image.  Cells are >= ``r`` wide (and large enough
    that there are <= ~2 cells per point); a ghost layer of cells copies the opposite faces,
    so the 27-cell stencil of a point holds every point within ``r`` (minimum image).
    Distances are tested in float32 (error ~1e-6 nm).  Boxes narrower than 3 cells fall back
    to cKDTree.
    """

    def __init__(self, p: np.ndarray, box: np.ndarray, r: float):
        m = len(p)
        self.m, self.box, self.r, self.r2 = m, box, float(r), float(r) * float(r)
        dens = max(m, 1) / float(np.prod(box))
        nc = np.floor(box / max(r, (_CELL_OCCUPANCY / dens) ** (1.0 / 3.0))).astype(np.int64)
        self.kd = None
        if np.any(nc < 3):
            self.kd = _tree(wrap(p, box), box)
            return
        self.nc, self.inv_cs = nc, nc / box
        self.pc = pc = nc + 2
        key = self._keys(p)  # padded-grid cell keys (ghost layer of width 1 on every side)
        order = np.argsort(key)
        self.order, self.skey = order, key[order]
        sp = p[order]
        self.xs = [sp[:, d].astype(np.float32) for d in range(3)]
        self.lens = [float(v) for v in box]  # python floats keep float32 arithmetic
        self.inv_lens = [1.0 / v for v in self.lens]
        idt = np.int32 if m < 2**31 - 1 else np.int64
        cnt = np.bincount(key, minlength=int(np.prod(pc))).astype(idt)
        start = np.zeros_like(cnt)
        np.cumsum(cnt[:-1], out=start[1:])
        self.maxc = int(cnt.max()) if m else 0
        for a in (cnt, start):  # ghost cells <- their periodic images (faces, then edges)
            g = a.reshape(pc)
            for ax in range(3):
                g = np.moveaxis(g, ax, 0)
                g[0], g[-1] = g[-2], g[1]
                g = np.moveaxis(g, 0, ax)
        self.cnt, self.start = cnt, start
        self.delta = [int((o[0] * pc[1] + o[1]) * pc[2] + o[2]) for o in _OFF]
        self.hdelta = [int((o[0] * pc[1] + o[1]) * pc[2] + o[2]) for o in _HALF]

    def _cells(self, q):
        return np.floor(q * self.inv_cs).astype(np.int64) % self.nc

    def _keys(self, q):
        ci = self._cells(q) + 1
        return (ci[:, 0] * self.pc[1] + ci[:, 1]) * self.pc[2] + ci[:, 2]

    def _close(self, qs, sel, j):
        """(sel, j) pairs (query index, sorted-point index) closer than r; x filtered first.
        float32 coordinates: ample for a clash test (error ~1e-6 nm at 50 nm)."""
        L, iL, r = self.lens, self.inv_lens, self.r
        d = qs[0][sel] - self.xs[0][j]
        d -= L[0] * np.rint(d * iL[0])
        k = np.flatnonzero(np.abs(d) < r)
        sel, j, d = sel[k], j[k], d[k]
        s2 = d * d
        for ax in (1, 2):
            d = qs[ax][sel] - self.xs[ax][j]
            d -= L[ax] * np.rint(d * iL[ax])
            s2 += d * d
        h = s2 < self.r2
        return sel[h], j[h]

    def _stencil_pairs(self, qk, dl):
        """(query, sorted point) index pairs for every point of cell ``qk + dl``."""
        nk = qk + dl
        c = self.cnt[nk]
        q = np.flatnonzero(c)
        c = c[q].astype(np.int64)
        tot = int(c.sum())
        if tot == 0:
            return q[:0], q[:0]
        ends = np.cumsum(c)
        sel = np.repeat(q, c)
        # j runs over start[nk[q]] ... start[nk[q]] + c - 1 for each q
        j = np.arange(tot, dtype=np.int64) + np.repeat(self.start[nk[q]] - (ends - c), c)
        return sel, j

    def cross_pairs(self, idx: np.ndarray):
        """Pairs (i, j) closer than r with i in ``idx`` (point indices) and j any other point
        (full 27-cell stencil; pairs inside ``idx`` appear in both orders)."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.kd is not None:
            nbl = self.kd.query_ball_point(self.kd.data[idx], self.r)
            i = np.repeat(idx, [len(v) for v in nbl])
            j = np.fromiter((k for v in nbl for k in v), dtype=np.int64, count=len(i))
            keep = i != j
            return i[keep], j[keep]
        member = np.zeros(self.m, dtype=bool)
        member[idx] = True
        pos = np.flatnonzero(member[self.order])  # query points in grid (cell) order
        idx = self.order[pos]
        qk = self.skey[pos]
        qs = [x[pos] for x in self.xs]

        def one(dl):
            sel, j = self._close(qs, *self._stencil_pairs(qk, dl))
            keep = j != pos[sel]
            return idx[sel[keep]], self.order[j[keep]]

        res = _pmap(one, self.delta)
        return (np.concatenate([r[0] for r in res]), np.concatenate([r[1] for r in res]))

    def pairs(self):
        """All unordered pairs (i, j) of points closer than r, as two index arrays."""
        if self.kd is not None:
            pp = self.kd.query_pairs(self.r, output_type="ndarray").reshape(-1, 2)
            return pp[:, 0], pp[:, 1]
        sk, xs = self.skey, self.xs

        def same_cell(_):
            oi, oj = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
            cnt0 = self.cnt[sk]
            rank = np.arange(self.m) - self.start[sk]
            for slot in range(1, self.maxc):  # later members of the same cell
                sel = np.flatnonzero(rank + slot < cnt0)
                a, b = self._close(xs, sel, sel + slot)
                oi.append(a)
                oj.append(b)
            return np.concatenate(oi), np.concatenate(oj)

        def forward(dl):  # one of the 13 forward neighbour cells
            return self._close(xs, *self._stencil_pairs(sk, dl))

        res = _pmap(lambda t: same_cell(t) if t is None else forward(t), [None] + self.hdelta)
        i = np.concatenate([r[0] for r in res])
        j = np.concatenate([r[1] for r in res])
        return self.order[i], self.order[j]


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
        self._flat_o = np.ascontiguousarray(self._flat[:, 0::3])  # oxygens (K, 4, 3)
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
        """``m`` random (cluster index, uniform rotation) pairs."""
        return rng.integers(len(self), size=m), random_rotations(rng, m)

    def _coords(self, k: np.ndarray, rot: np.ndarray, centres: np.ndarray,
                oxygen_only: bool = False) -> np.ndarray:
        """Rotated clusters ``k`` placed at ``centres``: (m, 12, 3), or (m, 4, 3) oxygens.

        Full clusters get their COM set to ``centres`` exactly (float64 round-off)."""
        c = self._flat_o[k] if oxygen_only else self._flat[k]  # (m, a, 3)
        # xyz[m, i] = rot[m] @ c[m, i], as 3 broadcast FMAs (faster than batched 3x3 matmul)
        xyz = c[:, :, 0:1] * rot[:, None, :, 0]
        xyz += c[:, :, 1:2] * rot[:, None, :, 1]
        xyz += c[:, :, 2:3] * rot[:, None, :, 2]
        if oxygen_only:
            xyz += centres[:, None]
        else:
            xyz += (centres - _com(xyz))[:, None]
        return xyz

    def place(self, beads, box, seed: int = 0, others=None, min_dist: float = MIN_DIST_OO,
              min_dist_others: float = MIN_DIST_OTHERS, max_retries: int = 5,
              n_candidates: int = 8, first_candidates: int = 2, return_stats: bool = False):
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
            it form a clash-free accepted set that only grows.  Each re-drawn bead draws
            candidates ((cluster, rotation) pairs): ``first_candidates`` in round 1, then up
            to ``n_candidates`` (fewer while many beads are re-drawn, so one round draws at
            most ~n candidates), and keeps the one with the fewest clashes against the
            accepted beads; clashes among the chosen ones are covered again.  A bead still
            stuck after an ``n_candidates`` round also releases the accepted neighbours it
            clashes with, so they are re-drawn together in the next round.
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
        rng = np.random.default_rng(seed)
        n = len(x)
        if n == 0:
            self.last_stats = dict(n_beads=0, n_initial_clash=0, n_unresolved=0, retries=0,
                                   clashing_after_retry=[],
                                   unresolved=np.zeros(0, dtype=np.int64))
            out = np.zeros((0, 4, 3, 3))
            return (out, self.last_stats) if return_stats else out

        # spatial order (cache-friendly grids); results are mapped back at the end
        cell = np.floor(wrap(x, b)).astype(np.int64)
        ncell = np.floor(b).astype(np.int64) + 1
        order = np.argsort((cell[:, 0] * ncell[1] + cell[:, 1]) * ncell[2] + cell[:, 2],
                           kind="stable")
        xs = x[order]

        # 'others': a tree, and the beads close enough to touch them
        ot = None
        near = np.zeros(n, dtype=bool)
        if others is not None:
            oth = np.asarray(others, dtype=np.float64).reshape(-1, 3)
            if not np.all(np.isfinite(oth)):
                raise MultiscaleError("others positions contain NaN/inf: check the AA frame")
            if len(oth):
                ot = _tree(wrap(oth, b), b)
                dn, _ = ot.query(wrap(xs, b), k=1, distance_upper_bound=self.extent + r_ot,
                                 workers=-1)
                near = np.isfinite(dn)

        def other_clash(k, rot, centres, nearmask):
            """Number of atoms closer than r_ot to an 'others' atom, per candidate."""
            cnt = np.zeros(len(k), dtype=np.int64)
            if ot is None or not nearmask.any():
                return cnt
            rows = np.flatnonzero(nearmask)
            xyz = self._coords(k[rows], rot[rows], centres[rows])
            d, _ = ot.query(wrap(xyz.reshape(-1, 3), b), k=1, distance_upper_bound=r_ot,
                            workers=-1)
            cnt[rows] = np.isfinite(d).reshape(len(rows), 12).sum(axis=1)
            return cnt

        kk, rot = self._draw(rng, n)
        ox = self._coords(kk, rot, xs, oxygen_only=True)  # (n, 4, 3)
        pi, pj = _CellGrid(ox.reshape(-1, 3), b, r_oo).pairs()  # point // 4 = bead
        bi, bj = pi // 4, pj // 4
        diff = bi != bj
        offender = _cover(bi[diff], bj[diff], n)
        offender |= other_clash(kk, rot, xs, near) > 0
        n_initial = int(offender.sum())

        retries, per_retry = 0, []
        for _ in range(max_retries):
            off = np.flatnonzero(offender)
            if len(off) == 0:
                break
            retries += 1
            # few candidates while the offender set is large (cost), more once it is small
            a = len(off)
            m = min(n_candidates, first_candidates) if retries == 1 else int(
                min(n_candidates, max(first_candidates, _CANDIDATE_BUDGET * n // a)))
            ck, cr = self._draw(rng, a * m)
            cen = np.repeat(xs[off], m, axis=0)
            co = self._coords(ck, cr, cen, oxygen_only=True)  # (a*m, 4, 3)
            # one cell list over accepted oxygens + candidate oxygens
            fixed = np.flatnonzero(~offender)
            nf = 4 * len(fixed)
            g = _CellGrid(np.concatenate([ox[fixed].reshape(-1, 3), co.reshape(-1, 3)]), b,
                          r_oo)
            if 4 * a * m < nf:  # few candidates: search around them only
                pi, pj = g.cross_pairs(np.arange(nf, nf + 4 * a * m))
            else:  # many: one sweep over all pairs is cheaper
                pi, pj = g.pairs()
            ci, cj = pi >= nf, pj >= nf
            mix = ci != cj  # candidate - accepted pairs
            mc = (np.where(ci, pi, pj)[mix] - nf) // 4  # candidate id
            mf = fixed[np.where(ci, pj, pi)[mix] // 4]  # accepted bead
            both = ci & cj  # candidate - candidate pairs (different offenders)
            c1, c2 = (pi[both] - nf) // 4, (pj[both] - nf) // 4
            d12 = c1 // m != c2 // m
            c1, c2 = c1[d12], c2[d12]
            hit = np.zeros(4 * a * m, dtype=bool)
            hit[np.where(ci, pi, pj)[mix] - nf] = True
            cnt = hit.reshape(a * m, 4).sum(axis=1)
            cnt += other_clash(ck, cr, cen, np.repeat(near[off], m))
            cnt = cnt.reshape(a, m)
            best = np.argmin(cnt, axis=1)  # first candidate with the fewest clashes
            bad = cnt[np.arange(a), best] > 0
            sel = np.arange(a) * m + best
            kk[off], rot[off], ox[off] = ck[sel], cr[sel], co[sel]
            # clashes among the chosen candidates themselves: cover them, re-draw again
            chosen = np.zeros(a * m, dtype=bool)
            chosen[sel] = True
            cc = chosen[c1] & chosen[c2]
            bad |= _cover(c1[cc] // m, c2[cc] // m, a)
            offender[:] = False
            offender[off[bad]] = True
            if m == n_candidates and retries < max_retries:
                # beads stuck against accepted ones: release those neighbours too, so the
                # pair is re-drawn together next round (the accepted set stays clash-free)
                stuck = chosen[mc] & (cnt[mc // m, mc % m] > 0)
                offender[mf[stuck]] = True
            per_retry.append(int(offender.sum()))

        out = np.empty((n, 4, 3, 3))
        step = 65536  # chunks bound the temporaries (12 atoms x 3 x float64 per bead)
        for i in range(0, n, step):
            sl = slice(i, i + step)
            out[order[sl]] = self._coords(kk[sl], rot[sl], xs[sl]).reshape(-1, 4, 3, 3)
        unresolved = np.sort(order[np.flatnonzero(offender)])
        self.last_stats = dict(n_beads=n, n_initial_clash=n_initial,
                               n_unresolved=int(len(unresolved)), retries=retries,
                               clashing_after_retry=per_retry, unresolved=unresolved)
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

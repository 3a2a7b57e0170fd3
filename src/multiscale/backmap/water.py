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

Lengths nm; coordinates ``(..., 3)``; water atom order O, H1, H2.
"""

from __future__ import annotations

import functools
import os
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


_OFF = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
_HALF = _OFF[[tuple(v) > (0, 0, 0) for v in _OFF]]


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
    that there are <= ~2 cells per point); one ghost layer (``np.pad(mode="wrap")``) maps to
    the periodic images, so the 27-cell stencil of a point holds every point within ``r``
    (minimum image).  Boxes narrower than 3 r fall back to cKDTree.
    """

    def __init__(self, p: np.ndarray, box: np.ndarray, r: float):
        m = len(p)
        self.m, self.box, self.r, self.r2 = m, box, float(r), float(r) * float(r)
        dens = max(m, 1) / float(np.prod(box))
        nc = np.floor(box / max(r, (0.5 / dens) ** (1.0 / 3.0))).astype(np.int64)
        self.kd = None
        if np.any(nc < 3):
            self.kd = _tree(wrap(p, box), box)
            return
        self.nc, self.inv_cs = nc, nc / box
        self.pc = pc = nc + 2
        ci = self._cells(p)
        ukey = (ci[:, 0] * nc[1] + ci[:, 1]) * nc[2] + ci[:, 2]
        order = np.argsort(ukey)
        self.order = order
        ci = ci[order] + 1
        self.skey = (ci[:, 0] * pc[1] + ci[:, 1]) * pc[2] + ci[:, 2]  # padded cell keys
        sp = p[order]
        self.xs = [np.ascontiguousarray(sp[:, d]) for d in range(3)]
        cnt = np.bincount(ukey, minlength=int(np.prod(nc)))
        start = np.zeros_like(cnt)
        np.cumsum(cnt[:-1], out=start[1:])
        idt = np.int32 if m < 2**31 - 1 else np.int64
        self.cnt = np.pad(cnt.astype(idt).reshape(nc), 1, mode="wrap").ravel()
        self.start = np.pad(start.astype(idt).reshape(nc), 1, mode="wrap").ravel()
        self.maxc = int(cnt.max()) if m else 0
        self.delta = [int((o[0] * pc[1] + o[1]) * pc[2] + o[2]) for o in _OFF]
        self.hdelta = [int((o[0] * pc[1] + o[1]) * pc[2] + o[2]) for o in _HALF]

    def _cells(self, q):
        return np.floor(q * self.inv_cs).astype(np.int64) % self.nc

    def _keys(self, q):
        ci = self._cells(q) + 1
        return (ci[:, 0] * self.pc[1] + ci[:, 1]) * self.pc[2] + ci[:, 2]

    def _close(self, qs, sel, j):
        """(sel, j) pairs (query index, sorted-point index) closer than r; x filtered first."""
        box, r = self.box, self.r
        d = qs[0][sel] - self.xs[0][j]
        d -= box[0] * np.rint(d / box[0])
        k = np.flatnonzero(np.abs(d) < r)
        sel, j, d = sel[k], j[k], d[k]
        s2 = d * d
        for ax in (1, 2):
            d = qs[ax][sel] - self.xs[ax][j]
            d -= box[ax] * np.rint(d / box[ax])
            s2 += d * d
        h = s2 < self.r2
        return sel[h], j[h]

    def pairs(self):
        """All unordered pairs (i, j) of points closer than r, as two index arrays."""
        if self.kd is not None:
            pp = self.kd.query_pairs(self.r, output_type="ndarray").reshape(-1, 2)
            return pp[:, 0], pp[:, 1]
        sk, xs = self.skey, self.xs
        oi, oj = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        cnt0 = self.cnt[sk]
        rank = np.arange(self.m) - self.start[sk]
        for slot in range(1, self.maxc):  # same cell: later members of the cell
            sel = np.flatnonzero(rank + slot < cnt0)
            a, b = self._close(xs, sel, sel + slot)
            oi.append(a)
            oj.append(b)
        for dl in self.hdelta:  # 13 forward neighbour cells
            nk = sk + dl
            c, s = self.cnt[nk], self.start[nk]
            for slot in range(int(c.max()) if self.m else 0):
                sel = np.flatnonzero(c > slot)
                a, b = self._close(xs, sel, s[sel] + slot)
                oi.append(a)
                oj.append(b)
        return self.order[np.concatenate(oi)], self.order[np.concatenate(oj)]

    def query_any(self, q: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
        """(len(q),) bool: some grid point (not flagged in ``ignore``, indexed like the input
        points) lies closer than r to the query point (wrapped (k, 3))."""
        hit = np.zeros(len(q), dtype=bool)
        if self.m == 0 or len(q) == 0:
            return hit
        if self.kd is not None:
            for i, nb in enumerate(self.kd.query_ball_point(wrap(q, self.box), self.r)):
                hit[i] = any(ignore is None or not ignore[j] for j in nb)
            return hit
        ign = None if ignore is None else ignore[self.order]
        qk = self._keys(q)
        qs = [np.ascontiguousarray(q[:, d]) for d in range(3)]
        for dl in self.delta:
            nk = qk + dl
            c, s = self.cnt[nk], self.start[nk]
            for slot in range(int(c.max())):
                sel = np.flatnonzero((c > slot) & ~hit)
                j = s[sel] + slot
                if ign is not None:
                    keep = ~ign[j]
                    sel, j = sel[keep], j[keep]
                a, _ = self._close(qs, sel, j)
                hit[a] = True
        return hit


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
        c = self._flat[k][:, 0::3] if oxygen_only else self._flat[k]  # (m, a, 3)
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
        max_retries : rounds of re-drawing clashing beads.  A minimal set of beads covering
            every clash (greedy vertex cover of the clash graph) is re-drawn; each draws
            ``first_candidates`` (first round) or ``n_candidates`` (later rounds) (cluster,
            rotation) pairs and keeps the one with the fewest clashes against the accepted
            beads.  Beads never re-drawn keep their first draw.
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
            m = n_candidates if retries > 1 else min(n_candidates, first_candidates)
            ck, cr = self._draw(rng, a * m)
            cen = np.repeat(xs[off], m, axis=0)
            co = self._coords(ck, cr, cen, oxygen_only=True)  # (a*m, 4, 3)
            # one cell list over accepted oxygens + candidate oxygens; keep the mixed pairs
            fo = ox[~offender].reshape(-1, 3)
            nf = len(fo)
            g = _CellGrid(np.concatenate([fo, co.reshape(-1, 3)]), b, r_oo)
            pi, pj = g.pairs()
            ci = pi >= nf
            mix = ci != (pj >= nf)
            hit = np.zeros(4 * a * m, dtype=bool)
            hit[np.where(ci, pi, pj)[mix] - nf] = True
            cnt = hit.reshape(a * m, 4).sum(axis=1)
            cnt += other_clash(ck, cr, cen, np.repeat(near[off], m))
            cnt = cnt.reshape(a, m)
            best = np.argmin(cnt, axis=1)  # first candidate with the fewest clashes
            bad = cnt[np.arange(a), best] > 0
            sel = np.arange(a) * m + best
            kk[off], rot[off], ox[off] = ck[sel], cr[sel], co[sel]
            # clashes among the re-drawn beads themselves: cover them, re-draw again
            g2 = _CellGrid(co[sel].reshape(-1, 3), b, r_oo)
            qi, qj = g2.pairs()
            qi, qj = qi // 4, qj // 4
            bad |= _cover(qi[qi != qj], qj[qi != qj], a)
            offender[:] = False
            offender[off[bad]] = True
            per_retry.append(int(bad.sum()))

        xyz = self._coords(kk, rot, xs)  # (n, 12, 3), exact COM
        out = np.empty((n, 4, 3, 3))
        out[order] = xyz.reshape(n, 4, 3, 3)
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

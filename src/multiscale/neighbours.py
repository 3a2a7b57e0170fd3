"""Periodic neighbour search in orthorhombic and triclinic cells.

:class:`PeriodicTree` answers the questions the engine and the judge ask of a periodic system
(pairs closer than r, points near a query, nearest neighbour) with the same interface for every
box shape:

* orthorhombic box: one :class:`scipy.spatial.cKDTree` with ``boxsize`` (exact periodic
  distances, the fast path);
* triclinic box (rhombic dodecahedron, truncated octahedron, any GROMACS box): positions are
  wrapped into the unit parallelepiped and every point within ``cutoff`` of the cell is added
  again as a ghost image (shifted by a lattice vector); a plain cKDTree over points + ghosts
  then gives exact minimum-image results for every distance up to ``cutoff``.  ``cutoff`` must
  be below half the cell's smallest perpendicular width (checked).

Indices returned always refer to the input points (ghosts are mapped back).  Lengths nm.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .geometry import box_matrix, is_orthorhombic, perpendicular_widths, wrap

__all__ = ["PeriodicTree", "periodic_pairs"]


class PeriodicTree:
    """Neighbour search over points x (N, 3) nm in a periodic box ((3,) lengths or (3, 3) vectors).

    cutoff: the largest distance any query will use (nm); needed for triclinic boxes (it sets
    the ghost layer), ignored for orthorhombic ones.
    """

    def __init__(self, x: np.ndarray, box, cutoff: float, leafsize: int = 16):
        self.box = box_matrix(box)
        self.n = len(x)
        self.cutoff = float(cutoff)
        self.orthorhombic = is_orthorhombic(self.box)
        if self.orthorhombic:
            self.lengths = np.diag(self.box).copy()
            self.tree = cKDTree(wrap(np.asarray(x, np.float64), self.lengths), boxsize=self.lengths, leafsize=leafsize)
            self.owner = None
            return
        widths = perpendicular_widths(self.box)
        if self.cutoff >= 0.5 * widths.min():
            raise ValueError(f"PeriodicTree: cutoff {self.cutoff} nm is not below half the cell's smallest "
                             f"perpendicular width ({widths.min():.3f} nm)")
        self.inv = np.linalg.inv(self.box)
        s = np.asarray(x, np.float64) @ self.inv
        s = s - np.floor(s)
        s = np.where(s >= 1.0, 0.0, s)
        margin = self.cutoff / widths  # fractional thickness of the ghost layer per axis
        shifts = np.array(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij")).reshape(3, -1).T
        shifts = shifts[np.any(shifts != 0, axis=1)]
        pts, owner = [s], [np.arange(self.n)]
        for n in shifts:
            t = s + n
            keep = np.all((t >= -margin) & (t < 1.0 + margin), axis=1)
            if keep.any():
                pts.append(t[keep])
                owner.append(np.flatnonzero(keep))
        self.owner = np.concatenate(owner)
        self.tree = cKDTree(np.concatenate(pts) @ self.box, leafsize=leafsize)

    # ------------------------------------------------------------------ helpers
    def _wrap_query(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, np.float64)
        if self.orthorhombic:
            return wrap(q, self.lengths)
        s = q @ self.inv
        s = s - np.floor(s)
        return np.where(s >= 1.0, 0.0, s) @ self.box

    def _check(self, r: float) -> None:
        if not self.orthorhombic and r > self.cutoff + 1e-12:
            raise ValueError(f"PeriodicTree: query radius {r} nm exceeds the tree's cutoff {self.cutoff} nm")

    # ------------------------------------------------------------------ queries
    def query_pairs(self, r: float) -> np.ndarray:
        """Unique index pairs (P, 2), i < j, of points closer than r (minimum image), sorted."""
        self._check(r)
        p = self.tree.query_pairs(r, output_type="ndarray")
        if self.owner is not None and len(p):
            p = self.owner[p]
            p = np.sort(p, axis=1)
            p = p[p[:, 0] != p[:, 1]]
            p = np.unique(p, axis=0) if len(p) else p.reshape(0, 2)
        elif len(p):
            p = p[np.lexsort((p[:, 1], p[:, 0]))]
        return np.asarray(p, dtype=np.int64).reshape(-1, 2)

    def query_ball_point(self, q: np.ndarray, r: float) -> list[np.ndarray]:
        """For each query point q (M, 3), the sorted unique indices of points within r."""
        self._check(r)
        hits = self.tree.query_ball_point(self._wrap_query(q), r)
        if self.owner is None:
            return [np.sort(np.asarray(h, dtype=np.int64)) for h in hits]
        return [np.unique(self.owner[np.asarray(h, dtype=np.int64)]) for h in hits]

    def count_ball_point(self, q: np.ndarray, r: float) -> np.ndarray:
        """Number of distinct points within r of each query point (M,)."""
        return np.array([len(h) for h in self.query_ball_point(q, r)], dtype=np.int64)

    def query(self, q: np.ndarray, k: int = 1, distance_upper_bound: float = np.inf):
        """Nearest neighbours of q (M, 3): (d (M,) or (M, k), idx) as cKDTree.query, idx = N where none.

        For triclinic boxes distance_upper_bound must be <= cutoff (default: cutoff)."""
        if self.owner is None:
            return self.tree.query(self._wrap_query(q), k=k, distance_upper_bound=distance_upper_bound)
        dub = min(distance_upper_bound, self.cutoff)
        d, i = self.tree.query(self._wrap_query(q), k=k, distance_upper_bound=dub)
        i = np.asarray(i)
        ok = i < len(self.owner)
        out = np.full(i.shape, self.n, dtype=np.int64)
        out[ok] = self.owner[i[ok]]
        return d, out

    def points(self) -> np.ndarray:
        """The (wrapped) input points (N, 3)."""
        return np.asarray(self.tree.data[: self.n])


def periodic_pairs(x: np.ndarray, box, r: float) -> np.ndarray:
    """Index pairs (P, 2), i < j, of points x (N, 3) closer than r nm (minimum image)."""
    return PeriodicTree(x, box, r).query_pairs(r)

"""The periodic box of water placement: orthorhombic edge lengths or triclinic box vectors.

Orthorhombic boxes keep the plain edge-length arithmetic of the placement code (its fast path,
bit for bit).  A triclinic GROMACS box (rows a, b, c, lower triangular: rhombic dodecahedron,
truncated octahedron, ...) is handled in its *brick* form: the rectangular cell
``[0, ax) x [0, by) x [0, cz)`` is a fundamental domain of the lattice too (a point is brought
into it by subtracting c until its z is inside, then b for y, then a for x), so

* :meth:`Box.brick` wraps positions into the brick (the cell lists work on it unchanged, with
  ghost images made by the lattice vectors: :mod:`.cells`);
* :meth:`Box.min_image32` is the sequential rounding z, then y, then x: it returns the unique
  representative in ``[-ax/2, ax/2) x [-by/2, by/2) x [-cz/2, cz/2)``, the exact minimum image
  of every vector shorter than half the smallest of ax, by, cz (placement only asks for
  vectors < 0.6 nm, and boxes are checked to be wide enough: :meth:`Box.check_width`).

Lengths nm.
"""

from __future__ import annotations

import numpy as np

from multiscale.errors import MultiscaleError
from multiscale.geometry import (
    check_box,
    is_orthorhombic,
    minimum_image,
    perpendicular_widths,
    wrap,
)
from multiscale.neighbours import PeriodicTree

from .arrays import _tree

__all__ = ["Box"]


class Box:
    """A checked periodic box.

    Attributes: ``ortho`` (bool), ``lengths`` (3,) float64 (edge lengths, or the brick's
    ax, by, cz), ``matrix`` (3, 3) float64 rows a, b, c, ``arg`` (what :mod:`multiscale.geometry`
    takes: ``lengths`` when orthorhombic, else ``matrix``).
    """

    def __init__(self, box, name: str = "box"):
        b = np.asarray(box, dtype=np.float64)
        if b.shape not in [(3,), (3, 3)]:
            raise MultiscaleError(f"{name} has shape {b.shape}: pass the 3 edge lengths (3,) or "
                                  "the (3, 3) GROMACS box vectors in nm")
        if b.shape == (3, 3) and not is_orthorhombic(b):
            self.ortho = False
            self.matrix = check_box(b, name)
            self.lengths = np.diag(self.matrix).copy()
            self.arg = self.matrix
            return
        self.ortho = True
        self.lengths = np.diag(b).copy() if b.shape == (3, 3) else b
        if not np.all(np.isfinite(self.lengths)) or np.any(self.lengths <= 0):
            raise MultiscaleError(f"{name} edge lengths {self.lengths.tolist()} nm must be finite "
                                  "and > 0")
        self.matrix = np.diag(self.lengths)
        self.arg = self.lengths

    @property
    def size(self) -> float:
        """Largest coordinate of a wrapped position (nm): sets float32 round-off margins."""
        return float(self.lengths.max())

    def check_width(self, r: float, what: str) -> None:
        """Raise unless every minimum-image question up to ``r`` nm has one answer."""
        w = float(perpendicular_widths(self.matrix).min())
        if not self.ortho and r >= 0.5 * min(w, float(self.lengths.min())):
            raise MultiscaleError(f"the box is too small for {what}: its narrowest width is "
                                  f"{w:.3f} nm, at least {2 * r:.3f} nm is needed")

    # ------------------------------------------------------------------ float64
    def wrap(self, x: np.ndarray) -> np.ndarray:
        """Positions (..., 3) wrapped into the primary cell (orthorhombic) or the brick."""
        if self.ortho:
            return wrap(x, self.lengths)
        out = np.array(x, dtype=np.float64)
        self.brick(out.T if out.ndim == 2 else out.reshape(-1, 3).T)
        return out

    def min_image(self, d: np.ndarray) -> np.ndarray:
        """Exact minimum-image vectors (..., 3) (:func:`multiscale.geometry.minimum_image`)."""
        return minimum_image(d, self.arg)

    def tree(self, x: np.ndarray, cutoff: float) -> BoxTree:
        """Neighbour search over points ``x`` (m, 3) for distances up to ``cutoff`` nm."""
        return BoxTree(x, self, cutoff)

    # ------------------------------------------------------------------ brick form
    def brick(self, xyz) -> None:
        """Wrap positions given as 3 coordinate arrays (x, y, z; any float type, modified in
        place) into the brick: z, then y, then x (each result in [0, L], L itself only by
        round-off)."""
        m = self.matrix.astype(xyz[0].dtype)
        x, y, z = xyz
        k = np.floor(z * (1 / m[2, 2]))
        x -= k * m[2, 0]
        y -= k * m[2, 1]
        z -= k * m[2, 2]
        k = np.floor(y * (1 / m[1, 1]))
        x -= k * m[1, 0]
        y -= k * m[1, 1]
        x -= np.floor(x * (1 / m[0, 0])) * m[0, 0]

    def min_image32(self, d: np.ndarray) -> np.ndarray:
        """Minimum-image vectors (..., 3), in place, any float type (see the module doc):
        orthorhombic ``d -= L * round(d / L)``; triclinic sequential rounding z, y, x."""
        if self.ortho:
            L = self.lengths.astype(d.dtype)
            d -= L * np.round(d / L)
            return d
        m = self.matrix.astype(d.dtype)
        for i in (2, 1, 0):
            k = np.round(d[..., i] / m[i, i])
            d -= k[..., None] * m[i]
        return d


#: queries of at least this many points use every CPU (smaller ones: thread start-up costs more
#: than it saves, ~4 ms per call on a loaded 2-CPU machine)
_THREADED_QUERY = 20_000


class BoxTree:
    """Points ``x`` (m, 3) of a :class:`Box` for neighbour queries up to ``cutoff`` nm:
    ``cKDTree(boxsize)`` for orthorhombic boxes (the placement's own tree, unchanged), a
    :class:`~multiscale.neighbours.PeriodicTree` for triclinic ones."""

    def __init__(self, x: np.ndarray, box: Box, cutoff: float):
        self.box = box
        x = np.asarray(x, dtype=np.float64).reshape(-1, 3)
        self.n = len(x)
        if box.ortho:
            self.t = _tree(wrap(x, box.lengths), box.lengths)
        else:
            box.check_width(cutoff, "the water neighbour search")
            self.t = PeriodicTree(x, box.matrix, cutoff)

    def query(self, q: np.ndarray, k: int = 1, distance_upper_bound: float = np.inf):
        """(distances, indices) of the k nearest points (``inf``, ``n`` where none)."""
        q = np.asarray(q, dtype=np.float64).reshape(-1, 3)
        if self.box.ortho:
            return self.t.query(wrap(q, self.box.lengths), k=k, distance_upper_bound=distance_upper_bound,
                                workers=-1 if len(q) >= _THREADED_QUERY else 1)
        return self.t.query(q, k=k, distance_upper_bound=distance_upper_bound)

    def query_pairs(self, r: float) -> np.ndarray:
        """Index pairs (P, 2) of points closer than r (any order)."""
        if self.box.ortho:
            return self.t.query_pairs(r, output_type="ndarray")
        return self.t.query_pairs(r)

    def query_ball_point(self, q: np.ndarray, r: float) -> list:
        """Indices of the points within r of each query point (list of arrays)."""
        if self.box.ortho:
            return self.t.query_ball_point(wrap(np.asarray(q, np.float64), self.box.lengths), r)
        return self.t.query_ball_point(q, r)

    def points(self) -> np.ndarray:
        """The stored (wrapped) points (m, 3)."""
        return np.asarray(self.t.data[: self.n]) if self.box.ortho else self.t.points()

"""The non-water atoms ("others") that placed waters keep clear of.

Every water atom keeps ``r_all`` (``min_dist_others``) from every other atom; a water oxygen
also keeps ``o_min[i]`` from other atom i where that is larger (ions: the first-shell O
distance of the ion, e.g. Na+ 0.20, Cl- 0.27 nm).  Lengths nm.
"""

from __future__ import annotations

import numpy as np

from multiscale.errors import MultiscaleError

from .pbc import Box

__all__ = ["Obstacles"]

#: an O closer to more than this many far-reaching atoms (ions) at once is checked exactly
_K_ION = 8


class Obstacles:
    """Other atoms ``others`` (m, 3) nm in ``box``; ``o_min`` (m,) nm or None: the water-O
    distance per atom (None: ``r_all`` for all).  ``near`` (set by :meth:`mark_near`) flags
    the beads close enough to touch one."""

    def __init__(self, others, box: Box, r_all: float, o_min=None, reach: float = 1.0):
        oth = np.asarray(others, dtype=np.float64).reshape(-1, 3)
        if not np.all(np.isfinite(oth)):
            raise MultiscaleError("others positions contain NaN/inf: check the AA frame")
        self.box, self.r_all, self.n = box, float(r_all), len(oth)
        self.r_max = self.r_all
        self.ions = None
        if o_min is not None:
            om = np.asarray(o_min, dtype=np.float64).reshape(-1)
            if om.shape != (len(oth),) or not np.all(np.isfinite(om)) or np.any(om < 0):
                raise MultiscaleError(
                    f"others_min_dist has shape {om.shape}: pass one finite distance >= 0 nm "
                    f"per 'others' atom ({len(oth)})")
            far = np.flatnonzero(om > self.r_all)
            if len(far):
                self.ion_r = om[far]
                self.r_max = float(self.ion_r.max())
                self.ions = box.tree(oth[far], self.r_max + 1e-4)
        self.tree = box.tree(oth, reach + self.r_max) if len(oth) else None

    def __bool__(self) -> bool:
        return self.tree is not None

    def mark_near(self, centres: np.ndarray, extent: float) -> np.ndarray:
        """Beads (centres (n, 3)) within ``extent`` + the largest clearance of an atom."""
        if self.tree is None:
            return np.zeros(len(centres), dtype=bool)
        d, _ = self.tree.query(centres, k=1, distance_upper_bound=extent + self.r_max)
        return np.isfinite(d)

    def count(self, atoms: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Atoms closer than allowed, per row of ``atoms`` (c, na, 3) (na a multiple of 3,
        water atom order O, H1, H2), with the clearances widened by ``margin`` nm."""
        a = np.asarray(atoms, dtype=np.float64).reshape(-1, 3)
        d, _ = self.tree.query(a, k=1, distance_upper_bound=self.r_all + margin)
        close = np.isfinite(d)
        if self.ions is not None:
            o = np.zeros(atoms.shape[:2], dtype=bool)
            o[:, 0::3] = True
            o = o.ravel()
            close[o] |= self.ion_close(a[o], margin)
        return close.reshape(len(atoms), -1).sum(axis=1)

    def ion_close(self, x: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """(p,) bool: points x (p, 3) closer than ``o_min + margin`` to an atom with a
        clearance above ``r_all``."""
        if self.ions is None or len(x) == 0:
            return np.zeros(len(x), dtype=bool)
        k = min(_K_ION, self.ions.n)
        d, i = self.ions.query(x, k=k, distance_upper_bound=self.r_max + margin)
        d, i = d.reshape(len(x), k), i.reshape(len(x), k)
        rad = np.append(self.ion_r, -np.inf) + margin
        close = np.any(d < rad[i], axis=1)
        full = np.flatnonzero(i[:, -1] < self.ions.n)  # maybe more than k in range: exactly
        if len(full):
            pts = self.ions.points()
            for r, nb in zip(full, self.ions.query_ball_point(x[full], self.r_max + margin)):
                nb = np.asarray(nb, dtype=np.int64)
                dv = self.box.min_image(pts[nb] - x[r])
                close[r] = bool(np.any(np.einsum("ij,ij->i", dv, dv) < (self.ion_r[nb] + margin) ** 2))
        return close

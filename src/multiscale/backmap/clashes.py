"""Clash search of the engine for any periodic box: (3,) edge lengths or (3, 3) box vectors.

Orthorhombic boxes go to :func:`multiscale.backmap.certify.find_clashes` unchanged (bit-identical
results); triclinic boxes (rhombic dodecahedron, truncated octahedron, any GROMACS box) are
searched with :class:`multiscale.neighbours.PeriodicTree` and exact minimum-image distances,
then filtered the same way (different molecules closer than ``inter``; same molecule, not
excluded, closer than ``intra``).  Once ``certify.find_clashes`` takes (3, 3) boxes itself, the
triclinic branch here can go.
"""

from __future__ import annotations

import numpy as np

from ..geometry import box_lengths, is_orthorhombic, minimum_image

__all__ = ["find_clashes"]


def find_clashes(x: np.ndarray, box, molecule: np.ndarray, local: np.ndarray, kind: np.ndarray,
                 exclusions: list, inter: float = 0.08, intra: float = 0.10, subset=None):
    """Clashing atom pairs (inter (P, 2), intra (Q, 2)), i < j, of one frame x (N, 3) nm (any
    image).  molecule / local / kind (N,): global molecule id, index within the molecule, index
    into ``exclusions`` (one (n, n) bool matrix per molecule type, True = excluded);
    subset: only pairs with at least one atom in these indices."""
    from .certify import find_clashes as _orthorhombic

    if is_orthorhombic(box):
        return _orthorhombic(x, box_lengths(box), molecule, local, kind, exclusions, inter, intra, subset=subset)
    x = np.asarray(x, np.float64)
    pairs = _candidate_pairs(x, box, max(inter, intra), subset)
    if not len(pairs):
        return np.zeros((0, 2), int), np.zeros((0, 2), int)
    i, j = pairs[:, 0], pairs[:, 1]
    d = minimum_image(x[j] - x[i], box)
    dist = np.sqrt((d * d).sum(-1))
    same = molecule[i] == molecule[j]
    inter_p = pairs[~same & (dist < inter)]
    s = same & (dist < intra)
    if not s.any():
        return inter_p, np.zeros((0, 2), int)
    sizes = np.array([len(e) for e in exclusions])
    offs = np.concatenate([[0], np.cumsum(sizes ** 2)])
    flat = np.concatenate([e.ravel() for e in exclusions])
    ii, jj = i[s], j[s]
    k = kind[ii]
    excl = flat[offs[k] + local[ii] * sizes[k] + local[jj]]
    return inter_p, pairs[s][~excl]


def _candidate_pairs(x: np.ndarray, box, r: float, subset) -> np.ndarray:
    """Unique pairs (P, 2), i < j, closer than r (minimum image); with ``subset``: only pairs
    touching those atoms."""
    from ..neighbours import PeriodicTree

    tree = PeriodicTree(x, box, r)
    if subset is None:
        return tree.query_pairs(r)
    subset = np.asarray(subset, int)
    if not len(subset):
        return np.zeros((0, 2), int)
    nb = tree.query_ball_point(x[subset], r)
    cnt = np.fromiter((len(v) for v in nb), int, len(nb))
    jj = np.concatenate(nb).astype(int) if len(nb) else np.zeros(0, int)
    ii = np.repeat(subset, cnt)
    m = ii != jj
    a, b = np.minimum(ii[m], jj[m]), np.maximum(ii[m], jj[m])
    key = np.unique(a.astype(np.int64) * len(x) + b)
    return np.stack([key // len(x), key % len(x)], 1)

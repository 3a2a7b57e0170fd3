"""Geometry as pure functions on arrays.

All lengths are nm.  Boxes are orthorhombic edge lengths ``(3,)`` (or ``(..., 3)``
broadcastable); triclinic boxes are rejected by the readers in :mod:`multiscale.io`.
Angles are radians.  Functions never modify their inputs.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "minimum_image",
    "wrap",
    "make_whole",
    "bond_tree_order",
    "kabsch_rotation",
    "dihedral",
    "angle",
    "signed_volume",
]


def minimum_image(d: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Minimum-image difference vectors.

    d: (..., 3) nm; box: (3,) or broadcastable (..., 3) nm.  Returns (..., 3) nm.
    """
    box = np.asarray(box, dtype=d.dtype if np.issubdtype(d.dtype, np.floating) else float)
    return d - box * np.round(d / box)


def wrap(x: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Wrap positions (..., 3) nm into the primary box [0, L) (strictly below L, as cKDTree ``boxsize`` needs)."""
    box = np.asarray(box, dtype=x.dtype)
    w = x - box * np.floor(x / box)
    # rounding can land a tiny negative coordinate exactly on L: that point is 0 modulo L
    return np.where(w >= box, 0.0, w).astype(w.dtype, copy=False)


def bond_tree_order(n_atoms: int, bonds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breadth-first spanning forest of a molecule's bond graph.

    n_atoms: atoms of ONE molecule; bonds: (n_bonds, 2) int, 0-based within the molecule.
    Returns ``(order, parent)``: ``order`` visits every atom once, parents before children;
    ``parent[i]`` is the atom i hangs from (-1 for a root).  Disconnected fragments each get
    a root (their lowest index).
    """
    adj: list[list[int]] = [[] for _ in range(n_atoms)]
    for a, b in np.asarray(bonds, dtype=int).reshape(-1, 2):
        adj[a].append(b)
        adj[b].append(a)
    parent = np.full(n_atoms, -1, dtype=int)
    seen = np.zeros(n_atoms, dtype=bool)
    order: list[int] = []
    for root in range(n_atoms):
        if seen[root]:
            continue
        seen[root] = True
        queue = [root]
        while queue:
            nxt = []
            for a in queue:
                order.append(a)
                for b in sorted(adj[a]):
                    if not seen[b]:
                        seen[b] = True
                        parent[b] = a
                        nxt.append(b)
            queue = nxt
    return np.asarray(order, dtype=int), parent


def make_whole(x: np.ndarray, box: np.ndarray, order: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """Make molecules whole by unwrapping each atom next to its bonded parent.

    x: (..., n_mol, n_atoms, 3) nm, all molecules of one type (batched over molecules and
    frames); box: (3,) or broadcastable to (..., n_mol, 3) nm; ``order``/``parent`` from :func:`bond_tree_order`.
    Returns a copy in which every bond vector is its minimum image.  Vectorised over molecules:
    the only loop is over the atoms of one molecule type.
    """
    out = np.array(x, dtype=np.float64, copy=True)
    box = np.asarray(box, dtype=np.float64)
    for a in order:
        p = parent[a]
        if p < 0:
            continue
        out[..., a, :] = out[..., p, :] + minimum_image(out[..., a, :] - out[..., p, :], box)
    return out


def kabsch_rotation(p: np.ndarray, q: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Rotation matrices R with ``p_centred @ R`` best fitting ``q_centred`` (batched).

    p, q: (..., n, 3) point sets, already centred (weighted) on the origin; w: (n,) weights.
    Returns (..., 3, 3) proper rotations (det +1).
    """
    if w is not None:
        p = p * np.asarray(w)[:, None]
    h = np.swapaxes(p, -1, -2) @ q
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    diag = np.ones(h.shape[:-2] + (3,))
    diag[..., 2] = d
    return (u * diag[..., None, :]) @ vt


def angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Angle a-b-c in radians; inputs (..., 3)."""
    u = a - b
    v = c - b
    cos = np.sum(u * v, -1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.arccos(np.clip(cos, -1.0, 1.0))


def dihedral(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Torsion a-b-c-d in radians in (-pi, pi] (IUPAC sign); inputs (..., 3)."""
    b0 = a - b
    b1 = c - b
    b2 = d - c
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1n, -1, keepdims=True) * b1n
    w = b2 - np.sum(b2 * b1n, -1, keepdims=True) * b1n
    x = np.sum(v * w, -1)
    y = np.sum(np.cross(b1n, v) * w, -1)
    return np.arctan2(y, x)


def signed_volume(center: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Signed volume (a-center)·((b-center)×(c-center)); its sign is the handedness."""
    return np.sum((a - center) * np.cross(b - center, c - center), -1)

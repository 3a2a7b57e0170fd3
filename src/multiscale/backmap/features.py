"""Roto-translation-invariant conditioning features of a molecule's CG beads.

For the ``n_beads`` beads of one molecule (in mapping order):

* all bead-bead distances ``|b_j - b_i|`` for i < j (nm);
* the cosine of every angle between consecutive beads (i, i+1, i+2);
* sin and cos of every torsion between consecutive beads (i, i+1, i+2, i+3): the sine
  carries the handedness that distances cannot.

Optionally (:func:`neighbour_counts`) the number of beads of *other* molecules within a cut-off
(~1 nm) of each bead, a cheap description of the environment.

Shapes: beads ``(..., n_beads, 3)`` nm -> features ``(..., n_features)``; torch or numpy in,
same type out.
"""

from __future__ import annotations

import numpy as np

__all__ = ["n_features", "feature_names", "cg_features", "neighbour_counts", "unwrap_beads"]


def _pairs(nb: int):
    i, j = np.triu_indices(nb, 1)
    return i, j


def n_features(n_beads: int) -> int:
    """Number of features for a molecule with ``n_beads`` beads."""
    nb = int(n_beads)
    return nb * (nb - 1) // 2 + max(nb - 2, 0) + 2 * max(nb - 3, 0)


def feature_names(bead_names: list[str]) -> list[str]:
    """Human-readable names of the features, in order."""
    nb = len(bead_names)
    i, j = _pairs(nb)
    out = [f"d({bead_names[a]},{bead_names[b]})" for a, b in zip(i, j)]
    out += [f"cos angle({bead_names[k]},{bead_names[k + 1]},{bead_names[k + 2]})" for k in range(nb - 2)]
    for k in range(nb - 3):
        q = ",".join(bead_names[k:k + 4])
        out += [f"sin torsion({q})", f"cos torsion({q})"]
    return out


def cg_features(beads):
    """Features (..., n_features) of beads (..., n_beads, 3) nm (see module docstring)."""
    import torch

    is_np = not isinstance(beads, torch.Tensor)
    b = torch.as_tensor(np.asarray(beads, np.float64)) if is_np else beads
    nb = b.shape[-2]
    parts = []
    if nb >= 2:
        i, j = _pairs(nb)
        parts.append(torch.linalg.norm(b[..., j, :] - b[..., i, :], dim=-1))
    if nb >= 3:
        k = np.arange(nb - 2)
        u = b[..., k, :] - b[..., k + 1, :]
        v = b[..., k + 2, :] - b[..., k + 1, :]
        cos = (u * v).sum(-1) / (torch.linalg.norm(u, dim=-1) * torch.linalg.norm(v, dim=-1)).clamp(min=1e-9)
        parts.append(cos.clamp(-1, 1))
    if nb >= 4:
        k = np.arange(nb - 3)
        b0 = b[..., k, :] - b[..., k + 1, :]
        b1 = b[..., k + 2, :] - b[..., k + 1, :]
        b2 = b[..., k + 3, :] - b[..., k + 2, :]
        b1n = b1 / torch.linalg.norm(b1, dim=-1, keepdim=True).clamp(min=1e-9)
        v = b0 - (b0 * b1n).sum(-1, keepdim=True) * b1n
        w = b2 - (b2 * b1n).sum(-1, keepdim=True) * b1n
        x = (v * w).sum(-1)
        y = (torch.cross(b1n, v, dim=-1) * w).sum(-1)
        r = torch.sqrt(x * x + y * y).clamp(min=1e-9)
        t = torch.stack([y / r, x / r], -1).flatten(-2)
        parts.append(t)
    if parts:
        f = torch.cat(parts, -1)
    else:
        f = b.new_zeros(b.shape[:-2] + (0,))
    return f.numpy() if is_np else f


def unwrap_beads(beads: np.ndarray, box: np.ndarray, parent=None) -> np.ndarray:
    """Make each molecule's beads whole: bead k is put at the minimum image of its parent bead
    (``parent[k]``, from :func:`bead_tree`; default bead k-1).

    beads: (..., n_beads, 3) nm; box: (3,) nm, or broadcastable against ``beads[..., k, :]`` (e.g.
    (F, 1, 3) for (F, M, n_beads, 3)), or (3, 3) box vectors (triclinic, one box).  With a
    parent array the beads are visited in breadth-first order of that tree, so two beads far
    apart in the molecule (a lipid's tail end and the other tail's first bead) never decide an image.
    """
    from ..geometry import minimum_image

    b = np.array(beads, dtype=np.float64, copy=True)
    box = np.asarray(box, np.float64)
    tric = box.shape[-2:] == (3, 3)
    for k in range(1, b.shape[-2]) if parent is None else _parents_first(parent):
        p = k - 1 if parent is None else int(parent[k])
        d = b[..., k, :] - b[..., p, :]
        if tric:
            b[..., k, :] = b[..., p, :] + minimum_image(d, box)
        else:  # (b + d) - shift: this order, so results stay bit-identical to earlier versions
            b[..., k, :] = b[..., p, :] + d - box * np.round(d / box)
    return b


def _parents_first(parent) -> list[int]:
    """Beads 1.. ordered so that every bead comes after its parent."""
    depth = np.zeros(len(parent), int)
    for k in range(1, len(parent)):
        p, d = int(parent[k]), 1
        while p > 0 and d < len(parent):
            p, d = int(parent[p]), d + 1
        depth[k] = d
    return sorted(range(1, len(parent)), key=lambda k: (depth[k], k))


def bead_tree(matrix: np.ndarray, bonds: np.ndarray) -> np.ndarray | None:
    """(n_beads,) parent bead of each bead (-1 for bead 0): beads are neighbours when an atom
    bond joins atoms of the two (or they share an atom); breadth-first from bead 0
    (:func:`multiscale.geometry.bond_tree_order` on the bead graph; a bead no chemical path
    reaches hangs from bead k-1).  None when every bead k is a neighbour of bead k-1 (the plain
    sequential unwrapping is then already along the chemistry)."""
    from ..geometry import bond_tree_order

    M = np.asarray(matrix) > 0
    nb = M.shape[0]
    adj = (M.astype(int) @ M.T.astype(int)) > 0
    for a, c in np.asarray(bonds, int).reshape(-1, 2):
        adj |= np.outer(M[:, a], M[:, c]) | np.outer(M[:, c], M[:, a])
    np.fill_diagonal(adj, False)
    if all(adj[k, k - 1] for k in range(1, nb)):
        return None
    _, parent = bond_tree_order(nb, np.argwhere(np.triu(adj)))
    loose = np.flatnonzero(parent[1:] < 0) + 1
    parent[loose] = loose - 1
    return parent


def neighbour_counts(points: np.ndarray, box: np.ndarray, molecule: np.ndarray, cutoff: float = 1.0) -> np.ndarray:
    """Per point, the number of points of *other* molecules within ``cutoff`` nm (PBC).

    points: (n, 3) nm (any image); box: (3,) lengths or (3, 3) box vectors nm; molecule: (n,)
    int molecule id per point.  Returns (n,) float.
    """
    from ..neighbours import PeriodicTree

    p = np.asarray(points, np.float64)
    pairs = PeriodicTree(p, box, cutoff).query_pairs(cutoff)
    mol = np.asarray(molecule)
    other = mol[pairs[:, 0]] != mol[pairs[:, 1]]
    pr = pairs[other]
    cnt = np.bincount(pr.ravel(), minlength=len(p)).astype(float)
    return cnt

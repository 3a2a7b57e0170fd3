"""Geometry as pure functions on arrays.

All lengths are nm, angles radians.  A periodic box is either the three edge lengths ``(3,)``
of an orthorhombic cell or a ``(3, 3)`` matrix whose rows are the box vectors (GROMACS
convention: lower triangular, ``a = (ax, 0, 0)``, ``b = (bx, by, 0)``, ``c = (cx, cy, cz)``), which
covers triclinic cells such as the rhombic dodecahedron and the truncated octahedron.  Every
function here accepts both forms; orthorhombic boxes take the plain edge-length arithmetic (fast
path, bit-identical to the edge-length form).  Functions never modify their inputs.
"""

from __future__ import annotations

import numpy as np

from .errors import MultiscaleError

__all__ = [
    "box_matrix",
    "frame_boxes",
    "box_lengths",
    "is_orthorhombic",
    "box_volume",
    "check_box",
    "to_fractional",
    "minimum_image",
    "wrap",
    "make_whole",
    "bond_tree_order",
    "kabsch_rotation",
    "dihedral",
    "angle",
    "signed_volume",
    "shortest_lattice_vector",
    "perpendicular_widths",
]

#: Relative tolerance under which off-diagonal box-vector elements count as zero.
_ORTHO_TOL = 1e-9


def box_matrix(box) -> np.ndarray:
    """The box as a ``(..., 3, 3)`` float64 matrix (rows = box vectors, nm).

    box: ``(..., 3)`` edge lengths (orthorhombic) or ``(..., 3, 3)`` matrices.
    """
    b = np.asarray(box, dtype=np.float64)
    if b.shape[-2:] == (3, 3):
        return b
    if b.shape[-1:] != (3,):
        raise ValueError(f"box has shape {b.shape}: expected (..., 3) edge lengths or (..., 3, 3) box vectors")
    out = np.zeros(b.shape[:-1] + (3, 3))
    idx = np.arange(3)
    out[..., idx, idx] = b
    return out


def frame_boxes(box, n_frames: int) -> np.ndarray:
    """Broadcast a box argument to per-frame boxes: (F, 3) edge lengths or (F, 3, 3) vectors.

    box: (3,), (F, 3), (3, 3) or (F, 3, 3).  A (3, 3) array is one box matrix when it is lower
    triangular (GROMACS form), else three frames of edge lengths.
    """
    b = np.asarray(box, dtype=float)
    if b.ndim == 3 or (b.shape == (3, 3) and b[0, 1] == 0 and b[0, 2] == 0 and b[1, 2] == 0):
        return np.broadcast_to(b.reshape(-1, 3, 3), (n_frames, 3, 3))
    return np.broadcast_to(b.reshape(-1, 3), (n_frames, 3))


def is_orthorhombic(box) -> bool:
    """True when every box (``(..., 3)`` or ``(..., 3, 3)``) has zero off-diagonal elements."""
    b = np.asarray(box, dtype=np.float64)
    if b.shape[-2:] != (3, 3):
        return True
    off = b - b * np.eye(3)
    scale = max(1.0, float(np.abs(b).max())) if b.size else 1.0
    return bool(np.all(np.abs(off) <= _ORTHO_TOL * scale))


def box_lengths(box) -> np.ndarray:
    """Edge lengths ``(..., 3)`` of orthorhombic boxes; raises ValueError for a triclinic one."""
    b = np.asarray(box, dtype=np.float64)
    if b.shape[-2:] != (3, 3):
        return b
    if not is_orthorhombic(b):
        raise ValueError("box_lengths: the box is triclinic")
    return np.diagonal(b, axis1=-2, axis2=-1).copy()


def box_volume(box) -> np.ndarray:
    """Cell volume (nm^3), shape ``box.shape[:-1]`` or ``[:-2]``."""
    return np.abs(np.linalg.det(box_matrix(box)))


def check_box(box, source: str = "box") -> np.ndarray:
    """Validate one box and return it as a (3, 3) matrix.

    Accepts what GROMACS accepts: finite, lower-triangular box vectors with positive diagonal
    and ``|bx| <= ax/2``, ``|cx| <= ax/2``, ``|cy| <= by/2`` (mdrun's limits; up to rounding).
    Raises :class:`MultiscaleError` with one line naming ``source`` otherwise.
    """
    m = box_matrix(box)
    if m.shape != (3, 3):
        raise MultiscaleError(f"{source}: expected one box, got shape {np.shape(box)}")
    if not np.all(np.isfinite(m)):
        raise MultiscaleError(f"{source}: box contains NaN/inf: write the file with valid box vectors")
    if np.any(np.diag(m) <= 0):
        raise MultiscaleError(f"{source}: box edges {np.diag(m).round(4).tolist()} nm must be > 0")
    if abs(m[0, 1]) > 1e-6 or abs(m[0, 2]) > 1e-6 or abs(m[1, 2]) > 1e-6:
        raise MultiscaleError(f"{source}: box vectors are not lower triangular (GROMACS form): "
                              "put the box in GROMACS convention (gmx editconf -bt triclinic)")
    tol = 1e-3
    if abs(m[1, 0]) > m[0, 0] / 2 + tol or abs(m[2, 0]) > m[0, 0] / 2 + tol or abs(m[2, 1]) > m[1, 1] / 2 + tol:
        raise MultiscaleError(f"{source}: box vectors {m.round(4).tolist()} are too skewed for GROMACS "
                              "(|bx|,|cx| <= ax/2 and |cy| <= by/2): reduce the box (gmx editconf / trjconv -pbc mol)")
    return m


def to_fractional(x: np.ndarray, box) -> np.ndarray:
    """Fractional coordinates ``x @ inv(box)`` (..., 3); box (3, 3) or (3,)."""
    m = box_matrix(box)
    return np.asarray(x, np.float64) @ np.linalg.inv(m)


def shortest_lattice_vector(box) -> float:
    """Length (nm) of the shortest non-zero lattice vector n.box, n in {-2..2}^3 (one box)."""
    m = box_matrix(box)
    n = np.array(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij")).reshape(3, -1).T
    n = n[np.any(n != 0, axis=1)]
    return float(np.sqrt(((n @ m) ** 2).sum(1)).min())


def perpendicular_widths(box) -> np.ndarray:
    """The three perpendicular widths (nm) of the cell: volume / area of the opposite face."""
    m = box_matrix(box)
    v = abs(np.linalg.det(m))
    return np.array([v / np.linalg.norm(np.cross(m[1], m[2])), v / np.linalg.norm(np.cross(m[2], m[0])),
                     v / np.linalg.norm(np.cross(m[0], m[1]))])


def _images27(box: np.ndarray) -> np.ndarray:
    n = np.array(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij")).reshape(3, -1).T.astype(np.float64)
    return n @ box  # (27, 3)


def minimum_image(d: np.ndarray, box) -> np.ndarray:
    """Minimum-image difference vectors.

    d: (..., 3) nm; box: (3,) or broadcastable (..., 3) edge lengths, or one (3, 3) triclinic
    matrix (or a stack (..., 3, 3) broadcastable against d's leading axes).  Returns (..., 3) nm.
    For a triclinic box the fractional-rounded vector is checked against its 26 neighbouring
    images wherever it is longer than half the shortest lattice vector, so the result is the
    exact minimum image for any GROMACS box.
    """
    fdt = d.dtype if np.issubdtype(d.dtype, np.floating) else float
    b = np.asarray(box, dtype=fdt)
    if b.shape[-2:] != (3, 3):
        return d - b * np.round(d / b)
    if is_orthorhombic(b):
        lengths = np.diagonal(b, axis1=-2, axis2=-1)
        return d - lengths * np.round(d / lengths)
    if b.ndim > 2:  # a stack of boxes broadcast against d's leading axes (e.g. (F, 1, 3, 3))
        m = b.astype(np.float64)
        x = np.asarray(d, np.float64)
        s = np.einsum("...k,...kj->...j", x, np.linalg.inv(m))
        r = x - np.einsum("...k,...kj->...j", np.round(s), m)
        flat = m.reshape(-1, 3, 3)
        half = 0.5 * np.array([shortest_lattice_vector(q) for q in flat]).reshape(m.shape[:-2])
        far = np.einsum("...k,...k->...", r, r) > np.broadcast_to(half, r.shape[:-1]) ** 2
        if np.any(far):
            mb = np.broadcast_to(m, r.shape[:-1] + (3, 3))[far]  # (n_far, 3, 3)
            cand = r[far][:, None, :] + np.einsum("ik,nkj->nij", _images27(np.eye(3)), mb)
            best = np.argmin(np.einsum("nik,nik->ni", cand, cand), axis=1)
            r[far] = cand[np.arange(len(cand)), best]
        return r.astype(fdt, copy=False)
    m = b.astype(np.float64)
    x = np.asarray(d, np.float64)
    s = x @ np.linalg.inv(m)
    r = x - np.round(s) @ m
    half = 0.5 * shortest_lattice_vector(m)
    far = np.einsum("...k,...k->...", r, r) > half * half
    if np.any(far):
        rf = r[far]
        cand = rf[:, None, :] + _images27(m)[None]
        best = np.argmin(np.einsum("nik,nik->ni", cand, cand), axis=1)
        r[far] = cand[np.arange(len(rf)), best]
    return r.astype(fdt, copy=False)


def wrap(x: np.ndarray, box) -> np.ndarray:
    """Wrap positions (..., 3) nm into the primary cell.

    Orthorhombic ((3,) lengths or a diagonal matrix): into [0, L) per axis, strictly below L as
    cKDTree ``boxsize`` needs.  Triclinic ((3, 3) matrix, one box or a stack broadcastable to
    (..., 3, 3)): into the unit parallelepiped, fractional coordinates in [0, 1).
    """
    b = np.asarray(box, dtype=x.dtype if np.issubdtype(x.dtype, np.floating) else float)
    if b.shape[-2:] == (3, 3):
        if is_orthorhombic(b):
            b = np.diagonal(b, axis1=-2, axis2=-1)
        else:
            m = b.astype(np.float64)
            inv = np.linalg.inv(m)
            xs = np.asarray(x, np.float64)
            s = np.einsum("...k,...kj->...j", xs, inv) if m.ndim > 2 else xs @ inv
            s = s - np.floor(s)
            s = np.where(s >= 1.0, 0.0, s)
            out = np.einsum("...k,...kj->...j", s, m) if m.ndim > 2 else s @ m
            return out.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64, copy=False)
    w = x - b * np.floor(x / b)
    # rounding can land a tiny negative coordinate exactly on L: that point is 0 modulo L
    return np.where(w >= b, 0.0, w).astype(w.dtype, copy=False)


def apply_weights(matrix, x: np.ndarray) -> np.ndarray:
    """Weighted centres M x: matrix (n_beads, n_atoms), dense or scipy sparse; x (..., n_atoms, 3)
    -> (..., n_beads, 3), same units as x.  A sparse matrix (long chains: a dense one would hold
    n_beads x n_atoms numbers) is applied without densifying it."""
    x = np.asarray(x)
    if not hasattr(matrix, "tocsr"):
        return np.einsum("ba,...ak->...bk", matrix, x)
    lead = x.shape[:-2]
    xa = np.moveaxis(x, -2, 0).reshape(x.shape[-2], -1)  # (n_atoms, prod(lead) * 3)
    y = np.asarray(matrix.tocsr() @ xa).reshape((matrix.shape[0], *lead, 3))
    return np.moveaxis(y, 0, -2)


def dense_weights(matrix) -> np.ndarray:
    """A (n_beads, n_atoms) weight matrix as a dense float64 array (scipy sparse densified)."""
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix, np.float64)


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
    frames); box: (3,) or broadcastable to (..., n_mol, 3) edge lengths, or (3, 3) / (..., n_mol, 3, 3)
    box vectors (triclinic); ``order``/``parent`` from :func:`bond_tree_order`.
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

"""Put built molecules onto their CG beads: superposition, free rotations, exact projection.

All functions are pure and batched over molecules (torch tensors, any device, float64
recommended); lengths nm.

* :func:`fit_to_beads`: rigid Kabsch fit of the mapped bead centres ``M @ x`` onto the CG
  beads.  With one bead every orientation fits equally well and with two beads the rotation
  about the bead axis is free: those rotations are drawn uniformly (seeded generator).
* :func:`projection_operator` / :func:`project_exact`: the correction
  ``x <- x + A (c - M x)`` with ``M A = I``, so the mapped centres equal the beads exactly.
  With ``smoothing=0``, ``A = M^T (M M^T)^-1`` for atoms that carry mapping weight (the
  minimum-norm correction) and atoms with zero weight (e.g. hydrogens left out of the mapping)
  follow the nearest weighted atom along the bonds.  With ``smoothing > 0`` the correction
  also penalises differences between bonded atoms' displacements (bond-graph Laplacian), so a
  bead-to-bead mismatch is spread along the molecule instead of landing on one bond.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from ..geometry import dihedral

__all__ = ["projection_operator", "sparse_projection_operator", "project_exact", "relax_project", "fit_to_beads", "spin_about_beads",
           "random_rotations_t", "kabsch_t",
           "find_rotors", "orient_rotors", "count_hbonds", "hbond_counts"]


def projection_operator(matrix: np.ndarray, bonds: np.ndarray | None = None, smoothing: float = 0.0) -> np.ndarray:
    """A (n_atoms, n_beads) with ``M @ A = I`` (see module docstring).

    matrix: (n_beads, n_atoms) mapping matrix M; bonds: (nb, 2) bond list.
    smoothing = 0: ``A = M^T (M M^T)^-1`` on weighted atoms (the minimum-norm correction),
    unweighted atoms copy the row of their nearest weighted atom along the bonds.
    smoothing = s > 0: ``A = K M^T (M K M^T)^-1`` with ``K = (I + s L)^-1`` (L: bond-graph
    Laplacian), i.e. the correction minimising ``sum_i |dx_i|^2 + s sum_bonds |dx_i - dx_j|^2``
    subject to ``M dx = r``: the displacement is spread smoothly along the bonds instead of
    shifting each bead's atoms rigidly, so inter-bead bonds are strained far less.  Both are
    exact (``M A = I``).
    """
    M = np.asarray(matrix, np.float64)
    nb, n = M.shape
    if smoothing > 0 and bonds is not None and len(bonds):
        L = np.zeros((n, n))
        for a, b in np.asarray(bonds, int).reshape(-1, 2):
            if a != b:
                L[a, a] += 1
                L[b, b] += 1
                L[a, b] -= 1
                L[b, a] -= 1
        K = np.linalg.inv(np.eye(n) + float(smoothing) * L)
        KM = K @ M.T
        return KM @ np.linalg.inv(M @ KM)
    E = M.T[_row_source(M.sum(0) > 0, bonds)]  # (n, nb)
    G = M @ E  # = M M^T (unweighted atoms have zero columns in M)
    return E @ np.linalg.inv(G)


def _row_source(w: np.ndarray, bonds) -> np.ndarray:
    """(n,) for each atom the atom whose row of M^T its correction copies: itself when weighted
    (``w``), else the nearest weighted atom along the bonds (itself, a zero row, if none)."""
    n = len(w)
    src = np.where(w, np.arange(n), -1)
    if not w.all() and bonds is not None and len(bonds):
        adj = [[] for _ in range(n)]
        for a, b in np.asarray(bonds, int).reshape(-1, 2):
            adj[a].append(b)
            adj[b].append(a)
        frontier = list(np.flatnonzero(w))
        while frontier:
            nxt = []
            for a in frontier:
                for b in adj[a]:
                    if src[b] < 0:
                        src[b] = src[a]
                        nxt.append(b)
            frontier = nxt
    return np.where(src >= 0, src, np.arange(n))


def sparse_projection_operator(matrix, bonds=None) -> sp.csr_matrix:
    """The minimum-norm operator of :func:`projection_operator` (smoothing 0) for a sparse M
    (scipy, (n_beads, n_atoms)) whose beads share atoms only locally (amino-acid chains: M M^T is
    block-banded), as a sparse matrix: no dense (n_atoms, n_beads) array and no dense inverse
    (1,000 residues: 10 s and 300 MB dense).  Unweighted atoms copy the row of their nearest
    weighted atom along ``bonds``, as in the dense operator."""
    from scipy.sparse.linalg import splu

    M = sp.csr_matrix(matrix, dtype=np.float64)
    E = sp.csr_matrix(M.T)[_row_source(np.asarray(M.sum(axis=0)).ravel() > 0, bonds)]
    G = (M @ E).tocsc()
    Ginv = splu(G).solve(np.eye(G.shape[0]))  # (nb, nb): dense but small next to (n, nb)
    Ginv[np.abs(Ginv) < 1e-12] = 0.0
    return sp.csr_matrix(E @ sp.csr_matrix(Ginv))


def _apply(A, y: torch.Tensor) -> torch.Tensor:
    """A (dense array or scipy sparse, (p, q)) times y (q, m) torch -> (p, m)."""
    if sp.issparse(A):
        return torch.as_tensor(A @ y.cpu().numpy(), dtype=y.dtype, device=y.device)
    return torch.as_tensor(A, dtype=y.dtype, device=y.device) @ y


def project_exact(x: torch.Tensor, matrix, operator, beads: torch.Tensor) -> torch.Tensor:
    """x (B, n, 3) -> x + A (c - M x); matrix M (nb, n), operator A (n, nb), beads c (B, nb, 3);
    M and A dense arrays or scipy sparse matrices."""
    if sp.issparse(matrix) or sp.issparse(operator):
        B, n = x.shape[0], x.shape[1]
        X = x.permute(1, 0, 2).reshape(n, B * 3)
        resid = beads.to(x.dtype).permute(1, 0, 2).reshape(-1, B * 3) - _apply(matrix, X)
        return x + _apply(operator, resid).reshape(n, B, 3).permute(1, 0, 2)
    M = torch.as_tensor(matrix, dtype=x.dtype, device=x.device)
    A = torch.as_tensor(operator, dtype=x.dtype, device=x.device)
    resid = beads.to(x.dtype) - torch.einsum("ba,nak->nbk", M, x)
    return x + torch.einsum("ab,nbk->nak", A, resid)


def relax_project(x: torch.Tensor, matrix, operator, beads: torch.Tensor, pairs: np.ndarray,
                  iterations: int = 15, stiffness: float = 1.0, repel: tuple | None = None,
                  rigid: list | None = None, rigid_weight: float = 1.0, exact: bool = True,
                  reference: torch.Tensor | None = None) -> torch.Tensor:
    """Exact projection that preserves local geometry.

    Alternates :func:`project_exact` with position-based (Jacobi) steps that restore the
    distances of ``pairs`` (P, 2) (bonds and 1-3 pairs) to their values in the input ``x``, so
    the correction needed to hit the beads ends up in the soft (torsional) degrees of freedom
    instead of stretching bonds and bending angles; the last step is the exact projection, so
    ``M @ x == beads`` to round-off.  x (B, n, 3), beads (B, nb, 3) nm.  ``repel = (pairs (Q, 2),
    r_min nm)``: those pairs (non-bonded ones of the same molecule) closer than r_min are pushed
    apart by the same kind of step, so the projection does not fold a long molecule into itself.
    ``rigid``: atom groups (arrays of indices, e.g. a stereocentre with its neighbours, a double
    bond with its substituents) restored each sweep to their input shape by a proper-rotation fit
    (shape matching): distances alone hold a tetrahedron's handedness and a double bond's planarity
    only to second order, so without it the projection flattens centres and twists cis bonds.
    ``rigid_weight`` (0, 1]: the fraction of that move taken per sweep.  Each sweep projects, then
    restores shapes, then restores distances, so the bonds outside the groups have the last word
    before the final exact projection.  ``reference`` (B, n, 3): take the distances and shapes to
    restore from it instead of from ``x`` (x: the reference with some atoms pushed away).
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if iterations <= 0 or len(pairs) == 0:
        return project_exact(x, matrix, operator, beads)
    B, n = x.shape[0], x.shape[1]
    dt, dev = torch.float32, x.device  # the iterations only need ~1e-6 nm; the last step is float64
    M = _torch_matrix(matrix, dt, dev)
    A = _torch_matrix(operator, dt, dev)
    i = torch.as_tensor(pairs[:, 0], device=dev)
    j = torch.as_tensor(pairs[:, 1], device=dev)
    P = len(pairs)
    # Jacobi step dx_a = -stiffness/2/cnt_a * sum over the pairs of a of +-(1 - r0/r) d, by index_add
    # (no dense pair operator: memory and time stay linear in the pairs)
    cnt = torch.bincount(torch.cat([i, j]), minlength=n).to(dt).clamp(min=1.0)
    coef = (-0.5 * float(stiffness) / cnt)[:, None]
    # layout (n, B*3): the projection is two thin matmuls, x <- x - A (M x) + A c
    X = x.to(dt).permute(1, 0, 2).reshape(n, B * 3)
    Ac = (A @ beads.to(dt).permute(1, 0, 2).reshape(-1, B * 3))
    R = X if reference is None else reference.to(dt).permute(1, 0, 2).reshape(n, B * 3)
    r0 = torch.linalg.norm((R[j] - R[i]).reshape(P, B, 3), dim=-1, keepdim=True)
    if repel is not None:  # index tensors made once, not per sweep
        rp = np.asarray(repel[0], np.int64).reshape(-1, 2)
        rep_pairs = (torch.as_tensor(rp[:, 0], device=dev), torch.as_tensor(rp[:, 1], device=dev))
        r_min = float(repel[1])
    shapes = _rigid_shapes(R, rigid, B) if rigid else None
    for it in range(iterations):
        X = X - A @ (M @ X) + Ac
        if shapes is not None:
            X = _shape_step(X, shapes, B, rigid_weight)
        X = _distance_step(X, i, j, r0, coef, P, B)
        if repel is not None:
            if it % REPEL_LIST_EVERY == 0:
                near = _repel_list(X, rep_pairs, B, r_min + REPEL_SKIN)
            X = _repel_step(X, near, B, r_min, float(stiffness))
    if not exact:  # chemistry first: shapes and distances restored with no projection, the beads missed by what is left
        for _ in range(iterations):
            if shapes is not None:
                X = _shape_step(X, shapes, B, 1.0)
            X = _distance_step(X, i, j, r0, coef, P, B)
        return X.reshape(n, B, 3).permute(1, 0, 2).to(x.dtype)
    x = X.reshape(n, B, 3).permute(1, 0, 2).to(x.dtype)
    return project_exact(x, matrix, operator, beads)


def _distance_step(X: torch.Tensor, i, j, r0, coef, P: int, B: int) -> torch.Tensor:
    """One Jacobi step restoring the distances of pairs (i, j) to r0; X (n, B*3)."""
    d = (X[j] - X[i]).reshape(P, B, 3)
    r = torch.linalg.norm(d, dim=-1, keepdim=True).clamp(min=1e-9)
    f = ((1.0 - r0 / r) * d).reshape(P, B * 3)
    g = torch.zeros_like(X).index_add_(0, j, f).index_add_(0, i, -f)
    return X + coef * g


def _torch_matrix(a, dtype, device):
    """A dense tensor, or a sparse CSR tensor for a scipy sparse matrix (``A @ X`` works for both)."""
    if sp.issparse(a):
        import warnings

        c = sp.csr_matrix(a)
        with warnings.catch_warnings():  # torch's one-time "sparse CSR support is in beta" notice, not the user's business
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
            return torch.sparse_csr_tensor(torch.as_tensor(c.indptr, dtype=torch.int64),
                                           torch.as_tensor(c.indices, dtype=torch.int64),
                                           torch.as_tensor(c.data, dtype=dtype), size=c.shape, device=device,
                                           check_invariants=False)  # built from a valid scipy CSR matrix
    return torch.as_tensor(a, dtype=dtype, device=device)


def _rigid_shapes(X: torch.Tensor, groups: list, B: int) -> tuple:
    """([(index (g, G), centred input shapes (g*B, G, 3)) per group size], per-atom membership count (n, 1))."""
    n = X.shape[0]
    X3 = X.reshape(n, B, 3)
    out = []
    cnt = torch.zeros(n, 1, dtype=X.dtype, device=X.device)
    by_size = {}
    for grp in groups:
        by_size.setdefault(len(grp), []).append(np.asarray(grp, np.int64))
    for size, gs in sorted(by_size.items()):
        idx = torch.as_tensor(np.stack(gs), device=X.device)  # (g, G)
        ref = X3[idx].permute(0, 2, 1, 3).reshape(-1, size, 3)  # (g*B, G, 3)
        out.append((idx, ref - ref.mean(1, keepdim=True)))
        cnt.index_add_(0, idx.reshape(-1), torch.ones(idx.numel(), 1, dtype=X.dtype, device=X.device))
    return out, cnt.clamp(min=1.0)


def _shape_step(X: torch.Tensor, shapes: tuple, B: int, weight: float = 1.0) -> torch.Tensor:
    """Move every rigid group's atoms ``weight`` of the way to its input shape, best fitted by a
    proper rotation (Kabsch) onto where they are now; atoms in several groups take the mean of their
    moves.  X (n, B*3)."""
    n = X.shape[0]
    X3 = X.reshape(n, B, 3)
    g = torch.zeros_like(X3)
    groups, cnt = shapes
    for idx, ref in groups:
        size = idx.shape[1]
        cur = X3[idx].permute(0, 2, 1, 3).reshape(-1, size, 3)  # (g*B, G, 3)
        mean = cur.mean(1, keepdim=True)
        R = kabsch_t(ref, cur - mean)
        delta = (ref @ R + mean - cur).reshape(-1, B, size, 3).permute(0, 2, 1, 3)  # (g, G, B, 3)
        g.index_add_(0, idx.reshape(-1), delta.reshape(-1, B, 3))
    return (X3 + float(weight) * g / cnt[..., None]).reshape(X.shape)


#: the repulsion works on a pair list (pairs of a molecule within r_min + skin), rebuilt every few sweeps
REPEL_SKIN, REPEL_LIST_EVERY = 0.15, 5


def _repel_list(X: torch.Tensor, pairs: tuple, B: int, r_list: float, chunk: int = 2 ** 24) -> tuple:
    """(atom i, atom j, molecule b) index tensors of the pairs (i, j) of each molecule closer than
    ``r_list`` nm; X (n, B*3).  The dense pair distances are taken over molecule chunks, so memory
    stays bounded for thousands of long molecules."""
    i, j = pairs
    X3 = X.reshape(X.shape[0], B, 3)
    step = max(1, chunk // max(1, len(i)))
    out = []
    for b0 in range(0, B, step):
        d = X3[j, b0:b0 + step] - X3[i, b0:b0 + step]
        p, b = torch.nonzero((d * d).sum(-1) < r_list * r_list, as_tuple=True)
        out.append((i[p], j[p], b + b0))
    return tuple(torch.cat(t) for t in zip(*out))


def _repel_step(X: torch.Tensor, near: tuple, B: int, r_min: float, stiffness: float) -> torch.Tensor:
    """One Jacobi step pushing listed pairs (:func:`_repel_list`) closer than r_min apart; X (n, B*3)."""
    i, j, b = near
    if len(i) == 0:
        return X
    X3 = X.reshape(X.shape[0], B, 3)
    d = X3[j, b] - X3[i, b]
    r = torch.linalg.norm(d, dim=-1, keepdim=True).clamp(min=1e-9)
    gap = torch.clamp(1.0 - r_min / r, max=0.0)  # < 0 for pairs closer than r_min
    f = gap * d
    g = torch.zeros_like(X3).index_put_((j, b), f, accumulate=True).index_put_((i, b), -f, accumulate=True)
    # per atom and molecule: the number of its pairs being pushed (Jacobi average, as for the bonds)
    active = (gap[:, 0] < 0).to(X.dtype)
    cnt = torch.zeros(X3.shape[:2], dtype=X.dtype, device=X.device)
    cnt = cnt.index_put_((j, b), active, accumulate=True).index_put_((i, b), active, accumulate=True).clamp(min=1.0)
    return (X3 - 0.5 * stiffness * g / cnt[..., None]).reshape(X.shape)


def random_rotations_t(n: int, generator: torch.Generator | None = None, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """(n, 3, 3) uniformly distributed rotations (normalised Gaussian quaternions)."""
    q = torch.randn(n, 4, generator=generator, dtype=dtype, device=device)
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True).clamp(min=1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(n, 3, 3)


def kabsch_t(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Proper rotations R (B, 3, 3) with centred ``p @ R`` best fitting centred ``q`` (B, k, 3)."""
    h = p.transpose(-1, -2) @ q
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(u @ vt))
    d = torch.where(d == 0, torch.ones_like(d), d)
    u = torch.cat([u[..., :2], u[..., 2:] * d[:, None, None]], -1)
    return u @ vt


def _axis_rotation(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (B, 3, 3) acting as ``v @ R`` by ``angle`` about unit ``axis`` (B, 3)."""
    k = axis / torch.linalg.norm(axis, dim=-1, keepdim=True).clamp(min=1e-12)
    c, s = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    K = torch.zeros(len(k), 3, 3, dtype=k.dtype, device=k.device)
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K[:, 1, 0], K[:, 2, 0], K[:, 2, 1] = k[:, 2], -k[:, 1], k[:, 0]
    I = torch.eye(3, dtype=k.dtype, device=k.device).expand_as(K)
    R = I + s * K + (1 - c) * (K @ K)  # column-vector convention: R v
    return R.transpose(-1, -2)


def fit_to_beads(x: torch.Tensor, matrix, beads: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rigidly superpose molecules so their mapped centres fit the beads.

    x: (B, n, 3) nm in any frame; matrix M (nb, n); beads (B, nb, 3) nm (whole molecules).
    One bead: uniformly random orientation about the bead.  Two beads: Kabsch, then a uniformly
    random rotation about the bead axis (:func:`spin_about_beads`).  Returns (B, n, 3).
    """
    M = torch.as_tensor(matrix, dtype=x.dtype, device=x.device)
    beads = beads.to(x.dtype)
    nb = beads.shape[1]
    y = torch.einsum("ba,nak->nbk", M, x)
    yc = y.mean(1, keepdim=True)
    bc = beads.mean(1, keepdim=True)
    xc = x - yc
    if nb == 1:
        return spin_about_beads(xc + bc, beads, generator)
    out = xc @ kabsch_t(y - yc, beads - bc) + bc
    return spin_about_beads(out, beads, generator) if nb == 2 else out


def spin_about_beads(x: torch.Tensor, beads: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Turn molecules by the rotation their beads leave free, drawn uniformly.

    x: (B, n, 3) nm, whole molecules already on their beads (B, nb, 3) nm.  One bead: a
    uniformly random rotation about the bead; two beads: a uniformly random angle about the
    bead axis.  Both keep every bead centre ``M @ x`` where it is (exactly, up to round-off),
    and bond geometry unchanged.  Three or more (non-collinear) beads fix the orientation:
    x is returned unchanged.
    """
    beads = beads.to(x.dtype)
    B, nb = beads.shape[0], beads.shape[1]
    if nb == 1:
        c = beads[:, :1]
        return (x - c) @ random_rotations_t(B, generator, x.dtype, x.device) + c
    if nb == 2:
        ang = torch.rand(B, generator=generator, dtype=x.dtype, device=x.device) * (2 * math.pi)
        c = beads.mean(1, keepdim=True)
        return (x - c) @ _axis_rotation(beads[:, 1] - beads[:, 0], ang) + c
    return x


# ---------------------------------------------------------------------- polar hydrogens
def find_rotors(n_atoms: int, bonds: np.ndarray, elements) -> list[dict]:
    """Rotatable polar hydrogens: for every O/N/S atom ``a`` with hydrogens and exactly one
    heavy neighbour ``c``, the hydrogens on ``a`` rotate about the c-a bond.  Returns dicts
    ``{"c", "a", "hs": [...], "r"}`` with ``r`` a heavy neighbour of ``c`` (torsion r-c-a-h)."""
    adj = [set() for _ in range(n_atoms)]
    for i, j in np.asarray(bonds, int).reshape(-1, 2):
        adj[i].add(int(j))
        adj[j].add(int(i))
    out = []
    for a in range(n_atoms):
        if elements[a] not in ("O", "N", "S"):
            continue
        hs = sorted(j for j in adj[a] if elements[j] == "H")
        heavy = sorted(j for j in adj[a] if elements[j] != "H")
        if not hs or len(heavy) != 1:
            continue
        c = heavy[0]
        rs = sorted(j for j in adj[c] if j != a and elements[j] != "H") or sorted(j for j in adj[c] if j != a)
        if not rs:
            continue
        out.append({"c": c, "a": a, "hs": hs, "r": rs[0]})
    return out


def orient_rotors(x: np.ndarray, box: np.ndarray, rotor_atoms: list[tuple], molecule: np.ndarray,
                  acceptor: np.ndarray, eps: float, rng: np.random.Generator, grid: int = 9,
                  hb_dist: float = 0.25, hb_angle_deg: float = 120.0, clash: float = 0.16,
                  priors: list | None = None, keep: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Environment-aware orientation of rotatable polar hydrogens (importance resampling).

    For every rotor instance the hydrogens are tried at ``grid`` rotations about the c-a axis
    and one rotation is drawn with weight ``prior(phi) * exp(eps * n_hbond - 20 * n_clash)``:
    ``prior`` is the training histogram of the torsion (36 bins over [-pi, pi)), ``n_hbond``
    counts acceptors (``acceptor`` atoms of other molecules) within ``hb_dist`` nm of the H at
    a D-H...A angle above ``hb_angle_deg``, ``n_clash`` counts atoms of other molecules within
    ``clash`` nm.  With ``eps = 0`` and no clashes this just redraws the torsion from its
    training distribution; ``eps`` (in kT per hydrogen bond) is calibrated on training frames.

    x: (N, 3) whole-system positions nm (modified copy returned); box (3,) or (3, 3) nm;
    rotor_atoms: list of (R (m,), C (m,), A (m,), H (m, nh)) global atom indices, one entry
    per rotor type; priors: matching list of (36,) histograms or None; molecule: (N,) ids;
    acceptor: (N,) bool; keep: (N,) bool or None -- rotor instances whose first hydrogen is
    marked keep their orientation (hydrogen bonds already made by :mod:`.hbond`).  Returns
    (new x, number of hydrogens moved).
    """
    from ..geometry import minimum_image
    from ..neighbours import PeriodicTree

    x = np.array(x, np.float64, copy=True)
    box = np.asarray(box, np.float64)
    if not rotor_atoms:
        return x, 0
    acc_idx = np.flatnonzero(acceptor)
    acc_tree = PeriodicTree(x[acc_idx], box, hb_dist) if len(acc_idx) else None
    all_tree = PeriodicTree(x, box, clash)
    th = np.arange(grid) * (2 * np.pi / grid)
    cos_lim = np.cos(np.radians(hb_angle_deg))
    moved = 0
    for ri, (R, C, A, H) in enumerate(rotor_atoms):
        m, nh = H.shape
        if m == 0:
            continue
        u = x[A] - x[C]
        u /= np.linalg.norm(u, axis=-1, keepdims=True)
        v = x[H] - x[A][:, None]  # (m, nh, 3)
        uu = u[:, None, None, :]
        vv = v[:, None, :, :]
        ct, st = np.cos(th)[None, :, None, None], np.sin(th)[None, :, None, None]
        rot = vv * ct + np.cross(np.broadcast_to(uu, vv.shape), vv) * st + uu * (vv * uu).sum(-1, keepdims=True) * (1 - ct)
        cand = x[A][:, None, None, :] + rot  # (m, G, nh, 3)
        pts = cand.reshape(-1, 3)
        own = np.repeat(molecule[A], grid * nh)
        score = np.zeros(m * grid * nh)
        if acc_tree is not None:
            dist, nb = acc_tree.query(pts, k=6, distance_upper_bound=hb_dist)
            ok = nb < len(acc_idx)
            nbs = np.where(ok, nb, 0)
            gl = acc_idx[nbs]
            ok &= molecule[gl] != own[:, None]
            donor = np.repeat(x[A], grid * nh, axis=0)
            dv = donor - cand.reshape(-1, 3)
            av = x[gl] - cand.reshape(-1, 3)[:, None]
            dv = minimum_image(dv, box)
            av = minimum_image(av, box)
            cosang = (av * dv[:, None]).sum(-1) / (np.linalg.norm(av, axis=-1) * np.linalg.norm(dv, axis=-1)[:, None] + 1e-12)
            score += eps * (ok & (cosang < cos_lim)).sum(-1)
        dist, nb = all_tree.query(pts, k=8, distance_upper_bound=clash)
        ok = nb < len(x)
        ok &= molecule[np.where(ok, nb, 0)] != own[:, None]
        score -= 20.0 * ok.sum(-1)
        logw = score.reshape(m, grid, nh).sum(-1)
        if priors is not None and priors[ri] is not None:
            phi = dihedral(x[R][:, None], x[C][:, None], x[A][:, None], cand[:, :, 0])
            hist = np.asarray(priors[ri], np.float64)
            bins = np.clip(((phi + np.pi) / (2 * np.pi) * len(hist)).astype(int), 0, len(hist) - 1)
            logw = logw + np.log(hist[bins] / hist.sum())
        if keep is not None:
            logw[keep[H[:, 0]], 1:] = -np.inf  # grid point 0 is the current orientation
        g = np.argmax(logw + rng.gumbel(size=logw.shape), axis=1)  # a draw proportional to exp(logw)
        new = cand[np.arange(m), g]
        moved += int((g != 0).sum()) * nh
        x[H] = new
    return x, moved


def count_hbonds(x: np.ndarray, box: np.ndarray, hydrogens: np.ndarray, donors: np.ndarray, molecule: np.ndarray,
                 acceptor: np.ndarray, hb_dist: float = 0.25, hb_angle_deg: float = 120.0) -> int:
    """Number of hydrogen bonds from ``hydrogens`` (k,) (bonded to ``donors`` (k,)) to acceptor
    atoms of other molecules: H...A < ``hb_dist`` nm and D-H...A angle > ``hb_angle_deg``."""
    return int(hbond_counts(x, box, hydrogens, donors, molecule, acceptor, hb_dist, hb_angle_deg).sum())


def hbond_counts(x: np.ndarray, box: np.ndarray, hydrogens: np.ndarray, donors: np.ndarray, molecule: np.ndarray,
                 acceptor: np.ndarray, hb_dist: float = 0.25, hb_angle_deg: float = 120.0) -> np.ndarray:
    """Per hydrogen of ``hydrogens`` (k,) the number of hydrogen bonds (as :func:`count_hbonds`)."""
    from ..geometry import minimum_image
    from ..neighbours import PeriodicTree

    box = np.asarray(box, np.float64)
    acc_idx = np.flatnonzero(acceptor)
    if not len(acc_idx) or not len(hydrogens):
        return np.zeros(len(hydrogens), np.int64)
    tree = PeriodicTree(x[acc_idx], box, hb_dist)
    _, nb = tree.query(x[hydrogens], k=6, distance_upper_bound=hb_dist)
    ok = nb < len(acc_idx)
    gl = acc_idx[np.where(ok, nb, 0)]
    ok &= molecule[gl] != molecule[hydrogens][:, None]
    dv = x[donors] - x[hydrogens]
    av = x[gl] - x[hydrogens][:, None]
    dv = minimum_image(dv, box)
    av = minimum_image(av, box)
    cosang = (av * dv[:, None]).sum(-1) / (np.linalg.norm(av, axis=-1) * np.linalg.norm(dv, axis=-1)[:, None] + 1e-12)
    return (ok & (cosang < np.cos(np.radians(hb_angle_deg)))).sum(-1)

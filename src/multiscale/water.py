"""Forward (AA -> CG) water grouping for Martini 3.

One Martini 3 ``W`` bead stands for four water molecules.  Coarse-graining a water box therefore
needs a partition of the water molecules into spatially compact groups of four; the bead is put
at each group's centre of mass, and going back each bead becomes four molecules again, so atom
counts are conserved through a CG <-> AA cycle.

Public API
----------
:func:`group_waters`  partition water oxygens into compact groups (PBC, minimum image).
:func:`group_radius`  per-group compactness (distance of members to the group centre).

Lengths are nm.  Boxes: a ``(3,)`` vector of orthorhombic edge lengths, or ``(3, 3)`` GROMACS
box vectors (rows, lower triangular), triclinic included (rhombic dodecahedron, truncated
octahedron): neighbours then come from :class:`multiscale.neighbours.PeriodicTree` (ghost
images) and distances from :func:`multiscale.geometry.minimum_image` (exact).  Orthorhombic
boxes keep ``cKDTree(boxsize=...)`` (results unchanged).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from multiscale.errors import MultiscaleError
from multiscale.geometry import (
    box_volume,
    check_box,
    is_orthorhombic,
    minimum_image,
    perpendicular_widths,
    wrap,
)
from multiscale.neighbours import PeriodicTree

__all__ = ["group_radius", "group_waters", "orthorhombic_box", "water_box"]

#: Number of refinement (member-swap) sweeps run after the greedy stage.
_REFINE_SWEEPS = 20
#: Number of neighbouring groups each group tries swaps with during refinement.
_REFINE_NEIGHBOURS = 6


def orthorhombic_box(box, name: str = "box") -> np.ndarray:
    """Return the box edge lengths ``(3,)`` float64 nm.

    ``box`` is a ``(3,)`` vector of edge lengths or a ``(3, 3)`` box matrix (rows = box vectors,
    GROMACS convention).  A matrix with non-zero off-diagonal elements (a triclinic box) raises
    :class:`MultiscaleError`, as do non-positive or non-finite lengths.
    """
    b = np.asarray(box, dtype=np.float64)
    if b.shape == (3, 3):
        off = b - np.diag(np.diag(b))
        if np.any(np.abs(off) > 1e-6 * max(1.0, float(np.abs(b).max()))):
            raise MultiscaleError(
                f"{name} is triclinic (off-diagonal box vectors {off[np.nonzero(off)][:3]} nm): "
                "water grouping/placement needs an orthorhombic box; convert the system to a "
                "rectangular box first (e.g. gmx trjconv -pbc mol -ur rect)"
            )
        b = np.diag(b).copy()
    if b.shape != (3,):
        raise MultiscaleError(
            f"{name} has shape {b.shape}: pass the 3 orthorhombic edge lengths in nm "
            "(shape (3,)) or a (3, 3) box matrix"
        )
    if not np.all(np.isfinite(b)) or np.any(b <= 0):
        raise MultiscaleError(f"{name} edge lengths {b.tolist()} nm must be finite and > 0")
    return b


def water_box(box, name: str = "box") -> np.ndarray:
    """The box for water grouping and placement: ``(3,)`` float64 edge lengths when it is
    orthorhombic (a ``(3,)`` vector, or a ``(3, 3)`` matrix with zero off-diagonal elements),
    else the checked ``(3, 3)`` GROMACS box vectors (rows, lower triangular:
    :func:`multiscale.geometry.check_box`).  Raises :class:`MultiscaleError` for a bad box."""
    b = np.asarray(box, dtype=np.float64)
    if b.shape == (3, 3) and not is_orthorhombic(b):
        return check_box(b, name)
    return orthorhombic_box(b, name)


def _check_inputs(oxygen, box, group_size):
    ox = np.asarray(oxygen, dtype=np.float64)
    if ox.ndim != 2 or ox.shape[1] != 3:
        raise MultiscaleError(
            f"water oxygen positions have shape {ox.shape}: pass an (n_waters, 3) array in nm"
        )
    if not np.all(np.isfinite(ox)):
        raise MultiscaleError("water oxygen positions contain NaN/inf: check the input frame")
    if int(group_size) != group_size or group_size < 1:
        raise MultiscaleError(f"group_size={group_size} must be a positive integer (Martini: 4)")
    return ox, water_box(box), int(group_size)


def _knn(p: np.ndarray, box: np.ndarray, k: int) -> np.ndarray:
    """Indices (m, k) of the k nearest points of each point of ``p`` (m, 3) (itself first),
    minimum image.  Orthorhombic: cKDTree with ``boxsize``; triclinic: a
    :class:`PeriodicTree` whose cut-off holds ~15 k points at the mean density, and an exact
    brute-force search (minimum image) for the rows with fewer than k points in reach."""
    m = len(p)
    if box.ndim == 1:
        _, nn = cKDTree(p, boxsize=box).query(p, k=k, workers=-1)
        return np.asarray(nn).reshape(m, k)
    r = min(0.45 * float(perpendicular_widths(box).min()),
            max(1.0, 2.5 * (k * float(box_volume(box)) / m) ** (1.0 / 3.0)))
    _, nn = PeriodicTree(p, box, r).query(p, k=k, distance_upper_bound=r)
    nn = np.asarray(nn).reshape(m, k)
    miss = np.flatnonzero(nn[:, -1] >= m)
    step = max(1, (1 << 22) // max(m, 1))
    for i in range(0, len(miss), step):
        rows = miss[i:i + step]
        d = minimum_image(p[None, :, :] - p[rows, None, :], box)
        d2 = np.einsum("rmk,rmk->rm", d, d)
        nn[rows] = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return nn


def _group_cost(pos: np.ndarray, members: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Sum of squared member distances (nm^2) to the PBC centroid; members (g, s)."""
    x = pos[members]  # (g, s, 3)
    rel = minimum_image(x - x[:, :1], box)
    cen = rel.mean(axis=1, keepdims=True)
    return np.einsum("gsk,gsk->g", rel - cen, rel - cen)


def _greedy(pos: np.ndarray, box: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy parallel matching: rounds of 'each water proposes itself + its s-1 nearest
    ungrouped waters'; a proposal is accepted if it is the most compact proposal containing each
    of its members (unique ranks make accepted proposals disjoint; the globally most compact one
    is always accepted, so every round makes progress)."""
    n = len(pos)
    groups = []
    remaining = np.arange(n)
    tiebreak_all = rng.permutation(n)
    while len(remaining):
        m = len(remaining)
        if m == s:
            groups.append(remaining[None, :])
            break
        p = pos[remaining]
        nn = _knn(p, box, s)
        cost = _group_cost(p, nn, box)
        order = np.lexsort((tiebreak_all[remaining], cost))
        rank = np.empty(m, dtype=np.int64)
        rank[order] = np.arange(m)
        best = np.full(m, m, dtype=np.int64)
        np.minimum.at(best, nn.ravel(), np.repeat(rank, s))
        acc = np.all(best[nn] == rank[:, None], axis=1)
        chosen = nn[acc]
        groups.append(remaining[chosen])
        keep = np.ones(m, dtype=bool)
        keep[chosen.ravel()] = False
        remaining = remaining[keep]
    return np.concatenate(groups, axis=0)


def _swap_proposals(x, cen, u, nb, act, box, s):
    """Best member swap for each active group ``act`` with one of its neighbours ``nb[act]``.

    Returns (delta, j, p, q): summed cost change (nm^2) and neighbour slot / member indices."""
    kn = nb.shape[1]
    na = nb[act]  # (A, kn)
    ua = u[act]  # (A, s, 3), members of a relative to a's centroid (sum = 0)
    ub = u[na]  # (A, kn, s, 3), members of b relative to b's centroid
    # v: members of b relative to a's centroid; w: members of a relative to b's centroid
    v = minimum_image(x[na] - cen[act][:, None, None], box)
    w = minimum_image(x[act][:, None] - cen[na][:, :, None], box)
    # Swapping member p of a with member q of b changes a's cost (own centroid frame) by
    # -|u_p|^2 + |v_q|^2 - |v_q - u_p|^2 / s, written with dot products below; same for b.
    c1, c2, c3 = 1.0 - 1.0 / s, 1.0 + 1.0 / s, 2.0 / s
    up2 = np.einsum("apk,apk->ap", ua, ua)[:, None, :, None]
    vq2 = np.einsum("ajqk,ajqk->ajq", v, v)[:, :, None, :]
    uv = np.matmul(ua[:, None], v.transpose(0, 1, 3, 2))  # (A, kn, p, q)
    uq2 = np.einsum("ajqk,ajqk->ajq", ub, ub)[:, :, None, :]
    wp2 = np.einsum("ajpk,ajpk->ajp", w, w)[:, :, :, None]
    wu = np.matmul(w, ub.transpose(0, 1, 3, 2))  # (A, kn, p, q)
    delta = (c1 * (vq2 + wp2) - c2 * (up2 + uq2) + c3 * (uv + wu)).reshape(len(act), -1)
    bi = np.argmin(delta, axis=1)
    bd = delta[np.arange(len(act)), bi]
    j, p, q = np.unravel_index(bi, (kn, s, s))
    return bd, j, p, q


def _refine(pos: np.ndarray, groups: np.ndarray, box: np.ndarray, sweeps: int, kn: int):
    """Pairwise member swaps between neighbouring groups that lower the summed within-group
    squared distance; conflict-free swaps are applied in parallel.  After the first sweep only
    groups near a change (or with a swap that lost a conflict) are re-examined.  Never
    increases the cost."""
    g, s = groups.shape
    if g < 2:
        return groups
    groups = groups.copy()
    kn = min(kn, g - 1)
    active = np.arange(g)
    chunk = 32768
    for _ in range(sweeps):
        if len(active) == 0:
            break
        x = pos[groups]  # (g, s, 3)
        rel = minimum_image(x - x[:, :1], box)
        cen = wrap(x[:, 0] + rel.mean(axis=1), box)  # (g, 3)
        u = minimum_image(x - cen[:, None], box)
        nb = _knn(cen, box, kn + 1)[:, 1:]  # (g, kn) nearest other groups
        parts = [_swap_proposals(x, cen, u, nb, active[i:i + chunk], box, s)
                 for i in range(0, len(active), chunk)]
        bd, j, p, q = (np.concatenate(t) for t in zip(*parts))
        improving = bd < -1e-12
        if not np.any(improving):
            break
        a_idx = active[improving]
        bd, j, p, q = bd[improving], j[improving], p[improving], q[improving]
        b_idx = nb[a_idx, j]
        # conflict resolution: a swap touches groups a and b; apply it where it is the best
        # (most negative, ties by index) proposal touching both groups -> disjoint swaps.
        order = np.lexsort((a_idx, bd))
        rank = np.empty(len(a_idx), dtype=np.int64)
        rank[order] = np.arange(len(a_idx))
        best = np.full(g, len(a_idx), dtype=np.int64)
        np.minimum.at(best, a_idx, rank)
        np.minimum.at(best, b_idx, rank)
        ok = (best[a_idx] == rank) & (best[b_idx] == rank)
        ta = groups[a_idx[ok], p[ok]].copy()
        groups[a_idx[ok], p[ok]] = groups[b_idx[ok], q[ok]]
        groups[b_idx[ok], q[ok]] = ta
        changed = np.concatenate([a_idx[ok], b_idx[ok]])
        nxt = np.zeros(g, dtype=bool)
        nxt[changed] = True
        nxt[nb[changed].ravel()] = True
        nxt[a_idx[~ok]] = True
        active = np.nonzero(nxt)[0]
    return groups


def group_waters(oxygen, box, group_size: int = 4, seed: int = 0) -> np.ndarray:
    """Partition water molecules into spatially compact groups (Martini 3: 4 waters -> 1 W).

    Parameters
    ----------
    oxygen : (n_w, 3) float array, nm
        Water oxygen positions (any image; wrapped internally).
    box : (3,) edge lengths in nm, or (3, 3) GROMACS box vectors (triclinic allowed).
    group_size : int
        Waters per group (4 for Martini 3 ``W``).
    seed : int
        Seeds the tie-breaking order; the result is deterministic for a given seed.

    Returns
    -------
    (n_w // group_size, group_size) int64 array of indices into ``oxygen``; every water appears
    in exactly one group; rows are sorted ascending and ordered by their first member.

    Algorithm and guarantees
    ------------------------
    1. Greedy parallel matching (cKDTree with ``boxsize``, i.e. minimum image): in each round
       every ungrouped water proposes itself plus its ``group_size - 1`` nearest ungrouped
       waters; a proposal is accepted when it has the smallest within-group squared spread of
       all proposals containing any of its members.  Accepted proposals are disjoint and the
       most compact proposal is always accepted, so the loop terminates with a full partition.
    2. Refinement: up to 20 sweeps of member swaps between each group and its 6 nearest
       groups (later sweeps revisit only groups near a change), applying in parallel the
       conflict-free swaps that lower the summed squared member-to-centroid distance.
       Refinement never increases that sum.
    Guaranteed: an exact partition, PBC-correct distances, determinism per seed, O(n log n)
    work per round with all heavy steps vectorised (~100k waters in ~2-3 s on 2 cores).  Not
    guaranteed: a globally optimal partition; a few groups formed late in step 1 may be larger
    than typical, and step 2 shrinks most of them.  Measured on a 108,608-water liquid box:
    per-group max oxygen-to-centroid distance mean 0.265 nm, 99th percentile 0.35 nm,
    max ~0.4 nm (random grouping: mean 7.4 nm); see :func:`group_radius`.  Triclinic cells
    (97k waters, rhombic dodecahedron / truncated octahedron): mean 0.257 nm, max 0.48 /
    0.44 nm, ~2x the CPU time of a cube (ghost-image neighbour trees, exact triclinic
    minimum images; ``benchmarks/bench_water.py --box``).

    Raises
    ------
    MultiscaleError
        if ``n_w`` is not a multiple of ``group_size``, shapes are wrong, or the box is not a
        valid GROMACS box.
    """
    ox, b, s = _check_inputs(oxygen, box, group_size)
    n = len(ox)
    if n % s:
        k = n % s
        raise MultiscaleError(
            f"{n} waters is not a multiple of {s}: remove {k} water molecule{'s' if k > 1 else ''} "
            f"(or add {s - k}) so every Martini W bead maps to exactly {s} waters"
        )
    if n == 0:
        return np.zeros((0, s), dtype=np.int64)
    if np.any((b if b.ndim == 1 else np.diag(b)) < 1e-3):
        raise MultiscaleError(f"box {b.tolist()} nm is degenerate: pass real edge lengths in nm")
    pos = wrap(ox, b)
    rng = np.random.default_rng(seed)
    if s == 1:
        return np.arange(n, dtype=np.int64)[:, None]
    groups = _greedy(pos, b, s, rng)
    groups = _refine(pos, groups, b, _REFINE_SWEEPS, _REFINE_NEIGHBOURS)
    groups = np.sort(groups, axis=1)
    groups = groups[np.argsort(groups[:, 0], kind="stable")]
    return groups.astype(np.int64, copy=False)


def group_radius(oxygen, groups, box, reduce: str = "max") -> np.ndarray:
    """Compactness of each group: distance (nm) of members to the group's PBC centroid.

    Parameters
    ----------
    oxygen : (n_w, 3) nm; groups : (n_groups, group_size) int indices; box : as for
    :func:`group_waters`; reduce : ``"max"`` (largest member distance per group) or
    ``"mean"`` (mean member distance per group).

    Returns
    -------
    (n_groups,) float64 nm.
    """
    ox = np.asarray(oxygen, dtype=np.float64)
    b = water_box(box)
    gr = np.asarray(groups, dtype=np.int64)
    x = ox[gr]
    rel = minimum_image(x - x[:, :1], b)
    d = np.linalg.norm(rel - rel.mean(axis=1, keepdims=True), axis=-1)
    if reduce == "max":
        return d.max(axis=1)
    if reduce == "mean":
        return d.mean(axis=1)
    raise MultiscaleError(f"reduce={reduce!r} is not supported: use 'max' or 'mean'")

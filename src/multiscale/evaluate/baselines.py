"""Built-in reference methods, evaluated like any other backmapping method.

``rigid``
    Every molecule is one rigid reference conformer (the first copy of its type in the first
    reference frame, else in the reference structure), superimposed on its CG beads: Kabsch
    fit of the conformer's mapped bead centres onto the CG beads (3+ non-collinear beads);
    with 2 beads (or collinear beads) the conformer is first turned by a seeded random
    rotation and then by the smallest rotation that aligns its bead axis; with 1 bead a seeded
    random rotation about the bead.  Water: each W bead becomes 4 rigid TIP3P molecules
    (r(OH) 0.09572 nm, HOH 104.52 deg) whose centres of mass sit on a regular tetrahedron of
    edge 0.28 nm centred on the bead; tetrahedron and each molecule get seeded random
    orientations.
``random``
    Every atom is put at its home bead (the bead with the largest mapping weight; unmapped
    atoms inherit the home bead of the nearest mapped atom along bonds) plus a seeded Gaussian
    displacement (sigma 0.1 nm per axis); water: O at the bead + N(0, 0.15 nm), each H 0.09572 nm
    from O in a random direction.  The caller then runs the standard EM on it.

Both return positions (F, N, 3) nm in topology order, one frame per CG frame.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..errors import MultiscaleError
from ..geometry import apply_weights, dense_weights, kabsch_rotation, minimum_image
from .metrics import frame_box

__all__ = ["rigid_baseline", "random_baseline", "random_rotations", "TIP3P_OH", "TIP3P_HOH"]

TIP3P_OH = 0.09572
TIP3P_HOH = np.deg2rad(104.52)
WATER_CLUSTER_EDGE = 0.28
RANDOM_SIGMA = 0.10
RANDOM_WATER_SIGMA = 0.15


def random_rotations(rng: np.random.Generator, shape) -> np.ndarray:
    """Uniformly random proper rotations (*shape, 3, 3) from normalised quaternions."""
    q = rng.normal(size=tuple(shape) + (4,))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    r = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return r.reshape(tuple(shape) + (3, 3))


def _align_axis(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smallest rotations (row-vector convention: x @ R) turning unit vectors u onto v, (..., 3)."""
    c = np.sum(u * v, -1)
    ax = np.cross(u, v)
    s = np.linalg.norm(ax, axis=-1)
    # antiparallel: any perpendicular axis
    perp = np.cross(u, np.where(np.abs(u[..., :1]) < 0.9, [1.0, 0, 0], [0, 1.0, 0]))
    ax = np.where((s < 1e-9)[..., None], perp, ax)
    ax = ax / np.linalg.norm(ax, axis=-1, keepdims=True)
    ang = np.arctan2(s, c)
    k = np.zeros(ax.shape[:-1] + (3, 3))
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -ax[..., 2], ax[..., 1], -ax[..., 0]
    k[..., 1, 0], k[..., 2, 0], k[..., 2, 1] = ax[..., 2], -ax[..., 1], ax[..., 0]
    sa, ca = np.sin(ang)[..., None, None], np.cos(ang)[..., None, None]
    r_col = np.eye(3) + sa * k + (1 - ca) * (k @ k)       # column convention: R v
    return np.swapaxes(r_col, -1, -2)                      # row convention


def _block_targets(cg_pos, cg_box, m):
    """CG beads of one block (F, count, nb, 3), made whole around each molecule's first bead."""
    t = cg_pos[:, m.beads]                                 # (F, count, nb, 3)
    box = frame_box(cg_box, 2)
    return t[:, :, :1] + minimum_image(t - t[:, :, :1], box)


def _water_geometry(moltype) -> np.ndarray:
    """TIP3P coordinates in the moltype's atom order, centre of mass at the origin (3, 3)."""
    o = list(moltype.elements).index("O")
    hs = [i for i in range(3) if i != o]
    x = np.zeros((3, 3))
    half = TIP3P_HOH / 2
    x[hs[0]] = [TIP3P_OH * np.sin(half), TIP3P_OH * np.cos(half), 0]
    x[hs[1]] = [-TIP3P_OH * np.sin(half), TIP3P_OH * np.cos(half), 0]
    m = np.asarray(moltype.masses, float)
    return x - (m[:, None] * x).sum(0) / m.sum()


def _place_water(rng, m, centres, n_frames):
    """4 rigid waters per bead: (F, n_beads*per_bead, 3, 3) positions."""
    geo = _water_geometry(m.block.moltype)
    nb = m.beads.shape[0]
    k = m.per_bead
    if k == 4:
        verts = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
        verts *= WATER_CLUSTER_EDGE / (2 * np.sqrt(2))
    else:  # generic: points on a small sphere
        verts = rng.normal(size=(k, 3))
        verts *= 0.17 / np.linalg.norm(verts, axis=1, keepdims=True)
        verts -= verts.mean(0)
    rc = random_rotations(rng, (n_frames, nb))                      # cluster orientation
    rw = random_rotations(rng, (n_frames, nb, k))                   # each molecule
    com = centres[:, :, None, :] + np.einsum("vk,fbkl->fbvl", verts, rc)
    mol = com[:, :, :, None, :] + np.einsum("ak,fbvkl->fbval", geo, rw)
    return mol.reshape(n_frames, nb * k, 3, 3)


def rigid_baseline(topology, cg_blocks, cg_pos: np.ndarray, cg_box: np.ndarray, conformers: dict, seed: int = 0) -> np.ndarray:
    """Rigid-conformer placement (see module docstring).

    cg_blocks: from :func:`multiscale.evaluate.match.match_cg`; cg_pos (F, B, 3) nm, cg_box (F, 3);
    conformers: moltype name -> (n_atoms, 3) whole molecule (nm).  Returns (F, N, 3).
    """
    rng = np.random.default_rng(seed)
    nf = cg_pos.shape[0]
    out = np.zeros((nf, topology.n_atoms, 3))
    for m in cg_blocks:
        b = m.block
        mt = b.moltype
        if m.is_water:
            centres = cg_pos[:, m.beads[:, 0]]
            out[:, b.start:b.stop] = _place_water(rng, m, centres, nf).reshape(nf, -1, 3)
            continue
        if mt.name not in conformers:
            raise MultiscaleError(f"rigid baseline: no reference conformer for {mt.name}: pass --reference (a trajectory) or --reference-structure")
        conf = np.asarray(conformers[mt.name], float)
        cb = apply_weights(m.matrix, conf)                      # (nb, 3)
        cmean = cb.mean(0)
        p = conf - cmean
        pb = cb - cmean
        tgt = _block_targets(cg_pos, cg_box, m)                 # (F, count, nb, 3)
        tmean = tgt.mean(axis=2, keepdims=True)
        q = tgt - tmean
        sv = np.linalg.svd(pb, compute_uv=False) if len(pb) > 1 else np.zeros(1)
        rank = int(np.sum(sv > 1e-3 * max(sv.max(), 1e-12))) if len(pb) > 1 else 0
        if rank >= 2:
            rot = kabsch_rotation(np.broadcast_to(pb, q.shape), q)        # (F, count, 3, 3)
        else:
            rot = random_rotations(rng, q.shape[:2])
            if rank == 1:
                i = int(np.argmax(np.linalg.norm(pb - pb[0], axis=1)))
                u = np.einsum("k,fckl->fcl", pb[i] - pb[0], rot)
                v = q[:, :, i] - q[:, :, 0]
                u /= np.linalg.norm(u, axis=-1, keepdims=True)
                v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
                rot = rot @ _align_axis(u, v)
        x = np.einsum("ak,fckl->fcal", p, rot) + tmean            # (F, count, n, 3)
        out[:, b.start:b.stop] = x.reshape(nf, -1, 3)
    return out


def _home_beads(moltype, matrix: np.ndarray) -> np.ndarray:
    """Per atom, the bead with the largest weight; unmapped atoms take the nearest mapped atom's."""
    n = moltype.n_atoms
    home = np.where(matrix.max(axis=0) > 0, matrix.argmax(axis=0), -1)
    adj = [[] for _ in range(n)]
    for a, c in moltype.bonds:
        adj[a].append(c)
        adj[c].append(a)
    queue = deque(np.flatnonzero(home >= 0).tolist())
    while queue:
        a = queue.popleft()
        for c in adj[a]:
            if home[c] < 0:
                home[c] = home[a]
                queue.append(c)
    home[home < 0] = 0
    return home


def random_baseline(topology, cg_blocks, cg_pos: np.ndarray, cg_box: np.ndarray, seed: int = 0) -> np.ndarray:
    """Atoms scattered around their home beads (see module docstring); (F, N, 3) nm."""
    rng = np.random.default_rng(seed)
    nf = cg_pos.shape[0]
    out = np.zeros((nf, topology.n_atoms, 3))
    for m in cg_blocks:
        b = m.block
        mt = b.moltype
        if m.is_water:
            centres = np.repeat(cg_pos[:, m.beads[:, 0]], m.per_bead, axis=1)     # (F, n_waters, 3)
            o_idx = list(mt.elements).index("O")
            o = centres + rng.normal(scale=RANDOM_WATER_SIGMA, size=centres.shape)
            x = np.repeat(o[:, :, None, :], 3, axis=2)
            d = rng.normal(size=x.shape)
            d /= np.linalg.norm(d, axis=-1, keepdims=True)
            h = np.arange(3) != o_idx
            x[:, :, h] += TIP3P_OH * d[:, :, h]
            out[:, b.start:b.stop] = x.reshape(nf, -1, 3)
            continue
        home = _home_beads(mt, dense_weights(m.matrix))
        tgt = _block_targets(cg_pos, cg_box, m)                   # (F, count, nb, 3)
        x = tgt[:, :, home] + rng.normal(scale=RANDOM_SIGMA, size=tgt.shape[:2] + (mt.n_atoms, 3))
        out[:, b.start:b.stop] = x.reshape(nf, -1, 3)
    return out

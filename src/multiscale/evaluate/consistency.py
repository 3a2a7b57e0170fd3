"""CG consistency of a candidate: its re-mapped beads against the CG input (minimum image in the
frame's cell, orthorhombic or triclinic); water by the tool's own grouping or an optimal assignment."""

from __future__ import annotations

import math

import numpy as np

from ..geometry import apply_weights, minimum_image
from ..neighbours import PeriodicTree
from . import metrics as M

__all__ = ["WATER_GROUPINGS", "cg_consistency"]


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _water_deviation(xw: np.ndarray, masses: np.ndarray, beads: np.ndarray, box: np.ndarray, per_bead: int) -> np.ndarray:
    """Deviation (F, n_beads) of each W bead from the centre of mass of the ``per_bead`` waters
    assigned to it; the assignment minimises the summed squared water-bead distances with
    exactly ``per_bead`` waters per bead (sparse bipartite matching over the nearest beads).

    xw: (F, n_waters, 3, 3) whole waters; beads: (F, n_beads, 3); box (F, 3) or (F, 3, 3).
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    from ..geometry import is_orthorhombic, perpendicular_widths

    com = np.einsum("fwak,a->fwk", xw, masses / masses.sum())
    nf, nw = com.shape[:2]
    nb = beads.shape[1]
    out = np.full((nf, nb), np.nan)
    for f in range(nf):
        ok = np.all(np.isfinite(com[f]), axis=1)
        if not ok.all():
            continue
        b = box[f]
        # triclinic: the ghost layer bounds the search radius (ample: beads are ~0.5 nm apart)
        reach = np.inf if is_orthorhombic(b) else 0.49 * float(np.min(perpendicular_widths(b)))
        tree = PeriodicTree(beads[f], b, 0.0 if np.isinf(reach) else reach)
        col = None
        for k in (8, 32, nb):
            k = min(k, nb)
            _, nn = tree.query(com[f], k=k, distance_upper_bound=reach)
            nn = np.asarray(nn).reshape(nw, k)
            found = nn < nb
            nn = np.where(found, nn, 0)
            d2 = np.sum(minimum_image(com[f][:, None] - beads[f][nn], b) ** 2, -1) + 1e-9
            rows = np.repeat(np.arange(nw), k * per_bead)
            cols = (nn[:, :, None] * per_bead + np.arange(per_bead)).ravel()
            w = np.repeat(d2.ravel(), per_bead)
            keep = np.repeat(found.ravel(), per_bead)
            try:
                _, col = min_weight_full_bipartite_matching(csr_matrix((w[keep], (rows[keep], cols[keep])),
                                                                       shape=(nw, nb * per_bead)))
                break
            except ValueError:
                if k == nb:
                    break
        if col is None:
            continue
        bead_of = col // per_bead
        dev = minimum_image(com[f] - beads[f][bead_of], b)
        s = np.zeros((nb, 3))
        np.add.at(s, bead_of, dev)
        out[f] = np.linalg.norm(s / per_bead, axis=-1)
    return out


#: How water is scored against its W beads (report key ``cg_water_grouping``).
WATER_GROUPINGS = {
    "order": "as written: waters k*n..k*n+n-1 (topology order) form the k-th W bead of the CG input "
             "(the judged tool's own grouping; multiscale backmap and the baselines write water this way)",
    "assignment": "optimal assignment: min-cost matching of waters to W beads, n per bead "
                  "(squared COM-bead distance); the tool's own grouping is unknown",
}


def _water_deviation_order(xw: np.ndarray, masses: np.ndarray, beads: np.ndarray, box: np.ndarray, per_bead: int) -> np.ndarray:
    """Deviation (F, n_beads) of each W bead from the centre of mass of the waters written for it:
    waters ``k*per_bead .. k*per_bead+per_bead-1`` belong to bead k.  xw (F, n_waters, 3, 3) whole
    waters; beads (F, n_beads, 3); box (F, 3) or (F, 3, 3)."""
    com = np.einsum("fwak,a->fwk", xw, masses / masses.sum())
    g = com.reshape(com.shape[0], -1, per_bead, 3)
    g = g[:, :, :1] + minimum_image(g - g[:, :, :1], M.frame_box(box, 2))
    return np.linalg.norm(minimum_image(g.mean(axis=2) - beads, M.frame_box(box, 1)), axis=-1)


def cg_consistency(system, cg_blocks, x, cg_pos, cg_box, water_grouping: str = "assignment"):
    """Per-bead deviations of the re-mapped candidate from the CG input (see docs); water by
    ``water_grouping`` (a key of :data:`WATER_GROUPINGS`)."""
    mol_dev, wat_dev = [], []
    per_block = []
    for m in cg_blocks:
        b = m.block
        v = system.block_view(x, b)                          # (F, count, n, 3) whole
        tgt = cg_pos[:, m.beads]                             # (F, count, nb, 3)
        if m.is_water:
            dev = _water_deviation_order if water_grouping == "order" else _water_deviation
            d = dev(v, np.asarray(b.moltype.masses, float), tgt[:, :, 0], cg_box, m.per_bead)
            wat_dev.append(d.ravel())
        else:
            beads = apply_weights(m.matrix, v)
            d = np.linalg.norm(minimum_image(beads - tgt, M.frame_box(cg_box, 2)), axis=-1)
            mol_dev.append(d.ravel())
        per_block.append({"moltype": b.moltype.name, "rmsd_nm": M.rmsd(d), "max_nm": float(np.nanmax(d)) if np.isfinite(d).any() else None})
    allv = np.concatenate(mol_dev + wat_dev) if (mol_dev or wat_dev) else np.zeros(0)
    return {
        "cg_rmsd_nm": _num(M.rmsd(allv)),
        "cg_rmsd_molecules_nm": _num(M.rmsd(np.concatenate(mol_dev))) if mol_dev else None,
        "cg_rmsd_water_nm": _num(M.rmsd(np.concatenate(wat_dev))) if wat_dev else None,
        "cg_water_grouping": water_grouping if wat_dev else None,
        "cg_max_deviation_nm": _num(float(np.nanmax(allv))) if np.isfinite(allv).any() else None,
        "per_moltype": per_block,
    }

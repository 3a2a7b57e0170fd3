"""Structural observables of an AA system, vectorised over molecules and pairs.

All lengths nm, angles degrees only in the H-bond criterion's parameters, masses g/mol,
densities kg/m^3.  Periodic distances use the minimum image for any GROMACS box (orthorhombic
or triclinic) via :mod:`multiscale.geometry` and :mod:`multiscale.neighbours`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import box_matrix, box_volume, minimum_image, perpendicular_widths, wrap
from ..neighbours import PeriodicTree

__all__ = ["AMU_KG_M3", "density_kg_m3", "max_rdf_radius", "molecule_coms", "rdf_counts", "rdf_from_counts",
           "HBondSites", "hbond_sites", "count_hbonds", "HB_DISTANCE_NM", "HB_ANGLE_DEG", "solute_blocks",
           "water_blocks"]

#: 1 g/mol per nm^3 in kg/m^3 (1.66053906660e-27 kg / 1e-27 m^3).
AMU_KG_M3 = 1.66053906660
HB_DISTANCE_NM = 0.25
HB_ANGLE_DEG = 120.0
POLAR = ("N", "O")


def density_kg_m3(total_mass_g_mol: float, boxes) -> np.ndarray:
    """Mass density (kg/m^3) per box: total mass / cell volume."""
    return AMU_KG_M3 * float(total_mass_g_mol) / box_volume(boxes)


def max_rdf_radius(boxes, wanted: float) -> float:
    """The largest radius (nm) <= ``wanted`` below half the smallest perpendicular width of every
    box (the minimum image is exact below it)."""
    b = box_matrix(boxes).reshape(-1, 3, 3)
    half = min(0.5 * perpendicular_widths(m).min() for m in b)
    return float(min(wanted, 0.98 * half))


def water_blocks(top) -> list:
    """Molecule blocks of three-site water."""
    return [b for b in top.blocks if b.moltype.is_water]


def solute_blocks(top) -> list:
    """Molecule blocks of solutes: every molecule type that is not water and has more than one atom
    (single-atom ions are left out)."""
    return [b for b in top.blocks if not b.moltype.is_water and b.moltype.n_atoms > 1]


def molecule_coms(x: np.ndarray, box, blocks) -> np.ndarray:
    """Centres of mass (M, 3) nm of every molecule of ``blocks`` in one frame x (N, 3), each
    molecule made whole around its first atom (minimum image); wrapped into the cell."""
    out = []
    for b in blocks:
        mt = b.moltype
        p = np.asarray(x[b.start:b.stop], np.float64).reshape(b.count, mt.n_atoms, 3)
        d = minimum_image(p - p[:, :1], box)
        m = np.asarray(mt.masses, np.float64)
        out.append(p[:, 0] + np.einsum("j,ijk->ik", m, d) / m.sum())
    if not out:
        return np.zeros((0, 3))
    return wrap(np.concatenate(out), box)


def rdf_counts(y: np.ndarray, box, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair-distance histogram of the points y (n, 3) in one frame and the ideal-gas counts of
    the same bins (n(n-1)/2 pairs spread uniformly over the cell volume)."""
    n = len(y)
    rmax = float(edges[-1])
    ideal = n * (n - 1) / 2.0 / float(box_volume(box)) * (4.0 / 3.0) * np.pi * np.diff(edges**3)
    if n < 2:
        return np.zeros(len(edges) - 1), ideal
    pairs = PeriodicTree(y, box, rmax).query_pairs(rmax)
    d = np.linalg.norm(minimum_image(y[pairs[:, 1]] - y[pairs[:, 0]], box), axis=1)
    counts, _ = np.histogram(d, bins=edges)
    return counts.astype(np.float64), ideal


def rdf_from_counts(counts: np.ndarray, ideal: np.ndarray) -> np.ndarray:
    """g(r) = summed pair counts / summed ideal counts (NaN where no pairs are expected)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ideal > 0, counts / ideal, np.nan)


@dataclass
class HBondSites:
    """Global atom indices of donor heavy atoms and their hydrogens (paired), acceptors, and per
    atom the molecule index and whether it belongs to water."""

    donor: np.ndarray
    hydrogen: np.ndarray
    acceptor: np.ndarray
    molecule: np.ndarray
    water: np.ndarray


def _moltype_sites(mt) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    el = np.asarray(mt.elements)
    polar = np.isin(el, POLAR)
    bonds = np.asarray(mt.bonds, np.int64).reshape(-1, 2)
    both = np.concatenate([bonds, bonds[:, ::-1]]) if len(bonds) else bonds
    dh = both[polar[both[:, 0]] & (el[both[:, 1]] == "H")] if len(both) else both
    return dh[:, 0], dh[:, 1], np.flatnonzero(polar)


def hbond_sites(top) -> HBondSites:
    """Donors (N/O bonded to H in the topology), their H, acceptors (every N/O), for the system."""
    don, hyd, acc, mol, wat = [], [], [], [], []
    nmol = 0
    for b in top.blocks:
        mt = b.moltype
        d, h, a = _moltype_sites(mt)
        offs = b.start + mt.n_atoms * np.arange(b.count)[:, None]
        don.append((offs + d).ravel())
        hyd.append((offs + h).ravel())
        acc.append((offs + a).ravel())
        mol.append(np.repeat(nmol + np.arange(b.count), mt.n_atoms))
        wat.append(np.full(b.n_atoms, mt.is_water))
        nmol += b.count

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    return HBondSites(cat(don, np.int64), cat(hyd, np.int64), cat(acc, np.int64), cat(mol, np.int64), cat(wat, bool))


def count_hbonds(x: np.ndarray, box, sites: HBondSites, r_ha: float = HB_DISTANCE_NM,
                 angle_deg: float = HB_ANGLE_DEG) -> dict[str, int]:
    """Intermolecular hydrogen bonds of one frame x (N, 3) nm by the geometric criterion
    H...A < ``r_ha`` and angle D-H...A > ``angle_deg``: counts ``water_water``,
    ``solute_water`` (either direction) and ``solute_solute``."""
    nh = len(sites.hydrogen)
    out = {"water_water": 0, "solute_water": 0, "solute_solute": 0}
    if nh == 0 or len(sites.acceptor) == 0:
        return out
    x = np.asarray(x, np.float64)
    pts = np.concatenate([x[sites.hydrogen], x[sites.acceptor]])
    p = PeriodicTree(pts, box, r_ha).query_pairs(r_ha)
    p = p[(p[:, 0] < nh) & (p[:, 1] >= nh)]  # i < j: hydrogen first, acceptor second
    h_i, a = p[:, 0], sites.acceptor[p[:, 1] - nh]
    h, d = sites.hydrogen[h_i], sites.donor[h_i]
    inter = sites.molecule[a] != sites.molecule[d]
    h, d, a = h[inter], d[inter], a[inter]
    v1 = minimum_image(x[d] - x[h], box)
    v2 = minimum_image(x[a] - x[h], box)
    cos = np.einsum("ij,ij->i", v1, v2) / (np.linalg.norm(v1, axis=1) * np.linalg.norm(v2, axis=1))
    ok = cos < np.cos(np.radians(angle_deg))
    wd, wa = sites.water[d[ok]], sites.water[a[ok]]
    out["water_water"] = int(np.sum(wd & wa))
    out["solute_water"] = int(np.sum(wd != wa))
    out["solute_solute"] = int(np.sum(~wd & ~wa))
    return out

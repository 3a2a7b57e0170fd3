"""Bilayer observables of atomistic lipids: stereo checks from the mapping files' hints, acyl-chain
C-H order parameters and tail torsions.

Everything works on whole molecules of one lipid moleculetype: ``x`` (F, M, n, 3) nm (F frames,
M lipids of n atoms each, in the moleculetype's atom order; :func:`lipid_coordinates` makes them
whole across the periodic box).  The bilayer normal is z.  Atom names are CHARMM36's (the lipid
mapping files of ``data/mappings/lipids``): acyl carbons ``C2k`` (sn-2) and ``C3k`` (sn-1).
"""

from __future__ import annotations

import numpy as np

from .geometry import dihedral, signed_volume

__all__ = ["lipid_coordinates", "stereo_ok", "order_parameters", "tail_torsions", "tail_carbons", "ester_torsions"]


def lipid_coordinates(positions: np.ndarray, box: np.ndarray, block) -> np.ndarray:
    """(F, count, n, 3) coordinates of the molecules of topology block ``block`` (a
    :class:`~multiscale.topology.MoleculeBlock`), each made whole along its bonds.  positions
    (F, N, 3) nm; box (F, 3) or (F, 3, 3)."""
    from .geometry import bond_tree_order, make_whole

    mt = block.moltype
    x = np.asarray(positions, float)[:, block.start:block.stop].reshape(len(positions), block.count, mt.n_atoms, 3)
    box = np.asarray(box, float)
    order, parent = bond_tree_order(mt.n_atoms, mt.bonds)
    return make_whole(x, box[:, None, :] if box.ndim == 2 else box[:, None, :, :], order, parent)


def stereo_ok(x: np.ndarray, atom_names, hints: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per molecule (..., M) bool: every ``[ chiral ]`` hint holds (signed volume of the centre's
    three listed neighbours has the listed sign) and every ``[ cis ]`` hint holds (|dihedral| <
    90 deg) -- the mapping file's stereo record, independent of the engine's certificate."""
    idx = {a: k for k, a in enumerate(atom_names)}
    x = np.asarray(x, float)
    at = lambda name: x[..., idx[name], :]
    chiral = np.ones(x.shape[:-2], bool)
    for c, a1, a2, a3, sign in hints.get("chiral", []):
        chiral &= (signed_volume(at(c), at(a1), at(a2), at(a3)) > 0) == (sign == "+")
    cis = np.ones(x.shape[:-2], bool)
    for q in hints.get("cis", []):
        cis &= np.abs(dihedral(*(at(a) for a in q))) < np.pi / 2
    return chiral, cis


#: a centre is "flat" below this normalised signed volume (unit bond vectors; tetrahedral ~0.75,
#: CHARMM36 POPC C2 in MD > 0.6), a cis bond "twisted" beyond this |dihedral| (MD < 20 deg)
FLAT_VOLUME, TWISTED_DEG = 0.3, 30.0


def stereo_quality(x: np.ndarray, atom_names, hints: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per molecule (..., M) bool: some ``[ chiral ]`` centre is near-flat (normalised signed
    volume below :data:`FLAT_VOLUME`, whatever its sign) and some ``[ cis ]`` bond is twisted by
    more than :data:`TWISTED_DEG` -- right-signed stereo that an EM still has to repair."""
    idx = {a: k for k, a in enumerate(atom_names)}
    x = np.asarray(x, float)
    at = lambda name: x[..., idx[name], :]
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True).clip(min=1e-12)
    flat = np.zeros(x.shape[:-2], bool)
    for c, a1, a2, a3, _ in hints.get("chiral", []):
        u1, u2, u3 = (unit(at(a) - at(c)) for a in (a1, a2, a3))
        flat |= np.abs(np.einsum("...k,...k->...", u1, np.cross(u2, u3))) < FLAT_VOLUME
    twisted = np.zeros(x.shape[:-2], bool)
    for q in hints.get("cis", []):
        twisted |= np.degrees(np.abs(dihedral(*(at(a) for a in q)))) > TWISTED_DEG
    return flat, twisted


def tail_carbons(atom_names, chain: int) -> list[int]:
    """Indices of the acyl carbons ``C<chain>2``, ``C<chain>3``, ... in chain order (chain 2 = sn-2,
    3 = sn-1 in CHARMM36 names), up to the first missing number."""
    idx = {a: k for k, a in enumerate(atom_names)}
    out, k = [], 2
    while f"C{chain}{k}" in idx:
        out.append(idx[f"C{chain}{k}"])
        k += 1
    return out


def order_parameters(x: np.ndarray, atom_names, elements, bonds, chain: int) -> np.ndarray:
    """(F, C) S_CH = <(3 cos^2 theta - 1) / 2> per acyl carbon of ``chain`` (theta: C-H bond vs z),
    averaged over the carbon's hydrogens and the lipids of each frame; x (F, M, n, 3)."""
    carbons = tail_carbons(atom_names, chain)
    h_of = {c: [] for c in carbons}
    for a, b in np.asarray(bonds, int).reshape(-1, 2):
        for c, h in ((a, b), (b, a)):
            if c in h_of and elements[h] == "H":
                h_of[c].append(h)
    out = np.full((x.shape[0], len(carbons)), np.nan)
    for j, c in enumerate(carbons):
        if not h_of[c]:
            continue
        v = x[:, :, h_of[c], :] - x[:, :, [c], :]
        cos2 = (v[..., 2] ** 2) / np.einsum("...i,...i->...", v, v)
        out[:, j] = (1.5 * cos2 - 0.5).mean(axis=(1, 2))
    return out


def ester_quads(elements, bonds) -> np.ndarray:
    """(E, 4) atom indices R-O-C=O of every ester (or acid) group, found from the bond graph: a carbon
    with three neighbours, one a terminal O (the carbonyl), one an O with two neighbours (R its other)."""
    from .graph import adjacency

    adj = adjacency(len(elements), bonds)
    out = []
    for c, e in enumerate(elements):
        if e != "C" or len(adj[c]) != 3:
            continue
        carbonyl = [o for o in adj[c] if elements[o] == "O" and len(adj[o]) == 1]
        alkoxy = [o for o in adj[c] if elements[o] == "O" and len(adj[o]) == 2]
        if carbonyl and alkoxy:
            r = next(a for a in adj[alkoxy[0]] if a != c)
            out.append((r, alkoxy[0], c, carbonyl[0]))
    return np.array(out, int).reshape(-1, 4)


def ester_torsions(x: np.ndarray, elements, bonds) -> np.ndarray:
    """(..., E) degrees, |R-O-C=O| of every ester group (:func:`ester_quads`) of x (..., n, 3): near 0
    in a Z (cis) ester, the conformation CHARMM36 and every ester keep; 180 for the E ester."""
    q = ester_quads(elements, bonds)
    x = np.asarray(x, float)
    return np.degrees(np.abs(dihedral(*(x[..., q[:, k], :] for k in range(4)))))


def tail_torsions(x: np.ndarray, atom_names, chain: int) -> tuple[list[str], np.ndarray]:
    """Names ``C22-C23-C24-C25`` ... and (F * M, T) radians of the consecutive C-C-C-C torsions of
    acyl chain ``chain`` (from the ester carbon C<chain>1 when present)."""
    idx = {a: k for k, a in enumerate(atom_names)}
    first = [idx[f"C{chain}1"]] if f"C{chain}1" in idx else []
    cs = first + tail_carbons(atom_names, chain)
    quads = [cs[k:k + 4] for k in range(len(cs) - 3)]
    names = ["-".join(atom_names[i] for i in q) for q in quads]
    xf = np.asarray(x, float).reshape(-1, x.shape[-2], 3)
    vals = np.stack([dihedral(*(xf[:, i] for i in q)) for q in quads], axis=1) if quads else np.zeros((len(xf), 0))
    return names, vals


def bilayer_geometry(positions: np.ndarray, box, topology) -> dict:
    """Area per lipid (nm^2: box x-y area over half the lipids) and phosphate-phosphate thickness
    (nm: mean P height of the upper leaflet minus that of the lower one, the midplane from the
    circular mean of the lipids' terminal carbons along z) of one frame; {} without lipids.
    positions (N, 3) nm; box (3,) or (3, 3) nm with z the bilayer normal."""
    from .classes import lipid_mapping
    from .geometry import box_matrix

    B = box_matrix(np.asarray(box, float)).reshape(3, 3)
    lz = float(B[2, 2])
    p_z, end_z, n = [], [], 0
    for blk in topology.blocks:
        mt = blk.moltype
        if lipid_mapping(mt) is None:
            continue
        names = list(mt.atom_names)
        n += blk.count
        x = np.asarray(positions, float)[blk.start:blk.stop].reshape(blk.count, mt.n_atoms, 3)
        tails = [tail_carbons(names, c) for c in (2, 3)]
        ends = [t[-1] for t in tails if t]
        if "P" not in names or not ends:
            continue  # sterols: counted in the area, not in the P-P distance
        p = x[:, names.index("P"), 2]
        e = x[:, ends, 2].mean(1)  # whole molecules not needed: the terminal carbons' mean z
        p_z.append(p)
        end_z.append(e)
    if n == 0:
        return {}
    out = {"lipids": n, "apl_nm2": float(B[0, 0] * B[1, 1] / (n / 2))}
    if p_z:
        pz, ez = np.concatenate(p_z), np.concatenate(end_z)
        ang = 2 * np.pi * ez / lz
        mid = (np.arctan2(np.sin(ang).mean(), np.cos(ang).mean()) % (2 * np.pi)) * lz / (2 * np.pi)
        rel = pz - mid
        rel -= lz * np.round(rel / lz)
        up, low = rel[rel > 0], rel[rel < 0]
        if len(up) and len(low):
            out["thickness_nm"] = float(up.mean() - low.mean())
    return out

"""Protein criteria of ``multiscale evaluate`` (the ones protein backmapping papers report).

For every amino-acid residue of the system (residue names of ``data/classes/amino_acids.yaml``;
variants folded by ``data/classes/protein_torsions.yaml``):

* backbone torsions phi = C(i-1)-N-CA-C, psi = N-CA-C-N(i+1), omega = CA-C-N(i+1)-CA(i+1) and the
  side-chain chi angles (IUPAC; the yaml file lists them), radians;
* **Ramachandran JSD**: per residue type, the 2D (phi, psi) histogram (36 x 36 bins) against the
  reference's, base 2, with its finite-sample floor (two halves of the reference);
* **chi JSD**: per residue type and chi, 1D histograms (36 bins);
* **cis peptide bonds**: |omega| < 90 deg, counted separately before Pro and before other residues;
* **D residues**: CA (and Thr/Ile CB) with the signed volume of the unnatural isomer
  (``stereo`` in the yaml; checked on L-peptides and a crystal structure);
* **clash score**: % residues with a heavy atom closer than 0.12 nm to a heavy atom that is not
  its 1-2 or 1-3 neighbour (periodic, triclinic-safe);
* **bond score**: fraction of bonds within 10 % of the reference's mean length of that bond;
* **RMSD** (heavy atoms, backbone N/CA/C/O of all residues together) to the reference frame of the
  same index, after optimal superposition, when the reference has one frame per candidate frame.

Positions are (F, N, 3) nm in topology order, molecules whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import metrics as M

__all__ = ["ResidueTable", "residue_table", "backbone_torsions", "chi_torsions", "protein_criteria", "D_CUTOFF_CLASH"]

D_CUTOFF_CLASH = 0.12  # nm: the protein-ML papers' heavy-atom clash distance
RAMA_BINS = 36


@lru_cache(maxsize=1)
def _tables() -> tuple[dict, dict, dict, set]:
    import yaml

    from ..paths import find_data

    t = yaml.safe_load(find_data("classes", "protein_torsions.yaml").read_text())
    aa = yaml.safe_load(find_data("classes", "amino_acids.yaml").read_text())
    return t["chi"], {k: v + [t["stereo_h"][k]] for k, v in t["stereo"].items()}, t["aliases"], set(aa["residues"])


def canonical(resname: str) -> str | None:
    """The 20-letter amino-acid name of a residue name (termini prefixes, variants), else None."""
    chi, _stereo, aliases, known = _tables()
    for name in (resname, resname[1:] if len(resname) == 4 and resname[0] in "NC" else None):
        if name and name in known:
            name = aliases.get(name, name)
            return name if name in chi or name in ("GLY", "ALA") else None
    return None


@dataclass
class ResidueTable:
    """Residues of the system (R,) with global atom indices (-1 = absent)."""

    resname: np.ndarray  # (R,) canonical names
    n: np.ndarray
    ca: np.ndarray
    c: np.ndarray
    o: np.ndarray
    cb: np.ndarray
    prev_c: np.ndarray  # C of the previous residue of the same chain
    next_n: np.ndarray
    next_ca: np.ndarray
    next_resname: np.ndarray
    atoms: list  # per residue: {name: global index}
    heavy_sets: list  # per residue: global indices of its heavy atoms

    @property
    def n_residues(self) -> int:
        return len(self.resname)


def _residue_spans(mt) -> list[tuple[int, int]]:
    keys = list(mt.residues) if mt.residues is not None else None
    spans, start = [], 0
    for i in range(1, mt.n_atoms + 1):
        if i == mt.n_atoms or (keys[i] != keys[i - 1] if keys else mt.resnames[i] != mt.resnames[i - 1]):
            spans.append((start, i))
            start = i
    return spans


def residue_table(topology) -> ResidueTable:
    """Every amino-acid residue of the system, in topology order."""
    cols: dict[str, list] = {k: [] for k in ("resname", "n", "ca", "c", "o", "cb", "prev_c", "next_n", "next_ca",
                                             "next_resname", "atoms", "heavy_sets")}
    for b in topology.blocks:
        mt = b.moltype
        local = []
        for s, e in _residue_spans(mt):
            name = canonical(mt.resnames[s])
            if name is not None:
                local.append((name, {mt.atom_names[i]: i for i in range(s, e)}, [i for i in range(s, e) if mt.elements[i] != "H"]))
        for copy in range(b.count):
            off = b.start + copy * mt.n_atoms
            for k, (name, at, heavy) in enumerate(local):
                g = {a: i + off for a, i in at.items()}
                nxt = local[k + 1] if k + 1 < len(local) else None
                prv = local[k - 1] if k > 0 else None
                cols["resname"].append(name)
                for key, atom in (("n", "N"), ("ca", "CA"), ("c", "C"), ("cb", "CB")):
                    cols[key].append(g.get(atom, -1))
                cols["o"].append(g.get("O", g.get("OC1", g.get("OT1", -1))))
                cols["prev_c"].append(prv[1]["C"] + off if prv and "C" in prv[1] else -1)
                cols["next_n"].append(nxt[1]["N"] + off if nxt and "N" in nxt[1] else -1)
                cols["next_ca"].append(nxt[1]["CA"] + off if nxt and "CA" in nxt[1] else -1)
                cols["next_resname"].append(nxt[0] if nxt else "")
                cols["atoms"].append(g)
                cols["heavy_sets"].append([i + off for i in heavy])
    arr = {k: (np.array(v, dtype=np.int64) if k not in ("resname", "next_resname", "atoms", "heavy_sets") else v)
           for k, v in cols.items()}
    arr["resname"] = np.array(arr["resname"], dtype=object)
    arr["next_resname"] = np.array(arr["next_resname"], dtype=object)
    return ResidueTable(**arr)


def _dihedral(x: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """Torsions (F, Q) rad of quads (Q, 4) global indices; NaN where an index is -1."""
    from ..geometry import dihedral

    ok = (quads >= 0).all(axis=1)
    out = np.full((x.shape[0], len(quads)), np.nan)
    if ok.any():
        q = quads[ok]
        out[:, ok] = dihedral(*(x[:, q[:, k]] for k in range(4)))
    return out


def backbone_torsions(x: np.ndarray, t: ResidueTable) -> dict[str, np.ndarray]:
    """phi, psi, omega (F, R) rad; omega belongs to the bond from residue i to i+1."""
    phi = _dihedral(x, np.stack([t.prev_c, t.n, t.ca, t.c], axis=1))
    psi = _dihedral(x, np.stack([t.n, t.ca, t.c, t.next_n], axis=1))
    omega = _dihedral(x, np.stack([t.ca, t.c, t.next_n, t.next_ca], axis=1))
    return {"phi": phi, "psi": psi, "omega": omega}


def _pick(atoms: dict, spec: str) -> int:
    return next((atoms[a] for a in spec.split("|") if a in atoms), -1)


def chi_torsions(x: np.ndarray, t: ResidueTable) -> dict[tuple[str, int], np.ndarray]:
    """{(residue type, chi number): (F, n_residues_of_type) rad} over the residues having that chi."""
    chi_def = _tables()[0]
    quads: dict[tuple[str, int], list] = {}
    for r, name in enumerate(t.resname):
        for k, spec in enumerate(chi_def.get(name, []), start=1):
            quads.setdefault((name, k), []).append([_pick(t.atoms[r], a) for a in spec])
    return {key: _dihedral(x, np.array(q, dtype=np.int64)) for key, q in quads.items()}


def chirality_wrong(x: np.ndarray, t: ResidueTable, distorted: bool = False) -> np.ndarray:
    """(F, R) True where a residue's CA (or Thr/Ile CB) has the D (unnatural) configuration; with
    ``distorted``, where it is L by its three heavy substituents but a face with its hydrogen says
    otherwise (a flattened or half-inverted centre, which no L or D label describes)."""
    from ..graph import chirality_consistent

    stereo = _tables()[1]
    wrong = np.zeros((x.shape[0], t.n_residues), dtype=bool)
    for key, (cen, a, b, d, h) in stereo.items():
        rows = [r for r in range(t.n_residues) if (key == "CA" or t.resname[r] == key)
                and all(n in t.atoms[r] for n in (cen, a, b, d))]
        if distorted:
            rows = [r for r in rows if h in t.atoms[r]]
        if not rows:
            continue
        idx = np.array([[t.atoms[r][n] for n in (cen, a, b, d, h if distorted else d)] for r in rows])
        c = x[:, idx[:, 0]]
        d_hand = np.sum((x[:, idx[:, 1]] - c) * np.cross(x[:, idx[:, 2]] - c, x[:, idx[:, 3]] - c), axis=-1) < 0
        if distorted:  # L by the heavy three, but not tetrahedral from every face with the hydrogen
            wrong[:, rows] |= ~d_hand & ~chirality_consistent(x, idx[:, 0], idx[:, 1:], np.ones(len(rows)))
        else:
            wrong[:, rows] |= d_hand
    return wrong


def clash_score(x: np.ndarray, box: np.ndarray, topology, t: ResidueTable, system=None) -> np.ndarray:
    """(F,) % residues with a heavy-atom contact < :data:`D_CUTOFF_CLASH` to a non-1-2/1-3 heavy
    atom: :func:`metrics.clash_pairs` (the evaluate clash search) over the residues' heavy atoms
    only, with ``system``'s exclusions (:class:`multiscale.evaluate.run._System`, built if None)."""
    if system is None:
        from .run import _System

        system = _System(topology)
    heavy = np.zeros(x.shape[1], dtype=bool)
    owner = np.full(x.shape[1], -1)
    for r, hs in enumerate(t.heavy_sets):
        heavy[hs] = True
        owner[hs] = r
    out = np.zeros(x.shape[0])
    for f in range(x.shape[0]):
        xf = np.where(heavy[:, None], x[f], np.nan)  # clash_pairs ignores NaN rows
        inter, intra, _, _ = M.clash_pairs(xf, box[f], system.molecule, system.excluded, D_CUTOFF_CLASH, D_CUTOFF_CLASH)
        res = {int(owner[i]) for i in np.concatenate([inter, intra]).ravel()}
        out[f] = 100.0 * len(res) / max(1, t.n_residues)
    return out


def _bond_lengths(x: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], axis=-1)


def _protein_bonds(topology, t: ResidueTable) -> np.ndarray:
    atoms = {i for g in t.atoms for i in g.values()}
    out = []
    for b in topology.blocks:
        for c in range(b.count):
            off = b.start + c * b.moltype.n_atoms
            out += [(int(i) + off, int(j) + off) for i, j in b.moltype.bonds if int(i) + off in atoms]
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def _superposed_rmsd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(F,) RMSD of (F, n, 3) point sets after optimal superposition, nm."""
    from ..geometry import kabsch_rotation

    ac, bc = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    r = kabsch_rotation(ac, bc)
    return np.sqrt(np.mean(np.sum((ac @ r - bc) ** 2, axis=-1), axis=-1))


def _hist2(phi, psi) -> np.ndarray:
    ok = np.isfinite(phi) & np.isfinite(psi)
    h, _, _ = np.histogram2d(phi[ok], psi[ok], bins=RAMA_BINS, range=[[-np.pi, np.pi], [-np.pi, np.pi]])
    return h.ravel() + 1e-12


def _rama_jsd(cand: dict, ref: dict, t: ResidueTable) -> dict:
    out = {}
    for name in sorted(set(t.resname)):
        cols = t.resname == name
        cp, cs = cand["phi"][:, cols].ravel(), cand["psi"][:, cols].ravel()
        rp, rs = ref["phi"][:, cols].ravel(), ref["psi"][:, cols].ravel()
        n = int((np.isfinite(cp) & np.isfinite(cs)).sum())
        if n == 0 or not np.isfinite(rp).any():
            continue
        half = len(rp) // 2
        floor = M.jsd(_hist2(rp[:half], rs[:half]), _hist2(rp[half:], rs[half:])) if half else None
        out[name] = {"jsd": M.jsd(_hist2(cp, cs), _hist2(rp, rs)), "floor": floor, "n": n}
    return out


def _chi_jsd(cand: dict, ref: dict) -> dict:
    out = {}
    for key, v in cand.items():
        rv = ref.get(key)
        c, r = v.ravel(), (rv.ravel() if rv is not None else np.zeros(0))
        c, r = c[np.isfinite(c)], r[np.isfinite(r)]
        if len(c) and len(r):
            half = len(r) // 2
            floor = M.jsd(M.histogram(r[:half], "torsion"), M.histogram(r[half:], "torsion")) if half else None
            out[f"{key[0]} chi{key[1]}"] = {"jsd": M.jsd(M.histogram(c, "torsion"), M.histogram(r, "torsion")), "floor": floor, "n": len(c)}
    return out


def _mean(d: dict) -> float | None:
    return float(np.mean([v["jsd"] for v in d.values()])) if d else None


def protein_criteria(topology, x: np.ndarray, box: np.ndarray, ref_x: np.ndarray | None = None, system=None) -> dict | None:
    """All protein criteria of candidate frames ``x`` (F, N, 3) nm (``ref_x``: reference frames,
    same atom order; ``system``: evaluate's topology index arrays, built when None); None when the
    system has no amino-acid residue."""
    t = residue_table(topology)
    if t.n_residues == 0:
        return None
    bb = backbone_torsions(x, t)
    omega_ok = np.isfinite(bb["omega"])
    cis = omega_ok & (np.abs(np.nan_to_num(bb["omega"])) < np.pi / 2)
    before_pro = t.next_resname == "PRO"
    out = {"residues": int(t.n_residues), "frames": int(x.shape[0]),
           "cis_peptides_non_pro": float(cis[:, ~before_pro].sum(axis=1).mean()),
           "cis_peptides_pro": float(cis[:, before_pro].sum(axis=1).mean()),
           "d_residues": float(chirality_wrong(x, t).sum(axis=1).mean()),
           "distorted_centres": float(chirality_wrong(x, t, distorted=True).sum(axis=1).mean()),
           "clash_score_pct": float(clash_score(x, box, topology, t, system).mean())}
    if ref_x is not None:
        rb = backbone_torsions(ref_x, t)
        rama = _rama_jsd(bb, rb, t)
        chi = _chi_jsd(chi_torsions(x, t), chi_torsions(ref_x, t))
        bonds = _protein_bonds(topology, t)
        ref_len = _bond_lengths(ref_x, bonds).mean(axis=0)
        within = np.abs(_bond_lengths(x, bonds) / ref_len - 1.0) <= 0.10
        out.update({"rama_jsd_mean": _mean(rama), "rama_jsd_floor_mean": _mean({k: {"jsd": v["floor"]} for k, v in rama.items()
                                                                                 if v["floor"] is not None}),
                    "chi_jsd_mean": _mean(chi), "bond_score": float(within.mean()),
                    "rama_per_residue": rama, "chi_per_residue": chi})
        if ref_x.shape[0] == x.shape[0]:
            heavy = np.array(sorted({i for hs in t.heavy_sets for i in hs}))
            back = np.array(sorted(i for g in t.atoms for n, i in g.items() if n in ("N", "CA", "C", "O")))
            out["rmsd_heavy_nm"] = float(_superposed_rmsd(x[:, heavy], ref_x[:, heavy]).mean())
            out["rmsd_backbone_nm"] = float(_superposed_rmsd(x[:, back], ref_x[:, back]).mean())
    return out

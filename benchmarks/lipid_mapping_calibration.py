#!/usr/bin/env python3
"""Which lipid mapping is consistent with the Martini 3 model: mapped CHARMM36 bead geometry against Martini 3 MD.

    python benchmarks/lipid_mapping_calibration.py --reference ~/.cache/multiscale/bilayer_data/POPC_32 \
        --cg /tmp/membrane_backmap/cg [--lipid POPC] [--out benchmarks/results/lipid_mapping_calibration.md]

A backmapper must put the atoms exactly on the beads a Martini 3 simulation gives it.  When the
mapping's bead centres of atomistic lipids sit at other distances than Martini 3 keeps its beads,
no atomistic conformation fits, and the exact projection strains the chemistry where the two
disagree.  This script measures that disagreement: the mean length of every bonded bead pair and
the mean of every bonded bead angle of the Martini 3 lipid, in Martini 3 MD (``--cg``: a folder
with ``cg.top``, ``cg_md.gro``, ``cg_md.xtc``, e.g. the test bilayer of ``membrane_backmap.py``)
and in the atomistic reference bilayer mapped (``--reference``: a ``make_bilayer_data.py``
folder), for the shipped mapping file and for every assignment of the glycerol carbons C1, C2, C3
to the neighbouring beads, with bead centres of all atoms or of the heavy atoms only.  Lengths nm,
angles degrees.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

GLYCEROL_CHOICES = {"C1": [["GL1"], ["GL2"], ["PO4"], ["GL1", "GL2"], ["PO4", "GL1"]],
                    "C2": [["GL1"], ["GL1", "GL2"], ["GL2"]],
                    "C3": [["GL2"], ["GL1", "GL2"]]}


def martini_bonds(itp_text: str, name: str) -> np.ndarray:
    """(n_bonds, 2) 0-based bead pairs of the ``[ bonds ]`` and ``[ constraints ]`` of moleculetype
    ``name`` in a Martini itp text (ParmEd does not read the lipidome's virtual sites)."""
    out, inside, sec = [], False, None
    for line in itp_text.splitlines():
        s = line.split(";")[0].strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("["):
            sec = s.strip("[] ").lower()
            if sec == "moleculetype":
                if inside:
                    break
                inside = None  # the next line names it
            continue
        if sec == "moleculetype" and inside is None:
            inside = s.split()[0] == name
            continue
        if inside and sec in ("bonds", "constraints"):
            out.append((int(s.split()[0]) - 1, int(s.split()[1]) - 1))
    if not out:
        raise SystemExit(f"no bonds of moleculetype {name} in the Martini itp")
    return np.array(out, int)


def bonded_terms(bonds: np.ndarray) -> tuple[list, list]:
    """Bead pairs and bead triplets (i-j-k along two bonds) of a CG moleculetype's bond graph."""
    pairs = sorted({(int(min(a, b)), int(max(a, b))) for a, b in bonds})
    nb = {}
    for a, b in pairs:
        nb.setdefault(a, []).append(b)
        nb.setdefault(b, []).append(a)
    triples = sorted({(min(i, k), j, max(i, k)) for j, ns in nb.items() for i, k in itertools.combinations(ns, 2)})
    return pairs, triples


def geometry(beads: np.ndarray, pairs, triples) -> tuple[np.ndarray, np.ndarray]:
    """Mean length (nm) of each pair and mean angle (deg) of each triple over beads (M, nb, 3)."""
    d = np.array([np.linalg.norm(beads[:, i] - beads[:, j], axis=1).mean() for i, j in pairs])
    ang = []
    for i, j, k in triples:
        u, v = beads[:, i] - beads[:, j], beads[:, k] - beads[:, j]
        c = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
        ang.append(np.degrees(np.arccos(np.clip(c, -1, 1))).mean())
    return d, np.array(ang)


def variant(m, mt, glycerol: dict, heavy_only: bool):
    """The mapping ``m`` with the glycerol carbons (and their hydrogens) assigned as ``glycerol``
    says, listing every atom (hydrogens with their heavy atom) or the heavy atoms only."""
    own = dict(zip(m.atoms, m.assignment))
    own.update(glycerol)
    owner = {}
    for a, b in np.asarray(mt.bonds, int):
        for h, x in ((a, b), (b, a)):
            if mt.elements[h] == "H":
                owner[h] = x
    atoms, assignment = [], []
    for k, (name, el) in enumerate(zip(mt.atom_names, mt.elements)):
        if el == "H" and heavy_only:
            continue
        atoms.append(name)
        assignment.append(list(own[mt.atom_names[owner[k]]] if el == "H" else own[name]))
    return dataclasses.replace(m, atoms=atoms, assignment=assignment)


def contiguous(m, mt) -> bool:
    """Whether the heavy atoms of every bead of mapping ``m`` form one bonded fragment (a bead is a
    chemical group; ``tests/test_lipid_mappings.py`` asks the same of the shipped files): one root
    in the bond tree of the bead's atoms."""
    from multiscale.geometry import bond_tree_order

    index = {n: k for k, n in enumerate(mt.atom_names)}
    bonds = np.asarray(mt.bonds, int)
    for bead in m.beads:
        atoms = np.array(sorted(index[n] for n, bs in zip(m.atoms, m.assignment)
                                if bead in bs and mt.elements[index[n]] != "H"))
        inside = np.isin(bonds, atoms).all(1)
        _, parent = bond_tree_order(len(atoms), np.searchsorted(atoms, bonds[inside]))
        if (parent < 0).sum() != 1:
            return False
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, required=True, help="make_bilayer_data.py folder of the AA bilayer")
    p.add_argument("--cg", type=Path, required=True, help="folder with cg_md.gro, cg_md.xtc (Martini 3 MD)")
    p.add_argument("--lipid", default="POPC")
    p.add_argument("--cg-frames", type=int, default=10, help="last CG frames used")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lipid_mapping_calibration.md")
    a = p.parse_args(argv)
    from multiscale.coarse_grain import whole_molecules
    from multiscale.forcefields import martini3_itp
    from multiscale.geometry import bond_tree_order, frame_boxes, make_whole
    from multiscale.io import atomic_write_text, read_frames
    from multiscale.mapping import load_mapping
    from multiscale.paths import find_data
    from multiscale.topology import load_topology

    cg_fr = read_frames(a.cg / "cg_md.gro", a.cg / "cg_md.xtc")
    cg_fr = cg_fr.subset(slice(max(0, cg_fr.n_frames - a.cg_frames), cg_fr.n_frames))
    shipped = load_mapping(find_data("mappings", f"lipids/{a.lipid}.map")).molecules[a.lipid]
    names = shipped.beads
    sel = np.flatnonzero(np.asarray(cg_fr.resnames) == (shipped.cg_name or a.lipid))
    n_cg = len(sel) // len(names)
    cg_bonds = martini_bonds(martini3_itp().read_text(), shipped.cg_name or a.lipid)
    pairs, triples = bonded_terms(cg_bonds)
    xc = cg_fr.positions[:, sel[0]:sel[-1] + 1].astype(np.float64).reshape(cg_fr.n_frames, n_cg, len(names), 3)
    xc = make_whole(xc, frame_boxes(cg_fr.box, cg_fr.n_frames)[:, None], *bond_tree_order(len(names), cg_bonds))
    t_d, t_a = geometry(xc.reshape(-1, len(names), 3), pairs, triples)

    aa_top = load_topology(a.reference / "topol.top")
    structure = a.reference / "prod.gro" if (a.reference / "prod.gro").is_file() else a.reference / "npt.gro"
    aa_fr = read_frames(structure, a.reference / "prod.xtc", expected_atoms=aa_top.n_atoms)
    ablk = next(b for b in aa_top.blocks if b.moltype.name == a.lipid)
    x = whole_molecules(aa_fr.positions, aa_fr.box, ablk).reshape(-1, ablk.moltype.n_atoms, 3)
    rows = []

    def score(m, label):
        beads = np.einsum("ba,mak->mbk", m.matrix(ablk.moltype), x)
        d, ang = geometry(beads, pairs, triples)
        rd, ra = float(np.sqrt(np.mean((d - t_d) ** 2))), float(np.sqrt(np.mean((ang - t_a) ** 2)))
        rows.append({"label": label, "bonds_rms_nm": rd, "angles_rms_deg": ra, "score": rd / 0.02 + ra / 5.0,
                     "worst_bond": max(zip(np.abs(d - t_d), [f"{names[i]}-{names[j]} {d[k]:.3f} vs {t_d[k]:.3f}"
                                                             for k, (i, j) in enumerate(pairs)]))[1]})

    score(shipped, "shipped mapping file")
    for heavy_only in (False, True):
        for c1, c2, c3 in itertools.product(*GLYCEROL_CHOICES.values()):
            g = {"C1": c1, "C2": c2, "C3": c3}
            label = f"C1 {'/'.join(c1)}, C2 {'/'.join(c2)}, C3 {'/'.join(c3)}; {'heavy atoms' if heavy_only else 'all atoms'}"
            v = variant(shipped, ablk.moltype, g, heavy_only)
            if contiguous(v, ablk.moltype):  # C1 in GL2 without C2, for one, splits GL2 in two
                score(v, label)
    ranked = sorted(rows[1:], key=lambda r: r["score"])
    lines = [f"# Lipid mapping calibration: {a.lipid}, mapped CHARMM36 vs Martini 3 MD (`benchmarks/lipid_mapping_calibration.py`)", "",
             f"Martini 3 MD: `{a.cg}` (last {cg_fr.n_frames} frames, {n_cg} lipids, bonds of the Martini 3 lipidome itp); "
             f"atomistic: `{a.reference.name}` "
             f"({aa_fr.n_frames} frames, {ablk.count} lipids). Means over every bonded bead pair ({len(pairs)}) and bonded "
             f"bead angle ({len(triples)}) of the Martini 3 {a.lipid}; score = bonds rms / 0.02 nm + angles rms / 5 deg. "
             f"Candidates: every assignment of the glycerol carbons whose beads stay bonded fragments ({len(rows) - 1} of "
             f"{2 * np.prod([len(v) for v in GLYCEROL_CHOICES.values()])}); the last row is the mapping shipped before "
             "this calibration.", "",
             "| mapping | bonds rms (nm) | angles rms (deg) | score | worst bond (mapped vs Martini 3 MD, nm) |",
             "|---|---|---|---|---|"]
    for r in [rows[0]] + ranked[:6] + [r for r in ranked[6:] if r["label"].startswith("C1 GL1, C2 GL1, C3 GL2")]:
        lines.append(f"| {r['label']} | {r['bonds_rms_nm']:.3f} | {r['angles_rms_deg']:.1f} | {r['score']:.2f} | {r['worst_bond']} |")
    text = "\n".join(lines) + "\n"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

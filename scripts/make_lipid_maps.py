#!/usr/bin/env python3
"""Write the Martini 3 <-> CHARMM36 lipid mapping files (src/multiscale/data/mappings/lipids/*.map).

The bead membership of every heavy atom is decided by the rules below (project-authored); the
phospholipid maps list each hydrogen with no bead (bead centres of the heavy atoms), the cholesterol
map lists each hydrogen with its heavy atom. Atom names, order and bonds come from the CHARMM-GUI lipid
itps and the bead names/order from the Martini 3 lipidome itp, both read from the force-field
cache (``python scripts/fetch_forcefields.py``). ``[ chiral ]`` and ``[ cis ]`` hints come from
an RDKit conformer of the correct isomer (scripts/lipid_conformers.py).

    python scripts/make_lipid_maps.py [--out DIR] [LIPID ...]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import lipid_conformers as lc

from multiscale import forcefields as ff
from multiscale.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "src" / "multiscale" / "data" / "mappings" / "lipids"

# Head groups: CHARMM heavy atoms of the head bead. C11 (the CH2 on the phosphate ester oxygen)
# is shared between the head bead and PO4 in every head, so both beads keep their chemistry.
HEAD = {
    "PC": ("NC3", "N C12 C13 C14 C15"),
    "PE": ("NH3", "N C12"),
    "PG": ("GL0", "C12 C13 OC2 OC3"),
    "PS": ("CNO", "N C12 C13 O13A O13B"),
}
PO4 = "P O11 O12 O13 O14"
SHARED_LINK = "C11"
# Glycerol: GL1 = sn-2 ester (bonded to chain A), GL2 = sn-1 ester (chain B); the glycerol carbons
# are shared along the backbone: C1 (sn-3, on O11) between PO4 and GL1, C2 (sn-2) between GL1 and
# GL2.  Bead centres are centres of the heavy atoms (hydrogens listed with no bead, weight 0).  Both
# choices are calibrated: of the glycerol assignments that keep every bead a bonded fragment, with
# and without hydrogens, this one's mapped CHARMM36
# bead distances and angles match Martini 3 MD of the same lipid best (POPC: bonded bead distances
# off by 0.023 nm rms, angles by 5.4 deg, against 0.037 nm / 11.5 deg for C1 and C2 in GL1 with
# hydrogens counted, where GL1-C1A was 0.532 nm against Martini 3's 0.443):
# benchmarks/lipid_mapping_calibration.py, results in benchmarks/results/lipid_mapping_calibration.md
GLYCEROL = {"C1": ["PO4", "GL1"], "C2": ["GL1", "GL2"], "O21": ["GL1"], "C21": ["GL1"], "O22": ["GL1"],
            "C3": ["GL2"], "O31": ["GL2"], "C31": ["GL2"], "O32": ["GL2"]}
# Acyl carbons 2..n per bead (the carbonyl carbon sits in the GL bead). Martini 3 lipidome:
# a saturated chain starts with a small SC1 bead (3 CH2), oleoyl with a long C1 bead (5 C) so
# that the C4h bead D2 holds C7-C10 with the cis C9=C10 double bond.
TAILS = {
    "16:0": [(2, 4), (5, 8), (9, 12), (13, 16)],
    "18:1": [(2, 6), (7, 10), (11, 14), (15, 18)],
    "12:0": [(2, 4), (5, 8), (9, 12)],
}
# CHARMM residue: (Martini moleculetype, head, sn-2 chain = Martini chain A, sn-1 chain = chain B)
LIPIDS = {
    "POPC": ("POPC", "PC", "18:1", "16:0"), "POPE": ("POPE", "PE", "18:1", "16:0"),
    "POPG": ("POPG", "PG", "18:1", "16:0"), "POPS": ("POPS", "PS", "18:1", "16:0"),
    "DOPC": ("DOPC", "PC", "18:1", "18:1"), "DPPC": ("DPPC", "PC", "16:0", "16:0"),
    # CHARMM DLPC is 1,2-dilauroyl (12:0). The Martini 3 v2 lipidome calls dilauroyl PC "DUPC"
    # (its "DLPC" is dilinoleoyl 18:2 = CHARMM DLIPC); insane 1.2 and Martini 2 call it DLPC.
    "DLPC": ("DUPC", "PC", "12:0", "12:0"),
}
# Martini 3 cholesterol v1.0 (9 beads). Chosen by fitting the bead centres of RDKit cholesterol
# conformers (hydrogens included) to the rigid Martini geometry (constraints + virtual sites of
# the CHOL itp), each bead one bonded group: ring-bead RMSD 0.046 nm; C1-C2 0.436 nm (itp 0.440).
# Alternatives tried: R2 = C1 C2 C10 with C9 in R4 (0.059 nm) or in R1 (0.065 nm).
CHOLESTEROL = {
    "ROH": "C3 O3 C4", "R1": "C5 C6 C7 C8", "R2": "C9 C10 C1 C2", "R3": "C14 C15 C16", "R4": "C11 C12",
    "R5": "C19", "R6": "C13 C18", "C1": "C17 C20 C21 C22", "C2": "C23 C24 C25 C26 C27",
}


def martini_beads(itp_text: str, name: str) -> list[str]:
    """Bead names, in order, of moleculetype ``name`` in a Martini itp text."""
    lines = itp_text.splitlines()
    for i, l in enumerate(lines):
        if not re.match(r"\s*\[\s*moleculetype\s*\]", l):
            continue
        j = i + 1
        while not lines[j].split(";")[0].strip():
            j += 1
        if lines[j].split()[0] != name:
            continue
        beads, sec = [], None
        for l2 in lines[j + 1:]:
            s = l2.split(";")[0].strip()
            if not s or s.startswith("#"):
                continue
            if s.startswith("["):
                if sec == "atoms":
                    return beads
                sec = s.strip("[] ").lower()
                continue
            if sec == "atoms":
                beads.append(s.split()[4])
        return beads
    raise SystemExit(f"no moleculetype {name} in the Martini itp")


def heavy_membership(res: str, beads: list[str]) -> dict[str, list[str]]:
    """{CHARMM heavy atom: [bead, ...]} for one lipid."""
    if res == "CHL1":
        return {a: [b] for b, atoms in CHOLESTEROL.items() for a in atoms.split()}
    _, head, chain_a, chain_b = LIPIDS[res]
    hb, hatoms = HEAD[head]
    m = {a: [hb] for a in hatoms.split()}
    m.update({a: ["PO4"] for a in PO4.split()})
    m[SHARED_LINK] = [hb, "PO4"]
    m.update({a: list(b) for a, b in GLYCEROL.items()})
    for chain, sn, letter in ((chain_a, 2, "A"), (chain_b, 3, "B")):
        tail_beads = [b for b in beads if b.endswith(letter) and b[0] in "CD"]
        if len(tail_beads) != len(TAILS[chain]):
            raise SystemExit(f"{res}: Martini chain {letter} has {tail_beads}, rules have {len(TAILS[chain])} beads")
        for bead, (lo, hi) in zip(tail_beads, TAILS[chain]):
            m.update({f"C{sn}{k}": [bead] for k in range(lo, hi + 1)})
    return m


def render(res: str, cg_name: str, beads: list[str], itp: lc.ItpMolecule, heavy: dict[str, list[str]]) -> str:
    missing = [n for n, e in zip(itp.names, itp.elements) if e != "H" and n not in heavy]
    unknown = sorted(set(heavy) - set(itp.names))
    if missing or unknown:
        raise SystemExit(f"{res}: heavy atoms without bead {missing}, rule atoms not in the itp {unknown}")
    owner = {}
    for a, b in itp.bonds:
        for h, x in ((a, b), (b, a)):
            if itp.elements[h] == "H":
                owner[h] = x
    cis = [(i, j, k, l) for (i, j, k, l), phi in itp.dihres if abs(phi) < 1e-6]
    stereo = lc.stereo_centres(itp, res)
    mw = ff.WHEELS["memback"]
    cw = ff.WHEELS["ccd2md"]
    if res == "CHL1":
        desc = "cholesterol (Martini 3 cholesterol v1.0, 9 beads incl. 5 virtual sites)"
    else:
        desc = f"{LIPIDS[res][2]} (sn-2, Martini chain A) / {LIPIDS[res][3]} (sn-1, chain B) {LIPIDS[res][1]} lipid"
    out = [
        f"; {res} (CHARMM36) <-> {cg_name} (Martini 3): {desc}.",
        "; Written for the multiscale project; licence of this file: MIT (project-authored, generated by",
        "; scripts/make_lipid_maps.py from the project's own bead rules; no mapping file of another tool was used).",
        f"; Atom names/order: CHARMM-GUI {res}.itp (charmm36-lipids, from {mw.project}=={mw.version},"
        " GPL-3.0-or-later).",
        f"; Bead names/order: Martini 3 moleculetype {cg_name} in martini_new_lipidome.itp"
        " (Martini 3.0.0 + lipidome v2",
        f"; + cholesterol v1.0; from {cw.project}=={cw.version}, GPL-3.0). Those files are fetched, not shipped.",
        ("; Every hydrogen is listed with its heavy atom" if res == "CHL1" else
         "; Hydrogens are listed with no bead (weight 0: bead centres are centres of the heavy atoms)")
        + "; an atom listed under two beads counts 1/2 in each.",
    ]
    if cg_name != res:
        out.append(f"; The AA residue {res} is the Martini moleculetype {cg_name}: see [ cg_molecule ].")
    out += ["", "[ molecule ]", res]
    if cg_name != res:
        out += ["", "[ cg_molecule ]", cg_name]
    out += ["", "[ martini ]", " ".join(beads), "", "[ mapping ]", "charmm36", "", "[ atoms ]"]
    for i, (n, e) in enumerate(zip(itp.names, itp.elements)):
        if e == "H" and res != "CHL1":  # phospholipids: heavy-atom centres (the calibration above)
            out.append(f"{i + 1:5d} {n:>6s}")
            continue
        bs = heavy[n] if e != "H" else heavy[itp.names[owner[i]]]
        out.append(f"{i + 1:5d} {n:>6s}  {' '.join(bs)}")
    if stereo:
        out += ["", "[ chiral ]",
                "; centre  n1 n2 n3  sign: sign of (n1-c).((n2-c)x(n3-c)) in the natural isomer; CIP label after ';'"]
        out += [f"{c:>6s}  {' '.join(f'{x:>5s}' for x in ns)}  {s}   ; {cip}" for c, ns, s, cip in stereo]
    if cis:
        out += ["", "[ cis ]", "; four atoms whose dihedral is ~0 deg (cis double bond)"]
        out += ["  ".join(f"{itp.names[x]:>5s}" for x in q) for q in cis]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lipids", nargs="*", default=[*LIPIDS, "CHL1"])
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args(argv)
    m3 = ff.martini3_itp().read_text()
    for res in a.lipids:
        cg_name = "CHOL" if res == "CHL1" else LIPIDS[res][0]
        itp = lc.read_itp(ff.charmm36_lipid_itp(res))
        beads = martini_beads(m3, cg_name)
        text = render(res, cg_name, beads, itp, heavy_membership(res, beads))
        path = Path(a.out) / f"{res}.map"
        atomic_write_text(path, text)
        print(f"{path}: {len(beads)} beads, {len(itp.names)} atoms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

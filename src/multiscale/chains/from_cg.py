"""An atomistic topology for a CG system that has only Martini beads (``multiscale topology``).

The protein's sequence is read from the CG structure (martinize2's residue names on the BB
beads, one chain); PeptideBuilder builds its heavy atoms and ``gmx pdb2gmx`` writes the AA
topology in the chosen force field (charged termini, protonation from the residue names:
``HID``/``HIE``/``HIP``, ``ASH``, ``GLH``, ``LYN`` are kept; plain ``HIS`` is left to pdb2gmx).
Water beads (``W``) become 4 water molecules each, ions one ion each, in the CG file's order, so
``multiscale backmap --cg CG --topology AA.top`` places every atom.  The heavy-atom build is only
a template for pdb2gmx: the coordinates come from the backmap.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import MultiscaleError

ONE_LETTER = {"ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E", "GLY": "G", "HIS": "H",
              "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S", "THR": "T", "TRP": "W",
              "TYR": "Y", "VAL": "V", "HID": "H", "HIE": "H", "HIP": "H", "HSD": "H", "HSE": "H", "HSP": "H", "ASH": "D",
              "GLH": "E", "LYN": "K", "CYX": "C"}
_AMBER_VARIANT = {"HSD": "HID", "HSE": "HIE", "HSP": "HIP"}
#: Martini 3 ion residue/bead names -> AA ion name of the amber ions.itp
IONS = {"NA": "NA", "NA+": "NA", "SOD": "NA", "CL": "CL", "CL-": "CL", "CLA": "CL", "K": "K", "K+": "K", "POT": "K"}
WATER_BEADS = {"W", "SW", "TW"}


def _groups(cg_path: Path):
    """[(kind, info)] runs of the CG structure: ("protein", [(resid, resname)]), ("water", n), ("ion", (name, n))."""
    import MDAnalysis as mda

    try:
        u = mda.Universe(str(cg_path))
    except Exception as e:  # noqa: BLE001 - any reader error becomes one line
        raise MultiscaleError(f"CG structure {cg_path} cannot be read ({type(e).__name__}): pass a .gro or .pdb") from e
    out: list = []
    for a in u.atoms:
        rn, nm = a.resname.upper(), a.name.upper()
        if rn in ONE_LETTER or rn[1:] in ONE_LETTER and len(rn) == 4:
            if not out or out[-1][0] != "protein":
                out.append(("protein", []))
            key = (int(a.resid), rn)
            if not out[-1][1] or out[-1][1][-1][0] != key[0]:
                out[-1][1].append(key)
        elif nm in WATER_BEADS or rn in WATER_BEADS:
            if out and out[-1][0] == "water":
                out[-1] = ("water", out[-1][1] + 1)
            else:
                out.append(("water", 1))
        elif nm in IONS or rn in IONS:
            ion = IONS.get(nm, IONS.get(rn))
            if out and out[-1][0] == "ion" and out[-1][1][0] == ion:
                out[-1] = ("ion", (ion, out[-1][1][1] + 1))
            else:
                out.append(("ion", (ion, 1)))
        else:
            raise MultiscaleError(f"CG structure {cg_path}: bead {a.name} of residue {a.resname}{a.resid} is not an amino "
                                  "acid, water (W) or ion (NA/CL/K): multiscale topology covers proteins in water with ions")
    if sum(g[0] == "protein" for g in out) != 1:
        raise MultiscaleError(f"CG structure {cg_path} holds {sum(g[0] == 'protein' for g in out)} protein runs: "
                              "multiscale topology builds one protein chain (then water and ions)")
    return out


def topology_from_cg(cg_path, output, forcefield: str = "amber99sb-ildn", water: str = "tip3p", settings=None) -> Path:
    """Write ``output`` (.top; its protein .itp and posre file next to it) for the CG structure ``cg_path``."""
    from ..io import atomic_write_text
    from .peptides import build_peptide_pdb, pdb2gmx

    cg_path, output = Path(cg_path), Path(output)
    groups = _groups(cg_path)
    residues = next(g[1] for g in groups if g[0] == "protein")
    resnames = [rn[1:] if rn not in ONE_LETTER else rn for _, rn in residues]
    seq = "".join(ONE_LETTER[r] for r in resnames)
    variants = {i + 1: _AMBER_VARIANT.get(r, r) for i, r in enumerate(resnames)
                if _AMBER_VARIANT.get(r, r) in ("HID", "HIE", "HIP", "ASH", "GLH", "LYN")}
    work = Path(tempfile.mkdtemp(prefix="multiscale_topology_"))
    try:
        build_peptide_pdb(seq, work / "heavy.pdb", variants=variants)
        top, _ = pdb2gmx(work / "heavy.pdb", work, forcefield=forcefield, water=water, settings=settings)
        text = top.read_text()
        name = output.stem
        # the protein goes into NAME_protein.itp (pdb2gmx put it inline); system = protein + water + ions
        m = re.search(r"^\[ moleculetype \].*?(?=^; Include Position restraint file)", text, flags=re.S | re.M)
        if m is None:
            raise MultiscaleError(f"pdb2gmx wrote an unexpected topology ({top}): report this with the CG file")
        itp = m.group(0) + f'; Include Position restraint file\n#ifdef POSRES\n#include "posre_{name}.itp"\n#endif\n'
        head = text[:m.start()]
        tail = text[m.end():]
        tail = re.sub(r'#ifdef POSRES\n#include "posre.itp"\n#endif\n', "", tail.split("; Include Position restraint file", 1)[-1])
        mol = re.search(r"^\[ moleculetype \]\s*\n(?:;.*\n)*\s*(\S+)", itp, flags=re.M).group(1)
        body = tail.split("[ molecules ]")[0]
        lines = [f"{mol:<20s} 1"]
        for kind, info in groups:
            if kind == "water":
                lines.append(f"{'SOL':<20s} {4 * info}")
            elif kind == "ion":
                lines.append(f"{info[0]:<20s} {info[1]}")
        top_text = (head + f'#include "{name}_protein.itp"\n' + body.rstrip() + "\n\n[ molecules ]\n; Compound        #mols\n"
                    + "\n".join(lines) + "\n")
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output.parent / f"{name}_protein.itp", itp)
        shutil.copy(work / "posre.itp", output.parent / f".posre_{name}.itp")
        os.replace(output.parent / f".posre_{name}.itp", output.parent / f"posre_{name}.itp")
        atomic_write_text(output, top_text)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output


def sequence_of(cg_path) -> str:
    """One-letter sequence of the protein in a CG structure (for messages and tests)."""
    res = next(g[1] for g in _groups(Path(cg_path)) if g[0] == "protein")
    return "".join(ONE_LETTER[rn[1:] if rn not in ONE_LETTER else rn] for _, rn in res)


__all__ = ["topology_from_cg", "sequence_of", "IONS"]

"""An atomistic topology for a CG system that has only Martini beads (``multiscale topology``).

The proteins' sequences are read from the CG structure (martinize2's residue names on the BB
beads; a new chain starts where the residue number does not go up by one or consecutive BB beads
are more than :data:`CHAIN_BREAK_NM` apart); PeptideBuilder builds each chain's heavy atoms and
``gmx pdb2gmx`` writes its AA moleculetype in the chosen force field (``amber99sb-ildn`` or
``charmm36m``, :mod:`.aa_forcefields`; charged termini, protonation from the residue names:
``HID``/``HIE``/``HIP`` (``HSD``/``HSE``/``HSP``), ``ASH``, ``GLH``, ``LYN`` are kept; plain ``HIS``
is left to pdb2gmx).  Consecutive chains with the same sequence share one moleculetype.
Martini lipids with a mapping file become their CHARMM36 lipid (CHARMM-GUI itp copied next to the
output; ``charmm36m`` only: a membrane protein), water beads (``W``) 4 water molecules each, ions
one ion each, in the CG file's order, so
``multiscale backmap --cg CG --topology AA.top`` places every atom.  The heavy-atom build is only
a template for pdb2gmx: the coordinates come from the backmap.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import MultiscaleError

ONE_LETTER = {"ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E", "GLY": "G", "HIS": "H",
              "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S", "THR": "T", "TRP": "W",
              "TYR": "Y", "VAL": "V", "HID": "H", "HIE": "H", "HIP": "H", "HSD": "H", "HSE": "H", "HSP": "H", "ASH": "D",
              "GLH": "E", "LYN": "K", "CYX": "C", "ASPP": "D", "GLUP": "E", "LSN": "K", "CYS2": "C"}
#: CG residue name -> amber variant name (what build_peptide_pdb takes; the force field renames it)
_AMBER_VARIANT = {"HSD": "HID", "HSE": "HIE", "HSP": "HIP", "ASPP": "ASH", "GLUP": "GLH", "LSN": "LYN"}
WATER_BEADS = {"W", "SW", "TW"}
#: consecutive BB beads farther apart than this (nm; Martini 3 BB-BB bonds are ~0.35 nm) start a new chain
CHAIN_BREAK_NM = 0.6


def _groups(cg_path: Path):
    """[(kind, info)] runs of the CG structure: ("protein", [(resid, resname)]), ("lipid", (CHARMM name, n)),
    ("water", n), ("ion", (name, n))."""
    import MDAnalysis as mda

    try:
        u = mda.Universe(str(cg_path))
    except Exception as e:  # noqa: BLE001 - any reader error becomes one line
        raise MultiscaleError(f"CG structure {cg_path} cannot be read ({type(e).__name__}): pass a .gro or .pdb") from e
    from ..classes.ion import cg_ion_keys
    from ..membranes import lipid_table

    ions = cg_ion_keys()  # Martini ion residue/bead names -> ion key (data/classes/ions.yaml)
    lipids = lipid_table()  # Martini lipid moleculetype -> CHARMM36 residue (mappings/lipids/*.map)
    out: list = []
    last_bb = None
    last_lipid = None
    for a in u.atoms:
        rn, nm = a.resname.upper(), a.name.upper()
        if rn in lipids:
            key = (int(a.resid), rn)
            if key != last_lipid:  # one Martini lipid residue = one molecule
                if out and out[-1][0] == "lipid" and out[-1][1][0] == lipids[rn]:
                    out[-1] = ("lipid", (lipids[rn], out[-1][1][1] + 1))
                else:
                    out.append(("lipid", (lipids[rn], 1)))
                last_lipid = key
            continue
        if rn in ONE_LETTER or rn[1:] in ONE_LETTER and len(rn) == 4:
            key = (int(a.resid), rn)
            new_residue = not out or out[-1][0] != "protein" or out[-1][1][-1][0] != key[0]
            if new_residue:
                bb = a.position / 10.0  # Angstrom -> nm (the first bead of a martinize2 residue is BB)
                if (not out or out[-1][0] != "protein" or key[0] != out[-1][1][-1][0] + 1
                        or _distance(bb, last_bb, u.dimensions) > CHAIN_BREAK_NM):
                    out.append(("protein", []))
                out[-1][1].append(key)
                last_bb = bb
        elif nm in WATER_BEADS or rn in WATER_BEADS:
            if out and out[-1][0] == "water":
                out[-1] = ("water", out[-1][1] + 1)
            else:
                out.append(("water", 1))
        elif nm in ions or rn in ions:
            ion = ions.get(nm, ions.get(rn))
            if out and out[-1][0] == "ion" and out[-1][1][0] == ion:
                out[-1] = ("ion", (ion, out[-1][1][1] + 1))
            else:
                out.append(("ion", (ion, 1)))
        else:
            raise MultiscaleError(f"CG structure {cg_path}: bead {a.name} of residue {a.resname}{a.resid} is not an amino "
                                  f"acid, lipid with a mapping file, water (W) or ion ({'/'.join(sorted(set(ions.values())))}, "
                                  "data/classes/ions.yaml): multiscale topology covers proteins in water or membranes with ions")
    if not any(g[0] == "protein" for g in out):
        raise MultiscaleError(f"CG structure {cg_path} holds no amino-acid beads: for a membrane without a protein give "
                              "its CG topology (multiscale topology --cg-topology CG.top --output AA.top)")
    short = [g[1][0] for g in out if g[0] == "protein" and len(g[1]) < 2]
    if short:
        raise MultiscaleError(f"CG structure {cg_path}: chain starting at residue {short[0][1]}{short[0][0]} has one residue: "
                              f"check residue numbering (a new chain starts where it does not go up by one or BB beads are "
                              f"more than {CHAIN_BREAK_NM} nm apart)")
    return out


def _distance(a, b, dimensions) -> float:
    """Minimum-image distance (nm) of two points (nm) in the CG box (MDAnalysis, triclinic-safe)."""
    from MDAnalysis.lib.distances import calc_bonds

    if b is None:
        return 0.0
    box = None if dimensions is None or not np.all(np.asarray(dimensions[:3]) > 0) else dimensions
    return float(calc_bonds(np.asarray(a * 10.0, np.float32)[None], np.asarray(b * 10.0, np.float32)[None], box=box)[0]) / 10.0


def _chain_moltype(residues, forcefield: str, water: str, settings, work: Path, letter: str) -> tuple[str, str, str]:
    """One chain: (moleculetype block with its posre #ifdef placeholder, topology head (includes), posre text)."""
    from .aa_forcefields import protein_forcefield
    from .peptides import build_peptide_pdb, pdb2gmx

    ff = protein_forcefield(forcefield)
    resnames = [rn[1:] if rn not in ONE_LETTER else rn for _, rn in residues]
    seq = "".join(ONE_LETTER[r] for r in resnames)
    variants = {i + 1: ff.residue_name(_AMBER_VARIANT.get(r, r)) for i, r in enumerate(resnames)
                if _AMBER_VARIANT.get(r, r) in ("HID", "HIE", "HIP", "ASH", "GLH", "LYN")}
    d = work / letter
    build_peptide_pdb(seq, d / "heavy.pdb", variants=variants)
    top, _ = pdb2gmx(d / "heavy.pdb", d, forcefield=forcefield, water=water, settings=settings)
    text = top.read_text()
    m = re.search(r"^\[ moleculetype \].*?(?=^; Include Position restraint file)", text, flags=re.S | re.M)
    if m is None:
        raise MultiscaleError(f"pdb2gmx wrote an unexpected topology ({top}): report this with the CG file")
    block = re.sub(r"^(\[ moleculetype \]\s*\n(?:;.*\n)*\s*)(\S+)", rf"\g<1>Protein_chain_{letter}", m.group(0), count=1,
                   flags=re.M)
    return block, text[:m.start()], (d / "posre.itp").read_text()


def has_amino_acids(cg_path) -> bool:
    """Whether the CG structure has martinize2 amino-acid residues (a protein to give pdb2gmx)."""
    try:
        return any(kind == "protein" for kind, _ in _groups(Path(cg_path)))
    except MultiscaleError:
        return False


def system_topology(output, cg=None, cg_topology=None, forcefield: str = "amber99sb-ildn", water: str = "tip3p") -> tuple[Path, str]:
    """What ``multiscale topology`` writes: the AA topology ``output`` of a CG system, and a few words on it.

    A Martini membrane system (``cg_topology``, lipids/water/ions) -> CHARMM36 (:func:`~multiscale.membranes.membrane_topology`);
    one with a martinize2 protein in ``cg`` too (a membrane protein) -> :func:`topology_from_cg` in CHARMM36m;
    a protein in water (``cg`` only) -> :func:`topology_from_cg` in ``forcefield``."""
    if cg_topology and cg and has_amino_acids(cg):  # a membrane protein: the structure path, CHARMM36m
        cg_topology = None
        forcefield = "charmm36m" if forcefield in ("amber99sb-ildn", "charmm36") else forcefield
    if cg_topology:
        from ..membranes import membrane_topology

        ff = "charmm36" if forcefield == "amber99sb-ildn" else forcefield  # the default is a protein one
        return membrane_topology(cg_topology, output, forcefield=ff), f"{cg_topology} (CHARMM36 lipids, CHARMM TIP3P, ions)"
    if not cg:
        raise MultiscaleError("multiscale topology needs --cg CG.gro (proteins in water) or --cg-topology CG.top (membranes)")
    return topology_from_cg(cg, output, forcefield=forcefield, water=water), f"{cg} ({forcefield}, {water})"


def topology_from_cg(cg_path, output, forcefield: str = "amber99sb-ildn", water: str = "tip3p", settings=None) -> Path:
    """Write ``output`` (.top; per protein moleculetype ``NAME_protein[_X].itp`` and ``posre_NAME[_X].itp``
    next to it) for the CG structure ``cg_path``."""
    from ..io import atomic_write_text
    from .aa_forcefields import protein_forcefield

    ff = protein_forcefield(forcefield)
    cg_path, output = Path(cg_path), Path(output)
    groups = _groups(cg_path)
    chains = [g[1] for g in groups if g[0] == "protein"]
    lipid_names = list(dict.fromkeys(g[1][0] for g in groups if g[0] == "lipid"))
    if lipid_names and forcefield != "charmm36m":
        raise MultiscaleError(f"CG structure {cg_path} holds lipids ({', '.join(lipid_names)}): membranes are built in "
                              "CHARMM36, use --forcefield charmm36m (CHARMM36m protein + CHARMM36 lipids)")
    name = output.stem
    work = Path(tempfile.mkdtemp(prefix="multiscale_topology_"))
    try:
        moltypes, files, head = {}, {}, ""  # sequence -> moleculetype name; file name -> text
        for residues in chains:
            seq = tuple(rn for _, rn in residues)
            if seq in moltypes:
                continue
            letter = chr(ord("A") + len(moltypes)) if len(moltypes) < 26 else str(len(moltypes))
            suffix = "" if len(chains) == 1 else f"_{letter}"
            block, head, posre = _chain_moltype(residues, forcefield, water, settings, work, letter)
            moltypes[seq] = f"Protein_chain_{letter}"
            files[f"{name}_protein{suffix}.itp"] = (block + f"; Include Position restraint file\n#ifdef POSRES\n"
                                                    f'#include "posre_{name}{suffix}.itp"\n#endif\n')
            files[f"posre_{name}{suffix}.itp"] = posre
        body = head.rstrip() + "\n\n" + "".join(f'#include "{f}"\n' for f in files if not f.startswith("posre_"))
        body += "".join(f'#include "{res}.itp"\n' for res in lipid_names)  # CHARMM-GUI itps, copied next to the output
        body += _solvent_includes(work / "A" / "topol.top")
        lines = []
        for kind, info in groups:
            if kind == "protein":
                entry = (moltypes[tuple(rn for _, rn in info)], 1)
            elif kind == "lipid":
                entry = info
            elif kind == "water":
                entry = ("SOL", 4 * info)
            else:
                entry = (ff.ions.get(info[0], info[0]), info[1])
            if lines and lines[-1][0] == entry[0]:
                lines[-1] = (entry[0], lines[-1][1] + entry[1])
            else:
                lines.append(entry)
        top_text = (body + f"\n[ system ]\n{name} (multiscale topology from {cg_path.name})\n\n[ molecules ]\n"
                    "; Compound        #mols\n" + "".join(f"{m:<20s} {n}\n" for m, n in lines))
        output.parent.mkdir(parents=True, exist_ok=True)
        for fname, text in files.items():
            atomic_write_text(output.parent / fname, text)
        if lipid_names:
            from ..forcefields import charmm36_lipid_itp
            from ..membranes import link_forcefield

            for res in lipid_names:
                atomic_write_text(output.parent / f"{res}.itp", charmm36_lipid_itp(res).read_text())
            link_forcefield(output.parent)
        atomic_write_text(output, top_text)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output


def _solvent_includes(pdb2gmx_top: Path) -> str:
    """The water and ion #includes pdb2gmx wrote after the chain's moleculetype."""
    text = pdb2gmx_top.read_text()
    tail = text.split("; Include Position restraint file", 1)[-1].split("[ system ]")[0]
    return "".join(line + "\n" for line in tail.splitlines() if line.startswith("#include") and "posre" not in line)


def sequence_of(cg_path) -> str:
    """One-letter sequences of the proteins in a CG structure, chains joined by ``/`` (messages, tests)."""
    return "/".join("".join(ONE_LETTER[rn[1:] if rn not in ONE_LETTER else rn] for _, rn in g[1])
                    for g in _groups(Path(cg_path)) if g[0] == "protein")


__all__ = ["topology_from_cg", "sequence_of", "WATER_BEADS"]

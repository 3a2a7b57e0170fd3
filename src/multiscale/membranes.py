"""An atomistic CHARMM36 topology for a Martini 3 membrane system (``multiscale topology --cg-topology``).

The CG topology's ``[ molecules ]`` (as insane writes it) is translated name by name: a Martini lipid
becomes the CHARMM36 lipid whose mapping file names it (``mappings/lipids/<NAME>.map``,
``[ cg_molecule ]``: POPC, POPE, POPG, POPS, DOPC, DPPC, DLPC, CHOL -> CHL1; a user adds a lipid by
adding a map file), each W bead 4 CHARMM TIP3P waters, each ion one CHARMM ion (SOD/CLA/POT).  The
CHARMM-GUI lipid itps come from the fetched force-field cache (GPL-3.0, never in this repository)
and are copied next to the output so the run folder is self-contained; the force field itself is
included as ``charmm36-feb2026_cgenff-5.0.ff`` (on GMXLIB; multiscale's own readers find it in the
cache).  Proteins go through ``multiscale topology --cg`` (from the beads' sequence).
"""

from __future__ import annotations

import re
import shutil
from functools import cache
from pathlib import Path

from .errors import MultiscaleError


@cache
def lipid_table() -> dict[str, str]:
    """{Martini lipid moleculetype: CHARMM36 residue} from every lipid mapping file on the data path."""
    from .mapping import load_mapping
    from .paths import find_all_data

    out: dict[str, str] = {}
    for folder in reversed(find_all_data("mappings", "lipids")):  # user folders override the package's
        for p in sorted(folder.glob("*.map")):
            for name, mm in load_mapping(p).molecules.items():
                out[str(mm.cg_name).upper()] = name
    return out


def cg_molecules(cg_top: Path) -> list[tuple[str, int]]:
    """The ``[ molecules ]`` rows (name, count) of a CG .top (that file only: insane writes them there)."""
    rows, section = [], None
    try:
        text = Path(cg_top).read_text(errors="replace")
    except OSError as e:
        raise MultiscaleError(f"CG topology {cg_top} cannot be read ({e.strerror}): give the .top insane or you wrote") from e
    for n, line in enumerate(text.splitlines(), 1):
        s = line.split(";")[0].strip()
        if s.startswith("["):
            section = s.strip("[] ").lower()
        elif s and section == "molecules":
            parts = s.split()
            if len(parts) != 2 or not re.fullmatch(r"\d+", parts[1]):
                raise MultiscaleError(f"{cg_top}:{n}: [ molecules ] row {s!r} is not 'name count'")
            rows.append((parts[0], int(parts[1])))
    if not rows:
        raise MultiscaleError(f"{cg_top} has no [ molecules ] rows: give the system .top (not an .itp)")
    return rows


def membrane_topology(cg_top, output, forcefield: str = "charmm36") -> Path:
    """Write ``output`` (.top; the lipid itps next to it) for the Martini system of ``cg_top``."""
    from .chains.aa_forcefields import PROTEIN_FORCEFIELDS
    from .chains.from_cg import WATER_BEADS
    from .classes.ion import cg_ion_keys
    from .forcefields import CHARMM36_FF, charmm36_lipid_itp
    from .io import atomic_write_text

    if forcefield not in ("charmm36", "charmm36m"):
        raise MultiscaleError(f"--forcefield {forcefield}: membranes are built in CHARMM36 (use --forcefield charmm36)")
    cg_top, output = Path(cg_top), Path(output)
    lipids = lipid_table()
    ions, charmm_ions = cg_ion_keys(), PROTEIN_FORCEFIELDS["charmm36m"].ions  # Martini name -> key -> CHARMM
    rows, itps = [], {}
    for name, count in cg_molecules(cg_top):
        key = name.upper()
        if key in lipids:
            res = lipids[key]
            itps[res] = charmm36_lipid_itp(res)
            rows.append((res, count))
        elif key in WATER_BEADS:
            rows.append(("SOL", 4 * count))
        elif key in ions:
            rows.append((charmm_ions.get(ions[key], ions[key]), count))
        else:
            raise MultiscaleError(f"{cg_top}: molecule {name} is not a Martini lipid with a mapping file "
                                  f"({', '.join(sorted(lipids))}), water (W) or ion: add mappings/lipids/<NAME>.map to "
                                  "a MULTISCALE_DATA_PATH folder; proteins: multiscale topology --cg CG.gro")
    merged: list = []
    for name, count in rows:
        if merged and merged[-1][0] == name:
            merged[-1] = (name, merged[-1][1] + count)
        else:
            merged.append((name, count))
    output.parent.mkdir(parents=True, exist_ok=True)
    for res, src in itps.items():
        tmp = output.parent / f".{res}.itp"
        shutil.copy(src, tmp)
        tmp.replace(output.parent / f"{res}.itp")
    link_forcefield(output.parent)
    text = (f"; written by multiscale topology from {cg_top.name} (Martini 3 -> CHARMM36)\n"
            f'#include "{CHARMM36_FF}/forcefield.itp"\n'
            + "".join(f'#include "{res}.itp"\n' for res in itps)
            + f'#include "{CHARMM36_FF}/tip3p.itp"\n#include "{CHARMM36_FF}/ions.itp"\n\n'
            f"[ system ]\n{output.stem} (from {cg_top.name})\n\n[ molecules ]\n; Compound        #mols\n"
            + "".join(f"{m:<20s} {n}\n" for m, n in merged))
    atomic_write_text(output, text)
    return output


def link_forcefield(folder: Path) -> Path:
    """A link ``folder/<CHARMM36 .ff>`` to the fetched port (GPL-3.0: linked from the cache, never
    copied into a project), so ``gmx grompp`` resolves the topology's ``#include`` with no GMXLIB."""
    from .forcefields import CHARMM36_FF, charmm36_gmxlib

    link = Path(folder) / CHARMM36_FF
    target = charmm36_gmxlib() / CHARMM36_FF
    if link.is_symlink() and link.resolve() == target.resolve():
        return link
    if link.exists() or link.is_symlink():
        if not link.is_symlink():
            return link  # the user's own copy of the folder: grompp reads that one
        link.unlink()
    tmp = link.with_name(f".{link.name}.tmp")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(target)
    tmp.replace(link)
    return link


__all__ = ["membrane_topology", "lipid_table", "cg_molecules", "link_forcefield"]

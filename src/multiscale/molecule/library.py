"""Maintained model libraries the ``molecule`` command draws on (all from the vermouth wheel,
Apache-2.0; nothing is copied into this repository):

* **reference bond graphs** of CHARMM/CGenFF-named small molecules
  (``vermouth/data/force_fields/charmm/small_molecule_charmm.ff``): the atom names that
  vermouth's martini3001 ``.map`` files use, with their bonds, so the names can be matched to any
  other topology of the molecule by graph isomorphism (:mod:`.names`);
* **Martini 3 small-molecule models** (``force_fields/martini3001/small_molecule_martini3.ff``,
  Alessandri et al. 2022), written out as a GROMACS ``.itp``;
* **mapping files** ``mappings/martini3001/<name>.charmm36.map``.

vermouth 0.15 reads the interaction lines of ``small_molecule_martini3.ff`` as 1-based although
the file numbers atoms from 0, which shifts every bond by one atom (vermouth-martinize issue
#302, open): ``TOLU``'s 0.295 nm constraint would join R1-R2 instead of R2-R3.  So the Martini
models are read here from the file's text, with the 0-based numbering checked per molecule (its
indices must run over 0 .. n_atoms - 1), and written with GROMACS' 1-based indices.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import MultiscaleError

__all__ = ["vermouth_dir", "charmm_graph", "martini3_itp", "vermouth_mapping", "martini3_names"]

_SECTION = re.compile(r"^\s*\[\s*([\w-]+)\s*\]")
# atom-index columns of each interaction section (None: every column is an atom)
_ATOM_COLUMNS = {"bonds": 2, "constraints": 2, "pairs": 2, "angles": 3, "dihedrals": 4, "impropers": 4,
                 "exclusions": None, "virtual_sites2": 3, "virtual_sites3": 4, "position_restraints": 1}


def vermouth_dir() -> Path:
    try:
        import vermouth
    except ImportError:
        raise MultiscaleError("vermouth is not installed: pip install 'multiscale[molecule]' (or vermouth>=0.15)") from None
    return Path(os.path.dirname(vermouth.__file__)) / "data"


def _charmm_element(atype: str) -> str:
    t = atype.upper()
    for prefix, el in (("CLG", "Cl"), ("BRG", "Br"), ("IG", "I"), ("FG", "F"), ("LP", "LP")):
        if t.startswith(prefix):
            return el
    return t[0]


def charmm_graph(name: str):
    """(names, elements, bonds) of vermouth's CHARMM block ``name``, or None if it has none.
    Lone pairs (mass-less CHARMM sites) are left out."""
    from vermouth.forcefield import get_native_force_field

    blocks = get_native_force_field("charmm").blocks
    if name not in blocks:
        return None
    blk = blocks[name]
    nodes = [n for n in blk.nodes if _charmm_element(blk.nodes[n].get("atype", n)) != "LP"]
    index = {n: i for i, n in enumerate(nodes)}
    names = [blk.nodes[n].get("atomname", n) for n in nodes]
    elements = [_charmm_element(blk.nodes[n].get("atype", n)) for n in nodes]
    bonds = [(index[a], index[b]) for a, b in blk.edges if a in index and b in index]
    return names, elements, bonds


def vermouth_mapping(name: str) -> Path | None:
    """vermouth's martini3001 CHARMM36 mapping file for molecule ``name`` (any case), if any."""
    p = vermouth_dir() / "mappings" / "martini3001" / f"{name.lower()}.charmm36.map"
    return p if p.is_file() else None


def _ff_text() -> str:
    return (vermouth_dir() / "force_fields" / "martini3001" / "small_molecule_martini3.ff").read_text()


def martini3_names() -> list[str]:
    """Names of the Martini 3 small molecules vermouth ships."""
    return re.findall(r"\[\s*moleculetype\s*\]\s*\n\s*(\S+)", _ff_text())


def _block(name: str) -> list[str] | None:
    lines = _ff_text().splitlines()
    for i, line in enumerate(lines):
        if _SECTION.match(line) and "moleculetype" in line:
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or lines[j].lstrip().startswith(";")):
                j += 1
            if j < len(lines) and lines[j].split()[0] == name:
                k = j + 1
                while k < len(lines) and not (_SECTION.match(lines[k]) and "moleculetype" in lines[k]):
                    k += 1
                return lines[j:k]
    return None


def martini3_itp(name: str, moltype: str | None = None) -> str | None:
    """The Martini 3 model of ``name`` as .itp text (moleculetype and residue ``moltype``), or
    None when vermouth has none.  Raises when the file's numbering is not the expected 0-based."""
    block = _block(name)
    if block is None:
        return None
    moltype = moltype or name
    out = [f"; Martini 3 model of {name} from vermouth's martini3001 small_molecule_martini3.ff",
           "; (Alessandri et al., Adv. Theory Simul. 2022, 5, 2100391; vermouth, Apache-2.0).",
           "; Interaction indices converted from the file's 0-based numbering to GROMACS' 1-based.",
           "", "[ moleculetype ]", f"{moltype} {block[0].split()[1] if len(block[0].split()) > 1 else 1}"]
    section, n_atoms, used = None, 0, []
    body: list[str] = []
    for raw in block[1:]:
        line = re.sub(r"\{.*\}", "", raw.split(";", 1)[0]).strip()
        m = _SECTION.match(line)
        if m:
            section = m.group(1).lower()
            if section != "citations":
                body += ["", f"[ {section} ]"]
            continue
        if not line or section == "citations":
            continue
        f = line.split()
        if section == "atoms":
            n_atoms += 1
            f[3] = moltype
        elif section == "virtual_sitesn":  # vermouth: site atoms... funct; GROMACS: site funct atoms...
            used += [int(x) for x in f[:-1]]
            f = [str(int(f[0]) + 1), f[-1], *(str(int(x) + 1) for x in f[1:-1])]
        elif section in _ATOM_COLUMNS:
            cols = range(len(f)) if _ATOM_COLUMNS[section] is None else range(_ATOM_COLUMNS[section])
            for c in cols:
                used.append(int(f[c]))
                f[c] = str(int(f[c]) + 1)
        body.append(" ".join(f))
    if used and (min(used) != 0 or max(used) > n_atoms - 1):
        raise MultiscaleError(f"vermouth's Martini 3 model of {name} does not number its atoms from 0 as expected "
                              f"(indices {min(used)}..{max(used)} for {n_atoms} atoms): pass the model with --cg-itp")
    return "\n".join(out + body) + "\n"

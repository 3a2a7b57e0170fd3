"""Pre-flight of ``multiscale molecule``: every input checked and every file of the system
written before any MD.

:func:`prepare` resolves the three sources (SMILES, mapping, Martini model), matches names,
completes the mapping and writes into the output folder::

    NAME.itp NAME_atomtypes.itp NAME.gro   AA molecule (GAFF2/AM1-BCC or --itp), mapping's names
    NAME_cg.itp                            its Martini 3 model
    NAME.map                               the mapping, beads in the Martini model's order
    aa.top cg.top box.gro                  the solvated system (topologies/ holds the includes)
    molecule.json                          what was done and why (notes), written last

Every problem is one line (:class:`MultiscaleError`) naming the file and what to do; nothing
that looks finished (``molecule.json``, ``sim.yaml``) exists before its inputs are complete.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MultiscaleError, clip
from ..io import atomic_write_text
from ..mapping import MoleculeMapping, parse_map_text
from . import library
from .aa import SmilesMolecule, parse_smiles, read_single, rename_gro, rename_itp, run_acpype
from .itp import read_itp_molecules, split_atomtypes
from .names import match_names

__all__ = ["MoleculeRequest", "prepare", "map_text"]

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,4}$")


@dataclass
class MoleculeRequest:
    """The arguments of ``multiscale molecule`` (lengths in ps, box edge in nm)."""

    name: str
    smiles: str
    mapping: str
    output: Path
    itp: Path | None = None
    cg_itp: Path | None = None
    ps: float = 100.0
    seed: int = 2024
    count: int = 24
    n_water: int = 700
    box: float = 3.2
    notes: list[str] = field(default_factory=list)

    def key(self) -> dict:
        """What the prepared files depend on (molecule.json records it; a rerun compares)."""
        def sha(p):
            return hashlib.sha256(Path(p).read_bytes()).hexdigest() if p else None

        return {"name": self.name, "smiles": self.smiles, "mapping": str(self.mapping),
                "mapping_sha256": sha(self.mapping_path()), "itp_sha256": sha(self.itp), "cg_itp_sha256": sha(self.cg_itp),
                "count": self.count, "n_water": self.n_water, "box_nm": self.box, "seed": self.seed}

    def mapping_path(self) -> Path:
        spec = str(self.mapping)
        if spec.startswith("vermouth:"):
            p = library.vermouth_mapping(spec.split(":", 1)[1])
            if p is None:
                raise MultiscaleError(f"--mapping {spec}: vermouth has no martini3001 CHARMM36 mapping of that molecule: "
                                      "give a .map file")
            return p
        p = Path(spec).expanduser()
        if not p.is_file():
            raise MultiscaleError(f"--mapping {spec}: file not found: give a .map file or vermouth:NAME (e.g. vermouth:TOLU)")
        return p


def _check_request(req: MoleculeRequest) -> None:
    if not NAME_RE.match(req.name):
        raise MultiscaleError(f"molecule name {clip(req.name, 20)!r}: use 1-5 letters/digits starting with a letter "
                              "(it becomes the GROMACS residue and moleculetype name)")
    if req.n_water % 4:
        raise MultiscaleError(f"--water {req.n_water}: must be a multiple of 4 (one Martini W bead = 4 waters)")
    for opt, p in (("--itp", req.itp), ("--cg-itp", req.cg_itp)):
        if p is not None and not Path(p).is_file():
            raise MultiscaleError(f"{opt} {p}: file not found")


def _load_mapping(req: MoleculeRequest) -> MoleculeMapping:
    path = req.mapping_path()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise MultiscaleError(f"{path}: cannot read the mapping ({exc}): give a text .map file") from None
    maps = parse_map_text(text, source=str(path))
    if len(maps) != 1:
        raise MultiscaleError(f"{path}: {len(maps)} molecules in the mapping: give a .map for the one molecule")
    return maps[0]


def _cg_model(req: MoleculeRequest, mm: MoleculeMapping) -> tuple[str, list[str], str]:
    """(itp text with moleculetype NAME, bead names in model order, source)."""
    if req.cg_itp:
        mols = read_itp_molecules(req.cg_itp)
        pick = [m for m in mols if m.name in (mm.cg_name, mm.molecule, req.name)] or (mols if len(mols) == 1 else [])
        if not pick:
            raise MultiscaleError(f"--cg-itp {req.cg_itp}: no moleculetype {mm.cg_name} (has {', '.join(m.name for m in mols)}): "
                                  "give the Martini model of this molecule")
        text = Path(req.cg_itp).read_text()
        beads = pick[0].names
        text = rename_itp(text, beads, req.name) if len(mols) == 1 else text
        return text, beads, str(req.cg_itp)
    for key in dict.fromkeys([mm.cg_name, mm.molecule, req.name]):
        text = library.martini3_itp(key, req.name)
        if text is not None:
            return text, read_itp_molecules("<vermouth>", text)[0].names, f"vermouth martini3001 {key}"
    raise MultiscaleError(f"no Martini 3 model of {mm.cg_name} in vermouth's library ({len(library.martini3_names())} small "
                          "molecules): give one with --cg-itp (parameterising new Martini models is out of scope)")


def _order_beads(mm: MoleculeMapping, model_beads: list[str], source: str, map_path: Path, notes: list[str]) -> list[str]:
    if list(mm.beads) == list(model_beads):
        return list(model_beads)
    if sorted(mm.beads) == sorted(model_beads):
        notes.append(f"bead order: the mapping lists {' '.join(mm.beads)}, the Martini model ({source}) "
                     f"{' '.join(model_beads)}; the written NAME.map follows the model")
        return list(model_beads)
    raise MultiscaleError(f"{map_path}: beads {' '.join(mm.beads)} do not match the Martini model's {' '.join(model_beads)} "
                          f"({source}): give the mapping written for this Martini model")

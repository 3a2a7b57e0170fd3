"""Lipids: a CHARMM36 lipid residue <-> its Martini 3 lipid, from a mapping file shipped as data.

Claims a single-residue moleculetype whose residue name has a file ``mappings/lipids/<NAME>.map``
on the data path (package data: POPC, POPE, POPG, POPS, DOPC, DPPC, DLPC -> Martini DUPC, CHL1 ->
Martini CHOL; a user adds a lipid by adding a file in a ``MULTISCALE_DATA_PATH`` folder) and which
no user mapping names (the user's own mapping wins, through the small-molecule class).  The CG
layout is the mapping's bead matrix and the Martini moleculetype name of ``[ cg_molecule ]``.
Learned lipid models are the next step: the engine stops with one line for a lipid block.
"""

from __future__ import annotations

from functools import cache

from ..errors import MultiscaleError
from .base import CGBlock, MoleculeClass
from .smallmol import residue_spans


@cache
def _lipid_mapping(resname: str):
    from ..mapping import load_mapping
    from ..paths import find_data

    try:
        path = find_data("mappings", f"lipids/{resname}.map")
    except MultiscaleError:
        return None
    return load_mapping(path).molecules.get(resname)


def lipid_mapping(moltype):
    """The shipped (or user data-path) lipid mapping of a single-residue moleculetype, or None."""
    spans = residue_spans(moltype)
    if len(spans) != 1 or not spans[0][0].replace("_", "").isalnum():
        return None
    return _lipid_mapping(spans[0][0].upper())


class Lipid(MoleculeClass):
    """A lipid with a data-folder mapping file (Martini 3 <-> CHARMM36 names)."""

    name = "lipid"
    trains = True  # one conditional internal-coordinate model per lipid moleculetype, like a small molecule

    def claims(self, moltype, mapping) -> bool:
        if mapping.for_moltype(moltype) is not None:
            return False  # the user's own mapping wins
        return lipid_mapping(moltype) is not None

    def layout(self, block, mapping, start: int, source: str, topology=None) -> CGBlock:
        mm = lipid_mapping(block.moltype)
        matrix = mm.matrix(block.moltype)
        return CGBlock(block, mm.cg_name, list(mm.beads), mm.n_beads, block.count, start, self.name, 1, matrix,
                       info={"mapping": mm.source})

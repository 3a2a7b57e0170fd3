"""Small molecules: one residue, mapped to its beads by a ``.map``/YAML mapping (data, not code)."""

from __future__ import annotations

from ..errors import MultiscaleError
from .base import CGBlock, MoleculeClass


def residue_spans(moltype) -> list[tuple[str, int, int]]:
    """(resname, first atom, stop) per residue of a moleculetype, in order."""
    res = getattr(moltype, "residues", None)
    if res is None:  # no residue indices: a new residue wherever the name changes
        res = [0]
        for a, b in zip(moltype.resnames, moltype.resnames[1:]):
            res.append(res[-1] + (a != b))
    spans, start = [], 0
    for i in range(1, len(res) + 1):
        if i == len(res) or res[i] != res[start]:
            spans.append((moltype.resnames[start], start, i))
            start = i
    return spans


class SmallMolecule(MoleculeClass):
    """A single-residue molecule with a mapping: beads are weighted centres of its atoms; a
    conditional internal-coordinate model is trained per molecule type."""

    name = "molecule"
    trains = True

    def claims(self, moltype, mapping) -> bool:
        return mapping.for_moltype(moltype) is not None

    def layout(self, block, mapping, start: int, source: str, topology=None) -> CGBlock:
        mt = block.moltype
        mm = mapping.for_moltype(mt)
        spans = residue_spans(mt)
        if len(spans) > 1 and mm.molecule != mt.name:
            listed = ", ".join(f"{r} {k + 1}" for k, (r, _, _) in enumerate(spans[:4])) + (" ..." if len(spans) > 4 else "")
            raise MultiscaleError(
                f"moleculetype {mt.name} of {source} has {len(spans)} residues ({listed}) but mapping {mm.source} maps "
                f"one residue ({mm.molecule}): residues {len(spans) - 1 if len(spans) == 2 else f'2-{len(spans)}'} would "
                f"be dropped; multi-residue chains need a chain mapping (proteins: not supported in this version) or a "
                f"[ molecule ] {mt.name} mapping covering every atom")
        matrix = mm.matrix(mt)
        mapped = matrix.sum(axis=0) > 0
        orphan = [mt.atom_names[i] for i in range(mt.n_atoms) if not mapped[i] and mt.elements[i] != "H"
                  and mt.atom_names[i] not in mm.atoms]
        if orphan:
            raise MultiscaleError(
                f"moleculetype {mt.name} of {source}: heavy atom(s) {' '.join(orphan[:8])}{' ...' if len(orphan) > 8 else ''} "
                f"are not in mapping {mm.source}: assign them to a bead, or list them with no bead to ignore them")
        return CGBlock(block, mm.cg_name, list(mm.beads), mm.n_beads, block.count, start, self.name, 1, matrix)

"""Amino-acid chains: beads exactly as martinize2 places them, through vermouth (no .map needed).

Claims a moleculetype whose residues are all amino acids (``data/classes/amino_acids.yaml``:
amber and CHARMM names, protonation variants, N/C-prefixed termini) and which no user mapping
names.  The CG layout and bead weights come from :func:`multiscale.chains.martinize.
chain_mapping_from_moltype` (vermouth's pipeline with its amber/charmm36 -> martini3001
mappings): coarse-graining reproduces martinize2's beads.  Training and backmapping chains are
not part of this version: the engine stops with one line for a chain block.
"""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path

from ..errors import MultiscaleError
from .base import CGBlock, MoleculeClass


@cache
def _names_from(path: str) -> frozenset:
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    res = {str(r).upper() for r in data.get("residues", [])}
    for p in data.get("termini_prefixes", []):
        res |= {str(p).upper() + r for r in list(res) if len(r) == 3}
    return frozenset(res)


def amino_acid_names() -> frozenset:
    """Residue names counted as amino acids (package data, extended by user data folders)."""
    from ..paths import find_all_data

    out: set = set()
    for p in find_all_data("classes", "amino_acids.yaml"):
        out |= _names_from(str(p))
    return frozenset(out)


def is_amino_acid_chain(moltype) -> bool:
    """All residues amino acids, and more than one atom."""
    aa = amino_acid_names()
    return moltype.n_atoms > 1 and all(r.upper() in aa for r in set(moltype.resnames))


@lru_cache(maxsize=64)
def _chain_mapping(moltype):
    from ..chains.martinize import chain_mapping_from_moltype

    return chain_mapping_from_moltype(moltype)


class Chain(MoleculeClass):
    """An amino-acid chain <-> its martinize2 Martini 3 beads (BB, SC1, ...)."""

    name = "chain"
    trains = False  # no per-moltype model: one residue-wise chain model (multiscale.chains.model) covers every sequence

    def claims(self, moltype, mapping) -> bool:
        if moltype.name in getattr(mapping, "molecules", {}):
            return False  # the user's own mapping of this moleculetype wins
        return is_amino_acid_chain(moltype)

    def layout(self, block, mapping, start: int, source: str, topology=None) -> CGBlock:
        try:
            cm = _chain_mapping(block.moltype)
        except ImportError as e:
            raise MultiscaleError(f"moleculetype {block.moltype.name} of {source} is an amino-acid chain: its beads come from "
                                  f"vermouth (martinize2), which is not installed: pip install vermouth") from e
        return CGBlock(block, block.moltype.name, [str(b) for b in cm.bead_names], cm.n_beads, block.count, start,
                       self.name, 1, cm.dense(),
                       info={"bead_resnames": [str(r) for r in cm.bead_resnames],
                             "bead_resids": [int(r) for r in cm.bead_resids]})

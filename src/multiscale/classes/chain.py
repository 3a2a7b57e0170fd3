"""Amino-acid chains: beads exactly as martinize2 places them, through vermouth (no .map needed).

Claims a moleculetype whose residues are all amino acids (``data/classes/amino_acids.yaml``:
amber and CHARMM names, protonation variants, N/C-prefixed termini) and which no user mapping
names.  The CG layout and bead weights come from :func:`multiscale.chains.martinize.
chain_mapping_from_moltype` (vermouth's pipeline with its amber/charmm36 -> martini3001
mappings): coarse-graining reproduces martinize2's beads.  Training and backmapping chains are
not part of this version: the engine stops with one line for a chain block.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

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
                       self.name, 1, cm.weights.tocsr(),
                       info={"bead_resnames": [str(r) for r in cm.bead_resnames],
                             "bead_resids": [int(r) for r in cm.bead_resids]})


#: the bead name martinize2 -go gives its virtual site per residue (at the residue's BB bead)
GO_SITE = "CA"


def go_site_count(itp_atoms) -> int:
    """How many trailing martinize2 Go virtual sites (atoms named :data:`GO_SITE`, one per residue,
    after every real bead) a chain's CG itp [ atoms ] list has; 0 for a topology without them."""
    names = [str(a) for a in itp_atoms]
    k = len(names)
    while k and names[k - 1] == GO_SITE:
        k -= 1
    return len(names) - k if k and GO_SITE not in names[:k] else 0  # k == 0: a CA moleculetype (calcium)


def with_go_sites(layout: list, names) -> list:
    """``layout`` with martinize2's Go-model virtual sites added to the chain blocks of the
    moleculetypes ``names``: one bead named :data:`GO_SITE` per residue, after the chain's own
    beads, at that residue's BB bead (its weights row repeated: mdrun puts the virtual site on
    BB, ``[ virtual_sitesn ]`` of one atom).  Later blocks shift; ``info["go_sites"]`` holds the
    count, so the backmap draws the chain on the beads before them."""
    import scipy.sparse as sp

    names = set(names)
    out, shift = [], 0
    for blk in layout:
        blk = replace(blk, start=blk.start + shift)
        if blk.kind == Chain.name and blk.aa_block.moltype.name in names and not blk.info.get("go_sites"):
            res = np.asarray(blk.info["bead_resids"])
            bb = np.array([i for i, n in enumerate(blk.bead_names) if n == "BB"])
            if len(bb) != len(np.unique(res)):
                raise MultiscaleError(f"moleculetype {blk.cg_name}: {len(bb)} BB beads for {len(np.unique(res))} residues: "
                                      "the Go model needs one BB bead per residue")
            info = dict(blk.info, go_sites=len(bb),
                        bead_resnames=list(blk.info["bead_resnames"]) + [blk.info["bead_resnames"][i] for i in bb],
                        bead_resids=list(blk.info["bead_resids"]) + [blk.info["bead_resids"][i] for i in bb])
            blk = replace(blk, bead_names=list(blk.bead_names) + [GO_SITE] * len(bb), n_beads=blk.n_beads + len(bb),
                          matrix=sp.vstack([blk.matrix, blk.matrix[bb]]).tocsr(), info=info)
            shift += len(bb) * blk.count
        out.append(blk)
    return out


def chain_names(layout: list) -> list[str]:
    """The moleculetype names of the amino-acid chain blocks of ``layout``."""
    return [b.aa_block.moltype.name for b in layout if b.kind == Chain.name]


def match_go_sites(layout: list, bead_names) -> list:
    """``layout``, or the layout with Go virtual sites on every chain (:func:`with_go_sites`) when a CG
    structure with these per-bead names is martinize2 -go output as is: one more bead per residue of
    each chain, named :data:`GO_SITE` where the Go layout puts them.  Anything else: ``layout`` unchanged
    (the bead-count check then names the mismatch)."""
    names = [str(n) for n in bead_names]
    total = layout[-1].stop if layout else 0
    chains = chain_names(layout)
    if len(names) == total or not chains:
        return layout
    go = with_go_sites(layout, chains)
    if len(names) != go[-1].stop:
        return layout
    for blk in go:
        if blk.info.get("go_sites"):
            first = blk.n_beads - blk.info["go_sites"]
            for m in range(blk.count):
                at = blk.start + m * blk.n_beads
                if any(n != GO_SITE for n in names[at + first:at + blk.n_beads]):
                    return layout
    return go

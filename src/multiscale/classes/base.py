"""What every molecule class provides, and the CG block it produces.

A molecule class (water, ion, small molecule; polymer chain and lipid next) owns, for the
molecule types it claims in an AA topology: how they are recognised (:meth:`claims`), their CG
layout (:meth:`layout` -> :class:`CGBlock`) and how AA coordinates become beads
(:meth:`map_beads`).  Whether a model is trained for them is :attr:`trains`; the engine looks up
how to draw/place a block by its :attr:`CGBlock.kind` (the class name).  Lengths nm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

__all__ = ["CGBlock", "MoleculeClass"]


@dataclass
class CGBlock:
    """The CG image of one AA molecule block.

    ``n_beads`` per CG molecule, ``count`` CG molecules, first bead at global bead index
    ``start``; ``kind`` the molecule class that produced it; ``per_bead`` AA molecules per bead
    (4 for Martini water); ``matrix`` (n_beads, n_atoms) bead weights per AA molecule (None for
    water, whose beads are spatial groups of molecules; scipy sparse for amino-acid chains, apply
    it with :func:`multiscale.geometry.apply_weights`); ``info`` class-specific details (e.g.
    an ion's minimum water-oxygen distance).
    """

    aa_block: object
    cg_name: str
    bead_names: list[str]
    n_beads: int
    count: int
    start: int
    kind: str = "molecule"
    per_bead: int = 1
    matrix: object = field(default=None, repr=False)  # np.ndarray, scipy sparse or None
    info: dict = field(default_factory=dict, repr=False)

    @property
    def stop(self) -> int:
        return self.start + self.n_beads * self.count

    @property
    def is_water(self) -> bool:
        return self.kind == "water"


class MoleculeClass:
    """Base class of the molecule-class registry (:mod:`multiscale.classes`)."""

    #: Registry key; also the ``kind`` of the CG blocks this class lays out.
    name: ClassVar[str] = ""
    #: Whether ``multiscale train`` fits a conditional model for this class's molecules.
    trains: ClassVar[bool] = False

    def claims(self, moltype, mapping) -> bool:
        """Whether this class handles ``moltype`` (a :class:`multiscale.topology.MoleculeType`)."""
        raise NotImplementedError

    def layout(self, block, mapping, start: int, source: str, topology=None) -> CGBlock:
        """The CG block of AA ``block`` starting at bead ``start`` (raises MultiscaleError on bad
        input); ``topology`` the whole AA system, for layouts that depend on other blocks."""
        raise NotImplementedError

    def map_beads(self, x: np.ndarray, box: np.ndarray, blk: CGBlock, seed: int = 0):
        """Beads of one block: x (F, count, n_atoms, 3) whole molecules, box (F, 3) or (F, 3, 3) nm
        -> (beads (F, n_cg * n_beads, 3) nm, groups: per-frame list of index arrays or None)."""
        from ..geometry import apply_weights

        beads = apply_weights(blk.matrix, x)
        return beads.reshape(x.shape[0], -1, 3), None

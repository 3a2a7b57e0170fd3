"""Water: three-site AA waters grouped ``per_bead`` (Martini 3: 4) to one CG bead."""

from __future__ import annotations

import numpy as np

from ..errors import MultiscaleError
from ..geometry import minimum_image
from .base import CGBlock, MoleculeClass

WATER_NAMES = frozenset({"SOL", "WAT", "HOH", "TIP3", "TP3", "H2O", "TIP3P", "SPC", "SPCE"})


def is_three_site_water(moltype) -> bool:
    """One O and two H, named like water (moleculetype or residue name)."""
    return (moltype.n_atoms == 3 and sorted(moltype.elements) == ["H", "H", "O"]
            and (moltype.name.upper() in WATER_NAMES or moltype.resnames[0].upper() in WATER_NAMES))


class Water(MoleculeClass):
    """AA water <-> Martini W: each bead is the centre of mass of ``per_bead`` nearby waters
    (spatial grouping, :func:`multiscale.water.group_waters`; one that lands on a bead of another
    kind is then moved off it, :func:`multiscale.coarse_grain._clear_water_beads`); placed from a
    cluster bank."""

    name = "water"
    trains = False

    def claims(self, moltype, mapping) -> bool:
        return is_three_site_water(moltype)

    def layout(self, block, mapping, start: int, source: str, topology=None) -> CGBlock:
        from .ion import hydration_waters

        w = mapping.water
        shells = hydration_waters(topology, mapping) if topology is not None else 0
        n = block.count - shells
        if n < 0 or n % w.per_bead:
            extra = f" left after {shells} ion hydration waters (ions.waters_per_ion)" if shells else ""
            raise MultiscaleError(
                f"{source}: {n} {block.moltype.name} molecules{extra} is not a multiple of {w.per_bead}: remove "
                f"{n % w.per_bead} water molecule(s) (gmx solvate -maxsol, or gmx genion replacing them with ions) so "
                f"every {w.cg} bead gets {w.per_bead}")
        if shells and sum(b.moltype.is_water for b in topology.blocks) > 1:
            raise MultiscaleError(f"{source}: hydrated ions (ions.waters_per_ion) need all water in one [ molecules ] "
                                  f"entry: merge the {block.moltype.name} lines")
        return CGBlock(block, w.cg, [w.bead], 1, n // w.per_bead, start, self.name, w.per_bead,
                       info={"hydration_waters": shells})

    def map_beads(self, x: np.ndarray, box: np.ndarray, blk: CGBlock, seed: int = 0, exclude=None):
        from ..water import group_waters

        m = blk.aa_block.moltype.masses
        com = np.einsum("a,fmak->fmk", m / m.sum(), x)  # (F, n_w, 3)
        oxygen = int(np.argmax(m))
        nf = x.shape[0]
        beads = np.empty((nf, blk.count, 3))
        groups = []
        for f in range(nf):  # one grouping per frame (a KD-tree problem, not a per-molecule loop)
            free = np.arange(x.shape[1]) if exclude is None else np.setdiff1d(np.arange(x.shape[1]), exclude[f].ravel())
            g = free[group_waters(x[f, free, oxygen, :], box[f], blk.per_bead, seed=seed + f)]
            groups.append(g)
            c = com[f][g]  # (n_groups, per_bead, 3): members made whole around the first one
            c = c[:, :1] + minimum_image(c - c[:, :1], box[f])
            beads[f] = c.mean(axis=1)
        return beads, groups

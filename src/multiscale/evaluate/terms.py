"""Geometric terms of a molecule type, enumerated from its bond graph alone (tool-independent).

Everything here is a pure function of a :class:`~multiscale.topology.MoleculeType` (names,
elements, bonds); no force-field parameters and no coordinates are used, so any backmapping
method is judged on the same terms.

* bonds, angles (i-j-k with i, k bonded to j) and proper torsions (i-j-k-l along bonds j-k);
* term *types*: terms whose atoms are graph-equivalent (same Weisfeiler-Lehman symmetry class
  per position, e.g. the three methyl hydrogens) are pooled into one type, named after its
  first member (``"H11-C1-C2-C3"``); heavy-atom torsions are never pooled unless the graph is
  symmetric (e.g. the two halves of a symmetric molecule);
* stereocentres, cis/trans bonds (stereo C=C and amide/peptide C(=O)-N, the latter flagged and
  measured as CA-C-N-CA) and rings come from :mod:`multiscale.graph`: the same definitions the
  backmapping certificate enforces.

All indices are 0-based within the molecule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..graph import MolecularGraph

__all__ = ["TermType", "MoleculeTerms", "molecule_terms"]


@dataclass
class TermType:
    """One pooled term type: ``atoms`` (n_members, k) index tuples of equivalent terms.

    kind: ``bond`` (k=2, nm), ``angle`` (k=3, rad) or ``torsion`` (k=4, rad);
    heavy: all atoms of the term are non-hydrogen.
    """

    kind: str
    name: str
    atoms: np.ndarray
    heavy: bool

    @property
    def n_members(self) -> int:
        return len(self.atoms)


@dataclass
class MoleculeTerms:
    """All terms of one molecule type (see the module docstring for definitions)."""

    moltype: str
    n_atoms: int
    atom_names: tuple
    types: list[TermType] = field(default_factory=list)
    stereocentres: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), int))  # (n, 4): centre, 3 neighbours
    double_bonds: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), int))  # (n, 4): torsion a-X-Y-b
    peptide: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (n,) per double bond
    rings: list[np.ndarray] = field(default_factory=list)
    excluded_pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), int))  # 1-2 and 1-3 pairs, i<j

    def label(self, idx) -> str:
        return "-".join(self.atom_names[i] for i in idx)


def _pool(kind, terms: list[tuple], cls, names, heavy_mask) -> list[TermType]:
    groups: dict[tuple, list[tuple]] = {}
    for t in terms:
        key = tuple(int(cls[i]) for i in t)
        key = min(key, key[::-1])
        groups.setdefault(key, []).append(t)
    out = []
    for members in groups.values():
        members.sort()
        first = members[0]
        out.append(TermType(kind=kind, name="-".join(names[i] for i in first),
                            atoms=np.asarray(members, dtype=int).reshape(-1, len(first)),
                            heavy=bool(all(heavy_mask[i] for i in first))))
    out.sort(key=lambda t: tuple(t.atoms[0]))
    return out


def molecule_terms(moltype) -> MoleculeTerms:
    """Enumerate the terms of one :class:`~multiscale.topology.MoleculeType`."""
    n = moltype.n_atoms
    names = tuple(moltype.atom_names)
    elements = tuple(moltype.elements)
    heavy = np.array([e != "H" for e in elements])
    g = MolecularGraph(n, moltype.bonds, elements, names)
    adj = g.adj
    cls = g.classes()

    bonds = [tuple(b) for b in g.bonds.tolist()]
    angles = [(i, j, k) for j in range(n) for x, i in enumerate(adj[j]) for k in adj[j][x + 1:]]
    torsions = []
    for j, k in bonds:
        for i in adj[j]:
            if i == k:
                continue
            for l in adj[k]:
                if l in (j, i):
                    continue
                torsions.append((i, j, k, l))
    types = (_pool("bond", bonds, cls, names, heavy) + _pool("angle", angles, cls, names, heavy)
             + _pool("torsion", torsions, cls, names, heavy))
    centres, nbs = g.stereocentres()
    double, peptide = g.cistrans_bonds()
    return MoleculeTerms(
        moltype=moltype.name, n_atoms=n, atom_names=names, types=types,
        stereocentres=np.column_stack([centres, nbs]).astype(int).reshape(-1, 4),
        double_bonds=double.astype(int), peptide=peptide,
        rings=g.rings(), excluded_pairs=g.excluded_pairs(2),
    )

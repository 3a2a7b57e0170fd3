"""Geometric terms of a molecule type, enumerated from its bond graph alone (tool-independent).

Everything here is a pure function of a :class:`~multiscale.topology.MoleculeType` (names,
elements, bonds); no force-field parameters and no coordinates are used, so any backmapping
method is judged on the same terms.

* bonds, angles (i-j-k with i, k bonded to j) and proper torsions (i-j-k-l along bonds j-k);
* term *types*: terms whose atoms are graph-equivalent (same Weisfeiler-Lehman symmetry class
  per position, e.g. the three methyl hydrogens) are pooled into one type, named after its
  first member (``"H11-C1-C2-C3"``); heavy-atom torsions are never pooled unless the graph is
  symmetric (e.g. the two halves of a symmetric molecule);
* stereocentres: 4-connected atoms whose four neighbours lie in four different symmetry
  classes (hence four non-isomorphic substituents);
* double-bond-like bonds: a bond between two 3-connected C/N atoms, not in a ring, whose ends
  each carry two non-equivalent substituents; peptide bonds (O=C-N with CA on both sides) are
  flagged and measured as CA-C-N-CA;
* rings: the shortest cycle through each ring bond (3..8 atoms), as ordered atom lists.

All indices are 0-based within the molecule.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = ["TermType", "MoleculeTerms", "molecule_terms", "symmetry_classes", "neighbours", "close_pairs"]

MAX_RING = 8


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


def neighbours(n_atoms: int, bonds: np.ndarray) -> list[list[int]]:
    """Adjacency lists (sorted) of a molecule's bond graph."""
    adj: list[set[int]] = [set() for _ in range(n_atoms)]
    for a, b in np.asarray(bonds, dtype=int).reshape(-1, 2):
        if a != b:
            adj[a].add(int(b))
            adj[b].add(int(a))
    return [sorted(s) for s in adj]


def symmetry_classes(elements, adj: list[list[int]]) -> np.ndarray:
    """Weisfeiler-Lehman colour refinement: (n_atoms,) int class per atom.

    Start from (element, degree), refine by the multiset of neighbour classes until the
    partition stops changing.  Graph-equivalent atoms always share a class.
    """
    n = len(adj)
    labels = [(str(elements[i]), len(adj[i])) for i in range(n)]
    cls = _relabel(labels)
    for _ in range(n + 1):
        new = _relabel([(cls[i], tuple(sorted(cls[j] for j in adj[i]))) for i in range(n)])
        if len(set(new)) == len(set(cls)):
            break
        cls = new
    return np.asarray(cls, dtype=int)


def _relabel(labels) -> list[int]:
    table = {lab: k for k, lab in enumerate(sorted(set(labels)))}
    return [table[lab] for lab in labels]


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


def _rings(adj: list[list[int]]) -> list[np.ndarray]:
    """Shortest cycle (<= MAX_RING atoms) through each ring bond, ordered, deduplicated."""
    n = len(adj)
    # prune tree-like parts: repeatedly remove atoms of degree <= 1
    deg = np.array([len(a) for a in adj])
    alive = np.ones(n, bool)
    queue = deque(np.flatnonzero(deg <= 1).tolist())
    while queue:
        a = queue.popleft()
        if not alive[a]:
            continue
        alive[a] = False
        for b in adj[a]:
            if alive[b]:
                deg[b] -= 1
                if deg[b] <= 1:
                    queue.append(b)
    seen: set[frozenset] = set()
    rings = []
    for u in np.flatnonzero(alive):
        for v in adj[u]:
            if v <= u or not alive[v]:
                continue
            # BFS from v to u without the edge u-v, depth-limited
            parent = {v: -1}
            frontier = [v]
            found = False
            for _depth in range(MAX_RING - 1):
                nxt = []
                for a in frontier:
                    for b in adj[a]:
                        if not alive[b] or b in parent or (a == v and b == u):
                            continue
                        parent[b] = a
                        if b == u:
                            found = True
                            break
                        nxt.append(b)
                    if found:
                        break
                if found or not nxt:
                    break
                frontier = nxt
            if not found:
                continue
            path = [u]
            while path[-1] != v:
                path.append(parent[path[-1]])
            key = frozenset(path)
            if key not in seen and len(path) <= MAX_RING:
                seen.add(key)
                rings.append(np.asarray(path, dtype=int))
    return rings


def close_pairs(adj: list[list[int]]) -> np.ndarray:
    """(n, 2) sorted pairs i<j separated by one or two bonds (1-2 and 1-3 pairs)."""
    pairs = set()
    for j, nb in enumerate(adj):
        for i in nb:
            pairs.add((min(i, j), max(i, j)))
        for x in range(len(nb)):
            for y in range(x + 1, len(nb)):
                pairs.add((min(nb[x], nb[y]), max(nb[x], nb[y])))
    return np.asarray(sorted(pairs), dtype=int).reshape(-1, 2)


def molecule_terms(moltype) -> MoleculeTerms:
    """Enumerate the terms of one :class:`~multiscale.topology.MoleculeType`."""
    n = moltype.n_atoms
    names = tuple(moltype.atom_names)
    elements = tuple(moltype.elements)
    heavy = np.array([e != "H" for e in elements])
    adj = neighbours(n, moltype.bonds)
    cls = symmetry_classes(elements, adj)

    bonds = sorted({(min(a, b), max(a, b)) for a in range(n) for b in adj[a]})
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

    rings = _rings(adj)
    ring_bonds = set()
    for r in rings:
        for a, b in zip(r, np.roll(r, -1)):
            ring_bonds.add((min(a, b), max(a, b)))

    stereo = []
    for c in range(n):
        nb = adj[c]
        if len(nb) == 4 and elements[c] != "H" and len({int(cls[x]) for x in nb}) == 4:
            stereo.append((c, nb[0], nb[1], nb[2]))

    double, peptide = [], []
    for a, b in bonds:
        if (a, b) in ring_bonds:
            continue
        if not (elements[a] in ("C", "N") and elements[b] in ("C", "N") and len(adj[a]) == 3 and len(adj[b]) == 3):
            continue
        sa = [x for x in adj[a] if x != b]
        sb = [x for x in adj[b] if x != a]
        if cls[sa[0]] == cls[sa[1]] or cls[sb[0]] == cls[sb[1]]:
            continue  # e.g. =CH2 or -NH2: cis/trans undefined
        pep = _peptide(a, b, sa, sb, elements, adj)
        if pep is not None:
            double.append(pep)
            peptide.append(True)
            continue
        # substituent of each end: heavy before H, then the smaller topology index
        pa = min(sa, key=lambda x: (not heavy[x], x))
        pb = min(sb, key=lambda x: (not heavy[x], x))
        double.append((pa, a, b, pb))
        peptide.append(False)

    return MoleculeTerms(
        moltype=moltype.name, n_atoms=n, atom_names=names, types=types,
        stereocentres=np.asarray(stereo, dtype=int).reshape(-1, 4),
        double_bonds=np.asarray(double, dtype=int).reshape(-1, 4),
        peptide=np.asarray(peptide, dtype=bool),
        rings=rings, excluded_pairs=close_pairs(adj),
    )


def _peptide(a, b, sa, sb, elements, adj):
    """CA-C-N-CA torsion if a-b is an amide C(=O)-N between two carbons, else None."""
    for c, nn, sc, sn in ((a, b, sa, sb), (b, a, sb, sa)):
        if elements[c] != "C" or elements[nn] != "N":
            continue
        o = [x for x in sc if elements[x] == "O" and len(adj[x]) == 1]
        ca1 = [x for x in sc if elements[x] == "C"]
        ca2 = [x for x in sn if elements[x] == "C"]
        if o and ca1 and ca2:
            # proline's N has two carbons: CA is the one that is not in the side-chain ring
            # closure to CD; take the carbon bonded to a carbonyl-bearing carbon if ambiguous
            if len(ca2) > 1:
                ca2 = sorted(ca2, key=lambda x: -sum(elements[y] == "C" and len(adj[y]) == 3 for y in adj[x]))
            return (ca1[0], c, nn, ca2[0])
    return None

"""Atom names from a mapping's naming, matched by graph isomorphism of the bond graphs.

A topology made from SMILES (acpype: C, C1, H, H1, ...) and a mapping written for another
naming (vermouth's CHARMM names: CT, CZ, CE1, H11, ...) describe the same molecule.  The
bond graphs with elements as node labels are matched with networkx's VF2 (exact
isomorphism, not a heuristic); the first isomorphism in a canonical search order is taken, so
symmetric atoms (the three methyl hydrogens, the two ortho carbons) are resolved the same way
every time.  Any isomorphism is equally valid for them: they are exchanged by a symmetry of
the molecule.
"""

from __future__ import annotations

from collections import Counter

from ..errors import MultiscaleError

__all__ = ["match_names", "formula"]


def formula(elements) -> str:
    """Hill formula (C, H first, then alphabetical), e.g. C7H8."""
    c = Counter(elements)
    keys = [k for k in ("C", "H") if k in c] + sorted(k for k in c if k not in ("C", "H"))
    return "".join(f"{k}{c[k] if c[k] > 1 else ''}" for k in keys)


def _graph(elements, bonds):
    import networkx as nx

    g = nx.Graph()
    for i, e in enumerate(elements):
        g.add_node(i, element=e)
    g.add_edges_from((int(a), int(b)) for a, b in bonds)
    return g


def match_names(ref_names, ref_elements, ref_bonds, elements, bonds, what: str = "the molecule",
                ref_what: str = "the reference") -> list[str]:
    """For each atom of the target graph (``elements``, 0-based ``bonds``), the name of its
    image in the reference graph.  Raises a one-line :class:`MultiscaleError` naming both
    formulas (or the first difference) when the graphs are not isomorphic."""
    from networkx.algorithms.isomorphism import GraphMatcher

    if Counter(ref_elements) != Counter(elements):
        raise MultiscaleError(f"{what} is {formula(elements)} but {ref_what} is {formula(ref_elements)}: "
                              "they are not the same molecule (check the SMILES, its protonation state and the mapping)")
    g_ref, g = _graph(ref_elements, ref_bonds), _graph(elements, bonds)
    gm = GraphMatcher(g, g_ref, node_match=lambda a, b: a["element"] == b["element"])
    iso = next(gm.isomorphisms_iter(), None)
    if iso is None:
        raise MultiscaleError(f"{what} and {ref_what} are both {formula(elements)} but their bonds differ "
                              "(another isomer or tautomer): fix the SMILES or the mapping")
    return [ref_names[iso[i]] for i in range(len(elements))]

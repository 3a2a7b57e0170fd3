"""The molecular-graph module: stereocentres, double/peptide bonds and rings on molecules with known
answers, and the certificate and the evaluator finding exactly the same features."""

import time
from pathlib import Path

import numpy as np
import pytest

from multiscale.backmap.certify import find_double_bonds, find_stereocentres
from multiscale.evaluate.terms import molecule_terms
from multiscale.graph import MolecularGraph, chirality_signs, cis_states
from multiscale.topology import MoleculeType, load_topology

VALENCE = {"C": 4, "N": 3, "O": 2, "S": 2, "P": 5}


def molecule(heavy, bonds, double=(), hydrogens=None):
    """All-atom graph from a heavy-atom skeleton: hydrogens fill each heavy atom's valence.

    heavy: elements; bonds: heavy-atom pairs (0-based); double: the pairs that are double bonds;
    hydrogens: {atom: count} overrides (charged atoms).  Returns (n_atoms, bonds (m, 2), elements).
    """
    order = np.zeros(len(heavy), int)
    for a, b in bonds:
        order[a] += 1
        order[b] += 1
    for a, b in double:
        order[a] += 1
        order[b] += 1
    el, allb = list(heavy), [tuple(b) for b in bonds]
    for a, e in enumerate(heavy):
        nh = (hydrogens or {}).get(a, VALENCE[e] - order[a])
        for _ in range(nh):
            allb.append((a, len(el)))
            el.append("H")
    return len(el), np.array(allb, int), el


def moltype(name, n, bonds, el):
    return MoleculeType(name=name, atom_names=tuple(f"{e}{i + 1}" for i, e in enumerate(el)), resnames=(name,) * n,
                        elements=tuple(el), masses=np.ones(n), charges=np.zeros(n), bonds=np.asarray(bonds, int))


def chain(k):
    return [(i, i + 1) for i in range(k - 1)]


def octan2ol():
    return molecule(["C"] * 8 + ["O"], chain(8) + [(1, 8)])


def alanine_dipeptide():
    # ACE: CH3(0) C(1) =O(2); ALA: N(3) CA(4) CB(5) C(6) =O(7); NME: N(8) CH3(9)
    return molecule(["C", "C", "O", "N", "C", "C", "C", "O", "N", "C"],
                    [(0, 1), (1, 2), (1, 3), (3, 4), (4, 5), (4, 6), (6, 7), (6, 8), (8, 9)], double=[(1, 2), (6, 7)])


def oleoyl_fragment():
    # methyl (Z)-dec-4-enoate-like: C0..C9 chain, C4=C5; ester C9(=O10)-O11-C12
    return molecule(["C"] * 10 + ["O", "O", "C"], chain(10) + [(9, 10), (9, 11), (11, 12)], double=[(4, 5), (9, 10)])


def cholesterol():
    c = [(1, 2), (2, 3), (3, 4), (4, 5), (5, 10), (10, 1), (5, 6), (6, 7), (7, 8), (8, 9), (9, 10), (8, 14), (14, 13),
         (13, 12), (12, 11), (11, 9), (13, 17), (17, 16), (16, 15), (15, 14), (10, 19), (13, 18), (17, 20), (20, 21),
         (20, 22), (22, 23), (23, 24), (24, 25), (25, 26), (25, 27)]
    bonds = [(a - 1, b - 1) for a, b in c] + [(2, 27)]  # O3 is atom 27
    return molecule(["C"] * 27 + ["O"], bonds, double=[(4, 5)])


def lipid_fragment():
    """Glycerol (C0 C1 C2) with an acetyl on sn-1, a cis pent-3-enoyl on sn-2, phosphocholine on sn-3."""
    heavy = ["C", "C", "C", "O", "C", "O", "C", "O", "C", "O", "C", "C", "C", "C", "O", "P", "O", "O", "O", "C", "C",
             "N", "C", "C", "C"]
    bonds = [(0, 1), (1, 2), (0, 3), (3, 4), (4, 5), (4, 6), (1, 7), (7, 8), (8, 9), (8, 10), (10, 11), (11, 12),
             (12, 13), (2, 14), (14, 15), (15, 16), (15, 17), (15, 18), (18, 19), (19, 20), (20, 21), (21, 22),
             (21, 23), (21, 24)]
    return molecule(heavy, bonds, double=[(4, 5), (8, 9), (11, 12), (15, 16)], hydrogens={17: 0, 21: 0})


def polyalanine(k):
    """ACE-(ALA)k-NME."""
    heavy, bonds, double = ["C", "C", "O"], [(0, 1), (1, 2)], [(1, 2)]
    prev_c = 1
    for _ in range(k):
        n = len(heavy)
        heavy += ["N", "C", "C", "C", "O"]  # N CA CB C O
        bonds += [(prev_c, n), (n, n + 1), (n + 1, n + 2), (n + 1, n + 3), (n + 3, n + 4)]
        double.append((n + 3, n + 4))
        prev_c = n + 3
    n = len(heavy)
    heavy += ["N", "C"]
    bonds += [(prev_c, n), (n, n + 1)]
    return molecule(heavy, bonds, double)


def dipeptide(side):
    """ACE-X-NME; side: list of (element, parent) heavy atoms of the side chain, parent 0 = CB's CA
    (index 4), k >= 1 = the k-th side-chain atom.  CB = first side-chain atom (index 9)."""
    heavy = ["C", "C", "O", "N", "C", "C", "O", "N", "C"]  # CH3 C O N CA C O N CH3
    bonds = [(0, 1), (1, 2), (1, 3), (3, 4), (4, 5), (5, 6), (5, 7), (7, 8)]
    for el, parent in side:
        bonds.append((4 if parent == 0 else 8 + parent, len(heavy)))
        heavy.append(el)
    return molecule(heavy, bonds, double=[(1, 2), (5, 6)])


def proline():
    """ACE-PRO-NME: the side chain closes on N (CD bonded to N)."""
    heavy = ["C", "C", "O", "N", "C", "C", "O", "N", "C", "C", "C", "C"]  # ..., CB 9, CG 10, CD 11
    bonds = [(0, 1), (1, 2), (1, 3), (3, 4), (4, 5), (5, 6), (5, 7), (7, 8), (4, 9), (9, 10), (10, 11), (11, 3)]
    return molecule(heavy, bonds, double=[(1, 2), (5, 6)], hydrogens={3: 0})


def ring(k, aromatic=False, subst=()):
    heavy = ["C"] * k
    bonds = [(i, (i + 1) % k) for i in range(k)]
    double = [(i, i + 1) for i in range(0, k, 2)] if aromatic else []
    for at in subst:
        bonds.append((at, len(heavy)))
        heavy.append("C")
    return molecule(heavy, bonds, double)


CASES = {
    "octan-2-ol": (octan2ol, [1], []),
    "alanine dipeptide": (alanine_dipeptide, [4], [(0, 1, 3, 4), (4, 6, 8, 9)]),
    "oleoyl fragment": (oleoyl_fragment, [], [(3, 4, 5, 6)]),
    "cholesterol": (cholesterol, [2, 7, 8, 9, 12, 13, 16, 19], []),
    "lipid fragment": (lipid_fragment, [1], [(10, 11, 12, 13)]),
    "threonine": (lambda: dipeptide([("C", 0), ("O", 1), ("C", 1)]), [4, 9], [(0, 1, 3, 4), (4, 5, 7, 8)]),
    "isoleucine": (lambda: dipeptide([("C", 0), ("C", 1), ("C", 1), ("C", 2)]), [4, 9], [(0, 1, 3, 4), (4, 5, 7, 8)]),
    "valine": (lambda: dipeptide([("C", 0), ("C", 1), ("C", 1)]), [4], [(0, 1, 3, 4), (4, 5, 7, 8)]),
    "leucine": (lambda: dipeptide([("C", 0), ("C", 1), ("C", 2), ("C", 2)]), [4], [(0, 1, 3, 4), (4, 5, 7, 8)]),
    "proline": (proline, [4], [(0, 1, 3, 4), (4, 5, 7, 8)]),
    "cyclohexane": (lambda: ring(6), [], []),
    "benzene": (lambda: ring(6, aromatic=True), [], []),
    "methylcyclohexane": (lambda: ring(6, subst=[0]), [], []),
    "1,2-dimethylcyclohexane": (lambda: ring(6, subst=[0, 1]), [0, 1], []),
    "1,4-dimethylcyclohexane": (lambda: ring(6, subst=[0, 3]), [], []),
    "toluene": (lambda: ring(6, aromatic=True, subst=[0]), [], []),
}


@pytest.mark.parametrize("name", list(CASES))
def test_known_features(name):
    build, centres, quads = CASES[name]
    n, bonds, el = build()
    g = MolecularGraph(n, bonds, el)
    c, nb = g.stereocentres()
    assert c.tolist() == centres
    assert all(nb[k].tolist() == g.adj[ci][:3] for k, ci in enumerate(c))
    assert [tuple(q) for q in g.cistrans_bonds()[0].tolist()] == quads


@pytest.mark.parametrize("name", list(CASES))
def test_certificate_and_evaluator_agree(name):
    n, bonds, el = CASES[name][0]()
    c, nb = find_stereocentres(n, bonds, el)
    t = molecule_terms(moltype("MOL", n, bonds, el))
    assert np.array_equal(t.stereocentres, np.column_stack([c, nb]).reshape(-1, 4))
    assert np.array_equal(t.double_bonds, find_double_bonds(n, bonds, el))


def test_heptanol_agrees_and_has_no_stereo():
    top = load_topology(Path(__file__).resolve().parents[1] / "src" / "multiscale" / "data" / "examples" / "heptanol" / "aa.top")
    mt = top.moltypes["HPO"]
    t = molecule_terms(mt)
    c, _ = find_stereocentres(mt.n_atoms, mt.bonds, mt.elements)
    assert len(c) == len(t.stereocentres) == 0
    assert len(find_double_bonds(mt.n_atoms, mt.bonds, mt.elements)) == len(t.double_bonds) == 0
    assert MolecularGraph.from_moltype(mt).rings() == []


def test_peptide_flags_and_rings():
    n, bonds, el = alanine_dipeptide()
    q, pep = MolecularGraph(n, bonds, el).amide_bonds()
    assert pep.tolist() == [True, True]
    assert MolecularGraph(n, bonds, el).peptide_bonds().tolist() == [[0, 1, 3, 4], [4, 6, 8, 9]]
    t = molecule_terms(moltype("ALA", n, bonds, el))
    assert t.peptide.tolist() == [True, True]
    n, bonds, el = cholesterol()
    g = MolecularGraph(n, bonds, el)
    assert sorted(len(r) for r in g.rings()) == [5, 6, 6, 6]
    # the ring C5=C6 is perceived as a double bond but pinned by its ring: no cis/trans feature
    assert (4, 5) in map(tuple, g.perceived_double_bonds().tolist()) and len(g.double_bonds()) == 0
    n, bonds, el = ring(6, aromatic=True)
    g = MolecularGraph(n, bonds, el)
    assert len(g.rings()) == 1 and len(g.perceived_double_bonds()) == 3
    assert g.components().tolist() == [0] * n


def test_conjugated_single_bond_and_carbonyl_are_not_double():
    # hexa-2,4-dienal-like: O0=C1-C2=C3-C4=C5-C6: only C2=C3 and C4=C5 are cis/trans bonds
    n, bonds, el = molecule(["O", "C", "C", "C", "C", "C", "C"], chain(7), double=[(0, 1), (2, 3), (4, 5)])
    g = MolecularGraph(n, bonds, el)
    assert g.perceived_double_bonds().tolist() == [[0, 1], [2, 3], [4, 5]]
    assert [tuple(q[1:3]) for q in g.double_bonds().tolist()] == [(2, 3), (4, 5)]
    # =CH2 end: no cis/trans
    n, bonds, el = molecule(["C", "C", "C"], chain(3), double=[(0, 1)])
    assert len(MolecularGraph(n, bonds, el).double_bonds()) == 0


def test_components_and_exclusions():
    g = MolecularGraph(5, np.array([(3, 4), (0, 1)]), ["C", "C", "O", "C", "C"])
    assert g.components().tolist() == [0, 0, 1, 2, 2]
    n, bonds, el = octan2ol()
    g = MolecularGraph(n, bonds, el)
    ex = g.exclusion_matrix(2)
    assert ex[0, 1] and ex[0, 2] and not ex[0, 3] and ex[0, 0]
    assert g.side(1, 8).tolist() == [8] + [i for i in range(n) if el[i] == "H" and bonds[(bonds[:, 1] == i)][0, 0] == 8]
    n, bonds, el = ring(6)
    assert MolecularGraph(n, bonds, el).side(0, 1) is None


def test_chirality_and_cis_vectorised():
    rng = np.random.default_rng(0)
    n, bonds, el = octan2ol()
    g = MolecularGraph(n, bonds, el)
    c, nb = g.stereocentres()
    x = rng.normal(size=(4, 3, n, 3))
    s = chirality_signs(x, c, nb)
    assert s.shape == (4, 3, 1)
    assert np.array_equal(chirality_signs(x * [1, 1, -1], c, nb), -s)
    x[1, 2, nb[0, 0]] = np.nan
    assert np.isnan(chirality_signs(x, c, nb)[1, 2, 0])
    q = np.array([[0, 1, 2, 3]])
    cis = np.array([[0.0, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 0]])
    trans = cis.copy()
    trans[3] = [1, -1, 0]
    assert cis_states(np.stack([cis, trans]), q).tolist() == [[1.0], [-1.0]]


def test_large_chain_is_fast():
    n, bonds, el = polyalanine(150)
    t0 = time.perf_counter()
    g = MolecularGraph(n, bonds, el)
    c, _ = g.stereocentres()
    q, pep = g.cistrans_bonds()
    dt = time.perf_counter() - t0
    assert len(c) == 150 and len(q) == 151 and pep.all()
    assert dt < 5.0

"""Evaluation metrics and term enumeration on synthetic cases with known answers."""

import numpy as np
import pytest

from multiscale.errors import MultiscaleError
from multiscale.evaluate import metrics as M
from multiscale.evaluate.match import match_atoms
from multiscale.evaluate.terms import molecule_terms
from multiscale.geometry import minimum_image
from multiscale.topology import MoleculeBlock, MoleculeType, SystemTopology


def moltype(name, atoms, bonds, resname=None):
    """atoms: list of (name, element); bonds: 1-based pairs."""
    masses = {"H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999, "F": 18.998, "Cl": 35.45, "Br": 79.904}
    return MoleculeType(
        name=name, atom_names=tuple(a for a, _ in atoms), resnames=(resname or name,) * len(atoms),
        elements=tuple(e for _, e in atoms), masses=np.array([masses[e] for _, e in atoms]),
        charges=np.zeros(len(atoms)), bonds=np.array(bonds, int).reshape(-1, 2) - 1)


BUTANE = moltype("BUT", [("C1", "C"), ("C2", "C"), ("C3", "C"), ("C4", "C")] +
                 [(f"H{i}", "H") for i in range(1, 11)],
                 [(1, 2), (2, 3), (3, 4), (1, 5), (1, 6), (1, 7), (2, 8), (2, 9), (3, 10), (3, 11), (4, 12), (4, 13), (4, 14)])
CHFCLBR = moltype("CHX", [("C", "C"), ("H", "H"), ("F", "F"), ("CL", "Cl"), ("BR", "Br")], [(1, 2), (1, 3), (1, 4), (1, 5)])
BENZENE = moltype("BEN", [(f"C{i}", "C") for i in range(1, 7)] + [(f"H{i}", "H") for i in range(1, 7)],
                  [(i, i % 6 + 1) for i in range(1, 7)] + [(i, i + 6) for i in range(1, 7)])
BUTENE = moltype("BTE", [("C1", "C"), ("C2", "C"), ("C3", "C"), ("C4", "C"), ("H2", "H"), ("H3", "H")],
                 [(1, 2), (2, 3), (3, 4), (2, 5), (3, 6)])
NMA = moltype("NMA", [("CA1", "C"), ("C", "C"), ("O", "O"), ("N", "N"), ("H", "H"), ("CA2", "C")],
              [(1, 2), (2, 3), (2, 4), (4, 5), (4, 6)])


# -- distributions ---------------------------------------------------------------------------

def test_jsd_identical_and_disjoint():
    rng = np.random.default_rng(0)
    a = rng.uniform(-np.pi, np.pi, 5000)
    h = M.histogram(a, "torsion")
    assert M.jsd(h, h) == 0.0
    assert M.jsd(M.histogram(np.full(10, 0.1), "bond"), M.histogram(np.full(10, 0.2), "bond")) == pytest.approx(1.0)
    assert len(h) == 36 and h.sum() == pytest.approx(1.0)


def test_histogram_wraps_torsions_and_clips_bonds():
    assert M.histogram([np.pi + 0.01], "torsion")[0] == 1.0           # +pi+0.01 == -pi+0.01
    assert M.histogram([5.0], "bond")[-1] == 1.0                       # broken bond in the last bin


def test_wasserstein_shift_and_circular():
    rng = np.random.default_rng(1)
    a = rng.normal(0.15, 0.005, 2000)
    assert M.wasserstein(a, a + 0.01) == pytest.approx(0.01, abs=1e-9)
    # two narrow peaks just either side of +-pi are 0.1 rad apart on the circle, not 2pi - 0.1
    assert M.wasserstein(np.full(50, -np.pi + 0.05), np.full(50, np.pi - 0.05), periodic=True) == pytest.approx(0.1, abs=1e-9)
    t = rng.uniform(-np.pi, np.pi, 3000)
    assert M.wasserstein(t, t, periodic=True) == pytest.approx(0.0, abs=1e-12)


def test_jsd_floor_is_small_for_large_samples():
    rng = np.random.default_rng(2)
    ref = rng.vonmises(np.pi, 2.0, 20000)
    assert M.jsd_floor(ref, 20000, "torsion") < 0.005 < M.jsd_floor(ref, 30, "torsion")


# -- terms -----------------------------------------------------------------------------------

def test_butane_terms_pooled_by_symmetry():
    t = molecule_terms(BUTANE)
    kinds = {k: [x for x in t.types if x.kind == k] for k in ("bond", "angle", "torsion")}
    assert sum(x.n_members for x in kinds["bond"]) == 13
    assert sum(x.n_members for x in kinds["angle"]) == 4 * 6          # sum over atoms of C(degree, 2)
    assert sum(x.n_members for x in kinds["torsion"]) == 3 * 9        # 3 x 3 per C-C bond
    heavy = [x for x in kinds["torsion"] if x.heavy]
    assert len(heavy) == 1 and heavy[0].name == "C1-C2-C3-C4"
    # the two terminal C-C bonds are one symmetric type; the methyl C-H bonds pool together
    cc = [x for x in kinds["bond"] if x.heavy]
    assert sorted(x.n_members for x in cc) == [1, 2]
    assert len(t.stereocentres) == 0 and len(t.double_bonds) == 0 and t.rings == []


def test_stereocentre_and_mirror_flip_sign():
    t = molecule_terms(CHFCLBR)
    assert t.stereocentres.tolist() == [[0, 1, 2, 3]]
    x = np.array([[0, 0, 0], [0.1, 0, 0], [-0.03, 0.13, 0], [-0.03, -0.07, 0.15], [-0.03, -0.07, -0.17]])
    s = M.chirality_signs(x[None], t.stereocentres)
    mirrored = M.chirality_signs((x * [-1, 1, 1])[None], t.stereocentres)
    assert s[0, 0] == -mirrored[0, 0] != 0


def test_rings_double_bonds_and_peptide():
    t = molecule_terms(BENZENE)
    assert len(t.rings) == 1 and sorted(t.rings[0].tolist()) == list(range(6))
    assert len(t.double_bonds) == 0           # ring bonds are not cis/trans candidates
    b = molecule_terms(BUTENE)
    assert b.double_bonds.tolist() == [[0, 1, 2, 3]] and not b.peptide[0]
    p = molecule_terms(NMA)
    assert p.double_bonds.tolist() == [[0, 1, 3, 5]] and p.peptide[0]
    x = np.array([[-0.07, 0.12, 0], [0, 0, 0], [-0.06, -0.11, 0], [0.13, 0, 0], [0.19, 0.09, 0], [0.2, -0.12, 0]])
    assert M.cis_states(x[None], p.double_bonds)[0, 0] == -1    # trans peptide: CA-C-N-CA ~ 180 deg


# -- sterics ---------------------------------------------------------------------------------

def test_two_atoms_on_top_of_each_other_clash_across_pbc():
    box = np.array([2.0, 2.0, 2.0])
    x = np.array([[0.01, 1.0, 1.0], [1.99, 1.0, 1.0], [1.0, 0.2, 0.2]])
    inter, intra, d, _ = M.clash_pairs(x, box, molecule=np.array([0, 1, 2]), excluded=np.zeros((0, 2), int))
    assert inter.tolist() == [[0, 1]] and d[0] == pytest.approx(0.02) and len(intra) == 0


def test_intramolecular_clash_skips_1_2_and_1_3_pairs():
    t = molecule_terms(BUTANE)
    x = np.zeros((14, 3)) + np.arange(14)[:, None] * [0.3, 0, 0]
    x[3] = x[0] + [0.05, 0, 0]       # C4 onto C1: a 1-4 pair -> counted
    x[7] = x[0] + [-0.06, 0, 0]      # H (on C2) onto C1: a 1-3 pair -> not counted
    _, intra, _, _ = M.clash_pairs(x, np.array([9.0, 9, 9]), np.zeros(14, int), t.excluded_pairs)
    assert intra.tolist() == [[0, 3]]


def _hexagon(centre, r=0.14):
    a = np.arange(6) * np.pi / 3
    return np.asarray(centre) + np.stack([r * np.cos(a), r * np.sin(a), np.zeros(6)], 1)


def test_bond_through_ring_counts_once():
    box = np.array([3.0, 3.0, 3.0])
    ring = _hexagon([1.5, 1.5, 1.5])
    through = np.array([[1.52, 1.5, 1.43], [1.52, 1.5, 1.57]])   # crosses the ring plane inside
    beside = np.array([[1.9, 1.5, 1.43], [1.9, 1.5, 1.57]])      # crosses the plane outside
    x = np.concatenate([ring, through, beside])
    hits = M.ring_penetrations(x, box, np.arange(6)[None], np.array([[6, 7], [8, 9], [0, 1]]))
    assert hits.tolist() == [[0, 0]]


def test_ring_penetration_through_periodic_boundary():
    box = np.array([3.0, 3.0, 3.0])
    ring = _hexagon([1.5, 1.5, 0.0])                      # ring straddles z = 0
    bond = np.array([[1.5, 1.5, 0.05], [1.5, 1.5, 2.95]])  # minimum image crosses z = 0
    hits = M.ring_penetrations(np.concatenate([ring, bond]), box, np.arange(6)[None], np.array([[6, 7]]))
    assert len(hits) == 1


def _dodecahedron(d):
    """Rhombic dodecahedron (xy-square), GROMACS box vectors (rows), image distance d nm."""
    return np.array([[d, 0, 0], [0, d, 0], [d / 2, d / 2, d * np.sqrt(2) / 2]])


def _brute_min_image(v, box):
    """Shortest of v + n.box over n in {-2..2}^3 (brute force)."""
    n = np.array(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij")).reshape(3, -1).T @ box
    c = v[..., None, :] + n
    return np.take_along_axis(c, np.argmin((c ** 2).sum(-1), -1)[..., None, None], -2)[..., 0, :]


def test_triclinic_clashes_rdf_and_bead_deviation_match_brute_force():
    rng = np.random.default_rng(4)
    box = _dodecahedron(2.4)
    n = 900
    x = rng.uniform(-1, 1, (n, 3)) @ box * 1.3
    mol = np.arange(n) // 2
    i, j = np.triu_indices(n, 1)
    d = np.linalg.norm(minimum_image(x[j] - x[i], box), axis=-1)       # exact (tested against brute force)
    inter, intra, di, da = M.clash_pairs(x, box, mol, np.zeros((0, 2), int), 0.08, 0.10)
    want = (mol[i] != mol[j]) & (d < 0.08)
    assert {tuple(p) for p in inter.tolist()} == set(zip(i[want].tolist(), j[want].tolist())) and want.sum() > 5
    assert np.allclose(np.sort(di), np.sort(d[want]))
    # pair-distance histogram: every intermolecular pair closer than 0.8 nm, binned
    cls = rng.integers(0, 2, n)
    h = M.rdf_histograms(x, box, mol, cls, 2)
    lo, hi, nb = M.RDF_RANGE
    sel = (mol[i] != mol[j]) & (d < hi)
    a, b = np.minimum(cls[i], cls[j])[sel], np.maximum(cls[i], cls[j])[sel]
    k = np.clip(((d[sel] - lo) / (hi - lo) * nb).astype(int), 0, nb - 1)
    ref = np.zeros((2, 2, nb))
    np.add.at(ref, (a, b, k), 1)
    assert np.array_equal(h, ref) and M.rdf_fits(box) and not M.rdf_fits(_dodecahedron(2.0))
    # CG deviation: per-frame stacks of triclinic boxes
    boxes = np.stack([box, _dodecahedron(2.2)])
    beads = rng.uniform(0, 2, (2, 50, 3))
    target = beads + rng.normal(scale=0.05, size=beads.shape) + np.array([1, -1, 2]) @ box
    dev = M.bead_deviation(beads, target, boxes)
    want = np.stack([np.linalg.norm(_brute_min_image(beads[f] - target[f], boxes[f]), axis=-1) for f in range(2)])
    assert np.allclose(dev, want)


def test_ring_penetration_triclinic_boundary():
    box = _dodecahedron(3.0)
    ring = _hexagon([1.5, 1.5, 0.0])
    bond = np.array([[1.52, 1.5, 0.05], [1.52, 1.5, -0.05]]) + box[2]   # the same bond, one lattice vector away
    hits = M.ring_penetrations(np.concatenate([ring, bond]), box, np.arange(6)[None], np.array([[6, 7]]))
    assert hits.tolist() == [[0, 0]]
    beside = np.array([[1.9, 1.5, 0.05], [1.9, 1.5, -0.05]]) - box[2] + box[0]
    assert len(M.ring_penetrations(np.concatenate([ring, beside]), box, np.arange(6)[None], np.array([[6, 7]]))) == 0


# -- CG consistency --------------------------------------------------------------------------

def test_bead_deviation_minimum_image():
    box = np.array([[2.0, 2.0, 2.0]])
    a = np.array([[[0.02, 1.0, 1.0]]])
    b = np.array([[[1.98, 1.0, 1.0]]])
    assert M.bead_deviation(a, b, box)[0, 0] == pytest.approx(0.04)
    assert M.rmsd(np.array([0.03, 0.03, np.nan])) == pytest.approx(0.03)


# -- atom matching ---------------------------------------------------------------------------

def _water_top(n_but=2, n_wat=3):
    wat = moltype("SOL", [("OW", "O"), ("HW1", "H"), ("HW2", "H")], [(1, 2), (1, 3)])
    blocks = [MoleculeBlock(BUTANE, n_but, 0), MoleculeBlock(wat, n_wat, 14 * n_but)]
    return SystemTopology(blocks=blocks)


def test_match_reordered_and_renamed_atoms():
    top = _water_top()
    names = list(top.per_atom("atom_names"))
    res = list(top.per_atom("resnames"))
    resid = list(top.resids())
    # candidate: waters first, named HOH/OH2/H1/H2, and butane atoms reversed inside each molecule
    cn, cr, ci, src = [], [], [], []
    for w in range(3):
        base = 28 + 3 * w
        cn += ["OH2", "H1", "H2"]
        cr += ["HOH"] * 3
        ci += [10 + w] * 3
        src += [base, base + 1, base + 2]
    for m in range(2):
        idx = list(range(14 * m, 14 * m + 14))[::-1]
        cn += [names[i] for i in idx]
        cr += [res[i] for i in idx]
        ci += [resid[i] for i in idx]
        src += idx
    cn += ["XX"]
    cr += ["ION"]
    ci += [99]
    m = match_atoms(top, cn, cr, ci)
    assert m.n_missing == 0 and m.n_extra == 1 and "ION99:XX" in m.extra[0]
    x = np.zeros((1, len(cn), 3))
    x[0, :-1, 0] = src                           # candidate atom carries its topology index
    assert m.apply(x)[0, :, 0].tolist() == list(range(top.n_atoms))


def test_match_reports_missing_and_fails_on_foreign_names():
    top = _water_top()
    names = list(top.per_atom("atom_names"))
    keep = [i for i in range(top.n_atoms) if names[i] != "H10"]
    m = match_atoms(top, [names[i] for i in keep], [top.per_atom("resnames")[i] for i in keep], [top.resids()[i] for i in keep])
    assert m.n_missing == 2 and m.missing[0].endswith(":H10")
    assert np.isnan(m.apply(np.zeros((1, len(keep), 3)))[0, names.index("H10")]).all()
    with pytest.raises(MultiscaleError, match="topology atoms matched"):
        match_atoms(top, [f"Q{i}" for i in range(top.n_atoms)], ["XYZ"] * top.n_atoms, np.arange(top.n_atoms))


def test_rdf_histograms_count_intermolecular_pairs_only():
    box = np.array([3.0, 3.0, 3.0])
    x = np.array([[0.05, 1.0, 1.0], [2.80, 1.0, 1.0], [0.05, 1.1, 1.0]])   # 0.25 nm apart across the boundary
    h = M.rdf_histograms(x, box, molecule=np.array([0, 1, 0]), site_class=np.array([0, 0, 1]), n_classes=2)
    assert h[0, 0].sum() == 1 and h[0, 0, 25] == 1          # 0.25 nm -> bin 25 of 0.01 nm
    assert h[0, 1].sum() == 1 and h[1, 1].sum() == 0        # atom 2 pairs with atom 1 only (same molecule as 0)

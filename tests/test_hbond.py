"""The hydrogen-bond network step (multiscale.backmap.hbond) on hand-built alcohol pairs."""

from types import SimpleNamespace

import numpy as np

from multiscale.backmap.hbond import assign_pairs, donor_sites, heavy_14_pairs, network_relax
from multiscale.backmap.place import count_hbonds, find_rotors, projection_operator

# ethanol heavy atoms + hydroxyl H: C1 C2 O H, one bead (mass-weighted)
EL = ["C", "C", "O", "H"]
BONDS = np.array([[0, 1], [1, 2], [2, 3]])
MASS = np.array([12.011, 12.011, 15.999, 1.008])
BOX = np.array([3.0, 3.0, 3.0])


def _mm():
    M = (MASS / MASS.sum())[None]
    return SimpleNamespace(rotors=find_rotors(4, BONDS, EL), elements=EL, bonds=BONDS, matrix=M,
                           operator=projection_operator(M, BONDS, 10.0),
                           local_pairs=np.array([[0, 1], [1, 2], [2, 3], [0, 2], [1, 3]]), network_cutoff=0.36)


def _ethanol(o, towards, h_away, angle=110.0):
    """An ethanol whose O sits at ``o`` with C2-O...``towards`` = ``angle`` degrees, H along ``h_away``."""
    u = (towards - o) / np.linalg.norm(towards - o)
    ref = np.array([0.0, 0.0, 1.0]) if abs(u[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    perp = np.cross(u, ref)
    perp /= np.linalg.norm(perp)
    t = np.radians(angle)
    w = np.cos(t) * u + np.sin(t) * perp
    c2 = o + 0.143 * w
    c1 = c2 + 0.152 * w
    h = o + 0.097 * h_away / np.linalg.norm(h_away)
    return np.array([c1, c2, o, h])


def _sols(xs):
    mm = _mm()
    return [SimpleNamespace(x=np.array(xs), beads=np.einsum("ba,mak->mbk", mm.matrix, np.array(xs)), mm=mm)]


def _hb(x):
    mol = np.repeat(np.arange(len(x) // 4), 4)
    acc = np.tile(np.array(EL) == "O", len(x) // 4)
    h = np.flatnonzero(np.tile(np.array(EL) == "H", len(x) // 4))
    return count_hbonds(x, BOX, h, h - 1, mol, acc)


def test_pair_within_reach_becomes_a_hydrogen_bond_and_beads_stay_exact():
    oa, ob = np.array([1.0, 1.0, 1.0]), np.array([1.33, 1.0, 1.0])
    a = _ethanol(oa, ob, np.array([0.0, 0.0, 1.0]))  # H perpendicular: no H-bond yet
    b = _ethanol(ob, oa, np.array([0.0, 0.0, -1.0]))
    sols = _sols([a, b])
    x0 = sols[0].x.reshape(-1, 3)
    assert _hb(x0) == 0
    xs, hd = network_relax(sols, BOX)
    x = xs[0]
    assert len(hd) == 1  # one direction only
    assert _hb(x.reshape(-1, 3)) == 1
    assert np.linalg.norm(x[1, 2] - x[0, 2]) < 0.30 < np.linalg.norm(ob - oa)
    assert np.abs(np.einsum("ba,mak->mbk", sols[0].mm.matrix, x) - sols[0].beads).max() < 1e-10
    bl = lambda z: np.linalg.norm(z[:, BONDS[:, 1]] - z[:, BONDS[:, 0]], axis=-1)  # noqa: E731
    assert np.abs(bl(x) - bl(sols[0].x)).max() < 0.01


def test_pairs_beyond_the_cutoff_or_behind_the_carbon_are_left_alone():
    oa = np.array([1.0, 1.0, 1.0])
    far = _sols([_ethanol(oa, oa + [0.5, 0, 0], np.array([0, 0, 1.0])),
                 _ethanol(oa + [0.5, 0, 0], oa, np.array([0, 0, -1.0]))])
    xs, hd = network_relax(far, BOX)
    assert len(hd) == 0 and np.array_equal(xs[0], far[0].x)
    # acceptor on the carbon side of the donor (C-O...A angle ~ 0 deg): not assignable
    a = _ethanol(oa, oa + [0.35, 0, 0], np.array([0, 0, 1.0]), angle=15.0)  # C2 between A's O and B's O
    b = _ethanol(oa + [0.35, 0, 0], oa + [0.7, 0, 0], np.array([0, 0, 1.0]), angle=15.0)
    sites = donor_sites(_sols([a, b]))
    k, acc = assign_pairs(np.concatenate([a, b]), BOX, sites, cutoff=0.36)
    assert all(sites["mol"][sites["d"][kk]] != 0 for kk in k)


def test_acceptor_capacity_and_no_mutual_donation():
    """Three alcohols around one acceptor: each H donates once, no A->B and B->A, the centre takes
    at most ``max_accept``."""
    c = np.array([1.5, 1.5, 1.5])
    xs = [_ethanol(c, c + [0, 0, 0.3], np.array([0, 0, 1.0]))]
    for ang in (0.0, 2.1, 4.2):
        o = c + 0.31 * np.array([np.cos(ang), np.sin(ang), 0.0])
        xs.append(_ethanol(o, c, c - o))
    sols = _sols(xs)
    sites = donor_sites(sols)
    for cap in (1, 2):
        k, a = assign_pairs(sols[0].x.reshape(-1, 3), BOX, sites, cutoff=0.36, max_accept=cap)
        dmol, amol = sites["mol"][sites["d"][k]], sites["mol"][sites["acc"][a]]
        assert len(np.unique(k)) == len(k)
        assert (amol == 0).sum() == cap  # three donors point at the centre: it takes exactly its capacity
        pairs = set(zip(dmol.tolist(), amol.tolist()))
        assert not any((q, p) in pairs for p, q in pairs)


def test_heavy_14_pairs_of_butanol():
    el = ["C", "C", "C", "C", "O", "H"]
    bonds = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]])
    assert heavy_14_pairs(6, bonds, el).tolist() == [[0, 3], [1, 4]]


def test_no_pairs_without_a_calibrated_cutoff():
    """A model without a network cutoff (trained before the step existed, or calibrated off for
    a dilute alcohol in water) is left exactly as drawn."""
    oa, ob = np.array([1.0, 1.0, 1.0]), np.array([1.30, 1.0, 1.0])
    sols = _sols([_ethanol(oa, ob, np.array([0.0, 0.0, 1.0])), _ethanol(ob, oa, np.array([0.0, 0.0, -1.0]))])
    sols[0].mm.network_cutoff = 0.0
    xs, hd = network_relax(sols, BOX)
    assert len(hd) == 0 and np.array_equal(xs[0], sols[0].x)

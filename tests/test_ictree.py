"""Internal-coordinate tree: order, siblings, internal <-> Cartesian round trips, ring closure."""

import numpy as np
import pytest
import torch

from multiscale.backmap.ictree import ICTree, wrap_angle
from multiscale.errors import MultiscaleError
from multiscale.topology import MoleculeType


def moltype(name, elements, bonds, names=None):
    n = len(elements)
    names = names or [f"{e}{i + 1}" for i, e in enumerate(elements)]
    return MoleculeType(name, tuple(names), (name,) * n, tuple(elements), np.ones(n), np.zeros(n), np.array(bonds, int))


def _tetra_subs(c, u, v, bond=0.109):
    """Two tetrahedral substituent positions on atom c with neighbours at u and v."""
    a, b = (u - c) / np.linalg.norm(u - c), (v - c) / np.linalg.norm(v - c)
    d = -(a + b)
    d /= np.linalg.norm(d)
    nrm = np.cross(a, b)
    nrm /= np.linalg.norm(nrm)
    th = np.deg2rad(54.75)
    return c + bond * (d * np.cos(th) + nrm * np.sin(th)), c + bond * (d * np.cos(th) - nrm * np.sin(th))


def cyclohexanol():
    """Chair cyclohexanol C6H11OH: (MoleculeType, coordinates (n, 3) nm)."""
    ring = []
    for k in range(6):
        phi = np.deg2rad(60 * k)
        ring.append([0.145 * np.cos(phi), 0.145 * np.sin(phi), 0.025 * (-1) ** k])
    ring = np.array(ring)
    el, xyz, bonds = ["C"] * 6, list(ring), [(k, (k + 1) % 6) for k in range(6)]
    # O on C0 (first substituent), H on the other position; 2 H on C1..C5
    for k in range(6):
        s1, s2 = _tetra_subs(ring[k], ring[k - 1], ring[(k + 1) % 6])
        if k == 0:
            o = ring[0] + (s1 - ring[0]) * (0.143 / 0.109)
            el.append("O"), xyz.append(o), bonds.append((0, len(el) - 1))
            io = len(el) - 1
            el.append("H"), xyz.append(s2), bonds.append((0, len(el) - 1))
            ho = o + 0.096 * np.array([0.3, 0.9, 0.3]) / np.linalg.norm([0.3, 0.9, 0.3])
            el.append("H"), xyz.append(ho), bonds.append((io, len(el) - 1))
        else:
            for s in (s1, s2):
                el.append("H"), xyz.append(s), bonds.append((k, len(el) - 1))
    return moltype("CHX", el, bonds), np.array(xyz)


def benzene():
    el, xyz, bonds = [], [], []
    for k in range(6):
        phi = np.deg2rad(60 * k)
        el.append("C"), xyz.append([0.139 * np.cos(phi), 0.139 * np.sin(phi), 0.0])
        bonds.append((k, (k + 1) % 6))
    for k in range(6):
        phi = np.deg2rad(60 * k)
        el.append("H"), xyz.append([0.247 * np.cos(phi), 0.247 * np.sin(phi), 0.0])
        bonds.append((k, 6 + k))
    return moltype("BNZ", el, bonds), np.array(xyz)


def heptanol_like():
    """Heptan-1-ol heavy chain (zig-zag) with hydrogens: (MoleculeType, coordinates)."""
    el, xyz, bonds = [], [], []
    for k in range(8):
        el.append("C" if k < 7 else "O")
        xyz.append([0.126 * k, 0.043 * (k % 2), 0.0])
        if k:
            bonds.append((k - 1, k))
    xyz = [np.array(p) for p in xyz]
    rng = np.random.default_rng(3)
    for k in range(8):
        nh = 3 if k == 0 else (1 if k == 7 else 2)
        for _ in range(nh):
            el.append("H")
            xyz.append(xyz[k] + 0.105 * rng.normal(size=3) / 1.7)
            bonds.append((k, len(el) - 1))
    return moltype("HEP", el, bonds), np.array(xyz)


def _pairwise(x):
    return np.linalg.norm(x[..., :, None, :] - x[..., None, :, :], axis=-1)


@pytest.mark.parametrize("builder", [cyclohexanol, benzene, heptanol_like])
def test_round_trip_exact(builder):
    mt, x = builder()
    tree = ICTree.from_moltype(mt)
    b, a, t = tree.to_internal(x)
    assert b.shape == (mt.n_atoms - 1,) and a.shape == (mt.n_atoms - 2,) and t.shape == (mt.n_atoms - 3,)
    y = tree.to_cartesian(b, a, t)
    # same shape up to a rigid motion: all pair distances agree (incl. ring-closure bonds)
    assert np.abs(_pairwise(x) - _pairwise(y)).max() < 1e-10
    b2, a2, t2 = tree.to_internal(y)
    assert np.allclose(b, b2) and np.allclose(a, a2) and np.allclose(wrap_angle(t - t2), 0, atol=1e-9)


def test_batched_torch_round_trip_and_rings():
    mt, x = cyclohexanol()
    tree = ICTree.from_moltype(mt)
    assert len(tree.closures) == 1  # one ring -> one closure bond
    rng = np.random.default_rng(0)
    xb = x[None] + rng.normal(scale=0.003, size=(16,) + x.shape)  # 16 distorted copies
    xt = torch.as_tensor(xb)
    b, a, t = tree.to_internal(xt)
    assert isinstance(b, torch.Tensor) and b.shape == (16, mt.n_atoms - 1)
    y = tree.to_cartesian(b, a, t)
    assert np.abs(_pairwise(xb) - _pairwise(y.numpy())).max() < 1e-9


def test_ring_closure_step():
    mt, x = cyclohexanol()
    tree = ICTree.from_moltype(mt)
    b, a, t = tree.to_internal(x)
    cl, _ = tree.closure_pairs()
    target = np.linalg.norm(x[cl[:, 1]] - x[cl[:, 0]], axis=-1)
    # perturb the ring torsions: the closure bond breaks
    rng = np.random.default_rng(1)
    tp = t + rng.normal(scale=0.08, size=(32,) + t.shape)
    y = tree.to_cartesian(torch.as_tensor(np.broadcast_to(b, (32,) + b.shape).copy()),
                          torch.as_tensor(np.broadcast_to(a, (32,) + a.shape).copy()), torch.as_tensor(tp))
    (i, j) = tree.closures[0]
    before = np.abs(torch.linalg.norm(y[:, j] - y[:, i], dim=-1).numpy() - np.linalg.norm(x[j] - x[i]))
    assert before.max() > 0.01
    z = tree.close_rings(y, target, iterations=100).numpy()
    after = np.abs(np.linalg.norm(z[:, j] - z[:, i], axis=-1) - np.linalg.norm(x[j] - x[i]))
    assert after.max() < 0.003
    # every other bond stays close to its length
    bonds = np.asarray(mt.bonds)
    d0 = np.linalg.norm(y.numpy()[:, bonds[:, 1]] - y.numpy()[:, bonds[:, 0]], axis=-1)
    d1 = np.linalg.norm(z[:, bonds[:, 1]] - z[:, bonds[:, 0]], axis=-1)
    keep = ~((bonds == [i, j]).all(1) | (bonds == [j, i]).all(1))
    assert np.abs(d1 - d0)[:, keep].max() < 0.005


def test_order_heavy_first_root_in_first_bead_and_siblings():
    mt, x = heptanol_like()
    M = np.zeros((2, mt.n_atoms))
    M[0, [4, 5, 6, 7]] = 0.25  # first bead at the O end
    M[1, [0, 1, 2, 3]] = 0.25
    tree = ICTree.from_moltype(mt, M)
    assert tree.order[0] in (4, 5, 6, 7)
    heavy = np.asarray(mt.heavy)
    n_heavy = heavy.sum()
    assert heavy[tree.order[:n_heavy]].all()  # heavy atoms first
    # methyl hydrogens (atoms 8, 9, 10 on C0): the 2nd and 3rd are offsets from the 1st
    pos = {a: k for k, a in enumerate(tree.order)}
    first = pos[8]
    assert tree.sibling[pos[9]] == first and tree.sibling[pos[10]] == first
    # the methyl H offsets are ~ +-120 deg in real structures
    _, _, t = tree.to_internal(x)
    assert len(tree.heavy_torsions()) == 5  # C-C-C-C ... C-C-C-O torsions
    d = ICTree.from_dict(tree.to_dict())
    assert np.array_equal(d.order, tree.order) and np.array_equal(d.sibling, tree.sibling)


def test_tiny_and_disconnected():
    for n in (1, 2, 3):
        mt = moltype("T", ["C"] * n, [(k, k + 1) for k in range(n - 1)])
        tree = ICTree.from_moltype(mt)
        x = np.random.default_rng(0).normal(size=(n, 3))
        y = tree.to_cartesian(*tree.to_internal(x))
        assert np.abs(_pairwise(x) - _pairwise(y)).max() < 1e-10
    with pytest.raises(MultiscaleError, match="not connected"):
        ICTree.from_moltype(moltype("D", ["C", "C", "C"], [(0, 1)]))


def test_branches_next_to_the_root_share_a_heavy_reference():
    """Butan-2-ol rooted at the methyl C1: O and H on the stereocentre C2 must be siblings
    (one improper torsion + a rigid offset), not hang off a rotating methyl hydrogen."""
    el = ["C", "C", "C", "C", "O"] + ["H"] * 10
    bonds = [(0, 1), (1, 2), (2, 3), (1, 4)] + [(h, 5 + j) for j, h in enumerate([0, 0, 0, 1, 2, 2, 3, 3, 3, 4])]
    mt = moltype("BUT", el, bonds)
    tree = ICTree.from_moltype(mt, root=0)
    pos = {a: k for k, a in enumerate(tree.order)}
    h_on_c2 = 8
    assert tree.sibling[pos[h_on_c2]] == pos[4]  # offset from the O torsion
    assert mt.heavy[tree.torsion_ref[pos[4]]]

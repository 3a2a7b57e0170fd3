"""Placement: Kabsch onto beads, sampled free rotations, exact projection of mapped centres."""

import numpy as np
import torch

from multiscale.backmap.place import fit_to_beads, kabsch_t, project_exact, projection_operator, random_rotations_t, spin_about_beads


def _mol(n_mol=64, seed=0):
    """A bent 6-heavy-atom chain with 2 unmapped H per heavy atom (18 atoms), random copies."""
    rng = np.random.default_rng(seed)
    heavy = np.array([[0.15 * k, 0.05 * (k % 2), 0.01 * k * k] for k in range(6)])
    h = []
    bonds = [(k, k + 1) for k in range(5)]
    for k in range(6):
        for s in (1, -1):
            h.append(heavy[k] + [0.0, 0.0, 0.1 * s])
            bonds.append((k, 6 + len(h) - 1))
    x0 = np.concatenate([heavy, np.array(h)])
    x = x0[None] + rng.normal(scale=0.01, size=(n_mol,) + x0.shape)
    return x, np.array(bonds)


def _matrix(nb):
    M = np.zeros((nb, 18))
    groups = np.array_split(np.arange(6), nb)
    for i, g in enumerate(groups):
        M[i, g] = 1.0 / len(g)
    return M


def test_projection_exact_and_hydrogens_follow():
    x, bonds = _mol()
    M = _matrix(3)
    A = projection_operator(M, bonds)
    assert np.allclose(M @ A, np.eye(3))
    c = np.einsum("ba,nak->nbk", M, x) + np.random.default_rng(1).normal(scale=0.05, size=(len(x), 3, 3))
    y = project_exact(torch.as_tensor(x), M, A, torch.as_tensor(c)).numpy()
    assert np.abs(np.einsum("ba,nak->nbk", M, y) - c).max() < 1e-10
    # each H moved exactly like its heavy atom: C-H vectors unchanged
    ch = bonds[5:]
    assert np.allclose(y[:, ch[:, 1]] - y[:, ch[:, 0]], x[:, ch[:, 1]] - x[:, ch[:, 0]])
    # minimum norm on the weighted atoms: no smaller correction with M dx = r exists
    dx = (y - x)[:, :6]
    r = c - np.einsum("ba,nak->nbk", M, x)
    Mh = M[:, :6]
    mn = np.einsum("ab,nbk->nak", Mh.T @ np.linalg.inv(Mh @ Mh.T), r)
    assert np.allclose(dx, mn)


def test_fit_three_beads_recovers_rigid_motion():
    x, _ = _mol(32)
    M = _matrix(3)
    R = random_rotations_t(32, torch.Generator().manual_seed(0)).numpy()
    target = np.einsum("nak,nkj->naj", x, R) + np.array([5.0, -2.0, 1.0])
    beads = np.einsum("ba,nak->nbk", M, target)
    xr = x @ random_rotations_t(1, torch.Generator().manual_seed(9)).numpy()[0]  # arbitrary frame
    y = fit_to_beads(torch.as_tensor(xr), M, torch.as_tensor(beads)).numpy()
    assert np.abs(y - target).max() < 1e-8


def test_free_rotation_sampled_for_one_and_two_beads():
    x, _ = _mol(1)
    xs = np.repeat(x, 4000, 0)
    g = torch.Generator().manual_seed(3)
    # one bead: orientations uniform -> the mean direction of a fixed atom vector vanishes
    M1 = _matrix(1)
    b1 = np.zeros((4000, 1, 3))
    y = fit_to_beads(torch.as_tensor(xs), M1, torch.as_tensor(b1), g).numpy()
    assert np.abs(np.einsum("ba,nak->nbk", M1, y)).max() < 1e-9
    v = y[:, 5] - y[:, 0]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert np.linalg.norm(v.mean(0)) < 0.05
    assert np.abs(np.cov(v.T) - np.eye(3) / 3).max() < 0.03
    # two beads on the z axis: the rotation angle about z is uniform
    M2 = _matrix(2)
    b2 = np.tile(np.array([[0, 0, 0.0], [0, 0, 0.4]]), (4000, 1, 1))
    y = fit_to_beads(torch.as_tensor(xs), M2, torch.as_tensor(b2), g).numpy()
    c = np.einsum("ba,nak->nbk", M2, y)
    assert np.abs(c[:, :, :2]).max() < 1e-9  # mapped centres on the bead axis
    v = y[:, 16] - y[:, 0]
    phi = np.arctan2(v[:, 1], v[:, 0])
    hist = np.histogram(phi, 12, (-np.pi, np.pi))[0]
    assert hist.min() > 4000 / 12 * 0.8
    # deterministic for the same generator seed
    a = fit_to_beads(torch.as_tensor(xs[:10]), M2, torch.as_tensor(b2[:10]), torch.Generator().manual_seed(1))
    b = fit_to_beads(torch.as_tensor(xs[:10]), M2, torch.as_tensor(b2[:10]), torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_spin_keeps_beads_and_geometry():
    x, bonds = _mol(200, seed=4)
    g = torch.Generator().manual_seed(5)
    for nb in (1, 2, 3):
        M = _matrix(nb)
        beads = torch.as_tensor(np.einsum("ba,nak->nbk", M, x))
        y = spin_about_beads(torch.as_tensor(x), beads, g).numpy()
        assert np.abs(np.einsum("ba,nak->nbk", M, y) - beads.numpy()).max() < 1e-12  # beads stay exact
        d0 = np.linalg.norm(x[:, bonds[:, 1]] - x[:, bonds[:, 0]], axis=-1)
        d1 = np.linalg.norm(y[:, bonds[:, 1]] - y[:, bonds[:, 0]], axis=-1)
        assert np.abs(d1 - d0).max() < 1e-12  # rigid
        moved = np.linalg.norm(y - x, axis=-1).max(1)
        if nb < 3:
            assert (moved > 1e-3).mean() > 0.9  # a new orientation for (almost) every molecule
        else:
            assert moved.max() == 0.0  # three beads fix the orientation


def test_kabsch_proper_rotation():
    p = torch.randn(20, 5, 3, dtype=torch.float64)
    p = p - p.mean(1, keepdim=True)
    q = p * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # mirror: best proper rotation only
    R = kabsch_t(p, q)
    assert torch.allclose(torch.linalg.det(R), torch.ones(20, dtype=torch.float64))


def test_relaxed_projection_exact_and_keeps_bonds():
    from multiscale.backmap.ictree import ICTree
    from multiscale.backmap.place import relax_project

    x, bonds = _mol(64)
    M = _matrix(3)
    A = projection_operator(M, bonds, 10.0)
    # beads of the same molecules with different torsions: reachable without bending bonds
    tree = ICTree.build(18, bonds, np.arange(18) < 6)
    b, a, t = tree.to_internal(x)
    y = tree.to_cartesian(b, a, t + np.random.default_rng(2).normal(scale=0.25, size=t.shape))
    c = np.einsum("ba,nak->nbk", M, y)
    xt = fit_to_beads(torch.as_tensor(tree.to_cartesian(b, a, t)), M, torch.as_tensor(c))
    ct = torch.as_tensor(c)
    pairs = np.concatenate(tree.closure_pairs())
    plain = project_exact(xt, M, A, ct).numpy()
    relaxed = relax_project(xt, M, A, ct, pairs, iterations=30, stiffness=1.5).numpy()
    assert np.abs(np.einsum("ba,nak->nbk", M, relaxed) - c).max() < 1e-10
    d = lambda z: np.linalg.norm(z[:, pairs[:, 1]] - z[:, pairs[:, 0]], axis=-1)
    err_plain = np.abs(d(plain) - d(x)).mean()
    err_relax = np.abs(d(relaxed) - d(x)).mean()
    assert err_relax < 0.5 * err_plain


def test_sparse_projection_operator_equals_the_dense_minimum_norm_one():
    """Long chains use the sparse operator: the same matrix as the dense smoothing-0 one (unweighted
    atoms copying their nearest weighted atom's row), and it projects exactly (sparse M and A)."""
    import scipy.sparse as sp
    import torch

    from multiscale.backmap.place import project_exact, projection_operator, relax_project, sparse_projection_operator

    rng = np.random.default_rng(3)
    n_res, per = 40, 6  # 40 residues of 6 atoms, 2 beads each; atom 5 of each residue unweighted
    n, nb = n_res * per, 2 * n_res
    M = np.zeros((nb, n))
    for r in range(n_res):
        a = r * per
        M[2 * r, a:a + 3] = rng.random(3) + 0.1
        M[2 * r + 1, a + 2:a + 5] = rng.random(3) + 0.1  # atom a+2 shared by the residue's two beads
    M /= M.sum(1, keepdims=True)
    bonds = np.array([(i, i + 1) for i in range(n - 1)])
    dense = projection_operator(M, bonds, 0.0)
    A = sparse_projection_operator(sp.csr_matrix(M), bonds)
    assert sp.issparse(A) and np.allclose(A.toarray(), dense, atol=1e-10)
    x = torch.as_tensor(rng.normal(size=(3, n, 3)))
    beads = torch.as_tensor(rng.normal(size=(3, nb, 3)))
    y = project_exact(x, sp.csr_matrix(M), A, beads)
    assert torch.allclose(torch.einsum("ba,nak->nbk", torch.as_tensor(M), y), beads, atol=1e-9)
    z = relax_project(x, sp.csr_matrix(M), A, beads, bonds, 12, 1.8)
    assert torch.allclose(torch.einsum("ba,nak->nbk", torch.as_tensor(M), z), beads, atol=1e-9)


def test_repulsion_pair_list_matches_the_dense_step():
    """The listed repulsion (pairs within r_min + skin, found over molecule chunks) moves atoms exactly
    as a dense step over every pair of every molecule would."""
    from multiscale.backmap.place import _repel_list, _repel_step

    rng = np.random.default_rng(3)
    n, B, r_min = 12, 7, 0.3
    x = rng.uniform(0, 0.8, (B, n, 3))
    i, j = np.triu_indices(n, 2)
    X = torch.as_tensor(x).permute(1, 0, 2).reshape(n, B * 3)
    ti, tj = torch.as_tensor(i), torch.as_tensor(j)
    near = _repel_list(X, (ti, tj), B, r_min + 0.15, chunk=len(i) * 2)  # 2 molecules per chunk
    d_all = np.linalg.norm(x[:, j] - x[:, i], axis=-1)
    assert len(near[0]) == int((d_all < r_min + 0.15).sum()) > 0
    got = _repel_step(X, near, B, r_min, 1.8).reshape(n, B, 3).permute(1, 0, 2).numpy()
    want = x.copy()
    for b in range(B):  # dense reference: Jacobi average over the pushed pairs of each atom
        g, cnt = np.zeros((n, 3)), np.zeros(n)
        for a, c in zip(i, j):
            dv = x[b, c] - x[b, a]
            r = np.linalg.norm(dv)
            if r < r_min:
                f = (1 - r_min / r) * dv
                g[c] += f
                g[a] -= f
                cnt[a] += 1
                cnt[c] += 1
        want[b] = x[b] - 0.5 * 1.8 * g / np.maximum(cnt, 1)[:, None]
    assert np.allclose(got, want, atol=1e-12)


def test_relaxed_projection_restores_the_reference_geometry_of_a_pushed_atom():
    """relax_project(reference=...) takes the distances to keep from the reference: a hydrogen
    pushed 0.05 nm off (as :func:`multiscale.backmap.resolve.separate` does) comes back to its
    bond length instead of the pushed one, and the beads stay exact."""
    from multiscale.backmap.ictree import ICTree
    from multiscale.backmap.place import relax_project

    x, bonds = _mol(8)
    M = _matrix(3)
    A = projection_operator(M, bonds, 10.0)
    tree = ICTree.build(18, bonds, np.arange(18) < 6)
    pairs = np.concatenate(tree.closure_pairs())
    c = torch.as_tensor(np.einsum("ba,nak->nbk", M, x))
    pushed = x.copy()
    v = x[:, 6] - x[:, 0]
    pushed[:, 6] += 0.05 * v / np.linalg.norm(v, axis=-1, keepdims=True)  # H of heavy atom 0 (weight 0 in M), 0.05 nm out
    bond = lambda z: np.linalg.norm(z[:, 6] - z[:, 0], axis=-1)
    kept = relax_project(torch.as_tensor(pushed), M, A, c, pairs, 30, 1.5).numpy()
    restored = relax_project(torch.as_tensor(pushed), M, A, c, pairs, 30, 1.5, reference=torch.as_tensor(x)).numpy()
    assert np.abs(np.einsum("ba,nak->nbk", M, restored) - c.numpy()).max() < 1e-10
    assert np.abs(bond(restored) - bond(x)).max() < 0.1 * np.abs(bond(pushed) - bond(x)).min()
    assert np.abs(bond(kept) - bond(pushed)).max() < 0.005  # without a reference the pushed geometry is the one kept
    assert np.abs(restored[:, 6] - x[:, 6]).max() > 1e-3  # it came back to its bond length, not to where it was

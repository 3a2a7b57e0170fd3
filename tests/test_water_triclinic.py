"""Water grouping and placement in triclinic boxes (rhombic dodecahedron, truncated octahedron),
checked against brute-force minimum-image distances (:func:`multiscale.geometry.minimum_image`)."""

import numpy as np
import pytest

from multiscale.backmap.water import CLUSTER_MASSES, MIN_DIST_OO, WaterBank, _CellGrid
from multiscale.geometry import box_volume, minimum_image, wrap
from multiscale.neighbours import PeriodicTree
from multiscale.water import _knn, group_radius, group_waters

W_DENSITY = 33.4 / 4  # Martini W beads per nm^3


def dodecahedron(d):
    """Rhombic dodecahedron, xy-square (GROMACS editconf -bt dodecahedron), image distance d."""
    return np.array([[d, 0, 0], [0, d, 0], [d / 2, d / 2, d * np.sqrt(2) / 2]])


def octahedron(d):
    """Truncated octahedron (GROMACS editconf -bt octahedron), image distance d."""
    return np.array([[d, 0, 0], [d / 3, 2 * np.sqrt(2) * d / 3, 0],
                     [-d / 3, np.sqrt(2) * d / 3, np.sqrt(6) * d / 3]])


def lattice_in(shape, n, density, jitter, seed=0):
    """n^3 points at ``density`` (nm^-3) in a triclinic cell: the fractional grid i/n
    (a scaled copy of the cell's own lattice: FCC for the dodecahedron, BCC for the
    octahedron), jittered, shuffled, in arbitrary images.  Returns (points, box)."""
    unit = shape(1.0)
    d = (n**3 / density / box_volume(unit)) ** (1 / 3)
    box = shape(d)
    g = np.arange(n) / n
    s = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    x = s @ box + rng.normal(0, jitter, s.shape)
    x += rng.integers(-1, 2, (len(x), 3)) @ box  # any image
    return x[rng.permutation(len(x))], box


def com(out):
    return (out.reshape(-1, 12, 3) * CLUSTER_MASSES[:, None]).sum(1) / CLUSTER_MASSES.sum()


def close_pairs(x, box, r, div=1, brute_rows=200):
    """Pairs (i < j, distance) closer than r with i // div != j // div: candidates from
    :class:`PeriodicTree` (ghost images), distances by :func:`minimum_image`; the first
    ``brute_rows`` points are checked against all points by brute force as well."""
    pp = PeriodicTree(x, box, r + 0.01).query_pairs(r + 0.01)
    i, j = pp[:, 0], pp[:, 1]
    d = np.linalg.norm(minimum_image(x[j] - x[i], box), axis=1)
    k = (d < r) & (i // div != j // div)
    i, j, d = i[k], j[k], d[k]
    rows = np.arange(min(brute_rows, len(x)))
    db = np.linalg.norm(minimum_image(x[None] - x[rows, None], box), axis=-1)
    bi, bj = np.nonzero((db < r) & (rows[:, None] // div != np.arange(len(x)) // div))
    assert {(min(a, b), max(a, b)) for a, b in zip(bi, bj)} == \
        {(a, b) for a, b in zip(i, j) if a < len(rows) or b < len(rows)}
    return i, j, d


@pytest.fixture(scope="module")
def bank():
    return WaterBank.default()


# ---------------------------------------------------------------------------- cell list
@pytest.mark.parametrize("shape", [dodecahedron, octahedron])
def test_cell_grid_triclinic_matches_brute_force(shape):
    rng = np.random.default_rng(1)
    box = shape(3.2)
    p = rng.uniform(-1, 2, (3000, 3)) @ box  # any image
    ref = {tuple(v) for v in PeriodicTree(p, box, 0.2).query_pairs(0.2)}
    ref_lo = {tuple(v) for v in PeriodicTree(p, box, 0.2).query_pairs(0.2 - 1e-5)}
    g = _CellGrid(p[:2000], box, 0.2)
    assert g.kd is None  # the cell list itself, not the fallback
    i, j = g.pairs()
    got = set(zip(np.minimum(i, j), np.maximum(i, j)))
    assert len(got) == len(i)  # each pair once
    sub = {v for v in ref if v[1] < 2000}
    assert {v for v in ref_lo if v[1] < 2000} <= got <= sub
    # queries of points not in the grid
    qi, qj = g.query(p[2000:])
    nbl = PeriodicTree(p[:2000], box, 0.2).query_ball_point(p[2000:], 0.2 - 1e-5)
    lo = {(a, b) for a, v in enumerate(nbl) for b in v}
    assert lo <= set(zip(qi, qj)) and len(set(zip(qi, qj))) == len(qi)
    d = np.linalg.norm(minimum_image(p[qj] - p[2000 + qi], box), axis=1)
    assert d.max() < 0.2 + 1e-5
    # update = a fresh grid of the moved set
    pts = p[:2000].copy()
    drop = np.zeros(2000, bool)
    drop[:300] = True
    pts[:300] = rng.uniform(-1, 2, (300, 3)) @ box
    g.update(drop, tuple(pts[:300].T), np.arange(300))
    i1, j1 = g.query(p[2000:])
    i0, j0 = _CellGrid(pts, box, 0.2).query(p[2000:])
    assert set(zip(i1, j1)) == set(zip(i0, j0)) and len(i1) > 0


# ---------------------------------------------------------------------------- grouping
@pytest.mark.parametrize("shape", [dodecahedron, octahedron])
def test_knn_triclinic_exact(shape):
    x, box = lattice_in(shape, 6, 33.4, 0.03, seed=2)
    p = wrap(x, box)
    nn = _knn(p, box, 5)
    d = np.linalg.norm(minimum_image(p[:, None] - p[None], box), axis=-1)
    ref = np.sort(d, axis=1)[:, :5]
    got = np.take_along_axis(d, nn, axis=1)
    assert np.allclose(got, ref, atol=1e-12) and np.all(nn[:, 0] == np.arange(len(p)))
    # a sparse set (rows lacking neighbours within the tree's reach: exact fallback)
    sparse = p[::23]
    nn = _knn(sparse, box, 4)
    d = np.linalg.norm(minimum_image(sparse[:, None] - sparse[None], box), axis=-1)
    assert np.allclose(np.take_along_axis(d, nn, axis=1), np.sort(d, axis=1)[:, :4])


@pytest.mark.parametrize("shape", [dodecahedron, octahedron])
def test_group_waters_triclinic_compact(shape):
    x, box = lattice_in(shape, 16, 33.4, 0.03, seed=0)  # 4096 waters
    g = group_waters(x, box, seed=0)
    assert g.shape == (1024, 4)
    assert np.array_equal(np.sort(g.ravel()), np.arange(len(x)))
    r = group_radius(x, g, box)
    # the same liquid density in a cube (tests/test_water.py: mean < 0.3, max < 0.6)
    side = 16 * (1 / 33.4) ** (1 / 3)
    rng = np.random.default_rng(0)
    c = np.stack(np.meshgrid(*[np.arange(16) * side / 16] * 3, indexing="ij"), -1)
    c = c.reshape(-1, 3) + rng.normal(0, 0.03, (4096, 3))
    rc = group_radius(c, group_waters(c, np.full(3, side), seed=0), np.full(3, side))
    assert r.mean() < 1.15 * rc.mean() and r.mean() < 0.3 and r.max() < 0.6
    # radii by brute-force minimum image agree with group_radius
    xx = x[g]
    rel = minimum_image(xx - xx[:, :1], box)
    assert np.allclose(np.linalg.norm(rel - rel.mean(1, keepdims=True), axis=-1).max(1), r)
    assert np.array_equal(g, group_waters(x + box[2], box, seed=0))  # any image
    assert np.array_equal(g, group_waters(x, box, seed=0))  # deterministic


# ---------------------------------------------------------------------------- placement
@pytest.mark.parametrize("shape", [dodecahedron, octahedron])
def test_place_triclinic_no_clash(bank, shape):
    beads, box = lattice_in(shape, 10, W_DENSITY, 0.06, seed=3)  # 1000 beads
    out, st = bank.place(beads, box, seed=1, return_stats=True)
    assert out.shape == (1000, 4, 3, 3)
    assert np.abs(com(out) - beads).max() < 1e-9  # bead COM exact
    assert st["n_initial_clash"] > 50 and st["n_contacts_initial"] > 20  # the test can fail
    assert st["n_unresolved"] <= 0.01 * len(beads)
    # O-O of different beads (unresolved aside), exact minimum image
    o = out[:, :, 0].reshape(-1, 3)
    i, j, _ = close_pairs(o, box, MIN_DIST_OO, div=4)
    bad = np.zeros(len(beads), bool)
    bad[st["unresolved"]] = True
    assert not np.any(~bad[i // 4] & ~bad[j // 4])
    # atoms of different molecules: none closer than 0.08 nm (contact stage)
    a = out.reshape(-1, 3)
    i, _, _ = close_pairs(a, box, 0.08, div=3)
    assert len(i) == 0 and st["n_contacts"] == 0
    # same seed, same output
    assert np.array_equal(out, bank.place(beads, box, seed=1))


def test_place_triclinic_equals_orthorhombic_physics(bank):
    """A dodecahedron placement is as good as a cubic one at the same density."""
    beads, box = lattice_in(dodecahedron, 12, W_DENSITY, 0.05, seed=4)
    _, st = bank.place(beads, box, seed=2, return_stats=True)
    n = 12
    a = (1 / W_DENSITY) ** (1 / 3)
    g = np.arange(n) * a
    c = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    c += np.random.default_rng(4).normal(0, 0.05, c.shape)
    _, sc = bank.place(c, np.full(3, n * a), seed=2, return_stats=True)
    assert st["n_contacts"] == sc["n_contacts"] == 0
    assert st["n_unresolved"] <= max(3, 3 * sc["n_unresolved"])


@pytest.mark.parametrize("shape", [dodecahedron, octahedron])
def test_place_small_triclinic_box(bank, shape):
    """Boxes of a few beads per edge: the fewest cells (2 x 2 x 3), else PeriodicTree."""
    beads, box = lattice_in(shape, 3, W_DENSITY, 0.05, seed=3)
    p = np.random.default_rng(0).uniform(-1, 2, (200, 3)) @ box
    for r, fallback in ((0.29, False), (0.45, True)):
        g = _CellGrid(p, box, r)
        assert (g.kd is not None) == fallback
        i, j = g.pairs()
        ref = PeriodicTree(p, box, r).query_pairs(r)
        assert set(zip(np.minimum(i, j), np.maximum(i, j))) == set(map(tuple, ref))
        assert len(ref) > 10 and len(i) == len(ref)
    out, st = bank.place(beads, box, seed=1, return_stats=True)
    assert np.abs(com(out) - beads).max() < 1e-9 and st["n_contacts"] == 0
    i, j, _ = close_pairs(out.reshape(-1, 3), box, 0.08, div=3)
    assert len(i) == 0

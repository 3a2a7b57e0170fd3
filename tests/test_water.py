"""Water grouping (AA -> CG, 4 waters per Martini W) and the CG -> AA water cluster bank."""

import os

import numpy as np
import pytest
from scipy.spatial import cKDTree

from multiscale.backmap.water import (
    CLUSTER_MASSES,
    MIN_DIST_ATOMS,
    MIN_DIST_OO,
    MIN_DIST_OTHERS,
    WaterBank,
    random_rotations,
)
from multiscale.errors import MultiscaleError
from multiscale.water import group_radius, group_waters

W_DENSITY = 33.4 / 4  # Martini W beads per nm^3 (liquid water 33.4 molecules/nm^3)


def water_oxygens(n, seed=0):
    """n oxygens at liquid-water density in a cubic box: jittered lattice, shuffled."""
    side = int(np.ceil(n ** (1 / 3)))
    a = (1 / 33.4) ** (1 / 3)
    g = np.arange(side) * a
    x = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    x = x[rng.permutation(len(x))[:n]] + rng.normal(0, 0.03, (n, 3))
    return x, np.full(3, side * a)


def w_lattice(n_side, jitter=0.05, seed=0):
    a = (1 / W_DENSITY) ** (1 / 3)
    g = np.arange(n_side) * a
    x = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    x += np.random.default_rng(seed).normal(0, jitter, x.shape)
    return x, np.full(3, n_side * a)


def min_image(d, box):
    return d - box * np.round(d / box)


# ---------------------------------------------------------------------------- grouping
def test_group_waters_partition_and_compact():
    ox, box = water_oxygens(4000)
    g = group_waters(ox, box, seed=0)
    assert g.shape == (1000, 4) and g.dtype == np.int64
    assert np.array_equal(np.sort(g.ravel()), np.arange(4000))
    r = group_radius(ox, g, box)
    rnd = group_radius(ox, np.random.default_rng(0).permutation(4000).reshape(-1, 4), box)
    assert r.mean() < 0.3 and r.max() < 0.6
    assert r.mean() < 0.2 * rnd.mean()
    assert np.all(group_radius(ox, g, box, reduce="mean") <= r + 1e-12)


def test_group_waters_deterministic_and_box_forms():
    ox, box = water_oxygens(2000, seed=3)
    a = group_waters(ox, box, seed=7)
    assert np.array_equal(a, group_waters(ox, box, seed=7))
    assert np.array_equal(a, group_waters(ox + 3 * box, np.diag(box), seed=7))  # any image
    m = np.diag(box)
    m[0, 1] = 0.5  # not GROMACS form (upper triangle): an actionable error
    with pytest.raises(MultiscaleError, match="lower triangular"):
        group_waters(ox, m)
    m = np.diag(box)
    m[1, 0] = 0.5  # triclinic: grouped (tests/test_water_triclinic.py)
    g = group_waters(ox, m, seed=7)
    assert np.array_equal(np.sort(g.ravel()), np.arange(len(ox)))
    assert group_radius(ox, g, m).mean() < 0.3


def test_group_waters_pbc_straddling_edge():
    box = np.array([3.0, 3.0, 3.0])
    edge = np.array([[0.05, 1.5, 1.5], [2.95, 1.6, 1.5], [0.12, 1.45, 1.62], [2.88, 1.52, 1.4]])
    centre = np.array([1.5, 1.5, 1.5]) + 0.15 * np.eye(4, 3)
    ox = np.concatenate([edge, centre])[[0, 4, 1, 5, 2, 6, 3, 7]]
    g = group_waters(ox, box)
    assert sorted(map(tuple, g)) == [(0, 2, 4, 6), (1, 3, 5, 7)]
    assert group_radius(ox, g, box).max() < 0.2


def test_group_waters_not_multiple_of_four():
    ox, box = water_oxygens(1002)
    with pytest.raises(MultiscaleError, match="1002 waters is not a multiple of 4: remove 2"):
        group_waters(ox, box)


# ---------------------------------------------------------------------------- bank
@pytest.fixture(scope="module")
def bank():
    return WaterBank.default()


def test_default_bank(bank):
    assert len(bank) == 2000 and bank.clusters.dtype == np.float32
    assert bank.clusters.shape == (2000, 4, 3, 3)
    flat = bank.clusters.reshape(-1, 12, 3).astype(np.float64)
    com = (flat * CLUSTER_MASSES[:, None]).sum(1) / CLUSTER_MASSES.sum()
    assert np.abs(com).max() < 1e-6
    oh = np.linalg.norm(bank.clusters[:, :, 1:] - bank.clusters[:, :, :1], axis=-1)
    assert np.allclose(oh, 0.09572, atol=2e-4)  # rigid TIP3P
    assert bank.min_intra_oo > 0.22
    from importlib import resources

    path = resources.files("multiscale") / "data" / "water_clusters_tip3p.npz"
    assert os.path.getsize(path) < 1_000_000


def test_random_rotations_are_rotations():
    r = random_rotations(np.random.default_rng(0), 1000)
    assert np.allclose(r @ r.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(r), 1.0)
    assert abs(r[:, :, 2].mean(0)).max() < 0.1  # no preferred axis


def test_place_exact_com_geometry_and_no_clash(bank):
    beads, box = w_lattice(20)
    out, st = bank.place(beads, box, seed=1, return_stats=True)
    assert out.shape == (len(beads), 4, 3, 3) and out.dtype == np.float64
    com = (out.reshape(-1, 12, 3) * CLUSTER_MASSES[:, None]).sum(1) / CLUSTER_MASSES.sum()
    assert np.abs(com - beads).max() < 1e-9
    oh = np.linalg.norm(out[:, :, 1:] - out[:, :, :1], axis=-1)
    assert np.allclose(oh, 0.09572, atol=2e-4)
    # no O-O pair from different beads closer than the cut-off, unresolved beads aside
    assert st["n_unresolved"] < 0.004 * len(beads)  # ~0.1 % (0.8 % before lazy candidates)
    o = np.mod(out[:, :, 0].reshape(-1, 3), box)
    o[o >= box] = 0
    pairs = cKDTree(o, boxsize=box).query_pairs(MIN_DIST_OO, output_type="ndarray")
    bi, bj = pairs[:, 0] // 4, pairs[:, 1] // 4
    bad = np.zeros(len(beads), bool)
    bad[st["unresolved"]] = True
    clash = (bi != bj) & ~bad[bi] & ~bad[bj]
    assert not clash.any()
    assert st["n_initial_clash"] > st["n_unresolved"]


def test_place_seeded(bank):
    beads, box = w_lattice(8)
    a = bank.place(beads, box, seed=3)
    assert np.array_equal(a, bank.place(beads, box, seed=3))
    assert not np.allclose(a, bank.place(beads, box, seed=4))


def test_place_threads_and_candidate_options(bank, monkeypatch):
    import multiscale.backmap.water.params as wparams

    beads, box = w_lattice(14, seed=4)
    a, st = bank.place(beads, box, seed=7, return_stats=True)
    monkeypatch.setattr(wparams, "_MAX_THREADS", 1)  # same draws, same result on one thread
    assert np.array_equal(a, bank.place(beads, box, seed=7))
    # no retries: every bead of the first draw's clash cover is left unresolved
    _, s0 = bank.place(beads, box, seed=7, max_retries=0, return_stats=True)
    assert s0["retries"] == 0 and s0["n_unresolved"] == s0["n_initial_clash"] > 0
    # one candidate per round (no choice) resolves far fewer beads than the defaults
    _, s1 = bank.place(beads, box, seed=7, n_candidates=1, first_candidates=1,
                       return_stats=True)
    assert s1["n_unresolved"] > 3 * st["n_unresolved"]
    assert st["clashing_after_retry"][-1] == st["n_unresolved"]


def test_place_avoids_others(bank):
    beads, box = w_lattice(12, seed=2)
    rng = np.random.default_rng(5)
    # a solute-like blob (~ protein atom density 100/nm^3) with the W beads inside it removed
    others = rng.uniform(0, 1.5, (340, 3)) - 0.2
    d, _ = cKDTree(np.mod(others, box), boxsize=box).query(np.mod(beads, box))
    beads = beads[d > 0.35]
    out, st = bank.place(beads, box, seed=0, others=others, return_stats=True)
    atoms = np.mod(out.reshape(len(beads), 12, 3), box)
    d, _ = cKDTree(np.mod(others, box), boxsize=box).query(atoms.reshape(-1, 3) % box)
    d = d.reshape(len(beads), 12).min(1)
    ok = np.ones(len(beads), bool)
    ok[st["unresolved"]] = False
    assert d[ok].min() >= MIN_DIST_OTHERS
    assert st["n_unresolved"] < 0.05 * len(beads)


def test_place_input_errors(bank):
    with pytest.raises(MultiscaleError, match="shape"):
        bank.place(np.zeros((3, 2)), [3, 3, 3])
    with pytest.raises(MultiscaleError, match="lower triangular"):
        bank.place(np.zeros((3, 3)), [[3, 0, 1], [0, 3, 0], [0, 0, 3]])
    with pytest.raises(MultiscaleError, match="too small"):
        bank.place(np.zeros((3, 3)), [[0.9, 0, 0], [0.45, 0.9, 0], [0.45, 0.45, 0.7]])
    assert bank.place(np.zeros((0, 3)), [3, 3, 3]).shape == (0, 4, 3, 3)


def test_bank_round_trip(bank, tmp_path):
    import torch

    f = tmp_path / "model.pt"
    torch.save({"water": bank.to_dict()}, f)
    b2 = WaterBank.from_dict(torch.load(f, weights_only=True)["water"])
    assert np.array_equal(b2.clusters, bank.clusters) and b2.note == bank.note
    bank.save(tmp_path / "bank.npz")
    b3 = WaterBank.load(tmp_path / "bank.npz")
    assert np.array_equal(b3.clusters, bank.clusters) and b3.n_source == bank.n_source
    beads, box = w_lattice(6)
    assert np.array_equal(b3.place(beads, box, seed=2), bank.place(beads, box, seed=2))


def test_from_frames(bank):
    beads, box = w_lattice(8, jitter=0.0)
    frames = np.stack([bank.place(beads, box, seed=s).reshape(-1, 3, 3) for s in range(2)])
    frames[0, :5] += box  # molecules in another image: must not matter
    b = WaterBank.from_frames(frames, np.stack([box, box]), max_clusters=700, seed=0)
    assert len(b) == 700 and b.clusters.dtype == np.float32 and b.n_source <= 2 * len(beads)
    flat = b.clusters.reshape(-1, 12, 3).astype(np.float64)
    com = (flat * CLUSTER_MASSES[:, None]).sum(1) / CLUSTER_MASSES.sum()
    assert np.abs(com).max() < 1e-6
    assert np.linalg.norm(b.clusters[:, :, 0], axis=-1).max() <= 0.4 + 1e-6
    b2 = WaterBank.from_frames(frames, np.stack([box, box]), max_clusters=700, seed=0)
    assert np.array_equal(b.clusters, b2.clusters)
    with pytest.raises(MultiscaleError, match="not a multiple of 4"):
        WaterBank.from_frames(frames[:, :-1], box)


def _kd_pairs(p, box, r, q=None):
    """Reference pairs (sets) within r - 1e-5 and r + 1e-5 nm: the grid tests distances in
    float32, so pairs within ~1e-7 of the cut-off may go either way."""
    t = cKDTree(np.mod(p, box), boxsize=box)
    out = []
    for rr in (r - 1e-5, r + 1e-5):
        if q is None:
            pp = np.sort(t.query_pairs(rr, output_type="ndarray"), axis=1)
            out.append(set(map(tuple, pp)))
        else:
            nbl = t.query_ball_point(np.mod(q, box), rr)
            out.append({(a, b) for a, v in enumerate(nbl) for b in v})
    return out


def _same_pairs(i, j, ref, ordered=False):
    got = list(zip(i, j) if ordered else zip(np.minimum(i, j), np.maximum(i, j)))
    return len(got) == len(set(got)) and ref[0] <= set(got) <= ref[1]  # each pair once


def test_cell_grid_matches_kdtree():
    from multiscale.backmap.water import _CellGrid

    rng = np.random.default_rng(0)
    box = np.array([3.1, 2.7, 4.0])
    p = rng.uniform(-4, 8, (3000, 3))  # any periodic image
    g = _CellGrid(p[:2000], box, 0.2)
    assert g.kd is None
    assert _same_pairs(*g.pairs(), _kd_pairs(p[:2000], box, 0.2))
    # points outside the grid, against all grid points
    assert _same_pairs(*g.query(p[2000:]), _kd_pairs(p[:2000], box, 0.2, p[2000:]), True)
    ids = rng.permutation(2000) + 7  # custom point names
    i, j = _CellGrid(p[:2000], box, 0.2, ids=ids).pairs()
    ref = [{(min(ids[a], ids[b]), max(ids[a], ids[b])) for a, b in r}
           for r in _kd_pairs(p[:2000], box, 0.2)]
    assert _same_pairs(i, j, ref)
    for small in ([0.85, 0.9, 0.65], [2.0, 0.81, 3.0]):  # the fewest cells (2 x 2 x 3)
        small = np.array(small)
        ps = rng.uniform(-3, 6, (1000, 3))
        g = _CellGrid(ps, small, 0.2)
        assert g.kd is None and min(g.nc[:2]) == 2
        assert _same_pairs(*g.pairs(), _kd_pairs(ps, small, 0.2))
        assert _same_pairs(*g.query(p[:500]), _kd_pairs(ps, small, 0.2, p[:500]), True)
    tiny = _CellGrid(p[:20] * 0.15, box * 0.15, 0.2)  # box < 3 cut-offs: cKDTree fallback
    assert tiny.kd is not None and len(tiny.pairs()[0]) > 0
    assert len(tiny.query(p[20:40] * 0.15)[0]) > 0
    # update: move points 0..499 (as columns) = a fresh grid of the moved set, for queries
    for scale in (1.0, 0.15):
        q = p[2000:] * scale
        pts = p[:2000] * scale
        g = _CellGrid(tuple(pts.T), box * scale, 0.2)
        drop = np.zeros(2000, bool)
        drop[:500] = True
        pts[:500] = rng.uniform(-4, 8, (500, 3)) * scale
        g.update(drop, tuple(pts[:500].T), np.arange(500))
        i, j = g.query(q)
        i0, j0 = _CellGrid(pts, box * scale, 0.2).query(q)
        assert len(i) == len(i0) > 0 and set(zip(i, j)) == set(zip(i0, j0))


def test_place_tiny_box(bank):
    box = np.array([1.0, 1.0, 1.0])
    beads = np.array([[0.2, 0.2, 0.2], [0.7, 0.7, 0.7]])
    out, st = bank.place(beads, box, seed=0, return_stats=True)
    com = (out.reshape(-1, 12, 3) * CLUSTER_MASSES[:, None]).sum(1) / CLUSTER_MASSES.sum()
    assert np.abs(com - beads).max() < 1e-9 and st["n_beads"] == 2


# ---------------------------------------------------------------------------- atom contacts
def close_bead_pairs(n_side=12, seed=0):
    """A W lattice at Martini density in which half of the beads sit in pairs 0.28-0.32 nm
    apart (neighbours along x pulled together about their midpoint): denser than any real
    CG frame, where two rigid clusters cannot be separated by re-drawing orientations."""
    beads, box = w_lattice(n_side, jitter=0.03, seed=seed)
    rng = np.random.default_rng(seed + 1)
    idx = np.arange(len(beads)).reshape(n_side, n_side, n_side)
    i = idx[0:n_side:2].ravel()  # x index even ...
    j = idx[1:n_side:2].ravel()  # ... and its +x neighbour
    mid = (beads[i] + beads[j]) / 2
    u = np.array([1.0, 0, 0]) + rng.normal(0, 0.1, (len(i), 3))  # about along the pair
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    half = rng.uniform(0.28, 0.32, len(i))[:, None] / 2
    beads[i], beads[j] = mid - half * u, mid + half * u
    return beads, box


def intermolecular_min(out, box, r=0.12):
    """Distances (float64) of all atom pairs of different water molecules closer than r."""
    a = np.mod(out.reshape(-1, 3), box)
    a[a >= box] = 0
    p = cKDTree(a, boxsize=box).query_pairs(r, output_type="ndarray")
    p = p[p[:, 0] // 3 != p[:, 1] // 3]
    d = min_image(a[p[:, 1]] - a[p[:, 0]], box)
    return np.linalg.norm(d, axis=1)


def test_place_close_pairs_no_atom_contacts(bank):
    beads, box = close_bead_pairs()
    d = np.linalg.norm(min_image(beads[:, None] - beads[None], box), axis=-1)
    d[np.arange(len(beads)), np.arange(len(beads))] = np.inf
    assert d.min() > 0.27 and np.all(np.sort(d, axis=1)[:, 0] < 0.33)  # each in a pair ...
    assert np.sort(d, axis=1)[:, 1].min() > 0.35  # ... and clear of the others
    out, st = bank.place(beads, box, seed=5, return_stats=True)
    # without the contact stage the clusters overlap (the test can fail)
    raw = bank.place(beads, box, seed=5, min_dist_atoms=0)
    assert (intermolecular_min(raw, box) < 0.08).sum() > 100
    # with it: no two atoms of different molecules closer than 0.08 nm (nor min_dist_atoms)
    dist = intermolecular_min(out, box)
    assert dist.min() >= MIN_DIST_ATOMS > 0.08
    assert st["n_contacts"] == 0 and len(st["contacts"]) == 0
    assert st["n_contacts_initial"] > 100 and st["n_molecules_moved"] > 100
    assert st["n_beads_shifted"] > 0  # clusters this close need molecules moved apart
    # centre of mass of each bead's 12 atoms exactly on the bead
    com = (out.reshape(-1, 12, 3) * CLUSTER_MASSES[:, None]).sum(1) / CLUSTER_MASSES.sum()
    assert np.abs(com - beads).max() < 1e-9
    # every molecule rigid: its O-H1, O-H2, H1-H2 distances are those of a bank molecule
    def shape(w):
        return np.stack([np.linalg.norm(w[..., 1, :] - w[..., 0, :], axis=-1),
                         np.linalg.norm(w[..., 2, :] - w[..., 0, :], axis=-1),
                         np.linalg.norm(w[..., 2, :] - w[..., 1, :], axis=-1)], -1)
    ref = shape(bank.clusters.astype(np.float64).reshape(-1, 3, 3))
    dev, _ = cKDTree(ref).query(shape(out.reshape(-1, 3, 3)))
    assert dev.max() < 1e-6  # float32 bank vs float64 output; a moved H is off by 1e-2
    # same seed, same output; another seed, another one
    assert np.array_equal(out, bank.place(beads, box, seed=5))
    assert not np.allclose(out, bank.place(beads, box, seed=6))


def test_place_contact_stage_reports_what_is_left(bank):
    beads, box = close_bead_pairs(n_side=8, seed=3)
    # no rounds: the contacts found are reported, not hidden
    out, st = bank.place(beads, box, seed=1, contact_rounds=0, return_stats=True)
    assert st["n_contacts"] == st["n_contacts_initial"] > 0
    dist = intermolecular_min(out, box, MIN_DIST_ATOMS)
    assert len(dist) == st["n_contacts"]
    c = st["contacts"]  # atom indices into out.reshape(-1, 3), different molecules
    assert c.shape == (st["n_contacts"], 2) and np.all(c[:, 0] // 3 != c[:, 1] // 3)
    d = np.linalg.norm(min_image(out.reshape(-1, 3)[c[:, 1]] - out.reshape(-1, 3)[c[:, 0]],
                                 box), axis=1)
    assert np.allclose(np.sort(d), np.sort(st["contact_dist"])) and d.max() < MIN_DIST_ATOMS
    # the O-O clearance of the bead stage is kept: turned and shifted oxygens stay
    # MIN_DIST_OO from other beads' oxygens, the unresolved beads aside
    out, st = bank.place(beads, box, seed=1, return_stats=True)
    assert st["n_contacts"] == 0
    o = np.mod(out[:, :, 0].reshape(-1, 3), box)
    o[o >= box] = 0
    p = cKDTree(o, boxsize=box).query_pairs(MIN_DIST_OO, output_type="ndarray")
    bad = np.zeros(len(beads), bool)
    bad[st["unresolved"]] = True
    bi, bj = p[:, 0] // 4, p[:, 1] // 4
    assert not ((bi != bj) & ~bad[bi] & ~bad[bj]).any()
    with pytest.raises(MultiscaleError, match="min_dist_atoms"):
        bank.place(beads, box, min_dist_atoms=0.2)

"""Certificates: stereocentre / double-bond detection, mirror detection and repair, PBC clashes."""

import json

import numpy as np

from multiscale.backmap.certify import (
    CertificateReport,
    StereoReference,
    chirality_signs,
    cistrans_cis,
    exclusion_matrix,
    find_clashes,
    find_double_bonds,
    find_stereocentres,
    flip_double_bond,
    swap_substituents,
)


def butan2ol():
    """(R/S)-butan-2-ol heavy atoms + H on C2 and O: C1 C2 C3 C4 O5 H6(C2) H7(O). Coordinates nm."""
    el = ["C", "C", "C", "C", "O", "H", "H"]
    bonds = [(0, 1), (1, 2), (2, 3), (1, 4), (1, 5), (4, 6)]
    c2 = np.zeros(3)
    dirs = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float) / np.sqrt(3)
    x = np.zeros((7, 3))
    x[1] = c2
    x[0] = c2 + 0.153 * dirs[0]
    x[2] = c2 + 0.153 * dirs[1]
    x[4] = c2 + 0.143 * dirs[2]
    x[5] = c2 + 0.109 * dirs[3]
    x[3] = x[2] + np.array([0.0, -0.153, 0.0])
    x[6] = x[4] + np.array([-0.096, 0.0, 0.0])
    return 7, np.array(bonds), el, x


def test_stereocentre_detection():
    n, b, el, _ = butan2ol()
    c, nb = find_stereocentres(n, b, el)
    assert c.tolist() == [1] and nb.tolist() == [[0, 2, 4]]
    # propan-2-ol: two identical methyls -> no centre
    c, _ = find_stereocentres(5, np.array([(0, 1), (1, 2), (1, 3), (1, 4)]), ["C", "C", "C", "O", "H"])
    assert len(c) == 0
    # cyclohexanol-like ring: C0 has two identical ring branches -> no centre
    ring = [(k, (k + 1) % 6) for k in range(6)]
    el = ["C"] * 6 + ["O", "H"]
    assert len(find_stereocentres(8, np.array(ring + [(0, 6), (0, 7)]), el)[0]) == 0
    # 2-methylcyclohexanol: C0 and C1 are centres
    el = ["C"] * 6 + ["O", "H", "C", "H"]
    c, _ = find_stereocentres(10, np.array(ring + [(0, 6), (0, 7), (1, 8), (1, 9)]), el)
    assert c.tolist() == [0, 1]


def test_double_bonds():
    # but-2-ene heavy + vinyl H: C0 C1=C2 C3, H4 on C1, H5 on C2
    b = np.array([(0, 1), (1, 2), (2, 3), (1, 4), (2, 5)])
    q = find_double_bonds(6, b, ["C", "C", "C", "C", "H", "H"])
    assert q.tolist() == [[0, 1, 2, 3]]
    x = np.array([[-0.07, 0.12, 0], [0, 0, 0], [0.134, 0, 0], [0.204, 0.12, 0], [-0.05, -0.09, 0], [0.18, -0.09, 0]])
    assert cistrans_cis(x, q).tolist() == [True]
    y = flip_double_bond(x[None], 6, b, 1, 2)[0]
    assert cistrans_cis(y, q).tolist() == [False]
    assert np.isclose(np.linalg.norm(y[2] - y[1]), 0.134) and np.isclose(np.linalg.norm(y[3] - y[2]), np.linalg.norm(x[3] - x[2]))


def test_mirror_detected_and_corrected():
    n, b, el, x = butan2ol()
    rng = np.random.default_rng(0)
    train = x[None] + rng.normal(scale=0.005, size=(50, n, 3))
    ref = StereoReference.from_frames(n, b, el, train)
    assert ref.agreement[0] == 1.0 and len(ref.enforced_centres) == 1
    mirrored = train[:10] * np.array([1.0, 1.0, -1.0])
    wc, _ = ref.wrong(mirrored)
    assert wc.all()
    assert not ref.wrong(train)[0].any()
    fixed = swap_substituents(mirrored, n, b, 1)
    assert not ref.wrong(fixed)[0].any()
    # the swap keeps every bond length
    bl = lambda z: np.linalg.norm(z[:, b[:, 1]] - z[:, b[:, 0]], axis=-1)
    assert np.allclose(bl(fixed), bl(mirrored))
    # serialisation
    r2 = StereoReference.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert np.array_equal(r2.sign, ref.sign) and np.array_equal(r2.centres, ref.centres)
    assert chirality_signs(x, r2.centres, r2.neighbours).tolist() == ref.sign.tolist()


def test_clashes_pbc_and_exclusions():
    box = np.array([3.0, 3.0, 3.0])
    # molecule 0: a 3-atom chain; molecule 1: one atom across the periodic boundary from atom 0
    x = np.array([[0.01, 1.0, 1.0], [0.16, 1.0, 1.0], [0.25, 1.08, 1.0], [2.96, 1.0, 1.0], [1.5, 1.5, 1.5]])
    mol = np.array([0, 0, 0, 1, 2])
    local = np.array([0, 1, 2, 0, 0])
    kind = np.array([0, 0, 0, 1, 1])
    ex = [exclusion_matrix(3, np.array([(0, 1), (1, 2)])), np.ones((1, 1), bool)]
    inter, intra = find_clashes(x, box, mol, local, kind, ex)
    assert inter.tolist() == [[0, 3]]  # 0.05 nm through the boundary
    assert len(intra) == 0  # 1-3 pair 0-2 excluded even though close
    # a non-excluded intramolecular contact (1-4) is found
    b4 = np.array([(0, 1), (1, 2), (2, 3)])
    x4 = np.array([[0.0, 0, 0], [0.15, 0, 0], [0.15, 0.15, 0], [0.05, 0.05, 0]]) + 1.0
    inter, intra = find_clashes(x4, box, np.zeros(4, int), np.arange(4), np.zeros(4, int), [exclusion_matrix(4, b4)])
    assert intra.tolist() == [[0, 3]] and len(inter) == 0


def test_report_json():
    r = CertificateReport(frame=2, per_moltype={"HPO": {"molecules": np.int64(3), "stereo_wrong_final": 0}},
                          inter_clash_pairs_final=1)
    d = json.loads(r.to_json())
    assert d["frame"] == 2 and d["per_moltype"]["HPO"]["molecules"] == 3 and d["ok"] is False
    assert "HPO x3" in r.summary()


def test_subset_clash_search_matches_full():
    rng = np.random.default_rng(5)
    box = np.array([2.0, 2.0, 2.0])
    x = rng.uniform(0, 2, (3000, 3))
    mol = np.arange(3000) // 3
    loc = np.arange(3000) % 3
    kind = np.zeros(3000, int)
    ex = [exclusion_matrix(3, np.array([(0, 1), (1, 2)]))]
    ip, jp = find_clashes(x, box, mol, loc, kind, ex, 0.08, 0.10)
    sub = np.arange(0, 3000, 7)
    si, sj = find_clashes(x, box, mol, loc, kind, ex, 0.08, 0.10, subset=sub)
    want = ip[np.isin(ip, sub).any(1)]
    assert sorted(map(tuple, si.tolist())) == sorted(map(tuple, want.tolist()))
    want = jp[np.isin(jp, sub).any(1)]
    assert sorted(map(tuple, sj.tolist())) == sorted(map(tuple, want.tolist()))


def _dodecahedron(d):
    """Rhombic dodecahedron (xy-square), GROMACS box vectors (rows), image distance d nm."""
    return np.array([[d, 0, 0], [0, d, 0], [d / 2, d / 2, d * np.sqrt(2) / 2]])


def _brute_pairs(x, box, r):
    """Pairs i<j closer than r by the exact minimum image (all pairs)."""
    from multiscale.geometry import minimum_image

    i, j = np.triu_indices(len(x), 1)
    d = np.linalg.norm(minimum_image(x[j] - x[i], box), axis=-1)
    return i[d < r], j[d < r], d[d < r]


def test_clashes_triclinic_match_brute_force():
    from multiscale.backmap.certify import periodic_pairs

    rng = np.random.default_rng(11)
    box = _dodecahedron(2.0)
    n = 900
    x = rng.uniform(-1, 1, (n, 3)) @ box * 1.5  # any image, not wrapped
    mol, loc, kind = np.arange(n) // 3, np.arange(n) % 3, np.zeros(n, int)
    ex = [exclusion_matrix(3, np.array([(0, 1), (1, 2)]))]
    ip, jp = find_clashes(x, box, mol, loc, kind, ex, 0.08, 0.10)
    i, j, d = _brute_pairs(x, box, 0.10)
    same = mol[i] == mol[j]
    want_inter = {(a, b) for a, b, s, dd in zip(i, j, same, d) if not s and dd < 0.08}
    want_intra = {(a, b) for a, b, s in zip(i, j, same) if s and not ex[0][loc[a], loc[b]]}
    assert {tuple(p) for p in ip.tolist()} == want_inter and len(want_inter) > 20
    assert {tuple(p) for p in jp.tolist()} == want_intra
    sub = np.arange(0, n, 5)
    si, _ = find_clashes(x, box, mol, loc, kind, ex, 0.08, 0.10, subset=sub)
    assert {tuple(p) for p in si.tolist()} == {p for p in want_inter if p[0] in set(sub) or p[1] in set(sub)}
    pr = periodic_pairs(x, box, 0.1)
    assert {tuple(p) for p in pr.tolist()} == set(zip(i.tolist(), j.tolist()))


def test_clashes_orthorhombic_matrix_identical_to_lengths():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 2, (2000, 3))
    mol, loc, kind = np.arange(2000) // 4, np.arange(2000) % 4, np.zeros(2000, int)
    ex = [exclusion_matrix(4, np.array([(0, 1), (1, 2), (2, 3)]))]
    a = find_clashes(x, np.array([2.0, 2.0, 2.0]), mol, loc, kind, ex)
    b = find_clashes(x, np.diag([2.0, 2.0, 2.0]), mol, loc, kind, ex)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


def test_sparse_exclusions_look_up_like_the_dense_matrix():
    """A long chain's exclusions (sparse above DENSE_EXCLUSIONS_MAX atoms) answer ex[i, j] exactly as the
    dense matrix, and find_clashes gives the same pairs with either."""
    from multiscale.backmap import certify
    from multiscale.backmap.certify import SparseExclusions, exclusion_matrix, find_clashes
    from multiscale.graph import MolecularGraph

    rng = np.random.default_rng(0)
    n = 300
    bonds = np.stack([np.arange(n - 1), np.arange(1, n)], 1)
    bonds = np.concatenate([bonds, [[k, k + 5] for k in range(0, n - 5, 17)]])  # a few rings
    dense = MolecularGraph(n, bonds, ["X"] * n).exclusion_matrix(2)
    sparse = SparseExclusions(n, MolecularGraph(n, bonds, ["X"] * n).excluded_pairs(2))
    i, j = rng.integers(0, n, 5000), rng.integers(0, n, 5000)
    assert np.array_equal(sparse[i, j], dense[i, j]) and len(sparse) == n
    assert isinstance(exclusion_matrix(certify.DENSE_EXCLUSIONS_MAX + 1, np.zeros((0, 2), int)), SparseExclusions)
    x = np.cumsum(rng.normal(0, 0.06, (n, 3)), 0) + 5.0  # a compact random walk: many close pairs
    box = np.array([20.0, 20.0, 20.0])
    args = (np.zeros(n, int), np.arange(n), np.zeros(n, int))
    a = find_clashes(x, box, *args, [dense], 0.08, 0.12)
    b = find_clashes(x, box, *args, [sparse], 0.08, 0.12)
    assert len(a[1]) > 0 and np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])

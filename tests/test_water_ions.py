"""Water placement around ions: ``others_min_dist`` keeps water oxygens at a sane first-shell
distance (Na+ >= 0.20 nm, Cl- >= 0.27 nm), checked by brute-force minimum image."""

import numpy as np
import pytest

from multiscale.backmap.water import CLUSTER_MASSES, MIN_DIST_OTHERS, WaterBank
from multiscale.errors import MultiscaleError
from multiscale.geometry import minimum_image

W_DENSITY = 33.4 / 4
NA, CL = 0.20, 0.27


def ion_system(n_side=14, n_ions=120, pull=(0.43, 0.47), seed=1):
    """A jittered W lattice at Martini density in which ``n_ions`` sites hold ions (half Na+,
    half Cl-) instead of beads; with ``pull`` the W beads of each first shell are moved to that
    ion-bead distance (nm).  Returns beads, box, ions, radii (others_min_dist), kind (0 Na)."""
    a = (1 / W_DENSITY) ** (1 / 3)
    g = np.arange(n_side) * a
    x = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    x += rng.normal(0, 0.03, x.shape)
    box = np.full(3, n_side * a)
    idx = rng.choice(len(x), n_ions, replace=False)
    ions, beads = x[idx], np.delete(x, idx, axis=0)
    kind = np.arange(n_ions) % 2
    if pull is not None:
        dv = minimum_image(beads[:, None] - ions[None], box)
        dd = np.linalg.norm(dv, axis=-1)
        bi, ii = np.nonzero(dd < 0.62)
        beads[bi] = ions[ii] + dv[bi, ii] / dd[bi, ii, None] * rng.uniform(*pull, len(bi))[:, None]
    return beads, box, ions, np.where(kind == 0, NA, CL), kind


def o_ion_dist(out, ions, box):
    o = out[:, :, 0].reshape(-1, 3)
    return np.linalg.norm(minimum_image(o[:, None] - ions[None], box), axis=-1)  # (4n, ions)


@pytest.fixture(scope="module")
def bank():
    return WaterBank.default()


@pytest.mark.parametrize("pull", [None, (0.43, 0.47)])
def test_ion_first_shell(bank, pull):
    beads, box, ions, rad, kind = ion_system(pull=pull)
    # without per-ion distances some oxygens sit unphysically close (the test can fail)
    plain = bank.place(beads, box, seed=0, others=ions)
    assert (o_ion_dist(plain, ions, box) < rad).any(axis=1).sum() > 10
    out, st = bank.place(beads, box, seed=0, others=ions, others_min_dist=rad,
                         return_stats=True)
    d = o_ion_dist(out, ions, box)
    bad = (d < rad).any(axis=1)  # water molecules with an O too close to an ion
    frac = bad.mean()
    print(f"pull {pull}: O closer than the ion's first shell: {bad.sum()} of {len(bad)} "
          f"({100 * frac:.3f} %), min Na-O {d[:, kind == 0].min():.3f}, "
          f"min Cl-O {d[:, kind == 1].min():.3f} nm, unresolved beads {st['n_unresolved']}")
    assert frac < 1e-3
    # what is left is reported: exactly the molecules found here
    assert np.array_equal(st["ion_close"], np.flatnonzero(bad))
    assert st["n_ion_close"] == bad.sum()
    assert st["min_ion_dist"] == pytest.approx(d.min(), abs=1e-9)
    # every water atom keeps min_dist_others from every ion; COM exact; no contacts
    a = out.reshape(-1, 3)
    da = np.linalg.norm(minimum_image(a[:, None] - ions[None], box), axis=-1)
    ok = np.ones(len(beads), bool)
    ok[st["unresolved"]] = False
    assert da.reshape(len(beads), 12, -1)[ok].min() >= MIN_DIST_OTHERS
    com = (out.reshape(-1, 12, 3) * CLUSTER_MASSES[:, None]).sum(1) / CLUSTER_MASSES.sum()
    assert np.abs(com - beads).max() < 1e-9 and st["n_contacts"] == 0
    # same seed, same output
    assert np.array_equal(out, bank.place(beads, box, seed=0, others=ions,
                                          others_min_dist=rad))


def test_ion_distances_below_default_change_nothing(bank):
    beads, box, ions, rad, _ = ion_system(n_side=10, n_ions=40, pull=None)
    a = bank.place(beads, box, seed=3, others=ions)
    b = bank.place(beads, box, seed=3, others=ions, others_min_dist=np.full(len(ions), 0.1))
    assert np.array_equal(a, b)
    with pytest.raises(MultiscaleError, match="others_min_dist"):
        bank.place(beads, box, others=ions, others_min_dist=rad[:-1])


def test_ion_first_shell_triclinic(bank):
    """Ions in a rhombic dodecahedron (FCC-like bead lattice at Martini density)."""
    n = 12
    unit = np.array([[1, 0, 0], [0, 1, 0], [0.5, 0.5, 0.5 * np.sqrt(2)]])
    box = unit * (n**3 / W_DENSITY / np.linalg.det(unit)) ** (1 / 3)
    g = np.arange(n) / n
    rng = np.random.default_rng(5)
    x = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3) @ box
    x += rng.normal(0, 0.03, x.shape)
    idx = rng.choice(len(x), 100, replace=False)
    ions, beads = x[idx], np.delete(x, idx, axis=0)
    rad = np.where(np.arange(100) % 2 == 0, NA, CL)
    plain = bank.place(beads, box, seed=0, others=ions)
    assert (o_ion_dist(plain, ions, box) < rad).any(axis=1).sum() > 3
    out, st = bank.place(beads, box, seed=0, others=ions, others_min_dist=rad,
                         return_stats=True)
    bad = (o_ion_dist(out, ions, box) < rad).any(axis=1)
    assert bad.mean() < 1e-3 and st["n_ion_close"] == bad.sum() and st["n_contacts"] == 0


def shell_args(kind):
    """others_shell / others_charge / others_shell_n of the ion system (Na+ 0.24 nm, 6
    waters; Cl- 0.315 nm, 7 waters)."""
    na = kind == 0
    return dict(others_shell=np.where(na, 0.24, 0.315), others_charge=np.where(na, 1.0, -1.0),
                others_shell_n=np.where(na, 6.0, 7.0))


def shell_numbers(out, ions, kind, box):
    """Na+ CN (O within 0.32 nm), Cl- CN (O within 0.38 nm), mean cosines of the shell
    waters' orientation (Na+: ion -> O with O -> H-H midpoint; Cl-: O -> ion with the better
    O -> H), min O-Na, min O-Cl."""
    w = out.reshape(-1, 3, 3)
    dv = minimum_image(w[:, None, 0] - ions[None], box)  # (waters, ions, 3) ion -> O
    d = np.linalg.norm(dv, axis=-1)
    na, cl = kind == 0, kind == 1
    wi, ii = np.nonzero((d < 0.32) & na[None])
    hm = w[wi, 1:].mean(1) - w[wi, 0]
    cos_na = np.einsum("ij,ij->i", hm, dv[wi, ii]) / np.linalg.norm(hm, axis=1) / d[wi, ii]
    wi, ii = np.nonzero((d < 0.38) & cl[None])
    oh = w[wi, 1:] - w[wi, :1]
    cos_cl = (-np.einsum("ihj,ij->ih", oh, dv[wi, ii]) / np.linalg.norm(oh, axis=2)).max(1) / d[wi, ii]
    return ((d[:, na] < 0.32).sum(0).mean(), (d[:, cl] < 0.38).sum(0).mean(), cos_na.mean(),
            cos_cl.mean(), d[:, na].min(), d[:, cl].min())


def test_ion_shell_pass_fills_the_first_shell(bank):
    """W beads at Martini first-shell distances from the ions (0.42-0.50 nm): random clusters
    leave Na+ with ~2 waters within 0.32 nm; the shell pass gives a first shell (>= 4.5,
    hydrogens away from Na+, one O-H towards Cl-) with every other property kept."""
    from scipy.spatial import cKDTree

    beads, box, ions, rad, kind = ion_system(n_side=10, n_ions=40, pull=(0.42, 0.50), seed=2)
    plain = bank.place(beads, box, seed=0, others=ions, others_min_dist=rad)
    out, st = bank.place(beads, box, seed=0, others=ions, others_min_dist=rad,
                         return_stats=True, **shell_args(kind))
    p, s = shell_numbers(plain, ions, kind, box), shell_numbers(out, ions, kind, box)
    print(f"Na CN {p[0]:.2f} -> {s[0]:.2f}, Cl CN {p[1]:.2f} -> {s[1]:.2f}, cos Na {p[2]:.2f} -> "
          f"{s[2]:.2f}, cos Cl {p[3]:.2f} -> {s[3]:.2f}, min Na-O {s[4]:.3f}, Cl-O {s[5]:.3f}; "
          f"shell beads {st['n_shell_beads']}, turned {st['n_shell_turned']}")
    assert p[0] < 3.0 and s[0] >= 4.5 and s[0] <= 6.5  # filled, not over-filled
    assert s[1] >= p[1] and s[1] <= 7.5
    assert s[2] > 0.6 and s[2] > p[2] + 0.3 and s[3] > 0.6
    assert s[4] >= NA and s[5] >= CL and st["n_ion_close"] == 0
    assert st["n_shell_beads"] > 0 and st["n_shell_turned"] > 0.5 * st["n_shell_beads"]
    # bead COM exact, no contact between waters (< 0.085 nm, brute force by a periodic tree),
    # every water atom >= 0.15 nm from the ions
    com = (out.reshape(-1, 12, 3) * CLUSTER_MASSES[:, None]).sum(1) / CLUSTER_MASSES.sum()
    assert np.abs(com - beads).max() < 1e-9 and st["n_contacts"] == 0
    a = out.reshape(-1, 3)
    pairs = cKDTree(np.mod(a, box), boxsize=box).query_pairs(0.085, output_type="ndarray")
    assert not np.any(pairs[:, 0] // 3 != pairs[:, 1] // 3)
    da = np.linalg.norm(minimum_image(a[:, None] - ions[None], box), axis=-1)
    ok = np.ones(len(beads), bool)
    ok[st["unresolved"]] = False
    assert da.reshape(len(beads), 12, -1)[ok].min() >= MIN_DIST_OTHERS
    assert st["n_unresolved"] <= 1
    # same seed, same output; no shell atoms (all 0) = no shell pass, bit for bit
    assert np.array_equal(out, bank.place(beads, box, seed=0, others=ions, others_min_dist=rad,
                                          **shell_args(kind)))
    zero = dict(shell_args(kind), others_shell=np.zeros(len(ions)))
    assert np.array_equal(plain, bank.place(beads, box, seed=0, others=ions,
                                            others_min_dist=rad, **zero))
    with pytest.raises(MultiscaleError, match="others_shell"):
        bank.place(beads, box, others=ions, others_shell=np.zeros(3))
    with pytest.raises(MultiscaleError, match="others_charge"):
        bank.place(beads, box, others=ions, others_shell=np.zeros(len(ions)),
                   others_charge=np.zeros(3))


def test_ion_shell_pass_triclinic(bank):
    """The same in a rhombic dodecahedron: Na+ first shell filled, nothing else broken."""
    n = 10
    unit = np.array([[1, 0, 0], [0, 1, 0], [0.5, 0.5, 0.5 * np.sqrt(2)]])
    box = unit * (n**3 / W_DENSITY / np.linalg.det(unit)) ** (1 / 3)
    g = np.arange(n) / n
    rng = np.random.default_rng(7)
    x = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3) @ box
    x += rng.normal(0, 0.03, x.shape)
    idx = rng.choice(len(x), 30, replace=False)
    ions, beads = x[idx], np.delete(x, idx, axis=0)
    kind = np.arange(30) % 2
    dv = minimum_image(beads[:, None] - ions[None], box)
    dd = np.linalg.norm(dv, axis=-1)
    bi, ii = np.nonzero(dd < 0.62)  # Martini-like first shells
    beads[bi] = ions[ii] + dv[bi, ii] / dd[bi, ii, None] * rng.uniform(0.42, 0.5, len(bi))[:, None]
    rad = np.where(kind == 0, NA, CL)
    plain = bank.place(beads, box, seed=1, others=ions, others_min_dist=rad)
    out, st = bank.place(beads, box, seed=1, others=ions, others_min_dist=rad,
                         return_stats=True, **shell_args(kind))
    p, s = shell_numbers(plain, ions, kind, box), shell_numbers(out, ions, kind, box)
    print(f"triclinic: Na CN {p[0]:.2f} -> {s[0]:.2f}, Cl CN {p[1]:.2f} -> {s[1]:.2f}")
    assert s[0] >= 4.5 and s[0] > p[0] + 1.0 and 6.5 <= s[1] <= max(p[1], 7.5)
    assert s[4] >= NA and s[5] >= CL and st["n_contacts"] == 0 and st["n_ion_close"] == 0
    w = out.reshape(-1, 12, 3)
    com = (w * CLUSTER_MASSES[:, None]).sum(1) / CLUSTER_MASSES.sum()
    assert np.abs(com - beads).max() < 1e-9

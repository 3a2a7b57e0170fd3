"""Triclinic boxes in the engine: clash search vs brute force, and the heptanol + NaCl rhombic
dodecahedron example backmapped with 0 clashes (brute-force minimum image) and exact CG beads.

The solute (+ ions) system runs now; the full system with water runs once the water bank
places waters in (3, 3) boxes."""

from pathlib import Path

import numpy as np
import pytest

from multiscale.backmap.certify import find_clashes
from multiscale.backmap.engine import backmap, train
from multiscale.coarse_grain import cg_layout, coarse_grain
from multiscale.geometry import is_orthorhombic, minimum_image, to_fractional
from multiscale.io import Frames, read_frames
from multiscale.mapping import load_mapping
from multiscale.topology import MoleculeBlock, SystemTopology, load_topology

DATA = Path(__file__).resolve().parents[1] / "src" / "multiscale" / "data"
EX = DATA / "examples" / "heptanol_nacl"
MAP = DATA / "mappings" / "heptanol.map"
DODECA = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [2.0, 2.0, 2.0 * np.sqrt(2.0)]])


def _brute_pairs(x, box, r, chunk=256):
    """All pairs i < j with minimum-image distance < r, by brute force: positions wrapped into
    the cell, every one of the 27 neighbouring images of every atom tried (exact for GROMACS
    boxes).  Returns (pairs (P, 2) sorted, distances (P,))."""
    from multiscale.geometry import wrap

    w = wrap(np.asarray(x, np.float64), box)
    n = len(w)
    shifts = np.array(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij")).reshape(3, -1).T @ box
    out_p, out_d = [], []
    for a in range(0, n, chunk):
        xi = w[a:a + chunk]
        d2 = np.full((len(xi), n), np.inf)
        for s in shifts:
            v = w[None] + s - xi[:, None]
            d2 = np.minimum(d2, np.einsum("ijk,ijk->ij", v, v))
        i, j = np.nonzero(d2 < r * r)
        keep = j > i + a
        out_p.append(np.stack([i[keep] + a, j[keep]], 1))
        out_d.append(np.sqrt(d2[i[keep], j[keep]]))
    return np.concatenate(out_p), np.concatenate(out_d)


def test_find_clashes_triclinic_matches_brute_force():
    rng = np.random.default_rng(0)
    n = 900
    x = rng.random((n, 3)) @ DODECA + rng.normal(0, 3, (n, 3))  # any image
    mol = np.repeat(np.arange(n // 3), 3)
    local = np.tile(np.arange(3), n // 3)
    kind = np.zeros(n, int)
    excl = [np.eye(3, dtype=bool) | np.diag([True, True], 1) | np.diag([True, True], -1)]  # 0-2 not excluded
    ip, jp = find_clashes(x, DODECA, mol, local, kind, excl, inter=0.3, intra=0.35)
    pairs, d = _brute_pairs(x, DODECA, 0.35)
    same = mol[pairs[:, 0]] == mol[pairs[:, 1]]
    ref_inter = pairs[~same & (d < 0.3)]
    ref_intra = pairs[same & (local[pairs[:, 0]] == 0) & (local[pairs[:, 1]] == 2)]
    assert len(ref_inter) > 20
    assert np.array_equal(ip, ref_inter) and np.array_equal(jp, ref_intra)
    # the incremental search (subset) finds exactly the pairs touching the subset
    sub = np.arange(0, n, 7)
    si, _ = find_clashes(x, DODECA, mol, local, kind, excl, inter=0.3, intra=0.35, subset=sub)
    want = ref_inter[np.isin(ref_inter, sub).any(1)]
    assert np.array_equal(si, want)
    # an orthorhombic matrix takes the edge-length path: identical to the (3,) form
    L = np.array([4.0, 4.5, 5.0])
    y = rng.random((n, 3)) * L
    a = find_clashes(y, L, mol, local, kind, excl, 0.3, 0.35)
    b = find_clashes(y, np.diag(L), mol, local, kind, excl, 0.3, 0.35)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))


@pytest.fixture(scope="module")
def dodecahedron():
    """(topology, mapping, frames, cg) of the example's solute: 40 HPO + 4 Na+ + 4 Cl- in the
    rhombic dodecahedron (water left out), and the full system (topology, frames)."""
    top = load_topology(EX / "aa.top")
    mp = load_mapping(MAP)
    fr = read_frames(EX / "aa.gro", expected_atoms=top.n_atoms)
    assert fr.box.shape == (1, 3, 3) and not is_orthorhombic(fr.box[0])
    hpo, sol, na, cl = top.blocks
    keep = np.r_[hpo.start:hpo.stop, na.start:cl.stop]
    blocks = [MoleculeBlock(hpo.moltype, hpo.count, 0), MoleculeBlock(na.moltype, na.count, hpo.stop),
              MoleculeBlock(cl.moltype, cl.count, hpo.stop + na.count)]
    ts = SystemTopology(blocks, source=Path("solute.top"))
    n = ts.n_atoms
    fs = Frames(fr.positions[:, keep], fr.box, np.zeros(1), np.asarray(fr.names)[keep], np.asarray(fr.resnames)[keep],
                np.zeros(n, int))
    cg = coarse_grain(fs.positions, fs.box, ts, mp, seed=0)
    return ts, mp, fs, cg, top, fr


@pytest.fixture(scope="module")
def model(dodecahedron):
    ts, mp, fs, cg, *_ = dodecahedron
    return train(ts, mp, fs, epochs=8, seed=0, log=None)  # includes the H-bond calibration (triclinic backmaps)


def _check_frame(x, top, lay, cg, box, inter=0.08, intra=0.10):
    """Brute-force minimum image: no inter pair < inter, no non-excluded intra pair < intra;
    CG beads reproduced exactly (by minimum image)."""
    from multiscale.backmap.certify import exclusion_matrix

    mol, loc, blk, ex = [], [], [], []
    base = 0
    for k, b in enumerate(top.blocks):
        mol.append(np.repeat(np.arange(base, base + b.count), b.moltype.n_atoms))
        loc.append(np.tile(np.arange(b.moltype.n_atoms), b.count))
        blk.append(np.full(b.count * b.moltype.n_atoms, k))
        ex.append(exclusion_matrix(b.moltype.n_atoms, b.moltype.bonds, 2) | b.moltype.is_water)
        base += b.count
    mol, loc, blk = np.concatenate(mol), np.concatenate(loc), np.concatenate(blk)
    pairs, d = _brute_pairs(x, box, max(inter, intra))
    same = mol[pairs[:, 0]] == mol[pairs[:, 1]]
    assert not np.any(~same & (d < inter)), "intermolecular clash"
    sp, sd = pairs[same], d[same]
    excluded = np.array([ex[blk[i]][loc[i], loc[j]] for i, j in sp], bool)
    assert not np.any(~excluded & (sd < intra)), "intramolecular clash"
    dev = 0.0
    for b in lay:
        y = x[b.aa_block.start:b.aa_block.stop].reshape(b.count, -1, 3)
        c = np.einsum("ba,nak->nbk", b.matrix, y).reshape(-1, 3)
        dev = max(dev, np.abs(minimum_image(c - cg[b.start:b.stop], box)).max())
    assert dev < 1e-5


def test_dodecahedron_solute_and_ions_backmap(dodecahedron, model):
    ts, mp, fs, cg, *_ = dodecahedron
    box = cg.box[0]
    lay = cg_layout(ts, mp)
    aa, reps = backmap(model, ts, cg.positions[0], box, seed=2)
    r = reps[0]
    assert r.inter_clash_pairs_final == 0 and r.intra_clash_pairs_final == 0 and r.max_cg_deviation_nm < 1e-6
    x = aa[0].astype(np.float64)
    _check_frame(x, ts, lay, cg.positions[0], box)
    ions = slice(ts.blocks[1].start, ts.blocks[2].stop)
    assert np.array_equal(aa[0, ions], cg.positions[0, lay[1].start:lay[2].stop].astype(np.float32))
    # every box form gives the same frame: (3, 3), (1, 3, 3), (F, 3, 3)
    a2, _ = backmap(model, ts, cg.positions[0], box[None], seed=2)
    a3, _ = backmap(model, ts, np.repeat(cg.positions, 2, 0), np.repeat(box[None], 2, 0), seed=2)
    assert np.array_equal(aa, a2) and np.array_equal(aa[0], a3[0]) and a3.shape[0] == 2
    # wrap=True: every atom inside the unit cell (fractional coordinates in [0, 1))
    aw, _ = backmap(model, ts, cg.positions[0], box, seed=2, wrap=True)
    s = to_fractional(aw[0].astype(np.float64), box)
    assert s.min() >= -1e-6 and s.max() < 1 + 1e-6
    assert np.abs(minimum_image(aw[0].astype(np.float64) - x, box)).max() < 1e-4


def test_dodecahedron_molecules_across_faces(dodecahedron, model):
    """Shift the frame so many molecules straddle cell faces: still whole, clash-free, CG-exact."""
    from multiscale.geometry import wrap

    ts, mp, fs, cg, *_ = dodecahedron
    box = cg.box[0]
    shifted = wrap(cg.positions[0] + np.array([1.3, 0.7, 0.4]), box)
    aa, reps = backmap(model, ts, shifted, box, seed=5)
    assert reps[0].inter_clash_pairs_final == 0 and reps[0].intra_clash_pairs_final == 0
    x = aa[0].astype(np.float64)
    _check_frame(x, ts, cg_layout(ts, mp), shifted, box)
    b = ts.blocks[0].moltype.bonds
    y = x[:ts.blocks[0].stop].reshape(40, -1, 3)
    assert np.linalg.norm(y[:, b[:, 1]] - y[:, b[:, 0]], axis=-1).max() < 0.2  # whole molecules


def test_orthorhombic_matrix_same_as_lengths(dodecahedron, model):
    """A diagonal (3, 3) box takes the edge-length path: bit-identical output."""
    ts, mp, fs, cg, *_ = dodecahedron
    L = np.array([4.2, 4.2, 4.2])
    pos = np.mod(cg.positions[0], L)
    a, _ = backmap(model, ts, pos, L, seed=1)
    b, _ = backmap(model, ts, pos, np.diag(L), seed=1)
    assert np.array_equal(a, b)


def test_dodecahedron_environment_features(dodecahedron):
    """Neighbour-count conditioning and environment-aware selection search the triclinic cell too."""
    from multiscale.backmap.features import neighbour_counts

    ts, mp, fs, cg, *_ = dodecahedron
    box = cg.box[0]
    lay = cg_layout(ts, mp)
    mol = np.concatenate([np.repeat(np.arange(b.count) + 1000 * k, b.n_beads) for k, b in enumerate(lay)])
    cnt = neighbour_counts(cg.positions[0], box, mol, 1.0)
    i, j = np.triu_indices(len(mol), 1)
    d = np.linalg.norm(minimum_image(cg.positions[0][j] - cg.positions[0][i], box), axis=-1)
    ok = (d < 1.0) & (mol[i] != mol[j])
    assert np.array_equal(cnt, np.bincount(np.concatenate([i[ok], j[ok]]), minlength=len(mol)).astype(float))
    m = train(ts, mp, fs, epochs=3, seed=1, log=None, env_cutoff=1.0, calibrate_hbonds=False)
    aa, reps = backmap(m, ts, cg.positions[0], box, seed=0, select_eps=3.0, candidates=4)
    r = reps[0]
    assert r.inter_clash_pairs_final == 0 and r.max_cg_deviation_nm < 1e-6 and r.environment_selected >= 0


def _water_takes_triclinic() -> bool:
    from multiscale.backmap.water import WaterBank

    try:
        WaterBank.default().place(np.array([[1.0, 1.0, 1.0], [2.5, 2.5, 1.5]]), DODECA, seed=0)
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _water_takes_triclinic(), reason="WaterBank.place does not take (3, 3) boxes yet")
def test_dodecahedron_full_system_with_water(dodecahedron):
    _, mp, _, _, top, fr = dodecahedron
    m = train(top, mp, fr, epochs=8, seed=0, log=None)
    cg = coarse_grain(fr.positions, fr.box, top, mp, seed=0)
    aa, reps = backmap(m, top, cg.positions[0], cg.box[0], seed=0)
    r = reps[0]
    assert r.inter_clash_pairs_final == 0 and r.intra_clash_pairs_final == 0 and r.max_cg_deviation_nm < 1e-6
    lay = [b for b in cg_layout(top, mp) if b.kind != "water"]
    x = aa[0].astype(np.float64)
    _check_frame(x, top, lay, cg.positions[0], cg.box[0])
    names = np.asarray(fr.names)
    ions = x[np.isin(names, ["NA", "CL"])]
    ow = x[names == "OW"]
    assert min(np.linalg.norm(minimum_image(ow - p, cg.box[0]), axis=1).min() for p in ions) > 0.19

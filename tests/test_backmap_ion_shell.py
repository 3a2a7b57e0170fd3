"""The engine's solvent step gives ions a first hydration shell: the heptanol + NaCl example
(rhombic dodecahedron), its CG frame with the W beads next to each ion moved to Martini
first-shell distances (0.42-0.50 nm, as in a Martini 3 run), backmapped: Na+ >= 4.5 waters
within 0.32 nm (random clusters: ~2), Cl- >= 6.5 within 0.38 nm, no O closer than the ion's
``min_water_o``, no clash, every bead exact."""

from pathlib import Path

import numpy as np

from multiscale.backmap.engine import backmap, train
from multiscale.coarse_grain import cg_layout, coarse_grain
from multiscale.geometry import minimum_image
from multiscale.io import read_frames
from multiscale.mapping import load_mapping
from multiscale.topology import load_topology

DATA = Path(__file__).resolve().parents[1] / "src" / "multiscale" / "data"
EX = DATA / "examples" / "heptanol_nacl"


def test_backmapped_ions_have_a_first_shell():
    top = load_topology(EX / "aa.top")
    mp = load_mapping(DATA / "mappings" / "heptanol.map")
    fr = read_frames(EX / "aa.gro", expected_atoms=top.n_atoms)
    cg = coarse_grain(fr.positions, fr.box, top, mp, seed=0)
    lay = cg_layout(top, mp)
    model = train(top, mp, fr, epochs=2, seed=0, log=None, calibrate_hbonds=False)
    box = fr.box[0].astype(np.float64)
    hpo, sol, na, cl = top.blocks
    wb, ib = lay[1], slice(lay[2].start, lay[3].stop)
    x = cg.positions[0].astype(np.float64)
    w, ion = x[wb.start:wb.stop], x[ib]
    dv = minimum_image(w[:, None] - ion[None], box)
    d = np.linalg.norm(dv, axis=-1)
    rng = np.random.default_rng(0)
    bi, ii = np.nonzero(d < 0.62)
    _, first = np.unique(bi, return_index=True)  # a bead next to two ions: the first one
    bi, ii = bi[first], ii[first]
    w[bi] = ion[ii] + dv[bi, ii] / d[bi, ii, None] * rng.uniform(0.42, 0.5, len(bi))[:, None]
    x[wb.start:wb.stop] = w
    cn_na, cn_cl = [], []
    for seed in (0, 1, 2):
        aa, reps = backmap(model, top, x, box, seed=seed, layout=lay)
        r = reps[0]
        assert r.inter_clash_pairs_final == 0 and r.intra_clash_pairs_final == 0
        assert r.max_cg_deviation_nm < 1e-6
        y = aa[0].astype(np.float64)
        o = y[sol.start:sol.stop].reshape(sol.count, 3, 3)[:, 0]
        dn = np.linalg.norm(minimum_image(o[:, None] - y[na.start:na.stop][None], box), axis=-1)
        dc = np.linalg.norm(minimum_image(o[:, None] - y[cl.start:cl.stop][None], box), axis=-1)
        assert dn.min() >= 0.20 - 1e-6 and dc.min() >= 0.27 - 1e-6
        cn_na.append((dn < 0.32).sum(0).mean())
        cn_cl.append((dc < 0.38).sum(0).mean())
    print(f"Na CN {cn_na}, Cl CN {cn_cl}")
    assert np.mean(cn_na) >= 4.5 and np.mean(cn_cl) >= 6.5

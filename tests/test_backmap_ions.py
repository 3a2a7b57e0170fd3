"""Ions in the engine: one atom exactly on its bead, no model trained, obstacles for water and
solutes, counted in the clash search.  System: the heptanol example with 8 water beads replaced
by 4 Na+ and 4 Cl- (CG blocks of kind "ion", laid out by the ion class)."""

from pathlib import Path

import numpy as np
import pytest

from multiscale.backmap.engine import backmap, load_model, train
from multiscale.backmap.frame import block_kind
from multiscale.classes import ion_table
from multiscale.coarse_grain import cg_layout, coarse_grain
from multiscale.geometry import minimum_image
from multiscale.io import Frames, read_frames
from multiscale.mapping import load_mapping
from multiscale.topology import MoleculeBlock, MoleculeType, SystemTopology, load_topology

EX = Path(__file__).resolve().parents[1] / "src" / "multiscale" / "data" / "examples" / "heptanol"
MAP = EX.parents[1] / "mappings" / "heptanol.map"


def _ion_moltype(name, element, mass, charge):
    return MoleculeType(name, (name,), (name,), (element,), np.array([mass]), np.array([charge]), np.zeros((0, 2), int))


def salted_system(n_pairs=4, seed=0, waters_per_ion=0):
    """(topology, mapping, layout, frames, CG result): heptanol + water with ``2 n_pairs`` water
    beads replaced by ions (Na+ then Cl-) at the beads' positions; ``waters_per_ion`` > 0:
    hydrated ion beads (mapping option ions.waters_per_ion)."""
    from multiscale.mapping import IonMapping

    top = load_topology(EX / "aa.top")
    mp = load_mapping(MAP)
    fr = read_frames(EX / "aa.gro", expected_atoms=top.n_atoms)
    cg0 = coarse_grain(fr.positions, fr.box, top, mp, seed=seed)
    hpo, sol = top.blocks
    lay0 = cg_layout(top, mp)
    groups = cg0.water_groups[0][0]
    pick = np.random.default_rng(seed).choice(len(groups), 2 * n_pairs, replace=False)
    ion_xyz = cg0.positions[0, lay0[1].start + pick]
    drop = np.zeros(sol.count, bool)
    drop[groups[pick].ravel()] = True
    x = fr.positions[0].astype(np.float64)
    xs = x[sol.start:sol.stop].reshape(sol.count, -1, 3)[~drop].reshape(-1, 3)
    na, cl = _ion_moltype("NA", "Na", 22.99, 1.0), _ion_moltype("CL", "Cl", 35.45, -1.0)
    n_sol = int((~drop).sum())
    blocks = [MoleculeBlock(hpo.moltype, hpo.count, 0), MoleculeBlock(sol.moltype, n_sol, hpo.stop)]
    blocks += [MoleculeBlock(na, n_pairs, blocks[1].stop), MoleculeBlock(cl, n_pairs, blocks[1].stop + n_pairs)]
    t = SystemTopology(blocks, source=Path("salted.top"))
    mp.ions = IonMapping(waters_per_ion=waters_per_ion)
    lay = cg_layout(t, mp)  # NA / CL recognised by the ion class (no mapping needed)
    pos = np.concatenate([x[:hpo.stop], xs, ion_xyz])[None].astype(np.float32)
    frames = Frames(pos, fr.box[:1], np.zeros(1), np.zeros(t.n_atoms, str), np.zeros(t.n_atoms, str),
                    np.zeros(t.n_atoms, int))
    cg = coarse_grain(pos, fr.box[:1], t, mp, seed=seed, layout=lay)
    return t, mp, lay, frames, cg


@pytest.fixture(scope="module")
def salted(tmp_path_factory):
    t, mp, lay, frames, cg = salted_system()
    model = train(t, mp, frames, epochs=5, seed=0, log=None, layout=lay)
    return t, mp, lay, frames, cg, model


def test_block_kind_helper():
    t, mp, lay, *_ = salted_system(n_pairs=1)
    assert [block_kind(b) for b in lay] == ["molecule", "water", "ion", "ion"]
    d = {v["element"].upper(): v["min_water_o"] for v in ion_table().values()}
    assert d["NA"] == 0.20 and d["CL"] == 0.27 and d["K"] == 0.24
    assert [b.info["min_water_o"] for b in lay[2:]] == [0.20, 0.27]


def test_train_skips_ions_and_model_loads(salted, tmp_path):
    t, mp, lay, frames, cg, model = salted
    assert set(model.moltypes) == {"HPO"}  # no model for NA / CL
    p = model.save(tmp_path / "m.pt")
    m2 = load_model(p, t)  # the ions need no model entry
    m2.check(t, lay)


def test_ions_on_beads_obstacles_and_no_clash(salted):
    t, mp, lay, frames, cg, model = salted
    aa, reps = backmap(model, t, cg.positions[0], cg.box[0], seed=3, layout=lay)
    aa2, _ = backmap(model, t, cg.positions[0], cg.box[0], seed=3, layout=lay)
    assert np.array_equal(aa, aa2)
    rep, x, box = reps[0], aa[0].astype(np.float64), cg.box[0]
    na_blk, cl_blk = lay[2], lay[3]
    ions = slice(t.blocks[2].start, t.blocks[3].stop)
    # every ion atom exactly on its bead (float32 output)
    assert np.array_equal(aa[0, ions], cg.positions[0, na_blk.start:cl_blk.stop].astype(np.float32))
    assert rep.inter_clash_pairs_final == 0 and rep.intra_clash_pairs_final == 0
    assert rep.max_cg_deviation_nm < 1e-6
    # HPO still CG-exact
    hb = lay[0]
    xh = x[:t.blocks[0].stop].reshape(hb.count, -1, 3)
    c = np.einsum("ba,nak->nbk", hb.matrix, xh)
    ref = cg.positions[0, hb.start:hb.stop].reshape(hb.count, hb.n_beads, 3)
    assert np.abs(minimum_image(c - ref, box)).max() < 1e-5
    # water keeps its distance from the ions (by minimum image): at least the bank's general
    # 0.15 nm, and the per-element first-shell distance where the bank takes per-atom distances
    w = x[t.blocks[1].start:t.blocks[1].stop]
    d = np.linalg.norm(minimum_image(w[:, None] - x[ions][None], box), axis=-1)
    assert d.min() >= 0.15 - 1e-6
    import inspect

    from multiscale.backmap.water import WaterBank

    if "others_min_dist" in inspect.signature(WaterBank.place).parameters:  # water oxygens: a sane first shell
        lim = np.array([blk.info["min_water_o"] for blk in lay[2:] for _ in range(blk.count)])
        oxygen = np.asarray(t.blocks[1].moltype.elements) == "O"
        do = d.reshape(t.blocks[1].count, -1, d.shape[1])[:, oxygen].reshape(-1, d.shape[1])
        assert (do >= lim[None] - 1e-6).all()
    # solutes keep clear of ions as well (counted as other molecules in the clash search)
    s = np.linalg.norm(minimum_image(x[:t.blocks[0].stop][:, None] - x[ions][None], box), axis=-1)
    assert s.min() >= 0.08


def test_ions_count_in_the_solute_clash_search(salted):
    """The steps alone: an ion bead moved onto an atom of HPO molecule 3 flags that molecule."""
    from multiscale.backmap import steps
    from multiscale.backmap.frame import BackmapOptions, build_context, new_frame

    t, mp, lay, frames, cg, model = salted
    ctx = build_context(model, t, lay, "cpu", BackmapOptions(seed=0))
    assert [bi for bi, _ in ctx.ion_blocks] == [2, 3] and ctx.n_solute_mols == 40
    state = steps.draw(new_frame(ctx, 0, cg.positions[0].copy(), cg.box[0]), ctx)
    steps.check_solutes(state, ctx)
    before = state.clash_bad[0][3]
    state.cg[lay[2].start] = state.solutes[0].x[3, 5]  # Na+ onto atom 6 of molecule 3
    state = steps.place_ions(state, ctx)
    assert np.array_equal(state.positions[t.blocks[2].start], state.solutes[0].x[3, 5])
    n_inter, _ = steps.check_solutes(state, ctx)
    assert state.clash_bad[0][3] and state.bad[0][3] and n_inter >= 1
    assert not before or n_inter >= 1
    # and the full step sequence resolves it (the molecule is resampled away from the ion)
    state = steps.resolve_clashes(state, ctx)
    assert not state.clash_bad[0][3] and state.report.per_moltype["HPO"]["resampled"] >= 1


def test_hydrated_ions_shell_com_on_the_bead():
    """ions.waters_per_ion = 4: each ion comes with 4 shell waters (the tail of the water block),
    their centre of mass exactly on the ion's bead; no clash; the rest of the water from the bank."""
    t, mp, lay, frames, cg = salted_system(waters_per_ion=4)
    assert lay[2].info["waters"] == 4 and lay[1].count == (t.blocks[1].count - 32) // 4
    model = train(t, mp, frames, epochs=3, seed=0, log=None, layout=lay, calibrate_hbonds=False)
    aa, reps = backmap(model, t, cg.positions[0], cg.box[0], seed=1, layout=lay)
    aa2, _ = backmap(model, t, cg.positions[0], cg.box[0], seed=1, layout=lay)
    assert np.array_equal(aa, aa2)
    r, x, box = reps[0], aa[0].astype(np.float64), cg.box[0]
    assert r.inter_clash_pairs_final == 0 and r.intra_clash_pairs_final == 0 and r.max_cg_deviation_nm < 1e-6
    wb = lay[1]
    sol = t.blocks[1]
    wm = sol.moltype.masses
    shells = x[sol.start + wb.count * 4 * 3:sol.stop].reshape(8, 4, 3, 3)  # (ion, water, atom, xyz)
    ions = x[t.blocks[2].start:t.blocks[3].stop]
    im = np.array([b.moltype.masses[0] for b in t.blocks[2:] for _ in range(b.count)])
    com = (im[:, None] * ions + np.einsum("a,iwak->ik", wm, shells)) / (im + 4 * wm.sum())[:, None]
    beads = cg.positions[0, lay[2].start:lay[3].stop]
    assert np.abs(minimum_image(com - beads, box)).max() < 1e-5
    # shell oxygens at the ion's first-shell distance; bank waters' COM on their beads
    d = np.linalg.norm(shells[:, :, 0] - ions[:, None], axis=-1)
    assert np.allclose(d[:4], 0.24, atol=1e-3) and np.allclose(d[4:], 0.31, atol=1e-3)
    w = x[sol.start:sol.start + wb.count * 12].reshape(-1, 4, 3, 3)
    wcom = np.einsum("gwak,a->gk", w, wm) / (4 * wm.sum())
    assert np.abs(minimum_image(wcom - cg.positions[0, wb.start:wb.stop], box)).max() < 1e-3

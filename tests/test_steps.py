"""The backmapping steps one at a time (multiscale.backmap.steps) on the heptanol example."""

from pathlib import Path

import numpy as np
import pytest

from multiscale.backmap import steps
from multiscale.backmap.engine import backmap, train
from multiscale.backmap.frame import BackmapOptions, FrameState, block_kind, build_context, new_frame
from multiscale.coarse_grain import cg_layout, coarse_grain
from multiscale.geometry import minimum_image
from multiscale.io import read_frames
from multiscale.mapping import load_mapping
from multiscale.topology import load_topology

EX = Path(__file__).resolve().parents[1] / "src" / "multiscale" / "data" / "examples" / "heptanol"
MAP = EX.parents[1] / "mappings" / "heptanol.map"


@pytest.fixture(scope="module")
def hep():
    top = load_topology(EX / "aa.top")
    mp = load_mapping(MAP)
    fr = read_frames(EX / "aa.gro", expected_atoms=top.n_atoms)
    model = train(top, mp, fr, epochs=8, seed=0, log=None)
    cg = coarse_grain(fr.positions, fr.box, top, mp, seed=0)
    return top, mp, model, cg


def _ctx(hep, **kw):
    top, mp, model, cg = hep
    return build_context(model, top, cg_layout(top, mp), "cpu", BackmapOptions(**kw))


def _run(state, ctx, upto):
    """The steps up to ``upto`` (all for None), under backmap()'s torch settings (1 thread, no grad)."""
    import torch

    from multiscale.backmap.common import torch_threads

    with torch_threads(None), torch.no_grad():
        for step in steps.STEPS:
            state = step(state, ctx)
            if step is upto:
                break
    return state


def test_steps_compose_to_backmap(hep):
    top, mp, model, cg = hep
    ctx = _ctx(hep, seed=3)
    state = _run(new_frame(ctx, 0, cg.positions[0], cg.box[0]), ctx, None)
    aa, reps = backmap(model, top, cg.positions[0], cg.box[0], seed=3)
    assert isinstance(state, FrameState) and np.array_equal(state.positions.astype(np.float32), aa[0])
    a, b = state.report.to_dict(), reps[0].to_dict()
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    assert [s.__name__ for s in steps.STEPS] == ["draw_chains", "draw", "place_ions", "select_environment", "resolve_clashes",
                                                 "stereo_repair", "hbond_network", "solvent", "polar_h",
                                                 "final_certificate"]


def test_block_kinds_and_context(hep):
    ctx = _ctx(hep)
    assert [block_kind(b) for b in ctx.layout] == ["molecule", "water"]
    assert len(ctx.sol_blocks) == 1 and len(ctx.water_blocks) == 1 and not ctx.ion_blocks
    assert ctx.n_solute_mols == 40 and len(ctx.mol_id) == 40 * 24 and ctx.mol_block.shape == (40, 2)


def test_draw_is_cg_exact_and_counts(hep):
    top, mp, model, cg = hep
    ctx = _ctx(hep, seed=1)
    state = steps.draw(new_frame(ctx, 0, cg.positions[0], cg.box[0]), ctx)
    (s,) = state.solutes
    assert s.x.shape == (40, 24, 3)
    y = np.einsum("ba,nak->nbk", s.mm.matrix, s.x)
    assert np.abs(y - s.beads).max() < 1e-9
    assert state.report.per_moltype["HPO"]["molecules"] == 40
    assert not state.positions.any()  # positions are written later (stereo_repair, solvent)


def test_resolve_clashes_removes_a_planted_clash(hep):
    top, mp, model, cg = hep
    ctx = _ctx(hep, seed=2)
    state = steps.draw(new_frame(ctx, 0, cg.positions[0], cg.box[0]), ctx)
    s = state.solutes[0]
    # molecule 1 made to overlap molecule 0 (same conformation on slightly shifted beads)
    s.x[1] = s.x[0] + 0.01
    steps.check_solutes(state, ctx)
    assert state.clash_bad[0][0] and state.clash_bad[0][1]
    state = steps.resolve_clashes(state, ctx)
    assert state.report.retries >= 1 and not state.clash_bad[0][:2].any()


def test_solvent_puts_four_waters_on_each_bead(hep):
    top, mp, model, cg = hep
    ctx = _ctx(hep, seed=4)
    state = _run(new_frame(ctx, 0, cg.positions[0], cg.box[0]), ctx, steps.solvent)
    (bi, wb), = ctx.water_blocks
    w = state.positions[wb.aa_block.start:wb.aa_block.stop].reshape(-1, 4, 3, 3)
    m = wb.aa_block.moltype.masses
    com = np.einsum("gwak,a->gk", w, m) / (4 * m.sum())
    assert np.abs(minimum_image(com - state.water_beads[bi], cg.box[0])).max() < 1e-3
    assert len(state.water_stats) == 1


def test_final_certificate_replaces_a_clashing_water(hep):
    top, mp, model, cg = hep
    ctx = _ctx(hep, seed=5)
    state = _run(new_frame(ctx, 0, cg.positions[0], cg.box[0]), ctx, steps.polar_h)
    (bi, wb), = ctx.water_blocks
    lo = wb.aa_block.start
    # the first water's hydrogen put 0.03 nm from an HPO carbon
    state.positions[lo + 1] = state.positions[0] + np.array([0.03, 0.0, 0.0])
    state = steps.final_certificate(state, ctx)
    r = state.report
    assert r.water["beads_replaced_after_clash_check"] >= 1
    assert r.inter_clash_pairs_final == 0 and r.water_clash_pairs_final == 0
    assert np.linalg.norm(minimum_image(state.positions[lo + 1] - state.positions[0], cg.box[0])) > 0.08


def test_hbond_network_step_adds_hydrogen_bonds_and_keeps_beads(hep):
    """On the heptanol example (40 HPO in water) the step pulls donor/acceptor pairs of
    neighbouring alcohols together: more solute-solute hydroxyl H-bonds than without the step,
    every bead exact, no clash, the report counts the pairs."""
    from multiscale.backmap.system import count_frame_hbonds

    top, mp, model, cg = hep
    counts = {False: 0, True: 0}
    mm = model.moltypes["HPO"]
    saved = mm.network_cutoff
    mm.network_cutoff = 0.36  # the neat-alcohol value; this fixture's calibration may choose less in water
    pairs = 0
    for seed in (5, 6, 7, 8):  # one frame of 40 alcohols in water is noisy: compare totals over 4 draws
        for net in (False, True):
            aa, reps = backmap(model, top, cg.positions[0], cg.box[0], seed=seed, hbond_network=net, hbond_eps=32.0)
            counts[net] += count_frame_hbonds(aa[0].astype(np.float64), cg.box[0], top, model)
            assert reps[0].max_cg_deviation_nm < 1e-10 and reps[0].ok
        pairs += reps[0].hbond_pairs
    mm.network_cutoff = saved
    assert pairs > 0
    assert counts[True] > counts[False]


def test_a_strained_bond_marks_the_molecule_for_resampling():
    """A molecule whose bond the projection stretched (a backmapped POPC had O11-C1 at 0.32 nm, 2.2x)
    is bad like a clashing one; strain every molecule shares (beads far from any AA conformation) is not
    an outlier, and blocks too small for a median reference are never flagged."""
    from types import SimpleNamespace

    from multiscale.backmap.resolve import BOND_STRAIN, strained

    x = np.zeros((10, 3, 3))
    x[:, 1, 0], x[:, 2, 0] = 0.15, 0.30  # two 0.15 nm bonds per molecule
    x[4, 2, 0] = 0.30 + 0.15 * (BOND_STRAIN + 0.1)  # molecule 4: its second bond 60 % long
    x[7, 1, 0] = 0.15 * (1 - BOND_STRAIN - 0.1)  # molecule 7: its first bond 60 % short (the second long)
    block = SimpleNamespace(x=x, mm=SimpleNamespace(bonds=np.array([[0, 1], [1, 2]])))
    assert np.flatnonzero(strained(block)).tolist() == [4, 7]
    assert not strained(SimpleNamespace(x=x[:3], mm=block.mm)).any()
    # every molecule's second bond 40 % long or short (beads no conformation fits): the threshold is
    # 3 x the median strain (1.2), so 70 % is no outlier and 150 % is
    y = np.zeros((10, 3, 3))
    y[:, 1, 0] = 0.15
    y[:, 2, 0] = 0.15 + 0.15 * np.where(np.arange(10) % 2, 0.6, 1.4)
    y[4, 2, 0] = 0.15 + 0.15 * 1.7
    assert not strained(SimpleNamespace(x=y, mm=block.mm)).any()
    y[4, 2, 0] = 0.15 + 0.15 * 2.5
    assert np.flatnonzero(strained(SimpleNamespace(x=y, mm=block.mm))).tolist() == [4]

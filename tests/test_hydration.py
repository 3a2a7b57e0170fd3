"""First hydration shells of solute acceptors (multiscale.backmap.hydration): measured on the
heptanol example's AA frame, stored in the model, and filled by the solvent step (real
training, real water bank)."""

from pathlib import Path

import numpy as np
import pytest

from multiscale.backmap.engine import backmap, train
from multiscale.backmap.hydration import measure_shells, solute_shell_arrays
from multiscale.backmap.moltype_model import MoltypeModel
from multiscale.backmap.place import count_hbonds
from multiscale.coarse_grain import cg_layout, coarse_grain
from multiscale.io import read_frames
from multiscale.mapping import load_mapping
from multiscale.topology import load_topology

DATA = Path(__file__).resolve().parents[1] / "src" / "multiscale" / "data"
EX = DATA / "examples" / "heptanol"


@pytest.fixture(scope="module")
def hep():
    top = load_topology(EX / "aa.top")
    mp = load_mapping(DATA / "mappings" / "heptanol.map")
    fr = read_frames(EX / "aa.gro", expected_atoms=top.n_atoms)
    return top, mp, fr


def test_only_the_hydroxyl_oxygen_is_a_site(hep):
    top, _, fr = hep
    r, n = measure_shells(fr.positions, fr.box, top, ["HPO"])["HPO"]
    names = top.blocks[0].moltype.atom_names
    sites = [names[i] for i in np.flatnonzero(r > 0)]
    assert sites == ["O1"]
    i = names.index("O1")
    assert 0.26 < r[i] < 0.31  # hydroxyl O ... water O first-shell peak
    assert 1.5 < n[i] < 4.5
    assert np.all(n[r == 0] == 0)


def test_shell_sites_survive_save_and_old_entries_have_none(hep):
    top, mp, fr = hep
    model = train(top, mp, fr, epochs=1, seed=0, log=None, calibrate_hbonds=False)
    mm = model.moltypes["HPO"]
    d = mm.to_dict()
    assert len(d["shell_sites"]) == 1
    back = MoltypeModel.from_dict(d)
    np.testing.assert_array_equal(back.shell_r, mm.shell_r)
    np.testing.assert_array_equal(back.shell_n, mm.shell_n)
    d.pop("shell_sites")
    old = MoltypeModel.from_dict(d)
    assert not old.shell_r.any() and not old.shell_n.any()


def _water_to_hydroxyl(x, box, top):
    """Water -> solute O hydrogen bonds (H...O < 0.25 nm, O-H...O > 120 deg) in frame x."""
    hpo, sol = top.blocks
    n = hpo.moltype.n_atoms
    mol = np.concatenate([np.repeat(np.arange(hpo.count), n), hpo.count + np.repeat(np.arange(sol.count), 3)])
    acc = np.zeros(top.n_atoms, bool)
    acc[hpo.start + np.arange(hpo.count) * n + hpo.moltype.atom_names.index("O1")] = True
    w = sol.start + np.arange(sol.count) * 3  # TIP3P: OW HW1 HW2
    h = np.concatenate([w + 1, w + 2])
    return count_hbonds(x, box, h, np.concatenate([w, w]), mol, acc)


def test_solvent_step_fills_the_hydroxyl_shells(hep):
    top, mp, fr = hep
    model = train(top, mp, fr, epochs=2, seed=0, log=None, calibrate_hbonds=False)
    lay = cg_layout(top, mp)
    cg = coarse_grain(fr.positions, fr.box, top, mp, seed=0)
    box = fr.box[0].astype(np.float64)
    ref = _water_to_hydroxyl(fr.positions[0].astype(np.float64), box, top)

    def run(hydration):
        out = []
        for seed in (0, 1):
            aa, reps = backmap(model, top, cg.positions[0], box, seed=seed, layout=lay, hydration=hydration)
            assert reps[0].max_cg_deviation_nm < 1e-6
            assert reps[0].inter_clash_pairs_final == 0 and reps[0].intra_clash_pairs_final == 0
            out.append(_water_to_hydroxyl(aa[0].astype(np.float64), box, top))
        return np.mean(out)

    with_shells, without = run(True), run(False)
    print(f"water -> hydroxyl H-bonds: AA {ref}, with shells {with_shells}, without {without}")
    assert with_shells >= 0.75 * ref
    assert with_shells >= 2 * without


def test_no_site_no_shell_arrays():
    class S:
        def __init__(self, r):
            self.x = np.zeros((2, 3, 3))
            self.mm = type("M", (), {"shell_r": r, "shell_n": r * 10})()

    assert solute_shell_arrays([S(np.zeros(3))]) is None
    a = solute_shell_arrays([S(np.zeros(3)), S(np.array([0.0, 0.28, 0.0]))])
    assert a.shape == (3, 12)
    assert np.flatnonzero(a[0]).tolist() == [7, 10] and np.all(a[1, [7, 10]] < 0) and np.allclose(a[2, [7, 10]], 2.8)

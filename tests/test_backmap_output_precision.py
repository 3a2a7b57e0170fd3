"""A certified backmap keeps its clash bounds after the output format rounds it (.xtc/.gro: 0.001 nm)."""

from pathlib import Path

import numpy as np
import pytest

from multiscale.backmap.engine import backmap, train
from multiscale.backmap.steps import CLASH_MARGIN
from multiscale.backmap.system import system_clashes
from multiscale.coarse_grain import coarse_grain
from multiscale.io import read_frames, write_frames
from multiscale.mapping import load_mapping
from multiscale.topology import load_topology

EX = Path(__file__).resolve().parents[1] / "src" / "multiscale" / "data" / "examples" / "heptanol"
MAP = EX.parents[1] / "mappings" / "heptanol.map"
#: the largest change of a distance when both atoms are rounded to 0.001 nm per axis
ROUNDING = np.sqrt(3) * 0.001


@pytest.fixture(scope="module")
def hep():
    top = load_topology(EX / "aa.top")
    mp = load_mapping(MAP)
    fr = read_frames(EX / "aa.gro", expected_atoms=top.n_atoms)
    model = train(top, mp, fr, epochs=40, seed=0, log=None)
    return top, model, coarse_grain(fr.positions, fr.box, top, mp)


def test_margin_covers_the_rounding_of_gro_and_xtc():
    assert CLASH_MARGIN >= ROUNDING


@pytest.mark.parametrize("seed", [5, 6])  # seed 5 left a pair at 0.080-0.0818 nm before the margin existed
def test_certified_structure_keeps_its_clash_bound_after_xtc(hep, tmp_path, seed):
    top, model, cg = hep
    box = cg.box[0].astype(float)
    aa, reps = backmap(model, top, cg.positions[0], cg.box[0], seed=seed)
    assert reps[0].ok and reps[0].thresholds["search_margin_nm"] == CLASH_MARGIN
    # as computed: no pair closer than the bound plus what rounding can take away
    ip, jp, _, _ = system_clashes(aa[0].astype(float), box, top, model, 0.08 + ROUNDING, 0.10 + ROUNDING)
    assert len(ip) == 0 and len(jp) == 0
    # as written and read back
    path = tmp_path / "out.xtc"
    write_frames(path, aa, cg.box[:1], top.per_atom("atom_names"), top.per_atom("resnames"), top.resids())
    back = read_frames(EX / "aa.gro", path, label="written .xtc").positions[0].astype(float)
    assert np.abs(back - aa[0]).max() > 1e-4  # really rounded
    ip, jp, _, _ = system_clashes(back, box, top, model, 0.08, 0.10)
    assert len(ip) == 0 and len(jp) == 0, f"{len(ip)} intermolecular pairs < 0.08 nm after .xtc rounding"

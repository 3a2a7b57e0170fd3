"""A POPC bilayer end to end: `multiscale init --example membrane` (which fetches the GPL CHARMM36 and
Martini 3 lipidome files into the cache) then one short AA -> CG -> AA cycle with the real GROMACS and
the shipped lipid model (lengths shortened for the test; the full 2-cycle example is run by hand)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import SHORT_CYCLE, merge_config, run_short_cycle

pytestmark = [pytest.mark.skipif(shutil.which("gmx") is None, reason="needs gmx on PATH")]

SHORT = merge_config(SHORT_CYCLE, {"backmap": {"epochs": 3}, "gromacs": {"nt": 2}})


def _cli(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "multiscale.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


@pytest.fixture(scope="module")
def membrane_run(tmp_path_factory, membrane_forcefields):
    from multiscale import forcefields as ff

    d = tmp_path_factory.mktemp("membrane") / "ex"
    r = _cli("init", "--example", "membrane", str(d))
    assert r.returncode == 0, r.stderr
    assert (d / "POPC.itp").is_file() and (d / "martini_v3.0.0_lipidome_v2.itp").is_file()
    assert (d / ff.CHARMM36_FF).is_symlink()
    run_short_cycle(d, SHORT, timeout=900)
    return d


def test_membrane_cycle(membrane_run):
    """Semi-isotropic AA MD; the shipped lipid model fine-tuned; every lipid's glycerol centre and
    double bond right (mapping hints), beads exact, no clash; APL and thickness in the stage info."""
    from multiscale.io import read_frames
    from multiscale.lipid_analysis import lipid_coordinates, stereo_ok
    from multiscale.mapping import load_mapping
    from multiscale.paths import find_data
    from multiscale.topology import load_topology

    d = membrane_run
    run = d / "runs" / "cycle_001"
    mdp = (run / "aa-md" / "aa-md.mdout.mdp").read_text()
    assert "semiisotropic" in mdp and "Force-switch" in mdp
    state = json.loads((d / "runs" / "state.json").read_text())["stages"]
    assert state["cycle_001/train"]["info"]["fine_tuned"] is True
    info = state["cycle_001/aa-md"]["info"]
    assert info["lipids"] == 32 and 0.5 < info["apl_nm2"] < 0.8 and 3.0 < info["thickness_nm"] < 5.5
    top = load_topology(d / "aa.top")
    bm = read_frames(run / "backmap" / "backmapped.gro", expected_atoms=top.n_atoms)
    frame = json.loads((run / "backmap" / "backmap-report.json").read_text())[0]
    assert frame["max_cg_deviation_nm"] < 1e-6
    assert frame["per_moltype"]["POPC"]["stereo_wrong_final"] == 0 and frame["per_moltype"]["POPC"]["cistrans_wrong_final"] == 0
    blk = top.blocks[0]
    x = lipid_coordinates(bm.positions, bm.box, blk)
    chiral, cis = stereo_ok(x, blk.moltype.atom_names, load_mapping(find_data("mappings", "lipids/POPC.map")).molecules["POPC"].hints)
    assert chiral.all() and cis.all()
    import numpy as np

    b = blk.moltype.bonds
    assert np.linalg.norm(x[..., b[:, 0], :] - x[..., b[:, 1], :], axis=-1).max() < 0.3  # every lipid whole and bonded
    for stage in ("restrained-em", "restrained-eq", "relax"):
        assert state[f"cycle_001/{stage}"]["status"] == "done"

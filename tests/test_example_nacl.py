"""Ions + rhombic dodecahedron end to end: `multiscale init --example heptanol_nacl` then one short
AA -> CG -> AA cycle with the real GROMACS and the real engine (lengths shortened for the test;
the full 2-cycle example is run by hand, numbers in docs/classes.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import SHORT_CYCLE, merge_config, run_short_cycle

pytestmark = [pytest.mark.skipif(shutil.which("gmx") is None, reason="needs gmx on PATH")]

SHORT = merge_config(SHORT_CYCLE, {"backmap": {"epochs": 60}})


def test_nacl_dodecahedron_cycle(tmp_path):
    d = tmp_path / "nacl"
    r = subprocess.run([sys.executable, "-m", "multiscale.cli", "init", "--example", "heptanol_nacl", str(d)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    run_short_cycle(d, SHORT, timeout=900)

    from multiscale.io import read_frames
    from multiscale.topology import load_topology

    top = load_topology(d / "aa.top")
    run = d / "runs" / "cycle_001"
    start = read_frames(d / "aa.gro")
    cg = read_frames(run / "coarse-grain" / "cg.gro")
    bm = read_frames(run / "backmap" / "backmapped.gro", expected_atoms=top.n_atoms)
    relax = read_frames(run / "relax" / "relax.gro", expected_atoms=top.n_atoms)
    assert start.box.shape == cg.box.shape == bm.box.shape == (1, 3, 3)  # stays a dodecahedron
    # counts conserved: same atoms, same names in the same order
    assert list(bm.names) == list(start.names) and list(relax.names) == list(start.names)
    assert cg.n_atoms == 40 * 2 + 1156 // 4 + 8
    assert sorted(set(cg.resnames)) == ["CL", "HPO", "NA", "W"]
    frame = json.loads((run / "backmap" / "backmap-report.json").read_text())[0]
    assert frame["inter_clash_pairs_final"] == 0 and frame["intra_clash_pairs_final"] == 0
    assert frame["max_cg_deviation_nm"] < 1e-6
    # ions sit on their beads; no water oxygen closer than 0.2 nm to any ion
    from multiscale.geometry import minimum_image

    names = np.asarray(bm.names)
    x = bm.positions[0].astype(np.float64)
    box = bm.box[0]
    ions = x[np.isin(names, ["NA", "CL"])]
    ow = x[names == "OW"]
    dmin = min(np.linalg.norm(minimum_image(ow - p, box), axis=1).min() for p in ions)
    assert dmin > 0.19
    em = json.loads((d / "runs" / "state.json").read_text())["stages"]["cycle_001/restrained-em"]
    assert em["status"] == "done"

"""cg.volume: the CG segments keep the volume of the box the AA segment left (default 'aa',
constant volume) or move to Martini's own density ('own', NPT).  Real gmx on a dilute Martini W
box (6.0 beads/nm^3 against Martini's ~8.4): a barostat shrinks it, constant volume must not."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from test_cycle import cycle_cmd, write_config, write_w_box  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("gmx") is None, reason="needs gmx on PATH")


def cg_segment_pipeline(cfg, root, replica=None):
    """The default pipeline's CG block (cg-em, cg-eq, cg-md) on the config's structure."""
    from multiscale.workflow.stages import _PipelineBuilder

    b = _PipelineBuilder(cfg, root, replica)
    b.cg_segment(1, cfg.system.aa_structure, cfg.system.aa_topology)
    return b.stages


def box_of(gro: Path) -> np.ndarray:
    return np.array(gro.read_text().splitlines()[-1].split(), float)


@pytest.mark.parametrize("volume", ["aa", "own"])
def test_cg_segment_keeps_the_aa_box_unless_volume_own(tmp_path, volume):
    import os

    box = write_w_box(tmp_path / "system", n=6, a=0.55)
    extra = "" if volume == "aa" else "  volume: own\n"
    cfg = write_config(tmp_path, box, "run", md_steps=1500, cycles=1)
    text = cfg.read_text().replace("  output_every: 1000 steps\n", "  output_every: 500 steps\n" + extra)
    cfg.write_text(text.replace("  extra_mdrun_args", "  # extra_mdrun_args"))
    env = dict(os.environ, MULTISCALE_PIPELINE=f"{HERE}:cg_segment_pipeline")
    r = subprocess.run(cycle_cmd(cfg), env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "run" / "cycle_001"
    start, end = box_of(box["gro"]), box_of(run / "cg-md" / "cg-md.gro")
    eq_mdp, md_mdp = (run / "cg-eq" / "cg-eq.mdp").read_text(), (run / "cg-md" / "cg-md.mdp").read_text()
    change = float(np.prod(end) / np.prod(start) - 1.0)
    if volume == "aa":
        assert "pcoupl                   = no" in eq_mdp and "pcoupl                   = no" in md_mdp
        assert np.allclose(end, start, atol=1e-5), (start, end)
    else:
        assert "C-rescale" in md_mdp and "= no   ; set by" not in md_mdp
        assert change < -0.05, f"the Martini barostat should compress a 30 % too dilute box, volume change {change:+.3f}"


@pytest.mark.parametrize("example", ["heptanol", "heptanol_nacl"])
def test_shipped_example_starts_at_its_npt_density(example):
    """The example's aa.gro is a frame of a settled NPT run (>= 100 ps): its density lies within
    3 % of that run's mean (a 30 ps build caught mid-relaxation made the first AA segment drift)."""
    import json

    from multiscale.geometry import box_volume
    from multiscale.io import read_frames
    from multiscale.runreport.observables import AMU_KG_M3
    from multiscale.topology import load_topology

    ex = HERE.parents[1] / "src" / "multiscale" / "data" / "examples" / example
    info = json.loads((ex / "build_info.json").read_text())["stages"]["npt"]
    top = load_topology(ex / "aa.top")
    fr = read_frames(ex / "aa.gro", expected_atoms=top.n_atoms)
    rho = AMU_KG_M3 * float(top.per_atom("masses").sum()) / float(box_volume(fr.box[-1]))
    assert info["time_ps"] >= 100, f"{example}: NPT of the build only {info['time_ps']} ps"
    assert abs(rho / info["density_kg_m3"] - 1) < 0.03, (rho, info["density_kg_m3"])


def test_plan_sets_constant_volume_on_cg_and_relax_unless_switched_off(tmp_path):
    """Default: cg-eq, cg-md and relax at constant volume; cg.volume own / relax_ensemble npt give the
    barostat back; an explicit mdp.overrides pcoupl wins over both defaults."""
    from multiscale.config import config_from_dict
    from multiscale.workflow.cycle import build_plan

    ex = HERE.parents[1] / "src" / "multiscale" / "data" / "examples" / "heptanol"
    base = {"system": {"aa_topology": str(ex / "aa.top"), "aa_structure": str(ex / "aa.gro"),
                       "cg_topology": str(ex / "cg.top"), "mappings": [str(ex.parents[1] / "mappings" / "heptanol.map")]}}

    def opts(**kw):
        plan = build_plan(config_from_dict({**base, **kw}, base=tmp_path), tmp_path / "runs")
        return {s.name: s.mdp_options.get("pcoupl") for s in plan if s.cycle == 1 and hasattr(s, "mdp_options")}

    d = opts()
    assert d["cg-eq"] == d["cg-md"] == d["relax"] == "no" and d["aa-md"] is None and d["cg-em"] is None
    d = opts(cg={"volume": "own"}, restrained={"relax_ensemble": "npt"})
    assert d["cg-eq"] is d["cg-md"] is d["relax"] is None
    d = opts(mdp={"overrides": {"aa": {"pcoupl": "Parrinello-Rahman"}, "cg": {"pcoupl": "C-rescale"}}})
    assert d["relax"] == d["aa-md"] == "Parrinello-Rahman" and d["cg-md"] == "C-rescale"

"""The two runs benchmarks/cycle_drift.py and benchmarks/speedup.py compare, in one folder:

* ``DIR/cycle``: ``multiscale init --example NAME`` with ``cycles: N`` (the shipped defaults otherwise);
* ``DIR/plain``: the same example as plain AA MD: aa-em and aa-eq as in the cycle, then ONE aa-md of
  N x (aa.md + restrained.eq + restrained.relax) with the aa_md template and the same output
  frequencies (the MULTISCALE_PIPELINE hook :func:`plain_pipeline`).

Both run through ``multiscale cycle`` (resumable: run again after an interruption) with the
example's ``gromacs.nt: 1``, side by side (one core each) so that both see the same machine load.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

HERE = Path(__file__).resolve()


def plain_pipeline(cfg, root, replica=None):
    """aa-em, aa-eq, then one aa-md of the config's ``aa.md`` (set to the cycle run's total AA length)."""
    from multiscale.workflow.stages import _PipelineBuilder

    b = _PipelineBuilder(cfg, root, replica)
    b.aa_md(1, b.aa_start().outputs["gro"])
    return b.stages


def segment_lengths(sim_yaml: Path) -> dict:
    """aa.md, restrained.eq, restrained.relax (ps) of a sim.yaml."""
    from multiscale.config import load_config

    cfg = load_config(sim_yaml)
    return {"md": cfg.aa.md.steps(cfg.aa.dt) * cfg.aa.dt, "eq": cfg.restrained.eq.steps(cfg.restrained.dt) * cfg.restrained.dt,
            "relax": cfg.restrained.relax.steps(cfg.restrained.relax_dt) * cfg.restrained.relax_dt}


def _init(example: str, dest: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    subprocess.run([sys.executable, "-m", "multiscale.cli", "init", "--example", example, str(dest)],
                   check=True, env=env, capture_output=True, text=True)


def setup(out: Path, example: str, cycles: int, volume: str = "aa") -> dict:
    """Create DIR/cycle and DIR/plain (kept if they exist: the runs continue)."""
    out.mkdir(parents=True, exist_ok=True)
    cyc, plain = out / "cycle", out / "plain"
    if not (cyc / "sim.yaml").is_file():
        _init(example, cyc)
        t = re.sub(r"^cycles: *\d+", f"cycles: {cycles}", (cyc / "sim.yaml").read_text(), flags=re.M)
        t = re.sub(r"^  volume: *\w+", f"  volume: {volume}", t, flags=re.M)
        (cyc / "sim.yaml").write_text(t)
    lengths = segment_lengths(cyc / "sim.yaml")
    total = cycles * (lengths["md"] + lengths["eq"] + lengths["relax"])
    if not (plain / "sim.yaml").is_file():
        _init(example, plain)
        t = re.sub(r"^cycles: *\d+", "cycles: 1", (plain / "sim.yaml").read_text(), flags=re.M)
        t = re.sub(r"^(aa:[^\n]*\n(?:[ #].*\n|\n)*?  md:) *[0-9.]+ *(fs|ps|ns)", rf"\g<1> {total:g} ps", t, flags=re.M)
        (plain / "sim.yaml").write_text(t)
    return {"cycle": cyc, "plain": plain, "lengths": lengths, "total_ps": total, "cycles": cycles}


def run_both(runs: dict, log_dir: Path) -> None:
    """Run (or continue) both runs side by side; raise if one fails."""
    base = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    procs = []
    for name, env in (("cycle", base), ("plain", dict(base, MULTISCALE_PIPELINE=f"{HERE}:plain_pipeline"))):
        d = runs[name]
        with open(log_dir / f"{name}.log", "ab") as fh:
            procs.append((name, subprocess.Popen(["nice", "-n", "5", sys.executable, "-m", "multiscale.cli", "cycle",
                                                  "--config", str(d / "sim.yaml"), "--no-progress"],
                                                 cwd=d, env=env, stdout=fh, stderr=subprocess.STDOUT)))
    bad = [n for n, p in procs if p.wait() != 0]
    if bad:
        raise SystemExit(f"run(s) {', '.join(bad)} failed: see {log_dir}/<name>.log")


def state(run_dir: Path) -> dict:
    import json

    return json.loads((run_dir / "runs" / "state.json").read_text())


def stage_dir(run_dir: Path, cycle: int, stage: str) -> Path:
    return run_dir / "runs" / f"cycle_{cycle:03d}" / stage


def wall_s(run_dir: Path, cycle: int | None = None) -> float:
    """Sum of the stages' wall_s (of one cycle, or all)."""
    st = state(run_dir)
    tot = 0.0
    for key, rec in st["stages"].items():
        if cycle is None or key.startswith(f"cycle_{cycle:03d}/"):
            tot += float(rec.get("wall_s") or 0.0)
    return tot

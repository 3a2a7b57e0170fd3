"""The cycle driver end to end with real GROMACS on a tiny Martini water box.

`multiscale cycle` runs as a subprocess with a stage list of real gmx stages (the driver's
MULTISCALE_PIPELINE hook): it is SIGKILLed during an mdrun and again between stages, re-run,
and must finish with every stage completed exactly once (the killed mdrun continued from its
checkpoint), the exact frame counts/time stamps and the same stages/atom counts as an
uninterrupted run.  The default AA -> CG -> AA pipeline is checked for its stage list here and
run for real in the heptanol demo.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MARTINI = REPO / "topologies" / "martini3"
HERE = Path(__file__).resolve()

pytestmark = pytest.mark.skipif(shutil.which("gmx") is None, reason="needs gmx on PATH")


# ------------------------------------------------------------------------------------------
# a tiny system and a stage list made of the real stage classes


def write_w_box(folder: Path, n: int = 6, a: float = 0.5) -> dict:
    """n^3 Martini W beads on a lattice (spacing a nm) + a topology including the shipped itps."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["Martini W lattice", str(n**3)]
    for i, (x, y, z) in enumerate(itertools.product(range(n), repeat=3)):
        lines.append("%5d%-5s%5s%5d%8.3f%8.3f%8.3f" % (i + 1, "W", "W", i + 1, (x + .5) * a, (y + .5) * a, (z + .5) * a))
    lines.append("%10.5f%10.5f%10.5f" % (n * a, n * a, n * a))
    (folder / "w.gro").write_text("\n".join(lines) + "\n")
    (folder / "w.top").write_text(
        f'#include "{MARTINI}/martini_v3.0.0.itp"\n#include "{MARTINI}/martini_v3.0.0_solvents_v1.itp"\n'
        f"[ system ]\nW box\n[ molecules ]\nW {n**3}\n")
    (folder / "w.map").write_text("; no molecules to map in a water box\n")
    return {"gro": folder / "w.gro", "top": folder / "w.top", "map": folder / "w.map", "atoms": n**3}


def w_pipeline(cfg, root, replica=None):
    """Per cycle: cg-em, cg-eq, cg-md (real gmx) and a Python stage reading the trajectory."""
    from multiscale.config import derive_seed
    from multiscale.workflow.stages import MdrunStage, PythonStage, StageResult, xtc_frames

    def analyse(stage, ctx):
        from multiscale.io import atomic_write_text

        n, times = xtc_frames(stage.inputs["xtc"])
        atomic_write_text(stage.outputs["json"], json.dumps({"frames": n, "times": times}))
        return StageResult(info={"frames": n, "last_time_ps": times[-1]})

    top, stages, prev = cfg.system.aa_topology, [], cfg.system.aa_structure
    for c in range(1, cfg.cycles + 1):
        def wd(name):
            return root / f"cycle_{c:03d}" / name

        def vals(name, length, dt, every):
            nsteps = length.steps(dt)
            return {"nsteps": nsteps, "dt": dt, "ref_t": cfg.temperature, "ref_p": cfg.pressure, "tau_t": 1.0,
                    "tau_p": 4.0, "gen_seed": derive_seed(cfg.seed, replica, c, name), "define": "",
                    "nstxout_compressed": every.steps(dt) if every else 0, "nstenergy": 100, "nstlog": 1000}

        em = MdrunStage(name="cg-em", cycle=c, workdir=wd("cg-em"), template="martini_em",
                        values={"nsteps": cfg.cg.em_steps, "emtol": cfg.cg.emtol, "define": ""},
                        structure=prev, topology=top, minimisation=True, description="EM")
        eq = MdrunStage(name="cg-eq", cycle=c, workdir=wd("cg-eq"), template="martini_eq",
                        values=vals("cg-eq", cfg.cg.eq, cfg.cg.eq_dt, None), structure=em.outputs["gro"],
                        topology=top, description="NPT eq")
        md = MdrunStage(name="cg-md", cycle=c, workdir=wd("cg-md"), template="martini_md",
                        values=vals("cg-md", cfg.cg.md, cfg.cg.dt, cfg.cg.output_every),
                        structure=eq.outputs["gro"], topology=top, description="MD")
        an = PythonStage(name="analyse", cycle=c, workdir=wd("analyse"), inputs={"xtc": md.outputs["xtc"]},
                         outputs={"json": wd("analyse") / "frames.json"}, func=analyse, description="read xtc")
        stages += [em, eq, md, an]
        prev = md.outputs["gro"]
    return stages


def write_config(folder: Path, box: dict, output: str, md_steps: int = 30000, cycles: int = 2,
                 extra: str = "") -> Path:
    cfg = folder / f"{output}.yaml"
    cfg.write_text(f"""\
output: {output}
cycles: {cycles}
seed: 7
system:
  aa_topology: {box['top']}
  aa_structure: {box['gro']}
  cg_topology: {box['top']}
  mappings: [{box['map']}]
cg:
  em_steps: 50
  eq: 400 steps
  eq_dt: 0.01
  md: {md_steps} steps
  dt: 0.02
  output_every: 1000 steps
gromacs:
  nt: 1
  extra_mdrun_args: ["-cpt", "0.003"]
{extra}""")
    return cfg


def cycle_cmd(cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "multiscale.workflow.commands", "cycle", "--config", str(cfg), "--no-progress", *extra]


def env_with_pipeline() -> dict:
    env = dict(os.environ)
    env["MULTISCALE_PIPELINE"] = f"{HERE}:w_pipeline"
    env["GROMACSWRAPPER_SUPPRESS_SETUP_CHECK"] = "1"
    return env


# ------------------------------------------------------------------------------------------
# helpers


def read_state(root: Path) -> dict:
    p = root / "state.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def start(cfg: Path, log: Path) -> subprocess.Popen:
    fh = open(log, "ab")
    # own session: SIGKILL goes to the whole process group (driver + gmx), as when a node dies
    return subprocess.Popen(cycle_cmd(cfg), env=env_with_pipeline(), stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=cfg.parent)


def kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait(timeout=30)


def wait_for(pred, proc: subprocess.Popen, timeout: float = 120.0, what: str = "") -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended (rc {proc.returncode}) before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timeout waiting for {what}")


def final_frames(root: Path, cycle: int) -> tuple[int, list[float]]:
    from multiscale.workflow.stages import xtc_frames

    return xtc_frames(root / f"cycle_{cycle:03d}" / "cg-md" / "cg-md.xtc")


# ------------------------------------------------------------------------------------------
# the test


MD_STEPS = 60000  # 1.2 ns of 20 fs steps, ~5 s here: long enough to be killed mid-run


@pytest.fixture(scope="module")
def wbox(tmp_path_factory):
    d = tmp_path_factory.mktemp("wbox")
    return d, write_w_box(d / "system")


@pytest.fixture(scope="module")
def reference(wbox):
    """An uninterrupted run."""
    d, box = wbox
    cfg = write_config(d, box, "reference", md_steps=MD_STEPS)
    r = subprocess.run(cycle_cmd(cfg), env=env_with_pipeline(), capture_output=True, text=True, cwd=d, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return d / "reference"


def test_kill9_during_mdrun_and_between_stages_then_resume(wbox, reference):
    d, box = wbox
    cfg = write_config(d, box, "killed", md_steps=MD_STEPS)
    root, log = d / "killed", d / "killed.log"

    # 1) SIGKILL while cycle 1's cg-md runs, once it has written a checkpoint and some frames
    md_dir = root / "cycle_001" / "cg-md"
    p = start(cfg, log)
    wait_for(lambda: (md_dir / "cg-md.cpt").is_file() and (md_dir / "cg-md.xtc").is_file()
             and (md_dir / "cg-md.xtc").stat().st_size > 5000, p, what="a checkpoint of cycle_001/cg-md")
    kill_group(p)
    st = read_state(root)["stages"]
    assert st["cycle_001/cg-md"]["status"] == "running"  # as the killed process left it
    assert st["cycle_001/cg-eq"]["status"] == "done"

    # 2) SIGKILL right after a stage finished (between stages)
    p = start(cfg, log)
    wait_for(lambda: read_state(root).get("stages", {}).get("cycle_001/analyse", {}).get("status") == "done",
             p, what="cycle_001/analyse done")
    kill_group(p)

    # 3) the same command again finishes
    r = subprocess.run(cycle_cmd(cfg), env=env_with_pipeline(), capture_output=True, text=True, cwd=d, timeout=300)
    assert r.returncode == 0, log.read_text(errors="replace") + r.stdout + r.stderr

    state, ref = read_state(root), read_state(reference)
    assert state["plan"] == ref["plan"]
    stages = state["stages"]
    for key in state["plan"]:
        rec = stages[key]
        results = [a["result"] for a in rec["attempts"]]
        assert rec["status"] == "done", (key, rec)
        assert results.count("done") == 1, (key, results)  # completed exactly once
        assert rec["info"].get("atoms") == ref["stages"][key]["info"].get("atoms"), key
        if key == "cycle_001/cg-md":
            # killed once, then continued from its checkpoint (not restarted)
            assert results == ["killed", "done"], results
            assert rec["attempts"][1]["continued"] is True
        elif key in ("cycle_002/cg-em",):
            # the kill between stages may have caught this one starting: then it was redone
            assert results in (["done"], ["killed", "done"]), results
            assert not rec["attempts"][-1]["continued"]
        else:
            assert results == ["done"], (key, results)

    # no frame lost or duplicated: exact counts and time stamps, as in the uninterrupted run
    want = MD_STEPS // 1000 + 1
    for c in (1, 2):
        n, times = final_frames(root, c)
        n_ref, times_ref = final_frames(reference, c)
        assert n == n_ref == want
        assert times == times_ref == [round(i * 1000 * 0.02, 6) for i in range(want)]
        assert stages[f"cycle_{c:03d}/cg-md"]["info"]["frames"] == want
    # every output recorded with its checksum; no leftovers of interrupted writes
    for key in state["plan"]:
        for out in stages[key]["outputs"].values():
            assert (root / out["path"]).is_file() and len(out["sha256"]) == 64
    leftovers = [p for p in root.rglob("*") if p.name.startswith("#") or ".partial" in p.name]
    assert not leftovers, leftovers

    # status shows it all done; --check exit code 0
    r = subprocess.run([sys.executable, "-m", "multiscale.workflow.commands", "status", str(root), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "all done" in r.stdout, r.stdout + r.stderr


def test_rerun_finished_does_nothing_and_changed_input_is_refused(wbox, reference, tmp_path):
    d, box = wbox
    cfg = d / "reference.yaml"
    before = read_state(reference)
    r = subprocess.run(cycle_cmd(cfg), env=env_with_pipeline(), capture_output=True, text=True, cwd=d, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    after = read_state(reference)
    for key in before["plan"]:
        assert len(after["stages"][key]["attempts"]) == len(before["stages"][key]["attempts"]), key
    assert "8 finished stage(s) skipped" in r.stdout

    # change a parameter of cycle 2's MD -> refused, naming the stage and the change
    cfg2 = write_config(d, box, "reference", md_steps=MD_STEPS + 1000)
    r = subprocess.run(cycle_cmd(cfg2), env=env_with_pipeline(), capture_output=True, text=True, cwd=d, timeout=120)
    assert r.returncode == 2
    assert "error: stage cycle_001/cg-md is done but its parameters changed (values.nsteps: 60000 -> 61000)" in r.stderr
    assert "--force" in r.stderr

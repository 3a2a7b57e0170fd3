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
MARTINI = REPO / "src" / "multiscale" / "data" / "topologies" / "martini3"
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
        n, times = xtc_frames(stage.inputs["xtc"])
        text = json.dumps({"frames": n, "times": times})
        # written in two steps on purpose (W_ANALYSE_SLEEP): a kill in between leaves a
        # half-written output that the driver must discard
        with open(stage.outputs["json"], "w") as f:
            f.write(text[: len(text) // 2])
            f.flush()
            time.sleep(float(os.environ.get("W_ANALYSE_SLEEP", "0")))
            f.write(text[len(text) // 2:])
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

        common = {"cycle": c, "topology": top, "resolution": "cg", "mdp_options": dict(cfg.mdp.overrides.cg)}
        em = MdrunStage(name="cg-em", workdir=wd("cg-em"), template="martini_em",
                        values={"nsteps": cfg.cg.em_steps, "emtol": cfg.cg.emtol, "define": ""},
                        structure=prev, minimisation=True, description="EM", **common)
        eq = MdrunStage(name="cg-eq", workdir=wd("cg-eq"), template="martini_eq",
                        values=vals("cg-eq", cfg.cg.eq, cfg.cg.eq_dt, None), structure=em.outputs["gro"],
                        description="NPT eq", **common)
        md = MdrunStage(name="cg-md", workdir=wd("cg-md"), template="martini_md",
                        values=vals("cg-md", cfg.cg.md, cfg.cg.dt, cfg.cg.output_every),
                        structure=eq.outputs["gro"], description="MD", **common)
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
    return [sys.executable, "-m", "multiscale.cli", "cycle", "--config", str(cfg), "--no-progress", *extra]


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
    env = dict(env_with_pipeline(), W_ANALYSE_SLEEP="3")
    # own session: SIGKILL goes to the whole process group (driver + gmx), as when a node dies
    return subprocess.Popen(cycle_cmd(cfg), env=env, stdout=fh, stderr=subprocess.STDOUT,
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

    # 2) SIGKILL while a Python stage is half-way through writing its output
    out = root / "cycle_001" / "analyse" / "frames.json"
    p = start(cfg, log)
    wait_for(lambda: out.is_file() and out.stat().st_size > 0, p, what="cycle_001/analyse writing")
    kill_group(p)
    with pytest.raises(ValueError):
        json.loads(out.read_text())  # half-written

    # 3) SIGKILL right after a stage finished (between stages)
    p = start(cfg, log)
    wait_for(lambda: read_state(root).get("stages", {}).get("cycle_002/cg-eq", {}).get("status") == "done",
             p, what="cycle_002/cg-eq done")
    kill_group(p)

    # 4) the same command again finishes
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
        for k in ("atoms", "beads"):
            assert rec["info"].get(k) == ref["stages"][key]["info"].get(k), key
        assert rec["info"].get("beads") == box["atoms"] or key.endswith("analyse")
        if key == "cycle_001/cg-md":
            # killed once, then continued from its checkpoint (not restarted)
            assert results == ["killed", "done"], results
            assert rec["attempts"][1]["continued"] is True
        elif key == "cycle_001/analyse":
            # killed with a half-written output: discarded and redone from scratch
            assert results == ["killed", "done"], results
            assert rec["attempts"][1]["continued"] is False
            assert json.loads(out.read_text())["frames"] == MD_STEPS // 1000 + 1
        elif key == "cycle_002/cg-md":
            # the kill between stages may have caught this one starting: then it was redone
            assert results in (["done"], ["killed", "done"]), results
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
    leftovers = [p for p in root.rglob("*") if p.name.startswith(("#", ".grompp", ".pp-")) or ".partial" in p.name]
    assert not leftovers, leftovers

    # status shows it all done; --check exit code 0
    r = subprocess.run([sys.executable, "-m", "multiscale.cli", "status", str(root), "--check"],
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


def test_failed_stage_names_stage_log_and_gromacs_lines_then_resumes(wbox, tmp_path):
    d, box = wbox
    bad = "mdp:\n  overrides:\n    cg: {tcoupl: nonsense}\n"
    cfg = write_config(tmp_path, box, "failing", md_steps=2000, cycles=1, extra=bad)
    r = subprocess.run(cycle_cmd(cfg), env=env_with_pipeline(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert err.startswith("error: stage cycle_001/cg-em failed: gmx grompp failed in stage 'cg-em' (exit code 1): ")
    assert "nonsense" in err  # the relevant GROMACS line
    log = tmp_path / "failing" / "cycle_001" / "cg-em" / "cg-em.grompp.log"
    assert f"[full output: {log}]" in err and log.is_file()
    assert "\n" not in err
    state = read_state(tmp_path / "failing")
    assert state["stages"]["cycle_001/cg-em"]["status"] == "failed"
    r = subprocess.run([sys.executable, "-m", "multiscale.cli", "status", str(tmp_path / "failing")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "FAILED" in r.stdout and "cycle_001/cg-em failed:" in r.stdout

    # fix the config: the failed stage is redone (its parameters changed), the run finishes
    cfg = write_config(tmp_path, box, "failing", md_steps=2000, cycles=1)
    r = subprocess.run(cycle_cmd(cfg), env=env_with_pipeline(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cycle_001/cg-em: its parameters changed (mdp_options.tcoupl: 'nonsense' -> None): restarting it" in r.stdout
    rec = read_state(tmp_path / "failing")["stages"]["cycle_001/cg-em"]
    assert [a["result"] for a in rec["attempts"]] == ["failed", "done"]


def test_default_pipeline_stage_lists(tmp_path):
    """The AA -> CG -> AA stage list (run for real by the heptanol demo)."""
    from multiscale.config import config_from_dict
    from multiscale.workflow.cycle import build_plan
    from multiscale.workflow.stages import MdrunStage

    ex = REPO / "src" / "multiscale" / "data" / "examples" / "heptanol"
    base = {"system": {"aa_topology": str(ex / "aa.top"), "aa_structure": str(ex / "aa.gro"),
                       "cg_topology": str(ex / "cg.top"), "cg_structure": str(ex / "aa.gro"),
                       "mappings": [str(ex.parents[1] / "mappings" / "heptanol.map")]}, "cycles": 2}
    model = tmp_path / "m.pt"
    model.write_bytes(b"")
    cfg = config_from_dict(base, base=tmp_path)
    plan = build_plan(cfg, tmp_path / "runs")
    per_cycle = ["aa-md", "coarse-grain", "train", "cg-em", "cg-eq", "cg-md", "backmap", "restrained-em",
                 "restrained-eq", "relax"]
    assert [s.key for s in plan] == (["cycle_001/aa-em", "cycle_001/aa-eq"] + [f"cycle_001/{n}" for n in per_cycle]
                                     + [f"cycle_002/{n}" for n in per_cycle])
    by = {s.key: s for s in plan}
    assert by["cycle_002/aa-md"].inputs["structure"] == by["cycle_001/relax"].outputs["gro"]
    assert by["cycle_002/train"].inputs["init_model"] == by["cycle_001/train"].outputs["model"]
    assert by["cycle_002/backmap"].inputs["model"] == by["cycle_002/train"].outputs["model"]
    assert by["cycle_001/restrained-eq"].restraint == by["cycle_001/backmap"].outputs["gro"]
    assert by["cycle_001/restrained-eq"].values["define"] == "-DPOSRES"
    assert by["cycle_001/relax"].values["define"] == ""
    md = by["cycle_001/aa-md"]
    assert isinstance(md, MdrunStage) and md.values["nsteps"] == 5000 and md.values["nstxout_compressed"] == 500
    seeds = {s.values.get("gen_seed") for s in plan if isinstance(s, MdrunStage) and "gen_seed" in s.values}
    assert len(seeds) == len([s for s in plan if isinstance(s, MdrunStage) and "gen_seed" in s.values])

    # job-array replicas: own output root, own seeds, same stage list
    r0, r1 = build_plan(cfg, cfg.root(0), 0), build_plan(cfg, cfg.root(1), 1)
    assert [s.key for s in r0] == [s.key for s in r1] == [s.key for s in plan]
    assert r0[0].workdir == tmp_path / "runs" / "replica_0" / "cycle_001" / "aa-em"
    s0 = [s.values.get("gen_seed") for s in r0 if isinstance(s, MdrunStage) and "gen_seed" in s.values]
    s1 = [s.values.get("gen_seed") for s in r1 if isinstance(s, MdrunStage) and "gen_seed" in s.values]
    assert not set(s0) & set(s1) and not set(s0) & seeds

    cfg = config_from_dict({**base, "start": "cg", "backmap": {"model": str(model)}}, base=tmp_path)
    names = [s.key for s in build_plan(cfg, tmp_path / "runs")]
    assert names == ([f"cycle_001/{n}" for n in ["cg-em", "cg-eq", "cg-md", "backmap", "restrained-em",
                                                 "restrained-eq", "relax", "aa-md", "train", "coarse-grain"]]
                     + [f"cycle_002/{n}" for n in ["cg-em", "cg-eq", "cg-md", "backmap", "restrained-em",
                                                   "restrained-eq", "relax", "aa-md", "train"]])
    cfg = config_from_dict({**base, "backmap": {"model": str(model), "train_from_cycle": 2}}, base=tmp_path)
    plan = build_plan(cfg, tmp_path / "runs")
    assert "cycle_001/train" not in [s.key for s in plan] and "cycle_002/train" in [s.key for s in plan]
    assert {s.key: s for s in plan}["cycle_001/backmap"].inputs["model"] == model


def test_posre_includes_added_to_preprocessed_topology():
    from multiscale.workflow.stages import add_posre_includes

    top = "[ moleculetype ]\nHPO 3\n[ atoms ]\n1 c3 1 HPO C1 1 0 12\n[ moleculetype ]\n; c\nSOL 2\n[ atoms ]\n" \
          "1 OW 1 SOL OW 1 0 16\n[ system ]\nx\n[ molecules ]\nHPO 1\nSOL 1\n"
    out = add_posre_includes(top, {"HPO": "posre_HPO.itp"})
    i_inc, i_sol = out.index('#include "posre_HPO.itp"'), out.index("SOL 2")
    assert out.index("1 c3 1 HPO C1") < i_inc < i_sol
    assert "#ifdef POSRES\n#define POSRES_HPO\n#endif\n#ifdef POSRES_HPO\n" in out
    with pytest.raises(Exception, match="moleculetype\\(s\\) XYZ not found"):
        add_posre_includes(top, {"XYZ": "posre_XYZ.itp"})

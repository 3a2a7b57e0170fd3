"""The cycle driver end to end with real GROMACS on a tiny Martini water box.

`multiscale cycle` runs as a subprocess with a stage list of real gmx stages (the driver's
MULTISCALE_PIPELINE hook): it is SIGKILLed during an mdrun and again between stages, re-run,
and must finish with every stage completed exactly once (the killed mdrun continued from its
checkpoint), the exact frame counts/time stamps and the same stages/atom counts as an
uninterrupted run.  The default AA -> CG -> AA pipeline is checked for its stage list here and
run for real in the heptanol demo.
"""

from __future__ import annotations

import hashlib
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
        lines.append(f"{i + 1:5d}{'W':<5s}{'W':>5s}{i + 1:5d}{(x + .5) * a:8.3f}{(y + .5) * a:8.3f}{(z + .5) * a:8.3f}")
    lines.append(f"{n * a:10.5f}{n * a:10.5f}{n * a:10.5f}")
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
        def wd(name, c=c):
            return root / f"cycle_{c:03d}" / name

        def vals(name, length, dt, every, c=c):
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
    from multiscale.errors import MultiscaleError
    from multiscale.workflow.cycle import build_plan
    from multiscale.workflow.stages import MdrunStage

    ex = REPO / "src" / "multiscale" / "data" / "examples" / "heptanol"
    base = {"system": {"aa_topology": str(ex / "aa.top"), "aa_structure": str(ex / "aa.gro"),
                       "cg_topology": str(ex / "cg.top"), "cg_structure": str(ex / "aa.gro"),
                       "mappings": [str(ex.parents[1] / "mappings" / "heptanol.map")]}, "cycles": 2,
            "backmap": {"fine_tune": True}}
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
    # the mapping and the CG .itp files are content inputs (a changed mapping redoes coarse-grain/train)
    assert by["cycle_001/coarse-grain"].inputs["mapping heptanol.map"] == ex.parents[1] / "mappings" / "heptanol.map"
    assert by["cycle_001/train"].inputs["mapping heptanol.map"] == ex.parents[1] / "mappings" / "heptanol.map"
    assert any(k.startswith("cg_include ") for k in by["cycle_001/coarse-grain"].inputs)
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

    cfg = config_from_dict({**base, "start": "cg", "backmap": {"model": str(model), "fine_tune": True}}, base=tmp_path)
    names = [s.key for s in build_plan(cfg, tmp_path / "runs")]
    assert names == ([f"cycle_001/{n}" for n in ["cg-em", "cg-eq", "cg-md", "backmap", "restrained-em",
                                                 "restrained-eq", "relax", "aa-md", "train", "coarse-grain"]]
                     + [f"cycle_002/{n}" for n in ["cg-em", "cg-eq", "cg-md", "backmap", "restrained-em",
                                                   "restrained-eq", "relax", "aa-md", "train"]])
    cfg = config_from_dict({**base, "backmap": {"model": str(model), "train_from_cycle": 2, "fine_tune": True}}, base=tmp_path)
    plan = build_plan(cfg, tmp_path / "runs")
    assert "cycle_001/train" not in [s.key for s in plan] and "cycle_002/train" in [s.key for s in plan]
    assert {s.key: s for s in plan}["cycle_001/backmap"].inputs["model"] == model
    # no model given, none trained before the first backmap: the shipped models, which cover no small molecule
    for over in ({"start": "cg"}, {"backmap": {"train_from_cycle": 0}}, {"backmap": {"train_from_cycle": 2}}):
        cfg = config_from_dict({**base, **over}, base=tmp_path)
        with pytest.raises(MultiscaleError, match=r"^cycle 1 backmaps before any training and backmap.model is not set, "
                           r"so it needs the shipped models, but .*has no moleculetype HPO.*; or set backmap.model$"):
            build_plan(cfg, tmp_path / "runs")


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


# ------------------------------------------------------------------------------------------
# provenance: content hashes of every input (topology #includes, mappings), --force, --redo-from


def py_pipeline(cfg, root, replica=None):
    """Per cycle: 'digest' (reads the topology with its #includes and the mapping) -> 'copy'."""
    import hashlib

    from multiscale.workflow.stages import PythonStage, StageResult, _named_inputs
    from multiscale.workflow.state import include_closure

    def digest(stage, ctx):
        top = stage.inputs["topology"]
        files = [top, *include_closure(top), *cfg.system.mapping_files]
        stage.outputs["txt"].write_text(hashlib.sha256(b"".join(Path(f).read_bytes() for f in files)).hexdigest())
        return StageResult()

    def copy(stage, ctx):
        stage.outputs["txt"].write_text(stage.inputs["digest"].read_text())
        return StageResult()

    stages = []
    for c in range(1, cfg.cycles + 1):
        wd = root / f"cycle_{c:03d}"
        a = PythonStage(name="digest", cycle=c, workdir=wd / "digest", func=digest,
                        inputs={"topology": cfg.system.aa_topology, **_named_inputs("mapping", cfg.system.mapping_files)},
                        outputs={"txt": wd / "digest" / "digest.txt"})
        b = PythonStage(name="copy", cycle=c, workdir=wd / "copy", func=copy, inputs={"digest": a.outputs["txt"]},
                        outputs={"txt": wd / "copy" / "copy.txt"})
        stages += [a, b]
    return stages


def test_changed_include_or_mapping_is_detected_force_and_redo_from_work(tmp_path):
    sysd = tmp_path / "system"
    box = write_w_box(sysd)
    (sysd / "local.itp").write_text("; a local include\n")
    top = sysd / "sys.top"
    top.write_text('#include "local.itp"\n' + box["top"].read_text())
    box = dict(box, top=top)
    cfg = write_config(tmp_path, box, "prov", cycles=2)
    root = tmp_path / "prov"
    env = dict(env_with_pipeline(), MULTISCALE_PIPELINE=f"{HERE}:py_pipeline")

    def run(*extra):
        return subprocess.run(cycle_cmd(cfg, *extra), env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)

    def attempts():
        return {k: len(v["attempts"]) for k, v in read_state(root)["stages"].items()}

    # --dry-run on a fresh folder: the plan, nothing created
    r = run("--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cycle_002/copy" in r.stdout and "4 stages: 4 would run, 0 skipped. Nothing was run or written." in r.stdout
    assert not root.exists()
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert attempts() == {"cycle_001/digest": 1, "cycle_001/copy": 1, "cycle_002/digest": 1, "cycle_002/copy": 1}
    # state.json records the include's content hash, not only the top's path
    inputs = read_state(root)["stages"]["cycle_001/digest"]["inputs"]
    assert inputs["topology #include local.itp"]["sha256"] == hashlib.sha256(b"; a local include\n").hexdigest()
    assert "mapping w.map" in inputs

    # an edited #include (the .top itself unchanged): refused, naming the file
    (sysd / "local.itp").write_text("; edited\n")
    snapshot = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    r = run("--dry-run")
    assert r.returncode == 1 and "STOP: its input 'topology #include local.itp'" in r.stdout, r.stdout + r.stderr
    assert "the run would stop at cycle_001/digest" in r.stdout
    r = run("--dry-run", "--force")
    assert r.returncode == 0 and "4 would run" in r.stdout, r.stdout + r.stderr
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == snapshot  # nothing written
    r = run()
    assert r.returncode == 2
    err = r.stderr.strip()
    assert "\n" not in err and err.startswith("error: stage cycle_001/digest is done but its input "
                                              "'topology #include local.itp'") and "--force" in err, err
    # --force: that stage and every one after it are redone
    r = run("--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "redoing it and the 3 stage(s) after it (--force)" in r.stdout
    assert set(attempts().values()) == {2}

    # an edited mapping file
    box["map"].write_text("; edited mapping\n")
    r = run()
    assert r.returncode == 2 and "its input 'mapping w.map'" in r.stderr, r.stderr
    assert run("--force").returncode == 0 and set(attempts().values()) == {3}

    # --redo-from NAME@CYCLE: only that stage and the ones after it
    r = run("--redo-from", "copy@1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert attempts() == {"cycle_001/digest": 3, "cycle_001/copy": 4, "cycle_002/digest": 4, "cycle_002/copy": 4}
    r = run("--redo-from", "nosuch@1")
    assert r.returncode == 2 and "--redo-from nosuch@1: no such stage" in r.stderr and r.stderr.count("\n") == 1

    # a lost state.json: finished stage folders are not silently deleted
    (root / "state.json").unlink()
    r = run()
    assert r.returncode == 2 and "but no state.json" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert (root / "cycle_002" / "copy" / "copy.txt").is_file()
    r = run("--force")
    assert r.returncode == 0 and set(attempts().values()) == {1}


def test_kill9_of_the_driver_alone_stops_its_mdrun_and_a_second_cycle_is_refused(wbox, tmp_path):
    from multiscale.workflow.cycle import _alive, _descendants
    from multiscale.workflow.status import root_is_locked

    d, box = wbox
    cfg = write_config(tmp_path, box, "orphan", md_steps=3000000, cycles=1)  # minutes of MD: not over by itself
    root, md_dir = tmp_path / "orphan", tmp_path / "orphan" / "cycle_001" / "cg-md"
    p = start(cfg, tmp_path / "orphan.log")
    try:
        wait_for(lambda: (md_dir / "cg-md.cpt").is_file(), p, what="a checkpoint of cycle_001/cg-md")
        # a second `cycle` on the same folder while the first one runs: refused in one line
        r = subprocess.run(cycle_cmd(cfg), env=env_with_pipeline(), capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "another `multiscale cycle` is running on" in r.stderr and f"pid {p.pid}" in r.stderr
        mdrun = _descendants(p.pid)
        assert mdrun
        os.kill(p.pid, signal.SIGKILL)  # the driver only, as `kill -9 PID` does
        p.wait(timeout=30)
        t0 = time.monotonic()
        while any(_alive(x) for x in mdrun) and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        assert not any(_alive(x) for x in mdrun), "mdrun kept running after its driver was killed"
        assert not root_is_locked(root)
    finally:
        kill_group(p)


def test_dry_run_of_the_example_checks_inputs_and_writes_nothing(tmp_path):
    r = subprocess.run([sys.executable, "-m", "multiscale.cli", "init", str(tmp_path / "ex")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ex = tmp_path / "ex"
    before = sorted(p.relative_to(ex) for p in ex.rglob("*"))
    dry = [sys.executable, "-m", "multiscale.cli", "cycle", "--config", str(ex / "sim.yaml"), "--dry-run"]
    r = subprocess.run(dry, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok  mappings: heptanol.map match the AA topology" in r.stdout and "ok  AA structure aa.gro: 3060 atoms" in r.stdout
    assert "cycle_001/backmap" in r.stdout and "would run" in r.stdout and "Nothing was run or written." in r.stdout
    assert sorted(p.relative_to(ex) for p in ex.rglob("*")) == before
    # a structure that does not fit the topology is found before anything runs
    gro = (ex / "aa.gro").read_text().splitlines()
    (ex / "aa.gro").write_text("\n".join([gro[0], str(int(gro[1]) - 1)] + gro[2:-2] + gro[-1:]) + "\n")
    r = subprocess.run(dry, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "3059" in r.stderr and not (ex / "runs").exists()


def test_interrupted_run_folder_moved_elsewhere_continues(wbox, tmp_path):
    d, box = wbox
    a = tmp_path / "A"
    a.mkdir()
    cfg = write_config(a, box, "run", md_steps=MD_STEPS, cycles=1)
    md = a / "run" / "cycle_001" / "cg-md"
    p = start(cfg, tmp_path / "moved.log")
    wait_for(lambda: (md / "cg-md.cpt").is_file() and (md / "cg-md.xtc").is_file()
             and (md / "cg-md.xtc").stat().st_size > 5000, p, what="a checkpoint of cycle_001/cg-md")
    kill_group(p)
    b = tmp_path / "B"
    a.rename(b)
    r = subprocess.run(cycle_cmd(b / cfg.name), env=env_with_pipeline(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rec = read_state(b / "run")["stages"]["cycle_001/cg-md"]
    assert [x["result"] for x in rec["attempts"]] == ["killed", "done"] and rec["attempts"][1]["continued"]
    assert rec["info"]["frames"] == MD_STEPS // 1000 + 1

"""`multiscale batch`: the SLURM script's contents, its syntax, and a simulated requeue cycle."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multiscale.errors import MultiscaleError
from multiscale.workflow.batch import parse_walltime

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cycle import env_with_pipeline, read_state, write_config, write_w_box  # noqa: E402


def batch(cfg: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multiscale.cli", "batch", "--config", str(cfg), *args],
                          capture_output=True, text=True, env=env)


@pytest.fixture
def box(tmp_path):
    return write_w_box(tmp_path / "system")


def test_walltime_parsing():
    assert parse_walltime("24:00:00") == 86400
    assert parse_walltime("2-00:00:00") == 172800
    assert parse_walltime("1-12") == 129600
    assert parse_walltime("90") == 5400
    assert parse_walltime("30:00") == 1800
    with pytest.raises(MultiscaleError, match=r"--time 'a day': use SLURM's format"):
        parse_walltime("a day")
    for bad in ("25:99:99", "10:60", "1-24:00:00", "1:00:75"):
        with pytest.raises(MultiscaleError, match=r"minutes and seconds < 60"):
            parse_walltime(bad)


def test_script_contents_and_syntax(tmp_path, box):
    cfg = write_config(tmp_path, box, "runs", extra='  launcher: "srun"\n  mdrun_gmx: gmx_mpi\n')
    r = batch(cfg, "--time", "24:00:00", "--nodes", "2", "--ntasks", "8", "--cpus-per-task", "4", "--gpus", "1",
              "--partition", "gpu", "--account", "proj42", "--array", "3", "--setup", "module load gromacs/2023")
    assert r.returncode == 0, r.stderr
    script = tmp_path / "run_multiscale.sbatch"
    assert f"wrote {script}" in r.stdout and f"submit with: sbatch {script}" in r.stdout
    text = script.read_text()
    for line in ["#!/bin/bash", "#SBATCH --time=24:00:00", "#SBATCH --nodes=2", "#SBATCH --ntasks=8",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --gres=gpu:1", "#SBATCH --partition=gpu",
                 "#SBATCH --account=proj42", "#SBATCH --array=0-2", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@300", "#SBATCH --open-mode=append",
                 "#SBATCH --output=slurm-%x-%A_%a.out", f"CONFIG={cfg.name}", "MAXH=23.5",
                 'cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")}" || exit 2',
                 f"MULTISCALE_PYTHON=${{MULTISCALE_PYTHON:-{sys.executable}}}",
                 'MULTISCALE=("$MULTISCALE_PYTHON" -m multiscale.cli)',
                 "module load gromacs/2023",
                 'REPLICA=(--replica "$SLURM_ARRAY_TASK_ID")', "trap on_usr1 USR1",
                 '"${MULTISCALE[@]}" cycle --config "$CONFIG" --maxh "$MAXH" --no-progress ${REPLICA[@]+"${REPLICA[@]}"} &',
                 'scontrol requeue "$SLURM_JOB_ID"',
                 'if "${MULTISCALE[@]}" status "$CONFIG" --check ${REPLICA[@]+"${REPLICA[@]}"}; then',
                 "if [[ $rc -eq 3 ]]; then", "# mdrun: gmx_mpi mdrun, launcher: srun"]:
        assert line in text, line
    # no absolute path of this machine outside the documented, overridable python default
    body = text.replace(sys.executable, "")
    assert str(tmp_path) not in body and "/work/" not in body
    assert '"${REPLICA[@]}"' not in text.replace('${REPLICA[@]+"${REPLICA[@]}"}', "")
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    # MAXH is below the wall time minus the USR1 lead
    assert 23.5 * 3600 < 24 * 3600 - 300

    r = batch(cfg, "--time", "00:04:00")
    assert r.returncode == 2 and "too short for a 6 min safety margin" in r.stderr
    r = batch(cfg, "--time", "1:00:00", "-o", str(tmp_path / "short.sh"))
    assert r.returncode == 0 and "MAXH=0.9\n" in (tmp_path / "short.sh").read_text()


def test_submit_without_sbatch(tmp_path, box):
    cfg = write_config(tmp_path, box, "runs")
    env = dict(os.environ, PATH="/usr/bin:/bin")
    if shutil.which("sbatch", path=env["PATH"]):
        pytest.skip("sbatch is installed here")
    r = batch(cfg, "--submit", env=env)
    assert r.returncode == 2
    assert "error: --submit: sbatch not found on PATH (not a SLURM login node?)" in r.stderr
    assert (tmp_path / "run_multiscale.sbatch").is_file()


@pytest.mark.skipif(shutil.which("gmx") is None, reason="needs gmx on PATH")
def test_simulated_requeue(tmp_path, box):
    """USR1 (SLURM's warning before the wall time) -> clean stop + scontrol requeue; the requeued
    job (same script again) finishes without redoing any stage."""
    cfg = write_config(tmp_path, box, "runs", md_steps=60000, cycles=1)
    assert batch(cfg, "--time", "2:00:00").returncode == 0
    script = tmp_path / "run_multiscale.sbatch"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.calls\n')
    (fake / "scontrol").chmod(0o755)
    env = env_with_pipeline()
    env.update(PATH=f"{fake}:{env['PATH']}", SLURM_JOB_ID="4242")
    root = tmp_path / "runs"

    # job 1: USR1 while cg-md runs
    md = root / "cycle_001" / "cg-md"
    with open(tmp_path / "job1.out", "wb") as out:
        p = subprocess.Popen(["bash", str(script)], env=env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        t0 = time.monotonic()
        while not ((md / "cg-md.cpt").is_file() and (md / "cg-md.xtc").is_file()
                   and (md / "cg-md.xtc").stat().st_size > 5000):
            assert p.poll() is None, (tmp_path / "job1.out").read_text()
            assert time.monotonic() - t0 < 120
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGUSR1)  # --signal=B:USR1 goes to the batch shell only
        assert p.wait(timeout=60) == 0
    job1 = (tmp_path / "job1.out").read_text()
    assert "wall time nearly over: stopping multiscale cleanly" in job1
    assert (tmp_path / "scontrol.calls").read_text() == "requeue 4242\n"
    rec = read_state(root)["stages"]["cycle_001/cg-md"]
    assert rec["status"] == "stopped" and [a["result"] for a in rec["attempts"]] == ["stopped"]

    # job 2 (the requeued job runs the same script): continues and finishes, no requeue
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all stages done" in r.stdout
    assert (tmp_path / "scontrol.calls").read_text() == "requeue 4242\n"
    state = read_state(root)
    for key in state["plan"]:
        results = [a["result"] for a in state["stages"][key]["attempts"]]
        if key == "cycle_001/cg-md":
            assert results == ["stopped", "done"] and state["stages"][key]["attempts"][1]["continued"]
        else:
            assert results == ["done"], (key, results)
    assert state["stages"]["cycle_001/cg-md"]["info"]["frames"] == 61

    # job 3 would find everything done: exit 0 at once, nothing rerun
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "all stages done" in r.stdout
    assert all(len(v["attempts"]) == len(state["stages"][k]["attempts"]) for k, v in read_state(root)["stages"].items())


@pytest.mark.skipif(shutil.which("gmx") is None, reason="needs gmx on PATH")
def test_time_budget_exit_code_requeues(tmp_path, box):
    """`cycle --maxh` with too little time left stops with exit code 3 -> the script requeues."""
    cfg = write_config(tmp_path, box, "runs", cycles=1)
    assert batch(cfg, "--time", "10:00", "--margin-min", "9").returncode == 0  # 60 s: < 60 s left at start
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.calls\n')
    (fake / "scontrol").chmod(0o755)
    env = env_with_pipeline()
    env.update(PATH=f"{fake}:{env['PATH']}", SLURM_JOB_ID="77")
    r = subprocess.run(["bash", str(tmp_path / "run_multiscale.sbatch")], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "time budget (--maxh 0.0166) nearly used: stopping before cycle_001/cg-em" in r.stdout
    assert (tmp_path / "scontrol.calls").read_text() == "requeue 77\n"


def test_margin_help_matches_the_code_and_bad_outputs_are_refused(tmp_path, box):
    from multiscale.workflow.batch import MARGIN_HELP, _margin_s

    assert "between 6 and 30 min" in MARGIN_HELP
    assert _margin_s(600, None) == 360 and _margin_s(10 * 3600, None) == 1800 and _margin_s(7200, None) == 720
    r = subprocess.run([sys.executable, "-m", "multiscale.cli", "batch", "--help"], capture_output=True, text=True)
    assert "between 6 and 30 min" in " ".join(r.stdout.split())

    cfg = write_config(tmp_path, box, "runs", extra="  nt: 1\n")
    before = cfg.read_bytes()
    for target in (cfg, box["top"], box["map"]):
        r = batch(cfg, "--output", str(target))
        assert r.returncode == 2 and "is also an input of this command" in r.stderr and r.stderr.count("\n") == 1
    assert cfg.read_bytes() == before and not os.access(cfg, os.X_OK)
    r = batch(cfg, "--output", str(tmp_path))
    assert r.returncode == 2 and "is a folder" in r.stderr
    # nt: 1 from a laptop config is not carried into the cluster job silently
    r = batch(cfg)
    assert r.returncode == 0 and "note: gromacs.nt: 1 from runs.yaml is used in the job too" in r.stdout
    assert "# gromacs.nt: 1 from runs.yaml applies here too" in (tmp_path / "run_multiscale.sbatch").read_text()


def test_script_copied_elsewhere_runs_there(tmp_path):
    """The example workflow: write the script, copy the folder to 'the cluster', delete the
    original, run the script body with bash and SLURM's variables from another working folder."""
    src = tmp_path / "laptop" / "run"
    write_w_box(src / "system")
    (src / "sim.yaml").write_text("output: runs\ncycles: 2\nsystem:\n  aa_topology: system/w.top\n"
                                  "  aa_structure: system/w.gro\n  cg_topology: system/w.top\n"
                                  "  mappings: [system/w.map]\n")
    r = batch(src / "sim.yaml", "--time", "1:00:00")
    assert r.returncode == 0, r.stderr
    dst = tmp_path / "cluster" / "scratch" / "run"
    shutil.copytree(src, dst)
    shutil.rmtree(tmp_path / "laptop")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.calls\n')
    (fake / "scontrol").chmod(0o755)
    env = env_with_pipeline()
    env.update(MULTISCALE_PIPELINE=f"{Path(__file__).resolve().parent / 'test_cycle.py'}:py_pipeline",
               PATH=f"{fake}:{env['PATH']}", SLURM_JOB_ID="99", SLURM_SUBMIT_DIR=str(dst), SLURM_CPUS_PER_TASK="1")
    env.pop("MULTISCALE_PYTHON", None)
    spool = tmp_path / "spool"  # SLURM runs a copy of the script from its spool folder
    spool.mkdir()
    shutil.copy(dst / "run_multiscale.sbatch", spool / "slurm_script")
    r = subprocess.run(["bash", str(spool / "slurm_script")], env=env, capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all stages done" in r.stdout and not (tmp_path / "scontrol.calls").exists()
    state = read_state(dst / "runs")
    assert len(state["plan"]) == 4 and all(v["status"] == "done" for v in state["stages"].values())

    # a script submitted from the wrong folder says so (one line), nothing runs
    env["SLURM_SUBMIT_DIR"] = str(tmp_path)
    r = subprocess.run(["bash", str(spool / "slurm_script")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "submit from the folder of this script" in r.stderr
    # a python without multiscale is refused instead of running whatever is on PATH
    env.update(SLURM_SUBMIT_DIR=str(dst), MULTISCALE_PYTHON="/usr/bin/false")
    r = subprocess.run(["bash", str(spool / "slurm_script")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot import multiscale" in r.stderr

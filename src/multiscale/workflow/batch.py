"""``multiscale batch``: a plain SLURM script that runs the cycles and requeues itself until done.

The script runs ``multiscale cycle --maxh <wall time - margin>``: every mdrun stops cleanly
with a checkpoint before the wall time, ``cycle`` exits 3 ("stopped, continue later") and the
script calls ``scontrol requeue $SLURM_JOB_ID``; the requeued job continues exactly where the
previous one stopped.  As a safety net SLURM sends USR1 300 s before the end
(``--signal=B:USR1@300``): the trap stops ``multiscale`` (SIGTERM -> mdrun checkpoints) and
requeues.  The loop ends when ``multiscale status --check`` reports every stage done; a real
failure (exit code 2) is not requeued.  Job arrays run one replica per task
(``OUTPUT/replica_<task id>``, seeds derived from the replica number).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..errors import MultiscaleError

__all__ = ["parse_walltime", "render_slurm", "write_batch", "SIGNAL_LEAD_S"]

SIGNAL_LEAD_S = 300


def parse_walltime(text: str) -> int:
    """SLURM time ("MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS") -> seconds."""
    s = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", s)
    if not m:
        raise MultiscaleError(f"--time {text!r}: use SLURM's format, e.g. 24:00:00, 2-00:00:00 or 90 (minutes)")
    d, a, b, c = m.groups()
    if d is not None:  # D-HH[:MM[:SS]]
        secs = int(d) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif b is None:  # MM
        secs = int(a) * 60
    elif c is None:  # MM:SS
        secs = int(a) * 60 + int(b)
    else:  # HH:MM:SS
        secs = int(a) * 3600 + int(b) * 60 + int(c)
    if secs <= 0:
        raise MultiscaleError(f"--time {text!r}: must be longer than 0")
    return secs


def _margin_s(wall_s: int, margin_min: float | None) -> float:
    if margin_min is not None:
        if margin_min < 0:
            raise MultiscaleError(f"--margin-min must be >= 0, got {margin_min}")
        return margin_min * 60.0
    return min(max(0.10 * wall_s, SIGNAL_LEAD_S + 60.0), 1800.0)


def _multiscale_command() -> str:
    exe = shutil.which("multiscale")
    if exe:
        return exe
    return f"{sys.executable} -m multiscale.cli"


def render_slurm(cfg, config_path: Path, *, time_limit: str = "24:00:00", nodes: int = 1,
                 ntasks: int | None = None, cpus_per_task: int | None = None, gpus: int | None = None,
                 partition: str | None = None, account: str | None = None, job_name: str | None = None,
                 array: int | None = None, setup: list[str] | None = None, margin_min: float | None = None,
                 multiscale: str | None = None, script_path: Path | None = None) -> str:
    """The text of the SLURM batch script (see the module docstring)."""
    wall = parse_walltime(time_limit)
    margin = _margin_s(wall, margin_min)
    budget = wall - margin
    if budget < 60:
        raise MultiscaleError(f"--time {time_limit}: too short for a {margin / 60:.0f} min safety margin: "
                              "give a longer wall time or a smaller --margin-min")
    maxh = max(0.0001, int(budget / 3600.0 * 10000) / 10000)
    if nodes < 1:
        raise MultiscaleError(f"--nodes must be >= 1, got {nodes}")
    if array is not None and array < 1:
        raise MultiscaleError(f"--array must be >= 1 (number of replicas), got {array}")
    for name, v in (("--ntasks", ntasks), ("--cpus-per-task", cpus_per_task), ("--gpus", gpus)):
        if v is not None and v < 1:
            raise MultiscaleError(f"{name} must be >= 1, got {v}")
    name = job_name or f"ms-{config_path.parent.name or 'run'}"
    root = cfg.output
    root.mkdir(parents=True, exist_ok=True)
    out_pat = root / ("slurm-%x-%A_%a.out" if array else "slurm-%x-%j.out")
    sb = [f"--job-name={name}", f"--time={time_limit}", f"--nodes={nodes}"]
    if ntasks:
        sb.append(f"--ntasks={ntasks}")
    if cpus_per_task:
        sb.append(f"--cpus-per-task={cpus_per_task}")
    if gpus:
        sb.append(f"--gres=gpu:{gpus}")
    if partition:
        sb.append(f"--partition={partition}")
    if account:
        sb.append(f"--account={account}")
    if array:
        sb.append(f"--array=0-{array - 1}")
    sb += ["--requeue", f"--signal=B:USR1@{SIGNAL_LEAD_S}", f"--output={out_pat}", "--open-mode=append"]
    g = cfg.gromacs
    launcher = g.launcher or "(none: mdrun runs on this node with thread-MPI/OpenMP)"
    setup_lines = "\n".join(setup or []) or "# module load gromacs      # (add with: multiscale batch --setup 'module load gromacs')"
    ms = multiscale or _multiscale_command()
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"# multiscale cycles of {config_path}",
        f"# written by `multiscale batch` on {time.strftime('%Y-%m-%d %H:%M')}.",
        "#",
        f"# Runs `multiscale cycle --maxh {maxh}` ({budget / 3600:.2f} h of the {wall / 3600:.2f} h wall time; mdrun",
        "# stops cleanly with a checkpoint before that), then requeues this job until",
        "# `multiscale status --check` says every stage is done. A requeued job continues exactly",
        f"# where the previous one stopped. USR1 ({SIGNAL_LEAD_S} s before the wall time) stops early and requeues.",
        f"# mdrun: {g.mdrun_gmx or g.gmx} mdrun, launcher: {launcher}",
        "# Submit: sbatch " + q(str(script_path or config_path.parent / "run_multiscale.sbatch"))
        + "   Watch: multiscale status " + q(str(root)),
    ]
    lines += [f"#SBATCH {x}" for x in sb]
    lines += [
        "",
        "set -uo pipefail",
        "",
        f"CONFIG={q(str(config_path))}",
        f"ROOT={q(str(root))}",
        f"MAXH={maxh}",
        f"MULTISCALE=${{MULTISCALE:-{q(ms)}}}",
        "",
        "REPLICA=()",
        'if [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]]; then',
        '  REPLICA=(--replica "$SLURM_ARRAY_TASK_ID")     # own output folder and seeds per replica',
        '  ROOT="$ROOT/replica_$SLURM_ARRAY_TASK_ID"',
        "fi",
        "",
        "# --- environment ---",
        setup_lines,
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-${OMP_NUM_THREADS:-1}}"',
        "",
        "requeue() {",
        '  if [[ -n "${SLURM_JOB_ID:-}" ]]; then',
        '    echo "$(date "+%F %T") requeueing job $SLURM_JOB_ID to continue the run"',
        '    scontrol requeue "$SLURM_JOB_ID"',
        "  else",
        '    echo "$(date "+%F %T") not finished: run this script again to continue"',
        "  fi",
        "}",
        "",
        "on_usr1() {",
        '  echo "$(date "+%F %T") wall time nearly over: stopping multiscale cleanly"',
        '  kill -TERM "$PID" 2>/dev/null',
        '  wait "$PID"',
        "  requeue",
        "  exit 0",
        "}",
        "trap on_usr1 USR1",
        "",
        'echo "$(date "+%F %T") job ${SLURM_JOB_ID:-local} on $(hostname): multiscale cycle, output in $ROOT"',
        '$MULTISCALE cycle --config "$CONFIG" --maxh "$MAXH" --no-progress "${REPLICA[@]}" &',
        "PID=$!",
        'wait "$PID"',
        "rc=$?",
        "",
        'if $MULTISCALE status --check "$ROOT"; then',
        '  echo "$(date "+%F %T") all stages done"',
        "  exit 0",
        "fi",
        "if [[ $rc -eq 3 ]]; then     # stopped at the time budget: continue in the requeued job",
        "  requeue",
        "  exit 0",
        "fi",
        'echo "$(date "+%F %T") multiscale cycle failed (exit code $rc): not requeued; fix the cause (see above),"',
        'echo "then resubmit this script: finished stages are not redone."',
        "exit $rc",
        "",
    ]
    return "\n".join(lines)


def write_batch(args) -> int:
    """Handler of ``multiscale batch`` (argparse namespace)."""
    from ..config import load_config
    from ..io import atomic_write_text

    if args.scheduler != "slurm":
        raise MultiscaleError(f"--scheduler {args.scheduler}: only slurm is supported")
    cfg = load_config(args.config)
    config_path = cfg.source
    out = (Path(args.output) if args.output else config_path.parent / "run_multiscale.sbatch").resolve()
    text = render_slurm(cfg, config_path, time_limit=args.time, nodes=args.nodes, ntasks=args.ntasks,
                        cpus_per_task=args.cpus_per_task, gpus=args.gpus, partition=args.partition,
                        account=args.account, job_name=args.job_name, array=args.array, setup=args.setup,
                        margin_min=args.margin_min, script_path=out)
    atomic_write_text(out, text)
    os.chmod(out, out.stat().st_mode | ((out.stat().st_mode & 0o444) >> 2))  # +x where readable (umask kept)
    print(f"wrote {out}")
    if (args.nodes > 1 or (args.ntasks or 1) > 1) and not cfg.gromacs.launcher:
        print("note: gromacs.launcher is empty, so mdrun runs on one node only: for MPI set gromacs.launcher: srun "
              "and gromacs.mdrun_gmx: gmx_mpi in sim.yaml")
    if args.submit:
        sbatch = shutil.which("sbatch")
        if sbatch is None:
            raise MultiscaleError(f"--submit: sbatch not found on PATH (not a SLURM login node?): copy the run to the "
                                  f"cluster and submit there with `sbatch {out}`")
        r = subprocess.run([sbatch, str(out)], cwd=out.parent, capture_output=True, text=True)
        if r.returncode != 0:
            raise MultiscaleError(f"sbatch {out} failed (exit code {r.returncode}): {(r.stderr or r.stdout).strip()}")
        print(r.stdout.strip())
    else:
        print(f"submit with: sbatch {out}")
    return 0

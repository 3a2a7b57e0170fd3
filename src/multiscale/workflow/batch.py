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

__all__ = ["parse_walltime", "render_slurm", "write_batch", "config_inputs", "SIGNAL_LEAD_S", "MARGIN_HELP"]

SIGNAL_LEAD_S = 300
MARGIN_FRACTION, MARGIN_MAX_S = 0.10, 1800.0
MARGIN_MIN_S = SIGNAL_LEAD_S + 60.0  # the USR1 warning must come after the --maxh stop
MARGIN_HELP = (f"minutes kept free before the wall time (default: {MARGIN_FRACTION:.0%} of it, between "
               f"{MARGIN_MIN_S / 60:.0f} and {MARGIN_MAX_S / 60:.0f} min)")


def parse_walltime(text: str) -> int:
    """SLURM time ("MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS") -> seconds."""
    s = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", s)
    if not m:
        raise MultiscaleError(f"--time {text!r}: use SLURM's format, e.g. 24:00:00, 2-00:00:00 or 90 (minutes)")
    d, a, b, c = m.groups()
    fields = [x for x in (a, b, c) if x is not None]
    if (d is not None and int(a) >= 24) or any(int(x) >= 60 for x in fields[1:]):
        raise MultiscaleError(f"--time {text!r}: hours must be < 24 after a day count, minutes and seconds < 60 "
                              "after the first field (e.g. 24:00:00, 1-12:30:00)")
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
    return min(max(MARGIN_FRACTION * wall_s, MARGIN_MIN_S), MARGIN_MAX_S)


def render_slurm(cfg, config_path: Path, *, time_limit: str = "24:00:00", nodes: int = 1,
                 ntasks: int | None = None, cpus_per_task: int | None = None, gpus: int | None = None,
                 partition: str | None = None, account: str | None = None, job_name: str | None = None,
                 array: int | None = None, setup: list[str] | None = None, margin_min: float | None = None,
                 python: str | None = None, script_path: Path | None = None) -> str:
    """The text of the SLURM batch script (see the module docstring).

    Every path in it is relative to the script's folder (the job ``cd``s to
    ``$SLURM_SUBMIT_DIR``, so submit it from its folder), and it runs ``python -m multiscale.cli``
    with ``python`` (default: the interpreter of this installation; ``MULTISCALE_PYTHON``
    overrides it where the script runs), checking that it imports ``multiscale`` first."""
    wall, budget, maxh = _budget(time_limit, margin_min)
    if nodes < 1:
        raise MultiscaleError(f"--nodes must be >= 1, got {nodes}")
    if array is not None and array < 1:
        raise MultiscaleError(f"--array must be >= 1 (number of replicas), got {array}")
    for name, v in (("--ntasks", ntasks), ("--cpus-per-task", cpus_per_task), ("--gpus", gpus)):
        if v is not None and v < 1:
            raise MultiscaleError(f"{name} must be >= 1, got {v}")
    script_path = Path(script_path or config_path.parent / "run_multiscale.sbatch")
    here = script_path.resolve().parent
    config_rel = os.path.relpath(config_path.resolve(), here)
    root_rel = os.path.relpath(cfg.output.resolve(), here)
    name = job_name or f"ms-{config_path.resolve().parent.name or 'run'}"
    out_pat = "slurm-%x-%A_%a.out" if array else "slurm-%x-%j.out"  # in the submit folder (always exists)
    sb = [f"--job-name={name}", f"--time={time_limit}", f"--nodes={nodes}"]
    for flag, v in (("--ntasks", ntasks), ("--cpus-per-task", cpus_per_task), ("--gres=gpu:", gpus),
                    ("--partition", partition), ("--account", account)):
        if v:
            sb.append(f"{flag}{v}" if flag.endswith(":") else f"{flag}={v}")
    if array:
        sb.append(f"--array=0-{array - 1}")
    sb += ["--requeue", f"--signal=B:USR1@{SIGNAL_LEAD_S}", f"--output={out_pat}", "--open-mode=append"]
    py = python or sys.executable
    lines = _header_lines(cfg, config_path, config_rel, root_rel, script_path.name, maxh, budget, wall, py, out_pat)
    lines += [f"#SBATCH {x}" for x in sb]
    lines += _setup_lines(config_rel, script_path.name, maxh, py, setup)
    lines += _JOB_LOOP
    return "\n".join(lines)


def _budget(time_limit: str, margin_min: float | None) -> tuple[float, float, float]:
    """(wall s, budget s, --maxh h) of a wall time less its safety margin."""
    wall = parse_walltime(time_limit)
    margin = _margin_s(wall, margin_min)
    budget = wall - margin
    if budget < 60:
        raise MultiscaleError(f"--time {time_limit}: too short for a {margin / 60:.0f} min safety margin: "
                              "give a longer wall time or a smaller --margin-min")
    return wall, budget, max(0.0001, int(budget / 3600.0 * 10000) / 10000)


def _header_lines(cfg, config_path, config_rel, root_rel, script_name, maxh, budget, wall, py, out_pat) -> list[str]:
    """The script's comment header: what it runs, how it continues, where to watch."""
    from .. import __version__

    g = cfg.gromacs
    launcher = g.launcher or "(none: mdrun runs on this node with thread-MPI/OpenMP)"
    q = shlex.quote
    threads = (f"# gromacs.nt: {g.nt} from {config_path.name} applies here too (mdrun -nt {g.nt}): remove it "
               "there to let mdrun use the job's cores" if g.nt else "")
    lines = [
        "#!/bin/bash",
        f"# multiscale cycles of {config_rel}; every path here is relative to this script's folder.",
        f"# Written by multiscale {__version__} (`multiscale batch`) on {time.strftime('%Y-%m-%d %H:%M')}.",
        f"# Submit from this folder (the job works in the submit folder): cd FOLDER && sbatch {script_name}",
        "#",
        f"# Runs `multiscale cycle --maxh {maxh}` ({budget / 3600:.2f} h of the {wall / 3600:.2f} h wall time; mdrun",
        "# stops cleanly with a checkpoint before that), then requeues this job until",
        "# `multiscale status --check` says every stage is done. A requeued job continues exactly",
        f"# where the previous one stopped. USR1 ({SIGNAL_LEAD_S} s before the wall time) stops early and requeues.",
        f"# mdrun: {g.mdrun_gmx or g.gmx} mdrun, launcher: {launcher}",
        "# multiscale runs as: $MULTISCALE_PYTHON -m multiscale.cli, MULTISCALE_PYTHON defaulting to the",
        f"# Python of the installation that wrote this script ({py}); on another machine",
        "# export MULTISCALE_PYTHON=/path/to/your/venv/bin/python before sbatch (--export=ALL is SLURM's default).",
        f"# Watch: multiscale status {q(root_rel)}   Log: {out_pat}",
    ]
    return lines + ([threads] if threads else [])


def _setup_lines(config_rel, script_name, maxh, py, setup) -> list[str]:
    """Checks and environment of the job: the config is there, the Python imports multiscale."""
    from .. import __version__

    q = shlex.quote
    setup_lines = "\n".join(setup or []) or "# module load gromacs      # (add with: multiscale batch --setup 'module load gromacs')"
    return [
        "",
        "set -uo pipefail",
        "",
        "# work in this script's folder: SLURM runs a copy of the script, from the submit folder",
        'cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")}" || exit 2',
        f"CONFIG={q(config_rel)}",
        "if [[ ! -f $CONFIG ]]; then",
        f'  echo "error: $CONFIG not found in $(pwd): submit from the folder of this script (cd FOLDER && sbatch {script_name})" >&2',
        "  exit 2",
        "fi",
        f"MAXH={maxh}",
        f"MULTISCALE_PYTHON=${{MULTISCALE_PYTHON:-{q(py)}}}",
        "if ! \"$MULTISCALE_PYTHON\" -c 'import multiscale' 2>/dev/null; then",
        '  echo "error: $MULTISCALE_PYTHON cannot import multiscale: export MULTISCALE_PYTHON=/path/to/venv/bin/python (the multiscale install to use)" >&2',
        "  exit 2",
        "fi",
        f"WRITTEN_BY={q(__version__)}",
        'RUNNING=$("$MULTISCALE_PYTHON" -c "import multiscale; print(multiscale.__version__)")',
        'if [[ "$RUNNING" != "$WRITTEN_BY" ]]; then',
        '  echo "note: this script was written by multiscale $WRITTEN_BY; $MULTISCALE_PYTHON has $RUNNING"',
        "fi",
        'MULTISCALE=("$MULTISCALE_PYTHON" -m multiscale.cli)',
        "",
        "REPLICA=()",
        'if [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]]; then',
        '  REPLICA=(--replica "$SLURM_ARRAY_TASK_ID")     # own output folder and seeds per replica',
        "fi",
        "",
        "# --- environment ---",
        setup_lines,
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-${OMP_NUM_THREADS:-1}}"',
        "",
    ]


# the job's loop: run the cycle, requeue until `multiscale status --check` says done
_JOB_LOOP = [
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
    "# ${REPLICA[@]+...}: an empty array is an 'unbound variable' under set -u in bash < 4.4",
    'echo "$(date "+%F %T") job ${SLURM_JOB_ID:-local} on $(hostname): multiscale cycle --config $CONFIG in $(pwd)"',
    '"${MULTISCALE[@]}" cycle --config "$CONFIG" --maxh "$MAXH" --no-progress ${REPLICA[@]+"${REPLICA[@]}"} &',
    "PID=$!",
    'wait "$PID"',
    "rc=$?",
    "",
    'if "${MULTISCALE[@]}" status "$CONFIG" --check ${REPLICA[@]+"${REPLICA[@]}"}; then',
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


def config_inputs(cfg) -> list[Path]:
    """Every input file a sim.yaml names (the file itself, system files, model, mdp templates)."""
    s = cfg.system
    files = [cfg.source, s.aa_topology, s.aa_structure, s.cg_topology, s.cg_structure, cfg.backmap.model,
             *s.cg_includes, *s.mapping_files]
    for t in list(vars(cfg.mdp.aa).values()) + list(vars(cfg.mdp.cg).values()):
        if os.sep in str(t) or str(t).endswith(".mdp"):
            files.append(Path(t))
    return [Path(f) for f in files if f is not None]


def write_batch(args) -> int:
    """Handler of ``multiscale batch`` (argparse namespace)."""
    from ..config import load_config
    from ..io import atomic_write_text

    if args.scheduler != "slurm":
        raise MultiscaleError(f"--scheduler {args.scheduler}: only slurm is supported")
    cfg = load_config(args.config)
    config_path = cfg.source
    out = (Path(args.output) if args.output else config_path.parent / "run_multiscale.sbatch").resolve()
    from ..cli import refuse_inputs_as_outputs

    refuse_inputs_as_outputs({"--output": out}, config_inputs(cfg))
    if out.is_dir():
        raise MultiscaleError(f"--output {out} is a folder: give the script's file name, e.g. {out / 'run_multiscale.sbatch'}")
    text = render_slurm(cfg, config_path, time_limit=args.time, nodes=args.nodes, ntasks=args.ntasks,
                        cpus_per_task=args.cpus_per_task, gpus=args.gpus, partition=args.partition,
                        account=args.account, job_name=args.job_name, array=args.array, setup=args.setup,
                        margin_min=args.margin_min, script_path=out)
    atomic_write_text(out, text)
    os.chmod(out, out.stat().st_mode | ((out.stat().st_mode & 0o444) >> 2))  # +x where readable (umask kept)
    print(f"wrote {out}")
    if cfg.gromacs.nt or cfg.gromacs.ntomp:
        what = " and ".join(f"gromacs.{k}: {getattr(cfg.gromacs, k)}" for k in ("nt", "ntomp") if getattr(cfg.gromacs, k))
        print(f"note: {what} from {config_path.name} is used in the job too: remove it there to let mdrun use "
              "the job's cores (or keep it on purpose)")
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

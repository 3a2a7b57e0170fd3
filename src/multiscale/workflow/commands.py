"""Subcommands ``cycle``, ``status``, ``report``, ``batch`` and ``init`` for the ``multiscale`` CLI.

``multiscale.cli`` calls :func:`add_commands` with its subparsers; each parser sets
``func(args) -> int``.  Heavy imports happen inside the handlers.  Exit codes of ``cycle``:
0 finished, 3 stopped early (``--maxh`` budget or a signal: run again to continue), 2 error.
``status --check``: 0 all done, 1 not finished.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_commands", "main"]


def cmd_cycle(args) -> int:
    from .cycle import run_cycles

    progress = False if args.no_progress else None
    if args.dry_run:
        from .dryrun import dry_run

        return dry_run(args.config, replica=args.replica, force=args.force, redo_from=args.redo_from)
    return run_cycles(args.config, force=args.force, stop_after=args.stop_after, maxh=args.maxh,
                      replica=args.replica, progress=progress, argv=sys.argv, redo_from=args.redo_from)


def cmd_status(args) -> int:
    from .status import show_status

    return show_status(args.dir, replica=args.replica, check=args.check)


def cmd_report(args) -> int:
    from ..runreport.page import build_report

    out = build_report(args.run, reference=args.reference, reference_structure=args.reference_structure,
                       output=args.output, tail=args.tail, max_frames=args.max_frames, rdf_max=args.rdf_max,
                       log=None if args.quiet else (lambda text: print(f"  {text}", file=sys.stderr)))
    print(f"report: {out['html']} ({len(out['figures'])} figures; also report.md, report.json)")
    return 0


def cmd_batch(args) -> int:
    from .batch import write_batch

    return write_batch(args)


def cmd_init(args) -> int:
    from .init import init_example

    init_example(args.example, args.dir, force=args.force)
    return 0


def add_commands(subparsers) -> None:
    c = subparsers.add_parser(
        "cycle", help="run (or continue) the AA -> CG -> AA cycles of a sim.yaml",
        description="Run all cycles of sim.yaml; an interrupted run continues where it stopped "
                    "(finished stages are never redone; a killed mdrun continues from its checkpoint).")
    c.add_argument("--config", "-c", default="sim.yaml", help="the run configuration (default: ./sim.yaml)")
    c.add_argument("--force", action="store_true",
                   help="redo stages whose inputs (files, #includes, parameters) changed since they ran, and "
                        "every stage after them; also start over in a folder whose state.json was lost")
    c.add_argument("--redo-from", default=None, metavar="STAGE[@CYCLE]",
                   help="redo this stage and every stage after it, e.g. cg-md@2 or cycle_002/cg-md "
                        "(without @CYCLE: the first stage of that name)")
    c.add_argument("--dry-run", action="store_true",
                   help="check every input (files, topologies, mappings, templates, GROMACS) and print the plan "
                        "with what would run; runs nothing, writes nothing (exit code 1 when the run would stop at a changed input)")
    c.add_argument("--stop-after", default=None, metavar="STAGE",
                   help="stop after this stage: a key such as cycle_002/cg-md, or a name such as cg-md "
                        "(the next stage of that name that runs)")
    c.add_argument("--maxh", type=float, default=None,
                   help="wall-time budget in hours for this command: mdrun stops cleanly with a checkpoint "
                        "before it runs out (exit code 3: run again to continue)")
    c.add_argument("--replica", type=int, default=None,
                   help="replica number: output goes to OUTPUT/replica_N with its own seeds (job arrays)")
    c.add_argument("--no-progress", action="store_true", help="plain progress lines instead of a live display")
    c.set_defaults(func=cmd_cycle)

    s = subparsers.add_parser("status", help="show which stages of a run are done, running or left",
                              description="Stage table of an output root (or of the run of a sim.yaml).")
    s.add_argument("dir", nargs="?", default="sim.yaml", help="output root (or sim.yaml; default ./sim.yaml)")
    s.add_argument("--replica", type=int, default=None, help="replica number (OUTPUT/replica_N)")
    s.add_argument("--check", action="store_true",
                   help="print one line; exit code 0 when all stages are done, 1 when not (for batch scripts)")
    s.set_defaults(func=cmd_status)

    _add_report(subparsers)

    b = subparsers.add_parser(
        "batch", help="write a SLURM batch script that runs the cycles and requeues itself until done",
        description="Write a plain, readable SLURM script: it runs `multiscale cycle --maxh` below the wall "
                    "time and requeues itself until `multiscale status --check` says the run is done.")
    b.add_argument("--config", "-c", default="sim.yaml", help="the run configuration (default: ./sim.yaml)")
    b.add_argument("--scheduler", default="slurm", choices=["slurm"], help="batch system (slurm)")
    b.add_argument("--time", default="24:00:00", help="wall time per job, [D-]HH:MM:SS (default 24:00:00)")
    b.add_argument("--nodes", type=int, default=1, help="nodes per job (default 1)")
    b.add_argument("--ntasks", type=int, default=None, help="MPI ranks (use with gromacs.launcher: srun)")
    b.add_argument("--cpus-per-task", type=int, default=None, help="OpenMP threads per rank")
    b.add_argument("--gpus", type=int, default=None, help="GPUs per node")
    b.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's default)")
    b.add_argument("--account", default=None, help="SLURM account to charge (default: none given)")
    b.add_argument("--job-name", default=None, help="SLURM job name (default: ms-<folder of sim.yaml>)")
    b.add_argument("--array", type=int, default=None, metavar="N",
                   help="N independent replicas as a job array (OUTPUT/replica_0..N-1, distinct seeds)")
    b.add_argument("--setup", action="append", default=[], metavar="LINE",
                   help="shell line run before multiscale, e.g. 'module load gromacs' (repeatable)")
    from .batch import MARGIN_HELP

    b.add_argument("--margin-min", type=float, default=None, help=MARGIN_HELP.replace("%", "%%"))
    b.add_argument("--output", "-o", default=None, help="script file (default: run_multiscale.sbatch next to sim.yaml)")
    b.add_argument("--submit", action="store_true", help="submit the script with sbatch")
    b.set_defaults(func=cmd_batch)

    i = subparsers.add_parser("init", help="write a ready-to-run sim.yaml and its input files into DIR",
                              description="Copy an example system (structure, topologies, force-field files, "
                                          "mapping) into DIR with a sim.yaml that runs as is.")
    i.add_argument("dir", help="folder to create")
    i.add_argument("--example", default="heptanol", help="example system (default: heptanol)")
    i.add_argument("--force", action="store_true", help="write into DIR even if it is not empty")
    i.set_defaults(func=cmd_init)


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: must be within (0, 1]")
    return v


def _positive(kind):
    def conv(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
        if not v > 0 or v != v or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{text[:40]!r}: must be a finite number > 0")
        return v

    conv.__name__ = kind.__name__
    return conv


def _add_report(subparsers) -> None:
    r = subparsers.add_parser(
        "report", help="per-cycle tables and figures of a run (density, energy, RDFs, H-bonds, box, backmap, wall times)",
        description="Analyse every finished AA (and CG) segment of a run against the first AA segment or a given AA "
                    "reference; write RUN/report/report.md, report.html, report.json and PNG figures "
                    "(definitions: docs/report.md).")
    r.add_argument("run", nargs="?", default="sim.yaml", help="output root of a run (or its sim.yaml; default ./sim.yaml)")
    r.add_argument("--reference", default=None, metavar="AA.xtc",
                   help="AA reference trajectory of the same system (default: the run's first AA production segment); "
                        "an AA.edr next to it gives the reference energies")
    r.add_argument("--reference-structure", default=None, metavar="AA.gro",
                   help="structure file of --reference (default: the run's first AA segment's .gro)")
    r.add_argument("--output", "-o", default=None, metavar="DIR", help="report folder (default: RUN/report; replaced as a whole)")
    r.add_argument("--tail", type=_fraction, default=0.5,
                   help="fraction of each segment's trajectory analysed, from its end (default 0.5)")
    r.add_argument("--max-frames", type=_positive(int), default=20,
                   help="at most this many frames per segment, evenly spaced (default 20)")
    r.add_argument("--rdf-max", type=_positive(float), default=1.5, help="largest RDF distance in nm (default 1.5; "
                                                                          "capped below half the smallest box width)")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    r.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m multiscale.workflow.commands ...``) with the CLI's error handling."""
    import os

    from ..errors import MultiscaleError

    os.environ.setdefault("GROMACSWRAPPER_SUPPRESS_SETUP_CHECK", "1")
    p = argparse.ArgumentParser(prog="multiscale")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_commands(sub)
    args = p.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MultiscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

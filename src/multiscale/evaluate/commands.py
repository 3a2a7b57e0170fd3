"""CLI: ``multiscale evaluate`` (imports of the heavy modules happen inside the handler)."""

from __future__ import annotations

import sys

__all__ = ["add_commands"]

_EPILOG = """\
examples:
  multiscale evaluate --cg cg.gro --mapping hpo.map --topology aa.top --reference ref.xtc \\
      --reference-structure ref.gro --candidate ours=backmapped.gro --baseline rigid --baseline random \\
      --output eval/
  multiscale evaluate ... --candidate tool=out.gro --run "tool -c cg.gro -o out.gro"   # timed

Writes DIR/report.json (schema_version, one entry per candidate), DIR/report.md and DIR/plots/.
Criteria and units: docs/evaluate.md.
"""


def _named(values, names, flag, convert=str):
    """Parse repeated 'VALUE' / 'NAME=VALUE' options into {candidate name: value}."""
    out = {}
    from ..errors import MultiscaleError

    for v in values or []:
        name, val = None, v
        if "=" in v and v.split("=", 1)[0] in names:
            name, val = v.split("=", 1)
        elif len(names) >= 1:
            name = names[0]
            if len(names) > 1:
                raise MultiscaleError(f"{flag} {v!r}: several candidates given, write {flag} NAME=VALUE with NAME one of {', '.join(names)}")
        else:
            raise MultiscaleError(f"{flag} needs a --candidate to apply to")
        try:
            out[name] = convert(val)
        except ValueError:
            raise MultiscaleError(f"{flag} {v!r}: {val!r} is not a number") from None
    return out


def _handler(args) -> int:
    from .run import evaluate, parse_candidate

    cands = {}
    from ..errors import MultiscaleError

    for spec in args.candidate or []:
        name, s, t = parse_candidate(spec)
        if name in cands:
            raise MultiscaleError(f"--candidate name {name!r} given twice")
        cands[name] = (s, t)
    names = list(cands)
    log = (lambda m: print(f"[evaluate] {m}", file=sys.stderr)) if not args.quiet else None
    report = evaluate(
        cg=args.cg, cg_trajectory=args.cg_trajectory, mapping=args.mapping if len(args.mapping) != 1 else args.mapping[0],
        topology=args.topology, reference=args.reference, reference_structure=args.reference_structure,
        candidates=cands, baselines=args.baseline or [], output=args.output, seed=args.seed,
        energy=not args.no_energy, run=_named(args.run, names, "--run"),
        time_s=_named(args.time_s, names, "--time-s", float), peak_mem_mb=_named(args.peak_mem_mb, names, "--peak-mem-mb", float),
        reference_max_frames=args.reference_max_frames, plots=not args.no_plots, log=log,
        water_grouping=_named(args.water_grouping, names, "--water-grouping"),
    )
    from .report import HEADLINE_KEYS, _show

    cands_out = report["candidates"]
    width = max([len(label) for _, label, _ in HEADLINE_KEYS])
    print(f"{'':{width}}  " + "  ".join(f"{n:>14}" for n in cands_out))
    for key, label, f in HEADLINE_KEYS:
        print(f"{label:{width}}  " + "  ".join(f"{_show(key, c.get(key), f):>14}" for c in cands_out.values()))
    print(f"report: {args.output}/report.md")
    return 0


def add_commands(subparsers) -> None:
    """Add the ``evaluate`` subcommand to an argparse subparsers object."""
    import argparse

    from ..cli import nonneg_int, positive_int

    p = subparsers.add_parser(
        "evaluate",
        help="compare backmapping outputs (any tool) against an AA reference",
        description="Standardised, tool-independent evaluation of backmapped (CG -> AA) structures: "
                    "Boltzmann fidelity (JSD/Wasserstein per bond/angle/torsion), CG consistency, "
                    "stereochemistry, sterics, GROMACS energetics and cost.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cg", required=True, metavar="CG.gro", help="CG structure that was backmapped (multi-frame .gro = trajectory)")
    p.add_argument("--cg-trajectory", metavar="CG.xtc", help="CG trajectory (frames backmapped one to one)")
    p.add_argument("--mapping", action="append", default=[], metavar="FILE.map",
                   help="mapping file(s) (.map or .yaml); repeatable; optional where built-in mappings cover every molecule")
    p.add_argument("--topology", required=True, metavar="AA.top|AA.tpr", help="atomistic topology")
    p.add_argument("--reference", metavar="REF.xtc", help="AA reference ensemble of the same system (.xtc/.trr, or .gro)")
    p.add_argument("--reference-structure", metavar="REF.gro",
                   help="structure giving the reference trajectory's atom names (a bare .xtc is read in topology order); "
                        "alone: stereo reference and rigid conformer")
    p.add_argument("--candidate", action="append", metavar="NAME=PATH[,TRAJ]", help="a backmapped structure/trajectory to evaluate; repeatable")
    p.add_argument("--baseline", action="append", choices=["rigid", "random"], help="add a built-in baseline; repeatable")
    p.add_argument("--output", required=True, metavar="DIR", help="report folder")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for baselines, bootstrap and GROMACS (default 0)")
    p.add_argument("--no-energy", action="store_true", help="skip the GROMACS criteria")
    p.add_argument("--run", action="append", metavar="[NAME=]CMD", help="run CMD (shell) to produce the candidate, timing it and measuring peak memory")
    p.add_argument("--time-s", action="append", metavar="[NAME=]SECONDS", help="backmapping wall time as supplied")
    p.add_argument("--peak-mem-mb", action="append", metavar="[NAME=]MIB", help="backmapping peak memory as supplied")
    p.add_argument("--reference-max-frames", type=positive_int, default=None, metavar="N",
                   help="use at most N evenly spaced reference frames (default: every frame given)")
    p.add_argument("--no-plots", action="store_true", help="skip PNG plots")
    p.add_argument("--water-grouping", action="append", metavar="[NAME=]order|assignment",
                   help="how the candidate's water is scored against the W beads: 'order' = its waters are written "
                        "bead by bead (n per W bead, in CG order: the tool's own grouping, e.g. multiscale backmap); "
                        "default 'assignment' = optimal matching of waters to beads")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_handler)

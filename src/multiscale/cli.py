"""multiscale: sequential multiscale MD, Martini 3 CG <-> atomistic, with learned backmapping.

The ``multiscale`` command line.

Each subcommand is a thin shell around a library function; heavy imports (torch, MDAnalysis,
GromacsWrapper) happen inside the handlers so ``multiscale --help`` is instant.  Errors a user
can fix are printed as one line, ``error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import __version__
from .errors import MultiscaleError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: PROG: what (see PROG --help)``, exit 2), like every
    other user error of the command line; subcommand parsers inherit it."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see '{self.prog} --help')\n")


def _number(kind, low, inclusive=True, what=""):
    """argparse type: a finite ``kind`` (int/float) >= low (> low when not inclusive)."""
    def conv(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if v != v or v in (float("inf"), float("-inf")) or (v < low if inclusive else v <= low):
            raise argparse.ArgumentTypeError(f"{text[:40]!r}: must be a {'finite number' if kind is float else 'whole number'} "
                                             f"{'>=' if inclusive else '>'} {low}{what}")
        return v

    conv.__name__ = kind.__name__
    return conv


nonneg_int = _number(int, 0)
positive_int = _number(int, 0, inclusive=False)

# what each command may write, by suffix
_STRUCTURE_OUT = (".gro", ".pdb", ".xtc", ".trr")


def _check_outputs(outputs: dict) -> None:
    """Refuse before any work an output with an unsupported suffix or in a folder that cannot be
    written.  ``outputs``: {flag: (path or None, allowed suffixes or None)}."""
    for flag, (path, suffixes) in outputs.items():
        if not path:
            continue
        out = Path(path)
        if suffixes and out.suffix.lower() not in suffixes:
            raise MultiscaleError(f"{flag} {out}: unsupported file type {out.suffix or '(none)'!r}: use one of {', '.join(suffixes)}")
        parent = out.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        why = ("it is a folder" if out.is_dir() else f"{parent} is not a folder" if not parent.is_dir()
               else f"folder {parent} is not writable" if not os.access(parent, os.W_OK | os.X_OK) else None)
        if why:
            raise MultiscaleError(f"{flag} {out}: cannot write there ({why}): choose a writable file path")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file: same resolved path, or same inode (hard links)."""
    try:
        if Path(a).resolve() == Path(b).resolve():
            return True
        return Path(a).exists() and Path(b).exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_inputs_as_outputs(outputs: dict, inputs) -> None:
    """Raise a one-line MultiscaleError when an output path ({option: path}, None skipped) is
    one of the ``inputs`` (or two outputs are the same file): nothing is written over an input."""
    ins = [Path(p) for p in inputs if p is not None]
    outs = [(k, Path(v)) for k, v in outputs.items() if v is not None]
    for i, (opt, out) in enumerate(outs):
        for inp in ins:
            if _same_file(out, inp):
                raise MultiscaleError(f"{opt} {out} is also an input of this command ({inp}): it would be overwritten; "
                                      "write the output to another file")
        for opt2, out2 in outs[i + 1:]:
            if _same_file(out, out2):
                raise MultiscaleError(f"{opt} and {opt2} name the same file {out}: give them different paths")


def _aa_inputs(args) -> list:
    return [args.topology, args.structure, args.trajectory, *(args.mapping or []), *(getattr(args, "include", None) or []),
            getattr(args, "init", None)]


def _frames_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", type=nonneg_int, default=0, help="first frame (0-based)")
    p.add_argument("--stop", type=nonneg_int, default=None, help="stop before this frame")
    p.add_argument("--step", type=positive_int, default=1, help="use every STEP-th frame")


def _aa_system_args(p: argparse.ArgumentParser, trajectory_required: bool = False) -> None:
    p.add_argument("--topology", required=True, help="AA topology (.top, includes resolved as grompp does; or .tpr)")
    p.add_argument("--structure", required=True, help="AA structure (.gro/.pdb); a multi-frame .gro is a trajectory")
    p.add_argument("--trajectory", required=trajectory_required, default=None, help="AA trajectory (.xtc/.trr)")
    p.add_argument("--mapping", action="append", default=[],
                   help="mapping file (.map or .yaml); repeat for several. Optional where built-in mappings cover every "
                        "molecule (water, ions, amino-acid chains via martinize2, shipped lipids)")


def _load_aa(args):
    """Topology, checked mapping and frames named by the common AA arguments."""
    from .io import read_frames
    from .preflight import load_checked_mapping
    from .topology import load_topology

    top = load_topology(args.topology)
    # pre-flight: mapping <-> topology <-> CG itps (--include; bead order taken from them), masses/charges
    mapping = load_checked_mapping(args.mapping, top, getattr(args, "include", None) or [])
    frames = read_frames(args.structure, args.trajectory, start=args.start, stop=args.stop, step=args.step,
                         expected_atoms=top.n_atoms)
    return top, mapping, frames


def cmd_coarse_grain(args) -> int:
    from .coarse_grain import cg_names, coarse_grain, write_cg_topology
    from .io import write_frames

    refuse_inputs_as_outputs({"--output": args.output, "--cg-topology": args.cg_topology}, _aa_inputs(args))
    _check_outputs({"--output": (args.output, _STRUCTURE_OUT), "--cg-topology": (args.cg_topology, (".top",))})
    top, mapping, frames = _load_aa(args)
    layout = None
    if args.go:
        from .classes.chain import chain_names, with_go_sites
        from .coarse_grain import cg_layout

        layout = cg_layout(top, mapping)
        chains = chain_names(layout)
        if not chains:
            raise MultiscaleError(f"--go: {args.topology} has no amino-acid chain to put Go virtual sites on: drop --go")
        layout = with_go_sites(layout, chains)
    t0 = time.perf_counter()
    cg = coarse_grain(frames.positions, frames.box, top, mapping, seed=args.seed, layout=layout)
    dt = time.perf_counter() - t0
    names, resnames, resids = cg_names(cg.layout)
    pos = cg.positions if frames.n_frames > 1 or Path(args.output).suffix != ".gro" else cg.positions[0]
    write_frames(args.output, pos, cg.box, names, resnames, resids, times=frames.times)
    if args.cg_topology:
        write_cg_topology(args.cg_topology, cg.layout, args.include or [])
    print(f"coarse-grained {frames.n_frames} frame(s): {top.n_atoms} atoms -> {cg.positions.shape[1]} beads "
          f"({', '.join(f'{b.cg_name} x{b.count}' for b in cg.layout)}) in {dt:.2f} s -> {args.output}"
          + (f"; {cg.water_beads_moved} W bead(s) moved off other beads" if cg.water_beads_moved else ""))
    return 0


def cmd_train(args) -> int:
    from .backmap.engine import load_model, train

    refuse_inputs_as_outputs({"--output": args.output}, _aa_inputs(args))
    _check_outputs({"--output": (args.output, None)})
    top, mapping, frames = _load_aa(args)
    init = load_model(args.init, top) if args.init else None
    prov = {"topology": str(args.topology), "structure": str(args.structure),
            "trajectory": str(args.trajectory) if args.trajectory else None, "n_frames": frames.n_frames}
    t0 = time.perf_counter()
    kwargs = {"seed": args.seed, "init": init, "device": args.device, "provenance": prov}
    if args.epochs is not None:
        kwargs["epochs"] = args.epochs
    model = train(top, mapping, frames, **kwargs)
    model.save(args.output)
    print(f"trained on {frames.n_frames} frame(s) in {time.perf_counter() - t0:.1f} s -> {args.output}")
    return 0


def cmd_backmap(args) -> int:

    from .backmap.engine import backmap, load_model
    from .backmap.shipped import shipped_models
    from .classes.chain import match_go_sites
    from .coarse_grain import cg_layout, check_cg_beads
    from .io import atomic_write_text, read_frames, write_frames
    from .topology import load_topology

    _check_backmap_args(args)
    _check_outputs({"--output": (args.output, _STRUCTURE_OUT), "--report": (args.report, None)})
    top = load_topology(args.topology)
    model = load_model(args.model, top) if args.model else shipped_models(top)
    frames = read_frames(args.cg, args.cg_trajectory, start=args.start, stop=args.stop, step=args.step, label="CG structure")
    layout = match_go_sites(cg_layout(top, model.mapping), frames.names)  # martinize2 -go output: its CA sites
    check_cg_beads(frames.n_atoms, layout, args.cg_trajectory or args.cg)
    t0 = time.perf_counter()
    aa, reports = backmap(model, top, frames.positions, frames.box, seed=args.seed, device=args.device,
                          wrap=args.wrap, candidates=args.candidates, max_retries=args.max_retries, layout=layout)
    dt = time.perf_counter() - t0
    names, resnames, resids = top.per_atom("atom_names"), top.per_atom("resnames"), top.atom_resids()
    out = Path(args.output)
    pos = aa[0] if (aa.shape[0] == 1 and out.suffix in (".gro", ".pdb")) else aa
    write_frames(out, pos, frames.box, names, resnames, resids, times=frames.times)
    if args.posre_dir:
        from .backmap.restraints import write_posre_itp

        for mt in top.moltypes.values():
            if not mt.is_water:
                write_posre_itp(mt, Path(args.posre_dir) / f"posre_{mt.name}.itp", force_constant=args.posre_fc)
    if args.report:
        import json

        atomic_write_text(args.report, json.dumps([r.to_dict() if hasattr(r, "to_dict") else r for r in reports], indent=1))
    nmol = sum(b.count for b in top.blocks)
    print(f"backmapped {frames.n_frames} frame(s), {top.n_atoms} atoms ({nmol} molecules) in {dt:.2f} s "
          f"({1000 * dt / max(1, nmol * frames.n_frames):.3f} ms/molecule) -> {out}")
    for r in reports[:1]:
        if hasattr(r, "summary"):
            print(r.summary())
    return 0


def cmd_topology(args) -> int:
    from .chains.from_cg import system_topology

    refuse_inputs_as_outputs({"--output": args.output}, [p for p in (args.cg, args.cg_topology) if p])
    if Path(args.output).suffix != ".top":
        raise MultiscaleError(f"--output {args.output}: give a .top file name")
    _, what = system_topology(args.output, cg=args.cg, cg_topology=args.cg_topology, forcefield=args.forcefield,
                              water=args.water)
    print(f"AA topology of {what} -> {args.output}")
    return 0


def _check_backmap_args(args) -> None:
    """Everything about backmap's outputs that can be checked before anything is written."""
    import math

    inputs = [args.cg, args.cg_trajectory, args.model, args.topology]
    refuse_inputs_as_outputs({"--output": args.output, "--report": args.report}, inputs)
    if args.posre_dir:
        d = Path(args.posre_dir)
        if d.exists() and not d.is_dir():
            raise MultiscaleError(f"--posre-dir {d} is a file, not a folder: give a folder for the posre_<moltype>.itp files")
        if any(_same_file(Path(p).parent, d) and Path(p).name.startswith("posre_") for p in inputs if p):
            raise MultiscaleError(f"--posre-dir {d} holds an input posre_*.itp that would be overwritten: use another folder")
    if not math.isfinite(args.posre_fc) or args.posre_fc <= 0:
        raise MultiscaleError(f"--posre-fc must be a positive force constant in kJ/mol/nm^2, got {args.posre_fc}")
    for opt, p in (("--output", args.output), ("--report", args.report)):
        if p and Path(p).is_dir():
            raise MultiscaleError(f"{opt} {p} is a folder: give a file name")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="multiscale", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--version", action="version", version=f"multiscale {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser("coarse-grain", help="map an AA structure/trajectory onto Martini beads",
                       description="Map an AA structure or trajectory onto Martini beads: molecules are made whole, "
                                   "beads placed at the mapping's weighted centres, 4 waters grouped into each W bead.")
    _aa_system_args(c)
    c.add_argument("--output", required=True, help="CG structure/trajectory to write (.gro/.pdb/.xtc)")
    c.add_argument("--cg-topology", default=None, help="also write a CG .top with these [ molecules ]")
    c.add_argument("--include", action="append",
                   help="itp to #include in the CG .top (repeat); the mapping's bead order is checked against (and taken from) it")
    c.add_argument("--seed", type=nonneg_int, default=0, help="seed of the water grouping")
    c.add_argument("--go", action="store_true",
                   help="also write martinize2's Go-model virtual sites: one CA bead per residue after each chain's "
                        "beads, on its BB bead (for a CG topology from martinize2 -go)")
    _frames_args(c)
    c.set_defaults(func=cmd_coarse_grain)

    t = sub.add_parser("train", help="train a backmapping model on AA frames",
                       description="Train (or with --init fine-tune) a backmapping model, one per molecule type, "
                                   "on AA frames of the system; the frames are coarse-grained with the mapping first.")
    _aa_system_args(t)
    t.add_argument("--output", required=True, help="model file to write (.pt)")
    t.add_argument("--init", default=None, help="continue training (fine-tune) this model")
    t.add_argument("--include", action="append",
                   help="CG .itp defining the Martini moleculetype(s) (repeat): the mapping's bead order is checked against it")
    t.add_argument("--seed", type=nonneg_int, default=0,
                   help="seed of every random step (weights, batches, noise, water bank); same seed and data, same model (default 0)")
    t.add_argument("--epochs", type=positive_int, default=None,
                   help="passes over the training data per molecule type (default: about 2000 optimiser steps, 3-300 epochs)")
    t.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ...")
    _frames_args(t)
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("backmap", help="reconstruct atoms from a CG structure/trajectory",
                       description="Reconstruct every atom of the AA topology from CG beads with a trained model; "
                                   "each frame is certified (CG consistency, stereochemistry, clashes) and repaired "
                                   "by resampling until it passes.")
    b.add_argument("--cg", required=True, help="CG structure (.gro/.pdb; a multi-frame .gro is a trajectory)")
    b.add_argument("--cg-trajectory", default=None, help="CG trajectory: every frame is backmapped")
    b.add_argument("--model", default=None,
                   help="model file from `multiscale train` (default: the shipped models: amino-acid chains, water, ions)")
    b.add_argument("--topology", required=True, help="AA topology (.top or .tpr): output atom order")
    b.add_argument("--output", required=True, help="AA structure/trajectory to write (.gro/.pdb/.xtc)")
    b.add_argument("--seed", type=nonneg_int, default=0, help="seed of the sampling; same seed, same structure (default 0)")
    b.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default cpu)")
    b.add_argument("--posre-dir", default=None, help="write posre_<moltype>.itp heavy-atom restraint includes here")
    b.add_argument("--posre-fc", type=float, default=1000.0, help="restraint force constant, kJ/mol/nm^2")
    b.add_argument("--report", default=None, help="write the certificate report (JSON) here")
    b.add_argument("--wrap", action="store_true", help="wrap atoms into the box (default: molecules kept whole)")
    b.add_argument("--candidates", type=positive_int, default=None,
                   help="samples drawn per molecule up front to pick a clash-free one (default: 1 for 1-2 bead "
                        "molecules, 2 for larger ones)")
    b.add_argument("--max-retries", type=nonneg_int, default=5, help="resampling rounds for molecules failing a certificate")
    _frames_args(b)
    b.set_defaults(func=cmd_backmap)

    tp = sub.add_parser("topology", help="write the AA topology of a CG system (protein from its sequence, water, ions)",
                        description="From a Martini CG structure alone: the protein's sequence is read from the beads, "
                                    "its AA topology written by gmx pdb2gmx; each W bead becomes 4 waters, each ion one "
                                    "ion, in the CG file's order. Then: multiscale backmap --cg CG --topology AA.top.")
    tp.add_argument("--cg", default=None, help="CG structure (.gro/.pdb; martinize2 residue names): proteins in water")
    tp.add_argument("--output", required=True, help="AA topology to write (.top; NAME_protein.itp and posre_NAME.itp next to it)")
    tp.add_argument("--forcefield", default="amber99sb-ildn",
                    help="amber99sb-ildn (default) or charmm36m for proteins; membranes (--cg-topology) are CHARMM36")
    tp.add_argument("--water", default="tip3p", help="pdb2gmx water model (default tip3p)")
    tp.add_argument("--cg-topology", default=None, help="CG .top of a Martini membrane system (insane): lipids with a "
                    "mapping file, W, ions -> CHARMM36 (lipid itps copied next to --output)")
    tp.set_defaults(func=cmd_topology)

    for mod in ("multiscale.workflow.commands", "multiscale.evaluate.commands", "multiscale.molecule.command"):
        try:
            m = __import__(mod, fromlist=["add_commands"])
        except ImportError as e:
            if e.name != mod:
                raise
            continue
        m.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GROMACSWRAPPER_SUPPRESS_SETUP_CHECK", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MultiscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``multiscale molecule NAME --smiles SMILES --mapping FILE.map --output DIR``: one command from
a SMILES string and a Martini 3 mapping to a trained model and a ready CG <-> AA cycle.

Pre-flight first (:mod:`.prepare`, seconds: every input checked, topologies and the box
written), then the stages of :mod:`.pipeline` through the cycle driver.  Running the same command
again continues where it stopped; other arguments on a prepared folder are refused unless
``--force`` (which starts the folder over).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import yaml

from ..errors import MultiscaleError
from ..io import atomic_write_text

__all__ = ["add_commands", "cmd_molecule", "OWNED"]

GENERATE = "generate.yaml"
# everything the command writes into DIR (what --force removes; nothing else is touched)
OWNED = ("molecule.json", GENERATE, "sim.yaml", "model.pt", "aa.gro", "report.md", "report.json", "aa.top", "cg.top",
         "box.gro", "prep", "data", "topologies")


def add_commands(sub) -> None:
    from ..cli import _number, positive_int

    positive = _number(float, 0, inclusive=False)
    m = sub.add_parser("molecule", help="SMILES + Martini 3 mapping -> topologies, training data, model, ready cycle",
                       description="Build everything a CG <-> AA cycle of a new molecule needs: GAFF2/AM1-BCC topology "
                                   "(acpype) with the mapping's atom names (graph isomorphism), the Martini 3 model "
                                   "(vermouth's library or --cg-itp), a solvated box, AA MD (EM, NVT, NPT, production), "
                                   "a trained model scored on a held-out window, and sim.yaml. Run again to continue.")
    m.add_argument("name", help="molecule (residue and moleculetype) name, 1-5 characters, e.g. TOLU")
    m.add_argument("--smiles", required=True, help="the molecule's SMILES (stereo as written is kept)")
    m.add_argument("--mapping", required=True,
                   help="Martini 3 mapping (.map, backward/vermouth format) or vermouth:NAME for vermouth's martini3001 map")
    m.add_argument("--output", required=True, help="folder to write (created)")
    m.add_argument("--itp", default=None, help="your AA topology of the molecule (.itp with [ atomtypes ], AMBER-style defaults) "
                                                "instead of acpype's GAFF2")
    m.add_argument("--cg-itp", default=None, help="your Martini 3 model (.itp) instead of vermouth's library")
    m.add_argument("--ps", type=positive, default=100.0, help="AA production length, ps (default 100; the last 20%% is held out)")
    m.add_argument("--seed", type=int, default=2024, help="seed of every random step (default 2024)")
    m.add_argument("--count", type=positive_int, default=24, help="molecules in the box (default 24)")
    m.add_argument("--water", type=int, default=700, help="TIP3P waters, a multiple of 4; 0 for the neat liquid (default 700)")
    m.add_argument("--box", type=positive, default=3.2, help="cubic box edge before NPT, nm (default 3.2)")
    m.add_argument("--nt", type=int, default=None, help="mdrun threads (default: GROMACS decides)")
    m.add_argument("--maxh", type=positive, default=None, help="wall-time budget in hours (stops cleanly; run again)")
    m.add_argument("--force", action="store_true", help="start the folder over (removes only what this command wrote)")
    m.set_defaults(func=cmd_molecule)


def _generate_config(req, nt) -> dict:
    return {"output": "data", "cycles": 1, "start": "aa", "seed": req.seed,
            "system": {"aa_topology": "aa.top", "aa_structure": "box.gro", "cg_topology": "cg.top", "mappings": [f"{req.name}.map"]},
            "aa": {"dt": 0.002, "em_steps": 5000, "emtol": 500, "eq": "5 ps", "md": f"{req.ps:g} ps", "output_every": "0.5 ps",
                   "energy_every": "1 ps"},
            "backmap": {"train_from_cycle": 1},
            "gromacs": {"nt": nt} if nt else {}}


def _clean(out: Path) -> None:
    for name in OWNED:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for p in out.glob("*.itp"):
        p.unlink()
    for p in list(out.glob("*.map")) + list(out.glob("*.gro")):
        p.unlink()


def cmd_molecule(args) -> int:
    from ..workflow.cycle import run_cycles
    from .pipeline import molecule_pipeline
    from .prepare import MoleculeRequest, prepare, prepared

    out = Path(args.output).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise MultiscaleError(f"--output {out} is a file: give a folder")
    req = MoleculeRequest(name=args.name, smiles=args.smiles, mapping=args.mapping, output=out,
                          itp=Path(args.itp) if args.itp else None, cg_itp=Path(args.cg_itp) if args.cg_itp else None,
                          ps=args.ps, seed=args.seed, count=args.count, n_water=args.water, box=args.box)
    if args.water < 0:
        raise MultiscaleError(f"--water {args.water}: give 0 (neat) or a positive multiple of 4")
    if args.force and out.is_dir():
        _clean(out)
    t0 = time.perf_counter()
    rec = prepared(req)
    if rec is None:
        if out.is_dir() and not (out / "prep").is_dir() and any(p.name in OWNED for p in out.iterdir()):
            raise MultiscaleError(f"{out} holds files this command would overwrite ({', '.join(p.name for p in out.iterdir() if p.name in OWNED)}): "
                                  "use a new --output folder, or add --force")
        rec = prepare(req, settings=None, log=lambda m: print(m, file=sys.stderr))
        print(f"prepared {args.name} ({rec['smiles_formula']}, {rec['atoms']} atoms -> {len(rec['beads'])} beads): "
              f"{rec['molecules']} molecules + {rec['waters']} waters in {time.perf_counter() - t0:.1f} s -> {out}")
    gen = out / GENERATE
    if not gen.is_file():
        atomic_write_text(gen, "# data generation of `multiscale molecule` (stages: multiscale status data)\n"
                          + yaml.safe_dump(_generate_config(req, args.nt), sort_keys=False))
    code = run_cycles(gen, maxh=args.maxh, pipeline=molecule_pipeline, argv=sys.argv)
    if code == 0:
        print(f"model {out / 'model.pt'}; report {out / 'report.md'}; run the cycle: cd {out} && multiscale cycle")
    return code

#!/usr/bin/env python3
"""Build an example: heptan-1-ol (HPO, GAFF2) in TIP3P water (optionally with NaCl, in a rhombic
dodecahedron), briefly equilibrated.

    python scripts/build_heptanol_example.py [--n-hpo 40] [--n-water 700] [--box 3.2] ...
    python scripts/build_heptanol_example.py --shape dodecahedron --box 4.0 --salt 0.15 \
        --out src/multiscale/data/examples/heptanol_nacl   # the ions + triclinic example

Steps (real GROMACS, via multiscale.gromacs): gmx insert-molecules (HPO.gro) -> [gmx editconf
-bt dodecahedron] -> gmx solvate (-cs spc216.gro) -> remove random waters down to --n-water (a
multiple of 4, so that every Martini W bead stands for 4 waters; with --salt, --n-water is the
count after the ions replaced waters and defaults to the largest multiple of 4 that fits) ->
[waters far from HPO replaced by NA/CL at their oxygens] -> EM (flexible water) -> NVT -> NPT
(c-rescale, isotropic; 200 ps by default, long enough for the density to settle).

Writes into --out (default src/multiscale/data/examples/heptanol): aa.gro (equilibrated, molecules whole, nm),
aa.top (includes with paths relative to its folder), cg.top (Martini 3 topology with the same
HPO count and n_water/4 W beads), build_info.json (composition, box, energies, timings).
Intermediate files and GROMACS logs stay in --workdir (default: a new temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from multiscale.gromacs import (  # noqa: E402
    GromacsSettings,
    count_warnings,
    em_result,
    final_energies,
    grompp,
    mdrun,
    render_mdp,
    run_tool,
)
from multiscale.gromacs.mdp import atomic_write_text  # noqa: E402

DATA = ROOT / "src" / "multiscale" / "data"  # package data (multiscale.paths)
TOPO = DATA / "topologies"


# ---- .gro helpers (fixed columns, nm) ----------------------------------------------------------
def read_gro(path: Path):
    lines = Path(path).read_text().splitlines()
    n = int(lines[1])
    atoms = []
    for l in lines[2 : 2 + n]:
        atoms.append((int(l[0:5]), l[5:10].strip(), l[10:15].strip(), l[20:].rstrip()))
    return lines[0], atoms, lines[2 + n]


def write_gro(path: Path, title: str, atoms, box: str) -> None:
    out = [title, f"{len(atoms):5d}"]
    resid_new, last = 0, None
    for i, (resid, resname, name, rest) in enumerate(atoms, start=1):
        if (resid, resname) != last:
            resid_new += 1
            last = (resid, resname)
        out.append(f"{resid_new % 100000:5d}{resname:<5s}{name:>5s}{i % 100000:5d}{rest}")
    out.append(box)
    atomic_write_text(path, "\n".join(out) + "\n")


def residues(atoms):
    groups: list[list] = []
    last = None
    for a in atoms:
        key = (a[0], a[1])
        if key != last:
            groups.append([])
            last = key
        groups[-1].append(a)
    return groups


# ---- topologies -------------------------------------------------------------------------------
def rel(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)


def aa_top_text(top_dir: Path, n_hpo: int, n_water: int, n_ion: int = 0) -> str:
    inc = lambda p: f'#include "{rel(p, top_dir)}"'  # noqa: E731
    ions = n_ion > 0
    return "\n".join(
        [
            f"; Heptan-1-ol (GAFF2, AM1-BCC) in TIP3P water{' with NaCl (Joung-Cheatham)' if ions else ''}."
            " Built by scripts/build_heptanol_example.py.",
            "; Includes are relative to this file's folder.",
            "",
            "[ defaults ]",
            "; nbfunc  comb-rule  gen-pairs  fudgeLJ  fudgeQQ",
            "  1       2          yes        0.5      0.8333",
            "",
            inc(TOPO / "heptanol" / "HPO_atomtypes.itp"),
            inc(TOPO / "water" / "tip3p_atomtypes.itp"),
            *([inc(TOPO / "ions" / "ions_jc_tip3p_atomtypes.itp")] if ions else []),
            "",
            inc(TOPO / "heptanol" / "HPO.itp"),
            inc(TOPO / "water" / "tip3p.itp"),
            *([inc(TOPO / "ions" / "ions_jc_tip3p.itp")] if ions else []),
            "",
            "[ system ]",
            f"heptan-1-ol in TIP3P water{' with NaCl' if ions else ''}",
            "",
            "[ molecules ]",
            f"HPO  {n_hpo}",
            f"SOL  {n_water}",
            *([f"NA   {n_ion}", f"CL   {n_ion}"] if ions else []),
            "",
        ]
    )


def cg_top_text(top_dir: Path, n_hpo: int, n_w: int, n_ion: int = 0) -> str:
    inc = lambda p: f'#include "{rel(p, top_dir)}"'  # noqa: E731
    m3 = TOPO / "martini3"
    return "\n".join(
        [
            "; Heptan-1-ol in water, Martini 3.0.0 (HPO = beads C1 R2; W = 4 waters).",
            "; Built by scripts/build_heptanol_example.py. Includes are relative to this file's folder.",
            "",
            inc(m3 / "martini_v3.0.0.itp"),
            inc(m3 / "martini_v3.0.0_solvents_v1.itp"),
            inc(m3 / "martini_v3.0.0_ions_v1.itp"),
            "",
            "[ system ]",
            "heptan-1-ol in water (Martini 3)",
            "",
            "[ molecules ]",
            f"HPO  {n_hpo}",
            f"W    {n_w}",
            *([f"NA   {n_ion}", f"CL   {n_ion}"] if n_ion else []),
            "",
        ]
    )


def check_whole(gro: Path, max_bond: float = 0.2) -> float:
    """Largest intramolecular distance to the residue's first atom over HPO/SOL (nm)."""
    _title, atoms, _box = read_gro(gro)
    worst = 0.0
    for res in residues(atoms):
        xyz = np.array([[float(a[3][c : c + 8]) for c in (0, 8, 16)] for a in res])
        worst = max(worst, float(np.linalg.norm(xyz - xyz[0], axis=1).max()))
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-hpo", type=int, default=40, help="heptan-1-ol molecules (default 40)")
    ap.add_argument("--n-water", type=int, default=None,
                    help="TIP3P waters, multiple of 4 (default 700; with --salt: all that fit, rounded down to 4)")
    ap.add_argument("--box", type=float, default=3.2, help="cubic box edge / dodecahedron image distance, nm (default 3.2)")
    ap.add_argument("--shape", choices=["cubic", "dodecahedron"], default="cubic", help="box shape (default cubic)")
    ap.add_argument("--salt", type=float, default=0.0, help="NaCl concentration, mol/L (default 0)")
    ap.add_argument("--seed", type=int, default=2024, help="random seed (insertion, water removal, velocities)")
    ap.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    ap.add_argument("--nvt-ps", type=float, default=10.0, help="NVT length, ps (default 10)")
    ap.add_argument("--npt-ps", type=float, default=200.0, help="NPT length, ps (default 200: the density settles in ~50 ps)")
    ap.add_argument("--nt", type=int, default=None, help="mdrun -nt threads")
    ap.add_argument("--gmx", default="gmx", help="GROMACS driver (default gmx)")
    ap.add_argument("--out", type=Path, default=DATA / "examples" / "heptanol")
    ap.add_argument("--workdir", type=Path, default=None, help="where intermediates/logs go")
    args = ap.parse_args(argv)
    if args.n_water is None and not args.salt:
        args.n_water = 700
    if args.n_water is not None and args.n_water % 4:
        ap.error(f"--n-water {args.n_water} is not a multiple of 4")

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="heptanol_build_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}")
    settings = GromacsSettings(gmx=args.gmx, nt=args.nt)
    timings: dict[str, float] = {}

    def timed(key, fn, *a, **k):
        t0 = time.monotonic()
        res = fn(*a, **k)
        timings[key] = round(time.monotonic() - t0, 2)
        return res

    # 1. insert HPO, (re-box), solvate, trim water, add ions
    L = args.box
    timed("insert_molecules", run_tool, "insert-molecules", settings, cwd=work,
          ci=TOPO / "heptanol" / "HPO.gro", nmol=args.n_hpo, box=[L, L, L] if args.shape == "cubic" else [0.8 * L] * 3,
          seed=args.seed, o="hpo_box.gro", **{"try": 200})
    _t, atoms, _b = read_gro(work / "hpo_box.gro")
    n_ins = len(residues(atoms))
    if n_ins != args.n_hpo:
        raise SystemExit(f"error: only {n_ins} of {args.n_hpo} HPO fit in a {L} nm box: use a larger --box")
    solute = "hpo_box.gro"
    if args.shape == "dodecahedron":
        timed("editconf", run_tool, "editconf", settings, cwd=work, f="hpo_box.gro", bt="dodecahedron", box=[L],
              c=True, o="hpo_dodec.gro")
        solute = "hpo_dodec.gro"
    timed("solvate", run_tool, "solvate", settings, cwd=work, cp=solute, cs="spc216.gro", o="solvated.gro")
    title, atoms, box = read_gro(work / "solvated.gro")
    res = residues(atoms)
    hpo = [r for r in res if r[0][1] == "HPO"]
    sol = [r for r in res if r[0][1] == "SOL"]
    volume = float(np.prod([float(v) for v in box.split()[:3]]))  # lower-triangular box: det = product of diagonal
    n_ion = int(round(args.salt * volume * 0.6022)) if args.salt else 0
    n_water = args.n_water if args.n_water is not None else 4 * ((len(sol) - 2 * n_ion) // 4)
    if len(sol) < n_water + 2 * n_ion:
        raise SystemExit(f"error: solvate placed {len(sol)} < {n_water + 2 * n_ion} waters: use a larger --box")
    rng = np.random.default_rng(args.seed)
    keep = np.sort(rng.choice(len(sol), size=n_water + 2 * n_ion, replace=False))
    sol = [sol[i] for i in keep]
    ions: list = []
    if n_ion:  # replace waters far from every HPO atom by ions placed at their oxygens
        hx = np.array([[float(a[3][c:c + 8]) for c in (0, 8, 16)] for r in hpo for a in r])
        ox = np.array([[float(r[0][3][c:c + 8]) for c in (0, 8, 16)] for r in sol])
        from multiscale.geometry import minimum_image
        from multiscale.io import read_frames
        bm = read_frames(work / "solvated.gro").box[0]
        far = np.array([np.linalg.norm(minimum_image(hx - o, bm), axis=1).min() for o in ox])
        pick = rng.choice(np.flatnonzero(far > 0.6), size=2 * n_ion, replace=False)
        for k, i in enumerate(pick):
            name = "NA" if k < n_ion else "CL"
            ions.append([(900000 + k, name, name, sol[i][0][3][:24])])
        drop = set(pick.tolist())
        sol = [r for i, r in enumerate(sol) if i not in drop]
    args.n_water = n_water
    write_gro(work / "start.gro", "HPO + TIP3P start", [a for r in hpo + sol + ions for a in r], box)
    print(f"solvate placed {len(res) - len(hpo)} waters; kept {n_water}; ions {n_ion} NA + {n_ion} CL")

    top = out / "aa.top"
    atomic_write_text(top, aa_top_text(out, args.n_hpo, n_water, n_ion))
    atomic_write_text(out / "cg.top", cg_top_text(out, args.n_hpo, n_water // 4, n_ion))

    # 2. EM (flexible water), NVT, NPT
    common = dict(ref_t=args.temperature, tau_t=0.1, tau_p=1.0, ref_p=1.0, gen_seed=args.seed,
                  nstxout_compressed=0, nstenergy=100, nstlog=500, define="")
    stages = [
        ("em", "aa_em", dict(nsteps=5000, emtol=500.0, define="-DFLEXIBLE")),
        ("nvt", "aa_nvt", dict(common, dt=0.002, nsteps=int(round(args.nvt_ps / 0.002)))),
        ("npt", "aa_npt", dict(common, dt=0.002, nsteps=int(round(args.npt_ps / 0.002)))),
    ]
    structure = work / "start.gro"
    info: dict = {"stages": {}}
    for name, template, values in stages:
        mdp = render_mdp(template, values, work / f"{name}.mdp")
        tpr = timed(f"grompp_{name}", grompp, mdp, structure, top, work / f"{name}.tpr", settings)
        result = timed(f"mdrun_{name}", mdrun, tpr, name, settings, cwd=work)
        stage_info: dict = {"wall_s": timings[f"mdrun_{name}"], "ns_per_day": result.ns_per_day}
        if name == "em":
            stage_info.update(em_result(result.log))
        else:
            stage_info.update(final_energies(result.edr, settings, tail_fraction=0.5))
            stage_info["lincs_warnings"] = count_warnings(result.log)
        info["stages"][name] = stage_info
        shown = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in stage_info.items())
        print(f"{name}: " + ", ".join(shown))
        structure = result.gro

    worst = check_whole(structure)
    if worst > 1.2:
        raise SystemExit(f"error: a molecule in {structure} is split over the box (span {worst:.2f} nm)")
    title, atoms, box = read_gro(structure)
    edge = [float(x) for x in box.split()[:3]]
    write_gro(out / "aa.gro",
              f"heptan-1-ol in TIP3P: {args.n_hpo} HPO + {args.n_water} SOL{f' + {n_ion} NaCl' if n_ion else ''}, GAFF2, "
              f"NPT {args.temperature:g} K 1 bar",
              atoms, box)
    info.update({
        "n_hpo": args.n_hpo, "n_water": args.n_water, "n_w_beads": args.n_water // 4, "n_na": n_ion, "n_cl": n_ion,
        "shape": args.shape, "salt_mol_l": args.salt,
        "n_atoms": len(atoms), "box_nm": edge, "seed": args.seed, "timings_s": timings,
    })
    atomic_write_text(out / "build_info.json", json.dumps(info, indent=2) + "\n")
    print(f"wrote {out / 'aa.gro'} ({len(atoms)} atoms, box {edge[0]:.3f} nm), aa.top, cg.top, build_info.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

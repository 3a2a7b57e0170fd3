#!/usr/bin/env python
"""Benchmark: CG2AT2 1.0.2 vs multiscale on Martini 3 water (W -> TIP3P), scored by `multiscale evaluate`.

CG2AT2 covers proteins, lipids, W and ions but no small molecules, so the common ground is pure
Martini 3 water. Steps (all inside --workdir):

1. a CG2AT2 virtual environment (default /tmp/cg2at-venv, `pip install cg2at2==1.0.2`);
2. an AA reference: a TIP3P box (gmx solvate, trimmed to a multiple of 4 waters), EM, 2 ps NVT
   equilibration, then --ref-ps of NVT written every 0.2 ps (the reference ensemble);
3. the CG input: the last reference frame mapped to Martini 3 W (4 waters per bead) with
   `multiscale coarse-grain`;
4. backmapping of the same CG input by
   - CG2AT2 (non-interactive: -ff charmm36-cg2at -fg martini_3-0_charmm36 -w tip3p -o none,
     i.e. its de novo structure after its own minimisation), timed by `evaluate --run`;
   - this project's learned engine (`multiscale train` on the reference, `multiscale backmap`,
     timed), if it runs; otherwise it is left out;
   - the built-in baselines `rigid` and `random`;
5. `multiscale evaluate` on all of them against the reference (same AA topology for all:
   the project's TIP3P), printing the comparison table; the report is in WORKDIR/report/.

Usage:  python benchmarks/compare_cg2at.py [--workdir /tmp/cg2at-bench] [--box 3.0] [--ref-ps 10]
        [--no-energy] [--skip-ours]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CG2AT_VERSION = "1.0.2"
WATER_YAML = "molecules: {}\nwater: {aa: SOL, cg: W, bead: W, per_bead: 4}\n"


def sh(cmd, cwd=None, log=None, check=True):
    """Run a command list; output to `log` (or captured); raise with the tail on failure."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if log:
        Path(log).write_text(f"$ {' '.join(map(str, cmd))}\n{r.stdout}\n{r.stderr}")
    if check and r.returncode != 0:
        tail = (r.stdout + r.stderr).strip().splitlines()[-8:]
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n" + "\n".join(tail))
    return r, time.perf_counter() - t0


def ensure_cg2at(venv: Path) -> Path:
    exe = venv / "bin" / "cg2at"
    if not exe.exists():
        print(f"[bench] creating {venv} and installing cg2at2=={CG2AT_VERSION}", flush=True)
        sh([sys.executable, "-m", "venv", str(venv)])
        sh([str(venv / "bin" / "pip"), "install", "-q", f"cg2at2=={CG2AT_VERSION}"])
    return exe


def build_reference(work: Path, box: float, ref_ps: float, seed: int) -> dict:
    """TIP3P box -> EM -> NVT equilibration -> NVT production (reference ensemble)."""
    from multiscale.gromacs import GromacsSettings, grompp, mdrun, render_mdp
    from multiscale.io import read_frames, write_frames

    settings = GromacsSettings(nt=2)
    if (work / "ref.xtc").exists() and (work / "ref.gro").exists():
        n = int((work / "ref.gro").read_text().splitlines()[1]) // 3
        return {"n_waters": n, "top": work / "aa.top"}
    sh(["gmx", "-quiet", "solvate", "-cs", "spc216.gro", "-box", str(box), str(box), str(box), "-o", "solv.gro"], cwd=work)
    f = read_frames(work / "solv.gro")
    n = (f.n_atoms // 3) // 4 * 4
    write_frames(work / "start.gro", f.positions[0, : 3 * n], f.box[0], f.names[: 3 * n], f.resnames[: 3 * n], f.resids[: 3 * n])
    wat = REPO / "src" / "multiscale" / "data" / "topologies" / "water"
    (work / "aa.top").write_text(
        "[ defaults ]\n1 2 yes 0.5 0.8333\n"
        f'#include "{wat / "tip3p_atomtypes.itp"}"\n#include "{wat / "tip3p.itp"}"\n'
        f"[ system ]\nTIP3P water\n[ molecules ]\nSOL {n}\n")
    top = work / "aa.top"
    render_mdp("aa_em", {"nsteps": 2000, "emtol": 500, "define": "-DFLEXIBLE"}, work / "em.mdp")
    mdrun(grompp(work / "em.mdp", work / "start.gro", top, work / "em.tpr", settings=settings, cwd=work), work / "em", settings=settings, cwd=work)
    common = {"dt": 0.002, "ref_t": 300, "tau_t": 0.1, "gen_seed": seed, "nstenergy": 100, "nstlog": 500, "define": ""}
    render_mdp("aa_nvt", {**common, "nsteps": 1000, "nstxout_compressed": 0}, work / "eq.mdp")
    mdrun(grompp(work / "eq.mdp", work / "em.gro", top, work / "eq.tpr", settings=settings, cwd=work), work / "eq", settings=settings, cwd=work)
    render_mdp("aa_nvt", {**common, "nsteps": int(round(ref_ps / 0.002)), "nstxout_compressed": 100}, work / "prod.mdp")
    mdrun(grompp(work / "prod.mdp", work / "eq.gro", top, work / "prod.tpr", settings=settings, cwd=work), work / "prod", settings=settings, cwd=work)
    shutil.copy(work / "prod.xtc", work / "ref.xtc")
    shutil.copy(work / "prod.gro", work / "ref.gro")
    return {"n_waters": n, "top": top}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/tmp/cg2at-bench")
    ap.add_argument("--cg2at-venv", default="/tmp/cg2at-venv")
    ap.add_argument("--box", type=float, default=3.0, help="water box edge, nm")
    ap.add_argument("--ref-ps", type=float, default=10.0, help="reference NVT length, ps")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-energy", action="store_true")
    ap.add_argument("--skip-ours", action="store_true", help="do not try the learned engine")
    args = ap.parse_args(argv)

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cg2at = ensure_cg2at(Path(args.cg2at_venv))
    ms = [sys.executable, "-m", "multiscale.cli"]

    t0 = time.perf_counter()
    ref = build_reference(work, args.box, args.ref_ps, args.seed)
    print(f"[bench] reference: {ref['n_waters']} TIP3P, {args.ref_ps} ps NVT ({time.perf_counter() - t0:.0f} s)", flush=True)
    (work / "water.yaml").write_text(WATER_YAML)
    top = str(ref["top"])
    sh(ms + ["coarse-grain", "--topology", top, "--structure", str(work / "ref.gro"), "--mapping", str(work / "water.yaml"),
             "--output", str(work / "cg.gro")], cwd=work)

    cands, runs = [], []
    # CG2AT2: de novo structure after its own minimisation (-o none), non-interactive
    loc = work / "cg2at_run"
    cg2at_cmd = (f"rm -rf {loc} && {cg2at} -c {work / 'cg.gro'} -ff charmm36-cg2at -fg martini_3-0_charmm36 -w tip3p "
                 f"-o none -loc {loc} > {work / 'cg2at.log'} 2>&1")
    # one dry run to learn the output path (then timed again by evaluate --run)
    r = subprocess.run(cg2at_cmd, shell=True, cwd=work)
    outs = sorted(p for p in loc.rglob("*.pdb") if "FINAL" in str(p) or "final" in p.name.lower())
    if r.returncode != 0 or not outs:
        print(f"[bench] CG2AT2 failed (see {work / 'cg2at.log'})", flush=True)
    else:
        out = next((p for p in outs if "de_novo" in p.name), outs[0])
        cands += ["--candidate", f"cg2at2={out}"]
        runs += ["--run", f"cg2at2={cg2at_cmd}"]
        print(f"[bench] CG2AT2 output: {out.relative_to(work)}", flush=True)

    if not args.skip_ours:
        model = work / "model.pt"
        r, dt = sh(ms + ["train", "--topology", top, "--structure", str(work / "ref.gro"), "--trajectory", str(work / "ref.xtc"),
                         "--mapping", str(work / "water.yaml"), "--output", str(model), "--seed", str(args.seed)],
                   cwd=work, log=work / "train.log", check=False)
        if r.returncode == 0:
            ours_cmd = (f"{sys.executable} -m multiscale.cli backmap --model {model} --cg {work / 'cg.gro'} --topology {top} "
                        f"--output {work / 'ours.gro'} --seed {args.seed} > {work / 'backmap.log'} 2>&1")
            rb = subprocess.run(ours_cmd, shell=True, cwd=work)
            if rb.returncode == 0:
                cands += ["--candidate", f"multiscale={work / 'ours.gro'}"]
                runs += ["--run", f"multiscale={ours_cmd}"]
                print(f"[bench] multiscale engine: trained in {dt:.1f} s", flush=True)
            else:
                print(f"[bench] multiscale backmap failed (see {work / 'backmap.log'}); baselines only", flush=True)
        else:
            print(f"[bench] multiscale train failed (see {work / 'train.log'}); baselines only", flush=True)

    cmd = ms + ["evaluate", "--cg", str(work / "cg.gro"), "--mapping", str(work / "water.yaml"), "--topology", top,
                "--reference", str(work / "ref.xtc"), "--reference-structure", str(work / "ref.gro"),
                *cands, *runs, "--baseline", "rigid", "--baseline", "random", "--output", str(work / "report"),
                "--seed", str(args.seed)] + (["--no-energy"] if args.no_energy else [])
    print("[bench] $ multiscale evaluate ...", flush=True)
    r = subprocess.run(cmd, cwd=work)
    if r.returncode != 0:
        return r.returncode
    rep = json.loads((work / "report" / "report.json").read_text())
    keys = ["cg_rmsd_water_nm", "rdf_jsd_max", "rdf_worst_pair", "jsd_max", "clashes_inter", "energy_single_point_kj_mol",
            "em_steps", "em_final_kj_mol", "nvt_stable", "time_s", "peak_mem_mb", "unmatched_atoms"]
    summary = {n: {k: c.get(k) for k in keys} for n, c in rep["candidates"].items()}
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"[bench] report: {work / 'report' / 'report.md'}; summary: {work / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

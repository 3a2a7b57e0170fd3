#!/usr/bin/env python3
"""`multiscale molecule` on molecules the project had not used, each from one command to a trained
model and a completed 2-cycle run; prints one Markdown row per molecule.

    python benchmarks/bench_molecule.py --out /tmp/molecules [--ps 100] [--nt 1] [--only TOLU]

Per molecule: wall time to the model (preparation + AA MD + training + held-out report), the
held-out report's heavy-atom torsion JSD (max, mean, noise floor), stereocentres kept, clash pairs
and ring penetrations per frame, then the 2-cycle run's wall time and its backmap certificates.
Molecules: Martini 3 models from vermouth's library (martini3001 small molecules) with vermouth's
CHARMM36 maps: toluene (the map lists its beads in another order than the model), cumene (branched),
methyl benzoate (an ester on a ring).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MOLECULES = {
    "TOLU": "Cc1ccccc1",           # toluene: map beads R2 R1 R3, model R1 R2 R3
    "CUME": "CC(C)c1ccccc1",       # cumene (isopropylbenzene): branched
    "MBOA": "COC(=O)c1ccccc1",     # methyl benzoate: ester + ring
}


def run(cmd, cwd=None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ps", type=float, default=100.0)
    ap.add_argument("--nt", type=int, default=1)
    ap.add_argument("--only", action="append")
    args = ap.parse_args()
    exe = str(Path(sys.executable).parent / "multiscale")
    print("| molecule | SMILES | to model (s) | torsion JSD max / mean (floor) | stereo kept | clashes inter/intra | rings | "
          "2 cycles (s) | backmap certificates |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, smi in MOLECULES.items():
        if args.only and name not in args.only:
            continue
        d = args.out / name.lower()
        t_model = run([exe, "molecule", name, "--smiles", smi, "--mapping", f"vermouth:{name}", "--output", str(d),
                       "--ps", str(args.ps), "--nt", str(args.nt)])
        t_cycle = run([exe, "cycle"], cwd=d)
        rep = json.loads((d / "report.json").read_text())
        state = json.loads((d / "runs" / "state.json").read_text())
        certs = [s.get("info", {}).get("ok") for k, s in state["stages"].items() if k.endswith("/backmap")]
        stereo = rep.get("stereo_fraction")
        print(f"| {name} | `{smi}` | {t_model:.0f} | {rep['jsd_max']:.4f} / {rep['jsd_mean']:.4f} ({rep['jsd_floor_mean']:.4f}) | "
              f"{'n/a (none)' if stereo is None else f'{stereo:.3f}'} | {rep['clashes_inter']:g} / {rep['clashes_intra']:g} | "
              f"{rep['ring_penetrations']:g} | {t_cycle:.0f} | {sum(bool(c) for c in certs)}/{len(certs)} ok |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

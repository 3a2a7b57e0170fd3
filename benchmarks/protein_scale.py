#!/usr/bin/env python3
"""How the protein backmap scales with chain length: whole command, engine time, peak memory.

    python benchmarks/protein_scale.py [--lengths 20 100 300] [--seed 0] [--out benchmarks/results/protein_scale.md]

For each length a random sequence of the 20 amino acids (seeded) is built as an alpha helix
(PeptideBuilder), given an amber99sb-ildn topology by ``gmx pdb2gmx``, coarse-grained with
martinize2's beads (``multiscale coarse-grain``) and backmapped from those beads with the shipped
chain model by the real command (``multiscale backmap``, no --model).  Reported: the whole
command's wall time and peak resident memory (the child process's ru_maxrss), the engine's own time
(certificate), ms per residue, atoms/s, and the certificate's headline numbers.  The helix is only a
test geometry: the numbers are about cost, not fidelity (docs/proteins.md has the held-out fidelity).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
BIN = Path(sys.executable).parent


def run(cmd, cwd) -> tuple[float, float]:
    """(wall s, peak RSS MB of this child) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024.0


def main(argv=None) -> int:
    from multiscale.chains.peptides import AMINO_ACIDS, build_peptide_pdb, pdb2gmx
    from multiscale.gromacs import run_tool

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[20, 100, 300])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "protein_scale.md")
    a = p.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    rows = []
    for n in a.lengths:
        work = Path(tempfile.mkdtemp(prefix=f"protein_scale_{n}_"))
        seq = "".join(rng.choice(list(AMINO_ACIDS), n))
        build_peptide_pdb(seq, work / "heavy.pdb", conformation="helix")
        pdb2gmx(work / "heavy.pdb", work)
        run_tool("editconf", cwd=work, f="protein.gro", o="boxed.gro", d=1.5, bt="cubic")  # no contact with its images
        ms = BIN / "multiscale"
        run([ms, "coarse-grain", "--topology", "topol.top", "--structure", "boxed.gro", "--output", "cg.gro"], work)
        wall, peak = run([ms, "backmap", "--cg", "cg.gro", "--topology", "topol.top", "--output", "aa.gro", "--seed", a.seed,
                          "--report", "cert.json"], work)
        cert = json.loads((work / "cert.json").read_text())[0]
        chain = next(v for v in cert["per_moltype"].values() if v.get("kind") == "chain")
        atoms = sum(1 for _ in (work / "aa.gro").read_text().splitlines()[2:-1])
        rows.append({"residues": n, "atoms": atoms, "command_s": round(wall, 2), "engine_s": round(cert["seconds"], 2),
                     "ms_per_residue": round(1000 * cert["seconds"] / n, 1), "atoms_per_s": round(atoms / cert["seconds"]),
                     "peak_rss_MB": round(peak), "ok": cert["ok"], "cis_nonpro": chain.get("cis_nonpro_final"),
                     "wrong_centres": chain.get("wrong_centres_final"), "clashing_residues": chain.get("clashing_residues_final"),
                     "max_cg_deviation_nm": cert.get("max_cg_deviation_nm")})
        print(json.dumps(rows[-1]), flush=True)
    keys = list(rows[0])
    lines = ["# Protein backmap cost vs chain length (shipped amber model, one helix per length, no solvent)", "",
             "peak_rss_MB: the largest resident memory of any child command so far (ru_maxrss), i.e. an upper bound "
             "for each row's backmap.", "", "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

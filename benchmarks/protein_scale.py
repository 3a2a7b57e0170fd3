#!/usr/bin/env python3
"""How the protein backmap scales with chain length: whole command, engine time, peak memory.

    python benchmarks/protein_scale.py [--lengths 20 100 300 1000] [--seed 0] [--out benchmarks/results/protein_scale.md]

For each length a random sequence of the 20 amino acids (seeded) is built as an alpha helix
(PeptideBuilder), given an amber99sb-ildn topology by ``gmx pdb2gmx``, relaxed by a short steepest
descent in vacuum (the ideal helix with PeptideBuilder's side-chain rotamers has atoms 0.06 nm apart,
and prolines inside a helix push their CD hydrogens into the carbonyl of residue i-4: beads mapped
from such a structure ask the backmap for clashes), coarse-grained with martinize2's beads
(``multiscale coarse-grain``) and backmapped from those beads with the shipped chain model by the
real command (``multiscale backmap``, no --model).  Reported: the whole
command's wall time and peak resident memory (the child process's ru_maxrss), the engine's own time
(certificate), ms per residue, atoms/s, the certificate's headline numbers, and the intramolecular
clash pairs of the relaxed input itself (as the certificate counts them).  The helix is only a
test geometry: the numbers are about cost, not fidelity (docs/proteins.md has the held-out fidelity).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
BIN = Path(sys.executable).parent
#: vacuum relaxation of the built helix (cut-off electrostatics screened by epsilon-r 4: the
#: charged side chains do not fold onto the backbone in a few hundred steps)
VACUUM_EM = """integrator = steep
nsteps = 500
emtol = 500
cutoff-scheme = Verlet
coulombtype = Cut-off
rcoulomb = 1.0
rvdw = 1.0
epsilon-r = 4
"""


def input_clashes(top, gro) -> int:
    """Intramolecular pairs < 0.1 nm more than two bonds apart (the certificate's rule) in ``gro``."""
    from scipy.spatial import cKDTree

    from multiscale.backmap.certify import exclusion_matrix
    from multiscale.io import read_frames
    from multiscale.topology import load_topology

    mt = load_topology(top).blocks[0].moltype
    x = read_frames(gro).positions[0][: mt.n_atoms]
    pairs = cKDTree(x).query_pairs(0.1, output_type="ndarray")
    if not len(pairs):
        return 0
    return int((~np.asarray(exclusion_matrix(mt.n_atoms, mt.bonds, 2)[pairs[:, 0], pairs[:, 1]])).sum())


#: runs one command in a fresh Python process and prints its wall time and the command's own peak RSS
#: (ru_maxrss of that process's only child: the grompp/mdrun runs before it do not count)
_MEASURE = ("import resource, subprocess, sys, time; t = time.perf_counter(); r = subprocess.run(sys.argv[1:]); "
            "w = time.perf_counter() - t; print(w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def run(cmd, cwd) -> tuple[float, float]:
    """(wall s, peak RSS MB) of one command."""
    r = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, cmd)], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-2000:]}")
    wall, rss_kb = r.stdout.split()[-2:]
    return float(wall), float(rss_kb) / 1024.0


def main(argv=None) -> int:
    from multiscale.chains.peptides import AMINO_ACIDS, build_peptide_pdb, pdb2gmx
    from multiscale.gromacs import run_tool

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[20, 100, 300, 1000])
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
        run_tool("editconf", cwd=work, f="protein.gro", o="built.gro", d=1.5, bt="cubic")  # no contact with its images
        (work / "em.mdp").write_text(VACUUM_EM)
        run_tool("grompp", cwd=work, f="em.mdp", c="built.gro", p="topol.top", o="em.tpr", maxwarn=1)
        run_tool("mdrun", cwd=work, deffnm="em", nt=2)
        run_tool("trjconv", cwd=work, f="em.gro", s="em.tpr", o="boxed.gro", pbc="mol", input="0")
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
                     "max_cg_deviation_nm": cert.get("max_cg_deviation_nm"),
                     "input_clash_pairs": input_clashes(work / "topol.top", work / "boxed.gro")})
        print(json.dumps(rows[-1]), flush=True)
    keys = list(rows[0])
    lines = ["# Protein backmap cost vs chain length (shipped amber model, one helix per length, no solvent)", "",
             "Input: the PeptideBuilder helix after 500 steps of vacuum steepest descent (input_clash_pairs: what "
             "is left in it).", "",
             "peak_rss_MB: the backmap command's peak resident memory (ru_maxrss).", "", "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Build the ``membrane_protein`` example: a transmembrane helix in a Martini 3 POPC bilayer, CG only.

    python scripts/make_membrane_protein_example.py [--sequence GWWLALALALALALALALWWA] [--per-side 4.5]
        [--cg-ns 2] [--seed 2026] [--work /tmp/mp_example] [--out src/multiscale/data/examples/membrane_protein]

What a user who starts from CG has, made with the field's tools:
1. the peptide as an ideal alpha helix (PeptideBuilder), hydrogens and an amber99sb-ildn topology from
   ``gmx pdb2gmx`` (only to have whole residues for martinize2), its long axis turned along z
   (``gmx editconf -princ``, then 90 degrees about y);
2. ``martinize2`` (vermouth; Martini 3.0.0, ``-ss`` all helix, no elastic network): the CG peptide and its
   itp, moleculetype renamed to ``Protein_chain_A`` (the name ``multiscale topology`` gives the AA chain);
3. ``insane``: the peptide centred in a POPC bilayer (``--per-side`` nm square), W and 0.15 M NaCl
   (ions renamed to the Martini 3 lipidome's NA / CL, residue ION);
4. GROMACS, Martini 3: EM, then ``--cg-ns`` of semi-isotropic NPT at 303.15 K (C-rescale, 20 fs).

Writes ``cg.gro`` (the last frame), ``cg.top`` (includes the Martini 3 lipidome, fetched at init,
and ``Protein_chain_A.itp``), ``Protein_chain_A.itp`` and ``build_info.json`` (provenance) into
``--out``.  ``multiscale init --example membrane_protein DIR`` adds the AA topology (CHARMM36m
protein + CHARMM36 lipids, ``multiscale topology``) and the GPL force-field files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "src"))

from make_bilayer_data import MD_CG, MDP_CG, martini3_ions  # noqa: E402  (the same Martini 3 settings as the bilayer twins)

from multiscale import forcefields as ff  # noqa: E402
from multiscale.errors import MultiscaleError  # noqa: E402
from multiscale.io import atomic_write_text  # noqa: E402

WALP23 = "GWW" + "LA" * 8 + "LWWA"
NAME = "Protein_chain_A"


def sh(cmd, cwd, env=None, stdin: str | None = None) -> str:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, env=env, input=stdin)
    if r.returncode:
        raise MultiscaleError(f"{' '.join(map(str, cmd[:3]))} failed in {cwd}: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return r.stdout + r.stderr


def helix_along_z(work: Path, sequence: str) -> Path:
    """The AA helix (pdb2gmx, amber names) with its long axis along z, whole, in a box."""
    from multiscale.chains.peptides import build_peptide_pdb, pdb2gmx

    build_peptide_pdb(sequence, work / "heavy.pdb", conformation="helix")
    pdb2gmx(work / "heavy.pdb", work, forcefield="amber99sb-ildn")
    sh(["gmx", "editconf", "-f", "protein.gro", "-o", "princ.gro", "-princ"], work, stdin="0\n")  # group 0: System
    return work / "princ.gro"


def insane_system(work: Path, cg_pdb: Path, a) -> list[str]:
    """insane's bilayer around the CG peptide; gro lines with Martini 3 ion names."""
    env = {**os.environ, "INSANE_SEED": str(a.seed)}
    sh([sys.executable, "-W", "ignore", "-c", "import sys; from insane.cli import cli; sys.exit(cli())",
        "-f", cg_pdb, "-o", "cg_insane.gro", "-p", "insane.top", "-l", "POPC", "-x", a.per_side, "-y", a.per_side,
        "-z", a.z, "-sol", "W", "-salt", "0.15", "-center"], work, env=env)
    return martini3_ions((work / "cg_insane.gro").read_text().splitlines())


def molecules(lines: list[str], n_protein_beads: int, name: str = NAME) -> list[tuple[str, int]]:
    """[ molecules ] rows of an insane .gro (lines) in the file's order: the protein ``name`` (its
    first ``n_protein_beads`` beads), then lipids, W, NA, CL."""
    body = lines[2:-1]
    rows: list[list] = [[name, 1]]
    seen = set()
    for ln in body[n_protein_beads:]:
        rn, nm, rid = ln[5:10].strip(), ln[10:15].strip(), ln[:5]
        key = nm if rn == "ION" else rn
        if (key, rid) in seen:
            continue
        seen.add((key, rid))
        if rows[-1][0] == key:
            rows[-1][1] += 1
        else:
            rows.append([key, 1])
    return [(m, n) for m, n in rows]


def run_cg(work: Path, a) -> None:
    def grompp_mdrun(name: str, mdp: str, gro: str) -> None:
        (work / f"{name}.mdp").write_text(mdp)
        sh(["gmx", "grompp", "-f", f"{name}.mdp", "-c", gro, "-p", "cg.top", "-o", f"{name}.tpr", "-po", f"{name}_out.mdp",
            "-maxwarn", "1"], work)
        sh(["gmx", "mdrun", "-deffnm", name, "-nt", str(a.nt)], work)

    grompp_mdrun("cg_em", MDP_CG.format(integrator="steep", run="nsteps = 5000\ndefine = -DFLEXIBLE", nstxtc=0), "cg_system.gro")
    md = MD_CG.format(nsteps=int(round(a.cg_ns * 1000 / 0.02)), temp=303.15, seed=a.seed)
    grompp_mdrun("cg_md", MDP_CG.format(integrator="md", run=md, nstxtc=0), "cg_em.gro")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sequence", default=WALP23, help="one-letter sequence of the helix (default WALP23)")
    p.add_argument("--per-side", type=float, default=4.5, help="bilayer edge, nm")
    p.add_argument("--z", type=float, default=7.0, help="box height, nm")
    p.add_argument("--cg-ns", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--nt", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp/mp_example"))
    p.add_argument("--out", type=Path, default=ROOT / "src" / "multiscale" / "data" / "examples" / "membrane_protein")
    a = p.parse_args(argv)
    from multiscale.chains.topology import martini_topology
    from multiscale.workflow.martinize import itp_moleculetypes

    if a.work.exists():
        shutil.rmtree(a.work)
    a.work.mkdir(parents=True)
    aa = helix_along_z(a.work, a.sequence)
    # the helix along z: -princ puts the long axis on x; turn it about y
    sh(["gmx", "editconf", "-f", aa, "-o", "helix_z.gro", "-rotate", "0", "90", "0", "-c", "-d", "1.5"], a.work)
    mt = martini_topology(a.work / "helix_z.gro", a.work / "martinize2", ss="H" * len(a.sequence), elastic=False, name=NAME)
    (old, beads), = itp_moleculetypes(mt.itps).items()
    cmd = " ".join(Path(c).name if i == 0 else str(c) for i, c in enumerate(mt.command)).replace(f"{a.work}/", "")
    itp = mt.itps[0].read_text().replace(old, NAME, 1).replace(str(mt.command[0]), "martinize2").replace(f"{a.work}/", "")
    atomic_write_text(a.work / f"{NAME}.itp", f"; {NAME}: Martini 3.0.0 topology written by martinize2 (vermouth, Apache-2.0):\n"
                      f";   {cmd}\n; moleculetype renamed from {old}\n" + itp)
    lines = insane_system(a.work, mt.cg_pdb, a)
    atomic_write_text(a.work / "cg_system.gro", "\n".join(lines) + "\n")
    (a.work / ff.martini3_itp().name).unlink(missing_ok=True)
    (a.work / ff.martini3_itp().name).symlink_to(ff.martini3_itp())
    rows = molecules(lines, len(beads))
    top = (f"; {a.sequence} (alpha helix, martinize2) in a POPC bilayer with W and 0.15 M NaCl (insane), Martini 3.\n"
           "; Written by scripts/make_membrane_protein_example.py; the lipidome itp (GPL-3.0) is fetched by\n"
           "; `multiscale init --example membrane_protein DIR`.  Only the #include lines are used by the cycle.\n"
           f'#include "{ff.martini3_itp().name}"\n#include "{NAME}.itp"\n\n[ system ]\n'
           f"{a.sequence} in POPC (Martini 3)\n\n[ molecules ]\n" + "".join(f"{m:<16s} {n}\n" for m, n in rows))
    atomic_write_text(a.work / "cg.top", top)
    run_cg(a.work, a)
    a.out.mkdir(parents=True, exist_ok=True)
    gro = (a.work / "cg_md.gro").read_text().splitlines()
    gro[0] = f"{a.sequence} in POPC, Martini 3, after EM + {a.cg_ns:g} ns NPT (scripts/make_membrane_protein_example.py)"
    atomic_write_text(a.out / "cg.gro", "\n".join(gro) + "\n")
    shutil.copy2(a.work / "cg.top", a.out / "cg.top")
    shutil.copy2(a.work / f"{NAME}.itp", a.out / f"{NAME}.itp")
    from importlib.metadata import version

    info = {"sequence": a.sequence, "secondary_structure": "H" * len(a.sequence), "elastic_network": False,
            "martinize2": cmd, "vermouth": version("vermouth"), "insane": version("insane"),
            "insane_seed": a.seed, "bilayer_nm": [a.per_side, a.per_side, a.z], "salt_M": 0.15,
            "molecules": dict(rows), "cg_md": {"ns": a.cg_ns, "dt_ps": 0.02, "temperature_K": 303.15,
                                                  "pressure": "semi-isotropic C-rescale 1 bar", "seed": a.seed},
            "gromacs": sh(["gmx", "--version"], a.work).split("GROMACS version:")[1].split()[0]}
    atomic_write_text(a.out / "build_info.json", json.dumps(info, indent=1) + "\n")
    print(f"wrote {a.out}: {len(lines) - 3} beads, molecules {dict(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

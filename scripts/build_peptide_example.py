#!/usr/bin/env python3
"""Build the peptide example: a short peptide (amber99sb-ildn) in TIP3P water with 0.15 M NaCl in a
rhombic dodecahedron, briefly equilibrated.

    nice -n 10 python scripts/build_peptide_example.py [--sequence AYPGKE] [--pad 0.75] [--nt 1]

Steps (real GROMACS, via multiscale.gromacs): PeptideBuilder heavy atoms (PPII, Pro phi -65) ->
gmx pdb2gmx (amber99sb-ildn + TIP3P, charged termini) -> editconf -bt dodecahedron -d PAD ->
solvate (spc216) -> genion -neutral -conc SALT (NA/CL) -> the last 0-3 waters removed so that
every Martini W bead stands for 4 waters -> EM -> restrained NVT -> NPT (c-rescale) -> molecules
made whole (trjconv -pbc mol -ur compact).

The sequence is not one of the chain model's training peptides (scripts/make_peptide_data.py):
the example shows the shipped chain model on an unseen peptide.  Writes into --out (default
src/multiscale/data/examples/peptide): aa.gro, aa.top (#includes amber99sb-ildn.ff from GROMACS's
share/top, resolved as grompp does), cg.top (the Martini 3 includes; the peptide's own itp is made
by martinize2 when the cycle runs), build_info.json.  Intermediates stay in --workdir.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from multiscale.chains.peptides import build_peptide_pdb, pdb2gmx  # noqa: E402
from multiscale.gromacs import GromacsSettings, em_result, final_energies, grompp, mdrun, render_mdp, run_tool  # noqa: E402
from multiscale.io import atomic_write_text  # noqa: E402

DATA = ROOT / "src" / "multiscale" / "data"
TRAINING = {"QQIDLGGSIH", "QFFMIPGYPQ", "EWQRMLLTNH", "PKAYYNTPFW", "GCHLWGRYKF", "VGIHVDDPMC", "WWKEHTCSFL", "MTATLRENMD",
            "FHYFANSAEV", "HCWSYKDTSV", "NIMMWRQCPA", "IRRAQCLDNY", "SGAKVCRVVK", "EDKEEITSPN", "GHKDEAHWSHYK",
            "NLYIQWLKDGGPSSGRPPPS"}  # scripts/make_peptide_data.py PEPTIDES (kept in sync by hand)
DT = 0.002


def molecule_counts(top_text: str) -> list[tuple[str, int]]:
    out = []
    for line in top_text.split("[ molecules ]")[-1].splitlines():
        parts = line.split(";")[0].split()
        if len(parts) == 2:
            out.append((parts[0], int(parts[1])))
    return out


def trim_water(gro: Path, top: Path) -> int:
    """Remove the last SOL molecules so that their count is a multiple of 4; returns the count."""
    lines = gro.read_text().splitlines()
    n = int(lines[1])
    atoms = lines[2:2 + n]
    sol_res = [(i, a[:10]) for i, a in enumerate(atoms) if a[5:10].strip() == "SOL"]
    keys = list(dict.fromkeys(k for _, k in sol_res))
    extra = len(keys) % 4
    drop = set(keys[len(keys) - extra:]) if extra else set()
    kept = [a for a in atoms if not (a[5:10].strip() == "SOL" and a[:10] in drop)]
    atomic_write_text(gro, "\n".join([lines[0], f"{len(kept):5d}", *kept, lines[2 + n]]) + "\n")
    n_sol = len(keys) - extra
    text = re.sub(r"^(SOL\s+)\d+", lambda m: f"{m.group(1)}{n_sol}", top.read_text(), flags=re.MULTILINE)
    atomic_write_text(top, text)
    return n_sol


def example_top(pdb2gmx_top: str, sequence: str, salt: float) -> str:
    """The pdb2gmx topology with its POSRES block removed (the cycle writes its own restraints) and a header."""
    text = re.sub(r"\n; Include Position restraint file\n#ifdef POSRES\n#include \"posre.itp\"\n#endif\n", "\n", pdb2gmx_top)
    head = (f"; Peptide {sequence} (amber99sb-ildn, charged termini) in TIP3P water with {salt} M NaCl, rhombic dodecahedron.\n"
            "; Built by scripts/build_peptide_example.py (pdb2gmx topology). amber99sb-ildn.ff is GROMACS's own (share/top).\n")
    return head + text


def cg_top(counts: list[tuple[str, int]], sequence: str) -> str:
    mol = {"SOL": ("W", 4)}
    lines = [f"; Peptide {sequence} in water with NaCl, Martini 3.0.0. Built by scripts/build_peptide_example.py.",
             "; Only the #include lines are used by the cycle: the peptide's moleculetype (its AA name) comes from",
             "; martinize2, run once per run on the AA start structure (runs/martinize/), and is included after these.",
             "", '#include "../../topologies/martini3/martini_v3.0.0.itp"',
             '#include "../../topologies/martini3/martini_v3.0.0_solvents_v1.itp"',
             '#include "../../topologies/martini3/martini_v3.0.0_ions_v1.itp"', "", "[ system ]",
             f"peptide {sequence} in water with NaCl (Martini 3)", "", "[ molecules ]"]
    for name, n in counts:
        cg, per = mol.get(name, (name, 1))
        lines.append(f"{cg:<16s} {n // per}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sequence", default="AYPGKE", help="one-letter sequence (default AYPGKE: Pro + aromatic Tyr, net charge 0)")
    ap.add_argument("--pad", type=float, default=0.75, help="peptide-box distance, nm (default 0.75)")
    ap.add_argument("--salt", type=float, default=0.15, help="NaCl, mol/L (default 0.15)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--nvt-ps", type=float, default=10.0, help="restrained NVT, ps (default 10)")
    ap.add_argument("--npt-ps", type=float, default=20.0, help="NPT, ps (default 20)")
    ap.add_argument("--nt", type=int, default=1)
    ap.add_argument("--gmx", default="gmx")
    ap.add_argument("--out", type=Path, default=DATA / "examples" / "peptide")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    seq = args.sequence.upper()
    if seq in TRAINING:
        ap.error(f"{seq} is a training peptide of the chain model: choose another sequence")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="peptide_build_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}")
    settings = GromacsSettings(gmx=args.gmx, nt=args.nt)
    timings: dict[str, float] = {}

    def timed(key, fn, *a, **k):
        t0 = time.monotonic()
        res = fn(*a, **k)
        timings[key] = round(time.monotonic() - t0, 2)
        return res

    timed("build", build_peptide_pdb, seq, work / "heavy.pdb", conformation="ppii", seed=args.seed)
    timed("pdb2gmx", pdb2gmx, work / "heavy.pdb", work, settings=settings)
    timed("editconf", run_tool, "editconf", settings, cwd=work, f="protein.gro", o="boxed.gro", bt="dodecahedron",
          d=args.pad, c=True)
    (work / "system.top").write_text((work / "topol.top").read_text())
    timed("solvate", run_tool, "solvate", settings, cwd=work, cp="boxed.gro", cs="spc216.gro", o="solvated.gro", p="system.top")
    render_mdp("aa_em", {"define": "", "nsteps": 0, "emtol": 1000}, work / "ions.mdp")
    grompp(work / "ions.mdp", work / "solvated.gro", work / "system.top", work / "ions.tpr", settings, maxwarn=1)
    timed("genion", run_tool, "genion", settings, cwd=work, input="SOL", s="ions.tpr", o="system.gro", p="system.top",
          pname="NA", nname="CL", neutral=True, conc=args.salt, seed=args.seed)
    n_sol = trim_water(work / "system.gro", work / "system.top")
    top = out / "aa.top"
    atomic_write_text(top, example_top((work / "system.top").read_text(), seq, args.salt))
    counts = molecule_counts(top.read_text())
    common = dict(ref_t=300.0, tau_t=0.1, tau_p=2.0, ref_p=1.0, gen_seed=args.seed, nstxout_compressed=0, nstenergy=100,
                  nstlog=500, dt=DT)
    (work / "posre.itp").exists() or sys.exit("pdb2gmx wrote no posre.itp")
    stages = [("em", "aa_em", dict(nsteps=5000, emtol=500.0, define="-DFLEXIBLE"), work / "topol_posre.top"),
              ("nvt", "aa_nvt", dict(common, define="-DPOSRES", nsteps=round(args.nvt_ps / DT)), work / "topol_posre.top"),
              ("npt", "aa_npt", dict(common, define="", nsteps=round(args.npt_ps / DT)), top)]
    atomic_write_text(work / "topol_posre.top", (work / "system.top").read_text())  # with pdb2gmx's POSRES block
    structure, info = work / "system.gro", {"stages": {}}
    for name, template, values, topo in stages:
        mdp = render_mdp(template, values, work / f"{name}.mdp")
        tpr = timed(f"grompp_{name}", grompp, mdp, structure, topo, work / f"{name}.tpr", settings,
                    restraint=structure if "POSRES" in values["define"] else None)
        res = timed(f"mdrun_{name}", mdrun, tpr, name, settings, cwd=work)
        st = {"wall_s": timings[f"mdrun_{name}"], "ns_per_day": res.ns_per_day}
        st.update(em_result(res.log) if name == "em" else final_energies(res.edr, settings=settings))
        info["stages"][name] = st
        structure = res.gro
    timed("trjconv", run_tool, "trjconv", settings, cwd=work, input="System", s="npt.tpr", f=str(structure), o="whole.gro",
          pbc="mol", ur="compact")
    text = (work / "whole.gro").read_text().splitlines()
    text[0] = f"peptide {seq} in TIP3P + NaCl, equilibrated (scripts/build_peptide_example.py)"
    atomic_write_text(out / "aa.gro", "\n".join(text) + "\n")
    atomic_write_text(out / "cg.top", cg_top(counts, seq))
    box = [float(v) for v in text[-1].split()]
    info.update(sequence=seq, force_field="amber99sb-ildn", water="tip3p", termini="charged (pdb2gmx default)",
                shape="dodecahedron", pad_nm=args.pad, salt_mol_l=args.salt, molecules=dict(counts), n_water=n_sol,
                n_atoms=int(text[1]), box_nm=box[:3], seed=args.seed, timings_s=timings)
    atomic_write_text(out / "build_info.json", json.dumps(info, indent=2) + "\n")
    print(f"wrote {out}: {info['n_atoms']} atoms, {dict(counts)}, box {box[:3]}; timings {timings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

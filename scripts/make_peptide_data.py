#!/usr/bin/env python3
"""Atomistic training data for the protein (chain) model: short peptides in water, real GROMACS.

    python scripts/make_peptide_data.py [--out ~/.cache/multiscale/peptides] [--only pep01 trpcage]
        [--ns 20] [--nt 1] [--maxh H] [--list]
    nice -n 10 python scripts/make_peptide_data.py --only pep01 --ns 0.005 --nvt-ps 2 --npt-ps 2   # smoke run

Per peptide (the list is :data:`PEPTIDES`: 14 training 10-mers in which each of the 20 amino
acids occurs 7 times in different neighbour contexts, one protonation-variant 12-mer, and the
held-out 20-residue Trp-cage TC5b marked ``split: test``), stages run in order and each is
skipped when its outputs exist, so an interrupted run resumes (mdrun continues from its
checkpoint, ``-cpi``):

    build    PeptideBuilder heavy atoms (PPII start; Trp-cage helical), variants renamed (HID/HIP/ASH/GLH/LYN)
    pdb2gmx  amber99sb-ildn (or --forcefield charmm36m) + TIP3P, charged termini, -ignh
    box      editconf -bt dodecahedron -d PAD -c
    solvate  gmx solvate -cs spc216.gro
    ions     genion -neutral -conc 0.15 (NA/CL), seeded
    em       steepest descent (aa_em template)
    nvt      NVT_PS ps, heavy-atom restraints (-DPOSRES), new velocities from the seed
    npt      NPT_PS ps, restraints, c-rescale
    prod     NS ns NPT, protein-only xtc every 1 ps
    export   md.xtc (protein only, molecule whole), start.gro (its first frame), topol.top
             (protein-only pdb2gmx topology, + posre.itp), provenance.json

Output: OUT/NAME/{topol.top, posre.itp, start.gro, md.xtc, provenance.json}; GROMACS inputs,
logs and the full solvated system stay in OUT/NAME/work/.  The default OUT is outside the
repository.  Needs PeptideBuilder (``pip install PeptideBuilder``; extra ``proteins``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from multiscale.chains.aa_forcefields import PROTEIN_FORCEFIELDS  # noqa: E402
from multiscale.chains.peptides import AMINO_ACIDS, build_peptide_pdb, pdb2gmx  # noqa: E402
from multiscale.errors import MultiscaleError  # noqa: E402
from multiscale.gromacs import GromacsSettings, grompp, mdrun, render_mdp, run_tool  # noqa: E402
from multiscale.io import atomic_write_text  # noqa: E402

WATER = "tip3p"
DT = 0.002  # ps
TEMPERATURE = 300.0  # K


@dataclass(frozen=True)
class Peptide:
    name: str
    sequence: str
    split: str = "train"  # train | test (held out: reference data only, never trained on)
    variants: dict = field(default_factory=dict)  # 1-based position -> amber residue name
    seed: int = 0
    conformation: str = "ppii"  # start: ppii | helix | extended | mixed (multiscale.chains.peptides)


#: Training peptides: each amino acid 7x over 14 10-mers, neighbours varied (seeded shuffle,
#: at most one Cys per peptide); one variant peptide; Trp-cage TC5b held out.
PEPTIDES = [
    Peptide("pep01", "QQIDLGGSIH", seed=101),
    Peptide("pep02", "QFFMIPGYPQ", seed=102),
    Peptide("pep03", "EWQRMLLTNH", seed=103),
    Peptide("pep04", "PKAYYNTPFW", seed=104),
    Peptide("pep05", "GCHLWGRYKF", seed=105),
    Peptide("pep06", "VGIHVDDPMC", seed=106),
    Peptide("pep07", "WWKEHTCSFL", seed=107),
    Peptide("pep08", "MTATLRENMD", seed=108),
    Peptide("pep09", "FHYFANSAEV", seed=109),
    Peptide("pep10", "HCWSYKDTSV", seed=110),
    Peptide("pep11", "NIMMWRQCPA", seed=111),
    Peptide("pep12", "IRRAQCLDNY", seed=112),
    Peptide("pep13", "SGAKVCRVVK", seed=113),
    Peptide("pep14", "EDKEEITSPN", seed=114),
    # variants inside the chain (amber99sb-ildn has no terminal LYN/ASH/GLH entries)
    Peptide("var01", "GHKDEAHWSHYK", variants={2: "HID", 3: "LYN", 4: "ASH", 5: "GLH", 7: "HIP"}, seed=115),
    # Trp-cage TC5b; helical start keeps the dodecahedron small (a PPII 20-mer needs ~12,600 waters).
    Peptide("trpcage", "NLYIQWLKDGGPSSGRPPPS", split="test", seed=201, conformation="helix"),
]


#: The same training sequences started as an alpha helix (``NAMEh``) and from mixed basins
#: (``NAMEm``, each residue's phi/psi drawn from PPII/helix/extended): short MD does not cross
#: between basins, so the starts are what gives the model helical and extended bead geometries.
PEPTIDES += [Peptide(f"{p.name}h", p.sequence, variants=p.variants, seed=p.seed + 1000, conformation="helix")
             for p in list(PEPTIDES) if p.split == "train"]
PEPTIDES += [Peptide(f"{p.name}m", p.sequence, variants=p.variants, seed=p.seed + 2000, conformation="mixed")
             for p in PEPTIDES if p.split == "train" and p.conformation == "ppii"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def done(*paths: Path) -> bool:
    return all(p.is_file() and p.stat().st_size > 0 for p in paths)


def gromacs_version(settings: GromacsSettings) -> str:
    out = subprocess.run([settings.gmx, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"GROMACS version:\s*(\S+)", out)
    return m.group(1) if m else "unknown"


def stage_setup(pep: Peptide, work: Path, args, settings: GromacsSettings) -> None:
    """build -> pdb2gmx -> box -> solvate -> ions; each skipped when its outputs exist."""
    ff = PROTEIN_FORCEFIELDS[args.forcefield]
    if not done(work / "heavy.pdb"):
        log(f"{pep.name}: build {pep.sequence}")
        variants = {k: ff.residue_name(v) for k, v in pep.variants.items()}
        build_peptide_pdb(pep.sequence, work / "heavy.pdb", conformation=pep.conformation, seed=pep.seed, variants=variants)
    if not done(work / "topol.top", work / "protein.gro", work / "posre.itp"):
        log(f"{pep.name}: pdb2gmx {ff.pdb2gmx_ff}/{WATER}")
        pdb2gmx(work / "heavy.pdb", work, forcefield=ff.label, water=WATER, settings=settings)
    if not done(work / "boxed.gro"):
        log(f"{pep.name}: dodecahedron box, {args.pad} nm padding")
        run_tool("editconf", settings, cwd=work, f="protein.gro", o=".boxed.gro", bt="dodecahedron", d=args.pad, c=True)
        os.replace(work / ".boxed.gro", work / "boxed.gro")
    if not done(work / "solvated.gro", work / "solvated.top"):
        log(f"{pep.name}: solvate")
        shutil.copy(work / "topol.top", work / ".solvated.top")
        run_tool("solvate", settings, cwd=work, cp="boxed.gro", cs="spc216.gro", o=".solvated.gro", p=".solvated.top")
        os.replace(work / ".solvated.top", work / "solvated.top")
        os.replace(work / ".solvated.gro", work / "solvated.gro")
    if not done(work / "system.gro", work / "system.top"):
        log(f"{pep.name}: NaCl {args.salt} M + neutralise")
        render_mdp("aa_em", {"define": "", "nsteps": 0, "emtol": 1000}, work / "ions.mdp")
        grompp(work / "ions.mdp", work / "solvated.gro", work / "solvated.top", work / "ions.tpr", settings, maxwarn=1)
        shutil.copy(work / "solvated.top", work / ".system.top")
        run_tool("genion", settings, cwd=work, input="SOL", s="ions.tpr", o=".system.gro", p=".system.top",
                 pname=ff.ions["NA"], nname=ff.ions["CL"], neutral=True, conc=args.salt, seed=pep.seed)
        os.replace(work / ".system.top", work / "system.top")
        os.replace(work / ".system.gro", work / "system.gro")


def md_stage(name: str, template: str, values: dict, start: str, work: Path, settings: GromacsSettings,
             protein_xtc: bool = False, extendable: bool = False, edits: tuple = ()) -> bool:
    """grompp (once) + mdrun (continues from its checkpoint) until ``NAME.done`` exists.

    An ``extendable`` (production) stage asked for more steps (a larger ``--ns``) is extended in place
    (``convert-tpr -nsteps``, then mdrun continues from the checkpoint); any other change of
    settings is an error.  Returns True when mdrun ran.
    """
    stamp, tpr, spec = work / f"{name}.done", work / f"{name}.tpr", work / f"{name}.spec.json"
    old = json.loads(spec.read_text()) if tpr.is_file() and spec.is_file() else None
    if old is not None and old != values:
        if {k: v for k, v in old.items() if k != "nsteps"} != {k: v for k, v in values.items() if k != "nsteps"} \
                or values["nsteps"] < old["nsteps"] or not extendable:
            raise MultiscaleError(f"{tpr} was prepared with other settings ({old}): delete {work}/{name}.* "
                                  f"and the stages after it to redo them, or rerun with the same options (only --ns may grow)")
        log(f"{work.parent.name}: extending {name} to {values['nsteps']} steps")
        run_tool("convert-tpr", settings, cwd=work, s=tpr.name, nsteps=values["nsteps"], o=f".{tpr.name}")
        os.replace(work / f".{tpr.name}", tpr)
        atomic_write_text(spec, json.dumps(values, sort_keys=True))
        stamp.unlink(missing_ok=True)
    if stamp.is_file():
        return False
    if not tpr.is_file():
        mdp = render_mdp(template, values, work / f"{name}.mdp")
        edits = (*edits, (r"^compressed-x-grps\s*=.*$", "compressed-x-grps        = Protein")) if protein_xtc else edits
        text = mdp.read_text()
        for pattern, replacement in edits:
            text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
        atomic_write_text(mdp, text)
        grompp(mdp, work / start, work / "system.top", tpr, settings, maxwarn=1 if name == "em" else 0)
        atomic_write_text(spec, json.dumps(values, sort_keys=True))
    log(f"{work.parent.name}: mdrun {name}" + (" (continuing)" if (work / f"{name}.cpt").is_file() else ""))
    res = mdrun(tpr, work / name, settings)
    if not res.completed:
        raise MultiscaleError(f"mdrun {name} in {work} stopped early (-maxh or a signal): rerun the same command to continue")
    log(f"{work.parent.name}: {name} done in {res.wall_s:.0f} s" + (f", {res.ns_per_day:.1f} ns/day" if res.ns_per_day else ""))
    atomic_write_text(stamp, time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    return True


def stage_md(pep: Peptide, work: Path, args, settings: GromacsSettings) -> bool:
    """em -> nvt -> npt -> prod; True when production ran (new frames to export)."""
    common = {"dt": DT, "ref_t": TEMPERATURE, "tau_t": 0.1, "gen_seed": pep.seed, "nstenergy": 500, "nstlog": 5000}
    edits = PROTEIN_FORCEFIELDS[args.forcefield].mdp_edits
    md_stage("em", "aa_em", {"define": "", "nsteps": 5000, "emtol": 1000.0}, "system.gro", work, settings, edits=edits)
    md_stage("nvt", "aa_nvt", {**common, "define": "-DPOSRES", "nsteps": round(args.nvt_ps / DT), "nstxout_compressed": 0},
             "em.gro", work, settings, edits=edits)
    md_stage("npt", "aa_npt", {**common, "define": "-DPOSRES", "nsteps": round(args.npt_ps / DT), "nstxout_compressed": 0,
                               "tau_p": 2.0, "ref_p": 1.0}, "nvt.gro", work, settings, edits=edits)
    return md_stage("prod", "aa_md", {**common, "define": "", "nsteps": round(args.ns * 1000 / DT),
                               "nstxout_compressed": round(1.0 / DT), "tau_p": 2.0, "ref_p": 1.0},
             "npt.gro", work, settings, protein_xtc=True, extendable=True, edits=edits)


def stage_export(pep: Peptide, out: Path, work: Path, args, settings: GromacsSettings, fresh: bool = False) -> None:
    """Protein-only, whole-molecule md.xtc + start.gro + topology + provenance.json."""
    if not fresh and done(out / "md.xtc", out / "start.gro", out / "topol.top", out / "provenance.json"):
        return
    log(f"{pep.name}: export")
    run_tool("convert-tpr", settings, cwd=work, input="Protein", s="prod.tpr", o="protein.tpr")
    run_tool("trjconv", settings, cwd=work, input="System", s="protein.tpr", f="prod.xtc", o=str(out / ".md.xtc"), pbc="mol")
    run_tool("trjconv", settings, cwd=work, input="System", s="protein.tpr", f=str(out / ".md.xtc"), o=str(out / ".start.gro"),
             dump=0)
    for name in ("topol.top", "posre.itp"):
        shutil.copy(work / name, out / f".{name}")
        os.replace(out / f".{name}", out / name)
    os.replace(out / ".md.xtc", out / "md.xtc")
    os.replace(out / ".start.gro", out / "start.gro")
    atomic_write_text(out / "provenance.json", json.dumps(provenance(pep, work, args, settings), indent=2) + "\n")
    os.chmod(out / "provenance.json", 0o644)


def provenance(pep: Peptide, work: Path, args, settings: GromacsSettings) -> dict:
    counts = {}
    for line in (work / "system.top").read_text().split("[ molecules ]")[-1].splitlines():
        parts = line.split(";")[0].split()
        if len(parts) == 2:
            counts[parts[0]] = counts.get(parts[0], 0) + int(parts[1])
    return {
        "name": pep.name, "sequence": pep.sequence, "length": len(pep.sequence), "split": pep.split,
        "variants": {str(k): v for k, v in pep.variants.items()}, "seed": pep.seed,
        "force_field": args.forcefield, "pdb2gmx_ff": PROTEIN_FORCEFIELDS[args.forcefield].pdb2gmx_ff,
        "water": WATER if args.forcefield == "amber99sb-ildn" else "CHARMM TIP3P (the port's tip3p.itp)",
        "variants_as_named": {str(k): PROTEIN_FORCEFIELDS[args.forcefield].residue_name(v) for k, v in pep.variants.items()},
        "termini": "charged (NH3+/COO-, pdb2gmx default)",
        "start_conformation": f"{pep.conformation} (multiscale.chains.peptides.CONFORMATIONS; Pro phi -65), PeptideBuilder",
        "box": f"rhombic dodecahedron, {args.pad} nm padding", "salt_M": args.salt, "molecules": counts,
        "temperature_K": TEMPERATURE, "dt_ps": DT, "nvt_ps": args.nvt_ps, "npt_ps": args.npt_ps, "production_ns": args.ns,
        "thermostat": "v-rescale 0.1 ps", "barostat": "c-rescale 2 ps, 1 bar", "restraints": "heavy atoms in NVT/NPT only",
        "xtc": "protein only, every 1 ps, molecule made whole (trjconv -pbc mol)",
        "gromacs_version": gromacs_version(settings),
        "tools": {"PeptideBuilder": _version("PeptideBuilder"), "multiscale_script": "scripts/make_peptide_data.py"},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (one subfolder per peptide; default ~/.cache/multiscale/peptides[_charmm36m])")
    p.add_argument("--forcefield", choices=sorted(PROTEIN_FORCEFIELDS), default="amber99sb-ildn",
                   help="protein force field (default amber99sb-ildn; charmm36m needs the fetched CHARMM36 port)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="peptides to run (default: all)")
    p.add_argument("--ns", type=float, default=20.0, help="production length per peptide, ns (default 20)")
    p.add_argument("--nvt-ps", type=float, default=100.0, help="restrained NVT, ps (default 100)")
    p.add_argument("--npt-ps", type=float, default=100.0, help="restrained NPT, ps (default 100)")
    p.add_argument("--pad", type=float, default=1.0, help="solute-box distance, nm (default 1.0)")
    p.add_argument("--salt", type=float, default=0.15, help="NaCl concentration, M (default 0.15)")
    p.add_argument("--gmx", default="gmx", help="GROMACS driver (default gmx)")
    p.add_argument("--nt", type=int, default=1, help="mdrun -nt threads (default 1)")
    p.add_argument("--maxh", type=float, default=None, help="mdrun -maxh per call; rerun to continue")
    p.add_argument("--list", action="store_true", help="print the peptide list and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for pep in PEPTIDES:
            print(f"{pep.name:8s} {pep.split:5s} {len(pep.sequence):2d} {pep.sequence} {pep.variants or ''}")
        return 0
    known = {p.name: p for p in PEPTIDES}
    unknown = [n for n in args.only or [] if n not in known]
    if unknown:
        print(f"error: unknown peptide(s) {', '.join(unknown)}: use names from --list", file=sys.stderr)
        return 2
    settings = GromacsSettings(gmx=args.gmx, nt=args.nt, maxh=args.maxh)
    if args.out is None:
        suffix = "" if args.forcefield == "amber99sb-ildn" else f"_{args.forcefield}"
        args.out = Path.home() / ".cache" / "multiscale" / f"peptides{suffix}"
    try:
        PROTEIN_FORCEFIELDS[args.forcefield].set_env()
        for pep in [known[n] for n in args.only] if args.only else PEPTIDES:
            out = args.out.expanduser().resolve() / pep.name
            work = out / "work"
            work.mkdir(parents=True, exist_ok=True)
            stage_setup(pep, work, args, settings)
            ran = stage_md(pep, work, args, settings)
            stage_export(pep, out, work, args, settings, fresh=ran)
            log(f"{pep.name}: ready in {out}")
    except MultiscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _check_coverage() -> None:
    """Every amino acid occurs in the training peptides (asserted at import; cheap)."""
    train = "".join(p.sequence for p in PEPTIDES if p.split == "train")
    missing = set(AMINO_ACIDS) - set(train)
    assert not missing, f"training peptides miss {missing}"


_check_coverage()

if __name__ == "__main__":
    sys.exit(main())

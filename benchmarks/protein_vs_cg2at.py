#!/usr/bin/env python3
"""Held-out protein: CG2AT2 (de novo) vs multiscale's shipped chain model on the same martinize2 CG frames.

    python benchmarks/protein_vs_cg2at.py [--data datasets/peptides] [--peptide trpcage] [--frames 5]
        [--venv /tmp/cg2at-venv] [--out benchmarks/results/protein_vs_cg2at.md]

The last ``--frames`` AA frames of the held-out peptide are coarse-grained (martinize2's beads,
``multiscale coarse-grain``, one CG PDB per frame); each is backmapped by

* CG2AT2 1.0.2 in its own virtual environment (``pip install cg2at2==1.0.2``), de novo:
  ``cg2at -c cg.pdb -ff charmm36-cg2at -fg martini_3-0_charmm36 -w tip3p -o none`` (its output
  has been through its own energy minimisation and short NVT; CHARMM36 names);
* ``multiscale backmap`` with the shipped chain model (amber names; before any EM).

Both are scored with ``multiscale evaluate``'s protein criteria (cis peptides, D residues,
clash score) on their own topologies, heavy-atom RMSD to the true frame (atoms matched by residue
and name; CHARMM's ILE CD / OT1 / OT2 = amber's CD1 / OC1 / OC2) and bead RMSD after
coarse-graining the output again with martinize2's weights for its naming; wall time per frame.

``--cg-md``: the frames come from Martini 3 MD instead, as a user's would: the last held-out AA frame
through ``martinize2 -elastic`` (DSSP secondary structure), solvated by insane (W, 0.15 M NaCl), EM
and ``--cg-ns`` ns of NPT (the Martini settings of ``scripts/make_bilayer_data.py``); the protein's
beads of the last ``--frames`` frames, made whole, are the CG input of both tools.  There is no
true AA frame then, so no heavy-atom RMSD; the bead RMSD is to the MD frame.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "scripts"))
from protein_backmap import sh  # noqa: E402  (one command runner for both protein benchmarks)

ALIAS = {("ILE", "CD"): "CD1", "OT1": "OC1", "OT2": "OC2"}


def heavy_keys(top) -> list:
    """(residue index, amber-style name) per heavy atom of the first moleculetype, and indices."""
    mt = top.blocks[0].moltype
    _, ridx = np.unique(np.asarray(mt.residues), return_inverse=True)
    out = {}
    for i, (nm, el, rn) in enumerate(zip(mt.atom_names, mt.elements, mt.resnames)):
        if el != "H":
            key = ALIAS.get((rn[-3:], nm), ALIAS.get(nm, nm))
            out[(int(ridx[i]), key)] = i
    return out


def scores(top, x, box, truth_top, truth_x, cg) -> dict:
    from multiscale.chains.martinize import chain_mapping_from_moltype
    from multiscale.coarse_grain import whole_molecules
    from multiscale.evaluate.protein import _superposed_rmsd, protein_criteria
    from multiscale.geometry import box_matrix, minimum_image

    bm = box_matrix(box)
    x = whole_molecules(x[None], bm[None], top.blocks[0])[0, 0]  # CG2AT2 writes the protein wrapped into its box
    c = protein_criteria(top, x[None], box[None])
    rmsd, common = float("nan"), []
    if truth_x is not None:
        a, b = heavy_keys(top), heavy_keys(truth_top)
        common = sorted(set(a) & set(b))
        ia, ib = [a[k] for k in common], [b[k] for k in common]
        rmsd = float(_superposed_rmsd(x[None, ia], truth_x[None, ib])[0])
    beads = chain_mapping_from_moltype(top.blocks[0].moltype).coarse_grain(x)
    shift = minimum_image(beads[0] - cg[0], bm)  # same image as the input (CG2AT2 may move the protein by a box vector)
    beads = beads - (beads[0] - cg[0]) + shift
    return {"cis_non_pro": c["cis_peptides_non_pro"], "d_residues": c["d_residues"], "distorted_centres": c["distorted_centres"],
            "clash_score_pct": c["clash_score_pct"],
            "rmsd_heavy_nm": rmsd, "matched_heavy": len(common), "bead_rmsd_nm": float(np.sqrt(((beads - cg) ** 2).sum(-1).mean())),
            "bead_rmsd_centred_nm": float(np.sqrt(((beads - beads.mean(0) - cg + cg.mean(0)) ** 2).sum(-1).mean()))}


def mapped_frames(src: Path, work: Path, n: int) -> list:
    """(folder with cg.pdb, CG beads (nb, 3) nm, true AA frame) for the last ``n`` AA frames, each
    coarse-grained with martinize2's weights (``multiscale coarse-grain``)."""
    from multiscale.io import read_frames
    from multiscale.topology import load_topology

    fr = read_frames(src / "start.gro", src / "md.xtc", expected_atoms=load_topology(src / "topol.top").n_atoms)
    out = []
    for f in range(fr.n_frames - n, fr.n_frames):
        d = work / f"f{f}"
        d.mkdir()
        sh(BIN / "multiscale", "coarse-grain", "--topology", src / "topol.top", "--structure", src / "start.gro",
           "--trajectory", src / "md.xtc", "--start", f, "--stop", f + 1, "--output", "cg.pdb", cwd=d)
        out.append((d, np.asarray(read_frames(d / "cg.pdb").positions[0], np.float64), np.asarray(fr.positions[f], np.float64)))
    return out


def cg_md_frames(src: Path, work: Path, n: int, ns: float, seed: int, nt: int) -> list:
    """(folder with cg.pdb, CG beads (nb, 3) nm, None) for the last ``n`` frames of Martini 3 MD of the
    protein built by martinize2 with an elastic network from the last AA frame (see module docstring)."""
    from make_bilayer_data import MD_CG, MDP_CG, martini3_ions
    from make_membrane_protein_example import molecules

    from multiscale import forcefields as ff
    from multiscale.backmap.features import unwrap_beads
    from multiscale.chains.topology import martini_topology
    from multiscale.coarse_grain import whole_molecules
    from multiscale.io import read_frames, write_frames
    from multiscale.paths import find_data
    from multiscale.topology import load_topology
    from multiscale.workflow.martinize import itp_moleculetypes

    md = work / "cg_md"
    md.mkdir()
    top = load_topology(src / "topol.top")
    fr = read_frames(src / "start.gro", src / "md.xtc", expected_atoms=top.n_atoms)
    b = top.blocks[0]
    x = whole_molecules(fr.positions[-1:], fr.box[-1:], b)[0, 0]
    write_frames(md / "aa.gro", x, fr.box[-1], b.moltype.atom_names, b.moltype.resnames, top.atom_resids()[b.start:b.stop])
    mt = martini_topology(md / "aa.gro", md / "martinize2", elastic=True, name="protein")
    (name, beads), = itp_moleculetypes(mt.itps).items()
    shutil.copy2(mt.itps[0], md / "protein.itp")
    sh(sys.executable, "-W", "ignore", "-c", "import sys; from insane.cli import cli; sys.exit(cli())", "-f", mt.cg_pdb,
       "-o", "insane.gro", "-p", "insane.top", "-sol", "W", "-salt", "0.15", "-pbc", "cubic", "-d", "1.2", "-center", cwd=md)
    lines = martini3_ions((md / "insane.gro").read_text().splitlines())
    (md / "system.gro").write_text("\n".join(lines) + "\n")
    (md / "cg.top").write_text(f'#include "{ff.martini3_itp()}"\n#include "protein.itp"\n\n[ system ]\nprotein in water\n\n'
                               "[ molecules ]\n" + "".join(f"{m} {k}\n" for m, k in molecules(lines, len(beads), name)))
    for stage, mdp, gro in (("em", MDP_CG.format(integrator="steep", run="nsteps = 5000", nstxtc=0), "system.gro"),
                            ("md", MDP_CG.format(integrator="md", nstxtc=int(round(ns * 1000 / 0.02 / n / 5)),
                                                 run=MD_CG.format(nsteps=int(round(ns * 1000 / 0.02)), temp=300, seed=seed)),
                             "em.gro")):
        (md / f"{stage}.mdp").write_text(mdp)
        sh("gmx", "grompp", "-f", f"{stage}.mdp", "-c", gro, "-p", "cg.top", "-o", f"{stage}.tpr", "-maxwarn", "1", cwd=md)
        sh("gmx", "mdrun", "-deffnm", stage, "-nt", nt, cwd=md)
    core = find_data("topologies", "martini3/martini_v3.0.0.itp")
    (md / "protein.top").write_text(f'#include "{core}"\n#include "protein.itp"\n\n[ system ]\nprotein\n\n'
                                    f"[ molecules ]\n{name} 1\n")
    ctop = load_topology(md / "protein.top")  # the protein's beads come first in every frame
    traj = read_frames(md / "em.gro", md / "md.xtc")
    out = []
    for f in range(traj.n_frames - n, traj.n_frames):
        d = work / f"f{f}"
        d.mkdir()
        cb = ctop.blocks[0]
        cg = unwrap_beads(traj.positions[f, :cb.stop], traj.box[f])  # bead k at the image nearest bead k-1 (vsites too)
        write_frames(d / "cg.pdb", cg, traj.box[f], cb.moltype.atom_names, cb.moltype.resnames,
                     ctop.atom_resids()[cb.start:cb.stop])
        out.append((d, np.asarray(read_frames(d / "cg.pdb").positions[0], np.float64), None))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "datasets" / "peptides")
    p.add_argument("--peptide", default="trpcage")
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--venv", type=Path, default=Path("/tmp/cg2at-venv"))
    p.add_argument("--out", type=Path, default=None, help="default: results/protein_vs_cg2at[_cg_md].md")
    p.add_argument("--cg-md", action="store_true", help="frames from Martini 3 MD (elastic network), not mapped AA frames")
    p.add_argument("--cg-ns", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--nt", type=int, default=2)
    a = p.parse_args(argv)
    a.out = a.out or ROOT / "benchmarks" / "results" / f"protein_vs_cg2at{'_cg_md' if a.cg_md else ''}.md"
    from multiscale.io import read_frames
    from multiscale.topology import load_topology

    cg2at = a.venv / "bin" / "cg2at"
    if not cg2at.exists():
        sh(sys.executable, "-m", "venv", a.venv, cwd=".")
        sh(a.venv / "bin" / "pip", "install", "-q", "cg2at2==1.0.2", cwd=".")
    src = a.data / a.peptide
    top = load_topology(src / "topol.top")
    work = Path(tempfile.mkdtemp(prefix="cg2at_vs_"))
    frames = (cg_md_frames(src, work, a.frames, a.cg_ns, a.seed, a.nt) if a.cg_md else mapped_frames(src, work, a.frames))
    rows = {"CG2AT2 1.0.2 (de novo, after its EM)": [], "multiscale shipped model (before EM)": []}
    for d, cg, truth in frames:
        f = d.name
        t = sh(cg2at, "-c", "cg.pdb", "-ff", "charmm36-cg2at", "-fg", "martini_3-0_charmm36", "-w", "tip3p", "-o", "none",
                 "-loc", "out", cwd=d)
        ctop = load_topology(d / "out" / "FINAL" / "topol_final.top")
        cx = read_frames(d / "out" / "FINAL" / "final_cg2at_de_novo.pdb")
        rows["CG2AT2 1.0.2 (de novo, after its EM)"].append(
            {**scores(ctop, np.asarray(cx.positions[0], np.float64), np.asarray(cx.box[0]), top, truth, cg), "seconds": t})
        t = sh(BIN / "multiscale", "backmap", "--cg", "cg.pdb", "--topology", src / "topol.top", "--output", "ms.gro", cwd=d)
        mx = read_frames(d / "ms.gro")
        rows["multiscale shipped model (before EM)"].append(
            {**scores(top, np.asarray(mx.positions[0], np.float64), np.asarray(mx.box[0]), top, truth, cg), "seconds": t})
        print(f"frame {f}: " + json.dumps({k: v[-1] for k, v in rows.items()}), flush=True)
    keys = ["cis_non_pro", "d_residues", "distorted_centres", "clash_score_pct", "rmsd_heavy_nm", "bead_rmsd_nm", "bead_rmsd_centred_nm", "seconds"]
    source = (f"the last {a.frames} frames of {a.cg_ns:g} ns of Martini 3 MD (martinize2 -elastic, insane W + 0.15 M NaCl, "
              f"seed {a.seed}), the protein's beads made whole" if a.cg_md else
              f"the last {a.frames} AA frames of the peptide's run; each frame coarse-grained with martinize2's weights")
    lines = [f"# {a.peptide} (held out): CG2AT2 vs multiscale on the same martinize2 CG frames", "",
             f"Means over {source}; backmapped by each tool, scored by `multiscale evaluate`'s protein criteria. seconds: whole "
             "command per frame (start-up included). RMSD: heavy atoms matched by residue and name, after superposition; "
             "bead RMSD: output coarse-grained again vs the CG input, as is and after removing the mean shift.", "",
             "| tool | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for tool, rs in rows.items():
        lines.append(f"| {tool} | " + " | ".join(f"{np.mean([r[k] for r in rs]):.4g}" for k in keys) + " |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

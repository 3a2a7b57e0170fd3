#!/usr/bin/env python3
"""Held-out protein backmapping: shipped chain model vs the same model fine-tuned on the protein.

    python benchmarks/protein_backmap.py [--data datasets/peptides] [--peptide trpcage] [--frames 10]
        [--finetune-frames 30] [--seed 0] [--out benchmarks/results/protein_backmap.md]

The peptide (default Trp-cage TC5b, ``split: test``: never in the shipped model's training data)
is cut in two: its first ``--finetune-frames`` AA frames may be used for fine-tuning, the last
``--frames`` frames are the test.  The test frames are coarse-grained (martinize2's weights,
``multiscale coarse-grain``), then backmapped by the real commands:

    multiscale backmap --cg cg.gro --topology topol.top --output shipped.gro            # shipped model
    multiscale train --init <shipped model> ... --stop N --output ft.pt                   # fine-tune
    multiscale backmap --cg cg.gro --topology topol.top --model ft.pt --output ft.gro

and scored with ``multiscale evaluate``'s protein criteria against the AA frames before the test
frames (Ramachandran / chi JSD; the true test frames are scored alike, the JSD of a perfect
backmap) and the true frames (RMSD):
cis peptides, D residues, clash score, ring penetrations (before any EM), bead RMSD after
re-coarse-graining the output with the ``martinize2`` program itself, wall times.
"""

from __future__ import annotations

import argparse
import json
import shutil
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


def sh(*cmd, cwd=None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def martinize_beads(aa_pdb: Path, work: Path, n_res: int, naming: str = "amber") -> np.ndarray:
    """Bead positions (nm) martinize2 itself writes for an AA PDB (``naming``: amber or charmm; no DSSP)."""
    sh(BIN / "martinize2", "-f", aa_pdb, "-x", work / "mz.pdb", "-o", work / "mz.top", "-ff", "martini3001",
       "-from", naming, "-ss", "C" * n_res, "-maxwarn", "100", cwd=work)
    xyz = [[float(line[30:38]), float(line[38:46]), float(line[46:54])]
           for line in (work / "mz.pdb").read_text().splitlines() if line.startswith(("ATOM", "HETATM"))]
    return np.array(xyz) / 10.0


def score(label, top, x, box, ref_all, ref_true, extra) -> dict:
    from multiscale.evaluate.metrics import ring_penetrations
    from multiscale.evaluate.protein import protein_criteria
    from multiscale.graph import MolecularGraph

    crit = protein_criteria(top, x, box, ref_all)
    crit_true = protein_criteria(top, x, box, ref_true)
    mt = top.blocks[0].moltype
    g = MolecularGraph(mt.n_atoms, mt.bonds, mt.elements)
    pen = 0
    for ring in g.rings():
        for f in range(len(x)):
            pen += len(ring_penetrations(x[f], box[f], np.asarray(ring)[None], np.asarray(mt.bonds)))
    return {"model": label, "cis_non_pro": crit["cis_peptides_non_pro"], "cis_pro": crit["cis_peptides_pro"],
            "d_residues": crit["d_residues"], "clash_score_pct": crit["clash_score_pct"], "ring_penetrations": pen,
            "rama_jsd": crit["rama_jsd_mean"], "rama_floor": crit["rama_jsd_floor_mean"], "chi_jsd": crit["chi_jsd_mean"],
            "bond_score": crit["bond_score"], "rmsd_heavy_nm": crit_true["rmsd_heavy_nm"],
            "rmsd_backbone_nm": crit_true["rmsd_backbone_nm"], **extra}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "datasets" / "peptides")
    p.add_argument("--peptide", default="trpcage")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--finetune-frames", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", type=Path, default=None, help="shipped model file to test (default: the package's)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "protein_backmap.md")
    a = p.parse_args(argv)
    from multiscale.chains.shipped import shipped_model_path
    from multiscale.io import read_frames
    from multiscale.topology import load_topology

    src = a.data / a.peptide
    meta = json.loads((src / "provenance.json").read_text())
    from multiscale.chains.martinize import guess_source_ff

    top = load_topology(src / "topol.top")
    naming = guess_source_ff(top.blocks[0].moltype.atom_names, top.blocks[0].moltype.resnames)
    shipped = a.model or shipped_model_path(naming)
    allf = read_frames(src / "start.gro", src / "md.xtc", expected_atoms=top.n_atoms)
    F = allf.n_frames
    first_test = F - a.frames
    if first_test < a.finetune_frames:
        raise SystemExit(f"{src}: {F} frames cannot hold {a.finetune_frames} fine-tune + {a.frames} test frames")
    work = Path(tempfile.mkdtemp(prefix="protein_bench_"))
    ms = BIN / "multiscale"
    t_cg = sh(ms, "coarse-grain", "--topology", src / "topol.top", "--structure", src / "start.gro", "--trajectory",
              src / "md.xtc", "--start", first_test, "--output", work / "cg.gro", cwd=work)
    t_ship = sh(ms, "backmap", "--cg", work / "cg.gro", "--topology", src / "topol.top", "--output", work / "shipped.gro",
                "--model", shipped, "--seed", a.seed, "--report", work / "shipped.json", cwd=work)
    t_ft = sh(ms, "train", "--topology", src / "topol.top", "--structure", src / "start.gro", "--trajectory", src / "md.xtc",
              "--stop", a.finetune_frames, "--init", shipped, "--seed", a.seed, "--output", work / "ft.pt", cwd=work)
    t_ftb = sh(ms, "backmap", "--cg", work / "cg.gro", "--topology", src / "topol.top", "--output", work / "ft.gro",
               "--model", work / "ft.pt", "--seed", a.seed, "--report", work / "ft.json", cwd=work)
    cg = read_frames(work / "cg.gro")
    ref_true = np.asarray(allf.positions[first_test:], np.float64)
    ref_jsd = np.asarray(allf.positions[:first_test], np.float64)  # the JSD reference: the frames before the test frames
    rows = []
    for label, out, t in (("shipped", "shipped.gro", t_ship), ("fine-tuned", "ft.gro", t_ftb)):
        fr = read_frames(work / out, expected_atoms=top.n_atoms)
        x = np.asarray(fr.positions, np.float64)
        # re-coarse-grain the first output frame with martinize2 itself
        sh(ms, "coarse-grain", "--topology", src / "topol.top", "--structure", work / out, "--stop", 1,
           "--output", work / f"{label}_cg.gro", cwd=work)
        from multiscale.io import write_frames

        write_frames(work / f"{label}0.pdb", x[0], fr.box[:1], top.per_atom("atom_names"), top.per_atom("resnames"),
                     top.atom_resids())
        mz = martinize_beads(work / f"{label}0.pdb", work, len(meta["sequence"]), naming)
        dev = float(np.sqrt(((mz - cg.positions[0]) ** 2).sum(-1).mean())) if mz.shape == cg.positions[0].shape else float("nan")
        cert = json.loads((work / out.replace(".gro", ".json")).read_text())  # the --report of that backmap
        engine_s = sum(c["seconds"] for c in cert)
        rows.append(score(label, top, x, np.asarray(fr.box), ref_jsd, ref_true,
                          {"backmap_s": round(t, 2), "engine_ms_per_frame": round(1000 * engine_s / len(cert), 1),
                           "certificates_ok": f"{sum(bool(c['ok']) for c in cert)}/{len(cert)}",
                           "martinize2_bead_rmsd_nm": dev}))
    # the true AA test frames scored alike: the JSD a perfect backmap of these frames would have (the
    # reference-halves floor compares 25-frame samples, the test has 10: its finite-sample JSD is higher)
    rows.append(score("true AA frames", top, ref_true, np.asarray(allf.box[first_test:]), ref_jsd,
                      ref_true, {"backmap_s": float("nan"), "engine_ms_per_frame": float("nan"), "certificates_ok": "-",
                                 "martinize2_bead_rmsd_nm": float("nan")}))
    res = {"peptide": a.peptide, "force_field": meta.get("force_field"), "naming": naming, "sequence": meta["sequence"],
           "residues": len(meta["sequence"]), "test_frames": a.frames,
           "finetune_frames": a.finetune_frames, "reference_frames": F, "coarse_grain_s": round(t_cg, 2),
           "finetune_s": round(t_ft, 1), "model": str(shipped), "rows": rows}
    print(json.dumps(res, indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    keys = ["cis_non_pro", "cis_pro", "d_residues", "clash_score_pct", "ring_penetrations", "rama_jsd", "rama_floor", "chi_jsd",
            "bond_score", "rmsd_heavy_nm", "rmsd_backbone_nm", "martinize2_bead_rmsd_nm", "certificates_ok",
            "engine_ms_per_frame", "backmap_s"]
    lines = [f"# Held-out protein backmap: {a.peptide} ({meta['sequence']}, {len(meta['sequence'])} residues; "
             f"{meta.get('force_field')}, {naming} names)", "",
             f"{a.frames} test frames (the last of {F}); fine-tuning on the first {a.finetune_frames} ({t_ft:.0f} s); "
             f"reference for JSD: the {first_test} AA frames before the test frames (floor: two halves of them; the row "
             f"'true AA frames' scores the {a.frames} true test frames alike: the JSD a perfect backmap of them would have). "
             "Per-frame means, "
             "before any energy minimisation. backmap_s: the whole command (start-up, vermouth's mapping, I/O); "
             "engine_ms_per_frame: the engine's own time per frame (certificate reports).", "",
             "| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")
    (a.out).write_text("\n".join(lines) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Every shipped lipid model on atomistic bilayer frames it never saw, scored per lipid.

    python benchmarks/lipid_models.py --data DIR [--data DIR2 ...] [--cg-bilayer CGDIR] \
        [--out benchmarks/results/lipid_models.md]

``--data``: folders written by ``scripts/make_bilayer_data.py`` that shipped models were trained on;
their production frames after the trained span (from each model file's provenance) are the
held-out reference.  Those frames are coarse-grained (``multiscale coarse-grain``) and backmapped
with the shipped models (``multiscale backmap``, no ``--model``), then, per lipid, before any EM:
stereocentres right by the mapping file's ``[ chiral ]`` record (independent of the engine),
near-flat centres, cis double bonds, twisted cis bonds, tail C-C torsion JSD against the held-out
frames (finite-sample floor alongside), and the certificate's clashes.  ``--cg-bilayer``: a
``make_bilayer_data.py --cg-only`` folder (insane Martini 3 mixture, never simulated atomistically):
topology, backmap and the same stereo counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from membrane_backmap import MS, sh, timed  # noqa: E402

#: sterol side-chain torsions scored for cholesterol (no acyl chains)
STEROL_TORSIONS = [("C13", "C17", "C20", "C22"), ("C17", "C20", "C22", "C23"), ("C20", "C22", "C23", "C24"),
                   ("C22", "C23", "C24", "C25")]


def held_out_span(folder: Path) -> tuple[float, list[str]]:
    """End of the trained span (ps) of the shipped models trained on ``folder`` and their lipids."""
    from multiscale.backmap.model_file import load_model
    from multiscale.backmap.shipped import shipped_lipid_files

    ends, names = [], []
    for p in shipped_lipid_files():
        for prov in load_model(p).provenance:
            if prov.get("folder") == folder.name:
                ends.append(float(prov["trained_time_ps"][1]))
                names.append(p.stem)
    if not ends:
        raise SystemExit(f"no shipped lipid model was trained on a folder named {folder.name}")
    return max(ends), names


def torsions(x, names) -> dict:
    """{label: (F*M,) radians} of the tail C-C torsions (acyl chains, or the sterol side chain)."""
    from multiscale.geometry import dihedral
    from multiscale.lipid_analysis import tail_torsions

    out = {}
    if "C21" in names or "C31" in names:
        for c in (2, 3):
            labels, v = tail_torsions(x, names, c)
            out.update({lab: v[:, k] for k, lab in enumerate(labels)})
    else:
        idx = {a: k for k, a in enumerate(names)}
        xf = np.asarray(x, float).reshape(-1, len(names), 3)
        for q in STEROL_TORSIONS:
            if all(a in idx for a in q):
                out["-".join(q)] = dihedral(*(xf[:, idx[a]] for a in q))
    return out


def score(top, frames, hints_of, ref=None) -> dict:
    """Per lipid moleculetype of ``top``: stereo counts and (with ``ref`` torsions) JSD."""
    from multiscale.evaluate import metrics as M
    from multiscale.lipid_analysis import lipid_coordinates, stereo_ok, stereo_quality

    out = {}
    for blk in top.blocks:
        name = blk.moltype.name
        if name not in hints_of:
            continue
        x = lipid_coordinates(frames.positions, frames.box, blk)
        mt = blk.moltype
        h = hints_of[name]
        chiral, cis = stereo_ok(x, mt.atom_names, h)
        flat, twisted = stereo_quality(x, mt.atom_names, h)
        r = {"n": int(chiral.size), "chiral_ok": int(chiral.sum()), "flat": int(flat.sum()),
             "cis_ok": int(cis.sum()), "twisted": int(twisted.sum()), "n_chiral": len(h.get("chiral", [])),
             "n_cis": len(h.get("cis", []))}
        t = torsions(x, mt.atom_names)
        if ref is not None and name in ref:
            j = [M.jsd(M.histogram(t[k], "torsion"), M.histogram(ref[name][k], "torsion")) for k in t]
            fl = [M.jsd_floor(ref[name][k], len(t[k]), "torsion", seed=0) for k in t]
            r.update(jsd_mean=float(np.mean(j)), jsd_max=float(np.max(j)), floor_mean=float(np.mean(fl)), torsions=len(j))
        out[name] = {**r, "_torsions": t}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, nargs="+", required=True)
    p.add_argument("--cg-bilayer", type=Path, default=None)
    p.add_argument("--work", type=Path, default=Path("/tmp/lipid_models"))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lipid_models.md")
    a = p.parse_args(argv)
    from multiscale.classes.lipid import lipid_mapping
    from multiscale.io import read_frames, write_frames
    from multiscale.topology import load_topology

    def hints(top):  # the mapping file's stereo records of every lipid moleculetype
        return {mt.name: m.hints for mt in top.moltypes.values() if (m := lipid_mapping(mt)) is not None}

    a.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for folder in a.data:
        folder = folder.expanduser().resolve()
        w = a.work / folder.name
        w.mkdir(exist_ok=True)
        end, trained = held_out_span(folder)
        top = load_topology(folder / "topol.top")
        structure = folder / "prod.gro" if (folder / "prod.gro").is_file() else folder / "npt.gro"
        fr = read_frames(structure, folder / "prod.xtc", expected_atoms=top.n_atoms)
        held = fr.subset(np.flatnonzero(fr.times > end + 1e-6))
        if held.n_frames < 2:
            raise SystemExit(f"{folder}: {held.n_frames} frames after the trained span (to {end} ps): run it longer")
        h = hints(top)
        names, resn, resi = top.per_atom("atom_names"), top.per_atom("resnames"), top.atom_resids()
        write_frames(w / "held.xtc", held.positions, held.box, names, resn, resi, times=held.times)
        write_frames(w / "held0.gro", held.positions[0], held.box[:1], names, resn, resi)
        sh(MS, "coarse-grain", "--topology", folder / "topol.top", "--structure", w / "held0.gro", "--trajectory",
           w / "held.xtc", "--output", w / "held_cg.gro")
        wall, peak = timed(MS, "backmap", "--cg", w / "held_cg.gro", "--topology", folder / "topol.top", "--output",
                           w / "held_bm.gro", "--seed", "3", "--report", w / "report.json", cwd=w)
        ref = {k: v["_torsions"] for k, v in score(top, held, h).items()}
        got = score(top, read_frames(w / "held_bm.gro", expected_atoms=top.n_atoms), h, ref)
        reps = json.loads((w / "report.json").read_text())
        for name in trained:
            if name in got:
                clash = sum(r["per_moltype"].get(name, {}).get("clash_molecules_final", 0) for r in reps)
                rows.append((f"{folder.name}, {held.n_frames} held-out frames ({held.times[0]:.0f}-{held.times[-1]:.0f} ps), "
                             f"command {wall:.1f} s", name, got[name], clash))
    if a.cg_bilayer:
        w = a.work / "cg_bilayer"
        w.mkdir(exist_ok=True)
        cg = a.cg_bilayer.expanduser().resolve()
        sh(MS, "topology", "--cg-topology", cg / "cg.top", "--output", w / "aa.top")
        wall, peak = timed(MS, "backmap", "--cg", cg / "cg_md.gro", "--topology", w / "aa.top", "--output", w / "aa.gro",
                           "--seed", "1", "--report", w / "report.json", cwd=w)
        top = load_topology(w / "aa.top")
        got = score(top, read_frames(w / "aa.gro"), hints(top))
        rep = json.loads((w / "report.json").read_text())[0]
        for name, r in got.items():
            rows.append((f"insane Martini 3 mixture ({top.n_atoms} AA atoms), command {wall:.1f} s", name, r,
                         rep["per_moltype"].get(name, {}).get("clash_molecules_final", 0)))
    text = ["# Shipped lipid models on data they never saw (`benchmarks/lipid_models.py`)", "",
            "Machine: 2-core VM, no GPU. Backmapped with the shipped models (no `--model`); all numbers before any EM. "
            "Centres/cis from the mapping file's records; flat: normalised signed volume < 0.3; twisted: |cis dihedral| > 30 deg.", "",
            "| sample | lipid | molecules | centres right / flat | cis right / twisted | tail torsion JSD mean / max (floor) | clashing after certificate |",
            "|---|---|---|---|---|---|---|"]
    for label, name, r, clash in rows:
        jsd = f"{r['jsd_mean']:.3f} / {r['jsd_max']:.3f} ({r['floor_mean']:.3f})" if "jsd_mean" in r else "-"
        cis = f"{r['cis_ok']} / {r['twisted']}" if r["n_cis"] else "-"
        text.append(f"| {label} | {name} | {r['n']} | {r['chiral_ok']} / {r['flat']} | {cis} | {jsd} | {clash} |")
    a.out.write_text("\n".join(text) + "\n")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

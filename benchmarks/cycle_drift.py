#!/usr/bin/env python3
"""Drift of AA observables over the cycles of an example, against plain AA MD of the same AA length.

    python benchmarks/cycle_drift.py DIR [--example heptanol|heptanol_nacl] [--cycles 10] [--volume aa|own]
                                         [--analyse-only]

1. Runs (resumable; rerun to continue) DIR/cycle (the example with ``cycles: N``) and DIR/plain
   (plain AA of N x (aa.md + restrained.eq + restrained.relax), same aa_md template and output
   frequencies), side by side, see benchmarks/cycle_runs.py.
2. Per cycle, over the last ``--tail`` (default half, as ``multiscale report``) of that cycle's aa-md
   (the AA production segment, i.e. the end of each AA segment): density and Epot/molecule (.edr), H-bonds per molecule, the solute-COM and
   water O-O g(r) (first-peak height, JSD vs the plain run), the heavy-atom torsion distributions
   (mean JSD over torsion types vs the plain run) -- with the functions of multiscale.runreport.
   The density right after the switch (the relax segment's .edr mean) is listed as well.
3. The plain run is cut into N blocks of one cycle's AA length; each block is analysed over its
   last tail x aa.md ps (the same number of frames as the cycle's window): the plain mean +- spread
   (standard deviation over blocks) and its own slope are the reference.
4. For each observable: least-squares slope vs cycle with its standard error; "drift" when
   |slope| > 2 SE.  Markdown table on stdout and in DIR/drift.md, numbers in DIR/drift.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cycle_runs  # noqa: E402

from multiscale.evaluate.metrics import histogram, jsd, term_values  # noqa: E402
from multiscale.evaluate.terms import molecule_terms  # noqa: E402
from multiscale.geometry import minimum_image  # noqa: E402
from multiscale.gromacs.runner import GromacsSettings  # noqa: E402
from multiscale.io import Frames, read_frames  # noqa: E402
from multiscale.runreport.collect import RDF_BIN_NM  # noqa: E402
from multiscale.runreport.observables import density_kg_m3, max_rdf_radius  # noqa: E402
from multiscale.runreport.segments import System, analyse_aa, edr_series  # noqa: E402
from multiscale.topology import load_topology  # noqa: E402

#: observables of the table: key -> (label, unit)
OBS = {"density_kg_m3": ("density", "kg/m³"), "epot_per_molecule_kj_mol": ("Epot per molecule", "kJ/mol"),
       "hbonds_solute_solute": ("H-bonds solute–solute per solute", ""),
       "hbonds_solute_water": ("H-bonds solute–water per solute", ""),
       "hbonds_water_water": ("H-bonds water–water per water", ""),
       "rdf_peak_solute_com": ("solute COM g(r) first peak", ""), "rdf_peak_water_oo": ("water O–O g(r) first peak", ""),
       "rdf_jsd_solute_com": ("solute COM g(r) JSD vs plain AA", ""), "rdf_jsd_water_oo": ("water O–O g(r) JSD vs plain AA", ""),
       "torsion_jsd": ("heavy torsions, mean JSD vs plain AA", ""), "relax_density_kg_m3": ("density right after the switch (relax)", "kg/m³")}
PEAK_WINDOW_NM = {"solute_com": (0.3, 0.8), "water_oo": (0.24, 0.33)}


def _cut(fr: Frames, idx) -> Frames:
    return Frames(fr.positions[idx], fr.box[idx], fr.times[idx], fr.names, fr.resnames, fr.resids)


def _cut_series(series: dict, t0: float, t1: float) -> dict:
    keep = (series["time"] >= t0 - 1e-6) & (series["time"] <= t1 + 1e-6)
    return {k: v[keep] for k, v in series.items()}


def torsion_types(top) -> list[tuple]:
    """(block, atom index array) of every heavy-atom torsion type of the solutes."""
    out = []
    for b in top.blocks:
        if b.moltype.is_water or b.moltype.n_atoms < 4:
            continue
        out += [(b, t.atoms) for t in molecule_terms(b.moltype).types if t.kind == "torsion" and t.heavy]
    return out


def torsion_values(fr: Frames, types) -> list[np.ndarray]:
    """Per torsion type: all values (rad) over frames and molecules, molecules made whole."""
    out = []
    for b, atoms in types:
        n = b.moltype.n_atoms
        p = fr.positions[:, b.start:b.stop].reshape(fr.n_frames, b.count, n, 3).astype(np.float64)
        whole = np.empty_like(p)
        for f in range(fr.n_frames):
            whole[f] = p[f, :, :1] + minimum_image(p[f] - p[f, :, :1], fr.box[f])
        out.append(term_values(whole, atoms, "torsion").ravel())
    return out


def segment_numbers(system: System, fr: Frames, series: dict, types) -> dict:
    """Observables of one window: analyse_aa values (means) + RDF counts + torsion values."""
    a = analyse_aa(system, fr, series)
    v = {k: a["values"][k]["mean"] for k in OBS if a["values"].get(k)}
    return {"values": v, "rdf": {k: np.asarray(c, float) for k, (c, _i) in a["rdf_counts"].items()},
            "rdf_ideal": {k: np.asarray(i, float) for k, (_c, i) in a["rdf_counts"].items()},
            "torsions": torsion_values(fr, types)}


def _peak(system: System, name: str, counts, ideal) -> float:
    edges = system.rdf_edges[name]
    mid = 0.5 * (edges[1:] + edges[:-1])
    lo, hi = PEAK_WINDOW_NM[name]
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(ideal > 0, counts / ideal, np.nan)
    sel = (mid >= lo) & (mid <= hi)
    return float(np.nanmax(g[sel]))


def finish(system: System, seg: dict, ref: dict) -> dict:
    """Add RDF peaks and the JSDs vs the reference (plain run, all blocks pooled) to seg['values']."""
    v = dict(seg["values"])
    for name, c in seg["rdf"].items():
        v[f"rdf_peak_{name}"] = _peak(system, name, c, seg["rdf_ideal"][name])
        v[f"rdf_jsd_{name}"] = jsd(c + 1e-12, ref["rdf"][name] + 1e-12)
    v["torsion_jsd"] = float(np.mean([jsd(histogram(t, "torsion"), histogram(r, "torsion"))
                                      for t, r in zip(seg["torsions"], ref["torsions"])]))
    return v


def _frames(d: Path, name: str, n_atoms: int, structure: Path) -> Frames:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_frames(structure, d / f"{name}.xtc", expected_atoms=n_atoms)


def relax_density(d: Path, system: System, settings) -> float:
    """Mean density of the relax segment: its .edr (NPT), else its box (NVT: constant)."""
    rs = edr_series(d / "relax.edr", settings)
    if "density" in rs:
        return float(np.mean(rs["density"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(density_kg_m3(system.mass, read_frames(d / "relax.gro").box)[-1])


def analyse(runs: dict, tail: float = 0.5) -> dict:
    """Per-cycle and per-block observables over the last ``tail`` fraction of each aa-md / block window."""
    cyc, plain, n, L = runs["cycle"], runs["plain"], runs["cycles"], runs["lengths"]
    top = load_topology(cyc / "aa.top")
    system, types, settings = System(top), torsion_types(top), GromacsSettings()
    pdir = cycle_runs.stage_dir(plain, 1, "aa-md")
    pfr, pser = _frames(pdir, "aa-md", top.n_atoms, cyc / "aa.gro"), edr_series(pdir / "aa-md.edr", settings)
    cfr = [_frames(cycle_runs.stage_dir(cyc, c, "aa-md"), "aa-md", top.n_atoms, cyc / "aa.gro") for c in range(1, n + 1)]
    rmax = max_rdf_radius(np.concatenate([pfr.box] + [f.box for f in cfr]), 1.5)
    for name, b in RDF_BIN_NM.items():
        system.rdf_edges[name] = np.arange(0.0, rmax + 1e-9, b)
    block, win = L["md"] + L["eq"] + L["relax"], tail * L["md"]
    blocks = []
    for k in range(n):
        t1 = (k + 1) * block
        idx = np.flatnonzero((pfr.times >= t1 - win - 1e-6) & (pfr.times <= t1 + 1e-6))
        blocks.append(segment_numbers(system, _cut(pfr, idx), _cut_series(pser, t1 - win, t1), types))
    ref = {"rdf": {k: sum(b["rdf"][k] for b in blocks) for k in blocks[0]["rdf"]},
           "torsions": [np.concatenate(x) for x in zip(*[b["torsions"] for b in blocks])]}
    cycles = []
    for c, fr in enumerate(cfr, start=1):
        t1 = float(fr.times[-1])
        fr = _cut(fr, np.flatnonzero(fr.times >= t1 - win - 1e-6))
        ser = _cut_series(edr_series(cycle_runs.stage_dir(cyc, c, "aa-md") / "aa-md.edr", settings), t1 - win, t1)
        seg = segment_numbers(system, fr, ser, types)
        v = finish(system, seg, ref)
        v["relax_density_kg_m3"] = relax_density(cycle_runs.stage_dir(cyc, c, "relax"), system, settings)
        cycles.append(v)
    plain_blocks = []
    for k, b in enumerate(blocks):  # each block against the pool of the OTHER blocks (no self-overlap)
        others = [o for j, o in enumerate(blocks) if j != k]
        ref_k = {"rdf": {name: sum(o["rdf"][name] for o in others) for name in b["rdf"]},
                 "torsions": [np.concatenate(x) for x in zip(*[o["torsions"] for o in others])]}
        plain_blocks.append(finish(system, b, ref_k))
    return {"cycles": cycles, "plain_blocks": plain_blocks, "lengths": L, "total_ps": runs["total_ps"]}


def slope(y) -> tuple[float, float]:
    """Least-squares slope vs 1..n and its standard error."""
    y = np.asarray(y, float)
    x = np.arange(1, len(y) + 1, dtype=float)
    if len(y) < 3:
        return float("nan"), float("nan")
    (b, a), cov = np.polyfit(x, y, 1, cov=True)
    return float(b), float(np.sqrt(cov[0, 0]))


def table(res: dict) -> str:
    cyc, pb = res["cycles"], res["plain_blocks"]
    n = len(cyc)
    head = ("| observable | " + " | ".join(f"c{c}" for c in range(1, n + 1))
            + " | plain AA mean ± spread | cycle mean | (cycle − plain)/spread | cycles outside ±2 spread | slope/cycle ± SE "
            "| plain slope ± SE | verdict |")
    lines = [head, "|" + "---|" * (n + 9)]
    for key, (label, unit) in OBS.items():
        ys = [c.get(key) for c in cyc]
        if any(y is None for y in ys):
            continue
        fmt = "{:.1f}" if "density" in key else ("{:.2f}" if "epot" in key else ("{:.2g}" if "jsd" in key else "{:.3f}"))
        pv = [b.get(key if key != "relax_density_kg_m3" else "density_kg_m3") for b in pb]
        pv = [v for v in pv if v is not None]
        b, se = slope(ys)
        pbk, pse = slope(pv) if key != "relax_density_kg_m3" else (float("nan"), float("nan"))
        mean, spread = float(np.mean(pv)), float(np.std(pv, ddof=1))
        z = (np.mean(ys) - mean) / spread
        out = int(np.sum(np.abs(np.asarray(ys) - mean) > 2 * spread))
        verdict = "drift" if abs(b) > 2 * se else ("offset" if abs(z) > 2 else "ok")
        lines.append(f"| {label}{f' ({unit})' if unit else ''} | " + " | ".join(fmt.format(y) for y in ys)
                     + f" | {fmt.format(mean)} ± {fmt.format(spread)} | {fmt.format(np.mean(ys))} | {z:+.1f} | {out}/{n} "
                     f"| {b:+.2g} ± {se:.2g} | {pbk:+.2g} ± {pse:.2g} | {verdict} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--example", default="heptanol")
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--volume", choices=["aa", "own"], default="aa", help="cg.volume of the cycle run (default aa)")
    ap.add_argument("--tail", type=float, default=0.5, help="fraction of each aa-md analysed, its end (default 0.5, "
                    "as multiscale report); the plain blocks use the same window")
    ap.add_argument("--analyse-only", action="store_true", help="do not run; analyse what is there")
    args = ap.parse_args(argv)
    runs = cycle_runs.setup(args.folder, args.example, args.cycles, args.volume)
    if not args.analyse_only:
        cycle_runs.run_both(runs, args.folder)
    res = analyse(runs, args.tail)
    res["wall_s"] = {"cycle": cycle_runs.wall_s(runs["cycle"]), "plain": cycle_runs.wall_s(runs["plain"])}
    text = (f"# Drift over {args.cycles} cycles of {args.example} ({runs['cycle'] / 'sim.yaml'})\n\n"
            f"Per cycle c: the last {args.tail * runs['lengths']['md']:g} ps of the cycle's aa-md ({runs['lengths']['md']:g} ps). "
            f"Plain AA: {runs['total_ps']:g} ps in "
            f"{args.cycles} blocks of {runs['total_ps'] / args.cycles:g} ps, each analysed over its last "
            f"{args.tail * runs['lengths']['md']:g} ps; spread = standard deviation over blocks; JSDs of the plain blocks are "
            "against the other blocks pooled. 'drift': |slope| > 2 SE; 'offset': no drift but the cycle mean is more than 2 "
            "spreads from the plain mean; 'ok': neither.\n\n" + table(res) + "\n")
    print(text)
    (args.folder / "drift.md").write_text(text)
    (args.folder / "drift.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Write an evaluation report: ``report.json`` (stable keys), ``report.md`` and PNG plots.

JSON values are SI-like (nm, kJ/mol, radians, seconds, MiB); degrees appear only in the
Markdown text and plots.  All files are written atomically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..io import atomic_path, atomic_write_text

__all__ = ["write_report", "HEADLINE_KEYS", "markdown"]

#: (key, label, format) of the per-candidate headline numbers, in table order.
HEADLINE_KEYS = [
    ("jsd_scope", "JSD over", "{}"),
    ("jsd_max", "JSD max", "{:.3f}"),
    ("jsd_mean", "JSD mean", "{:.3f}"),
    ("jsd_floor_mean", "JSD mean of a perfect sample of this size", "{:.3f}"),
    ("worst_term", "worst term", "{}"),
    ("wasserstein_mean", "Wasserstein mean (rad; nm for bonds)", "{:.3g}"),
    ("rdf_jsd_max", "JSD max, intermolecular g(r)", "{:.3f}"),
    ("rdf_worst_pair", "worst site pair", "{}"),
    ("rdf_jsd_floor", "its JSD for reference frames of this number", "{:.3f}"),
    ("cg_rmsd_nm", "CG RMSD (nm)", "{:.4f}"),
    ("cg_max_deviation_nm", "CG max deviation (nm)", "{:.4f}"),
    ("cg_water_grouping", "water scored by (order: the tool's grouping; assignment: optimal)", "{}"),
    ("stereo_fraction", "stereocentres correct", "{:.1%}"),
    ("cis_trans_fraction", "cis/trans correct", "{:.1%}"),
    ("peptide_cis", "cis peptide bonds", "{}"),
    ("clashes_inter", "intermolecular pairs < 0.08 nm (per frame)", "{:.1f}"),
    ("clashes_intra", "intramolecular pairs < 0.1 nm (per frame)", "{:.1f}"),
    ("ring_penetrations", "ring penetrations (per frame)", "{:.1f}"),
    ("energy_single_point_kj_mol", "potential energy as given (kJ/mol)", "{:.4g}"),
    ("em_steps", "EM steps", "{}"),
    ("em_final_kj_mol", "EM final energy (kJ/mol)", "{:.6g}"),
    ("nvt_stable", "restrained NVT stable", "{}"),
    ("time_s", "time (s)", "{:.2f}"),
    ("peak_mem_mb", "peak memory (MiB)", "{:.0f}"),
]


def _clean(o):
    """JSON-safe copy: numpy scalars/arrays to Python, NaN/inf to None."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, (np.bool_, bool)):
        return bool(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, Path):
        return str(o)
    return o


def _fmt(v, f) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    try:
        return f.format(v)
    except (ValueError, TypeError):
        return str(v)


def _deg(kind, values):
    return np.degrees(values) if kind in ("angle", "torsion") else values


def _plot(path: Path, name: str, picked: list[dict]) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .metrics import BINS

    if not picked:
        return False
    n = len(picked)
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.4 * rows), squeeze=False)
    for ax, p in zip(axes.ravel(), picked):
        lo, hi, nb = BINS[p["kind"]]
        edges = _deg(p["kind"], np.linspace(lo, hi, nb + 1))
        for vals, lab, col in ((p["reference"], "reference", "0.3"), (p["candidate"], name, "tab:red")):
            v = np.asarray(vals, float)
            v = v[np.isfinite(v)]
            if p["kind"] == "torsion":
                v = (v + np.pi) % (2 * np.pi) - np.pi
            v = np.clip(_deg(p["kind"], v), edges[0], edges[-1] - 1e-9)
            ax.hist(v, bins=edges, density=True, histtype="step", lw=1.6, color=col, label=lab)
        unit = "deg" if p["kind"] in ("angle", "torsion") else "nm"
        ax.set_xlabel(f"{p['kind']} ({unit})")
        ax.set_title(f"{p['moltype']} {p['name']}  JSD {p['jsd']:.3f}", fontsize=9)
        ax.legend(fontsize=8)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return True


def markdown(report: dict, plot_files: dict | None = None) -> str:
    """The human-readable report (Markdown)."""
    plot_files = plot_files or {}
    inp = report["inputs"]
    cands = report["candidates"]
    names = list(cands)
    lines = [
        "# Backmapping evaluation",
        "",
        f"System: {inp['system']} ({inp['n_atoms']} atoms); CG input `{inp['cg']}` ({inp['cg_frames']} frame(s), "
        f"{inp['cg_beads']} beads); topology `{inp['topology']}` (fingerprint {inp['topology_fingerprint']}).",
        "Reference ensemble: "
        f"{('`' + inp['reference'] + '`, ' + str(inp['frames']) + ' frame(s)') if inp.get('reference') else 'none (distribution criteria not computed)'}; "
        f"stereo reference: {inp.get('stereo_reference') or 'none'}.",
        "",
        "Criteria, units and binning: see `docs/evaluate.md`. Lower is better except the fractions "
        "(higher) and `restrained NVT stable` (yes). Sterics are counts per frame.",
        "",
        "| criterion | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, label, f in HEADLINE_KEYS:
        lines.append(f"| {label} | " + " | ".join(_fmt(cands[n].get(key), f) for n in names) + " |")
    lines.append("| unmatched atoms (missing / extra) | " + " | ".join(
        f"{cands[n]['unmatched_atoms']['missing']} / {cands[n]['unmatched_atoms']['extra']}" for n in names) + " |")
    lines.append("")
    for n in names:
        c = cands[n]
        d = c["details"]
        lines += [f"## `{n}` ({c['kind']})", "", f"Source: `{c['source']}`; {c['n_frames']} frame(s)."]
        if c.get("cost_source"):
            lines.append(f"Cost: {c['cost_source']}.")
        if c.get("energy_note"):
            lines.append(f"Energy: {c['energy_note']}.")
        if "baseline" in d:
            lines.append(f"Baseline: {d['baseline']}.")
        u = c["unmatched_atoms"]
        if u["missing"] or u["extra"]:
            lines.append(f"Unmatched atoms: {u['missing']} topology atoms missing (e.g. {', '.join(u['missing_examples'][:5]) or '-'}), "
                         f"{u['extra']} candidate atoms extra (e.g. {', '.join(u['extra_examples'][:5]) or '-'}).")
        lines.append("")
        if d["per_moltype"]:
            lines += ["| moltype | scope | JSD mean | JSD max | worst | all-terms JSD max | all-terms worst |", "|---|---|---|---|---|---|---|"]
            for mt, s in d["per_moltype"].items():
                lines.append(f"| {mt} | {s['scope']} | {s['jsd_mean']:.3f} | {s['jsd_max']:.3f} | {s['worst_term']} | "
                             f"{s['all_terms_jsd_max']:.3f} | {s['all_terms_worst']} |")
            lines.append("")
            worst = sorted([r for r in d["terms"] if r["jsd"] is not None], key=lambda r: -r["jsd"])[:10]
            lines += ["Worst terms:", "", "| moltype | term | JSD | floor | Wasserstein | mean ref | mean cand |", "|---|---|---|---|---|---|---|"]
            for r in worst:
                unit = "nm" if r["kind"] == "bond" else "deg"
                conv = (lambda v: v) if r["kind"] == "bond" else np.degrees
                mr = "–" if r["mean_reference"] is None else f"{conv(r['mean_reference']):.3f} {unit}"
                mc = "–" if r["mean_candidate"] is None else f"{conv(r['mean_candidate']):.3f} {unit}"
                w = "–" if r["wasserstein"] is None else f"{conv(r['wasserstein']):.3g} {unit}"
                lines.append(f"| {r['moltype']} | {r['kind']} {r['name']} | {r['jsd']:.3f} | {_fmt(r['jsd_floor'], '{:.3f}')} | {w} | {mr} | {mc} |")
            lines.append("")
        if d.get("rdf"):
            lines += ["Intermolecular heavy-atom g(r), 0-0.8 nm:", "",
                      "| site pair | JSD | floor | pairs/frame ref | pairs/frame cand |", "|---|---|---|---|---|"]
            for r in sorted(d["rdf"], key=lambda r: -r["jsd"])[:8]:
                lines.append(f"| {r['pair']} | {r['jsd']:.3f} | {r['jsd_floor']:.3f} | "
                             f"{r['pairs_per_frame_reference']:.0f} | {r['pairs_per_frame_candidate']:.0f} |")
            lines.append("")
        if n in plot_files:
            lines += [f"![worst terms of {n}]({plot_files[n]})", ""]
        bad = [s for s in d["stereo"] if s["fraction"] is not None and s["fraction"] < 1.0]
        if bad:
            lines += ["Stereo/cis-trans not matching the reference:", ""]
            for s in bad[:15]:
                what = f"centre {s['centre']}" if s["type"] == "stereocentre" else f"bond {s['bond']} (ref {s['reference']})"
                lines.append(f"- {s['moltype']} {what}: {s['fraction']:.1%} correct of {s['n']}")
            lines.append("")
        if d["steric_examples"]:
            lines += ["Closest steric problems:", ""]
            for s in d["steric_examples"][:8]:
                extra = f" {s['distance_nm']:.3f} nm" if "distance_nm" in s else f" through ring {s['ring']}"
                lines.append(f"- frame {s['frame']} {s['kind']}: {s['atoms']}{extra}")
            lines.append("")
    return "\n".join(lines) + "\n"


def write_report(output, report: dict, plots: bool = True, plot_data: dict | None = None) -> dict:
    """Write report.json, report.md and plots/*.png into ``output``; returns {file kind: path}."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    plot_files = {}
    if plots and plot_data:
        for name, picked in plot_data.items():
            rel = f"plots/{name}_worst_terms.png"
            if _plot(out / rel, name, picked):
                plot_files[name] = rel
    clean = _clean(report)
    atomic_write_text(out / "report.json", json.dumps(clean, indent=1, sort_keys=False) + "\n")
    atomic_write_text(out / "report.md", markdown(clean, plot_files))
    return {"json": out / "report.json", "markdown": out / "report.md", "plots": [out / p for p in plot_files.values()]}

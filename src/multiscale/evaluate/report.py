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

__all__ = ["write_report", "HEADLINE_KEYS", "markdown", "plot_data", "figure", "SCOPE_LABELS"]

#: (key, label, format) of the per-candidate headline numbers, in table order.
HEADLINE_KEYS = [
    ("jsd_scope", "JSD over", "{}"),
    ("jsd_mean", "JSD mean", "{:.3f}"),
    ("jsd_floor_mean", "JSD mean of a perfect sample of this size (noise floor)", "{:.3f}"),
    ("jsd_excess_mean", "JSD excess over the floor, mean", "{:+.3f}"),
    ("jsd_excess_max", "JSD excess over the floor, max", "{:+.3f}"),
    ("worst_term", "worst term (largest excess)", "{}"),
    ("jsd_max", "JSD max (raw)", "{:.3f}"),
    ("wasserstein_mean", "Wasserstein mean (rad; nm for bonds)", "{:.3g}"),
    ("rdf_jsd_max", "JSD max, intermolecular g(r)", "{:.3f}"),
    ("rdf_worst_pair", "worst site pair (molecule type:element)", "{}"),
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
    if isinstance(v, float) and abs(v) < 5e-4 and "+" in f:
        v = 0.0  # no "-0.000" for an excess at the floor
    if isinstance(v, bool):
        return "yes" if v else "no"
    try:
        return f.format(v)
    except (ValueError, TypeError):
        return str(v)


#: Human-readable names of the ``jsd_scope`` / ``scope`` values.
SCOPE_LABELS = {"heavy_atom_torsions": "heavy-atom torsions", "all_molecule_terms": "all terms of non-water molecules",
                "all_terms": "all terms (incl. water)"}
_WATER_GROUPING = {"order": "the tool's own grouping", "assignment": "optimal assignment"}
_DISPLAY = {"jsd_scope": SCOPE_LABELS, "cg_water_grouping": _WATER_GROUPING}
_UNIT = {"bond": "nm", "angle": "°", "torsion": "°"}


def _show(key, v, f) -> str:
    """A headline value as text (ids such as scope names replaced by words)."""
    if key in _DISPLAY and v in _DISPLAY[key]:
        return _DISPLAY[key][v]
    return _fmt(v, f)


def _deg(kind, values):
    return np.degrees(values) if kind in ("angle", "torsion") else values


def _display_values(kind: str, values) -> np.ndarray:
    """Finite values in the unit of the plots (nm; degrees, torsions wrapped to [-180, 180))."""
    v = np.asarray(values, float).ravel()
    v = v[np.isfinite(v)]
    if kind == "torsion":
        v = (v + np.pi) % (2 * np.pi) - np.pi
    return _deg(kind, v)


def plot_data(ref_sample, entries, results, seed: int = 0, n_terms: int = 4) -> dict:
    """Per candidate the ``n_terms`` terms with the largest JSD excess over their noise floor:
    {name: {"n_frames", "n_frames_reference", "seed", "terms": [{moltype, kind, name, jsd,
    jsd_floor, jsd_excess, reference, candidate}]}} (values in rad / nm)."""
    if ref_sample is None:
        return {}
    data = {}
    for e in entries:
        rows = [r for r in results[e["name"]]["details"]["terms"] if r["jsd"] is not None]
        rows.sort(key=lambda r: -r["jsd_excess"])
        data[e["name"]] = {
            "n_frames": int(e["sample"].n_frames), "n_frames_reference": int(ref_sample.n_frames), "seed": seed,
            "terms": [{"moltype": r["moltype"], "kind": r["kind"], "name": r["name"], "jsd": r["jsd"],
                       "jsd_floor": r["jsd_floor"], "jsd_excess": r["jsd_excess"],
                       "reference": ref_sample.values[(r["moltype"], r["type_index"])],
                       "candidate": e["sample"].values[(r["moltype"], r["type_index"])]} for r in rows[:n_terms]]}
    return data


def _xlim(kind, edges, ref_h, cand_h):
    """Torsions: the full circle; bonds and angles: the populated bins (within their range) padded."""
    if kind == "torsion":
        return edges[0], edges[-1]
    used = np.flatnonzero((ref_h > 0) | (cand_h > 0))
    if not len(used):
        return edges[0], edges[-1]
    pad = 3
    return edges[max(used[0] - pad, 0)], edges[min(used[-1] + 1 + pad, len(edges) - 1)]


def _frames(n: int) -> str:
    return f"{n} frame" + ("" if n == 1 else "s")


def _plot(path: Path, name: str, data: dict) -> bool:
    """Write the worst-terms figure of one candidate as PNG (False when there is nothing to plot)."""
    fig = figure(name, data)
    if fig is None:
        return False
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    plt.close(fig)
    return True


def figure(name: str, data: dict):
    """Reference vs candidate histograms of the worst terms (:func:`plot_data`), with the
    noise-floor band; axes in nm or degrees (angles 0-180, torsions -180-180) with sample sizes
    in the legend.  Returns a matplotlib Figure, or None without terms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .metrics import BINS, floor_band

    picked = data["terms"]
    if not picked:
        return None
    n = len(picked)
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 3.9 * rows + 0.5), squeeze=False)
    for ax, p in zip(axes.ravel(), picked):
        kind = p["kind"]
        lo, hi, nb = BINS[kind]
        edges = _deg(kind, np.linspace(lo, hi, nb + 1))
        raw = [_display_values(kind, p["reference"]), _display_values(kind, p["candidate"])]
        outside = [int(np.sum((v < edges[0]) | (v >= edges[-1]))) for v in raw]
        ref, cand = (np.clip(v, edges[0], edges[-1] - 1e-9) for v in raw)
        ref_h, _ = np.histogram(ref, bins=edges, density=True)
        cand_h, _ = np.histogram(cand, bins=edges, density=True) if len(cand) else (np.zeros(nb), None)
        band_lo, band_hi = floor_band(ref, len(cand), edges, seed=data.get("seed", 0))
        ax.fill_between(edges, np.r_[band_lo, band_lo[-1]], np.r_[band_hi, band_hi[-1]], step="post", color="0.8",
                        lw=0, label=f"noise floor: perfect sample of n = {len(cand):,} (5–95 %)")
        ax.stairs(ref_h, edges, color="0.15", lw=1.4,
                  label=f"reference (n = {len(ref):,}, {_frames(data['n_frames_reference'])})")
        ax.stairs(cand_h, edges, color="tab:red", lw=1.4, label=f"{name} (n = {len(cand):,}, {_frames(data['n_frames'])})")
        unit = _UNIT[kind]
        ax.set_xlim(*_xlim(kind, edges, ref_h, cand_h))
        if kind == "torsion":
            ax.set_xticks(np.arange(-180, 181, 60))
        ax.set_xlabel(f"{kind} {p['name']} ({unit})")
        ax.set_ylabel(f"probability density (1/{unit})")
        floor = "–" if p["jsd_floor"] is None else f"{p['jsd_floor']:.3f}"
        ax.set_title(f"{p['moltype']} {kind} {p['name']}\nJSD {p['jsd']:.3f}, floor {floor}, excess {p['jsd_excess']:+.3f}",
                     fontsize=9)
        top = max([float(np.max(h)) for h in (ref_h, cand_h, band_hi) if len(h)] + [1e-12])
        ax.set_ylim(0, 1.55 * top)  # headroom for the legend above the data
        if kind != "torsion" and sum(outside):
            ax.text(0.99, 0.62, f"values outside {edges[0]:g}–{edges[-1]:g} {unit}\ncounted in the edge bins "
                    f"(reference {outside[0]:,}, {name} {outside[1]:,})", transform=ax.transAxes, ha="right",
                    va="top", fontsize=7, color="0.3")
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle(f"{name}: the {n} terms furthest above their noise floor (JSD − floor)", fontsize=10)
    fig.tight_layout()
    return fig


def _term_rows(d: dict) -> list[str]:
    """The 'worst terms' table: the 10 terms with the largest JSD excess over the floor."""
    worst = sorted([r for r in d["terms"] if r["jsd"] is not None], key=lambda r: -r["jsd_excess"])[:10]
    lines = ["Terms furthest above their noise floor (JSD − floor; n = values compared):", "",
             "| molecule | term | JSD | floor | excess | n ref / cand | Wasserstein | mean ref | mean cand |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in worst:
        unit = _UNIT[r["kind"]]
        conv = (lambda v: v) if r["kind"] == "bond" else np.degrees
        dig = "{:.4f}" if r["kind"] == "bond" else "{:.1f}"
        mr = "–" if r["mean_reference"] is None else f"{dig.format(conv(r['mean_reference']))} {unit}"
        mc = "–" if r["mean_candidate"] is None else f"{dig.format(conv(r['mean_candidate']))} {unit}"
        w = "–" if r["wasserstein"] is None else f"{conv(r['wasserstein']):.3g} {unit}"
        lines.append(f"| {r['moltype']} | {r['kind']} {r['name']} | {r['jsd']:.3f} | {_fmt(r['jsd_floor'], '{:.3f}')} | "
                     f"{_fmt(r['jsd_excess'], '{:+.3f}')} | {r['n_reference']:,} / {r['n_candidate']:,} | {w} | {mr} | {mc} |")
    return lines + [""]


def _provenance(report: dict) -> list[str]:
    st = report["settings"]
    ver = st.get("versions") or {}
    gmx = ver.get("GROMACS") or ("not used (--no-energy)" if not st.get("energy") else "not found")
    soft = ", ".join(f"{k} {v}" for k, v in ver.items() if k != "GROMACS" and v)
    seeds = "; ".join(f"{k}: {v}" for k, v in (st.get("seeds") or {"all": st.get("seed")}).items())
    b = st["bins"]
    cap = st.get("reference_max_frames")
    return [
        "## Software, settings and seeds", "",
        f"- Software: {soft}; GROMACS {gmx}.",
        f"- Seeds (all from `--seed {st.get('seed')}`): {seeds}.",
        f"- Reference frames used: {'all given' if cap is None else f'at most {cap}, evenly spaced'}.",
        f"- Coordinates of every ensemble rounded to {st['coordinate_precision_nm']} nm before measuring.",
        "- Histograms: bonds {:.2f}–{:.2f} nm in {} bins, angles 0–180° in {} bins, torsions −180–180° in {} bins; "
        "JSD base 2.".format(b["bond"]["low"], b["bond"]["high"], b["bond"]["n_bins"], b["angle"]["n_bins"],
                              b["torsion"]["n_bins"]),
        f"- Clash cutoffs: intermolecular {st['inter_cutoff_nm']} nm, intramolecular (beyond 1-3) {st['intra_cutoff_nm']} nm.",
        f"- Written {report.get('created', '')} by {report.get('tool', 'multiscale evaluate')} "
        f"(report schema {report.get('schema_version')}).",
        "",
    ]


def _energy_line(c: dict) -> str:
    note = c.get("energy_note") or ""
    return f"Energy (first frame, coordinates as measured): {note}."


def _candidate_section(n: str, c: dict, plot_files: dict) -> list[str]:
    """The per-candidate part of report.md: cost, energy, terms, RDF, plots, stereo, sterics."""
    lines: list[str] = []
    d = c["details"]
    kind = "built-in baseline" if c["kind"] == "baseline" else "given file"
    lines += [f"## {n} ({kind})", "", f"Source: `{c['source']}`; {_frames(c['n_frames'])}."]
    if c.get("cost_source"):
        lines.append(f"Cost: {c['cost_source']}.")
    lines.append(_energy_line(c))
    if "baseline" in d:
        bl = d["baseline"]
        lines.append(f"Baseline: {bl.get('method', n)}; energy minimisation before scoring: {bl.get('em', 'none')}.")
    u = c["unmatched_atoms"]
    if u["missing"] or u["extra"]:
        lines.append(f"Unmatched atoms: {u['missing']} topology atoms missing (e.g. {', '.join(u['missing_examples'][:5]) or '-'}), "
                     f"{u['extra']} candidate atoms extra (e.g. {', '.join(u['extra_examples'][:5]) or '-'}).")
    lines.append("")
    if d["per_moltype"]:
        lines += ["| molecule | scored over | JSD mean | excess max | worst (largest excess) | all terms: excess max | all terms: worst |",
                  "|---|---|---|---|---|---|---|"]
        for mt, s in d["per_moltype"].items():
            lines.append(f"| {mt} | {SCOPE_LABELS.get(s['scope'], s['scope'])} | {s['jsd_mean']:.3f} | "
                         f"{_fmt(s['jsd_excess_max'], '{:+.3f}')} | {s['worst_term']} | {_fmt(s['all_terms_jsd_excess_max'], '{:+.3f}')} | "
                         f"{s['all_terms_worst']} |")
        lines.append("")
        lines += _term_rows(d)
    if d.get("rdf"):
        lines += ["Intermolecular heavy-atom g(r), 0–0.8 nm (site pair = molecule type:element):", "",
                  "| site pair | JSD | floor | pairs/frame ref | pairs/frame cand |", "|---|---|---|---|---|"]
        for r in sorted(d["rdf"], key=lambda r: -(r["jsd"] - r["jsd_floor"]))[:8]:
            lines.append(f"| {r['pair']} | {r['jsd']:.3f} | {r['jsd_floor']:.3f} | "
                         f"{r['pairs_per_frame_reference']:,.0f} | {r['pairs_per_frame_candidate']:,.0f} |")
        lines.append("")
    if n in plot_files:
        lines += [f"![{n}: reference and candidate distributions of the terms furthest above their noise floor]"
                  f"({plot_files[n]})", "",
                  "Grey band: where 90 % of the histograms of a perfect method with the candidate's sample size fall.", ""]
    bad = [s for s in d["stereo"] if s["fraction"] is not None and s["fraction"] < 1.0]
    if bad:
        lines += ["Stereo/cis-trans not matching the reference:", ""]
        for s in bad[:15]:
            what = f"centre {s['centre']}" if s["type"] == "stereocentre" else f"bond {s['bond']} (reference: {s['reference']})"
            lines.append(f"- {s['moltype']} {what}: {s['fraction']:.1%} correct of {s['n']}")
        lines.append("")
    if d["steric_examples"]:
        lines += ["Closest steric problems:", ""]
        kinds = {"inter": "intermolecular", "intra": "intramolecular", "ring": "ring penetration"}
        for s in d["steric_examples"][:8]:
            extra = f", {s['distance_nm']:.3f} nm" if "distance_nm" in s else f" through ring {s['ring']}"
            lines.append(f"- frame {s['frame']}, {kinds.get(s['kind'], s['kind'])}: {s['atoms']}{extra}")
        lines.append("")
    return lines


def markdown(report: dict, plot_files: dict | None = None) -> str:
    """The human-readable report (Markdown)."""
    plot_files = plot_files or {}
    inp = report["inputs"]
    cands = report["candidates"]
    names = list(cands)
    ref = (f"`{inp['reference']}`, {_frames(inp['frames'])}" if inp.get("reference")
           else "none (distribution criteria not computed)")
    lines = [
        "# Backmapping evaluation",
        "",
        f"System: {inp['system']} ({inp['n_atoms']:,} atoms); CG input `{inp['cg']}` ({_frames(inp['cg_frames'])}, "
        f"{inp['cg_beads']:,} beads); topology `{inp['topology']}` (content fingerprint {inp['topology_fingerprint']}).",
        f"Reference ensemble: {ref}; stereo reference: {inp.get('stereo_reference') or 'none'}.",
        "",
        "Criteria, units and binning: `docs/evaluate.md`. Lower is better except the fractions "
        "(higher) and `restrained NVT stable` (yes). Sterics are counts per frame. A finite sample never "
        "reaches JSD 0: the *noise floor* is the mean JSD of a perfect method with the candidate's sample "
        "size (draws from the reference), and terms are ranked by their *excess* JSD − floor "
        "(≤ 0: indistinguishable from a perfect sample of that size).",
        "",
        "| criterion | " + " | ".join(f"{n}" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, label, f in HEADLINE_KEYS:
        lines.append(f"| {label} | " + " | ".join(_show(key, cands[n].get(key), f) for n in names) + " |")
    lines.append("| unmatched atoms (missing / extra) | " + " | ".join(
        f"{cands[n]['unmatched_atoms']['missing']} / {cands[n]['unmatched_atoms']['extra']}" for n in names) + " |")
    lines.append("")
    lines += _protein_rows(cands, names)
    for n in names:
        lines += _candidate_section(n, cands[n], plot_files)
    lines += _provenance(report)
    return "\n".join(lines) + "\n"

PROTEIN_KEYS = (("rama_jsd_mean", "Ramachandran JSD, mean over residue types", "{:.3f}"),
                ("rama_jsd_floor_mean", "  its noise floor (reference halves)", "{:.3f}"),
                ("chi_jsd_mean", "side-chain chi JSD, mean", "{:.3f}"),
                ("cis_peptides_non_pro", "cis peptide bonds, not before Pro (per frame)", "{:g}"),
                ("cis_peptides_pro", "cis peptide bonds before Pro (per frame)", "{:g}"),
                ("d_residues", "D residues (CA, Thr/Ile CB; per frame)", "{:g}"),
                ("distorted_centres", "distorted centres (L by N, C, CB but not from every face; per frame)", "{:g}"),
                ("clash_score_pct", "clash score: % residues with a heavy-atom contact < 0.12 nm", "{:.1f}"),
                ("bond_score", "bond score: fraction of bonds within 10 % of the reference", "{:.3f}"),
                ("rmsd_heavy_nm", "heavy-atom RMSD to the same-index reference frame, nm", "{:.3f}"),
                ("rmsd_backbone_nm", "backbone RMSD, nm", "{:.3f}"))


def _protein_rows(cands: dict, names: list) -> list[str]:
    """The protein criteria table (multiscale.evaluate.protein), when the system has residues."""
    have = [n for n in names if cands[n].get("protein")]
    if not have:
        return []
    lines = [f"Protein criteria ({cands[have[0]]['protein']['residues']} residues; `docs/evaluate.md`):", "",
             "| criterion | " + " | ".join(have) + " |", "|---|" + "---|" * len(have)]
    for key, label, f in PROTEIN_KEYS:
        vals = [cands[n]["protein"].get(key) for n in have]
        if any(v is not None for v in vals):
            lines.append(f"| {label} | " + " | ".join("–" if v is None else f.format(v) for v in vals) + " |")
    return lines + [""]


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

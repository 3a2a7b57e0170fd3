"""PNG figures of a run report (matplotlib, Agg): observables per cycle against the reference
band, RDF overlays, backmap certificate numbers and stage wall times.  Each function takes the
report dict of :func:`multiscale.runreport.collect.collect` and writes one PNG (atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_path

__all__ = ["write_figures", "OBSERVABLE_FIGURES", "RDF_LABELS"]

#: stage -> (x offset within its cycle, marker, label)
_STYLE = {"aa-md": (0.0, "o", "AA production (aa-md)"), "cg-md": (0.15, "D", "CG production (cg-md; Martini masses)"),
          "restrained-eq": (0.3, "^", "restrained NVT (restrained-eq)"),
          "relax": (0.42, "s", "unrestrained relax")}
_COLOR = {"aa-md": "tab:blue", "cg-md": "tab:green", "restrained-eq": "tab:orange", "relax": "tab:purple"}

#: file stem -> (title, [(value key, axis label, CG value key or None)])
OBSERVABLE_FIGURES = {
    "density": ("Mass density", [("density_kg_m3", "density (kg/m³)", "density_kg_m3")]),
    "energy": ("Potential energy per molecule", [("epot_per_molecule_kj_mol", "E_pot / molecule (kJ/mol)", None)]),
    "box": ("Box", [("volume_nm3", "volume (nm³)", "volume_nm3"), ("box_a_nm", "box vector |a| (nm)", None)]),
    "hbonds": ("Hydrogen bonds (H···A < 0.25 nm, D-H···A > 120°)",
               [("hbonds_water_water", "water–water H-bonds per water", None),
                ("hbonds_solute_water", "solute–water H-bonds per solute", None),
                ("hbonds_solute_solute", "solute–solute H-bonds per solute", None)]),
}
RDF_LABELS = {"solute_com": "solute centre of mass – centre of mass", "water_oo": "water O – O"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    plt.close(fig)


def _cycles(report: dict) -> list[int]:
    return sorted({s["cycle"] for s in report["segments"] if s.get("cycle") is not None})


def _band(ax, ref: dict | None, label: str) -> None:
    if not ref:
        return
    m, s = ref["mean"], ref["std"]
    ax.axhspan(m - s, m + s, color="0.85", lw=0, label=f"{label}: mean ± s.d.")
    ax.axhline(m, color="0.3", lw=1.0)


def _points(ax, report: dict, key: str, resolution: str) -> bool:
    drawn = False
    for stage, (dx, marker, label) in _STYLE.items():
        rows = [(s["cycle"] + dx, s["values"][key]) for s in report["segments"]
                if s["stage"] == stage and s["resolution"] == resolution and (s["values"].get(key) or None)]
        if not rows:
            continue
        x = [r[0] for r in rows]
        y = [r[1]["mean"] for r in rows]
        e = [r[1]["std"] for r in rows]
        ax.errorbar(x, y, yerr=e, fmt=marker, color=_COLOR[stage], ms=6, capsize=3, label=label)
        drawn = True
    return drawn


def _observable(report: dict, stem: str, path: Path) -> bool:
    plt = _plt()
    title, panels = OBSERVABLE_FIGURES[stem]
    panels = [p for p in panels if any((s["values"].get(p[0]) or p[2] and s["values"].get(p[2])) for s in report["segments"])]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.9 if len(panels) > 1 else 5.0), squeeze=False)
    ref = report["reference"]
    for ax, (key, ylabel, cg_key) in zip(axes[0], panels):
        _band(ax, ref["values"].get(key), f"reference ({ref['label']})")
        _points(ax, report, key, "aa")
        if cg_key:
            _points(ax, report, cg_key, "cg")
        ax.set_xticks(_cycles(report))
        ax.set_xlabel("cycle")
        ax.set_ylabel(ylabel)
    _shared_legend(fig, axes[0])
    fig.suptitle(f"{title}: mean ± s.d. over each segment's frames", fontsize=10)
    _save(fig, path)
    return True


def _shared_legend(fig, axes) -> None:
    """One legend below the panels (the union of their entries)."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    ncol = 1 if len(axes) == 1 else min(len(seen), 3)
    rows = -(-len(seen) // ncol)
    fig.tight_layout(rect=(0, min(0.45, 0.03 + rows * 0.045 * 3.9 / fig.get_figheight()), 1, 0.93))
    fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=ncol, fontsize=7, frameon=False)


def _rdf(report: dict, name: str, path: Path) -> bool:
    plt = _plt()
    rdf = report["rdf"]
    segs = [s for s in report["segments"] if s["stage"] == "aa-md" and name in rdf["segments"].get(s["key"], {})]
    if not segs and name not in rdf["reference"]:
        return False
    r = np.asarray(rdf["r_nm"][name])
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    cmap = plt.get_cmap("viridis")
    for i, s in enumerate(segs):
        g = np.asarray(rdf["segments"][s["key"]][name], float)
        ax.plot(r, g, color=cmap(i / max(len(segs) - 1, 1)), lw=1.2, label=f"cycle {s['cycle']} aa-md")
    if name in rdf["reference"]:
        ax.plot(r, np.asarray(rdf["reference"][name], float), "k--", lw=1.6,
                label=f"reference ({report['reference']['label']})")
    ax.axhline(1.0, color="0.6", lw=0.6)
    ax.set_xlabel("r (nm)")
    ax.set_ylabel("g(r)")
    ax.set_xlim(0, r[-1] if len(r) else 1)
    ax.set_title(f"RDF {RDF_LABELS.get(name, name)} (end-of-segment frames)", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    _save(fig, path)
    return True


_CERT_PANELS = [
    ("clash pairs before / after repair", [("inter_clash_pairs_initial", "intermolecular, initial"),
                                           ("inter_clash_pairs_final", "intermolecular, final"),
                                           ("intra_clash_pairs_final", "intramolecular, final"),
                                           ("water_clash_pairs_final", "water, final")]),
    ("resampling", [("retries", "retry rounds"), ("resampled_molecules", "molecules resampled"),
                    ("water_molecules_moved", "water molecules moved")]),
    ("max CG deviation (nm)", [("max_cg_deviation_nm", "max |CG(backmapped) − CG input|")]),
]


def _backmap(report: dict, path: Path) -> bool:
    plt = _plt()
    rows = report["backmap"]
    if not rows:
        return False
    fig, axes = plt.subplots(1, len(_CERT_PANELS), figsize=(4.6 * len(_CERT_PANELS), 3.6), squeeze=False)
    cyc = [r["cycle"] for r in rows]
    for ax, (title, keys) in zip(axes[0], _CERT_PANELS):
        for key, label in keys:
            y = [r.get(key) for r in rows]
            if any(v is not None for v in y):
                ax.plot(cyc, [np.nan if v is None else float(v) for v in y], "o-", label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("cycle")
        ax.set_xticks(cyc)
        ax.legend(fontsize=6.5, frameon=False)
    fig.suptitle("Backmapping certificate per cycle", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return True


def _wall(report: dict, path: Path) -> bool:
    plt = _plt()
    rows = [r for r in report["wall_times"] if r.get("wall_s") and r.get("cycle") is not None]
    if not rows:
        return False
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    cycles = sorted({r["cycle"] for r in rows})
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    bottom = np.zeros(len(cycles))
    cmap = plt.get_cmap("tab20")
    for i, st in enumerate(stages):
        h = np.array([sum(r["wall_s"] for r in rows if r["cycle"] == c and r["stage"] == st) for c in cycles], float)
        ax.bar(cycles, h, bottom=bottom, color=cmap(i % 20), label=st)
        bottom += h
    ax.set_xlabel("cycle")
    ax.set_ylabel("wall time (s)")
    ax.set_xticks(cycles)
    ax.set_title("Stage wall times", fontsize=10)
    ax.legend(fontsize=6.5, frameon=False, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    _save(fig, path)
    return True


def write_figures(report: dict, folder: Path) -> dict[str, str]:
    """Write every figure that has data into ``folder``; returns {figure id: file name}."""
    folder = Path(folder)
    out = {}
    for stem in OBSERVABLE_FIGURES:
        if _observable(report, stem, folder / f"{stem}.png"):
            out[stem] = f"{stem}.png"
    for name in report["rdf"]["r_nm"]:
        if _rdf(report, name, folder / f"rdf_{name}.png"):
            out[f"rdf_{name}"] = f"rdf_{name}.png"
    if _backmap(report, folder / "backmap.png"):
        out["backmap"] = "backmap.png"
    if _wall(report, folder / "wall_times.png"):
        out["wall_times"] = "wall_times.png"
    return out

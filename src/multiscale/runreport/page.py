"""The report page: ``report.md`` and ``report.html`` (same content), ``report.json`` and the
PNGs, written into a temporary folder that replaces the output folder in one rename."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import MultiscaleError
from ..evaluate.report import _clean
from ..io import PARTIAL_MARK, atomic_write_text
from .collect import FORMAT, collect
from .figures import RDF_LABELS, write_figures

__all__ = ["build_report", "markdown", "html", "REPORT_DIR", "write_folder"]

REPORT_DIR = "report"

#: table columns of AA segments: (value key, header, format)
_AA_COLUMNS = [("density_kg_m3", "ρ (kg/m³)", "{:.1f}"), ("epot_per_molecule_kj_mol", "E_pot/molecule (kJ/mol)", "{:.2f}"),
               ("volume_nm3", "V (nm³)", "{:.3f}"), ("hbonds_water_water", "HB w–w per water", "{:.3f}"),
               ("hbonds_solute_water", "HB s–w per solute", "{:.3f}"),
               ("hbonds_solute_solute", "HB s–s per solute", "{:.3f}")]
_CERT_COLUMNS = [("ok", "ok"), ("inter_clash_pairs_initial", "inter clashes initial"),
                 ("inter_clash_pairs_final", "inter final"), ("intra_clash_pairs_final", "intra final"),
                 ("water_clash_pairs_final", "water final"), ("retries", "retries"),
                 ("resampled_molecules", "molecules resampled"), ("water_initial_clashes", "water clashes initial"),
                 ("max_cg_deviation_nm", "max CG deviation (nm)"), ("wall_s", "stage wall (s)")]


def _ms(v: dict | None, f: str) -> str:
    if not v:
        return "–"
    s = f.format(v["mean"])
    return s + (f" ± {f.format(v['std'])}" if v.get("n", 1) > 1 else "")


def _plain(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _aa_table(report: dict) -> list[str]:
    rdfs = list(report["rdf"]["r_nm"])
    head = ["cycle", "segment", "frames (structure)"] + [h for _, h, _ in _AA_COLUMNS] + ["Δρ vs ref (kg/m³)"] + \
        [f"RDF rms diff, {n}" for n in rdfs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = report["reference"]
    rows = [("ref", ref["label"], ref)] + [(str(s["cycle"]), s["stage"], s) for s in report["segments"] if s["resolution"] == "aa"]
    for cyc, name, s in rows:
        v = s["values"]
        d = (s.get("delta") or {}).get("density_kg_m3")
        cells = [cyc, name, str(s.get("frames", "–"))] + [_ms(v.get(k), f) for k, _, f in _AA_COLUMNS]
        cells.append("–" if d is None else f"{d:+.1f}")
        cells += [_plain((s.get("rdf_rms_diff") or {}).get(n)) for n in rdfs]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _cg_table(report: dict) -> list[str]:
    segs = [s for s in report["segments"] if s["resolution"] == "cg"]
    if not segs:
        return []
    lines = ["CG segments (Martini masses and energies; not comparable with the AA numbers):", "",
             "| cycle | segment | ρ (kg/m³) | V (nm³) | E_pot/CG molecule (kJ/mol) |", "|---|---|---|---|---|"]
    for s in segs:
        v = s["values"]
        lines.append(f"| {s['cycle']} | {s['stage']} | {_ms(v.get('density_kg_m3'), '{:.1f}')} | "
                     f"{_ms(v.get('volume_nm3'), '{:.3f}')} | {_ms(v.get('cg_epot_per_molecule_kj_mol'), '{:.2f}')} |")
    return lines + [""]


def _cert_table(report: dict) -> list[str]:
    if not report["backmap"]:
        return ["No finished backmap stage yet.", ""]
    lines = ["| cycle | " + " | ".join(h for _, h in _CERT_COLUMNS) + " |", "|---|" + "---|" * len(_CERT_COLUMNS)]
    for r in report["backmap"]:
        lines.append(f"| {r['cycle']} | " + " | ".join(_plain(r.get(k)) for k, _ in _CERT_COLUMNS) + " |")
    return lines + [""]


def _wall_table(report: dict) -> list[str]:
    rows = [r for r in report["wall_times"] if r.get("cycle") is not None]
    cycles = sorted({r["cycle"] for r in rows})
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    lines = ["| stage | " + " | ".join(f"cycle {c}" for c in cycles) + " |", "|---|" + "---|" * len(cycles)]
    for st in stages:
        cells = []
        for c in cycles:
            r = next((r for r in rows if r["cycle"] == c and r["stage"] == st), None)
            cells.append("" if r is None else (f"{r['wall_s']:.1f}" if r.get("wall_s") else r["status"]))
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    total = sum(r.get("wall_s") or 0 for r in rows)
    return lines + ["", f"Total stage time: {total:.1f} s.", ""]


def _name(report: dict) -> str:
    """'folder/run' (the run folder and the one holding it: 'runs' alone says little)."""
    p = Path(report["run"])
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def _fig(figs: dict, key: str, alt: str) -> list[str]:
    return [f"![{alt}]({figs[key]})", ""] if key in figs else []


def markdown(report: dict, figs: dict) -> str:
    """The report page in Markdown (images by relative path)."""
    sy, st, ref = report["system"], report["settings"], report["reference"]
    hb = st["hbond"]
    lines = [f"# Run report: {_name(report)}", "",
             f"Run `{report['run']}` (config `{report['config']}`), written {report['created']}.",
             f"System: {sy['composition']}: {sy['atoms']:,} atoms, {sy['molecules']:,} molecules "
             f"({sy['water_molecules']:,} water, {sy['solute_molecules']:,} solute), {sy['mass_g_mol']:.1f} g/mol.",
             f"Reference: **{ref['label']}**, {ref['frames']} frames. Segments: the last {st['tail_fraction']:.0%} of each "
             f"trajectory (at most {st['max_frames']} frames; single-frame stages: their final structure). "
             "Definitions and units: `docs/report.md`.", "",
             "## Per-segment observables (mean ± s.d. over frames)", ""]
    lines += _aa_table(report) + _cg_table(report)
    lines += ["Energies and density from the .edr (every energy frame) when it has them, otherwise from the boxes "
              "and the topology's total mass; H-bonds: intermolecular, "
              f"H···A < {hb['h_acceptor_max_nm']} nm and D-H···A > {hb['dha_angle_min_deg']:g}°, "
              "counted once per bond and divided by the molecules of the first kind.", ""]
    for key, alt in (("density", "density per cycle"), ("energy", "potential energy per molecule per cycle"),
                     ("box", "box volume per cycle"), ("hbonds", "hydrogen bonds per cycle")):
        lines += _fig(figs, key, alt)
    lines += ["## Radial distribution functions", "",
              f"Up to {st['rdf']['r_max_nm']:.2f} nm (below half the smallest box width), minimum image; "
              "RDF rms diff: root-mean-square difference of g(r) from the reference's.", ""]
    for name in report["rdf"]["r_nm"]:
        lines += _fig(figs, f"rdf_{name}", f"RDF {RDF_LABELS.get(name, name)}")
    lines += ["## Backmapping certificates", ""] + _cert_table(report) + _fig(figs, "backmap", "backmap certificate")
    lines += ["## Stage wall times (s)", ""] + _wall_table(report) + _fig(figs, "wall_times", "stage wall times")
    if report["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines) + "\n"


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}"
        "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}th,td{border:1px solid #ccc;padding:2px 6px;"
        "text-align:right}th{background:#f3f3f3}img{max-width:100%}code{background:#f6f6f6}")


def html(md_text: str, title: str) -> str:
    """The Markdown page as a stand-alone HTML page (markdown-it, tables on)."""
    from html import escape

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(md_text)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{_CSS}</style></head>\n<body>\n{body}</body></html>\n")


def _is_report_dir(p: Path) -> bool:
    if not p.exists():
        return True
    if not p.is_dir():
        return False
    if not any(p.iterdir()):
        return True
    try:
        return json.loads((p / "report.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_folder(out: Path, report: dict) -> dict:
    """Write the report into ``out`` atomically: a temporary sibling folder renamed over it."""
    out = Path(out)
    if not _is_report_dir(out):
        raise MultiscaleError(f"--output {out} exists and is not a report folder of `multiscale report`: "
                              "give a new or empty folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{PARTIAL_MARK}", dir=out.parent))
    except OSError as e:
        raise MultiscaleError(f"cannot write {out}: {e.strerror or e}: choose a writable folder") from None
    try:
        figs = write_figures(report, tmp)
        clean = _clean({**report, "figures": figs})
        md = markdown(clean, figs)
        atomic_write_text(tmp / "report.json", json.dumps(clean, indent=1) + "\n")
        atomic_write_text(tmp / "report.md", md)
        atomic_write_text(tmp / "report.html", html(md, f"Run report {_name(report)}"))
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {"folder": out, "markdown": out / "report.md", "html": out / "report.html", "json": out / "report.json",
            "figures": [out / f for f in figs.values()]}


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def build_report(run, reference=None, reference_structure=None, output=None, tail: float = 0.5,
                 max_frames: int = 20, rdf_max: float = 1.5, log=None) -> dict:
    """Collect the numbers of run folder ``run`` and write the report (default ``RUN/report``)."""
    from ..workflow.status import resolve_root

    root = resolve_root(run)
    if reference_structure is not None and reference is None:
        raise MultiscaleError("--reference-structure needs --reference (the AA trajectory it describes)")
    report = collect(root, reference=reference, reference_structure=reference_structure, tail=tail,
                     max_frames=max_frames, rdf_max=rdf_max, log=log)
    return write_folder(Path(output) if output else root / REPORT_DIR, report)

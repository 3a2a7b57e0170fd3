"""Gather the numbers of a run folder: every finished AA/CG segment, the reference, the backmap
certificates and the stage wall times, as one JSON-ready dict (:func:`collect`)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from ..errors import MultiscaleError
from ..io import Frames, read_frames
from ..workflow.state import RunState
from .observables import HB_ANGLE_DEG, HB_DISTANCE_NM, max_rdf_radius
from .segments import System, analyse_aa, analyse_cg, edr_series, pick_frames

__all__ = ["collect", "AA_STAGES", "CG_STAGES", "FORMAT"]

FORMAT = "multiscale-run-report/1"
#: AA stages analysed, in their order within a cycle (restrained-eq: restraint energy removed).
AA_STAGES = ("aa-md", "restrained-eq", "relax")
CG_STAGES = ("cg-md",)
RDF_BIN_NM = {"solute_com": 0.02, "water_oo": 0.01}
CERTIFICATE_KEYS = ("inter_clash_pairs_initial", "inter_clash_pairs_final", "intra_clash_pairs_initial",
                    "intra_clash_pairs_final", "water_clash_pairs_final", "retries", "max_cg_deviation_nm",
                    "polar_h_reoriented", "seconds", "ok")


def _path(root: Path, rec: dict, part: str, role: str) -> Path | None:
    r = (rec.get(part) or {}).get(role)
    if not isinstance(r, dict) or not r.get("path"):
        return None
    p = Path(r["path"])
    return p if p.is_absolute() else root / p


def _settings(state: RunState):
    from ..gromacs.runner import GromacsSettings

    cfg = (state.data.get("config") or {}).get("path")
    if cfg and Path(cfg).is_file():
        try:
            from ..config import load_config

            return load_config(cfg).gromacs.settings()
        except MultiscaleError:
            pass
    return GromacsSettings()


def _done(state: RunState, names) -> list[tuple[str, dict]]:
    out = []
    for key in state.plan:
        rec = state.record(key)
        if rec and rec.get("status") == "done" and rec.get("stage") in names:
            out.append((key, rec))
    return out


def _series(edr: Path | None, settings, notes: list[str]) -> dict | None:
    """The .edr time series, or None (no file; gmx failed: a note says why).  ``notes`` carries
    the cache of this report (read each file once)."""
    if edr is None or not edr.is_file():
        return None
    cache = notes.cache if hasattr(notes, "cache") else {}
    key = str(edr.resolve())
    if key not in cache:
        try:
            cache[key] = edr_series(edr, settings)
        except MultiscaleError as exc:
            notes.append(f"{edr}: energies not read ({str(exc)[:160]})")
            cache[key] = None
    return cache[key]


class _Notes(list):
    """Notes of one report, with its cache of .edr series."""

    def __init__(self):
        super().__init__()
        self.cache: dict[str, dict | None] = {}


def _cut(fr: Frames, idx: np.ndarray) -> Frames:
    return Frames(fr.positions[idx], fr.box[idx], fr.times[idx], fr.names, fr.resnames, fr.resids)


def _cg_molecules(top: Path | None) -> int:
    """Number of molecules in the ``[ molecules ]`` section of a CG topology (0 if unreadable)."""
    if top is None or not top.is_file():
        return 0
    text = top.read_text(errors="replace")
    m = re.search(r"\[\s*molecules\s*\]([^\[]*)", text, re.I)
    if not m:
        return 0
    n = 0
    for line in m.group(1).splitlines():
        parts = line.split(";", 1)[0].split()
        if len(parts) >= 2 and parts[1].isdigit():
            n += int(parts[1])
    return n


def _aa_frames(root: Path, rec: dict, n_atoms: int, tail: float, max_frames: int) -> Frames:
    gro, xtc = _path(root, rec, "outputs", "gro"), _path(root, rec, "outputs", "xtc")
    if gro is None:
        raise MultiscaleError(f"{rec.get('stage')} of cycle {rec.get('cycle')}: no .gro recorded in state.json")
    fr = read_frames(gro, xtc if xtc is not None and xtc.is_file() else None, expected_atoms=n_atoms,
                     label=f"{rec.get('stage')} structure")
    return _cut(fr, pick_frames(fr.n_frames, tail, max_frames))


def _topology_path(root: Path, recs) -> Path:
    for _, rec in recs:
        if rec.get("stage") in ("aa-md", "relax"):
            p = _path(root, rec, "inputs", "topology")
            if p is not None and p.is_file():
                return p
    raise MultiscaleError(f"{root}: the AA topology recorded in state.json is gone: restore it (the run used it)")


def _reference(args: dict, baseline: tuple[str, dict], root: Path, n_atoms: int, max_frames: int, settings, notes):
    """(label, frames, edr series) of the reference: the given trajectory or the baseline segment."""
    ref = args.get("reference")
    if ref is None:
        key, rec = baseline
        fr = _aa_frames(root, rec, n_atoms, args["tail"], max_frames)
        return f"{key} (first AA segment)", fr, _series(_path(root, rec, "outputs", "edr"), settings, notes)
    ref = Path(ref)
    structure = args.get("reference_structure") or _path(root, baseline[1], "outputs", "gro")
    fr = read_frames(structure, ref, expected_atoms=n_atoms, label="reference structure")
    fr = _cut(fr, pick_frames(fr.n_frames, 1.0, max_frames))
    edr = ref.with_suffix(".edr")
    return str(ref), fr, _series(edr if edr.is_file() else None, settings, notes)


def _set_rdf_edges(system: System, boxes: list, rdf_max: float) -> float:
    from ..geometry import box_matrix

    rmax = max_rdf_radius(np.concatenate([box_matrix(b).reshape(-1, 3, 3) for b in boxes]), rdf_max)
    for name, w in RDF_BIN_NM.items():
        system.rdf_edges[name] = np.arange(0.0, np.floor(rmax / w) * w + 1e-9, w)
    return rmax


def _g(counts) -> list:
    from .observables import rdf_from_counts

    c, i = (np.asarray(v, float) for v in counts)
    return rdf_from_counts(c, i).tolist()


def _certificate(root: Path, rec: dict) -> dict:
    out = {"cycle": rec.get("cycle")}
    p = _path(root, rec, "outputs", "report")
    data = None
    if p is not None and p.is_file():
        try:
            data = json.loads(p.read_text())
        except ValueError:
            data = None
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
    src = first or (rec.get("info") or {})
    for k in CERTIFICATE_KEYS:
        if k in src:
            out[k] = src[k]
    if first:
        out["resampled_molecules"] = sum(int(v.get("resampled", 0)) for v in (first.get("per_moltype") or {}).values())
        blocks = (first.get("water") or {}).get("blocks") or []
        out["water_initial_clashes"] = sum(int(b.get("n_initial_clash", 0)) for b in blocks)
        out["water_molecules_moved"] = sum(int(b.get("n_molecules_moved", 0)) for b in blocks)
    out["wall_s"] = rec.get("wall_s")
    return out


def _wall_times(state: RunState) -> list[dict]:
    rows = []
    for key in state.plan:
        rec = state.record(key) or {}
        m = re.match(r"cycle_(\d+)/(.+)", key)
        rows.append({"key": key, "cycle": int(m.group(1)) if m else None, "stage": m.group(2) if m else key,
                     "status": rec.get("status", "pending"), "wall_s": rec.get("wall_s")})
    return rows


def collect(root, reference=None, reference_structure=None, tail: float = 0.5, max_frames: int = 20,
            rdf_max: float = 1.5, log=None) -> dict:
    """All numbers of the report of run folder ``root`` (see docs/report.md)."""
    log = log or (lambda *a: None)
    root = Path(root).resolve()
    if not root.is_dir():
        raise MultiscaleError(f"{root} is not a folder: give the output root of a run (the 'output' of sim.yaml)")
    state = RunState.load(root)
    aa = _done(state, AA_STAGES)
    md = [r for r in aa if r[1].get("stage") == "aa-md"]
    if not aa:
        raise MultiscaleError(f"{root}: no finished AA segment ({', '.join(AA_STAGES)}) yet: run `multiscale cycle` "
                              "until the first AA production segment is done")
    notes = _Notes()
    settings = _settings(state)
    top_path = _topology_path(root, aa)
    from ..topology import load_topology

    system = System(load_topology(top_path))
    args = {"reference": reference, "reference_structure": reference_structure, "tail": tail}
    ref_label, ref_frames, ref_series = _reference(args, (md or aa)[0], root, system.top.n_atoms, max_frames,
                                                   settings, notes)
    frames = {}
    for key, rec in aa:
        frames[key] = _aa_frames(root, rec, system.top.n_atoms, tail, max_frames)
    rmax = _set_rdf_edges(system, [ref_frames.box] + [f.box for f in frames.values()], rdf_max)
    log(f"reference: {ref_label}, {ref_frames.n_frames} frames")
    ref = analyse_aa(system, ref_frames, ref_series)
    segments = []
    for key, rec in aa:
        log(f"{key}: {frames[key].n_frames} frames")
        res = analyse_aa(system, frames[key], _series(_path(root, rec, "outputs", "edr"), settings, notes))
        segments.append({"key": key, "cycle": rec.get("cycle"), "stage": rec.get("stage"), "resolution": "aa", **res})
    for key, rec in _done(state, CG_STAGES):
        gro = _path(root, rec, "outputs", "gro")
        boxes = read_frames(gro, label="CG structure").box if gro is not None and gro.is_file() else None
        res = analyse_cg(_series(_path(root, rec, "outputs", "edr"), settings, notes), boxes,
                         _cg_molecules(_path(root, rec, "inputs", "topology")))
        segments.append({"key": key, "cycle": rec.get("cycle"), "stage": rec.get("stage"), "resolution": "cg", **res})
    return _assemble(root, state, system, top_path, ref_label, ref, segments, rmax, tail, max_frames, notes)


def _assemble(root, state, system, top_path, ref_label, ref, segments, rmax, tail, max_frames, notes) -> dict:
    r = {k: ((e[:-1] + e[1:]) / 2).tolist() for k, e in system.rdf_edges.items()}
    rdf = {"r_nm": r, "reference": {k: _g(c) for k, c in ref["rdf_counts"].items()}, "segments": {}}
    for s in segments:
        counts = s.pop("rdf_counts", None)
        if counts:
            rdf["segments"][s["key"]] = {k: _g(c) for k, c in counts.items()}
            s["rdf_rms_diff"] = {k: _rms(rdf["segments"][s["key"]][k], rdf["reference"].get(k)) for k in counts}
        s["delta"] = {k: (v["mean"] - ref["values"][k]["mean"]) for k, v in s["values"].items()
                      if v and s["resolution"] == "aa" and (ref["values"].get(k) or {}).get("mean") is not None}
    ref.pop("rdf_counts", None)
    cert = [_certificate(root, rec) for _, rec in _done(state, ("backmap",))]
    return {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run": str(root.resolve()),
            "config": (state.data.get("config") or {}).get("path"),
            "system": {"topology": str(top_path), "atoms": system.top.n_atoms, "molecules": system.n_molecules,
                       "water_molecules": system.n_water, "solute_molecules": system.n_solute,
                       "mass_g_mol": system.mass, "composition": system.top.summary()},
            "settings": {"tail_fraction": tail, "max_frames": max_frames,
                         "hbond": {"h_acceptor_max_nm": HB_DISTANCE_NM, "dha_angle_min_deg": HB_ANGLE_DEG},
                         "rdf": {"r_max_nm": rmax, "bin_nm": RDF_BIN_NM}},
            "reference": {"label": ref_label, **ref}, "segments": segments, "rdf": rdf,
            "backmap": cert, "wall_times": _wall_times(state), "notes": list(notes)}


def _rms(g, g_ref) -> float | None:
    if g_ref is None:
        return None
    a, b = np.asarray(g, float), np.asarray(g_ref, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.sqrt(np.mean((a[ok] - b[ok]) ** 2))) if ok.any() else None

"""``multiscale evaluate``: compare backmapping outputs against an AA reference (orchestration).

:func:`evaluate` reads the inputs, builds the baselines, computes every criterion for every
candidate and writes ``report.json`` + ``report.md`` (+ plots) into the output folder.  The
criteria are defined in ``docs/evaluate.md``; the pure maths lives in
:mod:`multiscale.evaluate.metrics`, the term enumeration in :mod:`multiscale.evaluate.terms`, input
reading in :mod:`multiscale.evaluate.inputs`, CG consistency in :mod:`multiscale.evaluate.consistency`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MultiscaleError
from ..geometry import bond_tree_order, make_whole
from . import metrics as M
from .consistency import WATER_GROUPINGS, cg_consistency
from .inputs import parse_candidate, read_input, read_reference, run_command, tpr_structure
from .match import match_atoms, match_cg
from .protein import protein_criteria
from .provenance import seeds_used, versions
from .report import plot_data
from .summary import NO_TERMS as _NO_TERMS
from .summary import summarise_terms as _summarise_terms
from .terms import molecule_terms

__all__ = ["evaluate", "SCHEMA_VERSION", "parse_candidate", "run_command"]

#: 2: ``worst_term`` / per-moltype worst terms ranked by JSD excess over the noise floor (was raw
#: JSD); new keys jsd_excess (per term), jsd_excess_max / jsd_excess_mean, settings.versions, settings.seeds.
SCHEMA_VERSION = 2
INTER_CUTOFF = 0.08
INTRA_CUTOFF = 0.10
#: Default cap on reference frames: None = every frame given.
REFERENCE_MAX_FRAMES = None
#: g(r) site pairs whose sampling floor exceeds this are listed but left out of the headline
RDF_FLOOR_MAX = 0.05
#: Every ensemble (reference, candidates, baselines) is rounded to this grid (nm) before it is
#: measured, so a method writing .pdb/.npy (finer) is not judged differently from .gro/.xtc.
COORD_PRECISION = 0.001


def _quantise(x: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(x, dtype=np.float64) / COORD_PRECISION) * COORD_PRECISION


# --------------------------------------------------------------------------------------------
# system-wide index arrays


class _System:
    """Topology-derived index arrays shared by every candidate."""

    def __init__(self, topology):
        self.top = topology
        self.terms = {name: molecule_terms(mt) for name, mt in topology.moltypes.items()}
        self.trees = {name: bond_tree_order(mt.n_atoms, mt.bonds) for name, mt in topology.moltypes.items()}
        n = topology.n_atoms
        self.molecule = np.zeros(n, dtype=np.int64)
        excl, bonds, rings = [], [], {}
        self.ring_owner: dict[int, list] = {}
        mol = 0
        for b in topology.blocks:
            mt = b.moltype
            t = self.terms[mt.name]
            offs = b.start + mt.n_atoms * np.arange(b.count)
            self.molecule[b.start:b.stop] = np.repeat(np.arange(mol, mol + b.count), mt.n_atoms)
            mol += b.count
            if len(t.excluded_pairs):
                excl.append((t.excluded_pairs[None] + offs[:, None, None]).reshape(-1, 2))
            if len(mt.bonds):
                bonds.append((np.sort(mt.bonds, axis=1)[None] + offs[:, None, None]).reshape(-1, 2))
            for r in t.rings:
                k = len(r)
                rings.setdefault(k, []).append(r[None] + offs[:, None])
                self.ring_owner.setdefault(k, []).extend([(mt.name, t.label(r))] * b.count)
        self.n_molecules = mol
        # sites of the intermolecular pair-distance histograms: heavy atoms, classed by moltype:element
        elements = np.asarray(topology.per_atom("elements")).astype(str)
        moltype_of = np.concatenate([np.repeat(b.moltype.name, b.n_atoms) for b in topology.blocks]).astype(str)
        self.sites = np.flatnonzero(elements != "H")
        labels = np.char.add(np.char.add(moltype_of[self.sites], ":"), elements[self.sites])
        self.site_names, self.site_class = np.unique(labels, return_inverse=True)
        self.excluded = np.concatenate(excl) if excl else np.zeros((0, 2), int)
        self.bonds = np.concatenate(bonds) if bonds else np.zeros((0, 2), int)
        self.rings = {k: np.concatenate(v) for k, v in rings.items()}

    def block_view(self, x: np.ndarray, b) -> np.ndarray:
        """(F, N, 3) -> (F, count, n_atoms, 3) view of one block."""
        return x[:, b.start:b.stop].reshape(x.shape[0], b.count, b.moltype.n_atoms, 3)

    def whole(self, pos: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Every molecule made whole along its bonds; atoms whose parent is missing stay put."""
        out = np.array(pos, dtype=np.float64, copy=True)
        for b in self.top.blocks:
            order, parent = self.trees[b.moltype.name]
            v = self.block_view(out, b)
            w = make_whole(v, M.frame_box(box, 1), order, parent)  # (F, 1, 3[, 3]) against (F, count, 3)
            bad = ~np.isfinite(w) & np.isfinite(v)
            w[bad] = v[bad]
            out[:, b.start:b.stop] = w.reshape(out.shape[0], -1, 3)
        return out


@dataclass
class _Sample:
    """Per-moltype measurements of one ensemble (reference or candidate)."""

    n_frames: int
    values: dict = field(default_factory=dict)      # (moltype, type index) -> 1-D values
    chirality: dict = field(default_factory=dict)   # moltype -> (F, count, s)
    cis: dict = field(default_factory=dict)         # moltype -> (F, count, d)
    rdf: np.ndarray | None = None                    # (C, C, n_bins) pair counts summed over frames
    rdf_frames: np.ndarray | None = None             # (F, C, C, n_bins) per frame
    rdf_weights: np.ndarray | None = None            # (F,) cell volume / first frame's volume


def _analyse(system: _System, x: np.ndarray, box: np.ndarray) -> _Sample:
    """Terms, handedness, cis/trans states and intermolecular pair-distance histograms of
    whole-molecule positions x (F, N, 3) in boxes (F, 3) or (F, 3, 3) (triclinic)."""
    s = _Sample(n_frames=x.shape[0])
    nc = len(system.site_names)
    if nc and all(M.rdf_fits(box[f]) for f in range(len(box))):
        s.rdf_frames = np.stack([M.rdf_histograms(x[f, system.sites], box[f], system.molecule[system.sites],
                                                  system.site_class, nc) for f in range(x.shape[0])])
        # g(r) ~ counts x cell volume: frames of a varying (NPT) cell are weighted by V_f / V_0
        vol = M.frame_volumes(box)
        s.rdf_weights = vol / vol[0]
        s.rdf = (s.rdf_frames * s.rdf_weights[:, None, None, None]).sum(axis=0)
    done = set()
    per_type: dict[str, list[np.ndarray]] = {}
    for b in system.top.blocks:
        per_type.setdefault(b.moltype.name, []).append(system.block_view(x, b))
    for name, views in per_type.items():
        if name in done:
            continue
        done.add(name)
        t = system.terms[name]
        v = np.concatenate(views, axis=1)                     # (F, copies, n, 3)
        for i, tt in enumerate(t.types):
            s.values[(name, i)] = M.term_values(v, tt.atoms, tt.kind).ravel()
        s.chirality[name] = M.chirality_signs(v, t.stereocentres)
        s.cis[name] = M.cis_states(v, t.double_bonds)
    return s


# --------------------------------------------------------------------------------------------
# criteria


def _sterics(system, x, box, labels):
    """Clash and ring-penetration counts per frame; labels: (N,) "RESNAMEresid:ATOM" strings."""
    inter_n, intra_n, ring_n = [], [], []
    worst = []
    for f in range(x.shape[0]):
        inter, intra, di, da = M.clash_pairs(x[f], box[f], system.molecule, system.excluded, INTER_CUTOFF, INTRA_CUTOFF)
        inter_n.append(len(inter))
        intra_n.append(len(intra))
        for pairs, d, kind in ((inter, di, "inter"), (intra, da, "intra")):
            closest = np.argsort(d, kind="stable")[:5]  # the 5 closest pairs of the frame
            for (i, j), dd in zip(pairs[closest], d[closest]):
                worst.append({"frame": f, "kind": kind, "distance_nm": round(float(dd), 4),
                              "atoms": f"{labels[i]} - {labels[j]}"})
        nr = 0
        for k, rings in system.rings.items():
            hits = M.ring_penetrations(x[f], box[f], rings, system.bonds)
            nr += len(hits)
            for r, bnd in hits[:5]:
                mt, lab = system.ring_owner[k][r]
                i, j = system.bonds[bnd]
                worst.append({"frame": f, "kind": "ring", "ring": f"{mt} {lab}",
                              "atoms": f"{labels[i]} - {labels[j]}"})
        ring_n.append(nr)
    return {
        "clashes_inter": float(np.mean(inter_n)),
        "clashes_intra": float(np.mean(intra_n)),
        "ring_penetrations": float(np.mean(ring_n)),
        "examples": sorted(worst, key=lambda w: w.get("distance_nm", 0))[:20],
    }


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _compare_terms(system, ref: _Sample, cand: _Sample, seed: int) -> list[dict]:
    out = []
    for (name, i), rv in ref.values.items():
        t = system.terms[name].types[i]
        cv = cand.values.get((name, i))
        rv_f = rv[np.isfinite(rv)]
        cv_f = cv[np.isfinite(cv)] if cv is not None else np.zeros(0)
        row = {"moltype": name, "kind": t.kind, "name": t.name, "type_index": i, "n_members": t.n_members, "heavy": t.heavy,
               "water": system.top.moltypes[name].is_water,
               "n_reference": int(len(rv_f)), "n_candidate": int(len(cv_f)),
               "jsd": None, "wasserstein": None, "jsd_floor": None, "jsd_excess": None,
               "mean_reference": None, "mean_candidate": None}
        if len(rv_f) and len(cv_f):
            row["jsd"] = M.jsd(M.histogram(cv_f, t.kind), M.histogram(rv_f, t.kind))
            row["wasserstein"] = _num(M.wasserstein(cv_f, rv_f, periodic=t.kind == "torsion"))
            row["jsd_floor"] = _num(M.jsd_floor(rv_f, len(cv_f), t.kind, seed=seed))
            row["jsd_excess"] = M.jsd_excess(row["jsd"], row["jsd_floor"])
            if t.kind == "torsion":
                row["mean_reference"] = float(np.angle(np.mean(np.exp(1j * rv_f))))
                row["mean_candidate"] = float(np.angle(np.mean(np.exp(1j * cv_f))))
            else:
                row["mean_reference"], row["mean_candidate"] = float(rv_f.mean()), float(cv_f.mean())
        out.append(row)
    return out


def _compare_rdf(system, ref: _Sample, cand: _Sample, min_pairs: int = 50, seed: int = 0, repeats: int = 5) -> list[dict]:
    """JSD (base 2) of the intermolecular site-pair g(r) per class pair: pair counts divided by the
    shell volume, each curve normalised to a distribution over r (0-0.8 nm).  ``jsd_floor``: mean
    JSD of as many randomly drawn reference frames as the candidate has against the full reference.
    Frames are weighted by their cell volume (relative to the first), so NPT ensembles average g(r)."""
    if ref.rdf is None or cand.rdf is None:
        return []
    lo, hi, nb = M.RDF_RANGE
    edges = np.linspace(lo, hi, nb + 1)
    shell = edges[1:] ** 3 - edges[:-1] ** 3
    rng = np.random.default_rng(seed)
    draws = [rng.choice(ref.n_frames, size=cand.n_frames, replace=True) for _ in range(repeats)]
    rows = []
    nc = len(system.site_names)
    for a in range(nc):
        for b in range(a, nc):
            r, c = ref.rdf[a, b], cand.rdf[a, b]
            if r.sum() < min_pairs:
                continue
            rows.append({"pair": f"{system.site_names[a]}-{system.site_names[b]}",
                         "jsd": M.jsd(c / shell, r / shell) if c.sum() > 0 else 1.0,
                         "jsd_floor": float(np.mean([M.jsd((ref.rdf_frames[d, a, b] * ref.rdf_weights[d, None]).sum(0) / shell, r / shell)
                                                     if ref.rdf_frames[d, a, b].sum() > 0 else 1.0 for d in draws])),
                         "pairs_per_frame_reference": float(r.sum() / ref.n_frames),
                         "pairs_per_frame_candidate": float(c.sum() / cand.n_frames)})
    return rows


def _majority(arr: np.ndarray) -> np.ndarray:
    """(F, count, s) signs -> (s,) majority sign (0 = tie / no data)."""
    if arr.size == 0:
        return np.zeros(arr.shape[-1])
    return np.sign(np.nansum(arr.reshape(-1, arr.shape[-1]), axis=0))


def _stereo(system, ref_signs: dict, ref_states: dict, cand: _Sample) -> dict:
    hits = tot = 0
    c_hits = c_tot = 0
    pep_cis = pep_tot = 0
    details = []
    for name, signs in cand.chirality.items():
        t = system.terms[name]
        ref = ref_signs.get(name)
        for k, centre in enumerate(t.stereocentres):
            col = signs[..., k].ravel()
            col = col[np.isfinite(col)]
            r = ref[k] if ref is not None else 0
            row = {"moltype": name, "centre": t.atom_names[centre[0]], "reference_sign": int(r), "n": int(len(col)),
                   "fraction": None}
            if r != 0 and len(col):
                ok = int(np.sum(col == r))
                row["fraction"] = ok / len(col)
                hits += ok
                tot += len(col)
            details.append({"type": "stereocentre", **row})
    for name, states in cand.cis.items():
        t = system.terms[name]
        ref = ref_states.get(name)
        for k, tor in enumerate(t.double_bonds):
            col = states[..., k].ravel()
            col = col[np.isfinite(col)]
            pep = bool(t.peptide[k])
            r = ref[k] if ref is not None else 0
            if r == 0 and pep:
                r = -1  # peptide bonds: trans unless the reference says otherwise
            if pep:
                pep_cis += int(np.sum(col == 1))
                pep_tot += len(col)
            row = {"moltype": name, "bond": t.label(tor), "peptide": pep,
                   "reference": {1: "cis", -1: "trans"}.get(int(r)), "n": int(len(col)),
                   "fraction_cis": float(np.mean(col == 1)) if len(col) else None, "fraction": None}
            if r != 0 and len(col):
                ok = int(np.sum(col == r))
                row["fraction"] = ok / len(col)
                c_hits += ok
                c_tot += len(col)
            details.append({"type": "double_bond", **row})
    return {
        "stereo_fraction": hits / tot if tot else None,
        "n_stereocentres_checked": tot,
        "cis_trans_fraction": c_hits / c_tot if c_tot else None,
        "n_double_bonds_checked": c_tot,
        "peptide_cis": pep_cis if pep_tot else None,
        "n_peptide_bonds_checked": pep_tot,
        "details": details,
    }


# --------------------------------------------------------------------------------------------
# orchestration


def evaluate(*, cg, mapping, topology, output, candidates=None, cg_trajectory=None, reference=None,
             reference_structure=None, baselines=(), seed: int = 0, energy: bool = True,
             run: dict | None = None, time_s: dict | None = None, peak_mem_mb: dict | None = None,
             reference_max_frames: int | None = REFERENCE_MAX_FRAMES, plots: bool = True,
             gromacs_settings=None, energy_options: dict | None = None, water_grouping: dict | None = None,
             log=None) -> dict:
    """Evaluate backmapping candidates; write ``output/report.json`` and ``output/report.md``.

    cg / cg_trajectory: the CG input that was backmapped; mapping: .map/.yaml path(s);
    topology: AA .top or .tpr; candidates: {name: "STRUCTURE[,TRAJECTORY]" or (structure,
    trajectory)}; reference (+ reference_structure): AA reference ensemble of the same system;
    baselines: subset of ("rigid", "random"); run: {candidate name: shell command producing
    it} (timed, peak memory measured); time_s / peak_mem_mb: {name: value} as supplied;
    energy: run the GROMACS criteria (needs a .top and ``gmx``); gromacs_settings: a
    :class:`multiscale.gromacs.GromacsSettings`; energy_options: ``em_nsteps`` / ``nvt_nsteps``
    overrides of the standard protocol (reported); water_grouping: {candidate name: "order" |
    "assignment"} how its water is scored against the W beads (:data:`WATER_GROUPINGS`; default
    "assignment", the baselines use "order").  Returns the report dict.
    """
    from ..mapping import load_mapping
    from ..topology import load_topology
    from .report import write_report

    log = log or (lambda msg: None)
    output = Path(output)
    energy_options = dict(energy_options or {})
    candidates = dict(candidates or {})
    baselines = list(dict.fromkeys(baselines or ()))
    water_grouping = dict(water_grouping or {})
    _check_options(candidates, baselines, energy_options, reference_max_frames, water_grouping, run, time_s, peak_mem_mb)

    top = load_topology(topology)
    mp = load_mapping(mapping)
    mp.check(top)
    system = _System(top)
    cgf = read_input(cg, cg_trajectory, label="CG input")
    cg_blocks = match_cg(top, mp, cgf.names, cgf.resnames, cgf.resids, label=f"CG input {cg}")
    cg_pos = cgf.positions.astype(np.float64)
    cg_box = cgf.box.astype(np.float64)
    tnames = np.asarray(top.per_atom("atom_names")).astype(str)
    tres = np.asarray(top.per_atom("resnames")).astype(str)
    tresid = top.resids()
    log(f"topology {top.summary()}; CG input {cgf.n_frames} frame(s), {cgf.n_atoms} beads")

    ref = _reference(system, top, topology, reference, reference_structure, reference_max_frames, output, log)
    entries = _file_candidates(candidates, run, time_s, peak_mem_mb, water_grouping, top, log)
    for b in baselines:
        entries.append(_make_baseline(b, top, topology, system, cg_blocks, cg_pos, cg_box, ref.conformers, seed,
                                      energy, output, gromacs_settings, log, energy_options.get("em_nsteps")))
    results = {}
    for e in entries:
        log(f"evaluating {e['name']}")
        results[e["name"]] = _evaluate_one(e, system, top, topology, cg_blocks, cg_pos, cg_box, ref.sample,
                                           ref.signs, ref.states, tnames, tres, tresid, seed, energy, output,
                                           gromacs_settings, log, energy_options)
        prot = (protein_criteria(top, system.whole(_quantise(e["positions"]), e["box"]), e["box"], ref.x, system)
                if not e["unmatched"]["missing"] else None)
        if prot is not None:
            results[e["name"]]["protein"] = prot
    inputs = {"cg": str(cg), "cg_trajectory": str(cg_trajectory) if cg_trajectory else None,
              "mapping": [str(p) for p in (mapping if isinstance(mapping, (list, tuple)) else [mapping])],
              "topology": str(topology), "topology_fingerprint": top.fingerprint(),
              "system": top.summary(), "n_atoms": top.n_atoms, "cg_frames": int(cgf.n_frames),
              "cg_beads": int(cgf.n_atoms), **ref.info}
    report = _report_dict(inputs, results, seed, baselines, energy, energy_options, gromacs_settings, reference_max_frames)
    write_report(output, report, plots=plots, plot_data=plot_data(ref.sample, entries, results, seed))
    return report


def _check_options(candidates, baselines, energy_options, reference_max_frames, water_grouping, run, time_s, peak_mem_mb) -> None:
    """One-line errors for every inconsistent option of :func:`evaluate`, before any work."""
    unknown = set(energy_options) - {"em_nsteps", "nvt_nsteps"}
    if unknown:
        raise MultiscaleError(f"energy_options: unknown key(s) {sorted(unknown)}: use em_nsteps, nvt_nsteps")
    for b in baselines:
        if b not in ("rigid", "random"):
            raise MultiscaleError(f"--baseline {b!r}: choose rigid or random")
    if not candidates and not baselines:
        raise MultiscaleError("nothing to evaluate: give --candidate NAME=PATH and/or --baseline rigid|random")
    clash = set(candidates) & set(baselines)
    if clash:
        raise MultiscaleError(f"candidate name {sorted(clash)[0]!r} is also a baseline name: rename the candidate")
    if reference_max_frames is not None and (isinstance(reference_max_frames, bool) or int(reference_max_frames) < 1):
        raise MultiscaleError(f"--reference-max-frames {reference_max_frames}: give a number of frames >= 1 (default: all)")
    for name, g in water_grouping.items():
        if g not in WATER_GROUPINGS:
            raise MultiscaleError(f"--water-grouping {name}={g}: choose {' or '.join(WATER_GROUPINGS)}")
    for name in list(run or {}) + list(time_s or {}) + list(peak_mem_mb or {}) + list(water_grouping):
        if name not in candidates:
            raise MultiscaleError(f"--run/--time-s names {name!r}, which is not a --candidate")


@dataclass
class _Reference:
    """What the reference gives: its sample (None without a trajectory), the majority
    chirality/cis states, one conformer per moltype (rigid baseline) and report info."""

    sample: object = None
    x: np.ndarray | None = None  # (F, N, 3) nm, topology order, whole (a trajectory reference only)
    signs: dict = field(default_factory=dict)
    states: dict = field(default_factory=dict)
    conformers: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def _reference(system, top, topology, reference, reference_structure, reference_max_frames, output, log) -> _Reference:
    """The reference ensemble (trajectory), else a reference structure, else a .tpr's coordinates."""
    from ..io import read_frames

    ref = _Reference(info={"reference": str(reference) if reference else None, "frames": 0})
    stereo_source, ref_x, struct_x, struct_box = None, None, None, None
    if reference is not None:
        rf = read_reference(topology, reference, reference_structure, top, reference_max_frames)
        rm = match_atoms(top, rf.names, rf.resnames, rf.resids, label=f"reference {reference}")
        ref_x = system.whole(_quantise(rm.apply(rf.positions)), rf.box)
        ref.sample = _analyse(system, ref_x, rf.box)
        ref.x = ref_x
        ref.info.update(frames=int(rf.n_frames), unmatched_atoms=rm.to_dict())
        stereo_source = "reference trajectory (majority)"
        log(f"reference: {rf.n_frames} frame(s)")
    if reference is None and reference_structure is not None:
        sf = read_input(reference_structure, label="reference structure")
        sm = match_atoms(top, sf.names, sf.resnames, sf.resids, label=f"reference structure {reference_structure}")
        struct_x, struct_box = system.whole(sm.apply(sf.positions[:1]), sf.box[:1]), sf.box[:1]
        stereo_source = "reference structure"
    if ref_x is None and struct_x is None and Path(topology).suffix == ".tpr":
        g = tpr_structure(Path(topology), output / "work")
        if g is not None:
            sf = read_frames(g, label="topology coordinates")
            struct_x, struct_box = system.whole(sf.positions[:1].astype(np.float64), sf.box[:1]), sf.box[:1]
            stereo_source = "topology (.tpr) coordinates"
    src = ref_x if ref_x is not None else struct_x
    if src is not None:
        s = ref.sample if ref.sample is not None else _analyse(system, src, struct_box)
        ref.signs = {k: _majority(v) for k, v in s.chirality.items()}
        ref.states = {k: _majority(v) for k, v in s.cis.items()}
        for b in top.blocks:
            ref.conformers.setdefault(b.moltype.name, system.block_view(src[:1], b)[0, 0])
    ref.info["stereo_reference"] = stereo_source
    return ref


def _file_candidates(candidates, run, time_s, peak_mem_mb, water_grouping, top, log) -> list[dict]:
    """Candidates read from files: (name, kind, positions (F, N, 3) in topology order, box, cost, unmatched)."""
    entries = []
    for name, spec in candidates.items():
        structure, traj = (spec if isinstance(spec, (tuple, list)) else (parse_candidate(f"{name}={spec}")[1:]))
        cost = {"time_s": None, "peak_mem_mb": None, "cost_source": None}
        if run and name in run:
            log(f"running {name}: {run[name]}")
            r = run_command(run[name])
            cost.update(time_s=r["time_s"], peak_mem_mb=r["peak_mem_mb"], cost_source="measured (--run)")
        if time_s and name in time_s:
            cost.update(time_s=float(time_s[name]), cost_source="supplied")
        if peak_mem_mb and name in peak_mem_mb:
            cost.update(peak_mem_mb=float(peak_mem_mb[name]), cost_source=cost["cost_source"] or "supplied")
        f = read_input(structure, traj, label=f"candidate {name}", topology=top)
        am = match_atoms(top, f.names, f.resnames, f.resids, label=f"candidate {name} ({structure})")
        entries.append({"name": name, "kind": "file", "source": str(structure) + (f",{traj}" if traj else ""),
                        "water_grouping": water_grouping.get(name, "assignment"),
                        "positions": am.apply(f.positions), "box": f.box.astype(np.float64),
                        "cost": cost, "unmatched": am.to_dict()})
    return entries


def _report_dict(inputs, results, seed, baselines, energy, energy_options, gromacs_settings, reference_max_frames) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "multiscale evaluate",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": inputs,
        "settings": {"seed": seed, "seeds": seeds_used(seed, baselines, energy),
                     "versions": versions(gromacs_settings, use_gromacs=bool(energy)),
                     "bins": {k: {"low": v[0], "high": v[1], "n_bins": v[2]} for k, v in M.BINS.items()},
                     "rdf": {"low": M.RDF_RANGE[0], "high": M.RDF_RANGE[1], "n_bins": M.RDF_RANGE[2], "sites": "heavy atoms"},
                     "inter_cutoff_nm": INTER_CUTOFF, "intra_cutoff_nm": INTRA_CUTOFF,
                     "reference_max_frames": reference_max_frames, "coordinate_precision_nm": COORD_PRECISION,
                     "energy": bool(energy),
                     "energy_options": energy_options},
        "candidates": results,
    }


def _frames_against_cg(e, nf_cg):
    nf = e["positions"].shape[0]
    if nf == nf_cg or nf_cg == 1:
        return np.arange(nf), np.zeros(nf, int) if nf_cg == 1 else np.arange(nf)
    if nf == 1:
        raise MultiscaleError(f"candidate {e['name']} has 1 frame but the CG input {nf_cg}: pass the CG frame that was backmapped "
                              "(--cg) or a candidate trajectory with one frame per CG frame")
    raise MultiscaleError(f"candidate {e['name']} has {nf} frames but the CG input {nf_cg}: they must correspond one to one")


def _evaluate_one(e, system, top, topology, cg_blocks, cg_pos, cg_box, ref_sample, ref_signs, ref_states,
                  tnames, tres, tresid, seed, energy, output, gromacs_settings, log, energy_options) -> dict:
    fi, ci = _frames_against_cg(e, cg_pos.shape[0])
    x = system.whole(_quantise(e["positions"]), e["box"])
    sample = _analyse(system, x, e["box"])
    e["sample"] = sample
    out = {"kind": e["kind"], "source": e["source"], "n_frames": int(x.shape[0]), "n_atoms": int(x.shape[1]),
           "unmatched_atoms": e["unmatched"]}
    rows = _compare_terms(system, ref_sample, sample, seed) if ref_sample is not None else []
    summ = _summarise_terms(rows) if rows else dict(_NO_TERMS)
    out.update({k: v for k, v in summ.items() if k != "per_moltype"})
    rdf_rows = _compare_rdf(system, ref_sample, sample, seed=seed) if ref_sample is not None else []
    # headline over the pairs a perfect method would match closely (floor <= RDF_FLOOR_MAX)
    rdf_sel = [r for r in rdf_rows if r["jsd_floor"] <= RDF_FLOOR_MAX] or rdf_rows
    worst_rdf = max(rdf_sel, key=lambda r: r["jsd"]) if rdf_sel else None
    out.update({"rdf_jsd_max": worst_rdf["jsd"] if worst_rdf else None,
                "rdf_jsd_mean": float(np.mean([r["jsd"] for r in rdf_sel])) if rdf_sel else None,
                "rdf_worst_pair": worst_rdf["pair"] if worst_rdf else None,
                "rdf_jsd_floor": worst_rdf["jsd_floor"] if worst_rdf else None})
    cgc = cg_consistency(system, cg_blocks, x[fi], cg_pos[ci], cg_box[ci], e.get("water_grouping", "assignment"))
    out.update({k: v for k, v in cgc.items() if k != "per_moltype"})
    st = _stereo(system, ref_signs, ref_states, sample)
    out.update({k: v for k, v in st.items() if k != "details"})
    labels = np.char.add(np.char.add(tres, tresid.astype(str)), np.char.add(":", tnames))
    ster = _sterics(system, x, e["box"], labels)
    out.update({k: v for k, v in ster.items() if k != "examples"})
    en = {"energy_single_point_kj_mol": None, "em_steps": None, "em_final_kj_mol": None, "em_fmax": None,
          "em_converged": None, "nvt_stable": None, "energy_note": "skipped (--no-energy)"}
    if energy:
        if e["unmatched"]["missing"]:
            en["energy_note"] = f"skipped: {e['unmatched']['missing']} topology atoms missing from the candidate"
        else:
            from .energy import energy_criteria

            try:
                # every candidate (files and baselines alike): its first frame exactly as measured
                # above (rounded to COORD_PRECISION), in its own box, through the same protocol
                en.update(energy_criteria(_quantise(e["positions"][0]), e["box"][0], top, topology,
                                          output / "work" / e["name"], seed=seed, settings=gromacs_settings, log=log,
                                          **energy_options))
            except MultiscaleError as err:
                en["energy_note"] = f"failed: {err}"
    out.update(en)
    out.update({k: e["cost"].get(k) for k in ("time_s", "peak_mem_mb", "cost_source")})
    out["details"] = {"terms": rows, "per_moltype": summ["per_moltype"], "rdf": rdf_rows, "cg_per_moltype": cgc["per_moltype"],
                      "stereo": st["details"], "steric_examples": ster["examples"],
                      **({"baseline": e["baseline_info"]} if "baseline_info" in e else {})}
    return out


def _make_baseline(kind, top, topology, system, cg_blocks, cg_pos, cg_box, conformers, seed, energy, output,
                   gromacs_settings, log, em_nsteps=None) -> dict:
    import tracemalloc

    from ..io import write_frames
    from .baselines import random_baseline, rigid_baseline

    log(f"building baseline {kind}")
    tracemalloc.start()
    t0 = time.perf_counter()
    info = {}
    try:
        if kind == "rigid":
            x = rigid_baseline(top, cg_blocks, cg_pos, cg_box, conformers, seed=seed)
            info["method"] = ("one reference conformer per molecule type fitted onto its beads; water as rigid TIP3P "
                              f"tetrahedra; seed {seed}")
            info["em"] = "none"
        else:
            x = random_baseline(top, cg_blocks, cg_pos, cg_box, seed=seed)
            info["method"] = f"atoms at their home bead + Gaussian noise (0.1 nm; water O 0.15 nm); seed {seed}"
            info["em"] = "not run (--no-energy)"
            if energy:
                from .energy import minimise

                try:
                    kw = {"nsteps": em_nsteps} if em_nsteps else {}
                    x = np.stack([minimise(x[f], cg_box[f], top, topology, output / "work" / f"random_em_{f}", log=log,
                                           settings=gromacs_settings, **kw) for f in range(x.shape[0])])
                    info["em"] = "standard EM (aa_em.mdp)"
                except MultiscaleError as err:
                    info["em"] = f"failed: {err}"
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()
    dt = time.perf_counter() - t0
    path = output / "baselines" / f"{kind}.gro"
    write_frames(path, x.astype(np.float32), cg_box, top.per_atom("atom_names"), top.per_atom("resnames"), top.resids())
    return {"name": kind, "kind": "baseline", "source": str(path), "positions": x, "box": cg_box.copy(), "water_grouping": "order",
            "cost": {"time_s": dt, "peak_mem_mb": peak, "cost_source": "measured in-process (Python heap, tracemalloc)"},
            "unmatched": {"missing": 0, "extra": 0, "missing_examples": [], "extra_examples": []}, "baseline_info": info}

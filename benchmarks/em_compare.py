#!/usr/bin/env python3
"""Restrained energy minimisation after the learned engine vs after a naive rigid placement.

    python benchmarks/em_compare.py --data /tmp/msdata/heptanol --map src/multiscale/data/mappings/heptanol.map \
        --model /tmp/msdata/hep_model.pt [--frames 5] [--seeds 0 1 2 3] [--nt 1] [--json out.json]
    python benchmarks/em_compare.py --data /tmp/msdata/octanol --map /tmp/msdata/octanol/octanol.map \
        --model /tmp/msdata/oct_model.pt

Data folder: aa.top, start.gro, md.xtc (benchmarks/make_aa_data.py).  The last ``--frames``
frames of the trajectory are the test frames (held out: a missing ``--model`` is trained on the
frames before them, minus a gap of ``--gap`` frames; an existing model's provenance is checked
and a warning printed if it saw a test frame).  Each test frame is coarse-grained
(:func:`multiscale.coarse_grain.coarse_grain`) and backmapped, for every seed, by

* ``engine``: :func:`multiscale.backmap.engine.backmap` (``seed=s``);
* ``rigid``:  :func:`multiscale.evaluate.baselines.rigid_baseline` (same CG input, ``seed=s``):
  every molecule one rigid reference conformer (the first molecule of the first trajectory
  frame) fitted on its beads, water as 4 rigid TIP3P per W bead on a tetrahedron.

Both then go through the cycle's own ``restrained-em`` stage, unchanged: the backmap stage's
files (``posre_<moltype>.itp`` from :func:`multiscale.backmap.restraints.write_posre_itp`,
heavy atoms, ``restrained.force_constant``; the preprocessed topology from
:func:`multiscale.workflow.stages.write_restrained_topology` with ``-DFLEXIBLE`` water when
``restrained.flexible_water_em``) and an :class:`multiscale.workflow.stages.MdrunStage` built as
``default_pipeline`` builds it (template ``mdp.aa.restrained_em``, ``nsteps =
restrained.em_steps``, ``emtol = restrained.emtol``, ``define = -DPOSRES``, reference = the
backmapped structure, ``mdp.overrides.aa``).  Settings: the package defaults
(:class:`multiscale.config.RestrainedSection`: 2000 steps, emtol 1000 kJ mol-1 nm-1, 1000 kJ
mol-1 nm-2) or those of ``--config sim.yaml``.  A 0-step run of the same stage gives the
initial potential energy.  Recorded per run: steps, final potential energy (kJ/mol, as GROMACS
reports it, position-restraint energy included; that part is also given separately), final
Fmax (kJ mol-1 nm-1), converged (Fmax < emtol), initial potential energy.

A third row, ``aa-ref``, is the original AA frame through the same two runs (once per frame;
``--no-reference`` skips it): the scale of a "perfect" backmapping.  mdrun runs with
``-reprod`` (``--no-reprod`` to drop it): without it FFTW plan timing changes the EM path and
the step counts of one input differ by tens between runs.  An EM that fails (GROMACS stops at
"machine precision" with Fmax = inf from overlapping atoms; the cycle's ``em_result`` rejects
it, so the cycle would stop there) counts as not converged and its pair is left out of the
differences.

Printed: per method mean +- sd over frames x seeds, and the paired difference engine - rigid
(same frame, same seed) with the number of pairs in which the engine is lower.

Measured here (2 shared CPU cores, Debian GROMACS 2022.5, ``mdrun -nt 1 -reprod``; engine at
commit 741775d; defaults: last 5 frames x seeds 0-3 = 20 pairs; restrained EM as in the cycle:
steepest descent, <= 2000 steps, emtol 1000 kJ mol-1 nm-1, 1000 kJ mol-1 nm-2 on heavy atoms,
flexible water).  Mean +- sd; E in kJ/mol, Fmax in kJ mol-1 nm-1; "lower" = pairs in which the
engine's value is lower.

heptan-1-ol in water (40 HPO + 700 TIP3P, 3060 atoms; /tmp/msdata/hep_model.pt, trained on
frames 0..187, test frames 246..250); wall time 87 s::

    method     steps     E0                              E_final            E_posre     Fmax        converged
    engine   176 +- 48   1.4e7 +- 4.7e7 (median 5.9e5)   -2.60e4 +- 2.2e3    98 +- 20   878 +- 84    20/20
    rigid    221 +- 51   3.2e10 +- 5.7e10 (median 7.3e9) -2.49e4 +- 2.1e3   178 +- 27   871 +- 123   20/20
    aa-ref    12 +- 4    -2.80e4 +- 2.1e2                -3.22e4 +- 5e2       3 +- 1    801 +- 195    5/5
    engine - rigid: steps -45 +- 73 (lower 16/20), E0 lower 20/20, E_final -1.05e3 +- 3.2e3 (lower 14/20),
                    E_posre -80 +- 33 (lower 20/20), Fmax +7 +- 168 (lower 10/20)

(R)-octan-2-ol liquid (89 OCT, 2403 atoms, no water; /tmp/msdata/oct_model.pt, trained on frames
0..224, test frames 296..300); wall time 43 s.  (3 beads: the rigid placement is a deterministic
Kabsch fit, the same structure for every seed)::

    method     steps     E0                              E_final            E_posre     Fmax        converged
    engine    80 +- 30   2.7e5 +- 2.4e5 (median 1.6e5)   -4.85e3 +- 8.2e2   112 +- 26   865 +- 122   20/20
    rigid    100 +- 22   4.9e6 +- 4.3e6 (median 3.2e6)   -4.55e3 +- 4.3e2   170 +- 38   746 +- 111   20/20
    aa-ref    19 +- 5    -2.96e3 +- 1.8e2                -8.23e3 +- 2.2e2    10 +- 1    700 +- 184    5/5
    engine - rigid: steps -20 +- 41 (lower 15/20), E0 lower 20/20, E_final -3.0e2 +- 9.1e2 (lower 15/20),
                    E_posre -59 +- 49 (lower 17/20), Fmax +120 +- 174 (lower 4/20)

``--frames 10 --no-reference`` (40 pairs): heptanol steps -37 +- 70 (lower 30/38), E_final
-1.4e3 +- 2.7e3 (lower 29/38), E_posre lower 38/38; the rigid EM *failed* in 2/40 (frame 244,
seeds 0 and 3: infinite force on overlapping water atoms), the engine's in 0/40; 200 s.
Octanol: steps -5 +- 40 (lower 22/40), E_final -7.2e2 +- 1.1e3 (lower 32/40), E_posre lower
30/40; 89 s.

Tighter tolerance (``--emtol 100 --em-steps 5000``, 20 pairs each; engine at 83eecfc, before
``-reprod`` was added): heptanol 2662 +- 608 vs 2890 +- 559 steps (lower 11/20), E_final -503 +-
670 (lower 15/20), 764 s; octanol 1053 +- 187 vs 894 +- 156 steps (the engine needs *more*:
lower 5/20), E_final -747 +- 180 (lower 20/20), 406 s.

Summary: after the engine the restrained EM starts 1-4 orders of magnitude lower in energy,
leaves less energy in the restraints, ends lower in 70-80 % of pairs and never failed.  It
needs fewer steps on average (heptanol -45, octanol -20 with emtol 1000), but the saving is
within the pair-to-pair spread: on octanol it is gone with 10 frames (-5 +- 40), and with emtol
100 the engine needs more steps there.  With emtol 1000 the EM stops as soon as the largest
force drops below the threshold, so "steps" and "E_final" mostly measure that stopping point;
every method stays far above the minimised reference (aa-ref).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from multiscale.backmap.engine import backmap, load_model, train  # noqa: E402
from multiscale.backmap.restraints import write_posre_itp  # noqa: E402
from multiscale.coarse_grain import cg_layout, cg_names, coarse_grain, whole_molecules  # noqa: E402
from multiscale.config import MdpSection, RestrainedSection, load_config  # noqa: E402
from multiscale.errors import MultiscaleError  # noqa: E402
from multiscale.evaluate.baselines import rigid_baseline  # noqa: E402
from multiscale.evaluate.match import match_cg  # noqa: E402
from multiscale.gromacs import GromacsSettings, read_xvg, run_tool  # noqa: E402
from multiscale.io import Frames, read_frames, write_frames  # noqa: E402
from multiscale.mapping import load_mapping  # noqa: E402
from multiscale.topology import load_topology  # noqa: E402
from multiscale.workflow.stages import MdrunStage, StageContext, write_restrained_topology  # noqa: E402

METHODS = ("engine", "rigid", "aa-ref")


# ------------------------------------------------------------------------------------------
# model


def _trained_frames(model) -> set[int]:
    out: set[int] = set()
    for p in getattr(model, "provenance", []) or []:
        fr = p.get("frames") if isinstance(p, dict) else None
        if isinstance(fr, str) and ".." in fr:
            a, b = fr.split("..")
            out.update(range(int(a), int(b) + 1))
    return out


def get_model(path: Path | None, top, mp, fr: Frames, n_train: int, seed: int):
    if path is not None and path.exists():
        return load_model(path, top), None
    sub = Frames(fr.positions[:n_train], fr.box[:n_train], fr.times[:n_train], fr.names, fr.resnames, fr.resids)
    print(f"training a model on frames 0..{n_train - 1} ...", flush=True)
    t0 = time.perf_counter()
    model = train(top, mp, sub, seed=seed, log=lambda *a, **k: None,
                  provenance={"files": ["md.xtc"], "frames": f"0..{n_train - 1}"})
    dt = time.perf_counter() - t0
    if path is not None:
        model.save(path)
        print(f"model saved to {path} ({dt:.0f} s)", flush=True)
    return model, dt


# ------------------------------------------------------------------------------------------
# the cycle's restrained-em stage on one structure


def _posre_energy(edr: Path, settings, work: Path) -> float | None:
    """Position-restraint energy of the last frame of an EM .edr (None if the term is absent)."""
    try:
        run_tool("energy", settings, log=work / "posre_energy.log", cwd=work, input=["Position-Rest.", ""],
                 stage="posre energy", f=str(edr), o=str(work / "posre.xvg"))
        names, rows = read_xvg(work / "posre.xvg")
    except MultiscaleError:
        return None
    return float(rows[-1][1]) if rows and len(rows[-1]) > 1 else None


def restrained_em(work: Path, x: np.ndarray, box: np.ndarray, top, aa_top: Path, rs, mdp, settings) -> dict:
    """Write the backmap stage's restraint files for structure ``x`` (N, 3) nm, then run the
    cycle's restrained-em stage (and a 0-step copy for the initial energy); returns the numbers."""
    work.mkdir(parents=True, exist_ok=True)
    gro = work / "backmapped.gro"
    write_frames(gro, np.asarray(x, np.float32), box, top.per_atom("atom_names"), top.per_atom("resnames"),
                 top.resids(), title="em_compare candidate")
    posres = {}
    for mt in top.moltypes.values():
        if not mt.is_water:
            write_posre_itp(mt, work / f"posre_{mt.name}.itp", force_constant=rs.force_constant)
            posres[mt.name] = f"posre_{mt.name}.itp"
    top_em = write_restrained_topology(aa_top, gro, work / "restrained-em.top", posres, settings,
                                       define="-DFLEXIBLE" if rs.flexible_water_em else "")
    out: dict = {}
    ctx = StageContext(config=None, root=work, settings=settings, seed=0, log=work / "stages.log")
    for name, nsteps in (("initial", 0), ("restrained-em", rs.em_steps)):
        st = MdrunStage(name=name, cycle=0, workdir=work / name, template=mdp.aa.restrained_em,
                        values={"nsteps": nsteps, "emtol": rs.emtol, "define": "-DPOSRES"},
                        mdp_options=dict(mdp.overrides.aa), structure=gro, topology=top_em, restraint=gro,
                        minimisation=True)
        t0 = time.perf_counter()
        try:
            res = st.run(ctx)
        except MultiscaleError as exc:
            out[name] = {"error": str(exc)}
            continue
        e = dict(res.energies)
        e["wall_s"] = round(time.perf_counter() - t0, 3)
        if nsteps:
            e["posre_kj_mol"] = _posre_energy(st.outputs["edr"], settings, st.workdir)
        out[name] = e
    em, ini = out.get("restrained-em", {}), out.get("initial", {})
    # a failed EM (e.g. infinite forces from overlapping atoms: GROMACS prints "Fmax = inf", which
    # the cycle's em_result rejects, so the cycle's stage would fail too) counts as not converged
    return {"steps": em.get("steps"), "e_final": em.get("potential_kj_mol"), "fmax": em.get("fmax"),
            "converged": bool(em.get("converged")), "failed": "error" in em, "e_posre": em.get("posre_kj_mol"),
            "e_initial": ini.get("potential_kj_mol"), "fmax_initial": ini.get("fmax"),
            "em_wall_s": em.get("wall_s"), "error": em.get("error") or ini.get("error")}


# ------------------------------------------------------------------------------------------
# statistics


def _ms(v) -> tuple[float, float]:
    a = np.asarray([x for x in v if x is not None], float)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _fmt(m: float, s: float, sci: bool = False) -> str:
    if sci:
        return f"{m:.3g} +- {s:.2g}"
    return f"{m:.0f} +- {s:.0f}"


def summarise(runs: list[dict], emtol: float) -> tuple[str, dict]:
    lines = []
    cols = [("steps", "steps", False), ("e_initial", "E0 (kJ/mol)", True), ("e_final", "E_final (kJ/mol)", True),
            ("e_posre", "E_posre", False), ("fmax", "Fmax", False)]
    header = f"{'method':8s}" + "".join(f"{c[1]:>22s}" for c in cols) + f"{'converged':>12s}"
    lines.append(header)
    summary: dict = {"per_method": {}, "paired": {}}
    for m in METHODS:
        rs = [r for r in runs if r["method"] == m]
        if not rs:
            continue
        row = f"{m:8s}"
        sm = {}
        for key, _, sci in cols:
            mu, sd = _ms(r[key] for r in rs)
            sm[key] = {"mean": mu, "sd": sd}
            row += f"{_fmt(mu, sd, sci):>22s}"
        conv = sum(bool(r["converged"]) for r in rs)
        failed = sum(bool(r["failed"]) for r in rs)
        sm["converged"] = f"{conv}/{len(rs)}"
        sm["failed"] = failed
        row += f"{conv:>7d}/{len(rs):<4d}" + (f"  ({failed} EM failed)" if failed else "")
        lines.append(row)
        summary["per_method"][m] = sm
    by = {(r["frame"], r["seed"], r["method"]): r for r in runs}
    pairs = [(by[(f, s, "engine")], by[(f, s, "rigid")]) for (f, s, m) in by if m == "engine" and (f, s, "rigid") in by]
    lines.append(f"paired engine - rigid ({len(pairs)} pairs: same frame, same seed; pairs with a failed EM left out):")
    for key, label, sci in cols:
        d = [a[key] - b[key] for a, b in pairs if a[key] is not None and b[key] is not None]
        mu, sd = _ms(d)
        lower = sum(x < 0 for x in d)
        summary["paired"][key] = {"mean": mu, "sd": sd, "engine_lower": lower, "n": len(d)}
        lines.append(f"  {label:18s} {_fmt(mu, sd, sci):>22s}   engine lower in {lower}/{len(d)}")
    return "\n".join(lines), summary


# ------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/tmp/msdata/heptanol"), help="folder with aa.top, start.gro, md.xtc")
    ap.add_argument("--map", type=Path, default=ROOT / "src" / "multiscale" / "data" / "mappings" / "heptanol.map")
    ap.add_argument("--model", type=Path, default=None, help="trained model (.pt); trained (and saved here) if missing")
    ap.add_argument("--frames", type=int, default=5, help="test frames, the last ones of the trajectory (default 5)")
    ap.add_argument("--gap", type=int, default=10, help="frames left out between training and test frames when training")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="backmapping seeds (both methods; default 0 1 2 3)")
    ap.add_argument("--config", type=Path, default=None,
                    help="sim.yaml whose restrained/mdp/gromacs settings to use (default: the package defaults)")
    ap.add_argument("--em-steps", type=int, default=None, help="override restrained.em_steps")
    ap.add_argument("--emtol", type=float, default=None, help="override restrained.emtol (kJ mol-1 nm-1)")
    ap.add_argument("--nt", type=int, default=1, help="mdrun -nt (default 1)")
    ap.add_argument("--no-reprod", action="store_true",
                    help="run mdrun without -reprod (default: -reprod, so the same input gives the same EM path; "
                         "without it FFTW plan timing makes step counts differ by tens between runs)")
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the reference row (the original AA frame through the same EM, once per frame)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the GROMACS folders here (default: a temporary folder)")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    if args.config is not None:
        cfg = load_config(args.config)
        rs, mdp = cfg.restrained, cfg.mdp
        settings = GromacsSettings.from_mapping(getattr(cfg, "gromacs", None) and
                                                {k: v for k, v in dict(cfg.gromacs).items() if v is not None})
    else:
        rs, mdp, settings = RestrainedSection(), MdpSection(), GromacsSettings()
    settings.nt = args.nt
    if not args.no_reprod and "-reprod" not in settings.extra_mdrun_args:
        settings.extra_mdrun_args = list(settings.extra_mdrun_args) + ["-reprod"]
    if args.em_steps is not None:
        rs = rs.model_copy(update={"em_steps": args.em_steps})
    if args.emtol is not None:
        rs = rs.model_copy(update={"emtol": args.emtol})

    aa_top = (args.data / "aa.top").resolve()
    top = load_topology(aa_top)
    mp = load_mapping(args.map)
    mp.check(top)
    fr = read_frames(args.data / "start.gro", args.data / "md.xtc", expected_atoms=top.n_atoms)
    nf = fr.n_frames
    if not 0 < args.frames < nf:
        raise SystemExit(f"--frames {args.frames}: the trajectory has {nf} frames")
    test = list(range(nf - args.frames, nf))
    n_train = nf - args.frames - args.gap
    model, train_s = get_model(args.model, top, mp, fr, n_train, seed=0)
    seen = _trained_frames(model) & set(test)
    if seen:
        print(f"WARNING: the model's provenance says it was trained on test frame(s) {sorted(seen)}", flush=True)

    # rigid reference conformer: first molecule of each type in the first (training) frame, whole
    conformers = {b.moltype.name: whole_molecules(fr.positions[:1], fr.box[:1], b)[0, 0]
                  for b in top.blocks if not b.moltype.is_water}
    layout = cg_layout(top, mp)
    names, resnames, resids = cg_names(layout)
    cg_blocks = match_cg(top, mp, names, resnames, resids)

    print(f"system {top.summary()} ({top.n_atoms} atoms); {nf} frames; test frames {test[0]}..{test[-1]}; "
          f"seeds {args.seeds}; restrained EM: {rs.em_steps} steps, emtol {rs.emtol:g}, "
          f"k {rs.force_constant:g} kJ mol-1 nm-2, flexible water {rs.flexible_water_em}, template "
          f"{mdp.aa.restrained_em}, mdrun -nt {settings.nt} {' '.join(settings.extra_mdrun_args)}", flush=True)
    base = Path(tempfile.mkdtemp(prefix="em_compare_")) if args.keep is None else args.keep.resolve()
    runs: list[dict] = []
    try:
        for f in test:
            cg = coarse_grain(fr.positions[f:f + 1], fr.box[f:f + 1], top, mp, seed=f)
            box = cg.box[0]
            if not args.no_reference:
                r = restrained_em(base / f"f{f}_aa-ref", fr.positions[f], box, top, aa_top, rs, mdp, settings)
                r.update(frame=f, seed=None, method="aa-ref", backmap_s=None)
                runs.append(r)
                print(f"frame {f} aa-ref : E0 {r['e_initial']} -> {r['e_final']} kJ/mol in {r['steps']} steps, "
                      f"Fmax {r['fmax']}, converged {r['converged']}" + (f"  ERROR {r['error']}" if r["error"] else ""),
                      flush=True)
            for s in args.seeds:
                t0 = time.perf_counter()
                xe, _ = backmap(model, top, cg.positions, cg.box, seed=s)
                te = time.perf_counter() - t0
                t0 = time.perf_counter()
                xr = rigid_baseline(top, cg_blocks, cg.positions.astype(np.float64), cg.box.astype(np.float64),
                                    conformers, seed=s)
                tr = time.perf_counter() - t0
                for method, x, tb in (("engine", xe[0], te), ("rigid", xr[0], tr)):
                    r = restrained_em(base / f"f{f}_s{s}_{method}", x, box, top, aa_top, rs, mdp, settings)
                    r.update(frame=f, seed=s, method=method, backmap_s=round(tb, 4))
                    runs.append(r)
                    e0 = "n/a" if r["e_initial"] is None else f"{r['e_initial']:.4g}"
                    print(f"frame {f} seed {s} {method:6s}: E0 {e0} -> {r['e_final']} kJ/mol in {r['steps']} steps, "
                          f"Fmax {r['fmax']}, converged {r['converged']}, posre {r['e_posre']}"
                          + (f"  ERROR {r['error']}" if r["error"] else ""), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    table, summary = summarise(runs, rs.emtol)
    wall = time.perf_counter() - t_start
    print()
    print(table)
    print(f"total wall time {wall:.0f} s" + (f" (training {train_s:.0f} s)" if train_s else ""))
    if args.json:
        args.json.write_text(json.dumps({
            "data": str(args.data), "map": str(args.map), "model": str(args.model), "test_frames": test,
            "seeds": args.seeds, "restrained": rs.model_dump(mode="json"), "template": mdp.aa.restrained_em,
            "mdrun_nt": settings.nt, "mdrun_extra": settings.extra_mdrun_args, "system": top.summary(), "n_atoms": top.n_atoms,
            "summary": summary, "runs": runs, "wall_s": wall, "train_s": train_s}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Sampling speed-up of the cycle, measured in a slow observable: molecular (solute centre-of-mass)
mean-square displacement reached per wall-clock hour, cycle vs plain AA MD on the same machine.

    python benchmarks/speedup.py DIR        # DIR as made by benchmarks/cycle_drift.py (its two runs)

Martini time is not AA time, so the comparison is made in the observable, never in ns:

* plain AA: the solutes' COM MSD(lag) of DIR/plain's aa-md (all time origins, molecules made
  whole, unwrapped by minimum-image steps) -> D_AA from a straight-line fit over lags
  ``--fit`` ps; rate_AA = 6 D_AA x (AA ps per wall second of that aa-md) x 3600 (nm^2 per hour).
* cycle: every solute's COM is followed through each whole cycle c (aa-md frames, the
  coarse-grained frame, cg-em, cg-eq, the cg-md frames, the backmapped frame, restrained-em,
  restrained-eq, relax, the next aa-md's first frame), summing minimum-image steps between
  consecutive snapshots (CG: bead centroid; the AA->CG and CG->AA definition offsets cancel
  in the sum); d^2[c, m] is molecule m's squared displacement over cycle c.
  rate_cycle = mean d^2 / mean wall time of a cycle (every stage's wall_s from state.json,
  training, backmapping and EM included; cycle 1's aa-em and aa-eq left out, as for plain AA).
* speed-up = rate_cycle / rate_AA; error bar: 2000 bootstrap resamples (cycles and molecules of
  the cycle run with their wall times; molecules of the plain run), 16th-84th percentile.
  Also printed: the AA-equivalent time one cycle buys (mean d^2 / 6 D_AA).
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

from multiscale.geometry import minimum_image  # noqa: E402
from multiscale.io import read_frames  # noqa: E402
from multiscale.runreport.observables import molecule_coms  # noqa: E402
from multiscale.runreport.segments import System  # noqa: E402
from multiscale.topology import load_topology  # noqa: E402


def _read(structure: Path, traj: Path | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_frames(structure, traj)


def aa_coms(system: System, structure: Path, traj: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Solute COMs (F, M, 3) and boxes of an AA structure/trajectory."""
    fr = _read(structure, traj)
    return np.stack([molecule_coms(x, b, system.solutes) for x, b in zip(fr.positions, fr.box)]), fr.box


def cg_coms(structure: Path, traj: Path | None, resnames: set) -> tuple[np.ndarray, np.ndarray]:
    """Bead centroids (F, M, 3) of the CG molecules whose residue name is in ``resnames``."""
    fr = _read(structure, traj)
    rn, ri = np.asarray(fr.resnames), np.asarray(fr.resids)
    sel = np.flatnonzero(np.isin(rn, list(resnames)))
    key = np.stack([ri[sel]], axis=1)
    starts = np.flatnonzero(np.r_[True, np.any(key[1:] != key[:-1], axis=1)])
    groups = np.split(sel, starts[1:])
    out = np.empty((fr.n_frames, len(groups), 3))
    for f in range(fr.n_frames):
        for m, g in enumerate(groups):
            p = fr.positions[f, g].astype(np.float64)
            out[f, m] = p[0] + minimum_image(p - p[0], fr.box[f]).mean(axis=0)
    return out, fr.box


def path_length(snaps: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Net displacement (M, 3) along a chain of (coms (F, M, 3), boxes (F, ...)) snapshots."""
    pos = [(c, b) for coms, boxes in snaps for c, b in zip(coms, boxes)]
    d = np.zeros_like(pos[0][0])
    for (a, _), (b, box) in zip(pos[:-1], pos[1:]):
        d += minimum_image(b - a, box)
    return d


def cycle_displacements(run: Path, system: System, n: int) -> np.ndarray:
    """d^2 (cycles, M) of every solute over each whole cycle."""
    names = {b.moltype.name for b in system.solutes} | {r for b in system.solutes for r in set(b.moltype.resnames)}
    sd = lambda c, s: cycle_runs.stage_dir(run, c, s)  # noqa: E731
    out = []
    for c in range(1, n + 1):
        snaps = [aa_coms(system, run / "aa.gro", sd(c, "aa-md") / "aa-md.xtc"),
                 cg_coms(sd(c, "coarse-grain") / "cg.gro", None, names)]
        for s in ("cg-em", "cg-eq"):
            snaps.append(cg_coms(sd(c, s) / f"{s}.gro", None, names))
        snaps.append(cg_coms(sd(c, "cg-md") / "cg-md.gro", sd(c, "cg-md") / "cg-md.xtc", names))
        snaps.append(cg_coms(sd(c, "cg-md") / "cg-md.gro", None, names))
        snaps.append(aa_coms(system, sd(c, "backmap") / "backmapped.gro"))
        for s in ("restrained-em", "restrained-eq", "relax"):
            snaps.append(aa_coms(system, sd(c, s) / f"{s}.gro"))
        if c < n:
            first = aa_coms(system, run / "aa.gro", sd(c + 1, "aa-md") / "aa-md.xtc")
            snaps.append((first[0][:1], first[1][:1]))
        out.append((path_length(snaps) ** 2).sum(axis=1))
    return np.asarray(out)


def unwrapped(coms: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    steps = np.stack([minimum_image(coms[i + 1] - coms[i], boxes[i + 1]) for i in range(len(coms) - 1)])
    return np.concatenate([coms[:1], coms[:1] + np.cumsum(steps, axis=0)])


def msd_per_molecule(x: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """(len(lags), M): squared displacement per molecule averaged over all time origins."""
    return np.stack([((x[lag:] - x[:-lag]) ** 2).sum(axis=2).mean(axis=0) for lag in lags])


def fit_d(lag_ps: np.ndarray, msd: np.ndarray) -> float:
    """D (nm^2/ps) from MSD = 6 D t + c."""
    return float(np.polyfit(lag_ps, msd, 1)[0] / 6.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--fit", type=float, nargs=2, default=(5.0, 30.0), help="lag range (ps) of the D_AA fit")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    cyc, plain = args.folder / "cycle", args.folder / "plain"
    n = len([p for p in (cyc / "runs").glob("cycle_*") if (p / "relax" / "relax.gro").is_file()])
    system = System(load_topology(cyc / "aa.top"))

    pst = cycle_runs.state(plain)["stages"]["cycle_001/aa-md"]
    pc, pb = aa_coms(system, plain / "aa.gro", cycle_runs.stage_dir(plain, 1, "aa-md") / "aa-md.xtc")
    x = unwrapped(pc, pb)
    dt = float(pst["info"]["length_ps"]) / (len(x) - 1)
    lags = np.arange(max(1, int(round(args.fit[0] / dt))), int(round(args.fit[1] / dt)) + 1)
    per_mol = msd_per_molecule(x, lags)
    d_aa = fit_d(lags * dt, per_mol.mean(axis=1))
    aa_ps_per_s = float(pst["info"]["length_ps"]) / float(pst["wall_s"])

    d2 = cycle_displacements(cyc, system, n)
    st = cycle_runs.state(cyc)["stages"]
    walls = np.array([sum(float(r.get("wall_s") or 0) for k, r in st.items()
                          if k.startswith(f"cycle_{c:03d}/") and r["stage"] not in ("aa-em", "aa-eq"))
                      for c in range(1, n + 1)])
    rate_aa = 6 * d_aa * aa_ps_per_s * 3600
    # the same AA speed measured inside the cycle run (its aa-md stages: same load as the cycle's own stages)
    mds = [r for r in st.values() if r["stage"] == "aa-md" and r.get("status") == "done"]
    aa_ps_per_s_in_cycle = sum(float(r["info"]["length_ps"]) for r in mds) / sum(float(r["wall_s"]) for r in mds)
    rate_cyc = d2.mean() / walls.mean() * 3600

    rng = np.random.default_rng(args.seed)
    boot = []
    for _ in range(2000):
        ci, mi = rng.integers(0, n, n), rng.integers(0, d2.shape[1], d2.shape[1])
        pm = rng.integers(0, per_mol.shape[1], per_mol.shape[1])
        r_c = d2[np.ix_(ci, mi)].mean() / walls[ci].mean() * 3600
        r_a = 6 * fit_d(lags * dt, per_mol[:, pm].mean(axis=1)) * aa_ps_per_s * 3600
        boot.append(r_c / r_a)
    lo, hi = np.percentile(boot, [16, 84])
    res = {"cycles": n, "D_AA_nm2_per_ps": d_aa, "aa_ps_per_wall_s": aa_ps_per_s, "rate_AA_nm2_per_h": rate_aa,
           "msd_per_cycle_nm2": float(d2.mean()), "wall_per_cycle_s": float(walls.mean()),
           "rate_cycle_nm2_per_h": rate_cyc, "speedup": rate_cyc / rate_aa, "speedup_16_84": [float(lo), float(hi)],
           "aa_equivalent_ps_per_cycle": float(d2.mean() / (6 * d_aa)), "fit_ps": list(args.fit),
           "aa_ps_per_wall_s_in_cycle_run": aa_ps_per_s_in_cycle,
           "speedup_aa_speed_from_cycle_run": rate_cyc / (6 * d_aa * aa_ps_per_s_in_cycle * 3600)}
    text = (f"| | plain AA | cycle |\n|---|---|---|\n"
            f"| wall time | {1 / aa_ps_per_s * 1000:.0f} s per ns of AA MD | {walls.mean():.0f} s per cycle |\n"
            f"| solute COM diffusion | D_AA = {d_aa * 1e3:.3f} nm²/ns (MSD fit {args.fit[0]:g}–{args.fit[1]:g} ps) "
            f"| {d2.mean():.3f} nm² per cycle (= {res['aa_equivalent_ps_per_cycle']:.0f} ps of AA diffusion) |\n"
            f"| MSD per wall-clock hour | {rate_aa:.1f} nm²/h | {rate_cyc:.1f} nm²/h |\n"
            f"| **speed-up** | 1 | **{res['speedup']:.1f}** (16–84 %: {lo:.1f}–{hi:.1f}) |\n"
            f"| speed-up with the AA speed of the cycle run's own aa-md stages ({1 / aa_ps_per_s_in_cycle * 1000:.0f} s/ns) "
            f"| 1 | {res['speedup_aa_speed_from_cycle_run']:.1f} |\n")
    print(text)
    (args.folder / "speedup.md").write_text(text)
    (args.folder / "speedup.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

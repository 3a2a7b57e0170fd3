#!/usr/bin/env python3
"""Ester conformations of backmapped POPC and the restrained EM after them, seed by seed.

    python benchmarks/lipid_esters.py [--seeds 5] [--src DIR] [--work /tmp/lipid_esters] [--out FILE]
    python benchmarks/lipid_esters.py --compare OTHER_WORK [--work /tmp/lipid_esters]

Input: the test bilayer of ``membrane_backmap.py`` (insane, 72 POPC, W, 0.15 M NaCl, Martini 3 EM +
2 ns NPT; the same build for the same --seed).  For each backmap seed 1..N: the real ``multiscale
backmap`` (shipped models), its engine time, the |R-O-C=O| torsion of all 144 esters
(``lipid_analysis.ester_torsions``: ~0 in a Z ester, the conformation CHARMM36 keeps), then the
CHARMM-GUI-style restrained EM of ``membrane_backmap.restrained_em`` (one thread, ``-reprod``: the
step count is the structure's own) and the esters after it.  ``--src DIR``: run the commands with
another checkout's ``src`` on PYTHONPATH (an A/B of two versions on the same input).

``--compare OTHER_WORK``: no runs; the backmapped bilayers of two finished work folders (e.g. this
version's and ``--src``'s) compared on what the esters could shift: the S_CH profiles of both
chains (max |difference| of the per-carbon means) and the tail C-C torsions (JSD per torsion, 10 deg
bins), next to the same numbers between seeds 1-2 and the rest of one folder (the seed-to-seed floor).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from membrane_backmap import add_cg_args, build_cg, lipid_block, restrained_em, sh  # noqa: E402


def esters(top, gro) -> np.ndarray:
    """(M * E,) degrees, the esters of every POPC of ``gro``."""
    from multiscale.io import read_frames
    from multiscale.lipid_analysis import ester_torsions, lipid_coordinates

    blk = lipid_block(top)
    fr = read_frames(gro)
    x = lipid_coordinates(fr.positions, fr.box, blk)
    return ester_torsions(x, blk.moltype.elements, blk.moltype.bonds).ravel()


def _jsd(a: np.ndarray, b: np.ndarray) -> float:
    """Jensen-Shannon divergence (nats) of two torsion samples (radians), 36 bins."""
    bins = np.linspace(-np.pi, np.pi, 37)
    p, q = (np.histogram(v, bins)[0] + 1e-9 for v in (a, b))
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    return float(0.5 * (p * np.log(p / m)).sum() + 0.5 * (q * np.log(q / m)).sum())


def profiles(top, x, y) -> dict:
    """Per chain: max |S_CH(x) - S_CH(y)| and (mean, max) tail torsion JSD; x, y (F, M, n, 3) whole POPC."""
    from multiscale.lipid_analysis import order_parameters, tail_torsions

    mt = lipid_block(top).moltype
    out = {}
    for c, name in ((3, "sn-1"), (2, "sn-2")):
        s = [order_parameters(v, mt.atom_names, mt.elements, mt.bonds, c).mean(0) for v in (x, y)]
        t = [tail_torsions(v, mt.atom_names, c)[1] for v in (x, y)]
        js = [_jsd(t[0][:, k], t[1][:, k]) for k in range(t[0].shape[1])]
        out[name] = {"scd_max_diff": round(float(np.abs(s[0] - s[1]).max()), 3), "jsd_mean": round(float(np.mean(js)), 3),
                     "jsd_max": round(float(np.max(js)), 3)}
    return out


def compare(a) -> int:
    """``--compare``: this work folder's bilayers against OTHER_WORK's, and the seed-to-seed floor."""
    from multiscale.io import read_frames
    from multiscale.lipid_analysis import lipid_coordinates
    from multiscale.topology import load_topology

    top = load_topology(a.work / "aa.top")
    blk = lipid_block(top)

    def load(work: Path) -> np.ndarray:
        frames = [read_frames(work / f"seed{s}" / "aa.gro") for s in range(1, a.seeds + 1)]
        return np.concatenate([lipid_coordinates(f.positions, f.box, blk) for f in frames], 0)

    x, y = load(a.work), load(a.compare)
    res = {"this vs other": profiles(top, x, y), "floor (this, seeds 1-2 vs rest)": profiles(top, x[:2], x[2:]),
           "floor (other, seeds 1-2 vs rest)": profiles(top, y[:2], y[2:])}
    print(json.dumps(res, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    add_cg_args(p)
    p.add_argument("--src", type=Path, default=None, help="another checkout's src folder to run the commands with")
    p.add_argument("--work", type=Path, default=Path("/tmp/lipid_esters"))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lipid_esters.md")
    p.add_argument("--compare", type=Path, default=None, help="another finished work folder: compare S_CH and tail torsions")
    a = p.parse_args(argv)
    if a.compare:
        return compare(a)
    from multiscale.topology import load_topology

    a.work.mkdir(parents=True, exist_ok=True)
    cg = a.work / "cg"
    if not (cg / "cg_md.gro").is_file():
        build_cg(a.work, a)
    env = dict(os.environ, PYTHONPATH=str(a.src.resolve())) if a.src else None
    ms = [sys.executable, "-m", "multiscale.cli"]
    sh(*ms, "topology", "--cg-topology", cg / "cg.top", "--output", a.work / "aa.top", env=env)
    top = load_topology(a.work / "aa.top")
    rows = []
    for seed in range(1, a.seeds + 1):
        w = a.work / f"seed{seed}"
        w.mkdir(exist_ok=True)
        sh(*ms, "backmap", "--cg", cg / "cg_md.gro", "--topology", a.work / "aa.top", "--output", w / "aa.gro",
           "--seed", seed, "--report", w / "report.json", env=env)
        rep = json.loads((w / "report.json").read_text())[0]
        before = esters(top, w / "aa.gro")
        em = restrained_em(w, w / "aa.gro", a.work / "aa.top")
        after = esters(top, w / "em.gro")
        rows.append({"seed": seed, "engine_s": rep["seconds"], "retries": rep["retries"], "ok": rep["ok"],
                     "esters": int(before.size), "over30": int((before > 30).sum()), "over60": int((before > 60).sum()),
                     "em_steps": em["steps"], "em_converged": em["converged"], "after_em_over30": int((after > 30).sum()),
                     "after_em_over60": int((after > 60).sum()), "after_em_over120": int((after > 120).sum())})
        print(json.dumps(rows[-1]), flush=True)
    keys = list(rows[0])
    mean = {k: round(float(np.mean([r[k] for r in rows])), 2) for k in keys if k not in ("seed", "ok", "em_converged")}
    lines = [f"# POPC esters after the backmap and after restrained EM ({'src ' + str(a.src) if a.src else 'this checkout'})", "",
             "Test bilayer of membrane_backmap.py (72 POPC, 144 esters); |R-O-C=O| in degrees (Z ester: ~0).", "",
             "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    lines += ["| mean | " + " | ".join(str(mean.get(k, "")) for k in keys[1:]) + " |"]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    print(json.dumps(mean))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

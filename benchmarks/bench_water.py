#!/usr/bin/env python
"""Benchmark CG -> AA water placement (:meth:`WaterBank.place`) and AA -> CG grouping.

Each case runs in a fresh subprocess so its peak memory (ru_maxrss, minus the RSS before the
call) is its own.  Beads sit on a jittered cubic lattice at Martini W density (8.35 nm^-3,
i.e. 33.4 waters/nm^3 / 4), the densest realistic case.

    python benchmarks/bench_water.py                     # 10k, 100k, 1M beads; 100k waters
    python benchmarks/bench_water.py --sizes 10000 100000 --repeat 3
    python benchmarks/bench_water.py --box dodecahedron     # triclinic cells (GROMACS vectors)

Reports beads/s (wall clock, best of --repeat; the first run, which also pays for fresh
memory pages, in brackets), CPU seconds (all threads) of the best run, peak extra memory, the
clash statistics (beads re-drawn after the first draw, beads left unresolved), the load
average after the case (the VM has 2 CPUs shared with other jobs: at load >= 1 the two
threads of the contact search rarely run at once), the contact stage's counts (atom pairs of
different molecules closer than ``min_dist_atoms`` before and after, rounds, molecules moved,
beads shifted) and, checked independently on the output of the last run (not timed), the
minimum distance between atoms of different water molecules and the number of such pairs
closer than 0.08 nm (the backmapping engine's clash cut-off).  ``--min-dist-atoms 0``
switches the contact stage off (the bead stage's output, as before it existed).

Measured at load 1.0-1.2 (``--sizes 10000 100000 1000000 --repeat 2``, min_dist_atoms 0.085)::

    place     10,648 beads  0.15 s     73,149 beads/s  peak +  25 MB  unresolved 0.14 %
           contacts < min_dist_atoms 1,468 -> 0 (2 rounds, 1,394 molecules moved, 5 beads
           shifted);  output: min water-water atom distance 0.0850 nm, pairs < 0.08 nm: 0
    place     97,336 beads  0.72 s    134,941 beads/s  peak +  83 MB  unresolved 0.12 %
           contacts 13,476 -> 0 (3 rounds, 12,846 moved, 57 shifted);  0.0850 nm, 0
    place  1,000,000 beads  7.82 s    127,932 beads/s  peak + 578 MB  unresolved 0.13 %
           contacts 137,502 -> 0 (6 rounds, 131,330 moved, 760 shifted);  0.0850 nm, 0

After the split into the ``multiscale.backmap.water`` package (same outputs bit for bit; same
machine, ``--repeat 3``, before -> after, load 0.4-0.8 before, 2.4-3.0 after): 10,648 beads
125k -> 172k beads/s, 97,336 beads 216k -> 224k beads/s, 1M beads 181k -> 194k beads/s (peak
+635 -> +542 MB); grouping 100k waters 64.7k -> 63.8k waters/s; every quality figure
identical (re-drawn 3,331 / 30,919 / 319,686, unresolved 13 / 92 / 1,182, contacts 1,424 /
13,485 / 137,771 -> 0, min distance 0.0850 nm).

Triclinic cells (``--box dodecahedron`` / ``--box octahedron``, fractional-grid lattice at the
same density, ``--repeat 2``, load ~3): placement 10k 143k / 127k beads/s, 97k 193k / 115k
(cpu 0.55 s both), 1M 181k / 58k beads/s (cpu 7.2 / 7.6 s: the octahedron run shared the CPUs
with load 4.2), unresolved 0.02-0.07 %, contacts -> 0, min distance 0.0850 nm; grouping 97k
waters 3.2 s / 5.9 s wall (cpu 3.5 / 3.3 s, ~2x the cube's: ghost-image trees and exact
triclinic minimum images), group radius mean 0.257 nm (cube 0.264).

Without the contact stage (the code before it, load 1.2-1.6): 141,701, 205,322 and 202,623
beads/s, peak +15, +80, +588 MB, and in the output pairs < 0.08 nm: 1,138, 10,304 and
105,505, min 0.0044, 0.0048, 0.0015 nm.  (The placement before lazy candidates and the row
cell list: 56k, 57k and 38k beads/s, +26, +216 and +1752 MB, 0.75-0.79 % unresolved.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

W_DENSITY = 33.4 / 4


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _contacts(out, box, r: float = 0.1):
    """Distances (float64) of all pairs of atoms of different water molecules closer than r
    in ``out`` (n, 4, 3, 3): an all-atom cell list (the module's, float32, r widened) checked
    again in float64."""
    import numpy as np

    from multiscale.backmap.water import Box, _CellGrid

    a = out.reshape(-1, 3)
    g = _CellGrid(tuple(np.ascontiguousarray(a.T, dtype=np.float32)), box, r + 1e-4,
                  ids=np.arange(len(a), dtype=np.int64))
    i, j = g.pairs(div=3)  # atoms 3 * molecule + atom: different molecules only
    del g
    d = Box(box).min_image32(a[j] - a[i])  # exact for these short vectors (any box)
    d = np.sqrt(np.einsum("ij,ij->i", d, d))
    return d[d < r]


#: triclinic cells as GROMACS box vectors (rows) for image distance 1 nm
SHAPES = {
    "dodecahedron": [[1, 0, 0], [0, 1, 0], [0.5, 0.5, 0.5 * 2**0.5]],
    "octahedron": [[1, 0, 0], [1 / 3, 2 * 2**0.5 / 3, 0], [-1 / 3, 2**0.5 / 3, 6**0.5 / 3]],
}


def _lattice(side: int, density: float, jitter: float, shape: str, rng):
    """side^3 points at ``density`` (nm^-3), jittered: a cubic lattice, or for a triclinic
    ``shape`` the fractional grid i/side of the cell (FCC / BCC-like).  Returns (x, box)."""
    import numpy as np

    if shape == "cube":
        a = (1 / density) ** (1 / 3)
        g = np.arange(side) * a
        x = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
        box = np.full(3, side * a)
    else:
        g = np.arange(side) / side
        f = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
        unit = np.array(SHAPES[shape])
        box = unit * (side**3 / density / abs(np.linalg.det(unit))) ** (1 / 3)
        x = f @ box
    return x + rng.normal(0, jitter, x.shape), box


def _case(kind: str, n: int, repeat: int, seed: int, min_dist_atoms=None,
          shape: str = "cube") -> dict:
    import numpy as np

    from multiscale.backmap.water import WaterBank
    from multiscale.water import group_radius, group_waters

    rng = np.random.default_rng(seed)
    if kind == "place":
        x, box = _lattice(round(n ** (1 / 3)), W_DENSITY, 0.05, shape, rng)
        bank = WaterBank.default()
        kw = {} if min_dist_atoms is None else dict(min_dist_atoms=min_dist_atoms)
        bank.place(x[:1000], box, seed=0, **kw)  # warm-up (imports, caches)
        base = _rss_mb()
        best, cpu, first = float("inf"), 0.0, None
        for r in range(repeat):
            if r:
                del out
            t, c = time.perf_counter(), time.process_time()
            out, st = bank.place(x, box, seed=seed + r, return_stats=True, **kw)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            first = dt if first is None else first
            if dt < best:
                best, cpu = dt, dc
        peak = _peak_mb() - base
        load = os.getloadavg()[0]
        d = _contacts(out, box)  # of the last run (not timed)
        return dict(kind=kind, n=len(x), seconds=best, cpu_seconds=cpu, first_seconds=first,
                    rate=len(x) / best, peak_extra_mb=peak,
                    redrawn=st["n_initial_clash"], unresolved=st["n_unresolved"],
                    contacts_initial=st["n_contacts_initial"],
                    moved=st["n_molecules_moved"], shifted=st["n_beads_shifted"],
                    rounds=st["contact_rounds"], left=st["n_contacts"],
                    min_dist=float(d.min()) if len(d) else 0.1, n_008=int((d < 0.08).sum()),
                    load=load)
    # grouping: n waters at liquid density
    side = round(n ** (1 / 3))  # full lattice (no void), rounded to a multiple of 4 waters
    if shape == "cube":
        a = (1 / 33.4) ** (1 / 3)
        g = np.arange(side) * a
        x = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
        x = x[: len(x) // 4 * 4]
        x += rng.normal(0, 0.03, x.shape)
        box = np.full(3, side * a)
    else:
        side += side % 2  # an even count: a multiple of 4 waters
        x, box = _lattice(side, 33.4, 0.03, shape, rng)
    base = _rss_mb()
    best, cpu = float("inf"), 0.0
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        groups = group_waters(x, box, seed=seed)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        if dt < best:
            best, cpu = dt, dc
    r = group_radius(x, groups, box)
    return dict(kind=kind, n=len(x), seconds=best, cpu_seconds=cpu, rate=len(x) / best,
                peak_extra_mb=_peak_mb() - base, radius_mean=float(r.mean()),
                radius_max=float(r.max()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                    help="numbers of W beads for place()")
    ap.add_argument("--group-sizes", type=int, nargs="*", default=[100_000],
                    help="numbers of waters for group_waters()")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (best is reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-dist-atoms", type=float, default=None,
                    help="place(min_dist_atoms=...): 0 switches the contact stage off")
    ap.add_argument("--box", choices=["cube", *SHAPES], default="cube",
                    help="cell shape: cubic (default) or a triclinic GROMACS cell")
    ap.add_argument("--case", nargs=2, help=argparse.SUPPRESS)  # internal: kind n
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(_case(args.case[0], int(args.case[1]), args.repeat, args.seed,
                               args.min_dist_atoms, args.box)))
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} (other processes slow the timings down)")
    cases = [("place", n) for n in args.sizes] + [("group", n) for n in args.group_sizes]
    for kind, n in cases:
        extra = [] if args.min_dist_atoms is None else ["--min-dist-atoms",
                                                         str(args.min_dist_atoms)]
        r = subprocess.run([sys.executable, __file__, "--case", kind, str(n), "--repeat",
                            str(args.repeat), "--seed", str(args.seed), "--box", args.box]
                           + extra,
                           capture_output=True, text=True)
        if r.returncode:
            print(f"{kind} {n}: failed\n{r.stderr[-2000:]}")
            continue
        d = json.loads(r.stdout.strip().splitlines()[-1])
        if kind == "place":
            print(f"place  {d['n']:>9,} beads  {d['seconds']:7.2f} s  (first "
                  f"{d['first_seconds']:.2f} s, cpu {d['cpu_seconds']:6.2f} s)"
                  f"  {d['rate']:>9,.0f} beads/s  peak +{d['peak_extra_mb']:5.0f} MB  "
                  f"re-drawn {d['redrawn']:,}  unresolved {d['unresolved']:,} "
                  f"({100 * d['unresolved'] / d['n']:.2f} %)  load {d['load']:.1f}")
            print(f"       contacts < min_dist_atoms {d['contacts_initial']:,} -> {d['left']:,}"
                  f" ({d['rounds']} rounds, {d['moved']:,} molecules moved, {d['shifted']:,}"
                  f" beads shifted);  output: min water-water atom distance "
                  f"{d['min_dist']:.4f} nm, pairs < 0.08 nm: {d['n_008']:,}")
        else:
            print(f"group  {d['n']:>9,} waters {d['seconds']:7.2f} s  (cpu {d['cpu_seconds']:6.2f} s)"
                  f"  {d['rate']:>9,.0f} waters/s peak +{d['peak_extra_mb']:7.0f} MB  "
                  f"group radius mean {d['radius_mean']:.3f} max {d['radius_max']:.3f} nm")


if __name__ == "__main__":
    main()

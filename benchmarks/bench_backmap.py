#!/usr/bin/env python3
"""Speed and memory of the learned backmapping engine.

    python benchmarks/bench_backmap.py [--model M.pt] [--data /tmp/msdata/heptanol] [--big]

1. Training: trains a heptanol model on AA frames (``--data``: folder with start.gro, md.xtc,
   aa.top from benchmarks/make_aa_data.py; default: the example's single aa.gro) unless
   ``--model`` exists; prints the training time.
2. 190-heptanol box: the example frame (40 HPO + 700 TIP3P) tiled 5x along x, 10 HPO dropped
   -> 190 HPO (+ 3500 SOL / 875 W).  Backmapping time (median of 5 seeds, after one warm-up)
   for the solute alone (HPO only topology) and with water; ms per molecule and atoms/s.
3. ``--big``: the example tiled 7x7x7 (1,049,580 atoms: 13,720 HPO + 240,100 SOL); backmap +
   certify one frame in a fresh subprocess; wall time and peak RSS (resource.getrusage).

Machine: whatever runs it (the numbers in the report were taken on 2 shared CPU cores).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from multiscale.coarse_grain import cg_layout, coarse_grain  # noqa: E402
from multiscale.io import read_frames  # noqa: E402
from multiscale.mapping import load_mapping  # noqa: E402
from multiscale.topology import MoleculeBlock, SystemTopology, load_topology  # noqa: E402

EX = ROOT / "src" / "multiscale" / "data" / "examples" / "heptanol"
MAP = EX.parents[1] / "mappings" / "heptanol.map"


def base_system():
    top = load_topology(EX / "aa.top")
    mp = load_mapping(MAP)
    fr = read_frames(EX / "aa.gro", expected_atoms=top.n_atoms)
    return top, mp, fr


def get_model(args, top, mp):
    from multiscale.backmap.engine import load_model, train

    if args.model and Path(args.model).exists():
        return load_model(args.model, top), None
    if args.data:
        d = Path(args.data)
        t = load_topology(d / "aa.top")
        fr = read_frames(d / "start.gro", d / "md.xtc", expected_atoms=t.n_atoms)
        if args.train_frames:
            fr.positions, fr.box = fr.positions[:args.train_frames], fr.box[:args.train_frames]
    else:
        t, fr = top, read_frames(EX / "aa.gro", expected_atoms=top.n_atoms)
    t0 = time.perf_counter()
    model = train(t, mp, fr, seed=0, log=print, provenance={"files": [str(args.data or EX / "aa.gro")]})
    dt = time.perf_counter() - t0
    if args.model:
        model.save(args.model)
    return model, dt


def tiled(top, fr, mp, nx, ny, nz, drop_hpo=0):
    """Tile the example frame; returns (SystemTopology, AA positions (N,3), box (3,))."""
    hpo, sol = top.blocks[0], top.blocks[1]
    x = fr.positions[0].astype(np.float64)
    box = fr.box[0]
    shifts = np.array([[i, j, k] for i in range(nx) for j in range(ny) for k in range(nz)], float) * box
    xh = np.concatenate([x[hpo.start:hpo.stop] + s for s in shifts])
    xs = np.concatenate([x[sol.start:sol.stop] + s for s in shifts])
    nh = hpo.count * len(shifts) - drop_hpo
    xh = xh[: nh * hpo.moltype.n_atoms]
    blocks = [MoleculeBlock(hpo.moltype, nh, 0), MoleculeBlock(sol.moltype, sol.count * len(shifts), len(xh))]
    return SystemTopology(blocks, source=Path("tiled.top")), np.concatenate([xh, xs]), box * np.array([nx, ny, nz])


def time_backmap(model, top, cg, box, seeds=20):
    """Wall time of one frame: (median, (25th, 75th percentile)) over ``seeds`` seeds, after a
    warm-up (the VM's speed drifts with its neighbours, so the spread is printed too)."""
    from multiscale.backmap.engine import backmap

    backmap(model, top, cg, box, seed=100)  # warm-up
    ts, reps = [], None
    for s in range(seeds):
        t0 = time.perf_counter()
        _, reps = backmap(model, top, cg, box, seed=s)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), tuple(np.percentile(ts, [25, 75])), reps


def big_child(model_path: str, nrep: int):
    """Runs in a fresh process: 1M-atom backmap + certification, prints JSON."""
    from multiscale.backmap.engine import backmap, load_model

    top, mp, fr = base_system()
    model = load_model(model_path)
    cg0 = coarse_grain(fr.positions, fr.box, top, mp)
    lay = cg_layout(top, mp)
    box = fr.box[0]
    shifts = np.array([[i, j, k] for i in range(nrep) for j in range(nrep) for k in range(nrep)], float) * box
    from multiscale.backmap.features import unwrap_beads

    # make each HPO whole in the small box before tiling (its beads may be split by the wrap)
    hb = unwrap_beads(cg0.positions[0, lay[0].start:lay[0].stop].reshape(-1, 2, 3), box).reshape(-1, 3)
    wb = cg0.positions[0, lay[1].start:lay[1].stop]
    cg = np.concatenate([np.concatenate([hb + s for s in shifts]), np.concatenate([wb + s for s in shifts])])
    cg = np.mod(cg, box * nrep)
    nb = len(shifts)
    bigtop = SystemTopology([MoleculeBlock(top.blocks[0].moltype, top.blocks[0].count * nb, 0),
                             MoleculeBlock(top.blocks[1].moltype, top.blocks[1].count * nb,
                                           top.blocks[0].count * nb * 24)], source=Path("big.top"))
    bigbox = box * nrep
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    aa, reps = backmap(model, bigtop, cg, bigbox, seed=0)
    dt = time.perf_counter() - t0
    r = reps[0]
    print(json.dumps({"atoms": bigtop.n_atoms, "hpo": bigtop.blocks[0].count, "w_beads": len(wb) * nb, "seconds": dt,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rss_before_mb": rss0 / 1024, "report": r.to_dict()}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="/tmp/msdata/bench_hpo.pt")
    p.add_argument("--data", default=None, help="AA data folder (start.gro, md.xtc, aa.top)")
    p.add_argument("--train-frames", type=int, default=None)
    p.add_argument("--big", action="store_true", help="also the 1M-atom system")
    p.add_argument("--big-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--nrep", type=int, default=7)
    a = p.parse_args(argv)
    if a.big_child:
        big_child(a.big_child, a.nrep)
        return
    top, mp, fr = base_system()
    model, t_train = get_model(a, top, mp)
    if t_train is not None:
        print(f"training: {t_train:.1f} s")
    # 190-heptanol box
    t190, x190, box190 = tiled(top, fr, mp, 5, 1, 1, drop_hpo=10)
    cg = coarse_grain(x190[None], box190[None], t190, mp)
    lay = cg.layout
    hpo_only = SystemTopology([t190.blocks[0]], source=Path("hpo190.top"))
    cg_h = cg.positions[0, lay[0].start:lay[0].stop]
    dt_h, (q1, q3), reps = time_backmap(model, hpo_only, cg_h, box190)
    nmol = t190.blocks[0].count
    print(f"190-heptanol box, solute only ({hpo_only.n_atoms} atoms): {dt_h * 1e3:.1f} ms per frame = "
          f"{dt_h * 1e3 / nmol:.3f} ms/molecule (quartiles {q1 * 1e3 / nmol:.3f}-{q3 * 1e3 / nmol:.3f}), "
          f"{hpo_only.n_atoms / dt_h:,.0f} atoms/s")
    print(reps[0].summary())
    dt_w, _, reps = time_backmap(model, t190, cg.positions[0], box190, seeds=5)
    nw = lay[1].count
    print(f"190-heptanol box + {t190.blocks[1].count} TIP3P ({t190.n_atoms} atoms, {nw} W beads): {dt_w * 1e3:.1f} ms "
          f"per frame = {dt_w * 1e3 / (nmol + nw):.3f} ms per CG molecule (HPO + W), {t190.n_atoms / dt_w:,.0f} atoms/s")
    print(reps[0].summary())
    print(f"peak RSS so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if a.big:
        if not Path(a.model).exists():
            model.save(a.model)
        out = subprocess.run([sys.executable, __file__, "--big-child", a.model, "--nrep", str(a.nrep)],
                             capture_output=True, text=True)
        if out.returncode:
            print(out.stdout[-2000:], out.stderr[-4000:])
            raise SystemExit(1)
        d = json.loads(out.stdout.strip().splitlines()[-1])
        r = d["report"]
        print(f"1M system: {d['atoms']:,} atoms ({d['hpo']} HPO, {d['w_beads']} W beads): backmap + certify "
              f"{d['seconds']:.1f} s, {d['atoms'] / d['seconds']:,.0f} atoms/s, peak RSS {d['peak_rss_mb']:.0f} MB")
        print(f"  clash pairs inter {r['inter_clash_pairs_initial']} -> {r['inter_clash_pairs_final']} "
              f"(water {r['water_clash_pairs_final']}), intra {r['intra_clash_pairs_initial']} -> "
              f"{r['intra_clash_pairs_final']}; max CG deviation {r['max_cg_deviation_nm']:.1e} nm; "
              f"retries {r['retries']}; water {r['water']}")


if __name__ == "__main__":
    main()

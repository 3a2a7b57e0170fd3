#!/usr/bin/env python3
"""Hashes of coarse-grain and backmap outputs for fixed seeds: a behaviour-preserving change must
reproduce them exactly.

    python benchmarks/output_hashes.py [--model M.pt] [--out FILE.json] [--src SRC]

Uses the shipped heptanol example (40 HPO + 700 TIP3P) and the same frame tiled 3x along x;
trains a model with seed 0 on the example frame unless ``--model`` exists (then loads it; it is
saved there when missing).  ``--src`` runs another checkout's code (e.g. an older commit in a
git worktree) on the same inputs.  Prints JSON: sha256 prefixes of the CG positions and of three
backmapped frames (seeds 0-2), the tiled CG/backmap, and the tiled certificate's headline numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=str(ROOT / "src"), help="the multiscale source folder to import")
    ap.add_argument("--model", default=None, help="model file (trained and saved there when missing)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args(argv)
    sys.path.insert(0, a.src)
    import numpy as np

    from multiscale.backmap import engine
    from multiscale.coarse_grain import coarse_grain
    from multiscale.io import read_frames
    from multiscale.mapping import load_mapping
    from multiscale.topology import MoleculeBlock, SystemTopology, load_topology

    data = ROOT / "src" / "multiscale" / "data"
    ex = data / "examples" / "heptanol"
    top, mp = load_topology(ex / "aa.top"), load_mapping(data / "mappings" / "heptanol.map")
    fr = read_frames(ex / "aa.gro", expected_atoms=top.n_atoms)

    def h(x) -> str:
        return hashlib.sha256(np.ascontiguousarray(np.asarray(x, np.float64)).tobytes()).hexdigest()[:16]

    res: dict = {}
    cg = coarse_grain(fr.positions, fr.box, top, mp, seed=0)
    res["cg"] = h(cg.positions)
    if a.model and Path(a.model).exists():
        model = engine.load_model(a.model, top)
    else:
        model = engine.train(top, mp, fr, seed=0, log=None)
        if a.model:
            model.save(a.model)
    t0 = time.perf_counter()
    for seed in (0, 1, 2):
        x, _ = engine.backmap(model, top, cg.positions[0], cg.box[0], seed=seed, log=None)
        res[f"backmap_seed{seed}"] = h(x)
    hpo, sol = top.blocks[0], top.blocks[1]
    x0, box = fr.positions[0].astype(np.float64), fr.box[0]
    shifts = np.array([[i, 0, 0] for i in range(3)], float) * box
    xh = np.concatenate([x0[hpo.start:hpo.stop] + s for s in shifts])
    xs = np.concatenate([x0[sol.start:sol.stop] + s for s in shifts])
    t3 = SystemTopology([MoleculeBlock(hpo.moltype, hpo.count * 3, 0), MoleculeBlock(sol.moltype, sol.count * 3, len(xh))])
    cg3 = coarse_grain(np.concatenate([xh, xs])[None], (box * np.array([3, 1, 1]))[None], t3, mp, seed=3)
    res["cg_tiled"] = h(cg3.positions)
    x, reps = engine.backmap(model, t3, cg3.positions[0], cg3.box[0], seed=7, log=None)
    res["backmap_tiled"] = h(x)
    res["report_tiled"] = {k: getattr(reps[0], k) for k in ("inter_clash_pairs_final", "intra_clash_pairs_final",
                                                           "water_clash_pairs_final", "max_cg_deviation_nm")}
    text = json.dumps(res, indent=1, default=str)
    print(text)
    print(f"backmap wall {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

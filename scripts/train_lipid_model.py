#!/usr/bin/env python3
"""Train the shipped lipid model (CHARMM36 names) on the project's own atomistic bilayer MD.

    python scripts/train_lipid_model.py --data ~/.cache/multiscale/bilayer_data/POPC_32 \
        [--train-fraction 0.75] [--out src/multiscale/data/models/lipids_charmm36] [--seed 0]

``--data`` is a folder written by ``scripts/make_bilayer_data.py`` (``topol.top``, ``prod.gro``,
``prod.xtc``, ``provenance.json``); more than one may be given.  The first ``--train-fraction``
of each production trajectory (as far as it has run) is trained on; the time span is recorded,
and every frame after it (the rest, or what the resumable run writes later) is never seen by the
model and is the atomistic reference of ``benchmarks/membrane_backmap.py`` (tail torsions, S_CH).  Each lipid
moleculetype goes to its own file ``<out>/<NAME>.pt`` (water and ions have their own built-in
placement; a lipid already there is replaced, the others are kept), stored as float16; the
provenance (force field wheel, system, frames and time span used, GROMACS, seeds) is recorded in
the file and listed in docs/membranes.md.  Needs the CHARMM36 port in the cache
(``python scripts/fetch_forcefields.py charmm36 charmm36-lipids``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from multiscale.backmap.engine import BackmapModel, train  # noqa: E402
from multiscale.classes import classify  # noqa: E402
from multiscale.io import read_frames  # noqa: E402
from multiscale.preflight import load_checked_mapping  # noqa: E402
from multiscale.topology import load_topology  # noqa: E402


def split_frames(folder: Path, fraction: float):
    """(topology, training frames, held-out frames, provenance) of one bilayer data folder."""
    top = load_topology(folder / "topol.top")
    structure = folder / "prod.gro" if (folder / "prod.gro").is_file() else folder / "npt.gro"  # prod still running
    fr = read_frames(structure, folder / "prod.xtc", expected_atoms=top.n_atoms)
    n_train = max(1, int(round(fraction * fr.n_frames)))
    meta = json.loads((folder / "provenance.json").read_text())
    args = meta.get("args", {})
    prov = {"data": "scripts/make_bilayer_data.py", "folder": folder.name, "gromacs": meta.get("gromacs"),
            "forcefields": meta.get("forcefields"), "lipids": 2 * int(args.get("per_side", 0)) ** 2,
            "temperature_K": args.get("temperature"), "salt_M": args.get("salt"), "md_seed": args.get("seed"),
            "npt_ns": args.get("npt_ns"), "frame_ps": args.get("frame_ps"), "solvate": meta["stages"].get("solvate"),
            "frames_total": fr.n_frames, "frames_trained": n_train,
            "trained_time_ps": [float(fr.times[0]), float(fr.times[n_train - 1])],
            "held_out_time_ps": [float(fr.times[n_train]), float(fr.times[-1])] if n_train < fr.n_frames else None}
    return top, fr, n_train, prov


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, nargs="+", required=True)
    p.add_argument("--train-fraction", type=float, default=1.0, help="first fraction of the production frames to train on "
                   "(the frames after the trained span are the benchmark's held-out reference)")
    p.add_argument("--out", type=Path, default=ROOT / "src" / "multiscale" / "data" / "models" / "lipids_charmm36",
                   help="folder of the per-lipid model files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--best-of", type=int, default=8, help="draws per conformation, the best-fitting kept")
    p.add_argument("--repel", type=float, default=0.2, help="nm: the projection keeps non-bonded pairs of a lipid this far apart")
    p.add_argument("--torsion-hidden", type=int, default=32, help="width of each torsion's network (48 for small "
                   "molecules; 32 keeps a 134-atom lipid's file near 4 MB)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    moltypes, provs, mappings = {}, {}, {}
    for folder in a.data:
        top, fr, n_train, prov = split_frames(folder.expanduser(), a.train_fraction)
        mapping = load_checked_mapping([], top)
        lipids = [mt.name for mt in top.moltypes.values() if classify(mt, mapping).name == "lipid"]
        print(f"{folder}: {', '.join(lipids)}; training on frames 0-{n_train - 1} of {fr.n_frames}")
        m = train(top, mapping, fr.subset(slice(0, n_train)), seed=a.seed, epochs=a.epochs, device=a.device,
                  torsion_hidden=a.torsion_hidden, provenance={"trained_by": "scripts/train_lipid_model.py"})
        for name in lipids:
            if name in moltypes:
                raise SystemExit(f"{folder}: lipid {name} is in two data folders: train one model per lipid")
            moltypes[name] = m.moltypes[name]
            moltypes[name].storage = "float16"  # half the shipped file; float32 again once loaded
            moltypes[name].best_of = a.best_of  # best-fitting of 8 draws; projection pushes folds apart
            moltypes[name].repel = a.repel
            provs[name] = {**prov, "training_seed": a.seed, "lipids_trained": lipids, "training": m.provenance[-1]}
            mappings[name] = mapping
    a.out.mkdir(parents=True, exist_ok=True)
    for name, entry in moltypes.items():
        out = a.out / f"{name}.pt"
        BackmapModel(mappings[name], {name: entry}, provenance=[provs[name]]).save(out)
        print(f"{name}: -> {out} ({out.stat().st_size / 1e6:.1f} MB)")
    print(f"{', '.join(moltypes)}: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

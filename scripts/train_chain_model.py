#!/usr/bin/env python3
"""Train a shipped chain model (amber or CHARMM names) on the project's own peptide MD.

    python scripts/train_chain_model.py [--data datasets/peptides] [--out src/multiscale/data/models/chains_<naming>.pt]
        [--seed 0] [--epochs N] [--device cpu|cuda] [--exclude trpcage]
    python scripts/train_chain_model.py --data datasets/peptides_charmm36m      # -> chains_charmm.pt

The naming (``amber`` or ``charmm``) is read from the data's atom names; CHARMM data needs the
CHARMM36 port fetched (``python scripts/fetch_forcefields.py charmm36``): the topology reader finds
its folder in the cache.

Every peptide folder of ``--data`` written by ``scripts/make_peptide_data.py`` (``topol.top``,
``start.gro``, ``md.xtc``, ``provenance.json``) whose provenance says ``split: train`` is used;
``split: test`` peptides (Trp-cage) are never trained on.  The model file records, per peptide,
the provenance (force field, water, salt, box, production length, GROMACS version, seed) and
the training seed; docs/proteins.md lists the same.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from multiscale.backmap.engine import BackmapModel  # noqa: E402
from multiscale.chains.model import fit_chain_model, merge_kind_data  # noqa: E402
from multiscale.chains.train import chain_data  # noqa: E402
from multiscale.coarse_grain import cg_layout  # noqa: E402
from multiscale.io import read_frames  # noqa: E402
from multiscale.preflight import load_checked_mapping  # noqa: E402
from multiscale.topology import load_topology  # noqa: E402


def peptide_arrays(folder: Path):
    top = load_topology(folder / "topol.top")
    mapping = load_checked_mapping([], top)
    fr = read_frames(folder / "start.gro", folder / "md.xtc", expected_atoms=top.n_atoms)
    blocks = [b for b in cg_layout(top, mapping) if getattr(b, "kind", "") == "chain"]
    box = np.asarray(fr.box, np.float64)
    return chain_data(top, np.asarray(fr.positions, np.float64), box, blocks), fr.n_frames


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "datasets" / "peptides")
    p.add_argument("--out", type=Path, default=None, help="default src/multiscale/data/models/chains_<naming>.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--exclude", nargs="*", default=[], help="peptides to leave out besides the split: test ones")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    S, E, K, prov, namings, ffs = [], [], [], [], set(), set()
    for folder in sorted(d for d in a.data.iterdir() if (d / "provenance.json").is_file()):
        meta = json.loads((folder / "provenance.json").read_text())
        if meta.get("split") != "train" or folder.name in a.exclude:
            print(f"skip {folder.name} (split {meta.get('split')})")
            continue
        (s, e, k, naming), nf = peptide_arrays(folder)
        namings.add(naming)
        ffs.add(meta.get("force_field"))
        if len(namings) > 1:
            raise SystemExit(f"{folder}: {naming} names among {', '.join(sorted(namings))}: one model covers one naming")
        S.append(s)
        E.append(e)
        K.append(k)
        prov.append({**{key: meta.get(key) for key in ("name", "sequence", "variants", "force_field", "water", "salt_M",
                                                      "box", "production_ns", "temperature_K", "seed",
                                                      "gromacs_version", "created")}, "frames": nf})
        print(f"{folder.name}: {meta['sequence']} {nf} frames")

    def cat(parts):
        return tuple(np.concatenate(c, 0) for c in zip(*parts))

    naming = namings.pop()
    out = a.out or ROOT / "src" / "multiscale" / "data" / "models" / f"chains_{naming}.pt"
    model = fit_chain_model(cat(S), cat(E), merge_kind_data(K), naming=naming, seed=a.seed, epochs=a.epochs, device=a.device)
    model.provenance = [{"data": f"scripts/make_peptide_data.py ({', '.join(sorted(ffs))} + TIP3P, 0.15 M NaCl, "
                                 "rhombic dodecahedron)",
                         "trained_by": "scripts/train_chain_model.py", "training_seed": a.seed, "peptides": prov}]
    model.storage = "float16"  # halves the shipped file; weights are float32 again once loaded
    bm = BackmapModel(_empty_mapping(), {}, provenance=model.provenance,
                      chains=model)
    out.parent.mkdir(parents=True, exist_ok=True)
    bm.save(out)
    print(f"{len(model.kinds)} residue kinds, {model.training['backbone_steps']} backbone steps, "
          f"{time.perf_counter() - t0:.0f} s -> {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _empty_mapping():
    from multiscale.mapping import Mapping

    return Mapping()


if __name__ == "__main__":
    raise SystemExit(main())

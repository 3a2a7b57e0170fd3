#!/usr/bin/env python3
"""Compare CG bond lengths of an atomistic lipid bilayer mapped with a .map file to the Martini 3 b0.

The Martini 3 lipidome bonded parameters were fitted to mapped atomistic distributions, so a
mapping whose mean mapped bond lengths sit far from b0 is suspect. Run it on an equilibrated
CHARMM36 bilayer (scripts/make_bilayer_data.py output)::

    python scripts/check_lipid_mapping_bonds.py DIR/topol.top DIR/prod.gro [--xtc DIR/prod.xtc] [--lipid POPC]

Prints, per Martini bond, mean mapped length (nm) / b0 (nm) and the relative deviation.
"""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np

from multiscale import forcefields as ff
from multiscale.io import read_frames
from multiscale.mapping import load_mapping
from multiscale.paths import find_data
from multiscale.topology import load_topology


def martini_bonds(text: str, name: str) -> list[tuple[int, int, float]]:
    """(i, j, b0) 0-based for the [ bonds ] of moleculetype ``name`` (named bondtypes resolved)."""
    defs = {k: float(b0) for k, _f, b0 in re.findall(r"#define\s+(b_\S+)\s+(\d+)\s+([\d.]+)", text)}
    start = re.search(rf"^\s*{name}\s+\d+\s*$", text, re.M).end()
    block = text[start:]
    block = block[re.search(r"\[\s*bonds\s*\]", block).end():]
    block = block[:re.search(r"^\s*\[", block, re.M).start()]
    out = []
    for ln in block.splitlines():
        p = ln.split(";")[0].split()
        if len(p) >= 3 and p[0].isdigit() and p[1].isdigit():
            b0 = defs[p[2]] if p[2] in defs else float(p[3])
            out.append((int(p[0]) - 1, int(p[1]) - 1, b0))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("top")
    p.add_argument("gro")
    p.add_argument("--xtc")
    p.add_argument("--lipid", default="POPC")
    p.add_argument("--cg-name", help="Martini moleculetype (default: the map's [ cg_molecule ] or the lipid)")
    a = p.parse_args(argv)
    mp = find_data("mappings", f"lipids/{a.lipid}.map")
    m = load_mapping(mp).molecules[a.lipid]
    cg_rows = re.search(r"\[\s*cg_molecule\s*\]\s*\n\s*(\S+)", mp.read_text())
    cg_name = a.cg_name or (cg_rows.group(1) if cg_rows else a.lipid)
    top = load_topology(a.top)
    block = next(b for b in top.blocks if b.moltype.name == a.lipid)
    w = m.matrix(block.moltype)
    fr = read_frames(a.gro, a.xtc)
    x = fr.positions[:, block.start:block.start + block.count * block.moltype.n_atoms]
    x = x.reshape(len(x), block.count, block.moltype.n_atoms, 3)
    box = fr.box[:, None, None, :3] if fr.box.ndim == 2 else np.diagonal(fr.box, axis1=1, axis2=2)[:, None, None]
    x = x - box * np.round((x - x[:, :, :1]) / box)  # whole molecules (orthorhombic boxes)
    cg = np.einsum("bj,fljk->flbk", w, x)
    for i, j, b0 in martini_bonds(ff.martini3_itp().read_text(), cg_name):
        d = np.linalg.norm(cg[:, :, i] - cg[:, :, j], axis=-1).mean()
        print(f"{m.beads[i]:>4s}-{m.beads[j]:<4s} {d:.3f} / {b0:.3f} nm  {100 * (d - b0) / b0:+5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())

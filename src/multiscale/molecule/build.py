"""The solvated box of a new molecule: ``gmx insert-molecules`` then ``gmx solvate`` (SPC216
water boxes, TIP3P topology), water trimmed at random (seeded) to the requested multiple of 4 so
that every Martini W bead stands for four waters.  Lengths in nm."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import MultiscaleError
from ..io import atomic_write_text
from ..paths import find_data

__all__ = ["build_box", "aa_top_text", "cg_top_text"]


def _residues(lines: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    last = None
    for ln in lines:
        key = ln[:10]
        if key != last:
            out.append([])
            last = key
        out[-1].append(ln)
    return out


def build_box(molecule_gro: Path, name: str, count: int, n_water: int, box_nm: float, seed: int, workdir: Path,
              out_gro: Path, settings=None) -> tuple[int, int]:
    """Write ``out_gro``: ``count`` copies of the molecule then ``n_water`` waters (0: neat) in a
    cubic box of edge ``box_nm``.  Returns (molecules, waters)."""
    from ..gromacs import run_tool

    workdir.mkdir(parents=True, exist_ok=True)
    run_tool("insert-molecules", settings, cwd=workdir, ci=str(molecule_gro), nmol=count, box=[box_nm] * 3, seed=seed,
             o="inserted.gro", **{"try": 500})
    lines = (workdir / "inserted.gro").read_text().splitlines()
    n_in = len(_residues(lines[2:-1]))
    if n_in != count:
        raise MultiscaleError(f"only {n_in} of {count} {name} fit in a {box_nm} nm box: use a larger --box or a smaller --count")
    if n_water == 0:
        atomic_write_text(out_gro, "\n".join(lines) + "\n")
        return count, 0
    run_tool("solvate", settings, cwd=workdir, cp="inserted.gro", cs="spc216.gro", o="solvated.gro")
    lines = (workdir / "solvated.gro").read_text().splitlines()
    res = _residues(lines[2:-1])
    mol, sol = res[:count], res[count:]
    if len(sol) < n_water:
        raise MultiscaleError(f"only {len(sol)} waters fit around {count} {name} in a {box_nm} nm box, {n_water} asked: "
                              "use a larger --box or fewer --water")
    keep = np.sort(np.random.default_rng(seed).choice(len(sol), size=n_water, replace=False))
    atoms = [a for r in mol for a in r] + [a for i in keep for a in sol[i]]
    body, resid = [], 0
    for r in mol + [sol[i] for i in keep]:
        resid += 1
        for a in r:
            body.append(f"{resid % 100000:5d}{a[5:10]}{a[10:15]}{(len(body) + 1) % 100000:5d}{a[20:]}")
    assert len(body) == len(atoms)
    atomic_write_text(out_gro, "\n".join([f"{count} {name} + {n_water} TIP3P", f"{len(body):5d}", *body, lines[-1]]) + "\n")
    return count, n_water


def _inc(path: Path, top_dir: Path) -> str:
    return f'#include "{os.path.relpath(path, top_dir)}"'


def aa_top_text(top_dir: Path, name: str, count: int, n_water: int) -> str:
    water = find_data("topologies", "water")
    lines = [f"; {name} (GAFF2-compatible defaults) in TIP3P water, written by multiscale molecule.", "",
             "[ defaults ]", "; nbfunc  comb-rule  gen-pairs  fudgeLJ  fudgeQQ", "  1       2          yes        0.5      0.8333", "",
             _inc(top_dir / f"{name}_atomtypes.itp", top_dir)]
    if n_water:
        lines.append(_inc(water / "tip3p_atomtypes.itp", top_dir))
    lines += ["", _inc(top_dir / f"{name}.itp", top_dir)]
    if n_water:
        lines.append(_inc(water / "tip3p.itp", top_dir))
    lines += ["", "[ system ]", f"{name} in water" if n_water else f"neat {name}", "", "[ molecules ]", f"{name}  {count}"]
    if n_water:
        lines.append(f"SOL  {n_water}")
    return "\n".join(lines) + "\n"


def cg_top_text(top_dir: Path, name: str, count: int, n_water: int) -> str:
    m3 = find_data("topologies", "martini3")
    lines = [f"; {name} in water, Martini 3.0.0 (W = 4 waters), written by multiscale molecule.", "",
             _inc(m3 / "martini_v3.0.0.itp", top_dir), _inc(m3 / "martini_v3.0.0_solvents_v1.itp", top_dir),
             _inc(m3 / "martini_v3.0.0_ions_v1.itp", top_dir), _inc(top_dir / f"{name}_cg.itp", top_dir), "",
             "[ system ]", f"{name} (Martini 3)", "", "[ molecules ]", f"{name}  {count}"]
    if n_water:
        lines.append(f"W    {n_water // 4}")
    return "\n".join(lines) + "\n"

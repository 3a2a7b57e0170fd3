"""``multiscale init --example NAME DIR``: a self-contained, ready-to-run copy of an example.

Copies the example folder ``examples/NAME/`` of the data path (:mod:`multiscale.paths`: a
user's ``$MULTISCALE_DATA_PATH`` folders, then the package's ``multiscale/data/``) into DIR, with
every force-field file its ``#include`` lines reach outside the example folder (into
``DIR/topologies/...``, whole folders so nested includes and licence files come along) and every
mapping its sim.yaml names from the data path's ``mappings/``; the copied ``#include`` lines are
rewritten to the new relative locations.  DIR can then be moved to a cluster as it is.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml

from ..errors import MultiscaleError
from ..paths import find_data, list_data, search_path

__all__ = ["init_example", "list_examples"]

_INCLUDE = re.compile(r'^(\s*#include\s+")([^"]+)(".*)$')
_SKIP = {"runs", "__pycache__"}
MARTINI3_LIPIDOME = "martini_v3.0.0_lipidome_v2.itp"  # multiscale.forcefields.martini3_itp()


def list_examples() -> list[str]:
    """Names of the examples on the data path (folders holding a sim.yaml)."""
    return [n for n in list_data("examples") if (find_data("examples", n) / "sim.yaml").is_file()]


def _copy_tree_files(src: Path, dst: Path) -> list[Path]:
    out = []
    for p in sorted(src.iterdir()):
        if p.name.startswith(".") or p.name in _SKIP or p.suffix in (".sbatch",) or p.name.startswith("slurm-"):
            continue
        if p.is_dir():
            continue  # examples are flat; output folders are not inputs
        shutil.copy2(p, dst / p.name)
        out.append(dst / p.name)
    return out


def _localise_includes(files: list[Path], src_dir: Path, dst: Path) -> list[str]:
    """Copy what the includes of ``files`` (copied from ``src_dir``) reach outside the example,
    rewrite those include lines; returns the copied folders (relative to dst)."""
    topo_roots = [root / "topologies" for root in search_path()]
    copied: dict[Path, Path] = {}
    for f in files:
        if f.suffix not in (".top", ".itp"):
            continue
        lines = f.read_text().splitlines(keepends=True)
        changed = False
        for i, line in enumerate(lines):
            m = _INCLUDE.match(line.rstrip("\n"))
            if not m:
                continue
            inc = Path(m.group(2))
            target = (inc if inc.is_absolute() else (src_dir / inc)).resolve()
            if not target.is_file():
                continue  # resolved through GMXLIB / the GROMACS share folder: leave it
            try:
                target.relative_to(src_dir.resolve())
                continue  # inside the example: copied already, include still valid
            except ValueError:
                pass
            folder = target.parent
            if folder not in copied:
                topo = next((t for t in topo_roots if folder.is_relative_to(t)), None)
                rel = Path("topologies") / (folder.relative_to(topo) if topo else folder.name)
                if not (dst / rel).exists():
                    shutil.copytree(folder, dst / rel, ignore=shutil.ignore_patterns("__pycache__", ".*"))
                copied[folder] = rel
            new = os.path.relpath(dst / copied[folder] / target.name, f.parent)
            lines[i] = f"{m.group(1)}{new}{m.group(3)}\n"
            changed = True
        if changed:
            f.write_text("".join(lines))
    return sorted(str(v) for v in copied.values())


def _provide_fetched(files: list[Path], dst: Path) -> list[str]:
    """Includes of the copied topologies that name a fetched (GPL, never shipped) force-field file
    and are not in the example: the CHARMM36 port's folder (linked from the cache), CHARMM-GUI
    lipid itps and the Martini 3 lipidome (copied from the cache; fetched first if needed)."""
    from .. import forcefields as ff
    from ..membranes import lipid_table

    out = []
    for f in files:
        if f.suffix != ".top":
            continue
        for line in f.read_text().splitlines():
            m = _INCLUDE.match(line)
            if not m or (f.parent / m.group(2)).exists():
                continue
            inc = Path(m.group(2))
            if inc.parts[0] == ff.CHARMM36_FF:
                from ..membranes import link_forcefield

                link_forcefield(f.parent)
                out.append(f"{ff.CHARMM36_FF} (link to the fetched CHARMM36 port)")
            elif len(inc.parts) == 1 and inc.name == MARTINI3_LIPIDOME:
                shutil.copy2(ff.martini3_itp(), f.parent / inc.name)
                out.append(f"{inc.name} (Martini 3 lipidome, fetched)")
            elif len(inc.parts) == 1 and inc.suffix == ".itp" and inc.stem in set(lipid_table().values()):
                shutil.copy2(ff.charmm36_lipid_itp(inc.stem), f.parent / inc.name)
                out.append(f"{inc.name} (CHARMM-GUI lipid, fetched)")
    return out


def _copy_mappings(dst: Path) -> list[str]:
    """Copy the mappings ``dst/sim.yaml`` names by bare name from the data path into ``dst``."""
    system = (yaml.safe_load((dst / "sim.yaml").read_text()) or {}).get("system") or {}
    maps = system.get("mappings") or []
    names = maps.values() if isinstance(maps, dict) else [maps] if isinstance(maps, str) else maps
    out = []
    for name in names:
        if not isinstance(name, str) or Path(name).is_absolute() or (dst / name).exists():
            continue
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(find_data("mappings", name), dst / name)
        out.append(name)
    return out


def _aa_topology_from_cg(dst: Path) -> str | None:
    """An example that starts from CG and ships no AA topology (a membrane protein: its CHARMM36m
    itp is made from GPL force-field files, never shipped) gets one the way a user starting from CG
    makes it: ``multiscale topology --cg-topology CG.top --cg CG.gro --output AA.top``."""
    cfg = yaml.safe_load((dst / "sim.yaml").read_text()) or {}
    system = cfg.get("system") or {}
    aa, cg, cg_top = (system.get(k) for k in ("aa_topology", "cg_structure", "cg_topology"))
    if cfg.get("start") != "cg" or not aa or (dst / aa).exists() or not cg:
        return None
    from ..chains.from_cg import system_topology

    system_topology(dst / aa, cg=dst / cg, cg_topology=dst / cg_top if cg_top else None)
    return f"{aa} (multiscale topology --cg {cg}" + (f" --cg-topology {cg_top})" if cg_top else ")")


def init_example(name: str, dest: str | os.PathLike, force: bool = False) -> Path:
    """Write the example ``name`` into ``dest``; returns the path of its sim.yaml."""
    from ..config import load_config

    if name not in list_examples():
        have = ", ".join(list_examples()) or "none found"
        raise MultiscaleError(f"unknown example '{name}': available examples: {have}")
    dst = Path(dest).expanduser().resolve()
    if dst.exists() and not dst.is_dir():
        raise MultiscaleError(f"{dst} exists and is not a folder: choose a new folder name")
    if dst.is_dir() and any(dst.iterdir()) and not force:
        raise MultiscaleError(f"{dst} is not empty: choose a new folder, or add --force to write into it")
    dst.mkdir(parents=True, exist_ok=True)
    src = find_data("examples", name)
    files = _copy_tree_files(src, dst)
    folders = _localise_includes(files, src, dst)
    fetched = _provide_fetched(files, dst)
    files += [dst / m for m in _copy_mappings(dst)]
    made = _aa_topology_from_cg(dst)
    if made:
        print(f"AA topology from the CG system: {made}")
    cfg_path = dst / "sim.yaml"
    cfg = load_config(cfg_path)  # must validate where it now is
    print(f"wrote {cfg_path} and {len(files) - 1} input file(s)"
          + (f" + force-field folders {', '.join(folders)}" if folders else "") + f" into {dst}")
    if fetched:
        from ..forcefields import cache_dir

        print(f"GPL-licensed force-field files from PyPI wheels (cache: {cache_dir()}): {', '.join(fetched)}")
    print(f"run it:        cd {dst} && multiscale cycle")
    print(f"watch it:      multiscale status {cfg.output}")
    print(f"on a cluster:  multiscale batch --config {cfg_path} --time 24:00:00 --submit   (see docs/hpc.md)")
    return cfg_path

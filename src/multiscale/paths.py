"""Where the data files live: mdp templates, force-field files, mappings, examples.

The package ships them under ``multiscale/data/<kind>/`` (kinds: :data:`KINDS`; ``classes``
holds the molecule-class tables such as ``ions.yaml``). A user's own
files override them: every folder in the environment variable ``MULTISCALE_DATA_PATH``
(``:``-separated, like ``PATH``) and every folder passed as ``extra`` is searched first, with the
same layout, e.g. ``$MULTISCALE_DATA_PATH/mdp/aa_md.mdp`` replaces the shipped ``aa_md``
template and ``.../mappings/mymol.map`` adds a mapping. Search order: ``extra``, then
``MULTISCALE_DATA_PATH`` left to right, then the package data; the first hit wins.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from multiscale.errors import MultiscaleError

__all__ = [
    "ENV_VAR",
    "KINDS",
    "package_data_dir",
    "search_path",
    "find_data",
    "find_all_data",
    "list_data",
    "data_dir",
    "mdp_template_dir",
    "topologies_dir",
    "mappings_dir",
    "examples_dir",
]

ENV_VAR = "MULTISCALE_DATA_PATH"
KINDS = ("mdp", "topologies", "mappings", "examples", "classes", "models")

PathLike = str | os.PathLike


def package_data_dir() -> Path:
    """The data shipped inside the installed package (``multiscale/data/``)."""
    return Path(__file__).resolve().parent / "data"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise MultiscaleError(f"unknown data kind '{kind}': use one of {', '.join(KINDS)}")


def search_path(extra: Iterable[PathLike] = ()) -> list[Path]:
    """Data roots in search order: ``extra``, ``$MULTISCALE_DATA_PATH``, the package data.

    Each root holds ``<kind>/`` subfolders. A folder named in ``extra`` or in the environment
    variable that does not exist raises :class:`MultiscaleError` (a typo must not silently fall
    back to the shipped files).
    """
    roots: list[Path] = []
    named = [(Path(p), "data_path") for p in extra]
    named += [(Path(p), ENV_VAR) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    for p, where in named:
        p = p.expanduser().resolve()
        if not p.is_dir():
            raise MultiscaleError(f"{where}: data folder {p} does not exist: create it or remove it from {where}")
        if p not in roots:
            roots.append(p)
    roots.append(package_data_dir())
    return roots


def find_data(kind: str, name: PathLike, extra: Iterable[PathLike] = ()) -> Path:
    """Path of the data file or folder ``<root>/<kind>/<name>`` in the first root that has it.

    ``kind`` is one of :data:`KINDS`; ``name`` is relative (``"aa_md.mdp"``,
    ``"martini3/martini_v3.0.0.itp"``, ``"heptanol"`` for an example folder). Raises
    :class:`MultiscaleError` naming what was looked for and where.
    """
    _check_kind(kind)
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not str(name).strip():
        raise MultiscaleError(f"data name {str(name)!r} must be a relative name inside {kind}/ (no '..')")
    roots = search_path(extra)
    for root in roots:
        cand = root / kind / rel
        if cand.exists():
            return cand
    where = ", ".join(str(r / kind) for r in roots)
    raise MultiscaleError(f"no {kind}/{rel} in {where}: add it to a folder on {ENV_VAR} or check the name")


def find_all_data(kind: str, name: PathLike, extra: Iterable[PathLike] = ()) -> list[Path]:
    """Every ``<root>/<kind>/<name>`` that exists, in search order (user folders first, the
    package's last): for data merged across layers, e.g. tables whose user entries override
    shipped ones (apply them in reverse). Empty if none exists."""
    _check_kind(kind)
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise MultiscaleError(f"data name {str(name)!r} must be a relative name inside {kind}/ (no '..')")
    return [root / kind / name for root in search_path(extra) if (root / kind / name).exists()]


def list_data(kind: str, pattern: str = "*", extra: Iterable[PathLike] = ()) -> list[str]:
    """Sorted names directly under ``<root>/<kind>/`` matching ``pattern``, over all roots."""
    _check_kind(kind)
    names = set()
    for root in search_path(extra):
        d = root / kind
        if d.is_dir():
            names.update(p.name for p in d.glob(pattern) if not p.name.startswith("."))
    return sorted(names)


def data_dir(kind: str) -> Path:
    """The shipped folder of one kind (``multiscale/data/<kind>``); overrides are not consulted:
    use :func:`find_data` to look up a file the user may override."""
    _check_kind(kind)
    d = package_data_dir() / kind
    if not d.is_dir():
        raise MultiscaleError(f"the installed package has no data folder {d}: reinstall multiscale (`pip install .`)")
    return d


def mdp_template_dir() -> Path:
    """Shipped ``*.mdp`` templates rendered by :func:`multiscale.gromacs.render_mdp`."""
    return data_dir("mdp")


def topologies_dir() -> Path:
    """Shipped force-field files (``martini3/``, ``heptanol/``, ``water/``); see its README.md."""
    return data_dir("topologies")


def mappings_dir() -> Path:
    """Shipped AA -> CG mapping files (``heptanol.map``)."""
    return data_dir("mappings")


def examples_dir() -> Path:
    """Shipped example systems (``heptanol/``), copied out by ``multiscale init --example``."""
    return data_dir("examples")

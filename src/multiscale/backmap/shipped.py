"""Shipped per-moleculetype models (lipids): ``multiscale/data/models/lipids_<forcefield>/<NAME>.pt``.

One file per lipid moleculetype, named by it (``lipids_charmm36/POPE.pt``); a user adds a lipid by
adding a file.  Each file is an ordinary ``system`` model file (:mod:`.model_file`) written by
``scripts/train_lipid_model.py`` on the project's own atomistic bilayer data (provenance in the
file and in docs/membranes.md).  A model that lacks a lipid moleculetype of the topology (or no
model at all: ``backmap`` without ``--model``) takes the shipped entry whose moleculetype
fingerprint (atom names, elements, bonds) matches; a user data folder (``MULTISCALE_DATA_PATH``)
may add its own ``models/lipids_*/<NAME>.pt``, which win over the package's.  Only the files of the
topology's lipids are read.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["shipped_lipid_files", "shipped_lipid_file", "shipped_lipid_names", "with_shipped_lipids", "shipped_models"]

FOLDERS = "lipids_*"


def shipped_lipid_files(name: str = "*") -> list:
    """The shipped (and user data folders') lipid model files for moleculetype ``name`` (``*``: all),
    user folders first; none for a name that is not a plain file name."""
    from ..paths import find_all_data, list_data

    if name != "*" and not name.replace("_", "").isalnum():
        return []
    out = []
    for folder in list_data("models", FOLDERS):
        for root in find_all_data("models", folder):
            out += sorted(p for p in root.glob(f"{name}.pt") if p.is_file())
    return out


@lru_cache(maxsize=64)
def _entry(path: str):
    from .model_file import load_model

    moltypes = load_model(path).moltypes
    return moltypes.get(path.rsplit("/", 1)[-1][:-3])


def shipped_lipid_names() -> list[str]:
    """Moleculetype names the shipped lipid models cover (from the file names; nothing is loaded)."""
    return sorted({p.stem for p in shipped_lipid_files()})


def shipped_lipid_file(name: str):
    """The first shipped (or user data folder's) lipid model file for moleculetype ``name``, or None."""
    return next(iter(shipped_lipid_files(name)), None)


def with_shipped_lipids(model, topology):
    """``model`` with an entry for every lipid moleculetype of ``topology`` it lacks, taken from
    the shipped lipid models (same fingerprint).  Lipids no shipped model covers are left out:
    :meth:`BackmapModel.check` then names them (see :func:`missing_lipid_message`)."""
    from ..classes import classify

    for mt in topology.moltypes.values():
        if mt.name in model.moltypes or classify(mt, model.mapping).name != "lipid":
            continue
        for p in shipped_lipid_files(mt.name):
            entry = _entry(str(p))
            if entry is not None and entry.fingerprint == mt.fingerprint():
                model.moltypes[mt.name] = entry
                break
    return model


def missing_lipid_message(name: str) -> str:
    """The one-line advice for a lipid moleculetype no model covers."""
    have = shipped_lipid_names()
    return (f"multiscale ships no model for lipid {name} with these atoms (shipped: {', '.join(have) or 'none'}, for the "
            f"CHARMM-GUI CHARMM36 itps): train one on AA frames of a bilayer with {name} (multiscale train --topology AA.top "
            "--structure AA.gro --trajectory AA.xtc --output m.pt; scripts/make_bilayer_data.py makes such data) and pass --model m.pt")


def shipped_models(topology, mapping_files=()):
    """A model of the shipped parts only, for ``topology`` (built-in mappings, the shipped chain and
    lipid models, the bundled water bank): ``backmap`` without ``--model`` and cycles without
    ``backmap.model`` until they have trained one (``mapping_files``: the run's own ``.map`` files).  A
    molecule they do not cover is one line naming it and how to train a model for it."""
    from ..preflight import load_checked_mapping
    from .engine import BackmapModel

    m = with_shipped_lipids(BackmapModel(load_checked_mapping(list(mapping_files), topology), {}, source="the shipped models (no --model)"), topology)
    m.check(topology)
    return m

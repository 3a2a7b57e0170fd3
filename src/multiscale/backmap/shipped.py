"""Shipped per-moleculetype models (lipids): ``multiscale/data/models/lipids_<forcefield>.pt``.

Each such file is an ordinary ``system`` model file (:mod:`.model_file`) written by
``multiscale train`` on the project's own atomistic bilayer data (``scripts/train_lipid_model.py``,
provenance in the file and in docs/membranes.md).  A model that lacks a lipid moleculetype of the
topology (or no model at all: ``backmap`` without ``--model``) takes the shipped entry whose
moleculetype fingerprint (atom names, elements, bonds) matches; a user data folder
(``MULTISCALE_DATA_PATH``) may add its own ``models/lipids_*.pt``, which win over the package's.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["shipped_lipid_files", "shipped_lipid_file", "shipped_lipid_names", "with_shipped_lipids"]

PATTERN = "lipids_*.pt"


def shipped_lipid_files() -> list:
    """The shipped (and user data folders') lipid model files, user folders first."""
    from ..paths import find_all_data, list_data

    return [p for name in list_data("models", PATTERN) for p in find_all_data("models", name)]


@lru_cache(maxsize=8)
def _entries(path: str) -> dict:
    from .model_file import load_model

    return dict(load_model(path).moltypes)


def shipped_lipid_names() -> list[str]:
    """Moleculetype names the shipped lipid models cover."""
    return sorted({n for p in shipped_lipid_files() for n in _entries(str(p))})


def shipped_lipid_file(name: str):
    """The first shipped (or user data folder's) lipid model file with moleculetype ``name``, or None."""
    return next((p for p in shipped_lipid_files() if name in _entries(str(p))), None)


def with_shipped_lipids(model, topology):
    """``model`` with an entry for every lipid moleculetype of ``topology`` it lacks, taken from
    the shipped lipid models (same fingerprint).  Lipids no shipped model covers are left out:
    :meth:`BackmapModel.check` then names them (see :func:`missing_lipid_message`)."""
    from ..classes import classify

    for mt in topology.moltypes.values():
        if mt.name in model.moltypes or classify(mt, model.mapping).name != "lipid":
            continue
        for p in shipped_lipid_files():
            entry = _entries(str(p)).get(mt.name)
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


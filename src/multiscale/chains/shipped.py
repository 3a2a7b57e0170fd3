"""The shipped chain models (``multiscale/data/models/chains_<naming>.pt``).

Each is a backmapping model file (:mod:`multiscale.backmap.model_file`) that holds only a
:class:`~.model.ChainModel`; ``scripts/train_chain_model.py`` writes it from the peptide data of
``scripts/make_peptide_data.py`` and records the provenance in the file (``provenance``) and in
``docs/proteins.md``.  A user data folder (``MULTISCALE_DATA_PATH``) may put its own in ``models/``.
"""

from __future__ import annotations

from functools import lru_cache

from ..errors import MultiscaleError

#: namings with a shipped model
SHIPPED = ("amber", "charmm")


def shipped_model_path(naming: str):
    """Path of the shipped (or user data folder's) model file for ``naming``, or None."""
    from ..paths import find_all_data

    for p in find_all_data("models", f"chains_{naming}.pt"):
        return p
    return None


@lru_cache(maxsize=4)
def _load(path: str):
    from ..backmap.model_file import load_model

    m = load_model(path)
    if m.chains is None:
        raise MultiscaleError(f"{path} holds no chain model: rewrite it with scripts/train_chain_model.py")
    return m.chains


def shipped_chain_model(naming: str, what: str = "the chain"):
    """The shipped :class:`~.model.ChainModel` for atom names ``naming`` (``amber`` / ``charmm``)."""
    p = shipped_model_path(naming)
    if p is None:
        raise MultiscaleError(
            f"moleculetype {what} uses {naming} atom names, for which multiscale ships no chain model (shipped: "
            f"{', '.join(SHIPPED)}): train one on AA frames of this protein (multiscale train --topology AA.top "
            "--structure AA.gro --trajectory AA.xtc --output m.pt) and pass --model m.pt")
    return _load(str(p))

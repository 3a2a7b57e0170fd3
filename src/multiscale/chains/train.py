"""Training the chain model from AA frames of a system (``multiscale train``, the shipped-model script).

:func:`chain_data` turns every amino-acid chain block of a topology into backbone and per-kind
decoration arrays (molecules made whole, coarse-grained with martinize2's weights);
:func:`train_chains` fits (or fine-tunes) a :class:`~.model.ChainModel` on them.  Lengths nm.
"""

from __future__ import annotations

import numpy as np

from ..errors import MultiscaleError
from .model import ChainModel, chain_training_arrays, fit_chain_model, merge_kind_data


def chain_data(topology, positions: np.ndarray, box: np.ndarray, chain_blocks: list) -> tuple:
    """(start, extend, kinds, naming) from positions (F, N, 3) nm, box (F, 3) or (F, 3, 3) and the
    layout's chain blocks (every copy of every frame is one training chain)."""
    from ..classes.chain import _chain_mapping, amino_acid_names
    from ..coarse_grain import whole_molecules
    from .residues import chain_residues

    S, E, K, namings = [], [], [], set()
    for blk in chain_blocks:
        mt = blk.aa_block.moltype
        cm = _chain_mapping(mt)
        namings.add(cm.from_ff)
        res = chain_residues(mt, cm, amino_acid_names())
        x = whole_molecules(positions, box, blk.aa_block)  # (F, count, n, 3)
        s, e, k = chain_training_arrays(mt, cm, res, x.reshape(-1, mt.n_atoms, 3))
        S.append(s)
        E.append(e)
        K.append(k)
    if len(namings) > 1:
        raise MultiscaleError(f"the chains of {topology.source} use {' and '.join(sorted(namings))} atom names: "
                              "one chain model covers one naming; train on one force field at a time")

    def cat(parts):
        return tuple(np.concatenate(c, 0) for c in zip(*parts))

    return cat(S), cat(E), merge_kind_data(K), namings.pop()


def train_chains(topology, positions: np.ndarray, box: np.ndarray, chain_blocks: list, *, seed: int = 0,
                 epochs: int | None = None, init: ChainModel | None = None, device: str = "cpu", log=print,
                 provenance: dict | None = None) -> ChainModel:
    """Fit (``init``: fine-tune) the chain model on the chain blocks of AA frames."""
    start, extend, kinds, naming = chain_data(topology, positions, box, chain_blocks)
    if init is not None and init.naming != naming:
        raise MultiscaleError(f"the init chain model uses {init.naming} atom names but {topology.source} uses {naming}: "
                              "fine-tune a model of the same naming")
    n_res = sum(len(np.concatenate(d["x"])) for d in kinds.values())
    log(f"training amino-acid chains ({naming} names): {n_res} residues, {len(kinds)} residue kinds"
        + (", fine-tuning the initial chain model" if init is not None else ""))
    model = fit_chain_model(start, extend, kinds, naming=naming, seed=seed, epochs=epochs, device=device, log=log,
                            init=init)
    if provenance:
        model.provenance.append(dict(provenance))
    return model

"""Whole-system per-atom arrays and system-wide operations of the backmapping engine.

Molecule ids, clash search, polar-hydrogen orientation and hydrogen-bond counts over the whole
AA system (every block of the topology), and the per-block helpers the steps share.
"""

from __future__ import annotations

import numpy as np

from ..errors import MultiscaleError

__all__ = ["bead_molecules", "system_arrays", "orient_frame", "count_frame_hbonds", "system_clashes",
           "water_order", "bead_count_error"]


def water_order(mt) -> list[int]:
    o = [i for i, e in enumerate(mt.elements) if e == "O"]
    h = [i for i, e in enumerate(mt.elements) if e == "H"]
    return o[:1] + h[:2]



def bead_count_error(n: int, layout, topology) -> MultiscaleError:
    """The one-line error for a CG input of ``n`` beads that does not fit ``layout``."""
    from ..coarse_grain import n_beads
    from .frame import block_kind

    parts = ", ".join(f"{b.cg_name} x{b.count} -> {b.count * b.n_beads} beads" if block_kind(b) != "water" else
                      f"{b.cg_name} x{b.count} ({b.per_bead} {b.aa_block.moltype.name} each)" for b in layout)
    return MultiscaleError(f"CG input has {n} beads but the mapping of {topology.source or 'the topology'} expects "
                           f"{n_beads(layout)} ({parts}): pass the CG structure of this system")



def bead_molecules(layout) -> np.ndarray:
    """Molecule id per CG bead (B,) in layout order (each W bead is its own molecule)."""
    ids, base = [], 0
    for blk in layout:
        ids.append(np.repeat(np.arange(base, base + blk.count), blk.n_beads))
        base += blk.count
    return np.concatenate(ids) if ids else np.zeros(0, int)


def system_arrays(topology, model):
    """Per-atom arrays of the whole system (cached on the model): molecule id, local index,
    moltype kind, is-water, acceptor (O/N) mask, and the per-kind exclusion matrices."""
    from .certify import exclusion_matrix

    key = (id(topology), topology.n_atoms)
    cache = getattr(model, "_sys_cache", None)
    if cache is not None and cache[0] == key:
        return cache[1]
    mol, loc, kind, excl, is_w, acc = [], [], [], [], [], []
    base = 0
    names: dict[str, int] = {}
    for blk in topology.blocks:
        mt = blk.moltype
        if mt.name not in names:
            names[mt.name] = len(excl)
            excl.append(model.moltypes[mt.name].exclusions if mt.name in model.moltypes
                        else np.ones((mt.n_atoms, mt.n_atoms), bool) if mt.is_water
                        else exclusion_matrix(mt.n_atoms, mt.bonds, 2))
        n, c = mt.n_atoms, blk.count
        mol.append(np.repeat(np.arange(base, base + c), n))
        loc.append(np.tile(np.arange(n), c))
        kind.append(np.full(n * c, names[mt.name]))
        is_w.append(np.full(n * c, mt.is_water))
        acc.append(np.tile(np.isin(np.asarray(mt.elements), ["O", "N"]), c))
        base += c
    arrays = dict(zip(("mol", "loc", "kind", "is_w", "acc"), map(np.concatenate, (mol, loc, kind, is_w, acc))))
    arrays["excl"] = excl
    model._sys_cache = (key, arrays)
    return arrays


def orient_frame(x: np.ndarray, box: np.ndarray, topology, model, rng, eps: float | None = None,
                 keep: np.ndarray | None = None):
    """Orient the rotatable polar hydrogens of every solute block (see :func:`.place.orient_rotors`;
    keep: (N,) bool, hydrogens that keep their orientation)."""
    from .place import orient_rotors

    arr = system_arrays(topology, model)
    moved = 0
    for blk in topology.blocks:
        entry = model.moltypes.get(blk.moltype.name)
        if entry is None or not entry.rotors or blk.moltype.is_water:
            continue
        base = blk.start + np.arange(blk.count) * blk.moltype.n_atoms
        ra = [(base + r["r"], base + r["c"], base + r["a"], base[:, None] + np.asarray(r["hs"])) for r in entry.rotors]
        x, mv = orient_rotors(x, box, ra, arr["mol"], arr["acc"], entry.hbond_eps if eps is None else float(eps), rng,
                              priors=entry.rotor_priors, keep=keep)
        moved += mv
    return x, moved


def count_frame_hbonds(x: np.ndarray, box: np.ndarray, topology, model, solutes_only: bool = False) -> int:
    """Hydrogen bonds donated by the rotatable polar hydrogens of the solutes (one frame); to
    solute acceptors only with ``solutes_only``."""
    from .place import count_hbonds

    arr = system_arrays(topology, model)
    hs, ds = [], []
    for blk in topology.blocks:
        entry = model.moltypes.get(blk.moltype.name)
        if entry is None or blk.moltype.is_water:
            continue
        base = blk.start + np.arange(blk.count) * blk.moltype.n_atoms
        for r in entry.rotors:
            for h in r["hs"]:
                hs.append(base + h)
                ds.append(base + r["a"])
    if not hs:
        return 0
    acc = arr["acc"] & ~arr["is_w"] if solutes_only else arr["acc"]
    return count_hbonds(x, box, np.concatenate(hs), np.concatenate(ds), arr["mol"], acc)


def system_clashes(x: np.ndarray, box: np.ndarray, topology, model, inter: float, intra: float):
    """Clash pairs over the whole system x (N, 3): (inter_pairs, intra_pairs, is_water (N,), None)."""
    from .certify import find_clashes

    arr = system_arrays(topology, model)
    ip, jp = find_clashes(x, box, arr["mol"], arr["loc"], arr["kind"], arr["excl"], inter, intra)
    return ip, jp, arr["is_w"], None

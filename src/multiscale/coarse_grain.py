"""AA -> CG: map atomistic coordinates onto Martini beads, PBC-safe, batched.

For each molecule block the bead positions are one einsum ``M @ x`` over all molecules and
frames at once, after the molecules have been made whole along their bonds.  Water blocks
are grouped ``per_bead`` molecules per bead by spatial proximity (:mod:`multiscale.water`);
the bead sits at the group's centre of mass.  Bead centres are wrapped back into the box.

CG bead order: the AA topology's block order; within a block, molecule by molecule, beads in
the mapping's order; a water block becomes ``count / per_bead`` single-bead molecules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import CGBlock, classify
from .classes import get as get_class
from .errors import MultiscaleError
from .geometry import bond_tree_order, frame_boxes, make_whole, minimum_image, wrap
from .io import atomic_write_text
from .mapping import Mapping
from .topology import MoleculeBlock, SystemTopology

__all__ = ["CGBlock", "CGResult", "cg_layout", "whole_molecules", "coarse_grain", "cg_names",
           "write_cg_topology", "n_beads"]


@dataclass
class CGResult:
    """positions (F, B, 3) nm; box (F, 3) nm; water_groups: per frame, per water block, (n_groups, per_bead) int;
    water_beads_moved: water beads moved off another bead (all frames, :func:`_clear_water_beads`)."""

    positions: np.ndarray
    box: np.ndarray
    layout: list[CGBlock]
    water_groups: list[list[np.ndarray]]
    water_beads_moved: int = 0


def cg_layout(topology: SystemTopology, mapping: Mapping) -> list[CGBlock]:
    """The CG blocks of the AA topology, one per molecule block, each laid out by the molecule
    class that owns its moleculetype (:func:`multiscale.classes.classify`).  Every atom belongs
    to exactly one class, or a one-line MultiscaleError names the moleculetype and the fix."""
    out: list[CGBlock] = []
    start = 0
    source = str(topology.source)
    owners = {name: classify(mt, mapping, source) for name, mt in topology.moltypes.items()}
    for b in topology.blocks:
        blk = owners[b.moltype.name].layout(b, mapping, start, source, topology=topology)
        out.append(blk)
        start = blk.stop
    return out


def n_beads(layout: list[CGBlock]) -> int:
    """Total bead count of a layout."""
    return layout[-1].stop if layout else 0


def whole_molecules(positions: np.ndarray, box: np.ndarray, block: MoleculeBlock) -> np.ndarray:
    """Coordinates of one block's molecules, made whole.

    positions: (F, N, 3) nm (whole system); box: (F, 3) edge lengths or (F, 3, 3) box vectors, nm.
    Returns (F, count, n_atoms, 3) float64 nm; each molecule unwrapped along its bond tree.
    """
    mt = block.moltype
    x = np.asarray(positions[:, block.start:block.stop], dtype=np.float64)
    x = x.reshape(x.shape[0], block.count, mt.n_atoms, 3)
    order, parent = bond_tree_order(mt.n_atoms, mt.bonds)
    return make_whole(x, frame_boxes(box, x.shape[0])[:, None], order, parent)


def coarse_grain(positions: np.ndarray, box: np.ndarray, topology: SystemTopology, mapping: Mapping,
                 seed: int = 0, layout: list[CGBlock] | None = None) -> CGResult:
    """Map AA frames to CG beads.

    positions: (F, N, 3) nm with N == topology.n_atoms; box: (F, 3) or (F, 3, 3) nm.  Returns bead
    positions (F, B, 3) nm wrapped into the box.  Water grouping per frame is seeded.
    """
    positions = np.asarray(positions)
    if positions.ndim == 2:
        positions = positions[None]
    box = frame_boxes(box, positions.shape[0])
    if positions.shape[1] != topology.n_atoms:
        raise MultiscaleError(
            f"AA coordinates have {positions.shape[1]} atoms but topology {topology.source} has "
            f"{topology.n_atoms} ({topology.summary()}): use matching structure and topology"
        )
    layout = layout or cg_layout(topology, mapping)
    nf = positions.shape[0]
    out = np.empty((nf, n_beads(layout), 3))
    groups: list[list[np.ndarray]] = [[] for _ in range(nf)]
    shells = _hydrate_ions(positions, box, layout, out)
    for blk in layout:
        if blk.kind == "ion" and shells is not None:
            continue  # beads already written by _hydrate_ions
        x = whole_molecules(positions, box, blk.aa_block)  # (F, count, n_atoms, 3)
        kw = {"exclude": shells} if blk.kind == "water" and shells is not None else {}
        beads, g = get_class(blk.kind).map_beads(x, box, blk, seed=seed, **kw)
        out[:, blk.start:blk.stop] = beads.reshape(nf, -1, 3)
        if g is not None:
            for f in range(nf):
                groups[f].append(g[f])
    moved = _clear_water_beads(out, box, layout)
    out = wrap(out, box[:, None])
    return CGResult(positions=out, box=np.array(box), layout=layout, water_groups=groups, water_beads_moved=moved)


#: nm: a water bead closer than this to a bead of another kind is moved out to this distance
W_MIN_DISTANCE = 0.15


def _clear_water_beads(out: np.ndarray, box: np.ndarray, layout: list[CGBlock]) -> int:
    """Move water beads that sit on another bead out to :data:`W_MIN_DISTANCE` from it, in place.

    A W bead is the centre of its four waters, and four waters hydrating a group from all sides
    have their centre on that group: after 10 ps of AA MD of the membrane-protein example, a W
    bead came out 0.019 nm from a lipid's PO4 bead and the next CG energy minimisation stopped
    with an infinite force.  Such a bead is moved radially away from the other bead (the CG EM
    relaxes it; going back, a W bead becomes four new waters anyway).  out (F, B, 3) nm; returns
    the number of beads moved."""
    from .neighbours import PeriodicTree

    water = np.concatenate([np.arange(b.start, b.stop) for b in layout if b.kind == "water"] or [np.zeros(0, int)])
    other = np.setdiff1d(np.arange(out.shape[1]), water)
    if not len(water) or not len(other):
        return 0
    moved = 0
    for f in range(out.shape[0]):
        tree = PeriodicTree(out[f, other], box[f], W_MIN_DISTANCE)
        d, j = tree.query(out[f, water], k=1, distance_upper_bound=W_MIN_DISTANCE)
        hit = np.flatnonzero(np.isfinite(d))
        if not len(hit):
            continue
        ref = out[f, other[j[hit]]]
        v = minimum_image(out[f, water[hit]] - ref, box[f])
        r = np.linalg.norm(v, axis=1, keepdims=True)
        v = np.where(r > 1e-9, v / np.maximum(r, 1e-12), [0.0, 0.0, 1.0])
        out[f, water[hit]] = ref + W_MIN_DISTANCE * v
        moved += len(hit)
    return moved


def _hydrate_ions(positions: np.ndarray, box: np.ndarray, layout: list[CGBlock], out: np.ndarray):
    """Hydrated ions (``ions.waters_per_ion`` = k > 0): each ion bead is the centre of mass of the
    ion and its k nearest waters (each water in one shell).  Writes the ion beads into ``out``
    (F, B, 3) and returns the shell waters per frame (F, I, k) (indices within the water block)
    for the water grouping to leave out; None when k = 0."""
    from .classes.ion import hydration_shells

    ion_blocks = [b for b in layout if b.kind == "ion" and b.info.get("waters", 0) > 0]
    water = [b for b in layout if b.kind == "water"]
    if not ion_blocks:
        return None
    if not water:
        raise MultiscaleError("ions.waters_per_ion > 0 but the system has no water")
    k, wb = ion_blocks[0].info["waters"], water[0]
    wm = wb.aa_block.moltype.masses
    xw = whole_molecules(positions, box, wb.aa_block)  # (F, n_w, 3, 3)
    ions = np.concatenate([positions[:, b.aa_block.start:b.aa_block.stop] for b in ion_blocks], axis=1).astype(np.float64)
    im = np.concatenate([np.repeat(b.aa_block.moltype.masses[0], b.count) for b in ion_blocks])
    shells = np.empty((len(positions), ions.shape[1], k), dtype=np.int64)
    for f in range(len(positions)):  # one assignment per frame
        shells[f] = hydration_shells(ions[f], xw[f, :, int(np.argmax(wm))], box[f], k)
        com = np.einsum("a,swak->swk", wm, xw[f][shells[f]])  # (I, k, 3) mass-weighted water centres x mass
        rel = minimum_image(com / wm.sum() - ions[f][:, None], box[f])  # water COM relative to its ion
        bead = ions[f] + (wm.sum() * rel.sum(1)) / (im + k * wm.sum())[:, None]
        base = 0
        for b in ion_blocks:
            out[f, b.start:b.stop] = bead[base:base + b.count]
            base += b.count
    return shells


def cg_names(layout: list[CGBlock]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bead (names, resnames, resids) for writing CG structures: one residue per CG molecule,
    except chains, whose beads keep their residue names and numbers (as martinize2 writes them)."""
    names, resnames, resids = [], [], []
    rid = 0
    for blk in layout:
        names.append(np.tile(blk.bead_names, blk.count))
        if "bead_resids" in blk.info:
            r = np.asarray(blk.info["bead_resids"])
            r = r - r.min() + 1
            per = int(r.max())
            resnames.append(np.tile(np.asarray(blk.info["bead_resnames"]), blk.count))
            resids.append((np.arange(blk.count)[:, None] * per + r[None, :]).ravel() + rid)
            rid += per * blk.count
            continue
        resnames.append(np.full(blk.n_beads * blk.count, blk.cg_name))
        resids.append(np.repeat(np.arange(rid + 1, rid + blk.count + 1), blk.n_beads))
        rid += blk.count
    return np.concatenate(names), np.concatenate(resnames), np.concatenate(resids)


def write_cg_topology(path: str | os.PathLike, layout: list[CGBlock], includes: list[str | os.PathLike],
                      title: str = "CG system written by multiscale") -> Path:
    """Write a Martini ``.top``: ``#include`` lines (made relative to the .top's folder) + molecules."""
    path = Path(path)
    lines = []
    for inc in includes:
        inc = Path(inc)
        rel = os.path.relpath(inc.resolve(), path.parent.resolve()) if inc.is_absolute() or inc.exists() else str(inc)
        lines.append(f'#include "{rel}"')
    lines += ["", "[ system ]", title, "", "[ molecules ]"]
    for blk in layout:
        lines.append(f"{blk.cg_name:<10s} {blk.count}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def check_cg_beads(n: int, layout: list[CGBlock], source: str) -> None:
    """Fail with one line when a CG structure's bead count does not fit the layout."""
    expected = n_beads(layout)
    if n != expected:
        parts = ", ".join(f"{b.cg_name} x{b.count} -> {b.count * b.n_beads}" for b in layout)
        raise MultiscaleError(f"{source} has {n} beads but the mapping expects {expected} ({parts}): pass the CG structure of this system")

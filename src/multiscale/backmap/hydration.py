"""First hydration shells of solute acceptors: measured in the AA training frames, filled by
the solvent step.

A Martini W bead next to a hydroxyl stands for four waters somewhere within ~0.5 nm of it.
Drawn at random from the water bank, those waters rarely put an O-H at the acceptor: right
after the backmap of the heptanol example only 9 of the AA liquid's 45 water -> hydroxyl
hydrogen bonds per frame were there (docs/hbonds.md).  The fix uses the water placement's
shell pass (:mod:`.water.shell`), which already fills ion shells: each hydrated acceptor is a
shell site with

* ``r`` -- the median water-O distance of its first shell in the AA frames (nm; hydroxyl O of
  heptan-1-ol: 0.28), and
* ``n`` -- the waters of that shell (O within ``r`` + :data:`~.water.shell.SHELL_COUNT`; 2.6),

oriented as an anion's (one water O-H aimed at the site): the waters donate to it, and the
solute's own polar hydrogens then turn towards the waters' O (step ``polar_h``).  Acceptors
with fewer than :data:`MIN_WATERS` waters in the AA shell (buried, or no water in the training
data) get no site.  Lengths nm.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_WATERS", "measure_shells", "solute_shell_arrays"]

#: an acceptor gets a shell site when its AA first shell holds at least this many waters
MIN_WATERS = 0.5
#: first-shell window of the acceptor...water-O distance (nm): the site's distance is the median in it
SHELL_WINDOW = (0.24, 0.33)
#: water O per acceptor looked at (the nearest; a first shell holds at most ~6)
_K = 16
#: frames of the training data measured at most (evenly spaced)
MAX_FRAMES = 20
#: orientation sign of every site (< 0: one water O-H towards it, as for an anion).  Heptanol
#: example, water -> solute / solute -> water H-bonds per frame right after the backmap (AA 45 /
#: 31): -1: 45 / 24; 0 (no orientation term): fewer water donors; +1 (H away): fewer still
#: (docs/hbonds.md)
SITE_SIGN = -1.0


def _water_oxygens(topology) -> np.ndarray:
    """System indices of every water O."""
    from .system import water_order

    out = [blk.start + np.arange(blk.count) * blk.moltype.n_atoms + water_order(blk.moltype)[0]
           for blk in topology.blocks if blk.moltype.is_water]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def measure_shells(pos: np.ndarray, box: np.ndarray, topology, names) -> dict:
    """Per moltype in ``names``: ``(r, n)``, two (n_atoms,) arrays -- the first-shell water-O
    distance (nm) and water count of every O/N atom whose AA shell holds >= :data:`MIN_WATERS`
    waters, 0 elsewhere.  ``pos`` (F, N, 3) nm, ``box`` (F, 3) or (F, 3, 3).  Moltypes of a system
    without water get zeros."""
    from ..geometry import frame_boxes
    from ..neighbours import PeriodicTree
    from .water.shell import SHELL_COUNT

    wo = _water_oxygens(topology)
    out = {}
    frames = np.unique(np.linspace(0, len(pos) - 1, min(MAX_FRAMES, len(pos))).round().astype(int))
    boxes = frame_boxes(np.asarray(box, np.float64), len(pos))
    reach = SHELL_WINDOW[1] + SHELL_COUNT
    for name in names:
        blks = [b for b in topology.blocks if b.moltype.name == name]
        mt = blks[0].moltype
        r, n = np.zeros(mt.n_atoms), np.zeros(mt.n_atoms)
        acc = np.flatnonzero(np.isin(np.asarray(mt.elements), ["O", "N"]))
        if len(wo) == 0 or len(acc) == 0:
            out[name] = (r, n)
            continue
        # sites (molecule, acceptor) of every block of the moltype: system index, acceptor number
        idx = np.concatenate([(b.start + np.arange(b.count)[:, None] * mt.n_atoms + acc[None]).ravel() for b in blks])
        which = np.tile(np.arange(len(acc)), len(idx) // len(acc))
        dists = [[] for _ in acc]
        for f in frames:
            x = np.asarray(pos[f], np.float64)
            tree = PeriodicTree(x[wo], boxes[f], reach)
            d, _ = tree.query(x[idx], k=_K, distance_upper_bound=reach)
            for a in range(len(acc)):
                da = d[which == a]
                dists[a].append(da[np.isfinite(da)])
        per = len(frames) * (len(idx) // len(acc))
        for a, i in enumerate(acc):
            d = np.concatenate(dists[a])
            first = d[(d >= SHELL_WINDOW[0]) & (d <= SHELL_WINDOW[1])]
            if len(first) == 0:
                continue
            r0 = float(np.median(first))
            w = float((d < r0 + SHELL_COUNT).sum()) / per
            if w >= MIN_WATERS:
                r[i], n[i] = round(r0, 4), round(w, 3)
        out[name] = (r, n)
    return out


def solute_shell_arrays(solutes) -> np.ndarray | None:
    """(3, m): shell distance, orientation sign and water count per atom of ``solutes`` (the
    frame's :class:`~.solute.Solute` blocks, their atoms in order), or None when no moltype has a
    shell site (models trained before this existed, or without water)."""
    parts, any_site = [], False
    for s in solutes:
        r, m = s.mm.shell_r, s.x.shape[0]
        if not np.any(r > 0):
            parts.append(np.zeros((3, m * s.x.shape[1])))
            continue
        any_site = True
        site = np.tile(np.asarray(r) > 0, m)
        parts.append(np.stack([np.tile(r, m), np.where(site, SITE_SIGN, 0.0), np.tile(s.mm.shell_n, m)]))
    return np.concatenate(parts, axis=1) if any_site else None

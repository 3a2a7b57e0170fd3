"""Bead stage of water placement: a rotated bank cluster on every bead, clashes re-drawn.

Clashes (oxygens of different beads closer than ``min_dist``, or any atom too close to
``others``) are found with a periodic cell list in float32 (:class:`~.cells._CellGrid`),
built once on the first draw's oxygens and merged with the re-drawn beads after each round.
A small set of beads covering every clash (:func:`~.arrays._cover`) is re-drawn; the others
form a clash-free accepted set.  Re-drawn beads try their candidates one at a time against
the accepted beads (a bead that found a clash-free one stops drawing), so the work follows
the number of clashes.  Lengths nm; beads in sorted (spatial) order.
"""

from __future__ import annotations

import numpy as np

from .arrays import _cover
from .cells import _CellGrid
from .params import _BATCH

__all__ = ["BeadStage"]


class BeadStage:
    """Draws for the sorted beads: ``kk`` (n,) cluster indices and ``qq`` (n, 4) float32
    quaternions, ``offender`` (n,) bool (beads still clashing).

    ``x`` (n, 3) float64 caller's bead positions and ``order`` (sorted bead i is row
    ``order[i]``), ``xw32`` (3, n) float32 wrapped sorted positions, ``box``
    (:class:`~.pbc.Box`), ``r_grid`` the O-O search radius, ``obst``
    (:class:`~.obstacles.Obstacles` or None) and ``near`` (n,) bool."""

    def __init__(self, bank, rng, x, order, xw32, box, r_grid, obst, near):
        self.bank, self.rng, self.x, self.order, self.xw32 = bank, rng, x, order, xw32
        self.box, self.r_grid, self.obst, self.near = box, r_grid, obst, near
        self.n = n = len(order)
        self.retries, self.per_retry = 0, []
        self.kk, self.qq = bank._draw(rng, n)
        ox = bank._oxygens(self.kk, self.qq, xw32)  # (3, 4, n) float32
        pts = tuple(ox.reshape(3, -1))  # oxygen (atom, bead) is point atom * n + bead
        bead_of = np.tile(np.arange(n, dtype=np.int32 if n < 2**31 else np.int64), 4)
        self.grid = _CellGrid(pts, box, r_grid, ids=bead_of)  # holds the oxygens from now on
        del pts, bead_of, ox
        bi, bj = self.grid.pairs()
        self.grid.real = None
        self.moved = np.zeros(n, dtype=bool)
        self.offender = _cover(bi, bj, n)
        del bi, bj
        self.offender |= self.other_clash(np.arange(n), self.kk, self.qq) > 0
        self.n_initial = int(self.offender.sum())
        self.last = self.last_o = None

    def other_clash(self, beads_, k, quat):
        """Number of atoms closer than allowed to an 'others' atom, per candidate."""
        cnt = np.zeros(len(k), dtype=np.int64)
        rows = np.flatnonzero(self.near[beads_]) if self.obst else []
        if len(rows) == 0:
            return cnt
        xyz = self.bank._coords(k[rows], quat[rows], self.x[self.order[beads_[rows]]])
        cnt[rows] = self.obst.count(xyz)
        return cnt

    def run(self, max_retries: int, n_candidates: int, first_candidates: int):
        """Re-draw rounds (see :meth:`~.bank.WaterBank.place`)."""
        for _ in range(max_retries):
            if not self.offender.any():
                break
            self.retries += 1
            m = min(first_candidates, n_candidates) if self.retries == 1 else n_candidates
            release = m == n_candidates and self.retries < max_retries
            self._round(m, release)
            self.per_retry.append(int(self.offender.sum()))
        self.grid = self.last_o = None

    def _candidates(self, off, accepted, m):
        """Up to m candidates per re-drawn bead ``off``, in slots, against the accepted
        beads: the first clash-free one is kept, else the first with the fewest clashing
        atoms.  Returns (best clashes, cluster, quaternion, oxygens (3, 4, a), slot kept,
        partners: (offender position, accepted bead, slot) of candidate clashes)."""
        a = len(off)
        kk, qq, grid, bank, rng = self.kk, self.qq, self.grid, self.bank, self.rng
        best = np.full(a, np.iinfo(np.int64).max)
        bk = np.zeros(a, dtype=kk.dtype)
        bq = np.zeros((a, 4), dtype=qq.dtype)
        bo = np.zeros((3, 4, a), dtype=np.float32)
        bslot = np.zeros(a, dtype=np.int64)
        partners = []
        todo = np.arange(a)
        s = 0
        while s < m and len(todo):
            t = len(todo)
            nb = min(m - s, max(1, _BATCH // t))  # slots drawn at once when few remain
            beads_s = np.tile(off[todo], nb)  # candidate c: slot s + c // t
            ck, cq = bank._draw(rng, t * nb)
            co = bank._oxygens(ck, cq, self.xw32[:, beads_s])
            # query point 4 * cand + atom: a cluster's oxygens together (cache-friendly)
            qi, hb = grid.query(tuple(co.transpose(0, 2, 1).reshape(3, -1)))
            keep = accepted[hb]
            qi, hb = qi[keep], hb[keep]
            hit = np.zeros(4 * t * nb, dtype=bool)
            hit[qi] = True  # clashing oxygens
            cnt = hit.reshape(t * nb, 4).sum(axis=1)
            qi >>= 2  # candidate
            cnt += self.other_clash(beads_s, ck, cq)
            partners.append((todo[qi % t], hb, s + qi // t))
            for j in range(nb):  # in slot order: the first best candidate is kept
                c = slice(j * t, (j + 1) * t)
                better = np.flatnonzero(cnt[c] < best[todo])
                w = todo[better]
                better += j * t
                best[w], bk[w], bq[w] = cnt[better], ck[better], cq[better]
                bo[:, :, w] = co[:, :, better]
                bslot[w] = s + j
            s += nb
            todo = todo[best[todo] > 0]
        return best, bk, bq, bo, bslot, partners

    def _round(self, m: int, release: bool):
        """One re-draw round of the offenders, ``m`` candidates each at most; ``release``:
        beads stuck against accepted ones release those neighbours too, so the pair is
        re-drawn together next round (the accepted set stays clash-free)."""
        offender = self.offender
        off = np.flatnonzero(offender)
        a = len(off)
        accepted = ~offender  # grid entries of other beads are ignored
        if self.retries > 1:  # the beads re-drawn last round have moved
            self.grid.update(self.moved, tuple(self.last_o.reshape(3, -1)),
                             np.tile(self.last, 4))
        best, bk, bq, bo, bslot, partners = self._candidates(off, accepted, m)
        bad = best > 0
        self.kk[off], self.qq[off] = bk, bq
        self.last_o = bo
        self.moved[:] = False
        self.moved[off] = True
        self.last = off
        # clashes among the re-drawn beads that are clash-free otherwise: cover them
        good = np.flatnonzero(~bad)
        ci, cj = _CellGrid(tuple(bo[:, :, good].reshape(3, -1)), self.box, self.r_grid,
                           ids=np.tile(good, 4)).pairs()
        bad |= _cover(ci, cj, a)
        offender[:] = False
        offender[off[bad]] = True
        if release:
            for pos, hb, sl in partners:
                offender[hb[(bslot[pos] == sl) & (best[pos] > 0)]] = True

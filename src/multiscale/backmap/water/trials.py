"""Trial moves of the contact stage (:class:`~.contacts.ContactSolver`): spins, turns, shifts.

Each molecule to move tries candidates against every molecule not moving in the round (and
``others``), the first contact-free candidate is kept, else the first with the fewest
contacts:

* spin: about its own C2 axis (:data:`~.params._SPIN_FIRST` angles; O, P and COM stay, so the
  O-O clearance and the bead's COM are untouched), against its P neighbours;
* turn: freely about its COM (2 x n_cand random orientations; the O moves <= 0.013 nm and must
  keep ``r_og`` from other beads' oxygens), against its COM neighbours;
* shift: the molecule moves by d (0.02-0.12 nm) and turns, its three cluster-mates move by
  -d/3 (the 12-atom COM stays on the bead: equal molecule masses); repeated failures get 4x
  the candidates, then all four molecules turned and moved (zero sum).

Lengths nm, float32 positions.
"""

from __future__ import annotations

import numpy as np

from .params import (
    _SCRAMBLE_AFTER,
    _SCRAMBLE_SIGMA,
    _SHIFT_AFTER,
    _SHIFT_BATCH,
    _SHIFT_RANGE,
    _SPIN_FIRST,
)
from .rotations import _qmul, _rotmat

__all__ = []


def _spun(r, phi):
    """Atoms (u, 3, 3) relative to their COM spun by angles phi (u, K) about their C2 axis
    (Rodrigues): (u, K, 3, 3)."""
    a = r[:, 0] / np.linalg.norm(r[:, 0], axis=1, keepdims=True)  # COM -> O
    c, s = np.cos(phi).astype(np.float32), np.sin(phi).astype(np.float32)
    ax = np.cross(a[:, None], r)  # (u, 3, 3)
    along = a[:, None] * np.einsum("ux,uax->ua", a, r)[:, :, None]
    return (r[:, None] * c[:, :, None, None] + ax[:, None] * s[:, :, None, None]
            + along[:, None] * (1 - c)[:, :, None, None])


def _first_best(cnt):
    """Per row of cnt (u, K): the first zero, else the first of the fewest."""
    zero = cnt == 0
    first = np.argmax(zero, axis=1)
    ok = zero[np.arange(len(cnt)), first]
    return np.where(ok, first, cnt.argmin(axis=1))


class _Trials:
    """Trial moves; mixed into :class:`~.contacts.ContactSolver` (uses its state)."""

    def spin_quat(self, units, q0, phi):
        """Orientations after spins phi (u,) of molecules with orientations q0."""
        ax = self.bank._axis64[self.kk[units // 4], units % 4]
        qb = np.concatenate([np.cos(phi / 2)[:, None], np.sin(phi / 2)[:, None] * ax], 1)
        return _qmul(q0, qb)

    def reach(self, units, ek, nb, r_near2, centre):
        """Neighbour atoms (molecules nb of entries ek) in the frame of their unit's COM,
        within sqrt(r_near2) of ``centre`` (u, 3) (same frame): (entry unit, atoms (e, 3),
        O-O applies)."""
        X = (self.dvec(self.com[units[ek]], nb)[:, None] + self.rel[nb]).reshape(-1, 3)
        ea = np.repeat(ek, 3)
        oo = np.zeros((len(ek), 3), dtype=bool)
        bead = units[ek] // 4
        oo[:, 0] = (nb // 4 != bead) & ~self.unres[nb // 4] & ~self.unres[bead]
        dc = X - centre[ea]
        e = np.flatnonzero(np.einsum("ex,ex->e", dc, dc) < r_near2)
        return ea[e], X[e], oo.ravel()[e]

    def trial(self, units, sel, Y, ea, X, oo, check_oo):
        """Contacts (len(sel), K) of candidate atoms Y (len(sel), K, 3, 3) (unit frame) of
        units[sel] with the neighbour atoms (ea, X)."""
        K = Y.shape[1]
        m_ = np.full(len(units), -1, dtype=np.int64)
        m_[sel] = np.arange(len(sel))
        e = np.flatnonzero(m_[ea] >= 0)
        pos = m_[ea[e]]
        d = X[e][:, None, None] - Y[pos]  # (e, K, a, 3)
        d2 = np.einsum("ekax,ekax->eka", d, d)
        h = (d2 < self.r2).sum(axis=2)
        if check_oo:
            h += (d2[:, :, 0] < self.ro2) & oo[e][:, None]
        cnt = np.bincount((pos[:, None] * K + np.arange(K)).ravel(), weights=h.ravel(),
                          minlength=len(sel) * K).reshape(len(sel), K).astype(np.int64)
        if self.obst:
            cnt += self.other_hits(np.repeat(units[sel] // 4, K),
                                   (self.com[units[sel]][:, None, None] + Y).reshape(-1, 3, 3)
                                   ).reshape(len(sel), K)
        return cnt

    # ------------------------------------------------------------------ spins and turns
    def rotate(self, units, spin_first):
        """Dense trials of new orientations (COM fixed) for molecules ``units``: spins about
        the C2 axis where ``spin_first`` (the P list), then free turns (the COM list); the
        first contact-free candidate is kept, else the first with the fewest contacts.
        Returns (contacts, turned)."""
        u = len(units)
        best = np.full(u, np.iinfo(np.int64).max)
        bturn = np.zeros(u, dtype=bool)
        if u == 0:
            return best, bturn
        q0, t0 = self.moves.get(units, self.qq[units // 4])
        bq = q0.copy()
        todo = self._spins(units, spin_first, best, q0, bq)
        if len(todo):
            self._turns(units, todo, best, bturn, bq)
        self.moves.set(units, bq, t0)
        return best, bturn

    def _keep(self, units, best, sel, cnt, Y):
        """Rows ``sel`` whose best candidate (:func:`_first_best` of cnt (len(sel), K)) beats
        their best so far take it (relative atoms from Y (len(sel), K, 3, 3)); returns (those
        rows, their positions in sel, the pick per sel row)."""
        pick = _first_best(cnt)
        val = cnt[np.arange(len(sel)), pick]
        better = np.flatnonzero(val < best[sel])
        s = sel[better]
        best[s] = val[better]
        self.rel[units[s]] = Y[better, pick[better]]
        return s, better, pick

    def _spins(self, units, spin_first, best, q0, bq):
        """Spin trials (see :meth:`rotate`); returns the rows still in contact."""
        todo = np.arange(len(units))
        sp = np.flatnonzero(spin_first)
        if len(sp) == 0:
            return todo
        r0 = self.rel[units]  # spins start from the present orientation (q0)
        ek, nb = self.p_neighbours(units[sp])
        k = np.flatnonzero(~self.moving[nb])
        P = 0.5 * (r0[sp, 1] + r0[sp, 2])  # spins keep it
        ea, X, oo = self.reach(units[sp], ek[k], nb[k], self.r_spin2, P)
        ea = sp[ea]
        for arg in (_SPIN_FIRST[:4], _SPIN_FIRST[4:]):
            sel = todo[spin_first[todo]]
            if len(sel) == 0:
                break
            phi = np.broadcast_to(np.radians(arg), (len(sel), len(arg)))
            Y = _spun(r0[sel], phi)
            s, better, pick = self._keep(units, best, sel,
                                         self.trial(units, sel, Y, ea, X, oo, False), Y)
            bq[s] = self.spin_quat(units[s], q0[s], phi[better, pick[better]])
            todo = todo[best[todo] > 0]
        return todo

    def _turns(self, units, todo, best, bturn, bq):
        """Free-turn trials of rows ``todo`` (see :meth:`rotate`)."""
        u, n_cand = len(units), self.n_cand
        ek, nb = self.c_neighbours(units[todo])
        k = np.flatnonzero(~self.moving[nb])
        ea, X, oo = self.reach(units[todo], ek[k], nb[k], self.r_turn2,
                               np.zeros((len(todo), 3), dtype=np.float32))
        ea = todo[ea]
        v = self.bank._v32[self.kk[units[todo] // 4], units[todo] % 4]
        vmap = np.full(u, -1, dtype=np.int64)
        vmap[todo] = np.arange(len(todo))
        for K in (n_cand // 2, n_cand - n_cand // 2):
            sel = todo
            if len(sel) == 0 or K == 0:
                continue
            cq = self.rng.standard_normal((len(sel), K, 4))
            R = _rotmat(cq.reshape(-1, 4), np.float32).reshape(len(sel), K, 3, 3)
            Y = np.matmul(v[vmap[sel]][:, None], R.transpose(0, 1, 3, 2))
            s, better, pick = self._keep(units, best, sel,
                                         self.trial(units, sel, Y, ea, X, oo, True), Y)
            bturn[s] = True
            bq[s] = cq[better, pick[better]]
            todo = todo[best[todo] > 0]

    # ------------------------------------------------------------------ shifts
    def _shift_draw(self, cu, q0, c0, rl, v, scr):
        """Candidates for units ``cu`` (one row each): orientations (c, 4, 4), translations
        (c, 4, 3) float64, COMs (c, 4, 3) and relative atoms (c, 4, 3, 3) float32."""
        rng = self.rng
        c = len(cu)
        sc = scr[cu]
        cq = q0[cu].copy()
        cq[:, 0] = rng.standard_normal((c, 4))
        d = rng.standard_normal((c, 3))
        d *= (rng.uniform(*_SHIFT_RANGE, size=c) / np.linalg.norm(d, axis=1))[:, None]
        tt = np.zeros((c, 4, 3))
        tt[:, 0] = d
        tt[:, 1:] = -d[:, None] / 3
        ns = int(sc.sum())
        if ns:  # scramble: all four turned and moved (zero sum)
            cq[sc, 1:] = rng.standard_normal((ns, 3, 4))
            g = rng.standard_normal((ns, 4, 3)) * _SCRAMBLE_SIGMA
            g -= g.mean(axis=1, keepdims=True)
            big = np.linalg.norm(g, axis=2).max(axis=1) / _SHIFT_RANGE[1]
            g /= np.maximum(big, 1)[:, None, None]  # none moves further than a shift
            tt[sc] = g
        pos = c0[cu] + tt.astype(np.float32)
        ra = rl[cu].copy()
        turned = np.zeros((c, 4), dtype=bool)
        turned[:, 0] = True
        turned[sc] = True
        tc, tw = np.nonzero(turned)
        ra[tc, tw] = np.matmul(v[cu[tc], tw], _rotmat(cq[tc, tw], np.float32).transpose(0, 2, 1))
        return cq, tt, pos, ra

    def _shift_score(self, units, cu, bead, pos, ra):
        """Contacts per candidate (c,) of moved molecules (COMs pos (c, 4, 3), relative
        atoms ra), and the contacts (candidate, molecule) with molecules not moving."""
        c = len(cu)
        ii, jj = np.triu_indices(4, 1)
        # the four against each other (O-O too: the cluster stays open)
        dc = self.box.min_image32(pos[:, jj] - pos[:, ii])  # the bead may straddle the box
        dd = dc[:, :, None, None] + ra[:, jj, None] - ra[:, ii, :, None]  # (c, 6, a, b, 3)
        dd = np.einsum("...x,...x->...", dd, dd)
        cnt = (dd < self.r2).reshape(c, -1).sum(1) + (dd[:, :, 0, 0] < self.ro2).sum(1)
        # against everything else that is not moving
        if self.box.ortho:
            Lf = self.box.lengths.astype(np.float32)
            pos -= Lf * np.floor(pos / Lf)
        else:
            self.box.brick(pos.reshape(-1, 3).T)
        qk, nb = self.c_neighbours(units[cu].ravel(), pos.reshape(-1, 3))
        k = np.flatnonzero(~self.moving[nb])
        qk, nb = qk[k], nb[k]
        ci, wi = qk // 4, qk % 4
        dv = (self.dvec(pos.reshape(-1, 3)[qk], nb)[:, None, None] + self.rel[nb][:, None]
              - ra[ci, wi][:, :, None])  # (e, a, b, 3)
        h = (np.einsum("eabx,eabx->eab", dv, dv) < self.r2).sum(axis=(1, 2))
        oo = (nb // 4 != bead[cu[ci]]) & ~self.unres[nb // 4] & ~self.unres[bead[cu[ci]]]
        h += oo & (np.einsum("ex,ex->e", dv[:, 0, 0], dv[:, 0, 0]) < self.ro2)
        cnt = cnt + np.bincount(ci, weights=h, minlength=c).astype(np.int64)
        cnt += self.other_hits(bead[cu], (pos[:, :, None] + ra).reshape(c, 12, 3))
        hit = h > 0
        return cnt, ci[hit], nb[hit]

    def shift(self, units):
        """Trials of moving the molecules of units (u, 4) (one bead each): the first by d and
        the others by -d/3, the first one also turned; after _SCRAMBLE_AFTER failed rounds all
        four by random zero-sum vectors, all turned.  One candidate at a time (several at once
        when few are left), against the COM cell list.  Returns (contacts, contact partners of
        the stuck units)."""
        u = len(units)
        best = np.full(u, np.iinfo(np.int64).max)
        if u == 0:
            return best, np.zeros(0, dtype=np.int64)
        mol = units.ravel()
        q0, t0 = self.moves.get(mol, self.qq[mol // 4])
        bq, bt = q0.reshape(u, 4, 4).copy(), np.zeros((u, 4, 3))
        kslot = np.zeros(u, dtype=np.int64)
        bead = units[:, 0] // 4
        c0 = self.com[mol].reshape(u, 4, 3)
        rl = self.rel[mol].reshape(u, 4, 3, 3)
        v = self.bank._v32[self.kk[mol // 4], mol % 4].reshape(u, 4, 3, 3)
        fails = self.fails[units[:, 0]]
        scr = fails >= _SCRAMBLE_AFTER
        m = self.n_cand * (4 if np.any(fails > _SHIFT_AFTER) else 1)
        stuck = []
        todo = np.arange(u)
        s = 0
        while s < m and len(todo):
            tn = len(todo)
            nb_ = min(m - s, max(1, _SHIFT_BATCH // tn))
            cu = np.tile(todo, nb_)  # candidate c: slot s + c // tn
            cq, tt, pos, ra = self._shift_draw(cu, q0.reshape(u, 4, 4), c0, rl, v, scr)
            cnt, hc, hnb = self._shift_score(units, cu, bead, pos, ra)
            stuck.append((cu[hc], hnb, s + hc // tn))
            # per unit, in slot order: the first contact-free candidate, else the first of
            # the fewest
            cm = cnt.reshape(nb_, tn).T
            pick = _first_best(cm)
            val = cm[np.arange(tn), pick]
            better = np.flatnonzero(val < best[todo])
            wu, cb = todo[better], pick[better] * tn + better
            best[wu], bq[wu], bt[wu], kslot[wu] = val[better], cq[cb], tt[cb], s + pick[better]
            self.com[units[wu].ravel()] = pos[cb].reshape(-1, 3)
            self.rel[units[wu].ravel()] = ra[cb].reshape(-1, 3, 3)
            s += nb_
            todo = todo[best[todo] > 0]
        self.moves.set(mol, bq.reshape(-1, 4), (t0.reshape(u, 4, 3) + bt).reshape(-1, 3))
        part = [nb[(best[pu] > 0) & (kslot[pu] == sl)] for pu, nb, sl in stuck]
        return best, np.concatenate(part) if part else np.zeros(0, dtype=np.int64)

"""Contact stage of water placement: no two atoms of different water molecules too close.

After the bead stage (:mod:`.beads`) every bead holds a rigid cluster whose oxygens keep
``min_dist`` from other beads' oxygens, but hydrogens may still touch foreign atoms.
:class:`ContactSolver` finds every atom pair of different molecules closer than ``r_at`` and
moves one molecule per contact, rigidly, keeping each bead's centre of mass:

* every atom of a water lies within ``rho_p`` (0.076 nm) of the midpoint P of its two H and
  within ``rho`` (0.092 nm) of its centre of mass (COM), so one cell list of the P, radius
  ``r_p = r_at + rho + rho_p``, gives every molecule pair that can touch (checked atom by atom,
  dense numpy) and every molecule that can touch one turned about, or moved to, a given COM;
* the molecule moved is the one whose H touches the other's O, else the one with more
  contacts (:func:`_cover_atoms`); it is spun about its C2 axis (O, P and COM fixed), else
  turned about its COM, later shifted (it moves by d, its three cluster-mates by -d/3), at
  last all four of its bead are turned and moved (:mod:`.trials`);
* the P of turned and shifted molecules (stale in the cell list) sit in a small second list;
  turned and shifted oxygens keep ``r_og`` from the oxygens of other beads (beads in
  ``unres`` aside, as in the bead stage) and every moved atom its clearance from ``others``.

Molecule ids are ``4 * bead + water`` in sorted bead order, atom ids ``3 * molecule + atom``.
Lengths nm, float32 positions (the cut-offs widened by their round-off).
"""

from __future__ import annotations

import numpy as np

from .arrays import _cat, _pmap
from .cells import _CellGrid
from .params import _CHUNK, _SHIFT_AFTER, _SHIFT_RANGE, _TURN_AFTER
from .trials import _Trials

__all__ = ["ContactSolver"]


def _cover_atoms(ai: np.ndarray, aj: np.ndarray) -> np.ndarray:
    """Molecules (sorted ids) to move so that every contact ``ai``-``aj`` (atom ids
    ``3 * molecule + atom``, atom 0 = O) loses one end, decided per pair of molecules: the
    molecule whose hydrogen touches the other's oxygen (spinning it about its C2 axis moves
    the H, not the O), else the one with more contacting partners (ties: higher id)."""
    if len(ai) == 0:
        return np.zeros(0, dtype=np.int64)
    mi, mj = ai // 3, aj // 3
    u, inv = np.unique(np.concatenate([mi, mj]), return_inverse=True)
    i, j = inv[:len(mi)], inv[len(mi):]
    swap = i > j
    i, j = np.where(swap, j, i), np.where(swap, i, j)  # i < j
    oi, oj = ai % 3 == 0, aj % 3 == 0
    oi, oj = np.where(swap, oj, oi), np.where(swap, oi, oj)
    key = i * len(u) + j
    pk, pinv = np.unique(key, return_inverse=True)
    i, j = pk // len(u), pk % len(u)
    pref_j = np.bincount(pinv, weights=oi & ~oj, minlength=len(pk)) > 0  # H of j on O of i
    pref_i = np.bincount(pinv, weights=oj & ~oi, minlength=len(pk)) > 0
    deg = np.bincount(i, minlength=len(u)) + np.bincount(j, minlength=len(u))
    pick_i = (pref_i & ~pref_j) | ((pref_i == pref_j) &
                                   ((deg[i] > deg[j]) | ((deg[i] == deg[j]) & (i > j))))
    return np.unique(u[np.where(pick_i, i, j)])


class _Moves:
    """Molecules moved by the contact stage: sorted ids ``4 * bead + water`` (sorted bead
    order), each with its own orientation (quaternion; it replaces the cluster's rotation for
    that molecule) and the translation of its centre of mass (nm, float64).  Molecules not
    listed keep their cluster's rotation and place."""

    def __init__(self):
        self.ids = np.zeros(0, dtype=np.int64)
        self.q = np.zeros((0, 4))
        self.t = np.zeros((0, 3))

    def _find(self, mol):
        pos = np.minimum(np.searchsorted(self.ids, mol), max(len(self.ids) - 1, 0))
        hit = self.ids[pos] == mol if len(self.ids) else np.zeros(len(mol), dtype=bool)
        return pos, hit

    def get(self, mol, qdef):
        """Orientations (default ``qdef``) and translations of molecules ``mol``."""
        q = np.array(qdef, dtype=np.float64)
        t = np.zeros((len(mol), 3))
        pos, hit = self._find(mol)
        q[hit], t[hit] = self.q[pos[hit]], self.t[pos[hit]]
        return q, t

    def set(self, mol, q, t):
        """Record orientations ``q`` and translations ``t`` of (distinct) molecules ``mol``."""
        pos, hit = self._find(mol)
        self.q[pos[hit]], self.t[pos[hit]] = q[hit], t[hit]
        new = ~hit
        if new.any():
            ids = np.concatenate([self.ids, mol[new]])
            o = np.argsort(ids, kind="stable")
            self.ids = ids[o]
            self.q = np.concatenate([self.q, q[new]])[o]
            self.t = np.concatenate([self.t, t[new]])[o]


def _shift_units(mols):
    """Units (u, 4) for the beads of molecules mols: the first of them in each bead first (it
    is moved), then its mates."""
    sb, first = np.unique(mols // 4, return_index=True)
    shifter = mols[first]
    all4 = 4 * sb[:, None] + np.arange(4)
    return np.concatenate([shifter[:, None], all4[all4 != shifter[:, None]].reshape(-1, 3)],
                          axis=1)


class ContactSolver(_Trials):
    """State and steps of the contact stage (module doc).

    Parameters: ``bank`` (:class:`~.bank.WaterBank`), ``rng``, cluster indices ``kk`` (n,)
    and quaternions ``qq`` (n, 4) of the sorted beads at ``centres`` (3, n) float32 (wrapped),
    ``box`` (:class:`~.pbc.Box`), ``r_at`` (atom-atom), ``r_og`` (O-O of different beads),
    ``unres`` (n,) bool (beads the bead stage left unresolved), ``obst``
    (:class:`~.obstacles.Obstacles` or None) and ``near`` (n,) bool (beads that may touch
    them), ``n_cand`` (free turns / shifts per molecule and round).  :meth:`run` does the
    rounds; the molecules' state is ``com`` (4n, 3) and ``rel`` (4n, 3, 3) float32 (atoms
    relative to the COM), ``moves`` (:class:`_Moves`) what changed."""

    def __init__(self, bank, rng, kk, qq, centres, box, r_at, r_og, unres, obst, near, n_cand):
        self.bank, self.rng, self.kk, self.qq, self.box = bank, rng, kk, qq, box
        self.unres, self.obst, self.near, self.n_cand = unres, obst, near, n_cand
        self.nm = nm = 4 * len(kk)
        slop = 2e-6 + 1e-6 * box.size  # float32 round-off of the positions
        self.r2 = np.float32((r_at + slop) ** 2)
        self.ro2 = np.float32(r_og * r_og)
        rho, rho_p = bank._rho, bank._rho_p
        self.r_c = r_at + 2 * rho + 2 * slop
        # one cell list of the P serves the pairs (P within r_at + 2 rho_p) and the molecules
        # that can touch one turned about, or moved to, a centre of mass (within r_p of it)
        self.r_p = r_at + rho + rho_p + 2 * slop
        self.r_turn2 = np.float32((r_at + rho + 2 * slop) ** 2)
        self.r_spin2 = np.float32((r_at + rho_p + 2 * slop) ** 2)
        self.com, self.rel = bank._molecules32(kk, qq, centres, box)
        idt = np.int32 if nm < 2**31 - 1 else np.int64
        self.pgrid = _CellGrid(tuple(self._p_all()), box, self.r_p,
                               ids=np.arange(nm, dtype=idt), wrapped=True)
        self.pi, self.pj = self.pgrid.pairs()  # every molecule pair whose atoms may touch
        self.pgrid.real = None
        self.moves = _Moves()
        self.moved = np.zeros(nm, dtype=bool)
        self.omoved = np.zeros(nm, dtype=bool)  # turned or shifted: O and P moved (pgrid stale)
        self.moving = np.zeros(nm, dtype=bool)
        self.fails = np.zeros(nm, dtype=np.int8)
        self.umap = np.full(nm, -1, dtype=np.int64)
        self.ogrid = None  # P of the turned and shifted molecules
        self.n_turned = self.n_shifted = self.n_spun = self.rounds = 0
        self.per_round = []  # molecules marked per round

    # ------------------------------------------------------------------ geometry
    def _wrap32(self, p):
        """Positions (m, 3) float32 wrapped into the box (orthorhombic) or brick, in place."""
        if self.box.ortho:
            Lf = self.box.lengths.astype(np.float32)
            p -= Lf * np.floor(p / Lf)
            p[p >= Lf] = 0
        else:
            self.box.brick(p.T)
        return p

    def _p_all(self):
        """H-H midpoints of all molecules (3, 4n) float32, wrapped."""
        com, rel = self.com, self.rel
        pall = np.empty((3, self.nm), dtype=np.float32)
        Lf = self.box.lengths.astype(np.float32)
        for d in range(3):
            x = pall[d]
            np.add(rel[:, 1, d], rel[:, 2, d], out=x)
            x *= np.float32(0.5)
            x += com[:, d]
            if self.box.ortho:
                x[x < 0] += Lf[d]  # P is within rho of the wrapped COM
                x[x >= Lf[d]] -= Lf[d]
        if not self.box.ortho:
            self.box.brick(pall)
        return pall

    def p_of(self, mols):
        """H-H midpoints (m, 3), wrapped into the box."""
        p = self.com[mols] + 0.5 * (self.rel[mols, 1] + self.rel[mols, 2])
        return self._wrap32(p)

    def atoms_of(self, mols):
        return self.com[mols][:, None] + self.rel[mols]

    def dvec(self, p, nb):
        """Minimum-image vectors (float32) from positions p (e, 3) to COMs of nb."""
        return self.box.min_image32(self.com[nb] - p)

    def pair_hits(self, i, j):
        """Atom pairs (ids) closer than r_at among molecule pairs (i, j), now."""
        com, rel, r2 = self.com, self.rel, self.r2

        def one(s):
            a, b = i[s:s + _CHUNK], j[s:s + _CHUNK]
            d = self.dvec(com[a], b)
            ra, rb = rel[a], rel[b]
            s2 = None
            for k in range(3):  # per coordinate: no 4-d temporaries
                x = (rb[:, None, :, k] + d[:, k, None, None]) - ra[:, :, None, k]
                x *= x
                s2 = x if s2 is None else s2 + x
            p, x, y = np.nonzero(s2 < r2)
            return 3 * a[p] + x, 3 * b[p] + y

        res = _pmap(one, range(0, len(i), _CHUNK))
        return (_cat([v[0] for v in res]).astype(np.int64),
                _cat([v[1] for v in res]).astype(np.int64))

    def oo_close(self, i, j):
        """Indices of molecule pairs (i, j) of different beads, neither in unres, whose
        oxygens are closer than r_og."""
        bi, bj = i // 4, j // 4
        k = np.flatnonzero((bi != bj) & ~self.unres[bi] & ~self.unres[bj])
        d = self.dvec(self.com[i[k]] + self.rel[i[k], 0], j[k]) + self.rel[j[k], 0]
        return k[np.einsum("pk,pk->p", d, d) < self.ro2]

    def other_hits(self, beads, atoms):
        """Atoms closer than their clearance to an 'others' atom, per row of atoms
        (c, na, 3) of beads ``beads``."""
        cnt = np.zeros(len(beads), dtype=np.int64)
        rows = np.flatnonzero(self.near[beads]) if self.obst else []
        if len(rows) == 0:
            return cnt
        cnt[rows] = self.obst.count(atoms[rows], margin=1e-5)
        return cnt

    # ------------------------------------------------------------------ neighbours
    def _ogrid_hits(self, mols, p, ks, nbs):
        if self.ogrid is not None and len(mols):
            qi, h = self.ogrid.query(tuple(p.T))
            k = np.flatnonzero(h != mols[qi])
            ks.append(qi[k])
            nbs.append(h[k])

    def p_neighbours(self, mols):
        """(index into mols, molecule): every other molecule whose P is within r_p of the P
        of mols (none of them turned or shifted): the P list, less the molecules whose P
        moved, plus those (their grid)."""
        ks, nbs = [], []
        pi, pj, umap, omoved = self.pi, self.pj, self.umap, self.omoved
        if len(mols) > len(pi) // 256:  # many: a pass over the P list
            umap[mols] = np.arange(len(mols))
            for a, b in ((pi, pj), (pj, pi)):
                e = np.flatnonzero(umap[a] >= 0)
                b = b[e]
                k = np.flatnonzero(~omoved[b])
                ks.append(umap[a[e[k]]])
                nbs.append(b[k].astype(np.int64))
            umap[mols] = -1
        else:  # few: queries
            qi, h = self.pgrid.query(tuple(self.p_of(mols).T))
            h = h.astype(np.int64)
            k = np.flatnonzero(~omoved[h] & (h != mols[qi]))
            ks.append(qi[k])
            nbs.append(h[k])
        if self.ogrid is not None:
            self._ogrid_hits(mols, self.p_of(mols), ks, nbs)
        return _cat(ks), _cat(nbs)

    def c_neighbours(self, mols, pos=None):
        """(index into mols, molecule): every other molecule that can touch a molecule of
        mols turned about, or moved to, the centre of mass ``pos`` (default: the present
        COMs of mols): the P within r_p of it."""
        mols = np.asarray(mols, dtype=np.int64)
        p = self.com[mols] if pos is None else pos
        qi, h = self.pgrid.query(tuple(p.T))
        h = h.astype(np.int64)
        k = np.flatnonzero(~self.omoved[h] & (h != mols[qi]))
        ks, nbs = [qi[k]], [h[k]]
        self._ogrid_hits(mols, p, ks, nbs)
        return _cat(ks), _cat(nbs)

    def _refresh_ogrid(self):
        om = np.flatnonzero(self.omoved)
        self.ogrid = _CellGrid(tuple(self.p_of(om).T), self.box, self.r_p, ids=om)

    def independent(self, mols, uid, mreach, nu):
        """Units (ids uid of molecules mols, nu units) that cannot touch another one of them
        when each molecule moves by up to ``mreach``: COMs further apart than r_c + both
        reaches; of two that can, the later waits.  Returns a bool (nu,)."""
        ok = np.ones(nu, dtype=bool)
        if nu < 2:
            return ok
        p = self.box.wrap(self.com[mols].astype(np.float64))
        r = self.r_c + 2 * float(mreach.max())
        pp = self.box.tree(p, r).query_pairs(r)
        a, b = uid[pp[:, 0]], uid[pp[:, 1]]
        dd = self.box.min_image32(p[pp[:, 1]] - p[pp[:, 0]])
        k = (a != b) & (np.linalg.norm(dd, axis=1) < self.r_c + mreach[pp[:, 0]]
                        + mreach[pp[:, 1]])
        ok[np.maximum(a[k], b[k])] = False
        return ok

    # ------------------------------------------------------------------ rounds
    def run(self, rounds: int):
        """The contact stage: returns (moves, counters, atom pairs (i, j) still closer than
        r_at, molecules still too close to ``others``, beads whose oxygens ended closer
        than r_og to another bead's)."""
        forced = np.zeros(0, dtype=np.int64)
        sus = np.flatnonzero(self.unres)
        if self.obst and len(sus):  # 'others': molecules of the unresolved beads
            sm = (4 * sus[:, None] + np.arange(4)).ravel()
            forced = sm[self.other_hits(sm // 4, self.atoms_of(sm)) > 0]
        forced0 = forced
        # the contacts (molecules of one bead are at least min_intra_atoms > r_at apart)
        k = np.flatnonzero(self.pi // 4 != self.pj // 4)
        ai, aj = self.pair_hits(self.pi[k].astype(np.int64), self.pj[k].astype(np.int64))
        del k
        n_initial = len(ai)
        fails = self.fails
        fails[forced] = _TURN_AFTER  # spins do not move the O
        # a molecule whose O is in a contact cannot clear it by a spin, nor by a turn (the O
        # moves 0.013 nm at most) if the other atom is an O too
        oi, oj = ai % 3 == 0, aj % 3 == 0
        for mo, lim in ((np.concatenate([ai[oi], aj[oj]]) // 3, _TURN_AFTER),
                        (np.concatenate([ai[oi & oj], aj[oi & oj]]) // 3, _SHIFT_AFTER)):
            fails[mo] = np.maximum(fails[mo], lim)
        edges = (ai, aj)
        while self.rounds < rounds:
            mark = np.union1d(_cover_atoms(*edges), forced)
            if len(mark) == 0:
                break
            self.rounds += 1
            edges, forced = self._round(mark, forced)
        return self._final(ai, aj, forced0, n_initial)

    def _wait(self, rot, units, forced):
        """After the first round few are left, mostly stuck next to each other: move only
        units that cannot touch another moving one, the others wait a round."""
        mols = np.concatenate([rot, units.ravel()])
        uid = np.concatenate([np.arange(len(rot)),
                              len(rot) + np.repeat(np.arange(len(units)), 4)])
        mr = np.concatenate([np.zeros(len(rot)), np.full(units.size, _SHIFT_RANGE[1])])
        ok = self.independent(mols, uid, mr, len(rot) + len(units))
        forced += [rot[~ok[:len(rot)]], units[~ok[len(rot):], 0]]
        return rot[ok[:len(rot)]], units[ok[len(rot):]]

    def _round(self, mark, forced):
        """One round: the marked molecules are spun or turned, those failing (and those that
        failed often) shifted.  Returns the contacts to cover next and the molecules forced
        to move next round."""
        fails = self.fails
        units = _shift_units(mark[fails[mark] >= _SHIFT_AFTER])
        rot = mark[~np.isin(mark // 4, units[:, 0] // 4)]
        forced = []
        if self.rounds > 1:
            rot, units = self._wait(rot, units, forced)
        # phase 1: spins and turns (centres of mass stay)
        self.moving[rot] = True
        rb, rturn = self.rotate(rot, fails[rot] < _TURN_AFTER)
        self.moving[rot] = False
        self.moved[rot] = True
        tu = rot[rturn]
        self.omoved[tu] = True
        fails[tu] = np.maximum(fails[tu], _TURN_AFTER)  # their P list is out of date
        if len(tu):  # (their P moved)
            self._refresh_ogrid()
        bad_r = rb > 0
        self.n_spun += int((~rturn).sum())
        self.n_turned += int(rturn.sum())
        empty = np.zeros(0, dtype=np.int64)
        edges = (empty, empty)
        if self.rounds == 1:
            edges = self._moved_together(rot[~bad_r], forced)
        # the failed ones are shifted now; shifts that may touch each other wait
        fr = rot[bad_r]
        fails[fr] = _SHIFT_AFTER
        more = _shift_units(fr)
        more = more[~np.isin(more[:, 0] // 4, units[:, 0] // 4)]
        allu = np.concatenate([units, more])
        ok = self.independent(allu.ravel(), np.repeat(np.arange(len(allu)), 4),
                              np.full(allu.size, _SHIFT_RANGE[1]), len(allu))
        forced.append(allu[~ok, 0])
        units = allu[ok]
        # phase 2: shifts (one bead each)
        self.moving[units.ravel()] = True
        sbst, sstuck = self.shift(units)
        self.moving[units.ravel()] = False
        if len(units):
            um = units.ravel()
            self.moved[um] = self.omoved[um] = True
            fails[um] = np.maximum(fails[um], _TURN_AFTER)
            self._refresh_ogrid()
        bad_s = sbst > 0
        fails[units[bad_s, 0]] += 1
        self.n_turned += len(units)
        self.n_shifted += len(units)
        # stuck shifts are tried again (more candidates, then scrambled), and the neighbours
        # they are stuck against are released
        forced += [units[bad_s, 0], sstuck]
        self.per_round.append(len(mark))
        return edges, np.unique(_cat(forced))

    def _moved_together(self, ok_rot, forced):
        """Round one: contacts among the molecules moved at once that are contact-free
        otherwise (spun ones: the P list; turned ones: their COM neighbours, and whose
        oxygens moved closer than r_og to another's are turned again: ``forced``)."""
        pi, pj, omoved = self.pi, self.pj, self.omoved
        good = np.zeros(self.nm, dtype=bool)
        good[ok_rot] = True
        k = np.flatnonzero(good[pi] & good[pj] & ~omoved[pi] & ~omoved[pj])
        ei, ej = [pi[k].astype(np.int64)], [pj[k].astype(np.int64)]
        gt = np.flatnonzero(good & omoved)
        if len(gt):
            ek, nb = self.c_neighbours(gt)
            k = np.flatnonzero(good[nb] & (~omoved[nb] | (nb > gt[ek])))
            ti, tj = gt[ek[k]], nb[k]
            ei.append(ti)
            ej.append(tj)
            k = self.oo_close(ti, tj)
            forced.append(np.where(omoved[tj[k]] & (tj[k] > ti[k]), tj[k], ti[k]))
        return self.pair_hits(_cat(ei), _cat(ej))

    def _final(self, ai, aj, forced0, n_initial):
        """Final check, complete: the first search's contacts between molecules that did not
        move; the P list of the moved ones whose P did not move (spun); for the turned and
        shifted ones their COM neighbours, found again."""
        moved, omoved, pi, pj = self.moved, self.omoved, self.pi, self.pj
        keep = ~(moved[ai // 3] | moved[aj // 3])
        k = np.flatnonzero((moved[pi] | moved[pj]) & ~omoved[pi] & ~omoved[pj])
        li, lj = self.pair_hits(pi[k].astype(np.int64), pj[k].astype(np.int64))
        left_i, left_j = [ai[keep], li], [aj[keep], lj]
        om = np.flatnonzero(omoved)
        ek, nb = self.c_neighbours(om)
        k = np.flatnonzero(~omoved[nb] | (nb > om[ek]))
        ti, tj = om[ek[k]], nb[k]
        li, lj = self.pair_hits(ti, tj)
        left_i.append(li)
        left_j.append(lj)
        k = self.oo_close(ti, tj)  # oxygens that moved closer than r_og to another bead's
        oo_bad = np.unique(np.concatenate([ti[k] // 4, tj[k] // 4]))
        mv = np.flatnonzero(moved)
        oth = forced0[~moved[forced0]]
        if len(mv):
            oth = np.concatenate([oth, mv[self.other_hits(mv // 4, self.atoms_of(mv)) > 0]])
        stats = dict(n_contacts_initial=int(n_initial), contact_rounds=self.rounds,
                     moved_per_round=self.per_round,
                     n_molecules_moved=len(mv), n_molecules_spun=int(self.n_spun),
                     n_molecules_turned=int(self.n_turned), n_beads_shifted=int(self.n_shifted))
        return self.moves, stats, _cat(left_i), _cat(left_j), np.unique(oth), oo_bad


def _contact_stats(cst: dict, pairs: np.ndarray, dist: np.ndarray, oth: np.ndarray,
                   r_at: float = 0.0) -> dict:
    """last_stats entries of the contact stage (see :meth:`~.bank.WaterBank.place`)."""
    close = dist < r_at
    out = dict(n_contacts_initial=0, contact_rounds=0, moved_per_round=[],
               n_molecules_moved=0, n_molecules_spun=0, n_molecules_turned=0,
               n_beads_shifted=0)
    out.update(cst)
    out.update(n_contacts=int(close.sum()), contacts=pairs[close],
               contact_dist=dist[close],
               min_contact=float(dist[close].min()) if close.any() else None,
               n_others_close=len(oth), others_close=oth)
    return out

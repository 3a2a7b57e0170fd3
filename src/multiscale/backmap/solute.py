"""The candidate pools of one solute block (:class:`Solute`) and environment-aware selection."""

from __future__ import annotations

import numpy as np

from .moltype_model import MoltypeModel

__all__ = ["Solute", "default_candidates", "environment_select"]


class Solute:
    """The molecules of one solute block in one frame, with a pool of candidate conformations.

    Every molecule gets ``candidates`` draws in one batched call; candidates with wrong stereo
    or an intramolecular clash are ranked last.  A molecule that has to be resampled takes its
    next candidate; when its pool is used up, a fresh pool is drawn (new derived seed).
    Candidates are ranked as superposed (before the exact projection, which moves atoms by
    ~0.005 nm); the projection (:meth:`MoltypeModel.relax`) runs only for candidates that
    become a molecule's conformation.
    """

    def __init__(self, bi: int, mm: MoltypeModel, beads: np.ndarray, x, env=None):
        self.bi, self.mm, self.beads, self.x, self.env = bi, mm, beads, x, env
        self.pool = self.rank = self.ptr = self.relaxed = None
        self.K = 1  # candidates drawn up front per molecule

    def _generate(self, idx, seed, dev, temperature, K, cutoff):
        import torch

        g = torch.Generator(device=dev).manual_seed(seed)
        env = self.env[idx] if self.env is not None else None
        pool = self.mm.generate(self.beads[idx], g, dev, temperature, env, repeats=K, relax=False).cpu().numpy()
        pool = pool.reshape(K, len(idx), self.mm.n_atoms, 3)
        flat = pool.reshape(-1, self.mm.n_atoms, 3)
        wc, wb = self.mm.stereo.wrong(flat)
        intra = self.mm.intra_clash(flat, cutoff)
        ok = ~(wc.any(1) | wb.any(1) | intra)
        ok = ok.reshape(K, len(idx))
        rank = np.argsort(~ok, axis=0, kind="stable")
        n = len(idx)  # first-draw counts: candidate 0 of every molecule
        return pool, rank, (int(wc[:n].sum()), int(wb[:n].sum()), int(intra[:n].sum())), ok

    def _take(self, idx, cand):
        """x[idx] <- pool candidate ``cand`` (per molecule), relaxing it first if needed."""
        need = ~self.relaxed[cand, idx]
        if need.any():
            i, c = idx[need], cand[need]
            self.pool[c, i] = self.mm.relax(self.pool[c, i], self.beads[i])
            self.relaxed[c, i] = True
        self.x[idx] = self.pool[cand, idx]

    def draw(self, idx, seed, dev, temperature, K, cutoff):
        """Initial draw for all molecules; returns first-draw counts (stereo, cis/trans, intra) and
        the number of molecules that did not keep their first draw."""
        pool, rank, counts, self._ok = self._generate(idx, seed, dev, temperature, K, cutoff)
        self.pool, self.rank = pool, rank
        self.relaxed = np.zeros(pool.shape[:2], bool)
        self.ptr = np.zeros(len(idx), int)
        self.x = np.empty(pool.shape[1:])
        self._take(np.arange(len(idx)), rank[0])
        return counts + (int((rank[0] != 0).sum()),)

    def choose(self, idx, cand):
        """Make pool candidate ``cand`` (per molecule in ``idx``) the current conformation."""
        pos = np.argmax(self.rank[:, idx] == cand[None], axis=0)
        r0 = self.rank[0, idx].copy()
        self.rank[0, idx] = cand
        self.rank[pos, idx] = r0
        self.ptr[idx] = 0
        self._take(idx, cand)

    def right(self, x, cutoff):
        """(B,) bool: conformations x (B, n, 3) with right stereo and no intramolecular clash
        closer than ``cutoff`` nm."""
        wc, wb = self.mm.stereo.wrong(x)
        return ~(wc.any(1) | wb.any(1) | self.mm.intra_clash(x, cutoff))

    def spinnable(self, idx, cutoff):
        """The molecules of ``idx`` with correct stereo and no intramolecular clash (their
        clashes are with other molecules, which a turn about the free bead axis can remove)."""
        return idx[self.right(self.x[idx], cutoff)]

    def spin(self, idx, seed):
        """Turn molecules ``idx`` (1 or 2 beads) about their beads by a fresh uniform draw
        (:func:`.place.spin_about_beads`): the same conformation, CG-exact, new orientation."""
        import torch

        from .place import spin_about_beads

        g = torch.Generator().manual_seed(seed)
        self.x[idx] = spin_about_beads(torch.as_tensor(self.x[idx]), torch.as_tensor(self.beads[idx]), g).numpy()

    def next(self, idx, seed, dev, temperature, K, cutoff):
        """Replace molecules ``idx`` by their next candidate (fresh pool when used up)."""
        self.ptr[idx] += 1
        old = idx[self.ptr[idx] >= self.pool.shape[0]]
        if len(old):  # few molecules: a deeper pool costs about the same as a shallow one
            Kp = self.pool.shape[0]
            deep = Kp * 4 if self.mm.best_of <= 1 else Kp  # best-of models already draw best_of per candidate
            pool, rank, _, ok = self._generate(old, seed, dev, temperature, deep, cutoff)
            self._refill(old, pool, ok, rank[:Kp])  # the best Kp of the fresh candidates, in rank order
        self._take(idx, self.rank[self.ptr[idx], idx])

    def _refill(self, idx, pool, ok, order):
        """Molecules idx get fresh candidates ``pool[order]`` (order (Kp, m): per molecule, the
        fresh candidates that fill its Kp slots, best first); the first becomes current."""
        m = np.arange(len(idx))
        self.pool[:, idx] = pool[order, m]
        self._ok[:, idx] = ok[order, m]
        self.relaxed[:, idx] = False
        self.rank[:, idx] = np.arange(self.pool.shape[0])[:, None]
        self.ptr[idx] = 0

    def next_fitting(self, idx, seed, dev, temperature, cutoff, env, r_env):
        """Best-of models: replace molecules ``idx`` by a fresh draw chosen to fit its neighbours.
        Of the model's ``best_of`` draws per molecule, the one with right stereo and no
        intramolecular clash, then with the fewest atoms within ``r_env`` nm of ``env`` (a
        :class:`~multiscale.neighbours.PeriodicTree` of the atoms that stay), then closest to the
        beads, is taken: the usual best-of choice, made clash-aware.  Scored as superposed, before
        the exact projection; a lipid's draw sits ~0.2 nm per bead off its beads, so the projection
        can still bring it into a clash, which the next round's check finds."""
        import torch

        g = torch.Generator(device=dev).manual_seed(seed)
        m, K = len(idx), max(1, self.mm.best_of)
        beads = torch.as_tensor(np.repeat(self.beads[idx][None], K, 0).reshape(K * m, -1, 3), device=dev)
        env_counts = self.env[idx] if self.env is not None else None
        x = self.mm.generate(self.beads[idx], g, dev, temperature, env_counts, relax=False, every_draw=True)
        misfit = self.mm.misfit(x, beads).cpu().numpy().reshape(K, m)
        pool = x.cpu().numpy().reshape(K, m, -1, 3)
        d, _ = env.query(pool.reshape(-1, 3), k=1, distance_upper_bound=r_env)
        hits = np.isfinite(d).reshape(K, m, -1).sum(-1)
        order, ok = self._first_right(pool, np.lexsort((misfit, hits), axis=0), cutoff)
        self._refill(idx, pool, ok, order)
        self._take(idx, self.rank[0, idx])

    def _first_right(self, pool, order, cutoff):
        """Per molecule the first ``Kp`` candidates in ``order`` (K, m) with right stereo and no
        intramolecular clash (checked only as far down the order as needed: the dense clash check
        of every draw cost 8 times that of the draws kept); where fewer are right, the best-ordered
        fill the rest.  Returns (order (Kp, m), ok (K, m): True for the candidates found right)."""
        K, m = order.shape
        Kp = self.pool.shape[0]
        sel = order[:Kp].copy()  # the fallback: the best-ordered, right or not
        need = np.full(m, Kp)
        ok = np.zeros((K, m), bool)
        for r in range(K):
            mols = np.flatnonzero(need > 0)
            if not len(mols):
                break
            cand = order[r, mols]
            right = self.right(pool[cand, mols], cutoff)
            good = mols[right]
            sel[Kp - need[good], good] = cand[right]
            ok[cand[right], good] = True
            need[good] -= 1
        return sel, ok



def default_candidates(mm: MoltypeModel, hbond_network: bool = False) -> int:
    """Conformations drawn up front per molecule: 1 for 1-2 beads (a molecule clashing with a
    neighbour is first turned about its beads, see :data:`SPIN_ROUNDS`), 2 for 3+ beads (the
    second candidate is the cheap alternative; octan-2-ol heavy-torsion JSD max 0.013 with 2
    vs 0.014 with 1); with ``hbond_network`` molecules with rotatable polar hydrogens get
    :data:`.hbond.CANDIDATES` for the environment selection when their model has a network cutoff;
    1 for models that keep the best-fitting of several draws (``best_of``: lipids), whose draws
    already cost ``best_of`` conformations each."""
    if hbond_network and mm.rotors and getattr(mm, "network_cutoff", 0.0) > 0:
        from .hbond import CANDIDATES

        return CANDIDATES
    return 1 if mm.n_beads <= 2 or mm.best_of > 1 else 2



def environment_select(sols: list, box: np.ndarray, rng: np.random.Generator, eps: float, sweeps: int = 2,
                        r_contact: float = 0.32, r_clash: float = 0.15, only=None) -> int:
    """Choose, for molecules with polar groups, among their pool candidates the one that fits
    the neighbours: weight ``exp(eps * n_contacts - 20 * n_clash)`` with n_contacts = O/N atoms
    of other molecules within ``r_contact`` nm of the candidate's hydroxyl-type O/N (potential
    hydrogen-bond partners) and n_clash = atoms of other molecules within ``r_clash`` nm.  Half
    of the molecules (at random) are updated per half-sweep against the others held fixed.
    box: (3,) lengths or (3, 3) box vectors nm.  Returns the number of molecules that changed
    conformation.  only: a predicate on the moltype model choosing the blocks that are updated
    (None: every block with polar rotors)."""
    from ..neighbours import PeriodicTree

    targets = [k for k, s in enumerate(sols) if s.mm.rotors and s.pool is not None and s.pool.shape[0] > 1
               and (only is None or only(s.mm))]
    if not targets or eps <= 0:
        return 0
    counts = [len(s.x) for s in sols]
    offs = np.concatenate([[0], np.cumsum(counts)])
    changed = 0
    for _ in range(2 * sweeps):
        upd = rng.random(offs[-1]) < 0.5
        env_x, env_polar = [], []
        for k, s in enumerate(sols):
            keep = ~upd[offs[k]:offs[k + 1]]
            env_x.append(s.x[keep].reshape(-1, 3))
            el = np.asarray(s.mm.elements)
            pol = np.isin(el, ["O", "N"])
            env_polar.append(s.x[keep][:, pol].reshape(-1, 3))
        ex, ep = np.concatenate(env_x), np.concatenate(env_polar)
        if not len(ex):
            continue
        tx = PeriodicTree(ex, box, r_clash)
        tp = PeriodicTree(ep, box, r_contact) if len(ep) else None
        for k in targets:
            s = sols[k]
            idx = np.flatnonzero(upd[offs[k]:offs[k + 1]])
            if not len(idx):
                continue
            K = s.pool.shape[0]
            donors = sorted({r["a"] for r in s.mm.rotors})
            cand = s.pool[:, idx]  # (K, m, n, 3)
            pts = cand[:, :, donors].reshape(-1, 3)
            score = np.zeros(K * len(idx) * len(donors))
            if tp is not None:
                score += eps * np.asarray([len(v) for v in tp.query_ball_point(pts, r_contact)])
            d, _ = tx.query(cand.reshape(-1, 3), k=1, distance_upper_bound=r_clash)
            clash = np.isfinite(d).reshape(K, len(idx), -1).sum(-1)
            sc = score.reshape(K, len(idx), len(donors)).sum(-1) - 20.0 * clash
            sc = np.where(s._ok[:, idx], sc, -np.inf)
            pick = np.argmax(sc + rng.gumbel(size=sc.shape), axis=0)
            cur = s.rank[s.ptr[idx], idx]
            mv = (pick != cur) & np.isfinite(sc).any(0)
            if mv.any():
                s.choose(idx[mv], pick[mv])
                changed += int(mv.sum())
    return changed


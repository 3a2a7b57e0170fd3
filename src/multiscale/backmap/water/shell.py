"""Ion first shells: re-orient the clusters of the W beads next to an ion after the bead stage.

The same pass fills the first shells of hydrated solute acceptors (:mod:`..hydration`): to it
they are shell "ions" with their measured shell distance and water count and a negative sign.

Random cluster orientations leave the first shell of a small cation under-populated (Martini
puts W beads ~0.40-0.50 nm from Na+; a random 4-water cluster on such a bead rarely has an
O at the 0.24 nm first-shell distance: Na+ CN(0.32 nm) ~2 instead of ~5.5).  For every bead
within ``r_shell + SHELL_REACH`` of a shell ion (``others_shell`` > 0), :func:`shell_pass`
tries candidates aimed at the shell: a bank cluster turned so that one of its oxygens lies
exactly at the ion's first-shell distance (the angle from the bead -> ion axis follows from
the O's distance to the cluster's centre), spun at random about that O's direction; the
current cluster is candidate 0.  A candidate is taken only if its oxygens keep ``min_dist``
from every other bead's oxygens and all its atoms their clearances from ``others`` (ions:
``others_min_dist``; tested for the best :data:`_SHELL_TOP` only), and it raises the score,
per shell ion of the bead

    min(S, n - n_other) - max(n_other + h - n, 0),
    S = sum over its 4 O of exp(-((d - r_shell) / SHELL_WIDTH)^2) * f,

f = cos(ion -> O, O -> H-H midpoint) (cations: H away), cos(O -> ion, O -> H) of the better H
(anions: one O-H at the ion), 1 without a charge (negative cosines count 0); h its O within
``r_shell + SHELL_COUNT`` of the ion, n_other those of all other beads, n the full shell
(``others_shell_n``): a shell is filled up to n, not beyond.  Beads that can reach each
other's oxygens, or share a shell ion, are never re-oriented in the same round (independent
sets, lower sorted index first), so every test is against the present neighbours and counts;
:data:`SHELL_PASSES` passes (later ones only next to shells not yet full).  The bead's centre
of mass is untouched (the cluster only turns about it); a bead the bead stage left clashing
takes any clean candidate (it is then no longer unresolved).  Triclinic cells narrower than
twice the oxygens' reach (~1.9 nm) get no shell pass.  Lengths nm.

Cost (97k beads, 2,100 ions (~0.15 M), Martini-like shells; 2-CPU VM): 14k shell beads,
~3-4 s CPU on top of ~1.2 s for the placement.
"""

from __future__ import annotations

import numpy as np

from multiscale.errors import MultiscaleError

from .cells import _CellGrid
from .rotations import _qmul

__all__ = ["ShellIons", "shell_pass"]

#: beads up to r_shell + this from a shell ion are re-oriented (nm; Martini W beads of an
#: ion's first shell sit 0.40-0.55 nm from it)
SHELL_REACH = 0.35
#: width of the distance term of the score (nm)
SHELL_WIDTH = 0.025
#: candidates aimed at the shell per bead
SHELL_CANDIDATES = 48
#: an O within r_shell + this of a shell ion counts as in its first shell (nm)
SHELL_COUNT = 0.08
#: passes over the shell beads (a later one sees the shell the earlier one left)
SHELL_PASSES = 2
#: first-shell water count aimed at where none is given
SHELL_N_DEFAULT = 6.0
#: candidates per bead given the test against 'others' (the best-scoring ones)
_SHELL_TOP = 4
#: shell ions an O may be counted in at most (the nearest ones)
_K_COUNT = 4
#: beads re-oriented at once at most (bounds the candidate arrays: ~2 kB per candidate)
_SHELL_BATCH = 1024


class ShellIons:
    """Shell ions among ``others`` (m, 3): ``shell`` (m,) preferred water-O distance (nm;
    0 or NaN: none), ``charge`` (m,) (sign sets the orientation term; None: 0) and ``count``
    (m,) the number of waters of a full first shell (None: :data:`SHELL_N_DEFAULT`)."""

    def __init__(self, others, shell, charge=None, count=None):
        oth = np.asarray(others, dtype=np.float64).reshape(-1, 3)
        sh = np.asarray(shell, dtype=np.float64).reshape(-1)
        if sh.shape != (len(oth),) or np.any(sh[np.isfinite(sh)] < 0):
            raise MultiscaleError(f"others_shell has shape {sh.shape}: pass one distance >= 0 nm "
                                  f"(0 or NaN: no shell) per 'others' atom ({len(oth)})")
        ch = np.zeros(len(oth)) if charge is None else np.asarray(charge, np.float64).reshape(-1)
        if ch.shape != (len(oth),) or not np.all(np.isfinite(ch)):
            raise MultiscaleError(f"others_charge has shape {ch.shape}: pass one finite charge (e) "
                                  f"per 'others' atom ({len(oth)})")
        n = (np.full(len(oth), SHELL_N_DEFAULT) if count is None
             else np.asarray(count, np.float64).reshape(-1))
        if n.shape != (len(oth),) or not np.all(np.isfinite(n)) or np.any(n < 0):
            raise MultiscaleError(f"others_shell_n has shape {n.shape}: pass one water count >= 0 "
                                  f"per 'others' atom ({len(oth)})")
        idx = np.flatnonzero(np.isfinite(sh) & (sh > 0))
        self.pos, self.r0, self.sign, self.n = oth[idx], sh[idx], np.sign(ch[idx]), n[idx]
        self.r_cn = self.r0 + SHELL_COUNT
        self.tree = None

    def __len__(self) -> int:
        return len(self.pos)

    def counts(self, box, o: np.ndarray) -> np.ndarray:
        """Waters per shell ion (s,) among oxygens o (p, 3) within ``r_cn`` (the nearest
        :data:`_K_COUNT` ions of each: shells of more overlapping ions do not occur)."""
        if self.tree is None:
            self.tree = box.tree(self.pos, float(self.r_cn.max()))
        q = np.asarray(o, np.float64).reshape(-1, 3)
        k = min(_K_COUNT, len(self))
        d, j = self.tree.query(q, k=k, distance_upper_bound=float(self.r_cn.max()))
        d, j = np.asarray(d).reshape(-1), np.asarray(j).reshape(-1)
        hit = j < len(self)
        d, j = d[hit], j[hit]
        return np.bincount(j[d < self.r_cn[j]], minlength=len(self)).astype(np.float64)


def _within(tree, x: np.ndarray, r: float) -> np.ndarray:
    """(p,) bool: points x (p, 3) within r of a point of ``tree`` (one vectorised query)."""
    d, _ = tree.query(x, k=1, distance_upper_bound=r)
    return np.isfinite(np.asarray(d).reshape(len(x)))


def _pairs(box, ions: ShellIons, centres: np.ndarray, radius):
    """(bead, ion, distance) of bead centres (n, 3) within ``radius`` (scalar, or (s,) per
    ion) of the shell ions, sorted by bead."""
    rad = np.broadcast_to(np.asarray(radius, np.float64), (len(ions),))
    tree = box.tree(ions.pos, float(rad.max()))
    near = np.flatnonzero(_within(tree, centres, float(rad.max())))
    nbl = tree.query_ball_point(centres[near], float(rad.max()))
    b = np.repeat(near, [len(v) for v in nbl])
    j = np.fromiter((k for v in nbl for k in v), dtype=np.int64, count=len(b))
    d = np.linalg.norm(box.min_image(ions.pos[j] - centres[b]), axis=1)
    k = np.flatnonzero(d < rad[j])
    return b[k], j[k], d[k]


def _rounds(box, centres: np.ndarray, reach: float, start: np.ndarray, si: np.ndarray) -> list:
    """Independent sets (lists of indices into centres) covering all: no two of a set closer
    than ``reach``, nor sharing a shell ion (bead i's: ``si[start[i]:start[i + 1]]``).  Each
    set is grown greedily (lowest index first among those left, then their neighbours are
    out), vectorised per step."""
    from scipy import sparse

    n = len(centres)
    if n == 0:
        return []
    pp = box.tree(centres, reach).query_pairs(reach)
    inc = sparse.csr_matrix((np.ones(len(si)), si, start), shape=(n, int(si.max()) + 1))
    share = sparse.triu(inc @ inc.T, k=1).tocoo()  # beads with a shell ion in common
    a = np.concatenate([pp[:, 0], share.row, pp[:, 1], share.col]).astype(np.int64)
    b = np.concatenate([pp[:, 1], share.col, pp[:, 0], share.row]).astype(np.int64)
    left = np.ones(n, dtype=bool)
    out = []
    while left.any():
        free = left.copy()  # may still join this set
        taken = np.zeros(n, dtype=bool)
        while free.any():
            k = free[a] & free[b] & (b < a)
            low = free.copy()
            low[a[k]] = False  # a free neighbour of lower index: wait
            taken |= low
            free &= ~low
            free[b[low[a]]] = False  # neighbours of the taken ones
        sel = np.flatnonzero(taken)
        out.append(sel)
        left[sel] = False
    return out


def _aimed(bank, rng, box, ions, cb, xb, ion, m):
    """``m`` candidates (cluster, float32 quaternion) per bead of ``cb`` (positions xb (t, 3),
    aimed at shell ion ``ion`` (t,)): one O at the ion's shell distance."""
    c = len(cb) * m
    u = np.repeat(box.min_image(ions.pos[ion] - xb), m, axis=0)
    D = np.linalg.norm(u, axis=1)
    u /= np.maximum(D, 1e-12)[:, None]
    r0 = np.repeat(ions.r0[ion], m)
    k = rng.integers(len(bank), size=c)
    o = bank._flat[k][:, 0::3]  # (c, 4, 3) oxygens, cluster frame
    r = np.linalg.norm(o, axis=2)
    cos = (D[:, None] ** 2 + r * r - r0[:, None] ** 2) / (2 * D[:, None] * r)
    wi = np.argmax(rng.random((c, 4)) + (np.abs(cos) <= 1), axis=1)  # a random O that can reach
    rows = np.arange(c)
    ct = np.clip(cos[rows, wi], -1, 1)
    a = o[rows, wi] / r[rows, wi, None]
    v = rng.standard_normal((c, 3))
    e = v - np.einsum("ij,ij->i", v, u)[:, None] * u
    e /= np.maximum(np.linalg.norm(e, axis=1), 1e-12)[:, None]
    t = ct[:, None] * u + np.sqrt(1 - ct * ct)[:, None] * e  # where that O goes
    q = np.concatenate([1 + np.einsum("ij,ij->i", a, t)[:, None], np.cross(a, t)], axis=1)
    flip = q[:, 0] < 1e-9  # a opposite to t: a half turn about an axis normal to a
    if flip.any():
        ax = np.cross(a[flip], e[flip])
        q[flip] = np.concatenate([np.zeros((int(flip.sum()), 1)),
                                  ax / np.linalg.norm(ax, axis=1)[:, None]], axis=1)
    phi = rng.uniform(0, 2 * np.pi, c)
    spin = np.concatenate([np.cos(phi / 2)[:, None], np.sin(phi / 2)[:, None] * t], axis=1)
    q = _qmul(spin, q)
    q /= np.linalg.norm(q, axis=1)[:, None]
    return k, q.astype(np.float32)


def _score(box, ions, atoms, cand_bead, start, pion, m1, n_in):
    """Shell score (c,) of candidate clusters ``atoms`` (c, 12, 3) on beads ``cand_bead``
    (``m1`` candidates per bead, the first its present cluster); bead i's shell ions are
    ``pion[start[i]:start[i + 1]]``; ``n_in`` (s,) waters in each ion's shell now.  Per
    shell ion the term is capped at the room left (``n`` less the waters of other beads),
    less the waters over ``n``."""
    cnt = start[cand_bead + 1] - start[cand_bead]
    ci = np.repeat(np.arange(len(atoms)), cnt)
    e0 = np.cumsum(cnt) - cnt  # first entry of each candidate
    off = np.arange(len(ci)) - np.repeat(e0, cnt)
    j = pion[np.repeat(start[cand_bead], cnt) + off]
    w = atoms.reshape(-1, 4, 3, 3)
    dv = box.min_image32(w[ci, :, 0] - ions.pos[j][:, None])  # float64: short vectors exact
    d = np.sqrt(np.einsum("ewx,ewx->ew", dv, dv))
    x = (d - ions.r0[j][:, None]) / SHELL_WIDTH
    g = np.zeros_like(d)
    e, k = np.nonzero(np.abs(x) < 4)  # the orientation of the waters near the shell only
    if len(e):
        u = dv[e, k] / d[e, k, None]  # ion -> O
        wa = w[ci[e], k]  # (p, 3, 3)
        hm = 0.5 * (wa[:, 1] + wa[:, 2]) - wa[:, 0]
        cat = np.einsum("px,px->p", hm, u) / np.linalg.norm(hm, axis=1)
        oh = wa[:, 1:] - wa[:, :1]
        an = (-np.einsum("phx,px->ph", oh, u) / np.linalg.norm(oh, axis=2)).max(axis=1)
        sg = ions.sign[j[e]]
        f = np.where(sg > 0, cat, np.where(sg < 0, an, 1.0))
        g[e, k] = np.exp(-x[e, k] ** 2) * np.clip(f, 0, 1)
    h = (d < ions.r_cn[j][:, None]).sum(axis=1)  # this cluster's waters in the shell
    other = n_in[j] - h[e0[ci - ci % m1] + off]  # ... and those of all other beads
    term = np.minimum(g.sum(axis=1), np.maximum(ions.n[j] - other, 0))
    term -= np.maximum(other + h - ions.n[j], 0)
    return np.bincount(ci, weights=term, minlength=len(atoms))


def _turn(st, ions, grid, cand, sel, b, n_in):
    """Candidates for the independent beads ``b`` (positions ``sel`` in the shell list): the
    best-scoring clash-free one of each replaces its cluster (grid, ``n_in`` kept up to date).
    ``cand`` = (n_cand, start, si): shell ions of shell bead i are si[start[i]:start[i + 1]].
    Returns the number of beads turned."""
    bank, rng, box, obst = st.bank, st.rng, st.box, st.obst
    n_cand, start, si = cand
    t = len(b)
    ni = start[sel + 1] - start[sel]  # aim at one of the bead's shell ions, at random
    ion = si[start[sel] + (rng.random(t) * ni).astype(np.int64)]
    xc = st.x[st.order[b]]  # the caller's centres (any image)
    ak, aq = _aimed(bank, rng, box, ions, b, xc, ion, n_cand)
    m1 = n_cand + 1  # candidate bead * m1 + slot; slot 0: the bead's present cluster
    ck = np.concatenate([st.kk[b][:, None], ak.reshape(t, n_cand)], axis=1).ravel()
    cq = np.concatenate([st.qq[b][:, None], aq.reshape(t, n_cand, 4)], axis=1).reshape(-1, 4)
    cb, cs = np.repeat(b, m1), np.repeat(sel, m1)  # the bead, its position in the shell list
    co = bank._oxygens(ck, cq, st.xw32[:, cb])
    qi, hb = grid.query(tuple(co.transpose(0, 2, 1).reshape(3, -1)))
    qi = qi >> 2
    clash = np.bincount(qi[hb != cb[qi]], minlength=len(ck))
    atoms = bank._coords(ck, cq, np.repeat(xc, m1, axis=0))
    score = _score(box, ions, atoms, cs, start, si, m1, n_in).reshape(t, m1)
    score[(clash > 0).reshape(t, m1)] = -np.inf  # O-O clash (the present one too, if so)
    score[st.offender[b], 0] = -np.inf  # the bead stage left it clashing: any clean one is better
    # the 'others' test (the costly one) for the best few of each bead that beat its present
    # cluster, in score order (stable: ties keep the lower slot)
    top = np.argsort(-score[:, 1:], axis=1, kind="stable")[:, :_SHELL_TOP] + 1
    rr = np.repeat(np.arange(t), top.shape[1])
    ok = score[rr, top.ravel()] > score[rr, 0]
    if obst is not None and ok.any():
        e = np.flatnonzero(ok)
        ok[e] = obst.count(atoms[rr[e] * m1 + top.ravel()[e]]) == 0
    ok = ok.reshape(t, -1)
    rows = np.flatnonzero(ok.any(axis=1))
    if len(rows) == 0:
        return 0
    c = rows * m1 + top[rows, np.argmax(ok[rows], axis=1)]
    nb = b[rows]
    st.kk[nb], st.qq[nb] = ck[c], cq[c]
    st.offender[nb] = False  # clash-free against every bead and 'others' now
    drop = np.zeros(st.n, dtype=bool)
    drop[nb] = True
    grid.update(drop, tuple(co[:, :, c].reshape(3, -1)), np.tile(nb, 4))
    n_in += (ions.counts(box, co[:, :, c].reshape(3, -1).T)
             - ions.counts(box, co[:, :, rows * m1].reshape(3, -1).T))
    return len(rows)


def shell_pass(st, ions: ShellIons, r_grid: float, n_cand: int = SHELL_CANDIDATES) -> dict:
    """Re-orient the clusters of the beads next to shell ions (module doc), in place on the
    bead stage ``st`` (:class:`~.beads.BeadStage`: ``kk``, ``qq``, ``offender``).  Returns
    counters: ``n_shell_beads``, ``n_shell_turned``, ``shell_rounds``."""
    bank, box = st.bank, st.box
    stats = dict(n_shell_beads=0, n_shell_turned=0, shell_rounds=0)
    o_ext = float(np.linalg.norm(bank._flat[:, 0::3], axis=2).max())
    reach = 2 * o_ext + r_grid
    try:  # a triclinic cell too narrow for the neighbour searches: no shell pass
        box.check_width(reach, "the ion shell pass")
    except MultiscaleError:
        return stats
    xs = st.xw32.T.astype(np.float64)  # sorted wrapped centres
    sb, si, _ = _pairs(box, ions, xs, ions.r0 + SHELL_REACH)
    if len(sb) == 0:
        return stats
    beads, first = np.unique(sb, return_index=True)
    start = np.append(first, len(sb))  # shell ions of beads[i]: si[start[i]:start[i + 1]]
    # the oxygens of every bead the shell beads' oxygens can reach, in a cell list
    local = _within(box.tree(xs[beads], reach), xs, reach)
    local[_pairs(box, ions, xs, ions.r_cn + o_ext)[0]] = True  # (their waters may count)
    local = np.flatnonzero(local)
    ox = bank._oxygens(st.kk[local], st.qq[local], st.xw32[:, local])
    n_in = ions.counts(box, ox.reshape(3, -1).T)
    grid = _CellGrid(tuple(ox.reshape(3, -1)), box, r_grid, ids=np.tile(local, 4))
    del ox
    turned = 0
    rounds = _rounds(box, xs[beads], reach, start, si)
    for r, sel in enumerate(rounds * SHELL_PASSES):  # independent beads, in batches
        if r >= len(rounds):  # later passes: the beads next to a shell not full yet
            short = np.bincount(np.repeat(np.arange(len(beads)), np.diff(start)),
                                weights=n_in[si] < ions.n[si], minlength=len(beads)) > 0
            sel = sel[short[sel]]
        for i in range(0, len(sel), _SHELL_BATCH):
            s_ = sel[i:i + _SHELL_BATCH]
            turned += _turn(st, ions, grid, (n_cand, start, si), s_, beads[s_], n_in)
    stats.update(n_shell_beads=len(beads), n_shell_turned=turned, shell_rounds=len(rounds))
    return stats

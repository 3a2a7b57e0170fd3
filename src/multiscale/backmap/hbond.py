"""Hydrogen-bond network of the backmapped solutes, recovered inside the CG constraint.

Why: the conformation model places a hydroxyl O inside its bead from the molecule's own CG
geometry, blind to the neighbours.  On neat (R)-octan-2-ol the nearest intermolecular O...O
distance after the draw has a median of 0.343 nm (AA liquid 0.284 nm; 31 % vs 80 % of the O
have a partner within 0.30 nm), so even a perfect hydrogen turn (:func:`.place.orient_rotors`,
already at its largest calibrated weight) finds only 0.23-0.25 H-bonds per molecule (AA 0.83).

What (:func:`network_relax`, engine step :func:`.steps.hbond_network`):

1. :func:`assign_pairs` -- donor H -> acceptor (O/N of another solute molecule) pairs whose
   donor-acceptor distance is below ``cutoff`` and whose C-D...A angle lets the H point at the
   acceptor; greedy by distance in vectorised rounds: every donor H once, every acceptor at
   most ``max_accept`` times, no two molecules donating to each other (a cyclic dimer is not
   the liquid's chain motif);
2. position-based iterations: each assigned pair is pulled towards D...A = :data:`R_DA` and
   H...A = :data:`R_HA` (both atoms of D...A half-way, the H alone), each molecule's bonds and
   1-3 distances are restored to their drawn values (Jacobi steps, as in
   :func:`.place.relax_project`) and the molecule is projected back onto its beads
   (``x <- x + A (c - M x)``); the last operation is the exact projection, so every bead centre
   stays where the CG put it (to round-off).

The moves are small (O by ~0.03-0.06 nm) and spread over the molecule by the smoothing
projection; molecules that end up with wrong stereo, an intramolecular clash or a new
intermolecular clash are put back (:func:`.steps.hbond_network`).  Deterministic (no random
choice).  Lengths nm, angles degrees.
"""

from __future__ import annotations

import numpy as np

__all__ = ["R_DA", "R_HA", "PAIR_CUTOFF", "ITERATIONS", "MAX_ACCEPT", "SELECT_EPS", "CANDIDATES", "donor_sites",
           "assign_pairs", "network_relax", "heavy_14_pairs"]

#: Target donor...acceptor distance (nm): the first peak of the AA O-O RDF of alcohols (0.27-0.28).
R_DA = 0.275
#: Target H...acceptor distance (nm) (AA alcohols: 0.17-0.20).
R_HA = 0.185
#: Environment-aware candidate choice (:func:`.solute.environment_select`) used by default before the
#: pull for molecules with rotatable polar hydrogens: weight per O/N contact (kT) and candidates per molecule.
SELECT_EPS = 3.0
CANDIDATES = 8
#: The pair cutoff (D...A, nm) of neat octan-2-ol (the largest of the calibration grid,
#: :func:`.train._calibrate_network`): pairs farther apart after the draw are not pulled together.
PAIR_CUTOFF = 0.36
#: Position-based iterations (pull, restore bonds and 1-3 distances, project).
ITERATIONS = 24
#: Hydrogen bonds one acceptor atom may take.
MAX_ACCEPT = 1
#: C-D...A angle window (degrees) in which the H (C-D-H ~108 deg) can point at the acceptor.
ANGLE_WINDOW = (70.0, 165.0)
#: Fraction of each pair's distance error corrected per iteration.
PULL = 0.5
#: Pull the donor H towards its acceptor too (else only D...A; :func:`.steps.polar_h` turns the H).
PULL_H = True
#: :func:`.steps.polar_h` keeps the orientation of hydrogens that make an H-bond after this step.
KEEP_MADE = True
#: Also restore the heavy-atom 1-4 distances (keeps the heavy torsions near where the model drew them).
KEEP_14 = True
#: Distance-restoring Jacobi steps per iteration.
RESTORE_STEPS = 8


def heavy_14_pairs(n_atoms: int, bonds, elements) -> np.ndarray:
    """(P, 2) heavy-atom pairs three bonds apart (the ends of every heavy torsion a-b-c-d)."""
    heavy = np.asarray(elements) != "H"
    adj = [set() for _ in range(n_atoms)]
    for i, j in np.asarray(bonds, int).reshape(-1, 2):
        adj[i].add(int(j))
        adj[j].add(int(i))
    out = set()
    for b in range(n_atoms):
        for c in adj[b]:
            for a in adj[b] - {c}:
                for d in adj[c] - {b, a}:
                    if heavy[a] and heavy[d] and a not in adj[d]:
                        out.add((min(a, d), max(a, d)))
    return np.array(sorted(out), np.int64).reshape(-1, 2)


def donor_sites(sols) -> dict:
    """Indices into the concatenated solute atoms (``np.concatenate([s.x.reshape(-1, 3)])``):
    ``h``, ``d``, ``c`` (k,) -- each rotatable polar H, its donor atom and the donor's heavy
    neighbour; ``acc`` (a,) every O/N atom; ``mol`` (N,) molecule id per atom; ``cut`` (k,)
    the donor moltype's calibrated pair cutoff (nm, ``mm.network_cutoff``; 0 = no pairs)."""
    h, d, c, acc, mol, cut = [], [], [], [], [], []
    atom0 = mol0 = 0
    for s in sols:
        m, n = s.x.shape[0], s.x.shape[1]
        base = atom0 + np.arange(m) * n
        for r in s.mm.rotors:
            for hh in r["hs"]:
                h.append(base + hh)
                d.append(base + r["a"])
                c.append(base + r["c"])
                cut.append(np.full(m, float(getattr(s.mm, "network_cutoff", 0.0))))
        el = np.asarray(s.mm.elements)
        pol = np.flatnonzero(np.isin(el, ["O", "N"]))
        acc.append((base[:, None] + pol).ravel())
        mol.append(np.repeat(mol0 + np.arange(m), n))
        atom0 += m * n
        mol0 += m
    cat = lambda v: np.concatenate(v).astype(np.int64) if v else np.zeros(0, np.int64)  # noqa: E731
    return {"h": cat(h), "d": cat(d), "c": cat(c), "acc": cat(acc), "mol": cat(mol),
            "cut": np.concatenate(cut) if cut else np.zeros(0)}


def _candidates(x, box, sites, cutoff):
    """All (donor H k, acceptor a, D...A distance) with D...A < cutoff (scalar, or None: each
    donor's ``sites['cut']``), other molecule, angle ok."""
    from ..geometry import minimum_image
    from ..neighbours import PeriodicTree

    h, d, c, acc, mol = (sites[k] for k in ("h", "d", "c", "acc", "mol"))
    cut = np.full(len(h), float(cutoff)) if cutoff is not None else np.asarray(sites["cut"], float)
    if not len(h) or not len(acc) or cut.max(initial=0.0) <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    hits = PeriodicTree(x[acc], box, cut.max()).query_ball_point(x[d], cut.max())
    k = np.repeat(np.arange(len(h)), [len(v) for v in hits])
    a = np.concatenate([np.asarray(v, np.int64) for v in hits]) if len(k) else np.zeros(0, np.int64)
    keep = mol[acc[a]] != mol[d[k]]
    k, a = k[keep], a[keep]
    v = minimum_image(x[acc[a]] - x[d[k]], box)
    u = minimum_image(x[c[k]] - x[d[k]], box)
    r = np.linalg.norm(v, axis=-1)
    cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * r + 1e-12)
    ang = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    ok = (ang > ANGLE_WINDOW[0]) & (ang < ANGLE_WINDOW[1]) & (r < cut[k])
    return k[ok], a[ok], r[ok]


def assign_pairs(x: np.ndarray, box: np.ndarray, sites: dict, cutoff: float | None = None,
                 max_accept: int = MAX_ACCEPT, rounds: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Donor-acceptor pairs to pull together: (k (p,) index into ``sites['h']``, a (p,) index into
    ``sites['acc']``); cutoff (nm): None = each donor's calibrated ``sites['cut']``.  Rounds: every free donor H proposes its nearest allowed acceptor, every
    acceptor takes its closest proposals up to its remaining capacity; a pair is not allowed
    when its donor atom already donates to that acceptor's molecule or that molecule already
    donates to the donor's molecule.  x (N, 3) nm, box (3,) or (3, 3) nm."""
    k, a, r = _candidates(np.asarray(x, np.float64), box, sites, cutoff)
    mol, d, acc = sites["mol"], sites["d"], sites["acc"]
    M = int(mol.max()) + 1 if len(mol) else 1
    o = np.lexsort((r, k))
    k, a, r = k[o], a[o], r[o]
    md, ma = mol[d[k]], mol[acc[a]]
    cap = np.full(len(acc), int(max_accept))
    free = np.ones(len(sites["h"]), bool)
    taken_k, taken_a = [], []
    links = np.zeros(0, np.int64)  # accepted (donor molecule, acceptor molecule) as md * M + ma
    for _ in range(rounds):
        ok = free[k] & (cap[a] > 0) & ~np.isin(ma * M + md, links) & ~np.isin(md * M + ma, links)
        if not ok.any():
            break
        ki, ai, ri = k[ok], a[ok], r[ok]
        first = np.unique(ki, return_index=True)[1]  # nearest allowed acceptor per free donor H
        ki, ai, ri = ki[first], ai[first], ri[first]
        o = np.lexsort((ri, ai))
        ki, ai = ki[o], ai[o]
        start = np.searchsorted(ai, ai, side="left")
        rank = np.arange(len(ai)) - start
        acc_ok = rank < cap[ai]
        ki, ai = ki[acc_ok], ai[acc_ok]
        key_f, key_r = mol[d[ki]] * M + mol[acc[ai]], mol[acc[ai]] * M + mol[d[ki]]
        u, first = np.unique(np.minimum(key_f, key_r), return_index=True)  # one direction per molecule pair
        ki, ai, key_f = ki[first], ai[first], key_f[first]
        free[ki] = False
        np.subtract.at(cap, ai, 1)
        links = np.concatenate([links, key_f])
        taken_k.append(ki)
        taken_a.append(ai)
    if not taken_k:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(taken_k), np.concatenate(taken_a)


def _restore(x: np.ndarray, D: np.ndarray, r0: np.ndarray, W: np.ndarray, stiffness: float) -> np.ndarray:
    """One Jacobi step restoring pair distances to r0 (P, m, 1); x (n, m * 3) (atoms by
    molecule-coordinates: every operator is one matrix product); D (P, n): pair difference
    operator (x_j - x_i); W (n, P): each atom's share of a pair's correction."""
    P = len(D)
    dv = (D @ x).reshape(P, -1, 3)
    r = np.sqrt((dv * dv).sum(-1, keepdims=True)).clip(1e-9)
    return x + W @ (0.5 * stiffness * (1.0 - r0 / r) * dv).reshape(P, -1)


def _operators(pairs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """D (P, n) and W (n, P) of :func:`_restore` (W: +1/count at i, -1/count at j)."""
    cnt = np.bincount(pairs.ravel(), minlength=n).clip(1)
    rows = np.arange(len(pairs))
    D = np.zeros((len(pairs), n))
    D[rows, pairs[:, 1]] = 1.0
    D[rows, pairs[:, 0]] = -1.0
    W = np.zeros((n, len(pairs)))
    W[pairs[:, 0], rows] = 1.0 / cnt[pairs[:, 0]]
    W[pairs[:, 1], rows] = -1.0 / cnt[pairs[:, 1]]
    return D, W


def _pull(X: np.ndarray, box, i: np.ndarray, j: np.ndarray, target: float, both: bool) -> None:
    """Move atoms i towards j (and j towards i when ``both``) so |x_j - x_i| -> target (in place)."""
    from ..geometry import minimum_image

    v = minimum_image(X[j] - X[i], box)
    r = np.linalg.norm(v, axis=-1, keepdims=True).clip(1e-9)
    step = PULL * (r - target) * v / r
    if both:
        np.add.at(X, i, 0.5 * step)
        np.subtract.at(X, j, 0.5 * step)
    else:
        np.add.at(X, i, step)


def network_relax(sols, box: np.ndarray, cutoff: float | None = None, iterations: int | None = None,
                  stiffness: float = 1.8) -> tuple[list[np.ndarray], np.ndarray]:
    """New conformations (one (m, n, 3) array per solute block of ``sols``, each CG-exact) with
    the assigned hydrogen-bond pairs pulled together, and the pairs' donor hydrogens (p,)
    (indices into the concatenated solute atoms).  ``sols``: objects
    with ``x`` (m, n, 3) nm (whole molecules, unwrapped), ``beads`` (m, nb, 3) and ``mm`` (the
    moltype model: rotors, elements, matrix, operator, local_pairs).  box (3,) or (3, 3) nm."""
    iterations = ITERATIONS if iterations is None else iterations
    sites = donor_sites(sols)
    X = np.concatenate([s.x.reshape(-1, 3) for s in sols]).astype(np.float64) if sols else np.zeros((0, 3))
    k, a = assign_pairs(X, box, sites, cutoff, MAX_ACCEPT)
    xs = [np.array(s.x, np.float64, copy=True) for s in sols]
    if not len(k):
        return xs, np.zeros(0, np.int64)
    hd, dd, aa = sites["h"][k], sites["d"][k], sites["acc"][a]
    involved = np.zeros(len(sites["mol"]), bool)
    involved[np.isin(sites["mol"], sites["mol"][np.concatenate([hd, aa])])] = True
    sl = np.cumsum([0] + [x.size // 3 for x in xs])
    ops = []
    for b, (s, x) in enumerate(zip(sols, xs)):
        idx = np.flatnonzero(involved[sl[b]:sl[b + 1]].reshape(x.shape[:2]).any(1))  # molecules that move
        p = np.asarray(s.mm.local_pairs, np.int64).reshape(-1, 2)
        if KEEP_14:
            p = np.concatenate([p, heavy_14_pairs(x.shape[1], s.mm.bonds, s.mm.elements)])
        r0 = np.linalg.norm(x[idx][:, p[:, 1]] - x[idx][:, p[:, 0]], axis=-1).T[..., None]  # (P, m, 1)
        c = np.asarray(s.beads, np.float64)[idx].transpose(1, 0, 2).reshape(len(s.mm.matrix), -1)
        A = np.asarray(s.mm.operator, np.float64)
        ops.append((idx, *_operators(p, x.shape[1]), r0, np.asarray(s.mm.matrix, np.float64), A, A @ c))
    X = np.concatenate([x.reshape(-1, 3) for x in xs])
    for _ in range(iterations):
        _pull(X, box, dd, aa, R_DA, both=True)
        if PULL_H:
            _pull(X, box, hd, aa, R_HA, both=False)
        for b, (idx, D, W, r0, M, A, Ac) in enumerate(ops):
            if not len(idx):
                continue
            xb = X[sl[b]:sl[b + 1]].reshape(xs[b].shape)
            m, n = len(idx), xb.shape[1]
            x = xb[idx].transpose(1, 0, 2).reshape(n, m * 3)
            for _ in range(RESTORE_STEPS if len(D) else 0):
                x = _restore(x, D, r0, W, stiffness)
            x = x - A @ (M @ x) + Ac  # exact projection onto the beads
            xb[idx] = x.reshape(n, m, 3).transpose(1, 0, 2)
    return [X[sl[b]:sl[b + 1]].reshape(x.shape) for b, x in enumerate(xs)], hd

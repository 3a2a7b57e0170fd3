"""Steps 4 and 5 of backmapping a frame (:mod:`.steps`): the solutes' clash search and
resampling, then the stereo guarantee.

:func:`resolve_clashes` searches clashes between solute molecules (ions are fixed obstacles,
periodic and triclinic boxes) and resamples the molecules with a clash or wrong stereo: 1-2 bead
molecules are first turned about their beads, the others take their next candidate; molecules
that never had right stereo, and clashing best-of molecules (lipids), get extra rounds; a molecule
left with wrong stereo takes back its last stereo-right conformation.  :func:`stereo_repair`
inverts what is still wrong (last resort) and writes the solutes into the frame.  Lengths nm.
"""

from __future__ import annotations

import numpy as np

from .common import derive_seed
from .frame import BackmapContext, FrameState

__all__ = ["resolve_clashes", "stereo_repair", "check_solutes", "ion_positions", "SPIN_ROUNDS", "STEREO_ROUNDS",
           "CLASH_MARGIN"]

#: First resampling rounds in which 1- and 2-bead molecules that clash only with other
#: molecules are turned about their beads (the orientation the CG leaves free) instead of
#: drawing a new conformation.
SPIN_ROUNDS = 2
#: nm added to the clash bounds (``clash_inter`` / ``clash_intra``) in every search that triggers a
#: repair and in the final certificate, so that a certified structure still keeps its stated bounds
#: after the output format rounds it: .gro/.xtc store 0.001 nm, which moves a distance by at most
#: sqrt(3) x 0.001 = 0.0017 nm.  The report states the bounds; ``thresholds.search_margin_nm`` this.
CLASH_MARGIN = 0.002


def _bounds(o) -> tuple[float, float]:
    """(inter, intra) clash distances (nm) searched: the stated bounds plus :data:`CLASH_MARGIN`."""
    return o.clash_inter + CLASH_MARGIN, o.clash_intra + CLASH_MARGIN


def ion_positions(state: FrameState, ctx: BackmapContext) -> np.ndarray:
    """The fixed atoms of the frame (nm): ion atoms (layout order), then the hydration-shell
    water atoms; (0, 3) without ions.  Before :func:`place_ions`: the ion beads."""
    if state.fixed_x is not None:
        return state.fixed_x
    if not ctx.ion_blocks:
        return np.zeros((0, 3))
    return np.concatenate([state.cg[blk.start:blk.stop].reshape(-1, 3) for _, blk in ctx.ion_blocks])


def _positions(state: FrameState, ctx: BackmapContext) -> np.ndarray:
    """(A, 3) nm: the atoms of the clash search, in ``ctx.mol_id`` order: solutes, fixed atoms, then
    the chains' atoms (:func:`~.frame._solute_arrays`, which adds them whenever there are solutes)."""
    fixed = [ion_positions(state, ctx)] if ctx.ion_blocks else []
    return np.concatenate([s.x.reshape(-1, 3) for s in state.solutes] + fixed + list(state.chains))


def _solute_clash_pairs(state: FrameState, ctx: BackmapContext, changed):
    """Clash pairs (inter, intra) of the solutes (+ ions); only pairs touching ``changed``
    molecules are searched again when the previous pairs are cached."""
    from .certify import find_clashes

    o, cache = ctx.opts, state.clash_cache
    args = (_positions(state, ctx), state.box, ctx.mol_id, ctx.local, ctx.kind, ctx.excl, *_bounds(o))
    if changed is None or "ip" not in cache:
        ip, jp = find_clashes(*args)
        ip = ip[(ctx.mol_id[ip] < ctx.n_solute_mols).any(1)]  # pairs between fixed atoms (a chain's own) are not the solutes'
    else:
        moved = np.isin(ctx.mol_id, changed)
        keep_i = ~moved[cache["ip"]].any(1)
        keep_j = ~moved[cache["jp"]].any(1)
        ni, nj = find_clashes(*args, subset=np.flatnonzero(moved))
        ip = np.concatenate([cache["ip"][keep_i], ni])
        jp = np.concatenate([cache["jp"][keep_j], nj])
    cache["ip"], cache["jp"] = ip, jp
    return ip, jp


#: a molecule whose worst bond is off its median length over the block's molecules in the frame by more
#: than BOND_STRAIN, and by more than BOND_STRAIN_OUTLIER times the block's median worst-bond strain, is
#: resampled like one with a clash (blocks of at least BOND_STRAIN_MIN_MOLECULES): the exact projection can
#: strain a bond of a drawn conformation that fits its beads badly (a 32-POPC cycle backmap had an O11-C1
#: bond at 0.32 nm, 2.2 times its length, with the block's median strain 0.1).  Relative to the frame,
#: because beads far from any AA conformation (an insane build before CG MD) strain every lipid by
#: 0.2-0.8, and resampling all of them only makes clashes.
BOND_STRAIN, BOND_STRAIN_OUTLIER, BOND_STRAIN_MIN_MOLECULES = 0.5, 3.0, 8


def strained(s) -> np.ndarray:
    """(B,) bool: molecules of solute block ``s`` with an outlying strained bond (:data:`BOND_STRAIN`)."""
    if len(s.x) < BOND_STRAIN_MIN_MOLECULES or not len(s.mm.bonds):
        return np.zeros(len(s.x), bool)
    b = np.asarray(s.mm.bonds, int).reshape(-1, 2)
    length = np.linalg.norm(s.x[:, b[:, 0]] - s.x[:, b[:, 1]], axis=-1)
    worst = np.abs(length / np.median(length, 0) - 1.0).max(1)
    return worst > max(BOND_STRAIN, BOND_STRAIN_OUTLIER * float(np.median(worst)))


def check_solutes(state: FrameState, ctx: BackmapContext, changed=None) -> tuple[int, int]:
    """Set ``state.bad`` (wrong stereo, a strained bond (:func:`strained`) or a clash) and
    ``state.clash_bad`` per solute block; return the (inter, intra) clash pair counts.  changed:
    global solute molecule ids moved since the last check (incremental search), None = search everything."""
    bad, clash_bad = [], []
    for s in state.solutes:
        wc, wb = s.mm.stereo.wrong(s.x)
        bad.append(wc.any(1) | wb.any(1) | strained(s))
        clash_bad.append(np.zeros(len(s.x), bool))
    n_inter = n_intra = 0
    if state.solutes:
        ip, jp = _solute_clash_pairs(state, ctx, changed)
        n_inter, n_intra = len(ip), len(jp)
        mols = np.unique(ctx.mol_id[np.concatenate([ip.ravel(), jp.ravel()])])
        mols = mols[mols < ctx.n_solute_mols]  # fixed obstacles (ions, shells, chains) are not resampled
        for si, mi in ctx.mol_block[mols]:
            clash_bad[si][mi] = True
    state.bad = [b | c for b, c in zip(bad, clash_bad)]
    state.clash_bad = clash_bad
    return n_inter, n_intra


def _resample_round(state: FrameState, ctx: BackmapContext, attempt: int, sol_base: np.ndarray) -> np.ndarray:
    """One round: bad 1-2 bead molecules with only intermolecular clashes are turned about their
    beads (first :data:`SPIN_ROUNDS` rounds), bad best-of molecules (lipids) take the best fitting of
    fresh candidates between the atoms of the molecules that stay (:meth:`.Solute.next_fitting`),
    the others take their next candidate.  Returns the global ids of the molecules that moved."""
    o, f = ctx.opts, state.frame
    changed = []
    moving = _to_redraw(state, ctx, sol_base, attempt)
    env = _staying_atoms(state, ctx, sol_base, moving)
    for k, s in enumerate(state.solutes):
        idx = np.flatnonzero(moving[k])
        if not len(idx):
            continue
        state.report.per_moltype[s.mm.name]["resampled"] += len(idx)
        if attempt <= SPIN_ROUNDS and s.mm.n_beads <= 2:
            sp = s.spinnable(idx, _bounds(o)[1])
            if len(sp):
                s.spin(sp, derive_seed(o.seed, f, attempt, s.bi, 7))
                changed.append(sol_base[k] + sp)
                idx = np.setdiff1d(idx, sp)
        if len(idx) and s.mm.best_of > 1:
            s.next_fitting(idx, derive_seed(o.seed, f, attempt, s.bi), ctx.device, o.temperature, _bounds(o)[1],
                           env, _bounds(o)[0])
            changed.append(sol_base[k] + idx)
        elif len(idx):
            s.next(idx, derive_seed(o.seed, f, attempt, s.bi), ctx.device, o.temperature, s.K, _bounds(o)[1])
            changed.append(sol_base[k] + idx)
    return np.concatenate(changed) if changed else np.zeros(0, int)


def _to_redraw(state: FrameState, ctx: BackmapContext, sol_base: np.ndarray, attempt: int) -> list:
    """Per solute block, (B,) bool: the molecules this round redraws.  Every bad molecule, except
    that of two best-of molecules (lipids) whose only fault is a clash with each other, one stays
    (unless it moves for another such pair) as the neighbour the other is redrawn to fit
    (:meth:`.Solute.next_fitting`): redrawn together, each fitted only the other's old place, and
    19 of 35 clashing lipids clashed again.  The lower id stays in odd rounds, the higher in even
    ones, so a pair that one partner cannot resolve gets the other's draws too."""
    moving = [b.copy() for b in state.bad]
    ip = state.clash_cache.get("ip")
    if ip is None or not len(ip) or not any(s.mm.best_of > 1 for s in state.solutes):
        return moving
    n = ctx.n_solute_mols
    spare = np.zeros(n, bool)  # best-of molecules whose only fault is a clash
    for k, s in enumerate(state.solutes):
        if s.mm.best_of > 1:
            spare[sol_base[k]:sol_base[k + 1]] = state.clash_bad[k] & _stereo_right(s.x, s) & ~strained(s)
    mp = np.sort(ctx.mol_id[ip], 1)
    fixed = mp[:, 1] >= n  # pairs with an ion, a shell water or a chain atom
    spare[mp[fixed, 0]] = False
    pairs = mp[~fixed]
    spare[pairs[:, attempt % 2]] = False  # odd rounds: the higher of each pair moves; even: the lower
    for k in range(len(state.solutes)):
        moving[k] &= ~spare[sol_base[k]:sol_base[k + 1]]
    return moving


def _staying_atoms(state: FrameState, ctx: BackmapContext, sol_base: np.ndarray, moving: list):
    """A :class:`~multiscale.neighbours.PeriodicTree` of the atoms of the clash search outside the
    molecules this round redraws; None when no best-of block has one to redraw."""
    if not any(s.mm.best_of > 1 and b.any() for s, b in zip(state.solutes, moving)):
        return None
    from ..neighbours import PeriodicTree

    moving = np.concatenate([sol_base[k] + np.flatnonzero(b) for k, b in enumerate(moving)])
    stay = ~np.isin(ctx.mol_id, moving)
    return PeriodicTree(_positions(state, ctx)[stay], state.box, _bounds(ctx.opts)[0])


def resolve_clashes(state: FrameState, ctx: BackmapContext) -> FrameState:
    """Resample molecules with clashes or wrong stereo, at most ``max_retries`` rounds."""
    rep, sols = state.report, state.solutes
    rep.inter_clash_pairs_initial, rep.intra_clash_pairs_initial = check_solutes(state, ctx)
    for k, s in enumerate(sols):
        rep.per_moltype[s.mm.name]["clash_molecules_initial"] += int(state.clash_bad[k].sum())
    attempt = 0
    sol_base = np.concatenate([[0], np.cumsum([len(s.x) for s in sols])]) if sols else np.zeros(1, int)
    right = [(s.x.copy(), _stereo_right(s.x, s)) for s in sols]  # the last stereo-right conformation of each molecule
    while attempt < ctx.opts.max_retries and any(b.any() for b in state.bad):
        attempt += 1
        check_solutes(state, ctx, _resample_round(state, ctx, attempt, sol_base))
        _remember_right(right, sols)
    # molecules that never had right stereo (long flexible ones: the projection onto the beads can
    # bend a centre or a double bond), and long molecules (best-of models: lipids) still clashing,
    # get extra rounds of their own: one H-H overlap left between two lipids costs a restrained EM
    # hundreds of steps
    extra = 0
    long_left = lambda: [(s.mm.best_of > 1) & b for s, b in zip(sols, state.clash_bad)]
    while extra < STEREO_ROUNDS and any((~ok).any() | c.any() for (_, ok), c in zip(right, long_left())):
        extra += 1
        state.bad = [~ok | c for (_, ok), c in zip(right, long_left())]
        check_solutes(state, ctx, _resample_round(state, ctx, ctx.opts.max_retries + extra, sol_base))
        _remember_right(right, sols)
    # stereo is a guarantee, a clash a report: a molecule the rounds left with wrong stereo takes back
    # its last stereo-right conformation (the repair's inversion/flip is the last resort)
    back = [np.flatnonzero(ok & ~_stereo_right(s.x, s)) for (_, ok), s in zip(right, sols)]
    for (x, _), s, idx in zip(right, sols, back):
        s.x[idx] = x[idx]
    if any(len(b) for b in back):
        check_solutes(state, ctx, np.concatenate([sol_base[k] + b for k, b in enumerate(back)]))
    if any(c.any() for c in state.clash_bad):
        rep.separated = separate(state, ctx, sol_base)
    rep.retries = attempt
    return state


#: sweeps of :func:`separate`, each one push and one geometry-preserving re-projection per moved molecule
SEPARATE_SWEEPS = 16
#: nm beyond the searched clash bound that :func:`separate` pushes a pair apart to
SEPARATE_EXTRA = 0.03


def separate(state: FrameState, ctx: BackmapContext, sol_base: np.ndarray) -> int:
    """Push apart the intermolecular clash pairs the resampling rounds left, every bead kept exact.

    The beads of an unrelaxed build (insane, before any CG MD) can hold two lipids' atoms within
    0.01 nm of each other whatever conformations are drawn, and a minimiser cannot start from
    that.  Each sweep moves the two atoms of every such pair apart along their separation to
    :data:`SEPARATE_EXTRA` nm beyond the clash bound (half each; an atom of a fixed obstacle, an ion
    or a chain, does not move and its partner takes the whole gap), each with its heavy atom or its
    hydrogens (:attr:`.MoltypeModel.united`), then re-projects each moved
    molecule onto its beads restoring the bond and 1-3 distances and rigid shapes of its
    conformation before the sweeps (:meth:`.MoltypeModel.relax` with ``reference``), so a pushed
    atom swings about its neighbours instead of stretching a bond.  Molecules whose stereo the
    sweep broke keep their previous conformation.  Returns the number of molecules moved."""
    from ..geometry import minimum_image

    if not state.solutes:
        return 0
    r_target = _bounds(ctx.opts)[0] + SEPARATE_EXTRA
    reference = [s.x.copy() for s in state.solutes]
    moved_total = set()
    ip = state.clash_cache["ip"]  # the pairs of the last check (check_solutes ran last)
    for _ in range(SEPARATE_SWEEPS):
        if not len(ip):
            break
        allx = _positions(state, ctx)
        d = minimum_image(allx[ip[:, 1]] - allx[ip[:, 0]], state.box)
        r = np.linalg.norm(d, axis=1, keepdims=True).clip(1e-6)
        mobile = ctx.mol_id[ip] < ctx.n_solute_mols  # (P, 2)
        share = np.where(mobile.all(1), 0.5, 1.0)[:, None]
        step = d / r * (r_target - r).clip(0.0) * share
        delta = np.zeros_like(allx)
        np.add.at(delta, ip[mobile[:, 0], 0], -step[mobile[:, 0]])
        np.add.at(delta, ip[mobile[:, 1], 1], step[mobile[:, 1]])
        mols = np.unique(ctx.mol_id[ip][mobile])
        moved_now = []
        for k, s in enumerate(state.solutes):
            idx = mols[(mols >= sol_base[k]) & (mols < sol_base[k + 1])] - sol_base[k]
            if not len(idx):
                continue
            off = sum(len(t.x) * t.mm.n_atoms for t in state.solutes[:k])
            rows = off + (idx[:, None] * s.mm.n_atoms + np.arange(s.mm.n_atoms)).ravel()
            # an atom moves with its united group (heavy atom + its hydrogens): a hydrogen pushed alone
            # is pulled back by its bond and angles in the re-projection
            d_atom = delta[rows].reshape(len(idx), s.mm.n_atoms, 3)
            d_group = np.zeros_like(d_atom)
            np.add.at(d_group, (slice(None), s.mm.united), d_atom)
            pushed = s.x[idx] + d_group[:, s.mm.united]
            new = s.mm.relax(pushed, s.beads[idx], reference=reference[k][idx])
            keep = _stereo_right(new, s)
            s.x[idx[keep]] = new[keep]
            moved_now.append(sol_base[k] + idx[keep])
        moved_now = np.concatenate(moved_now) if moved_now else np.zeros(0, int)
        moved_total.update(moved_now.tolist())
        ip, _ = _solute_clash_pairs(state, ctx, moved_now)
    check_solutes(state, ctx, np.array(sorted(moved_total), int))
    return len(moved_total)


#: extra resampling rounds, after the clash rounds, for molecules that never had right stereo and
#: for clashing molecules of best-of models (lipids)
STEREO_ROUNDS = 10


def _stereo_right(x: np.ndarray, s) -> np.ndarray:
    """(B,) bool: whether each molecule of solute block ``s`` at ``x`` has every enforced
    stereocentre and cis/trans bond right."""
    wc, wb = s.mm.stereo.wrong(x)
    return ~(wc.any(1) | wb.any(1))


def _remember_right(right: list, sols: list) -> None:
    """Update each block's (last stereo-right conformations, ever right) with its molecules that
    are stereo-right now."""
    for (x, ok), s in zip(right, sols):
        now = _stereo_right(s.x, s)
        x[now], ok[now] = s.x[now], True


# ============================================================================ 5. stereo
def _repair_stereo(s, per_moltype: dict) -> bool:
    """Invert wrong centres / flip wrong double bonds of solute block ``s`` (last resort) and
    re-fit the repaired molecules onto their beads; True when any molecule changed."""
    from .certify import flip_double_bond, swap_substituents

    st = s.mm.stereo
    wc, wb = st.wrong(s.x)
    ec, eb = st.enforced_centres, st.enforced_bonds
    changed = np.zeros(len(s.x), bool)
    for j in range(wc.shape[1]):
        idx = np.flatnonzero(wc[:, j])
        if len(idx):
            y = swap_substituents(s.x[idx], s.mm.n_atoms, s.mm.bonds, int(st.centres[ec[j]]))
            if y is not None:
                s.x[idx] = y
                changed[idx] = True
                per_moltype[s.mm.name]["stereo_swapped"] += len(idx)
    for j in range(wb.shape[1]):
        idx = np.flatnonzero(wb[:, j])
        if len(idx):
            q = st.quads[eb[j]]
            y = flip_double_bond(s.x[idx], s.mm.n_atoms, s.mm.bonds, int(q[1]), int(q[2]))
            if y is not None:
                s.x[idx] = y
                changed[idx] = True
                per_moltype[s.mm.name]["cistrans_flipped"] += len(idx)
    if changed.any():
        idx = np.flatnonzero(changed)
        s.x[idx] = s.mm.refit(s.x[idx], s.beads[idx])
        return True
    return False


def stereo_repair(state: FrameState, ctx: BackmapContext) -> FrameState:
    """Repair remaining wrong stereo, count the final solute state, write solutes to positions."""
    repaired = False
    for s in state.solutes:
        repaired = _repair_stereo(s, state.report.per_moltype) or repaired
    if repaired:
        check_solutes(state, ctx)
    for k, s in enumerate(state.solutes):
        wc, wb = s.mm.stereo.wrong(s.x)
        v = state.report.per_moltype[s.mm.name]
        v["stereo_wrong_final"] += int(wc.sum())
        v["cistrans_wrong_final"] += int(wb.sum())
        v["clash_molecules_final"] += int(state.clash_bad[k].sum())
        v["strained_final"] += int(strained(s).sum())
        un = np.flatnonzero(state.bad[k])
        v["unresolved"] = (v["unresolved"] + un.tolist())[:50]
        blk = ctx.layout[s.bi]
        state.positions[blk.aa_block.start:blk.aa_block.stop] = s.x.reshape(-1, 3)
    return state

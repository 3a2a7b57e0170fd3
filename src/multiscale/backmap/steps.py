"""The named steps of backmapping one frame: plain callables ``step(state, ctx) -> state``.

In order (:data:`STEPS`):

1. :func:`draw` -- every solute block's molecules drawn at once (``candidates`` conformations
   each, ranked: right stereo and no intramolecular clash first), CG-exact;
2. :func:`place_ions` -- every ion atom exactly on its bead (1:1);
3. :func:`select_environment` -- choice among the candidates by contacts (``select_eps``; on by
   default for molecules with polar rotors when ``hbond_network`` is on);
4. :func:`resolve_clashes` -- PBC clash search over solutes (+ ions as fixed obstacles);
   offending molecules turned about their beads (1-2 beads) or take their next candidate;
5. :func:`stereo_repair` -- remaining wrong centres inverted, wrong double bonds flipped; solutes
   written into ``state.positions``;
6. :func:`hbond_network` -- donor/acceptor pairs of neighbouring solute molecules pulled
   towards hydrogen-bond geometry inside the CG constraint (:mod:`.hbond`), re-projected;
7. :func:`solvent` -- water beads become 4 waters from the bank, away from solutes and ions,
   the first shells of ions and hydrated solute acceptors filled (:mod:`.hydration`);
8. :func:`polar_h` -- rotatable polar hydrogens turned towards acceptors, re-projected;
9. :func:`final_certificate` -- CG deviation, system-wide clash search, undo of clashing
   hydrogen turns, re-placement of clashing waters, final counts in the report.

Steps 4 and 5 (and the clash bounds they share with the final certificate) live in :mod:`.resolve`.
Seeds: every stochastic step derives its own from (seed, frame, step constant, block).
Lengths nm.
"""

from __future__ import annotations

import numpy as np

from .common import derive_seed
from .frame import BackmapContext, FrameState
from .hydration import solute_shell_arrays
from .resolve import (  # noqa: F401  (steps 4-5, their helpers and constants: re-exported for the engine and tests)
    CLASH_MARGIN,
    SPIN_ROUNDS,
    STEREO_ROUNDS,
    _bounds,
    check_solutes,
    ion_positions,
    resolve_clashes,
    stereo_repair,
)

__all__ = ["STEPS", "draw_chains", "draw", "place_ions", "select_environment", "resolve_clashes", "stereo_repair", "hbond_network",
           "solvent", "polar_h", "final_certificate", "check_solutes", "ion_water_dist", "ion_water_shell"]

#: Rounds of re-placing water beads that still clash after the bank's own placement (each
#: round costs one system-wide clash search).
WATER_REPLACE_ROUNDS = 2
#: Iterations of the re-projection after polar hydrogens were turned (a turned H shifts its
#: bead by < 0.003 nm; octan-2-ol bond RMS vs reference: 0.0027 nm with the plain exact
#: projection (0), 0.0022 nm with 3 or 8 iterations).
REPROJECT_ITERATIONS = 3
def ion_water_dist(ctx: BackmapContext) -> np.ndarray:
    """Per ion atom (ion blocks in layout order) the closest approach (nm) of water: the ion
    class's ``min_water_o`` (block info, from data/classes/ions.yaml)."""
    out = [np.full(blk.count, float(blk.info["min_water_o"])) for _, blk in ctx.ion_blocks]
    return np.concatenate(out) if out else np.zeros(0)


def ion_water_shell(ctx: BackmapContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per ion atom (as :func:`ion_water_dist`) the first-shell water-O distance (nm; 0 for ions
    that bring their own shell waters), the charge (e) and the waters of a full shell, all from
    the ion class's block info (data/classes/ions.yaml ``shell_o``, ``charge``, ``shell_n``)."""
    shell, charge, count = [], [], []
    for _, blk in ctx.ion_blocks:
        info = blk.info
        own = int(info.get("waters", 0)) > 0
        shell.append(np.full(blk.count, 0.0 if own else float(info["shell_o"])))
        charge.append(np.full(blk.count, float(info["charge"])))
        count.append(np.full(blk.count, float(info["shell_n"])))
    return tuple(np.concatenate(a) if a else np.zeros(0) for a in (shell, charge, count))


def _moltype_entry(mm) -> dict:
    return {"molecules": 0, "stereocentres": len(mm.stereo.enforced_centres),
            "double_bonds": len(mm.stereo.enforced_bonds), "stereo_wrong_initial": 0,
            "stereo_wrong_final": 0, "stereo_swapped": 0, "cistrans_wrong_initial": 0,
            "cistrans_wrong_final": 0, "cistrans_flipped": 0, "intra_clash_initial": 0,
            "clash_molecules_initial": 0, "clash_molecules_final": 0, "strained_final": 0, "resampled": 0, "unresolved": []}


# ============================================================================ 1. draw
def draw(state: FrameState, ctx: BackmapContext) -> FrameState:
    """Draw every solute block's molecules on their (unwrapped) beads; first-draw counts."""
    from .features import neighbour_counts, unwrap_beads
    from .solute import Solute, default_candidates

    o, model, f = ctx.opts, ctx.model, state.frame
    env_all = {}
    for c_ in sorted({model.moltypes[b.aa_block.moltype.name].env_cutoff for _, b in ctx.sol_blocks} - {0.0}):
        env_all[c_] = neighbour_counts(state.cg, state.box, ctx.bead_mol, c_)
    for bi, blk in ctx.sol_blocks:
        mm = model.moltypes[blk.aa_block.moltype.name]
        beads = unwrap_beads(state.cg[blk.start:blk.stop].reshape(blk.count, blk.n_beads, 3), state.box, mm.bead_parent)
        env = env_all[mm.env_cutoff][blk.start:blk.stop].reshape(blk.count, blk.n_beads) if mm.env_cutoff > 0 else None
        v = state.report.per_moltype.setdefault(mm.name, _moltype_entry(mm))
        v["molecules"] += blk.count
        sol = Solute(bi, mm, beads, None, env)
        sol.K = default_candidates(mm, o.hbond_network) if o.candidates is None else int(o.candidates)
        first = sol.draw(np.arange(blk.count), derive_seed(o.seed, f, 0, bi), ctx.device, o.temperature, sol.K,
                         _bounds(o)[1])
        v["stereo_wrong_initial"] += first[0]
        v["cistrans_wrong_initial"] += first[1]
        v["intra_clash_initial"] += first[2]
        v["resampled"] += first[3]
        state.solutes.append(sol)
    return state


def draw_chains(state: FrameState, ctx: BackmapContext) -> FrameState:
    """Every amino-acid chain block drawn residue by residue on its (unwrapped) beads
    (:class:`multiscale.chains.draw.ChainDrawer`: trans peptides, L centres, CG-exact, residues
    with clashes redrawn); written into ``state.positions`` and kept as obstacles for the solvent."""
    from dataclasses import asdict

    from .features import unwrap_beads

    for bi, blk, drawer in ctx.chain_blocks:
        real = blk.n_beads - blk.info.get("go_sites", 0)  # martinize2 -go virtual sites sit on BB: not drawn on
        beads = unwrap_beads(state.cg[blk.start:blk.stop].reshape(blk.count, blk.n_beads, 3)[:, :real], state.box)
        x, rep = drawer.draw(beads, derive_seed(ctx.opts.seed, state.frame, 7, bi), ctx.opts.temperature, ctx.device)
        a0 = blk.aa_block.start
        state.positions[a0:a0 + x.size // 3] = x.reshape(-1, 3)
        state.chains.append(x.reshape(-1, 3))
        entry = state.report.per_moltype.setdefault(blk.aa_block.moltype.name, {"kind": "chain"})
        entry.update(asdict(rep))
        entry.update(molecules=rep.copies, stereo_wrong_initial=rep.wrong_centres_after_draw,
                     stereo_wrong_final=rep.wrong_centres_final, cistrans_wrong_final=rep.cis_nonpro_final,
                     resampled=rep.redrawn_residues)
        state.report.max_cg_deviation_nm = max(state.report.max_cg_deviation_nm or 0.0, rep.max_cg_deviation_nm)
    return state


# ============================================================================ 2. ions (ion_positions: .resolve)
def place_ions(state: FrameState, ctx: BackmapContext) -> FrameState:
    """Put every ion atom on its bead (one bead, one atom: the mapping is the identity); with
    hydrated ion beads (``ions.waters_per_ion`` = k) the ion and its k shell waters instead,
    their centre of mass exactly on the bead (:func:`multiscale.classes.ion.place_hydrated`)."""
    if not ctx.ion_blocks:
        return state
    ions, shells = [], []
    for bi, blk in ctx.ion_blocks:
        beads = state.cg[blk.start:blk.stop].reshape(-1, 3)
        k = int((getattr(blk, "info", None) or {}).get("waters", 0))
        x = beads if not k else _hydrated(state, ctx, bi, blk, beads, k, shells)
        state.positions[blk.aa_block.start:blk.aa_block.stop] = x
        ions.append(x)
    if shells:
        state.positions[ctx.shell_atoms] = np.concatenate(shells)
    state.fixed_x = np.concatenate(ions + shells)
    return state


def _hydrated(state: FrameState, ctx: BackmapContext, bi: int, blk, beads: np.ndarray, k: int, shells: list) -> np.ndarray:
    """Hydrated ions of one block: returns the ion atoms (I, 3); appends the shell waters'
    atoms (I * k * n_atoms, 3) (water moltype order) to ``shells``."""
    from ..classes.ion import place_hydrated
    from .system import water_order

    wt = ctx.water_blocks[0][1].aa_block.moltype
    order = water_order(wt)
    mt = blk.aa_block.moltype
    info = blk.info
    n = len(beads)
    rng = np.random.default_rng(derive_seed(ctx.opts.seed, state.frame, 4_000_037, bi))
    ion, w = place_hydrated(beads, np.full(n, float(mt.masses[0])), np.full(n, float(info["charge"])),
                            np.full(n, float(info["min_water_o"])),
                            np.asarray(wt.masses, float)[order], k, rng)
    wo = np.empty((n * k, wt.n_atoms, 3))
    wo[:, order] = w.reshape(-1, 3, 3)
    shells.append(wo.reshape(-1, 3))
    return ion


# ============================================================================ 3. environment
def select_environment(state: FrameState, ctx: BackmapContext) -> FrameState:
    """Pick among the candidates by contacts with the neighbours (``select_eps`` > 0; None: the
    :mod:`.hbond` default for moltypes with a calibrated network cutoff when ``hbond_network``
    is on, else off)."""
    from .hbond import SELECT_EPS
    from .solute import environment_select

    o = ctx.opts
    auto = o.select_eps is None  # default: the moltypes with a calibrated network cutoff
    eps = (SELECT_EPS if o.hbond_network else 0.0) if auto else float(o.select_eps)
    if eps:
        rng = np.random.default_rng(derive_seed(o.seed, state.frame, 5_000_011))
        only = (lambda mm: getattr(mm, "network_cutoff", 0.0) > 0) if auto else None
        state.report.environment_selected = environment_select(state.solutes, state.box, rng, eps, only=only)
    return state


# ============================================================================ 4-5. clashes, stereo: .resolve


# ============================================================================ 6. H-bond network
def hbond_network(state: FrameState, ctx: BackmapContext) -> FrameState:
    """Pull assigned donor/acceptor pairs of neighbouring solute molecules towards hydrogen-bond
    geometry, every bead exact (:func:`.hbond.network_relax`); molecules that then have wrong
    stereo, an intramolecular clash or a clash the frame did not have before keep their previous
    conformation.  Off with ``hbond_network=False``; no-op for moltypes without rotatable polar
    hydrogens or without a calibrated ``network_cutoff`` (models trained before it existed)."""
    from .hbond import network_relax

    sols = state.solutes
    if not ctx.opts.hbond_network or not any(s.mm.rotors and s.mm.network_cutoff > 0 for s in sols):
        return state
    before = [s.x.copy() for s in sols]
    bad_before = [b.copy() for b in state.bad]
    new, h_pairs = network_relax(sols, state.box)
    for s, x in zip(sols, new):
        s.x = x
    if len(h_pairs):
        check_solutes(state, ctx)
    back = 0
    for k, s in enumerate(sols):
        wc, wb = s.mm.stereo.wrong(s.x)
        worse = (state.bad[k] & ~bad_before[k]) | wc.any(1) | wb.any(1) | s.mm.intra_clash(s.x, _bounds(ctx.opts)[1])
        idx = np.flatnonzero(worse & np.any(s.x != before[k], axis=(1, 2)))
        s.x[idx] = before[k][idx]
        back += len(idx)
    if back:
        check_solutes(state, ctx)
    state.report.hbond_pairs = len(h_pairs)
    state.report.hbond_pairs_undone = back
    for s in sols:
        blk = ctx.layout[s.bi]
        state.positions[blk.aa_block.start:blk.aa_block.stop] = s.x.reshape(-1, 3)
    from . import hbond

    state.hbond_keep = _made_hbonds(state, ctx) if len(h_pairs) and hbond.KEEP_MADE else None
    return state


def _made_hbonds(state: FrameState, ctx: BackmapContext):
    """(N,) bool over the AA atoms: the rotatable polar hydrogens of the solutes that make a
    hydrogen bond to another solute molecule (:func:`polar_h` keeps their orientation)."""
    from .place import hbond_counts
    from .system import system_arrays

    arr = system_arrays(ctx.topology, ctx.model)
    nb = ctx.topology.n_atoms
    hs, ds = [], []
    for s in state.solutes:  # every rotor hydrogen and its donor atom
        base = ctx.layout[s.bi].aa_block.start + np.arange(len(s.x)) * s.mm.n_atoms
        for r in s.mm.rotors:
            for hh in r["hs"]:
                hs.append(base + hh)
                ds.append(base + r["a"])
    h, d = np.concatenate(hs), np.concatenate(ds)
    acc = arr["acc"] & ~arr["is_w"]
    made = hbond_counts(state.positions, state.box, h, d, arr["mol"], acc) > 0
    keep = np.zeros(nb, bool)
    keep[h[made]] = True
    return keep


# ============================================================================ 7. solvent
def _bank_place(ctx: BackmapContext, beads, box, seed, others, others_min_dist, **kw):
    """WaterBank.place with ``others_min_dist`` (per others atom, nm) where the bank takes it."""
    bank = ctx.model.water_bank
    if others_min_dist is not None and _accepts(bank.place, "others_min_dist"):
        kw["others_min_dist"] = others_min_dist
    for key in ("others_shell", "others_charge", "others_shell_n"):  # ion first shells (banks that take them)
        if kw.get(key) is None or not _accepts(bank.place, key):
            kw.pop(key, None)
    return bank.place(beads, box, seed=seed, others=others, max_retries=ctx.opts.max_retries, **kw)


def _accepts(fn, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _water_atoms(blk, w) -> np.ndarray:
    """Bank output w (n_beads*4, 3 (O, H, H), 3) -> (n_beads*4*n_atoms, 3) in the moltype's atom order."""
    from .system import water_order

    mt = blk.aa_block.moltype
    w3 = np.asarray(w, np.float64).reshape(-1, 3, 3)
    wo = np.empty((len(w3), mt.n_atoms, 3))
    wo[:, water_order(mt)] = w3
    return wo.reshape(-1, 3)


def _obstacles(state: FrameState, ctx: BackmapContext):
    """Non-water atoms the waters keep away from: solutes, then ions (m, 3), and per atom the
    closest approach (m,) nm when there are ions (else None: the bank's own default)."""
    from .water import MIN_DIST_OTHERS

    parts = [s.x.reshape(-1, 3) for s in state.solutes] + list(state.chains)
    if not ctx.ion_blocks:
        return (np.concatenate(parts) if parts else np.zeros((0, 3))), None
    n_sol = sum(len(p) for p in parts)
    dmin = np.concatenate([np.full(n_sol, float(MIN_DIST_OTHERS)), ion_water_dist(ctx),
                           np.full(len(ctx.shell_atoms), float(MIN_DIST_OTHERS))])
    return np.concatenate(parts + [ion_positions(state, ctx)]), dmin


def solvent(state: FrameState, ctx: BackmapContext) -> FrameState:
    """Place 4 waters per water bead (the model's bank), away from the solutes and ions; the
    clusters next to ions and to the solutes' hydrated acceptors turned to fill their first shells."""
    if not ctx.water_blocks:
        return state
    others, dmin = _obstacles(state, ctx)
    shell = None
    if ctx.ion_blocks:  # ion first shells: per others atom (solutes, ions, hydration waters)
        ion = ion_water_shell(ctx)
        n_sol = len(others) - len(ion[0]) - len(ctx.shell_atoms)
        shell = np.zeros((3, len(others)))
        shell[:, n_sol:n_sol + len(ion[0])] = ion
    hyd = solute_shell_arrays(state.solutes) if ctx.opts.hydration else None  # hydrated acceptors (.hydration)
    if hyd is not None:
        if shell is None:
            shell = np.zeros((3, len(others)))
        shell[:, :hyd.shape[1]] = hyd
    for bi, blk in ctx.water_blocks:
        beads = state.cg[blk.start:blk.stop].reshape(-1, 3)
        state.water_beads[bi] = beads
        kw = {} if shell is None else dict(zip(("others_shell", "others_charge", "others_shell_n"), shell))
        w = _bank_place(ctx, beads, state.box, derive_seed(ctx.opts.seed, state.frame, 1_000_003, bi), others, dmin,
                        **kw)
        st = dict(getattr(ctx.model.water_bank, "last_stats", {}) or {})
        for key in ("unresolved", "contacts", "contact_dist"):  # per-item arrays: keep the report small
            st.pop(key, None)
        state.water_stats.append(st)
        wo = _water_atoms(blk, w)
        state.positions[blk.aa_block.start:blk.aa_block.start + len(wo)] = wo  # hydration shells follow
        others = np.concatenate([others, wo])
        if dmin is not None:
            from .water import MIN_DIST_OTHERS

            dmin = np.concatenate([dmin, np.full(len(wo), float(MIN_DIST_OTHERS))])
        if shell is not None:
            shell = np.concatenate([shell, np.zeros((3, len(wo)))], axis=1)
    return state


# ============================================================================ 8. polar H
def polar_h(state: FrameState, ctx: BackmapContext) -> FrameState:
    """Turn rotatable polar hydrogens towards acceptors of the complete environment, then
    re-project the molecules whose hydrogens turned (keeps ``state.x_pre`` for the undo)."""
    import torch

    from .moltype_model import RELAX_STIFFNESS
    from .place import relax_project
    from .system import orient_frame

    if not any(s.mm.rotors for s in state.solutes):
        return state
    state.x_pre = state.positions.copy()
    rng = np.random.default_rng(derive_seed(ctx.opts.seed, state.frame, 3_000_017))
    xf, moved = orient_frame(state.positions, state.box, ctx.topology, ctx.model, rng, ctx.opts.hbond_eps,
                             keep=state.hbond_keep)
    state.report.polar_h_reoriented = moved
    for s in state.solutes:
        if s.mm.rotors:
            blk = ctx.layout[s.bi]
            xs = xf[blk.aa_block.start:blk.aa_block.stop].reshape(s.x.shape)
            mv = np.flatnonzero(np.any(xs != s.x, axis=(1, 2)))  # molecules whose H turned
            if len(mv):
                s.x[mv] = relax_project(torch.as_tensor(xs[mv]), s.mm.matrix, s.mm.operator,
                                        torch.as_tensor(s.beads[mv]), s.mm.local_pairs,
                                        REPROJECT_ITERATIONS, RELAX_STIFFNESS).numpy()
            xf[blk.aa_block.start:blk.aa_block.stop] = s.x.reshape(-1, 3)
    state.positions = xf
    return state


# ============================================================================ 9. certificate
def _cg_deviation(state: FrameState) -> float:
    dev_max = float(max([v.get("max_cg_deviation_nm", 0.0) for v in state.report.per_moltype.values()
                         if v.get("kind") == "chain"] + [0.0]))
    for s in state.solutes:
        y = np.einsum("ba,nak->nbk", s.mm.matrix, s.x)
        dev_max = max(dev_max, float(np.abs(y - s.beads).max()) if len(y) else 0.0)
    return dev_max


def _undo_clashing_turns(state: FrameState, ctx: BackmapContext, pairs):
    """Undo the polar-hydrogen turn of solute molecules in a clash; returns the new pairs."""
    from .system import system_arrays, system_clashes

    ip, jp, is_w, _ = pairs
    xf, x_pre = state.positions, state.x_pre
    arr = system_arrays(ctx.topology, ctx.model)
    atoms = np.unique(np.concatenate([ip.ravel(), jp.ravel()])).astype(int)
    atoms = atoms[~is_w[atoms]]
    if not len(atoms):
        return pairs
    mols = np.unique(arr["mol"][atoms])
    undo = np.isin(arr["mol"], mols) & ~np.all(xf == x_pre, axis=1)
    touched = np.isin(arr["mol"], np.unique(arr["mol"][undo]))
    if not touched.any():
        return pairs
    xf[touched] = x_pre[touched]
    state.report.polar_h_reoriented_undone = int(len(np.unique(arr["mol"][touched])))
    for s in state.solutes:
        blk = ctx.layout[s.bi]
        s.x = xf[blk.aa_block.start:blk.aa_block.stop].reshape(s.x.shape).copy()
    return system_clashes(xf, state.box, ctx.topology, ctx.model, *_bounds(ctx.opts))


def _replace_clashing_water(state: FrameState, ctx: BackmapContext, pairs):
    """Re-place water beads with an atom still in a clash (e.g. H...H, which the bank's O-O
    test does not see) against everything else; returns (pairs, beads re-placed)."""
    from .system import system_clashes

    o, xf, replaced = ctx.opts, state.positions, 0
    for r in range(min(o.max_retries, WATER_REPLACE_ROUNDS) if ctx.water_blocks else 0):
        ip, is_w = pairs[0], pairs[2]
        atoms = np.unique(ip.ravel()) if len(ip) else np.zeros(0, int)
        atoms = atoms[is_w[atoms]]
        if not len(atoms):
            break
        for bi, blk in ctx.water_blocks:
            nat = blk.aa_block.moltype.n_atoms * 4  # atoms per bead
            lo = blk.aa_block.start
            sel = atoms[(atoms >= lo) & (atoms < lo + blk.count * nat)]  # bead waters (not hydration shells)
            if not len(sel):
                continue
            bead_ids = np.unique((sel - lo) // nat)
            mask = np.ones(ctx.topology.n_atoms, bool)
            for bid in bead_ids:
                mask[lo + bid * nat: lo + (bid + 1) * nat] = False
            dmin = _others_min_dist(ctx, mask)
            w = _bank_place(ctx, state.water_beads[bi][bead_ids], state.box,
                            derive_seed(o.seed, state.frame, 2_000_003 + r, bi), xf[mask], dmin, n_candidates=32)
            idx = (lo + bead_ids[:, None] * nat + np.arange(nat)).ravel()
            xf[idx] = _water_atoms(blk, w)
            replaced += len(bead_ids)
        pairs = system_clashes(xf, state.box, ctx.topology, ctx.model, *_bounds(o))
    return pairs, replaced


def _others_min_dist(ctx: BackmapContext, mask: np.ndarray):
    """Per atom of ``positions[mask]`` the water closest approach (nm), or None without ions."""
    if not ctx.ion_blocks:
        return None
    from .water import MIN_DIST_OTHERS

    d = np.full(ctx.topology.n_atoms, float(MIN_DIST_OTHERS))
    d[np.concatenate([np.arange(b.aa_block.start, b.aa_block.stop) for _, b in ctx.ion_blocks])] = ion_water_dist(ctx)
    return d[mask]


def final_certificate(state: FrameState, ctx: BackmapContext) -> FrameState:
    """CG deviation, system-wide clash search (undoing clashing hydrogen turns, re-placing
    clashing waters) and the final counts of the report."""
    from .system import system_clashes

    rep, o = state.report, ctx.opts
    rep.max_cg_deviation_nm = _cg_deviation(state)
    rep.thresholds["search_margin_nm"] = CLASH_MARGIN
    pairs = system_clashes(state.positions, state.box, ctx.topology, ctx.model, *_bounds(o))
    if state.x_pre is not None:
        pairs = _undo_clashing_turns(state, ctx, pairs)
    pairs, replaced = _replace_clashing_water(state, ctx, pairs)
    if ctx.water_blocks:
        rep.water = {"blocks": state.water_stats, "beads_replaced_after_clash_check": replaced}
    ip, jp, is_w, _ = pairs
    rep.inter_clash_pairs_final, rep.intra_clash_pairs_final = len(ip), len(jp)
    rep.water_clash_pairs_final = int((is_w[ip[:, 0]] | is_w[ip[:, 1]]).sum()) if len(ip) else 0
    return state


STEPS = (draw_chains, draw, place_ions, select_environment, resolve_clashes, stereo_repair, hbond_network, solvent, polar_h,
         final_certificate)

""":meth:`WaterBank.place <.bank.WaterBank.place>`: checks, spatial order, the two stages,
the float64 output and its statistics.  Lengths nm."""

from __future__ import annotations

import numpy as np

from multiscale.errors import MultiscaleError

from .arrays import _argsort_int, _pmap
from .beads import BeadStage
from .contacts import ContactSolver, _contact_stats
from .obstacles import Obstacles
from .params import (
    _BEAD_CELL,
    _SHIFT_RANGE,
    MIN_DIST_ATOMS,
    MIN_DIST_OO,
    MIN_DIST_OTHERS,
)
from .pbc import Box
from .rotations import _rotmat
from .shell import ShellIons, shell_pass

__all__ = ["place"]


def _check(bank, beads, box, max_retries, n_candidates, first_candidates, r_oo, r_at,
           contact_rounds, contact_candidates):
    """Checked bead positions (n, 3) float64 and :class:`~.pbc.Box`."""
    x = np.asarray(beads, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise MultiscaleError(f"W bead positions have shape {x.shape}: pass an (n, 3) "
                              "array in nm")
    if not np.all(np.isfinite(x)):
        raise MultiscaleError("W bead positions contain NaN/inf: check the CG frame")
    b = Box(box)
    if max_retries < 0 or n_candidates < 1 or first_candidates < 1:
        raise MultiscaleError("max_retries must be >= 0, n_candidates and "
                              "first_candidates >= 1")
    if not 0 <= r_at < bank.min_intra_atoms or contact_rounds < 0 or contact_candidates < 1:
        raise MultiscaleError(
            f"min_dist_atoms={r_at} nm must be >= 0 and below the closest approach of two "
            f"molecules inside a bank cluster ({bank.min_intra_atoms:.3f} nm), "
            "contact_rounds >= 0 and contact_candidates >= 1"
        )
    if not 0 < r_oo < bank.min_intra_oo:
        raise MultiscaleError(
            f"min_dist={r_oo} nm must be > 0 and below the closest O-O distance inside a "
            f"bank cluster ({bank.min_intra_oo:.3f} nm)"
        )
    if not b.ortho:  # the longest minimum-image question: two shifted units (contacts)
        b.check_width(r_at + 2 * bank._rho + 2 * _SHIFT_RANGE[1] + 0.01, "water placement")
    return x, b


def _empty_stats() -> dict:
    return dict(n_beads=0, n_initial_clash=0, n_unresolved=0, retries=0,
                clashing_after_retry=[], unresolved=np.zeros(0, dtype=np.int64),
                **_contact_stats(dict(), np.zeros((0, 2), dtype=np.int64), np.zeros(0),
                                 np.zeros(0, dtype=np.int64)),
                **_ion_stats(np.zeros(0, dtype=np.int64), None), **_SHELL0)


_SHELL0 = dict(n_shell_beads=0, n_shell_turned=0, shell_rounds=0)


def _sort_beads(x, b: Box, r_oo: float):
    """Spatial order of the beads (cache-friendly grids) and their wrapped positions."""
    L = b.lengths
    xw = b.wrap(x)
    nbc = np.maximum(np.floor(L / (_BEAD_CELL * r_oo)), 1).astype(np.int64)
    cell = np.minimum((xw * (nbc / L)).astype(np.int64), nbc - 1)
    order = _argsort_int((cell[:, 0] * nbc[1] + cell[:, 1]) * nbc[2] + cell[:, 2])
    return order, xw[order]


def _assemble(bank, x, order, kk, qq, moves):
    """Output (n, 12, 3) float64 in the caller's row order: bead order[i] of the sorted
    arrays is row i; moved molecules get their own orientation and centre of mass."""
    n = len(x)
    out = np.empty((n, 12, 3))
    src = np.empty(n, dtype=np.int64)
    src[order] = np.arange(n)
    step = 1 << 13  # chunks bound the temporaries, and spread over the threads

    def fill(i):
        rows = slice(i, min(i + step, n))
        j = src[rows]
        bank._coords(kk[j], qq[j], x[rows], out=out[rows])

    _pmap(fill, list(range(0, n, step)))
    if moves is not None and len(moves.ids):
        # moved molecules: own centre of mass (+ translation, zero sum per bead) and own
        # orientation of the bank molecule's rigid shape
        bead, w = moves.ids // 4, moves.ids % 4
        k, rows = kk[bead], order[bead]
        com = np.matmul(_rotmat(qq[bead]), bank._g64[k, w][:, :, None])[:, :, 0]
        com += x[rows]
        com += moves.t
        at = np.matmul(bank._v64[k, w], _rotmat(moves.q).transpose(0, 2, 1))
        at += com[:, None]
        out[rows[:, None], 3 * w[:, None] + np.arange(3)] = at
    return out


def _ion_stats(close: np.ndarray, dmin) -> dict:
    return dict(n_ion_close=len(close), ion_close=close, min_ion_dist=dmin)


def _ion_check(obst, out, near_rows) -> dict:
    """Molecules whose O is closer than its ``others_min_dist`` to an ion-like atom, on the
    float64 output (beads ``near_rows`` only: the others cannot reach)."""
    if obst is None or obst.ions is None or len(near_rows) == 0:
        return _ion_stats(np.zeros(0, dtype=np.int64), None)
    o = out[near_rows][:, 0::3].reshape(-1, 3)  # (rows * 4, 3) oxygens
    close = obst.ion_close(o)
    d, _ = obst.ions.query(o, k=1, distance_upper_bound=obst.r_max + 1e-4)
    mol = (4 * near_rows[:, None] + np.arange(4)).ravel()
    dmin = float(d.min()) if np.isfinite(d).any() else None
    return _ion_stats(mol[close], dmin)


def place(bank, beads, box, seed: int = 0, others=None, min_dist: float = MIN_DIST_OO,
          min_dist_others: float = MIN_DIST_OTHERS, max_retries: int = 5,
          n_candidates: int = 16, first_candidates: int = 8,
          min_dist_atoms: float = MIN_DIST_ATOMS, contact_rounds: int = 16,
          contact_candidates: int = 32, return_stats: bool = False, others_min_dist=None,
          others_shell=None, others_charge=None, others_shell_n=None):
    """See :meth:`.bank.WaterBank.place`."""
    r_oo, r_ot, r_at = float(min_dist), float(min_dist_others), float(min_dist_atoms)
    x, b = _check(bank, beads, box, max_retries, n_candidates, first_candidates, r_oo, r_at,
                  contact_rounds, contact_candidates)
    # the search runs in float32: widen the cut-off by a few float32 ulps of the box
    # (~2.5e-5 nm at 50 nm) so no pair the float64 output has below r_oo is missed
    r_grid = r_oo + 1e-6 + 5e-7 * b.size
    rng = np.random.default_rng(seed)
    n = len(x)
    if n == 0:
        bank.last_stats = _empty_stats()
        out = np.zeros((0, 4, 3, 3))
        return (out, bank.last_stats) if return_stats else out
    order, xs = _sort_beads(x, b, r_oo)
    xw32 = np.ascontiguousarray(xs.T, dtype=np.float32)  # (3, n), sorted beads
    # 'others', and the beads close enough to touch them
    # (the contact stage moves molecules up to a shift further out)
    obst, near, near_c = None, np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    if others is not None:
        obst = Obstacles(others, b, r_ot, others_min_dist, reach=bank.extent + _SHIFT_RANGE[1])
        if obst:
            near = obst.mark_near(xs, bank.extent)
            near_c = obst.mark_near(xs, bank.extent + _SHIFT_RANGE[1])
        else:
            obst = None
    del xs
    st = BeadStage(bank, rng, x, order, xw32, b, r_grid, obst, near)
    st.run(max_retries, n_candidates, first_candidates)
    shell = dict(_SHELL0)
    if others_shell is not None and obst is not None:
        ions = ShellIons(others, others_shell, others_charge, others_shell_n)
        if len(ions):
            shell = shell_pass(st, ions, r_grid)
    kk, qq, offender = st.kk, st.qq, st.offender
    moves, cst = None, {}
    left = np.zeros((0, 2), dtype=np.int64)
    left_oth = np.zeros(0, dtype=np.int64)
    if r_at > 0:
        solver = ContactSolver(bank, rng, kk, qq, xw32, b, r_at, r_grid, offender.copy(), obst,
                               near_c, contact_candidates)
        moves, cst, li, lj, left_oth, oo_bad = solver.run(contact_rounds)
        del solver
        offender[oo_bad] = True  # reported with the unresolved beads
        # sorted atom ids 12 * bead + k -> output atom 12 * row + k
        left = np.stack([12 * order[li // 12] + li % 12, 12 * order[lj // 12] + lj % 12], 1)
        left_oth = order[left_oth // 4] * 4 + left_oth % 4
    out = _assemble(bank, x, order, kk, qq, moves)
    flat = out.reshape(-1, 3)
    dv = b.min_image32(flat[left[:, 1]] - flat[left[:, 0]])
    dist = np.sqrt(np.einsum("ij,ij->i", dv, dv))
    unresolved = np.sort(order[np.flatnonzero(offender)])
    bank.last_stats = dict(n_beads=n, n_initial_clash=st.n_initial,
                           n_unresolved=len(unresolved), retries=st.retries,
                           clashing_after_retry=st.per_retry, unresolved=unresolved,
                           **_contact_stats(cst, left, dist, left_oth, r_at),
                           **_ion_check(obst, out, np.sort(order[near_c])), **shell)
    out = out.reshape(n, 4, 3, 3)
    return (out, bank.last_stats) if return_stats else out

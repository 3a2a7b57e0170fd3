"""Disulfide bonds of an amino-acid chain: which SG-SG bonds the topology has, their geometry, and
the SHAKE-like pass that brings a drawn pair of Cys side chains to bonded geometry before the exact
projection (:mod:`.draw`).  Lengths nm, angles as stated.
"""

from __future__ import annotations

import numpy as np

#: disulfide geometry the certificate accepts: SG-SG (nm), CB-SG-SG angle (deg), CB-SG-SG-CB |dihedral| (deg)
#: (CHARMM/amber equilibrium 0.204 nm, ~104 deg; protein structures: chi3 near +-90 deg)
DISULFIDE_BOND_NM, DISULFIDE_ANGLE_DEG, DISULFIDE_CHI3_DEG = (0.19, 0.22), (90.0, 120.0), (50.0, 130.0)
#: what :func:`close_disulfides` moves the SG atoms to: SG-SG length and CB-SG-SG angle (amber/CHARMM)
SS_BOND, SS_ANGLE = 0.204, np.deg2rad(104.0)


def _ss_cb_distance(b1: float, b2: float, chi3: float) -> float:
    """CB-CB' distance (nm) of CB-SG-SG'-CB' with CB-SG b1/b2, SG-SG :data:`SS_BOND`, angles :data:`SS_ANGLE`."""
    cb = np.array([0.0, 0.0, 0.0])
    sg = np.array([b1, 0.0, 0.0])
    sg2 = sg + SS_BOND * np.array([-np.cos(SS_ANGLE), np.sin(SS_ANGLE), 0.0])
    bc = (sg2 - sg) / np.linalg.norm(sg2 - sg)  # NeRF: CB' from CB, SG, SG'
    nrm = np.cross(sg - cb, bc)
    nrm /= np.linalg.norm(nrm)
    cb2 = sg2 + b2 * (-np.cos(SS_ANGLE) * bc + np.sin(SS_ANGLE) * np.cos(chi3) * np.cross(nrm, bc)
                      + np.sin(SS_ANGLE) * np.sin(chi3) * nrm)
    return float(np.linalg.norm(cb2 - cb))


def close_disulfides(x: np.ndarray, ss: np.ndarray, moltype_adj: list, M: np.ndarray, iterations: int = 60) -> None:
    """Moves SG and CB (its hydrogens with it) of every disulfide in place, x (C, n, 3) nm,
    ``ss`` (D, 4): SG, SG', CB, CB', towards the bonded geometry: SG-SG :data:`SS_BOND`,
    CB-SG-SG :data:`SS_ANGLE`, chi3 90 deg (as a CB-CB' distance), bonds and 1-3 distances to the
    backbone as drawn, and the side-chain bead's centre (``M`` (n_beads, n_atoms) weights) where it
    was.  Sweeps of pairwise distance corrections (SHAKE-like); the exact projection that follows
    keeps these distances."""
    if not len(ss):
        return
    for sg1, sg2, cb1, cb2 in ss.tolist():
        ca1, ca2 = (next(k for k in moltype_adj[cb] if k != sg and len(moltype_adj[k]) > 1 and k not in (sg1, sg2))
                    for cb, sg in ((cb1, sg1), (cb2, sg2)))
        # fixed anchors of each CB: its backbone neighbours (CA and CA's heavy neighbours N, C)
        anchors = {cb1: [ca1, *[k for k in moltype_adj[ca1] if k != cb1 and len(moltype_adj[k]) > 1]],
                   cb2: [ca2, *[k for k in moltype_adj[ca2] if k != cb2 and len(moltype_adj[k]) > 1]]}
        hyd = {cb: [k for k in moltype_adj[cb] if len(moltype_adj[k]) == 1] for cb in (cb1, cb2)}
        d = {p: np.linalg.norm(x[:, p[0]] - x[:, p[1]], axis=-1) for cb in (cb1, cb2) for p in
             [(a, cb) for a in anchors[cb]]}
        b1 = np.linalg.norm(x[:, sg1] - x[:, cb1], axis=-1)
        b2 = np.linalg.norm(x[:, sg2] - x[:, cb2], axis=-1)
        s13 = {ca: np.linalg.norm(x[:, ca] - x[:, sg], axis=-1) for ca, sg in ((ca1, sg1), (ca2, sg2))}
        d13 = [np.sqrt(b ** 2 + SS_BOND ** 2 - 2 * b * SS_BOND * np.cos(SS_ANGLE)) for b in (b1, b2)]
        dcb = np.array([_ss_cb_distance(u, v, np.pi / 2) for u, v in zip(b1.tolist(), b2.tolist())])
        cb_start = {cb: x[:, cb].copy() for cb in (cb1, cb2)}
        moving = {cb: [cb, sg] for cb, sg in ((cb1, sg1), (cb2, sg2))}
        beads = {cb: int(np.argmax(_dense(M[:, [sg]]).ravel())) for cb, sg in ((cb1, sg1), (cb2, sg2))}
        centre = {cb: np.einsum("a,cak->ck", _dense(M[[beads[cb]]]).ravel(), x) for cb in (cb1, cb2)}

        def fix(i, j, target, w_i):
            v = x[:, j] - x[:, i]
            dd = np.linalg.norm(v, axis=-1, keepdims=True).clip(1e-9)
            corr = (dd - target[:, None]) * v / dd
            x[:, i] += w_i * corr
            x[:, j] -= (1 - w_i) * corr

        for _ in range(iterations):
            fix(sg1, sg2, np.full(len(b1), SS_BOND), 0.5)
            fix(cb1, cb2, dcb, 0.5)
            fix(cb1, sg1, b1, 0.5)
            fix(cb2, sg2, b2, 0.5)
            fix(cb1, sg2, d13[0], 0.5)
            fix(cb2, sg1, d13[1], 0.5)
            fix(ca1, sg1, s13[ca1], 0.0)
            fix(ca2, sg2, s13[ca2], 0.0)
            for (a, cb), t in d.items():
                fix(a, cb, t, 0.0)
            for cb in (cb1, cb2):  # keep the side-chain bead where it is (its hydrogens move with CB below)
                w = _dense(M[[beads[cb]]]).ravel()
                wm = w[moving[cb]].sum() + w[hyd[cb]].sum()
                if wm > 0:
                    shift = (centre[cb] - np.einsum("a,cak->ck", w, x)) / wm
                    x[:, moving[cb]] += shift[:, None]
                    x[:, hyd[cb]] += shift[:, None]
                    cb_start[cb] = cb_start[cb] + shift
        for cb in (cb1, cb2):  # the CB hydrogens follow their carbon
            for h in hyd[cb]:
                x[:, h] += x[:, cb] - cb_start[cb]


def _ss_geometry(cb, sg, p_sg, p_cb):
    """SG-SG' length (nm), CB-SG-SG' and CB'-SG'-SG angles and |CB-SG-SG'-CB'| (deg) of disulfides
    given as (..., 3) positions."""
    from ..geometry import angle, dihedral

    return (np.linalg.norm(sg - p_sg, axis=-1), np.degrees(angle(cb, sg, p_sg)), np.degrees(angle(p_cb, p_sg, sg)),
            np.degrees(np.abs(dihedral(cb, sg, p_sg, p_cb))))


def _disulfides(moltype, adj: list | None = None) -> np.ndarray:
    """(D, 4) atom indices SG, SG', CB, CB' of every SG-SG bond of the moleculetype (``adj``: its
    bond adjacency when the caller has it)."""
    from ..graph import adjacency

    names = list(moltype.atom_names)
    bonds = np.asarray(moltype.bonds, int).reshape(-1, 2)
    adj = adj if adj is not None else adjacency(moltype.n_atoms, bonds)
    out = []
    for i, j in bonds.tolist():
        if names[i] == "SG" and names[j] == "SG":
            cb_i = [k for k in adj[i] if names[k] == "CB"]
            cb_j = [k for k in adj[j] if names[k] == "CB"]
            if cb_i and cb_j:
                out.append((i, j, cb_i[0], cb_j[0]))
    return np.array(out, int).reshape(-1, 4)


def _dense(a) -> np.ndarray:
    """A (small) slice of a dense or scipy sparse matrix as a dense array."""
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a)

"""Certificates of backmapped structures: stereocentres, cis/trans, clashes.

* Stereocentres (:func:`find_stereocentres`) and cis/trans bonds (:func:`find_double_bonds`:
  stereo C=C double bonds and amide/peptide C(=O)-N bonds) come from :mod:`multiscale.graph`, the
  same definitions ``multiscale evaluate`` scores.  Handedness = sign of the signed volume of the
  three lowest-index neighbours around the centre (:func:`chirality_signs`); cis = ``|torsion| <
  pi/2`` for the quadruple's substituents (:func:`cistrans_cis`).
* Reference states (:class:`StereoReference`) are the majority over training frames, with
  the agreement fraction; only features with agreement >= ``min_agreement`` are enforced.
* Clashes (:func:`find_clashes`): PBC neighbour search (orthorhombic: ``scipy.spatial.cKDTree`` on
  wrapped coordinates plus ghost images of the atoms near the faces, :func:`periodic_pairs`;
  triclinic (3, 3) boxes: :class:`multiscale.neighbours.PeriodicTree`, exact minimum image); intermolecular pairs closer than ``inter`` (0.08 nm),
  intramolecular pairs beyond 1-3 closer than ``intra`` (0.10 nm).
* Repairs of last resort: :func:`swap_substituents` (inverts a centre by exchanging two
  acyclic substituents with a C2 rotation about their bisector) and :func:`flip_double_bond`
  (rotates one side of a non-ring bond by pi).
* :class:`CertificateReport`: counts per check and per moltype; JSON-able.

Coordinates (..., n_atoms, 3) nm; numpy unless stated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from .. import graph as _graph
from ..geometry import box_lengths, is_orthorhombic, minimum_image, wrap
from ..graph import MolecularGraph
from ..neighbours import PeriodicTree

__all__ = ["periodic_pairs", "StereoReference", "find_stereocentres", "find_double_bonds", "chirality_signs", "cistrans_cis",
           "find_clashes", "swap_substituents", "flip_double_bond", "CertificateReport", "exclusion_matrix", "SparseExclusions",
           "branch_atoms"]


def find_stereocentres(n_atoms: int, bonds: np.ndarray, elements) -> tuple[np.ndarray, np.ndarray]:
    """Stereocentres of a molecule: (centres (nc,), neighbours (nc, 3) lowest-index three, sorted).

    The one definition of :meth:`multiscale.graph.MolecularGraph.stereocentres` (also scored by
    ``multiscale evaluate``)."""
    return MolecularGraph(n_atoms, bonds, elements).stereocentres()


def find_double_bonds(n_atoms: int, bonds: np.ndarray, elements) -> np.ndarray:
    """(nd, 4) torsion quadruples (x, a, b, y) of the cis/trans bonds a-b: stereo C=C double bonds
    and amide/peptide C(=O)-N bonds (omega as CA-C-N-CA), ordered by bond; see
    :meth:`multiscale.graph.MolecularGraph.cistrans_bonds` (also scored by ``multiscale evaluate``)."""
    return MolecularGraph(n_atoms, bonds, elements).cistrans_bonds()[0]


def chirality_signs(x: np.ndarray, centres: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Sign (+1/-1, 0 if flat) of each centre's signed volume: x (..., n, 3) -> (..., nc) int8."""
    return np.nan_to_num(_graph.chirality_signs(x, centres, neighbours), nan=0.0).astype(np.int8)


def cistrans_cis(x: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """True where the torsion x-a-b-y is cis (|phi| < pi/2): x (..., n, 3) -> (..., nd) bool."""
    return _graph.cis_states(x, quads) > 0


@dataclass
class StereoReference:
    """Reference stereo states of one moltype (majority over training frames).

    centres (nc,), neighbours (nc, 3), sign (nc,) int, agreement (nc,) fraction of training
    molecules with that sign; quads (nd, 4), cis (nd,) bool, cis_agreement (nd,).
    """

    centres: np.ndarray
    neighbours: np.ndarray
    sign: np.ndarray
    agreement: np.ndarray
    quads: np.ndarray
    cis: np.ndarray
    cis_agreement: np.ndarray
    min_agreement: float = 0.9
    #: (nc, 3, 3) the three other neighbour triples of a four-neighbour centre (each with the
    #: fourth neighbour; -1 rows for centres with three) and (nc, 3) their reference signs: a
    #: centre is right only when every face of its tetrahedron agrees (a distorted centre can
    #: keep one triple's sign with an inverted heavy-atom arrangement); empty in older files
    alt: np.ndarray = field(default_factory=lambda: np.zeros((0, 3, 3), int))
    alt_sign: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), int))
    #: (nd, 3, 4) the other substituent quadruples across each cis/trans bond (-1 rows where an
    #: end has one substituent) and (nd, 3) their reference cis states: likewise every pair counts
    alt_quads: np.ndarray = field(default_factory=lambda: np.zeros((0, 3, 4), int))
    alt_cis: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), bool))

    @classmethod
    def from_frames(cls, n_atoms, bonds, elements, x: np.ndarray, min_agreement: float = 0.9) -> StereoReference:
        """x: (N, n_atoms, 3) training molecules (whole)."""
        centres, nbs = find_stereocentres(n_atoms, bonds, elements)
        quads = find_double_bonds(n_atoms, bonds, elements)
        x = np.asarray(x, np.float64).reshape(-1, n_atoms, 3)
        alt = _alt_triples(n_atoms, bonds, centres, nbs)
        alt_sign = np.zeros(alt.shape[:2], int)
        if len(centres):
            s = chirality_signs(x, centres, nbs)
            pos = (s > 0).mean(0)
            sign = np.where(pos >= 0.5, 1, -1)
            agr = np.maximum(pos, 1 - pos)
            for k in range(3):
                has = alt[:, k, 0] >= 0
                if has.any():
                    sa = chirality_signs(x, centres[has], alt[has, k])
                    alt_sign[has, k] = np.where((sa > 0).mean(0) >= 0.5, 1, -1)
        else:
            sign, agr = np.zeros(0, int), np.zeros(0)
        alt_quads = _alt_quads(n_atoms, bonds, quads)
        alt_cis = np.zeros(alt_quads.shape[:2], bool)
        if len(quads):
            c = cistrans_cis(x, quads).mean(0)
            cis, cagr = c >= 0.5, np.maximum(c, 1 - c)
            for k in range(3):
                has = alt_quads[:, k, 0] >= 0
                if has.any():
                    alt_cis[has, k] = cistrans_cis(x, alt_quads[has, k]).mean(0) >= 0.5
        else:
            cis, cagr = np.zeros(0, bool), np.zeros(0)
        return cls(centres, nbs, sign.astype(int), agr, quads, cis, cagr, min_agreement, alt, alt_sign, alt_quads, alt_cis)

    @property
    def enforced_centres(self) -> np.ndarray:
        return np.flatnonzero(self.agreement >= self.min_agreement)

    @property
    def enforced_bonds(self) -> np.ndarray:
        return np.flatnonzero(self.cis_agreement >= self.min_agreement)

    def wrong(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per molecule wrong-centre and wrong-bond masks: x (B, n, 3) -> ((B, nc_e), (B, nd_e)) over enforced ones."""
        ec, eb = self.enforced_centres, self.enforced_bonds
        wc = np.zeros((len(x), len(ec)), bool)
        wb = np.zeros((len(x), len(eb)), bool)
        if len(ec):
            wc = chirality_signs(x, self.centres[ec], self.neighbours[ec]) != self.sign[ec]
            if len(self.alt):
                for k in range(3):
                    has = self.alt[ec, k, 0] >= 0
                    if has.any():
                        sa = chirality_signs(x, self.centres[ec][has], self.alt[ec, k][has])
                        wc[:, has] |= sa != self.alt_sign[ec, k][has]
        if len(eb):
            wb = cistrans_cis(x, self.quads[eb]) != self.cis[eb]
            if len(self.alt_quads):
                for k in range(3):
                    has = self.alt_quads[eb, k, 0] >= 0
                    if has.any():
                        wb[:, has] |= cistrans_cis(x, self.alt_quads[eb, k][has]) != self.alt_cis[eb, k][has]
        return wc, wb

    def to_dict(self) -> dict:
        return {"centres": self.centres.tolist(), "neighbours": self.neighbours.tolist(), "sign": self.sign.tolist(),
                "agreement": np.round(self.agreement, 6).tolist(), "quads": self.quads.tolist(),
                "cis": self.cis.tolist(), "cis_agreement": np.round(self.cis_agreement, 6).tolist(),
                "min_agreement": self.min_agreement, "alt": self.alt.tolist(), "alt_sign": self.alt_sign.tolist(),
                "alt_quads": self.alt_quads.tolist(), "alt_cis": self.alt_cis.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> StereoReference:
        return cls(np.array(d["centres"], int), np.array(d["neighbours"], int).reshape(-1, 3), np.array(d["sign"], int),
                   np.array(d["agreement"], float), np.array(d["quads"], int).reshape(-1, 4), np.array(d["cis"], bool),
                   np.array(d["cis_agreement"], float), float(d.get("min_agreement", 0.9)),
                   np.array(d.get("alt", []), int).reshape(-1, 3, 3), np.array(d.get("alt_sign", []), int).reshape(-1, 3),
                   np.array(d.get("alt_quads", []), int).reshape(-1, 3, 4), np.array(d.get("alt_cis", []), bool).reshape(-1, 3))


def _alt_quads(n_atoms: int, bonds: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """(nd, 3, 4): for a cis/trans bond a-b with quadruple (x, a, b, y) and second substituents
    x' of a and y' of b, the quadruples (x', a, b, y), (x, a, b, y'), (x', a, b, y'); -1 rows
    where a or b has no second substituent (a row is kept for whichever exists)."""
    out = np.full((len(quads), 3, 4), -1, int)
    if not len(quads):
        return out
    adj = [set(a) for a in _graph.adjacency(n_atoms, bonds)]
    for k, (x, a, b, y) in enumerate(np.asarray(quads, int)):
        xs = sorted(adj[a] - {int(b), int(x)})
        ys = sorted(adj[b] - {int(a), int(y)})
        if xs:
            out[k, 0] = [xs[0], a, b, y]
        if ys:
            out[k, 1] = [x, a, b, ys[0]]
        if xs and ys:
            out[k, 2] = [xs[0], a, b, ys[0]]
    return out


def _alt_triples(n_atoms: int, bonds: np.ndarray, centres: np.ndarray, nbs: np.ndarray) -> np.ndarray:
    """(nc, 3, 3): for a centre with a fourth neighbour d beside its triple (a, b, c), the triples
    (a, b, d), (a, c, d), (b, c, d); -1 rows otherwise."""
    out = np.full((len(centres), 3, 3), -1, int)
    if not len(centres):
        return out
    adj = [set(a) for a in _graph.adjacency(n_atoms, bonds)]
    for k, (c, t) in enumerate(zip(centres, nbs)):
        rest = sorted(adj[int(c)] - set(int(v) for v in t))
        if len(rest) == 1:
            a, b, cc = (int(v) for v in t)
            d = rest[0]
            out[k] = [[a, b, d], [a, cc, d], [b, cc, d]]
    return out


# ---------------------------------------------------------------------- repairs
def branch_atoms(n_atoms: int, bonds: np.ndarray, centre: int, start: int) -> np.ndarray | None:
    """Atoms reachable from ``start`` without passing ``centre``; None if that reaches back to
    another neighbour of ``centre`` (the branch is part of a ring through the centre)."""
    return MolecularGraph(n_atoms, bonds, ["X"] * int(n_atoms)).side(centre, start)


def swap_substituents(x: np.ndarray, n_atoms: int, bonds: np.ndarray, centre: int) -> np.ndarray | None:
    """Invert ``centre`` in molecules x (B, n, 3) by exchanging its two smallest acyclic
    substituents (C2 rotation about their bisector through the centre).  Returns the new
    coordinates, or None if fewer than two substituents are acyclic."""
    g = MolecularGraph(n_atoms, bonds, ["X"] * int(n_atoms))
    branches = []
    for nb in g.adj[centre]:
        br = g.side(centre, nb)
        if br is not None:
            branches.append((len(br), nb, br))
    if len(branches) < 2:
        return None
    branches.sort(key=lambda t: (t[0], t[1]))
    (_, u, bu), (_, v, bv) = branches[:2]
    x = np.array(x, np.float64, copy=True)
    c = x[:, centre]
    eu = x[:, u] - c
    ev = x[:, v] - c
    eu /= np.linalg.norm(eu, axis=-1, keepdims=True)
    ev /= np.linalg.norm(ev, axis=-1, keepdims=True)
    e = eu + ev
    e /= np.linalg.norm(e, axis=-1, keepdims=True).clip(1e-12)
    R = 2 * e[:, :, None] * e[:, None, :] - np.eye(3)  # symmetric C2 rotation
    idx = np.concatenate([bu, bv])
    rel = x[:, idx] - c[:, None]
    x[:, idx] = np.einsum("bij,baj->bai", R, rel) + c[:, None]
    return x


def flip_double_bond(x: np.ndarray, n_atoms: int, bonds: np.ndarray, a: int, b: int) -> np.ndarray | None:
    """Rotate the smaller side of bond a-b by pi about it (x (B, n, 3)); None if a-b is in a ring."""
    g = MolecularGraph(n_atoms, bonds, ["X"] * int(n_atoms))
    sa = g.side(b, a)
    sb = g.side(a, b)
    if sa is None or sb is None:
        return None
    side, pivot, other = (sb, b, a) if len(sb) <= len(sa) else (sa, a, b)
    side = side[side != pivot]
    x = np.array(x, np.float64, copy=True)
    k = x[:, pivot] - x[:, other]
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    R = 2 * k[:, :, None] * k[:, None, :] - np.eye(3)  # rotation by pi about k
    rel = x[:, side] - x[:, pivot][:, None]
    x[:, side] = np.einsum("bij,baj->bai", R, rel) + x[:, pivot][:, None]
    return x


# ---------------------------------------------------------------------- clashes
#: molecules with more atoms than this get a sparse exclusion table (:class:`SparseExclusions`):
#: a dense one is n^2 bytes (256 MB for a 1,000-residue chain)
DENSE_EXCLUSIONS_MAX = 2000


class SparseExclusions:
    """Pairs within ``nrexcl`` bonds of a large molecule, looked up like a dense (n, n) bool matrix
    with index arrays: ``ex[i, j]`` -> bool array (identical atoms count as excluded)."""

    def __init__(self, n_atoms: int, pairs: np.ndarray):
        self.n = int(n_atoms)
        p = np.asarray(pairs, np.int64).reshape(-1, 2)
        self.keys = np.unique(np.minimum(p[:, 0], p[:, 1]) * self.n + np.maximum(p[:, 0], p[:, 1]))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, ij) -> np.ndarray:
        i, j = (np.asarray(a, np.int64) for a in ij)
        key = np.minimum(i, j) * self.n + np.maximum(i, j)
        pos = np.searchsorted(self.keys, key).clip(max=max(len(self.keys) - 1, 0))
        hit = self.keys[pos] == key if len(self.keys) else np.zeros(key.shape, bool)
        return hit | (i == j)


def exclusion_matrix(n_atoms: int, bonds: np.ndarray, nrexcl: int = 2):
    """(n, n) bool: pairs within ``nrexcl`` bonds (1-2, 1-3 for 2) or identical; for molecules of more
    than :data:`DENSE_EXCLUSIONS_MAX` atoms the same lookup as a :class:`SparseExclusions`."""
    g = MolecularGraph(n_atoms, bonds, ["X"] * int(n_atoms))
    if n_atoms > DENSE_EXCLUSIONS_MAX:
        return SparseExclusions(n_atoms, g.excluded_pairs(nrexcl))
    return g.exclusion_matrix(nrexcl)


def periodic_pairs(xw: np.ndarray, box: np.ndarray, r: float) -> np.ndarray:
    """All pairs (i < j) of wrapped points xw (N, 3) closer than ``r`` (periodic).

    box: (3,) edge lengths (points in [0, box)) or (3, 3) box vectors.  Orthorhombic: a plain
    KD-tree on the points plus ghost copies of the atoms within ``r`` of a face (about 2x faster
    than scipy's periodic ``boxsize`` tree; requires box > 2 r).  Triclinic:
    :class:`multiscale.neighbours.PeriodicTree` (ghost images of the parallelepiped).
    """
    from scipy.spatial import cKDTree

    if not is_orthorhombic(box):
        return PeriodicTree(xw, box, r).query_pairs(r)
    box = box_lengths(box)
    n = len(xw)
    if n == 0:
        return np.zeros((0, 2), int)
    pts, src = [xw], [np.arange(n)]
    for k in range(3):  # images across each face (edges/corners via successive passes)
        cur = np.concatenate(pts)
        cs = np.concatenate(src)
        lo = cur[:, k] < r
        hi = cur[:, k] >= box[k] - r
        for m, sh in ((lo, box[k]), (hi, -box[k])):
            if m.any():
                g = cur[m].copy()
                g[:, k] += sh
                pts.append(g)
                src.append(cs[m])
    allp = np.concatenate(pts)
    alls = np.concatenate(src)
    tree = cKDTree(allp, balanced_tree=False, compact_nodes=False)
    pr = tree.query_pairs(r, output_type="ndarray")
    if len(allp) > n:
        pr = pr[(pr[:, 0] < n) | (pr[:, 1] < n)]  # at least one real atom
        i, j = alls[pr[:, 0]], alls[pr[:, 1]]
        keep = i != j
        i, j = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
        key = np.unique(i.astype(np.int64) * n + j)
        return np.stack([key // n, key % n], 1)
    return np.sort(pr, axis=1)


def find_clashes(x: np.ndarray, box: np.ndarray, molecule: np.ndarray, local: np.ndarray, kind: np.ndarray,
                 exclusions: list[np.ndarray], inter: float = 0.08, intra: float = 0.10,
                 workers: int = 1, subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Clashing atom pairs of one frame.

    x: (N, 3) nm (any image); box: (3,) nm edge lengths or (3, 3) box vectors (triclinic, exact
    minimum image); molecule: (N,) global molecule id; local: (N,)
    atom index within its molecule; kind: (N,) index into ``exclusions`` (one (n, n) bool
    matrix per molecule type, True = excluded pair).
    subset: only pairs with at least one atom in these indices (a periodic KD-tree query of
    just those atoms: cheap when few atoms moved).
    Returns (inter_pairs (P, 2), intra_pairs (Q, 2)) atom indices, i < j.
    """
    box = np.asarray(box, np.float64)
    ortho = is_orthorhombic(box)
    if ortho:
        box = box_lengths(box)
        xw = np.mod(np.asarray(x, np.float64), box)
        xw[xw >= box] = 0.0
    else:
        xw = wrap(np.asarray(x, np.float64), box)
    r = max(inter, intra)
    if subset is None:
        pairs = periodic_pairs(xw, box, r)
    else:
        subset = np.asarray(subset, int)
        if not len(subset):
            return np.zeros((0, 2), int), np.zeros((0, 2), int)
        if ortho:
            from scipy.spatial import cKDTree

            tree = cKDTree(xw, boxsize=box, balanced_tree=False, compact_nodes=False)
            nb = tree.query_ball_point(xw[subset], r, return_sorted=False)
        else:
            nb = PeriodicTree(xw, box, r).query_ball_point(xw[subset], r)
        cnt = np.fromiter((len(v) for v in nb), int, len(nb))
        jj = np.fromiter((j for v in nb for j in v), int, int(cnt.sum()))
        ii = np.repeat(subset, cnt)
        m = ii != jj
        a_, b_ = np.minimum(ii[m], jj[m]), np.maximum(ii[m], jj[m])
        key = np.unique(a_.astype(np.int64) * len(xw) + b_)
        pairs = np.stack([key // len(xw), key % len(xw)], 1)
    if not len(pairs):
        return np.zeros((0, 2), int), np.zeros((0, 2), int)
    i, j = pairs[:, 0], pairs[:, 1]
    d = xw[j] - xw[i]
    if ortho:
        d -= box * np.round(d / box)
    else:
        d = minimum_image(d, box)
    dist = np.sqrt((d * d).sum(-1))
    same = molecule[i] == molecule[j]
    inter_p = pairs[~same & (dist < inter)]
    s = same & (dist < intra)
    if s.any():
        ii, jj = i[s], j[s]
        k = kind[ii]
        excl = np.zeros(len(ii), bool)
        for kk in np.unique(k):  # per moltype kind: a dense matrix or a SparseExclusions
            m = k == kk
            excl[m] = exclusions[kk][local[ii[m]], local[jj[m]]]
        intra_p = pairs[s][~excl]
    else:
        intra_p = np.zeros((0, 2), int)
    return inter_p, intra_p


# ---------------------------------------------------------------------- report
@dataclass
class CertificateReport:
    """Certification counts of one backmapped frame.

    per_moltype: {name: {molecules, stereocentres, stereo_wrong_initial, stereo_wrong_final,
    stereo_swapped, double_bonds, cistrans_wrong_initial, cistrans_wrong_final, cistrans_flipped,
    clash_molecules_initial, clash_molecules_final, resampled, unresolved}}; global counts
    of clashing pairs (initial = first placement, final = returned structure), retries used,
    max deviation of mapped centres from the CG beads (nm), water placement stats, number of
    polar hydrogens turned towards acceptors, hydrogen-bond pairs pulled together by the
    network step (and those put back), molecules pushed apart after the resampling, timings.
    """

    frame: int = 0
    per_moltype: dict = field(default_factory=dict)
    inter_clash_pairs_initial: int = 0
    intra_clash_pairs_initial: int = 0
    inter_clash_pairs_final: int = 0
    intra_clash_pairs_final: int = 0
    water_clash_pairs_final: int = 0
    polar_h_reoriented: int = 0
    polar_h_reoriented_undone: int = 0
    environment_selected: int = 0
    hbond_pairs: int = 0
    hbond_pairs_undone: int = 0
    retries: int = 0
    #: molecules whose leftover intermolecular clashes were pushed apart (:func:`.resolve.separate`)
    separated: int = 0
    max_cg_deviation_nm: float = 0.0
    water: dict = field(default_factory=dict)
    seconds: float = 0.0
    thresholds: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no stereo/cis-trans error, no bad disulfide and no clash remains."""
        bad = sum(v.get("stereo_wrong_final", 0) + v.get("cistrans_wrong_final", 0) + v.get("bad_disulfides_final", 0)
                  for v in self.per_moltype.values())
        return bad == 0 and self.inter_clash_pairs_final == 0 and self.intra_clash_pairs_final == 0

    def to_dict(self) -> dict:
        def conv(o):
            if isinstance(o, dict):
                return {str(k): conv(v) for k, v in o.items()}
            if isinstance(o, (list, tuple)):
                return [conv(v) for v in o]
            if isinstance(o, np.ndarray):
                return conv(o.tolist())
            if isinstance(o, (np.integer,)):
                return int(o)
            if isinstance(o, (np.floating,)):
                return float(o)
            if isinstance(o, (np.bool_,)):
                return bool(o)
            return o

        d = {k: conv(v) for k, v in self.__dict__.items()}
        d["ok"] = self.ok
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def summary(self) -> str:
        lines = [f"certificate frame {self.frame}: {'OK' if self.ok else 'ISSUES'} "
                 f"(max CG deviation {self.max_cg_deviation_nm:.1e} nm, retries {self.retries}, {self.seconds:.2f} s)"]
        for name, v in self.per_moltype.items():
            lines.append(
                f"  {name} x{v.get('molecules', 0)}: stereo {v.get('stereocentres', 0)}/mol wrong "
                f"{v.get('stereo_wrong_initial', 0)} -> {v.get('stereo_wrong_final', 0)} (swapped {v.get('stereo_swapped', 0)}); "
                f"cis/trans {v.get('double_bonds', 0)}/mol wrong {v.get('cistrans_wrong_initial', 0)} -> "
                f"{v.get('cistrans_wrong_final', 0)}; clashing molecules {v.get('clash_molecules_initial', 0)} -> "
                f"{v.get('clash_molecules_final', 0)}; resampled {v.get('resampled', 0)}"
                + (f"; chemistry first {v['chemistry_first_copies']} (beads out of reach of an L, trans chain: "
                   f"{v.get('beads_missed', 0)} left > 0.01 nm off)" if v.get("chemistry_first_copies") else ""))
        lines.append(f"  clash pairs inter {self.inter_clash_pairs_initial} -> {self.inter_clash_pairs_final}, "
                     f"intra {self.intra_clash_pairs_initial} -> {self.intra_clash_pairs_final}, "
                     f"involving water {self.water_clash_pairs_final}"
                     + (f"; molecules pushed apart {self.separated}" if self.separated else ""))
        return "\n".join(lines)

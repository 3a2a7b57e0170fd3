"""Drawing amino-acid chains on their Martini beads with a :class:`~.model.ChainModel`.

:func:`draw_chains` places all copies of one chain moleculetype at once: the backbone trace
along the chain (one density call per residue position, batched over copies; cis omega before
a non-Pro residue rejected), the residues' decoration per kind (batched over every residue of that
kind in every copy; wrong chirality rejected), the terminal extras, the exact projection onto
the beads, then rounds that redraw the decoration of residues with a wrong centre or an
intramolecular clash.  Lengths nm, angles rad; deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .disulfides import (
    DISULFIDE_ANGLE_DEG,
    DISULFIDE_BOND_NM,
    DISULFIDE_CHI3_DEG,
    SS_ANGLE,
    SS_BOND,
    _disulfides,
    _ss_geometry,
    close_disulfides,
)
from .model import ChainGeometry, ChainModel, backbone_build, backbone_features, decoration_features
from .residues import Residue, place_extras

#: candidate draws per backbone step / per residue decoration
BACKBONE_CANDIDATES = 16
#: partial backbone traces kept per chain (beam search, :meth:`ChainDrawer._backbone`)
BEAM = 8
#: backbone candidates are weighted by exp(-((d - BB_OFFSET)+ / BB_SIGMA)^2 / 2), d: distance of the
#: centre of N, CA, C from the BB bead (nm; peptide MD: 0.058-0.065 +- 0.008, max 0.086), times the
#: same factor for CA's distance from the BB bead outside CA_BB_RANGE (MD: 0.106 +- 0.01 nm), for the
#: current residue and (look-ahead over psi) the next one (:meth:`ChainDrawer._score`)
BB_OFFSET, BB_SIGMA = 0.07, 0.015
CA_BB_RANGE = (0.065, 0.13)
#: a backbone step whose best candidate has a log weight below WIDEN_BELOW (2 sigma off) draws
#: another BACKBONE_CANDIDATES at each of these temperature factors until one fits
WIDEN_BELOW, WIDEN_TEMPERATURES = -2.0, (1.5, 2.0, 3.0)
#: the grid fallback's geometry (amber99sb-ildn equilibrium values): bonds C-N, N-CA, CA-C (nm);
#: angles CA-C-N, C-N-CA, N-CA-C (deg)
IDEAL_BONDS, IDEAL_ANGLES = (0.1335, 0.1449, 0.1522), (116.6, 121.9, 110.1)
DECORATION_CANDIDATES = 6
#: candidates per residue for a group with a disulfide Cys (the one closest to the bonded geometry with its partner wins)
DISULFIDE_CANDIDATES = 48
#: rounds of redrawing the decoration of residues that still clash or have a wrong centre, then
#: whole-chain redraws of copies that still have a problem (for chains longer than WHOLE_RETRY_RESIDUES
#: only copies with a cis non-Pro peptide bond, which no local redraw fixes: redrawing hundreds of
#: residues for a few clashing side chains costs more than it gains)
REDRAW_ROUNDS, CHAIN_RETRIES, WHOLE_RETRY_RESIDUES = 8, 2, 100
#: after a chemistry-first draw (:meth:`ChainDrawer._chemistry_first`), beads closer than this to
#: their target are put exactly on it; the others are left where the residue's geometry allows
SNAP_TOLERANCE_NM = 0.01
#: a stereocentre counts as right only when every face of its neighbours has a normalised volume of
#: the right sign above this (ideal tetrahedron 0.77, AA MD >= 0.52; an Arg CA at 1e-4 passed the
#: sign test and came out distorted once its .gro was rounded to 0.001 nm)
CENTRE_MARGIN = 0.1
#: iterations / stiffness of the geometry-preserving exact projection (multiscale.backmap.place.relax_project)
RELAX_ITERATIONS, RELAX_STIFFNESS = 12, 1.8
#: the projection's shape matching of centres and peptide bonds (:meth:`ChainDrawer._rigid_groups`) takes
#: half its move per sweep: trpcage bond score 0.997 (full move: 0.994), 0 cis / D in either case
RIGID_WEIGHT = 0.5
#: smoothing of the exact projection (spreads the correction along bonds, see place.projection_operator);
#: dense solve, so only for chains up to this many atoms (larger: the plain minimum-norm projection)
SMOOTHING, SMOOTH_MAX_ATOMS = 10.0, 2500


@dataclass
class ChainDrawReport:
    """What drawing one chain moleculetype did: counts summed over copies."""

    copies: int = 0
    residues: int = 0
    cis_redrawn: int = 0
    widened_steps: int = 0
    grid_steps: int = 0
    cis_forced_trans: int = 0
    wrong_centres_after_draw: int = 0
    redrawn_residues: int = 0
    chains_redrawn: int = 0
    wrong_centres_final: int = 0
    clashing_residues_final: int = 0
    cis_nonpro_final: int = 0
    disulfides: int = 0
    bad_disulfides_final: int = 0
    max_cg_deviation_nm: float = 0.0
    chemistry_first_copies: int = 0
    beads_missed: int = 0
    rounds: list = field(default_factory=list)


class ChainDrawer:
    """Static arrays of one chain moleculetype for repeated draws (one per frame)."""

    def __init__(self, model: ChainModel, moltype, chain_mapping, residues: list[Residue], clash_intra: float = 0.10,
                 chemistry_first: bool = True):
        from ..backmap.certify import exclusion_matrix
        from ..backmap.place import projection_operator, sparse_projection_operator

        residues = [replace(r, kind=model.resolve_kind(r)) for r in residues]
        missing = model.missing_kinds(residues)
        if missing:
            from ..errors import MultiscaleError

            raise MultiscaleError(f"moleculetype {moltype.name}: the chain model ({model.naming} names) has no residue "
                                  f"kind(s) {', '.join(missing)} with these atoms: train a chain model on data that "
                                  "contains them (multiscale train on an AA trajectory of this protein)")
        self.model, self.moltype, self.residues = model, moltype, residues
        self.chemistry_first = chemistry_first  # False: every copy exactly on its beads, whatever its chemistry
        self.geo = ChainGeometry.from_residues(residues)
        n = moltype.n_atoms
        if n <= SMOOTH_MAX_ATOMS:  # smoothed projection: dense solve
            self.M = chain_mapping.dense()
            self.A = projection_operator(self.M, moltype.bonds, SMOOTHING)
        else:  # long chains: sparse M and minimum-norm A, linear in the chain length
            self.M = chain_mapping.weights.tocsr()
            self.A = sparse_projection_operator(self.M, moltype.bonds)
        self.by_kind: dict = {}
        for i, r in enumerate(residues):  # grouped by kind and by the kind's atoms the residue lacks
            km = model.kinds[r.kind]
            lacks = tuple(nm for nm in km.names if nm not in set(r.core_names))
            self.by_kind.setdefault((r.kind, lacks), []).append(i)
        #: per residue kind, its stereocentres' four template neighbours (:meth:`wrong_centres`)
        self.four_neighbours = {kind: _four_neighbours(model.kinds[kind]) for kind, _ in self.by_kind}
        #: per (kind, lacked atoms): (k, n_core) atom indices of its residues in template order, a lacked
        #: atom (in no stereocentre) replaced by the residue's CA (:meth:`wrong_centres`)
        self.centre_atoms = {}
        for key, idx in self.by_kind.items():
            core = np.stack([self._template_atoms(model.kinds[key[0]], i) for i in idx])
            self.centre_atoms[key] = np.where(core >= 0, core, np.array([residues[i].ca for i in idx])[:, None])
        self.keep_pairs = _kept_pairs(moltype, residues)
        from ..graph import MolecularGraph

        self.rings = [np.asarray(r, int) for r in MolecularGraph(n, moltype.bonds, moltype.elements).rings()]
        self.bonds = np.asarray(moltype.bonds, int).reshape(-1, 2)
        self.clash_intra = float(clash_intra)
        self.excl = exclusion_matrix(n, moltype.bonds, 2)  # as the certificate: 1-4 pairs count
        self.res_of_atom = np.empty(n, int)
        for i, r in enumerate(residues):
            self.res_of_atom[r.core] = i
            for a, _ in r.extras:
                self.res_of_atom[a] = i
        from ..graph import adjacency

        self.adj = adjacency(n, self.bonds)
        self.disulfides = _disulfides(moltype, self.adj)
        # residue -> (its SG, its CB, partner SG, partner CB) atom indices; the second of each pair
        self.ss_partner = {}
        for sg1, sg2, cb1, cb2 in self.disulfides.tolist():
            self.ss_partner[int(self.res_of_atom[sg1])] = (sg1, cb1, sg2, cb2)
            self.ss_partner[int(self.res_of_atom[sg2])] = (sg2, cb2, sg1, cb1)
        self.ss_second = {int(self.res_of_atom[sg2]) for _, sg2, _, _ in self.disulfides.tolist()}
        self.rigid = self._rigid_groups()

    def _rigid_groups(self) -> list:
        """Atom groups the projection keeps at their drawn shape (:func:`~multiscale.backmap.place.relax_project`
        ``rigid``): every stereocentre of the residue templates with its bonded neighbours, and every
        peptide bond C(i)-N(i+1) with the atoms bonded to C and N.  Without them the projection and
        the redraw rounds (each projects the whole chain again) twist peptide bonds cis and flatten
        or invert centres."""
        groups = []
        for (kind, _lacks), idx in self.by_kind.items():
            km = self.model.kinds[kind]
            for i in idx:
                core = self._template_atoms(km, i)
                groups += [[int(c), *sorted(self.adj[int(c)])] for c in core[np.asarray(km.centres, int)] if c >= 0]
        g = self.geo
        for c, n in zip(g.c[:-1], g.n[1:]):
            if int(n) in self.adj[int(c)]:  # not across a chain break
                groups.append(sorted({int(c), int(n), *self.adj[int(c)], *self.adj[int(n)]}))
        return groups

    # ------------------------------------------------------------------ backbone
    def _step_candidates(self, i, prefix, b, gen, temperature: float, rep: ChainDrawReport):
        """R candidate (N, CA, C) of residue i (R, C, 3, 3) and their log weights (R, C)."""
        import torch

        geo, C, R = self.geo, b.shape[0], BACKBONE_CANDIDATES
        dens = self.model.start if i == 0 else self.model.extend
        f = backbone_features(prefix, b, geo, i)
        bo, an, to = (v.reshape(R, C, 3) for v in dens.sample(f, gen, temperature=temperature, repeats=R))
        ok = torch.ones(R, C, dtype=torch.bool, device=b.device)
        if i > 0 and self.residues[i].kind != "PRO":
            ok = to[:, :, 1].abs() > np.pi / 2  # (R, C) trans omega
            rep.cis_redrawn += int((~ok).sum())
            none = ~ok.any(0)
            if none.any():
                to[0, none, 1] = np.pi
                ok[0, none] = True
                rep.cis_forced_trans += int(none.sum())
        cand = backbone_build(prefix.repeat(R, 1, 1), bo.reshape(R * C, 3), an.reshape(R * C, 3),
                              to.reshape(R * C, 3)).reshape(R, C, 3, 3)
        logw = self._score(cand, i, b)
        return cand, torch.where(ok, logw, torch.full_like(logw, -torch.inf))

    def _score(self, cand, i: int, b):
        """Log weight (K, C) of candidate (N, CA, C) of residue i (K, C, 3, 3): keeps the trace on the
        beads.  Terms (each -0.5 (excess / BB_SIGMA)^2): centre of N, CA, C within BB_OFFSET of the
        BB bead; CA within CA_BB_RANGE of it; look-ahead: some psi(i) puts CA(i+1) (ideal geometry,
        trans) within CA_BB_RANGE of the next BB bead."""
        import torch

        from ..backmap.ictree import _nerf

        geo = self.geo
        bb = b[:, geo.bb[i]]
        d = torch.linalg.norm(cand.mean(2) - bb, dim=-1)
        dca = torch.linalg.norm(cand[:, :, 1] - bb, dim=-1)
        ex = (d - BB_OFFSET).clamp(min=0) ** 2 + _outside(dca, CA_BB_RANGE) ** 2
        if i + 1 < len(self.residues):
            K, C = cand.shape[:2]
            psi = torch.deg2rad(torch.arange(-180.0, 180.0, 30.0, dtype=cand.dtype, device=cand.device))
            P = len(psi)
            n0, ca0, c0 = (cand[:, :, k].unsqueeze(0).expand(P, K, C, 3) for k in range(3))
            tor = psi[:, None, None].expand(P, K, C)
            one = torch.ones_like(tor)
            n1 = _nerf(n0, ca0, c0, one * IDEAL_BONDS[0], one * np.deg2rad(IDEAL_ANGLES[0]), tor)
            ca1 = _nerf(ca0, c0, n1, one * IDEAL_BONDS[1], one * np.deg2rad(IDEAL_ANGLES[1]), one * np.pi)
            d1 = torch.linalg.norm(ca1 - b[:, geo.bb[i + 1]], dim=-1)  # (P, K, C)
            ex = ex + (_outside(d1, CA_BB_RANGE).min(0).values) ** 2
        return -0.5 * ex / BB_SIGMA ** 2

    def _grid_candidates(self, i, prefix, b):
        """(psi(i-1), phi(i)) on a 20-degree grid, ideal bonds/angles, omega 180: (G, C, 3, 3), log weights (G, C)."""
        import torch

        C = b.shape[0]
        g = torch.deg2rad(torch.arange(-180.0, 180.0, 20.0, dtype=torch.float64, device=b.device))
        psi, phi = torch.meshgrid(g, g, indexing="ij")
        G = psi.numel()
        tors = torch.stack([psi.reshape(-1), torch.full((G,), np.pi, dtype=torch.float64, device=b.device),
                            phi.reshape(-1)], -1)
        bonds = torch.tensor(IDEAL_BONDS, dtype=torch.float64, device=b.device).expand(G * C, 3)
        angles = torch.deg2rad(torch.tensor(IDEAL_ANGLES, dtype=torch.float64, device=b.device)).expand(G * C, 3)
        cand = backbone_build(prefix.repeat(G, 1, 1), bonds, angles, tors.repeat_interleave(C, 0)).reshape(G, C, 3, 3)
        return cand, self._score(cand, i, b)

    def _backbone(self, x, b, gen, temperature: float, rep: ChainDrawReport) -> None:
        """N, CA, C of every residue, along the chain, by a stochastic beam search: BEAM partial traces
        per chain, each extended by BACKBONE_CANDIDATES draws of the density (plus draws at higher
        temperatures, then a psi/phi grid, where none fits the beads), the next beams drawn without
        replacement by Gumbel-top-k on the summed log weights (:meth:`_score`)."""
        import torch

        geo, C, K, dev = self.geo, b.shape[0], BEAM, b.device
        R = len(self.residues)
        bk = b.repeat(K, 1, 1)  # (K*C, nb, 3), beam-major
        trace = torch.zeros(K, C, R, 3, 3, dtype=torch.float64, device=dev)
        cum = torch.zeros(K, C, dtype=torch.float64, device=dev)
        cum[1:] = -torch.inf  # one live beam at the start
        for i in range(R):
            if i == 0:
                prefix = bk[:, [geo.bb[2], geo.bb[1], geo.bb[0]]]
            else:
                prefix = trace[:, :, i - 1].reshape(K * C, 3, 3)
            cand, logw = self._step_candidates(i, prefix, bk, gen, temperature, rep)
            for t_extra in WIDEN_TEMPERATURES:
                poor = (logw.max(0).values < WIDEN_BELOW).reshape(K, C).all(0)
                if not poor.any():
                    break
                rep.widened_steps += int(poor.sum())
                c2, l2 = self._step_candidates(i, prefix, bk, gen, temperature * t_extra, rep)
                cand, logw = torch.cat([cand, c2], 0), torch.cat([logw, l2], 0)
            poor = (logw.max(0).values < WIDEN_BELOW).reshape(K, C).all(0)
            if i > 0 and poor.any():  # last resort: a psi/phi grid with ideal geometry and trans omega
                rep.grid_steps += int(poor.sum())
                c2, l2 = self._grid_candidates(i, prefix, bk)
                l2.view(-1, K, C)[:, :, ~poor] = -torch.inf
                cand, logw = torch.cat([cand, c2], 0), torch.cat([logw, l2], 0)
            M = cand.shape[0]
            total = (cum[None] + logw.reshape(M, K, C)).reshape(M * K, C)  # candidate m of beam k: row m*K + k
            u = torch.rand(M * K, C, generator=gen, dtype=torch.float64, device=dev).clamp(1e-12, 1 - 1e-12)
            keys = torch.where(torch.isfinite(total), total - torch.log(-torch.log(u)), total)
            top = keys.topk(K, dim=0).indices  # (K, C)
            m, k = top // K, top % K
            ar = torch.arange(C, device=dev)
            new_trace = trace[k, ar[None].expand(K, C)].clone()  # (K, C, R, 3, 3)
            new_trace[:, :, i] = cand.reshape(M, K, C, 3, 3)[m, k, ar[None].expand(K, C)]
            trace, cum = new_trace, total[top, ar[None].expand(K, C)]
        u = torch.rand(K, C, generator=gen, dtype=torch.float64, device=dev).clamp(1e-12, 1 - 1e-12)
        best = (cum - torch.log(-torch.log(u))).argmax(0)
        chosen = trace[best, torch.arange(C, device=dev)]  # (C, R, 3, 3)
        x[:, np.stack([geo.n, geo.ca, geo.c], 1)] = chosen

    # ------------------------------------------------------------------ decoration
    def _decorate(self, x, b, gen, temperature: float, residues_idx: dict, copies=None) -> np.ndarray:
        """Draw the core atoms of the given residues (per kind: list of residue positions);
        copies: (C',) copy indices to redraw (default all).  Returns the (k,) residue positions
        whose every candidate had a wrong centre."""
        import torch

        from ..backmap.certify import chirality_signs
        from ..backmap.place import kabsch_t

        wrong = []
        cp = torch.arange(x.shape[0], device=x.device) if copies is None else torch.as_tensor(copies, device=x.device)
        xs, bs = x[cp], b[cp]
        C = len(cp)
        for (kind, _lacks), idx in residues_idx.items():
            if not idx:
                continue
            km = self.model.kinds[kind]
            paired = [k for k, i in enumerate(idx) if i in self.ss_partner]
            R = DISULFIDE_CANDIDATES if paired else DECORATION_CANDIDATES
            f = decoration_features(xs, bs, self.residues, self.geo, idx)
            bo, an, to = km.density.sample(f, gen, temperature=temperature, repeats=R)
            y = km.tree.to_cartesian(bo, an, to)  # (R * k * C, n_core, 3)
            if len(km.tree.closures):
                y = km.tree.close_rings(y, km.closure_targets)
            # (k, n_core): each residue's core atoms in the template's order
            core = np.stack([self._template_atoms(km, i) for i in idx])
            keep = core[0] >= 0  # template atoms the residues have (a CYX lacks CYS's HG)
            trace = xs[:, core[:, km.bb_pos]]  # (C, k, 3, 3)
            trace = trace.transpose(0, 1).reshape(len(idx) * C, 3, 3).repeat(R, 1, 1)
            src = y[:, km.bb_pos]
            sc, tc = src.mean(1, keepdim=True), trace.mean(1, keepdim=True)
            rot = kabsch_t(src - sc, trace - tc)
            y = (y - sc) @ rot + tc
            y[:, km.bb_pos] = trace
            y = y.reshape(R, len(idx) * C, -1, 3)
            if len(km.centres):
                s = chirality_signs(y.cpu().numpy(), km.centres, km.neighbours)  # (R, kC, nc)
                ok = torch.as_tensor((s == km.signs).all(-1), device=x.device)
            else:
                ok = torch.ones(y.shape[:2], dtype=torch.bool, device=x.device)
            cost = (~ok).double() * 1e6
            for k in paired:  # a disulfide Cys: the candidate closest to the bonded geometry with its partner as placed now
                cols = slice(k * C, (k + 1) * C)
                cost[:, cols] += self._ss_cost(y[:, cols], xs, km, self.ss_partner[idx[k]])
            pick = cost.argmin(0)
            yy = y[pick, torch.arange(y.shape[1], device=x.device)].reshape(len(idx), C, -1, 3)
            bad = ~ok.any(0).reshape(len(idx), C)
            for k, i in enumerate(idx):
                xs[:, core[k][keep]] = yy[k][:, keep]
                if bad[k].any():
                    wrong.append(i)
        x[cp] = xs
        return np.array(wrong, int)

    @staticmethod
    def _ss_cost(y, xs, km, partner):
        """(R, C) squared deviation of candidates y (R, C, n_core, 3) from the disulfide geometry with
        the partner's SG/CB in xs (C, n, 3): SG-SG, both CB-SG-SG angles, |chi3| about 90 deg."""
        import torch

        _, _, psg, pcb = partner
        yn = y.detach().cpu().numpy()
        sg, cb = yn[:, :, km.names.index("SG")], yn[:, :, km.names.index("CB")]
        d, a1, a2, chi3 = _ss_geometry(cb, sg, np.broadcast_to(xs[:, psg].cpu().numpy(), sg.shape),
                                       np.broadcast_to(xs[:, pcb].cpu().numpy(), sg.shape))
        ideal = np.degrees(SS_ANGLE)
        cost = ((d - SS_BOND) / 0.01) ** 2 + ((a1 - ideal) / 10) ** 2 + ((a2 - ideal) / 10) ** 2 + ((chi3 - 90.0) / 30) ** 2
        return torch.as_tensor(cost, device=y.device)

    def _template_atoms(self, km, i: int) -> np.ndarray:
        """Atom indices of the template's atoms in residue i (template order; -1 where the residue
        lacks the atom, a hydrogen no stereocentre uses: see :func:`~.model.fits`)."""
        r = self.residues[i]
        pos = {nm: a for nm, a in zip(r.core_names, r.core)}
        return np.array([pos.get(nm, -1) for nm in km.names])

    # ------------------------------------------------------------------ checks
    def bead_centres(self, x: np.ndarray) -> np.ndarray:
        """M x for chains x (C, n, 3) -> (C, n_beads, 3) (M dense or sparse)."""
        from ..geometry import apply_weights

        return apply_weights(self.M, x)

    def _project(self, x, b, exact: bool = True):
        from ..backmap.place import relax_project

        return relax_project(x, self.M, self.A, b, self.keep_pairs, RELAX_ITERATIONS, RELAX_STIFFNESS, rigid=self.rigid,
                             rigid_weight=RIGID_WEIGHT, exact=exact)

    def snap_reachable(self, x: np.ndarray, beads: np.ndarray, tol: float = SNAP_TOLERANCE_NM) -> tuple[np.ndarray, np.ndarray]:
        """Beads within ``tol`` nm of their target put exactly on it (the projection operator's
        columns of those beads: the other beads do not move); x (C, n, 3), beads (C, nb, 3) nm.
        Returns (x, (C,) number of beads left further off per copy)."""
        C, n = x.shape[:2]
        r = np.asarray(beads, np.float64) - self.bead_centres(x)  # (C, nb, 3)
        near = np.linalg.norm(r, axis=-1) <= tol
        corr = self.A @ (r * near[..., None]).transpose(1, 0, 2).reshape(r.shape[1], C * 3)
        return x + np.asarray(corr).reshape(n, C, 3).transpose(1, 0, 2), (~near).sum(1)

    def residue_problems(self, x: np.ndarray) -> np.ndarray:
        """(C, R) bool: residue with a wrong stereocentre, a cis peptide bond before a non-Pro
        residue, a bond through one of its rings or an intramolecular clash (< clash_intra between
        atoms more than 2 bonds apart, as the certificate counts them), x (C, n, 3) whole chains."""
        from scipy.spatial import cKDTree

        from ..neighbours import ring_penetrations

        C, R = x.shape[0], len(self.residues)
        bad = np.zeros((C, R), bool)
        bad |= self.wrong_centres(x)
        ss = self.bad_disulfides(x)  # (C, D)
        for k, (sg1, sg2, _, _) in enumerate(self.disulfides):
            bad[:, self.res_of_atom[sg1]] |= ss[:, k]
            bad[:, self.res_of_atom[sg2]] |= ss[:, k]
        cis = self.cis_nonpro(x)  # (C, R-1): peptide bond i -> i+1
        bad[:, :-1] |= cis
        bad[:, 1:] |= cis
        sizes = {}
        for ring in self.rings:  # one search per ring size (5: Pro, His, Trp; 6: Phe, Tyr, Trp)
            sizes.setdefault(len(ring), []).append(ring)
        by_size = [np.array(rs, int) for rs in sizes.values()]
        for c in range(C):
            for rings in by_size:  # bonds through aromatic / Pro rings (the chain is whole: no box needed)
                hits = ring_penetrations(x[c], np.full(3, 1e3), rings, self.bonds)
                bad[c, self.res_of_atom[rings[hits[:, 0], 0]]] = True
                bad[c, self.res_of_atom[self.bonds[hits[:, 1], 0]]] = True
            pairs = cKDTree(x[c]).query_pairs(self.clash_intra, output_type="ndarray")
            if len(pairs):
                pairs = pairs[~self.excl[pairs[:, 0], pairs[:, 1]]]
                bad[c, self.res_of_atom[pairs.ravel()]] = True
        return bad

    def cis_nonpro(self, x: np.ndarray) -> np.ndarray:
        """(C, R-1) bool: cis (|omega| < 90 deg) peptide bond before a residue other than Pro."""
        from ..geometry import dihedral

        g = self.geo
        om = dihedral(x[:, g.ca[:-1]], x[:, g.c[:-1]], x[:, g.n[1:]], x[:, g.ca[1:]])
        notpro = np.array([r.kind != "PRO" for r in self.residues[1:]])
        return (np.abs(om) < np.pi / 2) & notpro

    def bad_disulfides(self, x: np.ndarray) -> np.ndarray:
        """(C, D) bool: disulfide (SG-SG bond of the topology) outside the accepted SG-SG length,
        CB-SG-SG angles or CB-SG-SG-CB dihedral (:data:`DISULFIDE_BOND_NM` ...), x (C, n, 3) whole."""
        if not len(self.disulfides):
            return np.zeros((x.shape[0], 0), bool)
        sg1, sg2, cb1, cb2 = self.disulfides.T
        d, a1, a2, chi3 = _ss_geometry(x[:, cb1], x[:, sg1], x[:, sg2], x[:, cb2])
        out = (d < DISULFIDE_BOND_NM[0]) | (d > DISULFIDE_BOND_NM[1]) | (chi3 < DISULFIDE_CHI3_DEG[0]) | (chi3 > DISULFIDE_CHI3_DEG[1])
        for a in (a1, a2):
            out |= (a < DISULFIDE_ANGLE_DEG[0]) | (a > DISULFIDE_ANGLE_DEG[1])
        return out

    # ------------------------------------------------------------------ one frame
    def draw(self, beads: np.ndarray, seed: int = 0, temperature: float = 1.0, device: str = "cpu"):
        """All copies on beads (C, n_beads, 3) nm -> (x (C, n_atoms, 3) float64 nm, :class:`ChainDrawReport`).

        Copies still with a problem after the residue redraws (a cis non-Pro peptide bond is a
        backbone problem no side-chain redraw fixes) are drawn again from scratch with new seeds
        (CHAIN_RETRIES times; chains longer than WHOLE_RETRY_RESIDUES only for a cis bond); the attempt with
        the fewest problem residues is kept."""
        import torch

        from ..backmap.common import derive_seed

        b = torch.as_tensor(np.asarray(beads, np.float64), device=device)
        C = b.shape[0]
        rep = ChainDrawReport(copies=C, residues=C * len(self.residues))
        x = self._attempt(b, derive_seed(seed, 51), temperature, rep, first=True)
        score = self._problem_count(x)
        worth = 1 if len(self.residues) <= WHOLE_RETRY_RESIDUES else 100  # see WHOLE_RETRY_RESIDUES
        for k in range(CHAIN_RETRIES):
            redo = np.flatnonzero(score >= worth)
            if not len(redo):
                break
            rep.chains_redrawn += len(redo)
            y = self._attempt(b[redo], derive_seed(seed, 59, k), temperature, rep)
            sy = self._problem_count(y)
            better = sy < score[redo]
            x[redo[better]] = y[better]
            score[redo[better]] = sy[better]
        x = self._chemistry_first(x, b, seed, temperature, rep)
        final = self.residue_problems(x)
        rep.clashing_residues_final = int(final.sum())
        rep.wrong_centres_final = int(self.wrong_centres(x).sum())
        rep.cis_nonpro_final = int(self.cis_nonpro(x).sum())
        rep.disulfides = int(C * len(self.disulfides))
        rep.bad_disulfides_final = int(self.bad_disulfides(x).sum())
        rep.max_cg_deviation_nm = float(np.abs(self.bead_centres(x) - np.asarray(beads)).max())
        return x, rep

    def _chemistry_first(self, x: np.ndarray, b, seed: int, temperature: float, rep: ChainDrawReport) -> np.ndarray:
        """Copies still with a wrong centre or a cis non-Pro bond after the exact draws have beads
        no L, trans chain reaches (Martini 3 MD puts some side-chain beads further out than the
        mapping of any AA structure): they are drawn once more with projections that restore the
        residues' shapes and bond lengths last, then every bead within SNAP_TOLERANCE_NM is put
        exactly on its target.  Kept where that has fewer such problems; the beads left off are
        counted (``beads_missed``) and show in the CG deviation."""
        from ..backmap.common import derive_seed

        hard = self._hard_problems(x)
        redo = np.flatnonzero(hard > 0)
        if not len(redo) or not self.chemistry_first:
            return x
        y = hy = missed = None
        for k in range(1 + CHAIN_RETRIES):  # the best of a few attempts, as for the exact draws
            yk, mk = self.snap_reachable(self._attempt(b[redo], derive_seed(seed, 61, k), temperature, rep, exact=False),
                                         b[redo].cpu().numpy())
            hk = self._hard_problems(yk)
            if y is None:
                y, hy, missed = yk, hk, mk
            else:
                take = hk < hy
                y[take], hy[take], missed[take] = yk[take], hk[take], mk[take]
            if not hy.any():
                break
        better = hy < hard[redo]
        x[redo[better]] = y[better]
        rep.chemistry_first_copies += int(better.sum())
        rep.beads_missed += int(missed[better].sum())
        return x

    def _hard_problems(self, x: np.ndarray) -> np.ndarray:
        """(C,) wrong centres + cis non-Pro peptide bonds per copy: what no copy may keep."""
        return self.wrong_centres(x).sum(1) + self.cis_nonpro(x).sum(1)

    def _problem_count(self, x: np.ndarray) -> np.ndarray:
        """(C,) problem residues per copy; a cis non-Pro bond counts 100 (it is the worst)."""
        return self.residue_problems(x).sum(1) + 100 * self.cis_nonpro(x).sum(1)

    def _attempt(self, b, seed: int, temperature: float, rep: ChainDrawReport, first: bool = False,
                 exact: bool = True) -> np.ndarray:
        """One full draw of copies on beads b (C, n_beads, 3): backbone, decoration, extras,
        projection (``exact``: onto the beads; else chemistry first, see :meth:`_chemistry_first`),
        REDRAW_ROUNDS of redrawing problem residues.  Returns x (C, n_atoms, 3) numpy."""
        import torch

        from ..backmap.common import derive_seed

        dev = b.device
        gen = torch.Generator(device=dev).manual_seed(seed)
        x = torch.zeros(b.shape[0], self.moltype.n_atoms, 3, dtype=torch.float64, device=dev)
        self._backbone(x, b, gen, temperature, rep)
        wrong = self._decorate(x, b, gen, temperature, self.by_kind)
        if self.ss_second:  # the second Cys of each disulfide again, now that its partner is placed
            self._decorate(x, b, gen, temperature, {k: [i for i in idx if i in self.ss_second] for k, idx in self.by_kind.items()})
        if first:
            rep.wrong_centres_after_draw = int(len(wrong))
        xn = x.cpu().numpy()
        place_extras(xn, self.residues, self.moltype, self.adj)
        close_disulfides(xn, self.disulfides, self.adj, self.M)
        x = self._project(torch.as_tensor(xn, device=dev), b, exact)
        for rnd in range(REDRAW_ROUNDS):
            bad = self.residue_problems(x.cpu().numpy())
            if first:
                rep.rounds.append(int(bad.sum()))
            if not bad.any():
                break
            g2 = torch.Generator(device=dev).manual_seed(derive_seed(seed, 53, rnd))
            for c in np.flatnonzero(bad.any(1)):
                # of a disulfide with both Cys flagged only the second is redrawn (against its placed partner)
                skip = {self.res_of_atom[sg1] for sg1, sg2, _, _ in self.disulfides.tolist()
                        if bad[c, self.res_of_atom[sg1]] and bad[c, self.res_of_atom[sg2]]}
                sel = {k: [i for i in idx if bad[c, i] and i not in skip] for k, idx in self.by_kind.items()}
                xs = x.clone()
                self._decorate(xs, b, g2, temperature, sel, copies=[int(c)])
                xn = xs.cpu().numpy()
                place_extras(xn, self.residues, self.moltype, self.adj)
                close_disulfides(xn, self.disulfides, self.adj, self.M)
                x[c] = self._project(torch.as_tensor(xn[c:c + 1], device=dev), b[c:c + 1], exact)[0]
            rep.redrawn_residues += int(bad.sum())
        return x.cpu().numpy()

    def wrong_centres(self, x: np.ndarray) -> np.ndarray:
        """(C, R) bool: residue with a stereocentre whose handedness differs from the training data's
        seen from any face of its neighbours (a flattened centre is wrong too), x (C, n, 3)."""
        from ..graph import chirality_consistent

        x = np.asarray(x)
        bad = np.zeros((x.shape[0], len(self.residues)), bool)
        for (kind, lacks), idx in self.by_kind.items():
            km = self.model.kinds[kind]
            if len(km.centres):  # every residue of the kind at once: x[:, core] is (C, k, n_core, 3)
                ok = chirality_consistent(x[:, self.centre_atoms[kind, lacks]], km.centres, self.four_neighbours[kind],
                                          km.signs, CENTRE_MARGIN)
                bad[:, idx] = ~ok.all(-1)
        return bad


def draw_chains(model: ChainModel, moltype, chain_mapping, residues: list[Residue], beads: np.ndarray, *,
                seed: int = 0, temperature: float = 1.0, device: str = "cpu", clash_intra: float = 0.10):
    """Convenience: one :class:`ChainDrawer` and one draw (see :meth:`ChainDrawer.draw`)."""
    return ChainDrawer(model, moltype, chain_mapping, residues, clash_intra).draw(beads, seed, temperature, device)


def _four_neighbours(km) -> np.ndarray:
    """(nc, 4) ascending template neighbours of the kind's stereocentres (the lowest three are
    ``km.neighbours``, the reference signs' triple)."""
    from ..graph import adjacency

    adj = adjacency(len(km.names), np.asarray(km.bonds, int).reshape(-1, 2))
    return np.array([sorted(adj[int(c)])[:4] for c in km.centres], np.int64).reshape(-1, 4)


def _outside(d, rng):
    """How far d lies outside [lo, hi] (0 inside)."""
    return (rng[0] - d).clamp(min=0) + (d - rng[1]).clamp(min=0)


def _kept_pairs(moltype, residues: list[Residue]) -> np.ndarray:
    """Atom pairs whose distances the projection keeps (P, 2): bonds, 1-3 pairs, and across every
    peptide bond CA(i-1)-CA(i) and O(i-1)-CA(i) (they hold omega trans and the amide planar)."""
    from ..graph import adjacency

    b = np.asarray(moltype.bonds, int).reshape(-1, 2)
    adj = adjacency(moltype.n_atoms, b)
    pairs = {tuple(sorted(p)) for p in b.tolist()}
    for _c, nb in enumerate(adj):
        for i in range(len(nb)):
            for j in range(i + 1, len(nb)):
                pairs.add(tuple(sorted((nb[i], nb[j]))))
    for prev, r in zip(residues[:-1], residues[1:]):
        pairs.add(tuple(sorted((prev.ca, r.ca))))
        o = [a for a, nm in zip(prev.core, prev.core_names) if nm == "O"]
        if o:
            pairs.add(tuple(sorted((o[0], r.ca))))
    return np.array(sorted(pairs), int).reshape(-1, 2)

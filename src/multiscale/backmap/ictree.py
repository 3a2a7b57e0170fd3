"""Internal-coordinate (BAT / Z-matrix) tree of a molecule type, and batched NeRF.

Every atom but the first is placed from three earlier atoms: its bonded parent ``p`` (bond
length), an angle reference ``g`` bonded to ``p`` (bond angle g-p-i) and a torsion reference
``d`` (torsion d-g-p-i, IUPAC sign, radians).  The build order is a breadth-first traversal
of the heavy-atom graph from a root inside the first CG bead, followed by the hydrogens in the
order of their heavy parents, so heavy-atom torsions come first in the autoregressive order.

Atoms that share the same ``(p, g, d)`` (branches, e.g. the three H of a methyl, or the H and
the O on a carbinol carbon) are *siblings*: only the first sibling's torsion is a free
coordinate; every later sibling stores its torsion as an offset (wrapped to (-pi, pi]) from
the first one, so a branching group stays rigid relative to itself when the first torsion
rotates (improper-like coordinates).  In ``torsions`` arrays the entry of a later sibling is
that offset; :meth:`ICTree.to_cartesian` adds the first sibling's torsion back.

Rings: the spanning tree drops one bond per ring (``closures``).  Internal coordinates read
from real structures rebuild them exactly (closure bonds come out right by construction);
sampled coordinates close the ring only approximately, so :meth:`ICTree.close_rings` runs a
short, vectorised position-based projection on the closure bonds/angles while keeping all
other bonds and 1-3 distances at their sampled values.

Shapes: coordinates ``(..., n_atoms, 3)`` nm in the moltype's atom order; ``bonds (..., n-1)``,
``angles (..., max(n-2, 0))``, ``torsions (..., max(n-3, 0))``, entry ``k`` belonging to the
atom at build position ``k+1``, ``k+2``, ``k+3`` respectively.  Everything is torch (float64
recommended for training data); numpy inputs are accepted by :meth:`to_internal` and
:meth:`to_cartesian` and give numpy outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import MultiscaleError

__all__ = ["ICTree", "wrap_angle"]


def wrap_angle(a):
    """Wrap angles (radians, numpy or torch) to (-pi, pi]."""
    return a - 2 * np.pi * _round_div(a)


def _round_div(a):
    import torch

    if isinstance(a, torch.Tensor):
        return torch.ceil((a - np.pi) / (2 * np.pi))
    return np.ceil((np.asarray(a) - np.pi) / (2 * np.pi))


def _adjacency(n: int, bonds: np.ndarray) -> list[list[int]]:
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in np.asarray(bonds, int).reshape(-1, 2):
        if a == b:
            continue
        if b not in adj[a]:
            adj[a].append(int(b))
            adj[b].append(int(a))
    for row in adj:
        row.sort()
    return adj


@dataclass
class ICTree:
    """Build order and reference atoms of one molecule type.

    order: (n,) atom indices in build order (position ``k`` builds atom ``order[k]``);
    parent/angle_ref/torsion_ref: (n,) *atom* indices per build position (-1 where undefined:
    position 0 has none, 1 has only a parent, 2 has no torsion reference);
    sibling: (n,) build position of the first sibling whose torsion this atom's torsion is
    relative to, -1 for free torsions; closures: (nc, 2) ring-closure bonds (atom indices);
    levels: list of arrays of build positions that can be placed simultaneously.
    """

    n_atoms: int
    order: np.ndarray
    parent: np.ndarray
    angle_ref: np.ndarray
    torsion_ref: np.ndarray
    sibling: np.ndarray
    closures: np.ndarray
    bonds: np.ndarray
    heavy: np.ndarray
    levels: list = field(default_factory=list)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_moltype(cls, moltype, matrix: np.ndarray | None = None, root: int | None = None) -> ICTree:
        """Build the tree of ``moltype`` (a :class:`multiscale.topology.MoleculeType`).

        matrix: optional (n_beads, n_atoms) mapping matrix; the root is then the heavy atom with
        the largest weight in the first bead (ties: most heavy neighbours, lowest index).
        root: force the root atom index.
        """
        return cls.build(moltype.n_atoms, moltype.bonds, np.asarray(moltype.heavy, bool), matrix=matrix,
                         root=root, name=moltype.name)

    @classmethod
    def build(cls, n_atoms: int, bonds: np.ndarray, heavy: np.ndarray | None = None,
              matrix: np.ndarray | None = None, root: int | None = None, name: str = "molecule") -> ICTree:
        """Build from a bond list (nb, 2) and a heavy-atom mask (n,) (see :meth:`from_moltype`)."""
        n = int(n_atoms)
        if n < 1:
            raise MultiscaleError(f"moleculetype {name} has no atoms")
        heavy = np.ones(n, bool) if heavy is None else np.asarray(heavy, bool)
        bonds = np.asarray(bonds, int).reshape(-1, 2)
        adj = _adjacency(n, bonds)
        if root is None:
            root = _choose_root(n, adj, heavy, matrix)
        order, parent_of = _placement_order(n, adj, heavy, root, name)
        par, ang, tor = _references(order, parent_of, adj, heavy, name)
        sib = np.full(n, -1, int)
        first: dict[tuple[int, int, int], int] = {}
        for k in range(3, n):
            key = (int(par[k]), int(ang[k]), int(tor[k]))
            if key in first:
                sib[k] = first[key]
            else:
                first[key] = k
        tree_bonds = {tuple(sorted((int(order[k]), int(par[k])))) for k in range(1, n)}
        closures = np.array([tuple(sorted(map(int, b))) for b in bonds if tuple(sorted(map(int, b))) not in tree_bonds
                             and b[0] != b[1]], int).reshape(-1, 2)
        closures = np.unique(closures, axis=0) if len(closures) else closures
        t = cls(n, order, par, ang, tor, sib, closures, bonds, heavy)
        t.levels = t._levels()
        return t

    def _levels(self) -> list[np.ndarray]:
        pos = np.empty(self.n_atoms, int)
        pos[self.order] = np.arange(self.n_atoms)
        lev = np.zeros(self.n_atoms, int)
        for k in range(1, self.n_atoms):
            refs = [self.parent[k], self.angle_ref[k], self.torsion_ref[k]]
            lev[k] = 1 + max(lev[pos[r]] for r in refs if r >= 0)
            if k <= 2:
                lev[k] = max(lev[k], k)  # the first three atoms are special-cased
        out = []
        for v in range(3, lev.max() + 1 if self.n_atoms > 3 else 3):
            ks = np.flatnonzero(lev == v)
            ks = ks[ks >= 3]
            if len(ks):
                out.append(ks)
        return out

    # ------------------------------------------------------------------ sizes / names
    @property
    def n_bonds(self) -> int:
        return max(self.n_atoms - 1, 0)

    @property
    def n_angles(self) -> int:
        return max(self.n_atoms - 2, 0)

    @property
    def n_torsions(self) -> int:
        return max(self.n_atoms - 3, 0)

    @property
    def free_torsions(self) -> np.ndarray:
        """Indices into the torsion array (0-based) of free (non-offset) torsions."""
        return np.flatnonzero(self.sibling[3:] < 0)

    def torsion_steps(self) -> list[int]:
        """Autoregressive sampling step per torsion entry: the free torsions of heavy atoms get
        steps 0, 1, ... in tree order; every hydrogen torsion and every sibling offset is
        sampled together in one last step, conditioned on all heavy torsions (see :mod:`.model`)."""
        free = (self.sibling[3:] < 0) & self.heavy[self.order[3:]]
        steps = np.cumsum(free) - 1
        steps[~free] = int(free.sum())
        return steps.astype(int).tolist()

    def torsion_atoms(self) -> np.ndarray:
        """(n_torsions, 4) atom indices (d, g, p, i) of each torsion entry."""
        k = np.arange(3, self.n_atoms)
        return np.stack([self.torsion_ref[k], self.angle_ref[k], self.parent[k], self.order[k]], 1).reshape(-1, 4)

    def heavy_torsions(self) -> np.ndarray:
        """Indices (into the torsion array) of free proper torsions whose 4 atoms are all heavy."""
        ta = self.torsion_atoms()
        if not len(ta):
            return np.zeros(0, int)
        ok = self.heavy[ta].all(1) & (self.sibling[3:] < 0)
        return np.flatnonzero(ok)

    def to_dict(self) -> dict:
        return {"n_atoms": self.n_atoms, "order": self.order.tolist(), "parent": self.parent.tolist(),
                "angle_ref": self.angle_ref.tolist(), "torsion_ref": self.torsion_ref.tolist(),
                "sibling": self.sibling.tolist(), "closures": self.closures.tolist(), "bonds": self.bonds.tolist(),
                "heavy": self.heavy.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> ICTree:
        t = cls(int(d["n_atoms"]), np.array(d["order"], int), np.array(d["parent"], int), np.array(d["angle_ref"], int),
                np.array(d["torsion_ref"], int), np.array(d["sibling"], int),
                np.array(d["closures"], int).reshape(-1, 2), np.array(d["bonds"], int).reshape(-1, 2),
                np.array(d["heavy"], bool))
        t.levels = t._levels()
        return t

    # ------------------------------------------------------------------ conversions
    def to_internal(self, x):
        """Cartesian (..., n_atoms, 3) nm -> (bonds (..., n-1) nm, angles (..., n-2) rad, torsions (..., n-3) rad).

        Later siblings' torsions are offsets from the first sibling's, wrapped to (-pi, pi].
        """
        import torch

        is_np = not isinstance(x, torch.Tensor)
        xt = torch.as_tensor(np.asarray(x, np.float64)) if is_np else x
        n = self.n_atoms
        k = np.arange(1, n)
        xi = xt[..., self.order[k], :]
        xp = xt[..., self.parent[k], :]
        bonds = torch.linalg.norm(xi - xp, dim=-1)
        k2 = np.arange(2, n)
        if len(k2):
            u = xt[..., self.angle_ref[k2], :] - xt[..., self.parent[k2], :]
            v = xt[..., self.order[k2], :] - xt[..., self.parent[k2], :]
            cos = (u * v).sum(-1) / (torch.linalg.norm(u, dim=-1) * torch.linalg.norm(v, dim=-1))
            angles = torch.arccos(cos.clamp(-1.0, 1.0))
        else:
            angles = xt.new_zeros(xt.shape[:-2] + (0,))
        k3 = np.arange(3, n)
        if len(k3):
            tors = _dihedral_t(xt[..., self.torsion_ref[k3], :], xt[..., self.angle_ref[k3], :],
                               xt[..., self.parent[k3], :], xt[..., self.order[k3], :])
            s = self.sibling[k3]
            rel = np.flatnonzero(s >= 0)
            if len(rel):
                tors = tors.clone()
                tors[..., rel] = wrap_angle(tors[..., rel] - tors[..., s[rel] - 3])
        else:
            tors = xt.new_zeros(xt.shape[:-2] + (0,))
        if is_np:
            return bonds.numpy(), angles.numpy(), tors.numpy()
        return bonds, angles, tors

    def absolute_torsions(self, torsions):
        """Torsions with sibling offsets resolved to absolute torsion values (same shape)."""
        import torch

        s = self.sibling[3:]
        rel = np.flatnonzero(s >= 0)
        if not len(rel):
            return torsions
        if isinstance(torsions, torch.Tensor):
            out = torsions.clone()
        else:
            out = np.array(torsions, copy=True)
        out[..., rel] = torsions[..., s[rel] - 3] + torsions[..., rel]
        return out

    def to_cartesian(self, bonds, angles, torsions):
        """NeRF: internal coordinates (see :meth:`to_internal`) -> (..., n_atoms, 3) nm.

        The root sits at the origin, the second atom on +x, the third in the xy plane.  All
        atoms of one tree level are placed at once (batched over the leading dimensions).
        """
        import torch

        is_np = not isinstance(bonds, torch.Tensor)
        if is_np:
            bonds, angles, torsions = (torch.as_tensor(np.asarray(a, np.float64)) for a in (bonds, angles, torsions))
        n = self.n_atoms
        batch = bonds.shape[:-1]
        x = bonds.new_zeros(batch + (n, 3))
        tors = self.absolute_torsions(torsions)
        if n >= 2:
            x[..., self.order[1], 0] = bonds[..., 0]
        if n >= 3:
            p, g = self.parent[2], self.angle_ref[2]
            xp, xg = x[..., p, :], x[..., g, :]
            # third atom in the xy plane: torsion 0 against a virtual point +y from g
            d = xg + torch.tensor([0.0, 1.0, 0.0], dtype=x.dtype, device=x.device)
            x[..., self.order[2], :] = _nerf(d, xg, xp, bonds[..., 1], angles[..., 0], torch.zeros_like(bonds[..., 1]))
        for ks in self.levels:
            a = x[..., self.torsion_ref[ks], :]
            b = x[..., self.angle_ref[ks], :]
            c = x[..., self.parent[ks], :]
            x[..., self.order[ks], :] = _nerf(a, b, c, bonds[..., ks - 1], angles[..., ks - 2], tors[..., ks - 3])
        return x.numpy() if is_np else x

    # ------------------------------------------------------------------ rings
    def closure_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Distance pairs for ring closure: (closure bonds + 1-3 pairs through them (nc', 2),
        all other bonds and 1-3 pairs (no, 2)); atom indices."""
        adj = _adjacency(self.n_atoms, self.bonds)
        clo = {tuple(c) for c in self.closures.tolist()}
        cl_pairs, other = set(), set()
        for a, b in self.bonds.tolist():
            e = tuple(sorted((a, b)))
            (cl_pairs if e in clo else other).add(e)
        for c in range(self.n_atoms):
            nb = adj[c]
            for i in range(len(nb)):
                for j in range(i + 1, len(nb)):
                    e = tuple(sorted((nb[i], nb[j])))
                    through = tuple(sorted((c, nb[i]))) in clo or tuple(sorted((c, nb[j]))) in clo
                    (cl_pairs if through else other).add(e)
        other -= cl_pairs
        return np.array(sorted(cl_pairs), int).reshape(-1, 2), np.array(sorted(other), int).reshape(-1, 2)

    def close_rings(self, x, closure_targets, iterations: int = 60, other_targets=None):
        """Close rings of built coordinates by position-based distance projection (batched, torch).

        x: (..., n_atoms, 3) nm; closure_targets: (nc',) nm target distances of the pairs in
        ``closure_pairs()[0]`` (means over training data); other pairs keep the distances they
        have in ``x`` (or ``other_targets`` (..., no)).  Returns the corrected coordinates.
        """
        import torch

        cl, ot = self.closure_pairs()
        if not len(cl):
            return x
        pairs = torch.as_tensor(np.concatenate([cl, ot]), device=x.device)
        i, j = pairs[:, 0], pairs[:, 1]
        cur = torch.linalg.norm(x[..., j, :] - x[..., i, :], dim=-1)
        tgt_c = torch.as_tensor(np.asarray(closure_targets), dtype=x.dtype, device=x.device).expand(cur.shape[:-1] + (len(cl),))
        tgt_o = cur[..., len(cl):] if other_targets is None else other_targets
        tgt = torch.cat([tgt_c, tgt_o], -1)
        # Jacobi iterations with per-atom averaging of corrections
        cnt = torch.zeros(self.n_atoms, dtype=x.dtype, device=x.device)
        cnt.index_add_(0, i, torch.ones_like(i, dtype=x.dtype))
        cnt.index_add_(0, j, torch.ones_like(j, dtype=x.dtype))
        cnt = cnt.clamp(min=1.0)[:, None]
        x = x.clone()
        for _ in range(iterations):
            d = x[..., j, :] - x[..., i, :]
            r = torch.linalg.norm(d, dim=-1, keepdim=True).clamp(min=1e-9)
            corr = 0.5 * (r - tgt[..., None]) * d / r  # move i towards j by +corr, j by -corr
            dx = torch.zeros_like(x)
            dx.index_add_(-2, i, corr)
            dx.index_add_(-2, j, -corr)
            x = x + 1.5 * dx / cnt
        return x


def _dihedral_t(a, b, c, d):
    """Torsion a-b-c-d (IUPAC), torch, radians in (-pi, pi]."""
    import torch

    b0 = a - b
    b1 = c - b
    b2 = d - c
    b1n = b1 / torch.linalg.norm(b1, dim=-1, keepdim=True).clamp(min=1e-12)
    v = b0 - (b0 * b1n).sum(-1, keepdim=True) * b1n
    w = b2 - (b2 * b1n).sum(-1, keepdim=True) * b1n
    xx = (v * w).sum(-1)
    yy = (torch.cross(b1n, v, dim=-1) * w).sum(-1)
    return torch.atan2(yy, xx)


def _nerf(a, b, c, bond, ang, tor):
    """Place atom i with |i-c| = bond, angle(b, c, i) = ang, torsion(a, b, c, i) = tor.

    a, b, c: (..., 3); bond, ang, tor: (...).  Degenerate (collinear a, b, c) frames get an
    arbitrary perpendicular instead of NaN.
    """
    import torch

    bc = c - b
    bc = bc / torch.linalg.norm(bc, dim=-1, keepdim=True).clamp(min=1e-12)
    nrm = torch.cross(b - a, bc, dim=-1)
    nn_ = torch.linalg.norm(nrm, dim=-1, keepdim=True)
    bad = nn_ < 1e-9
    if bool(bad.any()):
        alt = torch.cross(bc, torch.tensor([0.5773, 0.5774, 0.5774], dtype=bc.dtype, device=bc.device).expand_as(bc), dim=-1)
        nrm = torch.where(bad, alt, nrm)
        nn_ = torch.linalg.norm(nrm, dim=-1, keepdim=True)
    nrm = nrm / nn_.clamp(min=1e-12)
    m = torch.cross(nrm, bc, dim=-1)
    sa = torch.sin(ang)
    d0 = -bond * torch.cos(ang)
    d1 = bond * sa * torch.cos(tor)
    d2 = bond * sa * torch.sin(tor)
    return c + d0[..., None] * bc + d1[..., None] * m + d2[..., None] * nrm


def _choose_root(n: int, adj: list, heavy: np.ndarray, matrix) -> int:
    """The tree root: the heavy atom with the largest weight in bead 0, then most heavy
    neighbours, then lowest index."""
    nheavy_nb = np.array([sum(heavy[j] for j in adj[i]) for i in range(n)])
    cand = np.flatnonzero(heavy) if heavy.any() else np.arange(n)
    w = np.asarray(matrix)[0][cand] if matrix is not None else np.zeros(len(cand))
    key = sorted(cand, key=lambda i: (-round(float(w[list(cand).index(i)]), 9), -nheavy_nb[i], i))
    return int(key[0])


def _placement_order(n: int, adj: list, heavy: np.ndarray, root: int, name: str) -> tuple[np.ndarray, dict]:
    """Placement order (n,) and parent per atom: BFS over heavy atoms from the root, then the
    rest (hydrogens; heavy atoms reachable only through H) by their parent's order."""
    order = [root]
    parent_of = {root: -1}
    placed = np.zeros(n, bool)
    placed[root] = True
    queue = [root]
    while queue:
        nxt = []
        for a in queue:
            for b in adj[a]:
                if not placed[b] and heavy[b]:
                    placed[b] = True
                    parent_of[b] = a
                    order.append(b)
                    nxt.append(b)
        queue = nxt
    while len(order) < n:  # repeated sweeps
        added = False
        pos = {a: k for k, a in enumerate(order)}
        frontier = []
        for b in range(n):
            if placed[b]:
                continue
            nbs = [a for a in adj[b] if placed[a]]
            if nbs:
                p = min(nbs, key=lambda a: pos[a])
                frontier.append((pos[p], not heavy[b], b, p))
        for _, _, b, p in sorted(frontier):
            if placed[b]:
                continue
            placed[b] = True
            parent_of[b] = p
            order.append(b)
            added = True
        if not added:
            missing = [i for i in range(n) if not placed[i]]
            raise MultiscaleError(
                f"moleculetype {name} is not connected: atoms {missing[:8]} are not bonded to atom {root}; "
                "backmapping needs one bonded molecule per moleculetype (split it or add the bonds)")
    return np.asarray(order, int), parent_of


def _references(order: np.ndarray, parent_of: dict, adj: list, heavy: np.ndarray, name: str):
    """Per placement step k: parent, angle and torsion reference atoms (n,) each (-1 = none)."""
    n = len(order)
    pos = np.empty(n, int)
    pos[order] = np.arange(n)
    par = np.array([parent_of[a] for a in order], int)
    ang = np.full(n, -1, int)
    tor = np.full(n, -1, int)
    for k in range(2, n):
        i, p = order[k], par[k]
        pp = parent_of[p]
        if pp >= 0:
            g = pp
        else:  # p is the root: earliest placed other neighbour of the root
            c = [a for a in adj[p] if a != i and pos[a] < k]
            if not c:
                raise MultiscaleError(f"moleculetype {name}: atom {i} has no angle reference (internal error)")
            g = min(c, key=lambda a: pos[a])
        ang[k] = g
        if k < 3:
            continue
        d = -1
        gp = parent_of[g]
        if gp >= 0 and gp != p and pos[gp] < k and g == pp:
            d = gp
        else:
            # near the root: an already placed neighbour of g (proper) or of p (improper);
            # heavy atoms first, so that every branch on p shares one reference (and the
            # later ones become sibling offsets) instead of hanging off a rotating H
            c = [a for a in set(adj[g]) | set(adj[p]) if a not in (p, g, i) and pos[a] < k]
            if c:
                d = min(c, key=lambda a: (not heavy[a], pos[a]))
        if d < 0:  # only possible for tiny molecules: any earlier atom not (p, g)
            c = [a for a in order[:k] if a not in (p, g)]
            d = int(c[0])
        tor[k] = d
    return par, ang, tor

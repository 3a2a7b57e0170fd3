"""The chain-aware residue model: amino-acid chains drawn residue by residue on Martini beads.

Two levels, both conditional internal-coordinate densities (:class:`multiscale.backmap.model.ICDensity`):

* **backbone trace** (one density for all residue types, residue type as a one-hot input):
  N, CA, C of residue i from the three atoms before it (N, CA, C of residue i-1; for the first
  residue the beads BB 2, 1, 0), i.e. psi(i-1), omega(i-1), phi(i) with their bonds and angles,
  conditioned on the beads of residues i-1 .. i+2 expressed in the frame of those three atoms.
  Drawn along the chain (N -> C) for all chains of a moleculetype at once; the model sees where
  the beads are relative to the growing end, so the trace follows them.  omega of a peptide bond
  before a residue other than Pro is trans by construction (cis draws are rejected and redrawn).
* **residue decoration** (one density per residue kind, :mod:`.residues`): every core atom of the
  residue (side chain with its chi angles, O, H, HA, hydrogens) in the frame of its own N, CA,
  C, conditioned on its beads, its neighbours' BB beads and the neighbouring C(i-1) / N(i+1).
  L chirality (CA, Thr/Ile CB: every stereocentre of the kind, signs from the training data) by
  construction: candidates with a wrong centre are rejected.  Terminal extras follow by fixed geometry.

Then the chain is projected exactly onto its beads (x <- x + A (c - M x), the bead weights of
martinize2) and residues that clash are redrawn (:mod:`.draw`).  Lengths nm, angles rad.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..errors import MultiscaleError
from .residues import CANONICAL, Residue, family, one_hot, template_bonds

#: features of one backbone step (see :func:`backbone_features`)
N_BB_FEATURES = 5 * 3 + 4 + len(CANONICAL) + 1 + 1


def _unit(v):
    import torch

    return v / torch.linalg.norm(v, dim=-1, keepdim=True).clamp(min=1e-9)


def local_frame(a, b, c):
    """Origin c and rows (e1, e2, e3) of the frame of three points (B, 3) each -> ((B, 3), (B, 3, 3))."""
    import torch

    e1 = _unit(c - b)
    v = a - b
    e2 = _unit(v - (v * e1).sum(-1, keepdim=True) * e1)
    return c, torch.stack([e1, e2, torch.linalg.cross(e1, e2)], 1)


def to_local(p, origin, rot):
    """Points p (B, k, 3) in the frame (origin (B, 3), rot (B, 3, 3)) -> (B, k, 3)."""
    import torch

    return torch.einsum("bij,bkj->bki", rot, p - origin[:, None])


@dataclass
class ChainGeometry:
    """Per residue of one chain moleculetype, the index arrays the features need (R residues).

    bb (R,) BB bead index; sc1 (R,) first side-chain bead (-1: none); kinds (R,) kind names;
    hot (R, 22): one-hot of the residue type (21) and "next residue is Pro"; n/ca/c (R,) atoms."""

    bb: np.ndarray
    sc1: np.ndarray
    kinds: list
    hot: np.ndarray
    n: np.ndarray
    ca: np.ndarray
    c: np.ndarray

    @classmethod
    def from_residues(cls, residues: list[Residue]) -> ChainGeometry:
        R = len(residues)
        hot = np.zeros((R, len(CANONICAL) + 2))
        for i, r in enumerate(residues):
            hot[i, :-1] = one_hot(r.kind)
            hot[i, -1] = float(i + 1 < R and residues[i + 1].kind == "PRO")
        return cls(np.array([r.beads[0] for r in residues]), np.array([r.beads[1] if len(r.beads) > 1 else -1 for r in residues]),
                   [r.kind for r in residues], hot, np.array([r.n for r in residues]), np.array([r.ca for r in residues]),
                   np.array([r.c for r in residues]))


def backbone_features(prefix, beads, geo: ChainGeometry, i: int):
    """Features (B, N_BB_FEATURES) of backbone step i: prefix (B, 3, 3) the three points before
    N(i) (a, b, c; N is bonded to c); beads (B, n_beads, 3)."""
    import torch

    R = len(geo.kinds)
    origin, rot = local_frame(prefix[:, 0], prefix[:, 1], prefix[:, 2])
    B = beads.shape[0]
    pts, flags = [], []
    for j in (i - 1, i, i + 1, i + 2):
        ok = 0 <= j < R
        pts.append(beads[:, geo.bb[j]] if ok else origin)
        if j != i:
            flags.append(float(ok))
    has_sc = geo.sc1[i] >= 0
    pts.append(beads[:, geo.sc1[i]] if has_sc else origin)
    flags.append(float(has_sc))
    loc = to_local(torch.stack(pts, 1), origin, rot).reshape(B, -1)
    const = torch.as_tensor(np.concatenate([flags, geo.hot[i]]), dtype=loc.dtype, device=loc.device).expand(B, -1)
    return torch.cat([loc, const], -1)


@lru_cache(maxsize=1)
def _six_point_tree():
    """The IC tree of a linear six-point chain 0-1-...-5 (atom k built from k-1, k-2, k-3)."""
    from ..backmap.ictree import ICTree

    return ICTree.build(6, np.array([[k, k + 1] for k in range(5)]), root=0, name="backbone step")


def backbone_ics(points):
    """Internal coordinates of atoms 3..5 of a six-point chain (B, 6, 3) -> bonds, angles, torsions (B, 3) each
    (:meth:`multiscale.backmap.ictree.ICTree.to_internal` of the chain: its last three of each)."""
    b, a, t = _six_point_tree().to_internal(points)
    return b[..., 2:], a[..., 1:], t


def backbone_build(prefix, bonds, angles, tors):
    """N, CA, C (B, 3, 3) from the prefix (B, 3, 3) and their internal coordinates (B, 3) each."""
    import torch

    from ..backmap.ictree import _nerf

    pts = [prefix[:, 0], prefix[:, 1], prefix[:, 2]]
    for k in range(3):
        pts.append(_nerf(pts[k], pts[k + 1], pts[k + 2], bonds[:, k], angles[:, k], tors[:, k]))
    return torch.stack(pts[3:], 1)


def decoration_features(x, beads, res_list: list, geo: ChainGeometry, idx: list):
    """Features of the decoration of residues ``idx`` (positions along the chain) of one kind.

    x (B, n_atoms, 3) with N/CA/C (and neighbours' C/N) placed; beads (B, n_beads, 3).
    Returns (len(idx) * B, nf), residue-major."""
    import torch

    R = len(geo.kinds)
    out = []
    for i in idx:
        r = res_list[i]
        origin, rot = local_frame(x[:, r.n], x[:, r.c], x[:, r.ca])
        pts = [x[:, res_list[i - 1].c] if i > 0 else origin, x[:, res_list[i + 1].n] if i + 1 < R else origin]
        pts += [beads[:, b] for b in r.beads]
        pts += [beads[:, geo.bb[i - 1]] if i > 0 else origin, beads[:, geo.bb[i + 1]] if i + 1 < R else origin]
        loc = to_local(torch.stack(pts, 1), origin, rot).reshape(x.shape[0], -1)
        flags = torch.tensor([float(i > 0), float(i + 1 < R)], dtype=loc.dtype, device=loc.device).expand(x.shape[0], -1)
        out.append(torch.cat([loc, flags], -1))
    return torch.cat(out, 0)


@dataclass
class KindModel:
    """Decoration model of one residue kind: template atoms, IC tree rooted at CA, density,
    stereocentres (template positions) with their reference signs, ring-closure distances."""

    kind: str
    names: tuple
    elements: tuple
    bonds: np.ndarray
    n_beads: int
    tree: object
    density: object
    centres: np.ndarray
    neighbours: np.ndarray
    signs: np.ndarray
    closure_targets: np.ndarray
    training: dict = field(default_factory=dict)

    @property
    def bb_pos(self) -> np.ndarray:
        """Template positions of N, CA, C."""
        return np.array([self.names.index(a) for a in ("N", "CA", "C")])

    def to_dict(self, storage: str = "float32") -> dict:
        return {"kind": self.kind, "names": list(self.names), "elements": list(self.elements), "bonds": self.bonds.tolist(),
                "n_beads": self.n_beads, "tree": self.tree.to_dict(), "density": self.density.to_dict(storage),
                "centres": self.centres.tolist(), "neighbours": self.neighbours.tolist(), "signs": self.signs.tolist(),
                "closure_targets": self.closure_targets.tolist(), "training": self.training}

    @classmethod
    def from_dict(cls, d: dict) -> KindModel:
        from ..backmap.ictree import ICTree
        from ..backmap.model import ICDensity

        return cls(d["kind"], tuple(d["names"]), tuple(d["elements"]), np.asarray(d["bonds"], int).reshape(-1, 2),
                   int(d["n_beads"]), ICTree.from_dict(d["tree"]), ICDensity.from_dict(d["density"]),
                   np.asarray(d["centres"], int), np.asarray(d["neighbours"], int).reshape(-1, 3),
                   np.asarray(d["signs"], int), np.asarray(d["closure_targets"], float), dict(d.get("training", {})))


@dataclass
class ChainModel:
    """The residue-wise model of amino-acid chains (one per force-field naming, any sequence).

    start/extend: backbone densities; kinds: {kind: :class:`KindModel`}; naming: ``amber`` or
    ``charmm`` (the atom names the kinds use); provenance: list of dicts (data, force field, seed)."""

    start: object
    extend: object
    kinds: dict
    naming: str
    provenance: list = field(default_factory=list)
    training: dict = field(default_factory=dict)
    #: stored precision of the network weights ("float32", or "float16" for the shipped files:
    #: half the size; loading converts back to float32)
    storage: str = "float32"

    def to_dict(self) -> dict:
        return {"start": self.start.to_dict(self.storage), "extend": self.extend.to_dict(self.storage), "naming": self.naming,
                "kinds": {k: v.to_dict(self.storage) for k, v in sorted(self.kinds.items())}, "provenance": self.provenance,
                "training": self.training, "storage": self.storage}

    @classmethod
    def from_dict(cls, d: dict) -> ChainModel:
        from ..backmap.model import ICDensity

        return cls(ICDensity.from_dict(d["start"]), ICDensity.from_dict(d["extend"]),
                   {k: KindModel.from_dict(v) for k, v in d["kinds"].items()}, d["naming"], list(d.get("provenance", [])),
                   dict(d.get("training", {})), str(d.get("storage", "float32")))

    def resolve_kind(self, res: Residue) -> str:
        """The model kind that places ``res``: its own kind, else a kind of the same amino acid whose
        atoms it has (a CHARMM ``HSE`` is the ``HIS`` pdb2gmx builds as HSE; a disulfide ``CYX`` is
        ``CYS`` without HG), else its own (then :meth:`missing_kinds` names it)."""
        own = self.kinds.get(res.kind)
        if own is not None and fits(own, res.core_names):
            return res.kind
        same = [k for k, km in self.kinds.items() if family(k) == family(res.kind) and fits(km, res.core_names)]
        # prefer the exact atom set, then the fewest atoms left out
        same.sort(key=lambda k: len(self.kinds[k].names))
        return same[0] if same else res.kind

    def missing_kinds(self, residues: list[Residue]) -> list[str]:
        """Residue kinds of a chain this model cannot place (absent, or atoms it does not have)."""
        out = []
        for r in residues:
            km = self.kinds.get(r.kind)
            if (km is None or not fits(km, r.core_names)) and r.kind not in out:
                out.append(r.kind)
        return out


def fits(km: KindModel, names) -> bool:
    """Whether a residue with core atoms ``names`` is placed by ``km``: the same atoms, or a subset
    whose left-out atoms are hydrogens no stereocentre uses (CYX = CYS without HG)."""
    names = set(names)
    if not names <= set(km.names):
        return False
    used = set(np.asarray(km.centres).ravel().tolist()) | set(np.asarray(km.neighbours).ravel().tolist())
    return all(km.elements[k] == "H" and k not in used for k, nm in enumerate(km.names) if nm not in names)


# ============================================================================ training data
def chain_training_arrays(moltype, chain_mapping, residues: list[Residue], frames: np.ndarray):
    """Backbone and decoration training arrays of one chain moleculetype.

    frames (F, n_atoms, 3) nm, molecules whole.  Returns (start (feats, b, a, t), extend (...),
    {kind: {"x": (S, n_core, 3), "feats": (S, nf), "bonds": template bonds}})."""
    import torch

    x = torch.as_tensor(np.asarray(frames, np.float64))
    beads = torch.as_tensor(chain_mapping.coarse_grain(np.asarray(frames, np.float64)))
    geo = ChainGeometry.from_residues(residues)
    start, extend = [], []
    for i in range(len(residues)):
        here = x[:, [geo.n[i], geo.ca[i], geo.c[i]]]
        if i + 2 < len(residues):  # the start density learns from every position (bead prefix)
            prefix = beads[:, [geo.bb[i + 2], geo.bb[i + 1], geo.bb[i]]]
            start.append((backbone_features(prefix, beads, geo, i), *backbone_ics(torch.cat([prefix, here], 1))))
        if i > 0:
            prefix = x[:, [geo.n[i - 1], geo.ca[i - 1], geo.c[i - 1]]]
            extend.append((backbone_features(prefix, beads, geo, i), *backbone_ics(torch.cat([prefix, here], 1))))
    cat = [tuple(torch.cat(col, 0).numpy() for col in zip(*part)) for part in (start, extend)]
    kinds: dict = {}
    for i, r in enumerate(residues):
        d = kinds.setdefault(r.kind, {"x": [], "feats": [], "bonds": template_bonds(moltype, r), "names": r.core_names,
                                      "elements": tuple(moltype.elements[a] for a in r.core), "n_beads": len(r.beads)})
        if tuple(d["names"]) != tuple(r.core_names):  # same kind, other atom order: reorder to the template
            pos = {nm: a for nm, a in zip(r.core_names, r.core)}
            core = np.array([pos[nm] for nm in d["names"]])
        else:
            core = r.core
        d["x"].append(x[:, core].numpy())
        d["feats"].append(decoration_features(x, beads, residues, geo, [i]).numpy())
    return cat[0], cat[1], kinds


def merge_kind_data(parts: list[dict]) -> dict:
    """Concatenate per-kind arrays of several chains (first template wins)."""
    out: dict = {}
    for p in parts:
        for k, d in p.items():
            o = out.setdefault(k, {**d, "x": [], "feats": []})
            if set(o["names"]) != set(d["names"]) or o["n_beads"] != d["n_beads"]:
                raise MultiscaleError(f"residue kind {k} appears with different atoms or bead counts in the training data "
                                      f"({sorted(o['names'])} vs {sorted(d['names'])}): use one force field per model")
            if tuple(o["names"]) != tuple(d["names"]):
                perm = [list(d["names"]).index(nm) for nm in o["names"]]
                o["x"] += [v[:, perm] for v in d["x"]]
            else:
                o["x"] += d["x"]
            o["feats"] += d["feats"]
    return out


def _density_for(prev, nf: int, nb: int, na: int, nt: int, hp: dict, steps=None):
    """(density, set_stats, lr): a copy of ``prev`` to fine-tune, or a fresh one."""
    from ..backmap.model import ICDensity

    if prev is not None:
        return ICDensity.from_dict(prev.to_dict()), False, 1e-3
    return ICDensity(nf, nb, na, nt, hidden=hp["hidden"], torsion_hidden=hp["torsion_hidden"],
                     n_components=hp["n_components"], steps=steps), True, 3e-3


def _n_epochs(epochs, n: int, target: int, fine: bool) -> int:
    if epochs:
        return int(epochs)
    e = int(np.clip(round(target / max(1, np.ceil(n / 512))), 20, 200))
    return max(10, e // 3) if fine else e


def fit_chain_model(start, extend, kinds: dict, *, naming: str, seed: int = 0, epochs: int | None = None,
                    device: str = "cpu", log=print, hidden: int = 64, torsion_hidden: int = 32, n_components: int = 4,
                    init: ChainModel | None = None) -> ChainModel:
    """Fit the backbone densities and one decoration density per kind (maximum likelihood).

    start/extend: (features, bonds, angles, torsions) arrays of the backbone steps; kinds: per
    kind the arrays of :func:`chain_training_arrays` (merged with :func:`merge_kind_data`).
    init: fine-tune this model (its densities continue at lr 1e-3 on the new data, a third of
    the epochs; its kinds absent from the data are kept)."""
    import torch

    from ..backmap.certify import chirality_signs, find_stereocentres
    from ..backmap.common import derive_seed
    from ..backmap.ictree import ICTree
    from ..backmap.model import fit

    t0 = time.perf_counter()
    log = log or (lambda *a, **k: None)
    hp = {"hidden": hidden, "torsion_hidden": torsion_hidden, "n_components": n_components}
    dens = []
    for k, (name, data) in enumerate((("start", start), ("extend", extend))):
        torch.manual_seed(derive_seed(seed, 31, k))
        prev = getattr(init, name) if init is not None else None
        d, stats, lr = _density_for(prev, data[0].shape[1], 3, 3, 3, hp)
        n_ep = _n_epochs(epochs, len(data[0]), 3000, prev is not None)
        info = fit(d, *data, epochs=n_ep, lr=lr, set_stats=stats, seed=derive_seed(seed, 37, k), device=device, log=None,
                   label=f"backbone {name}")
        log(f"  backbone {name}: {len(data[0])} steps, {n_ep} epochs, validation NLL {info['val_nll']:.3f}")
        dens.append(d)
    out = dict(init.kinds) if init is not None else {}
    for j, (kind, d) in enumerate(sorted(kinds.items())):
        xs = np.concatenate(d["x"], 0)
        feats = np.concatenate(d["feats"], 0)
        n = len(d["names"])
        prev = out.get(kind)
        if prev is not None and tuple(prev.names) != tuple(d["names"]):
            if set(prev.names) != set(d["names"]):
                prev = None
            else:
                xs = xs[:, [list(d["names"]).index(nm) for nm in prev.names]]
                d = {**d, "names": prev.names, "elements": prev.elements, "bonds": prev.bonds}
        heavy = np.array([e != "H" for e in d["elements"]])
        tree = prev.tree if prev is not None else ICTree.build(n, d["bonds"], heavy, root=list(d["names"]).index("CA"), name=kind)
        b, a, t = tree.to_internal(xs)
        torch.manual_seed(derive_seed(seed, 41, j))
        dn, stats, lr = _density_for(prev.density if prev is not None else None, feats.shape[1], tree.n_bonds, tree.n_angles,
                                     tree.n_torsions, hp, steps=tree.torsion_steps())
        n_ep = _n_epochs(epochs, len(xs), 1500, prev is not None)
        info = fit(dn, feats, b, a, t, epochs=n_ep, lr=lr, set_stats=stats, seed=derive_seed(seed, 43, j), device=device,
                   log=None, label=kind)
        centres, nbrs = find_stereocentres(n, d["bonds"], d["elements"])
        signs = np.sign(chirality_signs(xs, centres, nbrs).astype(float).sum(0)).astype(int) if len(centres) else np.zeros(0, int)
        cl, _ = tree.closure_pairs()
        targets = np.linalg.norm(xs[:, cl[:, 1]] - xs[:, cl[:, 0]], axis=-1).mean(0) if len(cl) else np.zeros(0)
        info = {k2: (round(v, 4) if isinstance(v, float) else v) for k2, v in info.items()}
        log(f"  residue {kind}: {len(xs)} samples, {tree.n_torsions} torsions, validation NLL {info['val_nll']:.3f}")
        out[kind] = KindModel(kind, tuple(d["names"]), tuple(d["elements"]), np.asarray(d["bonds"], int), int(d["n_beads"]),
                              tree, dn, np.asarray(centres, int), np.asarray(nbrs, int).reshape(-1, 3), signs, targets, info)
    return ChainModel(dens[0], dens[1], out, naming, list(init.provenance) if init is not None else [],
                      training={"seconds": round(time.perf_counter() - t0, 1), "backbone_steps": int(len(extend[0])),
                                "seed": int(seed), "fine_tuned": init is not None})

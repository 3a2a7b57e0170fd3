"""The per-molecule-type model: IC tree + conditional IC density + stereo references.

:class:`MoltypeModel` draws conformations of one molecule type on its beads
(:meth:`MoltypeModel.generate`), projects them exactly onto the beads (:meth:`~MoltypeModel.relax`,
:meth:`~MoltypeModel.refit`) and flags intramolecular clashes.  Lengths nm, angles rad.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import MultiscaleError

__all__ = ["MoltypeModel", "describe_difference", "RELAX_ITERATIONS", "RELAX_STIFFNESS"]

#: Alternating projection / distance-restoring iterations of the exact CG projection
#: (octan-2-ol vs reference, bond / angle RMS: 10 -> 0.0021 nm / 4.82 deg, 14 -> 0.0022 / 4.79,
#: 20 -> 0.0022 / 4.77; reference spread 0.0019 / 4.15; torsion JSD unchanged).
RELAX_ITERATIONS = 12
RELAX_STIFFNESS = 1.8
RELAX_ITERATIONS_REPEL = 30  # models with ``repel`` (lipids): the repulsion needs a few more sweeps


@dataclass
class MoltypeModel:
    """Everything needed to backmap one molecule type.

    matrix (n_beads, n_atoms) mapping; tree: IC tree; density: conditional IC density;
    stereo: reference stereo states; closure_targets: ring-closure distances (nm);
    training: statistics of the fit.
    """

    name: str
    fingerprint: str
    atom_names: list
    elements: list
    bonds: np.ndarray
    bead_names: list
    matrix: np.ndarray
    tree: object
    density: object
    stereo: object
    closure_targets: np.ndarray
    training: dict = field(default_factory=dict)
    smoothing: float = 10.0
    rotor_priors: list = field(default_factory=list)
    hbond_eps: float = 0.0
    env_cutoff: float = 0.0
    #: donor...acceptor distance (nm) below which the hydrogen-bond network step pulls pairs of
    #: this moltype's donors together (calibrated in training, :func:`.train._calibrate_network`);
    #: 0: no network step and no environment selection (models trained before it existed).
    network_cutoff: float = 0.0
    #: stored precision of the density's weights ("float16" for shipped files; loads as float32)
    storage: str = "float32"
    #: long flexible molecules (lipids; scripts/train_lipid_model.py sets these): draw ``best_of``
    #: conformations per requested one and keep the one whose mapped centres fit the beads best
    #: (errors compound along a 20-carbon tail), and let the exact projection push non-bonded
    #: pairs of the molecule apart below ``repel`` nm (0: off) so it cannot fold a tail into itself
    best_of: int = 1
    repel: float = 0.0
    #: first hydration shell per atom, measured in the training frames (:mod:`.hydration`): the
    #: water-O distance (nm) and the waters in it, (n_atoms,) each; 0: no site (no water in the
    #: training data, a buried atom, models trained before it existed)
    shell_r: np.ndarray | None = None
    shell_n: np.ndarray | None = None

    def __post_init__(self):
        from .certify import exclusion_matrix
        from .features import bead_tree
        from .place import find_rotors

        n = len(self.atom_names)
        self.shell_r = np.zeros(n) if self.shell_r is None else np.asarray(self.shell_r, np.float64)
        self.shell_n = np.zeros(n) if self.shell_n is None else np.asarray(self.shell_n, np.float64)
        self.rotors = find_rotors(len(self.atom_names), self.bonds, self.elements)
        if len(self.rotor_priors) != len(self.rotors):
            self.rotor_priors = [None] * len(self.rotors)
        self.set_smoothing(self.smoothing)
        from ..graph import adjacency

        cl, ot = self.tree.closure_pairs()
        adj = adjacency(len(self.atom_names), self.bonds)
        # kept by relax_project: bonds, 1-3 pairs, and the 1-4 pairs across each cis/trans double
        # bond (its torsion stays where it was drawn: a lipid's cis bond is not bent to 90 deg)
        self.local_pairs = np.concatenate([cl, ot, _across_double_bonds(self.stereo, adj)]).astype(int)
        #: atom groups the lipid projection keeps rigid (:func:`stereo_groups`, :func:`planar_groups`)
        self.rigid_groups = _with_planar(stereo_groups(self.stereo, adj), planar_groups(self.elements, adj))
        self.exclusions = exclusion_matrix(len(self.atom_names), self.bonds, 2)
        #: parent bead per bead along the molecule's chemistry: the beads are made whole along it
        self.bead_parent = bead_tree(self.matrix, self.bonds)

    def set_smoothing(self, smoothing: float) -> None:
        """Choose the projection operator (see :func:`multiscale.backmap.place.projection_operator`)."""
        from .place import projection_operator

        self.smoothing = float(smoothing)
        self.operator = projection_operator(self.matrix, self.bonds, self.smoothing)

    @property
    def n_atoms(self) -> int:
        return len(self.atom_names)

    @property
    def n_beads(self) -> int:
        return self.matrix.shape[0]

    def generate(self, beads, generator=None, device: str = "cpu", temperature: float = 1.0, env=None,
                 repeats: int = 1, relax: bool = True, every_draw: bool = False):
        """Sample molecules on beads (B, n_beads, 3) nm (whole) -> torch (R*B, n_atoms, 3) float64 on device.

        env: (B, n_beads) neighbour counts when the model was trained with ``env_cutoff``;
        repeats R: independent conformations per molecule, repeat-major.  relax=False: only
        superposed on the beads (not yet CG-exact); :meth:`relax` does the geometry-preserving
        exact projection later, for the candidates actually used (it keeps the bond and 1-3
        distances of its input, so its input must be the unprojected conformation).
        every_draw (with relax=False): best-of models return all ``best_of`` draws per
        conformation, (best_of*R*B, n_atoms, 3) draw-major, for the caller to choose from
        (:meth:`misfit`)."""
        import torch

        from .features import cg_features
        from .place import fit_to_beads, relax_project

        b = torch.as_tensor(np.asarray(beads, np.float64), device=device)
        feats = cg_features(b)
        if self.env_cutoff > 0:
            if env is None:
                raise MultiscaleError(f"moleculetype {self.name}: the model uses neighbour counts (env_cutoff {self.env_cutoff} nm): pass env")
            feats = torch.cat([feats, torch.as_tensor(np.asarray(env, np.float64), device=device)], -1)
        draws = repeats * max(1, self.best_of)
        bonds, angles, tors = self.density.sample(feats, generator, temperature=temperature, repeats=draws)
        if draws > 1:
            b = b.repeat(draws, 1, 1)
        x = self.tree.to_cartesian(bonds, angles, tors)
        if len(self.tree.closures):
            x = self.tree.close_rings(x, self.closure_targets)
        x = fit_to_beads(x, self.matrix, b, generator)
        if every_draw and not relax:
            return x
        if self.best_of > 1:
            x = self._best_fitting(x, b)
            b = b[: len(x)]
        if not relax:
            return x
        return relax_project(x, self.matrix, self.operator, b, self.local_pairs, *self._relax_args())

    def _best_fitting(self, x, b):
        """Of ``best_of`` consecutive blocks of draws (K*R*B, n, 3), per molecule the one whose
        mapped centres are closest to the beads b (K*R*B, n_beads, 3) -> (R*B, n, 3)."""
        import torch

        K = self.best_of
        misfit = self.misfit(x, b).reshape(K, -1)
        pick = misfit.argmin(0)
        return x.reshape(K, -1, *x.shape[1:])[pick, torch.arange(misfit.shape[1], device=x.device)]

    def misfit(self, x, b):
        """Squared distance (nm^2) of the mapped centres of conformations x (N, n_atoms, 3) from
        their beads b (N, n_beads, 3), summed over beads: (N,) torch."""
        import torch

        M = torch.as_tensor(self.matrix, dtype=x.dtype, device=x.device)
        return ((torch.einsum("ba,nak->nbk", M, x) - b) ** 2).sum((1, 2))

    def _relax_args(self) -> tuple:
        if self.repel > 0:
            return RELAX_ITERATIONS_REPEL, RELAX_STIFFNESS, (self.watched_pairs(), self.repel), self.rigid_groups
        return RELAX_ITERATIONS, RELAX_STIFFNESS

    def relax(self, x: np.ndarray, beads: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """Geometry-preserving exact projection (:func:`.place.relax_project`) of molecules
        x (B, n_atoms, 3) onto beads (B, n_beads, 3) nm (numpy in, numpy out); reference
        (B, n_atoms, 3): the conformations whose geometry is kept (default: x)."""
        import torch

        from .place import relax_project

        ref = None if reference is None else torch.as_tensor(reference, dtype=torch.float64)
        return relax_project(torch.as_tensor(x, dtype=torch.float64), self.matrix, self.operator,
                             torch.as_tensor(beads, dtype=torch.float64), self.local_pairs, *self._relax_args(),
                             reference=ref).numpy()

    @property
    def united(self) -> np.ndarray:
        """(n_atoms,) per atom the heavy atom it moves with: a hydrogen's bonded heavy atom, a heavy
        atom (or a hydrogen without one, as in H2) itself."""
        if not hasattr(self, "_united"):
            u = np.arange(len(self.atom_names))
            for a, b in np.asarray(self.bonds, int).reshape(-1, 2):
                for h, x in ((a, b), (b, a)):
                    if self.elements[h] == "H" and self.elements[x] != "H":
                        u[h] = x
            self._united = u
        return self._united

    def watched_pairs(self) -> np.ndarray:
        """(P, 2) intramolecular atom pairs beyond 1-3 (the clash certificate's pairs)."""
        if not hasattr(self, "_pairs"):
            self._pairs = np.nonzero(np.triu(~self.exclusions, 1))
        return np.stack(self._pairs, 1)

    def intra_clash(self, x: np.ndarray, cutoff: float = 0.10, max_pairs: int = 200_000) -> np.ndarray:
        """(B,) True where a molecule x (B, n, 3) has a non-excluded (beyond 1-3) atom pair closer
        than ``cutoff`` nm.  Dense over pairs; molecules with more than ``max_pairs`` pairs are
        left to the KD-tree search (returns False)."""
        if not hasattr(self, "_pairs"):
            i, j = np.nonzero(np.triu(~self.exclusions, 1))
            self._pairs = (i, j)
        i, j = self._pairs
        if len(i) == 0 or len(i) > max_pairs:
            return np.zeros(len(x), bool)
        y = np.asarray(x, np.float32)  # np.take on float32 is ~8x faster than float64 fancy indexing
        d = np.take(y, j, axis=1) - np.take(y, i, axis=1)
        return (np.einsum("npk,npk->np", d, d) < cutoff * cutoff).any(1)

    def refit(self, x: np.ndarray, beads: np.ndarray, generator=None) -> np.ndarray:
        """Re-superpose and re-project repaired molecules x (B, n, 3) onto beads (numpy)."""
        import torch

        from .place import fit_to_beads

        xt = torch.as_tensor(x, dtype=torch.float64)
        bt = torch.as_tensor(beads, dtype=torch.float64)
        if self.n_beads > 2:
            xt = fit_to_beads(xt, self.matrix, bt, generator)
        else:  # keep the orientation already chosen: translate + project only
            y = torch.einsum("ba,nak->nbk", torch.as_tensor(self.matrix), xt)
            xt = xt + (bt.mean(1, keepdim=True) - y.mean(1, keepdim=True))
        return self.relax(xt.numpy(), beads)

    def to_dict(self) -> dict:
        import torch

        return {"name": self.name, "fingerprint": self.fingerprint, "atom_names": list(self.atom_names),
                "elements": list(self.elements), "bonds": np.asarray(self.bonds).tolist(),
                "bead_names": list(self.bead_names), "matrix": torch.as_tensor(self.matrix),
                "tree": self.tree.to_dict(), "density": self.density.to_dict(self.storage), "stereo": self.stereo.to_dict(),
                "closure_targets": np.asarray(self.closure_targets, float).tolist(), "training": dict(self.training),
                "smoothing": self.smoothing, "hbond_eps": float(self.hbond_eps), "env_cutoff": float(self.env_cutoff),
                "network_cutoff": float(self.network_cutoff), "storage": self.storage,
                "best_of": int(self.best_of), "repel": float(self.repel),
                "shell_sites": [[int(i), float(self.shell_r[i]), float(self.shell_n[i])] for i in np.flatnonzero(self.shell_r > 0)],
                "rotor_priors": [None if h is None else np.asarray(h, float).tolist() for h in self.rotor_priors]}

    @classmethod
    def from_dict(cls, d: dict) -> MoltypeModel:
        from .certify import StereoReference
        from .ictree import ICTree
        from .model import ICDensity

        return cls(d["name"], d["fingerprint"], list(d["atom_names"]), list(d["elements"]),
                   np.array(d["bonds"], int).reshape(-1, 2), list(d["bead_names"]),
                   np.asarray(d["matrix"].numpy() if hasattr(d["matrix"], "numpy") else d["matrix"], np.float64),
                   ICTree.from_dict(d["tree"]), ICDensity.from_dict(d["density"]), StereoReference.from_dict(d["stereo"]),
                   np.array(d["closure_targets"], float), dict(d.get("training", {})), float(d.get("smoothing", 0.0)),
                   list(d.get("rotor_priors", [])), float(d.get("hbond_eps", 0.0)), float(d.get("env_cutoff", 0.0)),
                   float(d.get("network_cutoff", 0.0)), str(d.get("storage", "float32")),
                   int(d.get("best_of", 1)), float(d.get("repel", 0.0)), *_shell_arrays(d, len(d["atom_names"])))


def _shell_arrays(d: dict, n: int):
    """(shell_r, shell_n) (n,) each from a stored entry's sparse ``shell_sites`` [[atom, r, n], ...]."""
    r, w = np.zeros(n), np.zeros(n)
    for i, ri, wi in d.get("shell_sites", []):
        r[int(i)], w[int(i)] = float(ri), float(wi)
    return r, w


def describe_difference(mt, entry: MoltypeModel) -> str:
    """One phrase saying how topology moleculetype ``mt`` differs from the model's ``entry``."""
    if mt.n_atoms != entry.n_atoms:
        return f"{mt.n_atoms} atoms in the topology vs {entry.n_atoms} in the model"
    for i, (a, b) in enumerate(zip(mt.atom_names, entry.atom_names)):
        if a != b:
            return f"atom {i + 1} is named {a} in the topology but {b} in the model"
    for i, (a, b) in enumerate(zip(mt.elements, entry.elements)):
        if a != b:
            return f"atom {i + 1} ({mt.atom_names[i]}) is element {a} in the topology but {b} in the model"
    tb = {tuple(sorted(map(int, e))) for e in np.asarray(mt.bonds).reshape(-1, 2)}
    mb = {tuple(sorted(map(int, e))) for e in np.asarray(entry.bonds).reshape(-1, 2)}
    extra, missing = sorted(tb - mb), sorted(mb - tb)
    if extra or missing:
        nm = mt.atom_names
        parts = []
        if extra:
            parts.append("bonds only in the topology: " + ", ".join(f"{nm[a]}-{nm[b]}" for a, b in extra[:4]))
        if missing:
            parts.append("bonds only in the model: " + ", ".join(f"{nm[a]}-{nm[b]}" for a, b in missing[:4]))
        return "; ".join(parts)
    return "fingerprints differ"


def stereo_groups(stereo, adj: list) -> list:
    """Atom groups kept rigid by the projection: each enforced stereocentre with its bonded
    neighbours, each enforced cis/trans bond a-b with the neighbours of a and b (``adj``: the
    molecule's adjacency lists)."""
    groups = [[int(c), *sorted(adj[int(c)])] for c in np.asarray(stereo.centres, int)[stereo.enforced_centres]]
    for a, b in np.asarray(stereo.quads, int).reshape(-1, 4)[stereo.enforced_bonds][:, 1:3]:
        groups.append(sorted({int(a), int(b), *adj[int(a)], *adj[int(b)]}))
    return groups


def _with_planar(groups: list, planar: list) -> list:
    """Stereo groups with the planar groups added: one inside a stereo group (a cis/trans bond's
    carbon) is already kept; one sharing two or more atoms with a stereo group (the sn-2 ester plane
    with the glycerol centre C2 and O21) is merged into it, so one shape fit holds both: two
    overlapping fits pull the shared atoms two ways, flattening centres and twisting cis bonds
    (docs/membranes.md, "Ester planes")."""
    out = [sorted(set(g)) for g in groups]
    stereo = len(out)
    for g in planar:
        s = set(g)
        if any(s <= set(h) for h in out[:stereo]):
            continue
        k = next((k for k in range(stereo) if len(s & set(out[k])) >= 2), None)
        if k is None:
            out.append(list(g))
        else:
            out[k] = sorted(set(out[k]) | s)
    return out


def planar_groups(elements, adj: list) -> list:
    """Each carbon with three bonded neighbours (sp2: an ester or acid carbonyl, a double bond, an
    aromatic ring) with its neighbours: kept rigid by the lipid projection, which otherwise holds
    only bond and 1-3 distances and bends such a group out of its plane (a POPC ester carbonyl
    20-50 deg out of plane after projecting onto Martini 3 beads, 2-5 deg in CHARMM36 MD).

    A carbonyl's group also holds the other neighbours of its O/N neighbours (the ester's alkoxy
    carbon, an amide N's substituents): the conjugated plane, whose C-O-C=O torsion the projection
    otherwise twists out of the drawn Z ester (docs/membranes.md, "Ester planes")."""
    out = []
    for a, e in enumerate(elements):
        if e != "C" or len(adj[a]) != 3:
            continue
        group = {a, *adj[a]}
        if any(elements[h] == "O" and len(adj[h]) == 1 for h in adj[a]):  # C=O: its conjugated neighbours too
            group |= {x for h in adj[a] if elements[h] in ("O", "N") and len(adj[h]) > 1 for x in adj[h]}
        out.append([a, *sorted(group - {a})])
    return out


def _across_double_bonds(stereo, adj: list) -> np.ndarray:
    """(P, 2) substituent pairs x-y across every enforced cis/trans bond a-b of ``stereo``."""
    quads = np.asarray(stereo.quads, int).reshape(-1, 4)[stereo.enforced_bonds]
    out = set()
    for a, b in quads[:, 1:3]:
        for x in set(adj[a]) - {b}:
            for y in set(adj[b]) - {a}:
                out.add((min(x, y), max(x, y)))
    return np.array(sorted(out), int).reshape(-1, 2)


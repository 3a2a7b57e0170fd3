"""System-level learned backmapping: train on AA frames, backmap CG frames, certify.

Public API (what the CLI calls):

* :func:`train` ``(topology, mapping, frames, *, seed, epochs, init, device, provenance, log)``
  -> :class:`BackmapModel`: per molecule type an internal-coordinate tree
  (:mod:`.ictree`) and a conditional density (:mod:`.model`) fitted by maximum likelihood on
  the AA molecules mapped to CG; stereo references from the training frames; a water cluster
  bank (:mod:`.water`) from the frames' water (or the bundled default).
* :meth:`BackmapModel.save` / :func:`load_model` ``(path, topology=None)``: one versioned file
  (``torch.save`` of a plain dict, loadable with ``weights_only=True``).
* :func:`backmap` ``(model, topology, cg_positions, box, *, seed, device, max_retries)`` ->
  ``(positions (F, N, 3) float32 nm, [CertificateReport] per frame)``.

Per frame: every molecule type's molecules are sampled at once, ``candidates`` conformations
each (:func:`default_candidates`; features -> ICs -> NeRF -> ring closure -> Kabsch onto the beads (free rotations sampled
for 1-2 beads) -> exact projection so that ``M @ x`` equals the CG beads, alternated with
distance restoration so bonds/angles are not bent by it); stereocentres/cis-trans are compared
with the model's references and clashes searched with a PBC KD-tree; offending molecules take
their next candidate / are resampled with seeds derived from the base seed (bounded
retries; 1-2 bead molecules that only clash with neighbours are first turned about their
beads); remaining wrong centres are inverted by swapping two substituents, wrong double
bonds flipped; water beads become 4 waters from the bank, kept away from the solute atoms
(waters still clashing are re-placed); rotatable polar hydrogens are turned towards
acceptors (weight calibrated at training time; undone where it would create a clash).
Molecules are built whole in unwrapped coordinates (next to their first bead); ``wrap=True``
wraps atoms into the box.

Lengths nm, angles rad.  Deterministic for a given seed (torch.Generator / numpy
default_rng / SeedSequence-derived seeds).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MultiscaleError

__all__ = ["BackmapModel", "MoltypeModel", "train", "backmap", "check_device", "default_candidates", "load_model", "FORMAT", "VERSION"]

FORMAT = "multiscale.backmap-model"
VERSION = 1
#: Alternating projection / distance-restoring iterations of the exact CG projection
#: (octan-2-ol vs reference, bond / angle RMS: 10 -> 0.0021 nm / 4.82 deg, 14 -> 0.0022 / 4.79,
#: 20 -> 0.0022 / 4.77; reference spread 0.0019 / 4.15; torsion JSD unchanged).
RELAX_ITERATIONS = 12
#: Rounds of re-placing water beads that still clash after the bank's own placement (each
#: round costs one system-wide clash search).
WATER_REPLACE_ROUNDS = 2
RELAX_STIFFNESS = 1.8
#: Iterations of the re-projection after polar hydrogens were turned (a turned H shifts its
#: bead by < 0.003 nm; octan-2-ol bond RMS vs reference: 0.0027 nm with the plain exact
#: projection (0), 0.0022 nm with 3 or 8 iterations).
REPROJECT_ITERATIONS = 3
#: First resampling rounds in which 1- and 2-bead molecules that clash only with other
#: molecules are turned about their beads (the orientation the CG leaves free) instead of
#: drawing a new conformation.
SPIN_ROUNDS = 2


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run with ``n`` torch intra-op threads (default 1: the per-op work of this engine is
    small, and OpenMP spinning on a loaded 2-core machine costs far more than it gains)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(abs(p)) for p in parts]).generate_state(1)[0])


# ============================================================================ per-moltype model
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

    def __post_init__(self):
        from .certify import exclusion_matrix
        from .place import find_rotors

        self.rotors = find_rotors(len(self.atom_names), self.bonds, self.elements)
        if len(self.rotor_priors) != len(self.rotors):
            self.rotor_priors = [None] * len(self.rotors)
        self.set_smoothing(self.smoothing)
        cl, ot = self.tree.closure_pairs()
        self.local_pairs = np.concatenate([cl, ot])  # bonds + 1-3 pairs kept by relax_project
        self.exclusions = exclusion_matrix(len(self.atom_names), self.bonds, 2)

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
                 repeats: int = 1, relax: bool = True):
        """Sample molecules on beads (B, n_beads, 3) nm (whole) -> torch (R*B, n_atoms, 3) float64 on device.

        env: (B, n_beads) neighbour counts when the model was trained with ``env_cutoff``;
        repeats R: independent conformations per molecule, repeat-major.  relax=False: only
        superposed on the beads (not yet CG-exact); :meth:`relax` does the geometry-preserving
        exact projection later, for the candidates actually used (it keeps the bond and 1-3
        distances of its input, so its input must be the unprojected conformation)."""
        import torch

        from .features import cg_features
        from .place import fit_to_beads, relax_project

        b = torch.as_tensor(np.asarray(beads, np.float64), device=device)
        feats = cg_features(b)
        if self.env_cutoff > 0:
            if env is None:
                raise MultiscaleError(f"moleculetype {self.name}: the model uses neighbour counts (env_cutoff {self.env_cutoff} nm): pass env")
            feats = torch.cat([feats, torch.as_tensor(np.asarray(env, np.float64), device=device)], -1)
        bonds, angles, tors = self.density.sample(feats, generator, temperature=temperature, repeats=repeats)
        if repeats > 1:
            b = b.repeat(repeats, 1, 1)
        x = self.tree.to_cartesian(bonds, angles, tors)
        if len(self.tree.closures):
            x = self.tree.close_rings(x, self.closure_targets)
        x = fit_to_beads(x, self.matrix, b, generator)
        if not relax:
            return x
        return relax_project(x, self.matrix, self.operator, b, self.local_pairs, RELAX_ITERATIONS, RELAX_STIFFNESS)

    def relax(self, x: np.ndarray, beads: np.ndarray) -> np.ndarray:
        """Geometry-preserving exact projection (:func:`.place.relax_project`) of molecules
        x (B, n_atoms, 3) onto beads (B, n_beads, 3) nm (numpy in, numpy out)."""
        import torch

        from .place import relax_project

        return relax_project(torch.as_tensor(x, dtype=torch.float64), self.matrix, self.operator,
                             torch.as_tensor(beads, dtype=torch.float64), self.local_pairs, RELAX_ITERATIONS,
                             RELAX_STIFFNESS).numpy()

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
                "tree": self.tree.to_dict(), "density": self.density.to_dict(), "stereo": self.stereo.to_dict(),
                "closure_targets": np.asarray(self.closure_targets, float).tolist(), "training": dict(self.training),
                "smoothing": self.smoothing, "hbond_eps": float(self.hbond_eps), "env_cutoff": float(self.env_cutoff),
                "rotor_priors": [None if h is None else np.asarray(h, float).tolist() for h in self.rotor_priors]}

    @classmethod
    def from_dict(cls, d: dict) -> "MoltypeModel":
        from .certify import StereoReference
        from .ictree import ICTree
        from .model import ICDensity

        return cls(d["name"], d["fingerprint"], list(d["atom_names"]), list(d["elements"]),
                   np.array(d["bonds"], int).reshape(-1, 2), list(d["bead_names"]),
                   np.asarray(d["matrix"].numpy() if hasattr(d["matrix"], "numpy") else d["matrix"], np.float64),
                   ICTree.from_dict(d["tree"]), ICDensity.from_dict(d["density"]), StereoReference.from_dict(d["stereo"]),
                   np.array(d["closure_targets"], float), dict(d.get("training", {})), float(d.get("smoothing", 0.0)),
                   list(d.get("rotor_priors", [])), float(d.get("hbond_eps", 0.0)), float(d.get("env_cutoff", 0.0)))


def _describe_difference(mt, entry: MoltypeModel) -> str:
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


# ============================================================================ system model
class BackmapModel:
    """A trained backmapping model: mapping, per-moltype models, water bank, provenance."""

    def __init__(self, mapping, moltypes: dict, water: dict | None = None, provenance: list | None = None,
                 source: str = "<memory>"):
        self.mapping = mapping
        self.moltypes: dict[str, MoltypeModel] = dict(moltypes)
        self.water = water
        self.provenance = list(provenance or [])
        self.source = source
        self._bank = None

    def __repr__(self) -> str:
        return f"BackmapModel({', '.join(self.moltypes)}; water bank: {'yes' if self.water else 'default'})"

    @property
    def water_bank(self):
        """The :class:`~multiscale.backmap.water.WaterBank` (the model's, else the bundled default)."""
        from .water import WaterBank

        if self._bank is None:
            self._bank = WaterBank.from_dict(self.water) if self.water else WaterBank.default()
        return self._bank

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "mapping": self.mapping.to_dict(),
                "moltypes": {k: v.to_dict() for k, v in self.moltypes.items()},
                "fingerprints": {k: v.fingerprint for k, v in self.moltypes.items()},
                "water": self.water, "provenance": self.provenance}

    @classmethod
    def from_dict(cls, d: dict, source: str = "<memory>") -> "BackmapModel":
        from ..mapping import Mapping

        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise MultiscaleError(f"{source} is not a multiscale backmapping model (format {d.get('format') if isinstance(d, dict) else type(d).__name__!r}): pass a file written by `multiscale train`")
        if int(d.get("version", 0)) > VERSION:
            raise MultiscaleError(f"{source} is a version {d.get('version')} model; this multiscale reads up to version {VERSION}: upgrade multiscale")
        try:
            mols = {k: MoltypeModel.from_dict(v) for k, v in d["moltypes"].items()}
        except (KeyError, RuntimeError, TypeError, ValueError) as e:  # e.g. missing/renamed network weights
            why = " ".join(v.strip() for v in str(e).strip().splitlines()[:2]) or type(e).__name__
            raise MultiscaleError(f"{source} was written by an incompatible development version of multiscale "
                                  f"({why.strip()}): retrain it with `multiscale train`") from e
        return cls(Mapping.from_dict(d["mapping"], source=source), mols, d.get("water"), d.get("provenance", []), source)

    def save(self, path) -> Path:
        """Write the model atomically (``torch.save`` of :meth:`to_dict`)."""
        import torch

        from ..io import atomic_path

        with atomic_path(path) as tmp:
            torch.save(_plain(self.to_dict()), tmp)
        return Path(path)

    def check(self, topology) -> None:
        """Raise MultiscaleError if a non-water moltype of ``topology`` is missing or differs."""
        for mt in topology.moltypes.values():
            if mt.is_water:
                continue
            entry = self.moltypes.get(mt.name)
            if entry is None:
                raise MultiscaleError(
                    f"backmapping model {self.source} has no moleculetype {mt.name} (it has: {', '.join(self.moltypes) or 'none'}): "
                    f"train on AA frames containing {mt.name} (multiscale train, --init to extend this model)")
            if entry.fingerprint != mt.fingerprint():
                raise MultiscaleError(
                    f"backmapping model {self.source} was trained for a different moleculetype {mt.name}: "
                    f"{_describe_difference(mt, entry)}; retrain the model for this topology")

    def summary(self) -> str:
        lines = [f"backmapping model ({FORMAT} v{VERSION}) {self.source}"]
        for k, v in self.moltypes.items():
            t = v.training
            lines.append(f"  {k}: {v.n_atoms} atoms, {v.n_beads} beads, {v.tree.n_torsions} torsions, "
                         f"{len(v.stereo.enforced_centres)} stereocentres, {len(v.stereo.enforced_bonds)} cis/trans; "
                         f"trained on {t.get('n_samples', '?')} molecules, val NLL {t.get('val_nll', float('nan')):.2f}")
        lines.append(f"  water bank: {len(self.water_bank)} clusters" + ("" if self.water else " (bundled default)"))
        return "\n".join(lines)


def _plain(o):
    """Recursively convert numpy scalars/arrays (and other non-plain leaves) for weights_only loading."""
    import torch

    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, torch.Tensor):
        return o.detach().cpu()
    if isinstance(o, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(o))
    if isinstance(o, np.generic):
        return o.item()
    if o is None or isinstance(o, (bool, int, float, str)):
        return o
    return str(o)


def load_model(path, topology=None) -> BackmapModel:
    """Read a model file; with ``topology`` check that every non-water moltype matches."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise MultiscaleError(f"backmapping model {p} not found: train one with `multiscale train`")
    try:
        d = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MultiscaleError(f"{p} cannot be read as a backmapping model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): pass a file written by `multiscale train`") from e
    m = BackmapModel.from_dict(d, source=str(p))
    if topology is not None:
        m.check(topology)
    return m


# ============================================================================ training
def _water_order(mt) -> list[int]:
    o = [i for i, e in enumerate(mt.elements) if e == "O"]
    h = [i for i, e in enumerate(mt.elements) if e == "H"]
    return o[:1] + h[:2]


def train(topology, mapping, frames, *, seed: int = 0, epochs: int | None = None, init: BackmapModel | None = None,
          device: str = "cpu", provenance: dict | None = None, log=print, hidden: int = 128, torsion_hidden: int = 48,
          n_components: int = 6, batch_size: int = 512, lr: float | None = None, feature_noise: float = 0.02,
          max_samples: int = 200_000, target_steps: int = 2000, threads: int | None = None,
          grouped_offsets: bool = True, calibrate_hbonds: bool = True,
          env_cutoff: float | None = None, weight_decay: float = 0.0) -> BackmapModel:
    """Train (or, with ``init``, fine-tune) a backmapping model on AA frames.

    topology: :class:`~multiscale.topology.SystemTopology`; mapping: :class:`~multiscale.mapping.Mapping`;
    frames: :class:`~multiscale.io.Frames` (positions (F, N, 3) nm, box (F, 3) nm).
    epochs: passes over the data per moltype (default: about ``target_steps`` optimiser steps,
    3..300 epochs).  grouped_offsets: sample all sibling-offset torsions in one final
    autoregressive step (fewer sequential steps; False = strictly one torsion per step).
    env_cutoff: also condition on the number of beads of other molecules within this distance
    (nm, e.g. 1.0) of each bead (computed from the CG input at backmapping time).
    calibrate_hbonds: choose the hydrogen-bond weight of the polar-hydrogen orientation by
    backmapping up to 3 training frames (see :func:`multiscale.backmap.place.orient_rotors`).
    Moltypes present in ``init`` but not in the frames are kept unchanged;
    moltypes in both are fine-tuned from the init weights (lr 1e-3).  Returns the model.
    """
    check_device(device)
    import torch

    from ..coarse_grain import cg_layout, whole_molecules
    from ..geometry import dihedral
    from .certify import StereoReference
    from .features import cg_features
    from .ictree import ICTree
    from .model import ICDensity, fit
    from .water import WaterBank

    log = log or (lambda *a, **k: None)
    t_all = time.perf_counter()
    pos = np.asarray(frames.positions)
    box = np.asarray(frames.box, np.float64).reshape(-1, 3)
    if pos.ndim != 3 or pos.shape[1] != topology.n_atoms:
        raise MultiscaleError(f"training frames have {pos.shape[-2] if pos.ndim >= 2 else '?'} atoms but topology {topology.source} has {topology.n_atoms}: pass frames of this system")
    layout = cg_layout(topology, mapping)
    rng = np.random.default_rng(seed)
    moltypes = dict(init.moltypes) if init is not None else {}
    report = {}
    by_name: dict[str, list] = {}
    for blk in layout:
        by_name.setdefault(blk.aa_block.moltype.name, []).append(blk)
    water_xyz = []
    env_cut = float(env_cutoff or 0.0)
    if init is not None and not env_cut:
        env_cut = max([m.env_cutoff for m in init.moltypes.values()] + [0.0])
    env_counts = None
    if env_cut > 0:
        from ..coarse_grain import coarse_grain
        from .features import neighbour_counts

        cgr = coarse_grain(pos, box, topology, mapping, seed=seed, layout=layout)
        bm = _bead_molecules(layout)
        env_counts = np.stack([neighbour_counts(cgr.positions[f], box[f], bm, env_cut) for f in range(len(pos))])
    with _torch_threads(threads):
        for name, blks in by_name.items():
            mt = blks[0].aa_block.moltype
            if blks[0].is_water:
                order = _water_order(mt)
                for blk in blks:
                    water_xyz.append(whole_molecules(pos, box, blk.aa_block)[:, :, order, :])
                continue
            x = np.concatenate([whole_molecules(pos, box, b.aa_block).reshape(-1, mt.n_atoms, 3) for b in blks])
            env = None
            if env_counts is not None:
                env = np.concatenate([env_counts[:, b.start:b.stop].reshape(-1, b.n_beads) for b in blks])
            if len(x) > max_samples:
                keep = np.sort(rng.choice(len(x), max_samples, replace=False))
                x = x[keep]
                env = env[keep] if env is not None else None
            M = blks[0].matrix
            prev = moltypes.get(name) if init is not None else None
            if prev is not None and prev.env_cutoff != env_cut:
                raise MultiscaleError(f"init model {init.source}: moleculetype {name} was trained with env_cutoff "
                                      f"{prev.env_cutoff} nm, not {env_cut}: fine-tune with the same env_cutoff")
            if prev is not None and prev.fingerprint != mt.fingerprint():
                raise MultiscaleError(f"init model {init.source}: moleculetype {name} differs from the topology ({_describe_difference(mt, prev)}): train from scratch (no --init)")
            tree = prev.tree if prev is not None else ICTree.from_moltype(mt, M)
            beads = np.einsum("ba,nak->nbk", M, x)
            feats = cg_features(beads)
            if env is not None:
                feats = np.concatenate([feats, env], -1)
            bonds, angles, tors = tree.to_internal(x)
            if prev is not None:
                dens = prev.density
                dens = type(dens).from_dict(dens.to_dict())
                with torch.no_grad():
                    if feats.shape[1]:
                        f = torch.as_tensor(feats)
                        dens.feat_lo.copy_(torch.minimum(dens.feat_lo, f.min(0).values))
                        dens.feat_hi.copy_(torch.maximum(dens.feat_hi, f.max(0).values))
                set_stats, lr_m = False, (lr or 1e-3)
            else:
                torch.manual_seed(_derive_seed(seed, 17))
                dens = ICDensity(feats.shape[1], tree.n_bonds, tree.n_angles, tree.n_torsions, hidden=hidden,
                                 torsion_hidden=torsion_hidden, n_components=n_components,
                                 steps=tree.torsion_steps() if grouped_offsets else None)
                set_stats, lr_m = True, (lr or 3e-3)
            n_ep = epochs
            if n_ep is None:
                steps = max(1, int(np.ceil(len(x) * 0.95 / batch_size)))
                n_ep = int(np.clip(round(target_steps / steps), 3, 300))
            log(f"training {name}: {len(x)} molecules, {mt.n_atoms} atoms, {M.shape[0]} beads, "
                f"{tree.n_torsions} torsions ({len(tree.heavy_torsions())} heavy), {n_ep} epochs")
            info = fit(dens, feats, bonds, angles, tors, epochs=n_ep, batch_size=batch_size, lr=lr_m,
                       seed=_derive_seed(seed, 23), feature_noise=feature_noise, device=device, set_stats=set_stats,
                       log=log, label=name, weight_decay=weight_decay)
            stereo = StereoReference.from_frames(mt.n_atoms, mt.bonds, mt.elements, x)
            if prev is not None:  # keep the established references, add counts
                stereo = prev.stereo
            cl, _ = tree.closure_pairs()
            targets = np.linalg.norm(x[:, cl[:, 1]] - x[:, cl[:, 0]], axis=-1).mean(0) if len(cl) else np.zeros(0)
            info = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in info.items()}
            info["fine_tuned"] = prev is not None
            entry = MoltypeModel(name, mt.fingerprint(), list(mt.atom_names), list(mt.elements),
                                 np.asarray(mt.bonds, int), list(blks[0].bead_names), np.asarray(M, np.float64),
                                 tree, dens, stereo, targets, info)
            entry.rotor_priors = [np.histogram(dihedral(x[:, r["r"]], x[:, r["c"]], x[:, r["a"]], x[:, r["hs"][0]]),
                                               36, (-np.pi, np.pi))[0].astype(float) + 1.0 for r in entry.rotors]
            entry.hbond_eps = prev.hbond_eps if prev is not None else 0.0
            entry.env_cutoff = env_cut
            moltypes[name] = entry
            report[name] = info
            log(f"  {name}: train NLL {info['train_nll']:.3f}, validation NLL {info['val_nll']:.3f} ({info['seconds']:.1f} s)")
    water = init.water if init is not None else None
    if water_xyz:
        wx = np.concatenate(water_xyz, axis=1)
        if wx.shape[1] >= 4:
            bank = WaterBank.from_frames(wx, box, seed=seed, note=f"from {len(wx)} training frame(s)")
            water = bank.to_dict()
            log(f"water bank: {len(bank)} clusters from {len(wx)} frame(s)")
    model = BackmapModel(mapping, moltypes, water, [])
    cal = None
    if calibrate_hbonds and any(moltypes[n].rotors for n in report):
        cal = _calibrate_hbonds(model, topology, mapping, pos, box, seed, [n for n in report if moltypes[n].rotors])
        log(f"hydrogen-bond weight: {cal['eps']} kT per bond (H-bonds per calibration frame: reference "
            f"{cal['reference']:.1f}, backmapped {cal['counts'][str(cal['eps'])]:.1f}; without the weight "
            f"{cal['counts']['0.0']:.1f})")
    prov = dict(provenance or {})
    if cal is not None:
        prov["hbond_calibration"] = cal
    prov.update({"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "n_frames": int(pos.shape[0]),
                 "seed": int(seed), "epochs": epochs, "moltypes": report, "torch": str(torch.__version__),
                 "seconds": round(time.perf_counter() - t_all, 2), "fine_tune_of": init.source if init is not None else None})
    prov.setdefault("final_nll", {k: v.get("val_nll") for k, v in report.items()})
    model.provenance = (list(init.provenance) if init is not None else []) + [prov]
    return model


def _calibrate_hbonds(model: BackmapModel, topology, mapping, pos: np.ndarray, box: np.ndarray, seed: int,
                      names: list[str], n_frames: int = 3, grid=(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)) -> dict:
    """Choose the hydrogen-bond weight (kT per bond) of the polar-hydrogen orientation step so
    that backmapped training frames donate as many hydrogen bonds as the AA frames did."""
    from ..coarse_grain import coarse_grain

    fr = np.unique(np.linspace(0, len(pos) - 1, min(n_frames, len(pos))).round().astype(int))
    cg = coarse_grain(pos[fr], box[fr], topology, mapping, seed=seed)
    aa, _ = backmap(model, topology, cg.positions, cg.box, seed=_derive_seed(seed, 29), hbond_eps=0.0, max_retries=2)
    ref = float(np.mean([_count_frame_hbonds(np.asarray(pos[f], np.float64), box[f], topology, model) for f in fr]))
    counts = {}
    for eps in grid:
        c = []
        for k, f in enumerate(fr):
            x, _ = _orient_frame(aa[k].astype(np.float64), box[f], topology, model,
                                 np.random.default_rng(_derive_seed(seed, 31, k)), eps)
            c.append(_count_frame_hbonds(x, box[f], topology, model))
        counts[str(float(eps))] = float(np.mean(c))
    best = min(grid, key=lambda e: (abs(counts[str(float(e))] - ref), e))
    for n in names:
        model.moltypes[n].hbond_eps = float(best)
    return {"eps": float(best), "reference": ref, "counts": counts, "frames": fr.tolist()}


# ============================================================================ backmapping
def _bead_count_error(n: int, layout, topology) -> MultiscaleError:
    from ..coarse_grain import n_beads

    parts = ", ".join(f"{b.cg_name} x{b.count} -> {b.count * b.n_beads} beads" if not b.is_water else
                      f"{b.cg_name} x{b.count} ({b.per_bead} {b.aa_block.moltype.name} each)" for b in layout)
    return MultiscaleError(f"CG input has {n} beads but the mapping of {topology.source or 'the topology'} expects "
                           f"{n_beads(layout)} ({parts}): pass the CG structure of this system")


class _Solute:
    """The molecules of one solute block in one frame, with a pool of candidate conformations.

    Every molecule gets ``candidates`` draws in one batched call; candidates with wrong stereo
    or an intramolecular clash are ranked last.  A molecule that has to be resampled takes its
    next candidate; when its pool is used up, a fresh pool is drawn (new derived seed).
    Candidates are ranked as superposed (before the exact projection, which moves atoms by
    ~0.005 nm); the projection (:meth:`MoltypeModel.relax`) runs only for candidates that
    become a molecule's conformation.
    """

    def __init__(self, bi: int, mm: MoltypeModel, beads: np.ndarray, x, env=None):
        self.bi, self.mm, self.beads, self.x, self.env = bi, mm, beads, x, env
        self.pool = self.rank = self.ptr = self.relaxed = None
        self.K = 1  # candidates drawn up front per molecule

    def _generate(self, idx, seed, dev, temperature, K, cutoff):
        import torch

        g = torch.Generator(device=dev).manual_seed(seed)
        env = self.env[idx] if self.env is not None else None
        pool = self.mm.generate(self.beads[idx], g, dev, temperature, env, repeats=K, relax=False).cpu().numpy()
        pool = pool.reshape(K, len(idx), self.mm.n_atoms, 3)
        flat = pool.reshape(-1, self.mm.n_atoms, 3)
        wc, wb = self.mm.stereo.wrong(flat)
        intra = self.mm.intra_clash(flat, cutoff)
        ok = ~(wc.any(1) | wb.any(1) | intra)
        rank = np.argsort(~ok.reshape(K, len(idx)), axis=0, kind="stable")
        self._ok = ok.reshape(K, len(idx))
        n = len(idx)  # first-draw counts: candidate 0 of every molecule
        return pool, rank, (int(wc[:n].sum()), int(wb[:n].sum()), int(intra[:n].sum()))

    def _take(self, idx, cand):
        """x[idx] <- pool candidate ``cand`` (per molecule), relaxing it first if needed."""
        need = ~self.relaxed[cand, idx]
        if need.any():
            i, c = idx[need], cand[need]
            self.pool[c, i] = self.mm.relax(self.pool[c, i], self.beads[i])
            self.relaxed[c, i] = True
        self.x[idx] = self.pool[cand, idx]

    def draw(self, idx, seed, dev, temperature, K, cutoff):
        """Initial draw for all molecules; returns first-draw counts (stereo, cis/trans, intra) and
        the number of molecules that did not keep their first draw."""
        pool, rank, counts = self._generate(idx, seed, dev, temperature, K, cutoff)
        self.pool, self.rank = pool, rank
        self.relaxed = np.zeros(pool.shape[:2], bool)
        self.ptr = np.zeros(len(idx), int)
        self.x = np.empty(pool.shape[1:])
        self._take(np.arange(len(idx)), rank[0])
        return counts + (int((rank[0] != 0).sum()),)

    def choose(self, idx, cand):
        """Make pool candidate ``cand`` (per molecule in ``idx``) the current conformation."""
        pos = np.argmax(self.rank[:, idx] == cand[None], axis=0)
        r0 = self.rank[0, idx].copy()
        self.rank[0, idx] = cand
        self.rank[pos, idx] = r0
        self.ptr[idx] = 0
        self._take(idx, cand)

    def spinnable(self, idx, cutoff):
        """The molecules of ``idx`` with correct stereo and no intramolecular clash (their
        clashes are with other molecules, which a turn about the free bead axis can remove)."""
        wc, wb = self.mm.stereo.wrong(self.x[idx])
        return idx[~(wc.any(1) | wb.any(1) | self.mm.intra_clash(self.x[idx], cutoff))]

    def spin(self, idx, seed):
        """Turn molecules ``idx`` (1 or 2 beads) about their beads by a fresh uniform draw
        (:func:`.place.spin_about_beads`): the same conformation, CG-exact, new orientation."""
        import torch

        from .place import spin_about_beads

        g = torch.Generator().manual_seed(seed)
        self.x[idx] = spin_about_beads(torch.as_tensor(self.x[idx]), torch.as_tensor(self.beads[idx]), g).numpy()

    def next(self, idx, seed, dev, temperature, K, cutoff):
        """Replace molecules ``idx`` by their next candidate (fresh pool when used up)."""
        self.ptr[idx] += 1
        old = idx[self.ptr[idx] >= self.pool.shape[0]]
        if len(old):  # few molecules: a deeper pool costs about the same as a shallow one
            Kp = self.pool.shape[0]
            pool, rank, _ = self._generate(old, seed, dev, temperature, Kp * 4, cutoff)
            keep = rank[:Kp]  # the best Kp of the 4 Kp fresh candidates, in rank order
            self.pool[:, old] = pool[keep, np.arange(len(old))]
            self.relaxed[:, old] = False
            self.rank[:, old] = np.arange(Kp)[:, None]
            self.ptr[old] = 0
        self._take(idx, self.rank[self.ptr[idx], idx])


def check_device(device) -> "torch.device":
    """The torch device for ``device`` ("cpu", "cuda", "cuda:1", ...), or a clear error when
    torch cannot use it here."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise MultiscaleError(f"--device {device!r} is not a torch device: use cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MultiscaleError(f"--device {device}: torch sees no CUDA GPU here (torch {torch.__version__}, "
                              "cuda available: False): use --device cpu or install a CUDA build of torch")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise MultiscaleError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return dev


def default_candidates(mm: MoltypeModel) -> int:
    """Conformations drawn up front per molecule: 1 for 1-2 beads (a molecule clashing with a
    neighbour is first turned about its beads, see :data:`SPIN_ROUNDS`), 2 for 3+ beads (the
    second candidate is the cheap alternative; octan-2-ol heavy-torsion JSD max 0.013 with 2
    vs 0.014 with 1)."""
    return 1 if mm.n_beads <= 2 else 2


def backmap(model: BackmapModel, topology, cg_positions, box, *, seed: int = 0, device: str = "cpu",
            max_retries: int = 5, wrap: bool = False, temperature: float = 1.0, clash_inter: float = 0.08,
            clash_intra: float = 0.10, candidates: int | None = None, hbond_eps: float | None = None, select_eps: float = 0.0,
            threads: int | None = None, log=None):
    """Backmap CG frames to atoms.

    cg_positions: (B, 3) or (F, B, 3) nm, beads in :func:`multiscale.coarse_grain.cg_layout`
    order; box: (3,) or (F, 3) nm.  Returns (positions (F, N, 3) float32 nm in the AA
    topology's atom order, list of :class:`~multiscale.backmap.certify.CertificateReport`).
    max_retries: resampling rounds for molecules with clashes or wrong stereo; candidates:
    conformations drawn per molecule up front (resampling uses them first; default
    :func:`default_candidates`: 1 for molecules of 1-2 beads, whose clashes are first resolved
    by turning them about their beads, 2 for 3 or more beads); hbond_eps:
    override the model's calibrated hydrogen-bond weight (kT per bond) used when orienting
    rotatable polar hydrogens (0: their torsions are redrawn from the training distribution
    with clash avoidance only); wrap: wrap atoms into the box (default: molecules whole, next
    to their first bead).  select_eps: opt-in environment-aware choice among the ``candidates``
    conformations of molecules with polar groups (weight ``exp(select_eps * n_contacts)``,
    n_contacts = O/N of neighbours within 0.32 nm of the hydroxyl-type O/N; e.g. 3 with
    candidates=6-12): more hydrogen bonds at once (octanol: 0.23 -> 0.33-0.40 per molecule,
    reference 0.83) for ~2-4x the time; 0 (default) = off.
    """
    import torch

    from ..coarse_grain import cg_layout, n_beads
    from .certify import CertificateReport, find_clashes, flip_double_bond, swap_substituents
    from .features import neighbour_counts, unwrap_beads
    from .place import relax_project

    cg = np.asarray(cg_positions, np.float64)
    if cg.ndim == 2:
        cg = cg[None]
    if cg.ndim != 3 or cg.shape[-1] != 3:
        raise MultiscaleError(f"CG positions have shape {np.shape(cg_positions)}: expected (beads, 3) or (frames, beads, 3) nm")
    nf = cg.shape[0]
    boxes = np.asarray(box, np.float64).reshape(-1, 3)
    if len(boxes) == 1:
        boxes = np.repeat(boxes, nf, 0)
    if len(boxes) != nf:
        raise MultiscaleError(f"{len(boxes)} boxes for {nf} CG frames: pass one box (3,) or one per frame (F, 3)")
    if not np.all(np.isfinite(cg)):
        raise MultiscaleError("CG positions contain NaN/inf: check the CG structure")
    layout = cg_layout(topology, model.mapping)
    if cg.shape[1] != n_beads(layout):
        raise _bead_count_error(cg.shape[1], layout, topology)
    model.check(topology)
    for blk in layout:
        if blk.is_water and blk.per_bead != 4:
            raise MultiscaleError(f"water mapping has {blk.per_bead} {blk.aa_block.moltype.name} per {blk.cg_name} bead; backmapping supports 4 (Martini 3)")
    out = np.empty((nf, topology.n_atoms, 3), np.float32)
    reports = []
    dev = check_device(device)
    for m in model.moltypes.values():
        m.density.to(dev)
    # static per-system arrays for the clash search (solutes)
    sol_blocks = [(bi, blk) for bi, blk in enumerate(layout) if not blk.is_water]
    kinds = {name: k for k, name in enumerate(dict.fromkeys(blk.aa_block.moltype.name for _, blk in sol_blocks))}
    excl = [model.moltypes[name].exclusions for name in kinds]
    mol_id, local, kind = [], [], []
    mol_base = 0
    mol_block = []  # per global solute molecule: (solute list index, molecule index)
    for si, (bi, blk) in enumerate(sol_blocks):
        n, c = blk.aa_block.moltype.n_atoms, blk.count
        mol_id.append(np.repeat(np.arange(mol_base, mol_base + c), n))
        local.append(np.tile(np.arange(n), c))
        kind.append(np.full(n * c, kinds[blk.aa_block.moltype.name]))
        mol_block.append(np.stack([np.full(c, si), np.arange(c)], 1))
        mol_base += c
    if sol_blocks:
        mol_id, local, kind = np.concatenate(mol_id), np.concatenate(local), np.concatenate(kind)
        mol_block = np.concatenate(mol_block)
    water_blocks = [(bi, blk) for bi, blk in enumerate(layout) if blk.is_water]
    bead_mol = _bead_molecules(layout)
    try:
        with _torch_threads(threads), torch.no_grad():
            for f in range(nf):
                t0 = time.perf_counter()
                bx = boxes[f]
                rep = CertificateReport(frame=f, thresholds={"inter_nm": clash_inter, "intra_nm": clash_intra})
                sols: list[_Solute] = []
                env_all = {}
                for c_ in sorted({model.moltypes[b.aa_block.moltype.name].env_cutoff for _, b in sol_blocks} - {0.0}):
                    env_all[c_] = neighbour_counts(cg[f], bx, bead_mol, c_)
                for bi, blk in sol_blocks:
                    mm = model.moltypes[blk.aa_block.moltype.name]
                    beads = unwrap_beads(cg[f, blk.start:blk.stop].reshape(blk.count, blk.n_beads, 3), bx)
                    env = env_all[mm.env_cutoff][blk.start:blk.stop].reshape(blk.count, blk.n_beads) if mm.env_cutoff > 0 else None
                    v = rep.per_moltype.setdefault(mm.name, {
                        "molecules": 0, "stereocentres": len(mm.stereo.enforced_centres),
                        "double_bonds": len(mm.stereo.enforced_bonds), "stereo_wrong_initial": 0,
                        "stereo_wrong_final": 0, "stereo_swapped": 0, "cistrans_wrong_initial": 0,
                        "cistrans_wrong_final": 0, "cistrans_flipped": 0, "intra_clash_initial": 0,
                        "clash_molecules_initial": 0, "clash_molecules_final": 0, "resampled": 0, "unresolved": []})
                    v["molecules"] += blk.count
                    sol = _Solute(bi, mm, beads, None, env)
                    sol.K = default_candidates(mm) if candidates is None else int(candidates)
                    first = sol.draw(np.arange(blk.count), _derive_seed(seed, f, 0, bi), dev, temperature, sol.K,
                                     clash_intra)
                    v["stereo_wrong_initial"] += first[0]
                    v["cistrans_wrong_initial"] += first[1]
                    v["intra_clash_initial"] += first[2]
                    v["resampled"] += first[3]
                    sols.append(sol)

                state = {}

                def check(changed=None):
                    """Per solute block: bad-molecule masks (stereo or clash), clash masks, pair counts.

                    changed: global solute molecule ids resampled since the last check; only pairs
                    involving their atoms are searched again (the rest did not move)."""
                    bad, clash_bad = [], []
                    for s in sols:
                        wc, wb = s.mm.stereo.wrong(s.x)
                        bad.append(wc.any(1) | wb.any(1))
                        clash_bad.append(np.zeros(len(s.x), bool))
                    n_inter = n_intra = 0
                    if sols:
                        allx = np.concatenate([s.x.reshape(-1, 3) for s in sols])
                        if changed is None or "ip" not in state:
                            ip, jp = find_clashes(allx, bx, mol_id, local, kind, excl, clash_inter, clash_intra)
                        else:
                            moved = np.isin(mol_id, changed)
                            keep_i = ~moved[state["ip"]].any(1)
                            keep_j = ~moved[state["jp"]].any(1)
                            ni, nj = find_clashes(allx, bx, mol_id, local, kind, excl, clash_inter, clash_intra,
                                                  subset=np.flatnonzero(moved))
                            ip = np.concatenate([state["ip"][keep_i], ni])
                            jp = np.concatenate([state["jp"][keep_j], nj])
                        state["ip"], state["jp"] = ip, jp
                        n_inter, n_intra = len(ip), len(jp)
                        mols = np.unique(mol_id[np.concatenate([ip.ravel(), jp.ravel()])])
                        for si, mi in mol_block[mols]:
                            clash_bad[si][mi] = True
                    return [b | c for b, c in zip(bad, clash_bad)], clash_bad, n_inter, n_intra

                if select_eps:
                    rep.environment_selected = _environment_select(
                        sols, bx, np.random.default_rng(_derive_seed(seed, f, 5_000_011)), select_eps)
                bad, clash_bad, n_inter, n_intra = check()
                rep.inter_clash_pairs_initial, rep.intra_clash_pairs_initial = n_inter, n_intra
                for k, s in enumerate(sols):
                    rep.per_moltype[s.mm.name]["clash_molecules_initial"] += int(clash_bad[k].sum())
                attempt = 0
                sol_base = np.concatenate([[0], np.cumsum([len(s.x) for s in sols])]) if sols else np.zeros(1, int)
                while attempt < max_retries and any(b.any() for b in bad):
                    attempt += 1
                    changed = []
                    for k, s in enumerate(sols):
                        idx = np.flatnonzero(bad[k])
                        if not len(idx):
                            continue
                        rep.per_moltype[s.mm.name]["resampled"] += len(idx)
                        if attempt <= SPIN_ROUNDS and s.mm.n_beads <= 2:
                            # only intermolecular clashes: turn about the free bead axis first
                            sp = s.spinnable(idx, clash_intra)
                            if len(sp):
                                s.spin(sp, _derive_seed(seed, f, attempt, s.bi, 7))
                                changed.append(sol_base[k] + sp)
                                idx = np.setdiff1d(idx, sp)
                        if len(idx):
                            s.next(idx, _derive_seed(seed, f, attempt, s.bi), dev, temperature, s.K, clash_intra)
                            changed.append(sol_base[k] + idx)
                    bad, clash_bad, n_inter, n_intra = check(np.concatenate(changed) if changed else np.zeros(0, int))
                rep.retries = attempt
                # last resort: invert wrong centres / flip wrong double bonds
                repaired = False
                for k, s in enumerate(sols):
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
                                rep.per_moltype[s.mm.name]["stereo_swapped"] += len(idx)
                    for j in range(wb.shape[1]):
                        idx = np.flatnonzero(wb[:, j])
                        if len(idx):
                            q = st.quads[eb[j]]
                            y = flip_double_bond(s.x[idx], s.mm.n_atoms, s.mm.bonds, int(q[1]), int(q[2]))
                            if y is not None:
                                s.x[idx] = y
                                changed[idx] = True
                                rep.per_moltype[s.mm.name]["cistrans_flipped"] += len(idx)
                    if changed.any():
                        repaired = True
                        idx = np.flatnonzero(changed)
                        s.x[idx] = s.mm.refit(s.x[idx], s.beads[idx])
                if repaired:
                    bad, clash_bad, n_inter, n_intra = check()
                xf = np.zeros((topology.n_atoms, 3))  # this frame, float64
                for k, s in enumerate(sols):
                    wc, wb = s.mm.stereo.wrong(s.x)
                    v = rep.per_moltype[s.mm.name]
                    v["stereo_wrong_final"] += int(wc.sum())
                    v["cistrans_wrong_final"] += int(wb.sum())
                    v["clash_molecules_final"] += int(clash_bad[k].sum())
                    un = np.flatnonzero(bad[k])
                    v["unresolved"] = (v["unresolved"] + un.tolist())[:50]
                    blk = layout[s.bi]
                    xf[blk.aa_block.start:blk.aa_block.stop] = s.x.reshape(-1, 3)
                # water
                wstats, wbeads = [], {}
                if water_blocks:
                    others = np.concatenate([s.x.reshape(-1, 3) for s in sols]) if sols else np.zeros((0, 3))
                    bank = model.water_bank
                    for bi, blk in water_blocks:
                        beads = cg[f, blk.start:blk.stop].reshape(-1, 3)
                        wbeads[bi] = beads
                        w = bank.place(beads, bx, seed=_derive_seed(seed, f, 1_000_003, bi), others=others,
                                       max_retries=max_retries)
                        st = dict(getattr(bank, "last_stats", {}) or {})
                        for key in ("unresolved", "contacts", "contact_dist"):  # per-item arrays: keep the report small
                            st.pop(key, None)
                        wstats.append(st)
                        mt = blk.aa_block.moltype
                        wo = np.empty((len(beads) * 4, mt.n_atoms, 3))
                        wo[:, _water_order(mt)] = np.asarray(w, np.float64).reshape(-1, 3, 3)
                        xf[blk.aa_block.start:blk.aa_block.stop] = wo.reshape(-1, 3)
                        others = np.concatenate([others, wo.reshape(-1, 3)])
                # polar hydrogens towards acceptors of the (now complete) environment
                x_pre = None
                if any(s.mm.rotors for s in sols):
                    x_pre = xf.copy()
                    xf, moved = _orient_frame(xf, bx, topology, model, np.random.default_rng(_derive_seed(seed, f, 3_000_017)),
                                              hbond_eps)
                    rep.polar_h_reoriented = moved
                    for s in sols:
                        if s.mm.rotors:
                            blk = layout[s.bi]
                            xs = xf[blk.aa_block.start:blk.aa_block.stop].reshape(s.x.shape)
                            mv = np.flatnonzero(np.any(xs != s.x, axis=(1, 2)))  # molecules whose H turned
                            if len(mv):
                                s.x[mv] = relax_project(torch.as_tensor(xs[mv]), s.mm.matrix, s.mm.operator,
                                                        torch.as_tensor(s.beads[mv]), s.mm.local_pairs,
                                                        REPROJECT_ITERATIONS, RELAX_STIFFNESS).numpy()
                            xf[blk.aa_block.start:blk.aa_block.stop] = s.x.reshape(-1, 3)
                dev_max = 0.0
                for s in sols:
                    y = np.einsum("ba,nak->nbk", s.mm.matrix, s.x)
                    dev_max = max(dev_max, float(np.abs(y - s.beads).max()) if len(y) else 0.0)
                rep.max_cg_deviation_nm = dev_max
                # system-wide clash search; waters still overlapping something (e.g. H...H, which
                # the bank's O-O test does not see) are re-placed against everything else
                ip, jp, is_w, _ = _system_clashes(xf, bx, topology, model, clash_inter, clash_intra)
                if x_pre is not None:  # undo the reorientation of molecules that now clash
                    arr = _system_arrays(topology, model)
                    atoms = np.unique(np.concatenate([ip.ravel(), jp.ravel()])).astype(int)
                    atoms = atoms[~is_w[atoms]]
                    if len(atoms):
                        mols = np.unique(arr["mol"][atoms])
                        undo = np.isin(arr["mol"], mols) & ~np.all(xf == x_pre, axis=1)
                        touched = np.isin(arr["mol"], np.unique(arr["mol"][undo]))
                        if touched.any():
                            xf[touched] = x_pre[touched]
                            rep.polar_h_reoriented_undone = int(len(np.unique(arr["mol"][touched])))
                            for s in sols:
                                blk = layout[s.bi]
                                s.x = xf[blk.aa_block.start:blk.aa_block.stop].reshape(s.x.shape).copy()
                            ip, jp, is_w, _ = _system_clashes(xf, bx, topology, model, clash_inter, clash_intra)
                replaced = 0
                for r in range(min(max_retries, WATER_REPLACE_ROUNDS) if water_blocks else 0):
                    atoms = np.unique(ip.ravel()) if len(ip) else np.zeros(0, int)
                    atoms = atoms[is_w[atoms]]
                    if not len(atoms):
                        break
                    for bi, blk in water_blocks:
                        lo, hi = blk.aa_block.start, blk.aa_block.stop
                        sel = atoms[(atoms >= lo) & (atoms < hi)]
                        if not len(sel):
                            continue
                        nat = blk.aa_block.moltype.n_atoms * 4  # atoms per bead
                        bead_ids = np.unique((sel - lo) // nat)
                        mask = np.ones(topology.n_atoms, bool)
                        for bid in bead_ids:
                            mask[lo + bid * nat: lo + (bid + 1) * nat] = False
                        w = model.water_bank.place(wbeads[bi][bead_ids], bx, seed=_derive_seed(seed, f, 2_000_003 + r, bi),
                                                   others=xf[mask], max_retries=max_retries, n_candidates=32)
                        mt = blk.aa_block.moltype
                        wo = np.empty((len(bead_ids) * 4, mt.n_atoms, 3))
                        wo[:, _water_order(mt)] = np.asarray(w, np.float64).reshape(-1, 3, 3)
                        idx = (lo + bead_ids[:, None] * nat + np.arange(nat)).ravel()
                        xf[idx] = wo.reshape(-1, 3)
                        replaced += len(bead_ids)
                    ip, jp, is_w, _ = _system_clashes(xf, bx, topology, model, clash_inter, clash_intra)
                if water_blocks:
                    rep.water = {"blocks": wstats, "beads_replaced_after_clash_check": replaced}
                rep.inter_clash_pairs_final, rep.intra_clash_pairs_final = len(ip), len(jp)
                rep.water_clash_pairs_final = int((is_w[ip[:, 0]] | is_w[ip[:, 1]]).sum()) if len(ip) else 0
                out[f] = xf
                if wrap:
                    out[f] = (out[f] - bx * np.floor(out[f] / bx)).astype(np.float32)
                rep.seconds = round(time.perf_counter() - t0, 4)
                reports.append(rep)
                if log:
                    log(rep.summary())
    finally:
        for m in model.moltypes.values():
            m.density.cpu()
    return out, reports


def _environment_select(sols: list, box: np.ndarray, rng: np.random.Generator, eps: float, sweeps: int = 2,
                        r_contact: float = 0.32, r_clash: float = 0.15) -> int:
    """Choose, for molecules with polar groups, among their pool candidates the one that fits
    the neighbours: weight ``exp(eps * n_contacts - 20 * n_clash)`` with n_contacts = O/N atoms
    of other molecules within ``r_contact`` nm of the candidate's hydroxyl-type O/N (potential
    hydrogen-bond partners) and n_clash = atoms of other molecules within ``r_clash`` nm.  Half
    of the molecules (at random) are updated per half-sweep against the others held fixed.
    Returns the number of molecules that changed conformation."""
    from scipy.spatial import cKDTree

    targets = [k for k, s in enumerate(sols) if s.mm.rotors and s.pool is not None and s.pool.shape[0] > 1]
    if not targets or eps <= 0:
        return 0
    counts = [len(s.x) for s in sols]
    offs = np.concatenate([[0], np.cumsum(counts)])
    changed = 0
    for sweep in range(2 * sweeps):
        upd = rng.random(offs[-1]) < 0.5
        env_x, env_polar = [], []
        for k, s in enumerate(sols):
            keep = ~upd[offs[k]:offs[k + 1]]
            env_x.append(s.x[keep].reshape(-1, 3))
            el = np.asarray(s.mm.elements)
            pol = np.isin(el, ["O", "N"])
            env_polar.append(s.x[keep][:, pol].reshape(-1, 3))
        ex, ep = np.concatenate(env_x), np.concatenate(env_polar)
        if not len(ex):
            continue
        wrapx = np.mod(ex, box)
        wrapx[wrapx >= box] = 0.0
        wrapp = np.mod(ep, box)
        wrapp[wrapp >= box] = 0.0
        tx = cKDTree(wrapx, boxsize=box)
        tp = cKDTree(wrapp, boxsize=box) if len(ep) else None
        for k in targets:
            s = sols[k]
            idx = np.flatnonzero(upd[offs[k]:offs[k + 1]])
            if not len(idx):
                continue
            K = s.pool.shape[0]
            donors = sorted({r["a"] for r in s.mm.rotors})
            cand = s.pool[:, idx]  # (K, m, n, 3)
            pts = np.mod(cand[:, :, donors].reshape(-1, 3), box)
            pts[pts >= box] = 0.0
            score = np.zeros(K * len(idx) * len(donors))
            if tp is not None:
                score += eps * np.asarray([len(v) for v in tp.query_ball_point(pts, r_contact)])
            allp = np.mod(cand.reshape(-1, 3), box)
            allp[allp >= box] = 0.0
            d, _ = tx.query(allp, k=1, distance_upper_bound=r_clash)
            clash = np.isfinite(d).reshape(K, len(idx), -1).sum(-1)
            sc = score.reshape(K, len(idx), len(donors)).sum(-1) - 20.0 * clash
            sc = np.where(s._ok[:, idx], sc, -np.inf)
            pick = np.argmax(sc + rng.gumbel(size=sc.shape), axis=0)
            cur = s.rank[s.ptr[idx], idx]
            mv = (pick != cur) & np.isfinite(sc).any(0)
            if mv.any():
                s.choose(idx[mv], pick[mv])
                changed += int(mv.sum())
    return changed


def _bead_molecules(layout) -> np.ndarray:
    """Molecule id per CG bead (B,) in layout order (each W bead is its own molecule)."""
    ids, base = [], 0
    for blk in layout:
        ids.append(np.repeat(np.arange(base, base + blk.count), blk.n_beads))
        base += blk.count
    return np.concatenate(ids) if ids else np.zeros(0, int)


def _system_arrays(topology, model: BackmapModel):
    """Per-atom arrays of the whole system (cached on the model): molecule id, local index,
    moltype kind, is-water, acceptor (O/N) mask, and the per-kind exclusion matrices."""
    from .certify import exclusion_matrix

    key = (id(topology), topology.n_atoms)
    cache = getattr(model, "_sys_cache", None)
    if cache is not None and cache[0] == key:
        return cache[1]
    mol, loc, kind, excl, is_w, acc = [], [], [], [], [], []
    base = 0
    names: dict[str, int] = {}
    for blk in topology.blocks:
        mt = blk.moltype
        if mt.name not in names:
            names[mt.name] = len(excl)
            excl.append(model.moltypes[mt.name].exclusions if mt.name in model.moltypes
                        else exclusion_matrix(mt.n_atoms, mt.bonds, 2) | mt.is_water)
        n, c = mt.n_atoms, blk.count
        mol.append(np.repeat(np.arange(base, base + c), n))
        loc.append(np.tile(np.arange(n), c))
        kind.append(np.full(n * c, names[mt.name]))
        is_w.append(np.full(n * c, mt.is_water))
        acc.append(np.tile(np.isin(np.asarray(mt.elements), ["O", "N"]), c))
        base += c
    arrays = dict(zip(("mol", "loc", "kind", "is_w", "acc"), map(np.concatenate, (mol, loc, kind, is_w, acc))))
    arrays["excl"] = excl
    model._sys_cache = (key, arrays)
    return arrays


def _orient_frame(x: np.ndarray, box: np.ndarray, topology, model: BackmapModel, rng, eps: float | None = None):
    """Orient the rotatable polar hydrogens of every solute block (see :func:`.place.orient_rotors`)."""
    from .place import orient_rotors

    arr = _system_arrays(topology, model)
    moved = 0
    for blk in topology.blocks:
        entry = model.moltypes.get(blk.moltype.name)
        if entry is None or not entry.rotors or blk.moltype.is_water:
            continue
        base = blk.start + np.arange(blk.count) * blk.moltype.n_atoms
        ra = [(base + r["r"], base + r["c"], base + r["a"], base[:, None] + np.asarray(r["hs"])) for r in entry.rotors]
        x, mv = orient_rotors(x, box, ra, arr["mol"], arr["acc"], entry.hbond_eps if eps is None else float(eps), rng,
                              priors=entry.rotor_priors)
        moved += mv
    return x, moved


def _count_frame_hbonds(x: np.ndarray, box: np.ndarray, topology, model: BackmapModel) -> int:
    """Hydrogen bonds donated by the rotatable polar hydrogens of the solutes (one frame)."""
    from .place import count_hbonds

    arr = _system_arrays(topology, model)
    hs, ds = [], []
    for blk in topology.blocks:
        entry = model.moltypes.get(blk.moltype.name)
        if entry is None or blk.moltype.is_water:
            continue
        base = blk.start + np.arange(blk.count) * blk.moltype.n_atoms
        for r in entry.rotors:
            for h in r["hs"]:
                hs.append(base + h)
                ds.append(base + r["a"])
    if not hs:
        return 0
    return count_hbonds(x, box, np.concatenate(hs), np.concatenate(ds), arr["mol"], arr["acc"])


def _system_clashes(x: np.ndarray, box: np.ndarray, topology, model: BackmapModel, inter: float, intra: float):
    """Clash pairs over the whole system x (N, 3): (inter_pairs, intra_pairs, is_water (N,), None)."""
    from .certify import find_clashes

    arr = _system_arrays(topology, model)
    ip, jp = find_clashes(x, box, arr["mol"], arr["loc"], arr["kind"], arr["excl"], inter, intra)
    return ip, jp, arr["is_w"], None

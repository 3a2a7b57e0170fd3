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
Ions (CG blocks of kind "ion", :mod:`multiscale.classes`) get no model: each ion atom sits on
its bead (hydrated ion beads: the ion and its shell waters with their centre of mass on it) and
is a fixed obstacle for the solutes and the water.  Boxes: edge lengths or GROMACS box vectors
(triclinic cells: clash search by :class:`multiscale.neighbours.PeriodicTree`, minimum image by
:mod:`multiscale.geometry`).  Molecules are built whole in unwrapped coordinates (next to their
first bead); ``wrap=True`` wraps atoms into the box.

Lengths nm, angles rad.  Deterministic for a given seed (torch.Generator / numpy
default_rng / SeedSequence-derived seeds).

Modules: :mod:`.moltype_model` (per-moltype model), :mod:`.model_file` (model file, kinds),
:mod:`.train`, :mod:`.frame` (frame state), :mod:`.steps` (the per-frame steps), :mod:`.solute`
(candidate pools), :mod:`.system` (whole-system arrays); clashes: :func:`.certify.find_clashes` (any box).
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import MultiscaleError
from .common import check_device  # noqa: F401
from .common import torch_threads as _torch_threads
from .frame import BackmapOptions, block_kind, build_context, new_frame
from .model_file import FORMAT, VERSION, BackmapModel, load_model
from .moltype_model import RELAX_ITERATIONS, RELAX_STIFFNESS, MoltypeModel  # noqa: F401
from .solute import default_candidates
from .steps import REPROJECT_ITERATIONS, SPIN_ROUNDS, STEPS, WATER_REPLACE_ROUNDS  # noqa: F401
from .train import train

__all__ = ["BackmapModel", "MoltypeModel", "train", "backmap", "check_device", "default_candidates", "load_model",
           "FORMAT", "VERSION", "STEPS"]


def backmap(model: BackmapModel, topology, cg_positions, box, *, seed: int = 0, device: str = "cpu",
            max_retries: int = 5, wrap: bool = False, temperature: float = 1.0, clash_inter: float = 0.08,
            clash_intra: float = 0.10, candidates: int | None = None, hbond_eps: float | None = None, select_eps: float | None = None,
            hbond_network: bool = True, hydration: bool = True, threads: int | None = None, log=None, layout=None):
    """Backmap CG frames to atoms.

    cg_positions: (B, 3) or (F, B, 3) nm, beads in :func:`multiscale.coarse_grain.cg_layout`
    order; box: (3,) or (F, 3) edge lengths, or (3, 3) or (F, 3, 3) box vectors (GROMACS, rows
    a, b, c; triclinic cells such as the rhombic dodecahedron) nm.  Returns (positions (F, N, 3) float32 nm in the AA
    topology's atom order, list of :class:`~multiscale.backmap.certify.CertificateReport`).
    max_retries: resampling rounds for molecules with clashes or wrong stereo; candidates:
    conformations drawn per molecule up front (resampling uses them first; default
    :func:`default_candidates`: 1 for molecules of 1-2 beads, whose clashes are first resolved
    by turning them about their beads, 2 for 3 or more beads); hbond_eps:
    override the model's calibrated hydrogen-bond weight (kT per bond) used when orienting
    rotatable polar hydrogens (0: their torsions are redrawn from the training distribution
    with clash avoidance only); wrap: wrap atoms into the box (default: molecules whole, next
    to their first bead).  select_eps: environment-aware choice among the ``candidates``
    conformations of molecules with polar groups (weight ``exp(select_eps * n_contacts)``,
    n_contacts = O/N of neighbours within 0.32 nm of the hydroxyl-type O/N); None (default):
    :data:`.hbond.SELECT_EPS` (3) with :data:`.hbond.CANDIDATES` (8) candidates for molecules
    with rotatable polar hydrogens when ``hbond_network`` is on, else off; 0 = off.
    hbond_network: pull neighbouring donor/acceptor pairs towards hydrogen-bond geometry inside
    the CG constraint (:func:`.steps.hbond_network`, :mod:`.hbond`; neat (R)-octan-2-ol:
    0.22 -> 0.64 hydroxyl H-bonds per molecule right after the backmap, AA 0.83, docs/hbonds.md);
    False: the placement of earlier versions (and no environment selection unless ``select_eps``).
    hydration: turn the water clusters next to the solutes' hydrated acceptors so that their first
    shells are filled (the model's measured shells, :mod:`.hydration`; heptanol example: 11 -> 53
    water -> hydroxyl H-bonds per frame, AA 48); False: as before, or for models without shells.
    layout: the CG layout (default :func:`multiscale.coarse_grain.cg_layout` of the model's mapping).
    Each frame runs :data:`STEPS` (:mod:`.steps`) over one :class:`~.frame.FrameState`.
    """
    import torch

    cg, boxes = _frames_and_boxes(cg_positions, box)
    layout = _checked_layout(model, topology, cg.shape[1], layout)
    opts = BackmapOptions(seed, max_retries, wrap, temperature, clash_inter, clash_intra, candidates, hbond_eps,
                          select_eps, hbond_network, hydration)
    dev = check_device(device)
    for m in model.moltypes.values():
        m.density.to(dev)
    ctx = build_context(model, topology, layout, dev, opts)
    out = np.empty((len(cg), topology.n_atoms, 3), np.float32)
    reports = []
    try:
        with _torch_threads(threads), torch.no_grad():
            for f in range(len(cg)):
                t0 = time.perf_counter()
                state = new_frame(ctx, f, cg[f], boxes[f])
                for step in STEPS:
                    state = step(state, ctx)
                out[f] = state.positions
                if wrap:
                    out[f] = _wrapped(out[f], boxes[f])
                state.report.seconds = round(time.perf_counter() - t0, 4)
                reports.append(state.report)
                if log:
                    log(state.report.summary())
    finally:
        for m in model.moltypes.values():
            m.density.cpu()
    return out, reports


def _frames_and_boxes(cg_positions, box):
    """CG frames (F, B, 3) float64 and per-frame boxes, validated: (F, 3) edge lengths when every
    box is orthorhombic (also when given as diagonal matrices), else (F, 3, 3) box vectors."""
    from ..geometry import check_box, is_orthorhombic

    cg = np.asarray(cg_positions, np.float64)
    if cg.ndim == 2:
        cg = cg[None]
    if cg.ndim != 3 or cg.shape[-1] != 3:
        raise MultiscaleError(f"CG positions have shape {np.shape(cg_positions)}: expected (beads, 3) or (frames, beads, 3) nm")
    nf = cg.shape[0]
    b = np.asarray(box, np.float64)
    # (3, 3): one box matrix, unless 3 frames are given and it is not lower triangular (3 x (3,))
    matrices = b.ndim == 3 or (b.shape == (3, 3) and (nf != 3 or not np.any(np.triu(b, 1))))
    boxes = b.reshape(-1, 3, 3) if matrices else b.reshape(-1, 3)
    if len(boxes) == 1:
        boxes = np.repeat(boxes, nf, 0)
    if len(boxes) != nf:
        raise MultiscaleError(f"{len(boxes)} boxes for {nf} CG frames: pass one box ((3,) or (3, 3)) or one per frame "
                              "((F, 3) or (F, 3, 3))")
    if matrices:
        if is_orthorhombic(boxes):
            boxes = np.diagonal(boxes, axis1=1, axis2=2).copy()
        else:
            for f, m in enumerate(boxes):
                check_box(m, f"CG box of frame {f}")
    if not np.all(np.isfinite(cg)):
        raise MultiscaleError("CG positions contain NaN/inf: check the CG structure")
    return cg, boxes


def _checked_layout(model: BackmapModel, topology, n_cg_beads: int, layout=None) -> list:
    """The CG layout, checked against the bead count, the model and the water mapping."""
    from ..coarse_grain import cg_layout, n_beads
    from .system import bead_count_error

    if layout is None:
        layout = cg_layout(topology, model.mapping)
    if n_cg_beads != n_beads(layout):
        raise bead_count_error(n_cg_beads, layout, topology)
    model.check(topology, layout)
    for blk in layout:
        if block_kind(blk) == "water" and blk.per_bead != 4:
            raise MultiscaleError(f"water mapping has {blk.per_bead} {blk.aa_block.moltype.name} per {blk.cg_name} bead; backmapping supports 4 (Martini 3)")
    return layout


def _wrapped(x: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Atoms x (N, 3) float32 wrapped into the box ((3,) lengths or (3, 3) vectors) -> (N, 3) float32."""
    if box.shape == (3, 3):
        from ..geometry import wrap

        return wrap(x.astype(np.float64), box).astype(np.float32)
    return (x - box * np.floor(x / box)).astype(np.float32)

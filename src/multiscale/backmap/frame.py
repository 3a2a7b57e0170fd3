"""The state the backmapping steps pass along: one :class:`FrameState` per CG frame, and the
per-system :class:`BackmapContext` (model, topology, layout, options, static index arrays) that
every step reads but none modifies.

A step is a plain callable ``step(state, ctx) -> state`` (see :mod:`.steps`).  Lengths nm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["BackmapOptions", "BackmapContext", "FrameState", "block_kind", "build_context", "new_frame"]


#: The molecule classes (CG block kinds) this engine can place.
ENGINE_KINDS = ("molecule", "water", "ion", "chain")

#: Molecule classes placed the way another class is: a lipid is one residue with a bead matrix
#: (its shipped mapping file), learned and drawn by the per-moltype conditional model.
PLACED_AS = {"lipid": "molecule"}


def require_engine_kind(blk) -> None:
    """One-line MultiscaleError for a block whose molecule class this engine cannot train or place."""
    from ..errors import MultiscaleError

    kind = block_kind(blk)
    if kind not in ENGINE_KINDS:
        raise MultiscaleError(
            f"moleculetype {blk.aa_block.moltype.name} is a {kind} (molecule class {kind!r}): this version coarse-grains "
            f"it but cannot train or backmap it yet (the engine places {', '.join(ENGINE_KINDS)} blocks)")


def block_kind(blk) -> str:
    """How the engine places a CG layout block: "water", "ion", "chain" or "molecule".

    The single place the engine asks; blocks that carry a ``kind`` (the molecule-class registry)
    are taken at their word (through :data:`PLACED_AS`: a lipid is placed as a molecule), older
    ones fall back to the ``is_water`` flag."""
    kind = getattr(blk, "kind", None) or ("water" if blk.is_water else "molecule")
    return PLACED_AS.get(kind, kind)


@dataclass(frozen=True)
class BackmapOptions:
    """The knobs of :func:`multiscale.backmap.engine.backmap` (see its docstring); lengths nm."""

    seed: int = 0
    max_retries: int = 5
    wrap: bool = False
    temperature: float = 1.0
    clash_inter: float = 0.08
    clash_intra: float = 0.10
    candidates: int | None = None
    hbond_eps: float | None = None
    select_eps: float | None = None
    hbond_network: bool = True
    hydration: bool = True


@dataclass
class BackmapContext:
    """What every frame of one backmap call shares (read-only for the steps).

    sol_blocks / water_blocks / ion_blocks: ``(layout index, CGBlock)`` per kind (see
    :func:`block_kind`); mol_id / local / kind (A,) per atom of the clash search over solutes
    (then the fixed atoms: ions, the hydration-shell waters of hydrated ions, the chains' atoms), excl:
    exclusion matrix per kind; mol_block (M, 2): per solute molecule (solute list index,
    molecule index); n_solute_mols: M; bead_mol (B,): molecule id per CG bead; shell_atoms:
    AA atom indices of the hydration-shell waters (the tail of the first water block; empty
    unless ``ions.waters_per_ion`` > 0)."""

    model: object
    topology: object
    layout: list
    device: object
    opts: BackmapOptions
    sol_blocks: list
    water_blocks: list
    ion_blocks: list
    mol_id: np.ndarray
    local: np.ndarray
    kind: np.ndarray
    excl: list
    mol_block: np.ndarray
    n_solute_mols: int
    bead_mol: np.ndarray
    shell_atoms: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    #: ``(layout index, CGBlock, ChainDrawer)`` per amino-acid chain block (:mod:`multiscale.chains.draw`)
    chain_blocks: list = field(default_factory=list)


@dataclass
class FrameState:
    """One CG frame on its way to atoms.

    cg (B, 3) beads nm; box (3,) lengths or (3, 3) box vectors nm; positions (N, 3) float64 nm in
    the AA topology's atom order (filled by the steps: solutes after stereo repair, ions and
    water by the solvent step); solutes: one :class:`~.solute.Solute` per solute block; bad /
    clash_bad: per solute block (count,) bool masks (wrong stereo or clash / clash only);
    clash_cache: the last solute clash pairs (for the incremental search); fixed_x (I + 3 S, 3):
    ion atoms, then hydration-shell water atoms (set by :func:`.steps.place_ions`); water_beads: per water
    block its beads (n, 3); water_stats: per water block the bank's statistics; x_pre: positions
    before the polar-hydrogen turn (None when no turn); report: the frame's
    :class:`~.certify.CertificateReport`."""

    frame: int
    cg: np.ndarray
    box: np.ndarray
    positions: np.ndarray
    report: object
    solutes: list = field(default_factory=list)
    chains: list = field(default_factory=list)
    bad: list = field(default_factory=list)
    clash_bad: list = field(default_factory=list)
    clash_cache: dict = field(default_factory=dict)
    water_beads: dict = field(default_factory=dict)
    water_stats: list = field(default_factory=list)
    x_pre: np.ndarray | None = None
    hbond_keep: np.ndarray | None = None
    fixed_x: np.ndarray | None = None


def hydration(layout, water_blocks, ion_blocks) -> tuple[int, np.ndarray]:
    """(waters per ion k, AA atom indices of the hydration-shell waters): the shells are the last
    ``k x ions`` molecules of the first water block (after its 4-per-bead waters)."""
    k = max([int((getattr(b, "info", None) or {}).get("waters", 0)) for _, b in ion_blocks] + [0])
    if not k or not water_blocks:
        return k, np.zeros(0, int)
    wb = water_blocks[0][1]
    n_shell = k * sum(b.count for _, b in ion_blocks)
    first = wb.aa_block.start + wb.count * wb.per_bead * wb.aa_block.moltype.n_atoms
    return k, np.arange(first, first + n_shell * wb.aa_block.moltype.n_atoms)


def _solute_arrays(model, sol_blocks, ion_blocks, water_blocks=(), n_shell: int = 0, chain_blocks=()):
    """Per-atom arrays of the solute clash search: solute molecules first, then the ions, then
    ``n_shell`` hydration-shell waters, then the atoms of the amino-acid chains (all fixed
    obstacles; a chain atom is a molecule of its own here: the chain drawer owns its intramolecular
    clashes)."""
    from .certify import exclusion_matrix

    kinds = {name: k for k, name in enumerate(dict.fromkeys(blk.aa_block.moltype.name for _, blk in sol_blocks))}
    excl = [model.moltypes[name].exclusions for name in kinds]
    mol_id, local, kind, mol_block = [], [], [], []
    base = 0
    for si, (_, blk) in enumerate(sol_blocks):
        n, c = blk.aa_block.moltype.n_atoms, blk.count
        mol_id.append(np.repeat(np.arange(base, base + c), n))
        local.append(np.tile(np.arange(n), c))
        kind.append(np.full(n * c, kinds[blk.aa_block.moltype.name]))
        mol_block.append(np.stack([np.full(c, si), np.arange(c)], 1))
        base += c
    n_sol = base
    for _, blk in ion_blocks:  # one atom per ion, each its own molecule
        mt = blk.aa_block.moltype
        if mt.name not in kinds:
            kinds[mt.name] = len(excl)
            excl.append(exclusion_matrix(mt.n_atoms, mt.bonds, 2))
        n, c = mt.n_atoms, blk.count
        mol_id.append(np.repeat(np.arange(base, base + c), n))
        local.append(np.tile(np.arange(n), c))
        kind.append(np.full(n * c, kinds[mt.name]))
        base += c
    if n_shell:
        na = water_blocks[0][1].aa_block.moltype.n_atoms
        excl.append(np.ones((na, na), bool))  # water: rigid, no intramolecular clash
        mol_id.append(np.repeat(np.arange(base, base + n_shell), na))
        local.append(np.tile(np.arange(na), n_shell))
        kind.append(np.full(n_shell * na, len(excl) - 1))
        base += n_shell
    n_chain = sum(blk.count * blk.aa_block.moltype.n_atoms for _, blk in chain_blocks)
    if n_chain:
        excl.append(np.ones((1, 1), bool))
        mol_id.append(np.arange(base, base + n_chain))
        local.append(np.zeros(n_chain, int))
        kind.append(np.full(n_chain, len(excl) - 1))
    if not mol_id:
        return [], [], [], excl, [], 0
    cat = np.concatenate
    return cat(mol_id), cat(local), cat(kind), excl, (cat(mol_block) if mol_block else np.zeros((0, 2), int)), n_sol


def build_context(model, topology, layout, device, opts: BackmapOptions) -> BackmapContext:
    """The static per-system arrays of a backmap call (see :class:`BackmapContext`)."""
    from .system import bead_molecules

    by_kind = {"molecule": [], "water": [], "ion": [], "chain": []}
    for bi, blk in enumerate(layout):
        require_engine_kind(blk)
        by_kind[block_kind(blk)].append((bi, blk))
    sol, wat, ion = by_kind["molecule"], by_kind["water"], by_kind["ion"]
    k, shell_atoms = hydration(layout, wat, ion)
    n_shell = len(shell_atoms) // wat[0][1].aa_block.moltype.n_atoms if len(shell_atoms) else 0
    chain_obstacles = by_kind["chain"] if sol else []  # only solutes are resampled around them
    mol_id, local, kind, excl, mol_block, n_sol = _solute_arrays(model, sol, ion, wat, n_shell, chain_obstacles)
    chains = [(bi, blk, chain_drawer(model, blk, opts)) for bi, blk in by_kind["chain"]]
    return BackmapContext(model, topology, layout, device, opts, sol, wat, ion, mol_id, local, kind, excl,
                          mol_block, n_sol, bead_molecules(layout), shell_atoms, chains)


def chain_drawer(model, blk, opts: BackmapOptions):
    """The :class:`multiscale.chains.draw.ChainDrawer` of a chain block: the model's chain model,
    else the shipped one for the block's force-field naming."""
    from ..chains.draw import ChainDrawer
    from ..chains.residues import chain_residues
    from ..chains.shipped import shipped_chain_model
    from ..classes.chain import _chain_mapping, amino_acid_names

    mt = blk.aa_block.moltype
    cm = _chain_mapping(mt)
    chains = model.chains if model.chains is not None else shipped_chain_model(cm.from_ff, mt.name)
    from .steps import CLASH_MARGIN

    # the drawer's redraw test uses the certificate's bound (with its margin for the output's rounding)
    return ChainDrawer(chains, mt, cm, chain_residues(mt, cm, amino_acid_names()), opts.clash_intra + CLASH_MARGIN)


def new_frame(ctx: BackmapContext, f: int, cg: np.ndarray, box: np.ndarray) -> FrameState:
    """A fresh state for frame ``f``: beads cg (B, 3), box; positions zero; empty report."""
    from .certify import CertificateReport

    rep = CertificateReport(frame=f, thresholds={"inter_nm": ctx.opts.clash_inter, "intra_nm": ctx.opts.clash_intra})
    return FrameState(f, cg, box, np.zeros((ctx.topology.n_atoms, 3)), rep)

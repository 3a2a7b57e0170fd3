"""Martini 3 beads of an atomistic protein, exactly as martinize2 places them (via vermouth).

Nothing here re-implements martinize2: the AA chain goes through vermouth's own pipeline
(``MakeBonds`` for a PDB or the topology's bonds for a moleculetype, ``AnnotateMutMod`` with the
default charged termini, ``RepairGraph``, ``CanonicalizeModifications``, ``AttachMass``,
``SortMoleculeAtoms``, ``DoMapping`` onto ``martini3001``), with vermouth's mapping data for the
source force field (``amber`` names as pdb2gmx amber99sb-ildn writes them, or ``charmm``).
Residue variants (HIS/HIE/HID/HIP, CYX, ASH, GLH, LYN, ...) and termini (amber H1 H2 H3 /
OC1 OC2, charmm HT1.. / OT1 OT2) are recognised by vermouth's blocks and modifications.

From the mapped graph we read, per bead, the AA atoms it is built from (node attribute
``graph``), their per-atom ``mapping_weights`` and vermouth's masses (``AttachMass``: H 1, C 12,
N 14, O 16, S 32), and the target force field's ``center_weight`` (``mass`` for martini3001):
that is exactly what martinize2's ``DoAverageBead`` averages, so ``W @ x`` reproduces
martinize2's bead positions.  Atoms martinize2 would add without coordinates (repairs) are not
in the input and carry no weight, as in martinize2.

Main entry points: :func:`chain_mapping_from_moltype`, :func:`chain_mapping_from_pdb`,
:meth:`ChainMapping.coarse_grain`.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import MultiscaleError

__all__ = [
    "SOURCE_FORCE_FIELDS",
    "ChainMapping",
    "chain_mapping_from_moltype",
    "chain_mapping_from_pdb",
    "guess_source_ff",
    "vermouth_data",
]

#: vermouth force-field names accepted as the AA side.
SOURCE_FORCE_FIELDS = ("amber", "charmm")

# Residue/atom names that only one naming uses (for guess_source_ff).
_CHARMM_RESNAMES = {"HSD", "HSE", "HSP", "ASPP", "GLUP", "LSN", "CYSD"}
_CHARMM_ATOMS = {"HN", "OT1", "OT2", "HT1", "HT2", "HT3"}


@dataclass(frozen=True, eq=False)
class ChainMapping:
    """AA -> Martini bead weights of one protein molecule type, as martinize2 computes them.

    weights: scipy CSR (n_beads, n_atoms), float64, every row sums to 1; column j is AA atom j of
    the input (moleculetype or PDB atom order).  Beads are in martinize2's output order.
    bead_names: (n_beads,) e.g. ``BB``, ``SC1``; bead_resnames: (n_beads,) residue names as
    martinize2 writes them; bead_resids: (n_beads,) int, residue number of the input (PDB resid,
    or 1-based residue index within the moleculetype); bead_residues: (n_beads,) int, 0-based
    index of the residue along the input; bead_molecules: (n_beads,) int, which vermouth
    molecule (connected chain) the bead belongs to.  ``warnings``: what vermouth logged at
    WARNING level or above while processing (empty for a clean input).
    """

    weights: sp.csr_matrix
    bead_names: tuple[str, ...]
    bead_resnames: tuple[str, ...]
    bead_resids: np.ndarray
    bead_residues: np.ndarray
    bead_molecules: np.ndarray
    n_atoms: int
    from_ff: str
    to_ff: str = "martini3001"
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_beads(self) -> int:
        return self.weights.shape[0]

    def dense(self) -> np.ndarray:
        """The weight matrix as a dense (n_beads, n_atoms) float64 array, made once and shared by
        every caller (the CG layout, the chain drawer): do not modify it.  (Not flagged read-only:
        torch warns on every non-writable array it is handed.)"""
        d = self.__dict__.get("_dense")
        if d is None:
            d = self.weights.toarray()
            self.__dict__["_dense"] = d  # frozen dataclass: cache beside the fields
        return d

    def atoms_of(self, bead: int) -> tuple[np.ndarray, np.ndarray]:
        """(atom indices, normalised weights) of bead ``bead``."""
        row = self.weights.getrow(bead)
        return row.indices.copy(), row.data.copy()

    def coarse_grain(self, frames: np.ndarray) -> np.ndarray:
        """Bead positions of AA frames.

        frames: (F, n_atoms, 3) or (n_atoms, 3) nm, molecules whole (no PBC jumps within the
        chain).  Returns (F, n_beads, 3) (or (n_beads, 3)) nm in the input's float precision,
        computed in float64.
        """
        x = np.asarray(frames)
        single = x.ndim == 2
        if single:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != (self.n_atoms, 3):
            raise MultiscaleError(f"coarse_grain: frames of shape {np.shape(frames)} do not match this chain mapping "
                                  f"({self.n_atoms} atoms): pass (F, {self.n_atoms}, 3) nm coordinates in topology order")
        f, n, _ = x.shape
        flat = np.ascontiguousarray(x.transpose(1, 0, 2).reshape(n, f * 3), dtype=np.float64)
        out = (self.weights @ flat).reshape(self.n_beads, f, 3).transpose(1, 0, 2)
        out = out.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64, copy=False)
        return out[0] if single else out


# --------------------------------------------------------------------------- vermouth data


def vermouth_data(from_ff: str = "amber", to_ff: str = "martini3001"):
    """(force fields dict, mappings) from vermouth's data folder, read once per process (~2 s).

    Only the source force fields (amber, charmm), the target and the target's mapping folder
    are read: the ``[from] -> [to]`` mappings martinize2 uses for this pair.
    """
    if from_ff not in SOURCE_FORCE_FIELDS:
        raise MultiscaleError(f"unknown AA naming {from_ff!r} for proteins: use one of {', '.join(SOURCE_FORCE_FIELDS)}")
    ffs, maps = _vermouth_data(to_ff)
    if to_ff not in maps.get(from_ff, {}):
        raise MultiscaleError(f"vermouth has no {from_ff} -> {to_ff} residue mappings: use martini3001")
    return ffs, maps


@functools.cache
def _vermouth_data(to_ff: str):
    vermouth = _import_vermouth()
    from vermouth.forcefield import ForceField
    from vermouth.map_input import read_mapping_directory

    root = Path(vermouth.DATA_PATH)
    if not (root / "force_fields" / to_ff).is_dir():
        raise MultiscaleError(f"vermouth has no force field {to_ff!r} in {root / 'force_fields'}: use martini3001")
    names = dict.fromkeys((*SOURCE_FORCE_FIELDS, to_ff))
    ffs = {n: _protein_force_field(ForceField, root / "force_fields" / n) for n in names}
    return ffs, read_mapping_directory(root / "mappings" / to_ff, ffs)


#: vermouth force-field files with nothing martinize2 needs for amino acids: CHARMM's lipidation
#: and CGenFF small-molecule libraries (968 blocks, 4 s to read, every protein command)
_NOT_PROTEIN = ("lipidations.rtp", "small_molecule_charmm.ff")


def _protein_force_field(ForceField, folder: Path):
    """A vermouth ForceField of ``folder`` read without its non-protein libraries (the same
    reader vermouth uses, file by file)."""
    from vermouth.forcefield import iter_force_field_files

    ff = ForceField(name=folder.name)
    for source in iter_force_field_files(folder):  # vermouth's own file list and order, less _NOT_PROTEIN
        if Path(source).name not in _NOT_PROTEIN:
            ff._read_from_file(source)
    return ff


def _import_vermouth():
    try:
        import vermouth
        import vermouth.forcefield
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MultiscaleError("proteins need vermouth (martinize2): pip install 'vermouth>=0.15'") from e
    return vermouth


class _Collect(logging.Handler):
    """Collect vermouth's WARNING+ records while one pipeline runs."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        try:
            self.messages.append(record.getMessage())
        except Exception:  # pragma: no cover - a malformed record must not stop the mapping
            self.messages.append(str(record.msg))


def guess_source_ff(atom_names, resnames) -> str:
    """``charmm`` when CHARMM-only names occur (HN, OT1, HSD, ...), else ``amber``."""
    if _CHARMM_ATOMS.intersection(atom_names) or _CHARMM_RESNAMES.intersection(resnames):
        return "charmm"
    return "amber"


# --------------------------------------------------------------------------- building systems


def _system_from_moltype(moltype):
    """A vermouth System with one Molecule per connected component of ``moltype``.

    Nodes carry atomname/resname/resid/chain/element and ``ms_index`` (the atom's index in the
    moleculetype); edges are the topology's bonds.  No positions are needed for the mapping.
    """
    import networkx as nx
    import vermouth

    residues = moltype.residues if moltype.residues is not None else _residues_from_names(moltype)
    g = nx.Graph()
    for i in range(moltype.n_atoms):
        g.add_node(i, atomname=moltype.atom_names[i], resname=moltype.resnames[i], resid=int(residues[i]) + 1,
                   chain="A", element=moltype.elements[i], ms_index=i, insertion_code="", charge_group=i,
                   atomid=i + 1)  # atomid: sort key of vermouth (atoms RepairGraph adds, e.g. a disulfide Cys's HG, get one)
    g.add_edges_from((int(a), int(b)) for a, b in np.asarray(moltype.bonds).reshape(-1, 2))
    system = vermouth.System()
    for comp in sorted(nx.connected_components(g), key=min):
        mol = vermouth.molecule.Molecule()
        nodes = sorted(comp)
        mol.add_nodes_from((n, dict(g.nodes[n])) for n in nodes)
        mol.add_edges_from(g.subgraph(nodes).edges)
        system.add_molecule(mol)
    return system


def _residues_from_names(moltype) -> np.ndarray:
    """Residue index per atom when the moleculetype carries none: a new residue starts where
    the residue name changes or a backbone N follows other atoms of the same residue."""
    out, r = [], 0
    for i, (name, res) in enumerate(zip(moltype.atom_names, moltype.resnames)):
        if i and (res != moltype.resnames[i - 1] or name == "N"):
            r += 1
        out.append(r)
    return np.array(out)


def _system_from_pdb(path, model: int = 1):
    """Read a PDB with vermouth (as martinize2 does) and number the atoms in file order."""
    import vermouth

    system = vermouth.System()
    try:
        vermouth.PDBInput(str(path), modelidx=model).run_system(system)
    except (OSError, ValueError, KeyError) as e:
        raise MultiscaleError(f"{path}: vermouth cannot read this PDB ({e}): pass a PDB with ATOM records") from e
    i = 0
    for mol in system.molecules:
        for key in mol.nodes:
            mol.nodes[key]["ms_index"] = i
            i += 1
    return system, i


# --------------------------------------------------------------------------- the pipeline


def _run_martinize_pipeline(system, from_ff: str, to_ff: str, make_bonds: bool):
    """vermouth's processors, in martinize2's order and with its defaults (charged termini)."""
    import vermouth

    ffs, maps = vermouth_data(from_ff, to_ff)
    system.force_field = ffs[from_ff]
    if make_bonds:
        vermouth.MakeBonds(allow_name=True, allow_dist=True, fudge=1.2).run_system(system)
        vermouth.MergeNucleicStrands().run_system(system)
    vermouth.AnnotateMutMod([["cter", "+C-ter"], ["nter", "+N-ter"]], []).run_system(system)
    vermouth.RepairGraph(delete_unknown=True, include_graph=False).run_system(system)
    vermouth.CanonicalizeModifications().run_system(system)
    vermouth.AttachMass(attribute="mass").run_system(system)
    vermouth.SortMoleculeAtoms().run_system(system)
    vermouth.DoMapping(mappings=maps, to_ff=ffs[to_ff], delete_unknown=True,
                       attribute_keep=("cgsecstruct", "chain", "aasecstruct", "resname", "stash"),
                       attribute_must=("resname", "atype")).run_system(system)
    vermouth.SortMoleculeAtoms().run_system(system)
    return ffs[to_ff].variables.get("center_weight", None)


def _weights_from_cg(system, n_atoms: int, center_weight, source: str):
    """Read the (n_beads, n_atoms) weights and bead labels off vermouth's mapped molecules."""
    rows, cols, vals = [], [], []
    names, resnames, resids, molecules, orig = [], [], [], [], []
    b = 0
    for m, mol in enumerate(system.molecules):
        for _key, node in mol.nodes(data=True):
            sub = node.get("graph")
            if sub is None:
                continue
            mw = node.get("mapping_weights", {})
            total = 0.0
            first = None
            for skey, snode in sub.nodes(data=True):
                j = snode.get("ms_index")
                if j is None or snode.get("position", 0) is None:
                    continue  # added by RepairGraph: no coordinates in martinize2 either
                w = float(mw.get(skey, 1)) * float(snode.get(center_weight, 1) if center_weight else 1)
                rows.append(b)
                cols.append(int(j))
                vals.append(w)
                total += w
                first = j if first is None else min(first, j)
            if abs(total) < 1e-7:
                raise MultiscaleError(f"{source}: bead {node.get('atomname')} of residue {node.get('resname')}{node.get('resid')} "
                                      f"has no weighted input atoms (martinize2 would place it at NaN): check that residue's atoms")
            names.append(str(node.get("atomname")))
            resnames.append(str(node.get("resname")))
            resids.append(int(node.get("resid")))
            molecules.append(m)
            orig.append(first)
            b += 1
    w = sp.csr_matrix((vals, (rows, cols)), shape=(b, n_atoms), dtype=np.float64)
    w.sum_duplicates()
    w = sp.diags(1.0 / np.asarray(w.sum(axis=1)).ravel()) @ w
    return sp.csr_matrix(w), names, resnames, np.array(resids, dtype=int), np.array(molecules, dtype=int)


def _check_residue_names(system, from_ff: str, to_ff: str, source: str) -> None:
    """One line naming the residues vermouth's ``from_ff`` does not know (martinize2 would drop the chain)."""
    ffs, _ = vermouth_data(from_ff, to_ff)
    known = ffs[from_ff].blocks
    unknown = {}
    for mol in system.molecules:
        for _, n in mol.nodes(data=True):
            if n.get("resname") not in known:
                unknown.setdefault(n.get("resname"), f"{n.get('resname')}{n.get('resid')}")
    if unknown:
        raise MultiscaleError(f"{source}: residue(s) {', '.join(list(unknown.values())[:8])} unknown to vermouth's {from_ff} "
                              f"force field, so martinize2 would drop the chain: use standard amino-acid/variant names "
                              f"({' '.join(sorted(known)[:40])})")


def _build(system, n_atoms, atom_resid_index, from_ff, to_ff, make_bonds, source):
    """Run the pipeline on ``system`` and assemble a :class:`ChainMapping`."""
    vlog = logging.getLogger("vermouth")
    collect = _Collect()
    old_level = vlog.level
    vlog.addHandler(collect)
    vlog.setLevel(logging.WARNING)
    _check_residue_names(system, from_ff, to_ff, source)
    try:
        in_residues = {(n.get("chain"), n.get("resid")) for mol in system.molecules for _, n in mol.nodes(data=True)}
        center = _run_martinize_pipeline(system, from_ff, to_ff, make_bonds)
    except MultiscaleError:
        raise
    except Exception as e:  # vermouth raises many types on inputs it cannot match
        raise MultiscaleError(f"{source}: vermouth could not map this protein onto {to_ff} ({type(e).__name__}: {e}); "
                              f"check residue/atom names against the {from_ff} naming") from e
    finally:
        vlog.removeHandler(collect)
        vlog.setLevel(old_level)
    weights, names, resnames, resids, molecules = _weights_from_cg(system, n_atoms, center, source)
    out_residues = {(n.get("chain"), n.get("resid")) for mol in system.molecules for _, n in mol.nodes(data=True)}
    lost = sorted(in_residues - out_residues, key=lambda t: (str(t[0]), t[1]))
    if lost:
        raise MultiscaleError(f"{source}: vermouth does not know residue(s) {', '.join(f'{c}:{r}' for c, r in lost[:8])} "
                              f"in the {from_ff} naming, so martinize2 would drop them: use standard amino-acid names "
                              f"(warnings: {'; '.join(collect.messages[:3]) or 'none'})")
    if weights.shape[0] == 0:
        raise MultiscaleError(f"{source}: no Martini beads produced: is this a protein in {from_ff} naming?")
    # 0-based residue index along the input, for each bead: from its first atom.
    first_atom = np.array([weights.indices[weights.indptr[i]:weights.indptr[i + 1]].min() for i in range(weights.shape[0])])
    return ChainMapping(weights=weights, bead_names=tuple(names), bead_resnames=tuple(resnames), bead_resids=resids,
                        bead_residues=np.asarray(atom_resid_index)[first_atom], bead_molecules=molecules,
                        n_atoms=n_atoms, from_ff=from_ff, to_ff=to_ff, warnings=tuple(collect.messages))


def chain_mapping_from_moltype(moltype, from_ff: str | None = None, to_ff: str = "martini3001") -> ChainMapping:
    """Martinize2's bead weights for a protein moleculetype (:class:`multiscale.topology.MoleculeType`).

    The moleculetype's own bonds define the graph (no coordinates needed); columns of the
    weights follow the moleculetype's atom order.  ``from_ff``: ``amber`` (pdb2gmx amber*
    names) or ``charmm``; guessed from the names when None.  vermouth's mapping costs ~27 ms per
    residue (8 s for 300), so the result is kept on disk (:func:`_cached_mapping`), keyed by
    the moleculetype's chemistry, the namings and vermouth's version.
    """
    from_ff = from_ff or guess_source_ff(moltype.atom_names, moltype.resnames)
    return _cached_mapping(moltype, from_ff, to_ff, lambda: _map_moltype(moltype, from_ff, to_ff))


def _map_moltype(moltype, from_ff: str, to_ff: str) -> ChainMapping:
    _import_vermouth()
    system = _system_from_moltype(moltype)
    residues = moltype.residues if moltype.residues is not None else _residues_from_names(moltype)
    _, ridx = np.unique(np.asarray(residues), return_inverse=True)
    return _build(system, moltype.n_atoms, ridx, from_ff, to_ff, make_bonds=False, source=f"moleculetype {moltype.name}")


_CACHE_FORMAT = 1


def _cached_mapping(moltype, from_ff: str, to_ff: str, compute) -> ChainMapping:
    """``compute()`` once per (moleculetype chemistry, residues, namings, vermouth version): the
    mapping is stored as ``$MULTISCALE_CACHE/chain_maps/<key>.npz`` (atomic write) and read back
    by later commands -- a cycle maps the same chains every cycle.  A file that does not read
    back exactly (other key, damaged) is recomputed and replaced; no cache folder: computed."""
    import hashlib
    from importlib.metadata import version

    from ..forcefields import cache_dir

    h = hashlib.sha256(f"{_CACHE_FORMAT}|{moltype.fingerprint()}|{from_ff}|{to_ff}|{version('vermouth')}|".encode())
    h.update("|".join(moltype.resnames).encode())
    h.update(np.asarray(moltype.residues if moltype.residues is not None else [], np.int64).tobytes())
    key = h.hexdigest()[:32]
    path = cache_dir().parent / "chain_maps" / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) == key and int(z["n_atoms"]) == moltype.n_atoms:
                w = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=(len(z["bead_names"]), moltype.n_atoms))
                return ChainMapping(weights=w, bead_names=tuple(z["bead_names"].tolist()),
                                    bead_resnames=tuple(z["bead_resnames"].tolist()), bead_resids=z["bead_resids"],
                                    bead_residues=z["bead_residues"], bead_molecules=z["bead_molecules"],
                                    n_atoms=moltype.n_atoms, from_ff=from_ff, to_ff=to_ff,
                                    warnings=tuple(z["warnings"].tolist()))
    except (OSError, KeyError, ValueError):
        pass
    cm = compute()
    try:
        from ..io import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        w = cm.weights.tocsr()
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, key=key, n_atoms=cm.n_atoms, data=w.data, indices=w.indices, indptr=w.indptr,
                     bead_names=np.array(cm.bead_names), bead_resnames=np.array(cm.bead_resnames),
                     bead_resids=cm.bead_resids, bead_residues=cm.bead_residues, bead_molecules=cm.bead_molecules,
                     warnings=np.array(cm.warnings, dtype=str))
    except (OSError, MultiscaleError):
        pass  # a read-only home: every command maps again
    return cm


def chain_mapping_from_pdb(path: str | os.PathLike, from_ff: str | None = None, to_ff: str = "martini3001",
                           model: int = 1) -> ChainMapping:
    """Martinize2's bead weights for the protein in a PDB file (atoms in file order).

    Bonds are guessed from names and distances as martinize2 does (``-bonds-from both``).
    """
    path = Path(path)
    if not path.is_file():
        raise MultiscaleError(f"PDB file {path} not found: pass an existing AA protein .pdb")
    _import_vermouth()
    system, n = _system_from_pdb(path, model)
    if from_ff is None:
        nodes = [d for mol in system.molecules for _, d in mol.nodes(data=True)]
        from_ff = guess_source_ff({d["atomname"] for d in nodes}, {d["resname"] for d in nodes})
    keys = [(d.get("chain"), d.get("resid"), d.get("insertion_code", "")) for mol in system.molecules for _, d in
            sorted(mol.nodes(data=True), key=lambda t: t[1]["ms_index"])]
    ridx = np.cumsum([0] + [int(a != b) for a, b in zip(keys[:-1], keys[1:])])
    return _build(system, n, ridx, from_ff, to_ff, make_bonds=True, source=str(path))

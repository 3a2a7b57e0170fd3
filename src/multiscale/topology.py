"""Atomistic system topology: molecule types, their bond graphs, and the block order.

A GROMACS ``.top`` is read with ParmEd (includes resolved relative to the ``.top``'s folder,
then ``GMXLIB`` and the GROMACS share directory, as grompp does); a ``.tpr`` is read with
MDAnalysis.  Either way the result is a :class:`SystemTopology`: an ordered list of
:class:`MoleculeBlock` (``count`` copies of one :class:`MoleculeType`), which is all the
mapping and backmapping code needs.  Masses are g/mol; no coordinates live here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MultiscaleError

__all__ = ["MoleculeType", "MoleculeBlock", "SystemTopology", "load_topology", "gromacs_share_top"]

@dataclass(frozen=True, eq=False)
class MoleculeType:
    """One GROMACS moleculetype.

    atom_names/resnames/elements: per atom (n_atoms,); masses (n_atoms,) g/mol;
    charges (n_atoms,) e; bonds (n_bonds, 2) int, 0-based within the molecule (SETTLES
    waters get their O-H bonds).
    """

    name: str
    atom_names: tuple[str, ...]
    resnames: tuple[str, ...]
    elements: tuple[str, ...]
    masses: np.ndarray
    charges: np.ndarray
    bonds: np.ndarray
    residues: tuple[int, ...] | None = None

    @property
    def n_atoms(self) -> int:
        return len(self.atom_names)

    @property
    def heavy(self) -> np.ndarray:
        """Boolean mask (n_atoms,) of non-hydrogen atoms."""
        return np.array([e != "H" for e in self.elements])

    @property
    def is_water(self) -> bool:
        """Three-site water (the water class's test, :func:`multiscale.classes.is_three_site_water`)."""
        from .classes.water import is_three_site_water

        return is_three_site_water(self)

    def index(self, atom_name: str) -> int:
        """Index of ``atom_name`` in this molecule, or -1."""
        try:
            return self.atom_names.index(atom_name)
        except ValueError:
            return -1

    def fingerprint(self) -> str:
        """Hash of names, elements and bonds: identifies the chemistry, not the parameters."""
        h = hashlib.sha256()
        h.update(self.name.encode())
        h.update("|".join(self.atom_names).encode())
        h.update("|".join(self.elements).encode())
        h.update(np.ascontiguousarray(np.sort(np.sort(self.bonds, axis=1), axis=0), dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class MoleculeBlock:
    """``count`` consecutive copies of ``moltype`` starting at global atom index ``start``."""

    moltype: MoleculeType
    count: int
    start: int

    @property
    def n_atoms(self) -> int:
        return self.count * self.moltype.n_atoms

    @property
    def stop(self) -> int:
        return self.start + self.n_atoms


@dataclass
class SystemTopology:
    """The AA system as ordered molecule blocks (the ``[ molecules ]`` section)."""

    blocks: list[MoleculeBlock]
    source: Path | None = None
    moltypes: dict[str, MoleculeType] = field(default_factory=dict)

    def __post_init__(self):
        for b in self.blocks:
            self.moltypes.setdefault(b.moltype.name, b.moltype)

    @property
    def n_atoms(self) -> int:
        return sum(b.n_atoms for b in self.blocks)

    def fingerprint(self) -> str:
        """Hash over the block sequence (moltype fingerprints and counts)."""
        h = hashlib.sha256()
        for b in self.blocks:
            h.update(f"{b.moltype.fingerprint()}x{b.count};".encode())
        return h.hexdigest()[:16]

    def per_atom(self, attr: str) -> np.ndarray:
        """Concatenate a per-atom attribute (``atom_names``, ``resnames``, ``masses`` ...) over the system."""
        parts = [np.tile(np.asarray(getattr(b.moltype, attr)), b.count) for b in self.blocks]
        return np.concatenate(parts) if parts else np.zeros(0)

    def resids(self) -> np.ndarray:
        """Residue number per atom: one residue per molecule copy, counting from 1."""
        out, rid = [], 0
        for b in self.blocks:
            out.append(np.repeat(np.arange(rid + 1, rid + b.count + 1), b.moltype.n_atoms))
            rid += b.count
        return np.concatenate(out) if out else np.zeros(0, int)

    def summary(self) -> str:
        return ", ".join(f"{b.moltype.name} x{b.count}" for b in self.blocks)


def gromacs_share_top() -> str | None:
    """The GROMACS force-field directory (``share/gromacs/top``), if it can be found."""
    if os.environ.get("GMXDATA"):
        p = Path(os.environ["GMXDATA"]) / "top"
        if p.is_dir():
            return str(p)
    gmx = shutil.which("gmx") or shutil.which("gmx_mpi")
    candidates = []
    if gmx:
        candidates.append(Path(gmx).resolve().parent.parent / "share" / "gromacs" / "top")
    candidates += [Path("/usr/share/gromacs/top"), Path("/usr/local/gromacs/share/gromacs/top")]
    for c in candidates:
        if c.is_dir():
            return str(c)
    return None


def _element(atom) -> str:
    name = atom.element_name
    if name and name != "EP":
        return name[0] + name[1:].lower() if len(name) > 1 else name
    return "X"


def _rigid_water_bonds(elements: tuple[str, ...]) -> np.ndarray:
    """O-H bonds of a 3-site water kept rigid without bonds (SETTLES); (0, 2) for anything else."""
    if sorted(elements) != ["H", "H", "O"]:
        return np.zeros((0, 2), dtype=int)
    o = elements.index("O")
    return np.array([(o, i) for i in range(3) if i != o], dtype=int)


def _from_parmed_template(name: str, struct) -> MoleculeType:
    names = tuple(a.name for a in struct.atoms)
    elements = tuple(_element(a) for a in struct.atoms)
    bonds = np.array([(b.atom1.idx, b.atom2.idx) for b in struct.bonds], dtype=int).reshape(-1, 2)
    # SETTLES become three "bonds" in ParmEd, H-H included: keep the chemical graph only.
    if len(names) > 2:
        bonds = bonds[[not (elements[a] == "H" and elements[b] == "H") for a, b in bonds]].reshape(-1, 2)
    if len(bonds) == 0:
        bonds = _rigid_water_bonds(elements)
    return MoleculeType(
        name=name,
        atom_names=names,
        resnames=tuple(a.residue.name for a in struct.atoms),
        elements=elements,
        masses=np.array([a.mass for a in struct.atoms], dtype=float),
        charges=np.array([a.charge for a in struct.atoms], dtype=float),
        bonds=bonds,
        residues=tuple(int(a.residue.idx) for a in struct.atoms),
    )


def _read_top(path: Path) -> SystemTopology:
    from parmed.gromacs import GromacsTopologyFile
    from parmed.gromacs._cpp import CPreProcessor

    includes = [str(path.parent)]
    if os.environ.get("GMXLIB"):
        includes += os.environ["GMXLIB"].split(":")
    share = gromacs_share_top()
    if share:
        includes.append(share)
        import parmed.gromacs as pg

        pg.GROMACS_TOPDIR = share
    # The [ molecules ] order, read from the preprocessed text (ParmEd expands it but does
    # not keep the block list).
    blocks_spec: list[tuple[str, int]] = []
    section = None
    cwd = os.getcwd()
    try:
        os.chdir(path.parent)
        for line in CPreProcessor(path.name, includes=includes):
            s = line.split(";")[0].strip()
            if not s:
                continue
            if s.startswith("["):
                section = s.strip("[] ").lower()
                continue
            if section == "molecules":
                parts = s.split()
                if len(parts) != 2 or not parts[1].isdigit():
                    raise MultiscaleError(f"{path}: bad [ molecules ] line {s!r}: expected 'NAME COUNT'")
                blocks_spec.append((parts[0], int(parts[1])))
        top = GromacsTopologyFile(path.name, parametrize=False)
    except MultiscaleError:
        raise
    except FileNotFoundError as e:
        raise MultiscaleError(f"{path}: include not found ({e}); includes resolve relative to the .top's folder, GMXLIB, then the GROMACS share dir") from e
    except Exception as e:  # ParmEd raises many types on malformed input
        raise MultiscaleError(f"{path}: cannot read GROMACS topology: {e}") from e
    finally:
        os.chdir(cwd)
    templates = {name: _from_parmed_template(name, mol) for name, (mol, _nrexcl) in top.molecules.items()}
    blocks, start = [], 0
    for name, count in blocks_spec:
        if name not in templates:
            raise MultiscaleError(f"{path}: [ molecules ] names '{name}' but no [ moleculetype ] {name} is defined or included")
        if count == 0:
            continue
        b = MoleculeBlock(templates[name], count, start)
        blocks.append(b)
        start = b.stop
    if not blocks:
        raise MultiscaleError(f"{path}: no molecules in [ molecules ]")
    return SystemTopology(blocks=blocks, source=path)


def _read_tpr(path: Path) -> SystemTopology:
    import MDAnalysis as mda

    try:
        u = mda.Universe(str(path))
    except Exception as e:
        raise MultiscaleError(f"{path}: cannot read .tpr: {e}") from e
    atoms = u.atoms
    moltypes = atoms.moltypes
    molnums = atoms.molnums
    blocks: list[MoleculeBlock] = []
    templates: dict[str, MoleculeType] = {}
    bonds = atoms.bonds.indices if hasattr(atoms, "bonds") else np.zeros((0, 2), int)
    # boundaries between molecules
    starts = np.flatnonzero(np.r_[True, molnums[1:] != molnums[:-1]])
    ends = np.r_[starts[1:], len(atoms)]
    for s, e in zip(starts, ends):
        name = str(moltypes[s])
        if name not in templates:
            sel = (bonds[:, 0] >= s) & (bonds[:, 0] < e)
            mb = bonds[sel] - s
            elements = tuple(_element_from_mass(m) for m in atoms.masses[s:e])
            if len(mb) == 0:
                mb = _rigid_water_bonds(elements)
            templates[name] = MoleculeType(
                name=name,
                atom_names=tuple(atoms.names[s:e]),
                resnames=tuple(atoms.resnames[s:e]),
                elements=elements,
                masses=np.asarray(atoms.masses[s:e], float),
                charges=np.asarray(atoms.charges[s:e], float),
                bonds=np.asarray(mb, int).reshape(-1, 2),
                residues=tuple(int(r) for r in atoms.resindices[s:e] - atoms.resindices[s]),
            )
        if blocks and blocks[-1].moltype.name == name and blocks[-1].stop == s:
            last = blocks[-1]
            blocks[-1] = MoleculeBlock(last.moltype, last.count + 1, last.start)
        else:
            blocks.append(MoleculeBlock(templates[name], 1, int(s)))
    return SystemTopology(blocks=blocks, source=path)


_MASS_ELEMENTS = [(1.008, "H"), (12.011, "C"), (14.007, "N"), (15.999, "O"), (18.998, "F"), (22.99, "Na"),
                  (30.974, "P"), (32.06, "S"), (35.45, "Cl"), (39.098, "K"), (79.904, "Br"), (126.9, "I")]


def _element_from_mass(m: float) -> str:
    best = min(_MASS_ELEMENTS, key=lambda t: abs(t[0] - m))
    return best[1] if abs(best[0] - m) < 1.0 else ("H" if 1.0 <= m < 4.5 else "X")


def load_topology(path: str | os.PathLike) -> SystemTopology:
    """Read an AA topology (``.top`` via ParmEd, ``.tpr`` via MDAnalysis)."""
    p = Path(path)
    if not p.is_file():
        raise MultiscaleError(f"topology file {p} not found: pass an existing .top or .tpr")
    if p.suffix == ".top":
        return _read_top(p.resolve())
    if p.suffix == ".tpr":
        return _read_tpr(p.resolve())
    raise MultiscaleError(f"topology file {p}: unsupported type '{p.suffix}', use a GROMACS .top or .tpr")

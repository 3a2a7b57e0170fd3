"""Atomistic system topology: molecule types, their bond graphs, and the block order.

A GROMACS ``.top`` is read with ParmEd (includes resolved relative to the ``.top``'s folder,
then ``GMXLIB`` and the GROMACS share directory, as grompp does); a ``.tpr`` is read with
MDAnalysis.  Either way the result is a :class:`SystemTopology`: an ordered list of
:class:`MoleculeBlock` (``count`` copies of one :class:`MoleculeType`), which is all the
mapping and backmapping code needs.  Masses are g/mol; no coordinates live here.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MultiscaleError
from .errors import clip as _clip

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

    def atom_resids(self) -> np.ndarray:
        """Residue number per atom, counting from 1: one per residue of a moleculetype's ``residues``
        (amino-acid chains keep their residues), else one per molecule copy (= :meth:`resids`)."""
        out, rid = [], 0
        for b in self.blocks:
            mt = b.moltype
            r = np.asarray(mt.residues, int) if mt.residues is not None else np.zeros(mt.n_atoms, int)
            r = np.unique(r, return_inverse=True)[1] if len(r) else r
            per = int(r.max()) + 1 if len(r) else 1
            out.append((np.arange(b.count)[:, None] * per + r[None, :]).ravel() + rid + 1)
            rid += per * b.count
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


#: Sections whose lines never reach ParmEd (parametrize=False uses none of them): the force
#: field's parameter tables (CHARMM36's pair/dihedral types alone are ~90,000 lines, 2-3 s to
#: parse) and each moleculetype's interaction lists beyond its bonds.
_UNREAD_SECTIONS = frozenset({"bondtypes", "pairtypes", "angletypes", "dihedraltypes", "constrainttypes", "cmaptypes",
                              "nonbond_params", "implicit_genborn_params", "pairs", "pairs_nb", "angles", "dihedrals",
                              "cmap", "position_restraints", "dihedral_restraints", "distance_restraints",
                              "orientation_restraints", "angle_restraints", "angle_restraints_z"})

_MAX_ATOMS = 2**31 - 1  # GROMACS' atom index limit: a larger [ molecules ] total is a typo


class _LineCounter:
    """Iterate a file's lines, remembering the 1-based number of the last one read.

    Lines inside a section of :data:`_UNREAD_SECTIONS` that this file itself opened are counted
    but not handed on (preprocessor directives always are): the force field's parameter tables
    never reach the preprocessor's define substitution."""

    def __init__(self, fileobj):
        self._f, self.lineno = fileobj, 0

    def __iter__(self):
        skip = False
        for line in self._f:
            self.lineno += 1
            s = line.lstrip()
            if s.startswith("["):
                skip = s.split(";")[0].strip().strip("[] ").lower() in _UNREAD_SECTIONS
            elif skip and not s.startswith("#"):
                continue
            yield line

    def close(self):
        self._f.close()


def _tracking_preprocessor():
    """A ParmEd CPreProcessor that knows file and line of what it yields and refuses circular includes."""
    from parmed.gromacs._cpp import CPreProcessor

    class _TrackingPP(CPreProcessor):
        def __init__(self, fname, chain=(), **kw):
            try:
                with open(fname, "rb") as fh:
                    fh.read().decode("utf-8")
            except UnicodeDecodeError as e:
                raise MultiscaleError(f"{fname}: not UTF-8 text (byte {e.start}): save the file as UTF-8/ASCII") from None
            super().__init__(fname, **kw)
            self._fileobj = _LineCounter(self._fileobj)
            self.chain = (*chain, os.path.realpath(fname))

        def where(self) -> str:
            """``file:line`` of the innermost file being read."""
            pp = self
            while isinstance(pp._includefile, _TrackingPP):
                pp = pp._includefile
            return f"{pp.filename}:{pp._fileobj.lineno}"

        def _include(self, args):
            CPreProcessor._ppcmdmap["include"](self, args)
            inc = self._includefile
            if inc is None:
                return
            inc.close()
            fname = inc.filename
            self._includefile = None
            if os.path.realpath(fname) in self.chain:
                raise MultiscaleError(f"{self.where()}: circular #include of {fname}: remove the #include that reads a file already being read")
            if len(self.chain) >= 32:
                raise MultiscaleError(f"{self.where()}: #include nested more than 32 deep: check for an include loop")
            self._includefile = _TrackingPP(fname, chain=self.chain, defines=self.defines, includes=self._includes,
                                            notfound_fatal=self._notfound_fatal)

        _ppcmdmap = {**CPreProcessor._ppcmdmap, "include": _include}

    return _TrackingPP


def _preprocess(path: Path, includes: list[str]) -> tuple[list[str], list[str]]:
    """Preprocessed lines of a .top (includes expanded, FLEXIBLE defined as ParmEd does) and,
    per line, the ``file:line`` it came from."""
    from collections import OrderedDict

    pp = _tracking_preprocessor()(str(path), defines=OrderedDict(FLEXIBLE="1"), includes=includes)
    lines, origins = [], []
    it = iter(pp)
    while True:
        try:
            line = next(it)
        except StopIteration:
            break
        except MultiscaleError:
            raise
        except RecursionError:
            raise MultiscaleError(f"{pp.where()}: #include nested too deep: check for an include loop") from None
        except Exception as e:  # PreProcessorError, NotImplementedError (#elif), OSError
            raise MultiscaleError(f"{pp.where()}: {_exc_line(e)}") from None
        lines.append(line)
        origins.append(pp.where())
    return lines, origins


def _exc_line(e: BaseException) -> str:
    """First line of an exception's message (clipped), or its type name."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg if len(msg) <= 150 else msg[:147] + "..."


class _Lines:
    """Lines handed to ParmEd, remembering which one it read last."""

    def __init__(self, lines):
        self._lines, self.index = lines, -1

    def __iter__(self):
        for i, line in enumerate(self._lines):
            self.index = i
            yield line

    def close(self):
        pass


def fetched_forcefield_dirs() -> list[str]:
    """The force-field cache folders multiscale fetched (the CHARMM36 port), searched last: a topology
    that ``multiscale topology --forcefield charmm36m`` wrote reads without setting GMXLIB."""
    from .forcefields import charmm36_gmxlib, is_fetched

    return [str(charmm36_gmxlib(download=False))] if is_fetched("charmm36") else []


@functools.cache
def _templates_only_reader():
    """ParmEd's topology reader that keeps the moleculetype templates and skips building the
    combined structure (it deep-copies every moleculetype once: 2 s for a 1,000-residue chain)."""
    from parmed.gromacs import GromacsTopologyFile

    class TemplatesOnly(GromacsTopologyFile):
        def __iadd__(self, other):
            return self

    return TemplatesOnly


def _read_top(path: Path) -> SystemTopology:
    """Read a .top: includes expanded with file/line tracking, [ molecules ] read here (counts
    bounded), moleculetypes parsed by ParmEd once each (never expanded to the whole system)."""
    import warnings
    from collections import OrderedDict

    _TemplatesOnly = _templates_only_reader()
    includes = [str(path.parent)]
    if os.environ.get("GMXLIB"):
        includes += os.environ["GMXLIB"].split(":")
    share = gromacs_share_top()
    if share:
        includes.append(share)
    includes += fetched_forcefield_dirs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ParmEd's warnings would print before the error line
        lines, origins = _preprocess(path, includes)
    blocks_spec: list[tuple[str, int, str]] = []
    atomtype_origin: dict[str, str] = {}
    moltype_origin: dict[str, str] = {}
    keep = []
    section = None
    for line, where in zip(lines, origins):
        s = line.split(";")[0].strip()
        if not s:
            continue
        if s.startswith("["):
            if not s.endswith("]"):
                raise MultiscaleError(f"{where}: malformed section header {_clip(s)}: write '[ name ]'")
            section = s.strip("[] ").lower()
        elif section == "molecules":
            parts = s.split()
            if len(parts) != 2 or not re.fullmatch(r"[0-9]+", parts[1]):
                raise MultiscaleError(f"{where}: bad [ molecules ] line {_clip(s)}: expected 'NAME COUNT'")
            blocks_spec.append((parts[0], int(parts[1]), where))
            continue  # ParmEd would build every copy: it gets the moleculetypes only
        elif section in _UNREAD_SECTIONS:
            continue  # parameters: multiscale reads names, elements, masses, charges and bonds only
        elif section == "atomtypes":
            atomtype_origin.setdefault(s.split()[0], where)
        elif section == "moleculetype":
            moltype_origin.setdefault(s.split()[0], where)
        keep.append((line, where))
    feed = _Lines([ln for ln, _ in keep])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ParmEd's warnings would print before the error line
            top = _TemplatesOnly(feed, defines=OrderedDict(), parametrize=False)
    except Exception as e:  # ParmEd raises many types on malformed input
        where = keep[feed.index][1] if 0 <= feed.index < len(keep) else str(path)
        raise MultiscaleError(f"{where}: cannot read GROMACS topology: {_exc_line(e)}") from None
    templates = {}
    for name, (mol, _nrexcl) in top.molecules.items():
        _check_atoms(name, mol, atomtype_origin, path)
        templates[name] = _from_parmed_template(name, mol)
    blocks, start = [], 0
    folded = {k.lower(): k for k in templates}
    for name, count, where in blocks_spec:
        if name not in templates and name.lower() in folded:  # grompp matches moleculetype names case-insensitively
            name = folded[name.lower()]
        if name not in templates:
            raise MultiscaleError(f"{where}: [ molecules ] names {_clip(name, 40)} but no [ moleculetype ] of that name is defined or included")
        if count == 0:
            continue
        if templates[name].n_atoms == 0:
            raise MultiscaleError(f"{moltype_origin.get(name, path)}: [ moleculetype ] {name} has no [ atoms ]: "
                                  "list its atoms (or remove it from [ molecules ])")
        b = MoleculeBlock(templates[name], count, start)
        if b.stop > _MAX_ATOMS:
            raise MultiscaleError(f"{where}: [ molecules ] {name} {count} makes more than {_MAX_ATOMS} atoms: check the count")
        blocks.append(b)
        start = b.stop
    if not blocks:
        raise MultiscaleError(f"{path}: no molecules in [ molecules ]")
    return SystemTopology(blocks=blocks, source=path)


def _check_atoms(name: str, mol, atomtype_origin: dict[str, str], path: Path) -> None:
    """Atomic numbers, masses and charges of one ParmEd moleculetype are usable (one-line error otherwise)."""
    from parmed.periodic_table import Element

    for a in mol.atoms:
        where = atomtype_origin.get(a.type, str(path))
        if not -1 <= a.atomic_number < len(Element):
            raise MultiscaleError(f"{where}: atom type {_clip(a.type, 20)} (atom {_clip(a.name, 10)} of {name}) has atomic number "
                                  f"{a.atomic_number}: use 0-{len(Element) - 1} in [ atomtypes ]")
        if not (np.isfinite(a.mass) and a.mass >= 0 and np.isfinite(a.charge)):
            raise MultiscaleError(f"{path}: moleculetype {name} atom {_clip(a.name, 10)}: mass {a.mass} / charge {a.charge} "
                                  f"must be finite and the mass >= 0: fix its [ atoms ] or [ atomtypes ] line")


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

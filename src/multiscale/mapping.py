"""AA -> CG mappings: read ``.map``/YAML files, bind them to topologies as weight matrices.

Two input formats describe the same thing, per molecule type: the CG bead names in order and,
for each atom, the bead(s) it belongs to.

* the public backward/vermouth ``.map`` format (sections ``[ molecule ]``, ``[ martini ]``,
  ``[ mapping ]``, ``[ atoms ]`` with lines ``index name bead [bead ...]``; other sections such
  as ``[ chiral ]``/``[ trans ]``/``[ out ]`` are kept as hints but not needed), and
* an own YAML format::

      molecules:
        HPO:                       # AA moleculetype (or residue) name
          cg_name: HPO             # CG moleculetype name (default: same)
          beads: [C1, R2]
          weighting: cog           # cog (default, Martini 3) or com
          atoms: {C1: C1, C4: [C1, R2], ...}
      water: {aa: SOL, cg: W, bead: W, per_bead: 4}

An atom listed under k beads contributes weight 1/k to each (backward's convention).  Bead
positions are then ``M @ x`` with ``M`` (n_beads, n_atoms) rows summing to 1 (COG, or COM with
masses).  Water is mapped by spatial grouping (see :mod:`multiscale.water`), ``per_bead`` AA
waters per CG bead.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MultiscaleError, clip, read_user_text
from .topology import MoleculeType, SystemTopology

__all__ = ["MoleculeMapping", "WaterMapping", "IonMapping", "Mapping", "load_mapping", "parse_map_text"]


@dataclass
class MoleculeMapping:
    """Mapping of one AA molecule type onto its CG beads.

    ``atoms``: atom names in file order; ``assignment``: per atom, the bead names it maps to
    (empty = not part of any bead).
    """

    molecule: str
    beads: list[str]
    atoms: list[str]
    assignment: list[list[str]]
    cg_name: str | None = None
    weighting: str = "cog"
    source: str = "<memory>"
    hints: dict[str, list[list[str]]] = field(default_factory=dict)

    def __post_init__(self):
        if self.cg_name is None:
            self.cg_name = self.molecule
        mol = clip(self.molecule, 30)
        if self.weighting not in ("cog", "com"):
            raise MultiscaleError(f"{self.source}: molecule {mol}: weighting must be 'cog' or 'com', got {clip(self.weighting, 20)}")
        if not self.beads:
            raise MultiscaleError(f"{self.source}: molecule {mol} has no beads: list its CG bead names")
        dup = sorted({b for b in self.beads if self.beads.count(b) > 1})
        if dup:
            raise MultiscaleError(f"{self.source}: molecule {mol}: bead name(s) {clip(' '.join(dup), 40)} listed twice "
                                  "in [ martini ]/beads: bead names must be unique")
        beads = set(self.beads)
        for atom, assigned in zip(self.atoms, self.assignment):
            for b in assigned:
                if b not in beads:
                    raise MultiscaleError(f"{self.source}: atom {clip(atom, 20)} of {mol} maps to bead {b[:20]!r}, which is not "
                                          f"among the beads {clip(' '.join(self.beads), 60)}: add it to [ martini ] or fix the atom line")
        for b in self.beads:
            if not any(b in a for a in self.assignment):
                raise MultiscaleError(f"{self.source}: bead {clip(b, 20)} of {mol} has no atoms: list at least one atom for it in [ atoms ]")

    @property
    def n_beads(self) -> int:
        return len(self.beads)

    def reordered(self, beads: list[str]) -> MoleculeMapping:
        """The same mapping with its beads in the order ``beads`` (the same names, e.g. the CG
        itp's ``[ atoms ]`` order); every atom keeps its beads and weights."""
        if sorted(beads) != sorted(self.beads):
            raise MultiscaleError(f"{self.source}: molecule {clip(self.molecule, 30)}: cannot reorder beads "
                                  f"{clip(' '.join(self.beads), 60)} to {clip(' '.join(beads), 60)}: the names differ")
        return dataclasses.replace(self, beads=list(beads), assignment=[list(a) for a in self.assignment])

    def matrix(self, moltype: MoleculeType) -> np.ndarray:
        """Weight matrix M (n_beads, moltype.n_atoms), rows sum to 1, columns in topology order.

        Atoms are matched by name; a mapping atom missing from the topology is an error,
        topology atoms absent from the mapping get weight 0 (they are still backmapped).
        """
        m = np.zeros((self.n_beads, moltype.n_atoms))
        for atom, beads in zip(self.atoms, self.assignment):
            j = moltype.index(atom)
            if j < 0:
                    raise MultiscaleError(
                    f"{self.source}: atom {clip(atom, 20)} of {clip(self.molecule, 30)} is not in topology moleculetype "
                    f"{clip(moltype.name, 30)} (atoms: {clip(' '.join(moltype.atom_names), 80)}): fix the name in the mapping"
                )
            w = moltype.masses[j] if self.weighting == "com" else 1.0
            for b in beads:
                m[self.beads.index(b), j] += w / len(beads)
        total = m.sum(axis=1, keepdims=True)
        bad = np.flatnonzero(~(total[:, 0] > 0))
        if len(bad):
            raise MultiscaleError(f"{self.source}: bead {clip(self.beads[bad[0]], 20)} of {clip(self.molecule, 30)} has zero total "
                                  f"{'mass' if self.weighting == 'com' else 'weight'}: give it atoms with mass or use weighting cog")
        return m / total


@dataclass
class WaterMapping:
    """``per_bead`` AA water molecules (moleculetype ``aa``) per CG bead ``bead`` (moleculetype ``cg``)."""

    aa: str = "SOL"
    cg: str = "W"
    bead: str = "W"
    per_bead: int = 4

    def __post_init__(self):
        for key in ("aa", "cg", "bead"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                raise MultiscaleError(f"water.{key} must be a moleculetype/bead name, got {clip(getattr(self, key), 30)}")
        if isinstance(self.per_bead, bool) or not isinstance(self.per_bead, int) or not 1 <= self.per_bead <= 12:
            raise MultiscaleError(f"water.per_bead must be a whole number from 1 to 12 (Martini 3: 4), got {clip(self.per_bead, 20)}")


@dataclass
class IonMapping:
    """How monatomic ions map: ``waters_per_ion`` nearest waters go into each ion's bead (0:
    Martini 3 default, one bead per bare ion; 4-6: Martini 2-style hydrated ions)."""

    waters_per_ion: int = 0

    def __post_init__(self):
        if isinstance(self.waters_per_ion, bool) or not isinstance(self.waters_per_ion, int) \
                or not 0 <= self.waters_per_ion <= 12:
            raise MultiscaleError(f"ions.waters_per_ion must be a whole number from 0 to 12, got {clip(self.waters_per_ion, 20)}")


@dataclass
class Mapping:
    """All molecule mappings of a system, keyed by AA moleculetype name, plus water."""

    molecules: dict[str, MoleculeMapping] = field(default_factory=dict)
    water: WaterMapping = field(default_factory=WaterMapping)
    sources: list[str] = field(default_factory=list)
    ions: IonMapping = field(default_factory=IonMapping)

    def for_moltype(self, moltype: MoleculeType) -> MoleculeMapping | None:
        """The mapping for a moleculetype, matched by moleculetype name, then residue name."""
        if moltype.name in self.molecules:
            return self.molecules[moltype.name]
        for res in dict.fromkeys(moltype.resnames):
            if res in self.molecules:
                return self.molecules[res]
        return None

    def check(self, topology: SystemTopology) -> None:
        """Every moleculetype of ``topology`` belongs to a molecule class and its mapping fits
        (raises MultiscaleError naming the moleculetype; see :func:`multiscale.coarse_grain.cg_layout`)."""
        from .coarse_grain import cg_layout

        cg_layout(topology, self)

    def to_dict(self) -> dict:
        return {
            "molecules": {
                k: {"cg_name": v.cg_name, "beads": v.beads, "weighting": v.weighting,
                    "atoms": [[a, *bs] for a, bs in zip(v.atoms, v.assignment)]}
                for k, v in self.molecules.items()
            },
            "water": vars(self.water).copy(),
            "ions": vars(self.ions).copy(),
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "<model>") -> Mapping:
        mols = {
            k: MoleculeMapping(molecule=k, beads=list(v["beads"]), atoms=[a[0] for a in v["atoms"]],
                               assignment=[list(a[1:]) for a in v["atoms"]], cg_name=v.get("cg_name"),
                               weighting=v.get("weighting", "cog"), source=source)
            for k, v in d.get("molecules", {}).items()
        }
        return cls(molecules=mols, water=WaterMapping(**d.get("water", {})), sources=[source],
                   ions=IonMapping(**d.get("ions", {})))


def parse_map_text(text: str, source: str = "<string>") -> list[MoleculeMapping]:
    """Parse backward/vermouth ``.map`` text; one mapping per residue name in ``[ molecule ]``."""
    sections: dict[str, list[tuple[int, list[str]]]] = {}
    current = None
    for lineno, raw in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        line = raw.split(";")[0].strip()
        if not line:
            continue
        if line.startswith("#"):
            continue  # backward macros/defines are not needed here
        if line.startswith("["):
            if not line.endswith("]"):
                raise MultiscaleError(f"{source}:{lineno}: malformed section header {clip(raw)}: write '[ name ]'")
            current = line[1:-1].strip().lower()
            sections.setdefault(current, [])
            continue
        if current is None:
            raise MultiscaleError(f"{source}:{lineno}: text before the first [ section ]: {clip(raw)}")
        sections[current].append((lineno, line.split()))
    for required in ("molecule", "martini", "atoms"):
        if not sections.get(required):
            raise MultiscaleError(f"{source}: missing or empty [ {required} ] section (a .map needs [ molecule ], [ martini ] and [ atoms ])")
    names = [t for _, row in sections["molecule"] for t in row]
    beads = [t for _, row in sections["martini"] for t in row]
    atoms, assignment = [], []
    for lineno, row in sections["atoms"]:
        if len(row) < 2 or not re.fullmatch(r"-?[0-9]+", row[0]):
            raise MultiscaleError(f"{source}:{lineno}: bad [ atoms ] line {clip(' '.join(row))}: expected 'index atom_name bead [bead ...]'")
        if row[1] in atoms:
            raise MultiscaleError(f"{source}:{lineno}: atom name {clip(row[1], 20)} listed twice in [ atoms ]")
        atoms.append(row[1])
        assignment.append([b for b in row[2:] if not b.startswith("!")])
    hints = {k: [row for _, row in v] for k, v in sections.items() if k in ("chiral", "trans", "cis", "out")}
    cg = [t for _, row in sections.get("cg_molecule", []) for t in row]  # Martini moleculetype, when it differs
    if len(cg) > 1:
        raise MultiscaleError(f"{source}: [ cg_molecule ] names {len(cg)} moleculetypes: give the one Martini moleculetype name")
    return [MoleculeMapping(molecule=n, beads=beads, atoms=atoms, assignment=[list(a) for a in assignment],
                            cg_name=cg[0] if cg else None, source=source, hints=hints) for n in names]


def _names(value, path: Path, key: str) -> list[str]:
    """A YAML list of names (or one name) as strings; anything else is a one-line error."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
        raise MultiscaleError(f"{path}: {key} must be a name or a list of names (strings), got {clip(value, 40)}")
    return list(items)


def _yaml_molecule(path: Path, name, spec) -> MoleculeMapping:
    """One ``molecules.NAME`` entry of a YAML mapping, type-checked."""
    if not isinstance(name, (str, int)) or isinstance(name, bool):
        raise MultiscaleError(f"{path}: molecules: {clip(name, 30)} is not a moleculetype name: use a string key")
    key = f"molecules.{clip(name, 30)}"
    if not isinstance(spec, dict):
        raise MultiscaleError(f"{path}: {key} must be a mapping with 'beads' and 'atoms', got {clip(spec, 40)}")
    unknown = set(spec) - {"cg_name", "beads", "weighting", "atoms"}
    if unknown:
        raise MultiscaleError(f"{path}: {key}: unknown key(s) {clip(sorted(map(str, unknown)), 60)}")
    if "beads" not in spec or "atoms" not in spec:
        raise MultiscaleError(f"{path}: {key}: needs 'beads' and 'atoms'")
    beads = _names(spec["beads"], path, f"{key}.beads")
    atoms_spec = spec["atoms"]
    if not isinstance(atoms_spec, dict) or not atoms_spec:
        raise MultiscaleError(f"{path}: {key}.atoms must map atom names to bead names, e.g. {{C1: B1, C4: [B1, B2]}}")
    atoms, assignment = [], []
    for atom, bs in atoms_spec.items():
        if not isinstance(atom, str):
            raise MultiscaleError(f"{path}: {key}.atoms: atom name {clip(atom, 20)} must be a string (quote it)")
        atoms.append(atom)
        assignment.append([] if bs is None else _names(bs, path, f"{key}.atoms.{clip(atom, 20)}"))
    cg_name = spec.get("cg_name")
    if cg_name is not None and not (isinstance(cg_name, str) and cg_name.strip()):
        raise MultiscaleError(f"{path}: {key}.cg_name must be a moleculetype name, got {clip(cg_name, 30)}")
    return MoleculeMapping(molecule=str(name), beads=beads, atoms=atoms, assignment=assignment, cg_name=cg_name,
                           weighting=str(spec.get("weighting", "cog")), source=str(path))


def _parse_yaml(path: Path) -> tuple[list[MoleculeMapping], WaterMapping | None, IonMapping | None]:
    import yaml

    try:
        data = yaml.safe_load(read_user_text(path, "YAML mapping"))
    except yaml.YAMLError as e:
        raise MultiscaleError(f"{path}: invalid YAML: {clip(str(e).splitlines()[0] if str(e) else e, 120)}") from None
    except RecursionError:
        raise MultiscaleError(f"{path}: invalid YAML: nested too deeply") from None
    if not isinstance(data, dict) or not set(data) <= {"molecules", "water", "ions"}:
        raise MultiscaleError(f"{path}: a YAML mapping takes the top-level keys 'molecules', 'water' and 'ions' only")
    molecules = data.get("molecules") or {}
    if not isinstance(molecules, dict):
        raise MultiscaleError(f"{path}: molecules must map moleculetype names to their mappings, got {clip(molecules, 40)}")
    out = [_yaml_molecule(path, name, spec) for name, spec in molecules.items()]
    water = None
    if data.get("water") is not None:
        w = data["water"]
        if not isinstance(w, dict) or not set(w) <= {"aa", "cg", "bead", "per_bead"}:
            raise MultiscaleError(f"{path}: water: takes only 'aa', 'cg', 'bead' and 'per_bead' (e.g. water: {{per_bead: 4}})")
        try:
            water = WaterMapping(**w)
        except MultiscaleError as e:
            raise MultiscaleError(f"{path}: {e}") from None
    ions = None
    if data.get("ions") is not None:
        if not isinstance(data["ions"], dict) or not set(data["ions"]) <= {"waters_per_ion"}:
            raise MultiscaleError(f"{path}: ions: takes only 'waters_per_ion' (e.g. ions: {{waters_per_ion: 4}})")
        try:
            ions = IonMapping(**data["ions"])
        except MultiscaleError as e:
            raise MultiscaleError(f"{path}: {e}") from None
    return out, water, ions


def load_mapping(paths: str | os.PathLike | list) -> Mapping:
    """Read one or more mapping files (``.map`` or ``.yaml``/``.yml``) into a :class:`Mapping`."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    result = Mapping()
    for p in map(Path, paths):
        if not p.is_file():
            raise MultiscaleError(f"mapping file {p} not found: pass an existing .map or .yaml file")
        if p.suffix in (".yaml", ".yml"):
            mols, water, ions = _parse_yaml(p)
            if water is not None:
                result.water = water
            if ions is not None:
                result.ions = ions
        else:
            mols = parse_map_text(read_user_text(p, "mapping file"), source=str(p))
        for m in mols:
            if m.molecule in result.molecules:
                raise MultiscaleError(f"{p}: molecule {clip(m.molecule, 30)} is mapped twice (also in {result.molecules[m.molecule].source})")
            result.molecules[m.molecule] = m
        result.sources.append(str(p))
    return result

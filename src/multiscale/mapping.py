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

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MultiscaleError
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
        if self.weighting not in ("cog", "com"):
            raise MultiscaleError(f"{self.source}: molecule {self.molecule}: weighting must be 'cog' or 'com', got {self.weighting!r}")
        for atom, beads in zip(self.atoms, self.assignment):
            for b in beads:
                if b not in self.beads:
                    raise MultiscaleError(f"{self.source}: atom {atom} of {self.molecule} maps to bead {b!r}, which is not among the "
                                          f"beads {self.beads}: add it to [ martini ] or fix the atom line")
        for b in self.beads:
            if not any(b in a for a in self.assignment):
                raise MultiscaleError(f"{self.source}: bead {b} of {self.molecule} has no atoms: list at least one atom for it in [ atoms ]")

    @property
    def n_beads(self) -> int:
        return len(self.beads)

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
                    f"{self.source}: atom {atom} of {self.molecule} is not in topology moleculetype {moltype.name} "
                    f"(atoms: {' '.join(moltype.atom_names[:12])}{' ...' if moltype.n_atoms > 12 else ''}): fix the name in the mapping"
                )
            w = moltype.masses[j] if self.weighting == "com" else 1.0
            for b in beads:
                m[self.beads.index(b), j] += w / len(beads)
        return m / m.sum(axis=1, keepdims=True)


@dataclass
class WaterMapping:
    """``per_bead`` AA water molecules (moleculetype ``aa``) per CG bead ``bead`` (moleculetype ``cg``)."""

    aa: str = "SOL"
    cg: str = "W"
    bead: str = "W"
    per_bead: int = 4


@dataclass
class IonMapping:
    """How monatomic ions map: ``waters_per_ion`` nearest waters go into each ion's bead (0:
    Martini 3 default, one bead per bare ion; 4-6: Martini 2-style hydrated ions)."""

    waters_per_ion: int = 0

    def __post_init__(self):
        if isinstance(self.waters_per_ion, bool) or not isinstance(self.waters_per_ion, int) \
                or not 0 <= self.waters_per_ion <= 12:
            raise MultiscaleError(f"ions.waters_per_ion must be a whole number from 0 to 12, got {self.waters_per_ion!r}")


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
    sections: dict[str, list[list[str]]] = {}
    current = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";")[0].strip()
        if not line:
            continue
        if line.startswith("#"):
            continue  # backward macros/defines are not needed here
        if line.startswith("["):
            if not line.endswith("]"):
                raise MultiscaleError(f"{source}:{lineno}: malformed section header {raw.strip()!r}")
            current = line[1:-1].strip().lower()
            sections.setdefault(current, [])
            continue
        if current is None:
            raise MultiscaleError(f"{source}:{lineno}: text before the first [ section ]: {raw.strip()!r}")
        sections[current].append(line.split())
    for required in ("molecule", "martini", "atoms"):
        if not sections.get(required):
            raise MultiscaleError(f"{source}: missing or empty [ {required} ] section (a .map needs [ molecule ], [ martini ] and [ atoms ])")
    names = [t for row in sections["molecule"] for t in row]
    beads = [t for row in sections["martini"] for t in row]
    atoms, assignment = [], []
    for row in sections["atoms"]:
        if len(row) < 2 or not row[0].lstrip("-").isdigit():
            raise MultiscaleError(f"{source}: bad [ atoms ] line {' '.join(row)!r}: expected 'index atom_name bead [bead ...]'")
        atoms.append(row[1])
        assignment.append([b for b in row[2:] if not b.startswith("!")])
    dup = {a for a in atoms if atoms.count(a) > 1}
    if dup:
        raise MultiscaleError(f"{source}: atom name(s) {', '.join(sorted(dup))} listed twice in [ atoms ]")
    hints = {k: v for k, v in sections.items() if k in ("chiral", "trans", "cis", "out")}
    return [MoleculeMapping(molecule=n, beads=beads, atoms=atoms, assignment=[list(a) for a in assignment],
                            source=source, hints=hints) for n in names]


def _parse_yaml(path: Path) -> tuple[list[MoleculeMapping], WaterMapping | None, IonMapping | None]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise MultiscaleError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict) or not set(data) <= {"molecules", "water", "ions"}:
        raise MultiscaleError(f"{path}: a YAML mapping takes the top-level keys 'molecules', 'water' and 'ions' only")
    out = []
    for name, spec in (data.get("molecules") or {}).items():
        unknown = set(spec) - {"cg_name", "beads", "weighting", "atoms"}
        if unknown:
            raise MultiscaleError(f"{path}: molecules.{name}: unknown key(s) {sorted(unknown)}")
        if "beads" not in spec or "atoms" not in spec:
            raise MultiscaleError(f"{path}: molecules.{name}: needs 'beads' and 'atoms'")
        atoms = list(spec["atoms"])
        assignment = [[b] if isinstance(b, str) else list(b or []) for b in spec["atoms"].values()]
        out.append(MoleculeMapping(molecule=str(name), beads=list(spec["beads"]), atoms=atoms, assignment=assignment,
                                   cg_name=spec.get("cg_name"), weighting=spec.get("weighting", "cog"), source=str(path)))
    water = None
    if data.get("water") is not None:
        try:
            water = WaterMapping(**data["water"])
        except TypeError as e:
            raise MultiscaleError(f"{path}: water: {e}") from e
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
            mols = parse_map_text(p.read_text(), source=str(p))
        for m in mols:
            if m.molecule in result.molecules:
                raise MultiscaleError(f"{p}: molecule {m.molecule} is mapped twice (also in {result.molecules[m.molecule].source})")
            result.molecules[m.molecule] = m
        result.sources.append(str(p))
    return result

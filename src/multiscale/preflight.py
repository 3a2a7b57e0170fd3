"""Pre-flight checks: mapping <-> AA topology <-> CG itp, and sane masses/charges, before any MD.

Every command that maps or trains (``cycle``, ``coarse-grain``, ``train``, ``molecule``) runs
these checks first, so a mismatch stops the run in its first second with one line instead of
after a trained model, at ``cg-em``:

* :func:`check_mapping_atoms` -- every atom of a mapped moleculetype is in a bead or listed
  with no bead (unmapped heavy atoms: error; unmapped hydrogens: a note naming them, they get
  weight 0); atoms the mapping names that the topology lacks: error naming them.
* :func:`check_cg_beads` -- the mapping's bead names against the ``[ atoms ]`` of its CG
  moleculetype (``cg_name``) in the CG include files.  Same names in another order: the mapping
  is reordered to the itp's order (:meth:`MoleculeMapping.reordered`, weights unchanged) and a
  note names both orders.  Other names or counts, or no such moleculetype: error.
* :func:`check_masses_charges` -- per moleculetype: net charge within 0.01 e of an integer,
  every atom mass > 0 (mass 0 only for an atom in no bond: a virtual site), hydrogens 0.9-4.1
  (hydrogen mass repartitioning allowed).

Findings are :class:`Finding` objects (level ``error``/``note``, moleculetype, one-line
message).  :func:`preflight` runs all three; :func:`load_checked_mapping` is the one call the
commands use: it loads the mapping files, runs the checks, raises the first error as a
:class:`~multiscale.errors.MultiscaleError`, hands each note to ``note`` and returns the mapping
in the CG itp's bead order.

Design: the bead order is fixed where the mapping is loaded, not in the files.  The workflow's
coarse-grain and train stages call :func:`load_checked_mapping` (with the CG include files of
the config) instead of ``load_mapping``, so the CG structure they write and the model they train
(which stores its mapping, used again by backmap) use the itp's order; the cycle driver runs the
same checks once, before the first stage, when the plan maps or trains.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MultiscaleError
from .mapping import Mapping, MoleculeMapping, load_mapping
from .topology import MoleculeType, SystemTopology, load_topology

__all__ = ["Finding", "PreflightReport", "check_mapping_atoms", "read_cg_moleculetypes", "check_cg_beads",
           "check_masses_charges", "preflight", "load_checked_mapping", "stderr_note"]

CHARGE_TOL = 0.01  # e: net charge of a moleculetype must be this close to an integer
H_MASS = (0.9, 4.1)  # g/mol: hydrogen masses (hydrogen mass repartitioning allowed)


@dataclass(frozen=True)
class Finding:
    """One pre-flight result: ``level`` "error" (stops the command) or "note" (printed)."""

    level: str
    moltype: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message}" if self.level == "note" else self.message


@dataclass
class PreflightReport:
    """The mapping to use (reordered to the CG itps where needed) and every finding."""

    mapping: Mapping
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "note"]

    def raise_first_error(self) -> None:
        if self.errors:
            raise MultiscaleError(self.errors[0].message)


def _names(items: Iterable[str], n: int = 12) -> str:
    items = list(items)
    return " ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def _mapped(topology: SystemTopology, mapping: Mapping) -> list[tuple[MoleculeType, MoleculeMapping]]:
    """(moltype, its user mapping) for the moleculetypes the small-molecule class owns."""
    from .classes import classify

    out = []
    for mt in topology.moltypes.values():
        mm = mapping.for_moltype(mt)
        if mm is not None and classify(mt, mapping, str(topology.source)).name == "molecule":
            out.append((mt, mm))
    return out


def check_mapping_atoms(topology: SystemTopology, mapping: Mapping) -> list[Finding]:
    """Mapping <-> AA topology, per mapped moleculetype: names the topology lacks (error),
    heavy atoms in no bead and not listed (error), hydrogens in no bead (note)."""
    out: list[Finding] = []
    for mt, mm in _mapped(topology, mapping):
        missing = [a for a in mm.atoms if mt.index(a) < 0]
        if missing:
            out.append(Finding("error", mt.name, (
                f"{mm.source}: atom{'s' if len(missing) > 1 else ''} {_names(missing, 8)} of {mm.molecule} "
                f"{'are' if len(missing) > 1 else 'is'} not in topology moleculetype {mt.name} "
                f"(atoms: {_names(mt.atom_names, 20)}): fix the name{'s' if len(missing) > 1 else ''} in the mapping")))
            continue
        in_bead = {a for a, beads in zip(mm.atoms, mm.assignment) if beads}
        listed = set(mm.atoms)
        orphan = [n for n, e in zip(mt.atom_names, mt.elements) if e != "H" and n not in listed]
        if orphan:  # the small-molecule class's message
            out.append(Finding("error", mt.name, (
                f"moleculetype {mt.name} of {topology.source}: heavy atom(s) {' '.join(orphan[:8])}"
                f"{' ...' if len(orphan) > 8 else ''} are not in mapping {mm.source}: assign them to a bead, "
                "or list them with no bead to ignore them")))
        hyd = [n for n, e in zip(mt.atom_names, mt.elements) if e == "H" and n not in in_bead and n not in listed]
        if hyd:
            out.append(Finding("note", mt.name, (
                f"{mt.name}: hydrogens {_names(hyd)} are in no bead of {Path(mm.source).name} (weight 0): add them to "
                "the mapping if the Martini model counts them (or list them with no bead to silence this)")))
    return out


def _files(files: list[Path], n: int = 6) -> str:
    """File paths for a message, the missing ones marked."""
    shown = [f"{f}{'' if f.is_file() else ' (not found)'}" for f in files[:n]]
    return ", ".join(shown) + (f" and {len(files) - n} more" if len(files) > n else "")


_MOLTYPE_RE = re.compile(r"^\s*\[\s*moleculetype\s*\]", re.I | re.M)


def read_cg_moleculetypes(paths: Iterable[str | os.PathLike]) -> dict[str, tuple[list[str], Path]]:
    """{moleculetype: (atom names in [ atoms ] order, file)} of the .itp/.top files (first
    definition wins; files without ``[ moleculetype ]`` are skipped after one text search)."""
    out: dict[str, tuple[list[str], Path]] = {}
    for p in map(Path, paths):
        if not p.is_file():
            continue
        text = p.read_text(errors="replace")
        if not _MOLTYPE_RE.search(text):
            continue
        section, name = None, None
        for raw in text.splitlines():
            line = raw.split(";", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                section = line.strip("[] ").lower()
                if section == "moleculetype":
                    name = None
                continue
            parts = line.split()
            if section == "moleculetype" and name is None:
                name = parts[0]
                if name not in out:
                    out[name] = ([], p)
            elif section == "atoms" and name is not None and out[name][1] == p and len(parts) >= 5:
                out[name][0].append(parts[4])
    return out


def check_cg_beads(mapping: Mapping, cg_files: Iterable[str | os.PathLike],
                   topology: SystemTopology | None = None) -> tuple[Mapping, list[Finding]]:
    """Mapping beads <-> CG itp: returns the mapping in the itps' bead order and the findings.

    Checks the molecules the topology's small-molecule blocks use (all of the mapping's
    molecules without ``topology``).  No ``cg_files``: nothing to check."""
    files = [Path(p) for p in cg_files]
    if not files:
        return mapping, []
    mols = [mm for _, mm in _mapped(topology, mapping)] if topology is not None else list(mapping.molecules.values())
    cg = read_cg_moleculetypes(files)
    out: list[Finding] = []
    molecules = dict(mapping.molecules)
    for mm in mols:
        if mm.cg_name not in cg:
            out.append(Finding("error", mm.molecule, (
                f"CG moleculetype {mm.cg_name} (mapping {mm.source}) is not defined in the CG include files "
                f"({_files(files)}): include the .itp that defines it "
                "(system.cg_topology / cg_includes, --include) or set [ cg_molecule ] in the mapping")))
            continue
        beads, itp = cg[mm.cg_name]
        if beads == mm.beads:
            continue
        if sorted(beads) == sorted(mm.beads):
            molecules[mm.molecule] = mm.reordered(beads)
            out.append(Finding("note", mm.molecule, (
                f"{mm.cg_name}: mapping {Path(mm.source).name} lists beads {' '.join(mm.beads)}, the CG itp "
                f"{itp.name} has {' '.join(beads)}: using the itp's order")))
            continue
        out.append(Finding("error", mm.molecule, (
            f"{mm.cg_name}: mapping {mm.source} lists beads {_names(mm.beads, 16)} ({mm.n_beads}) but CG moleculetype "
            f"{mm.cg_name} in {itp} has {_names(beads, 16)} ({len(beads)}): give the mapping's [ martini ] the "
            "itp's bead names")))
    return dataclasses.replace(mapping, molecules=molecules), out


def check_masses_charges(topology: SystemTopology) -> list[Finding]:
    """Per moleculetype: integer net charge (within 0.01 e), masses > 0 (0 only for an atom in
    no bond: a virtual site), hydrogen masses 0.9-4.1."""
    out: list[Finding] = []
    src = topology.source
    for mt in topology.moltypes.values():
        q = float(np.sum(mt.charges))
        if abs(q - round(q)) > CHARGE_TOL:
            out.append(Finding("error", mt.name, (
                f"{src}: moleculetype {mt.name} has net charge {q:.4f} e, not an integer (within {CHARGE_TOL}): "
                "fix its [ atoms ] charges")))
        bonded = set(np.asarray(mt.bonds, dtype=int).ravel().tolist())
        bad = [f"{n} ({m:g})" for i, (n, m) in enumerate(zip(mt.atom_names, mt.masses))
               if not m > 0 and (m < 0 or i in bonded)]
        if bad:
            out.append(Finding("error", mt.name, (
                f"{src}: moleculetype {mt.name}: atom(s) {_names(bad, 6)} have no mass but are bonded: give them their "
                "mass in [ atoms ] or [ atomtypes ] (mass 0 is for virtual sites only)")))
        hm = [f"{n} ({m:g})" for n, e, m in zip(mt.atom_names, mt.elements, mt.masses)
              if e == "H" and not H_MASS[0] <= m <= H_MASS[1]]
        if hm:
            out.append(Finding("error", mt.name, (
                f"{src}: moleculetype {mt.name}: hydrogen(s) {_names(hm, 6)} have masses outside "
                f"{H_MASS[0]}-{H_MASS[1]} g/mol: check [ atoms ] masses (hydrogen mass repartitioning gives up to ~4)")))
    return out


def preflight(topology: SystemTopology, mapping: Mapping, cg_files: Iterable[str | os.PathLike] = ()) -> PreflightReport:
    """All checks; ``report.mapping`` is the mapping to use (in the CG itps' bead order).
    The mapping <-> AA atom errors come first, then the CG bead and mass/charge findings."""
    findings = check_mapping_atoms(topology, mapping)
    mapping, cg_findings = check_cg_beads(mapping, cg_files, topology)
    findings += cg_findings + check_masses_charges(topology)
    findings.sort(key=lambda f: f.level != "error")  # stable: errors first, in check order
    return PreflightReport(mapping, findings)


def stderr_note(text: str) -> None:
    """Print a note on stderr (the commands' default for notes)."""
    print(text, file=sys.stderr)


def load_checked_mapping(mapping_files, topology: SystemTopology | str | os.PathLike,
                         cg_files: Iterable[str | os.PathLike] = (),
                         note: Callable[[str], None] | None = stderr_note) -> Mapping:
    """Load the mapping files, run :func:`preflight` against the AA topology (a
    :class:`SystemTopology` or a .top/.tpr path) and the CG include files, raise the first error
    as one line, pass each note (``"note: ..."``) to ``note``, check the whole layout
    (:meth:`Mapping.check`) and return the mapping in the CG itps' bead order."""
    top = topology if isinstance(topology, SystemTopology) else load_topology(topology)
    mapping = mapping_files if isinstance(mapping_files, Mapping) else load_mapping(mapping_files)
    report = preflight(top, mapping, cg_files)
    report.raise_first_error()
    report.mapping.check(top)
    if note is not None:
        for f in report.notes:
            note(str(f))
    return report.mapping

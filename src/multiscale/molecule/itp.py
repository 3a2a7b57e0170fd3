"""Minimal GROMACS .itp reading for one small molecule: ``[ atoms ]`` and ``[ bonds ]``.

Only what name matching and the pre-flight need: atom names, residue names, types, charges (e),
masses (g/mol) and the bond graph (0-based pairs).  Force-field parameters stay in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MultiscaleError, clip

__all__ = ["ItpMolecule", "read_itp_molecules", "split_atomtypes", "element_from_mass"]

_SECTION = re.compile(r"^\s*\[\s*([\w-]+)\s*\]")


@dataclass
class ItpMolecule:
    """One ``[ moleculetype ]``: per-atom lists (file order) and 0-based bonds."""

    name: str
    names: list[str] = field(default_factory=list)
    resnames: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    charges: list[float] = field(default_factory=list)
    masses: list[float | None] = field(default_factory=list)
    bonds: list[tuple[int, int]] = field(default_factory=list)

    @property
    def n_atoms(self) -> int:
        return len(self.names)

    def elements(self, type_masses: dict[str, float] | None = None) -> list[str]:
        """Elements from the masses (or the atom types' masses), e.g. 12.01 -> C, 1.008 -> H."""
        out = []
        for t, m in zip(self.types, self.masses):
            mass = m if m is not None else (type_masses or {}).get(t)
            out.append(element_from_mass(mass) if mass is not None else "?")
        return out


_MASSES = {"H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999, "F": 18.998, "P": 30.974, "S": 32.06,
           "Cl": 35.45, "Br": 79.904, "I": 126.90, "B": 10.81, "Si": 28.085}


def element_from_mass(mass: float) -> str:
    """The element whose standard mass is nearest (hydrogen-mass repartitioning up to 4 u is H)."""
    if mass is None or mass <= 0:
        return "?"
    if mass < 4.5:
        return "H"
    return min(_MASSES, key=lambda e: abs(_MASSES[e] - mass))


def _rows(text: str):
    """(section, fields) for every data line; comments, blank and preprocessor lines skipped."""
    section = None
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        m = _SECTION.match(line)
        if m:
            section = m.group(1).lower()
            continue
        yield section, line.split()


def read_itp_molecules(path: str | Path, text: str | None = None) -> list[ItpMolecule]:
    """Every moleculetype of an .itp (its ``[ atoms ]`` and ``[ bonds ]``/``[ constraints ]``)."""
    path = Path(path)
    if text is None:
        try:
            text = path.read_text(errors="replace")
        except OSError as exc:
            raise MultiscaleError(f"{path}: cannot read ({exc.strerror}): give a readable .itp file") from None
    mols: list[ItpMolecule] = []
    for section, f in _rows(text):
        try:
            if section == "moleculetype":
                mols.append(ItpMolecule(f[0]))
            elif section == "atoms" and mols:
                m = mols[-1]
                m.types.append(f[1])
                m.resnames.append(f[3])
                m.names.append(f[4])
                m.charges.append(float(f[6]) if len(f) > 6 else 0.0)
                m.masses.append(float(f[7]) if len(f) > 7 else None)
            elif section in ("bonds", "constraints") and mols:
                m = mols[-1]
                m.bonds.append((int(f[0]) - 1, int(f[1]) - 1))
        except (IndexError, ValueError):
            raise MultiscaleError(f"{path}: malformed [ {section} ] line {clip(' '.join(f))}: fix the .itp") from None
    return mols


def split_atomtypes(text: str) -> tuple[str, str]:
    """(the ``[ atomtypes ]`` section, everything else) of an .itp, so that a system topology
    can list all atom types before its first moleculetype, as grompp requires."""
    types: list[str] = []
    rest: list[str] = []
    cur = rest
    for raw in text.splitlines():
        m = _SECTION.match(raw.split(";", 1)[0])
        if m:
            cur = types if m.group(1).lower() == "atomtypes" else rest
        cur.append(raw)
    return "\n".join(types).strip() + "\n", "\n".join(rest).strip() + "\n"

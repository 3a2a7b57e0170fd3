"""Position-restraint includes for the EM/equilibration after backmapping.

:func:`write_posre_itp` writes a ``[ position_restraints ]`` file for one molecule type
(heavy atoms by default, function type 1, isotropic force constant in kJ mol^-1 nm^-2).
The restrained reference positions are the ones GROMACS reads from ``grompp -r`` (pass the
backmapped structure), so the same include serves every cycle.

To release restraints in steps without rewriting files, give ``force_constant`` as a macro
name (e.g. ``"POSRES_FC"``): the file then uses that macro, defines a default for it, and an
mdp ``define = -DPOSRES_HPO -DPOSRES_FC=250`` changes it per run.

Activation follows the usual GROMACS convention, one define per moltype
(:func:`posre_define_name`), included from the moltype's ``.itp`` with the block returned by
:func:`posre_include_text`::

    #ifdef POSRES_HPO
    #include "posre_HPO.itp"
    #endif
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import MultiscaleError
from ..io import atomic_write_text

__all__ = ["write_posre_itp", "posre_define_name", "posre_include_text"]


def posre_define_name(moltype_name: str) -> str:
    """The preprocessor define that switches on the restraints of a moltype: ``POSRES_<NAME>``
    (characters other than letters, digits and ``_`` become ``_``)."""
    return "POSRES_" + re.sub(r"[^A-Za-z0-9_]", "_", str(moltype_name))


def posre_include_text(moltype_name: str, filename: str) -> str:
    """The ``#ifdef POSRES_<NAME> / #include / #endif`` block to put at the end of the moltype."""
    d = posre_define_name(moltype_name)
    return f'#ifdef {d}\n#include "{filename}"\n#endif\n'


def write_posre_itp(moltype, path, force_constant: float | str = 1000.0, heavy_only: bool = True,
                    atoms=None, default_force_constant: float = 1000.0) -> Path:
    """Write ``[ position_restraints ]`` for ``moltype`` to ``path`` (atomic write).

    moltype: :class:`~multiscale.topology.MoleculeType`; force_constant: kJ mol^-1 nm^-2, or a
    macro name (then ``default_force_constant`` is its default value); heavy_only: restrain
    non-hydrogen atoms only; atoms: optional explicit 0-based atom indices (overrides
    ``heavy_only``).  Returns the path.
    """
    if atoms is None:
        atoms = [i for i in range(moltype.n_atoms) if (not heavy_only or moltype.elements[i] != "H")]
    atoms = sorted(int(a) for a in atoms)
    if not atoms:
        raise MultiscaleError(f"moleculetype {moltype.name}: no atoms to restrain (heavy_only={heavy_only}); pass heavy_only=False")
    if any(a < 0 or a >= moltype.n_atoms for a in atoms):
        raise MultiscaleError(f"moleculetype {moltype.name}: restraint atom index out of range 0..{moltype.n_atoms - 1}")
    lines = [f"; Position restraints for {moltype.name} ({'heavy atoms' if heavy_only else 'all atoms'}), "
             "written by multiscale.backmap.restraints.",
             f"; Switch on with define = -D{posre_define_name(moltype.name)} (grompp -r <reference structure>)."]
    if isinstance(force_constant, str):
        macro = force_constant
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", macro):
            raise MultiscaleError(f"force constant macro {macro!r} is not a valid preprocessor name")
        lines += [f"; Force constant: macro {macro} (default {default_force_constant:g} kJ mol-1 nm-2); override "
                  f"with define = -D{macro}=<value>.", f"#ifndef {macro}", f"#define {macro} {default_force_constant:g}",
                  "#endif"]
        fc = macro
    else:
        fcv = float(force_constant)
        if not fcv >= 0:
            raise MultiscaleError(f"position restraint force constant {force_constant} must be >= 0 kJ mol-1 nm-2")
        fc = f"{fcv:g}"
    lines += ["", "[ position_restraints ]", ";  atom  funct        fx        fy        fz"]
    lines += [f"{a + 1:7d}      1  {fc:>8s}  {fc:>8s}  {fc:>8s}   ; {moltype.atom_names[a]}" for a in atoms]
    return atomic_write_text(path, "\n".join(lines) + "\n")

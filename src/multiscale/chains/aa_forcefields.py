"""The atomistic protein force fields multiscale builds topologies in (pdb2gmx), and their names.

``amber99sb-ildn`` ships with GROMACS.  ``charmm36m`` is the CHARMM36 port fetched into the cache
(GPL-3.0, never in this repository: :func:`multiscale.forcefields.charmm36_gmxlib`), run with
CHARMM's own non-bonded settings (PME 1.2 nm, LJ force-switch 1.0-1.2 nm, no dispersion
correction) and CHARMM TIP3P.  Both name protonation variants, ions and N-terminal hydrogens
their own way; :data:`PROTEIN_FORCEFIELDS` holds what differs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..errors import MultiscaleError


@dataclass(frozen=True)
class ProteinForceField:
    """What differs between the protein force fields (``label`` is the user-facing name)."""

    label: str
    pdb2gmx_ff: str                                   # gmx pdb2gmx -ff
    naming: str                                       # atom naming of the shipped chain model: amber | charmm
    ions: dict = field(default_factory=dict)          # ion key (data/classes/ions.yaml) -> this force field's moleculetype
    variants: dict = field(default_factory=dict)      # amber variant residue name -> this force field's
    mdp_edits: tuple = ()                             # (regex, replacement) for the amber-style mdp templates
    terminus_menu: bool = False                       # choose NH3+/COO- from pdb2gmx's -ter menu (see pdb2gmx)

    def gmxlib(self) -> str | None:
        """GMXLIB for pdb2gmx/grompp (the force field's folder first, GROMACS' share/top after), or None."""
        if self.label == "amber99sb-ildn":
            return None
        from ..forcefields import charmm36_gmxlib
        from ..topology import gromacs_share_top

        parts = [str(charmm36_gmxlib()), *filter(None, os.environ.get("GMXLIB", "").split(":")), gromacs_share_top()]
        return ":".join(dict.fromkeys(p for p in parts if p))

    def set_env(self) -> None:
        lib = self.gmxlib()
        if lib:
            os.environ["GMXLIB"] = lib

    def residue_name(self, amber_name: str) -> str:
        return self.variants.get(amber_name, amber_name)


PROTEIN_FORCEFIELDS = {
    "amber99sb-ildn": ProteinForceField("amber99sb-ildn", "amber99sb-ildn", "amber",
                                        {"NA": "NA", "CL": "CL", "K": "K", "CA": "CA", "MG": "MG"}),
    "charmm36m": ProteinForceField(
        "charmm36m", "charmm36-feb2026_cgenff-5.0", "charmm", {"NA": "SOD", "CL": "CLA", "K": "POT", "CA": "CAL", "MG": "MG"},
        {"HID": "HSD", "HIE": "HSE", "HIP": "HSP", "ASH": "ASPP", "GLH": "GLUP", "LYN": "LSN"},
        ((r"^rcoulomb\s*=.*$", "rcoulomb                 = 1.2"),
         (r"^vdw-modifier\s*=.*$", "vdw-modifier             = force-switch\nrvdw-switch              = 1.0"),
         (r"^rvdw\s*=.*$", "rvdw                     = 1.2"),
         (r"^DispCorr\s*=.*$", "DispCorr                 = no")),
        terminus_menu=True),
}


def protein_forcefield(label: str) -> ProteinForceField:
    try:
        return PROTEIN_FORCEFIELDS[label]
    except KeyError:
        raise MultiscaleError(f"unknown protein force field {label!r}: use one of {', '.join(PROTEIN_FORCEFIELDS)}") from None


def terminus_answers(menu_log: str, start: str = "NH3+", end: str = "COO-") -> list[str]:
    """pdb2gmx ``-ter`` answers from the menus it printed (``Select start terminus type for MET-1``
    then numbered entries): the residue-specific charged terminus (``GLY-NH3+``, ``PRO-NH2+``)
    when listed, else ``start``/``end``.  The CHARMM36 port offers ``MET1`` (a polyether cap) first
    for an N-terminal Met, which pdb2gmx would otherwise take."""
    answers = []
    for m in re.finditer(r"Select (start|end) terminus type for (\w+?)-?(\d+)\n((?:\s*\d+: \S+\n)+)", menu_log):
        which, res = m.group(1), m.group(2).upper()
        entries = {name: idx for idx, name in re.findall(r"\s*(\d+): (\S+)", m.group(4))}
        want = ([f"{res}-NH3+", "PRO-NH2+" if res == "PRO" else None, start] if which == "start" else [end])
        pick = next((entries[w] for w in want if w and w in entries), None)
        if pick is None:
            raise MultiscaleError(f"pdb2gmx offers no {want[-1]} terminus for {res}: its menu was {', '.join(entries)}")
        answers.append(pick)
    return answers


__all__ = ["ProteinForceField", "PROTEIN_FORCEFIELDS", "protein_forcefield", "terminus_answers"]

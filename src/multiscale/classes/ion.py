"""Monatomic ions (Na+, Cl-, K+, Ca2+, Mg2+ ...) recognised from a data table, no mapping file.

Default: one Martini 3 ion bead <-> one AA ion (the bead sits on the ion); the table
(``data/classes/ions.yaml``, extendable by a user data folder) names the AA spellings of amber
(NA, CL, K, C0...) and CHARMM (SOD, CLA, POT, CAL) and the Martini 3 moleculetype.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import MultiscaleError
from .base import CGBlock, MoleculeClass


@lru_cache(maxsize=None)
def _table_from(path: str) -> dict:
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("ions"), dict):
        raise MultiscaleError(f"{path}: an ion table needs a top-level 'ions:' mapping")
    out = {}
    for key, v in data["ions"].items():
        try:
            out[str(key)] = {"element": str(v["element"]), "charge": float(v["charge"]),
                             "aa_names": [str(s).upper() for s in v["aa_names"]], "cg": str(v["cg"]),
                             "cg_names": [str(s).upper() for s in v.get("cg_names", [v["cg"]])],
                             "min_water_o": float(v.get("min_water_o", 0.22))}
        except (KeyError, TypeError, ValueError) as e:
            raise MultiscaleError(f"{path}: ion {key}: needs element, charge, aa_names, cg ({e})") from e
    return out


def ion_table() -> dict:
    """{ion key: {element, charge, aa_names, cg, cg_names, min_water_o}} from the package data
    (and user data folders, which override entries of the same key)."""
    table = {}
    from ..paths import find_all_data

    for p in reversed(find_all_data("classes", "ions.yaml")):  # package first, user folders over it
        table.update(_table_from(str(p)))
    return table


def identify_ion(moltype) -> dict | None:
    """The table entry of a one-atom moleculetype named like an ion of matching element and charge."""
    if moltype.n_atoms != 1:
        return None
    names = {moltype.name.upper(), moltype.resnames[0].upper(), moltype.atom_names[0].upper()}
    for entry in ion_table().values():
        if names & set(entry["aa_names"]) and moltype.elements[0].lower() == entry["element"].lower():
            if abs(float(moltype.charges[0]) - entry["charge"]) < 0.5:
                return entry
    return None


class Ion(MoleculeClass):
    """AA ion <-> one Martini 3 ion bead, 1:1; the AA ion is placed exactly on its bead."""

    name = "ion"
    trains = False

    def claims(self, moltype, mapping) -> bool:
        return identify_ion(moltype) is not None

    def layout(self, block, mapping, start: int, source: str) -> CGBlock:
        entry = identify_ion(block.moltype)
        return CGBlock(block, entry["cg"], [entry["cg"]], 1, block.count, start, self.name, 1, np.ones((1, 1)),
                       info={"min_water_o": entry["min_water_o"], "element": entry["element"],
                             "cg_names": entry["cg_names"]})

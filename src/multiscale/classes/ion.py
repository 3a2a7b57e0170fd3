"""Monatomic ions (Na+, Cl-, K+, Ca2+, Mg2+ ...) recognised from a data table, no mapping file.

Default: one Martini 3 ion bead <-> one AA ion (the bead sits on the ion); the table
(``data/classes/ions.yaml``, extendable by a user data folder) names the AA spellings of amber
(NA, CL, K, C0...) and CHARMM (SOD, CLA, POT, CAL) and the Martini 3 moleculetype.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from ..errors import MultiscaleError
from .base import CGBlock, MoleculeClass


@cache
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
            out[str(key)]["shell_o"] = float(v.get("shell_o", out[str(key)]["min_water_o"] + 0.04))
            out[str(key)]["shell_n"] = float(v.get("shell_n", 6))
        except (KeyError, TypeError, ValueError) as e:
            raise MultiscaleError(f"{path}: ion {key}: needs element, charge, aa_names, cg ({e})") from e
    return out


def ion_table() -> dict:
    """{ion key: {element, charge, aa_names, cg, cg_names, min_water_o, shell_o, shell_n}} from the package data
    (and user data folders, which override entries of the same key)."""
    table = {}
    from ..paths import find_all_data

    for p in reversed(find_all_data("classes", "ions.yaml")):  # package first, user folders over it
        table.update(_table_from(str(p)))
    return table


def cg_ion_keys() -> dict[str, str]:
    """{Martini name a CG structure/topology may use (upper case, ``cg_names``): ion key} of :func:`ion_table`."""
    return {name: key for key, entry in ion_table().items() for name in entry["cg_names"]}


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

    def layout(self, block, mapping, start: int, source: str, topology=None) -> CGBlock:
        entry = identify_ion(block.moltype)
        return CGBlock(block, entry["cg"], [entry["cg"]], 1, block.count, start, self.name, 1, np.ones((1, 1)),
                       info={"min_water_o": entry["min_water_o"], "shell_o": entry["shell_o"],
                             "shell_n": entry["shell_n"], "element": entry["element"],
                             "cg_names": entry["cg_names"], "charge": entry["charge"],
                             "waters": int(getattr(getattr(mapping, "ions", None), "waters_per_ion", 0))})


def hydration_waters(topology, mapping) -> int:
    """Water molecules that go into ion beads: ``ions.waters_per_ion`` x the number of ions."""
    k = int(getattr(getattr(mapping, "ions", None), "waters_per_ion", 0))
    if not k:
        return 0
    return k * sum(b.count for b in topology.blocks if identify_ion(b.moltype) is not None)


def hydration_shells(ions: np.ndarray, oxygens: np.ndarray, box, k: int) -> np.ndarray:
    """The k nearest waters of each ion, each water used once (closest pairs first).

    ions (I, 3), oxygens (W, 3) nm, one frame; box (3,) or (3, 3).  Returns (I, k) water indices.
    """
    from ..neighbours import PeriodicTree

    n_ion = len(ions)
    if k * n_ion > len(oxygens):
        raise MultiscaleError(f"{n_ion} ions x {k} waters_per_ion need {k * n_ion} waters; the system has {len(oxygens)}")
    r = 0.45
    while True:
        tree = PeriodicTree(oxygens, box, r)
        hits = tree.query_ball_point(ions, r)
        if min(len(h) for h in hits) >= 2 * k or r >= 0.45 * 4:
            break
        r *= 1.5
    ii = np.repeat(np.arange(n_ion), [len(h) for h in hits])
    ww = np.concatenate(hits)
    from ..geometry import minimum_image

    d = np.linalg.norm(minimum_image(oxygens[ww] - ions[ii], box), axis=1)
    out = np.full((n_ion, k), -1, dtype=np.int64)
    filled = np.zeros(n_ion, dtype=np.int64)
    used = np.zeros(len(oxygens), bool)
    for t in np.argsort(d, kind="stable"):  # few ions: a loop over (ion, water) pairs in reach
        i, w = ii[t], ww[t]
        if filled[i] < k and not used[w]:
            out[i, filled[i]] = w
            filled[i] += 1
            used[w] = True
    if np.any(filled < k):
        raise MultiscaleError(f"ion(s) {np.flatnonzero(filled < k)[:5].tolist()} have fewer than {k} free waters within "
                              f"{r:.2f} nm: lower ions.waters_per_ion")
    return out


def _shell_directions(k: int) -> np.ndarray:
    """k unit vectors spread over the sphere (tetrahedron, octahedron, else a Fibonacci lattice)."""
    if k == 4:
        v = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
    elif k == 6:
        v = np.vstack([np.eye(3), -np.eye(3)])
    else:
        i = np.arange(k) + 0.5
        phi = np.arccos(1 - 2 * i / k)
        theta = np.pi * (1 + 5 ** 0.5) * i
        v = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def place_hydrated(beads: np.ndarray, ion_mass: np.ndarray, charge: np.ndarray, min_water_o: np.ndarray,
                   water_masses: np.ndarray, k: int, rng: np.random.Generator,
                   r_oh: float = 0.09572, hoh: float = np.deg2rad(104.52)) -> tuple[np.ndarray, np.ndarray]:
    """Hydrated ions from their beads (``ions.waters_per_ion`` = k).

    beads (I, 3) nm = centre of mass of ion + k waters; per ion: mass (I,), charge (I,) e,
    min_water_o (I,) nm.  Waters sit on a randomly rotated shell at min_water_o + 0.04 nm, oxygen
    towards cations (hydrogens pointing away), one O-H towards anions.  Returns ions (I, 3) and
    waters (I, k, 3, 3) in (O, H, H) order, shifted so the centre of mass is the bead exactly.
    """
    from scipy.spatial.transform import Rotation

    beads = np.asarray(beads, np.float64)
    n = len(beads)
    rot = Rotation.random(n, random_state=rng).as_matrix() if n else np.zeros((0, 3, 3))  # (I, 3, 3)
    u = np.einsum("ijk,sk->isj", rot, _shell_directions(k))  # (I, k, 3) radial unit vectors
    r = (np.asarray(min_water_o, float) + 0.04)[:, None, None]
    o = u * r  # oxygens relative to the ion
    # a unit vector perpendicular to each radial direction (in-plane axis of the water)
    ref = np.where(np.abs(u[..., :1]) < 0.9, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    perp = np.cross(u, ref)
    perp /= np.linalg.norm(perp, axis=-1, keepdims=True)
    half = hoh / 2
    cation = (np.asarray(charge, float) > 0)[:, None, None]
    # cation: bisector along +u (H away from the ion); anion: H1 along -u (pointing at the ion)
    h1_c = o + r_oh * (np.cos(half) * u + np.sin(half) * perp)
    h2_c = o + r_oh * (np.cos(half) * u - np.sin(half) * perp)
    h1_a = o - r_oh * u
    h2_a = o + r_oh * (-np.cos(hoh) * u + np.sin(hoh) * perp)
    h1 = np.where(cation, h1_c, h1_a)
    h2 = np.where(cation, h2_c, h2_a)
    waters = np.stack([o, h1, h2], axis=2)  # (I, k, 3, 3) relative to the ion
    wm = np.asarray(water_masses, float)
    m_ion = np.asarray(ion_mass, float)
    com = np.einsum("a,iwak->ik", wm, waters) / (m_ion + k * wm.sum())[:, None]  # ion at the origin
    ion = beads - com  # ion at the origin of its shell; shift so the COM is the bead
    return ion, waters + ion[:, None, None, :]

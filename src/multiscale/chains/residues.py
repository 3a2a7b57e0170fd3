"""Residue bookkeeping of an amino-acid chain for the residue-wise model.

A chain moleculetype is cut into residues (its ``residues`` numbers, else residue-name runs).
Each residue has a *kind*: its residue name without a terminal prefix (``NALA`` -> ``ALA``;
protonation variants such as ``HID``/``HSP``/``LYN`` stay distinct, they are other chemistry)
and the atom names of its **core**: the residue as it sits inside a chain.  Terminal atoms are
folded onto the core (the first of ``H1 H2 H3``/``HT1 HT2 HT3`` plays the amide hydrogen, named
as the chain names it: ``H`` in amber, ``HN`` in CHARMM; ``OC1``/``OT1`` plays ``O``) and the
remaining terminal atoms (``H2 H3``, ``OC2``, Pro's ``HN1 HN2``...) are
*extras*, placed by fixed geometry (:func:`place_extras`).  So one density per kind covers the
residue at the N terminus, inside the chain and at the C terminus.

Lengths nm.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import MultiscaleError

#: N-terminal hydrogens (amber, CHARMM) and C-terminal oxygens, in order; the first is the core's
N_TERM_H = (("H1", "H2", "H3"), ("HT1", "HT2", "HT3"), ("HN1", "HN2"))
C_TERM_O = (("OC1", "OC2"), ("OT1", "OT2"))
#: Canonical amino acids (one-hot position in the backbone features; anything else is "other").
CANONICAL = ("ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU", "LYS", "MET", "PHE",
             "PRO", "SER", "THR", "TRP", "TYR", "VAL")


@lru_cache(maxsize=1)
def _aliases() -> dict:
    """Protonation variants -> canonical amino acid (``aliases`` of data/classes/protein_torsions.yaml,
    the table ``multiscale evaluate`` folds variants with)."""
    import yaml

    from ..paths import find_data

    return dict(yaml.safe_load(find_data("classes", "protein_torsions.yaml").read_text()).get("aliases", {}))

N_H_BOND, N_H_ANGLE = 0.101, np.deg2rad(109.5)  # NH3+ geometry (amber/CHARMM equilibrium values)
C_O_BOND = 0.125


def kind_name(resname: str, known) -> str:
    """The residue's kind name: ``resname`` without an N/C terminal prefix when that gives a known name."""
    r = str(resname).upper()
    if r not in known and len(r) == 4 and r[0] in "NC" and r[1:] in known:
        return r[1:]
    return r


def family(kind: str) -> str:
    """The canonical amino acid of a kind (``HID`` -> ``HIS``), or the kind itself."""
    return _aliases().get(kind, kind)


def one_hot(kind: str) -> np.ndarray:
    """(21,) one-hot of the kind's canonical amino acid (last entry: anything else)."""
    v = np.zeros(len(CANONICAL) + 1)
    f = family(kind)
    v[CANONICAL.index(f) if f in CANONICAL else -1] = 1.0
    return v


@dataclass
class Residue:
    """One residue of a chain moleculetype (indices local to the moleculetype).

    kind: kind name; core: (n_core,) atom indices in the kind's template order; core_names: the
    template's atom names; n/ca/c: backbone atom indices; extras: [(atom index, role)] with role
    ``nh`` (N-terminal hydrogen) or ``oc`` (C-terminal oxygen); beads: bead indices of the residue
    (BB first, then side-chain beads) in the chain mapping.
    """

    kind: str
    core: np.ndarray
    core_names: tuple
    n: int
    ca: int
    c: int
    extras: list
    beads: np.ndarray


def _spans(mt) -> list[tuple[int, int]]:
    keys = list(mt.residues) if mt.residues is not None else list(mt.resnames)
    spans, start = [], 0
    for i in range(1, mt.n_atoms + 1):
        if i == mt.n_atoms or keys[i] != keys[i - 1]:
            spans.append((start, i))
            start = i
    return spans


def _core_and_extras(names: list[str], amide: str = "H") -> tuple[dict, list]:
    """{core name: position in the residue} and [(position, role)] for one residue's atom names;
    ``amide``: the chain's name of the amide hydrogen (``H`` amber, ``HN`` CHARMM)."""
    core = {nm: k for k, nm in enumerate(names)}
    extras = []
    for trio in N_TERM_H:
        have = [t for t in trio if t in core]
        if have:
            first = core.pop(have[0])
            if len(have) == 3:  # NH3+: the first one plays the amide H; Pro's NH2+ has no amide H
                core[amide] = first
            else:
                extras.append((first, "nh"))
            for t in have[1:]:
                extras.append((core.pop(t), "nh"))
    for pair in C_TERM_O:
        if pair[0] in core and pair[1] in core:
            core["O"] = core.pop(pair[0])
            extras.append((core.pop(pair[1]), "oc"))
    return core, extras


def chain_residues(moltype, chain_mapping, known) -> list[Residue]:
    """The residues of a chain moleculetype with their kinds, core atoms and beads.

    known: set of amino-acid residue names (:func:`multiscale.classes.chain.amino_acid_names`)."""
    spans = _spans(moltype)
    bead_res = np.asarray(chain_mapping.bead_residues)
    names = list(moltype.atom_names)
    amide = "HN" if chain_mapping.from_ff == "charmm" else "H"  # the naming vermouth maps the chain with
    out = []
    for r, (s, e) in enumerate(spans):
        kind = kind_name(moltype.resnames[s], known)
        core, extras = _core_and_extras(names[s:e], amide)
        missing = [a for a in ("N", "CA", "C") if a not in core]
        if missing:
            raise MultiscaleError(f"moleculetype {moltype.name}: residue {r + 1} ({moltype.resnames[s]}) has no backbone "
                                  f"atom(s) {', '.join(missing)}: the chain model needs N, CA and C in every residue")
        beads = np.flatnonzero(bead_res == r)
        if not len(beads):
            raise MultiscaleError(f"moleculetype {moltype.name}: residue {r + 1} ({moltype.resnames[s]}) has no Martini bead")
        order = sorted(core, key=lambda nm: core[nm])
        out.append(Residue(kind, np.array([s + core[nm] for nm in order]), tuple(order), s + core["N"], s + core["CA"],
                           s + core["C"], [(s + p, role) for p, role in extras], beads))
    if len(out) < 3:
        raise MultiscaleError(f"moleculetype {moltype.name} has {len(out)} residue(s): the chain model needs at least 3 "
                              "(shorter peptides: map them as small molecules with a .map file)")
    return out


def template_bonds(moltype, res: Residue) -> np.ndarray:
    """Bonds among the residue's core atoms, in template positions (nb, 2)."""
    pos = {int(a): k for k, a in enumerate(res.core)}
    b = np.asarray(moltype.bonds, int).reshape(-1, 2)
    keep = [(pos[i], pos[j]) for i, j in b.tolist() if i in pos and j in pos]
    return np.array(keep, int).reshape(-1, 2)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True).clip(1e-9)


def place_extras(x: np.ndarray, residues: list[Residue], moltype, adj: list | None = None) -> None:
    """Terminal extras in place, x (C, n_atoms, 3) nm (C copies of the moleculetype); ``adj``: the
    moleculetype's bond adjacency (:func:`multiscale.graph.adjacency`) when the caller has it.

    N-terminal NH3+: the other two hydrogens at +-120 deg about the CA-N axis from the core's
    amide H; Pro's NH2+: both hydrogens tetrahedral on N (about the bisector of CA-N-CD).
    C-terminal COO-: the second oxygen trigonal-planar on C, opposite the mean of CA and O."""
    residues = [r for r in residues if r.extras]  # the termini
    if residues and adj is None:
        from ..graph import adjacency

        adj = adjacency(moltype.n_atoms, moltype.bonds)
    for res in residues:
        nh = [a for a, role in res.extras if role == "nh"]
        oc = [a for a, role in res.extras if role == "oc"]
        if nh:
            n, ca = x[:, res.n], x[:, res.ca]
            heavy_nb = [a for a in adj[res.n] if moltype.elements[a] != "H"]
            if len(heavy_nb) >= 2:  # Pro: N bonded to CA and CD
                a1, a2 = _unit(x[:, heavy_nb[0]] - n), _unit(x[:, heavy_nb[1]] - n)
                bis, perp = _unit(-(a1 + a2)), _unit(np.cross(a1, a2))
                half = N_H_ANGLE / 2
                for k, a in enumerate(nh[:2]):
                    x[:, a] = n + N_H_BOND * (np.cos(half) * bis + (1 if k == 0 else -1) * np.sin(half) * perp)
            else:
                amide = [p for p, nm in zip(res.core, res.core_names) if nm in ("H", "HN")]
                h1 = x[:, amide[0]] if amide else n + N_H_BOND * _unit(n - ca)
                axis = _unit(n - ca)
                v = h1 - n
                for k, a in enumerate(nh):
                    t = (2 * np.pi / 3) * (k + 1)
                    # Rodrigues rotation of v about axis by t
                    rot = (v * np.cos(t) + np.cross(axis, v) * np.sin(t)
                           + axis * (axis * v).sum(-1, keepdims=True) * (1 - np.cos(t)))
                    x[:, a] = n + rot
        if oc:
            c, ca = x[:, res.c], x[:, res.ca]
            o = [p for p, nm in zip(res.core, res.core_names) if nm == "O"]
            d = _unit(-(_unit(x[:, o[0]] - c) + _unit(ca - c)))
            x[:, oc[0]] = c + C_O_BOND * d

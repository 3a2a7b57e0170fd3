"""Match a candidate's atoms to the topology's atom order (molecule copy + atom name).

Backmapping tools write their own atom order and sometimes their own names.  Atoms are matched
residue by residue: residues are split on a change of residue number or name, or when an atom
name repeats; the k-th candidate residue with a given residue name (after folding common
aliases such as HOH/TIP3/SOL -> water, SOD -> NA, CLA -> CL, HSD/HSE -> HIS) is paired with the
k-th topology residue of that name, and inside a residue atoms are paired by name (then by a
small alias table: water O/OW/OH2, H1/HW1, H2/HW2).  Topology atoms without a partner are
*missing* (their positions become NaN and every term touching them is skipped); candidate atoms
without a partner are *extra* (ignored).  Both are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..coarse_grain import cg_layout
from ..errors import MultiscaleError

__all__ = ["AtomMatch", "match_atoms", "residue_spans"]

_RES_ALIASES = {
    **{k: "water" for k in ("SOL", "WAT", "HOH", "TIP3", "TP3", "H2O", "TIP3P", "T3P", "SPC", "TIP", "W")},
    **{k: "NA" for k in ("NA", "SOD", "NA+", "NAP")},
    **{k: "CL" for k in ("CL", "CLA", "CL-", "CIM")},
    **{k: "K" for k in ("K", "POT", "K+")},
    **{k: "HIS" for k in ("HIS", "HSD", "HSE", "HSP", "HID", "HIE", "HIP", "HISD", "HISE", "HISH")},
    **{k: "CYS" for k in ("CYS", "CYX", "CYM")},
}
_ATOM_ALIASES = {"OW": "O", "OH2": "O", "O": "O", "HW1": "H1", "H1": "H1", "HW2": "H2", "H2": "H2"}
#: below this fraction of matched topology atoms the input is taken to be a naming mismatch
MIN_MATCHED_FRACTION = 0.5


def _res_key(name: str) -> str:
    n = str(name).strip().upper()
    return _RES_ALIASES.get(n, n)


def residue_spans(names, resnames, resids=None) -> list[tuple[int, int, str]]:
    """Split an atom list into residues: (start, stop, resname) half-open spans.

    A residue ends when the residue number or name changes, or when an atom name repeats.
    """
    names = [str(n) for n in names]
    resnames = [str(r) for r in resnames]
    n = len(names)
    spans, start, seen = [], 0, set()
    for i in range(n):
        new = i > start and (
            resnames[i] != resnames[i - 1]
            or (resids is not None and resids[i] != resids[i - 1])
            or names[i] in seen
        )
        if new:
            spans.append((start, i, resnames[start]))
            start, seen = i, set()
        seen.add(names[i])
    if n:
        spans.append((start, n, resnames[start]))
    return spans


@dataclass
class AtomMatch:
    """index[i] = candidate atom for topology atom i, or -1 (missing)."""

    index: np.ndarray
    n_candidate: int
    missing: list[str] = field(default_factory=list)   # "resname resnum:atom" labels (first few)
    extra: list[str] = field(default_factory=list)
    n_missing: int = 0
    n_extra: int = 0

    @property
    def identity(self) -> bool:
        return self.n_missing == 0 and len(self.index) == self.n_candidate and bool(np.all(self.index == np.arange(len(self.index))))

    def apply(self, positions: np.ndarray) -> np.ndarray:
        """Candidate positions (F, n_candidate, 3) -> topology order (F, n_topology, 3), NaN where missing."""
        pos = np.asarray(positions, dtype=np.float64)
        if self.identity:
            return pos.copy()
        out = pos[:, np.maximum(self.index, 0)]
        out[:, self.index < 0] = np.nan
        return out

    def to_dict(self) -> dict:
        return {"missing": self.n_missing, "extra": self.n_extra,
                "missing_examples": self.missing[:10], "extra_examples": self.extra[:10]}


def match_atoms(topology, names, resnames, resids=None, label: str = "candidate") -> AtomMatch:
    """Pair the candidate's atoms (names/resnames/resids arrays) with the topology's atoms."""
    names = np.asarray([str(n).strip() for n in names])
    resnames = np.asarray([str(r).strip() for r in resnames])
    tnames = np.asarray(topology.per_atom("atom_names")).astype(str)
    tres = np.asarray(topology.per_atom("resnames")).astype(str)
    n_top = len(tnames)
    if len(names) == n_top and np.array_equal(names, tnames):
        return AtomMatch(index=np.arange(n_top), n_candidate=len(names))

    # topology residues, in order, per molecule copy
    tspans = []
    for b in topology.blocks:
        mt = b.moltype
        local = residue_spans(mt.atom_names, mt.resnames)
        for c in range(b.count):
            off = b.start + c * mt.n_atoms
            tspans += [(s + off, e + off, r) for s, e, r in local]
    cspans = residue_spans(names, resnames, resids)
    by_key: dict[str, list[tuple[int, int, str]]] = {}
    for sp in cspans:
        by_key.setdefault(_res_key(sp[2]), []).append(sp)
    used = {k: 0 for k in by_key}
    index = np.full(n_top, -1, dtype=int)
    cand_used = np.zeros(len(names), bool)
    cache: dict[tuple, np.ndarray] = {}
    for ts, te, tr in tspans:
        key = _res_key(tr)
        lst = by_key.get(key)
        if not lst or used[key] >= len(lst):
            continue
        cs, ce, _ = lst[used[key]]
        used[key] += 1
        tn = tuple(tnames[ts:te])
        cn = tuple(names[cs:ce])
        local = cache.get((tn, cn))
        if local is None:
            pos = {n: i for i, n in enumerate(cn)}
            alias = {}
            for i, n in enumerate(cn):
                alias.setdefault(_ATOM_ALIASES.get(n.upper(), n.upper()), i)
            local = np.array([pos.get(n, alias.get(_ATOM_ALIASES.get(n.upper(), n.upper()), -1)) for n in tn], dtype=int)
            if len(tn) == 1 and len(cn) == 1:
                local[:] = 0  # single-atom residues (ions): the name may differ (NA/SOD)
            cache[(tn, cn)] = local
        ok = local >= 0
        index[ts:te][ok] = cs + local[ok]
        cand_used[cs + local[ok]] = True

    tresid = topology.resids()
    missing_idx = np.flatnonzero(index < 0)
    extra_idx = np.flatnonzero(~cand_used)
    cres = np.asarray(resids) if resids is not None else np.zeros(len(names), int)
    match = AtomMatch(
        index=index, n_candidate=len(names),
        missing=[f"{tres[i]}{tresid[i]}:{tnames[i]}" for i in missing_idx[:10]],
        extra=[f"{resnames[i]}{cres[i]}:{names[i]}" for i in extra_idx[:10]],
        n_missing=int(len(missing_idx)), n_extra=int(len(extra_idx)),
    )
    matched = 1.0 - match.n_missing / max(n_top, 1)
    if matched < MIN_MATCHED_FRACTION:
        raise MultiscaleError(
            f"{label}: only {n_top - match.n_missing}/{n_top} topology atoms matched by residue and atom name "
            f"(missing e.g. {', '.join(match.missing[:3]) or '-'}; unmatched {label} atoms e.g. "
            f"{', '.join(match.extra[:3]) or '-'}): use the topology's residue/atom names or a topology of the same system"
        )
    return match


@dataclass
class CGBlockMatch:
    """The CG beads belonging to one AA block.

    beads: (count, n_beads) global bead indices into the CG frame (water: n_beads = 1 and
    count = AA waters / per_bead); matrix: (n_beads, n_atoms) mapping weights (None for water).
    """

    block: object
    kind: str
    beads: np.ndarray
    matrix: np.ndarray | None
    per_bead: int = 1
    bead_names: tuple = ()

    @property
    def is_water(self) -> bool:
        return self.kind == "water"


def match_cg(topology, mapping, names, resnames, resids=None, label: str = "CG input") -> list[CGBlockMatch]:
    """Locate each AA block's beads in a CG structure, by CG residue name, in order.

    For each AA block (in topology order) the next ``count`` unused CG residues whose name is the
    mapping's CG name (or the AA moleculetype/residue name; water: the water mapping's CG
    moleculetype or bead name) are taken; each must hold the mapping's beads.  An amino-acid
    chain (martinize2 writes one CG residue per amino acid) takes the next unused residues in file
    order until it has its beads.  Every CG bead must be used.  Raises MultiscaleError naming the
    first inconsistency.
    """
    names = [str(n).strip() for n in names]
    resnames = [str(r).strip() for r in resnames]
    spans = residue_spans(names, resnames, resids)
    groups: dict[str, list[int]] = {}
    for i, sp in enumerate(spans):
        groups.setdefault(sp[2], []).append(i)
    taken: set[int] = set()
    out = []
    for blk in cg_layout(topology, mapping):  # one molecule class per block (multiscale.classes)
        if blk.kind == "chain":
            idx = _chain_beads(blk, spans, taken, label)
        else:
            idx = _named_beads(blk, mapping, spans, groups, taken, label)
        out.append(CGBlockMatch(block=blk.aa_block, kind=blk.kind, beads=idx, matrix=blk.matrix, per_bead=blk.per_bead,
                                bead_names=tuple(blk.bead_names)))
    n_used = sum(spans[i][1] - spans[i][0] for i in taken)
    if n_used != len(names):
        left: dict[str, int] = {}
        for i, sp in enumerate(spans):
            if i not in taken:
                left[sp[2]] = left.get(sp[2], 0) + 1
        raise MultiscaleError(
            f"{label} has {len(names)} beads but the topology and mapping account for {n_used} "
            f"(unused CG residues: {', '.join(f'{k} x{v}' for k, v in left.items())}): use the CG structure of the same system")
    return out


def _chain_beads(blk, spans, taken: set, label: str) -> np.ndarray:
    """(count, n_beads) bead indices of an amino-acid chain block: consecutive unused residues."""
    idx = np.full((blk.count, blk.n_beads), -1, dtype=int)
    i = 0
    for c in range(blk.count):
        while i < len(spans) and i in taken:
            i += 1
        acc: list[int] = []
        while len(acc) < blk.n_beads and i < len(spans) and i not in taken:
            acc.extend(range(spans[i][0], spans[i][1]))
            taken.add(i)
            i += 1
        if len(acc) != blk.n_beads:
            raise MultiscaleError(f"{label}: chain {blk.aa_block.moltype.name} copy {c + 1} needs {blk.n_beads} beads "
                                  f"(martinize2's), the CG residues from there hold {len(acc)}: use the CG structure of the same system")
        idx[c] = acc
    return idx


def _named_beads(blk, mapping, spans, groups: dict, taken: set, label: str) -> np.ndarray:
    """(count, n_beads) bead indices of a block whose molecules are one CG residue each."""
    b, mt = blk.aa_block, blk.aa_block.moltype
    wm = mapping.water
    if blk.kind == "water":
        cand = [wm.cg, wm.bead, "W", "SOL"]
    elif blk.kind == "ion":
        if blk.info.get("waters"):
            raise MultiscaleError(f"{label}: hydrated ions (ions.waters_per_ion > 0) are not scored by evaluate yet: "
                                  f"evaluate with a mapping without 'ions:'")
        cand = [blk.cg_name, *blk.info.get("cg_names", []), mt.name, "ION"]
    else:
        mm = mapping.for_moltype(mt)
        cand = [blk.cg_name, mt.name, mt.resnames[0], mm.molecule if mm is not None else mt.name]
    free = {k: [i for i in v if i not in taken] for k, v in groups.items()}
    key = next((c for c in cand if len(free.get(c, ())) >= blk.count), None)
    if key is None:
        have = {k: len(v) for k, v in free.items() if v}
        raise MultiscaleError(
            f"{label}: needs {blk.count} residues named {cand[0]} for {b.count} {mt.name} "
            f"but has {have.get(cand[0], 0)} (CG residues left: {', '.join(f'{k} x{v}' for k, v in have.items()) or 'none'}): "
            f"use the CG structure of the same system")
    idx = np.full((blk.count, blk.n_beads), -1, dtype=int)
    for c, i in enumerate(free[key][:blk.count]):
        s, e, _ = spans[i]
        if e - s != blk.n_beads:
            raise MultiscaleError(f"{label}: residue {key} at bead {s + 1} has {e - s} beads, the mapping has {blk.n_beads} "
                                  f"({' '.join(blk.bead_names)})")
        idx[c] = np.arange(s, e)
        taken.add(i)
    return idx

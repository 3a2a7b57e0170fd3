"""The molecule-class registry: every AA molecule type belongs to exactly one class.

Classes are tried in :data:`REGISTRY` order (water, ion, amino-acid chain, small molecule with a
user mapping, lipid with a shipped mapping); the first whose
:meth:`~multiscale.classes.base.MoleculeClass.claims` accepts a molecule type owns it.
Coarse-graining (:func:`multiscale.coarse_grain.cg_layout`), the backmapping engine and
``evaluate`` dispatch on the class (the CG block's ``kind``).  A molecule type no class claims
stops the command before any work, with one line naming it and what to provide.

Adding a class: one module with a :class:`~multiscale.classes.base.MoleculeClass` subclass
(plus its data under ``data/``), registered with :func:`register`; see docs/classes.md.
"""

from __future__ import annotations

from ..errors import MultiscaleError
from .base import CGBlock, MoleculeClass
from .chain import Chain, is_amino_acid_chain
from .ion import Ion, identify_ion, ion_table
from .lipid import Lipid, lipid_mapping
from .smallmol import SmallMolecule, residue_spans
from .water import Water, is_three_site_water

__all__ = ["CGBlock", "MoleculeClass", "REGISTRY", "register", "get", "classify", "identify_ion", "ion_table",
           "is_three_site_water", "is_amino_acid_chain", "residue_spans", "lipid_mapping", "Water", "Ion", "Chain",
           "SmallMolecule", "Lipid"]

#: Registered classes in the order they are tried.
REGISTRY: list[MoleculeClass] = [Water(), Ion(), Chain(), SmallMolecule(), Lipid()]


def register(cls: MoleculeClass, before: str | None = None) -> None:
    """Add a class instance to the registry (before the class named ``before``, else last)."""
    if any(c.name == cls.name for c in REGISTRY):
        raise ValueError(f"a molecule class named {cls.name!r} is already registered")
    names = [c.name for c in REGISTRY]
    REGISTRY.insert(names.index(before) if before in names else len(REGISTRY), cls)


def get(name: str) -> MoleculeClass:
    """The registered class called ``name``."""
    for c in REGISTRY:
        if c.name == name:
            return c
    raise KeyError(name)


def classify(moltype, mapping, source: str = "the topology") -> MoleculeClass:
    """The class that owns ``moltype``; one-line MultiscaleError when none does."""
    for c in REGISTRY:
        if c.claims(moltype, mapping):
            return c
    spans = residue_spans(moltype)
    res = ", ".join(dict.fromkeys(r for r, _, _ in spans))
    kinds = ", ".join(c.name for c in REGISTRY)
    where = ", ".join(getattr(mapping, "sources", [])) or "the mapping"
    raise MultiscaleError(
        f"moleculetype {moltype.name} of {source} ({moltype.n_atoms} atoms, residue(s) {res}) has no mapping in {where} "
        f"and belongs to no molecule class ({kinds}): add a [ molecule ] {moltype.name} (or {spans[0][0]}) .map file "
        f"(--mapping / system.mappings)")

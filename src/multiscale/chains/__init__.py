"""Polymer chains (proteins): martinize2/vermouth-based CG side.

:mod:`.martinize` builds martinize2's exact bead weights for an AA protein and coarse-grains
frames with them; :mod:`.topology` calls the martinize2 CLI once for the Martini 3 topology.
A chain molecule class for :mod:`multiscale.classes` plugs in on top of these.
"""

from .martinize import (
           ChainMapping,
           chain_mapping_from_moltype,
           chain_mapping_from_pdb,
           guess_source_ff,
)
from .topology import MartiniTopology, martini_topology, martinize2_executable

__all__ = [
           "ChainMapping",
           "MartiniTopology",
           "chain_mapping_from_moltype",
           "chain_mapping_from_pdb",
           "guess_source_ff",
           "martini_topology",
           "martinize2_executable",
]

"""Clash search of the engine for any box: (3,) edge lengths or (3, 3) box vectors.

Orthorhombic boxes go to :func:`multiscale.backmap.certify.find_clashes` unchanged.
"""

from __future__ import annotations

import numpy as np

from ..geometry import box_lengths, is_orthorhombic

__all__ = ["find_clashes"]


def find_clashes(x: np.ndarray, box, molecule: np.ndarray, local: np.ndarray, kind: np.ndarray,
                 exclusions: list, inter: float = 0.08, intra: float = 0.10, subset=None):
    """Clashing atom pairs (inter (P, 2), intra (Q, 2)) of one frame x (N, 3) nm; see
    :func:`multiscale.backmap.certify.find_clashes` for the arguments."""
    from .certify import find_clashes as _orthorhombic

    if is_orthorhombic(box):
        return _orthorhombic(x, box_lengths(box), molecule, local, kind, exclusions, inter, intra, subset=subset)
    raise NotImplementedError("triclinic")

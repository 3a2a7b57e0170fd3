"""Constants and tuning parameters of CG -> AA water placement (lengths nm, masses amu)."""

from __future__ import annotations

import numpy as np

O_MASS = 15.9994
H_MASS = 1.008
#: Masses (amu) of the 12 atoms of one bead, order (water, atom) = O, H1, H2 per water.
CLUSTER_MASSES = np.tile(np.array([O_MASS, H_MASS, H_MASS]), 4)
MIN_DIST_OO = 0.17
MIN_DIST_OTHERS = 0.15
MIN_DIST_ATOMS = 0.085
#: Clusters whose farthest oxygen is more than this from the COM are dropped by from_frames.
MAX_CLUSTER_RADIUS = 0.40
DEFAULT_BANK_FILE = "water_clusters_tip3p.npz"
_FORMAT = "multiscale.WaterBank/1"


#: threads for the contact search (at most; capped by the CPUs this process may use)
_MAX_THREADS = 4
#: target points per cell of the contact grid (sets the cell size of sparse grids; at water
#: density the cells are the smallest allowed: 2r x 2r x r)
_CELL_OCCUPANCY = 0.5
#: query points per work item of the contact search (bounds temporaries, feeds the threads)
_CHUNK = 1 << 15
#: re-drawn candidates per contact query at least (several slots at once when few beads
#: are left: fewer, larger queries)
_BATCH = 4096
#: beads are processed in the order of cubic cells of this many O-O cut-offs (cache locality
#: of the contact search: 1M beads 6.3 -> 5.2 s CPU against 1 nm cells)
_BEAD_CELL = 4.0

#: contact stage (:class:`~.contacts.ContactSolver`): fails[molecule] counts its failed rounds; at
#: 0 it is spun about its own C2 axis (O, H-H midpoint and centre of mass fixed) and, if no
#: spin clears it, turned freely about its centre of mass; from _TURN_AFTER on only turned;
#: from _SHIFT_AFTER on shifted (it moves, its 3 cluster-mates move back by a third: the
#: bead's centre of mass is kept); from _SCRAMBLE_AFTER on all 4 waters of the bead are
#: turned and moved (random zero-sum vectors, _SCRAMBLE_SIGMA nm per coordinate)
_TURN_AFTER = 1
_SHIFT_AFTER = 2
_SCRAMBLE_AFTER = 4
_SCRAMBLE_SIGMA = 0.04
#: spin angles, in this order (degrees; pi swaps the two H: 90 moves them furthest)
_SPIN_FIRST = (90.0, 45.0, 135.0, 67.5, 112.5, 22.5, 157.5, 33.75, 146.25, 56.25, 123.75, 78.75,
               101.25, 11.25, 168.75)
#: length of a shift (nm); also bounds every move of a scramble
_SHIFT_RANGE = (0.02, 0.12)
#: shift candidates per contact query at least (several slots at once when few are left)
_SHIFT_BATCH = 1024

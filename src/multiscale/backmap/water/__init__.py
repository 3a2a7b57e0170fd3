"""CG -> AA water: each Martini 3 ``W`` bead becomes 4 TIP3P molecules from a cluster bank.

The bank holds real 4-water clusters cut out of atomistic frames with the same grouping used
going AA -> CG (:func:`multiscale.water.group_waters`), stored relative to their centre of mass.
Placing a randomly chosen cluster with a uniformly random rotation at each bead reproduces the
within-cluster structure of the source liquid exactly; between clusters, overlaps are removed
by re-drawing only the offending beads (O-O test), then the atom contacts left by turning or
moving single molecules (all atoms).  Every bead position is reproduced exactly as the centre
of mass of its 12 atoms (O 15.9994, H 1.008).

Modules: :mod:`.bank` (:class:`WaterBank`: clusters, ``from_frames``, ``default``, persistence,
``place``), :mod:`.placement` (the steps of ``place``), :mod:`.beads` (bead stage),
:mod:`.shell` (ion first shells, between the two stages),
:mod:`.contacts` and :mod:`.trials` (contact stage), :mod:`.cells` (periodic cell list),
:mod:`.obstacles` (non-water atoms), :mod:`.pbc` (orthorhombic / triclinic box),
:mod:`.rotations`, :mod:`.arrays`, :mod:`.params` (constants and tuning).

Boxes: (3,) orthorhombic edge lengths or (3, 3) GROMACS box vectors; triclinic cells (rhombic
dodecahedron, truncated octahedron) are handled in their rectangular "brick" form, a
fundamental domain of the lattice (:mod:`.pbc`); orthorhombic boxes keep the edge-length
arithmetic, bit for bit.

Clash criteria (module constants, overridable per call):

* :data:`MIN_DIST_OO` = 0.17 nm between oxygens of different beads: the clearance GROMACS
  itself accepts for new water (``gmx solvate``/``insert-molecules`` default ``-scale 0.57``
  x (0.152 + 0.152) nm O van der Waals radii = 0.173 nm).  Real liquid water has no O-O pair
  below ~0.24 nm (first g_OO peak 0.28 nm), but randomly oriented rigid clusters on a
  Martini-density lattice cannot all be separated that far (re-draws stall above ~0.19 nm,
  measured); 0.17 nm is reached for > 99 % of beads and leaves compressions that a short
  steepest-descent minimisation removes.
* :data:`MIN_DIST_ATOMS` = 0.085 nm between any two atoms of different water molecules (H-H,
  O-H, O-O; same bead or not), enforced by the contact stage below.  The O-O test alone let
  H come within 0.0015 nm of foreign atoms (pairs < 0.08 nm in the output: 1,138 at 10k beads,
  10,304 at 97k, 105,505 at 1M; bench below), which the backmapping engine's clash check
  (0.08 nm) then had to re-place bead by bead, and beads 0.29-0.34 nm apart could not be
  fixed that way at all.  0.085 nm keeps 0.005 nm of margin over that 0.08 nm check (a .gro
  file rounds to 0.001 nm per coordinate, < 0.002 nm per distance); each step up costs
  placement speed (97k beads, same machine state: 0.085 nm 150k beads/s, 12.4k contacts;
  0.09 nm 135k/s, 16.0k; stage off 212k/s; 0.10 nm: 28.7k contacts).
* :data:`MIN_DIST_OTHERS` = 0.15 nm between any water atom and any ``others`` atom (the
  non-water atoms, all elements).  That is ``gmx solvate``'s scaled clearance for O...H
  (0.57 x (0.152 + 0.12) = 0.155 nm), shorter than any equilibrium non-bonded contact
  (hydrogen bonds H...O/N ~0.17-0.20 nm), so waters may still hydrogen-bond to the solute.
  ``others_min_dist`` raises the clearance of a water O per atom (ions: a first shell with
  no O unphysically close, e.g. Na+ 0.20, Cl- 0.27 nm).

Placement is vectorised numpy (no per-bead Python loops).  Bead stage (:mod:`.beads`): clashes
are found with a periodic cell list in float32 (:class:`_CellGrid`: ghost copies of the
boundary cells, 2r x 2r x r cells, 4 contiguous index ranges per query point), built once on
the first draw's oxygens and merged with the re-drawn beads after each round; only re-drawn
beads are checked, and they try their candidates one at a time (a bead that found a
clash-free one stops drawing), so the work follows the number of clashes; ~0.13 % of beads
are left unresolved (O-O below 0.17 nm).

Ion first shells (:mod:`.shell`; only with ``others_shell``, e.g. the engine's ions): the
clusters of the beads within ``others_shell`` + 0.35 nm of an ion are turned about their
centres, between the two stages, so that an oxygen sits at the ion's first-shell distance
(hydrogens away from cations, one O-H at anions), up to the ion's full shell
(``others_shell_n``) and only where every clearance holds.  Heptanol + NaCl example, CG
frame of a Martini 3 run, 5 seeds: Na+ waters within 0.32 nm 1.75-2.75 -> 6.0 (AA 5.5), Cl-
within 0.38 nm 5.5-7.25 -> 6.5-7.0 (AA 7.25).  Without it nothing changes (bit for bit).

Contact stage (:mod:`.contacts`, after the bead stage; ``min_dist_atoms=0`` skips it and gives
the bead stage's output bit for bit).  Every atom of a water lies within 0.076 nm of the
midpoint P of its H and within 0.092 nm of its centre of mass (COM), so one cell list of the P
(radius 0.09 + 0.076 + 0.092 nm) yields every pair of molecules that can touch (checked atom
by atom, dense) and every molecule that can touch one turned about, or moved to, a given COM.
One molecule per contact is moved (the one whose H touches the other's O, else the one with
more contacts; greedy cover per molecule pair), rigidly:

1. spun about its own C2 axis (15 angles, 90, 45, 135 ... degrees; O, P and COM stay, so the
   O-O clearance and the bead's COM are untouched): fixes ~95 % of them;
2. else turned freely about its COM (2 x 16 random orientations; the O moves <= 0.013 nm and
   must keep ``min_dist`` from other beads' oxygens);
3. else shifted: the molecule moves by d (0.02-0.12 nm) and turns, its three cluster-mates
   move by -d/3 (the 12-atom COM stays on the bead: equal molecule masses); repeated
   failures get 4x the candidates, then all four molecules turned and moved (zero sum).

Candidates are tested against every molecule not moving in the round (and ``others``); in
round one molecules moving at once are checked against each other afterwards, later rounds
move only molecules that cannot reach each other.  A final search over every molecule that
moved (its P pairs, or its COM neighbours if turned or shifted) verifies the result; pairs
still closer, if any, are reported in ``last_stats`` (``n_contacts``/``contacts``), never
dropped.  Waters stay rigid (moved ones get their own rotation of the bank molecule's
shape), the COM of each bead stays exact (float64 round-off, 2e-14 nm at 1M beads).

Measured (``benchmarks/bench_water.py --repeat 2``, 2-CPU VM shared with other jobs, load
~1; lattice at Martini W density with 0.05 nm jitter, so some beads are 0.2-0.3 nm apart),
with the default 0.085 nm: 10,648 beads: 1,468 contacts -> 0 in 2 rounds (1,394 molecules
moved, 5 beads shifted), 73k beads/s (fixed numpy costs dominate at this size; 142k/s
without the contact stage); 97,336 beads: 13,476 -> 0 in 3 rounds, 135k beads/s (was
205k/s); 1M beads: 137,502 -> 0 in 6 rounds (131,330 moved, 760 shifted), 7.8 s, 128k
beads/s (was 203k/s), peak RSS +578 MB.  Minimum distance between atoms of different water
molecules in the output: 0.0850 nm at every size (was 0.0044, 0.0048, 0.0015 nm); with 0.09
nm the same runs gave 88-95k, 115-137k and 119-142k beads/s.
Unresolved (O-O) beads unchanged: the stage keeps the bead stage's O-O clearance.  Where the
time goes at 97k beads (CPU): cell list of the P and its pairs ~0.13 s, atom checks ~0.06 s,
rounds ~0.15 s, final check ~0.03 s; at 10k the rounds' fixed numpy costs dominate.
(History of the bead stage: 56-61k beads/s at 10k-100k, 38-42k/s at 1M, +1.7 GB, 0.75-0.8 %
unresolved before lazy candidates and the row cell list; 150-250k/s after.)

Lengths nm; coordinates ``(..., 3)``; water atom order O, H1, H2.
"""

from __future__ import annotations

from .bank import WaterBank
from .cells import _CellGrid  # noqa: F401  (tests, benchmarks)
from .params import (
    CLUSTER_MASSES,
    DEFAULT_BANK_FILE,
    H_MASS,
    MAX_CLUSTER_RADIUS,
    MIN_DIST_ATOMS,
    MIN_DIST_OO,
    MIN_DIST_OTHERS,
    O_MASS,
)
from .pbc import Box
from .rotations import random_rotations

__all__ = [
    "CLUSTER_MASSES",
    "DEFAULT_BANK_FILE",
    "H_MASS",
    "MAX_CLUSTER_RADIUS",
    "MIN_DIST_ATOMS",
    "MIN_DIST_OO",
    "MIN_DIST_OTHERS",
    "O_MASS",
    "Box",
    "WaterBank",
    "random_rotations",
]

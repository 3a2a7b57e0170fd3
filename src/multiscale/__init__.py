"""multiscale: sequential multiscale MD (Martini 3 CG <-> atomistic) with learned backmapping.

Data flow (one module, one job):
config -> gromacs stages -> coarse-grain -> backmap (features -> model -> sample -> place ->
certify) -> evaluate -> workflow/cycle.  Lengths are nm, time ps, energies kJ/mol throughout;
MDAnalysis' Angstrom is converted once, in :mod:`multiscale.io`.
"""

__version__ = "0.1.0"

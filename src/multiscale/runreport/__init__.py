"""``multiscale report``: per-cycle observables of a run folder (density, energy per molecule,
RDFs, hydrogen bonds, box, backmap certificates, stage wall times) as Markdown/HTML/JSON + PNGs.

:mod:`.observables` (vectorised geometry), :mod:`.segments` (one segment's numbers),
:mod:`.collect` (the run folder), :mod:`.figures` and :mod:`.page` (the written report).
Definitions and units: ``docs/report.md``.
"""

"""Bring your own molecule: SMILES + Martini 3 mapping -> AA/CG topologies, training data, model,
and a ready CG <-> AA cycle (``multiscale molecule``; see docs/molecule.md).

Modules, one job each:

* :mod:`.itp`      -- read/write the few GROMACS .itp sections a small molecule needs;
* :mod:`.names`    -- atom names matched to a mapping by graph isomorphism of the bond graphs;
* :mod:`.library`  -- maintained model libraries: vermouth's CHARMM small-molecule graphs,
  Martini 3 small-molecule models and martini3001 mapping files;
* :mod:`.aa`       -- GAFF2/AM1-BCC topologies from SMILES with acpype (or the user's .itp);
* :mod:`.prepare`  -- the pre-flight: every input checked and every file of the system written
  before any MD;
* :mod:`.build`    -- the solvated box (gmx insert-molecules + solvate, water trimmed to 4n);
* :mod:`.pipeline` -- the resumable stages (EM, NVT, NPT, production, train, report, publish) run
  by the cycle driver.
"""

"""GROMACS energetics of a candidate (first frame), the same protocol for every method.

1. single point: ``data/mdp/aa_em.mdp`` with ``nsteps = 0`` (flexible water,
   ``define = -DFLEXIBLE``): the potential energy of the structure as given (kJ/mol);
2. standard minimisation: the same template, ``nsteps`` = :data:`EM_NSTEPS`, ``emtol`` =
   :data:`EM_TOL` kJ mol-1 nm-1: number of steps, final potential energy, final Fmax, converged;
3. restrained NVT from the minimised structure: ``data/mdp/aa_nvt.mdp`` with
   ``define = -DPOSRES`` (heavy atoms restrained to the minimised positions where the topology
   provides POSRES includes), dt :data:`NVT_DT` ps, :data:`NVT_NSTEPS` steps, 300 K: *stable*
   when mdrun finishes and writes no LINCS/SETTLE warning.

Needs an AA ``.top`` (grompp) and ``gmx``; problems are raised as MultiscaleError and reported
by the caller as a note.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MultiscaleError

__all__ = ["energy_criteria", "minimise", "EM_NSTEPS", "EM_TOL", "NVT_NSTEPS", "NVT_DT"]

EM_NSTEPS = 5000
EM_TOL = 500.0
NVT_NSTEPS = 500
NVT_DT = 0.002
NVT_T = 300.0


def _need_top(top_path) -> Path:
    p = Path(top_path).resolve()
    if p.suffix != ".top":
        raise MultiscaleError(f"GROMACS energetics need a .top topology (got {p.name}); pass --topology AA.top or --no-energy")
    return p


def _write_structure(path: Path, positions, box, topology) -> Path:
    from ..io import write_frames

    x = np.asarray(positions, float)
    if not np.all(np.isfinite(x)):
        raise MultiscaleError("candidate has missing or non-finite coordinates: cannot run GROMACS on it")
    write_frames(path, x.astype(np.float32), np.asarray(box, float), topology.per_atom("atom_names"),
                 topology.per_atom("resnames"), topology.resids(), title="candidate for multiscale evaluate")
    return path


def _grompp(template: str, values: dict, structure: Path, top: Path, work: Path, name: str, settings, restraint=None) -> Path:
    """Render + grompp; a ``define`` macro the topology does not use (e.g. FLEXIBLE, POSRES) is
    dropped and grompp retried, so the same protocol applies to every topology."""
    from ..gromacs import grompp, render_mdp

    for define in (values.get("define", ""), ""):
        mdp = render_mdp(template, {**values, "define": define}, work / f"{name}.mdp")
        try:
            return grompp(mdp, structure, top, work / f"{name}.tpr", settings=settings, cwd=work, restraint=restraint)
        except MultiscaleError as e:
            if not define or "were not used in the topology" not in str(e):
                raise
    raise AssertionError("unreachable")


def _em(structure: Path, top: Path, work: Path, name: str, nsteps: int, settings, seed: int):
    from ..gromacs import em_result, mdrun

    tpr = _grompp("aa_em", {"nsteps": int(nsteps), "emtol": EM_TOL, "define": "-DFLEXIBLE"}, structure, top, work, name, settings)
    res = mdrun(tpr, work / name, settings=settings, cwd=work, checkpoint=False)
    return em_result(res.log), res


def minimise(positions, box, topology, top_path, workdir, settings=None, nsteps: int = EM_NSTEPS, log=None) -> np.ndarray:
    """The standard EM of a structure (N, 3) nm in topology order; returns the minimised (N, 3)."""
    from ..io import read_frames

    top = _need_top(top_path)
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = _write_structure(work / "start.gro", positions, box, topology)
    _, res = _em(start, top, work, "em", nsteps, settings, 0)
    return read_frames(res.gro, label="minimised structure").positions[0].astype(np.float64)


def energy_criteria(positions, box, topology, top_path, workdir, seed: int = 0, settings=None,
                    em_nsteps: int = EM_NSTEPS, nvt_nsteps: int = NVT_NSTEPS, log=None) -> dict:
    """Single-point energy, standard EM and restrained-NVT stability of one structure.

    positions (N, 3) nm in topology order, box (3,) nm.  Returns the report keys
    ``energy_single_point_kj_mol, em_steps, em_final_kj_mol, em_fmax, em_converged, nvt_stable,
    nvt_lincs_warnings, energy_note``.
    """
    from ..gromacs import count_warnings, mdrun

    top = _need_top(top_path)
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = log or (lambda m: None)
    out = {"energy_single_point_kj_mol": None, "em_steps": None, "em_final_kj_mol": None, "em_fmax": None,
           "em_converged": None, "nvt_stable": None, "nvt_lincs_warnings": None, "energy_note": ""}
    start = _write_structure(work / "candidate.gro", positions, box, topology)
    notes = []
    try:
        sp, _ = _em(start, top, work, "single_point", 0, settings, seed)
        out["energy_single_point_kj_mol"] = sp["potential_kj_mol"]
    except MultiscaleError as e:
        notes.append(f"single point failed: {e}")
    try:
        log("  EM")
        em, res = _em(start, top, work, "em", em_nsteps, settings, seed)
        out.update(em_steps=em["steps"], em_final_kj_mol=em["potential_kj_mol"], em_fmax=em["fmax"], em_converged=em["converged"])
    except MultiscaleError as e:
        notes.append(f"EM failed: {e}")
        out["nvt_stable"] = False
        out["energy_note"] = "; ".join(notes)
        return out
    try:
        log("  restrained NVT")
        tpr = _grompp("aa_nvt", {"nsteps": int(nvt_nsteps), "dt": NVT_DT, "ref_t": NVT_T, "tau_t": 0.1,
                                 "gen_seed": int(seed), "nstxout_compressed": 0, "nstenergy": 50, "nstlog": 50,
                                 "define": "-DPOSRES"}, res.gro, top, work, "nvt", settings, restraint=res.gro)
        md = mdrun(tpr, work / "nvt", settings=settings, cwd=work, checkpoint=False)
        warn = max(count_warnings(md.stdout_log, "all"), count_warnings(md.log, "all"))
        out["nvt_lincs_warnings"] = warn
        out["nvt_stable"] = bool(md.completed and warn == 0)
        if not md.completed:
            notes.append("NVT stopped early")
    except MultiscaleError as e:
        out["nvt_stable"] = False
        notes.append(f"NVT failed: {e}")
    out["energy_note"] = "; ".join(notes) or (
        f"aa_em.mdp (-DFLEXIBLE, emtol {EM_TOL:g}, max {em_nsteps} steps); aa_nvt.mdp (-DPOSRES, {nvt_nsteps} x {NVT_DT} ps, {NVT_T:g} K)")
    return out

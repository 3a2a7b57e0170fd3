"""multiscale.gromacs: mdp rendering, grompp/mdrun with real GROMACS on the shipped example.

The GROMACS tests use the shipped example heptanol (``multiscale/data/examples/heptanol``: 40 HPO
+ 700 TIP3P, 3060 atoms) for a few EM and MD steps, and a coarse-grained copy of it (40 HPO + 175 W, made here by a quick numpy mapping)
for the Martini side. They skip when `gmx` is not on PATH.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from multiscale.errors import MultiscaleError
from multiscale.gromacs import (
    GromacsSettings,
    check_gmx,
    count_warnings,
    em_result,
    final_energies,
    gromacs_error_summary,
    grompp,
    list_templates,
    mdrun,
    render_mdp,
    template_placeholders,
)
from multiscale.paths import examples_dir, find_data, mdp_template_dir, topologies_dir

EXAMPLE = examples_dir() / "heptanol"
needs_gmx = pytest.mark.skipif(shutil.which("gmx") is None, reason="gmx not on PATH")

MD_VALUES = dict(
    nsteps=10, dt=0.002, ref_t=300, tau_t=0.1, tau_p=1.0, ref_p=1.0, gen_seed=7,
    nstxout_compressed=5, nstenergy=5, nstlog=5, define="", emtol=1000.0,
)
SETTINGS = GromacsSettings(nt=2)


# ---- templates (no GROMACS needed) ------------------------------------------------------------
def test_templates_present_and_documented():
    names = set(list_templates())
    assert {"aa_em", "aa_nvt", "aa_npt", "aa_md", "martini_em", "martini_eq", "martini_md"} <= names
    for name in names:
        text = (mdp_template_dir() / f"{name}.mdp").read_text()
        header = "\n".join(l for l in text.splitlines() if l.startswith(";"))
        for key in template_placeholders(name):
            assert f";   {key} " in header, f"{name}.mdp does not document placeholder {key}"


def test_render_mdp(tmp_path):
    out = render_mdp("aa_md", dict(MD_VALUES, nsteps=500, define="-DPOSRES"), tmp_path / "md.mdp")
    text = out.read_text()
    assert "nsteps                   = 500" in text
    assert "define                   = -DPOSRES" in text
    assert "$" not in "\n".join(l for l in text.splitlines() if not l.startswith(";"))
    # dashes are accepted in keys, booleans become yes/no, a path works as template
    custom = tmp_path / "custom.mdp"
    custom.write_text("; custom\nnstxout-compressed = $nstxout_compressed\ngen-vel = $gen_vel\n")
    text = render_mdp(custom, {"nstxout-compressed": 100, "gen_vel": True}, tmp_path / "c.mdp").read_text()
    assert "nstxout-compressed = 100" in text and "gen-vel = yes" in text


def test_render_mdp_missing_key(tmp_path):
    values = dict(MD_VALUES)
    del values["ref_t"]
    with pytest.raises(MultiscaleError, match=r"aa_nvt\.mdp.*'ref_t'") as err:
        render_mdp("aa_nvt", values, tmp_path / "nvt.mdp")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "nvt.mdp").exists()
    with pytest.raises(MultiscaleError, match="unknown mdp template 'nope'"):
        render_mdp("nope", values, tmp_path / "x.mdp")


def test_missing_gmx_is_one_line_error(tmp_path):
    bad = GromacsSettings(gmx="gmx_does_not_exist")
    with pytest.raises(MultiscaleError) as err:
        check_gmx(bad)
    msg = str(err.value)
    assert "'gmx_does_not_exist' not found on PATH" in msg and "gromacs.gmx" in msg and "\n" not in msg
    with pytest.raises(MultiscaleError, match="gmx_does_not_exist"):
        grompp("a.mdp", "a.gro", "a.top", tmp_path / "a.tpr", bad)
    with pytest.raises(MultiscaleError, match="launcher 'no_such_launcher'"):
        check_gmx(GromacsSettings(launcher="no_such_launcher -n 2"), mdrun=True)


def test_settings_from_mapping():
    s = GromacsSettings.from_mapping({"gmx": "gmx_mpi", "launcher": "srun", "extra_mdrun_args": "-pin on"})
    assert s.mdrun_driver == "gmx_mpi" and s.extra_mdrun_args == ["-pin", "on"]
    with pytest.raises(MultiscaleError, match="unknown gromacs setting 'threads'"):
        GromacsSettings.from_mapping({"threads": 4})


def test_error_summary_extracts_fatal_block():
    text = (
        "ERROR 1 [file topol.top, line 12]:\n  No such moleculetype XYZ\n\n"
        "-------------------------------------------------------\n"
        "Program:     gmx grompp, version 2022.5\nSource file: src/x.cpp (line 1)\n\n"
        "Fatal error:\nThere was 1 error in input file(s)\n\n"
        "For more information and tips for troubleshooting, please check the GROMACS\n"
        "-------------------------------------------------------\n"
    )
    s = gromacs_error_summary(text)
    assert s.startswith("Fatal error: There was 1 error in input file(s)")
    assert "ERROR 1 [file topol.top, line 12]: No such moleculetype XYZ" in s


# ---- real GROMACS -----------------------------------------------------------------------------
@pytest.mark.gromacs
@needs_gmx
def test_aa_em_and_md(tmp_path):
    em_mdp = render_mdp("aa_em", dict(MD_VALUES, nsteps=5, define="-DFLEXIBLE"), tmp_path / "em.mdp")
    tpr = grompp(em_mdp, EXAMPLE / "aa.gro", EXAMPLE / "aa.top", tmp_path / "em.tpr", SETTINGS)
    assert tpr.is_file() and (tmp_path / "em.grompp.log").is_file()
    em = mdrun(tpr, "em", SETTINGS, cwd=tmp_path)
    assert em.gro.is_file() and em.edr.is_file() and em.log.is_file() and em.completed
    res = em_result(em.log)
    assert res["steps"] <= 6 and res["fmax"] > 0 and res["potential_kj_mol"] < 0
    assert res["emtol"] == 1000.0 and isinstance(res["converged"], bool)

    md_mdp = render_mdp("aa_nvt", MD_VALUES, tmp_path / "nvt.mdp")
    tpr = grompp(md_mdp, em.gro, EXAMPLE / "aa.top", tmp_path / "nvt.tpr", SETTINGS)
    md = mdrun(tpr, "nvt", SETTINGS, cwd=tmp_path)
    assert md.completed and md.xtc is not None and md.cpt is not None and not md.continued
    assert md.ns_per_day is not None and md.ns_per_day > 0
    e = final_energies(md.edr, SETTINGS)
    assert e["time_ps"] == pytest.approx(0.02)
    assert 100 < e["temperature_k"] < 600 and e["density_kg_m3"] is None
    assert count_warnings(md.log) == 0
    # nothing from GROMACS leaks into the test folder besides the named outputs
    assert not list(tmp_path.glob("#*#")) and not (tmp_path / "mdout.mdp").exists()


@pytest.mark.gromacs
@needs_gmx
def test_grompp_failure_names_log_and_fatal_error(tmp_path):
    top = tmp_path / "bad.top"
    top.write_text((EXAMPLE / "aa.top").read_text().replace("../../topologies", str(topologies_dir())).replace("SOL  700", "SOL  699"))
    mdp = render_mdp("aa_em", MD_VALUES, tmp_path / "em.mdp")
    with pytest.raises(MultiscaleError) as err:
        grompp(mdp, EXAMPLE / "aa.gro", top, tmp_path / "bad.tpr", SETTINGS)
    msg = str(err.value)
    assert "gmx grompp failed in stage 'bad'" in msg and "does not match topology" in msg
    assert str(tmp_path / "bad.grompp.log") in msg and "\n" not in msg


@pytest.mark.gromacs
@needs_gmx
def test_interrupted_mdrun_continues_from_checkpoint(tmp_path):
    mdp = render_mdp("aa_nvt", dict(MD_VALUES, nsteps=40, nstenergy=10, nstlog=10, nstxout_compressed=10), tmp_path / "nvt.mdp")
    tpr = grompp(mdp, EXAMPLE / "aa.gro", EXAMPLE / "aa.top", tmp_path / "nvt.tpr", SETTINGS)
    # -maxh of ~4 ms: mdrun stops at the next pair-search step and writes a checkpoint
    first = mdrun(tpr, "nvt", GromacsSettings(nt=2, maxh=1e-6), cwd=tmp_path)
    assert not first.completed and first.cpt is not None
    second = mdrun(tpr, "nvt", SETTINGS, cwd=tmp_path)
    assert second.continued and second.completed
    log = second.log.read_text()
    assert "Restarting from checkpoint, appending to previous log file" in log
    e = final_energies(second.edr, SETTINGS)
    assert e["time_ps"] == pytest.approx(0.08) and e["n_frames"] == 5  # 0, 10, .. 40: no duplicates
    assert second.stdout_log.read_text().count("### ") == 2  # both calls in one appended log


def _coarse_grain_example(out_gro: Path) -> tuple[int, int]:
    """Quick CG of examples/heptanol/aa.gro for this test only: HPO beads by heptanol.map (centre
    of geometry, hydrogens included); waters grouped greedily 4 by 4 into W beads."""
    lines = (EXAMPLE / "aa.gro").read_text().splitlines()
    n = int(lines[1])
    box = np.array([float(x) for x in lines[2 + n].split()[:3]])
    resid = np.array([int(l[0:5]) for l in lines[2 : 2 + n]])
    resname = [l[5:10].strip() for l in lines[2 : 2 + n]]
    name = [l[10:15].strip() for l in lines[2 : 2 + n]]
    xyz = np.array([[float(l[20 + 8 * k : 28 + 8 * k]) for k in range(3)] for l in lines[2 : 2 + n]])
    bead_of = {}
    section = None
    for l in find_data("mappings", "heptanol.map").read_text().splitlines():
        l = l.split(";")[0].strip()
        if l.startswith("["):
            section = l.strip("[] ")
        elif l and section == "atoms":
            f = l.split()
            bead_of[f[1]] = f[2]

    def cog(points):
        ref = points[0]
        d = points - ref
        d -= box * np.round(d / box)
        return (ref + d.mean(axis=0)) % box

    beads = []
    starts = np.flatnonzero(np.r_[True, resid[1:] != resid[:-1]])
    ends = np.r_[starts[1:], n]
    oxygens = []
    for s, e in zip(starts, ends):
        if resname[s] == "HPO":
            for b in ("C1", "R2"):
                idx = [i for i in range(s, e) if bead_of[name[i]] == b]
                beads.append(("HPO", b, cog(xyz[idx])))
        else:
            oxygens.append(xyz[s])
    oxy = np.array(oxygens)
    free = np.ones(len(oxy), bool)
    for i in range(len(oxy)):
        if not free[i]:
            continue
        d = oxy - oxy[i]
        d -= box * np.round(d / box)
        dist = np.where(free, np.linalg.norm(d, axis=1), np.inf)
        group = np.argsort(dist)[:4]
        free[group] = False
        beads.append(("W", "W", cog(oxy[group])))
    out = ["CG heptanol", f"{len(beads):5d}"]
    res = 0
    for k, (rn, bn, p) in enumerate(beads):
        if rn == "W" or bn == "C1":
            res += 1
        out.append(f"{res:5d}{rn:<5s}{bn:>5s}{k + 1:5d}{p[0]:8.3f}{p[1]:8.3f}{p[2]:8.3f}")
    out.append(f"{box[0]:10.5f}{box[1]:10.5f}{box[2]:10.5f}")
    out_gro.write_text("\n".join(out) + "\n")
    n_hpo = sum(1 for b in beads if b[1] == "C1")
    return n_hpo, sum(1 for b in beads if b[0] == "W")


@pytest.mark.gromacs
@needs_gmx
def test_martini_em_and_md(tmp_path):
    n_hpo, n_w = _coarse_grain_example(tmp_path / "cg.gro")
    top_text = (EXAMPLE / "cg.top").read_text()
    assert f"HPO  {n_hpo}" in top_text and f"W    {n_w}" in top_text
    values = dict(MD_VALUES, nsteps=50, dt=0.01, tau_t=1.0, tau_p=4.0, emtol=100.0)
    em_mdp = render_mdp("martini_em", values, tmp_path / "em.mdp")
    tpr = grompp(em_mdp, tmp_path / "cg.gro", EXAMPLE / "cg.top", tmp_path / "em.tpr", SETTINGS)
    em = mdrun(tpr, "em", SETTINGS, cwd=tmp_path)
    res = em_result(em.log)
    assert res["steps"] <= 51 and res["potential_kj_mol"] < 0
    eq_mdp = render_mdp("martini_eq", dict(values, nsteps=10), tmp_path / "eq.mdp")
    tpr = grompp(eq_mdp, em.gro, EXAMPLE / "cg.top", tmp_path / "eq.tpr", SETTINGS)
    eq = mdrun(tpr, "eq", SETTINGS, cwd=tmp_path)
    assert eq.completed and eq.gro.is_file()
    e = final_energies(eq.edr, SETTINGS)
    assert e["density_kg_m3"] is not None and e["temperature_k"] > 0


@pytest.mark.gromacs
@needs_gmx
def test_mdrun_with_launcher_prefix(tmp_path):
    # `env` stands in for srun/mpirun: the launcher path builds "launcher + [mdrun_gmx, mdrun, ...]"
    settings = GromacsSettings(launcher="env OMP_NUM_THREADS=1", mdrun_gmx="gmx", ntomp=1, extra_mdrun_args=["-pin", "off"])
    mdp = render_mdp("aa_em", dict(MD_VALUES, nsteps=3), tmp_path / "em.mdp")
    tpr = grompp(mdp, EXAMPLE / "aa.gro", EXAMPLE / "aa.top", tmp_path / "em.tpr", settings)
    res = mdrun(tpr, "em", settings, cwd=tmp_path)
    assert res.command[:4] == ["env", "OMP_NUM_THREADS=1", "gmx", "mdrun"]
    assert "-pin" in res.command and "off" in res.command and res.gro.is_file()
    assert em_result(res.stdout_log)["steps"] <= 4

"""The flagship example end to end: `multiscale init --example membrane_protein` writes the AA topology
from the CG system alone (pdb2gmx CHARMM36m peptide + CHARMM36 POPC), then one short CG -> AA cycle
(`start: cg`) backmaps with the shipped chain and lipid models only: no model file, no AA data, no
mapping file (lengths shortened for the test; the full 2-cycle example is run by hand)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import SHORT_CYCLE, merge_config, run_short_cycle

pytestmark = [pytest.mark.skipif(shutil.which("gmx") is None, reason="needs gmx on PATH")]
pytest.importorskip("vermouth")

SHORT = merge_config(SHORT_CYCLE, {"gromacs": {"nt": 2}})


@pytest.fixture(scope="module")
def flagship_run(tmp_path_factory, membrane_forcefields):
    pytest.importorskip("PeptideBuilder")
    d = tmp_path_factory.mktemp("membrane_protein") / "ex"
    r = subprocess.run([sys.executable, "-m", "multiscale.cli", "init", "--example", "membrane_protein", str(d)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "AA topology from the CG system: aa.top" in r.stdout
    run_short_cycle(d, SHORT, timeout=900)
    return d


def test_topology_from_the_cg_system(flagship_run):
    """aa.top: the CHARMM36m peptide (pdb2gmx on the bead sequence), the CHARMM-GUI POPC, 4 waters per W."""
    from multiscale.topology import load_topology

    top = load_topology(flagship_run / "aa.top")
    counts = {b.moltype.name: b.count for b in top.blocks}
    assert counts["Protein_chain_A"] == 1 and counts["POPC"] == 64 and counts["SOL"] == 4 * 430
    assert counts["SOD"] == 5 and counts["CLA"] == 5
    pep = top.moltypes["Protein_chain_A"]
    assert "HN" in pep.atom_names and "H3" in pep.atom_names  # CHARMM names (HN), charged N-terminus (NH3+)


def test_cycle_backmaps_with_shipped_models_only(flagship_run):
    """No model in the run: the backmap stage used the shipped ones; the peptide all trans and L, the
    lipids' centres and double bonds right, beads exact; semi-isotropic AA MD with APL and thickness."""
    d = flagship_run
    run = d / "runs"
    state = json.loads((run / "state.json").read_text())["stages"]
    assert list(state)[:4] == ["cycle_001/cg-em", "cycle_001/cg-eq", "cycle_001/cg-md", "cycle_001/backmap"]
    assert not any(k.endswith("/train") for k in state) and "model" not in state["cycle_001/backmap"]["inputs"]
    info = state["cycle_001/backmap"]["info"]
    assert info["chain_cis_nonpro_final"] == 0 and info["chain_wrong_centres_final"] == 0
    # beads exact, unless the CG MD put some where no L, trans chain reaches them (then missed, counted)
    assert info["max_cg_deviation_nm"] < (0.15 if info["chain_chemistry_first_copies"] else 1e-6)
    assert (info["chain_beads_missed"] > 0) == (info["chain_chemistry_first_copies"] > 0)
    frame = json.loads((run / "cycle_001" / "backmap" / "backmap-report.json").read_text())[0]
    popc = frame["per_moltype"]["POPC"]
    assert popc["stereo_wrong_final"] == 0 and popc["cistrans_wrong_final"] == 0
    md = state["cycle_001/aa-md"]["info"]
    assert md["lipids"] == 64 and 0.5 < md["apl_nm2"] < 0.9 and 3.0 < md["thickness_nm"] < 5.5
    assert "semiisotropic" in (run / "cycle_001" / "aa-md" / "aa-md.mdout.mdp").read_text()
    for stage in ("restrained-em", "restrained-eq", "relax", "aa-md"):
        assert state[f"cycle_001/{stage}"]["status"] == "done"
    from multiscale.evaluate.protein import protein_criteria
    from multiscale.io import read_frames
    from multiscale.topology import load_topology

    top = load_topology(d / "aa.top")
    bm = read_frames(run / "cycle_001" / "backmap" / "backmapped.gro", expected_atoms=top.n_atoms)
    crit = protein_criteria(top, np.asarray(bm.positions, np.float64), np.asarray(bm.box))
    assert crit["cis_peptides_non_pro"] == 0 and crit["d_residues"] == 0


def test_lipids_are_resampled_around_the_peptide(flagship_run):
    """The shipped CG frame backmapped as is: the lipids are redrawn away from the peptide's atoms
    too (the chain is a fixed obstacle of the lipids' clash search), so no peptide-lipid pair is left
    under the 0.08 nm bound (seed 1 left a Leu H 0.072 nm from a POPC O22 when only lipid-lipid
    pairs were searched)."""
    d = flagship_run
    for seed in (1, 2):
        r = subprocess.run([sys.executable, "-m", "multiscale.cli", "backmap", "--cg", "cg.gro", "--topology", "aa.top",
                            "--output", f"bm{seed}.gro", "--seed", str(seed), "--report", f"bm{seed}.json"],
                           cwd=d, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        rep = json.loads((d / f"bm{seed}.json").read_text())[0]
        assert rep["ok"] and rep["inter_clash_pairs_final"] == 0, r.stdout

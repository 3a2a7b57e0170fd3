"""A peptide in salt water end to end: `multiscale init --example peptide` then one short AA -> CG -> AA
cycle with the real GROMACS, the real martinize2 and the shipped chain model (lengths shortened for the
test; the full 2-cycle example is run by hand)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import SHORT_CYCLE, merge_config, run_short_cycle

pytestmark = [pytest.mark.skipif(shutil.which("gmx") is None, reason="needs gmx on PATH")]

SHORT = merge_config(SHORT_CYCLE, {"backmap": {"epochs": 3}})


def _cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "multiscale.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def _needs_shipped_model():
    pytest.importorskip("vermouth")
    from multiscale.chains.shipped import shipped_model_path

    assert shipped_model_path("amber") is not None, "the package ships multiscale/data/models/chains_amber.pt"


@pytest.fixture(scope="module")
def peptide_run(tmp_path_factory):
    _needs_shipped_model()
    d = tmp_path_factory.mktemp("peptide") / "ex"
    r = _cli("init", "--example", "peptide", str(d))
    assert r.returncode == 0, r.stderr
    run_short_cycle(d, SHORT, timeout=600)
    return d


def test_peptide_cycle(peptide_run):
    from multiscale.io import read_frames
    from multiscale.topology import load_topology

    d = peptide_run
    run = d / "runs"
    top = load_topology(d / "aa.top")
    [chain] = [b for b in top.blocks if b.moltype.name == "Protein_chain_A"]
    # martinize2 ran once; its itp is named after the AA moleculetype and every cycle's cg.top includes it
    itp = run / "martinize" / "Protein_chain_A" / "Protein_chain_A.itp"
    text = itp.read_text()
    assert re.search(r"\[ *moleculetype *\]\s*(?:;.*\n\s*)*Protein_chain_A\s", text)
    cg_top = (run / "cycle_001" / "coarse-grain" / "cg.top").read_text()
    assert '#include "../../martinize/Protein_chain_A/Protein_chain_A.itp"' in cg_top
    assert re.search(r"^Protein_chain_A\s+1$", cg_top, re.MULTILINE)
    # the chain's beads in cg.gro are martinize2's, in the itp's order (grompp accepted them in cg-em)
    cg = read_frames(run / "cycle_001" / "coarse-grain" / "cg.gro")
    from multiscale.workflow.martinize import itp_moleculetypes

    beads = itp_moleculetypes([itp])["Protein_chain_A"]
    assert len(beads) == 15 and list(cg.names[:15]) == beads  # A Y P G K E: 2 + 5 + 2 + 1 + 3 + 2
    assert list(cg.resnames[:15:14]) == ["ALA", "GLU"] and cg.n_atoms == 15 + 904 // 4 + 6
    # training fine-tuned the shipped chain model; the backmapped system has every atom, chain residues numbered
    state = json.loads((run / "state.json").read_text())["stages"]
    assert state["cycle_001/train"]["info"]["fine_tuned"] is True
    bm = read_frames(run / "cycle_001" / "backmap" / "backmapped.gro", expected_atoms=top.n_atoms)
    start = read_frames(d / "aa.gro")
    assert list(bm.names) == list(start.names)
    assert len(set(bm.resids[chain.start:chain.stop].tolist())) == 6
    frame = json.loads((run / "cycle_001" / "backmap" / "backmap-report.json").read_text())[0]
    chain_rep = next(v for v in frame["per_moltype"].values() if v.get("kind") == "chain")
    # beads exact unless the CG MD put some out of reach of an L, trans chain (then missed and counted)
    assert frame["max_cg_deviation_nm"] < (0.15 if chain_rep["chemistry_first_copies"] else 1e-6)
    assert chain_rep["wrong_centres_final"] == 0 and chain_rep["cis_nonpro_final"] == 0
    assert frame["inter_clash_pairs_final"] == 0
    for stage in ("restrained-em", "restrained-eq", "relax"):
        assert state[f"cycle_001/{stage}"]["status"] == "done"


def test_peptide_dry_run_plans_martinize_first(tmp_path):
    _needs_shipped_model()  # the train stage starts from it
    d = tmp_path / "ex"
    assert _cli("init", "--example", "peptide", str(d)).returncode == 0
    r = _cli("cycle", "--config", str(d / "sim.yaml"), "--dry-run", cwd=d)
    assert r.returncode == 0, r.stderr
    assert "mappings: none" in r.stdout and "Protein_chain_A: Martini itp by martinize2" in r.stdout
    plan = [ln.split()[0] for ln in r.stdout.splitlines() if ln.strip().startswith("cycle_0")]
    assert plan[:3] == ["cycle_001/martinize", "cycle_001/aa-em", "cycle_001/aa-eq"] and len(plan) == 1 + 2 + 10 + 9
    assert "cycle_002/train" not in plan  # fine_tune: false: the shipped chain model is fine-tuned on cycle 1 only
    assert not (d / "runs").exists()


def test_martinize_ss_is_checked_in_one_line(tmp_path):
    d = tmp_path / "ex"
    assert _cli("init", "--example", "peptide", str(d)).returncode == 0
    cfg = yaml.safe_load((d / "sim.yaml").read_text())
    cfg["system"]["martinize"]["ss"] = "coil"
    (d / "sim.yaml").write_text(yaml.safe_dump(cfg))
    r = _cli("cycle", "--config", str(d / "sim.yaml"), "--dry-run", cwd=d)
    assert r.returncode == 2 and "system.martinize.ss" in r.stderr and "DSSP letters" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_chain_defined_by_a_configured_itp_is_not_martinized(tmp_path):
    """A chain moleculetype that a configured CG itp already defines keeps that itp: no martinize stage."""
    from multiscale.config import load_config
    from multiscale.workflow.martinize import chain_moltypes

    d = tmp_path / "ex"
    assert _cli("init", "--example", "peptide", str(d)).returncode == 0
    assert list(chain_moltypes(load_config(d / "sim.yaml"))) == ["Protein_chain_A"]
    (d / "own.itp").write_text("[ moleculetype ]\n; name nrexcl\nProtein_chain_A 1\n\n[ atoms ]\n1 P2 1 ALA BB 1 0\n")
    cfg = yaml.safe_load((d / "sim.yaml").read_text())
    cfg["system"]["cg_includes"] = [str(p) for p in sorted((d / "topologies" / "martini3").glob("martini_v3.0.0*.itp"))
                                    if p.name in ("martini_v3.0.0.itp", "martini_v3.0.0_solvents_v1.itp",
                                                  "martini_v3.0.0_ions_v1.itp")] + ["own.itp"]
    (d / "sim.yaml").write_text(yaml.safe_dump(cfg))
    assert chain_moltypes(load_config(d / "sim.yaml")) == {}

"""The cycle's martinize stage with the real martinize2 on Trp-cage (an alpha helix at residues 2-8):
``ss: dssp`` (martinize2 -dssp through mdtraj) and the Go-model pass-through; bad values fail in one line."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, merge_config
from multiscale.errors import MultiscaleError

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("vermouth") is None, reason="needs vermouth (martinize2): pip install vermouth"),
    pytest.mark.skipif(shutil.which("gmx") is None, reason="needs gmx (the AA topology includes amber99sb-ildn.ff)"),
]

TRPCAGE = REPO / "datasets" / "peptides" / "trpcage"


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("example") / "ex"
    r = subprocess.run([sys.executable, "-m", "multiscale.cli", "init", "--example", "peptide", str(d)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return d


@pytest.fixture
def make_config(example, tmp_path):
    return lambda martinize: _config(example, tmp_path, martinize)


def _config(example: Path, tmp_path: Path, martinize: dict) -> Path:
    """The shipped peptide example with Trp-cage as the AA system and ``martinize`` as system.martinize."""
    d = tmp_path / "ex"
    shutil.copytree(example, d)
    cfg = yaml.safe_load((d / "sim.yaml").read_text())
    cfg = merge_config(cfg, {"system": {"aa_topology": str(TRPCAGE / "topol.top"), "aa_structure": str(TRPCAGE / "start.gro")}})
    cfg["system"]["martinize"] = martinize
    (d / "sim.yaml").write_text(yaml.safe_dump(cfg))
    return d / "sim.yaml"


@pytest.mark.skipif(importlib.util.find_spec("mdtraj") is None, reason="needs mdtraj (martinize2's DSSP): pip install mdtraj")
def test_ss_dssp_gives_the_trpcage_helix(tmp_path, make_config):
    from multiscale.config import load_config
    from multiscale.workflow.martinize import chain_moltypes, martinize_stage
    from multiscale.workflow.stages import StageContext

    cfg = load_config(make_config({"ss": "DSSP"}))  # case-insensitive
    assert cfg.system.martinize.ss == "dssp"
    names = list(chain_moltypes(cfg))
    assert names == ["Protein_chain_A"]
    st = martinize_stage(cfg, tmp_path / "run", cfg.system.aa_structure, names)
    log = tmp_path / "martinize.log"
    res = st.run(StageContext(config=cfg, root=tmp_path / "run", settings=None, seed=1, log=log))
    ss = res.info["ss"]["Protein_chain_A"]
    assert len(ss) == 20 and ss[1:8] == "HHHHHHH" and ss[-1] == "C", ss  # Trp-cage: helix 2-8, coil C terminus
    assert f"ss '{ss}' from DSSP" in log.read_text()
    itp = st.outputs["itp Protein_chain_A"].read_text().splitlines()
    assert "-dssp" in itp[0] and "-ss" not in itp[0].split() and itp[1].endswith(f"from DSSP: {ss}")


def test_go_model_is_written_by_martinize2(tmp_path):
    from multiscale.chains.topology import martini_topology
    from multiscale.workflow.martinize import itp_moleculetypes

    ss = "CHHHHHHHHHTHHHHSTTTC"
    mt = martini_topology(TRPCAGE / "start.gro", tmp_path / "go", ss=ss, go={"go-eps": 12.5}, name="trp")
    assert mt.ss == ss and [p.name for p in mt.go_itps] == ["go_atomtypes.itp", "go_nbparams.itp"]
    (name, atoms), = itp_moleculetypes(mt.itps).items()
    assert atoms.count("CA") == 20 and atoms.count("BB") == 20  # one Go virtual site per residue, on the backbone bead
    text = mt.itps[0].read_text()
    assert "[ virtual_sitesn ]" in text and "-go-eps 12.5" in text
    assert "#define GO_VIRT" in mt.top.read_text()
    contacts = [ln.split() for ln in mt.go_itps[1].read_text().splitlines() if "go bond" in ln]
    assert contacts and all(float(c[4]) == 12.5 for c in contacts)
    assert len(mt.go_itps[0].read_text().split("\n[ atomtypes ]")[0].splitlines()) > 20
    # what the cycle does with them: a copy of the Martini force field with the types and contacts in their sections
    from multiscale.workflow.martinize import go_forcefield

    ff = go_forcefield(REPO / "src" / "multiscale" / "data" / "topologies" / "martini3" / "martini_v3.0.0.itp", [mt.go_itps],
                       tmp_path / "ff.itp").read_text()
    nb = ff.split("[ nonbond_params ]")[1]
    assert len([ln for ln in nb.splitlines() if "go bond" in ln]) == len(contacts) and "trp_1 0.0" in ff.split("[ nonbond_params ]")[0]
    # martinize2's -go CG structure (its 20 CA sites after the chain's beads; martinize2 writes no CRYST1, so
    # editconf gives it a box as the one-line error asks) backmaps
    subprocess.run(["gmx", "editconf", "-f", str(mt.cg_pdb), "-o", "cg_box.pdb", "-box", "6"], cwd=tmp_path,
                   capture_output=True, check=True)
    r = subprocess.run([sys.executable, "-m", "multiscale.cli", "backmap", "--cg", "cg_box.pdb", "--topology",
                        str(TRPCAGE / "topol.top"), "--output", "aa.gro", "--report", "cert.json"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    import json

    cert = json.loads((tmp_path / "cert.json").read_text())[0]
    chain = next(v for v in cert["per_moltype"].values() if v.get("kind") == "chain")
    assert chain["cis_nonpro_final"] == 0 and chain["wrong_centres_final"] == 0
    assert chain["max_cg_deviation_nm"] < 1e-6  # on the real beads (the PDB's 0.001 nm rounding is in them)
    # `multiscale coarse-grain --go` writes the same beads, Go sites included, as martinize2 -go on that frame
    r = subprocess.run([sys.executable, "-m", "multiscale.cli", "coarse-grain", "--topology", str(TRPCAGE / "topol.top"),
                        "--structure", str(TRPCAGE / "start.gro"), "--go", "--output", "cg_go.gro"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    from multiscale.io import read_frames

    ours, theirs = read_frames(tmp_path / "cg_go.gro"), read_frames(tmp_path / "cg_box.pdb")  # (editconf -box centres it)
    assert list(ours.names) == list(theirs.names) and list(ours.names).count("CA") == 20
    a, b = ours.positions[0], theirs.positions[0]
    assert np.abs((a - a.mean(0)) - (b - b.mean(0))).max() < 0.002  # the files' 0.001 nm rounding


def test_go_contact_map_file_gives_martinize2s_own_contacts(tmp_path):
    """A contact-map file passes through to martinize2 -go: the contacts martinize2 wrote for Trp-cage
    (-go-write-file, on a chain-A copy of the structure) read back from the .gro, which has no chain
    IDs, give the same Go bonds as martinize2 computing them."""
    from multiscale.chains.topology import _with_chain, martini_topology

    ss, pdb = "CHHHHHHHHHTHHHHSTTTC", _with_chain(TRPCAGE / "start.gro", "A", tmp_path / "trp_A.pdb")
    own = martini_topology(pdb, tmp_path / "own", ss=ss, go={"go-eps": 12.5}, name="trp",
                           extra_args=["-go-write-file", str(tmp_path / "contacts.map")])
    given = martini_topology(TRPCAGE / "start.gro", tmp_path / "given", ss=ss, name="trp",
                             go={"contact-map": tmp_path / "contacts.map", "go-eps": 12.5})
    bonds = [[ln.split()[:5] for ln in m.go_itps[1].read_text().splitlines() if "go bond" in ln] for m in (own, given)]
    assert len(bonds[0]) > 10 and bonds[0] == bonds[1]
    assert Path(given.command[given.command.index("-go") + 1]).is_file()  # the command names the files as kept


def test_go_contact_map_is_read_relative_to_the_yaml_and_is_a_stage_input(tmp_path, make_config):
    from multiscale.config import load_config
    from multiscale.workflow.martinize import chain_moltypes, martinize_stage

    sim = make_config({"go": {"contact-map": "contacts.map", "go-eps": 9.414}, "ss": "C"})
    (sim.parent / "contacts.map").write_text("R      1     1  ASN A    1        5  GLN A    5       7.2084     1 1 1 1     1      22    0\n")
    cfg = load_config(sim)
    assert cfg.system.martinize.go["contact-map"] == str((sim.parent / "contacts.map").resolve())
    st = martinize_stage(cfg, tmp_path / "run", cfg.system.aa_structure, list(chain_moltypes(cfg)))
    assert st.inputs["go_contact_map"] == sim.parent / "contacts.map"  # its checksum is part of the stage's record
    assert st.params["go"]["contact-map"] == str(sim.parent / "contacts.map") and st.params["go"]["go-eps"] == 9.414


@pytest.mark.parametrize("martinize, match", [
    ({"go": {"contact-map": "no_such.map"}}, "system.martinize.go: .*no_such.map not found"),
    ({"ss": "dsp"}, "system.martinize.ss: must be DSSP letters"),
    ({"ss": {"Protein_chain_A": 3}}, "system.martinize.ss: must be DSSP letters"),
    ({"elastic": True, "go": True}, "elastic and go exclude each other"),
    ({"go": {"eps": 9}}, "unknown martinize2 go option 'eps'"),
    ({"elastic": {"force": 700}}, "unknown martinize2 elastic option 'force'"),
    ({"go": "yes please"}, "system.martinize.go: must be true, false or a mapping"),
])
def test_bad_martinize_values_are_one_line(make_config, martinize, match):
    from multiscale.config import load_config

    with pytest.raises(MultiscaleError, match=match) as e:
        load_config(make_config(martinize))
    assert "\n" not in str(e.value)


def _dry_run(sim: Path, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"import sys; {prelude}from multiscale.cli import main; sys.exit(main(['cycle', '--config', {str(sim)!r}, '--dry-run']))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=sim.parent, timeout=300)


def test_go_model_in_a_cycle(example, tmp_path):
    """martinize2 -go in a cycle (the peptide example: AYPGKE in salt water): the Go atom types go into a
    copy of the Martini force field, coarse-graining writes one CA virtual site per residue on its BB
    bead, the CG MD runs with them (mdrun keeps them on BB) and the backmap draws the chain on the real
    beads.  (A hexapeptide has no Go contacts: the contacts' merge is tested on Trp-cage below.)"""
    import json

    import numpy as np

    from conftest import SHORT_CYCLE
    from multiscale.io import read_frames

    d = tmp_path / "go"
    shutil.copytree(example, d)
    sim = d / "sim.yaml"
    cfg = merge_config(yaml.safe_load(sim.read_text()), merge_config(SHORT_CYCLE, {
        "gromacs": {"nt": 2}, "system": {"martinize": {"go": {"go-eps": 9.414}, "elastic": False}}}))
    sim.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "multiscale.cli", "cycle", "--config", str(sim), "--no-progress"],
                       capture_output=True, text=True, cwd=d, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    run = d / "runs"
    ff = (run / "martinize" / "martini_v3.0.0.itp").read_text()
    types = ff.split("; Go model atom types")[1].split("[")[0].split("\n")
    assert sum(ln.startswith("Protein_chain_A_") for ln in types) == 6 and "; Go model contacts" in ff
    for stage in ("coarse-grain", "cg-md"):
        fr = read_frames(run / "cycle_001" / stage / ("cg.gro" if stage == "coarse-grain" else "cg-md.gro"))
        names = np.asarray(fr.names)
        ca, bb = np.flatnonzero(names == "CA"), np.flatnonzero(names == "BB")
        assert len(ca) == len(bb) == 6 and ca.min() > bb.max()  # after the chain's beads, one per residue
        assert np.abs(fr.positions[0, ca] - fr.positions[0, bb]).max() < 2e-3  # on BB (the .gro's rounding)
    assert '#include "../../martinize/martini_v3.0.0.itp"' in (run / "cycle_001" / "coarse-grain" / "cg.top").read_text()
    info = json.loads((run / "state.json").read_text())["stages"]["cycle_001/backmap"]["info"]
    assert info["chain_cis_nonpro_final"] == 0 and info["chain_wrong_centres_final"] == 0
    # beads exact unless the CG MD put some out of reach of an L, trans chain (then missed and counted)
    assert info["max_cg_deviation_nm"] < (0.15 if info["chain_chemistry_first_copies"] else 1e-6)
    assert (info["chain_beads_missed"] > 0) == (info["chain_chemistry_first_copies"] > 0)


def test_dssp_without_mdtraj_is_one_line(make_config):
    """No mdtraj importable (and no DSSP 2/3 on PATH): the plan names what to install or to give the letters."""
    if shutil.which("mkdssp") or shutil.which("dssp"):
        pytest.skip("a DSSP executable on PATH may serve martinize2")
    r = _dry_run(make_config({"ss": "dssp"}), prelude="sys.modules['mdtraj'] = None; ")  # import mdtraj -> ImportError
    assert r.returncode == 2 and "pip install mdtraj" in r.stderr and "give the DSSP letters" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

"""`multiscale molecule`: name matching by graph isomorphism, vermouth's Martini 3 library read
with its 0-based indices, SMILES checks, the pre-flight (real acpype + real gmx) and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from multiscale.errors import MultiscaleError

pytest.importorskip("vermouth")
pytest.importorskip("networkx")

from multiscale.molecule import library  # noqa: E402
from multiscale.molecule.itp import read_itp_molecules  # noqa: E402
from multiscale.molecule.names import formula, match_names  # noqa: E402

BIN = Path(sys.executable).parent
HAVE_ACPYPE = shutil.which("acpype", path=str(BIN)) is not None and shutil.which("antechamber", path=str(BIN)) is not None
needs_tools = pytest.mark.skipif(not (HAVE_ACPYPE and shutil.which("gmx")) and os.environ.get("CI") != "true",
                                 reason="needs acpype (pip install '.[molecule]') and gmx")


def _bondset(names, bonds):
    return {frozenset((names[a], names[b])) for a, b in bonds}


def test_match_names_recovers_a_shuffled_graph():
    names, el, bonds = library.charmm_graph("TOLU")
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(names))  # target atom k is reference atom perm[k]
    inv = np.argsort(perm)
    t_el = [el[p] for p in perm]
    t_bonds = [(int(inv[a]), int(inv[b])) for a, b in bonds]
    got = match_names(names, el, bonds, t_el, t_bonds)
    assert sorted(got) == sorted(names)
    assert _bondset(got, t_bonds) == _bondset(names, bonds)  # every bond maps onto a bond: an isomorphism
    assert [e for e in t_el] == [el[names.index(n)] for n in got]
    assert match_names(names, el, bonds, t_el, t_bonds) == got  # deterministic


def test_match_names_refuses_another_molecule_or_isomer():
    from multiscale.molecule.aa import parse_smiles

    names, el, bonds = library.charmm_graph("TOLU")
    benz = parse_smiles("c1ccccc1")
    with pytest.raises(MultiscaleError, match="C6H6 but .* is C7H8"):
        match_names(names, el, bonds, benz.elements, benz.bonds, what="benzene", ref_what="toluene")
    xyl, eb = parse_smiles("Cc1ccccc1C"), parse_smiles("CCc1ccccc1")
    assert formula(xyl.elements) == formula(eb.elements) == "C8H10"
    with pytest.raises(MultiscaleError, match="bonds differ"):
        match_names([str(i) for i in range(len(xyl.elements))], xyl.elements, xyl.bonds, eb.elements, eb.bonds)


@pytest.mark.parametrize("smiles, what", [("Cc1ccc(cc1", "not closed"), ("C1CC", "ring bond"), ("C[C@@H(O)C", "bracket"),
                                          ("xyz", "not valid"), ("CC O", "one word"), ("CCO.O", "several molecules")])
def test_invalid_smiles_is_one_line(smiles, what):
    from multiscale.molecule.aa import parse_smiles

    with pytest.raises(MultiscaleError, match=what) as e:
        parse_smiles(smiles)
    assert "\n" not in str(e.value)


def test_martini3_itp_reads_vermouths_zero_based_indices():
    """vermouth 0.15 shifts these interactions by one atom (issue #302); the written .itp must not."""
    tolu = read_itp_molecules("TOLU.itp", library.martini3_itp("TOLU", "TOLU"))[0]
    assert tolu.names == ["R1", "R2", "R3"]
    text = library.martini3_itp("TOLU")
    cons = [ln.split() for ln in text.split("[ constraints ]")[1].strip().splitlines()]
    lengths = {frozenset(tolu.names[int(c[i]) - 1] for i in (0, 1)): float(c[3]) for c in cons}
    assert lengths[frozenset(("R2", "R3"))] == 0.295  # the two TC5 ring beads (symmetric model)
    assert lengths[frozenset(("R1", "R2"))] == lengths[frozenset(("R1", "R3"))] == 0.330
    cume = library.martini3_itp("CUME")
    bonds = [ln.split()[:2] for ln in cume.split("[ bonds ]")[1].split("[")[0].strip().splitlines()]
    assert bonds == [["1", "2"], ["1", "3"]]  # the SC3 isopropyl bead R1 to two ring beads
    naft = library.martini3_itp("NAFT")
    assert "[ virtual_sitesn ]\n3 1 1 2 4 5" in naft  # GROMACS order: site funct atoms
    assert library.martini3_itp("NOT_A_MOLECULE") is None


def _run(args, cwd):
    return subprocess.run([str(BIN / "multiscale"), *args], cwd=cwd, capture_output=True, text=True)


def _vermouth_map(name):
    return library.vermouth_mapping(name).read_text()


@needs_tools
@pytest.mark.parametrize("case", ["smiles", "atom", "beads", "no_model", "other", "acpype"])
def test_bad_input_is_one_line_exit_2_and_nothing_finished(tmp_path, case):
    tolu = _vermouth_map("TOLU")
    args = {"smiles": ["TOLU", "--smiles", "Cc1ccc(cc1", "--mapping", "vermouth:TOLU"],
            "atom": ["TOLU", "--smiles", "Cc1ccccc1", "--mapping", "m.map"],
            "beads": ["TOLU", "--smiles", "Cc1ccccc1", "--mapping", "m.map"],
            "no_model": ["ETOH", "--smiles", "CCO", "--mapping", "m.map"],
            "other": ["TOLU", "--smiles", "c1ccccc1", "--mapping", "vermouth:TOLU"],
            "acpype": ["TOLU", "--smiles", "C[c+]1ccccc1", "--mapping", "vermouth:TOLU"]}[case]
    text = {"atom": tolu.replace(" CT R1", " CX R1"), "beads": tolu.replace("R2 R1 R3", "R2 R1 R4").replace(" R3\n", " R4\n"),
            "no_model": "[ molecule ]\nETOH\n[ martini ]\nE1\n[ atoms ]\n1 C1 E1\n2 C2 E1\n3 O1 E1\n"}.get(case)
    if text:
        (tmp_path / "m.map").write_text(text)
    r = _run(["molecule", *args, "--output", "out"], tmp_path)
    assert r.returncode == 2, r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "Traceback" not in r.stderr
    expect = {"smiles": "not closed", "atom": "CX are not in molecule TOLU", "beads": "R2 R1 R4 do not match",
              "no_model": "no Martini 3 model of ETOH", "other": "is C6H6 but", "acpype": "acpype failed"}[case]
    assert expect in err[0]
    if case == "acpype":  # the log the message names exists
        assert Path(err[0].rsplit("see ", 1)[1]).is_file()
    for done in ("molecule.json", "sim.yaml", "model.pt", "generate.yaml"):
        assert not (tmp_path / "out" / done).exists()


@needs_tools
def test_prepare_toluene_names_beads_and_box(tmp_path):
    """The TOLU map (beads R2 R1 R3, hydrogens HG HE1 HE2 missing) against vermouth's model (R1 R2 R3)."""
    from multiscale.mapping import load_mapping
    from multiscale.molecule.prepare import MoleculeRequest, prepare
    from multiscale.topology import load_topology

    notes: list[str] = []
    req = MoleculeRequest(name="TOLU", smiles="Cc1ccccc1", mapping="vermouth:TOLU", output=tmp_path / "t", count=4,
                          n_water=200, box=2.2)
    rec = prepare(req, log=notes.append)
    out = tmp_path / "t"
    assert rec["beads"] == ["R1", "R2", "R3"] and any("R2 R1 R3" in n for n in notes)
    assert any("HE1 HG HE2" in n for n in notes)
    top = load_topology(out / "aa.top")
    mt = top.blocks[0].moltype
    ref_names, _, ref_bonds = library.charmm_graph("TOLU")
    assert sorted(mt.atom_names) == sorted(ref_names)  # acpype's C, C1, H... renamed to CHARMM names
    assert _bondset(list(mt.atom_names), mt.bonds) == _bondset(ref_names, ref_bonds)
    assert [b.count for b in top.blocks] == [4, 200]
    m = load_mapping([out / "TOLU.map"])
    assert m.molecules["TOLU"].beads == ["R1", "R2", "R3"] and "HE1" in m.molecules["TOLU"].atoms
    m.check(top)
    assert json.loads((out / "molecule.json").read_text())["request"]["smiles"] == "Cc1ccccc1"
    # the written system is one grompp accepts (AA and CG topologies)
    from multiscale.gromacs import grompp, render_mdp

    mdp = render_mdp("aa_em", {"nsteps": 10, "emtol": 1000, "define": ""}, out / "em.mdp")
    grompp(mdp, out / "box.gro", out / "aa.top", tmp_path / "em.tpr")
    assert (tmp_path / "em.tpr").is_file()


@needs_tools
def test_prepare_with_users_itp_keeps_its_names(tmp_path):
    """--itp: the user's topology (here: the renamed GAFF2 one of a first preparation, atom types
    included) is used as it is; coordinates come from the SMILES, ordered by isomorphism."""
    from multiscale.molecule.prepare import MoleculeRequest, prepare
    from multiscale.topology import load_topology

    first = tmp_path / "a"
    prepare(MoleculeRequest(name="TOLU", smiles="Cc1ccccc1", mapping="vermouth:TOLU", output=first, count=2, n_water=100,
                            box=2.0), log=lambda m: None)
    own = tmp_path / "mine.itp"
    own.write_text((first / "TOLU_atomtypes.itp").read_text() + "\n" + (first / "TOLU.itp").read_text())
    rec = prepare(MoleculeRequest(name="TOLU", smiles="Cc1ccccc1", mapping="vermouth:TOLU", output=tmp_path / "b", itp=own,
                                  count=2, n_water=100, box=2.0), log=lambda m: None)
    assert rec["aa_source"].startswith("--itp")
    a, b = load_topology(first / "aa.top").blocks[0].moltype, load_topology(tmp_path / "b" / "aa.top").blocks[0].moltype
    assert a.atom_names == b.atom_names and np.allclose(a.charges, b.charges)
    gro = (tmp_path / "b" / "TOLU.gro").read_text().splitlines()
    xyz = np.array([[float(ln[20 + 8 * k:28 + 8 * k]) for k in range(3)] for ln in gro[2:-1]])
    names = [ln[10:15].strip() for ln in gro[2:-1]]
    assert names == list(b.atom_names)
    d = np.linalg.norm(xyz[names.index("CT")] - xyz[names.index("CZ")])  # generated 3D geometry, bonded pair, nm
    assert 0.13 < d < 0.17


@needs_tools
def test_prepare_neat_liquid_has_no_water(tmp_path):
    from multiscale.molecule.prepare import MoleculeRequest, prepare
    from multiscale.topology import load_topology

    rec = prepare(MoleculeRequest(name="TOLU", smiles="Cc1ccccc1", mapping="vermouth:TOLU", output=tmp_path / "n", count=10,
                                  n_water=0, box=2.0), log=lambda m: None)
    top = load_topology(tmp_path / "n" / "aa.top")
    assert rec["waters"] == 0 and [b.count for b in top.blocks] == [10]
    assert "W " not in (tmp_path / "n" / "cg.top").read_text().split("[ molecules ]")[1]
    assert int((tmp_path / "n" / "box.gro").read_text().splitlines()[1]) == 10 * 15


def test_itp_with_charmm_defaults_is_refused(tmp_path):
    from multiscale.molecule.prepare import _check_defaults

    ok = tmp_path / "ok.itp"
    ok.write_text("[ defaults ]\n1 2 yes 0.5 0.83333\n[ moleculetype ]\nX 3\n")
    _check_defaults(ok)
    bad = tmp_path / "charmm.itp"
    bad.write_text("[ defaults ]\n; nbfunc comb gen fudgeLJ fudgeQQ\n1 2 yes 1.0 1.0\n[ moleculetype ]\nX 3\n")
    with pytest.raises(MultiscaleError, match=r"differ from GAFF/AMBER"):
        _check_defaults(bad)

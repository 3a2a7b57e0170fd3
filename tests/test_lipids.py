"""Lipids end to end: bilayer observables (multiscale.lipid_analysis), the shipped lipid model
(multiscale.backmap.shipped) and an insane bilayer backmapped by the real commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from multiscale import forcefields as ff
from multiscale.errors import MultiscaleError
from multiscale.io import read_frames
from multiscale.lipid_analysis import ester_quads, ester_torsions, order_parameters, stereo_ok, tail_carbons, tail_torsions
from multiscale.mapping import load_mapping
from multiscale.paths import find_data

DATA = Path(__file__).parent / "data"
POPC_MAP = find_data("mappings", "lipids/POPC.map")


@pytest.fixture(scope="module")
def cache(membrane_forcefields):
    return membrane_forcefields


@pytest.fixture(scope="module")
def popc():
    fr = read_frames(DATA / "popc_charmm36.gro")
    mm = load_mapping(POPC_MAP).molecules["POPC"]
    return fr.positions[0].astype(float), list(fr.names), mm


def _bonds(names, x):
    """Covalent bonds of one molecule from distances (heavy-H < 0.12 nm, heavy-heavy < 0.19 nm)."""
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    h = np.array([n.startswith("H") for n in names])
    cut = np.where(h[:, None] | h[None], 0.12, 0.19)
    i, j = np.nonzero(np.triu((d < cut) & (d > 0), 1))
    return np.stack([i, j], 1)


def test_stereo_hints_hold_for_popc_and_fail_for_its_mirror_image(popc):
    x, names, mm = popc
    chiral, cis = stereo_ok(x[None], names, mm.hints)
    assert chiral.all() and cis.all()
    mirror = x * np.array([-1.0, 1.0, 1.0])  # inverts every centre, keeps cis/trans
    chiral, cis = stereo_ok(mirror[None], names, mm.hints)
    assert not chiral.any() and cis.all()
    # the oleoyl double bond turned trans: rotate the tail beyond C210 by pi about C29=C210
    i9, i10 = names.index("C29"), names.index("C210")
    bonds = _bonds(names, x)
    from multiscale.graph import MolecularGraph

    side = MolecularGraph(len(names), bonds, ["X"] * len(names)).side(i9, i10)
    k = (x[i10] - x[i9]) / np.linalg.norm(x[i10] - x[i9])
    R = 2 * np.outer(k, k) - np.eye(3)
    y = x.copy()
    y[side] = (x[side] - x[i10]) @ R.T + x[i10]
    assert not stereo_ok(y[None], names, mm.hints)[1].any()


def test_order_parameters_and_tail_torsions(popc):
    x, names, _ = popc
    el = ["H" if n.startswith("H") else n[0] for n in names]
    bonds = _bonds(names, x)
    assert [names[i] for i in tail_carbons(names, 3)] == [f"C3{k}" for k in range(2, 17)]  # palmitoyl sn-1
    assert [names[i] for i in tail_carbons(names, 2)] == [f"C2{k}" for k in range(2, 19)]  # oleoyl sn-2
    s = order_parameters(x[None, None], names, el, bonds, 3)
    assert s.shape == (1, 15) and np.all((s >= -0.5) & (s <= 1.0))
    # a C-H along z has S = 1, in the plane -0.5: rotate the molecule so one C-H bond lies along z
    c, h = names.index("C34"), names.index("H4X")
    v = (x[h] - x[c]) / np.linalg.norm(x[h] - x[c])
    axis = np.cross(v, [0, 0, 1.0])
    ang = np.arccos(np.clip(v[2], -1, 1))
    axis /= np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    R = np.eye(3) + np.sin(ang) * K + (1 - np.cos(ang)) * K @ K
    xr = x @ R.T
    hs = [names.index("H4X"), names.index("H4Y")]
    vz = (xr[hs] - xr[c])[:, 2] / np.linalg.norm(xr[hs] - xr[c], axis=1)
    expect = np.mean(1.5 * vz ** 2 - 0.5)
    got = order_parameters(xr[None, None], names, el, bonds, 3)[0, tail_carbons(names, 3).index(c)]
    assert got == pytest.approx(expect) and vz[0] == pytest.approx(1.0)
    tn, tv = tail_torsions(x[None, None], names, 2)
    assert tn[0] == "C21-C22-C23-C24" and tv.shape == (1, 15)  # C21 ... C218: 18 carbons
    i = tn.index("C28-C29-C210-C211")
    assert abs(tv[0, i]) < 0.6  # about the cis double bond C29=C210
    assert np.all(np.isfinite(tv)) and np.all(np.abs(tv) <= np.pi)


def test_shipped_lipid_model_fills_a_model_without_lipids(cache, tmp_path, monkeypatch):
    """A model with no POPC takes the shipped POPC entry (same fingerprint); a lipid no shipped
    file covers is named with how to train it."""
    from multiscale.backmap import shipped
    from multiscale.backmap.model_file import BackmapModel
    from multiscale.backmap.shipped import shipped_lipid_names, with_shipped_lipids
    from multiscale.preflight import load_checked_mapping
    from multiscale.topology import load_topology

    assert "POPC" in shipped_lipid_names()
    (tmp_path / ff.CHARMM36_FF).symlink_to(ff.charmm36_gmxlib() / ff.CHARMM36_FF)
    for r in ("POPC", "DLPC"):
        (tmp_path / f"{r}.itp").write_text(ff.charmm36_lipid_itp(r).read_text())
    (tmp_path / "a.top").write_text(f'#include "{ff.CHARMM36_FF}/forcefield.itp"\n#include "POPC.itp"\n#include "DLPC.itp"\n'
                                    "[ system ]\nx\n[ molecules ]\nPOPC 2\nDLPC 1\n")
    top = load_topology(tmp_path / "a.top")
    m = with_shipped_lipids(BackmapModel(load_checked_mapping([], top), {}), top)
    assert "POPC" in m.moltypes and m.moltypes["POPC"].fingerprint == top.moltypes["POPC"].fingerprint()
    assert shipped.shipped_lipid_file("POPC").name == "POPC.pt" and shipped.shipped_lipid_file("../x") is None
    real = shipped.shipped_lipid_files
    monkeypatch.setattr(shipped, "shipped_lipid_files", lambda name="*": [p for p in real(name) if p.stem != "DLPC"])
    m = with_shipped_lipids(BackmapModel(load_checked_mapping([], top), {}), top)
    assert "DLPC" not in m.moltypes
    with pytest.raises(MultiscaleError, match="ships no model for lipid DLPC.*multiscale train"):
        m.check(top)


@pytest.mark.gromacs
def test_insane_bilayer_backmaps_with_the_shipped_lipid_model(cache, tmp_path):
    """insane POPC bilayer (Martini 3, W, NaCl as residue ION), minimised -> multiscale topology --cg-topology ->
    multiscale backmap with no --model: every bead exact, every glycerol centre and oleoyl double bond
    right by the mapping file's hints (independent of the engine's certificate), and grompp accepts
    the AA system with no GMXLIB."""
    pytest.importorskip("insane")
    cmd = [sys.executable, "-W", "ignore", "-c", "import sys; from insane.cli import cli; sys.exit(cli())",
           "-o", "cg.gro", "-x", "4", "-y", "4", "-z", "8", "-l", "POPC", "-sol", "W", "-salt", "0.15", "-a", "0.64"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env={"INSANE_SEED": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-500:]
    lines = (tmp_path / "cg.gro").read_text().splitlines()
    body = lines[2:-1]
    ren = {"NA+": "NA", "CL-": "CL"}
    body = [ln[:5] + "ION  " + f"{ren[ln[5:10].strip()]:>5s}" + ln[15:] if ln[5:10].strip() in ren else ln for ln in body]
    (tmp_path / "cg.gro").write_text("\n".join(lines[:2] + body + lines[-1:]) + "\n")
    count = lambda res: len({ln[:5] for ln in body if ln[5:10].strip() == res})
    n_ion = {k: sum(1 for ln in body if ln[5:10].strip() == "ION" and ln[10:15].strip() == k) for k in ("NA", "CL")}
    (tmp_path / "martini.itp").symlink_to(ff.martini3_itp())
    (tmp_path / "cg.top").write_text('#include "martini.itp"\n[ system ]\nb\n[ molecules ]\n'
                                     f"POPC {count('POPC')}\nW {count('W')}\nNA {n_ion['NA']}\nCL {n_ion['CL']}\n")
    # a short Martini EM, as any CG system that gets backmapped has had (insane's grid overlaps lipids)
    (tmp_path / "cgem.mdp").write_text("integrator = steep\nnsteps = 500\ncutoff-scheme = Verlet\ncoulombtype = reaction-field\n"
                                       "rcoulomb = 1.1\nepsilon-r = 15\nepsilon-rf = 0\nrvdw = 1.1\n")
    for cmd in (["gmx", "grompp", "-f", "cgem.mdp", "-c", "cg.gro", "-p", "cg.top", "-o", "cgem.tpr", "-maxwarn", "2"],
                ["gmx", "mdrun", "-deffnm", "cgem", "-nt", "2"]):
        g = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
        assert g.returncode == 0, g.stderr[-800:]
    from multiscale.cli import main

    assert main(["topology", "--cg-topology", str(tmp_path / "cg.top"), "--output", str(tmp_path / "aa.top")]) == 0
    assert main(["backmap", "--cg", str(tmp_path / "cgem.gro"), "--topology", str(tmp_path / "aa.top"),
                 "--output", str(tmp_path / "aa.gro"), "--seed", "1", "--report", str(tmp_path / "r.json")]) == 0
    import json

    rep = json.loads((tmp_path / "r.json").read_text())[0]
    assert rep["max_cg_deviation_nm"] < 1e-6
    v = rep["per_moltype"]["POPC"]
    assert v["stereo_wrong_final"] == 0 and v["cistrans_wrong_final"] == 0
    from multiscale.lipid_analysis import lipid_coordinates
    from multiscale.topology import load_topology

    top = load_topology(tmp_path / "aa.top")
    aa = read_frames(tmp_path / "aa.gro", expected_atoms=top.n_atoms)
    blk = next(b for b in top.blocks if b.moltype.name == "POPC")
    x = lipid_coordinates(aa.positions, aa.box, blk)
    chiral, cis = stereo_ok(x, blk.moltype.atom_names, load_mapping(POPC_MAP).molecules["POPC"].hints)
    assert chiral.all() and cis.all()
    (tmp_path / "em.mdp").write_text("integrator = steep\nnsteps = 0\ncutoff-scheme = Verlet\ncoulombtype = PME\n"
                                     "rcoulomb = 1.2\nrvdw = 1.2\n")
    g = subprocess.run(["gmx", "grompp", "-f", "em.mdp", "-c", "aa.gro", "-p", "aa.top", "-o", "em.tpr", "-maxwarn", "2"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert g.returncode == 0, g.stderr[-800:]


def test_beads_are_made_whole_along_the_lipid_not_bead_by_bead(popc):
    """A POPC in a box narrower than the lipid: unwrapping bead k next to bead k-1 would put the
    second tail's first bead (C1B, after C4A) at the wrong image; along the bead tree it is whole."""
    from multiscale.backmap.features import bead_tree, unwrap_beads

    x, names, mm = popc
    x = x[:, [2, 1, 0]] * np.array([1.0, 1.0, -1.0])  # tails along x (a proper rotation)
    M = mm.matrix(_moltype(names, x))
    beads = M @ x
    parent = bead_tree(M, _bonds(names, x))
    a, b = mm.beads.index("C4A"), mm.beads.index("C1B")
    assert parent is not None and parent[b] != a
    bonded = max(abs(beads[k, 0] - beads[parent[k], 0]) for k in range(1, len(beads)))
    far = abs(beads[a, 0] - beads[b, 0])
    assert far > bonded
    box = np.array([bonded + far, 10.0, 10.0])  # half the box: longer than any bead bond, shorter than C4A-C1B
    wrapped = beads - box * np.floor(beads / box)
    good = unwrap_beads(wrapped[None], box, parent)[0]
    assert np.allclose(good - good[0], beads - beads[0], atol=1e-9)
    bad = unwrap_beads(wrapped[None], box)[0]
    assert not np.allclose(bad - bad[0], beads - beads[0], atol=1e-3)


def _moltype(names, x):
    from multiscale.topology import MoleculeType

    el = tuple("H" if n.startswith("H") else n[0] for n in names)
    masses = np.array([{"H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999, "P": 30.974}[e] for e in el])
    return MoleculeType(name="POPC", atom_names=tuple(names), resnames=("POPC",) * len(names), elements=el, masses=masses,
                        charges=np.zeros(len(names)), bonds=_bonds(names, x), residues=(0,) * len(names))


def test_shipped_popc_draws_keep_tetrahedral_centres_and_flat_cis_bonds(popc):
    """64 draws of the shipped POPC model on the beads of one CHARMM36 POPC, projected exactly: the
    glycerol C2 stays tetrahedral (normalised signed volume of C1, O21, C3 > 0.4; MD: > 0.6) and the
    oleoyl C29=C210 bond planar (|C28-C29-C210-C211| < 30 deg; MD: < 20), the esters Z.  Distances
    alone held neither: the projection flattened centres and twisted a third of the cis bonds."""
    import torch

    from multiscale.backmap.shipped import _entry, shipped_lipid_file

    x, names, _ = popc
    mm = _entry(str(shipped_lipid_file("POPC")))
    order = [names.index(n) for n in mm.atom_names]
    beads = np.repeat(np.einsum("ba,ak->bk", mm.matrix, x[order])[None], 64, 0)
    y = mm.generate(beads, torch.Generator().manual_seed(5)).numpy()
    assert np.abs(np.einsum("ba,nak->nbk", mm.matrix, y) - beads).max() < 1e-9
    n = {a: k for k, a in enumerate(mm.atom_names)}
    u = [y[:, n[a]] - y[:, n["C2"]] for a in ("C1", "O21", "C3")]
    u = [v / np.linalg.norm(v, axis=-1, keepdims=True) for v in u]
    vol = np.abs(np.einsum("ni,ni->n", u[0], np.cross(u[1], u[2])))
    p = [y[:, n[a]] for a in ("C28", "C29", "C210", "C211")]
    b1 = (p[2] - p[1]) / np.linalg.norm(p[2] - p[1], axis=-1, keepdims=True)
    v = (p[0] - p[1]) - np.einsum("ni,ni->n", p[0] - p[1], b1)[:, None] * b1
    w = (p[3] - p[2]) - np.einsum("ni,ni->n", p[3] - p[2], b1)[:, None] * b1
    tor = np.degrees(np.arctan2(np.einsum("ni,ni->n", np.cross(b1, v), w), np.einsum("ni,ni->n", v, w)))
    assert vol.min() > 0.4, np.sort(vol)[:5]
    assert np.abs(tor).max() < 30, np.sort(np.abs(tor))[-5:]
    # both esters stay Z, their R-O-C=O plane kept with the carbonyl (the frame's own: 8 and 4 deg);
    # holding only the carbonyl carbon planar, 29 of these 128 came out 30-97 deg twisted
    est = ester_torsions(y, mm.elements, mm.bonds)
    assert ester_quads(mm.elements, mm.bonds).shape == (2, 4) and ester_torsions(x[order], mm.elements, mm.bonds).max() < 10
    assert est.max() < 45 and (est > 30).sum() <= 2, np.sort(est.ravel())[-5:]


def _shipped_lipids():
    from multiscale.backmap.shipped import shipped_lipid_names

    return shipped_lipid_names()


@pytest.mark.parametrize("name", _shipped_lipids())
def test_every_shipped_lipid_model_backmaps_an_rdkit_conformer(cache, name, tmp_path):
    """Each shipped lipid model: its provenance names the project's own bilayer data, its
    fingerprint matches the CHARMM-GUI itp, and drawn on the beads of an independent RDKit
    conformer (stereo from SMILES) it hits every bead exactly with every ``[ chiral ]`` / ``[ cis ]``
    record of the mapping file right, no centre flat and no cis bond twisted."""
    pytest.importorskip("rdkit")
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import lipid_conformers as lc

    from multiscale.backmap.model_file import load_model
    from multiscale.backmap.shipped import _entry, shipped_lipid_file
    from multiscale.lipid_analysis import stereo_quality
    from multiscale.topology import load_topology

    p = shipped_lipid_file(name)
    mm = _entry(str(p))
    prov = load_model(p).provenance[0]
    assert prov["data"] == "scripts/make_bilayer_data.py" and prov["frames_trained"] > 0 and prov["forcefields"]
    itp = ff.charmm36_lipid_itp(name)
    top_dir = tmp_path
    (top_dir / f"{name}.itp").write_text(itp.read_text())
    (top_dir / ff.CHARMM36_FF).symlink_to(ff.charmm36_gmxlib() / ff.CHARMM36_FF)
    (top_dir / "a.top").write_text(f'#include "{ff.CHARMM36_FF}/forcefield.itp"\n#include "{name}.itp"\n'
                                   f"[ system ]\nx\n[ molecules ]\n{name} 1\n")
    assert mm.fingerprint == load_topology(top_dir / "a.top").moltypes[name].fingerprint()
    x = lc.named_conformer(lc.read_itp(itp), name, seed=3, straighten=False)
    beads = np.repeat(np.einsum("ba,ak->bk", mm.matrix, x)[None], 16, 0)
    y = mm.generate(beads, torch.Generator().manual_seed(1)).numpy()
    assert np.abs(np.einsum("ba,nak->nbk", mm.matrix, y) - beads).max() < 1e-9
    hints = load_mapping(find_data("mappings", f"lipids/{name}.map")).molecules[name].hints
    chiral, cis = stereo_ok(y, mm.atom_names, hints)
    flat, twisted = stereo_quality(y, mm.atom_names, hints)
    wc, wb = mm.stereo.wrong(y)
    # the engine resamples draws its certificate flags; the rest must agree with the map's records
    fine = ~(wc.any(1) | wb.any(1))
    assert fine.sum() >= 12 and chiral[fine].all() and cis[fine].all()
    assert not flat[fine].any() and not twisted[fine].any()


def test_popc_ester_planes_are_rigid_and_merged_with_the_glycerol_centre():
    """The projection's rigid groups of POPC: each ester's R-O-C=O plane is one group with the carbonyl
    (its C-O-C=O torsion otherwise twisted), the sn-2 ester merged into the C2 stereocentre's group
    (they share C2 and O21: two fits pulling those atoms two ways flattened ~1 % of the centres),
    and no two groups share more than one atom."""
    from multiscale.backmap.moltype_model import _with_planar
    from multiscale.backmap.shipped import _entry, shipped_lipid_file

    mm = _entry(str(shipped_lipid_file("POPC")))
    n = {a: k for k, a in enumerate(mm.atom_names)}
    groups = [set(g) for g in mm.rigid_groups]
    sn2 = [g for g in groups if n["C21"] in g]
    assert len(sn2) == 1 and {n[a] for a in ("C1", "C2", "C3", "HS", "O21", "C21", "O22", "C22")} <= sn2[0]
    sn1 = [g for g in groups if n["C31"] in g]
    assert len(sn1) == 1 and sn1[0] == {n[a] for a in ("C3", "O31", "C31", "O32", "C32")}
    assert all(len(a & b) <= 1 for i, a in enumerate(groups) for b in groups[i + 1:])
    # the rule itself: inside a stereo group -> dropped; two shared atoms -> merged; one -> its own group
    assert _with_planar([[0, 1, 2, 3]], [[1, 2], [3, 4, 5], [5, 6, 7]]) == [[0, 1, 2, 3], [3, 4, 5], [5, 6, 7]]
    assert _with_planar([[0, 1, 2, 3]], [[2, 3, 9]]) == [[0, 1, 2, 3, 9]]

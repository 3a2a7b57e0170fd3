"""Protein criteria of `multiscale evaluate` on a real peptide (PeptideBuilder + pdb2gmx
amber99sb-ildn): every count is checked against a structure edited to have exactly that defect."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("PeptideBuilder")
pytestmark = pytest.mark.skipif(shutil.which("gmx") is None, reason="needs gmx (pdb2gmx) on PATH")

SEQ = "ATPKIGFW"


@pytest.fixture(scope="module")
def pep(tmp_path_factory):
    from multiscale.chains.peptides import build_peptide_pdb, pdb2gmx
    from multiscale.io import read_frames
    from multiscale.topology import load_topology

    d = tmp_path_factory.mktemp("pep")
    top, gro = pdb2gmx(build_peptide_pdb(SEQ, d / "heavy.pdb", conformation="ppii"), d)
    fr = read_frames(gro)
    box = np.tile(np.eye(3) * 6.0, (1, 1, 1))
    return load_topology(top), fr.positions.astype(np.float64), box, top


def _crit(top, x, box, ref=None):
    from multiscale.evaluate.protein import protein_criteria

    return protein_criteria(top, x, np.repeat(box, x.shape[0], axis=0), ref)


def test_ideal_peptide_scores_perfectly(pep):
    top, x, box, _top_path = pep
    c = _crit(top, x, box, x)
    assert c["residues"] == len(SEQ)
    assert c["cis_peptides_non_pro"] == 0 and c["cis_peptides_pro"] == 0 and c["d_residues"] == 0
    assert c["clash_score_pct"] == 0 and c["bond_score"] == 1.0
    assert c["rmsd_heavy_nm"] < 1e-6 and c["rmsd_backbone_nm"] < 1e-6
    assert c["rama_jsd_mean"] == pytest.approx(0.0, abs=1e-9)


def test_mirror_image_is_all_d(pep):
    top, x, box, _top_path = pep
    m = x.copy()
    m[..., 0] *= -1.0
    assert _crit(top, m, box)["d_residues"] == sum(a != "G" for a in SEQ)


def test_threonine_cb_inversion_is_one_d_residue(pep):
    from multiscale.evaluate.protein import residue_table

    top, x, box, _top_path = pep
    t = residue_table(top)
    thr = next(r for r in range(t.n_residues) if t.resname[r] == "THR")
    y = x.copy()
    a, b = t.atoms[thr]["OG1"], t.atoms[thr]["CG2"]
    y[:, [a, b]] = y[:, [b, a]]
    assert _crit(top, y, box)["d_residues"] == 1


def test_flattened_centre_is_distorted_not_d(pep):
    """An HA pushed through the N-C-CB face: still L by the three heavy substituents (so no D
    residue), but the faces with HA disagree -- one distorted centre; the mirror image is D, not
    distorted."""
    from multiscale.evaluate.protein import residue_table

    top, x, box, _top_path = pep
    t = residue_table(top)
    r = next(i for i in range(t.n_residues) if t.resname[i] == "LYS")
    ca, ha, cb = (t.atoms[r][n] for n in ("CA", "HA", "CB"))
    y = x.copy()
    y[:, ha] = y[:, ca] + 0.5 * (y[:, ca] - y[:, ha]) + 0.3 * (y[:, cb] - y[:, ca])  # HA behind CA, next to CB
    c = _crit(top, y, box)
    assert c["d_residues"] == 0 and c["distorted_centres"] == 1
    assert _crit(top, x, box)["distorted_centres"] == 0
    m = x.copy()
    m[..., 0] *= -1.0
    assert _crit(top, m, box)["distorted_centres"] == 0


def _rotate_after(x, t, r, angle):
    """Rotate every atom after residue r's C about the C(r)-N(r+1) bond (changes omega(r) only)."""
    c, n = t.c[r], t.next_n[r]
    axis = (x[0, n] - x[0, c]) / np.linalg.norm(x[0, n] - x[0, c])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    y = x.copy()
    first = min(t.atoms[r + 1].values())
    y[:, first:] = (y[:, first:] - x[0, c]) @ rot.T + x[0, c]
    return y


def test_cis_peptide_counted_by_kind(pep):
    from multiscale.evaluate.protein import backbone_torsions, residue_table

    top, x, box, _top_path = pep
    t = residue_table(top)
    k_before_pro = SEQ.index("P") - 1  # T-P bond
    k_other = SEQ.index("K")           # K-I bond
    y = _rotate_after(_rotate_after(x, t, k_other, np.pi), t, k_before_pro, np.pi)
    om = np.degrees(backbone_torsions(y, t)["omega"][0])
    assert abs(om[k_other]) < 5 and abs(om[k_before_pro]) < 5
    c = _crit(top, y, box)
    assert c["cis_peptides_non_pro"] == 1 and c["cis_peptides_pro"] == 1


def test_clash_score_counts_residues(pep):
    from multiscale.evaluate.protein import residue_table

    top, x, box, _top_path = pep
    t = residue_table(top)
    y = x.copy()
    y[:, t.ca[1]] = y[:, t.ca[5]] + np.array([0.05, 0.0, 0.0])  # CA of residue 2 into residue 6
    c = _crit(top, y, box, x)
    assert c["clash_score_pct"] == pytest.approx(100.0 * 2 / len(SEQ))
    assert c["bond_score"] < 1.0  # its bonds are now far from the reference lengths


def test_ramachandran_jsd_sees_another_basin(pep, tmp_path):
    from multiscale.chains.peptides import build_peptide_pdb, pdb2gmx
    from multiscale.io import read_frames

    top, x, box, _top_path = pep
    _t, gro = pdb2gmx(build_peptide_pdb(SEQ, tmp_path / "h.pdb", conformation="helix"), tmp_path)
    h = read_frames(gro).positions.astype(np.float64)
    c = _crit(top, h, box, x)
    assert c["rama_jsd_mean"] > 0.5 and c["rmsd_backbone_nm"] > 0.1


def test_evaluate_command_on_a_peptide_without_mapping(pep, tmp_path):
    """`multiscale coarse-grain` and `evaluate` need no --mapping for a chain (martinize2 beads), and
    the report carries the protein criteria."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from multiscale.io import write_frames

    top, x, box, _top_path = pep
    names, res, rid = top.per_atom("atom_names"), top.per_atom("resnames"), top.resids()
    write_frames(tmp_path / "ref.gro", x[0] + 3.0, box[0], names, res, rid)
    m = x[0].copy()
    m[:, 0] *= -1.0
    write_frames(tmp_path / "mirror.gro", m + 3.0, box[0], names, res, rid)
    exe = str(Path(sys.executable).parent / "multiscale")
    topo = str(_top_path)
    r = subprocess.run([exe, "coarse-grain", "--topology", topo, "--structure", "ref.gro", "--output", "cg.gro"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([exe, "evaluate", "--cg", "cg.gro", "--topology", topo, "--reference", "ref.gro", "--candidate",
                        "mirror=mirror.gro", "--output", "ev", "--no-energy"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    prot = json.loads((tmp_path / "ev" / "report.json").read_text())["candidates"]["mirror"]["protein"]
    assert prot["d_residues"] == sum(a != "G" for a in SEQ) and prot["rama_jsd_mean"] > 0.9
    assert "D residues" in (tmp_path / "ev" / "report.md").read_text()

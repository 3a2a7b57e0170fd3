"""Disulfides in the chain model: pdb2gmx's CYX (CYS without HG, SG-SG bond) is placed by the CYS
density, the bonded geometry is restored before the exact projection and certified."""

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vermouth")
if shutil.which("gmx") is None:
    pytest.skip("needs GROMACS (gmx pdb2gmx)", allow_module_level=True)

FIXTURE = Path(__file__).parent / "data" / "disulfide_ECAKGCKE.pdb"  # scripts/make_disulfide_fixture.py


@pytest.fixture(scope="module")
def peptide(tmp_path_factory):
    from multiscale.chains.martinize import chain_mapping_from_moltype
    from multiscale.chains.peptides import pdb2gmx
    from multiscale.chains.residues import chain_residues
    from multiscale.classes.chain import amino_acid_names
    from multiscale.io import read_frames
    from multiscale.topology import load_topology

    out = tmp_path_factory.mktemp("ss")
    top_path, gro = pdb2gmx(FIXTURE, out)  # amber99sb-ildn: links Cys2/Cys6 itself
    top = load_topology(top_path)
    mt = top.blocks[0].moltype
    x = np.asarray(read_frames(gro, expected_atoms=top.n_atoms).positions, np.float64)
    cm = chain_mapping_from_moltype(mt)
    return mt, x, cm, chain_residues(mt, cm, amino_acid_names())


def test_pdb2gmx_disulfide_is_found_and_mapped_like_martinize2(peptide):
    from multiscale.chains.disulfides import _disulfides

    mt, x, cm, res = peptide
    ss = _disulfides(mt)
    assert ss.shape == (1, 4)
    assert [mt.atom_names[a] for a in ss[0]] == ["SG", "SG", "CB", "CB"]
    assert "HG" not in [mt.atom_names[a] for r in res if r.kind == "CYS" for a in r.core]
    assert len(cm.bead_names) == 17  # 8 BB + side chains, both Cys included
    assert np.isclose(np.linalg.norm(x[0, ss[0, 0]] - x[0, ss[0, 1]]), 0.204, atol=0.003)


def test_cyx_is_placed_by_the_cys_density_without_hg(peptide):
    from multiscale.chains.model import fits
    from multiscale.chains.shipped import shipped_chain_model

    mt, x, cm, res = peptide
    model = shipped_chain_model("amber")
    cyx = [r for r in res if r.kind == "CYS"]
    assert len(cyx) == 2 and all(model.resolve_kind(r) == "CYS" for r in cyx)
    assert fits(model.kinds["CYS"], cyx[0].core_names)
    assert not fits(model.kinds["CYS"], (*cyx[0].core_names, "XX"))
    assert not fits(model.kinds["SER"], cyx[0].core_names)


def test_certificate_rejects_a_broken_disulfide(peptide):
    from multiscale.chains.draw import ChainDrawer
    from multiscale.chains.shipped import shipped_chain_model

    mt, x, cm, res = peptide
    d = ChainDrawer(shipped_chain_model("amber"), mt, cm, res)
    assert not d.bad_disulfides(x).any()
    y = x.copy()
    sg1, sg2 = d.disulfides[0, :2]
    y[:, sg2] += 0.04 * (y[:, sg2] - y[:, sg1]) / np.linalg.norm(y[:, sg2] - y[:, sg1])
    assert d.bad_disulfides(y).all()
    assert d.residue_problems(y)[0, [d.res_of_atom[sg1], d.res_of_atom[sg2]]].all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backmapped_disulfide_is_bonded_and_cg_exact(peptide, seed):
    from multiscale.chains.disulfides import DISULFIDE_BOND_NM
    from multiscale.chains.draw import ChainDrawer
    from multiscale.chains.shipped import shipped_chain_model

    mt, x, cm, res = peptide
    beads = cm.coarse_grain(x)
    d = ChainDrawer(shipped_chain_model("amber"), mt, cm, res)
    y, rep = d.draw(beads, seed=seed)
    assert rep.disulfides == 1 and rep.bad_disulfides_final == 0
    sg1, sg2 = d.disulfides[0, :2]
    assert DISULFIDE_BOND_NM[0] < np.linalg.norm(y[0, sg1] - y[0, sg2]) < DISULFIDE_BOND_NM[1]
    assert np.abs(cm.coarse_grain(y) - beads).max() < 1e-9
    assert rep.wrong_centres_final == 0

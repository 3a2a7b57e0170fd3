"""multiscale.chains: our martinize2 bead weights against the real martinize2 CLI on the same frame.

A peptide with all 20 amino acids plus the amber protonation variants HID/ASH/GLH/LYN/HIP and
charged termini (H1 H2 H3 / OC1 OC2) is built with PeptideBuilder and protonated by pdb2gmx
(amber99sb-ildn; charmm27 for CHARMM names); martinize2 is run once per naming through
:func:`multiscale.chains.martini_topology`; our beads must equal its CG PDB within 0.001 nm
(the PDB's own rounding is 5e-5 nm).
"""

import importlib.util
import shutil

import MDAnalysis as mda
import numpy as np
import pytest

from multiscale.errors import MultiscaleError

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("vermouth") is None, reason="needs vermouth (martinize2): pip install vermouth"),
    pytest.mark.skipif(importlib.util.find_spec("PeptideBuilder") is None, reason="needs PeptideBuilder: pip install PeptideBuilder"),
    pytest.mark.skipif(shutil.which("gmx") is None, reason="needs gmx (pdb2gmx) on PATH"),
    pytest.mark.filterwarnings("ignore::UserWarning:MDAnalysis"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:MDAnalysis"),
]

SEQ = "ACDEFGHIKLMNPQRSTVWYHDEKH"
SEQ_CHARMM = "KHWPSD"  # CHARMM names (HN, HT1-3, OT1/OT2, HSD) on a short chain: keeps the test fast
VARIANTS = {21: "HID", 22: "ASH", 23: "GLH", 24: "LYN", 25: "HIP"}


@pytest.fixture(scope="module", params=["amber99sb-ildn", "charmm27"])
def peptide(request, tmp_path_factory):
    from multiscale.chains import martini_topology
    from multiscale.chains.peptides import build_peptide_pdb, pdb2gmx

    ff = request.param
    d = tmp_path_factory.mktemp(ff)
    amber = ff.startswith("amber")
    pdb = build_peptide_pdb(SEQ if amber else SEQ_CHARMM, d / "heavy.pdb", conformation="mixed", seed=1,
                            variants=VARIANTS if amber else {})
    top, aa = pdb2gmx(pdb, d, forcefield=ff, structure="protein.pdb")
    cg = martini_topology(aa, d / "cg", ss="C")
    return dict(ff=ff, top=top, aa=aa, cg=cg, seq=SEQ if amber else SEQ_CHARMM)


def _frames(path):
    return mda.Universe(str(path)).atoms.positions.astype(np.float64) / 10.0


def test_beads_equal_martinize2(peptide):
    from multiscale.chains import chain_mapping_from_moltype, chain_mapping_from_pdb
    from multiscale.topology import load_topology

    x = _frames(peptide["aa"])
    ref_u = mda.Universe(str(peptide["cg"].cg_pdb))
    ref = ref_u.atoms.positions / 10.0
    expect_ff = "amber" if peptide["ff"].startswith("amber") else "charmm"

    moltype = load_topology(peptide["top"]).blocks[0].moltype
    for cm in (chain_mapping_from_pdb(peptide["aa"]), chain_mapping_from_moltype(moltype)):
        assert cm.from_ff == expect_ff
        assert cm.n_atoms == len(x) == moltype.n_atoms
        assert list(cm.bead_names) == list(ref_u.atoms.names)
        assert list(cm.bead_resids) == list(ref_u.atoms.resids)
        np.testing.assert_allclose(np.asarray(cm.weights.sum(axis=1)).ravel(), 1.0, atol=1e-12)
        beads = cm.coarse_grain(x[None])[0]
        assert np.abs(beads - ref).max() < 1e-3
    # one residue index per residue, in chain order
    assert cm.bead_residues[0] == 0 and cm.bead_residues[-1] == len(peptide["seq"]) - 1
    assert np.all(np.diff(cm.bead_residues) >= 0)
    # martinize2 writes the variant names and their side-chain bead counts
    if expect_ff == "amber":
        names = {r: n for r, n in zip(cm.bead_resids, cm.bead_resnames)}
        assert [names[i] for i in VARIANTS] == list(VARIANTS.values())


def test_topology_files(peptide):
    res = peptide["cg"]
    assert res.top.is_file() and res.cg_pdb.is_file() and res.log.is_file()
    assert len(res.itps) == 1 and res.itps[0].is_file()
    text = res.itps[0].read_text()
    assert "[ moleculetype ]" in text and "[ bonds ]" in text
    assert res.command[0].endswith("martinize2") and "-ss" in res.command


def test_coarse_grain_shapes_and_errors(peptide):
    from multiscale.chains import chain_mapping_from_pdb

    cm = chain_mapping_from_pdb(peptide["aa"])
    x = _frames(peptide["aa"]).astype(np.float32)
    rng = np.random.default_rng(0)
    frames = x[None] + rng.normal(0, 0.01, (3, *x.shape)).astype(np.float32)
    out = cm.coarse_grain(frames)
    assert out.shape == (3, cm.n_beads, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[1], cm.coarse_grain(frames[1]), atol=1e-6)
    np.testing.assert_allclose(out, np.einsum("ba,fax->fbx", cm.dense(), frames), atol=1e-5)
    with pytest.raises(MultiscaleError, match="do not match"):
        cm.coarse_grain(x[:-1])


def test_unknown_residue_is_one_line_error(tmp_path, peptide):
    from multiscale.chains import chain_mapping_from_pdb

    lines = peptide["aa"].read_text().splitlines()
    bad = [ln[:17] + "XYZ" + ln[20:] if ln.startswith("ATOM") and int(ln[22:26]) == 3 else ln for ln in lines]
    p = tmp_path / "bad.pdb"
    p.write_text("\n".join(bad) + "\n")
    with pytest.raises(MultiscaleError, match="XYZ3 unknown") as e:
        chain_mapping_from_pdb(p)
    assert "\n" not in str(e.value)


def test_martini_topology_options(tmp_path):
    from multiscale.chains.topology import _command

    cmd = _command(tmp_path / "x.pdb", "prot", "amber", "H", None, {"ef": 500, "eu": 0.8}, False, "backbone", ())
    assert cmd[cmd.index("-ef") + 1] == "500" and "-elastic" in cmd and cmd[cmd.index("-p") + 1] == "backbone"
    cmd = _command(tmp_path / "x.pdb", "prot", "amber", "C", None, False, {"go-eps": 10}, "none", ())
    assert "-go" in cmd and cmd[cmd.index("-go-eps") + 1] == "10"
    with pytest.raises(MultiscaleError, match="exclude each other"):
        _command(tmp_path / "x.pdb", "prot", "amber", "C", None, True, True, "none", ())
    with pytest.raises(MultiscaleError, match="unknown elastic option"):
        _command(tmp_path / "x.pdb", "prot", "amber", "C", None, {"xx": 1}, False, "none", ())
    cmap = tmp_path / "contacts.map"
    cmap.write_text("R      1     1  ASN A    1        5  GLN A    5       7.2084     1 1 1 1     1      22    0\n")
    cmd = _command(tmp_path / "x.pdb", "prot", "amber", "C", None, False, {"contact-map": cmap, "go-eps": 10}, "none", ())
    assert cmd[cmd.index("-go") + 1] == str(cmap) and cmd[cmd.index("-go-eps") + 1] == "10"
    with pytest.raises(MultiscaleError, match="contact-map file .* not found") as e:
        _command(tmp_path / "x.pdb", "prot", "amber", "C", None, False, {"contact-map": tmp_path / "none.map"}, "none", ())
    assert "\n" not in str(e.value)


def test_contact_map_chain_is_one_chain_or_one_line(tmp_path):
    from multiscale.chains.topology import contact_map_chain

    p = tmp_path / "c.map"
    row = "R      1     1  ASN {}    1        5  GLN {}    5       7.2084     1 1 1 1     1      22{}\n"
    p.write_text("header\n" + row.format("B", "B", "    0") + row.format("B", "B", ""))  # server's 18 columns, vermouth's 17
    assert contact_map_chain(p) == "B"
    p.write_text(row.format("A", "B", "    0"))
    with pytest.raises(MultiscaleError, match="contacts of chains A, B"):
        contact_map_chain(p)
    p.write_text("R 1 1 ASN 1 5 GLN 5 7.2 1 1 1 1 1 22\n")  # no chain IDs
    with pytest.raises(MultiscaleError, match="no contact lines"):
        contact_map_chain(p)


def test_dssp_option_usable_or_one_line_error():
    from multiscale.chains.topology import dssp_option

    try:
        opt = dssp_option()
    except MultiscaleError as e:
        assert "\n" not in str(e) and "ss" in str(e)
    else:
        assert opt[0] == "-dssp" and (len(opt) == 1 or shutil.which(opt[1]))
    with pytest.raises(MultiscaleError, match="not found"):
        dssp_option("no_such_dssp_exe")

"""The molecule-class registry: recognition, layout, coarse-graining, no atom left behind."""

import shutil
import textwrap

import numpy as np
import pytest

from conftest import REPO
from multiscale import classes
from multiscale.coarse_grain import cg_layout, coarse_grain
from multiscale.errors import MultiscaleError
from multiscale.geometry import minimum_image
from multiscale.mapping import load_mapping
from multiscale.topology import MoleculeType, load_topology

EX = REPO / "src" / "multiscale" / "data" / "examples" / "heptanol"
TOP = REPO / "src" / "multiscale" / "data" / "topologies"
MAP = REPO / "src" / "multiscale" / "data" / "mappings" / "heptanol.map"


def _ion_top(tmp_path, n_na=2, n_cl=2, n_sol=8):
    (tmp_path / "sys.top").write_text(textwrap.dedent(f"""
        [ defaults ]
        1 2 yes 0.5 0.8333
        #include "{TOP}/heptanol/HPO_atomtypes.itp"
        #include "{TOP}/water/tip3p_atomtypes.itp"
        #include "{TOP}/ions/ions_jc_tip3p_atomtypes.itp"
        #include "{TOP}/heptanol/HPO.itp"
        #include "{TOP}/water/tip3p.itp"
        #include "{TOP}/ions/ions_jc_tip3p.itp"
        [ system ]
        test
        [ molecules ]
        HPO 2
        NA {n_na}
        CL {n_cl}
        SOL {n_sol}
        """))
    return load_topology(tmp_path / "sys.top")


def _mt(name, elements, charge=0.0, resname=None, atom_names=None, residues=None, bonds=()):
    n = len(elements)
    return MoleculeType(name, tuple(atom_names or [f"A{i}" for i in range(n)]), (resname or name,) * n, tuple(elements),
                        np.ones(n), np.full(n, charge / n), np.array(bonds, int).reshape(-1, 2),
                        residues=residues)


def test_ions_recognised_without_mapping(tmp_path):
    top = _ion_top(tmp_path)
    layout = cg_layout(top, load_mapping(EX.parents[1] / "mappings" / "heptanol.map"))
    assert [(b.kind, b.cg_name, b.count, b.n_beads) for b in layout] == [
        ("molecule", "HPO", 2, 2), ("ion", "NA", 2, 1), ("ion", "CL", 2, 1), ("water", "W", 2, 1)]
    assert layout[1].info["min_water_o"] == pytest.approx(0.20)


@pytest.mark.parametrize("name,element,charge,cg", [
    ("SOD", "Na", 1, "NA"), ("CLA", "Cl", -1, "CL"), ("POT", "K", 1, "K"), ("CAL", "Ca", 2, "CA"),
    ("NA", "Na", 1, "NA"), ("C0", "Ca", 2, "CA"), ("K", "K", 1, "K")])
def test_charmm_and_amber_ion_names(name, element, charge, cg):
    entry = classes.identify_ion(_mt(name, [element], charge))
    assert entry is not None and entry["cg"] == cg


def test_not_an_ion():
    assert classes.identify_ion(_mt("CA", ["C"], 0.0)) is None  # a one-atom carbon named CA
    assert classes.identify_ion(_mt("NA", ["Na"], -1.0)) is None  # wrong charge
    assert classes.identify_ion(_mt("NAX", ["Na", "Na"], 2.0)) is None  # two atoms


def test_ion_beads_sit_on_ions(tmp_path):
    top = _ion_top(tmp_path)
    mp = load_mapping(EX.parents[1] / "mappings" / "heptanol.map")
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 2.8, (top.n_atoms, 3))
    # whole molecules for HPO (compact) and waters: place each molecule's atoms near its first
    for b in top.blocks:
        n = b.moltype.n_atoms
        for m in range(b.count):
            s = b.start + m * n
            x[s + 1:s + n] = x[s] + rng.normal(0, 0.05, (n - 1, 3))
    cg = coarse_grain(x[None], np.array([3.0, 3.0, 3.0]), top, mp, seed=1)
    na = [b for b in cg.layout if b.cg_name == "NA"][0]
    ions = x[na.aa_block.start:na.aa_block.stop]
    assert np.allclose(cg.positions[0, na.start:na.stop], ions % 3.0, atol=1e-9)


def test_two_residue_moltype_with_residue_map_stops():
    """A two-residue (non-amino-acid) moleculetype mapped by a one-residue map would drop residue 2: refuse."""
    mt = _mt("LIG2", ["C", "C", "C", "C"], resname="LIG", atom_names=["C1", "C2", "C1", "C2"],
             residues=(0, 0, 1, 1), bonds=[(0, 1), (0, 2), (2, 3)])
    from multiscale.mapping import Mapping, parse_map_text
    from multiscale.topology import MoleculeBlock, SystemTopology

    mm = parse_map_text("[ molecule ]\nLIG\n[ martini ]\nA B\n[ atoms ]\n1 C1 A\n2 C2 B\n", "lig.map")[0]
    mp = Mapping({"LIG": mm}, sources=["lig.map"])
    top = SystemTopology([MoleculeBlock(mt, 1, 0)])
    with pytest.raises(MultiscaleError, match="has 2 residues .* residues 1 would be dropped"):
        cg_layout(top, mp)


@pytest.mark.skipif(shutil.which("gmx") is None, reason="needs gmx (pdb2gmx)")
def test_protein_chain_class_gives_martinize2_beads(tmp_path):
    """A pdb2gmx amber99sb-ildn peptide needs no mapping file: the chain class lays it out with
    martinize2's beads (via vermouth); the engine refuses it with one line (chains: next issue)."""
    pytest.importorskip("vermouth")
    pytest.importorskip("PeptideBuilder")
    from multiscale.chains.martinize import chain_mapping_from_moltype
    from multiscale.chains.peptides import build_peptide_pdb, pdb2gmx

    pdb = build_peptide_pdb("AKG", tmp_path / "p.pdb")
    top_path, gro = pdb2gmx(pdb, tmp_path / "aa")
    top = load_topology(top_path)
    (tmp_path / "empty.yaml").write_text("molecules: {}\n")
    mp = load_mapping(tmp_path / "empty.yaml")
    layout = cg_layout(top, mp)
    assert [(b.kind, b.n_beads) for b in layout] == [("chain", 6)]  # ALA BB SC1, LYS BB SC1 SC2, GLY BB
    assert layout[0].bead_names == ["BB", "SC1", "BB", "SC1", "SC2", "BB"]
    from multiscale.io import read_frames

    fr = read_frames(gro, expected_atoms=top.n_atoms)
    cg = coarse_grain(fr.positions, fr.box, top, mp)
    ref = chain_mapping_from_moltype(top.blocks[0].moltype).coarse_grain(fr.positions[0].astype(np.float64))
    assert np.allclose(minimum_image(cg.positions[0] - ref, fr.box[0]), 0, atol=1e-9)
    from multiscale.coarse_grain import cg_names

    names, resnames, resids = cg_names(layout)
    assert list(resnames) == ["ALA", "ALA", "LYS", "LYS", "LYS", "GLY"] and list(resids) == [1, 1, 2, 2, 2, 3]
    from multiscale.backmap.engine import train

    model = train(top, mp, fr, seed=0, epochs=1, log=None)  # the residue-wise chain model (multiscale.chains)
    assert model.chains is not None and {"ALA", "LYS", "GLY"} <= set(model.chains.kinds) and not model.moltypes


def test_unmapped_heavy_atom_stops(tmp_path):
    from conftest import write_toy

    p = write_toy(tmp_path, 1, 4)
    text = p["map"].read_text().replace("3 C3 B\n", "")
    p["map"].write_text(text)
    with pytest.raises(MultiscaleError, match="heavy atom.*C3"):
        cg_layout(load_topology(p["top"]), load_mapping(p["map"]))


def test_unclaimed_moltype_names_it(tmp_path):
    top = _ion_top(tmp_path)
    (tmp_path / "empty.yaml").write_text("molecules: {}\n")
    with pytest.raises(MultiscaleError, match="moleculetype HPO .* no mapping"):
        cg_layout(top, load_mapping(tmp_path / "empty.yaml"))


def test_registry_register_and_order():
    names = [c.name for c in classes.REGISTRY]
    assert names[:5] == ["water", "ion", "chain", "molecule", "lipid"]

    class Dummy(classes.MoleculeClass):
        name = "dummy"

        def claims(self, moltype, mapping):
            return False

    classes.register(Dummy(), before="molecule")
    try:
        assert [c.name for c in classes.REGISTRY].index("dummy") == names.index("molecule")
        with pytest.raises(ValueError):
            classes.register(Dummy())
    finally:
        classes.REGISTRY.remove(classes.get("dummy"))


def test_triclinic_coarse_grain_solute_matches_shifted_images(tmp_path):
    """Beads of molecules split across a rhombic-dodecahedron cell equal those of the whole molecules."""
    from conftest import write_toy

    p = write_toy(tmp_path, 3, 4)
    p["top"].write_text(p["top"].read_text().replace("SOL 4", ""))  # solute only
    top, mp = load_topology(p["top"]), load_mapping(p["map"])
    d = 2.5
    box = np.array([[d, 0, 0], [0, d, 0], [d / 2, d / 2, d * np.sqrt(2) / 2]])
    rng = np.random.default_rng(5)
    whole = np.concatenate([c + np.cumsum(rng.normal(0, 0.08, (5, 3)), 0) for c in rng.uniform(0, 2, (3, 3))])
    shifts = rng.integers(-1, 2, (len(whole), 3)) @ box  # every atom in another image
    a = coarse_grain(whole[None], box[None], top, mp).positions[0]
    b = coarse_grain((whole + shifts)[None], box[None], top, mp).positions[0]
    assert np.allclose(minimum_image(a - b, box), 0, atol=1e-9)
    s = b @ np.linalg.inv(box)
    assert np.all((s >= 0) & (s < 1))


def test_hydrated_ions_conserve_waters(tmp_path):
    """ions.waters_per_ion = 4: each ion bead is the COM of the ion and its 4 nearest waters; the
    remaining waters group 4:1; every water is used exactly once."""
    top = _ion_top(tmp_path, n_na=1, n_cl=1, n_sol=16)  # 16 - 2*4 = 8 waters -> 2 W beads
    (tmp_path / "m.yaml").write_text("ions: {waters_per_ion: 4}\n")
    mp = load_mapping([MAP, tmp_path / "m.yaml"])
    layout = cg_layout(top, mp)
    assert [(b.kind, b.count) for b in layout] == [("molecule", 2), ("ion", 1), ("ion", 1), ("water", 2)]
    rng = np.random.default_rng(2)
    L = 2.0
    x = rng.uniform(0, L, (top.n_atoms, 3))
    for b in top.blocks:
        n = b.moltype.n_atoms
        for m in range(b.count):
            s = b.start + m * n
            x[s + 1:s + n] = x[s] + rng.normal(0, 0.04, (n - 1, 3))
    cg = coarse_grain(x[None], np.array([L, L, L]), top, mp, seed=0)
    wat = [b for b in cg.layout if b.kind == "water"][0]
    used = np.concatenate([cg.water_groups[0][-1].ravel()])
    assert len(used) == 8 and len(np.unique(used)) == 8
    # the ion beads: mass-weighted centre of ion + 4 waters (whole)
    na = [b for b in cg.layout if b.cg_name == "NA"][0]
    ion = x[na.aa_block.start]
    wb = wat.aa_block
    w = x[wb.start:wb.stop].reshape(-1, 3, 3)
    wm = wb.moltype.masses
    com = np.einsum("a,wak->wk", wm / wm.sum(), ion + minimum_image(w - ion, L))
    rest = np.setdiff1d(np.arange(16), used)
    d = np.linalg.norm(minimum_image(com[rest] - ion, L), axis=1)
    shell = rest[np.argsort(d)[:4]]
    # the shell is among the waters not grouped into W beads; its COM with the ion is the bead
    ref = (22.99 * ion + wm.sum() * com[shell].sum(0)) / (22.99 + 4 * wm.sum())
    assert np.allclose(minimum_image(cg.positions[0, na.start] - ref, L), 0, atol=1e-6)


def test_hydrated_ions_bad_water_count(tmp_path):
    top = _ion_top(tmp_path, n_na=1, n_cl=1, n_sol=14)
    (tmp_path / "m.yaml").write_text("ions: {waters_per_ion: 4}\n")
    mp = load_mapping([MAP, tmp_path / "m.yaml"])
    with pytest.raises(MultiscaleError, match="6 SOL molecules left after 8 ion hydration waters .* not a multiple of 4"):
        cg_layout(top, mp)
    (tmp_path / "bad.yaml").write_text("ions: {waters_per_ion: -1}\n")
    with pytest.raises(MultiscaleError, match="waters_per_ion"):
        load_mapping(tmp_path / "bad.yaml")


@pytest.mark.parametrize("k", [4, 6, 8])
def test_place_hydrated_ions(k):
    from multiscale.classes.ion import place_hydrated

    rng = np.random.default_rng(k)
    beads = rng.uniform(0, 3, (5, 3))
    charge = np.array([1, -1, 1, -1, 2.0])
    mass = np.array([22.99, 35.45, 22.99, 35.45, 40.08])
    rmin = np.array([0.20, 0.27, 0.20, 0.27, 0.20])
    wm = np.array([15.999, 1.008, 1.008])
    ion, wat = place_hydrated(beads, mass, charge, rmin, wm, k, rng)
    com = (mass[:, None] * ion + np.einsum("a,iwak->ik", wm, wat)) / (mass + k * wm.sum())[:, None]
    assert np.allclose(com, beads, atol=1e-12)
    d_o = np.linalg.norm(wat[:, :, 0] - ion[:, None], axis=-1)
    assert np.all(d_o >= rmin[:, None])
    oh = np.linalg.norm(wat[:, :, 1:] - wat[:, :, :1], axis=-1)
    assert np.allclose(oh, 0.09572)
    hh = np.linalg.norm(wat[:, :, 1] - wat[:, :, 2], axis=-1)
    assert np.allclose(hh, 2 * 0.09572 * np.sin(np.deg2rad(104.52) / 2))
    # cations: hydrogens farther from the ion than the oxygen; anions: one H closer
    d_h = np.linalg.norm(wat[:, :, 1:] - ion[:, None, None], axis=-1).min(-1)
    assert np.all((d_h > d_o)[charge > 0]) and np.all((d_h < d_o)[charge < 0])
    # no two shell atoms of different waters closer than 0.15 nm
    for i in range(5):
        a = wat[i].reshape(-1, 3)
        mol = np.repeat(np.arange(k), 3)
        d = np.linalg.norm(a[:, None] - a[None], axis=-1)
        assert d[mol[:, None] != mol[None]].min() > 0.15


def test_go_sites_are_found_in_a_cg_itp(tmp_path):
    """martinize2 -go appends one CA virtual site per residue after the chain's beads; a CG itp with
    them (start: cg from a Go build) marks its chain for the Go layout, one without does not."""
    from types import SimpleNamespace

    from multiscale.classes.chain import go_site_count
    from multiscale.workflow.martinize import go_chains

    assert go_site_count(["BB", "SC1", "BB", "CA", "CA"]) == 2
    assert go_site_count(["BB", "CA", "BB"]) == 0 and go_site_count(["BB", "SC1"]) == 0
    assert go_site_count(["CA"]) == 0  # the Martini calcium ion, not a Go site
    itp = tmp_path / "p.itp"
    itp.write_text("[ moleculetype ]\nPgo 1\n[ atoms ]\n1 P2 1 ALA BB 1 0\n2 P2 2 ALA BB 2 0\n3 P_1 1 ALA CA 3 0\n"
                   "4 P_2 2 ALA CA 4 0\n[ moleculetype ]\nPplain 1\n[ atoms ]\n1 P2 1 ALA BB 1 0\n")
    aa = tmp_path / "aa.top"  # Pgo is an amino-acid chain of the AA topology; CA (calcium) would not be
    aa.write_text("[ moleculetype ]\nPgo 3\n[ atoms ]\n1 N 1 ALA N 1 0 14\n2 C 1 ALA CA 1 0 12\n3 N 2 ALA N 1 0 14\n"
                  "4 C 2 ALA CA 1 0 12\n[ bonds ]\n1 2 1\n2 3 1\n3 4 1\n[ system ]\nx\n[ molecules ]\nPgo 1\n")
    cfg = SimpleNamespace(system=SimpleNamespace(martinize=SimpleNamespace(go=False), cg_include_files=lambda: [itp],
                                                 aa_topology=aa))
    assert go_chains(cfg, {}) == ["Pgo"]
    cfg.system.martinize.go = True
    assert go_chains(cfg, {"Chain_B": None}) == ["Chain_B", "Pgo"]

import pytest

from multiscale.errors import MultiscaleError
from multiscale.topology import load_topology


def test_top_blocks_and_bonds(toy):
    top = load_topology(toy["top"])
    assert [(b.moltype.name, b.count, b.start) for b in top.blocks] == [("TOY", 3, 0), ("SOL", 8, 15)]
    assert top.n_atoms == 3 * 5 + 8 * 3
    toy_mt = top.moltypes["TOY"]
    assert toy_mt.atom_names == ("C1", "C2", "C3", "O1", "HO")
    assert toy_mt.elements == ("C", "C", "C", "O", "H")
    assert sorted(map(tuple, toy_mt.bonds.tolist())) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    sol = top.moltypes["SOL"]
    assert sol.is_water and not toy_mt.is_water
    assert len(sol.bonds) == 2  # SETTLES water still has O-H bonds in the graph
    assert top.per_atom("atom_names")[15] == "OW"
    assert top.resids()[-1] == 11


def test_fingerprint_changes_with_counts(tmp_path):
    from conftest import write_toy

    a = write_toy(tmp_path / "a" if (tmp_path / "a").mkdir() is None else None, ntoy=3)
    b = write_toy(tmp_path / "b" if (tmp_path / "b").mkdir() is None else None, ntoy=4)
    fa, fb = load_topology(a["top"]).fingerprint(), load_topology(b["top"]).fingerprint()
    assert fa != fb
    assert load_topology(a["top"]).moltypes["TOY"].fingerprint() == load_topology(b["top"]).moltypes["TOY"].fingerprint()


def test_missing_topology_one_line(tmp_path):
    with pytest.raises(MultiscaleError, match=r"topology file .*nope.top not found"):
        load_topology(tmp_path / "nope.top")


def test_undefined_molecule(tmp_path, toy):
    text = toy["top"].read_text().replace("SOL 8", "XYZ 8")
    toy["top"].write_text(text)
    with pytest.raises(MultiscaleError, match="XYZ"):
        load_topology(toy["top"])

import numpy as np
import pytest

from multiscale.errors import MultiscaleError
from multiscale.mapping import load_mapping, parse_map_text
from multiscale.topology import load_topology


def test_map_matrix_shared_atom(toy):
    top = load_topology(toy["top"])
    mp = load_mapping(toy["map"])
    m = mp.for_moltype(top.moltypes["TOY"]).matrix(top.moltypes["TOY"])
    assert m.shape == (2, 5)
    np.testing.assert_allclose(m.sum(1), 1.0)
    # C2 is shared: half weight in each bead
    np.testing.assert_allclose(m[0], [1 / 1.5, 0.5 / 1.5, 0, 0, 0])
    np.testing.assert_allclose(m[1], [0, 0.5 / 3.5, 1 / 3.5, 1 / 3.5, 1 / 3.5])


def test_yaml_mapping_equals_map(tmp_path, toy):
    (tmp_path / "toy.yaml").write_text(
        "molecules:\n  TOY:\n    beads: [A, B]\n    atoms: {C1: A, C2: [A, B], C3: B, O1: B, HO: B}\n"
        "water: {aa: SOL, cg: W, bead: W, per_bead: 4}\n"
    )
    top = load_topology(toy["top"])
    a = load_mapping(toy["map"]).for_moltype(top.moltypes["TOY"]).matrix(top.moltypes["TOY"])
    b = load_mapping(tmp_path / "toy.yaml").for_moltype(top.moltypes["TOY"]).matrix(top.moltypes["TOY"])
    np.testing.assert_allclose(a, b)


def test_com_weighting(toy):
    top = load_topology(toy["top"])
    mm = load_mapping(toy["map"]).molecules["TOY"]
    mm.weighting = "com"
    m = mm.matrix(top.moltypes["TOY"])
    assert m[1, 4] < m[1, 3]  # hydrogen lighter than oxygen


def test_atom_absent_from_topology(toy):
    toy["map"].write_text(toy["map"].read_text().replace("4 O1 B", "4 OX B"))
    top = load_topology(toy["top"])
    mp = load_mapping(toy["map"])
    with pytest.raises(MultiscaleError, match=r"toy.map: atom OX of TOY is not in topology moleculetype TOY"):
        mp.check(top)


def test_unknown_bead_and_empty_bead():
    with pytest.raises(MultiscaleError, match="bead 'C'"):
        parse_map_text("[ molecule ]\nX\n[ martini ]\nA B\n[ atoms ]\n1 C1 A\n2 C2 C\n3 C3 B\n", "x.map")
    with pytest.raises(MultiscaleError, match="bead B of X has no atoms"):
        parse_map_text("[ molecule ]\nX\n[ martini ]\nA B\n[ atoms ]\n1 C1 A\n", "x.map")
    with pytest.raises(MultiscaleError, match=r"missing or empty \[ atoms \]"):
        parse_map_text("[ molecule ]\nX\n[ martini ]\nA\n", "x.map")


def test_missing_mapping_for_moltype(toy, tmp_path):
    other = tmp_path / "other.map"
    other.write_text("[ molecule ]\nFOO\n[ martini ]\nA\n[ atoms ]\n1 C1 A\n")
    with pytest.raises(MultiscaleError, match="moleculetype TOY .* has no mapping"):
        load_mapping(other).check(load_topology(toy["top"]))


def test_vermouth_map_files_parse():
    """Real-world .map files shipped with vermouth (martini3001) parse."""
    from pathlib import Path

    import vermouth  # test extra: its martini3001 .map files are real-world input

    d = Path(vermouth.__file__).parent / "data" / "mappings" / "martini3001"
    files = sorted(d.glob("*.map"))[:40]
    assert files
    n = 0
    for f in files:
        text = f.read_text()
        if "[ molecule ]" not in text or "[ atoms ]" not in text:
            continue
        mols = parse_map_text(text, str(f))
        assert mols and mols[0].beads
        n += 1
    assert n > 5

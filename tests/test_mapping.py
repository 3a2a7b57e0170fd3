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


# --- bad input (issue 10): encodings, repeated beads, wrong YAML types, zero weights ---


def test_map_with_utf8_bom_and_utf16_loads(toy, tmp_path):
    text = toy["map"].read_text()
    for name, data in (("bom.map", b"\xef\xbb\xbf" + text.encode()), ("u16.map", text.encode("utf-16"))):
        (tmp_path / name).write_bytes(data)
        mp = load_mapping(tmp_path / name)
        assert mp.molecules["TOY"].beads == ["A", "B"]


def test_map_text_with_bom_parses(toy):
    assert parse_map_text("\ufeff" + toy["map"].read_text(), "bom.map")[0].beads == ["A", "B"]


def test_map_not_utf8_is_one_line(toy, tmp_path):
    p = tmp_path / "latin1.map"
    p.write_bytes(toy["map"].read_text().replace("C1", "C\xe91").encode("latin-1"))
    with pytest.raises(MultiscaleError, match=r"latin1.map: mapping file is not UTF-8 text \(bad byte at offset \d+\)"):
        load_mapping(p)


def test_repeated_bead_name_is_refused_not_nan(toy):
    """Before: [ martini ] A A B gave a 0/0 weight row and NaN beads written with exit 0."""
    with pytest.raises(MultiscaleError, match=r"bead name\(s\) A listed twice"):
        parse_map_text(toy["map"].read_text().replace("A B\n", "A A B\n"), "toy.map")


@pytest.mark.parametrize("body, match", [
    ("molecules:\n  TOY:\n    beads: [A]\n    atoms: {C1: 5}\n", r"molecules.TOY.atoms.C1 must be a name or a list of names"),
    ("molecules:\n  TOY:\n    beads: 1.5\n    atoms: {C1: A}\n", r"molecules.TOY.beads must be a name or a list"),
    ("molecules:\n  TOY:\n    beads: [A]\n    atoms: [C1, A]\n", r"molecules.TOY.atoms must map atom names"),
    ("molecules:\n  TOY: 3\n", r"molecules.TOY must be a mapping with 'beads' and 'atoms'"),
    ("molecules: [TOY]\n", r"molecules must map moleculetype names"),
    ("molecules:\n  TOY:\n    beads: [A]\n    atoms: {1: A}\n", r"atom name 1 must be a string"),
    ("water: {per_bead: 0}\n", r"water.per_bead must be a whole number from 1 to 12"),
    ("water: {per_bead: '4'}\n", r"water.per_bead must be a whole number"),
    ("water: {per_bead: 4.0}\n", r"water.per_bead must be a whole number"),
    ("water: {aa: 5}\n", r"water.aa must be a moleculetype/bead name"),
    ("water: {size: 4}\n", r"water: takes only 'aa', 'cg', 'bead' and 'per_bead'"),
    ("water: 4\n", r"water: takes only"),
    ("ions: {waters_per_ion: x}\n", r"ions.waters_per_ion must be a whole number from 0 to 12"),
    ("ions: {waters_per_ion: 13}\n", r"ions.waters_per_ion must be a whole number from 0 to 12"),
])
def test_yaml_wrong_value_types_are_one_line(tmp_path, body, match):
    """Before: TypeError / AttributeError / ZeroDivisionError tracebacks."""
    p = tmp_path / "m.yaml"
    p.write_text(body)
    with pytest.raises(MultiscaleError, match=match) as e:
        load_mapping(p)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_yaml_not_utf8_is_one_line(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_bytes("molecules:\n  T\xd6Y: {beads: [A], atoms: {C1: A}}\n".encode("latin-1"))
    with pytest.raises(MultiscaleError, match="not UTF-8 text"):
        load_mapping(p)


def test_zero_mass_bead_with_com_weighting_is_refused(toy):
    from multiscale.topology import MoleculeType

    mt = MoleculeType("Z", ("A1", "A2"), ("Z", "Z"), ("X", "X"), np.zeros(2), np.zeros(2), np.zeros((0, 2), int))
    mm = parse_map_text("[ molecule ]\nZ\n[ martini ]\nP\n[ atoms ]\n1 A1 P\n2 A2 P\n", "z.map")[0]
    assert np.allclose(mm.matrix(mt), 0.5)
    mm.weighting = "com"
    with pytest.raises(MultiscaleError, match="bead P of Z has zero total mass"):
        mm.matrix(mt)


def test_long_values_are_clipped_in_messages():
    with pytest.raises(MultiscaleError) as e:
        parse_map_text("x" * 5000 + "\n[ molecule ]\n", "long.map")
    assert len(str(e.value)) < 300
    with pytest.raises(MultiscaleError) as e:
        parse_map_text("[ molecule ]\nX\n[ martini ]\nA\n[ atoms ]\n1 C1 " + "B" * 5000 + "\n", "long.map")
    assert len(str(e.value)) < 300


def test_cg_molecule_section_names_the_martini_moleculetype():
    """CHARMM's CHL1 is Martini 3's CHOL: a .map says so in [ cg_molecule ] (shipped lipid maps use it)."""
    from multiscale.paths import find_data

    mm = load_mapping(find_data("mappings", "lipids/CHL1.map")).molecules["CHL1"]
    assert mm.cg_name == "CHOL" and mm.beads[0] == "ROH"
    assert load_mapping(find_data("mappings", "lipids/POPC.map")).molecules["POPC"].cg_name == "POPC"

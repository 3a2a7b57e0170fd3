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


def test_molecule_names_match_case_insensitively_as_grompp_does(toy):
    """CG2AT2 writes [ molecules ] PROTEIN_0 for [ moleculetype ] protein_0; grompp accepts it."""
    toy["top"].write_text(toy["top"].read_text().replace("SOL 8", "sol 8"))
    top = load_topology(toy["top"])
    assert [(b.moltype.name, b.count) for b in top.blocks] == [("TOY", 3), ("SOL", 8)]


def test_missing_topology_one_line(tmp_path):
    with pytest.raises(MultiscaleError, match=r"topology file .*nope.top not found"):
        load_topology(tmp_path / "nope.top")


def test_undefined_molecule(tmp_path, toy):
    text = toy["top"].read_text().replace("SOL 8", "XYZ 8")
    toy["top"].write_text(text)
    with pytest.raises(MultiscaleError, match="XYZ"):
        load_topology(toy["top"])


# --- bad input (issue 10) ---


def test_error_inside_included_itp_names_itp_and_line(toy):
    toy["itp"].write_text(toy["itp"].read_text().replace("TOY 3", "TOY 3 extra"))
    with pytest.raises(MultiscaleError, match=r"toy.itp:4: cannot read GROMACS topology"):
        load_topology(toy["top"])


def test_circular_include_is_one_line(toy):
    """Before: 'maximum recursion depth exceeded'."""
    toy["itp"].write_text('#include "toy.itp"\n' + toy["itp"].read_text())
    with pytest.raises(MultiscaleError, match=r"toy.itp:1: circular #include of .*toy.itp"):
        load_topology(toy["top"])


def test_atomic_number_200_is_one_line(toy):
    """Before: IndexError from ParmEd's element table."""
    toy["top"].write_text(toy["top"].read_text().replace("c3 12.011 0.0 A", "c3 200 12.011 0.0 A"))
    with pytest.raises(MultiscaleError, match=r"toy.top:5: atom type c3 .* has atomic number 200"):
        load_topology(toy["top"])


def test_huge_molecule_count_is_not_expanded(tmp_path):
    """Before: ParmEd built every copy (SOL 2000000 grew to 11.5 GB); the count is now only
    recorded (and checked against the structure by the readers), absurd totals are refused."""
    import time

    from conftest import write_toy

    p = write_toy(tmp_path, nsol=2_000_000)
    t0 = time.perf_counter()
    top = load_topology(p["top"])
    assert time.perf_counter() - t0 < 10
    assert top.n_atoms == 15 + 6_000_000
    p["top"].write_text(p["top"].read_text().replace("SOL 2000000", "SOL 20000000000"))
    with pytest.raises(MultiscaleError, match=r"toy.top:\d+: \[ molecules \] SOL 20000000000 makes more than"):
        load_topology(p["top"])


def test_parmed_warnings_not_printed_before_the_error(toy):
    """A real process (pytest would capture warnings): stderr holds the error line only."""
    import subprocess
    import sys

    # nrexcl 1 with a 4-bond chain: ParmEd warns 'nrexcl 1 not currently supported'
    toy["itp"].write_text(toy["itp"].read_text().replace("TOY 3", "TOY 1"))
    toy["top"].write_text(toy["top"].read_text().replace("SOL 8", "SOL 8\nXYZ 1"))
    code = ("import sys; from multiscale.topology import load_topology; from multiscale.errors import MultiscaleError\n"
            f"try: load_topology({str(toy['top'])!r})\nexcept MultiscaleError as e: print('error:', e, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "XYZ" in r.stderr, r.stderr


@pytest.mark.parametrize("change, match", [
    (("[ atoms ]\n1 c3", "[ atoms ]\n; 1 c3"), None),
    (("SOL 8", "SOL -8"), r"bad \[ molecules \] line 'SOL -8'"),
    (("SOL 8", "SOL ²"), r"bad \[ molecules \] line"),
    (("[ system ]", "[ system"), r"malformed section header"),
])
def test_bad_top_lines_are_one_line(toy, change, match):
    if match is None:  # TOY without atoms: refused instead of a 0-atom molecule
        toy["itp"].write_text(toy["itp"].read_text().split("[ atoms ]")[0])
        match = r"toy.itp:\d+: \[ moleculetype \] TOY has no \[ atoms \]"
    else:
        toy["top"].write_text(toy["top"].read_text().replace(*change))
    with pytest.raises(MultiscaleError, match=match) as e:
        load_topology(toy["top"])
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_top_not_utf8_is_one_line(toy):
    toy["top"].write_bytes(toy["top"].read_text().encode("utf-16"))
    with pytest.raises(MultiscaleError, match="toy.top: not UTF-8 text"):
        load_topology(toy["top"])

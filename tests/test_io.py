import numpy as np
import pytest

from multiscale.errors import MultiscaleError
from multiscale.io import atomic_path, read_frames, write_frames


def _write(tmp_path, name, nframes=2):
    pos = np.random.default_rng(0).uniform(0, 2, (nframes, 4, 3)).astype(np.float32)
    names = np.array(["OW", "HW1", "HW2", "NA"])
    write_frames(tmp_path / name, pos if nframes > 1 else pos[0], np.array([2.0, 2.0, 2.0]), names,
                 np.array(["SOL"] * 3 + ["NA"]), np.array([1, 1, 1, 2]), times=np.arange(nframes) * 5.0)
    return pos


def test_gro_roundtrip_nm(tmp_path):
    pos = _write(tmp_path, "a.gro", 1)
    f = read_frames(tmp_path / "a.gro")
    np.testing.assert_allclose(f.positions[0], pos[0], atol=1e-3)  # .gro precision 0.001 nm
    np.testing.assert_allclose(f.box[0], [2, 2, 2])
    assert list(f.names) == ["OW", "HW1", "HW2", "NA"]


def test_multiframe_gro_is_a_trajectory(tmp_path):
    pos = _write(tmp_path, "m.gro", 3)
    f = read_frames(tmp_path / "m.gro")
    assert f.n_frames == 3
    np.testing.assert_allclose(f.positions, pos, atol=1e-3)
    assert read_frames(tmp_path / "m.gro", step=2).n_frames == 2


def test_xtc_roundtrip_and_times(tmp_path):
    pos = _write(tmp_path, "s.gro", 1)
    pos = _write(tmp_path, "t.xtc", 3)
    f = read_frames(tmp_path / "s.gro", tmp_path / "t.xtc")
    assert f.n_frames == 3
    np.testing.assert_allclose(f.times, [0, 5, 10])
    np.testing.assert_allclose(f.positions, pos, atol=2e-3)


def test_atom_count_and_empty_errors(tmp_path):
    _write(tmp_path, "a.gro", 1)
    with pytest.raises(MultiscaleError, match=r"a.gro has 4 atoms but the topology expects 7"):
        read_frames(tmp_path / "a.gro", expected_atoms=7)
    with pytest.raises(MultiscaleError, match="no frames selected"):
        read_frames(tmp_path / "a.gro", start=5)
    with pytest.raises(MultiscaleError, match="not found"):
        read_frames(tmp_path / "missing.gro")


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.gro"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_triclinic_box_round_trip(tmp_path):
    """A rhombic dodecahedron box survives .gro and .xtc writes/reads as (F, 3, 3) nm vectors."""
    d = 4.0
    box = np.array([[d, 0, 0], [0, d, 0], [d / 2, d / 2, d * np.sqrt(2) / 2]])
    pos = np.random.default_rng(0).uniform(0, 3, (2, 5, 3)).astype(np.float32)
    names = np.array(["O"] * 5)
    for name in ("t.gro", "t.xtc"):
        write_frames(tmp_path / name, pos, box, names, names, np.arange(1, 6))
    fr = read_frames(tmp_path / "t.gro")
    assert fr.box.shape == (2, 3, 3)
    assert np.allclose(fr.box[0], box, atol=2e-5)
    fx = read_frames(tmp_path / "t.gro", tmp_path / "t.xtc")
    assert np.allclose(fx.box[1], box, atol=2e-4)
    # orthorhombic stays (F, 3) edge lengths
    write_frames(tmp_path / "o.gro", pos, np.array([3.0, 3.0, 3.0]), names, names, np.arange(1, 6))
    assert read_frames(tmp_path / "o.gro").box.shape == (2, 3)


# --- bad input (issue 10): one line naming file and line, never NaN, no reader noise ---


def _gro_lines(tmp_path):
    _write(tmp_path, "ok.gro", 1)
    return (tmp_path / "ok.gro").read_text().splitlines()


@pytest.mark.parametrize("edit, match", [
    (lambda L: L[:3] + [L[3][:20] + "     nan" + L[3][28:]] + L[4:], r"bad.gro:4: atom 2 of frame 1 has a NaN/inf coordinate"),
    (lambda L: L[:5] + [L[5][:28] + "     inf" + L[5][36:]] + L[6:], r"bad.gro:6: atom 4 of frame 1 has a NaN/inf coordinate"),
    (lambda L: L[:-1] + ["   nan   nan   nan"], r"bad.gro: invalid box"),
    (lambda L: L[:-1] + ["  -2.0   2.0   2.0"], r"bad.gro: invalid box"),
    (lambda L: L[:-1] + ["   2.0   2.0"], r"bad.gro:7: box line '2.0 2.0' must hold 3 or 9 numbers"),
    (lambda L: L[:4] + ["    1SOL     OW"] + L[5:], r"bad.gro:5: atom line too short"),
    (lambda L: L[:4] + [L[4][:20] + "   1.000     abc   3.000"] + L[5:], r"bad.gro:5: coordinates .* are not numbers"),
    (lambda L: L[:1] + ["four"] + L[2:], r"bad.gro:2: malformed .gro: expected the atom count"),
    (lambda L: L[:1] + ["40"] + L[2:], r"bad.gro:2: truncated .gro frame: 40 atoms announced"),
    (lambda L: ["", "  "], r"bad.gro: empty .gro file"),
])
def test_bad_gro_is_one_line_with_file_and_line(tmp_path, edit, match):
    """Before: NaN accepted, or 'list index out of range' / 'Failed to load ... with parser'."""
    (tmp_path / "bad.gro").write_text("\n".join(edit(_gro_lines(tmp_path))) + "\n")
    with pytest.raises(MultiscaleError, match=match) as e:
        read_frames(tmp_path / "bad.gro")
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_nan_in_second_frame_names_its_line(tmp_path):
    _write(tmp_path, "m.gro", 2)
    L = (tmp_path / "m.gro").read_text().splitlines()
    L[10] = L[10][:20] + "     nan" + L[10][28:]  # frame 2: title (line 8), count, atoms from line 10
    (tmp_path / "m.gro").write_text("\n".join(L) + "\n")
    with pytest.raises(MultiscaleError, match=r"m.gro:11: atom 2 of frame 2 has a NaN/inf"):
        read_frames(tmp_path / "m.gro")


def test_bad_pdb_coordinates(tmp_path):
    _write(tmp_path, "ok.pdb", 1)
    L = (tmp_path / "ok.pdb").read_text().splitlines()
    k = next(i for i, l in enumerate(L) if l.startswith(("ATOM", "HETATM")))
    for value, match in (("     nan", r"NaN/inf coordinate"), ("    abcd", rf"bad.pdb:{k + 1}: x y z .* are not numbers")):
        L2 = L[:k] + [L[k][:30] + value + L[k][38:]] + L[k + 1:]
        (tmp_path / "bad.pdb").write_text("\n".join(L2) + "\n")
        with pytest.raises(MultiscaleError, match=match):
            read_frames(tmp_path / "bad.pdb")


def test_gro_not_utf8_is_one_line(tmp_path):
    L = _gro_lines(tmp_path)
    (tmp_path / "bad.gro").write_bytes(("\n".join(L) + "\n").replace("SOL", "S\xd6L", 1).encode("latin-1"))
    with pytest.raises(MultiscaleError, match=r"bad.gro: .gro file is not UTF-8 text"):
        read_frames(tmp_path / "bad.gro")


def test_trajectory_as_structure_is_one_line(tmp_path):
    _write(tmp_path, "md.xtc", 2)
    with pytest.raises(MultiscaleError, match=r"structure .*md.xtc is a trajectory: give a .gro/.pdb structure"):
        read_frames(tmp_path / "md.xtc")


def test_empty_or_broken_xtc_is_one_line_without_noise(tmp_path):
    """Before: the error line was followed by 8 lines of 'Exception ignored in ... __del__'."""
    import subprocess
    import sys

    _write(tmp_path, "a.gro", 1)
    (tmp_path / "empty.xtc").write_bytes(b"")
    (tmp_path / "junk.xtc").write_bytes(b"0123456789abcdef")
    code = ("import sys, gc\nfrom multiscale.io import read_frames\nfrom multiscale.errors import MultiscaleError\n"
            "for t in sys.argv[2:]:\n    try: read_frames(sys.argv[1], t)\n"
            "    except MultiscaleError as e: print('error:', e, file=sys.stderr)\n    gc.collect()\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.gro"), str(tmp_path / "empty.xtc"),
                        str(tmp_path / "junk.xtc")], capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and all(l.startswith("error: ") for l in lines), r.stderr
    assert "empty.xtc is empty" in lines[0] and "junk.xtc" in lines[1]


def test_write_unknown_suffix_is_one_line_and_leaves_nothing(tmp_path):
    """Before: MDAnalysis' TypeError naming the hidden temporary file."""
    with pytest.raises(MultiscaleError, match=r"out.foo: cannot write a structure as .foo") as e:
        _write(tmp_path, "out.foo", 1)
    assert ".partial-" not in str(e.value) and list(tmp_path.iterdir()) == []


def test_unwritable_output_folder_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(MultiscaleError, match=r"cannot write .*afile/out.gro"):
        _write(tmp_path / "afile", "out.gro", 1)


def test_nan_positions_are_never_written(tmp_path):
    """Before: NaN beads from a bad mapping were written to .xtc with exit 0."""
    pos = np.zeros((2, 4, 3), np.float32)
    pos[1, 2, 0] = np.nan
    names = np.array(["OW", "HW1", "HW2", "NA"])
    for name in ("x.xtc", "x.gro"):
        with pytest.raises(MultiscaleError, match=r"not written: 1 atom position\(s\) are NaN/inf \(first: atom 3 of frame 2\)"):
            write_frames(tmp_path / name, pos, [2.0, 2.0, 2.0], names, names, np.arange(4))
    assert list(tmp_path.iterdir()) == []

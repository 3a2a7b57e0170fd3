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

import numpy as np
import pytest

from conftest import toy_coords, write_toy
from multiscale.coarse_grain import cg_layout, cg_names, check_cg_beads, coarse_grain, write_cg_topology
from multiscale.errors import MultiscaleError
from multiscale.mapping import load_mapping
from multiscale.topology import load_topology


def _setup(tmp_path, ntoy=3, nsol=8):
    p = write_toy(tmp_path, ntoy, nsol)
    return load_topology(p["top"]), load_mapping(p["map"])


def test_layout_and_counts(tmp_path):
    top, mp = _setup(tmp_path)
    layout = cg_layout(top, mp)
    assert [(b.cg_name, b.count, b.n_beads, b.start) for b in layout] == [("TOY", 3, 2, 0), ("W", 2, 1, 6)]
    names, resn, resid = cg_names(layout)
    assert list(names) == ["A", "B"] * 3 + ["W", "W"]
    assert list(resid) == [1, 1, 2, 2, 3, 3, 4, 5]


def test_beads_are_weighted_centres(tmp_path):
    top, mp = _setup(tmp_path)
    x = toy_coords(3, 8, box=5.0)
    box = np.array([[5.0, 5.0, 5.0]])
    # keep the molecules away from the box edge: plain centres must come out
    x = x * 0.5 + 1.0
    cg = coarse_grain(x[None], box, top, mp)
    m = cg.layout[0].matrix
    expected = np.einsum("ba,mak->mbk", m, x[:15].reshape(3, 5, 3)).reshape(-1, 3)
    np.testing.assert_allclose(cg.positions[0, :6], expected, atol=1e-6)
    assert cg.positions.shape == (1, 8, 3)


def test_pbc_molecule_split_across_box(tmp_path):
    top, mp = _setup(tmp_path, ntoy=1, nsol=4)
    L = 2.0
    mol = np.array([[1.90, 1.0, 1.0], [2.053, 1.0, 1.0], [2.104, 1.144, 1.0], [2.247, 1.144, 1.0], [2.28, 1.235, 1.0]])
    wat = np.array([[0.5, 0.5, 0.5], [0.5957, 0.5, 0.5], [0.476, 0.5927, 0.5]])
    whole = np.concatenate([mol] + [wat + [0.3 * i, 0, 0] for i in range(4)])
    wrapped = whole - L * np.floor(whole / L)
    box = np.array([[L, L, L]])
    a = coarse_grain(whole[None], box, top, mp).positions
    b = coarse_grain(wrapped[None], box, top, mp).positions
    d = (a - b) - L * np.round((a - b) / L)
    np.testing.assert_allclose(d, 0, atol=1e-6)
    # bead B of the straddling molecule is just across the edge, wrapped into the box
    assert np.all((b >= 0) & (b < L))
    m = cg_layout(top, mp)[0].matrix
    expected_b = (m[1] @ mol) % L
    np.testing.assert_allclose(b[0, 1], expected_b, atol=1e-6)


def test_water_groups_conserve_counts(tmp_path):
    top, mp = _setup(tmp_path, ntoy=2, nsol=16)
    x = toy_coords(2, 16, box=2.5, seed=3)
    cg = coarse_grain(np.stack([x, x]), np.array([[2.5] * 3, [2.5] * 3]), top, mp, seed=1)
    groups = cg.water_groups[0][0]
    assert groups.shape == (4, 4)
    assert sorted(groups.ravel().tolist()) == list(range(16))
    assert cg.positions.shape == (2, 2 * 2 + 4, 3)


def test_water_not_multiple_of_four(tmp_path):
    top, mp = _setup(tmp_path, ntoy=1, nsol=6)
    with pytest.raises(MultiscaleError, match="6 SOL molecules is not a multiple of 4: remove 2"):
        cg_layout(top, mp)


def test_wrong_atom_count(tmp_path):
    top, mp = _setup(tmp_path)
    with pytest.raises(MultiscaleError, match="have 10 atoms but topology .* has 39"):
        coarse_grain(np.zeros((1, 10, 3)), np.ones((1, 3)), top, mp)


def test_bead_count_check(tmp_path):
    top, mp = _setup(tmp_path)
    layout = cg_layout(top, mp)
    check_cg_beads(8, layout, "cg.gro")
    with pytest.raises(MultiscaleError, match=r"cg.gro has 9 beads but the mapping expects 8 \(TOY x3 -> 6, W x2 -> 2\)"):
        check_cg_beads(9, layout, "cg.gro")


def test_cg_topology_file(tmp_path):
    top, mp = _setup(tmp_path)
    inc = tmp_path / "ff" / "martini.itp"
    inc.parent.mkdir()
    inc.write_text("; dummy\n")
    out = write_cg_topology(tmp_path / "sys" / "cg.top", cg_layout(top, mp), [inc])
    text = out.read_text()
    assert '#include "../ff/martini.itp"' in text
    assert "TOY        3" in text and "W          2" in text


def test_water_bead_on_another_bead_is_moved_off_it(tmp_path):
    """Four waters around a solute bead have their centre on it (the membrane-protein example's
    cycle 2 CG EM stopped with an infinite force on a W bead 0.019 nm from a PO4 bead): that W
    bead is moved out to W_MIN_DISTANCE; a W bead away from every other bead stays the centre of
    its four waters."""
    from multiscale.coarse_grain import W_MIN_DISTANCE
    from multiscale.geometry import minimum_image

    top, mp = _setup(tmp_path, ntoy=1, nsol=8)
    L = 4.0
    mol = np.array([[1.90, 1.0, 1.0], [2.053, 1.0, 1.0], [2.104, 1.144, 1.0], [2.247, 1.144, 1.0], [2.28, 1.235, 1.0]])
    bead_a = cg_layout(top, mp)[0].matrix[0] @ mol
    wat = np.array([[0.0, 0.0, 0.0], [0.0957, 0.0, 0.0], [-0.024, 0.0927, 0.0]])
    wat = wat - (wat * np.array([16.0, 1.008, 1.008])[:, None]).sum(0) / 18.015  # centred on the water's centre of mass
    tetra = 0.3 / np.sqrt(3) * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    around = [wat + bead_a + t for t in tetra]  # their centre: bead A
    far_com = [np.array([3.0, 3.0, 3.0]) + 0.1 * np.eye(3)[k % 3] * (k + 1) for k in range(4)]
    far = [wat + c for c in far_com]
    x = np.concatenate([mol] + around + far)
    cg = coarse_grain(x[None], np.array([[L, L, L]]), top, mp)
    w = cg.positions[0, 2:]
    d_a = np.linalg.norm(minimum_image(w - bead_a, np.array([L, L, L])), axis=1)
    assert d_a.min() >= W_MIN_DISTANCE - 1e-9  # without the move: < 0.01 nm
    assert np.linalg.norm(w - np.mean(far_com, axis=0), axis=1).min() < 1e-3  # the other W bead: its waters' centre
    assert cg.water_beads_moved == 1

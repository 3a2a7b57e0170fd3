"""PeriodicTree and triclinic geometry against brute force over all 27 images."""

import numpy as np
import pytest

from multiscale.errors import MultiscaleError
from multiscale.geometry import box_matrix, check_box, minimum_image, shortest_lattice_vector, wrap
from multiscale.neighbours import PeriodicTree


def dodecahedron(d):
    """GROMACS rhombic dodecahedron (xy-square) with image distance d (nm)."""
    return np.array([[d, 0, 0], [0, d, 0], [d / 2, d / 2, d * np.sqrt(2) / 2]])


def octahedron(d):
    """GROMACS truncated octahedron with image distance d (nm)."""
    return np.array([[d, 0, 0], [d / 3, 2 * np.sqrt(2) * d / 3, 0],
                     [-d / 3, np.sqrt(2) * d / 3, np.sqrt(6) * d / 3]])


BOXES = [np.diag([3.0, 4.0, 5.0]), dodecahedron(4.0), octahedron(4.0)]


def brute_min_image(d, box):
    d = d - np.round(d @ np.linalg.inv(box)) @ box
    n = np.array(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij")).reshape(3, -1).T @ box
    c = d[:, None, :] + n[None]
    k = np.argmin((c ** 2).sum(-1), axis=1)
    return c[np.arange(len(d)), k]


@pytest.mark.parametrize("box", BOXES)
def test_minimum_image_is_shortest(box):
    rng = np.random.default_rng(0)
    d = rng.uniform(-12, 12, (2000, 3))
    got = minimum_image(d, box)
    ref = brute_min_image(d, box)
    assert np.allclose(np.linalg.norm(got, axis=1), np.linalg.norm(ref, axis=1), atol=1e-9)
    # same lattice class: the difference is a lattice vector
    frac = (got - d) @ np.linalg.inv(box)
    assert np.allclose(frac, np.round(frac), atol=1e-9)


def test_orthorhombic_matrix_equals_lengths():
    rng = np.random.default_rng(1)
    d = rng.uniform(-10, 10, (100, 3))
    L = np.array([3.0, 4.0, 5.0])
    assert np.array_equal(minimum_image(d, L), minimum_image(d, box_matrix(L)))
    assert np.array_equal(wrap(d, L), wrap(d, box_matrix(L)))


@pytest.mark.parametrize("box", BOXES)
def test_wrap_into_cell(box):
    rng = np.random.default_rng(2)
    x = rng.uniform(-20, 20, (500, 3))
    w = wrap(x, box)
    s = w @ np.linalg.inv(box)
    assert np.all(s >= -1e-12) and np.all(s < 1 + 1e-12)
    frac = (w - x) @ np.linalg.inv(box)
    assert np.allclose(frac, np.round(frac), atol=1e-9)


@pytest.mark.parametrize("box", BOXES)
def test_tree_pairs_match_brute_force(box):
    rng = np.random.default_rng(3)
    x = rng.uniform(-3, 8, (400, 3))
    r = 0.9
    got = PeriodicTree(x, box, r).query_pairs(r)
    i, j = np.triu_indices(len(x), 1)
    dist = np.linalg.norm(brute_min_image(x[j] - x[i], box), axis=1)
    ref = np.stack([i, j], 1)[dist < r]
    assert np.array_equal(got, ref[np.lexsort((ref[:, 1], ref[:, 0]))])


@pytest.mark.parametrize("box", BOXES)
def test_tree_ball_and_nearest(box):
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 4, (300, 3))
    q = rng.uniform(-5, 9, (50, 3))
    r = 0.8
    t = PeriodicTree(x, box, r)
    balls = t.query_ball_point(q, r)
    d, idx = t.query(q, k=1, distance_upper_bound=r)
    for k in range(len(q)):
        dist = np.linalg.norm(brute_min_image(x - q[k], box), axis=1)
        assert np.array_equal(balls[k], np.flatnonzero(dist < r))
        if dist.min() < r:
            assert idx[k] == np.argmin(dist) and np.isclose(d[k], dist.min())
        else:
            assert idx[k] == len(x)


def test_tree_rejects_large_cutoff():
    with pytest.raises(ValueError):
        PeriodicTree(np.zeros((2, 3)), dodecahedron(2.0), 1.5)


def test_check_box():
    assert check_box(dodecahedron(3.0)).shape == (3, 3)
    assert shortest_lattice_vector(dodecahedron(3.0)) == pytest.approx(3.0)
    with pytest.raises(MultiscaleError, match="skewed"):
        check_box(np.array([[3, 0, 0], [2.5, 3, 0], [0, 0, 3]]))
    with pytest.raises(MultiscaleError, match="NaN"):
        check_box(np.array([np.nan, 3, 3]))


def test_minimum_image_box_stack_matches_single_boxes():
    """Per-frame stacks of triclinic boxes (F, 1, 3, 3) give the same vectors as frame-by-frame calls."""
    rng = np.random.default_rng(7)
    boxes = np.stack([dodecahedron(4.0), octahedron(3.5), dodecahedron(3.0)])
    d = rng.uniform(-6, 6, (3, 50, 3))
    got = minimum_image(d, boxes[:, None])
    for f in range(3):
        assert np.allclose(got[f], minimum_image(d[f], boxes[f]), atol=1e-12)
        assert np.allclose(np.linalg.norm(got[f], axis=1), np.linalg.norm(brute_min_image(d[f], boxes[f]), axis=1))

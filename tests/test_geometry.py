"""multiscale.geometry: weighted bead centres from dense and sparse weight matrices."""

import numpy as np
import pytest
import scipy.sparse as sp

from multiscale.geometry import apply_weights, dense_weights


@pytest.mark.parametrize("lead", [(), (4,), (2, 3)])
def test_sparse_weights_give_the_dense_centres(lead):
    rng = np.random.default_rng(0)
    w = rng.random((5, 12)) * (rng.random((5, 12)) < 0.3)
    w[np.arange(5), np.arange(5)] += 1.0  # every bead has an atom
    w /= w.sum(1, keepdims=True)
    x = rng.normal(size=(*lead, 12, 3))
    dense = apply_weights(w, x)
    assert dense.shape == (*lead, 5, 3)
    assert np.allclose(dense, np.einsum("ba,...ak->...bk", w, x))
    assert np.allclose(apply_weights(sp.csr_matrix(w), x), dense, atol=1e-14)
    assert np.allclose(apply_weights(sp.coo_matrix(w), x), dense, atol=1e-14)


def test_dense_weights_densifies_only_sparse_input():
    w = np.eye(3)
    assert dense_weights(w) is not None and np.array_equal(dense_weights(sp.csr_matrix(w)), w)
    assert dense_weights(w).dtype == np.float64

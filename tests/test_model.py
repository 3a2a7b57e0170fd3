"""Conditional IC density: von Mises sampler, bimodal torsion reproduction, conditioning, determinism."""

import math

import numpy as np
import pytest
import torch

from multiscale.backmap.features import cg_features, feature_names, n_features
from multiscale.backmap.ictree import ICTree
from multiscale.backmap.model import ICDensity, fit, sample_von_mises, von_mises_log_prob


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def jsd(a, b, bins=36):
    p = np.histogram(a, bins, (-np.pi, np.pi))[0] + 1e-12
    q = np.histogram(b, bins, (-np.pi, np.pi))[0] + 1e-12
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    return 0.5 * (p * np.log2(p / m)).sum() + 0.5 * (q * np.log2(q / m)).sum()


def test_von_mises_sampler_moments_and_density():
    g = torch.Generator().manual_seed(0)
    for kappa in (0.5, 4.0, 50.0, 3000.0):
        mu = torch.full((20000,), 1.0, dtype=torch.float64)
        x = sample_von_mises(mu, torch.full_like(mu, kappa), g).numpy()
        r = np.abs(np.mean(np.exp(1j * (x - 1.0))))
        expect = float(torch.special.i1e(torch.tensor(kappa)) / torch.special.i0e(torch.tensor(kappa)))
        assert abs(r - expect) < 0.01
        assert np.all(x <= np.pi) and np.all(x > -np.pi)
    # density integrates to 1
    t = torch.linspace(-math.pi, math.pi, 20001, dtype=torch.float64)
    for kappa in (0.1, 5.0, 400.0):
        p = torch.exp(von_mises_log_prob(t, torch.tensor(0.3), torch.tensor(kappa)))
        assert abs(float(torch.trapezoid(p, t)) - 1.0) < 1e-3


def synthetic_chain(n, seed=0):
    """4-atom chain, torsion 60 % trans / 20 % +g / 20 % -g (kappa 20); 2 beads."""
    rng = np.random.default_rng(seed)
    tree = ICTree.build(4, np.array([[0, 1], [1, 2], [2, 3]]))
    b = rng.normal(0.153, 0.003, (n, 3))
    a = rng.normal(1.95, 0.04, (n, 2))
    u = rng.random(n)
    centre = np.where(u < 0.6, np.pi, np.where(u < 0.8, 1.1, -1.1))
    t = centre + rng.vonmises(0, 20, n)
    t = (t + np.pi) % (2 * np.pi) - np.pi
    x = tree.to_cartesian(b, a, t[:, None])
    M = np.array([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    beads = np.einsum("ba,nak->nbk", M, x)
    return tree, x, beads


def test_bimodal_torsion_reproduced_not_collapsed():
    tree, x, beads = synthetic_chain(4000)
    bo, an, to = tree.to_internal(x)
    f = cg_features(beads)
    torch.manual_seed(0)
    m = ICDensity(f.shape[1], 3, 2, 1, hidden=64, torsion_hidden=32)
    info = fit(m, f, bo, an, to, epochs=8, seed=0, log=None)
    assert np.isfinite(info["val_nll"])
    # held-out check: fresh CG inputs of the same distribution
    tree2, x2, beads2 = synthetic_chain(4000, seed=1)
    _, _, t_ref = tree2.to_internal(x2)
    g = torch.Generator().manual_seed(5)
    sb, sa, st = m.sample(torch.as_tensor(cg_features(beads2)), g)
    st = st[:, 0].numpy()
    assert jsd(st, t_ref[:, 0]) < 0.02
    trans = np.mean(np.abs(st) > 2.2)
    assert abs(trans - 0.6) < 0.05
    assert abs(np.mean((st > 0.3) & (st < 2.0)) - 0.2) < 0.04
    # width inside the trans mode ~ 1/sqrt(20) rad: no collapse onto the mode
    tr = st[np.abs(st) > 2.2]
    width = np.sqrt(-2 * np.log(np.abs(np.mean(np.exp(1j * (tr - np.pi))))))
    assert 0.15 < width < 0.32
    # bonds/angles: mean and spread
    assert abs(float(sb.mean()) - 0.153) < 0.001 and 0.002 < float(sb.std()) < 0.004
    assert abs(float(sa.mean()) - 1.95) < 0.01
    # the conditioning is used: short bead distances -> gauche, long -> trans
    d = cg_features(beads2)[:, 0]
    short = d < np.quantile(d, 0.3)
    assert np.mean(np.abs(st[short]) > 2.2) < np.mean(np.abs(st[~short]) > 2.2) - 0.2


def test_sampling_deterministic_and_autoregressive_shapes():
    torch.manual_seed(0)
    m = ICDensity(3, 5, 4, 3, hidden=16, torsion_hidden=8, n_components=3)
    f = torch.randn(50, 3, dtype=torch.float64)
    a = m.sample(f, torch.Generator().manual_seed(7))
    b = m.sample(f, torch.Generator().manual_seed(7))
    c = m.sample(f, torch.Generator().manual_seed(8))
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert not torch.equal(a[2], c[2])
    assert a[0].shape == (50, 5) and a[1].shape == (50, 4) and a[2].shape == (50, 3)
    # teacher-forced parameters of torsion k do not depend on torsions >= k
    h = m.context(f)
    t = torch.rand(50, 3, dtype=torch.float64) * 6 - 3
    t2 = t.clone()
    t2[:, 2] += 1.0
    r1 = m._torsion_raw_all(h, t)
    r2 = m._torsion_raw_all(h, t2)
    assert torch.allclose(r1[:, :3], r2[:, :3])
    t3 = t.clone()
    t3[:, 0] += 1.0
    assert not torch.allclose(m._torsion_raw_all(h, t3)[:, 1], r1[:, 1])
    # serialisation
    m2 = ICDensity.from_dict(m.to_dict())
    d = m2.sample(f, torch.Generator().manual_seed(7))
    assert torch.equal(d[2], a[2])


def test_feature_layout():
    beads = np.random.default_rng(0).normal(size=(7, 5, 3))
    f = cg_features(beads)
    assert f.shape == (7, n_features(5)) == (7, len(feature_names(list("ABCDE"))))
    # invariant under rotation + translation; the torsion sine flips under reflection
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    g = cg_features(beads @ q + 1.0)
    assert np.allclose(f, g)
    r = cg_features(beads * np.array([1, 1, -1]))
    nd = 10 + 3
    assert np.allclose(r[:, :nd], f[:, :nd]) and np.allclose(r[:, nd::2], -f[:, nd::2])


@pytest.mark.parametrize("epochs", [1, 2, 10])
def test_fit_with_very_few_optimiser_steps(epochs):
    """A handful of optimiser steps (a short fine-tune, few molecules) trains instead of failing in
    the learning-rate schedule (OneCycleLR divided by zero for fewer than 20 steps)."""
    torch.manual_seed(0)
    m = ICDensity(3, 5, 4, 3, hidden=16, torsion_hidden=8, n_components=3)
    f = torch.randn(30, 3, dtype=torch.float64)
    out = fit(m, f, torch.rand(30, 5, dtype=torch.float64) * 0.1 + 0.1, torch.rand(30, 4, dtype=torch.float64) + 1.5,
              torch.rand(30, 3, dtype=torch.float64) * 6 - 3, epochs=epochs, batch_size=512, seed=0)
    assert math.isfinite(out["train_nll"])


def test_float16_storage_packs_only_the_autoregressive_weights_it_uses():
    """Shipped (float16) files keep only the masked-in torsion-to-torsion weights; loading restores a
    model that samples exactly as the float16-rounded original."""
    torch.manual_seed(0)
    m = ICDensity(3, 5, 4, 6, hidden=16, torsion_hidden=8, n_components=3)
    d = m.to_dict("float16")
    assert d["wt_packed"] and d["state_dict"]["wt"].numel() == int(m._wt_mask().sum()) < m.wt.numel()
    m2 = ICDensity.from_dict(d)
    ref = ICDensity.from_dict({"hyper": m.hyper, "state_dict": {k: (v.half().float() if v.dtype == torch.float32 else v)
                                                              for k, v in m.state_dict().items()}})
    f = torch.randn(20, 3, dtype=torch.float64)
    for u, v in zip(m2.sample(f, torch.Generator().manual_seed(3)), ref.sample(f, torch.Generator().manual_seed(3))):
        assert torch.equal(u, v)

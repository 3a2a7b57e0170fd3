"""Conditional density of a molecule's internal coordinates given its CG bead features.

``p(bonds, angles, torsions | f) = N(bonds, angles | f) * prod_k vM-mix(t_k | f, angles, t_<k)``

* ``f``: CG features (:mod:`multiscale.backmap.features`), standardised with training
  statistics and clamped to the training range (no extrapolation outside what was seen);
  a context MLP turns them into a vector ``h``.
* Bonds and angles: a Gaussian whose mean and per-coordinate widths are linear in ``h``
  (coordinates standardised by the training mean/std) with a learned correlation factor
  ``L`` (unit lower-triangular, constant): ``z = mu(h) + sigma(h) * (L eps)``, so coupled
  angles at a branching centre keep their covariance.
* Torsions: autoregressive in tree order.  The parameters of torsion ``k`` (a mixture of
  ``K`` von Mises: weights, means, concentrations) come from a small per-torsion MLP whose
  input is ``h``, the (already sampled, standardised) bond angles, and sin/cos of the
  torsions sampled before it (masked weights, so all
  torsions are evaluated in one pass for the likelihood).  ``steps`` (one integer per torsion)
  sets the order: torsions of a lower step come first; torsions sharing a step are sampled
  together (conditionally independent given the earlier ones).  The engine gives every free
  heavy-atom torsion its own step in tree order and puts all hydrogen torsions and sibling
  offsets (near-rigid branch geometry) into one final step, so the number of sequential
  sampling steps is the number of free heavy-atom torsions + 1.

Trained by maximum likelihood (:func:`fit`).  Sampling at temperature 1 draws from the fitted
density (no mode collapse); ``temperature < 1`` sharpens it (kappa / T, logits / T, sigma * T).
Radians and nm throughout.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

__all__ = ["ICDensity", "fit", "sample_von_mises", "von_mises_log_prob"]

_LOG2PI = math.log(2 * math.pi)
KAPPA_MAX = 5000.0


def von_mises_log_prob(x, mu, kappa):
    """log density of von Mises(mu, kappa) at x (radians), broadcasting torch tensors."""
    return kappa * (torch.cos(x - mu) - 1.0) - _LOG2PI - torch.log(torch.special.i0e(kappa))


VM_PROPOSALS = 8
VM_UNIFORMS = 3 * VM_PROPOSALS + 2


def sample_von_mises(mu: torch.Tensor, kappa: torch.Tensor, generator: torch.Generator | None = None,
                     uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """Draw one sample per element of von Mises(mu, kappa) (Best & Fisher 1979), vectorised.

    Every element gets ``proposals`` rejection-sampling proposals from one ``torch.rand`` call
    (or the pre-drawn ``uniforms`` (n, VM_UNIFORMS) float64) and keeps the first accepted one
    (acceptance >= 0.65 for any kappa, so all 8 fail with p < 2e-4); the rare elements
    with none accepted are redrawn in a loop.  Very large kappa (> 1000) uses the normal limit
    N(mu, 1/kappa) (Box-Muller from the same uniforms).  Deterministic for a given
    ``generator`` state; the result is wrapped to [-pi, pi).
    """
    shape = mu.shape
    mu64 = mu.double().reshape(-1)
    k = kappa.double().clamp(min=1e-8).reshape(-1)
    n, dev, R = mu64.numel(), mu64.device, VM_PROPOSALS
    if n == 0:
        return mu.clone()
    tau = 1.0 + torch.sqrt(1.0 + 4.0 * k * k)
    rho = (tau - torch.sqrt(2.0 * tau)) / (2.0 * k)
    r = ((1.0 + rho * rho) / (2.0 * rho))[:, None]
    u = uniforms if uniforms is not None else torch.rand(n, VM_UNIFORMS, generator=generator, dtype=torch.float64, device=dev)
    z = torch.cos(math.pi * u[:, :R])
    f = (1.0 + r * z) / (r + z)
    c = k[:, None] * (r - f)
    # the exact acceptance test (the usual squeeze c (2 - c) > u only saves work per element)
    acc = torch.log(c / u[:, R:2 * R].clamp(min=1e-300)) + 1.0 - c >= 0
    first = acc.to(torch.int8).argmax(-1, keepdim=True)
    th = torch.sign(u[:, 2 * R:3 * R].gather(-1, first)[:, 0] - 0.5) * torch.arccos(f.gather(-1, first)[:, 0].clamp(-1.0, 1.0))
    big = k > 1000.0
    g = torch.sqrt(-2.0 * torch.log(u[:, -2].clamp(min=1e-300))) * torch.cos(2 * math.pi * u[:, -1])
    out = torch.where(big, g / torch.sqrt(k), th)
    if not bool(acc.any(-1).all()):
        left = torch.nonzero(~acc.any(-1) & ~big).reshape(-1)
        for _ in range(200):
            if len(left) == 0:
                break
            uu = torch.rand(3, len(left), generator=generator, dtype=torch.float64, device=dev)
            rr, kt = r[left, 0], k[left]
            zc = torch.cos(math.pi * uu[0])
            ff = (1.0 + rr * zc) / (rr + zc)
            cc = kt * (rr - ff)
            ok = torch.log(cc / uu[1].clamp(min=1e-300)) + 1.0 - cc >= 0
            out[left[ok]] = (torch.sign(uu[2] - 0.5) * torch.arccos(ff.clamp(-1.0, 1.0)))[ok]
            left = left[~ok]
    x = torch.remainder(mu64 + out + math.pi, 2 * math.pi) - math.pi
    return x.reshape(shape).to(mu.dtype)


class ICDensity(nn.Module):
    """Per-moltype conditional density of internal coordinates (see module docstring).

    n_features: CG feature count (0 allowed: unconditional); n_bonds/n_angles/n_torsions:
    from the :class:`~multiscale.backmap.ictree.ICTree`; hidden: context width;
    torsion_hidden: width of each per-torsion MLP; n_components: von Mises mixture size.
    """

    def __init__(self, n_features: int, n_bonds: int, n_angles: int, n_torsions: int, hidden: int = 128,
                 torsion_hidden: int = 48, n_components: int = 6, steps: list | None = None):
        super().__init__()
        self.hyper = dict(n_features=int(n_features), n_bonds=int(n_bonds), n_angles=int(n_angles),
                          n_torsions=int(n_torsions), hidden=int(hidden), torsion_hidden=int(torsion_hidden),
                          n_components=int(n_components),
                          steps=[int(v) for v in (range(n_torsions) if steps is None else steps)])
        if len(self.hyper["steps"]) != n_torsions:
            raise ValueError(f"steps has {len(self.hyper['steps'])} entries for {n_torsions} torsions")
        nf, nb, na, nt = n_features, n_bonds, n_angles, n_torsions
        H, Ht, K = hidden, torsion_hidden, n_components
        self.register_buffer("feat_mean", torch.zeros(max(nf, 1), dtype=torch.float64))
        self.register_buffer("feat_std", torch.ones(max(nf, 1), dtype=torch.float64))
        self.register_buffer("feat_lo", torch.full((max(nf, 1),), -1e30, dtype=torch.float64))
        self.register_buffer("feat_hi", torch.full((max(nf, 1),), 1e30, dtype=torch.float64))
        self.register_buffer("ba_mean", torch.zeros(nb + na, dtype=torch.float64))
        self.register_buffer("ba_std", torch.ones(nb + na, dtype=torch.float64))
        self.ctx = nn.Sequential(nn.Linear(max(nf, 1), H), nn.SiLU(), nn.Linear(H, H), nn.SiLU())
        self.ba_head = nn.Linear(H, max(2 * (nb + na), 2))  # (2 unused outputs for 1-atom molecules)
        nn.init.zeros_(self.ba_head.weight)
        nn.init.zeros_(self.ba_head.bias)
        # correlations between bonds/angles: unit lower-triangular factor (strict part learned)
        self.ba_chol = nn.Parameter(torch.zeros(nb + na, nb + na))
        self.register_buffer("tril_mask", torch.tril(torch.ones(nb + na, nb + na), -1))
        T = nt
        self.wc = nn.Parameter(torch.randn(T, Ht, H) / math.sqrt(H))
        self.wt = nn.Parameter(torch.randn(T, Ht, 2 * T) / math.sqrt(max(2 * T, 1)) * 0.5)
        self.b1 = nn.Parameter(torch.zeros(T, Ht))
        self.wa = nn.Parameter(torch.zeros(T, Ht, max(na, 1)))  # sampled angles -> torsion MLPs
        self.w2 = nn.Parameter(torch.randn(T, Ht, Ht) / math.sqrt(Ht))
        self.b2 = nn.Parameter(torch.zeros(T, Ht))
        self.w3 = nn.Parameter(torch.randn(T, 3 * K, Ht) * 0.01)
        # initial mixture: means spread over the circle, moderate concentration
        b3 = torch.zeros(T, 3 * K)
        phi = torch.arange(K) * (2 * math.pi / K)
        b3[:, K:2 * K] = torch.cos(phi)
        b3[:, 2 * K:] = torch.sin(phi)
        self.b3 = nn.Parameter(b3)
        self.b_kappa = nn.Parameter(torch.full((T, K), 1.0))
        st = torch.as_tensor(self.hyper["steps"], dtype=torch.long).reshape(T)
        mask = (st[None, :] < st[:, None]).float().repeat_interleave(2, dim=1)  # (T, 2T)
        self.register_buffer("mask", mask)
        self._step_groups = [torch.nonzero(st == v).reshape(-1) for v in torch.unique(st).tolist()]

    # ------------------------------------------------------------------ helpers
    def _groups(self, dev):
        """Sampling steps in order: (indices (m,) long on ``dev``, slice or None when contiguous)."""
        cache = getattr(self, "_group_cache", None)
        if cache is None or cache[0] != str(dev):
            out = []
            for ks in self._step_groups:
                k0, k1 = int(ks[0]), int(ks[-1]) + 1
                contiguous = k1 - k0 == len(ks) and bool((ks == torch.arange(k0, k1)).all())
                out.append((ks.to(dev), slice(k0, k1) if contiguous else None))
            cache = self._group_cache = (str(dev), out)
        return cache[1]

    @property
    def n_torsions(self) -> int:
        return self.hyper["n_torsions"]

    def set_statistics(self, features: torch.Tensor, bonds: torch.Tensor, angles: torch.Tensor) -> None:
        """Store feature / bond / angle standardisation statistics from training data."""
        nf = self.hyper["n_features"]
        with torch.no_grad():
            if nf:
                f = features.double()
                self.feat_mean.copy_(f.mean(0))
                self.feat_std.copy_(f.std(0).clamp(min=1e-3) if len(f) > 1 else torch.ones(nf, dtype=torch.float64))
                self.feat_lo.copy_(f.min(0).values)
                self.feat_hi.copy_(f.max(0).values)
            ba = torch.cat([bonds, angles], -1).double()
            if ba.shape[-1]:
                self.ba_mean.copy_(ba.mean(0))
                self.ba_std.copy_(ba.std(0).clamp(min=1e-4) if len(ba) > 1 else torch.ones(ba.shape[-1], dtype=torch.float64))

    def context(self, features: torch.Tensor) -> torch.Tensor:
        """(B, n_features) raw features -> (B, hidden) context (standardised, clamped)."""
        nf = self.hyper["n_features"]
        dt = self.wc.dtype
        if nf == 0:
            z = torch.zeros(features.shape[0], 1, dtype=dt, device=self.wc.device)
        else:
            f = torch.maximum(torch.minimum(features.double(), self.feat_hi), self.feat_lo)
            z = ((f - self.feat_mean) / self.feat_std).to(dt)
        return self.ctx(z)

    def _ba_params(self, h):
        nba = self.ba_mean.shape[0]
        out = self.ba_head(h)
        mu, log_s = out[:, :nba], out[:, nba:].clamp(-7.0, 3.0)
        return mu, log_s

    def _chol(self) -> torch.Tensor:
        n = self.ba_chol.shape[0]
        return torch.eye(n, dtype=self.ba_chol.dtype, device=self.ba_chol.device) + self.ba_chol * self.tril_mask

    def _angle_input(self, za: torch.Tensor) -> torch.Tensor:
        """(B, na) standardised angles -> (B, max(na, 1)) input of the torsion MLPs."""
        return za if za.shape[-1] else za.new_zeros(za.shape[0], 1)

    def _mix_params(self, raw: torch.Tensor, k_idx=None):
        """raw (..., 3K) -> logits (..., K), mu (..., K), kappa (..., K)."""
        K = self.hyper["n_components"]
        logits = raw[..., :K]
        mu = torch.atan2(raw[..., 2 * K:], raw[..., K:2 * K])
        bk = self.b_kappa if k_idx is None else self.b_kappa[k_idx]
        # kappa from the norm of the (cos, sin) head times a learned scale: rigid offsets can
        # reach KAPPA_MAX
        scale = torch.sqrt(raw[..., K:2 * K] ** 2 + raw[..., 2 * K:] ** 2 + 1e-12)
        kappa = (nn.functional.softplus(bk) * scale * 4.0).clamp(1e-3, KAPPA_MAX)
        return logits, mu, kappa

    def _torsion_raw_all(self, h: torch.Tensor, torsions: torch.Tensor, za: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced mixture parameters of all torsions: (B, T, 3K); za: standardised angles (B, na)."""
        s = torch.stack([torch.sin(torsions), torch.cos(torsions)], -1).flatten(-2).to(h.dtype)  # (B, 2T)
        T, Ht = self.wc.shape[0], self.wc.shape[1]
        if za is None:
            za = h.new_zeros(h.shape[0], self.hyper["n_angles"])
        # first layer of all T per-torsion MLPs as dense matmuls (much faster than batched)
        z = (h @ self.wc.reshape(T * Ht, -1).T + s @ (self.wt * self.mask[:, None, :]).reshape(T * Ht, -1).T
             + self._angle_input(za.to(h.dtype)) @ self.wa.reshape(T * Ht, -1).T)
        z = nn.functional.silu(z.reshape(-1, T, Ht) + self.b1)
        z = nn.functional.silu(torch.bmm(z.transpose(0, 1), self.w2.transpose(1, 2)).transpose(0, 1) + self.b2)
        return torch.bmm(z.transpose(0, 1), self.w3.transpose(1, 2)).transpose(0, 1) + self.b3

    # ------------------------------------------------------------------ density
    def log_prob(self, features: torch.Tensor, bonds: torch.Tensor, angles: torch.Tensor,
                 torsions: torch.Tensor, reduce: bool = True):
        """log p per sample (B,) (``reduce``) or the parts (bond+angle (B, nb+na), torsion (B, T))."""
        h = self.context(features)
        dt = h.dtype
        ba = torch.cat([bonds, angles], -1).double()
        parts_ba = h.new_zeros(h.shape[0], 0)
        zt = ((ba - self.ba_mean) / self.ba_std).to(dt)
        if ba.shape[-1]:
            mu, log_s = self._ba_params(h)
            u = (zt - mu) / torch.exp(log_s)
            eps = torch.linalg.solve_triangular(self._chol(), u.T, upper=False, unitriangular=True).T
            parts_ba = -0.5 * eps ** 2 - log_s - 0.5 * _LOG2PI - torch.log(self.ba_std).to(dt)
        parts_t = h.new_zeros(h.shape[0], 0)
        if self.n_torsions:
            t = torsions.to(dt)
            raw = self._torsion_raw_all(h, t, zt[:, self.hyper["n_bonds"]:])
            logits, mu_t, kappa = self._mix_params(raw)
            lp = von_mises_log_prob(t[..., None], mu_t, kappa) + torch.log_softmax(logits, -1)
            parts_t = torch.logsumexp(lp, -1)
        if reduce:
            return parts_ba.sum(-1) + parts_t.sum(-1)
        return parts_ba, parts_t

    @torch.no_grad()
    def sample(self, features: torch.Tensor, generator: torch.Generator | None = None, temperature: float = 1.0,
               repeats: int = 1):
        """Draw (bonds (R*B, nb) nm, angles (R*B, na) rad, torsions (R*B, T) rad) for features (B, nf).

        repeats R: independent draws per feature row, returned repeat-major (rows r*B .. r*B+B-1
        are draw r of all B inputs); the feature-dependent parts are computed once."""
        h1 = self.context(features)
        B1, dt, dev = h1.shape[0], h1.dtype, h1.device
        R = int(repeats)
        B = B1 * R
        nb, na = self.hyper["n_bonds"], self.hyper["n_angles"]
        T = self.n_torsions
        ba = torch.zeros(B, nb + na, dtype=torch.float64, device=dev)
        if nb + na:
            mu, log_s = (v.repeat(R, 1) for v in self._ba_params(h1))
            eps = torch.randn(B, nb + na, generator=generator, dtype=torch.float64, device=dev)
            u = eps @ self._chol().double().T
            z = mu.double() + torch.exp(log_s.double()) * u * temperature
            ba = self.ba_mean + self.ba_std * z
        tors = torch.zeros(B, T, dtype=torch.float64, device=dev)
        if T:
            K, Ht = self.hyper["n_components"], self.wc.shape[1]
            s = torch.zeros(B, 2 * T, dtype=dt, device=dev)
            za = ((ba[:, nb:] - self.ba_mean[nb:]) / self.ba_std[nb:]).to(dt)
            # first layer of every torsion MLP from the context and the angles: (B, T * Ht)
            hc = torch.addmm(self.b1.reshape(-1), h1, self.wc.reshape(T * Ht, -1).T)
            if R > 1:
                hc = hc.repeat(R, 1)
            hc = hc.addmm_(self._angle_input(za), self.wa.reshape(T * Ht, -1).T)
            hc = hc.reshape(B, T, Ht).transpose(0, 1).contiguous()  # (T, B, Ht): per-step blocks contiguous
            wtm = self.wt * self.mask[:, None, :]  # (T, Ht, 2T): only earlier torsions feed in
            kap0 = nn.functional.softplus(self.b_kappa) * 4.0  # (T, K)
            U = torch.rand(T, B, VM_UNIFORMS + 1, generator=generator, device=dev).double()
            for ks, sl in self._groups(dev):
                m = len(ks)
                at = sl if sl is not None else ks  # a slice (a view, no copy) where contiguous
                if m == 1:
                    k = int(ks[0])
                    z = hc[k]
                    if k:
                        z = torch.addmm(z, s, wtm[k].T)
                    z = nn.functional.silu(z)
                    z = nn.functional.silu(torch.addmm(self.b2[k], z, self.w2[k].T))
                    raw = torch.addmm(self.b3[k], z, self.w3[k].T)[:, None]  # (B, 1, 3K)
                else:
                    z = hc[at]  # (m, B, Ht)
                    z = torch.baddbmm(z, s.expand(m, B, 2 * T), wtm[ks].transpose(1, 2))
                    z = nn.functional.silu(z)
                    z = nn.functional.silu(torch.baddbmm(self.b2[ks][:, None], z, self.w2[ks].transpose(1, 2)))
                    raw = torch.baddbmm(self.b3[ks][:, None], z, self.w3[ks].transpose(1, 2)).transpose(0, 1)
                # pick the component from the logits (inverse CDF; no softmax kernel, which is
                # slow for K ~ 6 on CPU), then build mu/kappa of that one only
                logits = raw[..., :K] / temperature if temperature != 1.0 else raw[..., :K]
                cdf = torch.cumsum(torch.exp(logits - logits.max(-1, keepdim=True).values), -1)  # (B, m, K)
                u = U[at].transpose(0, 1)  # (B, m, VM_UNIFORMS + 1)
                comp = (u[..., -1:] * cdf[..., -1:] > cdf).sum(-1, keepdim=True).clamp(max=K - 1)
                cc = raw[..., K:2 * K].gather(-1, comp)[..., 0]
                ss = raw[..., 2 * K:].gather(-1, comp)[..., 0]
                mu_c = torch.atan2(ss, cc)
                bk = kap0[ks].expand(B, m, K).gather(-1, comp)[..., 0]
                kap_c = (bk * torch.sqrt(cc * cc + ss * ss + 1e-12)).clamp(1e-3, KAPPA_MAX) / temperature
                t = sample_von_mises(mu_c.reshape(-1).double(), kap_c.reshape(-1), generator,
                                     u[..., :-1].reshape(-1, VM_UNIFORMS)).reshape(B, m)
                t32 = t.to(dt)
                tors[:, at] = t
                s.view(B, T, 2)[:, at, 0] = torch.sin(t32)
                s.view(B, T, 2)[:, at, 1] = torch.cos(t32)
        return ba[:, :nb], ba[:, nb:], tors

    def to_dict(self, storage: str = "float32") -> dict:
        """Hyper-parameters and weights; ``storage="float16"`` halves the float32 weights for shipped
        files (:meth:`from_dict` loads them back into float32 parameters)."""
        half = storage == "float16"
        sd = {k: (v.detach().cpu().half() if half and v.dtype == torch.float32 else v.detach().cpu())
              for k, v in self.state_dict().items()}
        if not half:
            return {"hyper": dict(self.hyper), "state_dict": sd}
        # shipped files: only the weights of earlier torsions feeding later ones (the mask's
        # ones) are stored -- the rest never enters the model and is zero on loading
        sd["wt"] = sd["wt"].masked_select(self._wt_mask())
        return {"hyper": dict(self.hyper), "state_dict": sd, "wt_packed": True}

    def _wt_mask(self) -> torch.Tensor:
        return (self.mask[:, None, :] > 0).expand(self.wt.shape).cpu()

    @classmethod
    def from_dict(cls, d: dict) -> ICDensity:
        m = cls(**d["hyper"])
        sd = d["state_dict"]
        if d.get("wt_packed"):
            sd = dict(sd)
            m.mask.copy_(sd["mask"])
            full = torch.zeros_like(m.wt, dtype=sd["wt"].dtype)
            sd["wt"] = full.masked_scatter_(m._wt_mask(), sd["wt"])
        m.load_state_dict(sd)
        return m


def fit(model: ICDensity, features, bonds, angles, torsions, *, epochs: int = 30, batch_size: int = 512,
        lr: float = 3e-3, seed: int = 0, feature_noise: float = 0.02, val_fraction: float = 0.05,
        device: str = "cpu", set_stats: bool = True, log=print, label: str = "", weight_decay: float = 0.0) -> dict:
    """Maximum-likelihood training of ``model`` on (N, ...) numpy/torch arrays.

    features (N, nf); bonds (N, nb) nm; angles (N, na) rad; torsions (N, T) rad.
    feature_noise: Gaussian noise added to the standardised features during training (in
    units of their std), which smooths the conditional against small CG/AA mismatches.
    AdamW (``weight_decay``) with a one-cycle schedule; a held-out fraction gives the
    validation NLL.  Returns a dict
    (``train_nll``, ``val_nll`` per molecule in nats, ``epochs``, ``n_samples``, ``seconds``).
    """
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    F = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    Bn = torch.as_tensor(np.asarray(bonds), dtype=torch.float64)
    An = torch.as_tensor(np.asarray(angles), dtype=torch.float64)
    Tn = torch.as_tensor(np.asarray(torsions), dtype=torch.float64)
    N = F.shape[0]
    if set_stats:
        model.set_statistics(F, Bn, An)
    model.to(device)
    if Bn.shape[1] + An.shape[1] + Tn.shape[1] == 0:  # a single atom: nothing to learn
        model.cpu()
        return {"train_nll": 0.0, "val_nll": 0.0, "epochs": 0, "n_samples": int(N), "seconds": time.perf_counter() - t0}
    perm = torch.randperm(N, generator=g)
    nval = int(round(N * val_fraction)) if N >= 40 else 0
    val, tr = perm[:nval], perm[nval:]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(len(tr) / batch_size))
    total = max(1, epochs * steps_per_epoch)
    if total >= 4:  # warm-up of at least 2 steps (OneCycleLR divides by zero for a shorter one)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=max(0.1, 2.0 / total))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    fstd = model.feat_std.cpu()
    nf = model.hyper["n_features"]
    train_nll = float("nan")
    model.train()
    for ep in range(epochs):
        order = tr[torch.randperm(len(tr), generator=g)]
        acc, cnt = 0.0, 0
        for s in range(steps_per_epoch):
            idx = order[s * batch_size:(s + 1) * batch_size]
            if len(idx) == 0:
                continue
            f = F[idx]
            if feature_noise and nf:
                f = f + torch.randn(f.shape, generator=g, dtype=torch.float64) * feature_noise * fstd
            lp = model.log_prob(f.to(device), Bn[idx].to(device), An[idx].to(device), Tn[idx].to(device))
            loss = -lp.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            acc += loss.item() * len(idx)
            cnt += len(idx)
        train_nll = acc / max(cnt, 1)
        if log and (ep == epochs - 1 or ep % max(1, epochs // 5) == 0):
            log(f"  {label} epoch {ep + 1}/{epochs}: NLL {train_nll:.3f}")
    model.eval()
    val_nll = float("nan")
    if nval:
        with torch.no_grad():
            val_nll = float(-model.log_prob(F[val].to(device), Bn[val].to(device), An[val].to(device),
                                            Tn[val].to(device)).mean())
    model.cpu()
    return {"train_nll": train_nll, "val_nll": val_nll, "epochs": int(epochs), "n_samples": int(N),
            "seconds": time.perf_counter() - t0}

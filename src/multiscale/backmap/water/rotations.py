"""Quaternions and rotations of water clusters (w, x, y, z quaternions; matrices act on rows)."""

from __future__ import annotations

import numpy as np

from .params import CLUSTER_MASSES


def _rot_entries(q: np.ndarray, dtype=np.float64):
    """Rotation matrix entries ``r[i][j]`` (each an (n,) array) of quaternions ``q`` (n, 4)
    (w, x, y, z; any non-zero norm: the matrix is exactly orthogonal either way)."""
    w, x, y, z = np.asarray(q, dtype=dtype).T
    s = 2 / (w * w + x * x + y * y + z * z)
    xs, ys, zs = x * s, y * s, z * s
    wx, wy, wz, xx, xy, xz = w * xs, w * ys, w * zs, x * xs, x * ys, x * zs
    yy, yz, zz = y * ys, y * zs, z * zs
    return ((1 - (yy + zz), xy - wz, xz + wy),
            (xy + wz, 1 - (xx + zz), yz - wx),
            (xz - wy, yz + wx, 1 - (xx + yy)))


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniformly distributed rotation matrices ``(n, 3, 3)`` (normalised Gaussian
    quaternions, i.e. Haar measure on SO(3))."""
    r = _rot_entries(rng.standard_normal((n, 4)))
    return np.stack([np.stack(row, axis=-1) for row in r], axis=-2)


def _com(xyz: np.ndarray) -> np.ndarray:
    """Centre of mass of (..., 12, 3) cluster coordinates -> (..., 3)."""
    return np.einsum("...ak,a->...k", xyz, CLUSTER_MASSES) / CLUSTER_MASSES.sum()


def _rotmat(q: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Rotation matrices (m, 3, 3) of quaternions ``q`` (m, 4) (see :func:`_rot_entries`)."""
    r = _rot_entries(q, dtype)
    return np.stack([np.stack(row, axis=-1) for row in r], axis=-2)


def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Quaternion products ``a * b`` (rotation b, then a), (m, 4) (w, x, y, z)."""
    aw, av = a[:, :1], a[:, 1:]
    bw, bv = b[:, :1], b[:, 1:]
    return np.concatenate([aw * bw - (av * bv).sum(1, keepdims=True),
                           aw * bv + bw * av + np.cross(av, bv)], axis=1)


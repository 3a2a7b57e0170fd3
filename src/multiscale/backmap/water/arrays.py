"""Array helpers of water placement: a small thread pool, integer sorts, vertex covers."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.spatial import cKDTree

from . import params


def _tree(x: np.ndarray, box: np.ndarray) -> cKDTree:
    """Periodic cKDTree of wrapped points x (m, 3) in an orthorhombic box (3,) (nm)."""
    return cKDTree(x, boxsize=box, balanced_tree=False, compact_nodes=False)


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _n_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (non-Linux)
        n = os.cpu_count() or 1
    return max(1, min(n, params._MAX_THREADS))


def _pmap(fn, items):
    """``[fn(x) for x in items]``, on a small thread pool (numpy releases the GIL in the
    heavy array operations); order-preserving, hence deterministic."""
    global _POOL
    n = _n_threads()
    items = list(items)
    if n == 1 or len(items) < 2:
        return [fn(x) for x in items]
    if _POOL is None or _POOL[0] != n:
        _POOL = (n, ThreadPoolExecutor(n, thread_name_prefix="multiscale-water"))
    return list(_POOL[1].map(fn, items))


def _cat(parts, dtype=np.int64):
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _cover(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """Vertex cover of the clash graph (edges i-j over n beads), greedy by degree: for each
    edge mark the endpoint with more clashes (ties: higher index).  Unmarked beads are then
    pairwise clash-free; re-drawing only the marked ones keeps the accepted set growing."""
    mark = np.zeros(n, dtype=bool)
    if len(i) == 0:
        return mark
    deg = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    pick_i = (deg[i] > deg[j]) | ((deg[i] == deg[j]) & (i > j))
    mark[np.where(pick_i, i, j)] = True
    return mark


def _sort_keys(key: np.ndarray):
    """Stable sort of non-negative integer keys: ``(order, key[order])``.  Key and index are
    packed into one int64 and sorted by numpy's SIMD sort (unique values: the result is the
    stable order, deterministic); 2x faster than the LSD radix sort below, which remains the
    fallback for keys >= 2**31 or more than 2**32 keys."""
    n = len(key)
    if n == 0:
        return np.zeros(0, dtype=np.int64), key[:0]
    if n < 2**32 and int(key.max()) < 2**31:
        c = key.astype(np.int64)
        c <<= 32
        c |= np.arange(n, dtype=np.int64)
        c.sort()
        order = c & 0xFFFFFFFF
        c >>= 32
        return order, c.astype(key.dtype)
    order = _radix_argsort(key)
    return order, key[order]


def _argsort_int(key: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative integer keys (see :func:`_sort_keys`)."""
    return _sort_keys(key)[0]


def _radix_argsort(key: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative integer keys: LSD radix sort in 16-bit digits (numpy's
    stable sort of uint16 is a radix sort; 2-3x faster than a comparison sort here)."""
    kmax = int(key.max()) if len(key) else 0
    perm, shift = None, 0
    while True:
        k = key if perm is None else key[perm]
        p = np.argsort((k >> shift).astype(np.uint16), kind="stable")  # low 16 bits
        perm = p if perm is None else perm[p]
        shift += 16
        if kmax >> shift == 0:
            return perm


"""Evaluation metrics as pure functions on arrays (nm, radians; no I/O, no topology objects).

Distribution comparison
    :func:`histogram` fixed binning per term kind (:data:`BINS`), :func:`jsd` (base 2, in [0, 1]),
    :func:`wasserstein` (1-D earth mover's distance; circular for torsions), :func:`term_values`.
CG consistency
    :func:`bead_deviation` minimum-image bead-to-bead deviations, :func:`rmsd`.
Boxes are (3,) edge lengths or (3, 3) GROMACS box vectors (triclinic) everywhere; per-frame
stacks (F, 3) / (F, 3, 3) where a function takes frames.
Stereochemistry
    :func:`chirality_signs`, :func:`cis_states`.
Sterics
    :func:`clash_pairs` (periodic neighbour search), :func:`ring_penetrations` (segment vs ring fan triangles).
"""

from __future__ import annotations

import numpy as np

from .. import graph as _graph
from ..geometry import angle, box_volume, dihedral, minimum_image, perpendicular_widths
from ..neighbours import PeriodicTree, ring_penetrations, segment_triangle_hits  # noqa: F401 (re-exported)

__all__ = [
    "BINS", "histogram", "jsd", "wasserstein", "term_values", "bead_deviation", "rmsd",
    "chirality_signs", "cis_states", "clash_pairs", "ring_penetrations", "segment_triangle_hits",
    "jsd_floor", "jsd_excess", "floor_band", "RDF_RANGE", "rdf_histograms", "frame_box", "frame_volumes", "rdf_fits",
]

#: Fixed binning per term kind: (low, high, n_bins).  Values outside are counted in the edge bins.
BINS = {
    "bond": (0.05, 0.25, 100),            # nm, 0.002 nm bins
    "angle": (0.0, np.pi, 90),            # rad, 2 degree bins
    "torsion": (-np.pi, np.pi, 36),       # rad, 10 degree bins, periodic
}


def histogram(values: np.ndarray, kind: str) -> np.ndarray:
    """Normalised histogram (n_bins,) of finite ``values`` with the fixed binning of ``kind``.

    Torsions are wrapped into [-pi, pi); bonds/angles outside the range land in the edge bins.
    Returns zeros if there are no finite values.
    """
    lo, hi, nb = BINS[kind]
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if kind == "torsion":
        v = (v + np.pi) % (2 * np.pi) - np.pi
    idx = np.clip(np.floor((v - lo) / (hi - lo) * nb).astype(int), 0, nb - 1)
    h = np.bincount(idx, minlength=nb).astype(float)
    s = h.sum()
    return h / s if s > 0 else h


def jsd(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence, base 2 (0 = identical, 1 = disjoint) of two histograms."""
    p = np.asarray(p, float)
    q = np.asarray(q, float)
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return float(min(max(0.5 * kl(p) + 0.5 * kl(q), 0.0), 1.0))


def _circular_w1(a: np.ndarray, b: np.ndarray) -> float:
    """Earth mover's distance on the circle of circumference 2 pi (radians)."""
    a = np.sort((a + np.pi) % (2 * np.pi) - np.pi)
    b = np.sort((b + np.pi) % (2 * np.pi) - np.pi)
    z = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(a, z, side="right") / len(a)
    fb = np.searchsorted(b, z, side="right") / len(b)
    d = fa - fb
    length = np.diff(np.r_[z, z[0] + 2 * np.pi])
    # min_c sum l |d - c| is reached at the l-weighted median of d
    order = np.argsort(d)
    cw = np.cumsum(length[order])
    c = d[order][np.searchsorted(cw, 0.5 * cw[-1])]
    return float(np.sum(length * np.abs(d - c)))


def wasserstein(a: np.ndarray, b: np.ndarray, periodic: bool = False) -> float:
    """1-D Wasserstein-1 distance between two samples (same unit as the values).

    periodic: treat values as angles on the circle (torsions).  NaNs are dropped; returns NaN
    if either sample is empty.
    """
    from scipy.stats import wasserstein_distance

    a = np.asarray(a, float).ravel()
    b = np.asarray(b, float).ravel()
    a = a[np.isfinite(a)]
    b = b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    if periodic:
        return _circular_w1(a, b)
    return float(wasserstein_distance(a, b))


def jsd_floor(reference: np.ndarray, n: int, kind: str, seed: int = 0, repeats: int = 5) -> float:
    """Expected JSD of a perfect method with ``n`` samples: mean JSD between ``n`` values drawn
    (seeded, with replacement) from the reference and the full reference histogram."""
    ref = np.asarray(reference, float).ravel()
    ref = ref[np.isfinite(ref)]
    if len(ref) == 0 or n <= 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    href = histogram(ref, kind)
    return float(np.mean([jsd(histogram(rng.choice(ref, size=n), kind), href) for _ in range(repeats)]))


def jsd_excess(jsd_value: float | None, floor: float | None) -> float | None:
    """JSD above the finite-sample noise floor, ``jsd - floor`` (None if ``jsd`` is None; ``jsd``
    itself when the floor is unknown).  Negative values mean: indistinguishable from a perfect
    sample of this size.  Terms are ranked by this, not by raw JSD, because a term with few
    samples sits at a high JSD even when the method is perfect."""
    if jsd_value is None:
        return None
    return float(jsd_value) - (float(floor) if floor is not None else 0.0)


def floor_band(reference: np.ndarray, n: int, edges: np.ndarray, seed: int = 0, repeats: int = 200,
               quantiles=(5.0, 95.0)) -> tuple[np.ndarray, np.ndarray]:
    """Where the histogram of a perfect method with ``n`` samples falls: ``repeats`` seeded draws
    of ``n`` values (with replacement) from ``reference``, each histogrammed as a density on
    ``edges`` (values outside clipped into the edge bins); returns the per-bin (low, high)
    quantiles, each (len(edges) - 1,), in 1/(unit of edges)."""
    ref = np.asarray(reference, float).ravel()
    ref = ref[np.isfinite(ref)]
    nb = len(edges) - 1
    if len(ref) == 0 or n <= 0:
        z = np.zeros(nb)
        return z, z
    rng = np.random.default_rng(seed)
    draws = np.clip(rng.choice(ref, size=(repeats, n)), edges[0], np.nextafter(edges[-1], -np.inf))
    idx = np.clip(np.searchsorted(edges, draws, side="right") - 1, 0, nb - 1)
    counts = np.zeros((repeats, nb))
    np.add.at(counts, (np.repeat(np.arange(repeats), n), idx.ravel()), 1.0)
    dens = counts / (n * np.diff(edges))[None]
    lo, hi = np.percentile(dens, quantiles, axis=0)
    return lo, hi


def term_values(x: np.ndarray, atoms: np.ndarray, kind: str) -> np.ndarray:
    """Values of ``kind`` terms: x (..., n_atoms, 3) whole molecules, atoms (m, k) -> (..., m).

    bond: length (nm); angle: rad in [0, pi]; torsion: rad in (-pi, pi].
    """
    pts = [x[..., atoms[:, c], :] for c in range(atoms.shape[1])]
    if kind == "bond":
        return np.linalg.norm(pts[1] - pts[0], axis=-1)
    if kind == "angle":
        return angle(*pts)
    if kind == "torsion":
        return dihedral(*pts)
    raise ValueError(f"unknown term kind {kind!r}")


def frame_box(box: np.ndarray, n_extra: int) -> np.ndarray:
    """Per-frame boxes ready to broadcast over ``n_extra`` axes after the frame axis.

    box: (F, 3) edge lengths or (F, 3, 3) box vectors (triclinic) -> (F, 1.., 3) or (F, 1.., 3, 3)."""
    b = np.asarray(box, float)
    tail = (3, 3) if b.ndim == 3 else (3,)
    return b.reshape((b.shape[0],) + (1,) * n_extra + tail)


def frame_volumes(box: np.ndarray) -> np.ndarray:
    """Cell volumes (F,) nm^3 of per-frame boxes (F, 3) or (F, 3, 3) (:func:`multiscale.geometry.box_volume`)."""
    b = np.asarray(box, float)
    return box_volume(b) if b.ndim == 3 else np.prod(b, axis=-1)


def bead_deviation(beads: np.ndarray, target: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Minimum-image deviation |beads - target| (nm): beads, target (F, B, 3), box (F, 3) or
    (F, 3, 3) (triclinic; exact minimum image) -> (F, B)."""
    d = minimum_image(np.asarray(beads, float) - np.asarray(target, float), frame_box(box, 1))
    return np.linalg.norm(d, axis=-1)


def rmsd(deviations: np.ndarray) -> float:
    """Root mean square of deviations (nm), NaNs ignored; NaN if none."""
    d = np.asarray(deviations, float).ravel()
    d = d[np.isfinite(d)]
    return float(np.sqrt(np.mean(d ** 2))) if len(d) else float("nan")


def chirality_signs(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Handedness of stereocentres: x (..., n_atoms, 3) whole; centres (s, 4) = centre + 3
    neighbours -> (..., s) in {-1, 0, +1} (0 = planar), NaN where atoms are missing
    (:func:`multiscale.graph.chirality_signs`)."""
    centres = np.asarray(centres, int).reshape(-1, 4)
    return _graph.chirality_signs(x, centres[:, 0], centres[:, 1:])


def cis_states(x: np.ndarray, torsions: np.ndarray) -> np.ndarray:
    """For torsions (n, 4) over x (..., n_atoms, 3): +1 cis (|phi| < 90 deg), -1 trans, NaN missing
    (:func:`multiscale.graph.cis_states`)."""
    return _graph.cis_states(x, torsions)


#: Intermolecular pair-distance histograms: (low, high, n_bins) nm.
RDF_RANGE = (0.0, 0.8, 80)


def rdf_fits(box: np.ndarray) -> bool:
    """Does the RDF range fit the cell (every perpendicular width >= 2 x RDF_RANGE high)?  box (3,) or (3, 3)."""
    return bool(np.min(perpendicular_widths(box)) >= 2 * RDF_RANGE[1])


def rdf_histograms(x: np.ndarray, box: np.ndarray, molecule: np.ndarray, site_class: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of intermolecular site-pair distances in one frame, per pair of site classes.

    x: (n, 3) nm of the sites (e.g. heavy atoms); box: (3,) or (3, 3) (triclinic, minimum image
    exact); molecule: (n,) molecule-copy id; site_class: (n,) int in [0, n_classes).  Returns
    (n_classes, n_classes, n_bins) counts (symmetric in the first two axes, each pair counted once
    at [min, max]) over RDF_RANGE.
    """
    lo, hi, nb = RDF_RANGE
    out = np.zeros((n_classes, n_classes, nb))
    ok = np.all(np.isfinite(x), axis=1)
    x, molecule, site_class = x[ok], molecule[ok], site_class[ok]
    if len(x) < 2:
        return out
    pairs = PeriodicTree(np.asarray(x, float), box, hi).query_pairs(hi)
    if len(pairs) == 0:
        return out
    pairs = pairs[molecule[pairs[:, 0]] != molecule[pairs[:, 1]]]
    d = np.linalg.norm(minimum_image(x[pairs[:, 1]] - x[pairs[:, 0]], box), axis=-1)
    a = np.minimum(site_class[pairs[:, 0]], site_class[pairs[:, 1]])
    b = np.maximum(site_class[pairs[:, 0]], site_class[pairs[:, 1]])
    k = np.clip(((d - lo) / (hi - lo) * nb).astype(int), 0, nb - 1)
    flat = np.bincount((a * n_classes + b) * nb + k, minlength=n_classes * n_classes * nb)
    return flat.reshape(n_classes, n_classes, nb).astype(float)


def _wrap(x, box):
    """Wrap into the primary cell (box (3,) or (3, 3)); see :func:`multiscale.geometry.wrap`."""
    from ..geometry import wrap

    return wrap(np.asarray(x, float), box)


def clash_pairs(x: np.ndarray, box: np.ndarray, molecule: np.ndarray, excluded: np.ndarray,
                inter_cutoff: float = 0.08, intra_cutoff: float = 0.10):
    """Close atom pairs in one frame, periodic (:class:`multiscale.neighbours.PeriodicTree`).

    x: (N, 3) nm (NaN rows ignored); box: (3,) or (3, 3) nm (triclinic: exact minimum image); molecule: (N,) molecule-copy id per atom;
    excluded: (P, 2) int global atom pairs i<j that never count (1-2 and 1-3 pairs).
    Returns (inter (n, 2), intra (m, 2), distances_inter, distances_intra): intermolecular pairs
    closer than ``inter_cutoff``, intramolecular pairs not in ``excluded`` closer than
    ``intra_cutoff`` (nm).
    """
    x = np.asarray(x, float)
    box = np.asarray(box, float)
    ok = np.flatnonzero(np.all(np.isfinite(x), axis=1))
    empty = np.zeros((0, 2), int)
    if len(ok) < 2:
        return empty, empty, np.zeros(0), np.zeros(0)
    r = max(inter_cutoff, intra_cutoff)
    pairs = PeriodicTree(x[ok], box, r).query_pairs(r)
    if len(pairs) == 0:
        return empty, empty, np.zeros(0), np.zeros(0)
    pairs = np.sort(ok[pairs], axis=1)
    d = np.linalg.norm(minimum_image(x[pairs[:, 1]] - x[pairs[:, 0]], box), axis=-1)
    same = molecule[pairs[:, 0]] == molecule[pairs[:, 1]]
    inter = ~same & (d < inter_cutoff)
    intra = same & (d < intra_cutoff)
    if intra.any() and len(excluded):
        n = len(x)
        keys = pairs[:, 0].astype(np.int64) * n + pairs[:, 1]
        ex = np.asarray(excluded, np.int64)
        intra &= ~np.isin(keys, ex[:, 0] * n + ex[:, 1])
    return pairs[inter], pairs[intra], d[inter], d[intra]



"""The water-cluster bank: real 4-water clusters, their construction, persistence and placement.

:class:`WaterBank` holds clusters cut out of atomistic frames with the grouping used going
AA -> CG (:func:`multiscale.water.group_waters`), stored relative to their centre of mass;
:meth:`WaterBank.place` turns W beads into TIP3P waters (:mod:`.placement`).  Lengths nm.
"""

from __future__ import annotations

import functools
import os
from importlib import resources

import numpy as np

from multiscale.errors import MultiscaleError
from multiscale.geometry import minimum_image
from multiscale.water import group_waters, water_box

from .arrays import _pmap
from .params import (
    _FORMAT,
    CLUSTER_MASSES,
    DEFAULT_BANK_FILE,
    MAX_CLUSTER_RADIUS,
    MIN_DIST_ATOMS,
    MIN_DIST_OO,
    MIN_DIST_OTHERS,
)
from .pbc import Box
from .placement import place as _place
from .rotations import _com, _rot_entries

__all__ = ["WaterBank"]


class WaterBank:
    """A bank of real 4-water clusters used to turn Martini ``W`` beads into TIP3P waters.

    Attributes
    ----------
    clusters : (K, 4, 3, 3) float32 nm, centre of mass at the origin, atom order O, H1, H2.
    n_source : number of clusters the bank was drawn from (>= K).
    note : free text describing the origin.
    last_stats : dict filled by :meth:`place` (``n_beads``, ``n_initial_clash``,
        ``n_unresolved``, ``retries``, ``unresolved``: indices of beads still clashing).
    """

    def __init__(self, clusters, n_source: int | None = None, note: str = ""):
        c = np.asarray(clusters, dtype=np.float64)
        if c.ndim != 4 or c.shape[1:] != (4, 3, 3) or len(c) == 0:
            raise MultiscaleError(
                f"water clusters have shape {c.shape}: expected (K>0, 4, 3, 3) nm "
                "(4 waters x O,H1,H2 x xyz)"
            )
        if not np.all(np.isfinite(c)):
            raise MultiscaleError("water clusters contain NaN/inf: rebuild the water bank")
        flat = c.reshape(len(c), 12, 3)
        if np.abs(_com(flat)).max() > 1e-6:  # centre (a no-op for a saved bank: exact reload)
            flat = flat - _com(flat)[:, None]
        self.clusters = flat.reshape(-1, 4, 3, 3).astype(np.float32)
        self.n_source = int(n_source if n_source is not None else len(c))
        self.note = str(note)
        self.last_stats: dict = {}
        self._stats()

    def _stats(self):
        c = self.clusters.astype(np.float64)
        self._flat = c.reshape(len(c), 12, 3)
        # residual COM of the float32 coordinates (removed again at placement)
        self._flat = self._flat - _com(self._flat)[:, None]
        # coordinate-major copies for placement: (3, 12, K) float64, oxygens (3, 4, K) float32
        self._fT = np.ascontiguousarray(self._flat.transpose(2, 1, 0))
        self._oT = np.ascontiguousarray(self._fT[:, 0::3], dtype=np.float32)
        # all atoms per coordinate (K, 12) float32 (contact stage), and each molecule split
        # into its own centre of mass g (K, 4, 3) and rigid shape about it v (K, 4, 3, 3)
        self._aT = tuple(np.ascontiguousarray(self._flat[:, :, d], dtype=np.float32)
                         for d in range(3))
        w4 = self._flat.reshape(len(c), 4, 3, 3)
        m3 = CLUSTER_MASSES[:3]
        self._g64 = np.einsum("cwad,a->cwd", w4, m3) / m3.sum()
        self._v64 = w4 - self._g64[:, :, None]
        self._g32 = self._g64.astype(np.float32)
        #: largest distance of an atom from its molecule's COM, and from its H-H midpoint
        self._rho = float(np.linalg.norm(self._v64, axis=-1).max())
        pm = self._v64[:, :, 1:].mean(axis=2, keepdims=True)
        self._rho_p = float(np.linalg.norm(self._v64 - pm, axis=-1).max())
        #: each molecule's C2 axis (COM -> O, unit vector) in its bank frame
        self._axis64 = self._v64[:, :, 0] / np.linalg.norm(self._v64[:, :, 0], axis=-1)[..., None]
        self._v32 = self._v64.astype(np.float32)
        #: largest atom distance from the COM over the bank (nm)
        self.extent = float(np.linalg.norm(self._flat, axis=-1).max())
        o = c[:, :, 0]
        d = np.linalg.norm(o[:, :, None] - o[:, None], axis=-1)
        d[:, np.arange(4), np.arange(4)] = np.inf
        #: smallest O-O distance inside any cluster (nm)
        self.min_intra_oo = float(d.min())
        a = c.reshape(len(c), 4, 1, 3, 1, 3) - c.reshape(len(c), 1, 4, 1, 3, 3)
        a = np.linalg.norm(a, axis=-1)
        a[:, np.arange(4), np.arange(4)] = np.inf
        #: smallest distance between atoms of different molecules inside any cluster (nm)
        self.min_intra_atoms = float(a.min())

    def __len__(self) -> int:
        return len(self.clusters)

    def __repr__(self) -> str:
        return f"WaterBank({len(self)} clusters, extent {self.extent:.3f} nm)"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frames(cls, water_xyz, box, groups=None, max_clusters: int = 20000, seed: int = 0,
                    max_radius: float | None = MAX_CLUSTER_RADIUS, note: str = ""):
        """Build a bank from atomistic frames.

        Parameters
        ----------
        water_xyz : (F, n_w, 3, 3) nm, atom order O, H1, H2 (a single frame (n_w, 3, 3) is
            accepted).  Molecules may be split by PBC; they are made whole (minimum image).
        box : (F, 3) nm orthorhombic edge lengths or (F, 3, 3) GROMACS box vectors (rows,
            triclinic allowed), or one (3,) / (3, 3) box for all frames.
        groups : optional per-frame (n_w // 4, 4) int index arrays (a single array is used for
            every frame); default: :func:`group_waters` with seed ``seed + frame``.
        max_clusters : keep at most this many clusters, drawn at random (seed).
        seed : seeds grouping tie-breaks and the subsampling.
        max_radius : drop clusters whose farthest oxygen is more than this from the COM (nm);
            None keeps all.
        """
        x = np.asarray(water_xyz, dtype=np.float64)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[2:] != (3, 3):
            raise MultiscaleError(
                f"water_xyz has shape {np.shape(water_xyz)}: expected (frames, n_waters, 3, 3) "
                "nm with atom order O, H1, H2"
            )
        f, n_w = x.shape[:2]
        b = np.asarray(box, dtype=np.float64)
        if b.shape in [(3,), (3, 3)]:
            b = np.broadcast_to(b, (f,) + b.shape)
        if len(b) != f:
            raise MultiscaleError(f"box has {len(b)} frames but water_xyz has {f}: pass one box "
                                  "per frame")
        rng = np.random.default_rng(seed)
        out = []
        for i in range(f):
            bi = water_box(b[i], name=f"box[{i}]")
            xi = x[i]
            # make molecules whole: H minimum image relative to their O
            d = xi[:, 1:] - xi[:, :1]
            h = (xi[:, :1] + d - bi * np.round(d / bi) if bi.ndim == 1
                 else xi[:, :1] + minimum_image(d, bi))
            xi = np.concatenate([xi[:, :1], h], axis=1)
            if groups is None:
                g = group_waters(xi[:, 0], bi, 4, seed=seed + i)
            else:
                g = np.asarray(groups[i] if not isinstance(groups, np.ndarray) or
                               groups.ndim == 3 else groups, dtype=np.int64)
                if g.ndim != 2 or g.shape[1] != 4 or np.any(g < 0) or np.any(g >= n_w):
                    raise MultiscaleError(
                        f"groups for frame {i} have shape {g.shape} or bad indices: expected "
                        f"(n_groups, 4) indices in [0, {n_w})"
                    )
            cl = xi[g]  # (G, 4, 3, 3)
            shift = cl[:, :, :1] - cl[:, :1, :1]
            # whole molecules, minimum image to water 0
            cl = cl - (bi * np.round(shift / bi) if bi.ndim == 1
                       else shift - minimum_image(shift, bi))
            out.append(cl)
        cl = np.concatenate(out, axis=0)
        flat = cl.reshape(len(cl), 12, 3)
        flat = flat - _com(flat)[:, None]
        if max_radius is not None:
            r = np.linalg.norm(flat.reshape(-1, 4, 3, 3)[:, :, 0], axis=-1).max(axis=1)
            flat = flat[r <= max_radius]
        n_source = len(flat)
        if n_source == 0:
            raise MultiscaleError("no water clusters left: pass frames with >= 4 waters or "
                                  "raise max_radius")
        if n_source > max_clusters:
            flat = flat[np.sort(rng.choice(n_source, size=max_clusters, replace=False))]
        return cls(flat.reshape(-1, 4, 3, 3), n_source=n_source, note=note)

    @classmethod
    def default(cls) -> WaterBank:
        """The bundled TIP3P bank (``multiscale/data/water_clusters_tip3p.npz``, made by
        ``scripts/make_water_clusters.py`` from a 20 ps NVT TIP3P run)."""
        return _default_bank()

    # ------------------------------------------------------------------ persistence
    def to_dict(self, tensors: bool = True) -> dict:
        """Plain dict for ``torch.save`` (loads with ``weights_only=True``): ``clusters`` as a
        float32 torch tensor (numpy array if ``tensors=False``), plus str/int metadata."""
        c = self.clusters
        if tensors:
            import torch

            c = torch.from_numpy(c.copy())
        return {"format": _FORMAT, "clusters": c, "n_source": self.n_source, "note": self.note}

    @classmethod
    def from_dict(cls, d: dict) -> WaterBank:
        """Inverse of :meth:`to_dict` (accepts tensors or arrays)."""
        if not isinstance(d, dict) or "clusters" not in d:
            raise MultiscaleError("water bank dict has no 'clusters' entry: pass the output of "
                                  "WaterBank.to_dict()")
        fmt = d.get("format", _FORMAT)
        if fmt != _FORMAT:
            raise MultiscaleError(f"water bank format {fmt!r} is not supported ({_FORMAT!r})")
        c = d["clusters"]
        if hasattr(c, "detach"):
            c = c.detach().cpu().numpy()
        return cls(np.asarray(c, dtype=np.float32), n_source=d.get("n_source"),
                   note=d.get("note", ""))

    def save(self, path, note: str | None = None) -> None:
        """Write a compressed ``.npz`` (clusters float32, n_source, note)."""
        if note is not None:
            self.note = str(note)
        np.savez_compressed(path, clusters=self.clusters, n_source=np.int64(self.n_source),
                            note=np.array(self.note), format=np.array(_FORMAT))

    @classmethod
    def load(cls, path) -> WaterBank:
        """Read a bank written by :meth:`save`."""
        if not os.path.exists(path):
            raise MultiscaleError(f"water bank file {path} does not exist: build it with "
                                  "WaterBank.save() or use WaterBank.default()")
        with np.load(path, allow_pickle=False) as z:
            if "clusters" not in z:
                raise MultiscaleError(f"{path} has no 'clusters' array: not a water bank file")
            return cls(z["clusters"], n_source=int(z["n_source"]) if "n_source" in z else None,
                       note=str(z["note"]) if "note" in z else "")

    # ------------------------------------------------------------------ placement
    def _draw(self, rng: np.random.Generator, m: int):
        """``m`` random (cluster index, quaternion) pairs: Gaussian quaternions (float32,
        not normalised: :func:`_rot_entries` divides by the norm) give uniform rotations."""
        return rng.integers(len(self), size=m), rng.standard_normal((m, 4), dtype=np.float32)

    def _oxygens(self, k: np.ndarray, quat: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """Oxygens of clusters ``k`` rotated by ``quat`` at ``centres`` (3, m): float32
        (3, 4, m) (coordinate, atom, cluster: long contiguous rows, fast broadcasting)."""
        rot = _rot_entries(quat, np.float32)
        c = [np.take(self._oT[d], k, axis=1) for d in range(3)]  # (4, m) each
        out = np.empty((3, 4, len(k)), dtype=np.float32)
        for i in range(3):
            o = out[i]
            np.multiply(c[0], rot[i][0], out=o)
            o += c[1] * rot[i][1]
            o += c[2] * rot[i][2]
            o += centres[i]
        return out

    def _coords(self, k: np.ndarray, quat: np.ndarray, centres: np.ndarray,
                out: np.ndarray | None = None) -> np.ndarray:
        """Full clusters ``k`` rotated by ``quat`` at ``centres`` (m, 3): (m, 12, 3) float64.

        The bank clusters have their COM at the origin (float64), a rotation keeps it there
        (for any matrix: the COM is linear), so the COM is ``centres`` to round-off."""
        rot = _rot_entries(quat, np.float64)
        c = [np.take(self._fT[d], k, axis=1) for d in range(3)]  # (12, m) each
        out = np.empty((len(k), 12, 3)) if out is None else out
        for i in range(3):
            v = c[0] * rot[i][0]
            v += c[1] * rot[i][1]
            v += c[2] * rot[i][2]
            v += centres[:, i]
            out[:, :, i] = v.T
        return out

    def _molecules32(self, k: np.ndarray, quat: np.ndarray, centres: np.ndarray, box: Box):
        """Centres of mass (4 m, 3) (wrapped into the box, or its brick) and atoms relative
        to them (4 m, 3, 3) of the molecules of clusters ``k`` rotated by ``quat`` at
        ``centres`` (3, m), float32; molecule id ``4 * cluster + water``."""
        m = len(k)
        com = np.empty((m, 4, 3), dtype=np.float32)
        rel = np.empty((m, 4, 3, 3), dtype=np.float32)
        bl = box.lengths.astype(np.float32)
        step = 1 << 14

        def one(i0):
            sl = slice(i0, min(i0 + step, m))
            rot = _rot_entries(quat[sl], np.float32)
            kk = k[sl]
            g = self._g32[kk]  # (m', 4, 3)
            v = self._v32[kk]  # (m', 4, 3, 3)
            for i in range(3):
                r0, r1, r2 = (rot[i][j][:, None] for j in range(3))
                c = g[:, :, 0] * r0 + g[:, :, 1] * r1 + g[:, :, 2] * r2
                c += centres[i, sl, None]
                if box.ortho:
                    c -= bl[i] * np.floor(c / bl[i])
                    c[c >= bl[i]] = 0
                com[sl, :, i] = c
                r0, r1, r2 = (x[:, :, None] for x in (r0, r1, r2))
                rel[sl, :, :, i] = v[..., 0] * r0 + v[..., 1] * r1 + v[..., 2] * r2
            if not box.ortho:
                box.brick(com[sl].reshape(-1, 3).T)

        _pmap(one, range(0, m, step))
        return com.reshape(-1, 3), rel.reshape(-1, 3, 3)


    def place(self, beads, box, seed: int = 0, others=None, min_dist: float = MIN_DIST_OO,
              min_dist_others: float = MIN_DIST_OTHERS, max_retries: int = 5,
              n_candidates: int = 16, first_candidates: int = 8,
              min_dist_atoms: float = MIN_DIST_ATOMS, contact_rounds: int = 16,
              contact_candidates: int = 32, return_stats: bool = False,
              others_min_dist=None, others_shell=None, others_charge=None,
              others_shell_n=None):
        """Replace each W bead by 4 waters (O, H1, H2), vectorised.

        Parameters
        ----------
        beads : (n, 3) nm W bead positions (any image).
        box : (3,) nm orthorhombic edge lengths, or (3, 3) GROMACS box vectors (rows a, b,
            c, lower triangular; triclinic allowed: rhombic dodecahedron, truncated
            octahedron).
        seed : seeds every random draw; same seed and inputs -> same output.
        others : optional (m, 3) nm positions of the non-water atoms to keep away from.
        min_dist : O-O cut-off (nm) between waters of different beads (see module doc).
        min_dist_others : cut-off (nm) between any water atom and any ``others`` atom.
        others_min_dist : optional (m,) nm, one per ``others`` atom: the closest a water
            oxygen may come to that atom (ions: e.g. Na+ 0.20, K+ 0.24, Ca2+ 0.20, Cl- 0.27
            nm, a sane first shell); ``min_dist_others`` still applies to every water atom,
            so only values above it matter.  Both stages treat an O too close like any other
            clash (re-drawn, re-oriented, shifted); what is left is reported.  Default None:
            ``min_dist_others`` for every atom.
        others_shell : optional (m,) nm, one per ``others`` atom: the water-O distance of the
            atom's first shell (ions: Na+ 0.24, K+ 0.28, Ca2+ 0.24, Mg2+ 0.21, Cl- 0.315 nm;
            0 or NaN: none).  After the bead stage the clusters of the beads within that
            distance + 0.35 nm are turned about their centres so that an oxygen sits in the
            shell, oriented by ``others_charge`` (:mod:`.shell`), where that keeps every
            clearance.  Default None: no shell pass (output unchanged).
        others_charge : optional (m,) e, one per ``others`` atom (only the sign of shell
            atoms is used: > 0 hydrogens away, < 0 one O-H towards the atom, 0 no
            orientation term).  Default None: 0.
        others_shell_n : optional (m,), one per ``others`` atom: the waters of a full first
            shell (O within ``others_shell`` + 0.07 nm; Na+ 5.5, Cl- 7); the pass fills the
            shell up to it and not beyond.  Default None: 6.
        max_retries : rounds of re-drawing clashing beads.  A small set of beads covering
            every clash (greedy vertex cover of the clash graph) is re-drawn; the beads not in
            it form a clash-free accepted set.  Each re-drawn bead tries up to
            ``first_candidates`` candidates ((cluster, rotation) pairs) in round 1 and
            ``n_candidates`` in later rounds, one at a time against the accepted beads, and
            keeps the first clash-free one (else the one with the fewest clashing atoms);
            only the beads still clashing draw another candidate, so the cost follows the
            number of clashes, not ``n_candidates`` (hence the defaults 16 and 8, were 8 and
            2: ~0.13 % instead of ~0.75 % of beads left unresolved at the same cost).
            Clashes among the beads re-drawn in the same round that are clash-free otherwise
            are covered again.  A bead still stuck after an ``n_candidates`` round also
            releases the accepted neighbours it clashes with, so they are re-drawn together
            in the next round.
        n_candidates, first_candidates : see ``max_retries``.
        min_dist_atoms : contact stage, after the bead retries: no two atoms of different
            water molecules (any elements, same bead or not) end closer than this (nm);
            0 switches the stage off (the output is then the bead stage's, bit for bit).
            Every pair closer is found (cell list of the molecules' H-H midpoints, atoms
            checked pairwise) and one molecule of each moved: spun about its C2 axis,
            else turned about its own centre of mass, else shifted with its 3 cluster-mates
            shifted back by a third (module doc).  Each water stays rigid and each bead's
            centre of mass stays on the bead; turned and shifted oxygens keep ``min_dist``
            from the oxygens of other beads (the unresolved beads aside) and every moved
            atom ``min_dist_others`` from ``others``.  A final search over every molecule
            that moved verifies the result; what is left is reported, not hidden.
        contact_rounds : rounds of the contact stage at most (each moves one molecule per
            contact left; later rounds only molecules that cannot touch each other).
        contact_candidates : free turns (and shifts) tried per molecule and round, after
            the 15 spins.
        return_stats : also return :attr:`last_stats`.

        Returns
        -------
        (n, 4, 3, 3) float64 nm, molecules whole (not wrapped), the 12-atom centre of mass of
        row i equals ``beads[i]`` (float64 round-off).  ``self.last_stats`` (and the second
        return value with ``return_stats``) holds ``n_initial_clash`` (beads re-drawn after the
        first draw), ``clashing_after_retry`` and ``n_unresolved`` / ``unresolved`` (beads
        whose oxygens may still be closer than ``min_dist`` to another bead's: their best
        candidate is kept, energy minimisation fixes them), and for the contact stage
        ``n_contacts_initial`` (atom pairs of different molecules closer than
        ``min_dist_atoms`` after the bead stage), ``contact_rounds``, ``moved_per_round``,
        ``n_molecules_moved`` (molecules given a new orientation and/or place),
        ``n_molecules_spun``, ``n_molecules_turned``, ``n_beads_shifted``, and what is left:
        ``n_contacts`` / ``contacts`` ((P, 2) atom indices into ``out.reshape(-1, 3)``) /
        ``contact_dist`` / ``min_contact`` (None when none), ``n_others_close`` /
        ``others_close`` (molecules ``4 * row + water`` still closer than their clearance
        to ``others``, i.e. of unresolved beads the stage could not fix), and, checked on the
        output, ``n_ion_close`` / ``ion_close`` (molecules ``4 * row + water`` whose O is
        closer than ``others_min_dist`` to an atom whose value exceeds ``min_dist_others``)
        with ``min_ion_dist`` (the smallest such O distance, None without such atoms), and
        for the shell pass ``n_shell_beads`` (beads next to a shell atom), ``n_shell_turned``
        (those given a new cluster orientation) and ``shell_rounds``.
        """
        return _place(self, beads, box, seed=seed, others=others, min_dist=min_dist,
                     min_dist_others=min_dist_others, max_retries=max_retries,
                     n_candidates=n_candidates, first_candidates=first_candidates,
                     min_dist_atoms=min_dist_atoms, contact_rounds=contact_rounds,
                     contact_candidates=contact_candidates, return_stats=return_stats,
                     others_min_dist=others_min_dist, others_shell=others_shell,
                     others_charge=others_charge, others_shell_n=others_shell_n)


@functools.lru_cache(maxsize=1)
def _default_bank() -> WaterBank:
    ref = resources.files("multiscale") / "data" / DEFAULT_BANK_FILE
    with resources.as_file(ref) as p:
        if not os.path.exists(p):
            raise MultiscaleError(
                f"bundled water bank {DEFAULT_BANK_FILE} is missing from the installation: "
                "reinstall multiscale or run scripts/make_water_clusters.py"
            )
        return WaterBank.load(p)

"""The backmapping model file: :class:`BackmapModel`, save / :func:`load_model`.

One file per model (``torch.save`` of a plain dict, loadable with ``weights_only=True``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MultiscaleError
from .moltype_model import MoltypeModel, describe_difference

__all__ = ["BackmapModel", "load_model", "FORMAT", "VERSION"]

FORMAT = "multiscale.backmap-model"
VERSION = 1


class BackmapModel:
    """A trained backmapping model: mapping, per-moltype models, water bank, provenance."""

    def __init__(self, mapping, moltypes: dict, water: dict | None = None, provenance: list | None = None,
                 source: str = "<memory>"):
        self.mapping = mapping
        self.moltypes: dict[str, MoltypeModel] = dict(moltypes)
        self.water = water
        self.provenance = list(provenance or [])
        self.source = source
        self._bank = None

    def __repr__(self) -> str:
        return f"BackmapModel({', '.join(self.moltypes)}; water bank: {'yes' if self.water else 'default'})"

    @property
    def water_bank(self):
        """The :class:`~multiscale.backmap.water.WaterBank` (the model's, else the bundled default)."""
        from .water import WaterBank

        if self._bank is None:
            self._bank = WaterBank.from_dict(self.water) if self.water else WaterBank.default()
        return self._bank

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "mapping": self.mapping.to_dict(),
                "moltypes": {k: v.to_dict() for k, v in self.moltypes.items()},
                "fingerprints": {k: v.fingerprint for k, v in self.moltypes.items()},
                "water": self.water, "provenance": self.provenance}

    @classmethod
    def from_dict(cls, d: dict, source: str = "<memory>") -> "BackmapModel":
        from ..mapping import Mapping

        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise MultiscaleError(f"{source} is not a multiscale backmapping model (format {d.get('format') if isinstance(d, dict) else type(d).__name__!r}): pass a file written by `multiscale train`")
        if int(d.get("version", 0)) > VERSION:
            raise MultiscaleError(f"{source} is a version {d.get('version')} model; this multiscale reads up to version {VERSION}: upgrade multiscale")
        try:
            mols = {k: MoltypeModel.from_dict(v) for k, v in d["moltypes"].items()}
        except (KeyError, RuntimeError, TypeError, ValueError) as e:  # e.g. missing/renamed network weights
            why = " ".join(v.strip() for v in str(e).strip().splitlines()[:2]) or type(e).__name__
            raise MultiscaleError(f"{source} was written by an incompatible development version of multiscale "
                                  f"({why.strip()}): retrain it with `multiscale train`") from e
        return cls(Mapping.from_dict(d["mapping"], source=source), mols, d.get("water"), d.get("provenance", []), source)

    def save(self, path) -> Path:
        """Write the model atomically (``torch.save`` of :meth:`to_dict`)."""
        import torch

        from ..io import atomic_path

        with atomic_path(path) as tmp:
            torch.save(_plain(self.to_dict()), tmp)
        return Path(path)

    def check(self, topology) -> None:
        """Raise MultiscaleError if a non-water moltype of ``topology`` is missing or differs."""
        for mt in topology.moltypes.values():
            if mt.is_water:
                continue
            entry = self.moltypes.get(mt.name)
            if entry is None:
                raise MultiscaleError(
                    f"backmapping model {self.source} has no moleculetype {mt.name} (it has: {', '.join(self.moltypes) or 'none'}): "
                    f"train on AA frames containing {mt.name} (multiscale train, --init to extend this model)")
            if entry.fingerprint != mt.fingerprint():
                raise MultiscaleError(
                    f"backmapping model {self.source} was trained for a different moleculetype {mt.name}: "
                    f"{describe_difference(mt, entry)}; retrain the model for this topology")

    def summary(self) -> str:
        lines = [f"backmapping model ({FORMAT} v{VERSION}) {self.source}"]
        for k, v in self.moltypes.items():
            t = v.training
            lines.append(f"  {k}: {v.n_atoms} atoms, {v.n_beads} beads, {v.tree.n_torsions} torsions, "
                         f"{len(v.stereo.enforced_centres)} stereocentres, {len(v.stereo.enforced_bonds)} cis/trans; "
                         f"trained on {t.get('n_samples', '?')} molecules, val NLL {t.get('val_nll', float('nan')):.2f}")
        lines.append(f"  water bank: {len(self.water_bank)} clusters" + ("" if self.water else " (bundled default)"))
        return "\n".join(lines)


def _plain(o):
    """Recursively convert numpy scalars/arrays (and other non-plain leaves) for weights_only loading."""
    import torch

    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, torch.Tensor):
        return o.detach().cpu()
    if isinstance(o, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(o))
    if isinstance(o, np.generic):
        return o.item()
    if o is None or isinstance(o, (bool, int, float, str)):
        return o
    return str(o)


def load_model(path, topology=None) -> BackmapModel:
    """Read a model file; with ``topology`` check that every non-water moltype matches."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise MultiscaleError(f"backmapping model {p} not found: train one with `multiscale train`")
    try:
        d = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MultiscaleError(f"{p} cannot be read as a backmapping model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): pass a file written by `multiscale train`") from e
    m = BackmapModel.from_dict(d, source=str(p))
    if topology is not None:
        m.check(topology)
    return m


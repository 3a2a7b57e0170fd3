"""The backmapping model file: :class:`BackmapModel`, save / :func:`load_model`, model kinds.

One file per model: ``torch.save`` of a plain dict (loadable with ``weights_only=True``) with

* ``format`` (:data:`FORMAT`) and ``version`` (:data:`VERSION`);
* ``kind``: what sort of model it is -- ``"system"`` (:class:`BackmapModel`: one whole-molecule
  model per moleculetype, a water bank) today; later e.g. ``"residue-chain"``, ``"lipid"``.
  :data:`MODEL_KINDS` maps a kind to the class that reads it (:func:`register_model_kind`);
  a file of this format without ``kind`` (written before kinds existed) reads as ``"system"``;
* ``sha256``: hex digest of everything else in the file (:func:`content_digest`: keys,
  scalars, tensor dtypes/shapes/bytes), verified at load so a corrupted file is refused.

Errors (one line naming the file, the problem, what to do): not a model file / another format,
a newer version, an unknown kind, a checksum mismatch, an incompatible development version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import MultiscaleError, clip
from .moltype_model import MoltypeModel, describe_difference

__all__ = ["BackmapModel", "load_model", "FORMAT", "VERSION", "MODEL_KINDS", "register_model_kind", "content_digest",
           "check_header", "verify_checksum"]

FORMAT = "multiscale.backmap-model"
VERSION = 1
#: Model kind -> the class that reads it (``cls.from_dict(d, source=...)``).
MODEL_KINDS: dict[str, type] = {}
#: The key of the content checksum in a model file.
CHECKSUM_KEY = "sha256"


def register_model_kind(kind: str):
    """Class decorator: ``cls`` reads and writes model files of ``kind`` (sets ``cls.KIND``)."""

    def deco(cls):
        cls.KIND = kind
        MODEL_KINDS[kind] = cls
        return cls

    return deco


def content_digest(d) -> str:
    """sha256 hex digest of a model dict's content (the checksum entry itself left out).

    Canonical: dict keys sorted, every leaf tagged with its type; tensors by dtype, shape and
    raw bytes; floats by ``repr`` (exact).  The same for the dict written and the dict read back."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in d.items() if k != CHECKSUM_KEY} if isinstance(d, dict) else d)
    return h.hexdigest()


def _feed(h, o) -> None:
    import torch

    if isinstance(o, dict):
        h.update(b"{%d" % len(o))
        for k in sorted(o, key=str):
            _feed(h, str(k))
            _feed(h, o[k])
        h.update(b"}")
    elif isinstance(o, (list, tuple)):
        h.update(b"[%d" % len(o))
        for v in o:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(o, torch.Tensor):
        t = o.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(o, np.ndarray):
        _feed(h, torch.from_numpy(np.ascontiguousarray(o)))
    else:
        h.update(f"{type(o).__name__}:{o!r};".encode())


@register_model_kind("system")
class BackmapModel:
    """A trained backmapping model of kind ``"system"``: mapping, one :class:`MoltypeModel`
    per moleculetype, water bank, provenance."""

    KIND = "system"

    def __init__(self, mapping, moltypes: dict, water: dict | None = None, provenance: list | None = None,
                 source: str = "<memory>", chains=None):
        self.mapping = mapping
        self.moltypes: dict[str, MoltypeModel] = dict(moltypes)
        #: :class:`multiscale.chains.model.ChainModel` for amino-acid chains (None: the shipped one)
        self.chains = chains
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
        return {"format": FORMAT, "version": VERSION, "kind": self.KIND, "mapping": self.mapping.to_dict(),
                "moltypes": {k: v.to_dict() for k, v in self.moltypes.items()},
                "fingerprints": {k: v.fingerprint for k, v in self.moltypes.items()},
                "water": self.water, "provenance": self.provenance,
                **({"chains": self.chains.to_dict()} if self.chains is not None else {})}

    @classmethod
    def from_dict(cls, d: dict, source: str = "<memory>") -> BackmapModel:
        from ..mapping import Mapping

        kind = check_header(d, source)
        if kind != cls.KIND:
            raise MultiscaleError(f"{source} is a backmapping model of kind {kind!r}, not {cls.KIND!r}: load it with load_model")
        try:
            mols = {k: MoltypeModel.from_dict(v) for k, v in d["moltypes"].items()}
            mapping = Mapping.from_dict(d["mapping"], source=source)
            chains = None
            if d.get("chains") is not None:
                from ..chains.model import ChainModel

                chains = ChainModel.from_dict(d["chains"])
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError, IndexError) as e:  # e.g. missing/renamed network weights
            why = " ".join(v.strip() for v in str(e).strip().splitlines()[:2]) or type(e).__name__
            raise MultiscaleError(f"{source} was written by an incompatible development version of multiscale "
                                  f"({why.strip()}): retrain it with `multiscale train`") from e
        return cls(mapping, mols, d.get("water"), d.get("provenance", []), source, chains)

    def save(self, path) -> Path:
        """Write the model atomically (``torch.save`` of :meth:`to_dict`)."""
        import torch

        from ..io import atomic_path

        d = _plain(self.to_dict())
        d[CHECKSUM_KEY] = content_digest(d)
        with atomic_path(path) as tmp:
            torch.save(d, tmp)
        return Path(path)

    def check(self, topology, layout=None) -> None:
        """Raise MultiscaleError if a moltype of ``topology`` that needs a model is missing or
        differs.  Needs a model: moltypes of layout blocks of kind "molecule" (see
        :func:`multiscale.backmap.frame.block_kind`); without ``layout``: every moltype whose
        molecule class (:func:`multiscale.classes.classify` with the model's mapping) trains."""
        from .frame import block_kind

        if layout is not None:
            need = {b.aa_block.moltype.name for b in layout if block_kind(b) == "molecule"}
        else:
            need = {mt.name for mt in topology.moltypes.values() if _trains(mt, self.mapping)}
        for mt in topology.moltypes.values():
            if mt.name not in need:
                continue
            entry = self.moltypes.get(mt.name)
            cls = _class(mt, self.mapping)
            if entry is None and cls is not None and cls.name == "lipid":
                from .shipped import missing_lipid_message

                raise MultiscaleError(f"backmapping model {self.source} has no moleculetype {mt.name}; " + missing_lipid_message(mt.name))
            if entry is None:
                raise MultiscaleError(
                    f"backmapping model {self.source} has no moleculetype {mt.name} (it has: {', '.join(self.moltypes) or 'none'}): "
                    f"train on AA frames containing {mt.name} (multiscale train, --init to extend this model)")
            if entry.fingerprint != mt.fingerprint():
                raise MultiscaleError(
                    f"backmapping model {self.source} was trained for a different moleculetype {mt.name}: "
                    f"{describe_difference(mt, entry)}; retrain the model for this topology")

    def summary(self) -> str:
        lines = [f"backmapping model ({FORMAT} v{VERSION}, kind {self.KIND}) {self.source}"]
        for k, v in self.moltypes.items():
            t = v.training
            lines.append(f"  {k}: {v.n_atoms} atoms, {v.n_beads} beads, {v.tree.n_torsions} torsions, "
                         f"{len(v.stereo.enforced_centres)} stereocentres, {len(v.stereo.enforced_bonds)} cis/trans; "
                         f"trained on {t.get('n_samples', '?')} molecules, val NLL {t.get('val_nll', float('nan')):.2f}")
        if self.chains is not None:
            c = self.chains
            lines.append(f"  amino-acid chains ({c.naming} names): {len(c.kinds)} residue kinds, "
                         f"trained on {c.training.get('backbone_steps', '?')} backbone steps")
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


def check_header(d, source: str) -> str:
    """Validate a model dict's format, version and kind (one-line errors); returns the kind."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        what = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise MultiscaleError(f"{source} is not a multiscale backmapping model (format {what!r}): pass a file written by `multiscale train`")
    try:
        version = int(d.get("version", 0))
    except (TypeError, ValueError):
        version = VERSION + 1
    if version > VERSION:
        raise MultiscaleError(f"{source} is a version {d.get('version')!r} model; this multiscale reads up to version {VERSION}: upgrade multiscale")
    kind = d.get("kind", "system")
    if kind not in MODEL_KINDS:
        raise MultiscaleError(f"{source} is a backmapping model of kind {kind!r}, which this multiscale cannot use "
                              f"(it knows: {', '.join(sorted(MODEL_KINDS))}): upgrade multiscale or retrain with `multiscale train`")
    return kind


def verify_checksum(d: dict, source: str) -> bool:
    """Raise MultiscaleError when the stored sha256 does not match the content; False when the
    file has none (written before checksums), True when it matched."""
    stored = d.get(CHECKSUM_KEY)
    if stored is None:
        return False
    if stored != content_digest(d):
        raise MultiscaleError(f"{source} is corrupted (its content does not match the sha256 checksum stored in it): "
                              "restore the file from a copy or retrain with `multiscale train`")
    return True


def load_model(path, topology=None, layout=None):
    """Read a model file (any registered kind, :data:`MODEL_KINDS`); with ``topology`` check
    that every moltype that needs a model matches (see :meth:`BackmapModel.check`)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise MultiscaleError(f"backmapping model {p} not found: train one with `multiscale train`")
    try:
        d = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        why = "not a torch file" if type(e).__name__ == "UnpicklingError" else clip(str(e).splitlines()[0] if str(e) else "", 80)
        raise MultiscaleError(f"{p} cannot be read as a backmapping model ({type(e).__name__}: {why}): "
                              "pass a file written by `multiscale train`") from e
    kind = check_header(d, str(p))
    m = MODEL_KINDS[kind].from_dict(d, source=str(p))  # an incompatible layout fails here, with its own line
    verify_checksum(d, str(p))
    if topology is not None:
        from .shipped import with_shipped_lipids

        with_shipped_lipids(m, topology)  # lipids the file lacks: the shipped lipid models
        m.check(topology, layout)
    return m


def _class(moltype, mapping):
    """The molecule class owning ``moltype`` (:func:`multiscale.classes.classify`), None when unclaimed."""
    from ..classes import classify

    try:
        return classify(moltype, mapping)
    except MultiscaleError:
        return None


def _trains(moltype, mapping) -> bool:
    """Whether the molecule class owning ``moltype`` trains a model (unclaimed: yes, so the
    caller names the missing moleculetype)."""
    cls = _class(moltype, mapping)
    return True if cls is None else cls.trains

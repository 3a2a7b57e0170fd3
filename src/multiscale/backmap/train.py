"""Training a backmapping model on AA frames (:func:`train`)."""

from __future__ import annotations

import datetime as _dt
import time

import numpy as np

from ..errors import MultiscaleError
from ..geometry import dense_weights
from .common import check_device, derive_seed, torch_threads
from .frame import block_kind, require_engine_kind
from .model_file import BackmapModel
from .moltype_model import MoltypeModel, describe_difference
from .system import bead_molecules, count_frame_hbonds, orient_frame, water_order

__all__ = ["train"]


def train(topology, mapping, frames, *, seed: int = 0, epochs: int | None = None, init: BackmapModel | None = None,
          device: str = "cpu", provenance: dict | None = None, log=print, hidden: int = 128, torsion_hidden: int = 48,
          n_components: int = 6, batch_size: int = 512, lr: float | None = None, feature_noise: float = 0.02,
          max_samples: int = 200_000, target_steps: int = 2000, threads: int | None = None,
          grouped_offsets: bool = True, calibrate_hbonds: bool = True,
          env_cutoff: float | None = None, weight_decay: float = 0.0, layout=None) -> BackmapModel:
    """Train (or, with ``init``, fine-tune) a backmapping model on AA frames.

    topology: :class:`~multiscale.topology.SystemTopology`; mapping: :class:`~multiscale.mapping.Mapping`;
    frames: :class:`~multiscale.io.Frames` (positions (F, N, 3) nm, box (F, 3) or (F, 3, 3) nm).
    epochs: passes over the data per moltype (default: about ``target_steps`` optimiser steps,
    3..300 epochs).  grouped_offsets: sample all sibling-offset torsions in one final
    autoregressive step (fewer sequential steps; False = strictly one torsion per step).
    env_cutoff: also condition on the number of beads of other molecules within this distance
    (nm, e.g. 1.0) of each bead (computed from the CG input at backmapping time).
    calibrate_hbonds: choose the hydrogen-bond weight of the polar-hydrogen orientation by
    backmapping up to 3 training frames (see :func:`multiscale.backmap.place.orient_rotors`).
    Moltypes present in ``init`` but not in the frames are kept unchanged;
    moltypes in both are fine-tuned from the init weights (lr 1e-3).  Ion blocks (kind "ion",
    one atom on one bead) get no model: the engine puts them on their beads.
    layout: the CG layout (default :func:`multiscale.coarse_grain.cg_layout`).  Returns the model.
    """
    check_device(device)
    from ..coarse_grain import cg_layout, whole_molecules

    log = log or (lambda *a, **k: None)
    t_all = time.perf_counter()
    pos, box = _training_frames(frames, topology)
    layout = cg_layout(topology, mapping) if layout is None else layout
    hp = dict(epochs=epochs, hidden=hidden, torsion_hidden=torsion_hidden, n_components=n_components,
              batch_size=batch_size, lr=lr, feature_noise=feature_noise, target_steps=target_steps,
              grouped_offsets=grouped_offsets, weight_decay=weight_decay, device=device)
    rng = np.random.default_rng(seed)
    moltypes = dict(init.moltypes) if init is not None else {}
    report, water_xyz, chain_blocks = {}, [], []
    env_cut = float(env_cutoff or 0.0)
    if init is not None and not env_cut:
        env_cut = max([m.env_cutoff for m in init.moltypes.values()] + [0.0])
    env_counts = _env_counts(pos, box, topology, mapping, layout, env_cut, seed) if env_cut > 0 else None
    with torch_threads(threads):
        for name, blks in _blocks_by_moltype(layout).items():
            require_engine_kind(blks[0])
            kind = block_kind(blks[0])
            if kind == "ion":
                continue
            if kind == "chain":
                chain_blocks += blks
                continue
            if kind == "water":
                order = water_order(blks[0].aa_block.moltype)
                water_xyz += [whole_molecules(pos, box, blk.aa_block)[:, :, order, :] for blk in blks]
                continue
            x, env = _training_molecules(pos, box, blks, env_counts, rng, max_samples)
            prev = moltypes.get(name) if init is not None else None
            moltypes[name], report[name] = _fit_moltype(blks, x, env, prev, init, env_cut, seed, log, hp)
    _hydration(moltypes, pos, box, topology, list(report), log)
    model = BackmapModel(mapping, moltypes, _water_bank(water_xyz, box, seed, init, log), [],
                         chains=_chains(topology, pos, box, chain_blocks, init, seed, epochs, device, log, provenance))
    cal = None
    if calibrate_hbonds and any(moltypes[n].rotors for n in report):
        net = _calibrate_network(model, topology, mapping, pos, box, seed, [n for n in report if moltypes[n].rotors],
                                 layout=layout)
        log(f"hydrogen-bond network: pair cutoff {net['cutoff']} nm (solute-solute H-bonds per calibration frame: "
            f"reference {net['reference']:.1f}, backmapped {net['counts'][str(net['cutoff'])]:.1f}; off "
            f"{net['counts']['0.0']:.1f})")
        cal = _calibrate_hbonds(model, topology, mapping, pos, box, seed, [n for n in report if moltypes[n].rotors],
                                layout=layout)
        log(f"hydrogen-bond weight: {cal['eps']} kT per bond (H-bonds per calibration frame: reference "
            f"{cal['reference']:.1f}, backmapped {cal['counts'][str(cal['eps'])]:.1f}; without the weight "
            f"{cal['counts']['0.0']:.1f})")
        cal["network"] = net
    model.provenance = _provenance(provenance, cal, pos, seed, epochs, report, t_all, init)
    return model


def _hydration(moltypes: dict, pos, box, topology, names: list, log) -> None:
    """The first hydration shell of every acceptor of the fitted moltypes (:mod:`.hydration`), logged."""
    from .hydration import measure_shells

    for name, (r, n) in measure_shells(pos, box, topology, names).items():
        mm = moltypes[name]
        mm.shell_r, mm.shell_n = r, n
        sites = np.flatnonzero(r > 0)
        if len(sites):
            log(f"hydration shells of {name}: " + ", ".join(f"{mm.atom_names[i]} {n[i]:.1f} waters at {r[i]:.3f} nm"
                                                          for i in sites))


def _chains(topology, pos, box, chain_blocks, init, seed, epochs, device, log, provenance):
    """The chain model: trained on the chain blocks (fine-tuned from ``init``'s, or from the shipped
    one when ``init`` has none), else ``init``'s (None without chains and init)."""
    if not chain_blocks:
        return init.chains if init is not None else None
    from ..chains.shipped import shipped_chain_model
    from ..classes.chain import _chain_mapping

    start = None
    if init is not None:
        start = init.chains or shipped_chain_model(_chain_mapping(chain_blocks[0].aa_block.moltype).from_ff,
                                                   chain_blocks[0].aa_block.moltype.name)
    from ..chains.train import train_chains

    return train_chains(topology, pos, box, chain_blocks, seed=seed, epochs=epochs, init=start, device=device, log=log,
                        provenance=provenance)


def _training_frames(frames, topology):
    """Positions (F, N, 3) and per-frame boxes (F, 3) or (F, 3, 3) nm of the training frames."""
    from ..geometry import frame_boxes

    pos = np.asarray(frames.positions)
    if pos.ndim != 3 or pos.shape[1] != topology.n_atoms:
        n = pos.shape[-2] if pos.ndim >= 2 else "?"
        raise MultiscaleError(f"training frames have {n} atoms but topology {topology.source} has {topology.n_atoms}: pass frames of this system")
    b = np.asarray(frames.box, np.float64)
    box = np.array(frame_boxes(b, len(pos))) if b.shape[-2:] == (3, 3) else b.reshape(-1, 3)
    return pos, box


def _blocks_by_moltype(layout) -> dict:
    by_name: dict[str, list] = {}
    for blk in layout:
        by_name.setdefault(blk.aa_block.moltype.name, []).append(blk)
    return by_name


def _env_counts(pos, box, topology, mapping, layout, env_cut: float, seed: int) -> np.ndarray:
    """(F, B) neighbour counts of every CG bead of the training frames (see :func:`.features.neighbour_counts`)."""
    from ..coarse_grain import coarse_grain
    from .features import neighbour_counts

    cgr = coarse_grain(pos, box, topology, mapping, seed=seed, layout=layout)
    bm = bead_molecules(layout)
    return np.stack([neighbour_counts(cgr.positions[f], box[f], bm, env_cut) for f in range(len(pos))])


def _training_molecules(pos, box, blks, env_counts, rng, max_samples: int):
    """Whole molecules x (S, n_atoms, 3) of a moltype's blocks (at most ``max_samples``, drawn
    with ``rng``) and their bead neighbour counts (S, n_beads) or None."""
    from ..coarse_grain import whole_molecules

    mt = blks[0].aa_block.moltype
    x = np.concatenate([whole_molecules(pos, box, b.aa_block).reshape(-1, mt.n_atoms, 3) for b in blks])
    env = None
    if env_counts is not None:
        env = np.concatenate([env_counts[:, b.start:b.stop].reshape(-1, b.n_beads) for b in blks])
    if len(x) > max_samples:
        keep = np.sort(rng.choice(len(x), max_samples, replace=False))
        x = x[keep]
        env = env[keep] if env is not None else None
    return x, env


def _density(feats, tree, prev, seed: int, hp: dict):
    """The density to fit: a copy of ``prev``'s widened to the new features (fine-tuning), or a
    fresh one.  Returns (density, set_stats, learning rate)."""
    import torch

    from .model import ICDensity

    if prev is not None:
        dens = type(prev.density).from_dict(prev.density.to_dict())
        with torch.no_grad():
            if feats.shape[1]:
                f = torch.as_tensor(feats)
                dens.feat_lo.copy_(torch.minimum(dens.feat_lo, f.min(0).values))
                dens.feat_hi.copy_(torch.maximum(dens.feat_hi, f.max(0).values))
        return dens, False, (hp["lr"] or 1e-3)
    torch.manual_seed(derive_seed(seed, 17))
    dens = ICDensity(feats.shape[1], tree.n_bonds, tree.n_angles, tree.n_torsions, hidden=hp["hidden"],
                     torsion_hidden=hp["torsion_hidden"], n_components=hp["n_components"],
                     steps=tree.torsion_steps() if hp["grouped_offsets"] else None)
    return dens, True, (hp["lr"] or 3e-3)


def _check_init(name, mt, prev, init, env_cut: float) -> None:
    if prev is not None and prev.env_cutoff != env_cut:
        raise MultiscaleError(f"init model {init.source}: moleculetype {name} was trained with env_cutoff "
                              f"{prev.env_cutoff} nm, not {env_cut}: fine-tune with the same env_cutoff")
    if prev is not None and prev.fingerprint != mt.fingerprint():
        raise MultiscaleError(f"init model {init.source}: moleculetype {name} differs from the topology "
                              f"({describe_difference(mt, prev)}): train from scratch (no --init)")


def _fit_moltype(blks, x, env, prev, init, env_cut: float, seed: int, log, hp: dict):
    """Fit (or fine-tune ``prev``) the model of one moltype on molecules x (S, n_atoms, 3).
    Returns (:class:`MoltypeModel`, training info)."""
    from ..geometry import dihedral
    from .certify import StereoReference
    from .features import cg_features
    from .ictree import ICTree
    from .model import fit

    mt, name, M = blks[0].aa_block.moltype, blks[0].aa_block.moltype.name, dense_weights(blks[0].matrix)
    _check_init(name, mt, prev, init, env_cut)
    tree = prev.tree if prev is not None else ICTree.from_moltype(mt, M)
    feats = cg_features(np.einsum("ba,nak->nbk", M, x))
    if env is not None:
        feats = np.concatenate([feats, env], -1)
    bonds, angles, tors = tree.to_internal(x)
    dens, set_stats, lr_m = _density(feats, tree, prev, seed, hp)
    n_ep = hp["epochs"]
    if n_ep is None:
        steps = max(1, int(np.ceil(len(x) * 0.95 / hp["batch_size"])))
        n_ep = int(np.clip(round(hp["target_steps"] / steps), 3, 300))
    log(f"training {name}: {len(x)} molecules, {mt.n_atoms} atoms, {M.shape[0]} beads, "
        f"{tree.n_torsions} torsions ({len(tree.heavy_torsions())} heavy), {n_ep} epochs")
    info = fit(dens, feats, bonds, angles, tors, epochs=n_ep, batch_size=hp["batch_size"], lr=lr_m,
               seed=derive_seed(seed, 23), feature_noise=hp["feature_noise"], device=hp["device"], set_stats=set_stats,
               log=log, label=name, weight_decay=hp["weight_decay"])
    stereo = StereoReference.from_frames(mt.n_atoms, mt.bonds, mt.elements, x)
    if prev is not None:  # keep the established references, add counts
        stereo = prev.stereo
    cl, _ = tree.closure_pairs()
    targets = np.linalg.norm(x[:, cl[:, 1]] - x[:, cl[:, 0]], axis=-1).mean(0) if len(cl) else np.zeros(0)
    info = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in info.items()}
    info["fine_tuned"] = prev is not None
    entry = MoltypeModel(name, mt.fingerprint(), list(mt.atom_names), list(mt.elements),
                         np.asarray(mt.bonds, int), list(blks[0].bead_names), np.asarray(M, np.float64),
                         tree, dens, stereo, targets, info)
    entry.rotor_priors = [np.histogram(dihedral(x[:, r["r"]], x[:, r["c"]], x[:, r["a"]], x[:, r["hs"][0]]),
                                       36, (-np.pi, np.pi))[0].astype(float) + 1.0 for r in entry.rotors]
    entry.hbond_eps = prev.hbond_eps if prev is not None else 0.0
    entry.network_cutoff = prev.network_cutoff if prev is not None else 0.0
    if prev is not None:  # how the shipped model draws (lipids: best of K, repelling projection) carries over
        entry.best_of, entry.repel = prev.best_of, prev.repel
    entry.env_cutoff = env_cut
    log(f"  {name}: train NLL {info['train_nll']:.3f}, validation NLL {info['val_nll']:.3f} ({info['seconds']:.1f} s)")
    return entry, info


def _water_bank(water_xyz: list, box, seed: int, init, log) -> dict | None:
    """The water bank (dict) from the training waters, else the init model's (or None: default)."""
    from .water import WaterBank

    water = init.water if init is not None else None
    if water_xyz:
        wx = np.concatenate(water_xyz, axis=1)
        if wx.shape[1] >= 4:
            bank = WaterBank.from_frames(wx, box, seed=seed, note=f"from {len(wx)} training frame(s)")
            water = bank.to_dict()
            log(f"water bank: {len(bank)} clusters from {len(wx)} frame(s)")
    return water


def _provenance(provenance, cal, pos, seed, epochs, report, t_all, init) -> list:
    import torch

    prov = dict(provenance or {})
    if cal is not None:
        prov["hbond_calibration"] = cal
    prov.update({"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "n_frames": int(pos.shape[0]),
                 "seed": int(seed), "epochs": epochs, "moltypes": report, "torch": str(torch.__version__),
                 "seconds": round(time.perf_counter() - t_all, 2), "fine_tune_of": init.source if init is not None else None})
    prov.setdefault("final_nll", {k: v.get("val_nll") for k, v in report.items()})
    return (list(init.provenance) if init is not None else []) + [prov]


def _calibrate_hbonds(model: BackmapModel, topology, mapping, pos: np.ndarray, box: np.ndarray, seed: int,
                      names: list[str], n_frames: int = 3, grid=(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0),
                      layout=None) -> dict:
    """Choose the hydrogen-bond weight (kT per bond) of the polar-hydrogen orientation step so
    that backmapped training frames donate as many hydrogen bonds as the AA frames did."""
    from ..coarse_grain import coarse_grain
    from .engine import backmap

    fr = np.unique(np.linspace(0, len(pos) - 1, min(n_frames, len(pos))).round().astype(int))
    cg = coarse_grain(pos[fr], box[fr], topology, mapping, seed=seed, layout=layout)
    aa, _ = backmap(model, topology, cg.positions, cg.box, seed=derive_seed(seed, 29), hbond_eps=0.0, max_retries=2,
                    layout=layout)
    ref = float(np.mean([count_frame_hbonds(np.asarray(pos[f], np.float64), box[f], topology, model) for f in fr]))
    counts = {}
    for eps in grid:
        c = []
        for k, f in enumerate(fr):
            x, _ = orient_frame(aa[k].astype(np.float64), box[f], topology, model,
                                 np.random.default_rng(derive_seed(seed, 31, k)), eps)
            c.append(count_frame_hbonds(x, box[f], topology, model))
        counts[str(float(eps))] = float(np.mean(c))
    best = min(grid, key=lambda e: (abs(counts[str(float(e))] - ref), e))
    for n in names:
        model.moltypes[n].hbond_eps = float(best)
    return {"eps": float(best), "reference": ref, "counts": counts, "frames": fr.tolist()}



def _calibrate_network(model: BackmapModel, topology, mapping, pos: np.ndarray, box: np.ndarray, seed: int,
                       names: list[str], n_frames: int = 3, grid=(0.0, 0.30, 0.33, 0.36), layout=None) -> dict:
    """Choose the pair cutoff (nm) of the hydrogen-bond network step (:mod:`.hbond`) so that the
    backmapped training frames have as many solute-solute hydrogen bonds as the AA frames (0 =
    off; ties: the smaller cutoff).  Neat octan-2-ol: 0.36 (AA 0.81 per molecule); a dilute
    alcohol in water, whose AA hydroxyls bond mostly to water, keeps it small or off."""
    from ..coarse_grain import coarse_grain
    from .engine import backmap
    from .system import count_frame_hbonds

    fr = np.unique(np.linspace(0, len(pos) - 1, min(n_frames, len(pos))).round().astype(int))
    cg = coarse_grain(pos[fr], box[fr], topology, mapping, seed=seed, layout=layout)
    count = lambda x, b: count_frame_hbonds(np.asarray(x, np.float64), b, topology, model, solutes_only=True)  # noqa: E731
    ref = float(np.mean([count(pos[f], box[f]) for f in fr]))
    eps = {n: model.moltypes[n].hbond_eps for n in names}
    counts = {}
    for c in grid:
        for n in names:
            model.moltypes[n].network_cutoff, model.moltypes[n].hbond_eps = float(c), 32.0
        aa, _ = backmap(model, topology, cg.positions, cg.box, seed=derive_seed(seed, 37), max_retries=2, layout=layout)
        counts[str(float(c))] = float(np.mean([count(aa[k], cg.box[k]) for k in range(len(fr))]))
    best = min(grid, key=lambda c: (abs(counts[str(float(c))] - ref), c))
    for n in names:
        model.moltypes[n].network_cutoff, model.moltypes[n].hbond_eps = float(best), eps[n]
    return {"cutoff": float(best), "reference": ref, "counts": counts, "frames": fr.tolist()}

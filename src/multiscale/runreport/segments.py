"""Observables of one MD segment: energies from its .edr, structure from its frames.

A *segment* is a finished GROMACS stage of a run (``aa-md``, ``relax``, ``restrained-eq``,
``cg-md``) or the user's AA reference trajectory.  :func:`analyse_aa` returns plain numbers
(mean, standard deviation over frames, number of frames) plus RDF pair counts; nothing here
knows about the run's layout (that is :mod:`multiscale.runreport.collect`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MultiscaleError
from ..geometry import box_matrix, box_volume
from .observables import count_hbonds, density_kg_m3, hbond_sites, molecule_coms, rdf_counts, solute_blocks, water_blocks

__all__ = ["EDR_TERMS", "edr_series", "stats", "System", "analyse_aa", "analyse_cg", "pick_frames"]

#: gmx energy term -> key; "Position Rest." is subtracted from the potential (restrained runs).
EDR_TERMS = {"Potential": "potential", "Density": "density", "Volume": "volume", "Position Rest.": "posres"}


def edr_series(edr: Path, settings) -> dict[str, np.ndarray]:
    """Time series of :data:`EDR_TERMS` (those the run has) of an .edr via ``gmx energy``;
    ``time`` in ps."""
    from ..gromacs.results import read_xvg
    from ..gromacs.runner import run_tool

    edr = Path(edr).resolve()
    with tempfile.TemporaryDirectory(prefix="ms_report_") as tmp:
        xvg = Path(tmp) / "energy.xvg"
        run_tool("energy", settings, log=Path(tmp) / "energy.log", cwd=tmp, input=list(EDR_TERMS) + [""],
                 stage=f"energy of {edr.name}", f=str(edr), o=str(xvg))
        names, rows = read_xvg(xvg)
    if not rows:
        raise MultiscaleError(f"{edr} holds no energy frames")
    a = np.asarray(rows, np.float64)
    out = {"time": a[:, 0]}
    for i, n in enumerate(names[1:], start=1):
        if n in EDR_TERMS:
            out[EDR_TERMS[n]] = a[:, i]
    return out


def stats(values) -> dict | None:
    """{"mean", "std" (over frames, ddof 0), "n"} of finite values, or None."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(len(v))}


@dataclass
class System:
    """What the analysis needs of the AA topology, computed once."""

    top: object
    rdf_edges: dict = field(default_factory=dict)  # name -> bin edges (nm), set once the boxes are known

    def __post_init__(self):
        top = self.top
        self.mass = float(top.per_atom("masses").sum())
        self.n_molecules = int(sum(b.count for b in top.blocks))
        self.waters = water_blocks(top)
        self.solutes = solute_blocks(top)
        self.n_water = int(sum(b.count for b in self.waters))
        self.n_solute = int(sum(b.count for b in self.solutes))
        self.sites = hbond_sites(top)
        ox = []
        for b in self.waters:
            o = list(b.moltype.elements).index("O")
            ox.append(b.start + b.moltype.n_atoms * np.arange(b.count) + o)
        self.water_o = np.concatenate(ox) if ox else np.zeros(0, np.int64)

    def rdf_sets(self, x: np.ndarray, box) -> dict[str, np.ndarray]:
        """Points of each RDF: solute centres of mass, water oxygens (empty sets left out)."""
        out = {}
        if self.n_solute > 1:
            out["solute_com"] = molecule_coms(x, box, self.solutes)
        if self.n_water > 1:
            out["water_oo"] = np.asarray(x[self.water_o], np.float64)
        return out


def pick_frames(n: int, tail: float, max_frames: int) -> np.ndarray:
    """Indices of the frames analysed: the last ``tail`` fraction of n frames (at least one),
    at most ``max_frames`` of them evenly spaced, always ending with the last frame."""
    first = min(n - 1, int(np.floor(n * (1.0 - tail))))
    idx = np.arange(first, n)
    if len(idx) > max_frames:
        idx = idx[np.unique(np.linspace(len(idx) - 1, 0, max_frames).round().astype(int))]
    return np.sort(idx)


def _box_edges(boxes) -> np.ndarray:
    """Lengths (F, 3) nm of the three box vectors."""
    return np.linalg.norm(box_matrix(boxes).reshape(-1, 3, 3), axis=2)


def _structure(system: System, frames) -> dict:
    """H-bonds per frame and RDF counts over the frames."""
    hb = {"water_water": [], "solute_water": [], "solute_solute": []}
    rdf: dict[str, list] = {}
    for x, box in zip(frames.positions, frames.box):
        for k, v in count_hbonds(x, box, system.sites).items():
            hb[k].append(v)
        for name, pts in system.rdf_sets(x, box).items():
            edges = system.rdf_edges.get(name)
            if edges is None:
                continue
            c, i = rdf_counts(pts, box, edges)
            acc = rdf.setdefault(name, [np.zeros_like(c), np.zeros_like(i)])
            acc[0] += c
            acc[1] += i
    per = {"water_water": system.n_water, "solute_water": system.n_solute, "solute_solute": system.n_solute}
    values = {f"hbonds_{k}": stats(np.asarray(v, float) / per[k]) for k, v in hb.items() if per[k] and len(v)}
    return {"values": values, "rdf_counts": {k: [c.tolist(), i.tolist()] for k, (c, i) in rdf.items()}}


def _energy_values(series: dict | None, n_molecules: int) -> dict:
    if not series or "potential" not in series:
        return {}
    epot = series["potential"] - series.get("posres", 0.0)
    out = {"epot_per_molecule_kj_mol": stats(epot / n_molecules)}
    if "density" in series:
        out["density_edr_kg_m3"] = stats(series["density"])
    if "volume" in series:
        out["volume_edr_nm3"] = stats(series["volume"])
    return out


def analyse_aa(system: System, frames, series: dict | None) -> dict:
    """Numbers of one AA segment: ``values`` {key: stats} and ``rdf_counts`` {name: [counts, ideal]}.

    frames: :class:`multiscale.io.Frames` already cut to the analysed frames; series: its
    .edr time series (:func:`edr_series`) or None.  Density and volume come from the .edr
    when it has them (every energy frame), else from the frames' boxes and the total mass.
    """
    boxes = frames.box
    values = {"density_box_kg_m3": stats(density_kg_m3(system.mass, boxes)),
              "volume_box_nm3": stats(box_volume(boxes))}
    edges = _box_edges(boxes)
    for i, ax in enumerate("abc"):
        values[f"box_{ax}_nm"] = stats(edges[:, i])
    values.update(_energy_values(series, system.n_molecules))
    values["density_kg_m3"] = values.get("density_edr_kg_m3") or values["density_box_kg_m3"]
    values["volume_nm3"] = values.get("volume_edr_nm3") or values["volume_box_nm3"]
    st = _structure(system, frames)
    values.update(st["values"])
    return {"values": values, "rdf_counts": st["rdf_counts"], "frames": int(frames.n_frames),
            "times_ps": [float(frames.times[0]), float(frames.times[-1])]}


def analyse_cg(series: dict | None, boxes, n_molecules: int) -> dict:
    """Numbers of one CG segment: density and volume (edr, else the final box) and the CG
    potential energy per CG molecule (Martini; not comparable with the AA value)."""
    values: dict = {}
    if series and "density" in series:
        values["density_kg_m3"] = stats(series["density"])
    if series and "volume" in series:
        values["volume_nm3"] = stats(series["volume"])
    elif boxes is not None:
        values["volume_nm3"] = stats(box_volume(boxes))
    if series and "potential" in series and n_molecules:
        values["cg_epot_per_molecule_kj_mol"] = stats(series["potential"] / n_molecules)
    return {"values": values}

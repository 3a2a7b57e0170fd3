"""Stages of a multiscale cycle, and the default AA -> CG -> AA pipeline.

A :class:`Stage` is a named step with declared ``inputs`` (files whose content it depends on),
``params`` (config values it depends on), ``outputs`` (files that exist when it is done) and a
``run(ctx)``.  The driver (:mod:`multiscale.workflow.cycle`) checksums inputs/outputs, records
them in the state file, never redoes a finished stage and refuses one whose inputs changed.

Two kinds:

* :class:`MdrunStage` -- render an mdp template, ``grompp``, ``mdrun -cpi`` in
  ``ROOT/cycle_NNN/<stage>/`` with ``-deffnm <stage>``.  A killed mdrun *continues* from its
  checkpoint (appending, so no frame is lost or duplicated); without a checkpoint it restarts.
* :class:`PythonStage` -- a Python function (coarse-grain, train, backmap) writing its outputs
  atomically; an interrupted one is redone from scratch.

:func:`default_pipeline` builds the stage list of all cycles from a :class:`SimConfig`::

    start: aa   cycle 1: aa-em, aa-eq, then every cycle:
                aa-md, coarse-grain, train, cg-em, cg-eq, cg-md, backmap,
                restrained-em, restrained-eq, relax        (relax feeds the next aa-md)
                cg-eq, cg-md and relax at the AA box's volume unless cg.volume is 'own' /
                restrained.relax_ensemble is 'npt' (docs/cycle-physics.md)
    start: cg   every cycle: cg-em, cg-eq, cg-md, backmap, restrained-em, restrained-eq, relax,
                aa-md, train, coarse-grain (not in the last cycle; feeds the next cg-em)

Amino-acid chains (start: aa): a ``martinize`` stage comes first, writing the Martini itp of each
chain moleculetype once (:mod:`multiscale.workflow.martinize`); every coarse-grain stage includes it.

``train`` only appears in cycles >= ``backmap.train_from_cycle``; it fine-tunes the previous
model (``init=``), or for a system with amino-acid chains and no ``backmap.model`` the shipped
chain model (``multiscale/data/models/chains_<naming>.pt``).  The environment variable ``MULTISCALE_PIPELINE=module:function`` (or
``/path/file.py:function``) replaces :func:`default_pipeline` (same signature) -- a hook for
custom stage lists and for testing the driver on its own.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MultiscaleError
from .posre_topology import add_posre_includes, write_restrained_topology  # noqa: F401 (re-exported)
from .state import stage_key

__all__ = ["Stage", "MdrunStage", "PythonStage", "StageContext", "StageResult", "StageStopped",
           "default_pipeline", "load_pipeline", "expected_frames", "xtc_frames"]


class StageStopped(Exception):
    """The stage stopped early but cleanly (mdrun -maxh, a signal): run again to continue."""


@dataclass
class StageResult:
    energies: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass
class StageContext:
    """What a running stage gets from the driver."""

    config: Any  # SimConfig
    root: Path
    settings: Any  # GromacsSettings (maxh set from the remaining time budget)
    seed: int
    log: Path  # the stage's own log file (python stages) / captured output
    continued: bool = False  # a previous attempt of this stage was interrupted
    replica: int | None = None
    stop_requested: Callable[[], bool] = lambda: False


@dataclass
class Stage:
    """One named step of a cycle; see the module docstring."""

    name: str
    cycle: int
    workdir: Path
    inputs: dict[str, Path] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    description: str = ""
    kind: str = "python"
    resumable: bool = False  # a half-done attempt continues (mdrun checkpoint) instead of restarting

    @property
    def key(self) -> str:
        return stage_key(self.cycle, self.name)

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def can_continue(self) -> bool:
        """Whether a half-done attempt left something to continue from."""
        return False

    def failure_log(self) -> Path:
        """The log to name when this stage fails (:attr:`log`; the driver writes the error there
        when the stage wrote nothing)."""
        return self.log

    def clean(self) -> None:
        """Remove everything a previous (partial or finished) attempt left in the workdir."""
        if self.workdir.is_dir():
            shutil.rmtree(self.workdir)

    def run(self, ctx: StageContext) -> StageResult:  # pragma: no cover - abstract
        raise NotImplementedError


# ------------------------------------------------------------------------------------------
# GROMACS stages


def expected_frames(nsteps: int, nstxout: int) -> int:
    """Frames mdrun writes to the .xtc: steps 0, nstxout, 2*nstxout, ... <= nsteps."""
    return nsteps // nstxout + 1 if nstxout > 0 else 0


def xtc_frames(xtc: Path) -> tuple[int, list[float]]:
    """(number of frames, times in ps) of an .xtc file."""
    import warnings

    import MDAnalysis.coordinates.XTC as XTC

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = XTC.XTCReader(str(xtc), refresh_offsets=True)
        try:
            times = [round(float(ts.time), 6) for ts in r]
        finally:
            r.close()
    return len(times), times


def _gro_atoms(gro: Path) -> int:
    with open(gro) as f:
        f.readline()
        return int(f.readline().strip())


def _set_mdp_options(text: str, options: dict[str, Any]) -> str:
    """Replace (or append) ``key = value`` lines; keys match with '-'/'_' and case ignored."""
    def norm(k: str) -> str:
        return k.strip().lower().replace("_", "-")

    lines = text.splitlines()
    for key, value in options.items():
        v = ("yes" if value else "no") if isinstance(value, bool) else str(value)
        done = False
        for i, line in enumerate(lines):
            body = line.split(";", 1)[0]
            if "=" in body and norm(body.split("=", 1)[0]) == norm(key):
                lines[i] = f"{key.replace('_', '-'):<24s} = {v}   ; set by mdp.overrides"
                done = True
        if not done:
            lines.append(f"{key.replace('_', '-'):<24s} = {v}   ; set by mdp.overrides")
    return "\n".join(lines) + "\n"


@dataclass
class MdrunStage(Stage):
    """grompp + mdrun of one mdp template; ``values`` fill its placeholders, ``mdp_options``
    set further mdp keys (mdp.overrides that are not placeholders)."""

    template: str = ""
    resolution: str = "aa"  # "aa" or "cg": counts are reported as atoms or beads
    values: dict = field(default_factory=dict)
    mdp_options: dict = field(default_factory=dict)
    structure: Path | None = None
    topology: Path | None = None
    restraint: Path | None = None
    maxwarn: int = 0
    minimisation: bool = False
    kind: str = "gromacs"
    resumable: bool = True

    def __post_init__(self):
        from ..gromacs import resolve_template

        tpl = resolve_template(self.template)
        self.inputs = {"structure": self.structure, "topology": self.topology, "mdp_template": tpl,
                       **({"restraint": self.restraint} if self.restraint else {}), **self.inputs}
        self.params = {"template": str(self.template), "values": self.values, "mdp_options": self.mdp_options,
                       "maxwarn": self.maxwarn, **self.params}
        n = self.name
        outs = {"gro": f"{n}.gro", "tpr": f"{n}.tpr", "edr": f"{n}.edr", "md_log": f"{n}.log"}
        if self.nstxout > 0:
            outs["xtc"] = f"{n}.xtc"
        self.outputs = {k: self.workdir / v for k, v in outs.items()} | self.outputs

    @property
    def nsteps(self) -> int:
        return int(self.values.get("nsteps", 0))

    @property
    def nstxout(self) -> int:
        return 0 if self.minimisation else int(self.values.get("nstxout_compressed", 0) or 0)

    @property
    def log(self) -> Path:  # captured GROMACS output of grompp + mdrun
        return self.workdir / f"{self.name}.mdrun.log"

    @property
    def tpr(self) -> Path:
        return self.workdir / f"{self.name}.tpr"

    @property
    def cpt(self) -> Path:
        return self.workdir / f"{self.name}.cpt"

    def can_continue(self) -> bool:
        return self.tpr.is_file() and self.cpt.is_file() and not self.minimisation

    @property
    def grompp_log(self) -> Path:
        return self.workdir / f"{self.name}.grompp.log"

    def failure_log(self) -> Path:
        """The newer of the grompp and mdrun logs that exist (grompp's when grompp failed:
        mdrun never ran), else the mdrun log."""
        logs = [p for p in (self.log, self.grompp_log) if p.is_file()]
        return max(logs, key=lambda p: p.stat().st_mtime_ns) if logs else self.log

    def _discard_partial_run(self) -> None:
        """Remove the outputs of an mdrun that has no checkpoint to continue from."""
        if not self.workdir.is_dir():
            return
        for p in self.workdir.iterdir():
            if p.name.startswith(f"{self.name}.") or p.name.startswith(f"{self.name}_") or p.name.startswith("#"):
                if p.suffix in (".gro", ".xtc", ".trr", ".edr", ".log", ".cpt") and not p.name.endswith(".mdrun.log"):
                    p.unlink()
                elif p.name.startswith("#"):
                    p.unlink()

    def run(self, ctx: StageContext) -> StageResult:
        from ..gromacs import em_result, grompp, mdrun, render_mdp, template_placeholders

        self.workdir.mkdir(parents=True, exist_ok=True)
        mdp = self.workdir / f"{self.name}.mdp"
        placeholders = set(template_placeholders(self.inputs["mdp_template"]))
        values = dict(self.values)
        extra = {k: v for k, v in self.mdp_options.items() if k.replace("-", "_") not in placeholders}
        values.update({k.replace("-", "_"): v for k, v in self.mdp_options.items() if k.replace("-", "_") in placeholders})
        render_mdp(self.inputs["mdp_template"], values, mdp)
        if extra:
            from ..io import atomic_write_text

            atomic_write_text(mdp, _set_mdp_options(mdp.read_text(), extra))
        continued = self.can_continue()
        if not continued:
            self._discard_partial_run()
            if not self.tpr.is_file():
                # grompp writes into a scratch folder; the tpr appears (renamed) only when complete
                scratch = self.workdir / ".grompp"
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir()
                grompp(mdp, self.structure, self.topology, scratch / self.tpr.name, settings=ctx.settings,
                       restraint=self.restraint, maxwarn=self.maxwarn, log=self.grompp_log,
                       cwd=self.workdir)
                for p in scratch.iterdir():
                    os.replace(p, self.workdir / p.name)  # mdout.mdp first is harmless; tpr is atomic
                shutil.rmtree(scratch, ignore_errors=True)
        res = mdrun(self.tpr, self.workdir / self.name, settings=ctx.settings, cwd=self.workdir, log=self.log)
        if not res.completed:
            raise StageStopped(f"mdrun stopped before step {self.nsteps} (time limit or signal); "
                               f"it continues from {self.cpt.name} on the next run")
        info: dict[str, Any] = {"beads" if self.resolution == "cg" else "atoms": _gro_atoms(res.gro),
                                "nsteps": self.nsteps, "continued": res.continued,
                                "ns_per_day": res.ns_per_day}
        if self.resolution == "aa" and not self.minimisation:
            info.update(_membrane_info(self.topology, res.gro))
        if self.minimisation:
            energies = em_result(res.log)
        else:
            energies = run_energies(res.edr, ctx.settings)
            dt = float(self.values.get("dt", 0))
            info["length_ps"] = round(self.nsteps * dt, 6)
        if self.nstxout > 0:
            n, times = xtc_frames(self.outputs["xtc"])
            want = expected_frames(self.nsteps, self.nstxout)
            info.update(frames=n, first_time_ps=times[0] if times else None, last_time_ps=times[-1] if times else None)
            dt = float(self.values.get("dt", 0))
            if n != want or len(set(times)) != n or times != sorted(times):
                raise MultiscaleError(f"{self.outputs['xtc']}: {n} frames (times {times[:2]}...{times[-2:]}) but "
                                      f"{want} expected for {self.nsteps} steps every {self.nstxout}: the trajectory "
                                      f"is damaged; rerun this stage with --force")
            if dt and times and abs(times[-1] - times[0] - (want - 1) * self.nstxout * dt) > 1e-3:
                raise MultiscaleError(f"{self.outputs['xtc']}: frame times {times[0]}..{times[-1]} ps do not match "
                                      f"{want} frames every {self.nstxout * dt:g} ps: rerun this stage with --force")
        return StageResult(energies=energies, info=info)


def _membrane_info(topology: Path, gro: Path) -> dict:
    """Area per lipid and P-P thickness of an AA segment's last frame (membranes only; {} else)."""
    from ..io import read_frames
    from ..lipid_analysis import bilayer_geometry
    from ..topology import load_topology

    top = load_topology(topology)
    if not any(_is_lipid(mt) for mt in top.moltypes.values()):
        return {}
    fr = read_frames(gro, expected_atoms=top.n_atoms)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in bilayer_geometry(fr.positions[0], fr.box[0], top).items()}


def _is_lipid(mt) -> bool:
    from ..classes import lipid_mapping

    return lipid_mapping(mt) is not None


def run_energies(edr: Path, settings) -> dict:
    """Averages over all energy frames of a run (``potential_kj_mol``, ``temperature_k``, ...,
    ``n_frames``) plus the last frame's values as ``last_<name>``."""
    from ..gromacs import final_energies

    avg = final_energies(edr, settings=settings, tail_fraction=1.0)
    last = final_energies(edr, settings=settings)
    out = {k: v for k, v in avg.items() if v is not None and k != "time_ps"}
    out.update({f"last_{k}": v for k, v in last.items() if v is not None and k not in ("n_frames",)})
    out["averaged"] = True
    return out


# ------------------------------------------------------------------------------------------
# Python stages


@dataclass
class PythonStage(Stage):
    """A Python step: ``func(stage, ctx) -> StageResult``; writes its outputs atomically."""

    func: Callable[[PythonStage, StageContext], StageResult] | None = None
    kind: str = "python"

    def run(self, ctx: StageContext) -> StageResult:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for p in self.outputs.values():  # a redo starts clean
            if p.is_file():
                p.unlink()
        return self.func(self, ctx)


def _stage_log(stage: Stage, ctx: StageContext, text: str) -> None:
    with open(ctx.log, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {stage.key}: {text}\n")


def _checked_mapping(stage: Stage, ctx: StageContext, top):
    """The config's mapping after the pre-flight checks (:mod:`multiscale.preflight`), in the CG
    itps' bead order; notes go to the stage log."""
    from ..preflight import load_checked_mapping

    s = ctx.config.system
    return load_checked_mapping(s.mapping_files, top, s.cg_include_files(), note=lambda t: _stage_log(stage, ctx, t))


def _run_coarse_grain(stage: PythonStage, ctx: StageContext) -> StageResult:
    from ..coarse_grain import cg_names, coarse_grain, write_cg_topology
    from ..io import read_frames, write_frames
    from ..topology import load_topology

    cfg = ctx.config
    top = load_topology(stage.inputs["aa_topology"])
    mapping = _checked_mapping(stage, ctx, top)
    fr = read_frames(stage.inputs["aa_structure"], expected_atoms=top.n_atoms, label="AA structure")
    cg = coarse_grain(fr.positions[-1:], fr.box[-1:], top, mapping, seed=ctx.seed, layout=_go_layout(stage, top, mapping))
    names, resnames, resids = cg_names(cg.layout)
    write_frames(stage.outputs["gro"], cg.positions[0], cg.box[0], names, resnames, resids,
                 title=f"CG image of {stage.inputs['aa_structure'].name}")
    chain_itps = [p for k, p in stage.inputs.items() if k.startswith("chain_itp ")]  # martinize2's (workflow.martinize)
    includes = list(cfg.system.cg_include_files())
    if "go_forcefield" in stage.inputs:  # the force field with the Go atom types and contacts (workflow.martinize)
        includes = [stage.inputs["go_forcefield"] if str(p) == stage.params["go_replaces"] else p for p in includes]
    write_cg_topology(stage.outputs["top"], cg.layout, includes + chain_itps,
                      title=f"CG system (cycle {stage.cycle}) written by multiscale")
    moved = f"; {cg.water_beads_moved} W bead(s) moved off other beads" if cg.water_beads_moved else ""
    _stage_log(stage, ctx, f"{top.n_atoms} atoms -> {cg.positions.shape[1]} beads "
                           f"({', '.join(f'{b.cg_name} x{b.count}' for b in cg.layout)}){moved}")
    return StageResult(info={"atoms": top.n_atoms, "beads": int(cg.positions.shape[1]),
                             "water_beads_moved": int(cg.water_beads_moved)})


def _go_layout(stage: PythonStage, top, mapping):
    """The CG layout with martinize2's Go virtual sites on the chains of ``params["go_chains"]``
    (:func:`multiscale.classes.chain.with_go_sites`); None (the plain layout) without them."""
    go = stage.params.get("go_chains")
    if not go:
        return None
    from ..classes.chain import with_go_sites
    from ..coarse_grain import cg_layout

    return with_go_sites(cg_layout(top, mapping), go)


def _run_train(stage: PythonStage, ctx: StageContext) -> StageResult:
    import numpy as np

    from ..backmap.engine import load_model, train
    from ..io import Frames, read_frames
    from ..topology import load_topology

    cfg = ctx.config
    top = load_topology(stage.inputs["aa_topology"])
    mapping = _checked_mapping(stage, ctx, top)
    fr = read_frames(stage.inputs["aa_structure"], stage.inputs["trajectory"], expected_atoms=top.n_atoms)
    held = 0
    if stage.params.get("held_out"):  # the end of the run is kept for a report (multiscale.molecule)
        fr, test = split_frames(fr, stage.params["held_out"])
        held = test.n_frames
    if cfg.backmap.samples and fr.n_frames > cfg.backmap.samples:
        idx = np.unique(np.linspace(0, fr.n_frames - 1, cfg.backmap.samples).round().astype(int))
        fr = Frames(fr.positions[idx], fr.box[idx], fr.times[idx], fr.names, fr.resnames, fr.resids)
    init = load_model(stage.inputs["init_model"], top) if "init_model" in stage.inputs else None
    kwargs: dict[str, Any] = {"seed": ctx.seed, "init": init, "device": cfg.backmap.device}
    if cfg.backmap.epochs is not None:
        kwargs["epochs"] = cfg.backmap.epochs
    if "log" in inspect.signature(train).parameters:
        kwargs["log"] = lambda *a, **k: _stage_log(stage, ctx, " ".join(str(x) for x in a))
    if "provenance" in inspect.signature(train).parameters:
        kwargs["provenance"] = {"stage": stage.key, "trajectory": str(stage.inputs["trajectory"]),
                                "n_frames": fr.n_frames, "init": str(stage.inputs.get("init_model")),
                                **({"held_out_frames": held} if held else {})}
    t0 = time.perf_counter()
    model = train(top, mapping, fr, **kwargs)
    from ..io import atomic_path

    with atomic_path(stage.outputs["model"]) as tmp:
        model.save(tmp)
    _stage_log(stage, ctx, f"trained on {fr.n_frames} frames in {time.perf_counter() - t0:.1f} s"
                           + (f", fine-tuned from {stage.inputs['init_model']}" if init is not None else "")
                           + (f" ({held} held out)" if held else ""))
    return StageResult(info={"atoms": top.n_atoms, "frames": fr.n_frames, "fine_tuned": init is not None,
                             **({"held_out_frames": held} if held else {})})


def split_frames(fr, held_out: float):
    """(first, last) parts of a trajectory: the last ``held_out`` fraction (at least one frame
    each side) is the held-out window."""
    from ..io import Frames

    n = fr.n_frames
    n_train = max(1, min(n - 1, int(round(n * (1.0 - held_out)))))

    def sub(sl):
        return Frames(fr.positions[sl], fr.box[sl], fr.times[sl], fr.names, fr.resnames, fr.resids)
    return sub(slice(0, n_train)), sub(slice(n_train, n))


def _run_backmap(stage: PythonStage, ctx: StageContext) -> StageResult:
    from ..backmap.engine import backmap, load_model
    from ..backmap.restraints import write_posre_itp
    from ..coarse_grain import cg_layout, check_cg_beads
    from ..io import atomic_write_text, read_frames, write_frames
    from ..topology import load_topology

    cfg = ctx.config
    top = load_topology(stage.inputs["aa_topology"])
    if "model" in stage.inputs:
        model = load_model(stage.inputs["model"], top)
    else:  # no model given or trained yet (pipeline._PipelineBuilder.backmap)
        from ..backmap.shipped import shipped_models

        model = shipped_models(top, cfg.system.mapping_files)
    layout = _go_layout(stage, top, model.mapping) or cg_layout(top, model.mapping)
    fr = read_frames(stage.inputs["cg_structure"], label="CG structure")
    check_cg_beads(fr.n_atoms, layout, str(stage.inputs["cg_structure"]))
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"seed": ctx.seed, "device": cfg.backmap.device, "layout": layout}
    if "log" in inspect.signature(backmap).parameters:
        kwargs["log"] = lambda *a, **k: _stage_log(stage, ctx, " ".join(str(x) for x in a))
    aa, reports = backmap(model, top, fr.positions[-1:], fr.box[-1:], **kwargs)
    wall = time.perf_counter() - t0
    names, resnames, resids = top.per_atom("atom_names"), top.per_atom("resnames"), top.atom_resids()
    write_frames(stage.outputs["gro"], aa[0], fr.box[-1], names, resnames, resids,
                 title=f"backmapped from {stage.inputs['cg_structure'].name}")
    report = [r.to_dict() if hasattr(r, "to_dict") else r for r in reports]
    atomic_write_text(stage.outputs["report"], json.dumps(report, indent=1, default=str))
    # heavy-atom restraints to the backmapped positions: posre_<moltype>.itp + a topology that
    # includes them under -DPOSRES (the AA topology, preprocessed, with these includes added)
    posres = {}
    for mt in top.moltypes.values():
        if not mt.is_water:
            p = stage.workdir / f"posre_{mt.name}.itp"
            write_posre_itp(mt, p, force_constant=cfg.restrained.force_constant)
            posres[mt.name] = p.name
    write_restrained_topology(stage.inputs["aa_topology"], stage.outputs["gro"], stage.outputs["top"], posres, ctx.settings)
    write_restrained_topology(stage.inputs["aa_topology"], stage.outputs["gro"], stage.outputs["top_em"], posres,
                              ctx.settings, define="-DFLEXIBLE" if cfg.restrained.flexible_water_em else "")
    summary = reports[0].summary() if reports and hasattr(reports[0], "summary") else ""
    _stage_log(stage, ctx, f"backmapped {top.n_atoms} atoms in {wall:.2f} s. {summary}")
    info: dict[str, Any] = {"atoms": top.n_atoms, "beads": fr.n_atoms, "backmap_s": round(wall, 3)}
    first = report[0] if report and isinstance(report[0], dict) else {}
    for k, v in first.items():  # the certificate's headline numbers
        if (k.endswith("_final") or k in ("ok", "retries", "max_cg_deviation_nm")) and isinstance(v, (bool, int, float)):
            info[k] = v
    chains = [m for m in (first.get("per_moltype") or {}).values() if isinstance(m, dict) and m.get("kind") == "chain"]
    for k in ("cis_nonpro_final", "clashing_residues_final", "wrong_centres_final", "bad_disulfides_final",
              "chemistry_first_copies", "beads_missed"):  # chains.draw
        if chains:
            info[f"chain_{k}"] = int(sum(m.get(k, 0) for m in chains))
    return StageResult(info=info)


def default_pipeline(cfg, root: Path, replica: int | None = None) -> list[Stage]:
    """All stages of all ``cfg.cycles`` cycles, in run order (see the module docstring; built by
    :class:`multiscale.workflow.pipeline._PipelineBuilder`)."""
    from .pipeline import _PipelineBuilder

    return _PipelineBuilder(cfg, root, replica).build()


def __getattr__(name: str):
    """The pipeline builder's helpers, moved to :mod:`.pipeline`, stay importable from here."""
    if name in ("_PipelineBuilder", "_named_inputs", "_steps"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_pipeline() -> Callable:
    """The pipeline builder: :func:`default_pipeline`, or ``$MULTISCALE_PIPELINE`` (``module:func``
    or ``/path/to/file.py:func``)."""
    spec = os.environ.get("MULTISCALE_PIPELINE", "").strip()
    if not spec:
        return default_pipeline
    mod_name, _, func = spec.rpartition(":")
    if not mod_name or not func:
        raise MultiscaleError(f"MULTISCALE_PIPELINE={spec!r}: write module:function or /path/file.py:function")
    try:
        if mod_name.endswith(".py"):
            s = importlib.util.spec_from_file_location(Path(mod_name).stem, mod_name)
            if s is None or s.loader is None:
                raise ImportError(mod_name)
            mod = importlib.util.module_from_spec(s)
            s.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_name)
        return getattr(mod, func)
    except (ImportError, AttributeError, FileNotFoundError) as exc:
        raise MultiscaleError(f"MULTISCALE_PIPELINE={spec!r} cannot be loaded ({exc}): fix or unset it") from None

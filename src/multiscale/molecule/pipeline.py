"""The resumable stages of ``multiscale molecule``, run by the cycle driver
(:func:`multiscale.workflow.cycle.run_cycles` with ``pipeline=molecule_pipeline``): the same
checksums, locks, ``-cpi`` continuation, ``--force`` and status as a cycle.

    aa-em     EM of the built box (flexible water)
    aa-nvt    NVT, ``aa.eq`` (new velocities)
    aa-npt    NPT equilibration, :data:`NPT_PS` ps (density)
    aa-md     NPT production, ``aa.md`` (the training data)
    train     model trained on the first (1 - :data:`HELD_OUT`) of the production frames
    report    held-out frames coarse-grained, backmapped and scored by ``multiscale evaluate``
    publish   model.pt, aa.gro, report.md/json and the ready sim.yaml written into the folder

The held-out window is the end of the production run: the model never sees it, so the torsion
JSD against it measures generalisation in time, not memory.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ..config import Duration
from ..io import atomic_path, atomic_write_text
from ..workflow.stages import PythonStage, StageContext, StageResult, _checked_mapping, _PipelineBuilder, _run_train, _stage_log, split_frames

__all__ = ["molecule_pipeline", "NPT_PS", "HELD_OUT"]

NPT_PS = 20.0  # NPT equilibration before production, ps
HELD_OUT = 0.2  # fraction of the production frames kept from training (the end of the run)


def molecule_pipeline(cfg, root: Path, replica: int | None = None) -> list:
    b = _PipelineBuilder(cfg, root, replica)
    aa = cfg.aa
    em = b.aa_mdrun(1, "aa-em", "aa_em", {"nsteps": aa.em_steps, "emtol": aa.emtol, "define": "-DFLEXIBLE"},
                    cfg.system.aa_structure, minim=True, desc="EM of the built box")
    nvt = b.aa_mdrun(1, "aa-nvt", "aa_nvt", b.md_values(1, "aa-nvt", aa.eq, aa.dt, None, aa.energy_every, b.AA_DEFAULTS,
                                                       what="aa.eq"), em.outputs["gro"], desc=f"NVT {aa.eq}")
    npt_len = Duration(value=NPT_PS, unit="ps")
    npt = b.aa_mdrun(1, "aa-npt", "aa_npt", b.md_values(1, "aa-npt", npt_len, aa.dt, None, aa.energy_every, b.AA_DEFAULTS,
                                                       what="aa.npt"), nvt.outputs["gro"], desc=f"NPT equilibration {npt_len}")
    md = b.aa_md(1, npt.outputs["gro"])
    maps = b.mapping_inputs
    top = cfg.system.aa_topology
    wd = b.wd
    train = PythonStage(name="train", cycle=1, workdir=wd(1, "train"),
                        inputs={"aa_topology": top, "aa_structure": md.outputs["gro"], "trajectory": md.outputs["xtc"], **maps},
                        outputs={"model": wd(1, "train") / "model.pt"},
                        params={"held_out": HELD_OUT, "epochs": cfg.backmap.epochs, "seed": b.seed(1, "train", cfg.backmap.seed),
                                "device": cfg.backmap.device},
                        func=_run_train, description="train the model on the production run (held-out end excluded)")
    rdir = wd(1, "report")
    report = PythonStage(name="report", cycle=1, workdir=rdir,
                         inputs={"aa_topology": top, "aa_structure": md.outputs["gro"], "trajectory": md.outputs["xtc"],
                                 "model": train.outputs["model"], **maps},
                         outputs={"json": rdir / "report.json", "md": rdir / "report.md"},
                         params={"held_out": HELD_OUT, "seed": b.seed(1, "report", cfg.backmap.seed)},
                         func=_run_report, description="backmap the held-out frames and score them (multiscale evaluate)")
    home = Path(cfg.base_dir)
    publish = PythonStage(name="publish", cycle=1, workdir=wd(1, "publish"),
                          inputs={"model": train.outputs["model"], "aa_final": md.outputs["gro"], "report_json": report.outputs["json"],
                                  "report_md": report.outputs["md"]},
                          outputs={"model": home / "model.pt", "aa": home / "aa.gro", "report_md": home / "report.md",
                                   "report_json": home / "report.json", "sim": home / "sim.yaml"},
                          params={"seed": cfg.seed}, func=_run_publish, description="write the model and the ready cycle")
    return b.stages + [train, report, publish]


def _load(stage: PythonStage, ctx: StageContext):
    from ..io import read_frames
    from ..topology import load_topology

    top = load_topology(stage.inputs["aa_topology"])
    mapping = _checked_mapping(stage, ctx, top)
    fr = read_frames(stage.inputs["aa_structure"], stage.inputs["trajectory"], expected_atoms=top.n_atoms)
    return top, mapping, fr


def _write_pair(work: Path, stem: str, positions, box, names, resnames, resids, times) -> tuple[Path, Path]:
    from ..io import write_frames

    gro, xtc = work / f"{stem}.gro", work / f"{stem}.xtc"
    write_frames(gro, positions[0], box[0], names, resnames, resids)
    write_frames(xtc, positions, box, names, resnames, resids, times=times)
    return gro, xtc


def _run_report(stage: PythonStage, ctx: StageContext) -> StageResult:
    from ..backmap.engine import backmap, load_model
    from ..coarse_grain import cg_names, coarse_grain
    from ..evaluate.run import evaluate

    top, mapping, fr = _load(stage, ctx)
    fit, test = split_frames(fr, stage.params["held_out"])
    model = load_model(stage.inputs["model"], top)
    work = stage.workdir
    cg = coarse_grain(test.positions, test.box, top, mapping, seed=ctx.seed)
    cg_gro, cg_xtc = _write_pair(work, "cg", cg.positions, cg.box, *cg_names(cg.layout), test.times)
    aa_names = (top.per_atom("atom_names"), top.per_atom("resnames"), top.resids())
    ref_gro, ref_xtc = _write_pair(work, "reference", test.positions, test.box, *aa_names, test.times)
    t0 = time.perf_counter()
    x, certs = backmap(model, top, cg.positions, cg.box, seed=ctx.seed, device=ctx.config.backmap.device)
    wall = time.perf_counter() - t0
    bm_gro, bm_xtc = _write_pair(work, "backmapped", x, cg.box, *aa_names, test.times)
    rep = evaluate(cg=cg_gro, cg_trajectory=cg_xtc, mapping=[str(p) for p in ctx.config.system.mapping_files],
                   topology=stage.inputs["aa_topology"], output=work / "evaluate", candidates={"multiscale": (bm_gro, bm_xtc)},
                   reference=ref_xtc, reference_structure=ref_gro, energy=False, seed=ctx.seed, time_s={"multiscale": wall},
                   log=lambda m: _stage_log(stage, ctx, m))
    cand = _candidate(rep, "multiscale")
    n_mol = sum(b.count for b in top.blocks if not b.moltype.is_water)
    summary = {
        "held_out_frames": test.n_frames, "held_out_ps": [float(test.times[0]), float(test.times[-1])],
        "training_frames": fit.n_frames, "molecules_per_frame": n_mol,
        "backmap_s": round(wall, 3), "backmap_ms_per_molecule": round(1000 * wall / max(1, n_mol * test.n_frames), 3),
        "certificates_ok": int(sum(bool(getattr(c, "ok", True)) for c in certs)), "certificates": len(certs),
        **{k: cand.get(k) for k in ("jsd_scope", "jsd_max", "jsd_mean", "jsd_floor_mean", "jsd_excess_max", "worst_term",
                                    "stereo_fraction", "n_stereocentres_checked", "clashes_inter", "clashes_intra",
                                    "ring_penetrations") if k in cand},
        **{k: v for k, v in cand.items() if k.startswith("cg_") and isinstance(v, (int, float))},
    }
    atomic_write_text(stage.outputs["json"], json.dumps(summary, indent=1, default=float) + "\n")
    atomic_write_text(stage.outputs["md"], _report_md(ctx, summary))
    _stage_log(stage, ctx, f"held-out torsion JSD max {summary.get('jsd_max')}, clashes {summary.get('clashes_inter')}")
    return StageResult(info={k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})


def _candidate(rep: dict, name: str) -> dict:
    for key in ("candidates", "results", "methods"):
        block = rep.get(key)
        if isinstance(block, dict) and name in block:
            return block[name]
        if isinstance(block, list):
            for c in block:
                if isinstance(c, dict) and c.get("name") == name:
                    return c
    return {}


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _report_md(ctx: StageContext, s: dict) -> str:
    rows = [("held-out frames (end of the production run, never trained on)", s["held_out_frames"]),
            ("training frames", s["training_frames"]), ("molecules per frame", s["molecules_per_frame"]),
            ("heavy-atom torsion JSD, max (scope: " + _fmt(s.get("jsd_scope")) + ")", s.get("jsd_max")),
            ("heavy-atom torsion JSD, mean", s.get("jsd_mean")), ("noise floor (mean)", s.get("jsd_floor_mean")),
            ("worst term", s.get("worst_term")), ("stereocentres as in the reference (fraction)", s.get("stereo_fraction")),
            ("stereocentres checked", s.get("n_stereocentres_checked")),
            ("clash pairs per frame, intermolecular < 0.08 nm", s.get("clashes_inter")),
            ("clash pairs per frame, intramolecular < 0.10 nm", s.get("clashes_intra")),
            ("ring penetrations per frame", s.get("ring_penetrations")),
            ("certificates passed", f"{s['certificates_ok']} / {s['certificates']}"),
            ("backmap time, ms per molecule", s["backmap_ms_per_molecule"])]
    rows += [(k, v) for k, v in s.items() if k.startswith("cg_")]
    lines = ["# Backmapping model report", "",
             f"Held-out window {s['held_out_ps'][0]:g}-{s['held_out_ps'][1]:g} ps of the production run, coarse-grained "
             "with the mapping, backmapped with the trained model and scored by `multiscale evaluate` "
             "(details: data/cycle_001/report/evaluate/report.md).", "", "| quantity | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def cycle_config(cfg, name: str) -> dict:
    """The ready CG <-> AA cycle of the molecule folder (relative paths), from the heptanol
    example's lengths: 2 cycles, the trained model used as is (``train_from_cycle: 0``)."""
    import yaml

    from ..paths import find_data

    data = yaml.safe_load((find_data("examples", "heptanol") / "sim.yaml").read_text())
    data.update({"output": "runs", "cycles": 2, "start": "aa", "seed": int(cfg.seed),
                 "temperature": cfg.temperature, "pressure": cfg.pressure})
    data["system"] = {"aa_topology": "aa.top", "aa_structure": "aa.gro", "cg_topology": "cg.top", "mappings": [f"{name}.map"]}
    data["backmap"] = {"model": "model.pt", "train_from_cycle": 0, "device": cfg.backmap.device}
    data["gromacs"] = json.loads(cfg.gromacs.model_dump_json(exclude_defaults=True)) or {"nt": 1}
    return data


def _timings(root: Path) -> list[tuple[str, float | None, float | None]]:
    from ..workflow.state import RunState

    st = RunState.load(root)
    out = []
    for key, rec in st.stages.items():
        if rec.get("status") == "done":
            out.append((key, rec.get("wall_s"), (rec.get("info") or {}).get("ns_per_day")))
    return out


def _run_publish(stage: PythonStage, ctx: StageContext) -> StageResult:
    import yaml

    from ..config import config_from_dict

    home = Path(ctx.config.base_dir)
    name = Path(ctx.config.system.mapping_files[0]).stem
    times = _timings(stage.workdir.parent.parent)
    rows = [f"| {k} | {w:.1f} | {_fmt(n)} |" for k, w, n in times if w is not None]
    md = Path(stage.inputs["report_md"]).read_text() + "\n## Time per step (this machine)\n\n| stage | wall s | ns/day |\n|---|---|---|\n"
    md += "\n".join(rows) + "\n"
    summary = json.loads(Path(stage.inputs["report_json"]).read_text())
    summary["stages"] = [{"stage": k, "wall_s": w, "ns_per_day": n} for k, w, n in times]
    with atomic_path(stage.outputs["model"]) as tmp:
        shutil.copyfile(stage.inputs["model"], tmp)
    with atomic_path(stage.outputs["aa"]) as tmp:
        shutil.copyfile(stage.inputs["aa_final"], tmp)
    atomic_write_text(stage.outputs["report_md"], md)
    atomic_write_text(stage.outputs["report_json"], json.dumps(summary, indent=1) + "\n")
    data = cycle_config(ctx.config, name)
    config_from_dict(data, base=home, source="sim.yaml")  # valid where it is written, before it is written
    atomic_write_text(stage.outputs["sim"], f"# CG <-> AA cycle of {name}, written by `multiscale molecule` (model: see report.md).\n"
                      "# Run it: multiscale cycle   (keys: docs/sim-yaml.md)\n" + yaml.safe_dump(data, sort_keys=False))
    return StageResult(info={"published": str(home)})

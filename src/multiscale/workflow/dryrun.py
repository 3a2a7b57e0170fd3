"""``multiscale cycle --dry-run``: check every input and print the plan; run and write nothing.

Checks, in order (the first problem is a one-line :class:`MultiscaleError`, as for a real run):
sim.yaml, the GROMACS executables, the stage list (lengths -> steps, mdp templates and their
placeholders), the AA topology with its ``#include``s, the mappings against it, the starting
structure's atom count, the CG topology and the model file when given.  Then, from
``state.json`` when there is one, what each stage would do: skip (done, inputs unchanged),
run, continue from a checkpoint, redo (and why), or stop the run (changed input without
``--force``).  No lock is taken and no file or folder is created.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MultiscaleError

__all__ = ["dry_run"]


def _check_inputs(cfg, plan) -> list[str]:
    """Parse the system's inputs as the stages will; returns lines for the report."""
    from ..preflight import load_checked_mapping
    from ..topology import load_topology
    from .state import include_closure, include_search_dirs

    s = cfg.system
    lines = []
    if os.environ.get("MULTISCALE_PIPELINE", "").strip():  # a custom stage list reads what it wants
        lines.append("custom stage list ($MULTISCALE_PIPELINE): its stages parse the system files themselves")
        _check_templates(plan)
        return lines
    top = load_topology(s.aa_topology)
    incs = include_closure(s.aa_topology, include_search_dirs())
    lines.append(f"AA topology {s.aa_topology.name}: {top.n_atoms} atoms, {len(incs)} included file(s)")
    notes: list[str] = []
    load_checked_mapping(s.mapping_files, top, s.cg_include_files(), note=notes.append)
    lines.append(f"mappings: {', '.join(p.name for p in s.mapping_files)} match the AA topology and the CG itps" if s.mapping_files
                 else "mappings: none (built in: water, ions, amino-acid chains)")
    chains = [st for st in plan if st.name == "martinize"]
    if chains:
        lines.append(f"amino-acid chain(s) {', '.join(chains[0].params['moltypes'])}: Martini itp by martinize2 "
                     f"(ss {chains[0].params['ss']}) in {chains[0].workdir}")
    lines += notes
    if s.aa_structure is not None and cfg.start == "aa":
        from ..io import read_frames

        fr = read_frames(s.aa_structure, expected_atoms=top.n_atoms, label="AA structure")
        import numpy as np

        b = np.asarray(fr.box[-1], float)
        edges = np.linalg.norm(b, axis=1) if b.shape == (3, 3) else b  # box vectors (triclinic) or edge lengths
        shape = "" if b.shape != (3, 3) or not np.any(b[np.triu_indices(3, 1)] + b[np.tril_indices(3, -1)]) else " (triclinic)"
        lines.append(f"AA structure {s.aa_structure.name}: {fr.n_atoms} atoms, box {' x '.join(f'{x:.3f}' for x in edges)} nm{shape}")
    if s.cg_topology is not None:
        missing = [str(p) for p in s.cg_include_files() if not Path(p).is_file()]
        if missing:
            raise MultiscaleError(f"system.cg_topology {s.cg_topology}: #include {missing[0]} not found "
                                  "(relative to its folder or system.forcefield_dirs)")
    if cfg.start == "cg" and s.cg_structure is not None:
        from ..io import read_frames

        fr = read_frames(s.cg_structure, label="CG structure")
        lines.append(f"CG structure {s.cg_structure.name}: {fr.n_atoms} beads")
    if cfg.backmap.model is not None:
        from ..backmap.engine import load_model

        load_model(cfg.backmap.model, top)
        lines.append(f"model {cfg.backmap.model.name}: fits the AA topology")
    _check_templates(plan)
    return lines


def _check_templates(plan) -> None:
    from ..gromacs import template_placeholders
    from .stages import MdrunStage

    for st in plan:
        if isinstance(st, MdrunStage):
            have = {k.replace("-", "_") for k in list(st.values) + list(st.mdp_options) if st.values.get(k) is not None
                    or k in st.mdp_options}
            need = set(template_placeholders(st.inputs["mdp_template"]))
            if need - have:
                raise MultiscaleError(f"stage {st.key}: mdp template {st.inputs['mdp_template']} needs "
                                      f"{', '.join(sorted(need - have))}: set it in mdp.overrides")


def _actions(driver, plan, state, redo: list[str]) -> list[tuple[str, str]]:
    """(stage key, what a real run would do) for every stage, without touching anything."""
    from .cycle import Checksums, _diff, _fingerprint

    sums = Checksums(state)
    out, redo_set, blocked = [], set(redo), None
    for idx, st in enumerate(plan):
        rec = state.record(st.key)
        status = rec["status"] if rec else "pending"
        if blocked:
            out.append((st.key, "-"))
            continue
        if st.key in redo_set and status != "pending":
            out.append((st.key, "redo (--redo-from)"))
            continue
        if status == "done":
            problem = driver._check_done(st, rec, sums)
            if problem is None:
                out.append((st.key, "skip (done, inputs unchanged)"))
            elif driver.force:
                out.append((st.key, f"redo: {problem} (--force; and every stage after it)"))
                redo_set.update(s.key for s in plan[idx + 1:])
            else:
                out.append((st.key, f"STOP: {problem}: needs --force or --redo-from {st.name}@{st.cycle}"))
                blocked = st.key
            continue
        if status in ("running", "stopped") and st.resumable and st.can_continue():
            ready = all(p is None or Path(p).is_file() for p in st.inputs.values())
            diffs = _diff(rec.get("inputs", {}), _fingerprint(st, sums)) if ready and rec and rec.get("inputs") else []
            if diffs and not driver.force:
                out.append((st.key, f"STOP: interrupted and {diffs[0]} since: needs --force"))
                blocked = st.key
            else:
                out.append((st.key, "restart: " + diffs[0] if diffs else "continue from its checkpoint"))
            continue
        out.append((st.key, {"failed": "retry (failed before)", "stopped": "redo (interrupted)",
                             "running": "redo (interrupted)"}.get(status, "run")))
    return out


def dry_run(config_path: str | os.PathLike, replica: int | None = None, force: bool = False,
            redo_from: str | None = None, console=None) -> int:
    """Check every input of ``config_path`` and print the plan; returns 0 (problems raise)."""
    from ..config import load_config
    from ..gromacs import check_gmx
    from .cycle import _Driver, _is_non_folder, build_plan
    from .state import STATE_NAME, RunState
    from .status import Reporter, make_console, root_is_locked

    if replica is not None and replica < 0:
        raise MultiscaleError(f"--replica must be >= 0, got {replica}")
    cfg = load_config(config_path)
    root = cfg.root(replica)
    if _is_non_folder(root):
        raise MultiscaleError(f"output {root} is a file, not a folder: set 'output' in {cfg.source.name} to a folder")
    console = console or make_console()
    reporter = Reporter(console=console, live=False)
    gmxlib = cfg.gmxlib()
    old = os.environ.get("GMXLIB")
    try:
        if gmxlib:
            os.environ["GMXLIB"] = gmxlib
        gmx = check_gmx(cfg.gromacs.settings(), mdrun=True)
        plan = build_plan(cfg, root, replica)
        driver = _Driver(cfg, root, replica, force, None, None, reporter, [], redo_from)
        redo = driver._resolve_redo_from(plan)
        lines = [f"GROMACS: {gmx}"] + _check_inputs(cfg, plan)
        has_state = (root / STATE_NAME).is_file()
        if not has_state and root.is_dir() and any(p.is_dir() for p in root.glob("cycle_*")) and not force:
            driver._check_state_present(root)  # raises the same message a real run gives
        state = RunState.load(root) if has_state else RunState(root)
        actions = _actions(driver, plan, state, redo)
    finally:
        if old is None:
            os.environ.pop("GMXLIB", None)
        else:
            os.environ["GMXLIB"] = old
    p = console.print
    p(f"[bold]dry run[/] of {cfg.source} -> {root}" + (" (a run holds it now)" if root_is_locked(root) else ""),
      highlight=False)
    for line in lines:
        p(f"  ok  {line}", highlight=False)
    width = max(len(k) for k, _ in actions)
    for (key, what), _st in zip(actions, plan):
        p(f"  {key:<{width}}  {what}", highlight=False)
    n_run = sum(1 for _, w in actions if not w.startswith(("skip", "-", "STOP")))
    stop = next((k for k, w in actions if w.startswith("STOP")), None)
    p(f"{len(plan)} stages: {n_run} would run, {sum(1 for _, w in actions if w.startswith('skip'))} skipped"
      + (f"; the run would stop at {stop}" if stop else "") + ". Nothing was run or written.", highlight=False)
    return 1 if stop else 0

"""The cycle driver: run the stages of all cycles in order, exactly once each, resumably.

``run_cycles(config_path)`` builds the stage list (:mod:`multiscale.workflow.stages`), runs the
pre-flight checks once when the plan maps or trains (:func:`preflight_plan`, before any MD), takes
a lock on the output root, and for each stage:

* *done* -> skipped, after checking that its inputs (sha256 of every input file, of every file
  a topology among them ``#include``s, of mapping files, and its parameters) are those it ran
  with and that its outputs are still there; otherwise the run stops with a one-line message
  naming the stage and the changed file (``--force`` redoes that stage and every stage after
  it; ``--redo-from STAGE[@CYCLE]`` redoes from a chosen stage);
* *interrupted* (killed, -maxh, signal) -> an mdrun continues from its checkpoint (``-cpi``,
  appending); a Python stage or an mdrun without checkpoint is redone from scratch;
* *failed* -> retried (from scratch if its inputs changed since); the failure names the stage's log
  that exists (``<stage>.grompp.log`` when grompp failed) in the message, the state file and
  the progress output;
* otherwise run, then its outputs are checksummed and the stage is recorded *done*.

Every change goes to ``ROOT/state.json`` atomically.  ``--maxh`` is a wall-time budget for the
whole command: each mdrun gets the remaining time as ``-maxh`` (it stops cleanly with a
checkpoint) and no stage is started when too little is left.  SIGTERM/SIGINT stop cleanly too
(mdrun writes a checkpoint).  Return codes: 0 finished (or ``stop_after`` reached),
3 stopped early (time budget or signal; run the same command again to continue).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import MultiscaleError
from ..io import remove_partial_files
from .lock import RootLock, _alive, _lock_holders, _recorded_pid  # noqa: F401  (re-exported)
from .stages import Stage, StageContext, StageStopped, load_pipeline
from .state import STATE_NAME, TOPOLOGY_SUFFIXES, RunState, include_closure, include_search_dirs, now_iso, sha256_file, sha256_json

__all__ = ["run_cycles", "build_plan", "preflight_plan", "EXIT_DONE", "EXIT_STOPPED"]

EXIT_DONE = 0
EXIT_STOPPED = 3
MAX_LOST_ATTEMPTS = 3  # a stage that cannot checkpoint, interrupted this often, needs more wall time
MIN_STAGE_BUDGET_S = 60.0  # do not start a stage with less time than this left (or 2 % of --maxh)


class StopRequested(BaseException):
    """Raised inside Python stages when SIGTERM/SIGINT arrive."""


# ------------------------------------------------------------------------------------------
# checksums with a (size, mtime) cache from the state file


class Checksums:
    def __init__(self, state: RunState):
        self.root = state.root
        self.cache: dict[str, tuple[int, int, str]] = {}
        for rec in state.stages.values():
            for group in (rec.get("inputs") or {}, rec.get("outputs") or {}):
                for r in group.values():
                    if isinstance(r, dict) and r.get("path") and r.get("mtime_ns") is not None:
                        self.cache[self._abs(r["path"])] = (r.get("bytes"), r.get("mtime_ns"), r.get("sha256"))

    def _abs(self, p: str) -> str:
        q = Path(p)
        return str(q if q.is_absolute() else (self.root / q).resolve())

    def record(self, path: Path) -> dict:
        path = Path(path)
        st = path.stat()
        key = str(path.resolve())
        c = self.cache.get(key)
        if c and c[0] == st.st_size and c[1] == st.st_mtime_ns:
            sha = c[2]
        else:
            sha = sha256_file(path)
            self.cache[key] = (st.st_size, st.st_mtime_ns, sha)
        try:
            rel = str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            rel = str(path.resolve())
        return {"path": rel, "sha256": sha, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _fingerprint(stage: Stage, sums: Checksums, search_dirs: list[Path] | None = None) -> dict:
    """Checksums of every input of ``stage``: its declared files, every file a topology among
    them ``#include``s (recursively; role ``"<role> #include <name>"``), and its parameters."""
    out: dict[str, Any] = {}
    dirs = include_search_dirs() if search_dirs is None else search_dirs
    for role, p in stage.inputs.items():
        if p is None:
            continue
        if not Path(p).is_file():
            raise MultiscaleError(f"stage {stage.key}: input {role} {p} not found: "
                                  + ("it is an output of an earlier stage; run with --force to redo that stage"
                                     if _inside(p, sums.root) else "restore it or fix sim.yaml"))
        out[role] = sums.record(Path(p))
        if Path(p).suffix in TOPOLOGY_SUFFIXES:
            for inc in include_closure(p, dirs):
                name = f"{role} #include {inc.name}"
                while name in out:
                    name += "'"
                out[name] = sums.record(inc)
    out["params"] = {"sha256": sha256_json(stage.params), "values": stage.params}
    return out


def _inside(p: Path, root: Path) -> bool:
    try:
        Path(p).resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _diff(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two input fingerprints."""
    out = []
    for role in sorted(set(old) | set(new)):
        a, b = old.get(role), new.get(role)
        if role == "params":
            if (a or {}).get("sha256") != (b or {}).get("sha256"):
                out.append("its parameters changed (" + _param_diff((a or {}).get("values", {}), (b or {}).get("values", {})) + ")")
            continue
        if a is None:
            out.append(f"it has a new input '{role}' ({b['path']})")
        elif b is None:
            out.append(f"its input '{role}' ({a['path']}) is no longer used")
        elif a.get("sha256") != b.get("sha256"):
            out.append(f"its input '{role}' ({b['path']}) changed")
    return out


def _param_diff(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return _param_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return prefix.rstrip(".") or "?"
    return f"{prefix.rstrip('.')}: {a!r} -> {b!r}"


# ------------------------------------------------------------------------------------------
# processes


def _descendants(pid: int) -> list[int]:
    """PIDs of all descendants of ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for e in entries:
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat") as f:
                data = f.read()
            ppid = int(data[data.rfind(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(e))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def build_plan(cfg, root: Path, replica: int | None = None, pipeline=None) -> list[Stage]:
    """The stage list: ``pipeline(cfg, root, replica)``, by default :func:`load_pipeline`'s."""
    plan = (pipeline or load_pipeline())(cfg, root, replica)
    keys = [s.key for s in plan]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise MultiscaleError(f"the stage list names {sorted(dup)[0]} twice: stage names must be unique per cycle")
    return plan


def preflight_plan(cfg, plan: list[Stage], note=None) -> None:
    """The pre-flight checks (:mod:`multiscale.preflight`: mapping <-> AA topology <-> CG itps,
    masses/charges) once, before the first stage, when the plan maps or trains: a mismatch stops
    the run before any MD instead of at ``cg-em`` after training.  Notes go to ``note``."""
    if not any(s.name in ("coarse-grain", "train") for s in plan):
        return
    from ..preflight import load_checked_mapping

    s = cfg.system
    load_checked_mapping(s.mapping_files, s.aa_topology, s.cg_include_files(), note=note)


# ------------------------------------------------------------------------------------------
# the driver


class _Driver:
    def __init__(self, cfg, root: Path, replica, force: bool, stop_after: str | None, maxh: float | None,
                 reporter, argv: list[str] | None, redo_from: str | None = None, pipeline=None):
        self.cfg, self.root, self.replica, self.force = cfg, root, replica, force
        self.pipeline = pipeline
        self.redo_from = redo_from
        self.stop_after, self.maxh, self.reporter, self.argv = stop_after, maxh, reporter, argv
        self.t0 = time.monotonic()
        self.deadline = self.t0 + maxh * 3600.0 if maxh else None
        self.stop_signal: int | None = None
        self.current: Stage | None = None
        self._old_handlers: dict[int, Any] = {}

    # signals ----------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        first = self.stop_signal is None
        self.stop_signal = signum
        if first:
            self.reporter.note(f"received {signal.Signals(signum).name}: stopping cleanly "
                               "(mdrun writes a checkpoint); run the same command again to continue")
        cur = self.current
        if cur is not None and cur.kind == "gromacs":
            if first:
                for pid in _descendants(os.getpid()):
                    try:
                        os.kill(pid, signal.SIGTERM)
                    except OSError:
                        pass
        elif cur is not None:
            raise StopRequested()

    def _install_signals(self):
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old_handlers[s] = signal.signal(s, self._on_signal)
            except (ValueError, OSError):  # not the main thread
                pass

    def _restore_signals(self):
        for s, h in self._old_handlers.items():
            try:
                signal.signal(s, h)
            except (ValueError, OSError):
                pass

    # time budget ------------------------------------------------------------------------
    def remaining_s(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def settings(self):
        rem = self.remaining_s()
        cfg_maxh = self.cfg.gromacs.maxh
        maxh = None
        if rem is not None:
            maxh = max(rem, 1.0) / 3600.0
        if cfg_maxh is not None:
            maxh = min(maxh, cfg_maxh) if maxh is not None else cfg_maxh
        return self.cfg.gromacs.settings(maxh=maxh)

    def _budget_left(self) -> bool:
        rem = self.remaining_s()
        if rem is None:
            return True
        return rem > max(MIN_STAGE_BUDGET_S, 0.02 * self.maxh * 3600.0)

    # main loop --------------------------------------------------------------------------
    def run(self) -> int:
        from ..gromacs import check_gmx

        cfg, root = self.cfg, self.root
        gmxlib = cfg.gmxlib()
        if gmxlib:  # an empty GMXLIB would hide GROMACS' own force fields
            os.environ["GMXLIB"] = gmxlib
        os.environ["GMX_MAXBACKUP"] = "-1"  # stage folders are ours: no #backup# files
        os.environ.setdefault("GROMACSWRAPPER_SUPPRESS_SETUP_CHECK", "1")
        check_gmx(cfg.gromacs.settings(), mdrun=True)
        plan = build_plan(cfg, root, self.replica, self.pipeline)
        preflight_plan(cfg, plan, note=self.reporter.note)
        stop_key = self._resolve_stop_after(plan)
        redo = self._resolve_redo_from(plan)
        with RootLock(root):
            self._check_state_present(root)
            state = RunState.load(root, create=True)
            remove_partial_files(root)  # temporary files of writes killed mid-way (no writer is alive: we hold the lock)
            killed = state.reap_dead_attempts()
            state.set_plan([s.key for s in plan], cfg.source, cfg.digest())
            state.start_run(self.argv)
            sums = Checksums(state)
            self.reporter.start(plan, state, root, killed)
            self._install_signals()
            result = "failed"
            try:
                code = self._loop(plan, state, sums, stop_key, redo)
                result = {EXIT_DONE: "done" if state.is_done() else "stopped-after", EXIT_STOPPED: "stopped"}[code]
                return code
            finally:
                self._restore_signals()
                self.current = None
                state.end_run(result)
                self.reporter.finish(plan, state, result, time.monotonic() - self.t0)

    def _resolve_stop_after(self, plan: list[Stage]) -> str | None:
        if not self.stop_after:
            return None
        keys = [s.key for s in plan]
        if self.stop_after in keys:
            return self.stop_after
        names = [s for s in plan if s.name == self.stop_after]
        if not names:
            raise MultiscaleError(f"--stop-after {self.stop_after}: no such stage: use a stage name "
                                  f"({', '.join(dict.fromkeys(s.name for s in plan))}) or a key like {keys[0]}")
        return "name:" + self.stop_after

    def _check_state_present(self, root: Path) -> None:
        """Stage folders without a state file: refuse instead of silently deleting finished work."""
        if (root / STATE_NAME).is_file() or not root.is_dir():
            return
        folders = sorted(p.name for p in root.glob("cycle_*") if p.is_dir())
        if folders and not self.force:
            raise MultiscaleError(f"{root} holds stage folders ({', '.join(folders[:3])}{' ...' if len(folders) > 3 else ''}) "
                                  f"but no {STATE_NAME}: restore {STATE_NAME}, or run with --force to delete them and "
                                  "redo every stage, or set another output folder")

    def _resolve_redo_from(self, plan: list[Stage]) -> list[str]:
        """Keys from ``--redo-from STAGE[@CYCLE]`` (or a key cycle_NNN/STAGE) to the end of the plan."""
        if not self.redo_from:
            return []
        keys = [s.key for s in plan]
        spec = self.redo_from.strip()
        name, _, cyc = spec.partition("@")
        if spec in keys:
            i = keys.index(spec)
        else:
            try:
                want = int(cyc) if cyc else None
            except ValueError:
                want = -1
            idx = [i for i, s in enumerate(plan) if s.name == name and (want is None or s.cycle == want)]
            if not idx:
                raise MultiscaleError(f"--redo-from {spec}: no such stage: use NAME or NAME@CYCLE with NAME one of "
                                      f"{', '.join(dict.fromkeys(s.name for s in plan))} (cycles 1-{plan[-1].cycle}), "
                                      f"or a key like {keys[0]}")
            i = idx[0]
        self.reporter.note(f"--redo-from {spec}: redoing {keys[i]} and the {len(keys) - i - 1} stage(s) after it")
        return keys[i:]

    def _loop(self, plan: list[Stage], state: RunState, sums: Checksums, stop_key: str | None,
              redo_from: list[str] | None = None) -> int:
        keys = [s.key for s in plan]
        redo = set(redo_from or ())
        for idx, st in enumerate(plan):
            if self.stop_signal is not None:
                return EXIT_STOPPED
            rec = state.record(st.key)
            status = rec["status"] if rec else "pending"
            if st.key in redo:
                redo.discard(st.key)
                if status != "pending" or st.workdir.exists():
                    st.clean()
                    state.reset(st.key)
                    status = "pending"
            if status == "done":
                problem = self._check_done(st, rec, sums)
                if problem is None:
                    self.reporter.skip(st, rec)
                    continue
                if not self.force:
                    raise MultiscaleError(f"stage {st.key} is done but {problem} since it ran: run with --force to "
                                          f"redo it and the stages after it (or --redo-from {st.name}@{st.cycle}), "
                                          "or restore the original")
                later = keys[idx + 1:]
                self.reporter.note(f"{st.key}: {problem}: redoing it and the {len(later)} stage(s) after it (--force)")
                redo.update(later)
                st.clean()
                state.reset(st.key)
                status = "pending"
            cur = _fingerprint(st, sums)
            if status in ("running", "stopped", "failed") and rec and rec.get("inputs"):
                diffs = _diff(rec["inputs"], cur)
                if diffs:
                    if status == "stopped" and st.can_continue() and not self.force:
                        raise MultiscaleError(f"stage {st.key} was interrupted and {diffs[0]} since: run with --force "
                                              "to restart it from scratch, or restore the original")
                    self.reporter.note(f"{st.key}: {diffs[0]}: restarting it from scratch")
                    st.clean()
                elif not st.resumable:
                    st.clean()
            if rec and status in ("running", "stopped") and not (st.resumable and st.can_continue()):
                lost = sum(1 for a in rec.get("attempts", []) if a.get("result") in ("killed", "stopped"))
                if lost >= MAX_LOST_ATTEMPTS and not self.force:
                    raise MultiscaleError(f"stage {st.key} was interrupted {lost} times before it finished and cannot "
                                          "continue from a checkpoint: give the job more wall time (--maxh / --time), "
                                          "or run with --force to try again")
            elif status == "pending" and st.workdir.exists():
                st.clean()  # leftovers of an attempt that never reached the state file
            if not self._budget_left():
                self.reporter.note(f"time budget (--maxh {self.maxh}) nearly used: stopping before {st.key}; "
                                   "run the same command again to continue")
                return EXIT_STOPPED
            code = self._run_stage(st, state, sums, cur)
            if code != EXIT_DONE:
                return code
            if self._reached(st, stop_key):
                self.reporter.note(f"stopped after {st.key} (--stop-after); run without it to continue")
                return EXIT_DONE
        return EXIT_DONE

    def _reached(self, st: Stage, stop_key: str | None) -> bool:
        if stop_key is None:
            return False
        return st.key == stop_key or stop_key == "name:" + st.name

    def _check_done(self, st: Stage, rec: dict, sums: Checksums) -> str | None:
        for role, p in st.inputs.items():
            if p is not None and not Path(p).is_file():
                return f"its input '{role}' ({p}) is missing"
        diffs = _diff(rec.get("inputs", {}), _fingerprint(st, sums))
        if diffs:
            return diffs[0]
        for role, r in (rec.get("outputs") or {}).items():
            p = Path(r["path"])
            p = p if p.is_absolute() else self.root / p
            if not p.is_file():
                return f"its output '{role}' ({r['path']}) is missing"
            if sums.record(p)["sha256"] != r["sha256"]:
                return f"its output '{role}' ({r['path']}) was modified"
        return None

    def _failure_log(self, st: Stage, state: RunState, text: str, always: bool = False) -> Path:
        """The failed stage's log that exists (its GROMACS log, or its own log with ``text``
        appended when ``always`` or when nothing was written), recorded in the state file."""
        log = st.failure_log()
        if always or not log.is_file():
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as f:
                f.write(f"\n{now_iso()} {st.key} failed:\n{text.rstrip()}\n")
        rec = state.record(st.key)
        if rec is not None:
            rec["log"] = os.path.relpath(log, self.root)
        return log

    def _run_stage(self, st: Stage, state: RunState, sums: Checksums, inputs: dict) -> int:
        continued = st.resumable and st.can_continue()
        log_rel = os.path.relpath(st.log, self.root)
        state.begin(st.key, st.cycle, st.name, inputs, log_rel, continued, st.description)
        seed = int(st.params.get("seed") or st.params.get("values", {}).get("gen_seed") or
                   self.cfg.stage_seed(st.cycle, st.name, self.replica))
        ctx = StageContext(config=self.cfg, root=self.root, settings=self.settings(), seed=seed, log=st.log,
                           continued=continued, replica=self.replica, stop_requested=lambda: self.stop_signal is not None)
        st.workdir.mkdir(parents=True, exist_ok=True)
        self.reporter.begin(st, continued)
        t0 = time.monotonic()
        self.current = st
        try:
            result = st.run(ctx)
            self.current = None
        except (StageStopped, StopRequested) as exc:
            self.current = None
            reason = str(exc) or (f"stopped by {signal.Signals(self.stop_signal).name if self.stop_signal else 'a signal'}; "
                                  "it is redone on the next run")
            state.stop(st.key, time.monotonic() - t0, reason)
            self.reporter.stopped(st, reason)
            return EXIT_STOPPED
        except MultiscaleError as exc:
            self.current = None
            wall = time.monotonic() - t0
            if self.stop_signal is not None:
                reason = (f"stopped by {signal.Signals(self.stop_signal).name}; "
                          + ("mdrun continues from its checkpoint on the next run" if st.can_continue()
                             else "it is redone on the next run"))
                state.stop(st.key, wall, reason)
                self.reporter.stopped(st, reason)
                return EXIT_STOPPED
            log = self._failure_log(st, state, f"{exc}\n")
            state.fail(st.key, wall, str(exc))
            self.reporter.failed(st, str(exc), log)
            raise MultiscaleError(f"stage {st.key} failed: {exc} -- state saved; fix the cause and run the same "
                                  "command again") from None
        except Exception as exc:  # a bug or an unexpected library error: keep the traceback
            self.current = None
            wall = time.monotonic() - t0
            log = self._failure_log(st, state, traceback.format_exc(), always=True)
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
            state.fail(st.key, wall, msg)
            self.reporter.failed(st, msg, log)
            raise MultiscaleError(f"stage {st.key} failed with {msg} (traceback in {log}) -- state saved; "
                                  "run the same command again after fixing the cause") from None
        wall = time.monotonic() - t0
        outputs = {}
        for role, p in st.outputs.items():
            if not Path(p).is_file():
                state.fail(st.key, wall, f"output {role} {p} was not written")
                raise MultiscaleError(f"stage {st.key} finished without writing its output {role} ({p}): see {st.log}")
            outputs[role] = sums.record(Path(p))
        info = dict(result.info)
        rec = state.finish(st.key, outputs, wall, energies=_clean(result.energies), info=_clean(info))
        self.reporter.end(st, rec)
        return EXIT_DONE


def _clean(d: dict) -> dict:
    out = {}
    for k, v in (d or {}).items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float):
            v = round(v, 6)
        out[k] = v
    return out


def _is_non_folder(root: Path) -> bool:
    """Whether ``root`` exists but is not a folder; a path the OS refuses is a one-line error."""
    try:
        return root.exists() and not root.is_dir()
    except OSError as exc:
        raise MultiscaleError(f"cannot write into the output folder {str(root)[:120]}{'...' if len(str(root)) > 120 else ''} ({exc.strerror}): set "
                              "'output' in sim.yaml to a writable folder with a shorter path") from None


def run_cycles(config_path: str | os.PathLike, force: bool = False, stop_after: str | None = None,
               maxh: float | None = None, replica: int | None = None, progress: bool | None = None,
               console=None, argv: list[str] | None = None, redo_from: str | None = None, pipeline=None) -> int:
    """Run (or continue) all cycles of ``config_path``.  Returns 0 when finished (or at
    ``stop_after``), 3 when stopped early by the ``maxh`` budget or a signal (run again to
    continue).  Raises :class:`MultiscaleError` on bad input or a failed stage (state kept).
    ``pipeline``: a stage-list builder ``f(cfg, root, replica) -> [Stage]`` replacing the cycle's
    (e.g. :func:`multiscale.molecule.pipeline.molecule_pipeline`)."""
    from ..config import load_config
    from .status import Reporter

    if maxh is not None and maxh <= 0:
        raise MultiscaleError(f"--maxh must be > 0 hours, got {maxh}")
    if replica is not None and replica < 0:
        raise MultiscaleError(f"--replica must be >= 0, got {replica}")
    cfg = load_config(config_path)
    root = cfg.root(replica)
    if _is_non_folder(root):
        raise MultiscaleError(f"output {root} is a file, not a folder: set 'output' in {cfg.source.name if cfg.source else 'sim.yaml'} "
                              "to a folder for the run")
    reporter = Reporter(console=console, live=progress)
    return _Driver(cfg, root, replica, force, stop_after, maxh, reporter, argv or sys.argv, redo_from, pipeline).run()

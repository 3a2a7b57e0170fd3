"""The cycle state file: what ran, on which inputs, what it produced.

``ROOT/state.json`` is rewritten atomically (temporary file + fsync + rename) after every
change, so a run killed at any moment leaves either the previous or the new state, never a
torn file.  Layout (``format: multiscale-state/1``)::

    {"format": ..., "created": ..., "updated": ..., "config": {"path", "sha256"},
     "plan": ["cycle_001/aa-em", ...],              # stage keys in run order
     "stages": {"cycle_001/aa-md": {
         "cycle": 1, "stage": "aa-md", "status": "done",   # pending|running|stopped|failed|done
         "inputs":  {"structure": {"path": ..., "sha256": ...}, "topology #include x.itp": {...},
                     "mapping x.map": {...}, ..., "params": {"sha256": ..., "values": {...}}},
         "outputs": {"gro": {"path": "cycle_001/aa-md/aa-md.gro", "sha256": ..., "bytes": ...}, ...},
         "attempts": [{"started": ..., "ended": ..., "wall_s": ..., "result": "killed"|"stopped"|
                        "failed"|"done", "continued": false, "pid": ..., "host": ...}],
         "wall_s": ..., "started": ..., "finished": ...,
         "energies": {"potential_kj_mol": ..., ...}, "info": {"atoms": ..., "frames": ...},
         "log": "cycle_001/aa-md/aa-md.log", "error": null}},
     "runs": [{"started", "ended", "pid", "host", "result", "argv"}]}

A stage is *done* only when its outputs exist and their checksums are recorded.  Paths inside
the output root are stored relative to it (the root can be moved); others are absolute.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Iterable

from ..errors import MultiscaleError
from ..io import atomic_path

__all__ = ["STATE_NAME", "RunState", "sha256_file", "file_record", "now_iso", "stage_key", "include_closure"]

STATE_NAME = "state.json"
FORMAT = "multiscale-state/1"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def stage_key(cycle: int, name: str) -> str:
    return f"cycle_{cycle:03d}/{name}"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


_INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+["<]([^">\n]+)[">]', re.M)
TOPOLOGY_SUFFIXES = (".top", ".itp")
MAX_INCLUDES = 10000


def include_search_dirs() -> list[Path]:
    """Where ``#include`` files are looked for after the including file's folder: GMXLIB, then
    GROMACS' own share/top (the order grompp uses)."""
    dirs = [Path(d) for d in os.environ.get("GMXLIB", "").split(":") if d]
    try:
        from ..topology import gromacs_share_top

        share = gromacs_share_top()
        if share:
            dirs.append(Path(share))
    except Exception:  # no GROMACS here: the files found so far are still hashed
        pass
    return dirs


def include_closure(path: str | os.PathLike, search_dirs: Iterable[Path] = ()) -> list[Path]:
    """Every file a ``.top``/``.itp`` ``#include``s, recursively, in first-seen order.

    Conservative: includes inside ``#ifdef`` branches count too (a change there may matter).
    Files that cannot be found are left out (grompp reports them); circular includes end.
    """
    dirs = [Path(d) for d in search_dirs]
    top = Path(path).resolve()
    seen: dict[Path, None] = {}
    todo = [top]
    while todo and len(seen) < MAX_INCLUDES:
        f = todo.pop(0)
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for name in _INCLUDE_RE.findall(text):
            inc = Path(name.strip())
            cands = [inc] if inc.is_absolute() else [f.parent / inc, top.parent / inc] + [d / inc for d in dirs]
            found = next((c.resolve() for c in cands if c.is_file()), None)
            if found is not None and found != top and found not in seen:
                seen[found] = None
                todo.append(found)
    return list(seen)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(Path(path).resolve())


def file_record(path: Path, root: Path) -> dict:
    """{"path", "sha256", "bytes"} of an existing file."""
    return {"path": _rel(path, root), "sha256": sha256_file(path), "bytes": Path(path).stat().st_size}


class RunState:
    """The state of one output root (``ROOT/state.json``)."""

    def __init__(self, root: str | os.PathLike, data: dict | None = None):
        self.root = Path(root)
        self.path = self.root / STATE_NAME
        self.data = data if data is not None else {
            "format": FORMAT, "created": now_iso(), "updated": now_iso(), "config": {},
            "plan": [], "stages": {}, "runs": []}

    # -- persistence -----------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | os.PathLike, create: bool = False) -> "RunState":
        root = Path(root)
        path = root / STATE_NAME
        if not path.is_file():
            if create:
                return cls(root)
            raise MultiscaleError(f"no run state in {root} ({STATE_NAME} not found): give the output root of a "
                                  f"run (the 'output' folder of sim.yaml) or start one with `multiscale cycle`")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise MultiscaleError(f"{path} is unreadable ({exc}): it is always written atomically, so it was "
                                  "edited or damaged by hand: restore it or move the output root aside") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            fmt = data.get("format") if isinstance(data, dict) else "?"
            raise MultiscaleError(f"{path} is not a multiscale state file (format {str(fmt)[:40]}): "
                                  "point to the output root of a `multiscale cycle` run")
        problem = _shape_problem(data)
        if problem:
            raise MultiscaleError(f"{path} is damaged ({problem}): it is always written atomically, so it was "
                                  "edited by hand: restore it or move the output root aside")
        return cls(root, data)

    def save(self) -> None:
        self.data["updated"] = now_iso()
        self.root.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.data, indent=1, sort_keys=False, default=str)
        with atomic_path(self.path) as tmp:
            tmp.write_text(text)
        _fsync_dir(self.root)

    # -- access ------------------------------------------------------------------------------
    @property
    def plan(self) -> list[str]:
        return list(self.data.get("plan", []))

    @property
    def stages(self) -> dict[str, dict]:
        return self.data.setdefault("stages", {})

    def record(self, key: str) -> dict | None:
        return self.stages.get(key)

    def status(self, key: str) -> str:
        rec = self.record(key)
        return rec["status"] if rec else "pending"

    def is_done(self) -> bool:
        plan = self.plan
        return bool(plan) and all(self.status(k) == "done" for k in plan)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in self.plan:
            s = self.status(k)
            out[s] = out.get(s, 0) + 1
        return out

    def set_plan(self, keys: Iterable[str], config_path: Path | None, config_sha: str | None) -> None:
        self.data["plan"] = list(keys)
        if config_path is not None:
            self.data["config"] = {"path": str(config_path), "sha256": config_sha}

    # -- transitions -------------------------------------------------------------------------
    def start_run(self, argv: list[str] | None = None) -> None:
        self.data.setdefault("runs", []).append({"started": now_iso(), "ended": None, "pid": os.getpid(),
                                                 "host": socket.gethostname(), "result": "running",
                                                 "argv": argv or []})
        self.save()

    def end_run(self, result: str) -> None:
        runs = self.data.setdefault("runs", [])
        if runs and runs[-1].get("pid") == os.getpid() and runs[-1].get("ended") is None:
            runs[-1].update(ended=now_iso(), result=result)
            self.save()

    def reap_dead_attempts(self) -> list[str]:
        """Mark attempts left 'running' by a killed process as 'killed'; returns their stage keys."""
        killed = []
        for key, rec in self.stages.items():
            if rec.get("status") == "running":
                att = rec.get("attempts") or []
                if att and att[-1].get("result") == "running":
                    att[-1]["result"] = "killed"
                    att[-1]["ended"] = att[-1].get("ended") or None
                rec["status"] = "stopped"
                rec["error"] = "the process running this stage was killed; it is continued or redone on the next run"
                killed.append(key)
        for run in self.data.get("runs", []):
            if run.get("result") == "running" and run.get("pid") != os.getpid():
                run["result"] = "killed"
        if killed:
            self.save()
        return killed

    def begin(self, key: str, cycle: int, name: str, inputs: dict, log: str | None, continued: bool,
              description: str = "") -> dict:
        rec = self.stages.get(key)
        if rec is None:
            rec = {"cycle": cycle, "stage": name, "status": "pending", "description": description,
                   "inputs": {}, "outputs": {}, "attempts": [], "wall_s": 0.0, "started": None,
                   "finished": None, "energies": {}, "info": {}, "log": log, "error": None}
            self.stages[key] = rec
        rec.update(status="running", inputs=inputs, log=log, error=None, finished=None, description=description)
        rec["started"] = rec.get("started") or now_iso()
        rec["attempts"].append({"started": now_iso(), "ended": None, "wall_s": None, "result": "running",
                                "continued": bool(continued), "pid": os.getpid(), "host": socket.gethostname()})
        self.save()
        return rec

    def _end_attempt(self, rec: dict, result: str, wall_s: float) -> None:
        att = rec["attempts"][-1]
        att.update(ended=now_iso(), wall_s=round(wall_s, 3), result=result)
        rec["wall_s"] = round(sum(a.get("wall_s") or 0.0 for a in rec["attempts"]), 3)

    def finish(self, key: str, outputs: dict, wall_s: float, energies: dict | None = None,
               info: dict | None = None) -> dict:
        rec = self.stages[key]
        self._end_attempt(rec, "done", wall_s)
        rec.update(status="done", outputs=outputs, finished=now_iso(), energies=energies or {},
                   info=info or {}, error=None)
        self.save()
        return rec

    def stop(self, key: str, wall_s: float, reason: str) -> None:
        rec = self.stages[key]
        self._end_attempt(rec, "stopped", wall_s)
        rec.update(status="stopped", error=reason)
        self.save()

    def fail(self, key: str, wall_s: float, error: str) -> None:
        rec = self.stages[key]
        self._end_attempt(rec, "failed", wall_s)
        rec.update(status="failed", error=error)
        self.save()

    def reset(self, key: str) -> None:
        """Forget a stage's result (it will be redone), keeping its attempt history."""
        rec = self.stages.get(key)
        if rec:
            rec.update(status="pending", outputs={}, energies={}, info={}, finished=None)
            self.save()


def _shape_problem(data: dict) -> str | None:
    """What is wrong with the layout of a state file's data (None: usable)."""
    if not isinstance(data.get("plan", []), list) or not all(isinstance(k, str) for k in data.get("plan", [])):
        return "'plan' must be a list of stage keys"
    if not isinstance(data.get("runs", []), list) or not all(isinstance(r, dict) for r in data.get("runs", [])):
        return "'runs' must be a list of records"
    stages = data.get("stages", {})
    if not isinstance(stages, dict):
        return "'stages' must be a mapping"
    for key, rec in stages.items():
        if not isinstance(rec, dict) or not isinstance(rec.get("status", "pending"), str):
            return f"stage {str(key)[:60]} is not a record"
        for part, typ in (("inputs", dict), ("outputs", dict), ("attempts", list), ("energies", dict), ("info", dict)):
            if not isinstance(rec.get(part, typ()), typ):
                return f"stage {str(key)[:60]}: '{part}' must be a {typ.__name__}"
        if not all(isinstance(a, dict) for a in rec.get("attempts", [])):
            return f"stage {str(key)[:60]}: 'attempts' must be a list of records"
        for part in ("inputs", "outputs"):
            for role, r in rec.get(part, {}).items():
                if not isinstance(r, dict) or (role != "params" and not isinstance(r.get("path", ""), str)):
                    return f"stage {str(key)[:60]}: {part} '{str(role)[:40]}' is not a file record"
    return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

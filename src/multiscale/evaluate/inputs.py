"""Inputs of ``multiscale evaluate``: candidate specs, structure/trajectory reading (a bare
.xtc/.trr in topology order), the reference ensemble, coordinates stored in a .tpr, and timed runs
of a backmapping command."""

from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from ..errors import MultiscaleError

__all__ = ["parse_candidate", "run_command", "TRAJECTORY_ONLY", "read_input", "read_reference", "tpr_structure"]


def parse_candidate(spec: str) -> tuple[str, str, str | None]:
    """``NAME=STRUCTURE[,TRAJECTORY]`` -> (name, structure, trajectory)."""
    if "=" not in spec:
        raise MultiscaleError(f"--candidate {spec!r}: expected NAME=PATH (PATH = structure, or structure,trajectory)")
    name, path = spec.split("=", 1)
    name = name.strip()
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise MultiscaleError(f"--candidate {spec!r}: NAME must be letters, digits, '-', '_' or '.'")
    parts = [p for p in path.split(",") if p]
    if not parts or len(parts) > 2:
        raise MultiscaleError(f"--candidate {spec!r}: expected NAME=STRUCTURE or NAME=STRUCTURE,TRAJECTORY")
    return name, parts[0], (parts[1] if len(parts) == 2 else None)


#: Coordinate-only formats (no atom names): read in topology order when given alone.
TRAJECTORY_ONLY = (".xtc", ".trr")


def read_input(structure, trajectory=None, label="structure", topology=None, **kw):
    """read_frames with a clear message for empty files; a bare .xtc/.trr (no structure) is read
    in ``topology`` order (names from the topology) when a topology is given."""
    from ..io import read_frames

    for p in (structure, trajectory):
        if p is not None and Path(p).is_file() and Path(p).stat().st_size == 0:
            raise MultiscaleError(f"{label}: {p} is empty (no frames): pass the written structure/trajectory")
    if trajectory is None and Path(structure).suffix.lower() in TRAJECTORY_ONLY:
        if topology is None:
            raise MultiscaleError(f"{label}: {structure} has no atom names: give a .gro/.pdb structure with it (STRUCTURE,TRAJECTORY)")
        return _read_topology_order(structure, topology, label, **kw)
    return read_frames(structure, trajectory, label=label, **kw)


def _read_topology_order(path, topology, label, start: int = 0, stop=None, step: int = 1):
    """Frames of a coordinate-only trajectory (.xtc/.trr) whose atoms are in topology order:
    names, residue names and ids from the topology; the atom count must match."""
    import warnings

    import MDAnalysis as mda

    from ..io import ANGSTROM_PER_NM, Frames, _box_nm, _box_out

    path = Path(path)
    if not path.is_file():
        raise MultiscaleError(f"{label} file {path} not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = mda.coordinates.core.reader(str(path))
            if reader.n_atoms != topology.n_atoms:
                raise MultiscaleError(f"{label} {path} has {reader.n_atoms} atoms but the topology {topology.n_atoms}: a bare "
                                      f"{path.suffix} is read in topology order; give STRUCTURE,TRAJECTORY for another order")
            pos, box, times = [], [], []
            for ts in reader[start:stop:step]:
                pos.append(np.array(ts.positions, dtype=np.float32))
                box.append(_box_nm(ts.dimensions, path))
                times.append(ts.time)
            reader.close()
    except MultiscaleError:
        raise
    except Exception as e:
        raise MultiscaleError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if not pos:
        raise MultiscaleError(f"{path}: no frames selected (empty trajectory or start/stop/step out of range)")
    return Frames(positions=np.stack(pos) / np.float32(ANGSTROM_PER_NM), box=_box_out(np.stack(box)),
                  times=np.asarray(times, float), names=np.asarray(topology.per_atom("atom_names")).astype(str),
                  resnames=np.asarray(topology.per_atom("resnames")).astype(str), resids=np.asarray(topology.resids()))


def _count_frames(structure, trajectory) -> int | None:
    """Frames of a structure + trajectory (or of a bare trajectory when ``trajectory`` is None); None if unknown."""
    import warnings

    import MDAnalysis as mda

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if trajectory is None:
                r = mda.coordinates.core.reader(str(structure))
                n = r.n_frames
                r.close()
                return n
            return mda.Universe(str(structure), str(trajectory)).trajectory.n_frames
    except Exception:
        return None


def read_reference(topology_path, reference, reference_structure, topology, max_frames):
    """The reference ensemble: a .gro/.pdb alone, a trajectory with --reference-structure (or the
    .tpr), or a bare .xtc/.trr in topology order; at most ``max_frames`` evenly spaced frames."""
    ref = Path(reference)
    bare = False
    if ref.suffix in (".gro", ".pdb") and reference_structure is None:
        structure, traj = ref, None
    else:
        structure = reference_structure or (topology_path if Path(topology_path).suffix == ".tpr" else None)
        traj = ref
        if structure is None:
            if ref.suffix.lower() not in TRAJECTORY_ONLY:
                raise MultiscaleError(f"--reference {ref}: give --reference-structure (a .gro/.pdb of the same system) for atom names")
            structure, traj, bare = ref, None, True  # coordinates only, atoms in topology order
    step = 1
    if traj is not None or bare:
        n = _count_frames(ref, None) if bare else _count_frames(structure, traj)
        if n is not None and n > max_frames:
            step = math.ceil(n / max_frames)
    frames = read_input(structure, traj, step=step, label=f"reference {ref}", topology=topology)
    if traj is None and frames.n_frames > max_frames:
        keep = np.linspace(0, frames.n_frames - 1, max_frames).round().astype(int)
        frames.positions, frames.box, frames.times = frames.positions[keep], frames.box[keep], frames.times[keep]
    return frames


def tpr_structure(tpr: Path, workdir: Path) -> Path | None:
    """Coordinates stored in a .tpr, via ``gmx editconf`` (None if gmx is unavailable)."""
    import shutil

    gmx = shutil.which("gmx") or shutil.which("gmx_mpi")
    if gmx is None:
        return None
    out = workdir / "topology_coordinates.gro"
    workdir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([gmx, "-quiet", "editconf", "-f", str(tpr), "-o", str(out)], capture_output=True, text=True)
    return out if r.returncode == 0 and out.is_file() else None


def run_command(command: str, cwd=None) -> dict:
    """Run a backmapping command (shell), measuring wall time and the peak RSS of its process tree.

    Returns {time_s, peak_mem_mb, returncode}.  Peak memory is ``ru_maxrss`` of the waited
    child (the largest process in the tree that was waited for).
    """
    t0 = time.perf_counter()
    try:
        p = subprocess.Popen(command, shell=True, cwd=cwd)
    except OSError as e:
        raise MultiscaleError(f"--run {command!r}: cannot start: {e}") from e
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise MultiscaleError(f"--run {command!r} exited with status {p.returncode}: fix the command (it must write the candidate file)")
    return {"time_s": dt, "peak_mem_mb": ru.ru_maxrss / 1024.0, "returncode": p.returncode}


# --------------------------------------------------------------------------------------------

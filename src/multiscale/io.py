"""Structure/trajectory I/O: the one place where MDAnalysis' Angstrom becomes nm.

Everything that leaves this module is nm (positions, box edges) and ps (times).  Writes are
atomic: data go to a temporary file in the destination folder, are fsync'ed, and only then
renamed over the destination, so an interrupted write never leaves a complete-looking file.
"""

from __future__ import annotations

import contextlib
import gc
import io as _io
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MultiscaleError, clip, read_user_text
from .geometry import check_box, frame_boxes, is_orthorhombic

__all__ = ["Frames", "read_frames", "write_frames", "atomic_path", "atomic_write_text", "box_dimensions",
           "ANGSTROM_PER_NM"]

ANGSTROM_PER_NM = 10.0


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; on success fsync it and rename it over ``path``.

    The final file gets the mode a plain ``open(path, "w")`` would give (0666 minus the
    umask).  The temporary name is hidden and marked ``.partial-`` (``.NAME.partial-XXXX.SUF``,
    same suffix so format-by-suffix writers work): a killed write never leaves a file that
    looks complete, and :func:`remove_partial_files` can sweep such leftovers."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}{PARTIAL_MARK}", suffix=path.suffix, dir=path.parent)
    except OSError as e:
        raise MultiscaleError(f"cannot write {path}: {e.strerror or e}: choose a writable folder") from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


PARTIAL_MARK = ".partial-"


def _umask() -> int:
    """The process umask (read from /proc where possible: os.umask() alone must set it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    m = os.umask(0o022)
    os.umask(m)
    return m


def remove_partial_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the hidden temporary files of interrupted :func:`atomic_path` writes under
    ``folder`` (call only while no writer is active there, e.g. under the run lock)."""
    out = []
    for p in Path(folder).rglob(f".*{PARTIAL_MARK}*"):
        if p.is_file():
            p.unlink()
            out.append(p)
    return out


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@dataclass
class Frames:
    """Coordinates of one system over F frames.

    positions: (F, N, 3) float32 nm; box: (F, 3) nm edge lengths when every frame is
    orthorhombic, else (F, 3, 3) box vectors (rows, GROMACS convention); times: (F,) ps;
    names/resnames/resids: (N,) from the structure file.
    """

    positions: np.ndarray
    box: np.ndarray
    times: np.ndarray
    names: np.ndarray
    resnames: np.ndarray
    resids: np.ndarray

    @property
    def n_frames(self) -> int:
        return self.positions.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.positions.shape[1]

    def subset(self, frames) -> Frames:
        """The frames ``frames`` (a slice or index array) of this trajectory."""
        return Frames(self.positions[frames], self.box[frames], self.times[frames], self.names, self.resnames, self.resids)


def _box_nm(dims, source) -> np.ndarray:
    """MDAnalysis dimensions [a, b, c (A), alpha, beta, gamma (deg)] -> box vectors (3, 3) nm."""
    from MDAnalysis.lib.mdamath import triclinic_vectors

    if dims is None:
        raise MultiscaleError(f"{source}: no periodic box: write the file with box vectors (e.g. gmx editconf -box)")
    dims = np.asarray(dims, dtype=float)
    if not np.all(np.isfinite(dims)) or np.any(dims[:3] <= 0):
        raise MultiscaleError(f"{source}: invalid box {dims[:3].round(4).tolist()} A: write the file with finite, positive box vectors")
    if np.allclose(dims[3:], 90.0, atol=1e-3):
        return np.diag(dims[:3] / ANGSTROM_PER_NM)
    m = np.asarray(triclinic_vectors(dims), dtype=np.float64) / ANGSTROM_PER_NM
    return check_box(m, str(source))


def _box_out(boxes: np.ndarray) -> np.ndarray:
    """Per-frame (F, 3, 3) boxes -> (F, 3) edge lengths when every frame is orthorhombic."""
    return np.diagonal(boxes, axis1=1, axis2=2).copy() if is_orthorhombic(boxes) else boxes


def box_dimensions(box) -> np.ndarray:
    """Box (3,) lengths or (3, 3) vectors, nm -> MDAnalysis dimensions (6,) [A, A, A, deg, deg, deg]."""
    from MDAnalysis.lib.mdamath import triclinic_box

    b = np.asarray(box, dtype=float)
    if b.shape == (3,):
        return np.r_[b * ANGSTROM_PER_NM, 90.0, 90.0, 90.0]
    m = b * ANGSTROM_PER_NM
    return np.asarray(triclinic_box(m[0], m[1], m[2]), dtype=float)


_TRAJECTORY_SUFFIXES = (".xtc", ".trr", ".dcd", ".nc", ".ncdf", ".tng")


def _split_gro(path: Path) -> tuple[list[str], list[int]]:
    """Split a (possibly multi-frame) .gro into per-frame texts and their first line numbers (1-based)."""
    lines = read_user_text(path, ".gro file").splitlines(keepends=True)
    frames, starts, i = [], [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i + 1].strip())
        except (IndexError, ValueError):
            hint = " (or the atom count of the previous frame is too small)" if frames else ""
            raise MultiscaleError(f"{path}:{i + 2}: malformed .gro: expected the atom count{hint}") from None
        if n < 0:
            raise MultiscaleError(f"{path}:{i + 2}: malformed .gro: negative atom count {n}")
        if i + 3 + n > len(lines):
            raise MultiscaleError(f"{path}:{i + 2}: truncated .gro frame: {n} atoms announced, file ends early")
        frames.append("".join(lines[i:i + 3 + n]))
        starts.append(i + 1)
        i += 3 + n
    if not frames:
        raise MultiscaleError(f"{path}: empty .gro file: pass a structure with atoms and a box")
    return frames, starts


def _gro_bad_line(text: str) -> tuple[int, str] | None:
    """First malformed line of one .gro frame text, as (0-based line index, what is wrong), or None.

    Coordinates are fixed-width fields from column 21 whose width is set by the first atom
    line's decimal points (as GROMACS writes them); the last line holds 3 or 9 box numbers."""
    lines = text.splitlines()
    atoms, box = lines[2:-1], lines[-1]
    width = 8  # %8.3f; %(n+5).nf in general: the decimal point is the 5th character of a field
    rel = atoms[0][20:] if atoms else ""
    if len(rel) > 5 and rel[4] == ".":
        width = 5 + len(rel[5:]) - len(rel[5:].lstrip("0123456789"))
    for k, line in enumerate(atoms):
        fields = [line[20 + j * width: 20 + (j + 1) * width] for j in range(3)]
        if len(line) < 20 + 3 * width - 1:
            return k + 2, "atom line too short (need residue, atom name, number and x y z in fixed columns)"
        try:
            [float(f) for f in fields]
        except ValueError:
            return k + 2, f"coordinates {clip(''.join(fields), 40)} are not numbers in fixed {width}-character columns"
    try:
        nums = [float(v) for v in box.split()]
    except ValueError:
        nums = []
    if len(nums) not in (3, 9):
        return len(lines) - 1, f"box line {clip(box, 40)} must hold 3 or 9 numbers (nm)"
    return None


@contextlib.contextmanager
def _quiet_unraisable():
    """Silence 'Exception ignored in ... __del__' from half-built MDAnalysis readers (an empty
    or broken .xtc makes XTCReader.__del__ fail after its own error)."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda _: None
    try:
        yield
    finally:
        sys.unraisablehook = hook


def _check_finite(pos: np.ndarray, source, gro_starts: list[int] | None, start: int, step: int) -> None:
    """Raise one line naming the first atom with a NaN/inf coordinate (and its .gro line)."""
    if np.isfinite(pos).all():
        return
    f, i = (int(v) for v in np.argwhere(~np.isfinite(pos).all(axis=2))[0])
    k = start + f * step
    where = f"{source}:{gro_starts[k] + 2 + i}" if gro_starts else str(source)
    raise MultiscaleError(f"{where}: atom {i + 1} of frame {k + 1} has a NaN/inf coordinate: write the file with finite coordinates")


def read_frames(structure: str | os.PathLike, trajectory: str | os.PathLike | None = None, *,
                start: int = 0, stop: int | None = None, step: int = 1,
                expected_atoms: int | None = None, label: str = "structure") -> Frames:
    """Read a structure (gro/pdb; a multi-frame .gro is a trajectory) and optional trajectory.

    Returns :class:`Frames` in nm.  ``expected_atoms`` checks the atom count against a
    topology and fails with a one-line message naming the file and both counts.  Malformed
    files, NaN/inf coordinates and invalid boxes are one-line :class:`MultiscaleError` naming
    the file (and the line, for .gro).
    """
    structure = Path(structure)
    if not structure.is_file():
        raise MultiscaleError(f"{label} file {structure} not found")
    if trajectory is not None and not Path(trajectory).is_file():
        raise MultiscaleError(f"trajectory file {trajectory} not found")
    for p in (structure, trajectory):
        if p is not None and Path(p).stat().st_size == 0:
            raise MultiscaleError(f"{p} is empty (0 bytes): pass the written {label if p == structure else 'trajectory'}")
    if structure.suffix.lower() in _TRAJECTORY_SUFFIXES:
        raise MultiscaleError(f"{label} {structure} is a trajectory: give a .gro/.pdb structure here "
                              "and the trajectory as the trajectory option")
    if step is None or step < 1 or (start or 0) < 0 or (stop is not None and stop < 0):
        raise MultiscaleError(f"frame selection start={start} stop={stop} step={step}: use start >= 0, stop >= 0, step >= 1")
    err = None
    with _quiet_unraisable():
        try:
            u0, pos, box, times, gro_starts = _read_mda(structure, trajectory, start, stop, step)
        except MultiscaleError as e:
            err = MultiscaleError(str(e))
        except Exception as e:
            err = MultiscaleError(_diagnose(structure, trajectory, e))
        if err is not None:
            gc.collect()  # the failed reader goes now, while its __del__ noise is silenced
    if err is not None:
        raise err  # raised outside the except block: it holds no reference to the reader
    if pos.shape[0] == 0:
        raise MultiscaleError(f"{trajectory or structure}: no frames selected (empty trajectory or start/stop/step out of range)")
    if expected_atoms is not None and pos.shape[1] != expected_atoms:
        raise MultiscaleError(f"{trajectory or structure} has {pos.shape[1]} atoms but the topology expects {expected_atoms}: use files of the same system")
    _check_finite(pos, trajectory or structure, gro_starts, start or 0, step)
    a = u0.atoms
    return Frames(
        positions=(np.asarray(pos, dtype=np.float32) / np.float32(ANGSTROM_PER_NM)),
        box=_box_out(box),
        times=times,
        names=np.asarray(a.names),
        resnames=np.asarray(a.resnames),
        resids=np.asarray(a.resids),
    )


def _diagnose(structure: Path, trajectory, e: Exception) -> str:
    """One line for an MDAnalysis failure: the first malformed .gro line when there is one."""
    if trajectory is None and structure.suffix == ".gro":
        texts, starts = _split_gro(structure)
        for text, first in zip(texts, starts):
            bad = _gro_bad_line(text)
            if bad:
                return f"{structure}:{first + bad[0]}: {bad[1]}"
    if trajectory is None and structure.suffix.lower() in (".pdb", ".ent"):
        for k, line in enumerate(read_user_text(structure, ".pdb file").splitlines()):
            if line.startswith(("ATOM  ", "HETATM")):
                try:
                    [float(line[c:c + 8]) for c in (30, 38, 46)]
                except ValueError:
                    return f"{structure}:{k + 1}: x y z {clip(line[30:54], 30)} are not numbers in PDB columns 31-54"
    msg = " ".join(str(e).split()) or type(e).__name__
    if "Failed to load from the topology file" in msg:
        msg = "not a readable structure file (MDAnalysis found no atoms)"
    msg = msg if len(msg) <= 160 else msg[:157] + "..."
    return f"cannot read {trajectory or structure}: {msg}"


def _read_mda(structure: Path, trajectory, start, stop, step):
    """Positions (F, N, 3) A, boxes (F, 3, 3) nm, times, the first Universe and the .gro frame starts."""
    import MDAnalysis as mda
    from MDAnalysis.lib.util import NamedStream

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if trajectory is None and structure.suffix == ".gro":
            texts, gro_starts = _split_gro(structure)
            unis = [mda.Universe(NamedStream(_io.StringIO(t), "frame.gro")) for t in texts[start:stop:step]]
            u0 = unis[0] if unis else mda.Universe(NamedStream(_io.StringIO(texts[0]), "frame.gro"))
            pos = np.stack([u.atoms.positions for u in unis]) if unis else np.zeros((0, len(u0.atoms), 3))
            box = np.stack([_box_nm(u.dimensions, structure) for u in unis]) if unis else np.zeros((0, 3, 3))
            times = np.array([u.trajectory.ts.time for u in unis], dtype=float)
            return u0, pos, box, times, gro_starts
        u0 = mda.Universe(str(structure), str(trajectory)) if trajectory else mda.Universe(str(structure))
        n = len(u0.atoms)
        sl = u0.trajectory[start:stop:step]
        nf = len(sl)
        pos = np.empty((nf, n, 3), dtype=np.float32)
        box = np.empty((nf, 3, 3))
        times = np.empty(nf)
        for k, ts in enumerate(sl):
            pos[k] = ts.positions
            box[k] = _box_nm(ts.dimensions, trajectory or structure)
            times[k] = ts.time
        return u0, pos, box, times, None


def write_frames(path: str | os.PathLike, positions: np.ndarray, box: np.ndarray, names, resnames, resids,
                 times: np.ndarray | None = None, title: str = "written by multiscale") -> Path:
    """Write one frame (positions (N,3)) or several ((F,N,3)) nm to .gro/.pdb/.xtc/.trr, atomically.

    box: (3,) / (F, 3) edge lengths or (3, 3) / (F, 3, 3) box vectors, nm.  A multi-frame .gro is
    written frame after frame.
    """
    import MDAnalysis as mda
    from MDAnalysis.coordinates.core import get_writer_for

    path = Path(path)
    pos = np.asarray(positions, dtype=np.float32)
    if pos.ndim == 2:
        pos = pos[None]
    nf, n = pos.shape[:2]
    if not np.isfinite(pos).all():
        bad = np.argwhere(~np.isfinite(pos).all(axis=2))
        raise MultiscaleError(f"{path}: not written: {len(bad)} atom position(s) are NaN/inf (first: atom {bad[0][1] + 1} of "
                              f"frame {bad[0][0] + 1}); check the inputs that produced them")
    if path.suffix.lower() != ".gro":
        try:
            get_writer_for(str(path), multiframe=nf > 1)
        except (TypeError, ValueError):
            raise MultiscaleError(f"{path}: cannot write {'several frames' if nf > 1 else 'a structure'} as "
                                  f"{path.suffix or 'a file without suffix'}: use .gro, .pdb, .xtc or .trr") from None
    box = frame_boxes(box, nf)
    names, resnames, resids = (np.asarray(v) for v in (names, resnames, resids))
    if not (len(names) == len(resnames) == len(resids) == n):
        raise ValueError(f"write_frames: {n} atoms but {len(names)} names / {len(resnames)} resnames / {len(resids)} resids")
    # residues: new residue whenever resid or resname changes
    change = np.r_[True, (resids[1:] != resids[:-1]) | (resnames[1:] != resnames[:-1])]
    resindex = np.cumsum(change) - 1
    nres = int(resindex[-1]) + 1 if n else 0
    u = mda.Universe.empty(n, n_residues=nres, atom_resindex=resindex, trajectory=True)
    u.add_TopologyAttr("names", names)
    u.add_TopologyAttr("resnames", resnames[change])
    u.add_TopologyAttr("resids", resids[change])
    def _set(k):
        u.atoms.positions = pos[k] * ANGSTROM_PER_NM
        u.dimensions = box_dimensions(box[k])
        if times is not None:
            u.trajectory.ts.time = float(times[k])

    with warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")
        if path.suffix == ".gro":
            # MDAnalysis' GRO writer keeps one frame: write each and concatenate.
            parts = []
            for k in range(nf):
                _set(k)
                one = tmp.with_name(tmp.stem + f".f{k}.gro")
                u.atoms.write(str(one), reindex=False)
                text = one.read_text()
                one.unlink()
                t = f"{title}" + (f" t= {float(times[k]):.5f}" if times is not None else "")
                parts.append(t + "\n" + text.split("\n", 1)[1])
            tmp.write_text("".join(parts))
        else:
            with mda.Writer(str(tmp), n_atoms=n) as w:
                for k in range(nf):
                    _set(k)
                    w.write(u.atoms)
    return path

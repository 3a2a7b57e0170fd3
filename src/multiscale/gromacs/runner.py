"""Run GROMACS tools (grompp, mdrun, helpers) through GromacsWrapper, quietly and restartably.

All GROMACS output goes to a per-stage log file, never to the terminal. A failing tool raises
:class:`~multiscale.errors.MultiscaleError` naming the tool, the stage, the log file and the
GROMACS "Fatal error" text. GromacsWrapper is imported lazily (it costs ~2 s: it probes every
``gmx*`` driver on PATH), never when :mod:`multiscale` is imported.

File names may be relative: they are taken relative to ``cwd`` (default: the current folder)
and passed to GROMACS as absolute paths.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multiscale.errors import MultiscaleError

__all__ = [
    "GromacsSettings",
    "MdrunResult",
    "check_gmx",
    "grompp",
    "mdrun",
    "run_tool",
    "gromacs_error_summary",
]

_CHDIR_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# settings


@dataclass
class GromacsSettings:
    """How to call GROMACS on this machine.

    gmx:        driver for grompp and the analysis tools (name on PATH or a path), e.g. "gmx".
    mdrun_gmx:  driver for mdrun only, e.g. "gmx_mpi" (default: ``gmx``).
    launcher:   command prefix for mdrun, e.g. "srun" or "mpirun -np 4" (default: none).
    nt:         ``mdrun -nt`` total threads (thread-MPI builds only; not with gmx_mpi).
    ntomp:      ``mdrun -ntomp`` OpenMP threads per rank.
    maxh:       ``mdrun -maxh`` wall-clock limit in hours; mdrun stops cleanly with a checkpoint
                and the next :func:`mdrun` call continues it.
    extra_mdrun_args: further mdrun arguments, e.g. ["-pin", "on", "-nb", "cpu"].
    """

    gmx: str = "gmx"
    mdrun_gmx: str | None = None
    launcher: str = ""
    nt: int | None = None
    ntomp: int | None = None
    maxh: float | None = None
    extra_mdrun_args: list[str] = field(default_factory=list)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> GromacsSettings:
        """Build from a config mapping (e.g. the ``gromacs:`` block of sim.yaml); unknown keys raise."""
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise MultiscaleError(
                f"unknown gromacs setting '{unknown[0]}' in the config: use one of {', '.join(sorted(known))}"
            )
        extra = values.get("extra_mdrun_args")
        if isinstance(extra, str):
            values["extra_mdrun_args"] = shlex.split(extra)
        return cls(**values)

    @property
    def mdrun_driver(self) -> str:
        return self.mdrun_gmx or self.gmx


@dataclass
class MdrunResult:
    """Outputs of one :func:`mdrun` call (paths are absolute)."""

    stage: str
    tpr: Path
    deffnm: Path
    log: Path  # GROMACS' own <deffnm>.log
    stdout_log: Path  # captured stdout/stderr of mdrun
    edr: Path
    gro: Path  # final coordinates (<deffnm>.gro)
    xtc: Path | None  # compressed trajectory, if written
    cpt: Path | None  # checkpoint, if written
    continued: bool  # a checkpoint existed before the call, so the run continued from it
    completed: bool  # False when mdrun stopped early (-maxh or a signal); call mdrun again
    wall_s: float  # wall-clock seconds of this call
    ns_per_day: float | None  # from the performance line of <deffnm>.log
    command: list[str]


# --------------------------------------------------------------------------------------------
# executables


def _missing_exe_error(exe: str, key: str) -> MultiscaleError:
    return MultiscaleError(
        f"GROMACS executable '{exe}' not found on PATH: install it (apt-get install gromacs), "
        f"run `module load gromacs`, or set gromacs.{key} in sim.yaml"
    )


def check_gmx(settings: GromacsSettings | None = None, mdrun: bool = False) -> Path:
    """Check that the GROMACS driver (and, with ``mdrun=True``, the mdrun driver and the
    launcher) can be found; return the driver's path. Raises a one-line MultiscaleError."""
    settings = settings or GromacsSettings()
    path = shutil.which(settings.gmx)
    if path is None:
        raise _missing_exe_error(settings.gmx, "gmx")
    if mdrun:
        if settings.mdrun_gmx and shutil.which(settings.mdrun_gmx) is None:
            raise _missing_exe_error(settings.mdrun_gmx, "mdrun_gmx")
        launcher = shlex.split(settings.launcher or "")
        if launcher and shutil.which(launcher[0]) is None:
            raise MultiscaleError(
                f"mdrun launcher '{launcher[0]}' (gromacs.launcher = '{settings.launcher}') not found "
                "on PATH: load its module or fix gromacs.launcher in sim.yaml"
            )
    return Path(path)


def _gromacswrapper():
    """Import GromacsWrapper quietly (no setup-check note on stdout)."""
    os.environ.setdefault("GROMACSWRAPPER_SUPPRESS_SETUP_CHECK", "1")
    try:
        import gromacs  # noqa: F401
        import gromacs.tools
        import gromacs.utilities
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise MultiscaleError(f"cannot import GromacsWrapper ({exc}): pip install gromacswrapper") from exc
    return gromacs


def _tool(driver: str, name: str):
    """A GromacsWrapper command object for ``<driver> <name>`` that never raises by itself."""
    gromacs = _gromacswrapper()
    cls = gromacs.tools.tool_factory(re.sub(r"\W", "_", name).capitalize(), name, driver)
    return cls(failure=None)


# --------------------------------------------------------------------------------------------
# error extraction


def gromacs_error_summary(text: str, max_chars: int = 700) -> str:
    """One line with the relevant part of GROMACS output: the "Fatal error" message, the
    ``ERROR n [file ...]`` items (and the WARNINGs when "too many warnings" caused the stop);
    otherwise the last non-empty lines."""
    lines = text.replace("\r", "\n").splitlines()
    parts: list[str] = []
    for m in re.finditer(r"^((?:ERROR|WARNING) \d+ \[file [^\]]*\]):\s*\n((?:[ \t]+\S.*\n?)+)", "\n".join(lines) + "\n", re.M):
        if m.group(1).startswith("WARNING") and "warning" not in text.split("Fatal error:")[-1].lower():
            continue
        parts.append(f"{m.group(1)}: {' '.join(m.group(2).split())}")
    fatal = [i for i, l in enumerate(lines) if l.strip() == "Fatal error:"]
    if fatal:
        msg = []
        for l in lines[fatal[-1] + 1 :]:
            if l.startswith("For more information and tips") or l.startswith("-------"):
                break
            msg.append(l.strip())
        parts.insert(0, "Fatal error: " + " ".join(x for x in msg if x))
    if not parts:
        tail = [l.strip() for l in lines if l.strip()][-5:]
        parts = [" | ".join(tail) if tail else "(no output)"]
    out = "; ".join(parts)
    return out if len(out) <= max_chars else out[: max_chars - 3] + "..."


# --------------------------------------------------------------------------------------------
# running


def _abs(path: str | os.PathLike | None, cwd: Path) -> Path | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else (cwd / p)


@contextlib.contextmanager
def _in_dir(path: Path) -> Iterator[None]:
    # GROMACS drops some files into its working directory (mdrun's step*.pdb dumps on a
    # constraint failure, gmx energy's backups), so tools run inside the stage folder. Only
    # absolute paths are passed, and the lock keeps two threads from racing on os.chdir.
    with _CHDIR_LOCK:
        old = os.getcwd()
        os.chdir(path)
        try:
            yield
        finally:
            os.chdir(old)


def _run_wrapped(
    driver: str, name: str, flags: dict, log: Path, cwd: Path, mode: str, input: list[str] | None = None, key: str = "gmx"
) -> tuple[int, list[str]]:
    """Run ``driver name flags`` via GromacsWrapper with stdout+stderr going to ``log``."""
    tool = _tool(driver, name)
    cmd = tool.commandline(**flags)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, mode) as fh:
        fh.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(cmd)}\n")
        fh.flush()
        try:
            with _in_dir(cwd):
                rc, _out, _err = tool.run(stdout=fh, stderr=subprocess.STDOUT, input=input, **flags)
        except OSError as exc:
            raise _missing_exe_error(driver, key) from exc
    return rc, cmd


def _die_with_parent():
    """A ``preexec_fn`` giving the child SIGTERM when this process dies, even by SIGKILL
    (Linux ``prctl(PR_SET_PDEATHSIG)``; mdrun then writes a checkpoint and stops), so a killed
    ``multiscale cycle`` never leaves an mdrun writing into its run folder. None elsewhere."""
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, sig = os.getpid(), int(signal.SIGTERM)

    def preexec():  # runs in the forked child: only the pre-resolved prctl call, no imports
        prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def _fail(tool: str, stage: str, rc: int, log: Path) -> MultiscaleError:
    text = log.read_text(errors="replace") if log.exists() else ""
    last_cmd = text.rfind("\n### ")
    if last_cmd >= 0:
        text = text[last_cmd:]
    return MultiscaleError(
        f"{tool} failed in stage '{stage}' (exit code {rc}): {gromacs_error_summary(text)} [full output: {log}]"
    )


def run_tool(
    name: str,
    settings: GromacsSettings | None = None,
    log: str | os.PathLike | None = None,
    cwd: str | os.PathLike | None = None,
    input: str | Sequence[str] | None = None,
    stage: str | None = None,
    **flags: Any,
) -> Path:
    """Run any ``gmx <name>`` tool (e.g. ``"solvate"``, ``"energy"``) with GromacsWrapper-style
    flags (``f="in.gro"``, ``o="out.gro"``, ``box=[3, 3, 3]``; ``None`` values are dropped).
    Paths in flags are passed as given (relative to ``cwd``). ``input`` feeds stdin (group
    selections). Output goes to ``log`` (default ``<cwd>/<name>.log``); returns the log path.
    """
    settings = settings or GromacsSettings()
    check_gmx(settings)
    cwd_p = Path(cwd).expanduser().resolve() if cwd else Path.cwd()
    cwd_p.mkdir(parents=True, exist_ok=True)
    log_p = _abs(log, cwd_p) or cwd_p / f"{name}.log"
    flags = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in flags.items() if v is not None}
    if isinstance(input, str):
        # GromacsWrapper joins a sequence with newlines; a str that already ends in "\n" would
        # be split into characters, so always hand it a list of lines.
        input = input.split("\n")
        if input and input[-1] == "":
            input.pop()
    if input is not None:
        input = [str(x) for x in input]
    rc, _ = _run_wrapped(settings.gmx, name, flags, log_p, cwd_p, "w", input=input)
    if rc != 0:
        raise _fail(f"gmx {name}", stage or name, rc, log_p)
    return log_p


def _mdp_defines_posres(mdp: Path) -> bool:
    try:
        text = mdp.read_text(errors="replace")
    except OSError:
        return False
    m = re.search(r"^\s*define\s*=([^;\n]*)", text, re.M | re.I)
    return bool(m and "POSRES" in m.group(1))


def grompp(
    mdp: str | os.PathLike,
    structure: str | os.PathLike,
    topology: str | os.PathLike,
    tpr: str | os.PathLike,
    settings: GromacsSettings | None = None,
    restraint: str | os.PathLike | None = None,
    maxwarn: int = 0,
    log: str | os.PathLike | None = None,
    cwd: str | os.PathLike | None = None,
    index: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> Path:
    """``gmx grompp``: mdp + structure (.gro/.pdb, nm) + topology (.top) -> run input ``tpr``.

    restraint:  reference coordinates for position restraints (``-r``); when the mdp's
                ``define`` mentions POSRES and none is given, ``structure`` is used.
    maxwarn:    number of GROMACS warnings to accept (keep 0 unless you know why).
    log:        captured output (default ``<tpr without .tpr>.grompp.log``).
    index:      index file (``-n``); checkpoint: ``-t`` (exact velocities from a previous run).
    The processed mdp goes to ``<tpr stem>.mdout.mdp`` next to the tpr. Returns the tpr path.
    """
    settings = settings or GromacsSettings()
    check_gmx(settings)
    cwd_p = Path(cwd).expanduser().resolve() if cwd else Path.cwd()
    tpr_p = _abs(tpr, cwd_p)
    tpr_p.parent.mkdir(parents=True, exist_ok=True)
    stem = tpr_p.name[:-4] if tpr_p.name.endswith(".tpr") else tpr_p.name
    log_p = _abs(log, cwd_p) or tpr_p.with_name(f"{stem}.grompp.log")
    inputs = {"mdp": _abs(mdp, cwd_p), "structure": _abs(structure, cwd_p), "topology": _abs(topology, cwd_p)}
    if restraint is None and _mdp_defines_posres(inputs["mdp"]):
        restraint = inputs["structure"]  # the usual choice: restrain to the starting structure
    for key, extra in (("restraint", restraint), ("index", index), ("checkpoint", checkpoint)):
        if extra is not None:
            inputs[key] = _abs(extra, cwd_p)
    for key, p in inputs.items():
        if not p.is_file():
            raise MultiscaleError(f"grompp {key} file {p} not found: check the stage inputs")
    flags = {
        "f": str(inputs["mdp"]),
        "c": str(inputs["structure"]),
        "p": str(inputs["topology"]),
        "o": str(tpr_p),
        "po": str(tpr_p.with_name(f"{stem}.mdout.mdp")),
        "r": str(inputs["restraint"]) if "restraint" in inputs else None,
        "n": str(inputs["index"]) if "index" in inputs else None,
        "t": str(inputs["checkpoint"]) if "checkpoint" in inputs else None,
        "maxwarn": int(maxwarn),
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    rc, _ = _run_wrapped(settings.gmx, "grompp", flags, log_p, cwd_p, "w")
    if rc != 0 or not tpr_p.is_file():
        raise _fail("gmx grompp", stem, rc, log_p)
    return tpr_p


def _parse_extra_args(args: Sequence[str]) -> dict[str, Any]:
    """["-pin", "on", "-v"] -> {"-pin": "on", "-v": True} (GromacsWrapper flag dict)."""
    flags: dict[str, Any] = {}
    key = None
    for tok in args:
        if tok.startswith("-") and not re.fullmatch(r"-\d+(\.\d*)?", tok):
            key = tok
            flags[key] = True
        elif key is None:
            raise MultiscaleError(f"gromacs.extra_mdrun_args: '{tok}' is not preceded by an option: write e.g. ['-pin', 'on']")
        elif flags[key] is True:
            flags[key] = tok
        else:
            flags[key] = (flags[key] if isinstance(flags[key], list) else [flags[key]]) + [tok]
    return flags


_PERF_RE = re.compile(r"^Performance:\s+([0-9.eE+-]+)", re.M)
_STOPPED_RE = re.compile(r"(Run time exceeded|Received the \w+ signal, stopping)")


def mdrun(
    tpr: str | os.PathLike,
    deffnm: str | os.PathLike,
    settings: GromacsSettings | None = None,
    cwd: str | os.PathLike | None = None,
    log: str | os.PathLike | None = None,
    checkpoint: bool = True,
) -> MdrunResult:
    """``gmx mdrun -s tpr -deffnm deffnm`` inside ``cwd`` (default: the tpr's folder).

    With ``checkpoint=True`` mdrun always gets ``-cpi <deffnm>.cpt``: if a previous call was
    interrupted (Ctrl-C, -maxh, a killed job) the run continues from the checkpoint and appends
    to its output files; a finished run is not repeated. Thread counts, -maxh, the launcher
    prefix and extra arguments come from ``settings``. Captured output goes to ``log``
    (default ``<deffnm>.mdrun.log``, appended to). Raises MultiscaleError on failure.
    """
    settings = settings or GromacsSettings()
    check_gmx(settings, mdrun=True)
    cwd_p = Path(cwd).expanduser().resolve() if cwd else Path(tpr).expanduser().resolve().parent
    cwd_p.mkdir(parents=True, exist_ok=True)
    tpr_p = _abs(tpr, cwd_p)
    if not tpr_p.is_file():
        raise MultiscaleError(f"mdrun input {tpr_p} not found: run grompp for this stage first")
    deffnm_p = _abs(deffnm, cwd_p)
    stage = deffnm_p.name
    log_p = _abs(log, cwd_p) or deffnm_p.with_name(f"{stage}.mdrun.log")
    cpt = deffnm_p.with_name(f"{stage}.cpt")
    continued = checkpoint and cpt.is_file()

    # names relative to cwd where possible: the checkpoint records the output file names, and
    # relative ones keep a moved run folder continuable (absolute ones make mdrun refuse to append)
    def rel(p: Path) -> str:
        return p.name if p.parent.resolve() == cwd_p else str(p)

    flags: dict[str, Any] = {"s": rel(tpr_p), "deffnm": rel(deffnm_p), **({"cpi": rel(cpt)} if checkpoint else {}),
                             **_thread_flags(settings)}
    t0 = time.monotonic()
    # mdrun runs with subprocess (not GromacsWrapper's run): a launcher prefix ("srun", "mpirun
    # -np 4") needs it anyway (MDrunner only builds "mpiexec -n N" and chdirs without a lock),
    # and the child needs a parent-death signal and the caller's inheritable fds (the cycle's
    # run-folder lock: held until mdrun too is gone). The argument list is still built by a
    # GromacsWrapper command object.
    tool = _tool(settings.mdrun_driver, "mdrun")
    cmd = shlex.split(settings.launcher or "") + tool.commandline(**flags)
    with open(log_p, "a") as fh:
        fh.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(cmd)}\n")
        fh.flush()
        try:
            rc = subprocess.run(cmd, cwd=cwd_p, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                close_fds=False, preexec_fn=_die_with_parent()).returncode
        except OSError as exc:
            if settings.launcher:
                raise MultiscaleError(f"cannot start '{shlex.join(cmd[:3])}' ({exc}): fix gromacs.launcher in sim.yaml") from exc
            raise _missing_exe_error(settings.mdrun_driver, "mdrun_gmx" if settings.mdrun_gmx else "gmx") from exc
    wall = time.monotonic() - t0

    if rc != 0:
        raise _fail(f"{settings.mdrun_driver} mdrun", stage, rc, log_p)
    return _mdrun_result(tpr_p, deffnm_p, log_p, continued, wall, cmd)


def _thread_flags(settings: GromacsSettings) -> dict[str, Any]:
    """-nt/-ntomp/-maxh and the extra mdrun arguments of ``settings``."""
    flags: dict[str, Any] = {}
    if settings.nt is not None:
        flags["nt"] = int(settings.nt)
    if settings.ntomp is not None:
        flags["ntomp"] = int(settings.ntomp)
    if settings.maxh is not None:
        flags["maxh"] = float(settings.maxh)
    flags.update(_parse_extra_args(settings.extra_mdrun_args))
    return flags


def _mdrun_result(tpr_p: Path, deffnm_p: Path, log_p: Path, continued: bool, wall: float, cmd: list) -> MdrunResult:
    """What a finished mdrun left: files, whether it reached its last step (not -maxh/signal), ns/day."""
    stage = deffnm_p.name
    gro = deffnm_p.with_name(f"{stage}.gro")
    md_log = deffnm_p.with_name(f"{stage}.log")
    log_text = md_log.read_text(errors="replace") if md_log.is_file() else ""
    perf = _PERF_RE.findall(log_text)
    tail = log_text[log_text.rfind("Started mdrun") :] if "Started mdrun" in log_text else log_text
    xtc, cpt = deffnm_p.with_name(f"{stage}.xtc"), deffnm_p.with_name(f"{stage}.cpt")
    return MdrunResult(stage=stage, tpr=tpr_p, deffnm=deffnm_p, log=md_log, stdout_log=log_p,
                       edr=deffnm_p.with_name(f"{stage}.edr"), gro=gro, xtc=xtc if xtc.is_file() else None,
                       cpt=cpt if cpt.is_file() else None, continued=continued,
                       completed=gro.is_file() and not _STOPPED_RE.search(tail), wall_s=wall,
                       ns_per_day=float(perf[-1]) if perf else None, command=list(cmd))

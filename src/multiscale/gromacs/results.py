"""Read results of GROMACS runs: minimisation summary, final energies, constraint warnings.

Units: energies kJ/mol, forces kJ mol-1 nm-1, temperature K, pressure bar, density kg m-3,
volume nm3, time ps.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from multiscale.errors import MultiscaleError

__all__ = ["em_result", "final_energies", "count_warnings", "read_xvg"]

_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _read(path: str | os.PathLike, what: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise MultiscaleError(f"{what} {p} not found: did the GROMACS stage run?")
    return p.read_text(errors="replace")


def em_result(log_path: str | os.PathLike) -> dict[str, Any]:
    """Summary of a steepest-descent minimisation from its mdrun ``.log`` (or captured output).

    Returns ``{"potential_kj_mol", "fmax" (kJ mol-1 nm-1), "fmax_atom" (1-based), "steps",
    "emtol", "converged"}``; ``converged`` is True only if Fmax < emtol was reached. Raises
    MultiscaleError if the log holds no minimisation summary (run crashed or not an EM run).
    """
    text = _read(log_path, "energy-minimisation log")
    m = None
    for m in re.finditer(  # noqa: B007 (the last match is used)
        r"(?P<alg>Steepest Descents|Polak-Ribiere Conjugate Gradients|Low-Memory BFGS Minimizer)\s+"
        r"(?P<outcome>converged to Fmax < (?P<tol1>" + _FLOAT + r") in (?P<n1>\d+) steps"
        r"|converged to machine precision in (?P<n2>\d+) steps,?\s*but did not reach the requested Fmax < (?P<tol2>" + _FLOAT + r")"
        r"|did not converge to Fmax < (?P<tol3>" + _FLOAT + r") in (?P<n3>\d+) steps)"
        r".*?Potential Energy\s*=\s*(?P<epot>" + _FLOAT + r")"
        r"\s*Maximum force\s*=\s*(?P<fmax>" + _FLOAT + r") on atom (?P<atom>\d+)",
        text,
        re.S,
    ):
        pass
    if m is None:
        raise MultiscaleError(
            f"no energy-minimisation summary in {log_path}: the EM run did not finish (see its mdrun log)"
        )
    tol = float(m.group("tol1") or m.group("tol2") or m.group("tol3"))
    return {
        "potential_kj_mol": float(m.group("epot")),
        "fmax": float(m.group("fmax")),
        "fmax_atom": int(m.group("atom")),
        "steps": int(m.group("n1") or m.group("n2") or m.group("n3")),
        "emtol": tol,
        "converged": m.group("tol1") is not None,
    }


def read_xvg(path: str | os.PathLike) -> tuple[list[str], list[list[float]]]:
    """Legends (first is ``"time"``/x axis) and rows of an .xvg file."""
    legends: dict[int, str] = {}
    rows: list[list[float]] = []
    for line in _read(path, "xvg file").splitlines():
        if line.startswith("@"):
            m = re.match(r'@\s+s(\d+)\s+legend\s+"(.*)"', line)
            if m:
                legends[int(m.group(1))] = m.group(2)
        elif line.strip() and not line.startswith("#"):
            rows.append([float(x) for x in line.split()])
    names = ["time"] + [legends.get(i, f"s{i}") for i in range(max(len(r) for r in rows) - 1)] if rows else ["time"]
    return names, rows


_TERMS = {
    "Potential": "potential_kj_mol",
    "Temperature": "temperature_k",
    "Pressure": "pressure_bar",
    "Density": "density_kg_m3",
    "Volume": "volume_nm3",
}


def final_energies(
    edr_path: str | os.PathLike,
    settings=None,
    tail_fraction: float = 0.0,
) -> dict[str, float | None]:
    """Energies at the end of a run, read from its ``.edr`` with ``gmx energy``.

    Returns ``{"time_ps", "potential_kj_mol", "temperature_k", "pressure_bar",
    "density_kg_m3", "volume_nm3", "n_frames"}`` for the last frame; with
    ``0 < tail_fraction <= 1`` each value is instead the mean over that last fraction of the
    frames (instantaneous pressure fluctuates by hundreds of bar). Terms the run does not have
    (no temperature in EM, no density at constant volume) are None. ``settings`` is a
    :class:`~multiscale.gromacs.GromacsSettings` (default: ``gmx`` on PATH).
    """
    from multiscale.gromacs.runner import GromacsSettings, run_tool

    edr = Path(edr_path).expanduser().resolve()
    if not edr.is_file():
        raise MultiscaleError(f"energy file {edr} not found: did the GROMACS stage run?")
    if not 0.0 <= tail_fraction <= 1.0:
        raise MultiscaleError(f"tail_fraction={tail_fraction} must be within [0, 1]")
    with tempfile.TemporaryDirectory(prefix="gmx_energy_") as tmp:
        xvg = Path(tmp) / "energy.xvg"
        run_tool(
            "energy",
            settings or GromacsSettings(),
            log=Path(tmp) / "energy.log",
            cwd=tmp,
            input=list(_TERMS) + [""],
            stage=f"energy of {edr.name}",
            f=str(edr),
            o=str(xvg),
        )
        names, rows = read_xvg(xvg)
    if not rows:
        raise MultiscaleError(f"energy file {edr} holds no frames: the run wrote no energies (check nstenergy)")
    n = len(rows)
    k = max(1, int(round(n * tail_fraction))) if tail_fraction > 0 else 1
    tail = rows[-k:]
    out: dict[str, float | None] = {v: None for v in _TERMS.values()}
    out["time_ps"] = rows[-1][0]
    out["n_frames"] = n
    for col, name in enumerate(names):
        key = _TERMS.get(name)
        if key is not None:
            out[key] = sum(r[col] for r in tail) / len(tail)
    return out


_WARNING_PATTERNS = {
    "LINCS": re.compile(r"LINCS WARNING"),
    "SETTLE": re.compile(r"can not be settled"),
}


def count_warnings(log: str | os.PathLike, kind: str = "LINCS") -> int:
    """Number of constraint warnings in an mdrun ``.log`` or captured output.

    kind: ``"LINCS"`` (lines "LINCS WARNING"), ``"SETTLE"`` (water that "can not be settled")
    or ``"all"`` (both).
    """
    text = _read(log, "mdrun log")
    kinds = list(_WARNING_PATTERNS) if kind == "all" else [kind]
    total = 0
    for k in kinds:
        if k not in _WARNING_PATTERNS:
            raise MultiscaleError(f"count_warnings: unknown kind '{k}': use LINCS, SETTLE or all")
        total += len(_WARNING_PATTERNS[k].findall(text))
    return total

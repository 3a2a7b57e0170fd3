"""What produced an evaluation report: software versions and the seeds used (``settings``)."""

from __future__ import annotations

import platform
import re
import subprocess

__all__ = ["versions", "seeds_used", "gromacs_version"]


def gromacs_version(gmx: str = "gmx") -> str | None:
    """The version string of ``gmx --version`` (e.g. "2022.5"), None when it cannot be run."""
    try:
        out = subprocess.run([gmx, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"GROMACS version:\s*(\S+)", out.stdout + out.stderr)
    return m.group(1) if m else None


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def versions(gromacs_settings=None, use_gromacs: bool = True) -> dict:
    """{software: version} of this evaluation: multiscale, Python, numpy, scipy, MDAnalysis and
    GROMACS (the ``gmx`` of ``gromacs_settings``, else ``gmx`` on PATH; None when absent or not
    used)."""
    from .. import __version__

    gmx = getattr(gromacs_settings, "gmx", None) or "gmx"
    return {"multiscale": __version__, "python": platform.python_version(), "numpy": _dist_version("numpy"),
            "scipy": _dist_version("scipy"), "MDAnalysis": _dist_version("MDAnalysis"),
            "GROMACS": gromacs_version(gmx) if use_gromacs else None}


def seeds_used(seed: int, baselines, energy: bool) -> dict:
    """The seed of every stochastic step of the evaluation (all derive from ``--seed``)."""
    out = {"noise floor draws (bootstrap)": int(seed)}
    for b in baselines:
        out[f"{b} baseline"] = int(seed)
    if energy:
        out["GROMACS restrained NVT (gen_seed)"] = int(seed)
    return out

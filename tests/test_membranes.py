"""``multiscale topology --cg-topology``: a Martini membrane system's CHARMM36 topology (lipids, water, ions)."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import fetched_forcefields


@pytest.fixture(scope="module")
def cache():
    return fetched_forcefields(["charmm36", "charmm36-lipids"])


def _cli(*args, cwd):
    exe = Path(sys.executable).parent / "multiscale"
    return subprocess.run([str(exe), *map(str, args)], cwd=cwd, capture_output=True, text=True)


CG_TOP = """#include "martini_v3.0.0.itp"
#include "martini_v3.0.0_phospholipids_v1.itp"

[ system ]
insane bilayer

[ molecules ]
; name  number
POPC     3
POPC     1
CHOL     2
W       10
NA+      1
CL-      2
"""


def test_insane_style_topology_becomes_charmm36(cache, tmp_path):
    from multiscale.membranes import lipid_table
    from multiscale.topology import load_topology

    (tmp_path / "cg.top").write_text(CG_TOP)
    r = _cli("topology", "--cg-topology", "cg.top", "--output", "aa/aa.top", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from multiscale.forcefields import CHARMM36_FF, charmm36_gmxlib

    assert {p.name for p in (tmp_path / "aa").iterdir()} == {"aa.top", "POPC.itp", "CHL1.itp", CHARMM36_FF}
    link = tmp_path / "aa" / CHARMM36_FF  # a link to the fetched port (GPL: never copied), for grompp
    assert link.is_symlink() and link.resolve() == (charmm36_gmxlib() / CHARMM36_FF).resolve()
    top = load_topology(tmp_path / "aa" / "aa.top")
    assert [(b.moltype.name, b.count) for b in top.blocks] == [("POPC", 4), ("CHL1", 2), ("SOL", 40), ("SOD", 1), ("CLA", 2)]
    assert top.blocks[0].moltype.n_atoms == 134 and top.blocks[1].moltype.n_atoms == 74
    assert lipid_table()["CHOL"] == "CHL1" and lipid_table()["POPC"] == "POPC"


def test_unknown_cg_molecule_is_one_line(cache, tmp_path):
    (tmp_path / "cg.top").write_text(CG_TOP.replace("CHOL     2", "XLIP     2"))
    r = _cli("topology", "--cg-topology", "cg.top", "--output", "aa.top", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "molecule XLIP is not a Martini lipid with a mapping file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "aa.top").exists()
    (tmp_path / "x.top").write_text("[ system ]\nx\n")
    r = _cli("topology", "--cg-topology", "x.top", "--output", "aa.top", cwd=tmp_path)
    assert r.returncode == 2 and "has no [ molecules ] rows" in r.stderr

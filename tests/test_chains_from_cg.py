"""``multiscale topology --cg``: AA topologies for CG proteins (several chains, amber or CHARMM36m)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import fetched_forcefields

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "datasets" / "peptides"
pytest.importorskip("vermouth")
if shutil.which("gmx") is None:
    pytest.skip("needs GROMACS (gmx pdb2gmx)", allow_module_level=True)


def _cli(*args, cwd):
    exe = Path(sys.executable).parent / "multiscale"
    return subprocess.run([str(exe), *map(str, args)], cwd=cwd, capture_output=True, text=True)


def _cg(name, tmp_path):
    src = DATA / name
    r = _cli("coarse-grain", "--topology", src / "topol.top", "--structure", src / "start.gro", "--output", f"{name}.gro",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / f"{name}.gro").read_text().splitlines()
    return lines[2:-1]


def _write_gro(path, chunks, box=12.0):
    """.gro of several CG chains (each chunk: (lines, shift nm)), atoms renumbered."""
    out = []
    for lines, shift in chunks:
        for ln in lines:
            x = [float(ln[20 + 8 * k:28 + 8 * k]) + shift for k in range(3)]
            out.append(f"{ln[:15]}{len(out) + 1:5d}{x[0]:8.3f}{x[1]:8.3f}{x[2]:8.3f}")
    path.write_text("chains\n" + f"{len(out)}\n" + "\n".join(out) + f"\n{box:10.5f}{box:10.5f}{box:10.5f}\n")


def test_three_chains_two_moleculetypes_then_backmap(tmp_path):
    from multiscale.chains.from_cg import sequence_of
    from multiscale.io import read_frames
    from multiscale.topology import load_topology

    trp, pep = _cg("trpcage", tmp_path), _cg("pep01", tmp_path)
    _write_gro(tmp_path / "multi.gro", [(trp, 0.0), (pep, 4.0), (pep, 8.0)])
    assert sequence_of(tmp_path / "multi.gro") == "NLYIQWLKDGGPSSGRPPPS/QQIDLGGSIH/QQIDLGGSIH"
    r = _cli("topology", "--cg", "multi.gro", "--output", "aa/aa.top", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    top = load_topology(tmp_path / "aa" / "aa.top")
    assert [(b.moltype.name, b.count) for b in top.blocks] == [("Protein_chain_A", 1), ("Protein_chain_B", 2)]
    assert top.blocks[0].moltype.atom_names == load_topology(DATA / "trpcage" / "topol.top").blocks[0].moltype.atom_names
    assert top.blocks[1].moltype.atom_names == load_topology(DATA / "pep01" / "topol.top").blocks[0].moltype.atom_names
    assert {p.name for p in (tmp_path / "aa").iterdir()} == {"aa.top", "aa_protein_A.itp", "aa_protein_B.itp",
                                                             "posre_aa_A.itp", "posre_aa_B.itp"}
    r = _cli("backmap", "--cg", "multi.gro", "--topology", "aa/aa.top", "--output", "aa.gro", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert read_frames(tmp_path / "aa.gro").n_atoms == top.n_atoms


def test_chain_break_by_distance_with_continuous_numbering(tmp_path):
    from multiscale.chains.from_cg import sequence_of

    pep = _cg("pep01", tmp_path)
    renum = [f"{int(ln[:5]) + 10:5d}{ln[5:]}" for ln in pep]  # resid 11..20 follows 1..10
    _write_gro(tmp_path / "two.gro", [(pep, 0.0), (renum, 3.0)])
    assert sequence_of(tmp_path / "two.gro") == "QQIDLGGSIH/QQIDLGGSIH"
    _write_gro(tmp_path / "one.gro", [(pep, 0.0)])
    assert sequence_of(tmp_path / "one.gro") == "QQIDLGGSIH"


def test_charmm36m_topology_from_cg(tmp_path):
    from multiscale.topology import load_topology

    fetched_forcefields(["charmm36"])
    # an N-terminal Met: the CHARMM36 port's pdb2gmx default would cap it as a polyether (MET1)
    lines = _cg("pep08", tmp_path)
    _write_gro(tmp_path / "met.gro", [(lines, 0.0)])
    r = _cli("topology", "--cg", "met.gro", "--forcefield", "charmm36m", "--output", "c36.top", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    top = load_topology(tmp_path / "c36.top")  # includes resolve through the fetched cache, no GMXLIB needed
    names = top.blocks[0].moltype.atom_names
    assert names[:5] == ("N", "HT1", "HT2", "HT3", "CA") or names[:5] == ("N", "H1", "H2", "H3", "CA")
    assert "HN" in names and "OT1" in names and "OT2" in names
    assert np.sum(np.asarray(top.blocks[0].moltype.charges)) == pytest.approx(-1.0, abs=1e-6)  # R+, E-, D-, NH3+, COO-
    r = _cli("backmap", "--cg", "met.gro", "--topology", "c36.top", "--output", "c36.gro", cwd=tmp_path)  # shipped CHARMM model
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout

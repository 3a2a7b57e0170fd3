"""The command line as a user runs it: real processes, real files, one-line errors."""

import subprocess
import sys

import numpy as np

from conftest import toy_coords, write_toy
from multiscale.io import read_frames, write_frames
from multiscale.topology import load_topology


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "multiscale.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def _toy_system(tmp_path, ntoy=3, nsol=8):
    p = write_toy(tmp_path, ntoy, nsol)
    top = load_topology(p["top"])
    x = toy_coords(ntoy, nsol, box=2.0)
    write_frames(tmp_path / "aa.gro", x, [2.0, 2.0, 2.0], top.per_atom("atom_names"), top.per_atom("resnames"), top.resids())
    return p


def test_coarse_grain_command(tmp_path):
    p = _toy_system(tmp_path)
    r = run("coarse-grain", "--topology", p["top"], "--structure", tmp_path / "aa.gro", "--mapping", p["map"],
            "--output", tmp_path / "cg.gro", "--cg-topology", tmp_path / "cg.top", "--include", p["itp"])
    assert r.returncode == 0, r.stderr
    assert "39 atoms -> 8 beads" in r.stdout
    f = read_frames(tmp_path / "cg.gro")
    assert f.n_atoms == 8 and list(f.names[:2]) == ["A", "B"]
    assert "W          2" in (tmp_path / "cg.top").read_text()


def test_errors_are_one_line_and_nonzero(tmp_path):
    p = _toy_system(tmp_path)
    bad = tmp_path / "bad.map"
    bad.write_text(p["map"].read_text().replace("4 O1 B", "4 OX B"))
    r = run("coarse-grain", "--topology", p["top"], "--structure", tmp_path / "aa.gro", "--mapping", bad,
            "--output", tmp_path / "cg.gro")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "atom OX of TOY" in r.stderr
    assert not (tmp_path / "cg.gro").exists()
    r = run("coarse-grain", "--topology", tmp_path / "nope.top", "--structure", tmp_path / "aa.gro", "--mapping", p["map"],
            "--output", tmp_path / "cg.gro")
    assert r.returncode == 2 and "nope.top not found" in r.stderr and r.stderr.count("\n") == 1


def test_missing_gmx_is_one_line_and_leaves_nothing(tmp_path):
    d = tmp_path / "run"
    r = run("init", "--example", "heptanol", d)
    assert r.returncode == 0, r.stderr
    cfg = d / "sim.yaml"
    cfg.write_text(cfg.read_text().replace("  gmx: gmx\n", "  gmx: gmx_missing_here\n"))
    before = sorted(p.name for p in d.iterdir())
    r = run("cycle", "--config", cfg)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "GROMACS executable 'gmx_missing_here' not found on PATH" in r.stderr
    assert sorted(p.name for p in d.iterdir()) == before  # no half-made run folder


def test_train_backmap_commands_and_bead_mismatch(tmp_path):
    """train -> backmap through the CLI on the toy system; a CG file of another system is refused."""
    p = write_toy(tmp_path, 4, 8)
    top = load_topology(p["top"])
    x = toy_coords(4, 8, box=2.0)
    # waters as two compact 4-water clusters (a real water bank needs clusters, not scattered waters)
    wat = x[20:23] - x[20]
    offs = np.array([[0, 0, 0], [0.28, 0, 0], [0, 0.28, 0], [0, 0, 0.28]])
    xw = [wat + c + o for c in ([0.5, 1.5, 0.5], [1.5, 0.5, 1.5]) for o in offs]
    x[20:] = np.concatenate(xw)
    write_frames(tmp_path / "aa.gro", x, [2.0, 2.0, 2.0], top.per_atom("atom_names"), top.per_atom("resnames"), top.resids())
    r = run("train", "--topology", p["top"], "--structure", tmp_path / "aa.gro", "--mapping", p["map"],
            "--output", tmp_path / "m.pt", "--epochs", "2", "--seed", "3")
    assert r.returncode == 0, r.stderr
    r = run("coarse-grain", "--topology", p["top"], "--structure", tmp_path / "aa.gro", "--mapping", p["map"],
            "--output", tmp_path / "cg.gro")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "bm.gro"
    r = run("backmap", "--cg", tmp_path / "cg.gro", "--model", tmp_path / "m.pt", "--topology", p["top"],
            "--output", out, "--seed", "1", "--wrap", "--posre-dir", tmp_path / "posre")
    assert r.returncode == 0, r.stderr
    f = read_frames(out)
    assert f.n_atoms == top.n_atoms and list(f.names[:5]) == ["C1", "C2", "C3", "O1", "HO"]
    assert (tmp_path / "posre" / "posre_TOY.itp").exists()
    # same seed, same output
    r = run("backmap", "--cg", tmp_path / "cg.gro", "--model", tmp_path / "m.pt", "--topology", p["top"],
            "--output", tmp_path / "bm2.gro", "--seed", "1", "--wrap")
    assert (tmp_path / "bm2.gro").read_text().split("\n", 1)[1] == out.read_text().split("\n", 1)[1]
    # a CG structure with one bead too many
    g = read_frames(tmp_path / "cg.gro")
    write_frames(tmp_path / "cg_bad.gro", np.vstack([g.positions[0], g.positions[0][:1]]), g.box[0],
                 np.r_[g.names, ["W"]], np.r_[g.resnames, ["W"]], np.r_[g.resids, [99]])
    r = run("backmap", "--cg", tmp_path / "cg_bad.gro", "--model", tmp_path / "m.pt", "--topology", p["top"],
            "--output", tmp_path / "bad.gro")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "cg_bad.gro has 11 beads but the mapping expects 10" in r.stderr
    assert not (tmp_path / "bad.gro").exists()

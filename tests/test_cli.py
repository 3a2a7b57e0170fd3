"""The command line as a user runs it: real processes, real files, one-line errors."""

import subprocess
import sys

import numpy as np
import pytest

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
    cg_itp = tmp_path / "toy_cg.itp"  # the CG moleculetype: --include is checked against the mapping's beads
    cg_itp.write_text("[ moleculetype ]\nTOY 1\n[ atoms ]\n1 SC3 1 TOY A 1 0\n2 SP1 1 TOY B 2 0\n")
    r = run("coarse-grain", "--topology", p["top"], "--structure", tmp_path / "aa.gro", "--mapping", p["map"],
            "--output", tmp_path / "cg.gro", "--cg-topology", tmp_path / "cg.top", "--include", cg_itp)
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
    r = run("coarse-grain", "--topology", p["top"], "--structure", tmp_path / "aa.gro", "--mapping", p["map"], "--go",
            "--output", tmp_path / "cg.gro")
    assert r.returncode == 2 and "no amino-acid chain to put Go virtual sites on" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "cg.gro").exists()


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


# --- bad invocations (issue 10): exit 2, one line, no traceback, nothing written ---

_BAD = [
    (("coarse-grain", "AA", "--output", "cg.gro", "--seed", "-1"), "argument --seed: '-1': must be a whole number >= 0"),
    (("coarse-grain", "AA", "--output", "cg.gro", "--step", "0"), "argument --step"),
    (("coarse-grain", "AA", "--output", "cg.gro", "--start", "-2"), "argument --start"),
    (("coarse-grain", "AA", "--output", "cg.foo"), "--output .*cg.foo: unsupported file type '.foo'"),
    (("coarse-grain", "AA", "--output", "cg.gro", "--cg-topology", "cg.itp"), "--cg-topology .*cg.itp: unsupported file type"),
    (("coarse-grain", "AA", "--output", "toy.top/cg.gro"), r"cannot write there \(.*toy.top is not a folder\)"),
    (("coarse-grain", "AA", "--output", "."), r"cannot write there|unsupported file type"),
    (("coarse-grain", "--topology", "toy.top", "--structure", "md.xtc", "--mapping", "toy.map", "--output", "cg.gro"),
     r"structure .*md.xtc is a trajectory"),
    (("coarse-grain", "--topology", "toy.top"), "the following arguments are required"),
    (("frobnicate",), "invalid choice: 'frobnicate'"),
    (("train", "AA", "--output", "m.pt", "--epochs", "0"), "argument --epochs: '0': must be a whole number > 0"),
    (("train", "AA", "--output", "m.pt", "--seed", "x"), "argument --seed: 'x' is not a whole number"),
    (("backmap", "BM", "--candidates", "0"), "argument --candidates"),
    (("backmap", "BM", "--max-retries", "-1"), "argument --max-retries"),
    (("backmap", "BM", "--posre-fc", "nan"), "--posre-fc must be a positive force constant"),
    (("backmap", "BM", "--seed", "-1"), "argument --seed"),
    (("backmap", "--cg", "cg0.gro", "--model", "m.pt", "--topology", "toy.top", "--output", "bm.mol2"), "unsupported file type"),
    (("evaluate", "--cg", "cg0.gro", "--mapping", "toy.map", "--topology", "toy.top", "--output", "ev",
      "--reference-max-frames", "0"), "argument --reference-max-frames"),
    (("evaluate", "--cg", "cg0.gro", "--mapping", "toy.map", "--topology", "toy.top", "--output", "ev", "--seed", "-1"),
     "argument --seed"),
]


@pytest.mark.parametrize("argv, match", _BAD, ids=[" ".join(a[0])[:60] for a in _BAD])
def test_bad_invocations_exit_2_with_one_line(tmp_path, monkeypatch, capsys, argv, match):
    """Before: tracebacks (--seed -1, unknown suffix, xtc structure), exit 0 (--epochs 0) or a
    multi-line argparse usage block."""
    import re

    from multiscale.cli import main

    p = _toy_system(tmp_path)
    (tmp_path / "md.xtc").write_bytes((tmp_path / "aa.gro").read_bytes()[:0] + b"\x00" * 64)
    (tmp_path / "cg0.gro").write_text((tmp_path / "aa.gro").read_text())
    (tmp_path / "m.pt").write_bytes(b"not a model")
    monkeypatch.chdir(tmp_path)
    before = sorted(x.name for x in tmp_path.iterdir())
    expand = {"AA": ["--topology", str(p["top"]), "--structure", "aa.gro", "--mapping", str(p["map"])],
              "BM": ["--cg", "cg0.gro", "--model", "m.pt", "--topology", str(p["top"]), "--output", "bm.gro"]}
    args = [x for a in argv for x in expand.get(a, [a])]
    try:
        rc = main(args)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(match, err), err
    assert "Traceback" not in err and ".partial-" not in err
    assert sorted(x.name for x in tmp_path.iterdir()) == before  # nothing written


def test_read_only_output_folder_is_one_line(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders (the not-a-folder case is covered above)")
    p = _toy_system(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = run("coarse-grain", "--topology", p["top"], "--structure", tmp_path / "aa.gro", "--mapping", p["map"],
                "--output", ro / "cg.gro")
    finally:
        ro.chmod(0o755)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not writable" in r.stderr

"""Commands that write refuse an output that is one of their inputs (same path, same inode,
or a folder), and check their arguments before writing anything."""

from __future__ import annotations

import os

import pytest

from multiscale.cli import main


@pytest.fixture
def files(tmp_path):
    out = {}
    for name in ("aa.top", "aa.gro", "md.xtc", "x.map", "cg.gro", "model.pt"):
        (tmp_path / name).write_text(f"original {name}\n")
        out[name] = tmp_path / name
    os.link(tmp_path / "aa.gro", tmp_path / "hardlink.gro")
    return out


def _run(capsys, *args):
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    return rc, err


AA = ("--topology", "aa.top", "--structure", "aa.gro", "--mapping", "x.map")


@pytest.mark.parametrize("cmd", [
    ("coarse-grain", *AA, "--output", "aa.gro"),
    ("coarse-grain", *AA, "--output", "hardlink.gro"),                 # same inode
    ("coarse-grain", *AA, "--output", "cg.gro", "--cg-topology", "aa.top"),
    ("coarse-grain", *AA, "--output", "cg.gro", "--cg-topology", "cg.gro"),
    ("train", *AA, "--trajectory", "md.xtc", "--output", "md.xtc"),
    ("train", *AA, "--output", "x.map"),
    ("backmap", "--cg", "cg.gro", "--model", "model.pt", "--topology", "aa.top", "--output", "cg.gro"),
    ("backmap", "--cg", "cg.gro", "--model", "model.pt", "--topology", "aa.top", "--output", "o.gro",
     "--report", "model.pt"),
])
def test_output_that_is_an_input_is_refused(files, tmp_path, capsys, monkeypatch, cmd):
    monkeypatch.chdir(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    rc, err = _run(capsys, *cmd)
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert ("is also an input of this command" in err) or ("name the same file" in err)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written, nothing new


@pytest.mark.parametrize("extra, msg", [
    (("--posre-dir", "aa.top"), "is a file, not a folder"),
    (("--posre-fc", "-5"), "--posre-fc must be a positive force constant"),
    (("--posre-fc", "nan"), "--posre-fc must be a positive force constant"),
    (("--report", "."), "--report . is a folder"),
])
def test_backmap_arguments_checked_before_any_output(files, tmp_path, capsys, monkeypatch, extra, msg):
    monkeypatch.chdir(tmp_path)
    rc, err = _run(capsys, "backmap", "--cg", "cg.gro", "--model", "model.pt", "--topology", "aa.top",
                   "--output", "new.gro", *extra)
    assert rc == 2 and msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "new.gro").exists()


def test_cycle_output_naming_a_file_is_refused(tmp_path, capsys):
    from test_cycle import write_config, write_w_box

    box = write_w_box(tmp_path / "system")
    cfg = write_config(tmp_path, box, "runs")
    cfg.write_text(cfg.read_text().replace("output: runs", f"output: {box['gro']}"))
    before = box["gro"].read_bytes()
    rc, err = _run(capsys, "cycle", "--config", cfg, "--no-progress")
    assert rc == 2 and "is a file, not a folder" in err and err.count("\n") == 1, err
    assert box["gro"].read_bytes() == before


@pytest.mark.parametrize("output", ["ro/runs", "x" * 300])
def test_cycle_unwritable_or_too_long_output_is_one_line(tmp_path, capsys, output):
    from test_cycle import write_config, write_w_box

    box = write_w_box(tmp_path / "system")
    (tmp_path / "ro").mkdir(mode=0o555)
    cfg = write_config(tmp_path, box, "runs")
    cfg.write_text(cfg.read_text().replace("output: runs", f"output: {output}"))
    if output.startswith("ro") and os.access(tmp_path / "ro", os.W_OK):
        pytest.skip("running as a user who can write anywhere (root)")
    rc, err = _run(capsys, "cycle", "--config", cfg, "--no-progress")
    assert rc == 2 and "cannot write into the output folder" in err and err.count("\n") == 1, err

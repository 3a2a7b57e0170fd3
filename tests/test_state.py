"""The state file: atomic writes, stage transitions, dead-attempt detection, change detection."""

from __future__ import annotations

import hashlib
import json
import os
import re

import pytest

from multiscale.errors import MultiscaleError
from multiscale.workflow.cycle import Checksums, _diff
from multiscale.workflow.state import STATE_NAME, RunState, file_record, sha256_file, stage_key


def test_transitions_and_persistence(tmp_path):
    st = RunState.load(tmp_path, create=True)
    keys = [stage_key(1, "aa-em"), stage_key(1, "aa-md")]
    st.set_plan(keys, None, None)
    st.start_run(["multiscale", "cycle"])
    assert not st.is_done() and st.status(keys[0]) == "pending"
    out = tmp_path / "cycle_001" / "aa-em" / "aa-em.gro"
    out.parent.mkdir(parents=True)
    out.write_text("x\n")
    st.begin(keys[0], 1, "aa-em", {"params": {"sha256": "0"}}, "cycle_001/aa-em/aa-em.mdrun.log", False)
    assert RunState.load(tmp_path).status(keys[0]) == "running"
    st.finish(keys[0], {"gro": file_record(out, tmp_path)}, 1.25, energies={"potential_kj_mol": -1.0}, info={"atoms": 3})
    st.begin(keys[1], 1, "aa-md", {}, None, False)
    st.stop(keys[1], 2.0, "time limit")
    st.begin(keys[1], 1, "aa-md", {}, None, True)
    st.finish(keys[1], {}, 3.0)
    st.end_run("done")

    again = RunState.load(tmp_path)
    assert again.is_done() and again.counts() == {"done": 2}
    rec = again.record(keys[0])
    assert rec["outputs"]["gro"] == {"path": "cycle_001/aa-em/aa-em.gro",
                                     "sha256": hashlib.sha256(b"x\n").hexdigest(), "bytes": 2}
    assert rec["energies"] == {"potential_kj_mol": -1.0} and rec["wall_s"] == 1.25
    att = again.record(keys[1])["attempts"]
    assert [a["result"] for a in att] == ["stopped", "done"] and [a["continued"] for a in att] == [False, True]
    assert again.record(keys[1])["wall_s"] == 5.0
    assert again.data["runs"][-1]["result"] == "done"


def test_killed_attempts_are_reaped(tmp_path):
    st = RunState.load(tmp_path, create=True)
    st.set_plan(["cycle_001/cg-md"], None, None)
    st.begin("cycle_001/cg-md", 1, "cg-md", {}, None, False)
    # a new process finds the record 'running' (the old one was killed)
    data = json.loads((tmp_path / STATE_NAME).read_text())
    data["runs"] = [{"pid": -1, "result": "running"}]
    (tmp_path / STATE_NAME).write_text(json.dumps(data))
    st2 = RunState.load(tmp_path)
    assert st2.reap_dead_attempts() == ["cycle_001/cg-md"]
    rec = RunState.load(tmp_path).record("cycle_001/cg-md")
    assert rec["status"] == "stopped" and rec["attempts"][-1]["result"] == "killed"
    assert RunState.load(tmp_path).data["runs"][0]["result"] == "killed"


def test_save_is_atomic(tmp_path, monkeypatch):
    st = RunState.load(tmp_path, create=True)
    st.set_plan(["a"], None, None)
    st.save()
    before = (tmp_path / STATE_NAME).read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    st.set_plan(["a", "b"], None, None)
    with pytest.raises(OSError):
        st.save()
    monkeypatch.undo()
    assert (tmp_path / STATE_NAME).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_NAME]  # no temporary file left


def test_bad_or_missing_state(tmp_path):
    with pytest.raises(MultiscaleError, match=r"no run state in .* \(state\.json not found\)"):
        RunState.load(tmp_path)
    (tmp_path / STATE_NAME).write_text("{not json")
    with pytest.raises(MultiscaleError, match=r"state\.json is unreadable"):
        RunState.load(tmp_path)
    (tmp_path / STATE_NAME).write_text(json.dumps({"format": "other"}))
    with pytest.raises(MultiscaleError, match=r"not a multiscale state file"):
        RunState.load(tmp_path)
    # valid JSON of the wrong shape: one line, no traceback later on
    fmt = "multiscale-state/1"
    for bad, what in (({"plan": "x"}, "'plan'"), ({"stages": []}, "'stages'"), ({"stages": {"k": 3}}, "stage k"),
                      ({"stages": {"k": {"inputs": {"s": 5}}}}, "inputs 's'"), ({"runs": [1]}, "'runs'"),
                      ({"stages": {"k": {"attempts": [None]}}}, "'attempts'")):
        (tmp_path / STATE_NAME).write_text(json.dumps({"format": fmt, **bad}))
        with pytest.raises(MultiscaleError, match=r"state\.json is damaged \(.*" + re.escape(what)):
            RunState.load(tmp_path)


def test_checksums_and_diff(tmp_path):
    f = tmp_path / "in.gro"
    f.write_text("a")
    st = RunState(tmp_path)
    sums = Checksums(st)
    r1 = sums.record(f)
    assert r1["sha256"] == sha256_file(f) and r1["path"] == "in.gro"
    old = {"structure": r1, "params": {"sha256": "1", "values": {"values": {"nsteps": 10, "dt": 0.002}}}}
    assert _diff(old, old) == []
    f.write_text("b")
    new = {"structure": sums.record(f), "params": {"sha256": "2", "values": {"values": {"nsteps": 20, "dt": 0.002}}}}
    assert _diff(old, new) == ["its parameters changed (values.nsteps: 10 -> 20)",
                               "its input 'structure' (in.gro) changed"]
    # the (size, mtime) cache is used for unchanged files: the recorded checksum is trusted
    st.stages["x"] = {"inputs": {"s": new["structure"]}, "outputs": {}}
    assert Checksums(st).record(f)["sha256"] == new["structure"]["sha256"]


@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_atomic_writes_keep_the_umask_and_mark_partial_files(tmp_path, umask):
    from multiscale.io import atomic_path, atomic_write_text, remove_partial_files

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        st = RunState.load(tmp_path, create=True)
        st.save()
        with pytest.raises(RuntimeError):
            with atomic_path(tmp_path / "b.gro") as tmp:
                tmp.write_text("half")
                # what a killed writer leaves: hidden, marked partial, never 'b.gro'
                assert tmp.name.startswith(".b.partial-") and tmp.suffix == ".gro"
                leftover = tmp.with_name(tmp.name.replace(".gro", ".f01.gro"))
                leftover.write_text("half")
                raise RuntimeError
    finally:
        os.umask(old)
    for name in ("a.txt", STATE_NAME):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert not (tmp_path / "b.gro").exists()
    assert remove_partial_files(tmp_path) == [leftover] and not leftover.exists()


def test_status_shows_averages_and_fits_80_columns(tmp_path):
    from rich.console import Console

    from multiscale.workflow.status import live_line, status_table

    st = RunState.load(tmp_path, create=True)
    keys = [stage_key(1, n) for n in ("cg-md", "restrained-em", "restrained-eq", "relax")]
    st.set_plan(keys, None, None)
    md = {"potential_kj_mol": -12345.6, "temperature_k": 299.5, "last_temperature_k": 271.0,
          "density_kg_m3": 1004.2, "last_density_kg_m3": 990.0, "n_frames": 51, "averaged": True}
    info = {"atoms": 3060, "beads": 255, "frames": 51, "last_time_ps": 1000.0, "ns_per_day": 812.0}
    for key, en in zip(keys, (md, {"potential_kj_mol": -9.9e3, "fmax": 812.0, "converged": True}, md,
                              {"potential_kj_mol": -1.0e4, "temperature_k": 271.0})):  # the last: an old record
        st.begin(key, 1, key.split("/")[1], {}, None, False)
        st.finish(key, {}, 12.5, energies=en, info=info)
    con = Console(width=80, record=True, color_system=None)
    con.print(status_table(st, width=80))
    text = con.export_text()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "restrained-em" in text and "restrained-eq" in text, text
    flat = " ".join(text.split())
    assert "T 299.5 K avg (last 271.0)" in flat and "-1.235e+04 avg" in flat, text
    assert "-9900 final" in flat and "T 271.0 K (last frame)" in flat and "-1e+04 last" in flat, text
    assert "averages over each run's energy frames" in flat

    line = live_line("cycle_012/restrained-eq", "NVT 2 ps, heavy atoms restrained to the backmapped positions",
                     "1:02:03", "step 123456/2000000 (6 %)", True, 77)
    assert len(line) <= 77 and line.startswith("cycle_012/restrained-eq  1:02:03  step 123456/2000000 (6 %)")
    assert live_line("cycle_001/restrained-em", "EM", "1.0 s", "", False, 77) == "cycle_001/restrained-em  1.0 s  EM"

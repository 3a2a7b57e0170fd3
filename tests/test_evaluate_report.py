"""The evaluation report: ranking by excess over the noise floor, all reference frames by default,
plots with units / sample sizes / floor, text without raw dicts or internal ids, provenance, and
the same energy input for every candidate."""

import json

import numpy as np
import pytest

from multiscale.evaluate import report as R
from multiscale.evaluate import run as RUN
from multiscale.evaluate.metrics import floor_band, jsd_excess
from multiscale.evaluate.run import evaluate
from multiscale.evaluate.summary import summarise_terms as _summarise_terms
from test_evaluate_run import _toy_system, _write, _write_cg


def _row(name, kind, jsd, floor, heavy=True):
    return {"moltype": "M", "kind": kind, "name": name, "type_index": 0, "n_members": 1, "heavy": heavy, "water": False,
            "n_reference": 100, "n_candidate": 10, "jsd": jsd, "wasserstein": 0.1, "jsd_floor": floor,
            "jsd_excess": jsd_excess(jsd, floor), "mean_reference": 0.0, "mean_candidate": 0.0}


def test_worst_term_is_the_largest_excess_over_the_floor_not_the_largest_jsd():
    rows = [_row("A-B-C-D", "torsion", 0.248, 0.211),   # highest JSD, but at its floor
            _row("B-C-D-E", "torsion", 0.163, 0.046)]   # the real outlier
    s = _summarise_terms(rows)
    assert s["worst_term"] == "M torsion B-C-D-E"
    assert s["jsd_max"] == pytest.approx(0.248)
    assert s["jsd_excess_max"] == pytest.approx(0.117)
    assert s["per_moltype"]["M"]["worst_term"] == "torsion B-C-D-E"


def test_floor_band_contains_the_reference_density():
    rng = np.random.default_rng(0)
    ref = rng.normal(110.0, 4.0, 5000)
    edges = np.linspace(0, 180, 91)
    lo, hi = floor_band(ref, 40, edges, seed=1)
    dens, _ = np.histogram(ref, bins=edges, density=True)
    assert np.all(lo <= hi) and np.all(lo <= dens + 1e-12)
    assert np.mean(dens <= hi + 1e-12) > 0.9


def _many_frames(tmp_path, n):
    p, top, mp, x, box = _toy_system(tmp_path)
    rng = np.random.default_rng(3)
    xs = np.round(x[None] + rng.normal(0, 0.003, (n,) + x.shape), 3)
    ref = _write(tmp_path / "ref.gro", top, xs, np.repeat(box[None], n, 0))
    cg = _write_cg(tmp_path / "cg.gro", top, mp, x, box)
    cand = _write(tmp_path / "cand.gro", top, x, box)
    return p, top, ref, cg, cand


def test_every_reference_frame_is_used_by_default(tmp_path):
    p, top, ref, cg, cand = _many_frames(tmp_path, 120)
    r = evaluate(cg=cg, mapping=p["map"], topology=p["top"], reference=ref, candidates={"c": str(cand)},
                 output=tmp_path / "out", energy=False, plots=False)
    assert r["inputs"]["frames"] == 120
    assert r["settings"]["reference_max_frames"] is None
    r = evaluate(cg=cg, mapping=p["map"], topology=p["top"], reference=ref, candidates={"c": str(cand)},
                 output=tmp_path / "out2", energy=False, plots=False, reference_max_frames=30)
    assert r["inputs"]["frames"] == 30


def test_report_text_has_words_not_dicts_or_ids_and_records_versions_and_seeds(tmp_path):
    p, top, ref, cg, cand = _many_frames(tmp_path, 5)
    r = evaluate(cg=cg, mapping=p["map"], topology=p["top"], reference=ref, candidates={"c": str(cand)},
                 baselines=["rigid", "random"], output=tmp_path / "out", energy=False, seed=7)
    md = (tmp_path / "out" / "report.md").read_text()
    for bad in ("{", "}", "': ", "['", "heavy_atom_torsions", "all_terms", "all_molecule_terms", "type_index", "None"):
        assert bad not in md, f"report.md contains {bad!r}"
    assert "heavy-atom torsions" in md or "all terms" in md
    assert "Baseline: atoms at their home bead" in md and "seed 7" in md
    st = json.loads((tmp_path / "out" / "report.json").read_text())["settings"]
    assert st["versions"]["multiscale"] and st["versions"]["numpy"]
    assert set(st["seeds"].values()) == {7} and "rigid baseline" in st["seeds"]
    assert "## Software, settings and seeds" in md and "multiscale " in md and "GROMACS" in md
    assert r["candidates"]["c"]["jsd_excess_max"] is not None


def test_plots_have_units_sample_sizes_floor_and_their_own_ranges():
    rng = np.random.default_rng(0)
    data = {"n_frames": 1, "n_frames_reference": 51, "seed": 0, "terms": [
        {"moltype": "HPO", "kind": "angle", "name": "C2-C3-C4", "jsd": 0.16, "jsd_floor": 0.05, "jsd_excess": 0.11,
         "reference": np.radians(rng.normal(114, 4, 2040)), "candidate": np.radians(rng.normal(114, 5, 40))},
        {"moltype": "HPO", "kind": "torsion", "name": "C1-C2-C3-C4", "jsd": 0.1, "jsd_floor": 0.08, "jsd_excess": 0.02,
         "reference": rng.uniform(-np.pi, np.pi, 2040), "candidate": rng.uniform(-np.pi, np.pi, 40)},
        {"moltype": "HPO", "kind": "bond", "name": "C1-C2", "jsd": 0.1, "jsd_floor": 0.05, "jsd_excess": 0.05,
         "reference": rng.normal(0.153, 0.003, 2040), "candidate": rng.normal(0.153, 0.003, 40)}]}
    fig = R.figure("ours", data)
    ang, tor, bond = fig.axes[:3]
    assert ang.get_xlabel() == "angle C2-C3-C4 (°)" and ang.get_ylabel() == "probability density (1/°)"
    lo, hi = ang.get_xlim()
    assert 0 <= lo < 114 < hi <= 180
    assert tor.get_xlim() == (-180, 180) and tor.get_xlabel().endswith("(°)")
    assert bond.get_xlabel() == "bond C1-C2 (nm)" and bond.get_ylabel() == "probability density (1/nm)"
    labels = [t.get_text() for t in ang.get_legend().get_texts()]
    assert any("noise floor" in t and "n = 40" in t for t in labels)
    assert any(t.startswith("reference (n = 2,040, 51 frames)") for t in labels)
    assert any(t.startswith("ours (n = 40, 1 frame)") for t in labels)
    assert "floor 0.050" in ang.get_title() and "excess +0.110" in ang.get_title()
    assert any(c.__class__.__name__ == "FillBetweenPolyCollection" or hasattr(c, "get_paths") for c in ang.collections)


def test_energy_input_is_the_measured_coordinates_for_every_candidate(tmp_path, monkeypatch):
    """Files and baselines alike: the first frame rounded to the 0.001 nm grid the report measures."""
    import multiscale.evaluate.energy as E

    seen = {}

    def fake(positions, box, topology, top_path, workdir, **kw):
        seen[workdir.name] = np.asarray(positions, float)
        return {"energy_note": "recorded"}

    monkeypatch.setattr(E, "energy_criteria", fake)
    p, top, ref, cg, cand = _many_frames(tmp_path, 3)
    evaluate(cg=cg, mapping=p["map"], topology=p["top"], reference=ref, candidates={"c": str(cand)},
             baselines=["rigid"], output=tmp_path / "out", energy=True, plots=False, seed=2)
    assert set(seen) == {"c", "rigid"}
    for name, x in seen.items():
        assert np.allclose(x / RUN.COORD_PRECISION, np.round(x / RUN.COORD_PRECISION), atol=1e-6), name

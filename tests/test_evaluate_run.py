"""`multiscale evaluate` end to end on tiny written systems with known answers."""

import json
import shutil
import sys
import textwrap

import numpy as np
import pytest

from conftest import write_toy
from multiscale.cli import main
from multiscale.errors import MultiscaleError
from multiscale.evaluate.run import evaluate
from multiscale.io import write_frames
from multiscale.mapping import load_mapping
from multiscale.topology import load_topology

CHX_TOP = textwrap.dedent(
    """
    [ defaults ]
    1 2 yes 0.5 0.8333
    [ atomtypes ]
    c3 12.011 0.0 A 0.34 0.45
    hc 1.008 0.0 A 0.26 0.06
    f 18.998 0.0 A 0.30 0.25
    cl 35.45 0.0 A 0.34 1.1
    br 79.904 0.0 A 0.36 1.3
    [ moleculetype ]
    CHX 3
    [ atoms ]
    1 c3 1 CHX C 1 0.0 12.011
    2 hc 1 CHX H 1 0.0 1.008
    3 f 1 CHX F 1 0.0 18.998
    4 cl 1 CHX CL 1 0.0 35.45
    5 br 1 CHX BR 1 0.0 79.904
    [ bonds ]
    1 2 1 0.109 300000
    1 3 1 0.135 300000
    1 4 1 0.177 200000
    1 5 1 0.194 200000
    [ system ]
    chiral
    [ molecules ]
    CHX {n}
    """
)
CHX_MAP = "[ molecule ]\nCHX\n[ martini ]\nA B\n[ atoms ]\n1 C A\n2 H A\n3 F A\n4 CL B\n5 BR B\n"
CHX_MOL = np.array([[0, 0, 0], [0.06, 0.06, 0.06], [0.078, -0.078, -0.078], [-0.102, 0.102, -0.102], [-0.112, -0.112, 0.112]])


def _rot(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def _beads(top, mp, x):
    """CG beads of one frame (N, 3) -> (B, 3); water: COM of consecutive groups of 4."""
    out = []
    for b in top.blocks:
        mt = b.moltype
        v = x[b.start:b.stop].reshape(b.count, mt.n_atoms, 3)
        if mt.is_water:
            com = np.einsum("wak,a->wk", v, mt.masses / mt.masses.sum())
            out.append(com.reshape(-1, 4, 3).mean(1))
        else:
            out.append(np.einsum("ba,mak->mbk", mp.for_moltype(mt).matrix(mt), v).reshape(-1, 3))
    return np.concatenate(out)


def _write(path, top, x, box):
    write_frames(path, x, box, top.per_atom("atom_names"), top.per_atom("resnames"), top.resids())
    return path


def _write_cg(path, top, mp, x, box):
    names, resn, resid, r = [], [], [], 0
    for b in top.blocks:
        mt = b.moltype
        if mt.is_water:
            for _ in range(b.count // 4):
                r += 1
                names.append("W"), resn.append("W"), resid.append(r)
        else:
            mm = mp.for_moltype(mt)
            for _ in range(b.count):
                r += 1
                names += mm.beads
                resn += [mm.cg_name] * mm.n_beads
                resid += [r] * mm.n_beads
    write_frames(path, _beads(top, mp, x), box, names, resn, resid)
    return path


def _toy_system(tmp_path, box=3.2):
    """3 TOY molecules + 8 waters in two compact 4-water clusters, well separated."""
    p = write_toy(tmp_path, 3, 8)
    top, mp = load_topology(p["top"]), load_mapping(p["map"])
    mol = np.array([[0, 0, 0], [0.153, 0, 0], [0.204, 0.144, 0], [0.347, 0.144, 0], [0.38, 0.235, 0]])
    wat = np.array([[0, 0, 0], [0.0957, 0, 0], [-0.024, 0.0927, 0]])
    tet = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) * 0.1
    xs = [mol + [0.5, 0.5 + 0.8 * i, 0.5] for i in range(3)]
    for c in ([2.2, 0.8, 2.0], [2.2, 2.2, 1.0]):
        xs += [wat + c + t for t in tet]
    x = np.round(np.concatenate(xs), 3)
    return p, top, mp, x, np.array([box] * 3)


def test_shifted_candidate_cg_rmsd_equals_shift(tmp_path):
    p, top, mp, x, box = _toy_system(tmp_path)
    cg = _write_cg(tmp_path / "cg.gro", top, mp, x, box)
    ref = _write(tmp_path / "ref.gro", top, x, box)
    cand = _write(tmp_path / "cand.gro", top, x + [0.03, 0, 0], box)
    r = evaluate(cg=cg, mapping=p["map"], topology=p["top"], reference=ref, candidates={"shifted": str(cand), "same": str(ref)},
                 output=tmp_path / "out", energy=False)
    c = r["candidates"]["shifted"]
    assert c["cg_rmsd_nm"] == pytest.approx(0.03, abs=2e-3)
    assert c["cg_rmsd_molecules_nm"] == pytest.approx(0.03, abs=2e-3)
    assert c["cg_rmsd_water_nm"] == pytest.approx(0.03, abs=2e-3)
    assert c["jsd_max"] == 0.0 and c["jsd_mean"] == 0.0 and c["worst_term"].startswith("TOY torsion")
    assert c["clashes_inter"] == 0 and c["clashes_intra"] == 0 and c["ring_penetrations"] == 0
    assert r["candidates"]["same"]["cg_rmsd_nm"] < 2e-3
    # files: JSON with the stable keys, Markdown with both candidates side by side, plots
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["schema_version"] == 1
    for key in ("jsd_max", "jsd_mean", "worst_term", "wasserstein_mean", "cg_rmsd_nm", "stereo_fraction",
                "cis_trans_fraction", "clashes_inter", "clashes_intra", "ring_penetrations",
                "energy_single_point_kj_mol", "em_steps", "em_final_kj_mol", "nvt_stable", "time_s",
                "peak_mem_mb", "unmatched_atoms"):
        assert key in data["candidates"]["shifted"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| criterion | `shifted` | `same` |" in md
    assert (tmp_path / "out" / "plots" / "shifted_worst_terms.png").stat().st_size > 1000


def test_triclinic_box_shifted_candidate(tmp_path):
    """Rhombic dodecahedron: a candidate moved by 0.03 nm and one lattice vector scores 0.03 nm CG RMSD."""
    p, top, mp, x, _ = _toy_system(tmp_path)
    d = 3.2
    box = np.array([[[d, 0, 0], [0, d, 0], [d / 2, d / 2, d * np.sqrt(2) / 2]]])
    cg = _write_cg(tmp_path / "cg.gro", top, mp, x, box)
    ref = _write(tmp_path / "ref.gro", top, x, box)
    cand = _write(tmp_path / "cand.gro", top, x + [0.03, 0, 0] + box[0, 2], box)
    r = evaluate(cg=cg, mapping=p["map"], topology=p["top"], reference=ref, candidates={"shifted": str(cand)},
                 output=tmp_path / "out", energy=False)
    c = r["candidates"]["shifted"]
    assert c["cg_rmsd_nm"] == pytest.approx(0.03, abs=2e-3)
    assert c["cg_rmsd_water_nm"] == pytest.approx(0.03, abs=2e-3)
    assert c["clashes_inter"] == 0 and c["clashes_intra"] == 0 and c["jsd_max"] == 0.0


def test_water_scored_with_the_tools_grouping_when_known(tmp_path):
    """Two W beads whose outer waters sit nearer the other bead: the optimal assignment regroups
    them (non-zero deviation); the tool's own grouping (order) reproduces both beads exactly."""
    p, top, mp, x, box = _toy_system(tmp_path)
    wat = np.array([[0, 0, 0], [0.0957, 0, 0], [-0.024, 0.0927, 0]])
    a = [(-0.2, 0, 0), (-0.2, 0.3, 0), (-0.2, 0, 0.3), (0.35, 0.15, 0.15)]
    b = [(0.55, 0, 0), (0.55, 0.3, 0), (0.55, 0, 0.3), (0.15, 0.15, 0.15)]
    x = x.copy()
    x[15:] = np.round(np.concatenate([wat + np.add(c, [2.0, 1.5, 1.5]) for c in a + b]), 3)
    cg = _write_cg(tmp_path / "cg.gro", top, mp, x, box)
    cand = _write(tmp_path / "cand.gro", top, x, box)
    r = evaluate(cg=cg, mapping=p["map"], topology=p["top"], candidates={"tool": str(cand), "anon": str(cand)},
                 water_grouping={"tool": "order"}, output=tmp_path / "out", energy=False, plots=False)
    tool, anon = r["candidates"]["tool"], r["candidates"]["anon"]
    assert tool["cg_water_grouping"] == "order" and anon["cg_water_grouping"] == "assignment"
    assert tool["cg_rmsd_water_nm"] < 2e-3 < 0.05 < anon["cg_rmsd_water_nm"]
    with pytest.raises(MultiscaleError, match="water-grouping"):
        evaluate(cg=cg, mapping=p["map"], topology=p["top"], candidates={"tool": str(cand)},
                 water_grouping={"tool": "nearest"}, output=tmp_path / "out2", energy=False)


def test_bare_xtc_reference_and_candidate_in_topology_order(tmp_path):
    """No structure for a .xtc: atoms are taken in topology order (names from the topology)."""
    p, top, mp, x, box = _toy_system(tmp_path)
    cg = _write_cg(tmp_path / "cg.gro", top, mp, x, box)
    traj = np.stack([x, x + 0.001, x - 0.001])
    ref = _write(tmp_path / "ref.xtc", top, traj, np.stack([box] * 3))
    cand = _write(tmp_path / "cand.xtc", top, x + [0.03, 0, 0], box)
    r = evaluate(cg=cg, mapping=p["map"], topology=p["top"], reference=ref, candidates={"c": str(cand)},
                 output=tmp_path / "out", energy=False, plots=False)
    assert r["inputs"]["frames"] == 3
    assert r["candidates"]["c"]["cg_rmsd_nm"] == pytest.approx(0.03, abs=2e-3)
    assert r["candidates"]["c"]["unmatched_atoms"]["missing"] == 0
    # a bare .xtc of another system: one line, no traceback
    wrong = tmp_path / "wrong.xtc"
    write_frames(wrong, x[:-3], box, top.per_atom("atom_names")[:-3], top.per_atom("resnames")[:-3], top.resids()[:-3])
    with pytest.raises(MultiscaleError, match="topology order"):
        evaluate(cg=cg, mapping=p["map"], topology=p["top"], candidates={"c": str(wrong)}, output=tmp_path / "o2", energy=False)
    rc = main(["evaluate", "--cg", str(cg), "--mapping", str(p["map"]), "--topology", str(p["top"]), "--candidate",
               f"c={wrong}", "--no-energy", "--output", str(tmp_path / "o3"), "--quiet"])
    assert rc == 2


def _chx(tmp_path, n=6, frames=3, box=3.0, seed=0):
    (tmp_path / "chx.top").write_text(CHX_TOP.format(n=n))
    (tmp_path / "chx.map").write_text(CHX_MAP)
    top, mp = load_topology(tmp_path / "chx.top"), load_mapping(tmp_path / "chx.map")
    rng = np.random.default_rng(seed)
    grid = np.array([[0.5 + 1.0 * (i % 3), 0.7 + 1.2 * (i // 3), 1.5] for i in range(n)])
    traj = np.stack([np.concatenate([CHX_MOL @ _rot(rng) + g for g in grid]) for _ in range(frames)])
    return top, mp, traj, np.array([box] * 3)


def test_mirrored_molecules_have_zero_stereo_fraction(tmp_path):
    top, mp, traj, box = _chx(tmp_path)
    ref = _write(tmp_path / "ref.gro", top, traj, box)
    cg = _write_cg(tmp_path / "cg.gro", top, mp, traj[0], box)
    mirror = traj[0] * [-1, 1, 1] + [box[0], 0, 0]
    cand = _write(tmp_path / "mirror.gro", top, mirror, box)
    r = evaluate(cg=cg, mapping=tmp_path / "chx.map", topology=tmp_path / "chx.top", reference=ref,
                 candidates={"mirror": str(cand)}, baselines=["rigid"], output=tmp_path / "out", energy=False, seed=3)
    assert r["candidates"]["mirror"]["stereo_fraction"] == 0.0
    assert r["candidates"]["mirror"]["n_stereocentres_checked"] == 6
    rigid = r["candidates"]["rigid"]
    assert rigid["stereo_fraction"] == 1.0
    assert rigid["cg_rmsd_nm"] < 1e-3            # the reference conformer fits its own beads exactly
    assert rigid["time_s"] is not None and rigid["time_s"] >= 0


def test_atoms_on_top_of_each_other_are_a_clash(tmp_path):
    top, mp, traj, box = _chx(tmp_path, frames=1)
    x = traj[0].copy()
    x[5 + 2] = x[0] + [0.01, 0, 0]               # F of molecule 2 onto C of molecule 1
    cg = _write_cg(tmp_path / "cg.gro", top, mp, traj[0], box)
    cand = _write(tmp_path / "clash.gro", top, x, box)
    r = evaluate(cg=cg, mapping=tmp_path / "chx.map", topology=tmp_path / "chx.top", candidates={"c": str(cand)},
                 output=tmp_path / "out", energy=False, plots=False)
    c = r["candidates"]["c"]
    assert c["clashes_inter"] >= 1
    assert any("CHX1:C" in e["atoms"] and "CHX2:F" in e["atoms"] for e in c["details"]["steric_examples"])
    assert c["jsd_max"] is None                  # no reference ensemble given


def test_run_command_is_timed(tmp_path):
    p, top, mp, x, box = _toy_system(tmp_path)
    cg = _write_cg(tmp_path / "cg.gro", top, mp, x, box)
    src = _write(tmp_path / "src.gro", top, x, box)
    out = tmp_path / "made.gro"
    cmd = f"{sys.executable} -c \"import shutil, time; time.sleep(0.2); shutil.copy('{src}', '{out}')\""
    r = evaluate(cg=cg, mapping=p["map"], topology=p["top"], candidates={"tool": str(out)}, run={"tool": cmd},
                 output=tmp_path / "out", energy=False)
    c = r["candidates"]["tool"]
    assert c["time_s"] >= 0.2 and c["peak_mem_mb"] > 1 and c["cost_source"].startswith("measured")


def _cli(args, capsys):
    rc = main(["evaluate", "--no-energy", "--quiet", *args])
    return rc, capsys.readouterr().err.strip()


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    p, top, mp, x, box = _toy_system(tmp_path)
    cg = _write_cg(tmp_path / "cg.gro", top, mp, x, box)
    base = ["--mapping", str(p["map"]), "--topology", str(p["top"]), "--output", str(tmp_path / "out")]
    good = _write(tmp_path / "good.gro", top, x, box)

    # CG with the wrong number of beads
    bad_cg = tmp_path / "bad_cg.gro"
    write_frames(bad_cg, np.zeros((3, 3)), box, ["A", "B", "W"], ["TOY", "TOY", "W"], [1, 1, 2])
    rc, err = _cli(["--cg", str(bad_cg), "--candidate", f"a={good}", *base], capsys)
    assert rc != 0 and err.startswith("error:") and "\n" not in err and "TOY" in err

    # candidate with only the 3 TOY molecules (atom count mismatch)
    n = 15
    short = tmp_path / "short.gro"
    write_frames(short, x[:n], box, top.per_atom("atom_names")[:n], top.per_atom("resnames")[:n], top.resids()[:n])
    rc, err = _cli(["--cg", str(cg), "--candidate", f"a={short}", *base], capsys)
    assert rc != 0 and "\n" not in err and "15/39" in err

    # foreign atom names
    foreign = tmp_path / "foreign.gro"
    write_frames(foreign, x, box, [f"Q{i}" for i in range(len(x))], ["XXX"] * len(x), np.arange(len(x)) + 1)
    rc, err = _cli(["--cg", str(cg), "--candidate", f"a={foreign}", *base], capsys)
    assert rc != 0 and "\n" not in err and "matched by residue and atom name" in err

    # empty trajectory
    empty = tmp_path / "empty.xtc"
    empty.write_bytes(b"")
    rc, err = _cli(["--cg", str(cg), "--candidate", f"a={good},{empty}", *base], capsys)
    assert rc != 0 and "\n" not in err and "empty" in err

    # nothing to evaluate / malformed candidate
    with pytest.raises(MultiscaleError, match="nothing to evaluate"):
        evaluate(cg=cg, mapping=p["map"], topology=p["top"], output=tmp_path / "o2")
    rc, err = _cli(["--cg", str(cg), "--candidate", str(good), *base], capsys)
    assert rc != 0 and "NAME=PATH" in err


@pytest.mark.gromacs
@pytest.mark.skipif(shutil.which("gmx") is None, reason="needs the gmx binary")
def test_gromacs_energetics_and_random_baseline(tmp_path):
    p, top, mp, x, box = _toy_system(tmp_path, box=3.2)
    cg = _write_cg(tmp_path / "cg.gro", top, mp, x, box)
    cand = _write(tmp_path / "cand.gro", top, x, box)
    from multiscale.gromacs import GromacsSettings

    r = evaluate(cg=cg, mapping=p["map"], topology=p["top"], reference=cand, candidates={"given": str(cand)},
                 baselines=["random"], output=tmp_path / "out", energy=True, seed=1,
                 gromacs_settings=GromacsSettings(nt=1), energy_options={"nvt_nsteps": 50})
    g = r["candidates"]["given"]
    assert isinstance(g["energy_single_point_kj_mol"], float)
    assert g["em_steps"] is not None and g["em_final_kj_mol"] <= g["energy_single_point_kj_mol"] + 1e-6
    assert g["nvt_stable"] is True
    rnd = r["candidates"]["random"]
    assert rnd["details"]["baseline"]["em"].startswith("standard EM")
    assert rnd["em_steps"] is not None


BEN_TOP = textwrap.dedent(
    """
    [ defaults ]
    1 2 yes 0.5 0.8333
    [ atomtypes ]
    ca 12.011 0.0 A 0.34 0.36
    ha 1.008 0.0 A 0.26 0.06
    OW 15.999 0.0 A 0.315 0.636
    HW 1.008 0.0 A 0.0 0.0
    [ moleculetype ]
    BEN 3
    [ atoms ]
    1 ca 1 BEN C1 1 0.0 12.011
    2 ca 1 BEN C2 1 0.0 12.011
    3 ca 1 BEN C3 1 0.0 12.011
    4 ca 1 BEN C4 1 0.0 12.011
    5 ca 1 BEN C5 1 0.0 12.011
    6 ca 1 BEN C6 1 0.0 12.011
    [ bonds ]
    1 2 1 0.14 300000
    2 3 1 0.14 300000
    3 4 1 0.14 300000
    4 5 1 0.14 300000
    5 6 1 0.14 300000
    6 1 1 0.14 300000
    [ moleculetype ]
    SOL 2
    [ atoms ]
    1 OW 1 SOL OW 1 -0.834 15.999
    2 HW 1 SOL HW1 1 0.417 1.008
    3 HW 1 SOL HW2 1 0.417 1.008
    [ settles ]
    1 1 0.09572 0.15139
    [ system ]
    ring
    [ molecules ]
    BEN 1
    SOL 4
    """
)
BEN_MAP = "[ molecule ]\nBEN\n[ martini ]\nR1 R2 R3\n[ atoms ]\n1 C1 R1\n2 C2 R1\n3 C3 R2\n4 C4 R2\n5 C5 R3\n6 C6 R3\n"


def test_water_bond_through_benzene_ring_is_one_penetration(tmp_path):
    (tmp_path / "ben.top").write_text(BEN_TOP)
    (tmp_path / "ben.map").write_text(BEN_MAP)
    top, mp = load_topology(tmp_path / "ben.top"), load_mapping(tmp_path / "ben.map")
    box = np.array([3.0, 3.0, 3.0])
    a = np.arange(6) * np.pi / 3
    ring = np.stack([1.5 + 0.14 * np.cos(a), 1.5 + 0.14 * np.sin(a), np.full(6, 1.5)], 1)
    wat = np.array([[0, 0, 0], [0.0957, 0, 0], [-0.024, 0.0927, 0]])
    through = np.array([[1.51, 1.5, 1.45], [1.51, 1.5, 1.5457], [1.6, 1.5, 1.43]])   # O below, HW1 above the ring
    x = np.concatenate([ring, through] + [wat + [0.4, 0.4 + 0.5 * k, 0.4] for k in range(3)])
    cg = _write_cg(tmp_path / "cg.gro", top, mp, x, box)
    cand = _write(tmp_path / "cand.gro", top, x, box)
    r = evaluate(cg=cg, mapping=tmp_path / "ben.map", topology=tmp_path / "ben.top", candidates={"c": str(cand)},
                 output=tmp_path / "out", energy=False, plots=False)
    c = r["candidates"]["c"]
    assert c["ring_penetrations"] == 1
    ex = [e for e in c["details"]["steric_examples"] if e["kind"] == "ring"]
    assert ex and ex[0]["ring"].startswith("BEN") and "SOL2:OW - SOL2:HW1" == ex[0]["atoms"]

"""Pre-flight checks (mapping <-> AA topology <-> CG itp, masses/charges) and the failing
GROMACS stage's log, on real files: vermouth's TOLU mapping (beads R2 R1 R3) against its
Martini 3 itp (R1 R2 R3), a hand-written toluene topology, the heptanol example, real gmx."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from multiscale.errors import MultiscaleError

HERE = Path(__file__).resolve()
MARTINI = HERE.parents[1] / "src" / "multiscale" / "data" / "topologies" / "martini3"

# toluene, CHARMM names: ring CZ CE1 CD1 CG CD2 CE2, methyl CT H11 H12 H13, ring hydrogens
RING = ["CZ", "CE1", "CD1", "CG", "CD2", "CE2"]
RING_H = [None, "HE1", "HD1", "HG", "HD2", "HE2"]


def toluene_top(folder: Path, ct_charge: float = -0.27, h_mass: float = 1.008, name_ct: str = "CT") -> Path:
    """A self-contained toluene .top (own atom types) and a .gro with one molecule."""
    atoms, xyz = [], []
    atoms.append((name_ct, "CT", ct_charge, 12.011))
    xyz.append((0.290, 0.0, 0.0))
    for k, h in enumerate(("H11", "H12", "H13")):
        a = 2 * np.pi * k / 3
        atoms.append((h, "HC", 0.09, h_mass))
        xyz.append((0.326, 0.09 * np.cos(a), 0.09 * np.sin(a)))
    for i, c in enumerate(RING):
        a = np.pi / 3 * i
        atoms.append((c, "CA", 0.0 if i == 0 else -0.115, 12.011))
        xyz.append((0.140 * np.cos(a), 0.140 * np.sin(a), 0.0))
        if RING_H[i]:
            atoms.append((RING_H[i], "HA", 0.115, h_mass))
            xyz.append((0.248 * np.cos(a), 0.248 * np.sin(a), 0.0))
    idx = {a[0]: i + 1 for i, a in enumerate(atoms)}
    bonds = [(name_ct, "CZ"), (name_ct, "H11"), (name_ct, "H12"), (name_ct, "H13")]
    bonds += [(RING[i], RING[(i + 1) % 6]) for i in range(6)] + [(RING[i], RING_H[i]) for i in range(1, 6)]
    lines = ["[ defaults ]", "1 2 yes 0.5 0.8333", "", "[ atomtypes ]",
             "CT 6 12.011 0.0 A 0.350 0.276", "CA 6 12.011 0.0 A 0.355 0.293",
             "HC 1 1.008 0.0 A 0.250 0.125", "HA 1 1.008 0.0 A 0.242 0.125", "",
             "[ moleculetype ]", "TOLU 3", "", "[ atoms ]"]
    lines += [f"{i + 1} {t} 1 TOLU {n} {i + 1} {q:.4f} {m}" for i, (n, t, q, m) in enumerate(atoms)]
    lines += ["", "[ bonds ]"] + [f"{idx[a]} {idx[b]} 1 0.14 300000" for a, b in bonds]
    lines += ["", "[ system ]", "toluene", "", "[ molecules ]", "TOLU 1", ""]
    (folder / "tolu.top").write_text("\n".join(lines))
    gro = ["toluene", f"{len(atoms)}"]
    gro += [f"{1:5d}{'TOLU':<5s}{n:>5s}{i + 1:5d}{x + 1.5:8.3f}{y + 1.5:8.3f}{z + 1.5:8.3f}"
            for i, ((n, *_), (x, y, z)) in enumerate(zip(atoms, xyz))]
    gro.append(f"{3.0:10.5f}{3.0:10.5f}{3.0:10.5f}")
    (folder / "tolu.gro").write_text("\n".join(gro) + "\n")
    return folder / "tolu.top"


@pytest.fixture(scope="module")
def tolu(tmp_path_factory):
    """vermouth's tolu.charmm36.map (beads R2 R1 R3) and its Martini 3 TOLU itp (R1 R2 R3)."""
    import vermouth
    from vermouth.forcefield import get_native_force_field
    from vermouth.gmx.itp import write_molecule_itp

    d = tmp_path_factory.mktemp("tolu")
    src = Path(vermouth.__file__).parent / "data" / "mappings" / "martini3001" / "tolu.charmm36.map"
    shutil.copy(src, d / "tolu.map")
    mol = get_native_force_field("martini3001").blocks["TOLU"].to_molecule()
    with open(d / "TOLU.itp", "w") as f:
        write_molecule_itp(mol, f, moltype="TOLU")
    toluene_top(d)
    return d


def test_tolu_bead_order_taken_from_the_itp(tolu):
    from multiscale.mapping import load_mapping
    from multiscale.preflight import load_checked_mapping
    from multiscale.topology import load_topology

    top = load_topology(tolu / "tolu.top")
    notes: list[str] = []
    m = load_checked_mapping([tolu / "tolu.map"], top, [MARTINI / "martini_v3.0.0.itp", tolu / "TOLU.itp"], note=notes.append)
    orig = load_mapping(tolu / "tolu.map").molecules["TOLU"]
    assert orig.beads == ["R2", "R1", "R3"]
    mm = m.molecules["TOLU"]
    assert mm.beads == ["R1", "R2", "R3"]
    mt = top.moltypes["TOLU"]
    np.testing.assert_allclose(mm.matrix(mt), orig.matrix(mt)[[1, 0, 2]])  # same weights, rows reordered
    reorder = [n for n in notes if "R2 R1 R3" in n]
    assert len(reorder) == 1 and "R1 R2 R3" in reorder[0] and "TOLU.itp" in reorder[0], notes
    hyd = [n for n in notes if "hydrogens" in n]
    assert len(hyd) == 1 and "HE1 HG HE2" in hyd[0] and hyd[0].startswith("note: TOLU:"), notes


def test_coarse_grain_cli_writes_the_itp_order(tolu, tmp_path, capsys):
    from multiscale.cli import main
    from multiscale.io import read_frames
    from multiscale.mapping import load_mapping
    from multiscale.topology import load_topology

    out = tmp_path / "cg.gro"
    rc = main(["coarse-grain", "--topology", str(tolu / "tolu.top"), "--structure", str(tolu / "tolu.gro"),
               "--mapping", str(tolu / "tolu.map"), "--output", str(out), "--include", str(tolu / "TOLU.itp"),
               "--cg-topology", str(tmp_path / "cg.top")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "R2 R1 R3" in err and "HE1 HG HE2" in err
    fr = read_frames(out)
    assert list(fr.names) == ["R1", "R2", "R3"]
    top = load_topology(tolu / "tolu.top")
    x = read_frames(tolu / "tolu.gro").positions[0]
    orig = load_mapping(tolu / "tolu.map").molecules["TOLU"]
    want = orig.matrix(top.moltypes["TOLU"]) @ x  # rows R2 R1 R3
    np.testing.assert_allclose(fr.positions[0], want[[1, 0, 2]], atol=2e-3)


def test_wrong_bead_names_one_line_naming_both(tolu, tmp_path, capsys):
    from multiscale.cli import main
    from multiscale.preflight import load_checked_mapping

    itp = tmp_path / "TOLU.itp"
    itp.write_text((tolu / "TOLU.itp").read_text().replace(" R3 ", " R4 "))
    with pytest.raises(MultiscaleError) as e:
        load_checked_mapping([tolu / "tolu.map"], tolu / "tolu.top", [itp])
    msg = str(e.value)
    assert "\n" not in msg and "R2 R1 R3" in msg and "R1 R2 R4" in msg
    assert str(itp) in msg and "tolu.map" in msg
    # the train command stops before reading frames or training: exit 2, one line
    rc = main(["train", "--topology", str(tolu / "tolu.top"), "--structure", str(tolu / "tolu.gro"),
               "--mapping", str(tolu / "tolu.map"), "--include", str(itp), "--output", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "R1 R2 R4" in err, err
    assert not (tmp_path / "m.pt").exists()


def test_bead_count_and_missing_moleculetype(tolu, tmp_path):
    from multiscale.preflight import load_checked_mapping

    itp = tmp_path / "two.itp"
    itp.write_text("[ moleculetype ]\nTOLU 1\n[ atoms ]\n1 SC4 1 TOLU R1 1 0\n2 TC5 1 TOLU R2 2 0\n")
    with pytest.raises(MultiscaleError, match=r"R2 R1 R3 \(3\) but CG moleculetype TOLU in .*two.itp has R1 R2 \(2\)"):
        load_checked_mapping([tolu / "tolu.map"], tolu / "tolu.top", [itp])
    with pytest.raises(MultiscaleError) as e:
        load_checked_mapping([tolu / "tolu.map"], tolu / "tolu.top", [MARTINI / "martini_v3.0.0.itp",
                                                                      MARTINI / "martini_v3.0.0_solvents_v1.itp"])
    msg = str(e.value)
    assert "CG moleculetype TOLU" in msg and "martini_v3.0.0_solvents_v1.itp" in msg and "\n" not in msg


def test_mapping_atoms_the_topology_lacks(tolu, tmp_path):
    from multiscale.preflight import load_checked_mapping

    toluene_top(tmp_path, name_ct="C7")
    with pytest.raises(MultiscaleError) as e:
        load_checked_mapping([tolu / "tolu.map"], tmp_path / "tolu.top", [tolu / "TOLU.itp"])
    msg = str(e.value)
    assert "atom CT of TOLU is not in topology moleculetype TOLU" in msg and "C7 H11" in msg and "\n" not in msg


def test_unmapped_heavy_atom_is_an_error(tolu, tmp_path):
    from multiscale.preflight import load_checked_mapping

    (tmp_path / "tolu.map").write_text((tolu / "tolu.map").read_text().replace("1 CT R1\n", ""))
    with pytest.raises(MultiscaleError, match="heavy atom.s. CT are not in mapping"):
        load_checked_mapping([tmp_path / "tolu.map"], tolu / "tolu.top", [tolu / "TOLU.itp"])


def test_non_integer_charge_and_masses(tolu, tmp_path, capsys):
    from multiscale.cli import main
    from multiscale.preflight import check_masses_charges
    from multiscale.topology import MoleculeType, SystemTopology, load_topology

    toluene_top(tmp_path, ct_charge=-0.25)
    rc = main(["coarse-grain", "--topology", str(tmp_path / "tolu.top"), "--structure", str(tolu / "tolu.gro"),
               "--mapping", str(tolu / "tolu.map"), "--output", str(tmp_path / "cg.gro")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "moleculetype TOLU has net charge 0.0200 e" in err, err
    assert not (tmp_path / "cg.gro").exists()
    hmr = tmp_path / "hmr"
    hmr.mkdir()
    assert check_masses_charges(load_topology(toluene_top(hmr, h_mass=3.024))) == []  # HMR is fine
    toluene_top(hmr, h_mass=5.0)
    found = check_masses_charges(load_topology(hmr / "tolu.top"))
    assert len(found) == 1 and "hydrogen(s) H11 (5)" in found[0].message

    def mt(masses, bonds):
        n = len(masses)
        return MoleculeType("X", tuple(f"A{i}" for i in range(n)), ("X",) * n, ("O", "H", "H", "X")[:n],
                            np.array(masses, float), np.zeros(n), np.array(bonds, int).reshape(-1, 2))

    vsite = SystemTopology([], moltypes={"X": mt([16.0, 1.008, 1.008, 0.0], [(0, 1), (0, 2)])})
    assert check_masses_charges(vsite) == []  # mass 0 on an unbonded virtual site
    bonded = SystemTopology([], moltypes={"X": mt([16.0, 1.008, 1.008, 0.0], [(0, 1), (0, 2), (0, 3)])})
    (f,) = check_masses_charges(bonded)
    assert "A3 (0) have no mass but are bonded" in f.message


# ------------------------------------------------------------------------------------------
# the cycle: checks before the first stage; the coarse-grain stage uses the itp's order


def _heptanol(tmp_path, beads: str) -> Path:
    from multiscale.workflow.init import init_example

    cfg = init_example("heptanol", tmp_path / "run")
    m = cfg.parent / "heptanol.map"
    m.write_text(m.read_text().replace("[ martini ]\nC1 R2\n", f"[ martini ]\n{beads}\n"))
    return cfg


def test_cycle_stops_before_any_stage_on_wrong_beads(tmp_path):
    from multiscale.workflow.cycle import run_cycles

    cfg = _heptanol(tmp_path, "C1 R3")
    (cfg.parent / "heptanol.map").write_text((cfg.parent / "heptanol.map").read_text().replace("  R2\n", "  R3\n"))
    with pytest.raises(MultiscaleError) as e:
        run_cycles(cfg, progress=False)
    assert "C1 R3" in str(e.value) and "C1 R2" in str(e.value) and "martini_v3.0.0_solvents_v1.itp" in str(e.value)
    assert not (cfg.parent / "runs").exists()  # nothing ran, nothing written


def test_cycle_coarse_grain_stage_uses_the_itp_order(tmp_path):
    from multiscale.config import load_config
    from multiscale.io import read_frames
    from multiscale.workflow.cycle import build_plan, preflight_plan
    from multiscale.workflow.stages import StageContext

    cfg = load_config(_heptanol(tmp_path, "R2 C1"))
    notes: list[str] = []
    plan = build_plan(cfg, cfg.output)
    preflight_plan(cfg, plan, note=notes.append)
    assert any("R2 C1" in n and "C1 R2" in n for n in notes), notes
    train = next(s for s in plan if s.name == "train")
    assert any(k.startswith("cg_include ") for k in train.inputs)  # the itps fix the model's bead order
    st = next(s for s in plan if s.name == "coarse-grain")
    st.inputs["aa_structure"] = cfg.system.aa_structure  # instead of aa-md's output: no MD here
    ctx = StageContext(config=cfg, root=cfg.output, settings=None, seed=1, log=st.log)
    st.run(ctx)
    fr = read_frames(st.outputs["gro"])
    assert list(fr.names[:4]) == ["C1", "R2", "C1", "R2"]
    assert "using the itp's order" in st.log.read_text()


# ------------------------------------------------------------------------------------------
# a failing grompp names the log that exists


def bad_names_pipeline(cfg, root, replica=None):
    """One cg-em stage on a W box whose structure names do not match the topology."""
    from multiscale.workflow.stages import MdrunStage

    return [MdrunStage(name="cg-em", cycle=1, workdir=root / "cycle_001" / "cg-em", template="martini_em",
                       values={"nsteps": 10, "emtol": 100, "define": ""}, structure=cfg.system.aa_structure,
                       topology=cfg.system.aa_topology, minimisation=True, resolution="cg", description="EM")]


@pytest.mark.skipif(shutil.which("gmx") is None, reason="needs gmx on PATH")
def test_failing_grompp_names_an_existing_log(tmp_path, monkeypatch, capsys):
    import re

    from multiscale.workflow.cycle import run_cycles

    n, a = 6, 0.5
    rows = [f"{i + 1:5d}{'W':<5s}{'X':>5s}{i + 1:5d}{(x + .5) * a:8.3f}{(y + .5) * a:8.3f}{(z + .5) * a:8.3f}"
            for i, (x, y, z) in enumerate(itertools.product(range(n), repeat=3))]
    (tmp_path / "w.gro").write_text("\n".join(["W box, bead names X", str(n**3), *rows, f"{n * a:10.5f}" * 3]) + "\n")
    (tmp_path / "w.top").write_text(f'#include "{MARTINI}/martini_v3.0.0.itp"\n#include "{MARTINI}/martini_v3.0.0_solvents_v1.itp"\n'
                                    f"[ system ]\nW box\n[ molecules ]\nW {n**3}\n")
    (tmp_path / "w.map").write_text("; nothing to map\n")
    (tmp_path / "sim.yaml").write_text("system:\n  aa_topology: w.top\n  aa_structure: w.gro\n  cg_topology: w.top\n"
                                       "  mappings: [w.map]\ngromacs: {nt: 1}\n")
    monkeypatch.setenv("MULTISCALE_PIPELINE", f"{HERE}:bad_names_pipeline")
    with pytest.raises(MultiscaleError) as e:
        run_cycles(tmp_path / "sim.yaml", progress=False)
    msg = str(e.value)
    assert "gmx grompp failed" in msg and "\n" not in msg
    named = [Path(p) for p in re.findall(r"(/\S+\.log)", msg)]
    assert named and all(p.is_file() for p in named), msg
    printed = re.search(r"full log: (\S+)", capsys.readouterr().out)
    assert printed and Path(printed.group(1)).is_file() and printed.group(1).endswith("cg-em.grompp.log")
    rec = json.loads((tmp_path / "runs" / "state.json").read_text())["stages"]["cycle_001/cg-em"]
    assert (tmp_path / "runs" / rec["log"]).is_file() and rec["status"] == "failed"

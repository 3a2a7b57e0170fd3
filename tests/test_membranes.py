"""``multiscale topology --cg-topology``: a Martini membrane system's CHARMM36 topology (lipids, water, ions)."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import fetched_forcefields


@pytest.fixture(scope="module")
def cache():
    return fetched_forcefields(["charmm36", "charmm36-lipids"])


def _cli(*args, cwd):
    exe = Path(sys.executable).parent / "multiscale"
    return subprocess.run([str(exe), *map(str, args)], cwd=cwd, capture_output=True, text=True)


CG_TOP = """#include "martini_v3.0.0.itp"
#include "martini_v3.0.0_phospholipids_v1.itp"

[ system ]
insane bilayer

[ molecules ]
; name  number
POPC     3
POPC     1
CHOL     2
W       10
NA+      1
CL-      2
"""


def test_insane_style_topology_becomes_charmm36(cache, tmp_path):
    from multiscale.membranes import lipid_table
    from multiscale.topology import load_topology

    (tmp_path / "cg.top").write_text(CG_TOP)
    r = _cli("topology", "--cg-topology", "cg.top", "--output", "aa/aa.top", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from multiscale.forcefields import CHARMM36_FF, charmm36_gmxlib

    assert {p.name for p in (tmp_path / "aa").iterdir()} == {"aa.top", "POPC.itp", "CHL1.itp", CHARMM36_FF}
    link = tmp_path / "aa" / CHARMM36_FF  # a link to the fetched port (GPL: never copied), for grompp
    assert link.is_symlink() and link.resolve() == (charmm36_gmxlib() / CHARMM36_FF).resolve()
    top = load_topology(tmp_path / "aa" / "aa.top")
    assert [(b.moltype.name, b.count) for b in top.blocks] == [("POPC", 4), ("CHL1", 2), ("SOL", 40), ("SOD", 1), ("CLA", 2)]
    assert top.blocks[0].moltype.n_atoms == 134 and top.blocks[1].moltype.n_atoms == 74
    assert lipid_table()["CHOL"] == "CHL1" and lipid_table()["POPC"] == "POPC"


def test_unknown_cg_molecule_is_one_line(cache, tmp_path):
    (tmp_path / "cg.top").write_text(CG_TOP.replace("CHOL     2", "XLIP     2"))
    r = _cli("topology", "--cg-topology", "cg.top", "--output", "aa.top", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "molecule XLIP is not a Martini lipid with a mapping file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "aa.top").exists()
    (tmp_path / "x.top").write_text("[ system ]\nx\n")
    r = _cli("topology", "--cg-topology", "x.top", "--output", "aa.top", cwd=tmp_path)
    assert r.returncode == 2 and "has no [ molecules ] rows" in r.stderr


@pytest.mark.gromacs
def test_membrane_protein_from_cg_alone(cache, tmp_path):
    """A martinize2-bead helix inserted by insane into a POPC bilayer with W and NaCl: `multiscale topology
    --cg-topology --cg` gives the protein its CHARMM36m moleculetype (pdb2gmx) next to the CHARMM36
    lipids, water and ions; `multiscale backmap` with the shipped chain and lipid models places every
    atom on its bead; grompp accepts the system and a restrained EM converges."""
    pytest.importorskip("insane")
    from multiscale.chains.peptides import build_peptide_pdb, pdb2gmx
    from multiscale.io import read_frames

    build_peptide_pdb("GLLKLLALLKLLAG", tmp_path / "heavy.pdb", conformation="helix")
    pdb2gmx(tmp_path / "heavy.pdb", tmp_path, forcefield="amber99sb-ildn")
    subprocess.run(["gmx", "editconf", "-f", "protein.gro", "-o", "boxed.gro", "-d", "1.5", "-c"], cwd=tmp_path,
                   capture_output=True, check=True)
    r = _cli("coarse-grain", "--topology", "topol.top", "--structure", "boxed.gro", "--output", "prot_cg.gro", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", "import sys; from insane.cli import cli; sys.exit(cli())",
                        "-f", "prot_cg.gro", "-o", "cg.gro", "-p", "cg.top", "-l", "POPC", "-x", "4.5", "-y", "4.5", "-z", "7",
                        "-sol", "W", "-salt", "0.15", "-center"], cwd=tmp_path, capture_output=True, text=True,
                       env={"INSANE_SEED": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-500:]
    r = _cli("topology", "--cg-topology", "cg.top", "--cg", "cg.gro", "--output", "aa/aa.top", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    top = (tmp_path / "aa" / "aa.top").read_text()
    assert "Protein_chain_A      1" in top and '#include "POPC.itp"' in top and "SOD" in top
    r = _cli("backmap", "--cg", "cg.gro", "--topology", "aa/aa.top", "--output", "aa/aa.gro", "--seed", "1",
             "--report", "aa/cert.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cert = __import__("json").loads((tmp_path / "aa" / "cert.json").read_text())[0]
    assert cert["max_cg_deviation_nm"] < 1e-6
    assert all(v["stereo_wrong_final"] == 0 and v["cistrans_wrong_final"] == 0 for v in cert["per_moltype"].values())
    assert read_frames(tmp_path / "aa" / "aa.gro").positions.shape[1] > 10000
    # insane's unrelaxed beads hold some lipid atoms within 0.01 nm of another lipid's whatever is drawn;
    # the clashes left are pushed apart (resolve.separate), so none is near an overlap a minimiser cannot start from
    import MDAnalysis as mda
    from MDAnalysis.lib.distances import self_capped_distance

    u = mda.Universe(str(tmp_path / "aa" / "aa.gro"))
    p, _ = self_capped_distance(u.atoms.positions, 0.3, box=u.dimensions)
    assert not (u.atoms.resindices[p[:, 0]] != u.atoms.resindices[p[:, 1]]).any()
    (tmp_path / "aa" / "em.mdp").write_text("integrator = steep\nnsteps = 3000\nemtol = 1000\ndefine = -DDIHRES -DDIHRES_FC=1000.0\n"
                                            "cutoff-scheme = Verlet\nvdw-modifier = Force-switch\nrvdw-switch = 1.0\n"
                                            "rvdw = 1.2\ncoulombtype = PME\nrcoulomb = 1.2\nconstraints = h-bonds\n")
    g = subprocess.run(["gmx", "grompp", "-f", "em.mdp", "-c", "aa.gro", "-p", "aa.top", "-o", "em.tpr", "-maxwarn", "2"],
                       cwd=tmp_path / "aa", capture_output=True, text=True)
    assert g.returncode == 0, g.stderr[-800:]
    m = subprocess.run(["gmx", "mdrun", "-deffnm", "em", "-nt", "2"], cwd=tmp_path / "aa", capture_output=True, text=True)
    assert m.returncode == 0 and "converged to Fmax < 1000" in (tmp_path / "aa" / "em.log").read_text()


def test_lipids_need_charmm36m_for_a_membrane_protein(tmp_path):
    """The structure path refuses lipids with the amber protein force field, in one line."""
    (tmp_path / "cg.gro").write_text("x\n 3\n    1ALA     BB    1   1.000   1.000   1.000\n"
                                     "    2ALA     BB    2   1.300   1.000   1.000\n"
                                     "    3POPC   NC3    3   2.000   2.000   2.000\n   5.0   5.0   5.0\n")
    r = _cli("topology", "--cg", "cg.gro", "--output", "aa.top", "--forcefield", "amber99sb-ildn", cwd=tmp_path)
    assert r.returncode == 2 and "use --forcefield charmm36m" in r.stderr and r.stderr.count("\n") == 1

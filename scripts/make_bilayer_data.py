#!/usr/bin/env python3
"""Build and simulate a CHARMM36 lipid bilayer (TIP3P, 0.15 M NaCl) and its Martini 3 twin, resumably.

--lipids sets the leaflet composition (default POPC; e.g. POPE:5,POPG:5,CHL1:6 per leaflet, the
counts summing to --per-side squared); types are dealt to grid sites at random (--seed), both
leaflets alike in number, and written in blocks of one type each.

Atomistic stages (each skipped when its outputs exist; an interrupted mdrun resumes from its .cpt):
  conformer  compact all-trans conformer per lipid type from stereo SMILES (RDKit; scripts/lipid_conformers.py)
  place      2 x N lipids on a square grid per leaflet (greedy clash-avoiding rotations about z,
             lower leaflet = 180 deg rotation about x, so chirality is kept), box with water layers
  solvate    gmx solvate, waters removed from the hydrophobic slab; gmx genion SOD/CLA at --salt M
  em         steepest descent, P z-restraints + CHARMM-GUI chirality/cis dihedral restraints
  nvt        restrained NVT at --temperature (gen-vel, seed)
  npt        semi-isotropic C-rescale NPT, dihedral restraints only
  prod       unrestrained semi-isotropic NPT; frames every --frame-ps into prod.xtc (training data)
Martini 3 stages (--cg): insane bilayer of the same composition (Martini names from the lipid
mapping files: CHL1 -> CHOL, DLPC -> DUPC; INSANE_SEED), EM, short NPT.

CHARMM36 settings: dt 2 fs, h-bonds LINCS, PME rc 1.2 nm, LJ force-switch 1.0-1.2 nm, no
dispersion correction, 303.15 K v-rescale (MEMB / SOL_ION groups), 1 bar, compressibility 4.5e-5.
Outputs under --out (default $MULTISCALE_CACHE/bilayer_data/POPC_<2N>, outside the repository),
with provenance.json (inputs, versions, seeds, timings, ns/day per stage).

    python scripts/make_bilayer_data.py --quick            # validation: tiny EM + 2 ps per stage
    python scripts/make_bilayer_data.py --npt-ns 20 --prod-ns 100 --nt 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lipid_conformers as lc
import numpy as np

from multiscale import forcefields as ff
from multiscale.errors import MultiscaleError
from multiscale.geometry import kabsch_rotation
from multiscale.io import atomic_write_text
from multiscale.lipid_analysis import stereo_ok

HEAD_ATOMS = ("P", "O3")  # phospholipids; cholesterol
TAIL_ENDS = {"CHL1": ("C26", "C27")}  # glycerolipids: the last carbon of each acyl chain (C2xx, C3xx)


def tail_ends(itp: lc.ItpMolecule) -> list[int]:
    """Atom indices of the tail tips of one lipid (the far end of its long axis)."""
    if itp.name in TAIL_ENDS:
        return [itp.names.index(n) for n in TAIL_ENDS[itp.name]]
    ends = []
    for chain in ("C2", "C3"):
        num = {int(n[2:]): k for k, n in enumerate(itp.names) if re.fullmatch(chain + r"\d+", n)}
        ends.append(num[max(num)])
    return ends


def head_atom(itp: lc.ItpMolecule) -> int:
    return next(itp.names.index(n) for n in HEAD_ATOMS if n in itp.names)


def composition(text: str, per_leaflet: int) -> dict[str, int]:
    """'POPE:5,CHL1:6' -> {'POPE': 5, 'CHL1': 6}; a single name fills the leaflet."""
    parts = [t.split(":") for t in text.split(",") if t.strip()]
    if len(parts) == 1 and len(parts[0]) == 1:
        return {parts[0][0].strip(): per_leaflet}
    comp = {name.strip(): int(n) for name, n in parts}
    if sum(comp.values()) != per_leaflet:
        raise MultiscaleError(f"--lipids {text}: counts sum to {sum(comp.values())}, not --per-side^2 = {per_leaflet}")
    return comp

MDP_AA = """; CHARMM36 lipid settings (force-switch LJ 1.0-1.2 nm, PME 1.2 nm, h-bonds), written by make_bilayer_data.py
define                  = {define}
integrator              = {integrator}
{run}
cutoff-scheme           = Verlet
nstlist                 = 20
rlist                   = 1.2
vdwtype                 = Cut-off
vdw-modifier            = Force-switch
rvdw-switch             = 1.0
rvdw                    = 1.2
coulombtype             = PME
rcoulomb                = 1.2
fourierspacing          = 0.12
DispCorr                = no
constraints             = h-bonds
constraint-algorithm    = LINCS
nstxout                 = 0
nstvout                 = 0
nstxout-compressed      = {nstxtc}
nstenergy               = {nstener}
nstlog                  = {nstener}
"""
MD_AA = """dt                      = 0.002
nsteps                  = {nsteps}
tcoupl                  = V-rescale
tc-grps                 = MEMB SOL_ION
tau-t                   = 1.0 1.0
ref-t                   = {temp} {temp}
pcoupl                  = {pcoupl}
pcoupltype              = semiisotropic
tau-p                   = 5.0
ref-p                   = 1.0 1.0
compressibility         = 4.5e-5 4.5e-5
refcoord-scaling        = com
comm-mode               = Linear
comm-grps               = MEMB SOL_ION
nstcomm                 = 100
gen-vel                 = {genvel}
gen-temp                = {temp}
gen-seed                = {seed}
ld-seed                 = {seed}
continuation            = {cont}"""
MDP_CG = """; Martini 3 membrane settings, written by make_bilayer_data.py
integrator              = {integrator}
{run}
cutoff-scheme           = Verlet
nstlist                 = 20
verlet-buffer-tolerance = 0.005
coulombtype             = reaction-field
rcoulomb                = 1.1
epsilon-r               = 15
epsilon-rf              = 0
vdwtype                 = Cut-off
vdw-modifier            = Potential-shift-Verlet
rvdw                    = 1.1
nstxout-compressed      = {nstxtc}
nstenergy               = 500
nstlog                  = 500
"""
MD_CG = """dt                      = 0.02
nsteps                  = {nsteps}
tcoupl                  = V-rescale
tc-grps                 = System
tau-t                   = 1.0
ref-t                   = {temp}
pcoupl                  = C-rescale
pcoupltype              = semiisotropic
tau-p                   = 12.0
ref-p                   = 1.0 1.0
compressibility         = 3e-4 3e-4
gen-vel                 = yes
gen-temp                = {temp}
gen-seed                = {seed}
ld-seed                 = {seed}"""


#: Martini 3 lipidome names whose bead layout insane builds under a Martini 2 name: the 12:0 PC is
#: DUPC in the Martini 3 lipidome (there DLPC is di-linoleoyl) and insane's DLPC (same beads)
INSANE_NAME = {"DUPC": "DLPC"}
def bead_template(res: str, seed: int) -> tuple[list[str], np.ndarray]:
    """Martini 3 bead names and positions (nb, 3) nm of CHARMM lipid ``res``: an RDKit conformer
    (stereo from SMILES) mapped with the shipped map file (its weighting, shared atoms split)."""
    from multiscale.mapping import load_mapping
    from multiscale.paths import find_data

    m = load_mapping(find_data("mappings", f"lipids/{res}.map")).molecules[res]
    itp = lc.read_itp(ff.charmm36_lipid_itp(res))
    x = lc.named_conformer(itp, res, seed=seed, straighten=True)
    W = np.zeros((len(m.beads), len(itp.names)))
    for atom, beads in zip(m.atoms, m.assignment):
        j = itp.names.index(atom)
        w = itp.masses[j] if m.weighting == "mass" else 1.0
        for bead in beads:
            W[m.beads.index(bead), j] += w / len(beads)
    return list(m.beads), (W / W.sum(1, keepdims=True)) @ x


def _refit_to_template(lines: list[str], cg_name: str, names: list[str], tmpl: np.ndarray) -> list[str]:
    """gro lines with every ``cg_name`` residue replaced by the bead template fitted (Kabsch, proper
    rotation) on the beads it shares with insane's template; atoms renumbered.  For the Martini 3
    cholesterol (9 beads; 5 are virtual sites mdrun rebuilds), which insane writes as the 8-bead
    Martini 2 sterol."""
    out = []
    for key, group in itertools.groupby(lines[2:-1], key=lambda r: r[:10]):  # one residue at a time
        res = list(group)
        if key[5:].strip() != cg_name:
            out += res
            continue
        got = {r[10:15].strip(): np.array([float(r[20:28]), float(r[28:36]), float(r[36:44])]) for r in res}
        common = [n for n in names if n in got]
        p, q = tmpl[[names.index(n) for n in common]], np.array([got[n] for n in common])
        rot = kabsch_rotation(p - p.mean(0), q - q.mean(0))
        y = (tmpl - p.mean(0)) @ rot + q.mean(0)
        out += [f"{key}{n:>5s}{0:5d}{v[0]:8.3f}{v[1]:8.3f}{v[2]:8.3f}" for n, v in zip(names, y)]
    out = [r[:15] + f"{(i + 1) % 100000:5d}" + r[20:] for i, r in enumerate(out)]
    return [lines[0], f"{len(out):5d}", *out, lines[-1]]


class Run:
    """Working folder, gmx launcher and the provenance record."""

    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.dir = Path(a.out).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.gmx = shlex.split(a.gmx)
        self.mdrun = shlex.split(a.mdrun) if a.mdrun else [*self.gmx, "mdrun"]
        self.prov_path = self.dir / "provenance.json"
        self.prov = json.loads(self.prov_path.read_text()) if self.prov_path.is_file() else {"stages": {}}

    def p(self, name: str) -> Path:
        return self.dir / name

    def done(self, *names: str) -> bool:
        return all(self.p(n).is_file() for n in names)

    def sh(self, args: list[str], stdin: str | None = None) -> str:
        r = subprocess.run(args, cwd=self.dir, input=stdin, capture_output=True, text=True)
        if r.returncode != 0:
            tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-6:])
            raise MultiscaleError(f"`{' '.join(args[:3])} ...` failed in {self.dir}: {tail}")
        return r.stdout + r.stderr

    def record(self, stage: str, **info) -> None:
        self.prov["stages"][stage] = {**self.prov["stages"].get(stage, {}), **info}
        atomic_write_text(self.prov_path, json.dumps(self.prov, indent=1, sort_keys=True) + "\n")

    def grompp_mdrun(self, stage: str, mdp: str, coords: str, top: str, ref: str | None = None,
                     ndx: str | None = None) -> None:
        """grompp (skipped if the .tpr exists) + mdrun with -cpi; skipped when <stage>.gro exists."""
        if self.done(f"{stage}.gro"):
            return
        atomic_write_text(self.p(f"{stage}.mdp"), mdp)
        if not self.done(f"{stage}.tpr"):
            args = [*self.gmx, "grompp", "-f", f"{stage}.mdp", "-c", coords, "-p", top, "-o", f"{stage}.tpr",
                    "-po", f"{stage}_out.mdp", "-maxwarn", "1"]
            args += ["-r", ref] if ref else []
            args += ["-n", ndx] if ndx else []
            self.sh(args)
        t0 = time.time()
        self.sh([*self.mdrun, "-deffnm", stage, "-cpi", f"{stage}.cpt", "-nt", str(self.a.nt)])
        log = self.p(f"{stage}.log").read_text()
        perf = re.findall(r"Performance:\s+([\d.]+)", log)
        fmax = re.findall(r"Maximum force\s+=\s+([\deE.+-]+)", log)
        self.record(stage, wall_s=round(time.time() - t0, 1), ns_per_day=float(perf[-1]) if perf else None,
                    fmax=float(fmax[-1]) if fmax else None, atoms=_gro_natoms(self.p(f"{stage}.gro")))


def _gro_natoms(path: Path) -> int:
    with open(path) as f:
        f.readline()
        return int(f.readline())


def write_gro(path: Path, title: str, resid, resname, names, x: np.ndarray, box: np.ndarray) -> None:
    lines = [title, f"{len(x):5d}"]
    for k, (ri, rn, an, p) in enumerate(zip(resid, resname, names, x)):
        lines.append(f"{ri % 100000:5d}{rn:<5.5s}{an:>5.5s}{(k + 1) % 100000:5d}{p[0]:8.3f}{p[1]:8.3f}{p[2]:8.3f}")
    lines.append(f"{box[0]:10.5f}{box[1]:10.5f}{box[2]:10.5f}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_gro(path: Path):
    lines = path.read_text().splitlines()
    n = int(lines[1])
    rows = lines[2:2 + n]
    resid = np.array([int(r[0:5]) for r in rows])
    resname = [r[5:10].strip() for r in rows]
    names = [r[10:15].strip() for r in rows]
    x = np.array([[float(r[20:28]), float(r[28:36]), float(r[36:44])] for r in rows])
    box = np.array([float(v) for v in lines[2 + n].split()[:3]])
    return resid, resname, names, x, box


def stage_conformer(run: Run, itp: lc.ItpMolecule) -> np.ndarray:
    """Most compact of --conformers straightened conformers, tail ends -> head along +z, centred on the axis."""
    out = run.p(f"conformer_{itp.name}.npy")
    if itp.name == "POPC" and run.p("conformer.npy").is_file():  # folders written before --lipids
        out = run.p("conformer.npy")
    if out.is_file():
        return np.load(out)
    heavy = np.array([e != "H" for e in itp.elements])
    ip, ends = head_atom(itp), tail_ends(itp)
    best, best_r = None, np.inf
    for seed in range(run.a.seed, run.a.seed + run.a.conformers):
        x = lc.named_conformer(itp, itp.name, seed=seed, straighten=True)
        axis = x[ip] - x[ends].mean(0)
        x = x @ _rotation_to_z(axis).T
        x -= np.r_[x[heavy, :2].mean(0), x[heavy, 2].min()]
        r = np.sqrt((x[heavy, :2] ** 2).sum(1)).max()
        if r < best_r:
            best, best_r = x, r
    np.save(out, best)
    run.record(f"conformer_{itp.name}", lateral_radius_nm=round(float(best_r), 3), length_nm=round(float(best[heavy, 2].max()), 3))
    return best


def _rotation_to_z(v: np.ndarray) -> np.ndarray:
    v = v / np.linalg.norm(v)
    z = np.array([0.0, 0.0, 1.0])
    c, s = float(v @ z), np.cross(v, z)
    if np.linalg.norm(s) < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    k = np.array([[0, -s[2], s[1]], [s[2], 0, -s[0]], [-s[1], s[0], 0]])
    return np.eye(3) + k + k @ k * ((1 - c) / (s @ s))


def _rotz(t: float) -> np.ndarray:
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


def stage_place(run: Run, itps: dict[str, lc.ItpMolecule], confs: dict[str, np.ndarray]) -> None:
    """Grid of lipids per leaflet with greedy clash-avoiding rotations; writes bilayer.gro (types in blocks)."""
    if run.done("bilayer.gro"):
        return
    from scipy.spatial import cKDTree

    a, n = run.a, run.a.per_side
    rng = np.random.default_rng(a.seed)
    spacing = np.sqrt(a.apl)
    lx = spacing * n
    length = max(c[:, 2].max() for c in confs.values())
    zc = a.water + length + a.gap / 2
    box = np.array([lx, lx, 2 * zc])
    flip = np.diag([1.0, -1.0, -1.0])  # 180 deg about x: a rotation, so the stereocentres are kept
    leaflet_types = np.repeat(list(a.comp), list(a.comp.values()))
    placed = np.zeros((0, 3))
    coords, types = [], []
    for leaflet in (0, 1):
        order = rng.permutation(leaflet_types)
        for i in range(n):
            for j in range(n):
                res = str(order[i * n + j])
                conf = confs[res]
                xy = np.array([(i + 0.5) * spacing, (j + 0.5) * spacing])
                best, best_d = None, -1.0
                tree = cKDTree(np.mod(placed, box), boxsize=box) if len(placed) else None
                for t in rng.uniform(0, 2 * np.pi, a.tries):
                    x = conf @ _rotz(t).T
                    x = x + [0, 0, a.gap / 2] if leaflet == 0 else (x + [0, 0, a.gap / 2]) @ flip.T
                    x = x + np.r_[xy, zc]
                    if tree is None:
                        best = x
                        break
                    d = tree.query(np.mod(x, box))[0].min()
                    if d > best_d:
                        best, best_d = x, d
                coords.append(best)
                types.append(res)
                placed = np.vstack([placed, best])
    blocks = sorted(range(len(types)), key=lambda k: list(a.comp).index(types[k]))  # one block per type
    x = np.vstack([coords[k] for k in blocks])
    names = [nm for k in blocks for nm in itps[types[k]].names]
    resname = [types[k] for k in blocks for _ in itps[types[k]].names]
    resid = np.repeat(np.arange(1, len(blocks) + 1), [len(itps[types[k]].names) for k in blocks])
    write_gro(run.p("bilayer.gro"), f"{'/'.join(a.comp)} bilayer {len(blocks)} lipids, multiscale make_bilayer_data",
              resid, resname, names, x, box)
    run.record("place", lipids=len(blocks), composition_per_leaflet=a.comp, apl_nm2=a.apl,
               box_nm=[round(v, 4) for v in box], seed=a.seed)


def write_top(run: Run, n_water: int, n_na: int = 0, n_cl: int = 0) -> None:
    f = ff.CHARMM36_FF
    mols = [f"{r} {2 * k}" for r, k in run.a.comp.items()] + [f"SOL {n_water}"]
    mols += ([f"SOD {n_na}"] if n_na else []) + ([f"CLA {n_cl}"] if n_cl else [])
    inc = "".join(f'#include "{r}.itp"\n' for r in run.a.comp)
    text = (f'#include "{f}/forcefield.itp"\n{inc}#include "{f}/tip3p.itp"\n#include "{f}/ions.itp"\n'
            f"[ system ]\n{'/'.join(run.a.comp)} bilayer, TIP3P, NaCl\n[ molecules ]\n" + "\n".join(mols) + "\n")
    atomic_write_text(run.p("topol.top"), text)


def stage_solvate(run: Run) -> None:
    """Water layers (none inside the hydrophobic slab), then SOD/CLA at --salt mol/L, neutral."""
    if run.done("system.gro", "topol.top", "index.ndx"):
        return
    a = run.a
    nl = 2 * a.per_side ** 2
    write_top(run, 0)
    run.sh([*run.gmx, "solvate", "-cp", "bilayer.gro", "-cs", "spc216.gro", "-o", "solv_raw.gro"])
    resid, resname, names, x, box = read_gro(run.p("solv_raw.gro"))
    zc = box[2] / 2
    p_z = np.abs(x[[k for k, (r, n) in enumerate(zip(resname, names)) if r in a.comp and n == "P"], 2] - zc)
    cut = p_z.mean() - a.slab_margin
    water = np.array([r == "SOL" for r in resname])
    ow = water & np.array([n == "OW" for n in names])
    bad = set(resid[ow & (np.abs(x[:, 2] - zc) < cut)])
    keep = ~water | ~np.isin(resid, list(bad))
    nw = int((ow & keep).sum())
    names = [n for n, k in zip(names, keep) if k]
    resname = [r for r, k in zip(resname, keep) if k]
    lipid_resid = resid[~water]
    n_per = np.diff(np.r_[np.flatnonzero(np.r_[True, lipid_resid[1:] != lipid_resid[:-1]]), len(lipid_resid)])
    resid = np.repeat(np.arange(1, nl + nw + 1), list(n_per) + [3] * nw)
    write_gro(run.p("solv.gro"), "solvated", resid, resname, names, x[keep], box)
    write_top(run, nw)
    atomic_write_text(run.p("ions.mdp"), "integrator = steep\nnsteps = 0\ncutoff-scheme = Verlet\n"
                      "coulombtype = PME\nrcoulomb = 1.2\nrvdw = 1.2\n")
    run.sh([*run.gmx, "grompp", "-f", "ions.mdp", "-c", "solv.gro", "-p", "topol.top", "-o", "ions.tpr",
            "-maxwarn", "1"])
    # salt from the water count (genion -conc would use the whole box, membrane included)
    n_salt = int(round(a.salt * nw / 55.51))
    run.sh([*run.gmx, "genion", "-s", "ions.tpr", "-o", "system.gro", "-pname", "SOD", "-nname", "CLA",
            "-np", str(n_salt), "-nn", str(n_salt), "-neutral", "-seed", str(a.seed)], stdin="SOL\n")
    # genion rewrote no topology (we keep ours): count what it placed; the water count must be a
    # multiple of 4 (one Martini W bead = 4 waters), so the waters farthest from the bilayer go
    resid, rn, names, x, box = read_gro(run.p("system.gro"))
    ow = np.array([r == "SOL" and n == "OW" for r, n in zip(rn, names)])
    extra = int(ow.sum()) % 4
    if extra:
        far = np.argsort(-np.abs(x[ow, 2] - box[2] / 2))[:extra]
        drop = np.isin(resid, resid[ow][far])
        keep = ~drop
        rn, names = [r for r, k in zip(rn, keep) if k], [n for n, k in zip(names, keep) if k]
        kept = resid[keep]
        starts = np.flatnonzero(np.r_[True, kept[1:] != kept[:-1]])  # residues in order of appearance
        resid = np.repeat(np.arange(1, len(starts) + 1), np.diff(np.r_[starts, len(kept)]))
        write_gro(run.p("system.gro"), "solvated, salted", resid, rn, names, x[keep], box)
    n_na = sum(1 for r in rn if r == "SOD")
    n_cl = sum(1 for r in rn if r == "CLA")
    n_sol = sum(1 for r in rn if r == "SOL") // 3
    write_top(run, n_sol, n_na, n_cl)
    memb = [k + 1 for k, r in enumerate(rn) if r in a.comp]
    rest = [k + 1 for k, r in enumerate(rn) if r not in a.comp]
    atomic_write_text(run.p("index.ndx"), _ndx({"System": list(range(1, len(rn) + 1)), "MEMB": memb, "SOL_ION": rest}))
    run.record("solvate", waters=n_sol, waters_per_lipid=round(n_sol / nl, 1), sod=n_na, cla=n_cl,
               removed_slab_waters=len(bad), slab_half_width_nm=round(float(cut), 3))


def _ndx(groups: dict[str, list[int]]) -> str:
    out = []
    for g, ids in groups.items():
        out.append(f"[ {g} ]")
        out += [" ".join(str(i) for i in ids[k:k + 15]) for k in range(0, len(ids), 15)]
    return "\n".join(out) + "\n"


def aa_mdp(stage: str, a: argparse.Namespace) -> str:
    restr = "-DPOSRES -DPOSRES_FC_LIPID=1000.0 -DDIHRES -DDIHRES_FC=1000.0"
    if stage == "em":  # unconstrained: constrained steepest descent fails on the clashes of a fresh grid
        em = f"nsteps = {a.em_steps}\nemtol = 500.0\nemstep = 0.001"
        text = MDP_AA.format(define=restr, integrator="steep", run=em, nstxtc=0, nstener=100)
        return text.replace("constraints             = h-bonds", "constraints             = none")
    ps = {"nvt": a.nvt_ps, "npt": a.npt_ns * 1000, "prod": a.prod_ns * 1000}[stage]
    md = MD_AA.format(nsteps=int(round(ps / 0.002)), temp=a.temperature, pcoupl="no" if stage == "nvt" else "C-rescale",
                      genvel="yes" if stage == "nvt" else "no", seed=a.seed, cont="no" if stage == "nvt" else "yes")
    define = {"nvt": restr, "npt": "-DDIHRES -DDIHRES_FC=1000.0", "prod": ""}[stage]
    nstxtc = int(round(a.frame_ps / 0.002)) if stage == "prod" else 5000
    return MDP_AA.format(define=define, integrator="md", run=md, nstxtc=nstxtc, nstener=5000 if ps > 20 else 100)


def check_stereo(run: Run, stage: str) -> None:
    """Count lipids whose [ chiral ] / [ cis ] map hints hold in <stage>.gro (PBC-safe: within a molecule)."""
    from multiscale.mapping import load_mapping
    from multiscale.paths import find_data

    resid, resname, names, x, box = read_gro(run.p(f"{stage}.gro"))
    info = {}
    for res in run.a.comp:
        m = load_mapping(find_data("mappings", f"lipids/{res}.map")).molecules[res]
        sel = np.array([r == res for r in resname])
        n = len(m.atoms)
        xl = x[sel].reshape(-1, n, 3)
        xl = xl - box * np.round((xl - xl[:, :1]) / box)  # whole molecules
        ok_chiral, ok_cis = stereo_ok(xl, m.atoms, m.hints)
        sfx = "" if len(run.a.comp) == 1 else f"_{res}"
        info[f"chiral_ok{sfx}"] = f"{int(ok_chiral.sum())}/{len(xl)}"
        info[f"cis_ok{sfx}"] = f"{int(ok_cis.sum())}/{len(xl)}"
    run.record(stage, **info)


def stages_aa(run: Run) -> None:
    link = run.p(ff.CHARMM36_FF)
    if not link.exists():
        link.symlink_to(ff.charmm36_gmxlib() / ff.CHARMM36_FF)
    itps, confs = {}, {}
    for res in run.a.comp:
        if not run.p(f"{res}.itp").is_file():
            shutil.copyfile(ff.charmm36_lipid_itp(res), run.p(f"{res}.itp"))
        itps[res] = lc.read_itp(run.p(f"{res}.itp"))
        confs[res] = stage_conformer(run, itps[res])
    stage_place(run, itps, confs)
    stage_solvate(run)
    check_stereo(run, "system")
    run.grompp_mdrun("em", aa_mdp("em", run.a), "system.gro", "topol.top", ref="system.gro", ndx="index.ndx")
    run.grompp_mdrun("nvt", aa_mdp("nvt", run.a), "em.gro", "topol.top", ref="em.gro", ndx="index.ndx")
    run.grompp_mdrun("npt", aa_mdp("npt", run.a), "nvt.gro", "topol.top", ndx="index.ndx")
    run.grompp_mdrun("prod", aa_mdp("prod", run.a), "npt.gro", "topol.top", ndx="index.ndx")
    for stage in ("em", "nvt", "npt", "prod"):
        check_stereo(run, stage)


def martini3_ions(lines: list[str]) -> list[str]:
    """The .gro lines of an insane build with its ions (residue NA+ / CL-) renamed as the Martini 3
    lipidome names them: residue ION, atom (and moleculetype) NA / CL."""
    ren = {"NA+": ("ION", "NA"), "CL-": ("ION", "CL")}
    out = list(lines)
    for k in range(2, len(out) - 1):
        rn = out[k][5:10].strip()
        if rn in ren:
            out[k] = out[k][:5] + f"{ren[rn][0]:<5s}{ren[rn][1]:>5s}" + out[k][15:]
    return out


def stages_cg(run: Run) -> None:
    """Martini 3: insane bilayer (same lipid count and APL), EM, short semi-isotropic NPT."""
    from multiscale.membranes import lipid_table

    a = run.a
    to_cg = {charmm: martini for martini, charmm in lipid_table().items()}
    missing = [r for r in a.comp if r not in to_cg]
    if missing:
        raise MultiscaleError(f"no Martini 3 name for {', '.join(missing)}: add a mappings/lipids/<NAME>.map")
    cg_comp = {to_cg[r]: n for r, n in a.comp.items()}  # CHL1 -> CHOL, DLPC -> DUPC
    title = "/".join(cg_comp)
    if not run.done("cg_system.gro", "cg.top"):
        lx = np.sqrt(a.apl) * a.per_side
        if a.cg_z is None:  # same height as the atomistic box: about the same water per lipid
            a.cg_z = float(read_gro(run.p("bilayer.gro"))[4][2]) if run.done("bilayer.gro") else 8.4
        env = {**os.environ, "INSANE_SEED": str(a.seed)}
        cmd = [sys.executable, "-W", "ignore", "-c", "import sys; from insane.cli import cli; sys.exit(cli())",
               "-o", "cg_insane.gro", "-x", f"{lx:.4f}", "-y", f"{lx:.4f}", "-z", f"{a.cg_z:.3f}",
               *[t for name, n in cg_comp.items() for t in ("-l", f"{INSANE_NAME.get(name, name)}:{n}")],
               "-sol", "W", "-salt", str(a.salt), "-a", f"{a.apl}"]
        r = subprocess.run(cmd, cwd=run.dir, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            last = r.stderr.strip().splitlines()[-1:]
            raise MultiscaleError(f"insane failed (pip install insane 'setuptools<81'): {last}")
        lines = martini3_ions(run.p("cg_insane.gro").read_text().splitlines())
        back = {INSANE_NAME[m]: m for m in cg_comp if m in INSANE_NAME}
        for k in range(2, len(lines) - 1):
            rn = lines[k][5:10].strip()
            if rn in back:
                lines[k] = lines[k][:5] + f"{back[rn]:<5s}" + lines[k][10:]
        for res, m in zip(a.comp, cg_comp):  # insane's bead set differs (CHOL): fit the Martini 3 beads on it
            names, tmpl = bead_template(res, a.seed)
            insane_names = {ln[10:15].strip() for ln in lines[2:-1] if ln[5:10].strip() == m}
            if insane_names and insane_names != set(names):
                lines = _refit_to_template(lines, m, names, tmpl)
        atomic_write_text(run.p("cg_system.gro"), "\n".join(lines) + "\n")
        body = lines[2:-1]
        count = {}
        for ln in body:
            key = ln[10:15].strip() if ln[5:10].strip() == "ION" else ln[5:10].strip()
            count.setdefault(key, set()).add(ln[:5])
        order = list(dict.fromkeys(ln[5:10].strip() for ln in body if ln[5:10].strip() in cg_comp))  # insane's order
        mols = [(m, len(count.get(m, ()))) for m in order]
        mols += [("W", len(count.get("W", ()))), ("NA", len(count.get("NA", ()))), ("CL", len(count.get("CL", ())))]
        itp = run.p("martini_v3.0.0_lipidome_v2.itp")
        if not itp.exists():
            itp.symlink_to(ff.martini3_itp())
        atomic_write_text(run.p("cg.top"), f'#include "{itp.name}"\n[ system ]\n{title} bilayer Martini 3 (insane)\n'
                          "[ molecules ]\n" + "\n".join(f"{m} {n}" for m, n in mols if n) + "\n")
        run.record("cg_build", molecules=dict(mols), insane_seed=a.seed)
    em = f"nsteps = {a.cg_em_steps}\ndefine = -DFLEXIBLE"  # bonds for constraints: insane's sterols start far off
    run.grompp_mdrun("cg_em", MDP_CG.format(integrator="steep", run=em, nstxtc=0),
                     "cg_system.gro", "cg.top")
    md = MD_CG.format(nsteps=int(round(a.cg_ns * 1000 / 0.02)), temp=a.temperature, seed=a.seed)
    run.grompp_mdrun("cg_md", MDP_CG.format(integrator="md", run=md, nstxtc=5000), "cg_em.gro", "cg.top")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="working/output folder (default $MULTISCALE_CACHE/bilayer_data/POPC_<2N>)")
    p.add_argument("--lipids", default="POPC", help="CHARMM lipid names, with per-leaflet counts for a mixture "
                   "(POPE:5,POPG:5,CHL1:6; counts sum to --per-side^2)")
    p.add_argument("--per-side", type=int, default=6, help="lipids per leaflet = N x N (default 6 -> 72 lipids)")
    p.add_argument("--apl", type=float, default=0.70, help="initial area per lipid, nm^2 (NPT relaxes it; POPC ~0.64)")
    p.add_argument("--water", type=float, default=1.6, help="water layer beyond the lipid tips on each side, nm")
    p.add_argument("--gap", type=float, default=0.3, help="gap between the leaflets' tail ends, nm")
    p.add_argument("--slab-margin", type=float, default=0.4, help="waters deeper than the mean P plane minus this go")
    p.add_argument("--salt", type=float, default=0.15, help="NaCl, mol/L (plus neutralising ions)")
    p.add_argument("--temperature", type=float, default=303.15)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--conformers", type=int, default=20, help="RDKit conformers tried for the most compact")
    p.add_argument("--tries", type=int, default=24, help="rotations tried per lipid on the grid")
    p.add_argument("--em-steps", type=int, default=5000)
    p.add_argument("--nvt-ps", type=float, default=250.0)
    p.add_argument("--npt-ns", type=float, default=20.0)
    p.add_argument("--prod-ns", type=float, default=100.0)
    p.add_argument("--frame-ps", type=float, default=10.0, help="production frame interval (training frames)")
    p.add_argument("--cg", action="store_true", help="also build/run the Martini 3 twin with insane")
    p.add_argument("--cg-only", action="store_true")
    p.add_argument("--cg-z", type=float, default=None, help="CG box height, nm (default: the AA box height)")
    p.add_argument("--cg-em-steps", type=int, default=2000)
    p.add_argument("--cg-ns", type=float, default=100.0)
    p.add_argument("--quick", action="store_true", help="validation sizes: EM 300 steps, NVT/NPT/prod 2 ps, CG 0.2 ns")
    p.add_argument("--nt", type=int, default=1, help="gmx mdrun -nt")
    p.add_argument("--gmx", default=os.environ.get("MULTISCALE_GMX", "gmx"),
                   help="gmx executable (may be a command line)")
    p.add_argument("--mdrun", default="", help="mdrun launcher, e.g. 'srun gmx_mpi mdrun' (default: <gmx> mdrun)")
    a = p.parse_args(argv)
    if a.quick:
        a.em_steps, a.nvt_ps, a.npt_ns, a.prod_ns, a.frame_ps = 300, 2.0, 0.002, 0.002, 0.2
        a.cg_em_steps, a.cg_ns = 300, 0.2
    a.comp = composition(a.lipids, a.per_side ** 2)
    if a.out is None:
        name = f"{'_'.join(a.comp)}_{2 * a.per_side ** 2}{'_quick' if a.quick else ''}"
        a.out = str(ff.cache_dir().parent / "bilayer_data" / name)
    return a


def main(argv=None) -> int:
    a = parse(argv)
    try:
        run = Run(a)
        gmx_version = run.sh([*run.gmx, "--version"]).split("GROMACS version:")[1].split("\n")[0].strip()
        run.prov.update({"script": "scripts/make_bilayer_data.py", "args": vars(a), "gromacs": gmx_version,
                         "forcefields": {n: json.loads((ff.require(n) / "PROVENANCE.json").read_text())["wheel"]
                                         for n in ("charmm36", "charmm36-lipids", "martini3")}})
        run.record("start", at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        if not a.cg_only:
            stages_aa(run)
        if a.cg or a.cg_only:
            stages_cg(run)
    except MultiscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s, info in run.prov["stages"].items():
        print(s, json.dumps(info))
    print(f"outputs: {run.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

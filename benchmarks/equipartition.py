#!/usr/bin/env python3
"""Equipartition after a backmap: solvent and solute temperatures with a global or a local thermostat (real GROMACS).

    python benchmarks/equipartition.py RUN [--cycle 2] [--relax-ps 10] [--reference PLAIN_EDR --reference-from 50]

RUN is a cycle run folder (``multiscale cycle``; e.g. DIR/cycle of benchmarks/cycle_drift.py).  From the
stage files of cycle ``--cycle`` (the restrained-EM structure, the backmapped reference positions,
restrained.top, aa.top and the stage mdp files), the two AA stages after the backmap are run again
twice, ``gmx mdrun -nt 1``:

* ``md``: restrained NVT (2 ps, 1 fs, new velocities) with ``integrator = md`` and the global
  V-rescale thermostat (the shipped aa_nvt template before this change), then the run's own relax;
* ``sd``: the same with ``integrator = sd`` (Langevin; the shipped template now).

Velocities are written every 0.5 ps.  Per 1-ps block: the kinetic temperature of the water
(6 degrees of freedom per rigid water) and of the solutes (3 per atom less one per constrained
bond with H), the ions left out; the Bond, Angle and Potential energies (.edr).  With
``--reference`` (a plain AA .edr, averaged from ``--reference-from`` ps) its values are printed
as the target.  Units: K, kJ/mol, ps.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from make_aa_data import GMX, sh  # noqa: E402  (benchmarks/ is on sys.path)

from multiscale.gromacs.results import read_xvg  # noqa: E402
from multiscale.topology import load_topology  # noqa: E402
from multiscale.workflow.stages import _set_mdp_options  # noqa: E402  (the mdp.overrides editor)

KB = 0.0083144626  # kJ/mol/K
TERMS = ("Bond", "Angle", "Potential")
VOUT_PS = 0.5


def groups(top):
    """Per atom: masses (N,), and index arrays + degrees of freedom of the water and of the solutes."""
    m = top.per_atom("masses").astype(np.float64)
    water, solute, dof_w, dof_s = [], [], 0, 0
    for b in top.blocks:
        idx = np.arange(b.start, b.stop)
        mt = b.moltype
        if mt.is_water:
            water.append(idx)
            dof_w += 6 * b.count
        elif mt.n_atoms > 1:
            el = np.asarray(mt.elements)
            h_bonds = int(np.sum((el[mt.bonds] == "H").any(axis=1))) if len(mt.bonds) else 0
            solute.append(idx)
            dof_s += (3 * mt.n_atoms - h_bonds) * b.count
    cat = lambda a: np.concatenate(a) if a else np.zeros(0, int)  # noqa: E731
    return m, cat(water), dof_w, cat(solute), dof_s


def temperatures(trr: Path, tpr: Path, top, t0: float) -> list[dict]:
    """(time, T water, T solute) per velocity frame of ``trr`` (MDAnalysis: Å/ps -> nm/ps here)."""
    import MDAnalysis as mda

    m, w, dof_w, s, dof_s = groups(top)
    out = []
    u = mda.Universe(str(tpr), str(trr))
    for ts in u.trajectory:
        if not ts.has_velocities:
            continue
        v = ts.velocities.astype(np.float64) / 10.0
        ke = 0.5 * m * np.einsum("ij,ij->i", v, v)
        out.append({"t": round(t0 + ts.time, 3), "T_water": 2 * ke[w].sum() / (KB * dof_w) if dof_w else float("nan"),
                    "T_solute": 2 * ke[s].sum() / (KB * dof_s) if dof_s else float("nan")})
    return out


def energies(edr: Path, work: Path, t0: float = 0.0, begin: float = 0.0) -> np.ndarray:
    """Rows (time + t0, Bond, Angle, Potential) of an .edr from ``begin`` ps."""
    sh([GMX, "energy", "-f", str(edr), "-b", str(begin), "-o", "terms.xvg"], work, stdin="\n".join(TERMS) + "\n\n")
    _, rows = read_xvg(work / "terms.xvg")
    a = np.asarray(rows, float)[:, :4]
    a[:, 0] += t0
    return a


def run_variant(name: str, stage: Path, aa_top: Path, work: Path, relax_ps: float) -> dict:
    """Restrained NVT with integrator ``name`` (md + V-rescale, or sd), then the run's relax mdp."""
    w = work / name
    w.mkdir(parents=True, exist_ok=True)
    eq = _set_mdp_options((stage / "restrained-eq" / "restrained-eq.mdp").read_text(),
                          {"integrator": name, "tcoupl": "V-rescale" if name == "md" else "no",
                           "nstvout": int(round(VOUT_PS / 0.001))})
    (w / "eq.mdp").write_text(eq)
    rel = (stage / "relax" / "relax.mdp").read_text()
    dt = float(re.search(r"^dt\s*=\s*(\S+)", rel, re.M).group(1))
    rel = _set_mdp_options(rel, {"nsteps": int(round(relax_ps / dt)), "nstvout": int(round(VOUT_PS / dt))})
    (w / "relax.mdp").write_text(rel)
    sh([GMX, "grompp", "-f", "eq.mdp", "-c", str(stage / "restrained-em" / "restrained-em.gro"), "-r",
        str(stage / "backmap" / "backmapped.gro"), "-p", str(stage / "backmap" / "restrained.top"), "-o", "eq.tpr",
        "-maxwarn", "0"], w)
    sh([GMX, "mdrun", "-deffnm", "eq", "-nt", "1", "-pin", "off"], w)
    sh([GMX, "grompp", "-f", "relax.mdp", "-c", "eq.gro", "-t", "eq.cpt", "-p", str(aa_top), "-o", "relax.tpr",
        "-maxwarn", "0"], w)
    sh([GMX, "mdrun", "-deffnm", "relax", "-nt", "1", "-pin", "off"], w)
    top = load_topology(aa_top)
    t_eq = float(re.search(r"^nsteps\s*=\s*(\S+)", eq, re.M).group(1)) * 0.001
    temps = temperatures(w / "eq.trr", w / "eq.tpr", top, 0.0) + temperatures(w / "relax.trr", w / "relax.tpr", top, t_eq)
    e = np.concatenate([energies(w / "eq.edr", w, 0.0), energies(w / "relax.edr", w, t_eq)])
    blocks = []
    for lo in np.arange(0.0, t_eq + relax_ps, 1.0):
        tt = [r for r in temps if lo < r["t"] <= lo + 1.0 + 1e-9]
        ee = e[(e[:, 0] > lo) & (e[:, 0] <= lo + 1.0 + 1e-9)]
        if not tt or not len(ee):
            continue
        blocks.append({"from_ps": float(lo), "stage": "restrained NVT" if lo < t_eq else "relax",
                       "T_water": float(np.mean([r["T_water"] for r in tt])),
                       "T_solute": float(np.mean([r["T_solute"] for r in tt])),
                       **{k: float(ee[:, i + 1].mean()) for i, k in enumerate(TERMS)}})
    return {"blocks": blocks}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--cycle", type=int, default=2)
    ap.add_argument("--relax-ps", type=float, default=10.0)
    ap.add_argument("--reference", type=Path, default=None, help="plain AA .edr (e.g. DIR/plain/runs/cycle_001/aa-md/aa-md.edr)")
    ap.add_argument("--reference-from", type=float, default=50.0)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    stage = a.run / "runs" / f"cycle_{a.cycle:03d}"
    if not (stage / "restrained-em" / "restrained-em.gro").is_file():
        raise SystemExit(f"{stage}: no restrained-em output: pass a cycle run folder and a cycle that has run")
    work = a.work or Path(tempfile.mkdtemp(prefix="equipartition_"))
    work.mkdir(parents=True, exist_ok=True)
    res = {"run": str(a.run), "cycle": a.cycle, "relax_ps": a.relax_ps, "machine": "2-core VM, no GPU"}
    if a.reference:
        ref = energies(a.reference, work, begin=a.reference_from)
        res["reference"] = {k: float(ref[:, i + 1].mean()) for i, k in enumerate(TERMS)}
    for name in ("md", "sd"):
        res[name] = run_variant(name, stage, a.run / "aa.top", work, a.relax_ps)
    ref = res.get("reference", {})
    print(f"{a.run} cycle {a.cycle}: restrained NVT 2 ps, then relax {a.relax_ps:g} ps; 1-ps blocks"
          + (f"; plain AA (from {a.reference_from:g} ps): " + ", ".join(f"{k} {v:.1f}" for k, v in ref.items()) if ref else ""))
    print(f"{'ps':>5s} {'stage':>15s} | {'T water md':>10s} {'sd':>6s} | {'T solute md':>11s} {'sd':>6s} | "
          f"{'Bond md':>8s} {'sd':>6s} | {'Angle md':>8s} {'sd':>6s} | {'Epot md':>9s} {'sd':>9s}")
    for bm, bs in zip(res["md"]["blocks"], res["sd"]["blocks"]):
        print(f"{bm['from_ps']:5.1f} {bm['stage']:>15s} | {bm['T_water']:10.1f} {bs['T_water']:6.1f} | {bm['T_solute']:11.1f} "
              f"{bs['T_solute']:6.1f} | {bm['Bond']:8.1f} {bs['Bond']:6.1f} | {bm['Angle']:8.1f} {bs['Angle']:6.1f} | "
              f"{bm['Potential']:9.1f} {bs['Potential']:9.1f}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

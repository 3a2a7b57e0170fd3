#!/usr/bin/env python3
"""Hydrogen bonds right after the backmap, and how many ps of MD each observable needs (real GROMACS).

    python benchmarks/make_aa_data.py octanol --ps 150 --out /tmp/hb        # neat (R)-octan-2-ol, 100 molecules
    python benchmarks/hbond_recovery.py --data /tmp/hb/octanol --map /tmp/hb/octanol/octanol.map \\
        [--load model.pt] [--eq-ps 10 --relax-ps 10] [--json out.json]

1. The AA liquid (the held-out last quarter of md.xtc): hydroxyl H-bonds per molecule (H...O <
   0.25 nm, O-H...O > 120 deg, to O of other molecules: :func:`multiscale.backmap.place.count_hbonds`),
   O...O close contacts per molecule (< 0.32 nm) and potential energy per molecule (md.edr).
2. The same frames backmapped ``--seeds`` times by the engine as before the H-bond steps
   (``hbond_network=False``, no environment selection, ``hydration=False``, the model's calibrated
   weight) and as now
   (defaults; the hydrogen-bond weight recalibrated with this engine, as ``train`` does).
3. From one backmapped frame of each: restrained EM (heavy atoms, ``--fc``), restrained NVT
   (``--eq-ps``, dt 1 fs, new velocities) and unrestrained NPT (``--relax-ps``, dt 2 fs), with a
   frame every 0.1 / 0.2 ps: the observables along the way (the relaxation curves), and the
   first 2.5-ps block whose mean is within ``--tol`` of the AA value (H-bonds and contacts: 10 %,
   energy: 2 kJ/mol per molecule by default) -- the evidence for ``restrained.eq`` / ``restrained.relax``.

``gmx mdrun -nt 1``; ~3 min of MD for the default lengths on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from make_aa_data import GMX, sh  # noqa: E402  (the sibling script's gmx runner; benchmarks/ is on sys.path)

from multiscale.backmap.engine import backmap, load_model, train  # noqa: E402
from multiscale.backmap.place import count_hbonds  # noqa: E402
from multiscale.coarse_grain import coarse_grain  # noqa: E402
from multiscale.io import Frames, read_frames, write_frames  # noqa: E402
from multiscale.mapping import load_mapping  # noqa: E402
from multiscale.topology import load_topology  # noqa: E402


class Observables:
    """Per solute molecule: hydroxyl H-bonds to other solute molecules and O...O contacts; per
    frame: solute-water H-bonds (either direction) when the system has water."""

    def __init__(self, top):
        el = np.asarray(top.per_atom("elements"))
        self.mol = np.concatenate([np.repeat(np.arange(b.count) + sum(c.count for c in top.blocks[:i]), b.moltype.n_atoms)
                                   for i, b in enumerate(top.blocks)])
        water = np.concatenate([np.full(b.count * b.moltype.n_atoms, b.moltype.is_water) for b in top.blocks])
        bonds = np.concatenate([(b.start + (np.arange(b.count) * b.moltype.n_atoms)[:, None, None]
                                 + np.asarray(b.moltype.bonds)).reshape(-1, 2) for b in top.blocks if len(b.moltype.bonds)])
        pol = np.isin(el[bonds], ["O", "N"]) & (el[bonds[:, ::-1]] == "H")
        h = np.concatenate([bonds[pol[:, 0], 1], bonds[pol[:, 1], 0]])  # pol[:, 0]: bond = (O/N, H)
        d = np.concatenate([bonds[pol[:, 0], 0], bonds[pol[:, 1], 1]])
        if water.any():  # rigid water models may list no O-H bonds: every water H, donor = its O
            wh = np.flatnonzero(water & (el == "H"))
            wo = np.flatnonzero(water & (el == "O"))
            h, d = np.concatenate([h[~water[h]], wh]), np.concatenate([d[~water[h]], wo[np.searchsorted(self.mol[wo], self.mol[wh])]])
        self.sol_h, self.sol_d = h[~water[h]], d[~water[h]]
        self.w_h, self.w_d = h[water[h]], d[water[h]]
        polar = np.isin(el, ["O", "N"])
        self.acc_sol, self.acc_w = polar & ~water, polar & water
        self.o = np.flatnonzero(self.acc_sol)
        self.n_mol = int(len(np.unique(self.mol[~water])))
        self.has_water = bool(water.any())

    def directions(self, x, box) -> tuple[float, float]:
        """Per frame: (water -> solute, solute -> water) H-bonds."""
        x, box = np.asarray(x, np.float64), np.asarray(box, np.float64)
        return (float(count_hbonds(x, box, self.w_h, self.w_d, self.mol, self.acc_sol)),
                float(count_hbonds(x, box, self.sol_h, self.sol_d, self.mol, self.acc_w)))

    def __call__(self, x, box) -> tuple[float, float, float]:
        from scipy.spatial import cKDTree

        x = np.asarray(x, np.float64)
        box = np.asarray(box, np.float64)
        hb = count_hbonds(x, box, self.sol_h, self.sol_d, self.mol, self.acc_sol) / self.n_mol
        sw = 0.0
        if self.has_water:
            sw = sum(self.directions(x, box))
        o = np.mod(x[self.o], box)
        pairs = cKDTree(o, boxsize=box).query_pairs(0.32, output_type="ndarray")
        inter = self.mol[self.o[pairs[:, 0]]] != self.mol[self.o[pairs[:, 1]]] if len(pairs) else np.zeros(0, bool)
        return float(hb), float(2 * inter.sum() / self.n_mol), sw


def potential(edr: Path, work: Path) -> np.ndarray:
    """(t ps, potential kJ/mol) rows of an .edr."""
    from multiscale.gromacs.results import read_xvg

    sh([GMX, "energy", "-f", str(edr), "-o", "pot.xvg"], work, stdin="Potential\n\n")
    _, rows = read_xvg(work / "pot.xvg")
    return np.asarray(rows, float)[:, :2]


def render(template: str, out: Path, **kw) -> Path:
    from multiscale.gromacs.mdp import render_mdp

    return render_mdp(template, kw, out)


def relax_chain(gro: Path, top_path: Path, top, work: Path, obs: Observables, a) -> dict:
    """Restrained EM -> restrained NVT -> NPT from ``gro``; observables along the way."""
    from multiscale.backmap.restraints import write_posre_itp
    from multiscale.gromacs.runner import GromacsSettings
    from multiscale.workflow.stages import write_restrained_topology

    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(gro, work / "bm.gro")
    posres = {}
    for mt in top.moltypes.values():
        if not mt.is_water:
            write_posre_itp(mt, work / f"posre_{mt.name}.itp", force_constant=a.fc)
            posres[mt.name] = f"posre_{mt.name}.itp"
    write_restrained_topology(top_path, work / "bm.gro", work / "restrained.top", posres, GromacsSettings())
    n = obs.n_mol
    run = lambda name, mdp, gro_in, extra=(): (  # noqa: E731
        sh([GMX, "grompp", "-f", mdp, "-c", gro_in, "-r", "bm.gro", "-p", "restrained.top", "-o", f"{name}.tpr",
            "-maxwarn", "2", *extra], work),
        sh([GMX, "mdrun", "-deffnm", name, "-nt", "1", "-pin", "off"], work))
    render("aa_em", work / "em.mdp", define="-DPOSRES", emtol=1000.0, nsteps=2000)
    run("em", "em.mdp", "bm.gro")
    em = read_frames(work / "em.gro")
    out = {"em": dict(zip(("hbonds", "contacts", "solute_water"), obs(em.positions[0], em.box[0])))}
    out["em"]["potential"] = float(potential(work / "em.edr", work)[-1, 1] / n)
    kw = dict(ref_t=300, tau_t=0.1, gen_seed=2025, nstlog=5000)
    render("aa_nvt", work / "nvt.mdp", define="-DPOSRES", dt=0.001, nsteps=int(round(a.eq_ps / 0.001)),
           nstxout_compressed=100, nstenergy=100, **kw)
    run("nvt", "nvt.mdp", "em.gro")
    render("aa_npt", work / "npt.mdp", define="", dt=0.002, nsteps=int(round(a.relax_ps / 0.002)), nstxout_compressed=50,
           nstenergy=50, ref_p=1.0, tau_p=2.0, **kw)
    run("npt", "npt.mdp", "nvt.gro", ("-t", "nvt.cpt"))
    curves = []
    for stage, t0 in (("nvt", 0.0), ("npt", a.eq_ps)):
        fr = read_frames(work / "em.gro", work / f"{stage}.xtc", expected_atoms=top.n_atoms)
        pot = potential(work / f"{stage}.edr", work)
        if stage == "nvt":  # without the restraint energy
            sh([GMX, "energy", "-f", f"{stage}.edr", "-o", "pr.xvg"], work, stdin="Position-Rest.\n\n")
            from multiscale.gromacs.results import read_xvg

            pot[:, 1] -= np.asarray(read_xvg(work / "pr.xvg")[1], float)[:, 1]
        for f in range(fr.n_frames):
            t = float(fr.times[f])
            e = float(np.interp(t, pot[:, 0], pot[:, 1]) / n)
            hb, cc, sw = obs(fr.positions[f], fr.box[f])
            curves.append({"stage": stage, "t_ps": round(t0 + t, 3), "hbonds": hb, "contacts": cc, "solute_water": sw,
                           "potential": e})
    return {**out, "curves": curves}


def reach(curves: list, key: str, target: float, tol: float, window: float = 2.5) -> float | None:
    """Start (ps) of the first ``window``-ps block whose mean of ``key`` is within tol of target
    (block means: one frame of a 90-molecule liquid scatters by ~0.05 H-bonds per molecule)."""
    t = np.array([c["t_ps"] for c in curves])
    v = np.array([c[key] for c in curves])
    for lo in np.arange(0.0, t.max() + 1e-9, window):
        s = (t >= lo) & (t < lo + window)
        if s.sum() >= 2 and abs(v[s].mean() - target) <= tol:
            return float(lo)
    return None


def block_means(curves: list, window: float = 2.5) -> list[dict]:
    """The curves averaged over ``window``-ps blocks (t_ps: block start)."""
    t = np.array([c["t_ps"] for c in curves])
    out = []
    for lo in np.arange(0.0, t.max() + 1e-9, window):
        sel = [c for c, ti in zip(curves, t) if lo <= ti < lo + window]
        if sel:
            out.append({"t_ps": float(lo), "stage": sel[0]["stage"],
                        **{k: float(np.mean([c[k] for c in sel])) for k in ("hbonds", "contacts", "potential", "solute_water")}})
    return out


def aa_reference(d: Path, fr, te, obs: Observables, work: Path) -> dict:
    vals = np.array([obs(fr.positions[f], fr.box[f]) for f in te])
    ref = {"hbonds": float(vals[:, 0].mean()), "contacts": float(vals[:, 1].mean()), "solute_water": float(vals[:, 2].mean())}
    if obs.has_water:
        ref["water_to_solute"], ref["solute_to_water"] = map(float, np.mean([obs.directions(fr.positions[f], fr.box[f])
                                                                             for f in te], axis=0))
    if (d / "md.edr").exists():
        pot = potential(d / "md.edr", work)
        t_lo = float(fr.times[te[0]])
        ref["potential"] = float(pot[pot[:, 0] >= t_lo, 1].mean() / obs.n_mol)
    return ref


def backmapped(model, top, mp, fr, te, seeds, obs, **kw):
    cg = coarse_grain(fr.positions[te], fr.box[te], top, mp, seed=0)
    vals, dirs, t, first, reps = [], [], 0.0, None, []
    for s in range(seeds):
        t0 = time.perf_counter()
        aa, rep = backmap(model, top, cg.positions, cg.box, seed=100 + s, **kw)
        t += time.perf_counter() - t0
        first = aa[0] if first is None else first
        reps += rep
        vals += [obs(aa[k], cg.box[k]) for k in range(len(te))]
        dirs += [obs.directions(aa[k], cg.box[k]) for k in range(len(te))] if obs.has_water else []
    v = np.array(vals)
    return {"hbonds": float(v[:, 0].mean()), "hbonds_sd": float(v[:, 0].std()), "contacts": float(v[:, 1].mean()),
            "solute_water": float(v[:, 2].mean()), "water_to_solute": float(np.mean(dirs, axis=0)[0]) if dirs else 0.0,
            "solute_to_water": float(np.mean(dirs, axis=0)[1]) if dirs else 0.0,
            "ms_per_molecule": 1e3 * t / (seeds * len(te) * obs.n_mol),
            "max_cg_deviation_nm": max(r.max_cg_deviation_nm for r in reps),
            "clash_pairs_final": sum(r.inter_clash_pairs_final + r.intra_clash_pairs_final for r in reps)}, first, cg.box[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder with aa.top, start.gro, md.xtc (md.edr) (make_aa_data.py)")
    ap.add_argument("--map", required=True)
    ap.add_argument("--load", default=None, help="trained model (default: train on the first 75 %% of the frames)")
    ap.add_argument("--frames", type=int, default=6, help="held-out frames backmapped")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--eq-ps", type=float, default=10.0, help="restrained NVT (ps)")
    ap.add_argument("--relax-ps", type=float, default=10.0, help="unrestrained NPT (ps)")
    ap.add_argument("--fc", type=float, default=1000.0, help="restraint force constant (kJ/mol/nm^2)")
    ap.add_argument("--tol", type=float, default=0.10, help="relative tolerance of H-bonds/contacts for 'reached'")
    ap.add_argument("--tol-energy", type=float, default=2.0, help="kJ/mol per molecule for 'reached'")
    ap.add_argument("--work", default=None, help="keep the MD here (default: a temporary folder)")
    ap.add_argument("--no-md", action="store_true", help="only the numbers right after the backmap")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-recalibrate", action="store_true",
                    help="'after' with the model's own calibration (train() already calibrates with the full engine); "
                         "default: recalibrate the network cutoff and H-turn weight here (models trained before them)")
    a = ap.parse_args(argv)
    import os

    from multiscale.backmap import hbond

    for key in ("PULL_H", "KEEP_MADE", "MAX_ACCEPT", "PAIR_CUTOFF", "ITERATIONS", "RESTORE_STEPS"):  # experiments: HB_PULL_H=0
        v = os.environ.get(f"HB_{key}")
        if v:
            cur = getattr(hbond, key)
            setattr(hbond, key, v == "1" if isinstance(cur, bool) else type(cur)(v))
    d = Path(a.data)
    top, mp = load_topology(d / "aa.top"), load_mapping(a.map)
    fr = read_frames(d / "start.gro", d / "md.xtc", expected_atoms=top.n_atoms)
    ntr = int(0.75 * fr.n_frames)
    te = np.linspace(min(ntr + 5, fr.n_frames - 1), fr.n_frames - 1, a.frames).round().astype(int)
    if a.load:
        model = load_model(a.load, top)
    else:
        tr = slice(0, ntr)
        model = train(top, mp, Frames(fr.positions[tr], fr.box[tr], fr.times[tr], fr.names, fr.resnames, fr.resids), seed=0)
    obs = Observables(top)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="hbond_recovery_"))
    work.mkdir(parents=True, exist_ok=True)
    res = {"data": str(d), "molecules": obs.n_mol, "test_frames": te.tolist(), "aa": aa_reference(d, fr, te, obs, work)}
    eps0 = {k: m.hbond_eps for k, m in model.moltypes.items()}
    res["before"], x_before, box0 = backmapped(model, top, mp, fr, te, a.seeds, obs, hbond_network=False, select_eps=0.0,
                                                   hydration=False)
    from multiscale.backmap.train import _calibrate_hbonds, _calibrate_network

    tr = np.arange(0, ntr, max(1, ntr // 3))[:3]  # as train() does: network cutoff, then the H-turn weight
    names = [k for k, m in model.moltypes.items() if m.rotors]
    if a.no_recalibrate:
        res["hbond_eps"] = {"before": eps0, "after": eps0}
    else:
        net = _calibrate_network(model, top, mp, fr.positions[tr], fr.box[tr], 0, names)
        cal = _calibrate_hbonds(model, top, mp, fr.positions[tr], fr.box[tr], 0, names)
        res["hbond_eps"] = {"before": eps0, "after": cal["eps"]}
        res["network"] = net
        print(f"network cutoff calibration: {net}")
    res["after"], x_after, _ = backmapped(model, top, mp, fr, te, a.seeds, obs)
    ref = res["aa"]
    print(f"{d}: {obs.n_mol} molecules; hydroxyl H-bonds per molecule (H...O < 0.25 nm, O-H...O > 120 deg)")
    print(f"  AA liquid (held-out frames)      {ref['hbonds']:.3f}   O...O contacts < 0.32 nm/mol {ref['contacts']:.2f}"
          + (f"   potential {ref['potential']:.1f} kJ/mol/mol" if "potential" in ref else "")
          + (f"   solute-water H-bonds/frame {ref['solute_water']:.1f} (water -> solute {ref['water_to_solute']:.1f}, "
             f"solute -> water {ref['solute_to_water']:.1f})" if obs.has_water else ""))
    for k in ("before", "after"):
        r = res[k]
        print(f"  backmap {k:<6s} (eps {res['hbond_eps'][k] if k == 'after' else eps0})  {r['hbonds']:.3f} +- {r['hbonds_sd']:.3f}"
              f"   contacts {r['contacts']:.2f}   {r['ms_per_molecule']:.2f} ms/molecule, max CG dev "
              f"{r['max_cg_deviation_nm']:.1e} nm, clash pairs {r['clash_pairs_final']}"
              + (f", solute-water H-bonds/frame {r['solute_water']:.1f} (water -> solute {r['water_to_solute']:.1f}, "
                 f"solute -> water {r['solute_to_water']:.1f})" if obs.has_water else ""))
    if not a.no_md:
        names, resnames, resids = top.per_atom("atom_names"), top.per_atom("resnames"), top.resids()
        for k, x in (("before", x_before), ("after", x_after)):
            write_frames(work / f"{k}.gro", x, box0, names, resnames, resids, title=f"backmapped ({k})")
            t0 = time.perf_counter()
            r = relax_chain(work / f"{k}.gro", d / "aa.top", top, work / k, obs, a)
            r["md_seconds"] = round(time.perf_counter() - t0, 1)
            r["reached_ps"] = {key: reach(r["curves"], key, ref[key], a.tol_energy if key == "potential" else a.tol * ref[key])
                               for key in ("hbonds", "contacts", "potential", "solute_water") if key in ref
                               and (key != "solute_water" or obs.has_water)}
            res[f"md_{k}"] = r
            print(f"\n  {k}: after restrained EM: H-bonds {r['em']['hbonds']:.3f}, contacts {r['em']['contacts']:.2f}, "
                  f"potential {r['em']['potential']:.1f} kJ/mol/mol; MD {r['md_seconds']} s")
            print(f"    {'from ps':>6s} {'stage':>5s} {'H-bonds':>8s} {'contacts':>8s} {'E_pot/mol':>10s} {'sol-wat':>7s}")
            for c in block_means(r["curves"]):
                print(f"    {c['t_ps']:6.1f} {c['stage']:>5s} {c['hbonds']:8.3f} {c['contacts']:8.2f} {c['potential']:10.1f} "
                      f"{c['solute_water']:7.1f}")
            print(f"    within tolerance of AA from (ps; NVT first {a.eq_ps} ps, then NPT): {r['reached_ps']}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

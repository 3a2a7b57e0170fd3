#!/usr/bin/env python3
"""A Martini 3 POPC bilayer backmapped to CHARMM36 with the shipped lipid model, scored.

    python benchmarks/membrane_backmap.py --reference ~/.cache/multiscale/bilayer_data/POPC_32 \
        [--per-side 6] [--cg-z 10.2] [--cg-ns 2] [--frames 5] [--out benchmarks/results/membrane_backmap.md]

Test system (never seen in training): an insane bilayer of 2 x per-side^2 POPC with W and 0.15 M
NaCl, minimised and run in Martini 3 (``scripts/make_bilayer_data.py --cg-only``).  Then, with the
real commands:

    multiscale topology --cg-topology cg.top --output aa.top          # CHARMM36 lipids, TIP3P, SOD/CLA
    multiscale backmap  --cg cg_md.gro --topology aa.top --output aa.gro     # shipped models, timed x3

Scored before any EM: glycerol sn-2 centres and oleoyl cis double bonds from the mapping file's
hints (independent of the engine), clashes and bead deviation from the certificate, bead RMSD of
the output re-coarse-grained by ``multiscale coarse-grain``; then a CHARMM-GUI-style restrained
EM (P positions, chirality/cis dihedrals) with its step count.  Fidelity: tail C-C torsion JSD and
S_CH order parameters of ``--frames`` backmapped CG frames, and of the held-out frames of the
atomistic reference bilayer (``--reference``: its production frames written after the span the
shipped model was trained on, read from the model's provenance) coarse-grained and backmapped,
against that reference (S_CH error bars: standard error of 4 blocks).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

BIN = Path(sys.executable).parent
MS = str(BIN / "multiscale")
EM_MDP = """integrator = steep
nsteps = 5000
emtol = 1000
emstep = 0.001
define = -DPOSRES -DPOSRES_FC_LIPID=1000.0 -DDIHRES -DDIHRES_FC=1000.0
cutoff-scheme = Verlet
vdwtype = Cut-off
vdw-modifier = Force-switch
rvdw-switch = 1.0
rvdw = 1.2
coulombtype = PME
rcoulomb = 1.2
constraints = h-bonds
"""


def sh(*cmd, cwd=None, env=None) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0, r.stdout + r.stderr


def timed(*cmd, cwd) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a command (GNU time)."""
    _, out = sh("/usr/bin/time", "-f", "TIME %e %M", *cmd, cwd=cwd)
    line = [ln for ln in out.splitlines() if ln.startswith("TIME ")][-1].split()
    return float(line[1]), float(line[2]) / 1024


def compile_bytecode() -> None:
    """Compile the multiscale package's bytecode, as Python caches it on a user's first run: an
    environment with PYTHONDONTWRITEBYTECODE set (this VM's) would otherwise recompile every module
    of the package in each timed run (~0.4 s)."""
    import multiscale

    sh(sys.executable, "-m", "compileall", "-q", Path(multiscale.__file__).parent)


def add_cg_args(p: argparse.ArgumentParser) -> None:
    """The test bilayer's build options, as :func:`build_cg` reads them (every membrane benchmark)."""
    p.add_argument("--per-side", type=int, default=6)
    p.add_argument("--cg-z", type=float, default=10.2)
    p.add_argument("--cg-ns", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=2026, help="seed of the CG build")


def build_cg(work: Path, a) -> Path:
    cg = work / "cg"
    sh(sys.executable, ROOT / "scripts" / "make_bilayer_data.py", "--cg-only", "--per-side", a.per_side, "--apl", "0.64",
       "--cg-z", a.cg_z, "--cg-ns", a.cg_ns, "--seed", a.seed, "--out", cg)
    return cg


def lipid_block(top, name="POPC"):
    return next(b for b in top.blocks if b.moltype.name == name)


def analyse(top, frames, hints):
    """Stereo counts, S_CH (F, C) per chain and tail torsions of the POPC of ``frames``."""
    from multiscale.lipid_analysis import lipid_coordinates, order_parameters, stereo_ok, stereo_quality, tail_torsions

    blk = lipid_block(top)
    mt = blk.moltype
    x = lipid_coordinates(frames.positions, frames.box, blk)
    chiral, cis = stereo_ok(x, mt.atom_names, hints)
    flat, twisted = stereo_quality(x, mt.atom_names, hints)
    scd = {c: order_parameters(x, mt.atom_names, mt.elements, mt.bonds, c) for c in (2, 3)}
    tors = {c: tail_torsions(x, mt.atom_names, c) for c in (2, 3)}
    return {"chiral_ok": int(chiral.sum()), "cis_ok": int(cis.sum()), "flat": int(flat.sum()), "twisted": int(twisted.sum()),
            "n": int(chiral.size)}, scd, tors


def compare(scd, tors, ref_scd, ref_tors, seed=0) -> dict:
    """Per chain: S_CH of the sample vs the reference (mean, 4-block SE) and tail-torsion JSD (floor)."""
    from multiscale.evaluate import metrics as M

    out = {}
    for c in (2, 3):
        s, r = np.nanmean(scd[c], 0), ref_scd[c]
        blocks = np.array([np.nanmean(b, 0) for b in np.array_split(r, 4)])
        se = blocks.std(0, ddof=1) / 2
        rm = np.nanmean(r, 0)
        names, v = tors[c]
        _, rv = ref_tors[c]
        j = [M.jsd(M.histogram(v[:, k], "torsion"), M.histogram(rv[:, k], "torsion")) for k in range(v.shape[1])]
        fl = [M.jsd_floor(rv[:, k], len(v), "torsion", seed=seed) for k in range(v.shape[1])]
        out[f"sn-{1 if c == 3 else 2}"] = {
            "scd": s.tolist(), "ref_scd": rm.tolist(), "ref_se": se.tolist(),
            "scd_abs_dev_max": float(np.nanmax(np.abs(s - rm))), "within_2se": int(np.sum(np.abs(s - rm) <= 2 * se + 1e-12)),
            "carbons": len(s), "torsions": names, "jsd": j, "jsd_floor": fl,
            "jsd_mean": float(np.mean(j)), "jsd_max": float(np.max(j)), "floor_mean": float(np.mean(fl))}
    return out


def _trained_until(folder_name: str) -> float:
    """End (ps) of the production span the shipped lipid model was trained on, from its provenance."""
    from multiscale.backmap.model_file import load_model
    from multiscale.backmap.shipped import shipped_lipid_file

    for prov in load_model(shipped_lipid_file("POPC")).provenance:
        if prov.get("folder") == folder_name:
            return float(prov["trained_time_ps"][1])
    raise SystemExit(f"the shipped POPC model was not trained on a folder named {folder_name}: pass its reference bilayer")


def restrained_em(work: Path, gro: Path, top: Path) -> dict:
    """CHARMM-GUI-style restrained EM of one structure, one thread with ``-reprod``: otherwise
    GROMACS's run-time choices vary the step count of the same structure (MemBack's output: 738 and
    834 steps on one thread, 772 and 906 for one of ours on two); with them it is the structure's."""
    (work / "em.mdp").write_text(EM_MDP)
    sh("gmx", "grompp", "-f", "em.mdp", "-c", gro, "-r", gro, "-p", top, "-o", "em.tpr", "-maxwarn", "2", cwd=work)
    dt, _ = sh("gmx", "mdrun", "-deffnm", "em", "-nt", "1", "-reprod", cwd=work)
    log = (work / "em.log").read_text()
    import re

    conv = bool(re.search(r"converged to Fmax < \S+ in", log)) and "did not converge" not in log
    steps = re.findall(r"converged to (?:Fmax < \S+|machine precision) in (\d+) steps", log)
    fmax = re.findall(r"Maximum force\s+=\s+([\deE.+-]+)", log)
    return {"converged": conv, "steps": int(steps[-1]) if steps else None, "fmax": float(fmax[-1]) if fmax else None,
            "wall_s": round(dt, 1)}


def bead_rmsd(work: Path, aa: Path, top: Path, cg_in) -> float:
    from multiscale.geometry import minimum_image
    from multiscale.io import read_frames

    sh(MS, "coarse-grain", "--topology", top, "--structure", aa, "--output", work / "recg.gro")
    re_cg = read_frames(work / "recg.gro")
    solute = np.asarray(cg_in.resnames) != "W"  # W beads: any 4 nearby waters form one, in any order
    d = minimum_image((re_cg.positions[0] - cg_in.positions[0])[solute].astype(float), cg_in.box[0])
    return float(np.sqrt((d ** 2).sum(1).mean()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, required=True, help="make_bilayer_data.py folder of the AA reference bilayer")
    add_cg_args(p)
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--work", type=Path, default=Path("/tmp/membrane_backmap"))
    p.add_argument("--peer", action="append", default=[], metavar="NAME:AA.gro:AA.top",
                   help="another tool's raw output on the same CG input (cg/cg_md.gro), scored alike (repeatable)")
    p.add_argument("--em-seeds", type=int, default=5, help="backmap seeds 1..N each minimised (restrained EM)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "membrane_backmap.md")
    a = p.parse_args(argv)
    from multiscale.io import read_frames
    from multiscale.mapping import load_mapping
    from multiscale.paths import find_data
    from multiscale.topology import load_topology

    a.work.mkdir(parents=True, exist_ok=True)
    hints = load_mapping(find_data("mappings", "lipids/POPC.map")).molecules["POPC"].hints
    cg = build_cg(a.work, a)
    sh(MS, "topology", "--cg-topology", cg / "cg.top", "--output", a.work / "aa.top")
    top = load_topology(a.work / "aa.top")
    res = {"machine": "2-core VM, no GPU", "atoms": int(top.n_atoms), "lipids": lipid_block(top).count}
    compile_bytecode()
    runs = [timed(MS, "backmap", "--cg", cg / "cg_md.gro", "--topology", a.work / "aa.top", "--output", a.work / "aa.gro",
                  "--seed", "1", "--report", a.work / "report.json", cwd=a.work) for _ in range(5)]
    res["command_s"] = sorted(r[0] for r in runs)[2]
    res["command_runs_s"] = [r[0] for r in runs]
    res["peak_mb"] = max(r[1] for r in runs)
    rep = json.loads((a.work / "report.json").read_text())[0]
    res["engine_s"] = rep.get("seconds")
    res["certificate"] = {k: rep.get(k) for k in ("ok", "max_cg_deviation_nm", "inter_clash_pairs_final", "intra_clash_pairs_final",
                                                  "retries")}
    res["certificate"]["popc"] = {k: v for k, v in rep["per_moltype"]["POPC"].items() if k != "unresolved"}
    aa = read_frames(a.work / "aa.gro")
    cg_in = read_frames(cg / "cg_md.gro")
    stereo, _, _ = analyse(top, aa, hints)
    res["stereo_single"] = stereo
    res["bead_rmsd_nm"] = bead_rmsd(a.work, a.work / "aa.gro", a.work / "aa.top", cg_in)
    res["em"] = restrained_em(a.work, a.work / "aa.gro", a.work / "aa.top")
    res["em_seeds"] = {1: res["em"]["steps"]}
    for seed in range(2, a.em_seeds + 1):  # the EM count is a property of one drawn structure: several seeds
        sw = a.work / f"seed{seed}"
        sw.mkdir(exist_ok=True)
        sh(MS, "backmap", "--cg", cg / "cg_md.gro", "--topology", a.work / "aa.top", "--output", sw / "aa.gro",
           "--seed", str(seed), cwd=a.work)
        res["em_seeds"][seed] = restrained_em(sw, sw / "aa.gro", a.work / "aa.top")["steps"]
    res["peers"] = {}
    for spec in a.peer:  # another tool's output on the same CG input: same stereo counts and the same EM
        name, gro, ptop = spec.split(":")
        pw = a.work / f"peer_{name}"
        pw.mkdir(exist_ok=True)
        ptop_abs = Path(ptop).resolve()
        pst, _, _ = analyse(load_topology(ptop_abs), read_frames(Path(gro).resolve()), hints)
        res["peers"][name] = {"stereo": pst, "em": restrained_em(pw, Path(gro).resolve(), ptop_abs)}

    # fidelity: several CG frames of the test bilayer, and held-out reference frames
    ref_top = load_topology(a.reference / "topol.top")
    structure = a.reference / "prod.gro" if (a.reference / "prod.gro").is_file() else a.reference / "npt.gro"
    ref = read_frames(structure, a.reference / "prod.xtc", expected_atoms=ref_top.n_atoms)
    trained_to = _trained_until(a.reference.name)
    held = ref.subset(np.flatnonzero(ref.times > trained_to + 1e-6))
    if held.n_frames < 4:
        raise SystemExit(f"{a.reference}: {held.n_frames} frames after the model's training span (to {trained_to} ps): "
                         "run the reference bilayer longer (make_bilayer_data.py --prod-ns ...)")
    _, ref_scd, ref_tors = analyse(ref_top, held, hints)
    res["reference"] = {"frames": held.n_frames, "time_ps": [float(held.times[0]), float(held.times[-1])],
                        "lipids": lipid_block(ref_top).count}
    n_cg = read_frames(cg / "cg_md.gro", cg / "cg_md.xtc").n_frames
    sh(MS, "backmap", "--cg", cg / "cg_md.gro", "--cg-trajectory", cg / "cg_md.xtc", "--start", str(max(0, n_cg - a.frames)),
       "--topology", a.work / "aa.top", "--output", a.work / "aa_traj.xtc", "--seed", "2")
    traj = read_frames(a.work / "aa.gro", a.work / "aa_traj.xtc", expected_atoms=top.n_atoms)
    st, scd, tors = analyse(top, traj, hints)
    res["test_bilayer"] = {"frames": traj.n_frames, "stereo": st, **compare(scd, tors, ref_scd, ref_tors)}
    from multiscale.io import write_frames

    names, resn, resi = ref_top.per_atom("atom_names"), ref_top.per_atom("resnames"), ref_top.atom_resids()
    write_frames(a.work / "held.xtc", held.positions, held.box, names, resn, resi, times=held.times)
    write_frames(a.work / "held0.gro", held.positions[0], held.box[:1], names, resn, resi)
    sh(MS, "coarse-grain", "--topology", a.reference / "topol.top", "--structure", a.work / "held0.gro", "--trajectory",
       a.work / "held.xtc", "--output", a.work / "held_cg.gro")
    t_ref, _ = sh(MS, "backmap", "--cg", a.work / "held_cg.gro", "--topology", a.reference / "topol.top",
                  "--output", a.work / "held_bm.gro", "--seed", "3")
    bm = read_frames(a.work / "held_bm.gro", expected_atoms=ref_top.n_atoms)
    st, scd, tors = analyse(ref_top, bm, hints)
    res["held_out_frames"] = {"frames": bm.n_frames, "stereo": st, "command_s": round(t_ref, 1),
                              **compare(scd, tors, ref_scd, ref_tors)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    a.out.write_text(render(res, a) + "\n")
    print(render(res, a))
    return 0


def _mean_steps(r: dict) -> float:
    v = [x for x in r.get("em_seeds", {}).values() if x is not None]
    return float(np.mean(v)) if v else float("nan")


def render(r: dict, a) -> str:
    c = r["certificate"]
    pc = c["popc"]
    lines = ["# Membrane backmapping: Martini 3 POPC bilayer -> CHARMM36 (`benchmarks/membrane_backmap.py`)", "",
             f"Machine: {r['machine']}. Test bilayer: insane, {r['lipids']} POPC + W + 0.15 M NaCl, Martini 3 EM + "
             f"{a.cg_ns} ns NPT; {r['atoms']} AA atoms. Shipped model `lipids_charmm36/POPC.pt`. All numbers before any EM.", "",
             "| | value |", "|---|---|",
             f"| whole `multiscale backmap` command (median of 5; range) | {r['command_s']:.2f} s "
             f"({min(r.get('command_runs_s', [r['command_s']])):.2f}-{max(r.get('command_runs_s', [r['command_s']])):.2f}) |",
             f"| engine (backmap + certificate) | {r['engine_s']:.2f} s |" if r.get("engine_s") else "| engine | - |",
             f"| peak memory | {r['peak_mb']:.0f} MB |",
             f"| glycerol sn-2 centres correct (mapping hints) | {r['stereo_single']['chiral_ok']}/{r['stereo_single']['n']} |",
             f"| oleoyl double bonds cis | {r['stereo_single']['cis_ok']}/{r['stereo_single']['n']} |",
             f"| near-flat glycerol centres (normalised volume < 0.3) / cis bonds twisted > 30 deg | "
             f"{r['stereo_single']['flat']} / {r['stereo_single']['twisted']} |",
             f"| clash pairs inter / intra (certificate) | {c['inter_clash_pairs_final']} / {c['intra_clash_pairs_final']} |",
             f"| POPC with a clash after the certificate's redraws | {pc.get('clash_molecules_final')} |",
             f"| max bead deviation (certificate) | {c['max_cg_deviation_nm']:.1e} nm |",
             f"| lipid + ion bead RMSD after re-coarse-graining | {r['bead_rmsd_nm']:.1e} nm |",
             f"| restrained EM (P + chirality/cis dihedrals, emtol 1000) | "
             f"{'converged' if r['em']['converged'] else 'not converged'} in {r['em']['steps']} steps, Fmax {r['em']['fmax'] or float('nan'):.0f} |",
             f"| same EM after seeds {', '.join(map(str, r.get('em_seeds', {})))} (one thread, -reprod) | "
             f"{', '.join(str(v) for v in r.get('em_seeds', {}).values())} steps (mean {_mean_steps(r):.0f}) |",
             ""]
    if r.get("peers"):
        lines += ["## Same CG input, other tools' raw output, same restrained EM", "",
                  "| tool | centres right / flat | cis / twisted | restrained EM |", "|---|---|---|---|",
                  f"| multiscale | {r['stereo_single']['chiral_ok']} / {r['stereo_single']['flat']} | {r['stereo_single']['cis_ok']} / "
                  f"{r['stereo_single']['twisted']} | {r['em']['steps']} steps{'' if r['em']['converged'] else ' (not converged)'}; "
                  f"seeds 1-{len(r.get('em_seeds', {}))}: mean {_mean_steps(r):.0f}, "
                  f"{min(r.get('em_seeds', {0: 0}).values())}-{max(r.get('em_seeds', {0: 0}).values())} |"]
        for name, v in r["peers"].items():
            st, em = v["stereo"], v["em"]
            lines.append(f"| {name} | {st['chiral_ok']} / {st['flat']} | {st['cis_ok']} / {st['twisted']} | "
                         f"{em['steps']} steps{'' if em['converged'] else ' (not converged)'} |")
        lines.append("")
    lines += [f"## Fidelity against the atomistic reference ({r['reference']['lipids']} POPC, held-out "
             f"{r['reference']['time_ps'][0]:.0f}-{r['reference']['time_ps'][1]:.0f} ps, {r['reference']['frames']} frames)", "",
              "| sample | chain | S_CH max abs dev | carbons within 2 SE | torsion JSD mean / max | JSD floor mean |",
              "|---|---|---|---|---|---|"]
    for key, label in (("test_bilayer", f"test bilayer, {r['test_bilayer']['frames']} CG frames"),
                       ("held_out_frames", f"reference's held-out frames, CG -> AA ({r['held_out_frames']['frames']})")):
        for ch in ("sn-1", "sn-2"):
            v = r[key][ch]
            lines.append(f"| {label} | {ch} | {v['scd_abs_dev_max']:.3f} | {v['within_2se']}/{v['carbons']} | "
                         f"{v['jsd_mean']:.3f} / {v['jsd_max']:.3f} | {v['floor_mean']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

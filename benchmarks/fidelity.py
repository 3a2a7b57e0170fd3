#!/usr/bin/env python3
"""Fidelity of the learned backmapping against held-out atomistic frames, with a naive baseline.

    python benchmarks/fidelity.py --data /tmp/msdata/heptanol --map src/multiscale/data/mappings/heptanol.map
    python benchmarks/fidelity.py --data /tmp/msdata/octanol  --map /tmp/msdata/octanol/octanol.map

Measured (2-core VM; README table): octan-2-ol (make_aa_data.py octanol, 300 ps) max heavy-torsion
JSD 0.0127 (naive 0.0283, kNN floor 0.0093); heptan-1-ol, 250 ps (make_aa_data.py heptanol --ps
250): 0.036 (naive 0.067, kNN floor 0.033-0.037), 850 ps (--ps 850): 0.015 (naive 0.018, kNN
floor 0.014; conditional JSD 0.013 vs naive 0.040).

Data folder: aa.top, start.gro, md.xtc (benchmarks/make_aa_data.py).  ``--split time``
(default): the first ``--train-frac`` of the frames train the model; frames after a gap of
``--gap`` frames are the held-out test set (strict, but a short trajectory drifts: the
"floor" column shows how far the training marginal is from the test one).  ``--split
molecules``: all frames, the first ``--train-frac`` of the molecules of every block train the
model, the others (every ``--test-stride``-th frame) are the test set (no time drift; the
neighbours of test molecules were seen in training).  Test frames are coarse-grained with the mapping and backmapped ``--draws``
times (different seeds).  Compared with the held-out AA molecules (same CG input):

* JSD (base 2, 36 bins over [-pi, pi)) of every heavy-atom torsion (all a-b-c-d over heavy
  atoms), and of the hydroxyl torsion; the noise floor (JSD of the training set vs the test
  set) is printed alongside;
* kNN floor: the JSD of conformers taken from the training frames whose CG features are
  the 20 nearest to each test molecule's (the best the training data can give for this CG
  input; when the model sits at this floor, the test window is too short to show more);
* conditional JSD: the same, within the three tertiles of the CG end-to-end bead distance
  (how well the torsions follow the CG geometry), averaged over tertiles;
* bond-length / bond-angle RMS deviation from the reference per-bond mean (nm / degrees),
  next to the reference's own spread;
* stereo: % of molecules with every stereocentre as in the reference;
* clashes: intermolecular pairs < 0.08 nm and intramolecular (beyond 1-3) < 0.10 nm among
  the solute molecules, per frame;
* re-coarse-grained RMSD: bead positions of the backmapped molecules vs the CG input (nm);
* hydroxyl hydrogen bonds per molecule (H...O < 0.25 nm, O-H...O > 120 deg) to other solute
  molecules.

Baseline ("naive"): for each molecule a random training conformer, rigidly superposed onto
its beads (Kabsch; random rotation about the axis for 2 beads), no projection; also shown
after the exact projection ("naive+proj").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from multiscale.backmap.certify import chirality_signs, exclusion_matrix, find_clashes, find_stereocentres  # noqa: E402
from multiscale.backmap.engine import backmap, train  # noqa: E402
from multiscale.coarse_grain import cg_layout, coarse_grain, whole_molecules  # noqa: E402
from multiscale.geometry import dihedral  # noqa: E402
from multiscale.io import read_frames  # noqa: E402
from multiscale.mapping import load_mapping  # noqa: E402
from multiscale.topology import load_topology  # noqa: E402


def jsd(a, b, bins=36):
    p = np.histogram(a, bins, (-np.pi, np.pi))[0].astype(float)
    q = np.histogram(b, bins, (-np.pi, np.pi))[0].astype(float)
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = lambda u: np.nansum(np.where(u > 0, u * np.log2(u / m), 0.0))
    return float(0.5 * kl(p) + 0.5 * kl(q))


def heavy_torsions(mt):
    heavy = np.asarray(mt.heavy)
    adj = [set() for _ in range(mt.n_atoms)]
    for a, b in mt.bonds:
        adj[a].add(b)
        adj[b].add(a)
    out = []
    for b, c in sorted({tuple(sorted(map(int, e))) for e in mt.bonds}):
        if not (heavy[b] and heavy[c]):
            continue
        for a in sorted(adj[b] - {c}):
            for d in sorted(adj[c] - {b}):
                if heavy[a] and heavy[d] and a != d:
                    out.append((a, b, c, d))
    polar = []
    for h in range(mt.n_atoms):
        if mt.elements[h] == "H" and len(adj[h]) == 1:
            o = next(iter(adj[h]))
            if mt.elements[o] in ("O", "N"):
                for c in sorted(adj[o] - {h}):
                    for a in sorted(adj[c] - {o}):
                        if heavy[a]:
                            polar.append((a, c, o, h))
                            break
                    break
    return out, polar


def knn_pick(trainx, matrix, beads, draws, rng, k=20):
    """Indices into ``trainx`` (training conformers (N, n, 3)) for the conditional floor: for
    each test molecule (beads (M, nb, 3)) and draw, a random one of the ``k`` training
    conformers whose CG features (standardised) are nearest.  Its JSD to the reference is what
    the training frames can give at best for this CG input (up to the k-smoothing): below it,
    the test window itself is too short to tell."""
    from scipy.spatial import cKDTree

    from multiscale.backmap.features import cg_features

    f_tr = np.asarray(cg_features(np.einsum("ba,nak->nbk", matrix, trainx)))
    f_te = np.asarray(cg_features(np.asarray(beads)))
    if f_tr.shape[1] == 0:  # one bead: no features, the floor is the marginal
        return rng.integers(len(trainx), size=draws * len(f_te))
    sd = f_tr.std(0) + 1e-12
    _, nn = cKDTree(f_tr / sd).query(f_te / sd, k=min(k, len(f_tr)))
    nn = nn.reshape(len(f_te), -1)
    return np.concatenate([nn[np.arange(len(f_te)), rng.integers(nn.shape[1], size=len(f_te))] for _ in range(draws)])


def torsions(x, quads):
    q = np.array(quads).reshape(-1, 4)
    return dihedral(x[..., q[:, 0], :], x[..., q[:, 1], :], x[..., q[:, 2], :], x[..., q[:, 3], :])


def bond_angle_dev(x, ref, mt):
    b = mt.bonds
    bl = lambda z: np.linalg.norm(z[..., b[:, 1], :] - z[..., b[:, 0], :], axis=-1)
    angles = []
    adj = [set() for _ in range(mt.n_atoms)]
    for i, j in b:
        adj[i].add(j)
        adj[j].add(i)
    for c in range(mt.n_atoms):
        nb = sorted(adj[c])
        angles += [(nb[i], c, nb[j]) for i in range(len(nb)) for j in range(i + 1, len(nb))]
    ang = np.array(angles)

    def al(z):
        u = z[..., ang[:, 0], :] - z[..., ang[:, 1], :]
        v = z[..., ang[:, 2], :] - z[..., ang[:, 1], :]
        cos = (u * v).sum(-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
        return np.degrees(np.arccos(np.clip(cos, -1, 1)))

    rb, ra = bl(ref), al(ref)
    mb, ma = rb.mean(0), ra.mean(0)
    rms = lambda v, m: float(np.sqrt(np.mean((v - m) ** 2)))
    return {"bond_rms_nm": rms(bl(x), mb), "bond_rms_ref_nm": rms(rb, mb), "angle_rms_deg": rms(al(x), ma),
            "angle_rms_ref_deg": rms(ra, ma), "bond_mean_shift_nm": float(np.sqrt(np.mean((bl(x).mean(0) - mb) ** 2))),
            "angle_mean_shift_deg": float(np.sqrt(np.mean((al(x).mean(0) - ma) ** 2)))}


def hbonds(xs, mt, box):
    """Hydroxyl H-bonds per molecule to O of other molecules of the same block (per frame)."""
    hs = [h for h in range(mt.n_atoms) if mt.elements[h] == "H" and any(
        mt.elements[o] == "O" for o in np.asarray(mt.bonds)[(np.asarray(mt.bonds) == h).any(1)].ravel() if o != h)]
    os_ = [i for i in range(mt.n_atoms) if mt.elements[i] == "O"]
    if not hs or not os_:
        return float("nan")
    from scipy.spatial import cKDTree

    h_of = {}
    for a, b in mt.bonds:
        if a in hs:
            h_of[a] = b
        if b in hs:
            h_of[b] = a
    tot, n = 0, 0
    for f in range(len(xs)):
        x = xs[f]
        nm = len(x)
        O = np.mod(x[:, os_].reshape(-1, 3), box[f])
        oid = np.repeat(np.arange(nm), len(os_))
        tree = cKDTree(O, boxsize=box[f])
        for h in hs:
            H = np.mod(x[:, h], box[f])
            D = np.mod(x[:, h_of[h]], box[f])
            for i, nbrs in enumerate(tree.query_ball_point(H, 0.25)):
                for j in nbrs:
                    if oid[j] == i:
                        continue
                    u = D[i] - H[i]
                    v = O[j] - H[i]
                    u -= box[f] * np.round(u / box[f])
                    v -= box[f] * np.round(v / box[f])
                    if np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v) < np.cos(np.radians(120)):
                        tot += 1
        n += nm
    return tot / max(n, 1)


def clashes(xs, mt, box):
    ex = [exclusion_matrix(mt.n_atoms, mt.bonds, 2)]
    nm = xs.shape[1]
    mol = np.repeat(np.arange(nm), mt.n_atoms)
    loc = np.tile(np.arange(mt.n_atoms), nm)
    kind = np.zeros(nm * mt.n_atoms, int)
    inter = intra = 0
    for f in range(len(xs)):
        ip, jp = find_clashes(xs[f].reshape(-1, 3), box[f], mol, loc, kind, ex)
        inter += len(ip)
        intra += len(jp)
    return inter / len(xs), intra / len(xs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--map", required=True)
    ap.add_argument("--train-frac", type=float, default=0.75)
    ap.add_argument("--split", choices=["time", "molecules"], default="time",
                    help="hold out the last frames (time) or the last molecules of each block (molecules)")
    ap.add_argument("--test-stride", type=int, default=4, help="molecule split: every n-th frame is evaluated")
    ap.add_argument("--gap", type=int, default=5)
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--model", default=None, help="save the trained model here")
    ap.add_argument("--load", default=None, help="use this trained model instead of training")
    ap.add_argument("--env-cutoff", type=float, default=None, help="neighbour-count conditioning (nm)")
    ap.add_argument("--select-eps", type=float, default=None, help="environment-aware candidate selection weight "
                    "(default: the engine's)")
    ap.add_argument("--candidates", type=int, default=None, help="default: the engine's (1 for 1-2 beads, 2 otherwise)")
    ap.add_argument("--no-hbond-network", action="store_true", help="backmap without the hydrogen-bond network step")
    ap.add_argument("--hbond-eps", type=float, default=None, help="override the model's hydrogen-bond weight (kT)")
    ap.add_argument("--hbond-cutoff", type=float, default=None, help="set every moltype's network_cutoff (nm; 0: no network step)")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--feature-noise", type=float, default=0.02)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    d = Path(a.data)
    top = load_topology(d / "aa.top")
    mp = load_mapping(a.map)
    fr = read_frames(d / "start.gro", d / "md.xtc", expected_atoms=top.n_atoms)
    F = fr.n_frames
    from multiscale.io import Frames
    from multiscale.topology import MoleculeBlock, SystemTopology

    ttop = top
    if a.split == "time":  # train on the first frames, test on the later ones
        ntr = int(F * a.train_frac)
        tr = np.arange(ntr)
        te = np.arange(min(F - 1, ntr + a.gap), F)
        mol_test = {b.moltype.name: slice(None) for b in top.blocks}
        ftr = Frames(fr.positions[tr], fr.box[tr], fr.times[tr], fr.names, fr.resnames, fr.resids)
    else:  # all frames; train on the first molecules of every solute block, test on the others
        tr = np.arange(F)
        te = np.arange(0, F, a.test_stride)
        blocks, parts, start, mol_test = [], [], 0, {}
        for b in top.blocks:
            keep = b.count if b.moltype.is_water else max(1, int(round(b.count * a.train_frac)))
            mol_test[b.moltype.name] = slice(keep, None)
            blocks.append(MoleculeBlock(b.moltype, keep, start))
            parts.append(fr.positions[:, b.start:b.start + keep * b.moltype.n_atoms])
            start += keep * b.moltype.n_atoms
        ttop = SystemTopology(blocks, source=top.source)
        pos_tr = np.concatenate(parts, axis=1)
        ftr = Frames(pos_tr, fr.box, fr.times, np.zeros(start, str), np.zeros(start, str), np.zeros(start, int))
        ntr = F
    print(f"{d}: {F} frames; split by {a.split}: train frames {len(tr)}, test frames {len(te)}")
    t0 = time.perf_counter()
    if a.load:
        from multiscale.backmap.engine import load_model

        model = load_model(a.load, top)
    else:
        model = train(ttop, mp, ftr, seed=a.seed, epochs=a.epochs, log=print, env_cutoff=a.env_cutoff,
                      weight_decay=a.weight_decay, feature_noise=a.feature_noise, hidden=a.hidden,
                      provenance={"files": [str(d / "md.xtc")], "frames": f"0..{ntr - 1}"})
    t_train = time.perf_counter() - t0
    print(f"training: {t_train:.1f} s")
    if a.model:
        model.save(a.model)
    pos_te, box_te = fr.positions[te], fr.box[te]
    cg = coarse_grain(pos_te, box_te, top, mp, seed=a.seed)
    layout = cg_layout(top, mp)
    if a.hbond_cutoff is not None:  # the network step's pair cutoff of every moltype (0: off)
        for m in model.moltypes.values():
            m.network_cutoff = a.hbond_cutoff
    import os

    from multiscale.backmap import hbond

    for key in ("KEEP_14", "RESTORE_STEPS", "ITERATIONS", "MAX_ACCEPT", "PULL_H"):  # experiments: HB_MAX_ACCEPT=2
        v = os.environ.get(f"HB_{key}")
        if v:
            cur = getattr(hbond, key)
            setattr(hbond, key, v == "1" if isinstance(cur, bool) else type(cur)(v))
    gens, t_bm, reps_all = [], [], []
    for k in range(a.draws):
        t0 = time.perf_counter()
        aa, reps = backmap(model, top, cg.positions, cg.box, seed=a.seed + 1000 + k, candidates=a.candidates,
                           select_eps=a.select_eps, hbond_network=not a.no_hbond_network, hbond_eps=a.hbond_eps)
        t_bm.append(time.perf_counter() - t0)
        gens.append(aa)
        reps_all += reps
    results = {"data": str(d), "frames_train": int(len(tr)), "frames_test": int(len(te)), "train_seconds": t_train,
               "draws": a.draws, "moltypes": {}}
    rng = np.random.default_rng(a.seed)
    import torch

    from multiscale.backmap.place import fit_to_beads, project_exact

    for blk in layout:
        if blk.is_water:
            continue
        mt = blk.aa_block.moltype
        mm = model.moltypes[mt.name]
        ms = mol_test[mt.name]
        ref = whole_molecules(pos_te, box_te, blk.aa_block)[:, ms]  # (Ft, M, n, 3)
        gen = np.stack([whole_molecules(g, box_te, blk.aa_block)[:, ms] for g in gens])  # (D, Ft, M, n, 3)
        trm = slice(None) if a.split == "time" else slice(0, ms.start)
        trainx = whole_molecules(fr.positions[tr], fr.box[tr], blk.aa_block)[:, trm].reshape(-1, mt.n_atoms, 3)
        beads = cg.positions[:, blk.start:blk.stop].reshape(len(te), blk.count, blk.n_beads, 3)[:, ms]
        from multiscale.backmap.features import unwrap_beads

        beads = unwrap_beads(beads, box_te[:, None, :])
        nm_test = ref.shape[1]
        # naive baseline: random training conformer rigidly fitted onto the beads
        pick = rng.integers(len(trainx), size=len(te) * nm_test)
        g = torch.Generator().manual_seed(a.seed)
        bt = torch.as_tensor(beads.reshape(-1, blk.n_beads, 3))
        naive = fit_to_beads(torch.as_tensor(trainx[pick]), mm.matrix, bt, g)
        naive_p = project_exact(naive, mm.matrix, mm.operator, bt).numpy().reshape(ref.shape)
        naive = naive.numpy().reshape(ref.shape)
        hq, pq = heavy_torsions(mt)
        names = mt.atom_names
        r_t = torsions(ref, hq).reshape(-1, len(hq))
        g_t = torsions(gen, hq).reshape(-1, len(hq))
        n_t = torsions(naive, hq).reshape(-1, len(hq))
        tr_t = torsions(trainx, hq).reshape(-1, len(hq))
        k_t = tr_t[knn_pick(trainx, mm.matrix, beads.reshape(-1, blk.n_beads, 3), a.draws, rng)]
        # CG end-to-end distance tertiles for the conditional JSD
        e2e = np.linalg.norm(beads[..., -1, :] - beads[..., 0, :], axis=-1).reshape(-1)
        qs = np.quantile(e2e, [1 / 3, 2 / 3])
        strata = np.digitize(e2e, qs)
        strata_g = np.tile(strata, a.draws)
        rows = []
        for j, q in enumerate(hq):
            cj = lambda xt, st: float(np.mean([jsd(xt[st == s, j], r_t[strata == s, j]) for s in range(3)]))  # noqa: B023 (called in this iteration)
            rows.append({"torsion": "-".join(names[i] for i in q), "jsd_model": jsd(g_t[:, j], r_t[:, j]),
                         "jsd_naive": jsd(n_t[:, j], r_t[:, j]), "jsd_train_vs_test": jsd(tr_t[:, j], r_t[:, j]),
                         "jsd_knn_floor": jsd(k_t[:, j], r_t[:, j]),
                         "cond_jsd_model": cj(g_t, strata_g), "cond_jsd_naive": cj(n_t, strata),
                         "trans_ref": float(np.mean(np.abs(r_t[:, j]) > 2 * np.pi / 3)),
                         "trans_model": float(np.mean(np.abs(g_t[:, j]) > 2 * np.pi / 3)),
                         "trans_naive": float(np.mean(np.abs(n_t[:, j]) > 2 * np.pi / 3))})
        polar = []
        for q in pq:
            rt, gt, nt = (torsions(z, [q]).reshape(-1) for z in (ref, gen, naive))
            polar.append({"torsion": "-".join(names[i] for i in q), "jsd_model": jsd(gt, rt), "jsd_naive": jsd(nt, rt)})
        c, nb = find_stereocentres(mt.n_atoms, mt.bonds, mt.elements)
        stereo = {}
        if len(c):
            rs = chirality_signs(ref.reshape(-1, mt.n_atoms, 3), c, nb)
            sref = np.where((rs > 0).mean(0) >= 0.5, 1, -1)
            for name, z in (("model", gen), ("naive", naive), ("reference", ref)):
                s_ = chirality_signs(z.reshape(-1, mt.n_atoms, 3), c, nb)
                stereo[name] = float(100 * np.mean((s_ == sref).all(1)))
        recg = {}
        for name, z in (("model", gen.reshape((-1,) + ref.shape[1:])), ("naive", naive), ("naive+proj", naive_p)):
            bz = np.einsum("ba,fmak->fmbk", mm.matrix, z)
            bb = np.tile(beads, (len(z) // len(beads), 1, 1, 1))
            recg[name] = float(np.sqrt(np.mean(np.sum((bz - bb) ** 2, -1))))
        cl = {"model": clashes(gen.reshape((-1,) + ref.shape[1:]), mt, np.tile(box_te, (a.draws, 1))),
              "naive": clashes(naive, mt, box_te), "naive+proj": clashes(naive_p, mt, box_te),
              "reference": clashes(ref, mt, box_te)}
        hb = {"reference": hbonds(ref, mt, box_te), "model": hbonds(gen[0], mt, box_te), "naive": hbonds(naive, mt, box_te)}
        ba = {"model": bond_angle_dev(gen.reshape((-1,) + ref.shape[2:]), ref.reshape((-1,) + ref.shape[2:]), mt),
              "naive": bond_angle_dev(naive.reshape((-1,) + ref.shape[2:]), ref.reshape((-1,) + ref.shape[2:]), mt),
              "naive+proj": bond_angle_dev(naive_p.reshape((-1,) + ref.shape[2:]), ref.reshape((-1,) + ref.shape[2:]), mt)}
        nmol = nm_test * len(te)
        res = {"n_test_molecules": int(nmol), "torsions": rows, "polar_torsions": polar, "stereo_percent": stereo,
               "recg_rmsd_nm": recg, "clash_pairs_per_frame_inter_intra": cl, "hbonds_per_molecule": hb,
               "bonds_angles": ba, "training": mm.training}
        results["moltypes"][mt.name] = res
        # ---- print
        print(f"\n{mt.name}: {nmol} test molecules x {a.draws} draws; {len(hq)} heavy torsions")
        print(f"  {'torsion':<16s} {'JSD model':>9s} {'naive':>7s} {'floor':>7s} {'kNN':>7s} | {'condJSD':>8s} {'naive':>7s} | "
              f"{'trans% ref':>10s} {'model':>6s} {'naive':>6s}")
        for r in rows:
            print(f"  {r['torsion']:<16s} {r['jsd_model']:9.4f} {r['jsd_naive']:7.4f} {r['jsd_train_vs_test']:7.4f} "
                  f"{r['jsd_knn_floor']:7.4f} | "
                  f"{r['cond_jsd_model']:8.4f} {r['cond_jsd_naive']:7.4f} | {100 * r['trans_ref']:10.1f} "
                  f"{100 * r['trans_model']:6.1f} {100 * r['trans_naive']:6.1f}")
        for r in polar:
            print(f"  {r['torsion']:<16s} {r['jsd_model']:9.4f} {r['jsd_naive']:7.4f}   (polar H)")
        print(f"  max JSD model {max(r['jsd_model'] for r in rows):.4f}, naive {max(r['jsd_naive'] for r in rows):.4f}, "
              f"kNN floor {max(r['jsd_knn_floor'] for r in rows):.4f}; "
              f"mean cond. JSD model {np.mean([r['cond_jsd_model'] for r in rows]):.4f}, "
              f"naive {np.mean([r['cond_jsd_naive'] for r in rows]):.4f}")
        for k_, v_ in ba.items():
            print(f"  {k_:<10s} bond RMS {v_['bond_rms_nm']:.4f} nm (ref spread {v_['bond_rms_ref_nm']:.4f}), "
                  f"angle RMS {v_['angle_rms_deg']:.2f} deg (ref {v_['angle_rms_ref_deg']:.2f})")
        print(f"  stereo % correct: {stereo or 'no stereocentres'}")
        print(f"  re-CG RMSD (nm): {recg}")
        print(f"  solute clash pairs per frame (inter<0.08, intra<0.10): {cl}")
        print(f"  hydroxyl H-bonds per molecule (to other solute molecules): {hb}")
    nmol_all = sum(b.count for b in layout if not b.is_water) * len(te)
    results["backmap_seconds_per_draw"] = float(np.mean(t_bm))
    results["backmap_ms_per_molecule_incl_water"] = float(1e3 * np.mean(t_bm) / nmol_all)
    results["reports"] = [r.to_dict() for r in reps_all[:3]]
    print(f"\nbackmap: {np.mean(t_bm):.2f} s per draw of {len(te)} frames ({1e3 * np.mean(t_bm) / nmol_all:.3f} ms per "
          f"solute molecule incl. water)")
    print(reps_all[0].summary())
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

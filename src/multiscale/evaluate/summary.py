"""Headline numbers of the per-term comparison (``details.terms`` rows of :mod:`.run`): scope,
JSD mean / max, excess over the noise floor, worst term (largest excess), per molecule type."""

from __future__ import annotations

import numpy as np

from . import metrics as M

__all__ = ["summarise_terms", "NO_TERMS"]

NO_TERMS = {"jsd_scope": None, "jsd_max": None, "jsd_mean": None, "jsd_excess_max": None, "jsd_excess_mean": None,
             "worst_term": None, "wasserstein_mean": None, "jsd_floor_mean": None, "per_moltype": {}}


def _excess(row: dict) -> float:
    """JSD above the term's noise floor (the ranking key of 'worst')."""
    return M.jsd_excess(row["jsd"], row["jsd_floor"])


def summarise_terms(rows: list[dict]) -> dict:
    """Headline numbers over heavy-atom torsions of non-water molecules (fallbacks documented).
    Worst terms are those with the largest JSD excess over their noise floor (jsd - jsd_floor)."""
    scored = [r for r in rows if r["jsd"] is not None]
    scopes = [
        ("heavy_atom_torsions", lambda r: r["kind"] == "torsion" and r["heavy"] and not r["water"]),
        ("all_molecule_terms", lambda r: not r["water"]),
        ("all_terms", lambda r: True),
    ]
    for scope, pred in scopes:  # noqa: B007 (scope is used after the loop)
        sel = [r for r in scored if pred(r)]
        if sel:
            break
    else:
        return dict(NO_TERMS)
    worst = max(sel, key=_excess)
    per = {}
    for name in dict.fromkeys(r["moltype"] for r in scored):
        mine = [r for r in scored if r["moltype"] == name]
        heavy = [r for r in mine if r["kind"] == "torsion" and r["heavy"]]
        use = heavy or mine
        w = max(use, key=_excess)
        wa = max(mine, key=_excess)
        per[name] = {"scope": "heavy_atom_torsions" if heavy else "all_terms",
                     "jsd_mean": float(np.mean([r["jsd"] for r in use])), "jsd_max": max(r["jsd"] for r in use),
                     "jsd_excess_max": _excess(w), "worst_term": f"{w['kind']} {w['name']}", "worst_term_jsd": w["jsd"],
                     "n_terms": len(use),
                     "all_terms_jsd_mean": float(np.mean([r["jsd"] for r in mine])),
                     "all_terms_jsd_max": max(r["jsd"] for r in mine), "all_terms_jsd_excess_max": _excess(wa),
                     "all_terms_worst": f"{wa['kind']} {wa['name']}"}
    ws = [r["wasserstein"] for r in sel if r["wasserstein"] is not None]
    fl = [r["jsd_floor"] for r in sel if r["jsd_floor"] is not None]
    return {
        "jsd_scope": scope,
        "jsd_max": max(r["jsd"] for r in sel),
        "jsd_mean": float(np.mean([r["jsd"] for r in sel])),
        "jsd_excess_max": _excess(worst),
        "jsd_excess_mean": float(np.mean([_excess(r) for r in sel])),
        "worst_term": f"{worst['moltype']} {worst['kind']} {worst['name']}",
        "wasserstein_mean": float(np.mean(ws)) if ws else None,
        "jsd_floor_mean": float(np.mean(fl)) if fl else None,
        "per_moltype": per,
    }

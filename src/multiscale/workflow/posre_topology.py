"""The restrained AA topology of the restrained-em/-eq stages: the user's topology preprocessed by
``grompp -pp`` with ``#ifdef POSRES`` includes of per-moleculetype heavy-atom restraints added."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..errors import MultiscaleError

__all__ = ["write_restrained_topology", "add_posre_includes"]


def write_restrained_topology(aa_top: Path, structure: Path, out: Path, posres: dict[str, str], settings,
                              define: str = "") -> Path:
    """``out``: the AA topology preprocessed by grompp (-pp; every include inlined, POSRES not
    defined, ``define`` e.g. "-DFLEXIBLE" applied) with ``#ifdef POSRES / #include "posre_<mol>.itp" / #endif`` added to the
    moleculetypes in ``posres`` ({moltype: itp file name next to ``out``})."""
    from ..gromacs import render_mdp
    from ..io import atomic_write_text

    work = out.parent / f".pp-{out.stem}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        mdp = render_mdp("aa_em", {"nsteps": 0, "emtol": 1000, "define": define}, work / "pp.mdp")
        pp = work / "processed.top"
        _grompp_pp(mdp, structure, aa_top, work / "pp.tpr", pp, settings, work)
        text = pp.read_text()
        atomic_write_text(out, add_posre_includes(text, posres))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _grompp_pp(mdp, structure, top, tpr, pp, settings, cwd):
    from ..gromacs import run_tool

    run_tool("grompp", settings, log=Path(cwd) / "grompp_pp.log", cwd=cwd, stage="restrained topology",
             f=str(mdp), c=str(structure), p=str(top), o=str(tpr), pp=str(pp), po=str(Path(cwd) / "mdout.mdp"),
             maxwarn=5)


def add_posre_includes(top_text: str, posres: dict[str, str]) -> str:
    """Insert the restraint includes (on with ``-DPOSRES`` or ``-DPOSRES_<moltype>``) at the end
    of the named ``[ moleculetype ]`` blocks."""
    lines = top_text.splitlines()
    out: list[str] = []
    current = None
    expect_name = False

    def close():
        if current in posres:
            from ..backmap.restraints import posre_define_name, posre_include_text

            d = posre_define_name(current)
            out.extend(["", "; heavy-atom restraints to the backmapped positions (grompp -r), on with -DPOSRES",
                        "#ifdef POSRES", f"#define {d}", "#endif"]
                       + posre_include_text(current, posres[current]).splitlines() + [""])

    for line in lines:
        s = line.split(";", 1)[0].strip()
        m = re.match(r"^\[\s*([\w-]+)\s*\]$", s)
        if m:
            sec = m.group(1).lower()
            if sec in ("moleculetype", "system"):
                close()
                current = None
                expect_name = sec == "moleculetype"
            out.append(line)
            continue
        if expect_name and s:
            current = s.split()[0]
            expect_name = False
        out.append(line)
    close()
    missing = set(posres) - set(re.findall(r'#include "posre_([\w-]+)\.itp"', "\n".join(out)))
    if missing:
        raise MultiscaleError(f"moleculetype(s) {', '.join(sorted(missing))} not found in the preprocessed AA "
                              "topology: check system.aa_topology")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------
# the default pipeline



"""Martini 3 protein topology from the martinize2 command line, run once.

:func:`martini_topology` runs the ``martinize2`` installed next to the running Python (the
project's environment, never whatever is first on PATH) on an AA protein PDB and returns the
paths of what it wrote: the ``.top``, the molecule ``.itp`` file(s) and the CG ``.pdb``.  The
``.top`` includes ``martini.itp`` (the Martini 3 force-field file), which the caller provides.

Secondary structure: ``ss`` (one DSSP letter per residue, or one letter for all) is passed as
``-ss``; without it DSSP runs through ``-dssp``: with mdtraj when it is importable, else the
DSSP 2.x/3.x ``mkdssp`` given or found on PATH.  DSSP 4 (Debian bookworm's ``dssp`` package,
4.2.2) cannot be used: vermouth 0.15 calls ``mkdssp -i`` and parses the 2.x/3.x format.  None
available -> one-line error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import MultiscaleError
from .martinize import SOURCE_FORCE_FIELDS, guess_source_ff

__all__ = ["MartiniTopology", "dssp_option", "martini_topology", "martinize2_executable", "used_ss"]

# martinize2 options accepted as elastic=dict(...) / go=dict(...) keys (without the dash).
_ELASTIC_KEYS = {"ef", "el", "eu", "ermd", "ea", "ep", "em", "eb", "eunit"}
_GO_KEYS = {"go-eps", "go-low", "go-up", "go-res-dist", "go-backbone", "go-atomname"}
#: the Go option naming a contact-map file (``-go FILE``: the rCSU server's output, or martinize2's own
#: ``-go-write-file``) instead of the map martinize2 computes from the structure
GO_CONTACT_MAP = "contact-map"


@dataclass(frozen=True)
class MartiniTopology:
    """What one martinize2 run wrote (all paths inside ``out_dir``).

    top: the system ``.top`` (includes ``martini.itp`` and the itps); itps: molecule ``.itp``
    files in the order the ``.top`` includes them; cg_pdb: the CG structure (nm in the file as
    Angstrom, bead names BB, SC1, ...); log: martinize2's stderr; command: the argv run; ss: the
    secondary structure martinize2 used (given or from DSSP, one letter per residue, as its itp
    header states; None when the header does not say); go_itps: the Go model's
    ``go_atomtypes.itp`` and ``go_nbparams.itp`` (``go``; empty otherwise), which belong inside the
    Martini force field's ``[ atomtypes ]`` / ``[ nonbond_params ]`` with ``GO_VIRT`` defined.
    """

    top: Path
    itps: tuple[Path, ...]
    cg_pdb: Path
    log: Path
    command: tuple[str, ...]
    ss: str | None = None
    go_itps: tuple[Path, ...] = ()


def martinize2_executable() -> Path:
    """The ``martinize2`` script of the running Python environment."""
    exe = Path(sys.executable).parent / "martinize2"
    if not exe.is_file():
        raise MultiscaleError(f"martinize2 not found next to {sys.executable}: pip install 'vermouth>=0.15' into this environment")
    return exe


def _dssp_major(exe: str) -> int | None:
    """Major version of a DSSP executable (None when it does not say)."""
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(\d+)\.\d+\.\d+", out.stdout + out.stderr)
    return int(m.group(1)) if m else None


def dssp_option(dssp: str | os.PathLike | None = None) -> list[str]:
    """The martinize2 arguments that compute secondary structure here, or a one-line error.

    vermouth 0.15 runs DSSP as ``EXE -i file.pdb`` and parses the classic (2.x/3.x) output, so a
    DSSP 4 ``mkdssp`` (Debian bookworm's ``dssp`` package) cannot be used; mdtraj's DSSP can.
    """
    if dssp is not None:
        exe = shutil.which(str(dssp))
        if exe is None:
            raise MultiscaleError(f"DSSP executable {dssp} not found: install mdtraj (pip) or DSSP 2/3, or pass ss='C...'")
        if (_dssp_major(exe) or 0) >= 4:
            raise MultiscaleError(f"DSSP {exe} is version 4+, which martinize2 (vermouth) cannot call: "
                                  "pip install mdtraj (martinize2 then uses its DSSP) or pass ss='C...'")
        return ["-dssp", exe]
    try:
        import mdtraj  # noqa: F401

        return ["-dssp"]
    except ImportError:
        pass
    for name in ("mkdssp", "dssp"):
        exe = shutil.which(name)
        if exe and (_dssp_major(exe) or 0) in (2, 3):
            return ["-dssp", exe]
    raise MultiscaleError("no secondary structure for martinize2: pass ss (a DSSP string, one letter per residue, "
                          "or e.g. 'C' for all), or pip install mdtraj (martinize2 uses its DSSP; DSSP 4 mkdssp is not supported)")


def _structure_names(path: Path) -> tuple[set[str], set[str]]:
    """Atom and residue names of a PDB or GRO file (to guess the AA naming)."""
    atoms, res = set(), set()
    with open(path) as fh:
        if path.suffix.lower() == ".gro":
            lines = fh.read().splitlines()
            try:
                n = int(lines[1].split()[0])
            except (IndexError, ValueError) as e:
                raise MultiscaleError(f"{path}: not a GRO file (no atom count on line 2)") from e
            for line in lines[2:2 + n]:
                res.add(line[5:10].strip())
                atoms.add(line[10:15].strip())
        else:
            for line in fh:
                if line.startswith(("ATOM", "HETATM")):
                    atoms.add(line[12:16].strip())
                    res.add(line[17:21].strip())
    if not atoms:
        raise MultiscaleError(f"{path}: no atoms read: pass an AA protein .pdb or .gro")
    return atoms, res


def _option_args(options: dict | None, allowed: set[str], what: str) -> list[str]:
    out = []
    for k, v in (options or {}).items():
        if k not in allowed:
            raise MultiscaleError(f"martini_topology: unknown {what} option {k!r}: use one of {', '.join(sorted(allowed))}")
        out += [f"-{k}", str(v)]
    return out


def _command(aa_pdb: Path, name: str, from_ff: str, ss, dssp, elastic, go, posres: str, extra_args) -> list[str]:
    cmd = [str(martinize2_executable()), "-f", str(aa_pdb), "-x", "cg.pdb", "-o", "topol.top",
           "-from", from_ff, "-ff", "martini3001", "-name", name]
    cmd += ["-ss", ss] if ss is not None else dssp_option(dssp)
    if elastic and go:
        raise MultiscaleError("martini_topology: elastic network and Go model exclude each other: choose one")
    if elastic:
        cmd += ["-elastic"] + _option_args(elastic if isinstance(elastic, dict) else None, _ELASTIC_KEYS, "elastic")
    if go:
        cmap, opts = _go_options(go)
        cmd += ["-go"] + ([str(cmap)] if cmap else []) + _option_args(opts, _GO_KEYS, "go")
    if posres != "none":
        cmd += ["-p", posres]
    return cmd + [str(a) for a in extra_args]


def _go_options(go) -> tuple[Path | None, dict]:
    """A ``go`` argument (True, a dict of options, or a contact-map path) as (the contact-map file,
    resolved and checked, or None: martinize2 computes the contacts; the other options)."""
    opts = dict(go) if isinstance(go, dict) else {GO_CONTACT_MAP: go} if isinstance(go, (str, os.PathLike)) else {}
    path = opts.pop(GO_CONTACT_MAP, None)
    if path is None:
        return None, opts
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise MultiscaleError(f"martini_topology: Go contact-map file {p} not found: give the contact map of this chain "
                              "(the rCSU server's output, or martinize2 -go-write-file)")
    return p, opts


def _contact_rows(path: Path) -> list[list[str]]:
    """The contact lines of an rCSU contact map, split: the server's 18 columns (``R``, ids, residue
    names, chain IDs and numbers, CA distance, four CM flags, rCSU, count, model), or the 17 that
    vermouth 0.15's ``-go-write-file`` writes (no model column, which its own reader requires)."""
    rows = []
    for line in Path(path).read_text(errors="replace").splitlines():
        t = line.split()
        if len(t) in (17, 18) and t[0] == "R":
            rows.append(t)
    return rows


def contact_map_chain(path: Path) -> str:
    """The one chain ID of an rCSU contact map; one-line MultiscaleError for a map without
    contacts or of several chains."""
    chains = {c for t in _contact_rows(path) for c in (t[4], t[8])}
    if not chains:
        raise MultiscaleError(f"Go contact map {path}: no contact lines ('R' and 17 more columns, chain IDs included): give "
                              "the rCSU server's map, or martinize2 -go-write-file's of a structure with a chain ID")
    if len(chains) > 1:
        raise MultiscaleError(f"Go contact map {path}: contacts of chains {', '.join(sorted(chains))}: give the map of the "
                              "one chain this moleculetype is")
    return chains.pop()


def _readable_map(path: Path, dst: Path) -> Path:
    """``path``, or where its contact lines lack the model column (vermouth's own -go-write-file),
    a copy ``dst`` with model 0 added, which martinize2's reader takes."""
    if all(len(t) == 18 for t in _contact_rows(path)):
        return path
    lines = []
    for line in Path(path).read_text(errors="replace").splitlines():
        t = line.split()
        lines.append(line + "    0" if len(t) == 17 and t[0] == "R" else line)
    dst.write_text("\n".join(lines) + "\n")
    return dst


def _with_chain(src: Path, chain: str, dst: Path) -> Path:
    """``src`` (.gro/.pdb) written as PDB ``dst`` with every atom in chain ``chain``: vermouth matches a
    contact map's contacts by chain ID and residue number, and a .gro has no chain IDs."""
    import warnings

    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MDAnalysis' notes on missing PDB fields
        u = mda.Universe(str(src))
        if not hasattr(u.atoms, "chainIDs"):
            u.add_TopologyAttr("chainIDs")
        u.atoms.chainIDs = chain
        u.atoms.write(str(dst))
    return dst


def _included_itps(top: Path) -> list[str]:
    out = []
    for line in top.read_text().splitlines():
        s = line.strip()
        if s.startswith("#include"):
            inc = s.split(None, 1)[1].strip().strip('"')
            if inc != "martini.itp":
                out.append(inc)
    return out


def used_ss(itp: str | os.PathLike) -> str | None:
    """The secondary structure string martinize2 wrote in an itp header (``; The following sequence of
    secondary structure / ; was used for the full system: / ; CHHH...``), or None."""
    lines = Path(itp).read_text(errors="replace").splitlines()[:40]
    for i, line in enumerate(lines):
        if "was used for the full system" in line and i + 1 < len(lines):
            m = re.match(r"^;\s*([A-Z~]+)\s*$", lines[i + 1])
            return m.group(1) if m else None
    return None


def martini_topology(aa_pdb: str | os.PathLike, out_dir: str | os.PathLike, ss: str | None = None, elastic=False,
                     go=False, from_ff: str | None = None, name: str = "protein", dssp: str | None = None,
                     posres: str = "none", maxwarn=None, extra_args=(), timeout: float = 600.0) -> MartiniTopology:
    """Run martinize2 once on ``aa_pdb`` (.pdb or .gro, protein only) and put its outputs in ``out_dir``.

    ss: DSSP string for ``-ss`` (None: compute with DSSP, see :func:`dssp_option`).
    elastic: False, True, or a dict of martinize2 elastic options without the dash
    (``{"ef": 700, "eu": 0.9}``). go: False, True (contact map computed by martinize2), a dict
    of Go options (``{"go-eps": 9.414}``; ``{"contact-map": FILE}`` reads the contacts from FILE), or
    a contact-map file path.  from_ff: ``amber`` or
    ``charmm`` naming of the PDB (guessed from the names when None).  name: molecule name (the
    itp is ``{name}_0.itp`` or similar, as martinize2 names it).  maxwarn: martinize2 stops on any
    warning; pass a count or ``["inconsistent-data:1", ...]`` (``-maxwarn``) to accept known ones
    (e.g. "Overlapping modification mappings" for a C-terminal HIS, harmless for the beads).  Files are written in a
    temporary folder and moved into ``out_dir`` only when martinize2 succeeded.
    """
    aa_pdb = Path(aa_pdb).resolve()
    if not aa_pdb.is_file():
        raise MultiscaleError(f"AA structure {aa_pdb} not found: pass an existing protein .pdb or .gro")
    if aa_pdb.suffix.lower() not in (".pdb", ".ent", ".gro", ".cif"):
        raise MultiscaleError(f"AA structure {aa_pdb}: martinize2 reads .pdb, .gro or .cif, not {aa_pdb.suffix}")
    atoms, res = _structure_names(aa_pdb)
    from_ff = from_ff or guess_source_ff(atoms, res)
    if from_ff not in SOURCE_FORCE_FIELDS:
        raise MultiscaleError(f"martini_topology: from_ff must be one of {', '.join(SOURCE_FORCE_FIELDS)}, got {from_ff!r}")
    if maxwarn is not None:
        extra_args = ["-maxwarn", *([str(maxwarn)] if isinstance(maxwarn, (int, str)) else [str(m) for m in maxwarn])] + list(extra_args)
    cmd = _command(aa_pdb, name, from_ff, ss, dssp, elastic, go, posres, extra_args)
    cmap = _go_options(go)[0] if go else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".martinize2.", dir=out_dir) as tmp:
        if cmap is not None:  # martinize2 reads the structure with the contact map's chain ID
            cmd[cmd.index("-f") + 1] = str(_with_chain(aa_pdb, contact_map_chain(cmap), Path(tmp).resolve() / "aa_chain.pdb"))
            cmd[cmd.index("-go") + 1] = str(_readable_map(cmap, Path(tmp).resolve() / "contact_map.out"))
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise MultiscaleError(f"martinize2 on {aa_pdb} did not finish in {timeout:.0f} s: check the input size") from e
        tmp = Path(tmp)
        (tmp / "martinize2.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            os.replace(tmp / "martinize2.log", out_dir / "martinize2.log")
        if proc.returncode != 0 or not (tmp / "topol.top").is_file():
            lines = proc.stderr.strip().splitlines() or ["no output"]
            warns = [ln.strip() for ln in lines if "WARNING" in ln]
            what = "; ".join(warns[:3]) + (" (martinize2 stops on warnings: pass maxwarn=... if they are harmless)" if warns else "")
            raise MultiscaleError(f"martinize2 failed on {aa_pdb} (exit {proc.returncode}): {what or lines[-1].strip()} "
                                  f"(log {out_dir / 'martinize2.log'})")
        itps = _included_itps(tmp / "topol.top")
        for p in sorted(tmp.iterdir()):
            if p.is_file():
                os.replace(p, out_dir / p.name)
        cmd = [c.replace(str(tmp.resolve()), str(out_dir.resolve())) for c in cmd]  # where the inputs it read now are
    itps = tuple(out_dir / i for i in itps)
    go_itps = tuple(out_dir / n for n in ("go_atomtypes.itp", "go_nbparams.itp") if go and (out_dir / n).is_file())
    return MartiniTopology(top=out_dir / "topol.top", itps=itps, cg_pdb=out_dir / "cg.pdb", log=out_dir / "martinize2.log",
                           command=tuple(cmd), ss=used_ss(itps[0]) if itps else None, go_itps=go_itps)

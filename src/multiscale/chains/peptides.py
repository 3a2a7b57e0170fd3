"""Linear peptides from a sequence: heavy-atom PDB with PeptideBuilder, then pdb2gmx.

Used by ``scripts/make_peptide_data.py`` (training data) and the tests.  PeptideBuilder (PyPI,
MIT; with Biopython) is an optional dependency (extra ``proteins``); pdb2gmx is GROMACS's own.

Conformations: ``ppii`` (phi -75, psi 145: the common unfolded-peptide basin, no clashes),
``helix`` (-57, -47), ``extended`` (-120, 130), or ``mixed`` (each residue drawn from the three
basins with ``seed``, angles jittered by 10 deg).  Proline always gets phi -65.  ``variants``
renames residues (1-based position -> amber name, e.g. ``{4: "HID", 7: "ASH"}``) before pdb2gmx,
which then builds that protonation state (amber: HID/HIE/HIP, ASH, GLH, LYN).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import MultiscaleError

__all__ = ["AMINO_ACIDS", "CONFORMATIONS", "build_peptide_pdb", "pdb2gmx"]

#: The 20 standard amino acids (one-letter codes).
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"

CONFORMATIONS = {"ppii": (-75.0, 145.0), "helix": (-57.0, -47.0), "extended": (-120.0, 130.0)}

#: Protonation-variant residue names pdb2gmx accepts, per one-letter code (amber99sb-ildn; CHARMM36 port).
_VARIANTS = {"H": {"HID", "HIE", "HIP", "HIS", "HSD", "HSE", "HSP"}, "D": {"ASH", "ASPP"}, "E": {"GLH", "GLUP"},
             "K": {"LYN", "LSN"}, "C": {"CYX", "CYM", "CYS2"}}


def _angles(sequence: str, conformation: str, seed: int) -> tuple[list[float], list[float]]:
    n = len(sequence)
    if conformation in CONFORMATIONS:
        phi, psi = (np.full(n, v) for v in CONFORMATIONS[conformation])
    elif conformation == "mixed":
        rng = np.random.default_rng(seed)
        basins = np.array(list(CONFORMATIONS.values()))
        pick = basins[rng.integers(0, len(basins), n)]
        phi, psi = (pick + rng.normal(0.0, 10.0, pick.shape)).T
    else:
        raise MultiscaleError(f"unknown peptide conformation {conformation!r}: use one of {', '.join([*CONFORMATIONS, 'mixed'])}")
    phi = np.where(np.array(list(sequence)) == "P", -65.0, phi)
    # PeptideBuilder takes phi of residues 2..n and psi of residues 1..n-1.
    return [float(v) for v in phi[1:]], [float(v) for v in psi[:-1]]


def build_peptide_pdb(sequence: str, path: str | os.PathLike, conformation: str = "ppii", seed: int = 0,
                      variants: dict[int, str] | None = None) -> Path:
    """Write a heavy-atom PDB (Angstrom, chain A, resid 1..n, C-terminal OXT) of ``sequence``.

    sequence: one-letter codes of the 20 standard amino acids.  Returns ``path``.
    """
    try:
        import PeptideBuilder
        from Bio.PDB import PDBIO
    except ImportError as e:
        raise MultiscaleError("building peptides needs PeptideBuilder: pip install PeptideBuilder (extra 'proteins')") from e
    sequence = sequence.upper()
    bad = sorted(set(sequence) - set(AMINO_ACIDS))
    if bad or len(sequence) < 2:
        raise MultiscaleError(f"peptide sequence {sequence!r}: use >= 2 one-letter codes of {AMINO_ACIDS} (bad: {''.join(bad)})")
    variants = dict(variants or {})
    for pos, name in variants.items():
        if not 1 <= pos <= len(sequence) or name not in _VARIANTS.get(sequence[pos - 1], set()):
            raise MultiscaleError(f"peptide {sequence}: variant {name} at position {pos} does not fit residue "
                                  f"{sequence[pos - 1] if 1 <= pos <= len(sequence) else '?'}: use HID/HIE/HIP (CHARMM HSD/HSE/HSP) on H, "
                                  "ASH (ASPP) on D, GLH (GLUP) on E, LYN (LSN) on K")
    phi, psi = _angles(sequence, conformation, seed)
    structure = PeptideBuilder.make_structure(sequence, phi, psi)
    PeptideBuilder.add_terminal_OXT(structure)
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        io = PDBIO()
        io.set_structure(structure)
        io.save(str(tmp))
        # Variant names go into columns 18-21 as pdb2gmx reads them (CHARMM's ASPP/GLUP are 4 long,
        # which Biopython's 3-column field would shift).
        lines = Path(tmp).read_text().splitlines(keepends=True)
        for i, line in enumerate(lines):
            if line.startswith(("ATOM", "HETATM")) and int(line[22:26]) in variants:
                lines[i] = line[:17] + f"{variants[int(line[22:26])]:<4s}" + line[21:]
        Path(tmp).write_text("".join(lines))
    return Path(path)


def pdb2gmx(pdb: str | os.PathLike, out_dir: str | os.PathLike, forcefield: str = "amber99sb-ildn", water: str = "tip3p",
            settings=None, structure: str = "protein.gro") -> tuple[Path, Path]:
    """``gmx pdb2gmx -ignh`` on ``pdb`` in ``out_dir``: returns (topol.top, ``structure``) (.gro or .pdb).

    forcefield: a label of :data:`~.aa_forcefields.PROTEIN_FORCEFIELDS` (``amber99sb-ildn``,
    ``charmm36m``: its folder goes on GMXLIB) or any pdb2gmx ``-ff`` name.  Charged termini
    (NH3+ / COO-; with CHARMM chosen from pdb2gmx's ``-ter`` menu), protonation from residue names.
    """
    from ..gromacs import run_tool
    from .aa_forcefields import PROTEIN_FORCEFIELDS, terminus_answers

    ff = PROTEIN_FORCEFIELDS.get(forcefield)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("GMXLIB")
    lib = ff.gmxlib() if ff else None
    flags = dict(f=str(Path(pdb).resolve()), o=structure, p="topol.top", i="posre.itp", ff=ff.pdb2gmx_ff if ff else forcefield,
                 water=water, ignh=True)
    try:
        if lib:
            os.environ["GMXLIB"] = lib
        answers = None
        if ff is not None and ff.terminus_menu:  # a first pass only to read the menus (it may fail on a default pick)
            try:
                run_tool("pdb2gmx", settings=settings, cwd=out_dir, log=out_dir / "pdb2gmx.menu.log", stage="pdb2gmx",
                         input=["0"] * 64, ter=True, **flags)
            except MultiscaleError:
                pass
            answers = terminus_answers((out_dir / "pdb2gmx.menu.log").read_text(errors="replace"))
        run_tool("pdb2gmx", settings=settings, cwd=out_dir, log=out_dir / "pdb2gmx.log", stage="pdb2gmx",
                 **({"input": answers, "ter": True} if answers else {}), **flags)
    finally:
        if lib:
            if old is None:
                os.environ.pop("GMXLIB", None)
            else:
                os.environ["GMXLIB"] = old
    return out_dir / "topol.top", out_dir / structure

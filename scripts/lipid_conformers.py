"""CHARMM36-named lipid conformers from stereo SMILES (RDKit), for building bilayers and stereo hints.

The CHARMM-GUI lipid ``.itp`` files carry no coordinates. A conformer is embedded by RDKit from an
isomeric SMILES written here (sn-glycero-3-phospho lipids: glycerol C2 is R; cis C9=C10 in oleoyl;
L-serine in PS; cholesterol 3S,8S,9S,10R,13R,14S,17R,20R), then every RDKit atom gets its CHARMM
name by an element-labelled graph isomorphism with the ``.itp`` bond graph (networkx). Equivalent
atoms (methyl/methylene H, phosphate O13/O14) may swap, which changes nothing physical.

Needs ``rdkit`` and ``networkx`` (extra ``membrane``). Units: nm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multiscale.errors import MultiscaleError

# acyl chains as (written from the carbonyl carbon outward, written towards the carbonyl carbon)
PALMITOYL = ("C(=O)CCCCCCCCCCCCCCC", "CCCCCCCCCCCCCCCC(=O)")                # 16:0
OLEOYL = ("C(=O)CCCCCCC/C=C\\CCCCCCCC", "CCCCCCCC/C=C\\CCCCCCCC(=O)")     # 18:1 cis-9
LAUROYL = ("C(=O)CCCCCCCCCCC", "CCCCCCCCCCCC(=O)")                          # 12:0
HEADS = {  # written from the phosphate ester oxygen outward
    "PC": "OCC[N+](C)(C)C",
    "PE": "OCC[NH3+]",
    "PG": "OC[C@@H](O)CO",
    "PS": "OC[C@H]([NH3+])C(=O)[O-]",
}
# (head, sn-1 chain, sn-2 chain); CHARMM numbers sn-2 atoms C2x and sn-1 atoms C3x
GLYCEROLIPIDS = {
    "POPC": ("PC", PALMITOYL, OLEOYL), "POPE": ("PE", PALMITOYL, OLEOYL), "POPG": ("PG", PALMITOYL, OLEOYL),
    "POPS": ("PS", PALMITOYL, OLEOYL), "DOPC": ("PC", OLEOYL, OLEOYL), "DPPC": ("PC", PALMITOYL, PALMITOYL),
    "DLPC": ("PC", LAUROYL, LAUROYL),
}
CHOLESTEROL = "C[C@H](CCCC(C)C)[C@H]1CC[C@@H]2[C@@]1(CC[C@H]3[C@H]2CC=C4[C@@]3(CC[C@@H](C4)O)C)C"


def smiles(resname: str) -> str:
    """Isomeric SMILES of a CHARMM36 lipid residue (sn-2 glycerol carbon R)."""
    if resname == "CHL1":
        return CHOLESTEROL
    if resname not in GLYCEROLIPIDS:
        raise MultiscaleError(f"no SMILES for lipid {resname}: add it to scripts/lipid_conformers.py")
    head, sn1, sn2 = GLYCEROLIPIDS[resname]
    # sn-1 ester - C3H2 - C2H(sn-2 ester) - C1H2 - O - P(=O)(O-) - head
    return f"{sn1[1]}OC[C@H](COP(=O)([O-]){HEADS[head]})O{sn2[0]}"


@dataclass
class ItpMolecule:
    """Atom names, masses and bonds (0-based) of the first moleculetype in an ``.itp``."""

    name: str
    names: list[str]
    masses: np.ndarray
    bonds: list[tuple[int, int]]
    dihres: list[tuple[tuple[int, int, int, int], float]]

    @property
    def elements(self) -> list[str]:
        return [_element(n, m) for n, m in zip(self.names, self.masses)]


def _element(name: str, mass: float) -> str:
    for el, m in (("H", 1.008), ("C", 12.011), ("N", 14.007), ("O", 15.999), ("P", 30.974), ("S", 32.06)):
        if abs(mass - m) < 0.3:
            return el
    raise MultiscaleError(f"atom {name}: mass {mass} is not H/C/N/O/P/S")


def read_itp(path: str | Path) -> ItpMolecule:
    """Parse atoms, bonds and ``[ dihedral_restraints ]`` (inside #ifdef too) of a CHARMM-GUI itp."""
    sec, name, names, masses, bonds, dihres = None, None, [], [], [], []
    for raw in Path(path).read_text().splitlines():
        s = raw.split(";")[0].strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("["):
            sec = s.strip("[] ").lower()
            continue
        p = s.split()
        if sec == "moleculetype" and name is None:
            name = p[0]
        elif sec == "atoms":
            names.append(p[4])
            masses.append(float(p[7]))
        elif sec == "bonds":
            bonds.append((int(p[0]) - 1, int(p[1]) - 1))
        elif sec == "dihedral_restraints":
            dihres.append((tuple(int(x) - 1 for x in p[:4]), float(p[5])))
    return ItpMolecule(name, names, np.array(masses), bonds, dihres)


def dihedral(x: np.ndarray, i: int, j: int, k: int, l: int) -> float:
    """Dihedral angle i-j-k-l in degrees (x: (n, 3))."""
    b0, b1, b2 = x[i] - x[j], x[k] - x[j], x[l] - x[k]
    b1 = b1 / np.linalg.norm(b1)
    v, w = b0 - np.dot(b0, b1) * b1, b2 - np.dot(b2, b1) * b1
    return float(np.degrees(np.arctan2(np.dot(np.cross(b1, v), w), np.dot(v, w))))


def named_conformer(itp: ItpMolecule, resname: str | None = None, seed: int = 1, straighten: bool = True) -> np.ndarray:
    """Coordinates (n_atoms, 3) nm in ``itp`` atom order of one RDKit conformer of the lipid.

    ``straighten``: set every acyclic C-C-C-C torsion between sp3 carbons to 180 deg (all-trans
    tails, for packing on a grid). Raises if the SMILES and the itp graph differ, or if a
    CHARMM-GUI chirality/cis restraint (``[ dihedral_restraints ]``) is violated by > 60 deg.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdMolTransforms

    resname = resname or itp.name
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles(resname)))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.useRandomCoords = True  # long flexible chains: the eigenvalue start fails often
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise MultiscaleError(f"RDKit could not embed {resname}")
    AllChem.MMFFOptimizeMolecule(mol, maxIters=500)
    conf = mol.GetConformer()
    if straighten:
        for b in mol.GetBonds():
            a1, a2 = b.GetBeginAtom(), b.GetEndAtom()
            if b.IsInRing() or b.GetBondType() != Chem.BondType.SINGLE:
                continue
            if not all(a.GetSymbol() == "C" and a.GetHybridization() == Chem.HybridizationType.SP3 for a in (a1, a2)):
                continue
            n1 = [a.GetIdx() for a in a1.GetNeighbors() if a.GetSymbol() == "C" and a.GetIdx() != a2.GetIdx()]
            n2 = [a.GetIdx() for a in a2.GetNeighbors() if a.GetSymbol() == "C" and a.GetIdx() != a1.GetIdx()]
            if len(n1) == 1 and len(n2) == 1:
                rdMolTransforms.SetDihedralDeg(conf, n1[0], a1.GetIdx(), a2.GetIdx(), n2[0], 180.0)
    match = match_atoms(itp, mol, resname)
    xyz = np.array(conf.GetPositions()) / 10.0
    x = xyz[[match[i] for i in range(len(itp.names))]]
    for (i, j, k, l), phi0 in itp.dihres:
        d = (dihedral(x, i, j, k, l) - phi0 + 180.0) % 360.0 - 180.0
        if abs(d) > 60.0:
            raise MultiscaleError(f"{resname}: restraint {itp.names[i]}-{itp.names[j]}-{itp.names[k]}-{itp.names[l]} "
                                  f"{phi0} deg violated by the SMILES stereo ({d:+.0f} deg off)")
    return x


def match_atoms(itp: ItpMolecule, mol, resname: str) -> dict[int, int]:
    """{itp atom index: RDKit atom index} by an element-labelled graph isomorphism."""
    import networkx as nx
    from networkx.algorithms import isomorphism

    g_rd = nx.Graph()
    for a in mol.GetAtoms():
        g_rd.add_node(a.GetIdx(), el=a.GetSymbol())
    g_rd.add_edges_from((b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds())
    g_itp = nx.Graph()
    for i, el in enumerate(itp.elements):
        g_itp.add_node(i, el=el)
    g_itp.add_edges_from(itp.bonds)
    gm = isomorphism.GraphMatcher(g_itp, g_rd, node_match=lambda a, b: a["el"] == b["el"])
    if not gm.is_isomorphic():
        raise MultiscaleError(f"{resname}: the SMILES graph differs from the itp bond graph")
    return dict(gm.mapping)


def stereo_centres(itp: ItpMolecule, resname: str | None = None,
                   seed: int = 1) -> list[tuple[str, list[str], str, str]]:
    """Stereocentres as (centre, three heavy neighbours in itp order, sign of their signed volume, CIP label).

    The sign is that of ``signed_volume(x, centre, n1, n2, n3)`` in a conformer of the correct
    isomer; CIP labels from RDKit's new CIP labeler on the SMILES.
    """
    from rdkit import Chem
    from rdkit.Chem import rdCIPLabeler

    resname = resname or itp.name
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles(resname)))
    rdCIPLabeler.AssignCIPLabels(mol)
    inv = {v: k for k, v in match_atoms(itp, mol, resname).items()}
    x = named_conformer(itp, resname, seed=seed, straighten=False)
    nbr: dict[int, list[int]] = {}
    for a, b in itp.bonds:
        nbr.setdefault(a, []).append(b)
        nbr.setdefault(b, []).append(a)
    out = []
    for atom in mol.GetAtoms():
        if not atom.HasProp("_CIPCode"):
            continue
        c = inv[atom.GetIdx()]
        heavy = sorted(j for j in nbr[c] if itp.elements[j] != "H")[:3]
        sign = "+" if signed_volume(x, c, *heavy) > 0 else "-"
        out.append((itp.names[c], [itp.names[j] for j in heavy], sign, atom.GetProp("_CIPCode")))
    return sorted(out, key=lambda r: itp.names.index(r[0]))


def signed_volume(x: np.ndarray, c: int, a: int, b: int, d: int) -> float:
    """(a-c) . ((b-c) x (d-c)): its sign encodes the handedness of centre c with neighbours a, b, d."""
    return float(np.dot(x[a] - x[c], np.cross(x[b] - x[c], x[d] - x[c])))

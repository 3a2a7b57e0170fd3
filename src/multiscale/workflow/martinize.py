"""The Martini 3 topology of amino-acid chains in a cycle: martinize2, once per run.

Coarse-graining a chain gives martinize2's beads (:mod:`multiscale.classes.chain`), but the CG
topology of a cycle (:func:`multiscale.coarse_grain.write_cg_topology`) only ``#include``\\ s the
configured Martini itps.  For every amino-acid chain moleculetype that none of them defines, the
``martinize`` stage (``start: aa``: the first stage of the run) runs martinize2 once
(:func:`multiscale.chains.topology.martini_topology`) on the chain's first copy in
``system.aa_structure``, with ``system.martinize`` (``-ss`` letters, or ``ss: dssp``: martinize2's
``-dssp`` through mdtraj, the string it used written to the stage log and the itp header; elastic
network), and keeps the itp, named after the AA moleculetype, in
``OUTPUT/martinize/<moltype>/<moltype>.itp``; every coarse-grain stage then includes it after the
configured itps.  ``go`` (martinize2's virtual-site Go model) stops the planning with one line: its
CA virtual sites are not yet carried by coarse-graining and backmapping.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import MultiscaleError
from .stages import PythonStage, StageContext, StageResult, _stage_log

__all__ = ["chain_moltypes", "martinize_stage", "itp_moleculetypes", "chain_naming"]

_SECTION = re.compile(r"^\s*\[\s*([\w-]+)\s*\]")


def itp_moleculetypes(paths) -> dict[str, list[str]]:
    """{moleculetype name: atom names} of the ``[ moleculetype ]`` blocks of topology files (not following includes)."""
    out: dict[str, list[str]] = {}
    for p in paths:
        if not Path(p).is_file():
            continue
        section, current = None, None
        for line in Path(p).read_text(errors="replace").splitlines():
            s = line.split(";", 1)[0].strip()
            if not s or s.startswith("#"):
                continue
            m = _SECTION.match(s)
            if m:
                section = m.group(1).lower()
                continue
            if section == "moleculetype":
                current = s.split()[0]
                out[current] = []
                section = None
            elif section == "atoms" and current is not None:
                parts = s.split()
                if len(parts) >= 5:
                    out[current].append(parts[4])
    return out


def chain_moltypes(cfg) -> dict[str, object]:
    """{name: MoleculeType} of the AA topology's amino-acid chain moleculetypes that no mapping
    names and no configured CG itp defines (the ones martinize2 has to make); {} when the
    topology cannot be read here (the stages then report why)."""
    from ..classes.chain import is_amino_acid_chain
    from ..mapping import load_mapping
    from ..topology import load_topology

    try:
        top = load_topology(cfg.system.aa_topology)
        mapped = set(load_mapping(cfg.system.mapping_files).molecules) if cfg.system.mapping_files else set()
    except (MultiscaleError, OSError):
        return {}
    defined = itp_moleculetypes(cfg.system.cg_include_files())
    return {b.moltype.name: b.moltype for b in top.blocks
            if b.moltype.name not in mapped and b.moltype.name not in defined and is_amino_acid_chain(b.moltype)}


def chain_naming(moltypes: dict) -> str:
    """The AA naming (``amber``/``charmm``) of the chain moleculetypes (the shipped chain model to start from)."""
    from ..chains.martinize import guess_source_ff

    atoms = {a for mt in moltypes.values() for a in mt.atom_names}
    res = {r for mt in moltypes.values() for r in mt.resnames}
    return guess_source_ff(atoms, res)


def _ss(cfg, name: str) -> str:
    ss = cfg.system.martinize.ss
    if isinstance(ss, dict):
        if name not in ss:
            raise MultiscaleError(f"system.martinize.ss names no secondary structure for the chain moleculetype {name}: "
                                  f"add {name}: 'C...' (one DSSP letter per residue, or one for all)")
        return ss[name]
    return ss


def _check_dssp(ss: dict[str, str]) -> None:
    """One line when ``ss: dssp`` is asked for and martinize2 cannot run DSSP here."""
    from ..chains.topology import dssp_option

    asked = [n for n, s in ss.items() if s == "dssp"]
    if not asked:
        return
    try:
        dssp_option()
    except MultiscaleError as e:
        raise MultiscaleError(f"system.martinize.ss: dssp for {', '.join(asked)}, but martinize2 has no DSSP here: "
                              "pip install mdtraj (or multiscale[proteins]), or give the DSSP letters "
                              "(ss: 'CHHH...', one per residue, or one for all)") from e


def go_chains(cfg, martinized) -> list[str]:
    """Chain moleculetypes whose CG topology carries martinize2's Go-model virtual sites: those the
    run martinizes with ``system.martinize.go`` on, and those whose configured CG itp already has
    them (``start: cg`` from a martinize2 -go build)."""
    from ..classes.chain import go_site_count

    out = list(martinized) if cfg.system.martinize.go else []
    given = [n for n, atoms in itp_moleculetypes(cfg.system.cg_include_files()).items() if n not in out and go_site_count(atoms)]
    if given:  # only amino-acid chains of the AA topology (a one-atom CA moleculetype is calcium)
        from ..classes.chain import is_amino_acid_chain
        from ..topology import load_topology

        try:
            moltypes = load_topology(cfg.system.aa_topology).moltypes
        except (MultiscaleError, OSError):
            moltypes = {}
        out += [n for n in given if n in moltypes and is_amino_acid_chain(moltypes[n])]
    return out


def martinize_stage(cfg, root: Path, structure: Path, names: list[str]) -> PythonStage:
    """The ``martinize`` stage (cycle 1) writing ``root/martinize/<name>/<name>.itp`` per chain moleculetype."""
    from ..chains.topology import GO_CONTACT_MAP

    wdir = root / "martinize"
    m = cfg.system.martinize
    ss = {n: _ss(cfg, n) for n in names}
    _check_dssp(ss)
    outputs = {f"itp {n}": wdir / n / f"{n}.itp" for n in names}
    params = {"moltypes": list(names), "ss": ss, "elastic": m.elastic if isinstance(m.elastic, bool) else dict(m.elastic)}
    inputs = {"aa_topology": cfg.system.aa_topology, "aa_structure": structure}
    if m.go:  # the Martini force field with the chains' Go atom types and contacts included (go_forcefield)
        params["forcefield"] = forcefield_itp(cfg.system.cg_include_files())
        params["go"] = m.go if isinstance(m.go, bool) else dict(m.go)
        outputs["go forcefield"] = wdir / Path(params["forcefield"]).name
        cmap = params["go"].get(GO_CONTACT_MAP) if isinstance(params["go"], dict) else None
        if cmap is not None:
            if len(names) != 1:
                raise MultiscaleError(f"system.martinize.go.{GO_CONTACT_MAP}: a contact map describes one chain, and this run "
                                      f"martinizes {len(names)} chain moleculetypes ({', '.join(names)}): drop "
                                      f"{GO_CONTACT_MAP} (martinize2 computes each chain's contacts)")
            inputs["go_contact_map"] = Path(cmap)
    return PythonStage(name="martinize", cycle=1, workdir=wdir,
                       inputs=inputs,
                       outputs=outputs, params=params,
                       func=_run_martinize,
                       description="Martini 3 topology of the amino-acid chain(s), martinize2 on the AA start structure")


def _run_martinize(stage: PythonStage, ctx: StageContext) -> StageResult:
    from ..chains.topology import martini_topology
    from ..coarse_grain import whole_molecules
    from ..io import atomic_path, read_frames, write_frames
    from ..topology import load_topology

    top = load_topology(stage.inputs["aa_topology"])
    fr = read_frames(stage.inputs["aa_structure"], expected_atoms=top.n_atoms, label="AA structure")
    names_all, res_all, ids_all = top.per_atom("atom_names"), top.per_atom("resnames"), top.atom_resids()
    info, go_itps = {}, []
    for name in stage.params["moltypes"]:
        blk = next(b for b in top.blocks if b.moltype.name == name)
        x = whole_molecules(fr.positions[-1:], fr.box[-1:], blk)[0, 0]
        sl = slice(blk.start, blk.start + blk.moltype.n_atoms)
        work = stage.workdir / name
        work.mkdir(parents=True, exist_ok=True)
        aa = write_frames(work / f"{name}_aa.gro", x, fr.box[-1], names_all[sl], res_all[sl], ids_all[sl],
                          title=f"first {name} of {stage.inputs['aa_structure'].name}, whole")
        asked = stage.params["ss"][name]
        mt = martini_topology(aa, work / "martinize2", ss=None if asked == "dssp" else asked, elastic=stage.params["elastic"],
                              go=stage.params.get("go", False), name=name)
        go_itps.append(mt.go_itps)
        text, n_beads = _chain_itp(mt.itps, name, blk, top)
        cmd = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(mt.command))
        with atomic_path(stage.outputs[f"itp {name}"]) as tmp:
            Path(tmp).write_text(f"; {name}: Martini 3 topology by martinize2 ({cmd}), moleculetype renamed to the AA name\n"
                                 f"; secondary structure {'from DSSP' if asked == 'dssp' else 'given'}: {mt.ss or asked}\n" + text)
        how = f"ss {mt.ss or asked!r}" + (" from DSSP" if asked == "dssp" else "")
        _stage_log(stage, ctx, f"martinize2: {name} -> {stage.outputs[f'itp {name}']} ({how}, elastic {stage.params['elastic']})")
        info[name] = {"beads": n_beads, "ss": mt.ss or asked}
    if "go forcefield" in stage.outputs:
        go_forcefield(stage.params["forcefield"], go_itps, stage.outputs["go forcefield"])
        _stage_log(stage, ctx, f"Go model: {stage.outputs['go forcefield']} (the force field with the chains' Go atom types "
                               "and contact pairs)")
    return StageResult(info={"chains": len(info), "beads": sum(v["beads"] for v in info.values()),
                             "ss": {n: v["ss"] for n, v in info.items()}})


def _chain_itp(itps, name: str, blk, top) -> tuple[str, int]:
    """The text of martinize2's itp for the chain ``blk`` with its moleculetype renamed to ``name``
    (martinize2 writes ``<name>_0``), checked against the beads coarse-graining writes; and its bead count."""
    from ..classes.chain import Chain, go_site_count
    from ..mapping import Mapping

    found = {n: (p, atoms) for p in itps for n, atoms in itp_moleculetypes([p]).items()}
    if len(found) != 1:
        raise MultiscaleError(f"martinize2 wrote {len(found)} moleculetypes ({', '.join(found) or 'none'}) for {name}, not one: "
                              "check that the chain is one connected molecule in the AA start structure")
    (old, (path, atoms)), = found.items()
    beads = Chain().layout(blk, Mapping(), blk.start, str(top.source)).bead_names
    go = go_site_count(atoms)
    if list(atoms[:len(atoms) - go]) != list(beads):
        raise MultiscaleError(f"martinize2's {name} has beads {' '.join(atoms[:8])}... but coarse-graining writes "
                              f"{' '.join(list(beads)[:8])}...: report this (vermouth version?)")
    lines, section = Path(path).read_text().splitlines(), None
    for i, line in enumerate(lines):
        s = line.split(";", 1)[0].strip()
        m = _SECTION.match(s)
        if m:
            section = m.group(1).lower()
        elif section == "moleculetype" and s:
            lines[i] = line.replace(old, name, 1)
            break
    return "\n".join(lines) + "\n", len(atoms)


def forcefield_itp(includes) -> str:
    """The include among ``includes`` that defines the Martini ``[ atomtypes ]`` (the force field)."""
    for p in includes:
        if Path(p).is_file() and re.search(r"^\s*\[\s*atomtypes\s*\]", Path(p).read_text(errors="replace"), re.M):
            return str(p)
    raise MultiscaleError("system.martinize.go: none of the CG topology's includes defines [ atomtypes ] (the Martini force "
                          "field the Go atom types and contacts are added to): include martini_v3.0.0.itp")


def go_forcefield(forcefield, go_itps, out: Path) -> Path:
    """``out``: a copy of the Martini force field itp with every chain's ``go_atomtypes.itp`` appended to
    its ``[ atomtypes ]`` and ``go_nbparams.itp`` to its ``[ nonbond_params ]`` (what the GoMartini
    instructions have users edit by hand); relative ``#include`` lines of the original are made absolute."""
    from ..io import atomic_write_text

    src = Path(forcefield).resolve()
    files = [Path(f) for group in go_itps for f in group]  # a chain without contacts has no go_nbparams.itp
    types = "".join(_body(f) for f in files if f.name == "go_atomtypes.itp")
    pairs = "".join(_body(f) for f in files if f.name == "go_nbparams.itp")
    out_lines, section, added = [], None, set()

    def close():
        if section == "atomtypes" and "atomtypes" not in added:
            out_lines.append("; Go model atom types (martinize2 -go)\n" + types)
            added.add("atomtypes")
        elif section == "nonbond_params" and "nonbond_params" not in added:
            out_lines.append("; Go model contacts (martinize2 -go)\n" + pairs)
            added.add("nonbond_params")

    for line in src.read_text().splitlines(keepends=True):
        m = _SECTION.match(line.split(";", 1)[0].strip())
        if m:
            close()
            section = m.group(1).lower()
        inc = re.match(r'^(\s*#include\s+")([^"/][^"]*)(".*)$', line)
        if inc and (src.parent / inc.group(2)).is_file():
            line = f"{inc.group(1)}{(src.parent / inc.group(2)).resolve()}{inc.group(3)}\n"
        out_lines.append(line)
    close()
    if added != {"atomtypes", "nonbond_params"}:
        missing = {"atomtypes", "nonbond_params"} - added
        raise MultiscaleError(f"{src}: no [ {' ] or [ '.join(sorted(missing))} ] section to add the Go model to")
    return atomic_write_text(out, "".join(out_lines))


def _body(path: Path) -> str:
    """An itp's lines after its section header (the go_*.itp files martinize2 writes)."""
    lines = path.read_text().splitlines(keepends=True)
    return "".join(ln for ln in lines if not _SECTION.match(ln.split(";", 1)[0].strip()))

"""Mutation fuzzing of the input parsers, shared by tests/test_fuzz_parsers.py (short, hypothesis)
and benchmarks/fuzz_parsers.py (long, seeded).

A *target* couples seed inputs (the shipped example files and the toy files of conftest.py)
with a public entry point and a validity check.  An input is a list of mutation operations
applied to one seed's bytes; the property is: the entry point returns a valid object (finite
numbers, consistent shapes) or raises :class:`MultiscaleError` with a single line under 300
characters -- never another exception, never NaN output.
"""

from __future__ import annotations

import io
import random
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multiscale.errors import MultiscaleError

DATA = Path(__file__).resolve().parents[1] / "src" / "multiscale" / "data"
MAX_MESSAGE = 300

# Values a mutation may put in place of a token: wrong types, non-finite numbers, huge counts,
# section/preprocessor syntax, encodings' troublemakers.
INTERESTING = [
    "nan", "NaN", "inf", "-inf", "1e308", "1e-308", "-1", "0", "-0", "1.5", "2000000", "99999999999999999999",
    "200", "²", "٣", "", " ", "[", "]", "[ atoms ]", "[ martini ]", "[ molecules ]", "[ moleculetype ]",
    "[ atomtypes ]", '#include "toy.itp"', '#include "nope.itp"', "#ifdef X", "#endif", "#else", "#define A B",
    ";", "\\", "!", "{", "}", ":", "- ", "[1, 2]", "{a: 1}", "null", "true", "~", "&a", "*a", "!!python/none",
    "\ufeff", "\x00", "\t", "\r", "é", "C1", "A", "B", "SOL", "TOY", "HPO", "W", "x" * 400,
]
OPS = ("flip", "insert_bytes", "delete", "duplicate", "truncate", "token", "token_delete", "token_dup",
       "line_dup", "line_delete", "line_swap")


def mutate(data: bytes, ops: list[tuple[str, int, int, bytes]]) -> bytes:
    """Apply mutation ``ops`` (name, position, length/index, payload) to ``data``; positions are
    taken modulo the current size so any op applies to any input."""
    b = bytearray(data)
    for name, pos, n, payload in ops:
        size = max(len(b), 1)
        p = pos % size
        if name == "flip":
            if b:
                b[p] ^= (n % 255) + 1
        elif name == "insert_bytes":
            b[p:p] = payload
        elif name == "delete":
            del b[p:p + 1 + n % 64]
        elif name == "duplicate":
            b[p:p] = b[p:p + 1 + n % 64]
        elif name == "truncate":
            del b[p:]
        elif name in ("token", "token_delete", "token_dup"):
            toks = bytes(b).split(b" ")
            k = pos % len(toks)
            if name == "token":
                toks[k] = payload
            elif name == "token_delete":
                del toks[k]
            else:
                toks.insert(k, toks[k])
            b = bytearray(b" ".join(toks))
        else:
            lines = bytes(b).split(b"\n")
            k = pos % len(lines)
            if name == "line_dup":
                lines.insert(k, lines[k])
            elif name == "line_delete":
                del lines[k]
            else:
                j = n % len(lines)
                lines[k], lines[j] = lines[j], lines[k]
            b = bytearray(b"\n".join(lines))
    return bytes(b)


def random_ops(rng: random.Random) -> list[tuple[str, int, int, bytes]]:
    """1-4 random mutation operations (the benchmark's generator; hypothesis draws the same space)."""
    out = []
    for _ in range(rng.randint(1, 4)):
        name = rng.choice(OPS)
        if name == "insert_bytes" and rng.random() < 0.5:
            payload = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            payload = rng.choice(INTERESTING).encode("utf-8")
        out.append((name, rng.randrange(1 << 20), rng.randrange(1 << 10), payload))
    return out


def check_error(e: MultiscaleError) -> None:
    """A user error must be one line, under MAX_MESSAGE characters."""
    msg = str(e)
    assert "\n" not in msg and "\r" not in msg, f"multi-line message: {msg!r}"
    assert 0 < len(msg) < MAX_MESSAGE, f"message of {len(msg)} characters: {msg[:200]!r}..."


# ---------------------------------------------------------------------------------------------
# targets


@dataclass
class Target:
    """``seeds``: {name: bytes}; ``run(workdir, name, data)`` writes the input, calls the entry
    point and asserts the result is valid (raising MultiscaleError is a valid outcome)."""

    name: str
    seeds: dict[str, bytes]
    run: Callable[[Path, str, bytes], object]
    setup: Callable[[Path], None] | None = None


def _toy():
    from conftest import TOY_ITP, TOY_MAP, TOY_TOP

    return TOY_ITP, TOY_MAP, TOY_TOP


TOY_YAML = textwrap.dedent(
    """
    molecules:
      TOY:
        cg_name: TOY
        beads: [A, B]
        weighting: cog
        atoms: {C1: A, C2: [A, B], C3: B, O1: B, HO: B}
    water: {aa: SOL, cg: W, bead: W, per_bead: 4}
    ions: {waters_per_ion: 0}
    """
)


def _reference_topologies():
    """Toy and heptanol topologies the mappings are bound to (loaded once)."""
    global _REF_TOPS
    if _REF_TOPS is None:
        import tempfile

        from conftest import write_toy
        from multiscale.topology import load_topology

        d = Path(tempfile.mkdtemp(prefix="fuzz_ref_"))
        toy = load_topology(write_toy(d)["top"])
        hpo = load_topology(DATA / "examples" / "heptanol" / "aa.top")
        _REF_TOPS = [toy, hpo]
    return _REF_TOPS


_REF_TOPS = None


def _check_mapping(mp) -> None:
    """Every molecule mapping gives a finite weight matrix with rows summing to 1 on the
    reference topologies whose moleculetype it names (or a MultiscaleError)."""
    assert mp.water.per_bead >= 1 and mp.ions.waters_per_ion >= 0
    for top in _reference_topologies():
        for mt in top.moltypes.values():
            mm = mp.for_moltype(mt)
            if mm is None or mt.is_water:
                continue
            try:
                m = mm.matrix(mt)
            except MultiscaleError as e:
                check_error(e)
                continue
            assert m.shape == (mm.n_beads, mt.n_atoms)
            assert np.isfinite(m).all(), f"NaN/inf weights for {mm.molecule}"
            assert np.allclose(m.sum(axis=1), 1.0)


def _run_reader(read: Callable[[Path], object], check: Callable[[object], None], filename: str):
    """A target's run: write the input as ``filename``, read it with ``read``, ``check`` the result."""
    def run(d: Path, name: str, data: bytes):
        p = d / filename
        p.write_bytes(data)
        out = read(p)
        check(out)
        return out

    return run


def _run_mapping(suffix: str):
    from multiscale.mapping import load_mapping

    return _run_reader(load_mapping, _check_mapping, f"m{suffix}")


def _topology_setup(d: Path) -> None:
    itp, _, top = _toy()
    (d / "toy.itp").write_text(itp)
    (d / "toy.top").write_text(top.format(ntoy=3, nsol=8))
    # the heptanol example with its include tree, in the same relative layout
    ex = d / "examples" / "heptanol"
    ex.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "examples" / "heptanol" / "aa.top", ex / "aa.top")
    shutil.copytree(DATA / "topologies", d / "topologies", dirs_exist_ok=True)


def _check_topology(top) -> None:
    assert top.blocks and top.n_atoms > 0
    for b in top.blocks:
        mt = b.moltype
        assert b.count > 0 and mt.n_atoms > 0
        assert len(mt.elements) == len(mt.resnames) == mt.n_atoms == len(mt.masses) == len(mt.charges)
        assert np.isfinite(mt.masses).all() and np.isfinite(mt.charges).all() and (mt.masses >= 0).all()
        assert mt.bonds.ndim == 2 and mt.bonds.shape[1] == 2
        assert ((mt.bonds >= 0) & (mt.bonds < mt.n_atoms)).all()
    assert top.blocks[-1].stop == top.n_atoms


def _run_topology(d: Path, name: str, data: bytes):
    """Mutate one file of a topology with includes (the .top or an included .itp) and load the .top."""
    from multiscale.topology import load_topology

    itp, _, toptext = _toy()
    # restore the pristine files, then overwrite the mutated one
    (d / "toy.itp").write_text(itp)
    (d / "toy.top").write_text(toptext.format(ntoy=3, nsol=8))
    hpo_itp = DATA / "topologies" / "heptanol" / "HPO.itp"
    (d / "topologies" / "heptanol" / "HPO.itp").write_bytes(hpo_itp.read_bytes())
    (d / "examples" / "heptanol" / "aa.top").write_bytes((DATA / "examples" / "heptanol" / "aa.top").read_bytes())
    target, entry = {
        "toy.top": (d / "toy.top", d / "toy.top"),
        "toy.itp": (d / "toy.itp", d / "toy.top"),
        "heptanol/aa.top": (d / "examples" / "heptanol" / "aa.top", d / "examples" / "heptanol" / "aa.top"),
        "HPO.itp": (d / "topologies" / "heptanol" / "HPO.itp", d / "examples" / "heptanol" / "aa.top"),
    }[name]
    target.write_bytes(data)
    top = load_topology(entry)
    _check_topology(top)
    return top


def _check_frames(fr) -> None:
    f, n = fr.positions.shape[:2]
    assert fr.positions.shape == (f, n, 3) and f > 0
    assert np.isfinite(fr.positions).all(), "NaN/inf coordinates accepted"
    assert fr.box.shape in ((f, 3), (f, 3, 3))
    assert np.isfinite(fr.box).all(), "NaN/inf box accepted"
    diag = fr.box if fr.box.ndim == 2 else np.diagonal(fr.box, axis1=1, axis2=2)
    assert (diag > 0).all(), "non-positive box accepted"
    assert len(fr.names) == len(fr.resnames) == len(fr.resids) == n
    assert fr.times.shape == (f,)


def _run_structure(suffix: str):
    from multiscale.io import read_frames

    return _run_reader(read_frames, _check_frames, f"s{suffix}")


def _toy_gro(frames: int = 1) -> bytes:
    """The conftest toy system (3 TOY + 8 SOL) as a .gro, ``frames`` frames."""
    import tempfile

    from conftest import toy_coords
    from multiscale.io import write_frames

    with tempfile.TemporaryDirectory() as t:
        from conftest import write_toy
        from multiscale.topology import load_topology

        top = load_topology(write_toy(Path(t))["top"])
        x = np.stack([toy_coords(3, 8, seed=s) for s in range(frames)])
        p = Path(t) / "x.gro"
        write_frames(p, x if frames > 1 else x[0], [2.0, 2.0, 2.0], top.per_atom("atom_names"),
                     top.per_atom("resnames"), top.resids(), times=np.arange(frames, dtype=float) if frames > 1 else None)
        return p.read_bytes()


def _simyaml_setup(d: Path) -> None:
    _topology_setup(d)
    ex = DATA / "examples" / "heptanol"
    for name in ("aa.gro", "cg.top"):
        shutil.copy(ex / name, d / "examples" / "heptanol" / name)


def _walk_numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk_numbers(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _walk_numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def _run_simyaml(d: Path, name: str, data: bytes):
    """sim.yaml through config.load_config (the workflow's parser; not fixed on this branch)."""
    from multiscale.config import load_config

    p = d / "examples" / "heptanol" / "sim.yaml"
    p.write_bytes(data)
    cfg = load_config(p)
    assert all(np.isfinite(v) for v in _walk_numbers(cfg.model_dump())), "non-finite number accepted"
    return cfg


def _state_seed() -> bytes:
    """A real state.json: two stages of a cycle, one done (with energies), one failed."""
    import tempfile

    from multiscale.workflow.state import RunState, file_record

    with tempfile.TemporaryDirectory() as d:
        st = RunState(d)
        for f in ("aa.gro", "cycle_001/aa-em/aa-em.gro"):
            (Path(d) / f).parent.mkdir(parents=True, exist_ok=True)
            (Path(d) / f).write_text("x\n")
        st.set_plan(["cycle_001/aa-em", "cycle_001/aa-md", "cycle_001/coarse-grain"], None, None)
        st.start_run(["multiscale", "cycle", "--config", "sim.yaml"])
        st.begin("cycle_001/aa-em", 1, "aa-em", {"structure": file_record(Path(d) / "aa.gro", Path(d))}, "aa-em.log", False,
                 "AA energy minimisation")
        st.finish("cycle_001/aa-em", {"gro": file_record(Path(d) / "cycle_001/aa-em/aa-em.gro", Path(d))}, 3.2,
                  energies={"potential_kj_mol": -3.0e4, "fmax": 480.0}, info={"converged": True, "steps": 281})
        st.begin("cycle_001/aa-md", 1, "aa-md", {}, "aa-md.log", False, "AA production MD, 10 ps")
        st.fail("cycle_001/aa-md", 1.5, "gmx mdrun failed")
        st.end_run("failed")
        return (Path(d) / "state.json").read_bytes()


def _run_state(d: Path, name: str, data: bytes):
    """state.json through RunState.load and the status table (what `multiscale status` does)."""
    from rich.console import Console

    from multiscale.workflow.state import RunState
    from multiscale.workflow.status import status_table

    root = d / "run"
    root.mkdir(exist_ok=True)
    (root / "state.json").write_bytes(data)
    st = RunState.load(root)
    Console(file=io.StringIO(), width=100).print(status_table(st))
    return st


_MODEL_SEED: bytes | None = None


def _model_seed() -> bytes:
    """A small real model file: heptanol (the shipped example) trained for one epoch (built once per process)."""
    global _MODEL_SEED
    if _MODEL_SEED is None:
        import tempfile

        from multiscale.backmap.engine import train
        from multiscale.io import read_frames
        from multiscale.mapping import load_mapping
        from multiscale.topology import load_topology

        ex = DATA / "examples" / "heptanol"
        top, mp = load_topology(ex / "aa.top"), load_mapping(DATA / "mappings" / "heptanol.map")
        fr = read_frames(ex / "aa.gro", expected_atoms=top.n_atoms)
        with tempfile.TemporaryDirectory() as d:
            train(top, mp, fr, seed=0, epochs=1, log=None).save(Path(d) / "m.pt")
            _MODEL_SEED = (Path(d) / "m.pt").read_bytes()
    return _MODEL_SEED


def _run_model(d: Path, name: str, data: bytes):
    """A model file through engine.load_model (header, kind, checksum, every tensor)."""
    from multiscale.backmap.engine import load_model

    p = d / "model.pt"
    p.write_bytes(data)
    return load_model(p)


def targets(extra: bool = False) -> dict[str, Target]:
    """Every parser target of mapping/topology/io with its seeds; ``extra`` adds sim.yaml (the
    workflow's parser, benchmark only)."""
    itp, mapt, top = _toy()
    hpo_gro = DATA / "topologies" / "heptanol" / "HPO.gro"
    triclinic = _triclinic_gro(hpo_gro.read_text()).encode()
    out = {
        "map": Target("map", {"heptanol.map": (DATA / "mappings" / "heptanol.map").read_bytes(), "toy.map": mapt.encode(),
                              **{p.name: p.read_bytes() for p in sorted((DATA / "mappings").glob("lipids/POPC.map"))}},
                      _run_mapping(".map")),
        "yaml": Target("yaml", {"toy.yaml": TOY_YAML.encode(), "heptanol.yaml": _heptanol_yaml().encode()},
                       _run_mapping(".yaml")),
        "top": Target("top", {"toy.top": top.format(ntoy=3, nsol=8).encode(), "toy.itp": itp.encode(),
                              "heptanol/aa.top": (DATA / "examples" / "heptanol" / "aa.top").read_bytes(),
                              "HPO.itp": (DATA / "topologies" / "heptanol" / "HPO.itp").read_bytes()},
                      _run_topology, _topology_setup),
        "gro": Target("gro", {"HPO.gro": hpo_gro.read_bytes(), "toy.gro": _toy_gro(1), "toy3.gro": _toy_gro(3),
                              "triclinic.gro": triclinic}, _run_structure(".gro")),
        "pdb": Target("pdb", {"HPO.pdb": (DATA / "topologies" / "heptanol" / "HPO.pdb").read_bytes()},
                      _run_structure(".pdb")),
    }
    out["state"] = Target("state", {"state.json": _state_seed()}, _run_state)
    if extra:
        out["simyaml"] = Target("simyaml", {"heptanol/sim.yaml": (DATA / "examples" / "heptanol" / "sim.yaml").read_bytes()},
                                _run_simyaml, _simyaml_setup)
        out["model"] = Target("model", {"toy.pt": _model_seed()}, _run_model)
    return out


def _triclinic_gro(text: str) -> str:
    """A .gro with a rhombic-dodecahedron-like 9-number box line."""
    lines = text.rstrip("\n").split("\n")
    lines[-1] = "   3.00000   3.00000   2.12132   0.00000   0.00000   0.00000   0.00000   1.50000   1.50000"
    return "\n".join(lines) + "\n"


def _heptanol_yaml() -> str:
    """heptanol.map as a YAML mapping."""
    from multiscale.mapping import parse_map_text

    (mm,) = parse_map_text((DATA / "mappings" / "heptanol.map").read_text())
    atoms = ", ".join(f"{a}: {bs[0] if len(bs) == 1 else '[' + ', '.join(bs) + ']'}"
                      for a, bs in zip(mm.atoms, mm.assignment))
    return f"molecules:\n  HPO:\n    beads: [{', '.join(mm.beads)}]\n    atoms: {{{atoms}}}\nwater: {{per_bead: 4}}\n"


def outcome(target: Target, workdir: Path, seed_name: str, data: bytes) -> str:
    """'accepted' or 'rejected' (a valid one-line MultiscaleError); anything else propagates."""
    try:
        target.run(workdir, seed_name, data)
    except MultiscaleError as e:
        check_error(e)
        return "rejected"
    return "accepted"

"""The run configuration, ``sim.yaml``, as a typed and validated object.

:func:`load_config` reads the YAML file, resolves every relative path against the YAML file's
folder, validates everything with pydantic (unknown keys are errors) and turns the first
problem into ONE line :class:`~multiscale.errors.MultiscaleError` that names the file, the key,
the bad value and the fix, e.g. ``sim.yaml: cycles: must be >= 1, got 0``.

Every key, its type, default and unit is documented by the ``Field(description=...)`` of the
models below; ``docs/sim-yaml.md`` is generated from them (:mod:`multiscale.config_doc`,
``python scripts/make_simyaml_reference.py``). Only ``system`` is required; a worked example is
``multiscale/data/examples/heptanol/sim.yaml``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .config_errors import message, pick
from .config_errors import show as _show
from .errors import MultiscaleError

__all__ = ["Duration", "SimConfig", "load_config", "config_from_dict", "derive_seed", "CONFIG_DEFAULT_NAME"]

CONFIG_DEFAULT_NAME = "sim.yaml"


# ------------------------------------------------------------------------------------------
# durations


class Duration(BaseModel):
    """A simulation length: ``value`` in ``unit`` ('ps' or 'steps').

    In sim.yaml a length is written ``"10 ps"``, ``"1 ns"``, ``"500 fs"``, ``"5000 steps"`` or a bare
    number of ps; fs/ns/us are converted to ps, steps are kept (their time depends on the stage's dt)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    value: float = Field(description="the length in ``unit``", json_schema_extra={"unit": "ps or steps"})
    unit: Literal["ps", "steps"] = Field(description="'ps' (fs, ns and us are converted to ps) or 'steps' (MD steps of the stage's dt)")

    def steps(self, dt: float) -> int:
        """Number of MD steps of time step ``dt`` (ps); a ps length must be a whole number of steps."""
        if self.unit == "steps":
            n_steps = int(self.value)
        else:
            n = self.value / dt
            if abs(n - round(n)) > 1e-6 * max(1.0, n):
                raise MultiscaleError(f"length {self} is not a whole number of {dt} ps steps: change the length or dt")
            n_steps = int(round(n))
            if self.value > 0 and n_steps == 0:
                raise MultiscaleError(f"length {self} is shorter than one {dt} ps step: give at least {dt} ps")
        if n_steps > MAX_STEPS:
            raise MultiscaleError(f"length {self} is {n_steps:.3g} steps of {dt} ps, more than {MAX_STEPS:.0e}: "
                                  "give a shorter length")
        return n_steps

    def ps(self, dt: float) -> float:
        return self.value * dt if self.unit == "steps" else self.value

    def __str__(self) -> str:
        v = int(self.value) if float(self.value).is_integer() else self.value
        return f"{v} {self.unit}"


MAX_PS = 1e9  # 1 ms: longer is a typo (and overflows step counts)
MAX_STEPS = 10**12
_UNITS = {"fs": 1e-3, "ps": 1.0, "ns": 1e3, "us": 1e6, "µs": 1e6}
_DUR_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zµ]+)?\s*$")


def _parse_duration(v: Any) -> Any:
    if isinstance(v, Duration) or isinstance(v, dict):
        return v
    if isinstance(v, bool):
        raise ValueError(f"must be a length like '10 ps', '2 ns' or '5000 steps', got {v!r}")
    if isinstance(v, (int, float)):
        if v < 0 or not math.isfinite(v):
            raise ValueError(f"must be a length >= 0 like '10 ps', got {v!r}")
        if v > MAX_PS:
            raise ValueError(f"must be at most {MAX_PS:.0e} ps (1 ms), got {v!r}")
        return Duration(value=float(v), unit="ps")
    if isinstance(v, str):
        m = _DUR_RE.match(v)
        if m:
            num, unit = float(m.group(1)), (m.group(2) or "ps")
            if unit in ("step", "steps"):
                if not num.is_integer() or num > MAX_STEPS:
                    raise ValueError(f"must be a whole number of steps up to {MAX_STEPS:.0e}, got {v[:40]!r}")
                return Duration(value=num, unit="steps")
            if unit in _UNITS:
                if not math.isfinite(num * _UNITS[unit]) or num * _UNITS[unit] > MAX_PS:
                    raise ValueError(f"must be at most {MAX_PS:.0e} ps (1 ms), got {v[:40]!r}")
                return Duration(value=num * _UNITS[unit], unit="ps")
    raise ValueError(f"must be a length like '10 ps', '2 ns', '500 fs' or '5000 steps', got {_show(v)}")


def _positive_duration(v: Duration) -> Duration:
    if v.value <= 0:
        raise ValueError(f"must be longer than 0, got {v}")
    return v


DurationField = Annotated[Duration, BeforeValidator(_parse_duration)]
PositiveDuration = Annotated[Duration, AfterValidator(_positive_duration), BeforeValidator(_parse_duration)]


def _unit(unit: str) -> dict[str, str]:
    """``json_schema_extra`` of a physical quantity: its unit, shown in docs/sim-yaml.md."""
    return {"unit": unit}


# ------------------------------------------------------------------------------------------
# paths relative to the YAML file


def _base(info: ValidationInfo) -> Path:
    ctx = info.context or {}
    return Path(ctx.get("base", "."))


def _resolve(v: Any, info: ValidationInfo) -> Path:
    if not isinstance(v, (str, os.PathLike)) or (isinstance(v, str) and not v.strip()):
        raise ValueError(f"must be a path (string), got {v!r}")
    p = Path(os.path.expandvars(str(v))).expanduser()
    return p if p.is_absolute() else (_base(info) / p).resolve()


def _check_exists(p: Path, info: ValidationInfo, what: str = "file") -> Path:
    if (info.context or {}).get("check_files", True):
        ok = p.is_dir() if what == "folder" else p.is_file()
        if not ok:
            raise ValueError(f"{what} {p} not found (relative paths are taken from the folder of the YAML file)")
    return p


def _mapping(v: Any, info: ValidationInfo) -> Path:
    """A mapping file relative to the YAML folder, else a mapping by name from the data path
    (``mappings/`` on ``MULTISCALE_DATA_PATH``, then the shipped ones, e.g. ``heptanol.map``)."""
    p = _resolve(v, info)
    if not p.is_file() and not Path(str(v)).is_absolute():
        from .paths import find_data

        try:
            return find_data("mappings", str(v))
        except MultiscaleError:
            pass
    return _check_exists(p, info)


_NUMERIC = (int, float, Optional[int], Optional[float])
MAX_CYCLES = 10000  # more is a typo: every cycle is several stage folders and GROMACS runs
MAX_EM_STEPS = 10**9


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v, info: ValidationInfo):
        # YAML's yes/true would silently become 1 for a number field
        if isinstance(v, bool) and cls.model_fields[info.field_name].annotation in _NUMERIC:
            raise ValueError(f"must be a number, got {str(v).lower()}")
        return v


# ------------------------------------------------------------------------------------------
# sections


class MartinizeSection(_Strict):
    """How the Martini 3 topology of each amino-acid chain moleculetype is made: martinize2 runs once per run
    (``start: aa``) on the chain's first copy in ``system.aa_structure``, into ``OUTPUT/martinize/``; every cycle's
    CG topology includes the itp it wrote (moleculetype named as in the AA topology).  A chain whose moleculetype a
    ``cg_topology``/``cg_includes`` itp already defines keeps that one."""

    ss: Union[str, dict[str, str]] = Field("C", description="secondary structure passed to martinize2 ``-ss``: one "
                                           "DSSP letter per residue, or one letter for all (default 'C', coil: short or "
                                           "disordered peptides; give the DSSP string of a folded protein), or ``dssp``: "
                                           "martinize2 computes it (``-dssp``, with mdtraj: ``pip install mdtraj``) from the "
                                           "AA start structure and the stage log shows the string it used; a "
                                           "``{moltype: string}`` mapping for several chain moleculetypes")
    elastic: Union[bool, dict[str, Union[float, str]]] = Field(False, description="martinize2 elastic network: false, true, or "
                                                   "its options without the dash, e.g. ``{ef: 700, eu: 0.9}``",
                                                   json_schema_extra=_unit("ef: kJ mol^-1 nm^-2; el, eu: nm"))
    go: Union[bool, dict[str, Union[float, str]]] = Field(False, description="martinize2 Go model (``-go``, virtual-site "
                                                  "GoMartini, contact map computed by martinize2): false, true, or its "
                                                  "options without the dash, e.g. ``{go-eps: 9.414, go-up: 1.1}``, and "
                                                  "``contact-map: FILE`` to read the contacts from a contact-map file (the "
                                                  "rCSU server's, or martinize2 ``-go-write-file``'s; one chain moleculetype; "
                                                  "relative to this file's folder) instead; excludes "
                                                  "``elastic``.  In a cycle the Go atom types and contacts are added to a "
                                                  "copy of the Martini force field itp (OUTPUT/martinize/), and the CA virtual "
                                                  "sites (one per residue, on BB) are written by coarse-graining and skipped "
                                                  "by backmapping",
                                                  json_schema_extra=_unit("go-eps: kJ mol^-1; go-low, go-up: nm"))

    @field_validator("ss", mode="before")
    @classmethod
    def _ss(cls, v):
        ok = re.compile(r"^[HGIEBTSC~PF]+$")

        def one(x):
            if isinstance(x, str) and x.strip().lower() == "dssp":
                return "dssp"
            if not isinstance(x, str) or not ok.match(x):
                raise ValueError(f"must be DSSP letters (H, G, I, E, B, T, S, C, ...), one per residue or one for all, "
                                 f"or 'dssp' (martinize2 computes them), got {_show(x)}")
            return x

        return {k: one(x) for k, x in v.items()} if isinstance(v, dict) else one(v)

    @field_validator("elastic", "go", mode="before")
    @classmethod
    def _options(cls, v, info: ValidationInfo):
        from .chains.topology import _ELASTIC_KEYS, _GO_KEYS, GO_CONTACT_MAP

        allowed = _ELASTIC_KEYS if info.field_name == "elastic" else _GO_KEYS | {GO_CONTACT_MAP}
        if isinstance(v, dict):
            bad = [k for k in v if k not in allowed]
            if bad:
                raise ValueError(f"unknown martinize2 {info.field_name} option {_show(bad[0])}: use "
                                 f"{', '.join(sorted(allowed))} (without the dash), or true/false")
            if GO_CONTACT_MAP in v:  # a file, relative to the YAML folder
                v = {**v, GO_CONTACT_MAP: str(_check_exists(_resolve(v[GO_CONTACT_MAP], info), info))}
        elif not isinstance(v, bool):
            raise ValueError(f"must be true, false or a mapping of martinize2 {info.field_name} options, got {_show(v)}")
        return v

    @model_validator(mode="after")
    def _one_network(self):
        if self.elastic and self.go:
            raise ValueError("elastic and go exclude each other (martinize2 builds either an elastic network or a Go "
                             "model): set one of them to false")
        return self


class SystemSection(_Strict):
    """The molecular system: AA and CG topologies/structures, mappings, force-field folders."""

    aa_topology: Path = Field(description="GROMACS .top of the atomistic system")
    aa_structure: Optional[Path] = Field(None, description="starting AA structure (.gro); required for ``start: aa``")
    cg_topology: Optional[Path] = Field(None, description="CG template .top: its ``#include`` lines head every generated CG "
                                        "topology; required unless ``cg_includes`` is given")
    cg_includes: list[Path] = Field(default_factory=list, description="the Martini .itp files the generated CG topology "
                                    "includes, listed explicitly (instead of taking them from ``cg_topology``)")
    cg_structure: Optional[Path] = Field(None, description="starting CG structure (.gro); required for ``start: cg``")
    mappings: Union[list[Path], dict[str, Path]] = Field(
        default_factory=list,
        description="AA -> CG mapping files (.map or .yaml), one per molecule type: a list, or ``{moltype: file}``. "
                    "A name not found next to sim.yaml is taken from the data path's ``mappings/`` (e.g. heptanol.map); "
                    "water 4:1 -> W, ions and amino-acid chains (martinize2's beads) are built in, so a peptide in "
                    "salt water needs none")
    martinize: MartinizeSection = Field(default_factory=MartinizeSection, description="martinize2 options for the "
                                        "Martini topology of amino-acid chains")
    forcefield_dirs: list[Path] = Field(default_factory=list, description="folders searched for ``#include`` files "
                                        "(put on GMXLIB before GROMACS' own share/top)")

    @field_validator("aa_topology", "aa_structure", "cg_topology", "cg_structure", mode="before")
    @classmethod
    def _file(cls, v, info: ValidationInfo):
        if v is None:
            return None
        return _check_exists(_resolve(v, info), info)

    @field_validator("cg_includes", mode="before")
    @classmethod
    def _files(cls, v, info: ValidationInfo):
        if v is None:
            return []
        if isinstance(v, (str, os.PathLike)):
            v = [v]
        if not isinstance(v, list):
            raise ValueError(f"must be a list of .itp paths, got {v!r}")
        return [_check_exists(_resolve(x, info), info) for x in v]

    @field_validator("mappings", mode="before")
    @classmethod
    def _maps(cls, v, info: ValidationInfo):
        if v is None:
            return []
        if isinstance(v, (str, os.PathLike)):
            v = [v]
        if isinstance(v, dict):
            return {str(k): _mapping(x, info) for k, x in v.items()}
        if isinstance(v, list):
            return [_mapping(x, info) for x in v]
        raise ValueError(f"must be a list of .map/.yaml files or a {{moltype: file}} mapping, got {v!r}")

    @field_validator("forcefield_dirs", mode="before")
    @classmethod
    def _dirs(cls, v, info: ValidationInfo):
        if v is None:
            return []
        if isinstance(v, (str, os.PathLike)):
            v = [v]
        if not isinstance(v, list):
            raise ValueError(f"must be a list of folders, got {v!r}")
        return [_check_exists(_resolve(x, info), info, "folder") for x in v]

    @property
    def mapping_files(self) -> list[Path]:
        return list(self.mappings.values()) if isinstance(self.mappings, dict) else list(self.mappings)

    def cg_include_files(self) -> list[Path]:
        """The .itp files the generated CG topology includes: ``cg_includes`` or, if empty, the
        ``#include`` lines of ``cg_topology`` (resolved against its folder, then forcefield_dirs)."""
        if self.cg_includes:
            return list(self.cg_includes)
        if self.cg_topology is None:
            return []
        out = []
        for line in self.cg_topology.read_text(errors="replace").splitlines():
            m = re.match(r'\s*#include\s+"([^"]+)"', line)
            if not m:
                continue
            inc = Path(m.group(1))
            cands = [inc] if inc.is_absolute() else [self.cg_topology.parent / inc] + [d / inc for d in self.forcefield_dirs]
            found = next((c for c in cands if c.is_file()), None)
            out.append(found.resolve() if found else inc)
        return out


def _template(v: Any, info: ValidationInfo) -> str:
    if not isinstance(v, (str, os.PathLike)) or not str(v).strip():
        raise ValueError(f"must be an mdp template name (e.g. aa_md) or a path to an .mdp file, got {v!r}")
    s = str(v)
    if os.sep in s or s.endswith(".mdp"):
        return str(_check_exists(_resolve(s, info), info))
    if (info.context or {}).get("check_files", True):
        from .gromacs.mdp import list_templates

        if s not in list_templates():
            names = ", ".join(list_templates())
            raise ValueError(f"unknown mdp template {s!r}: use one of {names} or a path to an .mdp file")
    return s


_TPL = "mdp template for the {} stage: a shipped template name (multiscale/data/mdp/) or a path to an .mdp file"


class AATemplates(_Strict):
    """The mdp template of each atomistic stage."""

    em: str = Field("aa_em", description=_TPL.format("AA energy minimisation (aa-em)"))
    eq: str = Field("aa_nvt", description=_TPL.format("AA NVT equilibration (aa-eq)"))
    md: str = Field("aa_md", description=_TPL.format("AA production MD (aa-md)"))
    restrained_em: str = Field("aa_em", description=_TPL.format("restrained EM after backmapping (restrained-em)"))
    restrained_eq: str = Field("aa_nvt", description=_TPL.format("restrained NVT after backmapping (restrained-eq)"))
    relax: str = Field("aa_npt", description=_TPL.format("unrestrained NPT relaxation (relax)"))

    @field_validator("*", mode="before")
    @classmethod
    def _tpl(cls, v, info: ValidationInfo):
        return _template(v, info)


class CGTemplates(_Strict):
    """The mdp template of each Martini stage."""

    em: str = Field("martini_em", description=_TPL.format("CG energy minimisation (cg-em)"))
    eq: str = Field("martini_eq", description=_TPL.format("CG NPT equilibration (cg-eq)"))
    md: str = Field("martini_md", description=_TPL.format("CG production MD (cg-md)"))

    @field_validator("*", mode="before")
    @classmethod
    def _tpl(cls, v, info: ValidationInfo):
        return _template(v, info)


Scalar = Union[bool, int, float, str]


class Overrides(_Strict):
    """Template placeholder values or any mdp option, per resolution, e.g. ``aa: {tau_t: 0.1, tau_p: 2.0}``,
    ``cg: {pcoupl: "no"}``. Options multiscale computes (nsteps, dt, seeds, ref_t, ref_p, define,
    nstxout_compressed, emtol) are refused: set the sim.yaml key named in the error instead."""

    aa: dict[str, Scalar] = Field(default_factory=dict, description="mdp options/placeholders for every AA stage "
                                  "(units as in GROMACS: nm, ps, K, bar)")
    cg: dict[str, Scalar] = Field(default_factory=dict, description="mdp options/placeholders for every CG stage "
                                  "(units as in GROMACS: nm, ps, K, bar)")

    @field_validator("aa", "cg", mode="before")
    @classmethod
    def _no_computed(cls, v):
        if v is None:
            return {}
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(x, (bool, int, float, str)):
                    raise ValueError(f"{k}: must be a number, a string or true/false, got {_show(x)}")
                key = str(k).replace("-", "_").lower()
                if key in COMPUTED_MDP_KEYS:
                    raise ValueError(f"{k!r} is set by multiscale from the stage lengths/seeds: "
                                     f"{COMPUTED_MDP_KEYS[key]}")
        return v


COMPUTED_MDP_KEYS = {
    "nsteps": "set the stage length (aa.md, cg.eq, ...) instead",
    "dt": "set aa.dt / cg.dt / restrained.dt instead",
    "gen_seed": "set the top-level seed instead",
    "ld_seed": "set the top-level seed instead",
    "ref_t": "set the top-level temperature instead",
    "gen_temp": "set the top-level temperature instead",
    "ref_p": "set the top-level pressure instead",
    "define": "restraints are switched on by the restrained stages",
    "nstxout_compressed": "set aa.output_every / cg.output_every instead",
    "emtol": "set aa.emtol / cg.emtol / restrained.emtol instead",
}


class MdpSection(_Strict):
    """GROMACS run-parameter (.mdp) templates per stage, and options that override them."""

    aa: AATemplates = Field(default_factory=AATemplates, description="templates of the atomistic stages")
    cg: CGTemplates = Field(default_factory=CGTemplates, description="templates of the Martini stages")
    overrides: Overrides = Field(default_factory=Overrides, description="mdp options set on top of the templates")


class AASection(_Strict):
    """Atomistic stages: EM + NVT equilibration (first cycle, start: aa) and production MD."""

    dt: float = Field(0.002, gt=0, le=0.005, description="MD time step of aa-eq and aa-md", json_schema_extra=_unit("ps"))
    em_steps: int = Field(1000, ge=0, le=MAX_EM_STEPS, description="maximum steepest-descent steps of aa-em",
                          json_schema_extra=_unit("steps"))
    emtol: float = Field(500.0, gt=0, le=1e9, description="aa-em stops when the largest force is below this",
                         json_schema_extra=_unit("kJ mol^-1 nm^-1"))
    eq: DurationField = Field("10 ps", description="NVT equilibration with new velocities (first cycle, start: aa only); "
                              "0: no equilibration steps", json_schema_extra=_unit("ps"))
    md: PositiveDuration = Field("10 ps", description="AA production MD per cycle; its frames are the backmapping "
                                 "training data", json_schema_extra=_unit("ps"))
    output_every: PositiveDuration = Field("1 ps", description="interval of saved aa-md frames (nstxout-compressed)",
                                           json_schema_extra=_unit("ps"))
    energy_every: PositiveDuration = Field("0.1 ps", description="interval of energy output (nstenergy; log every 10th) "
                                           "of the AA and restrained stages", json_schema_extra=_unit("ps"))


class CGSection(_Strict):
    """Martini stages: EM, equilibration (smaller dt, new velocities) and production MD; by default at the
    constant volume of the box the AA segment left (``volume: aa``, see docs/cycle-physics.md)."""

    dt: float = Field(0.02, gt=0, le=0.04, description="MD time step of cg-md", json_schema_extra=_unit("ps"))
    eq_dt: float = Field(0.01, gt=0, le=0.04, description="MD time step of cg-eq (smaller, for the freshly mapped "
                         "structure)", json_schema_extra=_unit("ps"))
    em_steps: int = Field(1000, ge=0, le=MAX_EM_STEPS, description="maximum steepest-descent steps of cg-em",
                          json_schema_extra=_unit("steps"))
    emtol: float = Field(100.0, gt=0, le=1e9, description="cg-em stops when the largest force is below this",
                         json_schema_extra=_unit("kJ mol^-1 nm^-1"))
    eq: DurationField = Field("50 ps", description="equilibration with new velocities, every cycle; 0: no equilibration steps",
                              json_schema_extra=_unit("ps"))
    volume: Literal["aa", "own"] = Field("aa", description="box of cg-eq and cg-md: 'aa' keeps the volume of the box "
                                         "the AA segment left (constant volume, pcoupl = no), so only AA NPT sets the AA "
                                         "density; 'own' lets the Martini barostat (C-rescale, ref_p) move it to Martini's "
                                         "own density, which backmapping then hands to the AA side (docs/cycle-physics.md)")
    md: PositiveDuration = Field("1 ns", description="CG production MD per cycle; its last frame is backmapped",
                                 json_schema_extra=_unit("ps"))
    output_every: PositiveDuration = Field("20 ps", description="interval of saved cg-md frames (nstxout-compressed)",
                                           json_schema_extra=_unit("ps"))
    energy_every: PositiveDuration = Field("2 ps", description="interval of energy output (nstenergy; log every 10th) "
                                           "of the CG stages", json_schema_extra=_unit("ps"))


class RestrainedSection(_Strict):
    """After backmapping: restrained EM, restrained NVT (heavy atoms held at their backmapped
    positions, ``force_constant`` kJ mol^-1 nm^-2), then an unrestrained relaxation (NVT by default)."""

    em_steps: int = Field(2000, ge=0, le=MAX_EM_STEPS, description="maximum steepest-descent steps of restrained-em",
                          json_schema_extra=_unit("steps"))
    emtol: float = Field(1000.0, gt=0, le=1e9, description="restrained-em stops when the largest force is below this",
                         json_schema_extra=_unit("kJ mol^-1 nm^-1"))
    eq: DurationField = Field("2 ps", description="restrained NVT (heavy atoms held at their backmapped positions); "
                              "0: no equilibration steps", json_schema_extra=_unit("ps"))
    dt: float = Field(0.001, gt=0, le=0.005, description="MD time step of restrained-eq", json_schema_extra=_unit("ps"))
    relax: DurationField = Field("20 ps", description="unrestrained relaxation before the next AA production (neat "
                                 "octan-2-ol: hydroxyl H-bonds within ~10 % of the AA liquid after ~20 ps, docs/hbonds.md); "
                                 "0: no relaxation steps", json_schema_extra=_unit("ps"))
    relax_ensemble: Literal["nvt", "npt"] = Field("nvt", description="'nvt': relax at the volume of the box the last AA "
                                                  "segment left, so the pressure of the freshly backmapped structure "
                                                  "cannot expand the box (docs/cycle-physics.md); 'npt': C-rescale "
                                                  "barostat at ``pressure``")
    relax_dt: float = Field(0.002, gt=0, le=0.005, description="MD time step of relax", json_schema_extra=_unit("ps"))
    force_constant: float = Field(1000.0, ge=0, le=1e7, description="heavy-atom position-restraint force constant "
                                  "(posre_<moltype>.itp, under -DPOSRES)", json_schema_extra=_unit("kJ mol^-1 nm^-2"))
    flexible_water_em: bool = Field(True, description="restrained-em with flexible water (-DFLEXIBLE), so backmapped "
                                    "water geometry can relax; the MD stages keep rigid water")


class BackmapSection(_Strict):
    """The backmapping model: where it comes from, how it is trained on the AA MD, where it runs."""

    model: Optional[Path] = Field(None, description="a trained model (.pt) to start from; null: the shipped models "
                                  "(amino-acid chains, lipids, water, ions) until the run has trained its own")
    train_from_cycle: int = Field(1, ge=0, le=MAX_CYCLES, description="train on the AA MD of this cycle (and, with "
                                  "``fine_tune``, every later one); 0: never train (use ``model``, or the shipped models)")
    fine_tune: bool = Field(False, description="false: train once, on the AA MD of ``train_from_cycle`` only; true: "
                            "fine-tune on every later cycle too (later AA segments start from backmapped structures, so "
                            "this feeds the model's own bias back into it: heavy torsions drift, docs/cycle-physics.md)")
    epochs: Optional[int] = Field(None, ge=1, le=100000, description="training epochs per cycle (later cycles fine-tune); "
                                  "null: the engine's default (sized by the amount of data)")
    samples: Optional[int] = Field(None, ge=1, le=10**9, description="AA MD frames used for training per cycle, evenly "
                                   "spaced; null: all")
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1, description="base seed of training and backmapping; null: "
                                "the top-level ``seed``")
    device: str = Field("cpu", description="torch device of training and backmapping, e.g. cpu, cuda, cuda:1")

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, v, info: ValidationInfo):
        if v is None:
            return None
        return _check_exists(_resolve(v, info), info)


class GpuSection(_Strict):
    """mdrun GPU offload flags; the whole section null (the default) runs mdrun without them."""

    nb: Optional[Literal["gpu", "cpu", "auto"]] = Field("gpu", description="mdrun -nb (non-bonded); null: not passed")
    pme: Optional[Literal["gpu", "cpu", "auto"]] = Field(None, description="mdrun -pme (PME); null: not passed")
    bonded: Optional[Literal["gpu", "cpu", "auto"]] = Field(None, description="mdrun -bonded; null: not passed")
    update: Optional[Literal["gpu", "cpu", "auto"]] = Field(None, description="mdrun -update (integration and "
                                                             "constraints); null: not passed")
    gpu_id: Optional[str] = Field(None, description="mdrun -gpu_id, e.g. \"0\" or \"01\"; null: not passed")

    @field_validator("gpu_id", mode="before")
    @classmethod
    def _gid(cls, v):
        return None if v is None else str(v)

    def args(self) -> list[str]:
        out: list[str] = []
        for k in ("nb", "pme", "bonded", "update"):
            if getattr(self, k):
                out += [f"-{k}", getattr(self, k)]
        if self.gpu_id:
            out += ["-gpu_id", self.gpu_id]
        return out


class GromacsSection(_Strict):
    """How GROMACS is called: executables, MPI launcher, threads, GPU offload, time limit."""

    gmx: str = Field("gmx", description="GROMACS driver for grompp and the tools (name on PATH or a path)")
    mdrun_gmx: Optional[str] = Field(None, description="driver for mdrun, e.g. gmx_mpi; null: ``gmx``")
    launcher: str = Field("", description="command put before mdrun, e.g. \"srun\" or \"mpirun -np 4\"; empty: none")
    nt: Optional[int] = Field(None, ge=1, le=100000, description="mdrun -nt (total threads); null: GROMACS chooses")
    ntomp: Optional[int] = Field(None, ge=1, le=100000, description="mdrun -ntomp (OpenMP threads per rank); null: "
                                 "GROMACS chooses")
    maxh: Optional[float] = Field(None, gt=0, le=1e6, description="mdrun -maxh: wall-time limit of each mdrun call "
                                  "(``multiscale cycle --maxh`` sets a total budget instead)", json_schema_extra=_unit("h"))
    gpu: Optional[GpuSection] = Field(None, description="GPU offload flags; null: none (CPU, or GROMACS' own choice)")
    extra_mdrun_args: list[str] = Field(default_factory=list, description="more mdrun arguments, a list or one string, "
                                        "e.g. [\"-pin\", \"on\"]")

    @field_validator("extra_mdrun_args", mode="before")
    @classmethod
    def _split(cls, v):
        import shlex

        if v is None:
            return []
        if isinstance(v, str):
            return shlex.split(v)
        if isinstance(v, list):
            return [str(x) for x in v]
        return v

    @field_validator("launcher", mode="before")
    @classmethod
    def _launcher(cls, v):
        return "" if v is None else v

    def settings(self, maxh: float | None = None):
        """A :class:`multiscale.gromacs.GromacsSettings` (``maxh`` overrides the configured one)."""
        from .gromacs import GromacsSettings

        extra = list(self.extra_mdrun_args) + (self.gpu.args() if self.gpu else [])
        return GromacsSettings(gmx=self.gmx, mdrun_gmx=self.mdrun_gmx, launcher=self.launcher, nt=self.nt,
                               ntomp=self.ntomp, maxh=maxh if maxh is not None else self.maxh,
                               extra_mdrun_args=extra)


class SimConfig(_Strict):
    """The whole ``sim.yaml``. Relative paths are taken from the folder of the YAML file."""

    system: SystemSection = Field(description="the molecular system: topologies, structures, mappings")
    output: Path = Field(Path("runs"), description="output root; cycle_NNN/<stage>/ folders (and replica_<n>/ for "
                         "array replicas) go here")
    cycles: int = Field(1, ge=1, le=MAX_CYCLES, description="number of AA -> CG -> AA round trips")
    start: Literal["aa", "cg"] = Field("aa", description="aa: start from system.aa_structure; cg: from "
                                       "system.cg_structure (needs backmap.model)")
    seed: int = Field(2024, ge=0, le=2**63 - 1, description="every stage's seed is derived from it (and the replica, "
                      "cycle and stage)")
    temperature: float = Field(300.0, gt=0, le=10000, description="reference temperature of all stages (ref_t, gen_temp)",
                               json_schema_extra=_unit("K"))
    pressure: float = Field(1.0, gt=0, le=1e5, description="reference pressure of all NPT stages (ref_p)",
                            json_schema_extra=_unit("bar"))
    mdp: MdpSection = Field(default_factory=MdpSection, description="mdp templates per stage and option overrides")
    aa: AASection = Field(default_factory=AASection, description="atomistic stages: lengths, time step, EM")
    cg: CGSection = Field(default_factory=CGSection, description="Martini stages: lengths, time steps, EM")
    restrained: RestrainedSection = Field(default_factory=RestrainedSection, description="the stages after backmapping")
    backmap: BackmapSection = Field(default_factory=BackmapSection, description="the backmapping model")
    gromacs: GromacsSection = Field(default_factory=GromacsSection, description="how GROMACS is run")

    source: Optional[Path] = Field(None, exclude=True, description="the YAML file read (set by load_config, not a key)")

    @field_validator("output", mode="before")
    @classmethod
    def _out(cls, v, info: ValidationInfo):
        return _resolve(v, info)

    @model_validator(mode="after")
    def _cross(self):
        s = self.system
        if self.start == "aa" and s.aa_structure is None:
            raise ValueError("system.aa_structure: required when start is 'aa': give the starting AA structure (.gro)")
        if self.start == "cg" and s.cg_structure is None:
            raise ValueError("system.cg_structure: required when start is 'cg': give the starting CG structure (.gro)")
        if s.cg_topology is None and not s.cg_includes:
            raise ValueError("system.cg_topology: required (or list system.cg_includes): the Martini .itp files the CG topology includes")
        return self

    # -- helpers used by the workflow --------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    def root(self, replica: int | None = None) -> Path:
        """Output root of this run (``output/replica_<n>`` for array replicas)."""
        return self.output / f"replica_{replica}" if replica is not None else self.output

    def stage_seed(self, cycle: int, stage: str, replica: int | None = None) -> int:
        return derive_seed(self.seed, replica, cycle, stage)

    def trains_in(self, cycle: int) -> bool:
        """Whether a model is trained (or fine-tuned) on this cycle's AA MD segment."""
        first = self.backmap.train_from_cycle
        return first >= 1 and (cycle == first or (self.backmap.fine_tune and cycle > first))

    def gmxlib(self) -> str:
        """GMXLIB value for grompp: forcefield_dirs, the existing GMXLIB, GROMACS' own share/top, then the
        fetched force-field cache (CHARMM36 port)."""
        from .topology import gromacs_share_top

        parts = [str(d) for d in self.system.forcefield_dirs]
        if os.environ.get("GMXLIB"):
            parts += [p for p in os.environ["GMXLIB"].split(":") if p]
        share = gromacs_share_top()
        if share:
            parts.append(share)
        from .topology import fetched_forcefield_dirs

        parts += fetched_forcefield_dirs()  # the CHARMM36 port, when fetched (multiscale topology --forcefield charmm36m)
        seen, out = set(), []
        for p in parts:
            if p not in seen:
                seen.add(p)
                out.append(p)
        return ":".join(out)

    def digest(self) -> str:
        """sha256 of the validated config (paths resolved), for the state file."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


def derive_seed(base: int, replica: int | None, cycle: int, stage: str) -> int:
    """A reproducible seed in [1, 2**31 - 2] from the config seed, replica, cycle and stage name."""
    h = hashlib.sha256(f"{base}|{replica if replica is not None else '-'}|{cycle}|{stage}".encode()).digest()
    return int.from_bytes(h[:8], "big") % (2**31 - 2) + 1


# ------------------------------------------------------------------------------------------
# loading and error messages


def config_from_dict(data: Any, base: str | os.PathLike = ".", source: str = "sim.yaml",
                     check_files: bool = True) -> SimConfig:
    """Validate a config mapping; relative paths resolve against ``base``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MultiscaleError(f"{source}: must be a YAML mapping of keys (system:, cycles:, ...), got {type(data).__name__}")
    try:
        return SimConfig.model_validate(data, context={"base": str(Path(base).resolve()), "check_files": check_files})
    except ValidationError as exc:
        msg = message(pick(exc.errors(include_url=False)))
        raise MultiscaleError(f"{source}: {msg if len(msg) <= 280 else msg[:277] + '...'}") from None
    except OSError as exc:  # e.g. a path longer than the file system allows
        raise MultiscaleError(f"{source}: a path in the config cannot be used ({exc.strerror or type(exc).__name__}): "
                              f"shorten or fix the paths") from None


def load_config(path: str | os.PathLike) -> SimConfig:
    """Read and validate ``sim.yaml``. Raises one-line :class:`MultiscaleError` on any problem."""
    import yaml

    p = Path(path).expanduser()
    if p.is_dir():
        p = p / CONFIG_DEFAULT_NAME
    if not p.is_file():
        raise MultiscaleError(f"config file {path} not found: give the path to sim.yaml, or create one with "
                              f"`multiscale init --example heptanol DIR`")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MultiscaleError(f"{p.name}: not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MultiscaleError(f"{p.name}: invalid YAML{where}: {problem}") from None
    cfg = config_from_dict(data, base=p.parent, source=p.name)
    cfg.source = p.resolve()
    return cfg

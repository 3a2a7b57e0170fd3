"""The default AA -> CG -> AA stage list of a cycle (:func:`multiscale.workflow.stages.default_pipeline`).

:class:`_PipelineBuilder` appends the stages of every cycle in run order, one method per block
(AA MD, coarse-grain, train, CG EM/EQ/MD, backmap + restrained EM/EQ + relax); the stage
classes and the Python stage functions live in :mod:`.stages`.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MultiscaleError
from .stages import MdrunStage, PythonStage, Stage, _run_backmap, _run_coarse_grain, _run_train  # noqa: F401


def _steps(d, dt: float, what: str) -> int:
    try:
        return d.steps(dt)
    except MultiscaleError as exc:
        raise MultiscaleError(f"{what}: {exc}") from None


def _named_inputs(kind: str, paths) -> dict[str, Path]:
    """{"<kind> <file name>": path} (a prime added to repeated names)."""
    out: dict[str, Path] = {}
    for p in paths:
        name = f"{kind} {Path(p).name}"
        while name in out:
            name += "'"
        out[name] = Path(p)
    return out


class _PipelineBuilder:
    """Builds :func:`default_pipeline`'s stage list: one method per block of stages (AA MD,
    coarse-grain, train, CG EM/EQ/MD, backmap + restrained EM/EQ + relax), appended in run order."""

    AA_DEFAULTS = {"tau_t": 0.1, "tau_p": 2.0}
    CG_DEFAULTS = {"tau_t": 1.0, "tau_p": 4.0}

    def __init__(self, cfg, root: Path, replica: int | None):
        from ..gromacs import resolve_template

        self.cfg, self.root, self.replica = cfg, root, replica
        self.tpl = cfg.mdp
        for t in list(vars(self.tpl.aa).values()) + list(vars(self.tpl.cg).values()):
            resolve_template(t)
        self.aa_top = cfg.system.aa_topology
        self.stages: list[Stage] = []
        self.model_path: Path | None = cfg.backmap.model
        # file contents the Python stages depend on beyond their structure/topology inputs
        self.mapping_inputs = _named_inputs("mapping", cfg.system.mapping_files)
        self.cg_include_inputs = _named_inputs("cg_include", [p for p in cfg.system.cg_include_files() if Path(p).is_file()])
        # amino-acid chains: martinize2 makes their Martini itps (workflow.martinize); training starts from the shipped chain model
        from .martinize import chain_moltypes

        self.chains = chain_moltypes(cfg)
        self.chain_itps: dict[str, Path] = {}
        from .martinize import go_chains

        self.go = go_chains(cfg, self.chains)  # chains with martinize2's Go virtual sites in their CG topology
        self.go_forcefield: tuple[str, Path] | None = None
        self._shipped_ok = False  # the shipped models were checked against the AA topology

    # -- helpers ------------------------------------------------------------------------------
    def wd(self, cycle: int, name: str) -> Path:
        return self.root / f"cycle_{cycle:03d}" / name

    def seed(self, cycle: int, name: str, base: int | None = None) -> int:
        from ..config import derive_seed

        return derive_seed(self.cfg.seed if base is None else base, self.replica, cycle, name)

    def md_values(self, cycle, name, length, dt, every, energy_every, defaults, define="", what=""):
        nsteps = _steps(length, dt, what)
        nstx = _steps(every, dt, what.rsplit(".", 1)[0] + ".output_every") if every is not None else 0
        nste = max(1, _steps(energy_every, dt, what.rsplit(".", 1)[0] + ".energy_every"))
        return {**defaults, "nsteps": nsteps, "dt": dt, "ref_t": self.cfg.temperature, "ref_p": self.cfg.pressure,
                "gen_seed": self.seed(cycle, name), "nstxout_compressed": nstx, "nstenergy": min(nste, max(nsteps, 1)),
                "nstlog": min(nste * 10, max(nsteps, 1)), "define": define}

    def aa_mdrun(self, cycle, name, template, values, structure, topology=None, restraint=None, minim=False, desc="",
                 defaults=None):
        """An AA MdrunStage; ``defaults``: mdp options the user's mdp.overrides.aa replace."""
        over = dict(self.cfg.mdp.overrides.aa)
        lower = {k.lower().replace("_", "-") for k in over}
        options = {k: v for k, v in (defaults or {}).items() if k.lower().replace("_", "-") not in lower} | over
        values, options = _semiisotropic(values, options, "4.5e-5")
        st = MdrunStage(name=name, cycle=cycle, workdir=self.wd(cycle, name), template=template, values=values,
                        mdp_options=options, structure=structure,
                        topology=self.aa_top if topology is None else topology, restraint=restraint,
                        minimisation=minim, description=desc)
        self.stages.append(st)
        return st

    def cg_mdrun(self, cycle, name, template, values, structure, topology, minim=False, desc=""):
        options = dict(self.cfg.mdp.overrides.cg)
        if not minim and self.cfg.cg.volume == "aa" and not any(k.lower() == "pcoupl" for k in options):
            options = {"pcoupl": "no"} | options  # the AA box's volume (docs/cycle-physics.md)
        values, options = _semiisotropic(values, options, "3e-4")
        st = MdrunStage(name=name, cycle=cycle, workdir=self.wd(cycle, name), template=template, values=values,
                        mdp_options=options, structure=structure, topology=topology,
                        minimisation=minim, description=desc, resolution="cg")
        self.stages.append(st)
        return st

    # -- blocks -------------------------------------------------------------------------------
    def aa_start(self):
        aa, tpl = self.cfg.aa, self.tpl
        em = self.aa_mdrun(1, "aa-em", tpl.aa.em, {"nsteps": aa.em_steps, "emtol": aa.emtol, "define": ""},
                           self.cfg.system.aa_structure, minim=True, desc="AA energy minimisation")
        eq = self.aa_mdrun(1, "aa-eq", tpl.aa.eq, self.md_values(1, "aa-eq", aa.eq, aa.dt, None, aa.energy_every,
                                                                self.AA_DEFAULTS, what="aa.eq"),
                           em.outputs["gro"], desc=f"AA NVT equilibration, {aa.eq}")
        return eq

    def aa_md(self, c, start_gro):
        aa = self.cfg.aa
        return self.aa_mdrun(c, "aa-md", self.tpl.aa.md,
                             self.md_values(c, "aa-md", aa.md, aa.dt, aa.output_every, aa.energy_every,
                                            self.AA_DEFAULTS, what="aa.md"),
                             start_gro, desc=f"AA production MD, {aa.md}")

    def train(self, c, md):
        cfg = self.cfg
        if not cfg.trains_in(c):
            return
        inputs = {"aa_topology": self.aa_top, "aa_structure": md.outputs["gro"], "trajectory": md.outputs["xtc"],
                  **self.mapping_inputs, **self.cg_include_inputs}  # the CG itps fix the model's bead order
        if self.model_path is not None:
            inputs["init_model"] = self.model_path
        elif self.chains:  # fine-tune the shipped chain model rather than train chains from 51 frames of one peptide
            inputs["init_model"] = self._shipped_chain_model()
        elif (lipids := self._shipped_lipid_model()) is not None:  # likewise the shipped lipid model (the others fill in on loading)
            inputs["init_model"] = lipids
        st = PythonStage(name="train", cycle=c, workdir=self.wd(c, "train"), inputs=inputs,
                         outputs={"model": self.wd(c, "train") / "model.pt"},
                         params={"epochs": cfg.backmap.epochs, "samples": cfg.backmap.samples,
                                 "seed": self.seed(c, "train", cfg.backmap.seed), "device": cfg.backmap.device,
                                 "mappings": [str(p) for p in cfg.system.mapping_files]},
                         func=_run_train,
                         description=("fine-tune" if "init_model" in inputs else "train") + " the backmapping model on this cycle's AA MD")
        self.stages.append(st)
        self.model_path = st.outputs["model"]

    def _shipped_chain_model(self) -> Path:
        from ..chains.shipped import SHIPPED, shipped_model_path
        from .martinize import chain_naming

        naming = chain_naming(self.chains)
        path = shipped_model_path(naming)
        if path is None:
            raise MultiscaleError(f"the amino-acid chain(s) {', '.join(self.chains)} use {naming} atom names, for which multiscale "
                                  f"ships no chain model (shipped: {', '.join(SHIPPED)}): set backmap.model to a model "
                                  "trained on this protein (multiscale train)")
        return Path(path)

    def _shipped_lipid_model(self) -> Path | None:
        """The shipped lipid model file covering a lipid of the AA topology, if any."""
        from ..backmap.shipped import shipped_lipid_file
        from ..classes import lipid_mapping
        from ..topology import load_topology

        try:
            top = load_topology(self.aa_top)
        except (MultiscaleError, OSError):
            return None
        for mt in top.moltypes.values():
            if lipid_mapping(mt) is not None:
                p = shipped_lipid_file(mt.name)
                if p is not None:
                    return Path(p)
        return None

    def _go_params(self) -> dict:
        """Stage params naming the chains with Go virtual sites (none: no key, so older runs resume unchanged)."""
        return {"go_chains": list(self.go)} if self.go else {}

    def _check_shipped(self, c: int) -> None:
        """One line, before anything runs, when the shipped models do not cover the AA topology."""
        from ..backmap.shipped import shipped_models
        from ..topology import load_topology

        if self._shipped_ok:
            return
        try:
            shipped_models(load_topology(self.aa_top), self.cfg.system.mapping_files)
        except MultiscaleError as exc:
            raise MultiscaleError(f"cycle {c} backmaps before any training and backmap.model is not set, so it needs the "
                                  f"shipped models, but {exc}; or set backmap.model") from None
        self._shipped_ok = True

    def martinize(self, structure: Path):
        """The martinize stage (once per run) for the chains no configured CG itp defines."""
        from .martinize import martinize_stage

        if not self.chains:
            return
        st = martinize_stage(self.cfg, self.root, structure, list(self.chains))
        self.stages.append(st)
        self.chain_itps = {n: st.outputs[f"itp {n}"] for n in self.chains}
        if "go forcefield" in st.outputs:  # (the force field it replaces, its copy with the Go types and contacts)
            self.go_forcefield = (st.params["forcefield"], st.outputs["go forcefield"])

    def coarse_grain(self, c, md):
        cfg, wd = self.cfg, self.wd
        st = PythonStage(name="coarse-grain", cycle=c, workdir=wd(c, "coarse-grain"),
                         inputs={"aa_topology": self.aa_top, "aa_structure": md.outputs["gro"], **self.mapping_inputs,
                                 **self.cg_include_inputs, **{f"chain_itp {n}": p for n, p in self.chain_itps.items()},
                                 **({"go_forcefield": self.go_forcefield[1]} if self.go_forcefield else {})},
                         outputs={"gro": wd(c, "coarse-grain") / "cg.gro", "top": wd(c, "coarse-grain") / "cg.top"},
                         params={"seed": self.seed(c, "coarse-grain"), "mappings": [str(p) for p in cfg.system.mapping_files],
                                 "includes": [str(p) for p in cfg.system.cg_include_files()], **self._go_params(),
                                 **({"go_replaces": self.go_forcefield[0]} if self.go_forcefield else {})},
                         func=_run_coarse_grain, description="map the last AA frame onto Martini beads")
        self.stages.append(st)
        return st

    def cg_segment(self, c, cg_gro, cg_top):
        cg, tpl, d = self.cfg.cg, self.tpl, self.CG_DEFAULTS
        ens = "NVT (AA box)" if cg.volume == "aa" else "NPT"
        em = self.cg_mdrun(c, "cg-em", tpl.cg.em, {"nsteps": cg.em_steps, "emtol": cg.emtol, "define": ""},
                           cg_gro, cg_top, minim=True, desc="CG energy minimisation")
        eq = self.cg_mdrun(c, "cg-eq", tpl.cg.eq, self.md_values(c, "cg-eq", cg.eq, cg.eq_dt, None, cg.energy_every, d,
                                                                what="cg.eq"),
                           em.outputs["gro"], cg_top, desc=f"CG {ens} equilibration, {cg.eq}")
        return self.cg_mdrun(c, "cg-md", tpl.cg.md, self.md_values(c, "cg-md", cg.md, cg.dt, cg.output_every,
                                                                   cg.energy_every, d, what="cg.md"),
                             eq.outputs["gro"], cg_top, desc=f"CG {ens} production MD, {cg.md}")

    def backmap(self, c, cg_md):
        cfg, rs, aa, tpl = self.cfg, self.cfg.restrained, self.cfg.aa, self.tpl
        inputs = {"aa_topology": self.aa_top, "cg_structure": cg_md.outputs["gro"]}
        if self.model_path is not None:
            inputs["model"] = self.model_path
        else:  # no model given or trained yet: the shipped ones, with the run's own mappings
            self._check_shipped(c)
            inputs.update(self.mapping_inputs)
        wdir = self.wd(c, "backmap")
        bm = PythonStage(name="backmap", cycle=c, workdir=wdir, inputs=inputs,
                         outputs={"gro": wdir / "backmapped.gro", "top": wdir / "restrained.top",
                                  "top_em": wdir / "restrained-em.top", "report": wdir / "backmap-report.json"},
                         params={"seed": self.seed(c, "backmap", cfg.backmap.seed), "force_constant": rs.force_constant,
                                 "flexible_water_em": rs.flexible_water_em, "device": cfg.backmap.device, **self._go_params()},
                         func=_run_backmap, description="backmap the last CG frame (+ heavy-atom restraints)")
        self.stages.append(bm)
        rem = self.aa_mdrun(c, "restrained-em", tpl.aa.restrained_em,
                            {"nsteps": rs.em_steps, "emtol": rs.emtol, "define": "-DPOSRES"},
                            bm.outputs["gro"], topology=bm.outputs["top_em"], restraint=bm.outputs["gro"], minim=True,
                            desc="EM, heavy atoms restrained to the backmapped positions")
        req = self.aa_mdrun(c, "restrained-eq", tpl.aa.restrained_eq,
                            self.md_values(c, "restrained-eq", rs.eq, rs.dt, None, aa.energy_every, self.AA_DEFAULTS,
                                           define="-DPOSRES", what="restrained.eq"),
                            rem.outputs["gro"], topology=bm.outputs["top"], restraint=bm.outputs["gro"],
                            desc=f"NVT {rs.eq}, heavy atoms restrained")
        return self.aa_mdrun(c, "relax", tpl.aa.relax,
                             self.md_values(c, "relax", rs.relax, rs.relax_dt, None, aa.energy_every, self.AA_DEFAULTS,
                                            what="restrained.relax"),
                             req.outputs["gro"], desc=f"unrestrained {rs.relax_ensemble.upper()} {rs.relax}",
                             defaults={"pcoupl": "no"} if rs.relax_ensemble == "nvt" else None)  # docs/cycle-physics.md

    # -- the two orders -----------------------------------------------------------------------
    def build(self) -> list[Stage]:
        cfg = self.cfg
        if cfg.start == "aa":
            self.martinize(cfg.system.aa_structure)
            prev = self.aa_start().outputs["gro"]
            for c in range(1, cfg.cycles + 1):
                md = self.aa_md(c, prev)
                cgs = self.coarse_grain(c, md)
                self.train(c, md)
                cg_md = self.cg_segment(c, cgs.outputs["gro"], cgs.outputs["top"])
                prev = self.backmap(c, cg_md).outputs["gro"]
            return self.stages
        cg_gro, cg_top = cfg.system.cg_structure, cfg.system.cg_topology
        if cg_top is None:
            raise MultiscaleError("system.cg_topology: required when start is 'cg' (the topology of system.cg_structure)")
        if self.chains:
            raise MultiscaleError(f"system.cg_topology: with start 'cg' its includes must define the Martini moleculetype(s) "
                                  f"{', '.join(self.chains)} (e.g. martinize2's itp, renamed to the AA moleculetype name)")
        for c in range(1, cfg.cycles + 1):
            cg_md = self.cg_segment(c, cg_gro, cg_top)
            rel = self.backmap(c, cg_md)
            md = self.aa_md(c, rel.outputs["gro"])
            self.train(c, md)
            if c < cfg.cycles:
                cgs = self.coarse_grain(c, md)
                cg_gro, cg_top = cgs.outputs["gro"], cgs.outputs["top"]
        return self.stages


def _semiisotropic(values: dict, options: dict, compressibility: str) -> tuple[dict, dict]:
    """Membranes (``pcoupltype: semiisotropic`` among the mdp overrides): the pressure of the
    sim.yaml for both the x-y plane and z, and the template's compressibility for both unless the
    overrides give one."""
    key = next((k for k in options if k.lower().replace("_", "-") == "pcoupltype"), None)
    if key is None or str(options[key]).strip().lower() != "semiisotropic" or "ref_p" not in values:
        return values, options
    values = {**values, "ref_p": f"{values['ref_p']} {values['ref_p']}"}
    if not any(k.lower().replace("_", "-") == "compressibility" for k in options):
        options = {**options, "compressibility": f"{compressibility} {compressibility}"}
    return values, options


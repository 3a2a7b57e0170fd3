"""GROMACS driver: mdp templates, grompp/mdrun through GromacsWrapper, result parsing.

GromacsWrapper is imported lazily (first grompp/mdrun call), never at import time.
"""

from multiscale.gromacs.mdp import list_templates, render_mdp, resolve_template, template_placeholders
from multiscale.gromacs.results import count_warnings, em_result, final_energies, read_xvg
from multiscale.gromacs.runner import (
    GromacsSettings,
    MdrunResult,
    check_gmx,
    gromacs_error_summary,
    grompp,
    mdrun,
    run_tool,
)

__all__ = [
    "GromacsSettings",
    "MdrunResult",
    "check_gmx",
    "count_warnings",
    "em_result",
    "final_energies",
    "gromacs_error_summary",
    "grompp",
    "list_templates",
    "mdrun",
    "read_xvg",
    "render_mdp",
    "resolve_template",
    "run_tool",
    "template_placeholders",
]

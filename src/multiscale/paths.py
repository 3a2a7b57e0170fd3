"""Where the project's data folders live (mdp templates, topologies, examples).

The data root is the repository checkout (``src/multiscale/paths.py`` -> three levels up). Set
the environment variable ``MULTISCALE_DATA`` to a folder holding ``mdp_templates/``,
``topologies/`` and ``examples/`` to use another copy (e.g. for a non-editable install).
"""

from __future__ import annotations

import os
from pathlib import Path

from multiscale.errors import MultiscaleError

ENV_VAR = "MULTISCALE_DATA"
_MARKER = "mdp_templates"


def repo_root() -> Path:
    """The data root: ``$MULTISCALE_DATA`` if set, else the repository checkout.

    Raises :class:`MultiscaleError` if neither holds an ``mdp_templates/`` folder.
    """
    override = os.environ.get(ENV_VAR)
    if override:
        root = Path(override).expanduser().resolve()
        if not (root / _MARKER).is_dir():
            raise MultiscaleError(
                f"{ENV_VAR}={override} has no {_MARKER}/ folder: point {ENV_VAR} at a multiscale "
                "checkout (the folder holding mdp_templates/, topologies/, examples/)"
            )
        return root
    here = Path(__file__).resolve()
    for candidate in (here.parents[2], here.parent / "data"):
        if (candidate / _MARKER).is_dir():
            return candidate
    raise MultiscaleError(
        f"cannot find the multiscale data folders ({_MARKER}/, topologies/) next to {here}: "
        f"install from a checkout with `pip install -e .` or set {ENV_VAR} to a checkout"
    )


def mdp_template_dir() -> Path:
    """Folder of the ``*.mdp`` templates rendered by :func:`multiscale.gromacs.render_mdp`."""
    return repo_root() / "mdp_templates"


def topologies_dir() -> Path:
    """Folder of the shipped force-field files (``martini3/``, ``heptanol/``, ``water/``)."""
    return repo_root() / "topologies"


def examples_dir() -> Path:
    """Folder of the example systems (``heptanol/``)."""
    return repo_root() / "examples"

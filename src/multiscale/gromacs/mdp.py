"""Render the ``*.mdp`` templates (Python :class:`string.Template`) to run files.

Templates ship in ``multiscale/data/mdp/``; a user's own ``mdp/NAME.mdp`` on
``MULTISCALE_DATA_PATH`` overrides them (:func:`multiscale.paths.find_data`).

Templates use ``$name`` / ``${name}`` placeholders; each template lists its placeholders and
their units in its header comment. Values are formatted as GROMACS expects: booleans become
``yes``/``no``, lists/tuples are joined by spaces, everything else goes through ``str``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any

from multiscale.errors import MultiscaleError

__all__ = ["render_mdp", "resolve_template", "template_placeholders", "list_templates"]


def list_templates() -> list[str]:
    """Names (without ``.mdp``) of the templates: shipped ones and those on ``MULTISCALE_DATA_PATH``."""
    from multiscale.paths import list_data

    return sorted(Path(n).stem for n in list_data("mdp", "*.mdp"))


def resolve_template(template: str | os.PathLike) -> Path:
    """Path of a template given as a shipped name (``"aa_md"``) or as a path to an .mdp file."""
    if isinstance(template, Path) or os.sep in str(template) or str(template).endswith(".mdp"):
        path = Path(template).expanduser()
        if not path.is_file():
            raise MultiscaleError(f"mdp template {path} not found: check the path")
        return path
    from multiscale.paths import find_data, search_path

    try:
        return find_data("mdp", f"{template}.mdp")
    except MultiscaleError:
        where = ", ".join(str(r / "mdp") for r in search_path())
        raise MultiscaleError(
            f"unknown mdp template '{template}' (no {template}.mdp in {where}): use one of "
            f"{', '.join(list_templates())} or a path to an .mdp file"
        ) from None


def _load(path: Path) -> Template:
    return Template(path.read_text())


def template_placeholders(template: str | os.PathLike) -> list[str]:
    """Sorted placeholder names used by a template (e.g. ``['dt', 'nsteps', ...]``)."""
    tpl = _load(resolve_template(template))
    names = set()
    for m in tpl.pattern.finditer(tpl.template):
        name = m.group("named") or m.group("braced")
        if name:
            names.add(name)
    return sorted(names)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " ".join(_format(v) for v in value)
    return str(value)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        # mkstemp creates 0600: keep an existing file's mode, else the usual rw-r--r--
        os.chmod(tmp, (path.stat().st_mode & 0o777) if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def render_mdp(template: str | os.PathLike, values: Mapping[str, Any], out_path: str | os.PathLike) -> Path:
    """Render an mdp template with ``values`` and write it atomically to ``out_path``.

    ``template`` is a shipped template name (``"aa_md"``, resolved in
    :func:`multiscale.paths.find_data`, user folders first) or a path to an .mdp template. Keys may use
    ``-`` or ``_`` (``nstxout-compressed`` == ``nstxout_compressed``); extra keys are ignored.
    A placeholder without a value (missing or ``None``) raises :class:`MultiscaleError` naming
    the template and the key. Returns ``out_path``.
    """
    path = resolve_template(template)
    tpl = _load(path)
    vals = {str(k).replace("-", "_"): v for k, v in values.items()}
    missing = [n for n in template_placeholders(path) if vals.get(n) is None]
    if missing:
        raise MultiscaleError(
            f"mdp template {path.name} needs a value for '{missing[0]}'"
            + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else "")
            + ": add it to the mdp settings in the config"
        )
    try:
        text = tpl.substitute({k: _format(v) for k, v in vals.items()})
    except ValueError as exc:  # a stray "$" in the template
        raise MultiscaleError(f"mdp template {path} is malformed ({exc}): write a literal $ as $$") from exc
    return atomic_write_text(Path(out_path), text)

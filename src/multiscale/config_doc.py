"""``docs/sim-yaml.md``: the sim.yaml reference, generated from the pydantic models of :mod:`multiscale.config`.

Every key's type, default, constraints (``gt``/``ge``/``lt``/``le``), unit (the field's
``json_schema_extra={"unit": ...}``) and meaning (its ``Field(description=...)``) come from the
models themselves, so the page cannot drift from the validation. Regenerate it with
``python scripts/make_simyaml_reference.py``; ``tests/test_config_doc.py`` fails when it is stale.
"""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .config import COMPUTED_MDP_KEYS, MAX_PS, Duration, Overrides, SimConfig, _positive_duration

__all__ = ["reference_markdown", "config_sections", "reachable_models", "DOC_PATH"]

DOC_PATH = Path("docs") / "sim-yaml.md"
REGENERATE = "python scripts/make_simyaml_reference.py"
_SCALARS = {str: "string", int: "integer", float: "number", bool: "true/false", Path: "path", type(None): "null"}


def _model_in(ann: Any) -> type[BaseModel] | None:
    """The config model a field annotation holds (directly or in an Optional), else None; Duration is a value."""
    for c in (ann, *get_args(ann)):
        if isinstance(c, type) and issubclass(c, BaseModel) and c is not Duration:
            return c
    return None


def config_sections(model: type[BaseModel] = SimConfig, prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """``(dotted key, model)`` of the top level and every nested section, depth first in field order."""
    out = [(prefix, model)]
    for name, f in model.model_fields.items():
        sub = _model_in(f.annotation)
        if sub is not None and not f.exclude:
            out += config_sections(sub, f"{prefix}.{name}" if prefix else name)
    return out


def reachable_models() -> list[type[BaseModel]]:
    """Every model reachable from SimConfig, value models (Duration) included."""
    return [m for _, m in config_sections()] + [Duration]


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _title(key: str) -> str:
    return f"`{key}`" if key else "Top level"


class _LiteralValue:
    """One allowed value of a Literal, so Literal alternatives render like Union ones."""

    def __init__(self, value: Any):
        self.value = value


def _alternatives(ann: Any) -> list[Any]:
    if get_origin(ann) in (Union, types.UnionType):
        return [x for a in get_args(ann) for x in _alternatives(a)]
    if get_origin(ann) is Literal:
        return [_LiteralValue(a) for a in get_args(ann)]
    return [ann]


def type_text(ann: Any, anchors: dict[type, str] | None = None, nested: bool = False) -> str:
    """A readable type: ``number``, ``path or null``, ``aa or cg``, ``list of path``, ``mapping string → path``."""
    alts = _alternatives(ann)
    if len(alts) > 1:
        parts = [type_text(a, anchors, nested=True) for a in alts]
        text = ", ".join(parts[:-1]) + " or " + parts[-1]
        return f"({text})" if nested else text
    ann = alts[0]
    if isinstance(ann, _LiteralValue):
        return f"`{ann.value}`"
    origin, args = get_origin(ann), get_args(ann)
    if origin is list:
        return f"list of {type_text(args[0], anchors, nested=True)}"
    if origin is dict:
        return f"mapping {type_text(args[0], anchors, True)} → {type_text(args[1], anchors, True)}"
    if ann is Duration:
        return "[duration](#durations)"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return f"[section](#{(anchors or {}).get(ann, '')})"
    return _SCALARS.get(ann, getattr(ann, "__name__", str(ann)))


def _num(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if v == 2**63 - 1:
        return "2^63-1"
    s = f"{v:g}" if isinstance(v, float) or abs(v) >= 10**6 else str(v)
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", s)


_BOUNDS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))  # pydantic's annotated_types Gt, Ge, Lt, Le


def constraints_text(f: FieldInfo) -> str:
    """``> 0, ≤ 0.005`` from the field's bounds (and a positive Duration's ``> 0``)."""
    out = []
    for m in f.metadata:
        for attr, op in _BOUNDS:
            if getattr(m, attr, None) is not None:
                out.append(f"{op} {_num(getattr(m, attr))}")
        if getattr(m, "func", None) is _positive_duration:
            out.append("> 0")
    return ", ".join(out)


def default_text(f: FieldInfo) -> str:
    if f.is_required():
        return "**required**"
    v = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
    if v is PydanticUndefined:
        return "**required**"
    if isinstance(v, BaseModel):
        return "see section"
    if v is None:
        return "`null`"
    if isinstance(v, (bool, int, float)):
        return f"`{_num(v)}`"
    if isinstance(v, (list, dict)):
        return f"`{v!r}`" if v else ("`[]`" if isinstance(v, list) else "`{}`")
    return f'`"{v}"`' if v == "" else f"`{v}`"


def _md(text: str) -> str:
    """Docstring/description text as one markdown table cell: RST ``x`` to `x`, pipes escaped, one line."""
    return " ".join(text.replace("``", "`").replace("|", "\\|").split())


def _unit(f: FieldInfo) -> str:
    extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
    return str(extra.get("unit", ""))


def _section(key: str, model: type[BaseModel], anchors: dict[type, str]) -> list[str]:
    lines = [f"## {_title(key)}", ""]
    doc = inspect.getdoc(model) or ""
    if doc:
        lines += [_md(doc.split("\n\n")[0]), ""]
    lines += ["| key | type | default | unit | meaning |", "|---|---|---|---|---|"]
    for name, f in model.model_fields.items():
        if f.exclude:
            continue
        typ = type_text(f.annotation, anchors)
        bounds = constraints_text(f)
        typ = f"{typ}, {bounds}" if bounds else typ
        lines.append(f"| `{name}` | {typ} | {default_text(f)} | {_unit(f)} | {_md(f.description or '')} |")
    lines.append("")
    if model is Overrides:
        lines += ["Options multiscale sets itself (refused in `overrides`):", "", "| mdp option | set instead |", "|---|---|"]
        lines += [f"| `{k}` | {_md(v)} |" for k, v in COMPUTED_MDP_KEYS.items()] + [""]
    return lines


_INTRO = """\
# sim.yaml reference

<!-- generated from the pydantic models in src/multiscale/config.py by {regen}; do not edit by hand -->

`sim.yaml` configures `multiscale cycle`. Only `system` is required; every other key has the default
shown. Unknown keys are errors (with a did-you-mean), relative paths are taken from the folder of the
YAML file, and units are nm, ps, K, bar, kJ/mol. A worked example with comments:
[`examples/heptanol/sim.yaml`](../src/multiscale/data/examples/heptanol/sim.yaml)
(`multiscale init --example heptanol DIR` copies it).

Sections: {contents}
"""

_DURATIONS = """\
## Durations

Keys of type *duration* take a length: `"10 ps"`, `"1 ns"`, `"500 fs"`, `"2 us"`, `"5000 steps"` or a bare
number of ps (`10` is 10 ps). fs, ns and us are converted to ps, at most {max_ps} ps (1 ms); a length in ps
must be a whole number of the stage's time steps, and `steps` count steps of the stage's `dt`.
"""


def reference_markdown() -> str:
    """The text of docs/sim-yaml.md: one table per sim.yaml section (key | type | default | unit | meaning)."""
    sections = config_sections()
    anchors = {model: _anchor(_title(key)) for key, model in sections}
    contents = ", ".join(f"[{_title(k)}](#{anchors[m]})" for k, m in sections) + ", [durations](#durations)."
    lines = [_INTRO.format(regen=REGENERATE, contents=contents)]
    for key, model in sections:
        lines += _section(key, model, anchors)
    lines.append(_DURATIONS.format(max_ps=_num(MAX_PS)))
    return "\n".join(lines)

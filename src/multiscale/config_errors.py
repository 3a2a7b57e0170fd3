"""One-line messages for pydantic validation errors of ``sim.yaml``: where (dotted key path),
what was wrong, and what to write instead (close key names suggested).  Split from
:mod:`multiscale.config`, which calls :func:`message` and :func:`pick`."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from pydantic import BaseModel

__all__ = ["message", "pick", "show"]


def _loc(loc: tuple) -> str:
    parts = []
    for x in loc:
        if isinstance(x, int):
            parts[-1:] = [f"{parts[-1]}[{x}]"] if parts else [f"[{x}]"]
        elif x in ("function-after[_cross(), SimConfig]",):
            continue
        else:
            parts.append(str(x))
    return ".".join(parts)


_MODELS_BY_PATH: dict[str, type[BaseModel]] = {}


def _model_at(loc: tuple) -> type[BaseModel] | None:
    from .config import SimConfig

    model: Any = SimConfig
    for x in loc:
        if isinstance(x, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        f = model.model_fields.get(str(x))
        if f is None:
            return None
        ann = f.annotation
        cands = [ann] + list(getattr(ann, "__args__", ()) or ())
        model = next((c for c in cands if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _show(v: Any) -> str:
    """A user value echoed in an error message: at most ~60 characters."""
    if isinstance(v, str):
        return repr(v) if len(v) < 58 else repr(v[:54]) + "..."
    if isinstance(v, (dict, list)):
        s = json.dumps(v, default=str)
        return s if len(s) < 60 else s[:57] + "..."
    s = str(v)
    return s if len(s) < 60 else s[:57] + "..."


def _message(err: dict) -> str:
    loc = tuple(err.get("loc", ()))
    typ = err.get("type", "")
    ctx = err.get("ctx", {}) or {}
    inp = err.get("input")
    where = _loc(loc)
    if typ == "extra_forbidden":
        key = str(loc[-1])
        parent = loc[:-1]
        model = _model_at(parent)
        allowed = sorted(model.model_fields) if model else []
        allowed = [a for a in allowed if a != "source"]
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        sect = f" in {_loc(parent)}" if parent else ""
        return f"unknown key '{key}'{sect}: {hint}allowed keys are {', '.join(allowed)}"
    if typ == "missing":
        return f"{where}: required key missing: add it"
    prefix = f"{where}: " if where else ""
    if typ in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[typ]
        bound = next(iter(ctx.values())) if ctx else "?"
        return f"{prefix}must be {op} {bound}, got {_show(inp)}"
    if typ in ("int_parsing", "int_type", "int_from_float"):
        return f"{prefix}must be a whole number, got {_show(inp)}"
    if typ in ("float_parsing", "float_type"):
        return f"{prefix}must be a number, got {_show(inp)}"
    if typ in ("bool_parsing", "bool_type"):
        return f"{prefix}must be true or false, got {_show(inp)}"
    if typ in ("string_type",):
        return f"{prefix}must be a string, got {_show(inp)}"
    if typ in ("list_type",):
        return f"{prefix}must be a list, got {_show(inp)}"
    if typ in ("dict_type", "model_type", "model_attributes_type"):
        return f"{prefix}must be a mapping of keys to values, got {_show(inp)}"
    if typ == "literal_error":
        return f"{prefix}must be one of {ctx.get('expected', '?')}, got {_show(inp)}"
    if typ == "value_error":
        msg = str(ctx.get("error", err.get("msg", "")))
        if not where and ": " in msg and msg.split(":")[0].replace(".", "").replace("_", "").isalnum():
            return msg
        if where and re.match(r"^[\w-]+: ", msg):
            return f"{where}.{msg}"
        return f"{prefix}{msg}"
    return f"{prefix}{err.get('msg', 'invalid value')}, got {_show(inp)}"


def _pick(errors: list[dict]) -> dict:
    """The most useful error: pydantic reports every union branch; prefer non-type errors."""
    for e in errors:
        if e.get("type") in ("extra_forbidden", "missing", "value_error"):
            return e
    return errors[0]


message = _message
pick = _pick
show = _show

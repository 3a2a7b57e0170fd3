"""docs/sim-yaml.md is generated from the sim.yaml models and documents every key with a meaning and, for a
physical quantity, a unit; the rendering of types, defaults and bounds is read from the models."""

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from multiscale.config import Duration, SimConfig
from multiscale.config_doc import DOC_PATH, config_sections, default_text, reachable_models, reference_markdown, type_text

ROOT = Path(__file__).resolve().parents[1]


def _fields():
    return [(m.__name__, name, f) for m in reachable_models() for name, f in m.model_fields.items()]


def test_docs_page_is_the_generated_text():
    page = ROOT / DOC_PATH
    assert page.is_file(), "docs/sim-yaml.md missing: run python scripts/make_simyaml_reference.py"
    assert page.read_text() == reference_markdown(), "docs/sim-yaml.md is stale: run python scripts/make_simyaml_reference.py"


def test_every_field_of_every_model_has_a_description():
    models = {m.__name__ for m in reachable_models()}
    assert {"SimConfig", "SystemSection", "GpuSection", "Overrides", "AATemplates", "Duration"} <= models
    missing = [f"{m}.{n}" for m, n, f in _fields() if not (f.description and f.description.strip())]
    assert not missing, f"fields without Field(description=...): {missing}"


def test_every_physical_quantity_has_a_unit():
    def physical(ann):
        return any(a in (float, Duration) for a in (ann, *typing.get_args(ann)))

    missing = [f"{m}.{n}" for m, n, f in _fields()
               if physical(f.annotation) and not (isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("unit"))]
    assert not missing, f"float/duration fields without json_schema_extra={{'unit': ...}}: {missing}"


def test_every_key_and_section_is_on_the_page():
    text = reference_markdown()
    for key, model in config_sections():
        assert (f"## `{key}`" if key else "## Top level") in text
        for name, f in model.model_fields.items():
            if not f.exclude:
                assert f"| `{name}` |" in text, f"{key}.{name} not in the reference"
    assert "`source`" not in text  # set by load_config, not a sim.yaml key


@pytest.mark.parametrize("ann, text", [
    (typing.Optional[Path], "path or null"),
    (typing.Literal["aa", "cg"], "`aa` or `cg`"),
    (typing.Optional[typing.Literal["gpu", "cpu", "auto"]], "`gpu`, `cpu`, `auto` or null"),
    (typing.Union[list[Path], dict[str, Path]], "list of path or mapping string → path"),
    (dict[str, typing.Union[bool, int, float, str]], "mapping string → (true/false, integer, number or string)"),
    (list[str], "list of string"),
    (Duration, "[duration](#durations)"),
])
def test_type_text(ann, text):
    assert type_text(ann) == text


def test_rows_show_defaults_bounds_and_units():
    text = reference_markdown()
    assert "| `dt` | number, > 0, ≤ 0.005 | `0.002` | ps | MD time step of aa-eq and aa-md |" in text
    assert "| `temperature` | number, > 0, ≤ 10000 | `300` | K |" in text
    assert "| `md` | [duration](#durations), > 0 | `1 ns` | ps |" in text
    assert "| `force_constant` | number, ≥ 0, ≤ 1e7 | `1000` | kJ mol^-1 nm^-2 |" in text
    assert "| `gpu` | [section](#gromacsgpu) or null | `null` |" in text
    assert "| `nsteps` | set the stage length" in text  # the refused mdp overrides, from COMPUTED_MDP_KEYS
    f = SimConfig.model_fields
    assert default_text(f["system"]) == "**required**" and default_text(f["aa"]) == "see section"
    assert default_text(SimConfig.model_fields["gromacs"].annotation.model_fields["launcher"]) == '`""`'


def test_script_check_detects_a_stale_page(tmp_path):
    out = tmp_path / "sim-yaml.md"
    script = [sys.executable, str(ROOT / "scripts" / "make_simyaml_reference.py"), "--output", str(out)]
    r = subprocess.run(script + ["--check"], capture_output=True, text=True)
    assert r.returncode == 1 and "run python scripts/make_simyaml_reference.py" in r.stderr
    assert subprocess.run(script, capture_output=True, text=True).returncode == 0
    assert out.read_text() == reference_markdown()
    assert subprocess.run(script + ["--check"], capture_output=True, text=True).returncode == 0

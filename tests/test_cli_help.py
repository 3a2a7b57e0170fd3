"""Every subcommand has a description and every option a help text (`multiscale X --help`)."""

import argparse
import re

import pytest

from multiscale.cli import build_parser, main


def _subparsers():
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


SUBCOMMANDS = sorted(_subparsers())


def test_all_expected_subcommands_are_listed():
    assert {"coarse-grain", "train", "backmap", "cycle", "status", "batch", "init", "evaluate"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_has_description_and_every_option_help(name):
    sp = _subparsers()[name]
    assert sp.description and len(sp.description) > 20, f"{name}: no description"
    missing = [a.option_strings[0] if a.option_strings else a.dest
               for a in sp._actions if not (a.help and a.help.strip()) and a.help is not argparse.SUPPRESS]
    assert not missing, f"multiscale {name}: options without help text: {missing}"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_exits_0_and_every_option_line_has_text(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip().endswith("options:") or l.startswith("optional arguments"))
    # every option entry ("  --flag ...") is followed by text on its own line or the next
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if not re.match(r"^  -", line):
            continue
        m = re.match(r"^  (-\S+(?: [^ ]+)*(?:, -\S+(?: [^ ]+)*)*)(\s{2,}(\S.*))?$", line)
        has_text = bool(m and m.group(3)) or (i + 1 < len(lines) and re.match(r"^\s{6,}\S", lines[i + 1]))
        assert has_text, f"multiscale {name} --help: option line without text: {line!r}"


def test_make_setup_says_what_it_installs(tmp_path):
    """`make setup` echoes a line naming torch / the package before each silent pip install."""
    import shutil
    import subprocess
    from pathlib import Path

    if shutil.which("make") is None:
        pytest.skip("make not installed")
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(["make", "-n", "-B", "setup", f"VENV={tmp_path / 'venv'}"], cwd=repo, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    installs = [i for i, l in enumerate(out) if "pip install" in l and "--upgrade pip" not in l]
    assert installs, out
    for i in installs:
        what = "torch" if "torch" in out[i] else "multiscale"
        said = [l for l in out[:i] if l.startswith("echo") and what in l]
        assert said, f"no echo line names {what} before: {out[i]}"

#!/usr/bin/env python3
"""Regenerate docs/sim-yaml.md, the sim.yaml reference, from the pydantic models of multiscale.config.

    python scripts/make_simyaml_reference.py            # write docs/sim-yaml.md (atomically)
    python scripts/make_simyaml_reference.py --check    # exit 1 if docs/sim-yaml.md is stale

The page is :func:`multiscale.config_doc.reference_markdown`; tests/test_config_doc.py fails when the
committed page differs from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from multiscale.config_doc import DOC_PATH, reference_markdown  # noqa: E402
from multiscale.io import atomic_write_text  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=ROOT / DOC_PATH, help="file to write (default: docs/sim-yaml.md)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file differs from the generated text")
    args = ap.parse_args(argv)
    text = reference_markdown()
    current = args.output.read_text() if args.output.is_file() else None
    if args.check:
        if current != text:
            print(f"{args.output} is stale: run python scripts/make_simyaml_reference.py", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    if current == text:
        print(f"{args.output} is up to date")
        return 0
    atomic_write_text(args.output, text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

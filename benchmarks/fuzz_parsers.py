"""Long mutation-fuzzing run over every input parser (the short version runs in the test suite:
tests/test_fuzz_parsers.py).

    PYTHONPATH=src python benchmarks/fuzz_parsers.py --n 10000 --seed 0 [--parsers map,yaml,...]
        [--timeout 5] [--save-failures DIR]

For each parser, N seeded mutated inputs (tests/fuzzing.py: byte and token mutations of the
shipped example files and the toy files) go through the public entry point.  Prints per parser:
inputs / accepted (valid result) / rejected (one-line MultiscaleError) / uncaught (any other
exception, a multi-line or over-long message, or an invalid accepted result: NaN, bad shapes) /
hangs (over --timeout seconds).  Exit status 1 when anything is uncaught or hangs.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzzing  # noqa: E402


class Hang(BaseException):
    """Raised by SIGALRM; a BaseException so that parsers' ``except Exception`` cannot swallow it."""


def _alarm(signum, frame):
    raise Hang()


def run_parser(target: fuzzing.Target, n: int, seed: int, timeout: float, failures: Path | None) -> dict:
    rng = random.Random(f"{target.name}:{seed}")
    counts = collections.Counter()
    kinds = collections.Counter()
    names = sorted(target.seeds)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"fuzz_{target.name}_") as tmp:
        d = Path(tmp)
        if target.setup:
            target.setup(d)
        for i in range(n):
            name = names[rng.randrange(len(names))]
            ops = fuzzing.random_ops(rng)
            data = fuzzing.mutate(target.seeds[name], ops)
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                counts[fuzzing.outcome(target, d, name, data)] += 1
                err = None
            except Hang:
                counts["hangs"] += 1
                err = "hang"
            except Exception as e:  # noqa: BLE001 - counting is the point
                counts["uncaught"] += 1
                err = "".join(traceback.format_exception_only(type(e), e)).strip()
                kinds[f"{type(e).__name__}: {str(e)[:100]}"] += 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if err and failures is not None:
                failures.mkdir(parents=True, exist_ok=True)
                stem = failures / f"{target.name}_{i:06d}"
                stem.with_suffix(".in").write_bytes(data)
                stem.with_suffix(".json").write_text(json.dumps({"seed_file": name, "ops": [
                    [o[0], o[1], o[2], o[3].decode("utf-8", "backslashreplace")] for o in ops], "error": err}))
    counts["inputs"] = n
    counts["seconds"] = round(time.perf_counter() - t0, 1)
    return {"counts": dict(counts), "top_uncaught": kinds.most_common(8)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000, help="inputs per parser")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parsers", default=None, help="comma-separated subset of: " + ", ".join(fuzzing.targets(extra=True))
                    + " (default: all but simyaml and model)")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per input before it counts as a hang")
    ap.add_argument("--save-failures", type=Path, default=None, help="write failing inputs here")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    tg = fuzzing.targets(extra=True)
    chosen = args.parsers.split(",") if args.parsers else list(fuzzing.targets())
    results = {}
    print(f"{'parser':8} {'inputs':>7} {'accepted':>9} {'rejected':>9} {'uncaught':>9} {'hangs':>6} {'s':>7}")
    for name in chosen:
        r = run_parser(tg[name], args.n, args.seed, args.timeout, args.save_failures)
        results[name] = r
        c = r["counts"]
        print(f"{name:8} {c['inputs']:7d} {c.get('accepted', 0):9d} {c.get('rejected', 0):9d} "
              f"{c.get('uncaught', 0):9d} {c.get('hangs', 0):6d} {c['seconds']:7.1f}", flush=True)
        for k, v in r["top_uncaught"]:
            print(f"    {v:5d} x {k}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    bad = sum(r["counts"].get("uncaught", 0) + r["counts"].get("hangs", 0) for r in results.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""The long fuzz run: thousands of mutants of real model files, every format.

    python benchmarks/fuzz.py [--cases 5000] [--seed 1] [--jobs 2] [--timeout 30]

The same corpus, mutations and judgement as ``tests/test_fuzz.py`` (see ``tests/fuzzing.py``):
each mutant must end in a report that passes or fails as documented; a traceback, a reader
crash, a rule's internal error or a report that disagrees with its exit code is a crash; a
model that reaches its time limit (or a batch that reaches the backstop) is a hang. Prints the
counts and every crash and hang; exits 1 if there was any, or if the planted payload ran.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import fuzzing  # noqa: E402

# a benchmark times the work: the result cache (on by default) would answer repeat runs
os.environ.setdefault("MODELGATE_NO_CACHE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=30, help="per model, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the mutants (printed path)")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="modelgate-fuzz-"))
    marker = root / "PAYLOAD_RAN"
    try:
        start = time.perf_counter()
        seeds = fuzzing.build_corpus(root / "corpus", marker)
        cases = fuzzing.make_cases(seeds, root / "cases", args.cases, args.seed)
        built = time.perf_counter() - start
        start = time.perf_counter()
        outcome = fuzzing.run(cases, marker, jobs=args.jobs, timeout=args.timeout, cwd=root)
        took = time.perf_counter() - start
        by_kind: dict[str, int] = {}
        for case in cases:
            key = f"{case.seed}/{case.mutation}"
            by_kind[key] = by_kind.get(key, 0) + 1
        print(f"corpus: {len(seeds)} seed files ({', '.join(s.name for s in seeds)})")
        print(f"built {len(cases)} mutants in {built:.1f} s; checked in {took:.1f} s "
              f"({took / max(1, len(cases)) * 1000:.1f} ms each, -j {args.jobs})")  # fmt: skip
        print("results: " + ", ".join(f"{k} {v}" for k, v in sorted(outcome.results.items())))
        print(f"cases: {outcome.cases}")
        print(f"crashes: {len(outcome.crashes)}")
        print(f"hangs: {len(outcome.hangs)}")
        print(f"wrong exit codes: {len(outcome.wrong_exit)}")
        print(f"payload ran: {'yes' if outcome.payload_ran else 'no'}")
        for line in outcome.crashes + outcome.hangs + outcome.wrong_exit:
            print(f"  {line}")
        if args.keep:
            print(f"mutants kept in {root}")
        return 0 if outcome.ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Run every benchmarks/bench_*.py in turn (what `make bench` does) and stop on the first failure.

Each script prints its own figures and the ratios against the anchors it measures in the same run.
Pass script names to run a subset: python benchmarks/run_all.py bench_structure bench_hessian
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main(selected: list[str]) -> int:
    here = Path(__file__).parent
    scripts = sorted(here.glob("bench_*.py"))
    if selected:
        scripts = [s for s in scripts if s.stem in selected]
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)])
        print(f"--- {script.name}: exit {code}, {time.perf_counter() - start:.1f} s", flush=True)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

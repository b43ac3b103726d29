"""Run every benchmark in this folder, one after another, writing evals/bench/results/.

    python evals/bench/run_all.py            # `make bench`

Benchmarks compare ratios measured in one run; run them on a quiet machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHMARKS = [
    "bench_overhead.py",
    "bench_strategies.py",
    "bench_local_stages.py",
    "bench_local_llm.py",
    "bench_serve.py",
    "bench_serve_cascade.py",
    "bench_batch.py",
    "bench_ray.py",
    "bench_cold_start.py",
]


def main() -> int:
    for script in BENCHMARKS:
        print(f"== {script}", flush=True)
        completed = subprocess.run([sys.executable, str(HERE / script), *sys.argv[1:]], check=False)
        if completed.returncode:
            print(f"{script} failed with exit code {completed.returncode}", file=sys.stderr)
            return completed.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())

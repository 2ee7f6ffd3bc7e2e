"""Benchmark: the seed scenario end to end, in this process (run on demand).

    python benchmarks/seed_scenario.py

Prints wall time, simulated GPU stages per wall second, and simulated GPU time / wall
time. Not part of the test suite: timings are reported, never asserted.
"""

import resource
import time

from servesim.cli import bundled_scenario
from servesim.runner import run_scenario
from servesim.scenario import load_scenario


def main() -> None:
    source, text = bundled_scenario()
    scenario = load_scenario(source, text=text)
    start = time.perf_counter()
    results = run_scenario(scenario)
    rows = [r.summary for r in results]
    steps = [row for r in results for rec in r.recorders for row in rec.steps]
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    simulated = sum(row[4] for row in steps)
    tokens = sum(row[8] for row in steps)
    print(f"points                      {len(rows)}")
    print(f"wall time                   {wall:.2f} s")
    print(f"GPU stages simulated        {len(steps)} ({len(steps) / wall:,.0f} per wall s)")
    print(f"output tokens simulated     {tokens} ({tokens / wall:,.0f} per wall s)")
    print(f"simulated GPU time          {simulated:,.0f} s ({simulated / wall:,.0f}x wall time)")
    print(f"peak resident memory        {peak_kib / 1024:.0f} MiB (whole process)")


if __name__ == "__main__":
    main()

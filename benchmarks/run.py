"""servesim benchmarks (run on demand, never part of the test suite).

    python benchmarks/run.py                 # all cases
    python benchmarks/run.py --case seed     # one case
    python benchmarks/run.py --repeat 3      # median of three runs of each in-process case

Cases
  seed        the bundled seed scenario (Medusa figure), one process;
  open100k    100,000 requests, Poisson arrivals at about 70% of capacity, continuous
              batching (32 running, the vllm scheduler), Medusa tree acceptance, both arms;
  open100k_paged  the same with vLLM's paged KV cache (preemption) and prefix caching
              (a 256-token shared prefix, 8 distinct ones);
  open100k_eagle3_goodput  the same open loop with an EAGLE-3 chain of 4, the goodput
              length policy and a between-request acceptance spread (0.1);
  open100k_sglang  open100k under SGLang's scheduling policy (prefill batches of their
              own whenever one can start);
  sweep1000_j1, sweep1000_j2  a 1,000-point sweep (candidate tokens x context x batch),
              with --jobs 1 and with --jobs 2;
  million     1,000,000 requests (both arms) through `servesim run` with streamed output
              (requests.parquet written, steps switched off): wall time and peak memory;
and for each, the limit: a bare SimPy loop that performs the same number of GPU
resource acquisitions and timeouts with no cost model, sampling or recording (the
median wall time of three runs of it, in the same process, after the case;
``fraction_of_bare_simpy``, the project's yardstick), and a loop of timeouts alone
(``fraction_of_bare_timeouts``): the engine takes no SimPy resource for the GPU (one
process runs every stage), so it can beat the first yardstick, not the second.

Every case runs in its own Python process so that its peak memory (ru_maxrss) is its
own. Prints a table and writes benchmarks/results/benchmarks.parquet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

OPEN100K = """
name = "bench_open100k"
[model]
model = "vicuna-7b"
[speculation]
method = "medusa"
acceptance = "tree"
candidate_tokens = 16
[workload]
arrival = "poisson"
rate_per_s = 6.0
num_requests = 100000
seq_len = 512
prompt_dist = "lognormal"
output_len = 64
output_dist = "lognormal"
[serving]
batching = "continuous"
batch_size = 32
[output]
write_steps = false
"""

MILLION = """
name = "bench_million"
[speculation]
method = "medusa"
candidate_tokens = 16
[workload]
arrival = "poisson"
rate_per_s = 40.0
num_requests = 1000000
seq_len = 256
prompt_dist = "lognormal"
output_len = 16
output_dist = "lognormal"
[serving]
batching = "continuous"
batch_size = 64
[output]
write_steps = false
"""

SWEEP1000 = """
name = "bench_sweep1000"
[workload]
num_requests = 16
output_len = 65
[output]
write_steps = false
[sweep]
candidate_tokens = [1, 8, 16, 24, 32, 48, 64, 80, 96, 112]
seq_len = [128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]
batch_size = [1, 2, 3, 4, 5, 6, 7, 8, 12, 16]
"""


def bare_simpy(steps: int) -> float:
    """Wall seconds for ``steps`` GPU acquisitions + timeouts in a bare SimPy loop."""
    import simpy

    env = simpy.Environment()
    gpu = simpy.Resource(env, capacity=1)

    def loop():
        for _ in range(steps):
            with gpu.request() as grant:
                yield grant
                yield env.timeout(0.01)

    env.process(loop())
    start = time.perf_counter()
    env.run()
    return time.perf_counter() - start


def bare_timeouts(steps: int) -> float:
    """Wall seconds for ``steps`` timeouts in a bare SimPy loop (what the engine does
    per GPU stage at the least, since it takes no resource for the GPU)."""
    import simpy

    env = simpy.Environment()

    def loop():
        for _ in range(steps):
            yield env.timeout(0.01)

    env.process(loop())
    start = time.perf_counter()
    env.run()
    return time.perf_counter() - start


def run_million() -> dict:
    """The million-request case through the CLI in a child process (its own peak RSS)."""
    import tempfile
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "million.toml"
        scenario.write_text(MILLION)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "servesim.cli", "run", str(scenario), "--out",
                        str(Path(tmp) / "out"), "--jobs", "1"], check=True, capture_output=True)
        wall = time.perf_counter() - start
        rows = pq.ParquetFile(Path(tmp) / "out" / "requests.parquet").metadata.num_rows
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"case": "million", "points": 1, "jobs": 1, "wall_s": wall, "requests_rows": rows,
            "peak_rss_bytes": peak}


CASES = ("seed", "open100k", "open100k_paged", "open100k_eagle3_goodput", "open100k_sglang", "sweep1000_j1",
         "sweep1000_j2", "million")


def run_case(case: str, repeat: int = 1) -> dict:
    from servesim.cli import bundled_scenario
    from servesim.runner import _cost_model, run_scenario
    from servesim.scenario import load_scenario

    if case == "seed":
        source, text = bundled_scenario()
        scenario, jobs = load_scenario(source, text=text), 1
    elif case == "open100k":
        scenario, jobs = load_scenario("open100k.toml", text=OPEN100K), 1
    elif case == "open100k_paged":
        scenario, jobs = load_scenario("open100k.toml", ["kv_cache=paged", "enable_prefix_caching=true",
                                                         "shared_prefix_tokens=256", "num_prefixes=8"],
                                       text=OPEN100K), 1
    elif case == "open100k_eagle3_goodput":
        scenario, jobs = load_scenario("open100k.toml", [
            "method=eagle3", "num_speculative_tokens=4", "alpha_per_position=[0.8, 0.75, 0.7, 0.65]",
            "policy=goodput", "acceptance_spread=0.1"], text=OPEN100K), 1
    elif case == "open100k_sglang":
        scenario, jobs = load_scenario("open100k.toml", ["scheduler=sglang"], text=OPEN100K), 1
    elif case in ("sweep1000_j1", "sweep1000_j2"):
        scenario, jobs = load_scenario("sweep1000.toml", text=SWEEP1000), int(case[-1])
    else:
        raise SystemExit(f"unknown case {case!r}; cases: {', '.join(CASES)}")
    walls = []
    for _ in range(repeat):  # the same run each time; the median wall time is reported
        _cost_model.cache_clear()  # each run starts with cold cost-model memos, as the first
        start = time.perf_counter()
        results = run_scenario(scenario, jobs)
        walls.append(time.perf_counter() - start)
    wall = sorted(walls)[len(walls) // 2]
    totals = [t for r in results for rec in r.recorders for t in rec.totals.values()]
    steps = sum(t.stages for t in totals)
    simulated = sum(t.busy_s for t in totals)
    tokens = sum(t.generated_tokens for t in totals)
    bare = sorted(bare_simpy(steps) for _ in range(3))[1]  # the median of three: the limit's noise
    timeouts = sorted(bare_timeouts(steps) for _ in range(3))[1]
    return {"case": case, "points": len(results), "jobs": jobs, "repeats": repeat, "wall_s": wall,
            "gpu_steps": steps,
            "gpu_steps_per_s": steps / wall, "simulated_gpu_s": simulated,
            "simulated_over_wall": simulated / wall, "output_tokens_per_wall_s": tokens / wall,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "bare_simpy_steps_per_s": steps / bare,
            "fraction_of_bare_simpy": (steps / wall) / (steps / bare),
            "fraction_of_bare_timeouts": (steps / wall) / (steps / timeouts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", help="run one case in this process and print JSON")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each in-process case this many times and report the median "
                             "wall time (run-to-run spread here is about +-3%%)")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_million() if args.case == "million" else run_case(args.case, args.repeat)))
        return
    import pandas as pd

    rows = []
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", case, "--repeat", str(args.repeat)],
                             check=True,
                             capture_output=True, text=True, cwd=ROOT)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"done {case}: {rows[-1]['wall_s']:.1f} s", file=sys.stderr)
    frame = pd.DataFrame(rows)
    frame["cores"] = os.cpu_count()
    frame["machine"] = platform.platform()
    pd.set_option("display.width", 200)
    print(frame.drop(columns=["machine"]).to_string(index=False, float_format=lambda v: f"{v:,.3g}"))
    j1 = frame.set_index("case").loc["sweep1000_j1", "wall_s"]
    j2 = frame.set_index("case").loc["sweep1000_j2", "wall_s"]
    print(f"\n1,000-point sweep: --jobs 2 is {j1 / j2:.2f}x faster than --jobs 1 ({os.cpu_count()} cores)")
    (HERE / "results").mkdir(exist_ok=True)
    frame.to_parquet(HERE / "results" / "benchmarks.parquet", index=False)


if __name__ == "__main__":
    main()

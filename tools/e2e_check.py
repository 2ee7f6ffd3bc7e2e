"""End-to-end check: measured serving points against servesim (run on demand).

    python tools/e2e_check.py [--backend trtllm] [--framework NAME] [--out FILE.csv]

``servesim/data/checks/silicon_e2e_llama31_8b.csv`` holds aiconfigurator-core 0.12.0's
measured serving points (``systems/silicon_sample.csv``: Llama-3.1-8B, TTFT and TPOT
per backend, GPU, ISL, OSL, concurrency and TP). For each TP-1 point of the chosen
backend this runs the closed loop it describes in servesim (concurrency = clients, no
think time, fixed ISL and OSL, continuous batching with at most `concurrency` running,
the backend's framework profile and kernels on the GPU's calibrated profile) and writes
measured against simulated TTFT and TPOT (mean over requests) with the error in %.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from servesim.catalog import data_path
from servesim.runner import run_point
from servesim.scenario import load_scenario

GPUS = {"h100_sxm": "h100-sxm", "h200_sxm": "h200"}


def simulate(gpu: str, framework: str, isl: int, osl: int, concurrency: int, rounds: int = 4,
             overrides: list[str] = ()) -> tuple[float, float]:
    """Mean TTFT and TPOT (s) of the baseline arm of one closed-loop point."""
    text = f"""
name = "e2e"
[hardware]
gpu = "{gpu}"
[model]
model = "llama-3-1-8b"
[speculation]
method = "none"
[workload]
arrival = "closed_loop"
clients = {concurrency}
num_requests = {rounds * concurrency}
seq_len = {isl}
output_len = {osl}
[serving]
framework = "{framework}"
batching = "continuous"
batch_size = {concurrency}
[output]
write_steps = false
write_requests = false
"""
    scenario = load_scenario("e2e.toml", list(overrides), text=text)
    (point,) = scenario.points()
    s = run_point(point, scenario.seed).summary
    return s["baseline_ttft_mean_s"], s["baseline_tpot_mean_s"]


def check(backend: str, framework: str | None = None, overrides: list[str] = (), rounds: int = 4) -> pd.DataFrame:
    """The TP-1, 16-bit points of ``backend``, simulated with ``framework``'s profile
    (default: the backend's own)."""
    framework = framework or backend
    d = pd.read_csv(data_path("checks/silicon_e2e_llama31_8b.csv"))
    d = d[(d["backend"] == backend) & (d["tp_size"] == 1) & d["system"].isin(GPUS) & d["precision"].isna()]
    rows = []
    for _, r in d.sort_values(["system", "isl", "osl", "batch_size"]).iterrows():
        ttft, tpot = simulate(GPUS[r["system"]], framework, int(r["isl"]), int(r["osl"]), int(r["batch_size"]),
                              rounds, overrides)
        rows.append({"backend": backend, "framework_profile": framework, "gpu": r["system"], "isl": int(r["isl"]), "osl": int(r["osl"]),
                     "concurrency": int(r["batch_size"]),
                     "measured_ttft_ms": r["silicon_ttft_ms"], "simulated_ttft_ms": ttft * 1e3,
                     "measured_tpot_ms": r["silicon_tpot_ms"], "simulated_tpot_ms": tpot * 1e3})
    out = pd.DataFrame(rows)
    for m in ("ttft", "tpot"):
        out[f"{m}_error_pct"] = (out[f"simulated_{m}_ms"] / out[f"measured_{m}_ms"] - 1) * 100
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="trtllm", help="whose measured points (trtllm, vllm, sglang)")
    parser.add_argument("--framework", help="framework profile to simulate with (default: the backend's)")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out")
    args = parser.parse_args()
    out = check(args.backend, args.framework, args.set, args.rounds)
    print(out.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    for m in ("ttft", "tpot"):
        e = out[f"{m}_error_pct"].abs()
        print(f"{m}: median |error| {np.median(e):.1f}%, p90 {np.percentile(e, 90):.1f}%, "
              f"signed median {np.median(out[f'{m}_error_pct']):.1f}%")
    if args.out:
        out.to_csv(args.out, index=False, float_format="%.4g")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

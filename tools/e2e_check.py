"""End-to-end check: measured serving points against servesim (run on demand).

    python tools/e2e_check.py [--model llama-3-1-8b] [--backend trtllm] [--tp 1,2,4,8]
                              [--framework NAME] [--out FILE.csv]
    python tools/e2e_check.py --model qwen3-32b --backend vllm --tp 2,4,8
    python tools/e2e_check.py --model qwen3-32b --backend vllm --tp 2,4,8 --fit-per-seq
    python tools/e2e_check.py --model qwen3-32b --backend sglang --tp 1,2,4,8 --fit-per-seq
    python tools/e2e_check.py --fp8-suite --out servesim/data/checks/e2e_fp8_simulated.csv

``servesim/data/checks/silicon_e2e_llama31_8b.csv`` and ``silicon_e2e_qwen3_32b.csv``
hold aiconfigurator-core 0.12.0's measured serving points (``systems/silicon_sample.csv``:
Llama-3.1-8B under TRT-LLM, Qwen3-32B under vLLM and SGLang, TTFT and TPOT per backend,
GPU, ISL, OSL, concurrency and TP). For each point of the chosen backend at the chosen TP
sizes this runs the closed loop it describes in servesim (concurrency = clients, no
think time, fixed ISL and OSL, continuous batching with at most `concurrency` running,
the backend's framework profile and kernels on the GPU's calibrated profile) and writes
measured against simulated TTFT, TPOT and end-to-end latency (mean over requests) with
the error in %.

``--queued-clients K`` is a diagnostic of the benchmark's client, not the check: K more
clients than the server runs (``batch_size`` stays the concurrency), so K requests
always wait for a slot and each TTFT includes about one inter-completion time. The
measured TTFT at concurrency 8 grows with OSL as that does (61 ms + the request's
duration / 8: 191 / 318 / 550 ms at OSL 128 / 256 / 512, ISL 1,024), which no closed
loop of exactly ``concurrency`` clients does. ``--rounds`` (requests per client, default
:data:`ROUNDS`) sets how much of the mean the simultaneous start weighs.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from servesim.catalog import data_path
from servesim.runner import run_point
from servesim.scenario import load_scenario

GPUS = {"h100_sxm": "h100-sxm", "h200_sxm": "h200", "b200_sxm": "b200"}
ROUNDS = 20
"""Requests a client sends, as aiconfigurator's own benchmark recipe runs them: aiperf at
``--concurrency C`` with ``--num-requests C x 20`` (``MULTI_ROUND``, default 20) after a
warm-up of 2 x C requests that it does not count (ai-dynamo/aiconfigurator,
``generator/config/backend_templates/benchmark/bench_run.sh.j2``). The silicon points'
own files do not say their client; this is its documented default. The warm-up is not
simulated: the simulated GPU needs none, and the measured phase starts its clients
together as the simulated one does."""


SAMPLES = {"llama-3-1-8b": "checks/silicon_e2e_llama31_8b.csv", "qwen3-32b": "checks/silicon_e2e_qwen3_32b.csv"}
"""Catalog model -> its measured 16-bit points (``--model``): Llama-3.1-8B under TRT-LLM
(../shared/reference/kernels/), Qwen3-32B under vLLM and SGLang (tools/extract_e2e.py)."""
FP8_SUITE = (("qwen3-32b", "trtllm", ()), ("qwen3-32b", "trtllm", ("model.kv_cache_dtype=fp8",)),
             ("llama-3-1-70b", "vllm", ()), ("llama-3-1-70b", "trtllm", ()),
             ("llama-3-1-70b", "trtllm", ("model.kv_cache_dtype=fp8",)), ("llama-3-1-8b", "vllm", ()),
             ("qwen3-32b", "vllm", ()),
             ("qwen3-32b", "trtllm", ("model.fp8_activation_quantization=standalone",)),
             ("qwen3-32b", "trtllm", ("model.fp8_activation_quantization=standalone", "model.kv_cache_dtype=fp8")))
"""The checks of ``servesim/data/checks/e2e_fp8_simulated.csv`` (``--fp8-suite``), in its
order: every backend and model of :data:`FP8_SAMPLE` at TP 1-8, TRT-LLM's with a 16-bit
and an FP8 KV cache (the sample does not say which it ran), and Qwen3-32B's TRT-LLM
1.0.0rc3 points again with each FP8 layer quantizing its own input
(``model.fp8_activation_quantization = "standalone"``), which fits them where the fused
default does not."""
FP8_SAMPLE = "checks/silicon_e2e_fp8.csv"
"""The measured points with FP8 linear layers (``--precision fp8``, tools/extract_e2e.py):
Llama-3.1-70B, Qwen3-32B and Llama-3.1-8B, a ``model`` column naming the catalog model."""


def simulate(gpu: str, framework: str, isl: int, osl: int, concurrency: int, rounds: int = ROUNDS,
             overrides: list[str] = (), tp: int = 1, queued: int = 0,
             model: str = "llama-3-1-8b") -> tuple[float, float]:
    """Mean TTFT and TPOT (s) of the baseline arm of one closed-loop point (``queued``
    clients beyond the ``concurrency`` the server runs)."""
    text = f"""
name = "e2e"
[hardware]
gpu = "{gpu}"
tensor_parallel_size = {tp}
[model]
model = "{model}"
[speculation]
method = "none"
[workload]
arrival = "closed_loop"
clients = {concurrency + queued}
num_requests = {rounds * (concurrency + queued)}
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


def override(overrides, key: str, default: str) -> str:
    """The value a check's ``--set`` overrides give scenario ``key`` (``default`` if none)."""
    return next((o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")), default)


def check(backend: str, framework: str | None = None, overrides: list[str] = (), rounds: int = ROUNDS,
          tps: tuple[int, ...] = (1,), queued: int = 0, model: str = "llama-3-1-8b",
          precision: str = "bf16") -> pd.DataFrame:
    """The points of ``backend`` serving ``model`` at tensor-parallel sizes ``tps``, 16-bit
    ones (:data:`SAMPLES`) or with FP8 linear layers (``precision = "fp8"``:
    :data:`FP8_SAMPLE`, simulated with ``model.quantization = "fp8"``), simulated with
    ``framework``'s profile (default: the backend's own)."""
    framework = framework or backend
    if precision == "fp8":
        d = pd.read_csv(data_path(FP8_SAMPLE))
        d = d[(d["model"] == model) & (d["backend"] == backend) & d["tp_size"].isin(tps) & d["system"].isin(GPUS)]
        overrides = [*overrides, "model.quantization=fp8"]
    else:
        d = pd.read_csv(data_path(SAMPLES[model]))
        d = d[(d["backend"] == backend) & d["tp_size"].isin(tps) & d["system"].isin(GPUS) & d["precision"].isna()]
    rows = []
    for _, r in d.sort_values(["system", "tp_size", "isl", "osl", "batch_size"]).iterrows():
        ttft, tpot = simulate(GPUS[r["system"]], framework, int(r["isl"]), int(r["osl"]), int(r["batch_size"]),
                              rounds, overrides, int(r["tp_size"]), queued, model)
        rows.append({**({"model": model, "kv_cache_dtype": override(overrides, "model.kv_cache_dtype", "auto"),
                          "fp8_activation_quantization": override(overrides, "model.fp8_activation_quantization",
                                                                  "fused")}
                         if precision == "fp8" else {}),
                     "backend": backend, "framework_profile": framework, "gpu": r["system"],
                     "tp": int(r["tp_size"]), "isl": int(r["isl"]), "osl": int(r["osl"]),
                     "concurrency": int(r["batch_size"]),
                     "measured_ttft_ms": r["silicon_ttft_ms"], "simulated_ttft_ms": ttft * 1e3,
                     "measured_tpot_ms": r["silicon_tpot_ms"], "simulated_tpot_ms": tpot * 1e3})
    out = pd.DataFrame(rows)
    # a request's mean end-to-end latency (fixed OSL: TTFT + (OSL - 1) x TPOT, exactly):
    # where a server's and the simulation's split between TTFT and TPOT differ, the
    # whole request's time still compares
    for side in ("measured", "simulated"):
        out[f"{side}_e2el_ms"] = out[f"{side}_ttft_ms"] + (out["osl"] - 1) * out[f"{side}_tpot_ms"]
    for m in ("ttft", "tpot", "e2el"):
        out[f"{m}_error_pct"] = (out[f"simulated_{m}_ms"] / out[f"measured_{m}_ms"] - 1) * 100
    return out


HELD_OUT_ISL = 2048
"""Points of this ISL are held out of the overhead fit (``--fit-overhead``)."""
FIT_TPS = (1, 2)
"""Tensor-parallel sizes whose points (ISL != :data:`HELD_OUT_ISL`) the overhead is fitted
on; TP 4 and 8 are held out whole. TP 2's shorter steps weigh the per-step overhead
more than TP 1's: on TP 1 alone the objective is flat over 0.35-0.6 ms (1.5-2.6%), while
the TP 2 points move 4.2 -> 6.8% between those ends."""


def fit_overhead(backend: str, grid_ms=np.arange(0.0, 2.01, 0.05), rounds: int = ROUNDS) -> tuple[float, pd.DataFrame]:
    """The per-step framework overhead (s) that minimises the median |TPOT error| over
    the points at :data:`FIT_TPS` with ISL != :data:`HELD_OUT_ISL` (kernel profiles as
    calibrated, nothing else free); returns it and the check at it (all points)."""
    best, best_err = None, np.inf
    for ms in grid_ms:
        out = _check_with_overhead(backend, ms * 1e-3, rounds)
        err = float(np.median(np.abs(out[fitted(out)]["tpot_error_pct"])))
        if err < best_err:
            best, best_err, best_out = ms * 1e-3, err, out
    return best, best_out


PER_SEQ_FIT_TPS = (2,)
"""Tensor-parallel sizes whose points the per-step and per-sequence overheads are fitted
on (``--fit-per-seq``); the others are held out whole. A per-sequence cost of the
framework's CPU work does not shrink with the GPUs a step is split across, so the held-out
TP sizes test that as well as the values."""


def _overheads(step_s: float, per_seq_s: float) -> list[str]:
    return [f"serving.step_overhead_s={step_s!r}", f"serving.step_overhead_per_seq_s={per_seq_s!r}"]


PER_SEQ_GRID_US = {"vllm": np.arange(30.0, 70.1, 5.0), "sglang": np.arange(0.0, 40.1, 5.0)}
"""Times per sequence (us) ``--fit-per-seq`` searches, by backend: where each backend's
fit was made (vLLM's with the per-step time at 0.25-1.5 ms: 60 us; SGLang's, whose
overlap scheduler hides most of that work: 10 us)."""


def fit_per_seq(backend: str, model: str, tps: tuple[int, ...], grid_ms=np.arange(0.25, 1.51, 0.25),
                grid_us=None, rounds: int = ROUNDS) -> tuple[tuple[float, float], pd.DataFrame]:
    """The framework's time per step and per sequence in a step (s, s), jointly, that
    minimise the median |TPOT error| over the points at :data:`PER_SEQ_FIT_TPS` (kernel
    profiles as calibrated); returns them and the check at them (all points at ``tps``).
    The two trade against each other (a step of n sequences pays step + n x per
    sequence): the points at few clients set the first, those at many the second."""
    if grid_us is None:
        grid_us = PER_SEQ_GRID_US.get(backend, np.arange(0.0, 70.1, 5.0))
    best, best_err = None, np.inf
    for ms in grid_ms:
        for us in grid_us:
            out = check(backend, backend, _overheads(float(ms) * 1e-3, float(us) * 1e-6), rounds,
                        PER_SEQ_FIT_TPS, model=model)
            err = float(np.median(np.abs(out["tpot_error_pct"])))
            print(f"  {ms:g} ms a step, {us:g} us a sequence: TPOT median |error| {err:.2f}% on TP "
                  f"{PER_SEQ_FIT_TPS}", flush=True)
            if err < best_err:
                best, best_err = (float(ms) * 1e-3, float(us) * 1e-6), err
    return best, check(backend, backend, _overheads(*best), rounds, tps, model=model)


def fitted(out: pd.DataFrame) -> pd.Series:
    """Which points of a check the overhead is fitted on."""
    return (out["isl"] != HELD_OUT_ISL) & out["tp"].isin(FIT_TPS)


def _check_with_overhead(backend: str, overhead_s: float, rounds: int) -> pd.DataFrame:
    return check(backend, backend, [f"serving.step_overhead_s={float(overhead_s)!r}"], rounds, (1, 2, 4, 8))


def _print_split(out: pd.DataFrame, fit: pd.Series) -> None:
    """TPOT error of a fit's points and of the points held out of it."""
    for name, part in (("fit", out[fit]), ("held out", out[~fit])):
        e = part["tpot_error_pct"]
        print(f"  {name}: {len(part)} points, TPOT median |error| {np.median(np.abs(e)):.1f}%, "
              f"p90 {np.percentile(np.abs(e), 90):.1f}%, signed median {np.median(e):.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="trtllm", help="whose measured points (trtllm, vllm, sglang)")
    parser.add_argument("--framework", help="framework profile to simulate with (default: the backend's)")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"requests per client (default {ROUNDS})")
    parser.add_argument("--queued-clients", type=int, default=0,
                        help="diagnostic: clients beyond the concurrency the server runs (default 0)")
    parser.add_argument("--out")
    parser.add_argument("--model", default="llama-3-1-8b", choices=sorted(set(SAMPLES) | {"llama-3-1-70b"}),
                        help="whose measured points (default llama-3-1-8b: TRT-LLM; qwen3-32b: vLLM and SGLang; "
                             "with --precision fp8 also llama-3-1-70b)")
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp8"),
                        help="the 16-bit points (default) or those with FP8 linear layers")
    parser.add_argument("--tp", default="1", help="tensor-parallel sizes, comma-separated (default 1)")
    parser.add_argument("--fit-overhead", action="store_true",
                        help=f"fit the backend's per-step overhead on the points at TP {FIT_TPS} with "
                             f"ISL != {HELD_OUT_ISL}")
    parser.add_argument("--fp8-suite", action="store_true",
                        help="every FP8 check (FP8_SUITE, TP 1-8), in the order of the committed "
                             "e2e_fp8_simulated.csv")
    parser.add_argument("--fit-per-seq", action="store_true",
                        help=f"fit the backend's time per step and per sequence in a step, jointly, on the "
                             f"points at TP {PER_SEQ_FIT_TPS}")
    args = parser.parse_args()
    tps = tuple(int(t) for t in args.tp.split(","))
    if args.fit_per_seq:
        (step_s, per_seq_s), out = fit_per_seq(args.backend, args.model, tps, rounds=args.rounds)
        print(f"fitted step_overhead_s = {step_s:.4g}, step_overhead_per_seq_s = {per_seq_s:.4g} "
              f"(on TP {PER_SEQ_FIT_TPS})")
        _print_split(out, out["tp"].isin(PER_SEQ_FIT_TPS))
    elif args.fp8_suite:
        out = pd.concat([check(backend, None, [*args.set, *sets], args.rounds, (1, 2, 4, 8), args.queued_clients,
                               model, "fp8") for model, backend, sets in FP8_SUITE], ignore_index=True)
    elif args.fit_overhead:
        overhead, out = fit_overhead(args.backend, rounds=args.rounds)
        print(f"fitted step_overhead_s = {overhead:.4g} (on TP {FIT_TPS}, ISL != {HELD_OUT_ISL})")
        _print_split(out, fitted(out))
    else:
        out = check(args.backend, args.framework, args.set, args.rounds, tps, args.queued_clients, args.model,
                    args.precision)
    print(out.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    for tp, part in out.groupby("tp"):
        for m in ("ttft", "tpot", "e2el"):
            e = part[f"{m}_error_pct"]
            print(f"TP {tp}, {m}: {len(part)} points, median |error| {np.median(e.abs()):.1f}%, "
                  f"p90 {np.percentile(e.abs(), 90):.1f}%, signed median {np.median(e):.1f}%")
    if args.out:
        out.to_csv(args.out, index=False, float_format="%.4g")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

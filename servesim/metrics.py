"""Serving metrics of one arm: latency distributions, throughput, goodput, utilisation.

All from the engine's records of one arm (requests, steps, time integrals); column names
carry the arm as a prefix (``baseline_`` / ``spec_``) and the unit as a suffix.

* ``ttft``: time to first token = first token - arrival (s);
* ``tpot``: time per output token after the first = (finish - first token) / (output - 1);
* ``e2e``: end-to-end latency = finish - arrival;
* ``queue``: arrival -> prefill start, split into ``slot_wait`` and ``gpu_wait`` (engine);
  each with mean, p50, p90, p99 over finished requests.
* throughput: output tokens of finished requests per second of the busy window (first
  arrival to last finish); goodput: finished requests per second meeting both SLOs;
* ``gpu_utilization``: GPU-busy seconds / (end of the last GPU stage - first arrival);
  a stage cut by ``max_sim_time_s`` counts up to the cut only, so it is at most 1;
* counts: ``requests`` (all of the arm's requests) = ``finished`` + ``rejected`` +
  ``unfinished`` (arrived, not finished by the cut) + ``not_arrived`` (not arrived by
  the cut), always;
* ``mean_in_system``: time-average number of requests in the system (queued or running)
  over [0, end] — Little's law says it equals arrival rate x mean e2e latency;
* KV cache: peak and time-mean reserved fraction of capacity;
* ``saturated``: at the last arrival more than max(2 x batch size, 10% of arrivals)
  requests were still waiting: the queue was growing, the offered load exceeds capacity
  (never for a workload that arrives all at once, at t = 0: a batch job has no load).
"""

from __future__ import annotations

import math

import numpy as np

LATENCIES = ("ttft", "tpot", "e2e", "queue", "slot_wait", "gpu_wait")
PERCENTILES = (50, 90, 99)


STACKED_VALUES = 100_000
"""Latencies of equal length with at most this many values in all are summarised in
one numpy call (for small runs, numpy's per-call overhead is most of the summary's
time); larger ones one at a time (stacking them would cost memory)."""


def _stats(values: list[np.ndarray]) -> list[list[float]]:
    """For each array: the mean, then the :data:`PERCENTILES` (NaN when it is empty)."""
    if values[0].size == 0:
        return [[math.nan] * (1 + len(PERCENTILES))] * len(values)
    if len(values) > 1 and values[0].size * len(values) <= STACKED_VALUES:
        stacked = np.array(values)
        return [[mean] + p for mean, p in zip(stacked.mean(axis=1).tolist(),
                                              np.percentile(stacked, PERCENTILES, axis=1).T.tolist())]
    return [[float(v.mean())] + np.percentile(v, PERCENTILES).tolist() for v in values]


def arm_metrics(totals, stats: dict, arm: str, batch_size: int, ttft_slo_s: float,
                tpot_slo_s: float) -> dict:
    """Metrics of one arm from its exact totals (``recorder.ArmTotals``) and run stats."""
    req = totals.requests()
    ok = req["status"] == 0
    arrival, first, finish = req["arrival_s"][ok], req["first_token_s"][ok], req["finish_s"][ok]
    output = req["output_len"][ok]
    multi = output > 1
    values = {
        "ttft": first - arrival,
        "tpot": (finish[multi] - first[multi]) / (output[multi] - 1),
        "e2e": finish - arrival,
        "queue": req["queue_delay_s"][ok],
        "slot_wait": req["slot_wait_s"][ok],
        "gpu_wait": req["gpu_wait_s"][ok],
    }
    # tpot is over requests of more than one token, the others over all finished ones
    # (summarised together when that is all of them: one numpy call instead of two)
    together = [name for name in LATENCIES if values[name].size == values["ttft"].size]
    latency = dict(zip(together, _stats([values[name] for name in together])))
    if "tpot" not in latency:
        latency["tpot"] = _stats([values["tpot"]])[0]
    names = ("mean",) + tuple(f"p{q}" for q in PERCENTILES)
    out = {f"{arm}_{name}_{stat}_s": value for name in LATENCIES
           for stat, value in zip(names, latency[name])}
    finished = int(ok.sum())
    window = (finish.max() - stats["first_arrival_s"]) if finished else math.nan
    tpot_all = np.zeros(finished)
    tpot_all[multi] = values["tpot"]
    meets = (values["ttft"] <= ttft_slo_s) & (tpot_all <= tpot_slo_s)
    end = stats["end_s"]
    capacity = stats["kv_capacity_tokens"]
    status = req["status"]
    arrived = int((status != 3).sum())  # every request but those not arrived by a cut
    busy_window = stats["busy_end_s"] - stats["first_arrival_s"]  # NaN if the GPU never ran
    out.update({
        f"{arm}_requests": int(status.size),
        f"{arm}_finished": finished,
        f"{arm}_rejected": int((status == 1).sum()),
        f"{arm}_unfinished": int((status == 2).sum()),
        f"{arm}_not_arrived": int((status == 3).sum()),
        f"{arm}_preemptions": int(req["preemptions"].sum()),
        # prompt tokens served from the prefix cache / prompt tokens of admitted requests
        f"{arm}_prefix_cache_hit_rate": (stats.get("prefix_hit_tokens", 0) / stats["prompt_tokens_admitted"]
                                         if stats.get("prompt_tokens_admitted") else math.nan),
        f"{arm}_output_tokens_per_s": float(output.sum() / window) if window else math.nan,
        f"{arm}_goodput_requests_per_s": float(meets.sum() / window) if window else math.nan,
        f"{arm}_slo_attainment": float(meets.mean()) if finished else math.nan,
        f"{arm}_gpu_utilization": totals.busy_s / busy_window if busy_window > 0 else math.nan,
        f"{arm}_mean_in_system": stats["in_system_area"] / end if end else math.nan,
        f"{arm}_arrival_rate_per_s": (arrived / stats["last_arrival_s"]
                                      if stats["last_arrival_s"] > 0 else math.nan),
        f"{arm}_kv_peak_fraction": stats["kv_peak_tokens"] / capacity if capacity else math.nan,
        f"{arm}_kv_mean_fraction": stats["kv_area"] / end / capacity if end and capacity else math.nan,
        # (a workload that arrives all at once, at t = 0, is a batch job: never saturated)
        f"{arm}_saturated": bool(stats["last_arrival_s"] > 0
                                 and stats["waiting_at_last_arrival"] > max(2 * batch_size, 0.1 * arrived)),
    })
    return out

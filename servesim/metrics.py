"""Serving metrics of one arm: latency distributions, throughput, goodput, utilisation.

All from the engine's records of one arm (requests, steps, time integrals); column names
carry the arm as a prefix (``baseline_`` / ``spec_``) and the unit as a suffix.

* ``ttft``: time to first token = first token - arrival (s);
* ``tpot``: time per output token after the first = (finish - first token) / (output - 1);
* ``itl``: inter-token latency, as ``vllm bench serve`` computes it: every gap between
  consecutive token emissions of a request (first token -> next step that gives it
  tokens -> ...), pooled over all finished requests' gaps (not per request). A verify
  step that accepts several tokens is one emission, so with speculation mean ITL >
  mean TPOT; a preempted request's pause (preemption -> its re-prefill's token) is one
  gap (see :func:`itl_distribution`);
* ``e2e``: end-to-end latency = finish - arrival;
* ``queue``: arrival -> prefill start, split into ``slot_wait`` and ``gpu_wait`` (engine);
  each with mean, standard deviation and the point's percentiles (``output.percentiles``;
  p50 and p99 always) over finished requests (ITL: over gaps).
* throughput: output tokens of finished requests per second of the busy window (first
  arrival to last finish), ``requests_per_s`` (vLLM's request throughput) and
  ``total_tokens_per_s`` (prompt + output tokens) over the same window; goodput:
  finished requests per second meeting both SLOs;
* ``gpu_utilization``: GPU-busy seconds / (end of the last GPU stage - first arrival);
  a stage cut by ``max_sim_time_s`` counts up to the cut only, so it is at most 1;
* counts: ``requests`` (all of the arm's requests) = ``finished`` + ``rejected`` +
  ``unfinished`` (arrived, not finished by the cut) + ``not_arrived`` (not arrived by
  the cut), always;
* ``mean_in_system``: time-average number of requests in the system (queued or running)
  over [0, end] — Little's law says it equals arrival rate x mean e2e latency;
* KV cache: peak and time-mean reserved fraction of capacity;
* ``saturated``: at the last arrival more than max(2 x batch size, 10% of arrivals)
  requests (continuous batching: max(10, 10% of arrivals), since a request waits there
  only while the running set or the KV cache is full, never for a batch to form) were
  still waiting: the queue was growing, the offered load exceeds capacity
  (never for a workload that arrives all at once, at t = 0: a batch job has no load).
"""

from __future__ import annotations

import math

import numpy as np

LATENCIES = ("ttft", "tpot", "itl", "e2e", "queue", "slot_wait", "gpu_wait")
PERCENTILES = (50, 90, 95, 99)
"""The default percentiles (``output.percentiles``); 50 and 99 are always added."""


def percentile_names(percentiles) -> tuple[str, ...]:
    """Column stems of percentiles as vLLM writes them: 99 -> ``p99``, 99.9 -> ``p99.9``."""
    return tuple(f"p{int(q) if float(q).is_integer() else q}" for q in percentiles)


def with_required(percentiles) -> tuple[float, ...]:
    """The percentiles to report: the given ones and 50 and 99, sorted, once each."""
    return tuple(sorted({float(q) for q in percentiles} | {50.0, 99.0}))


STACKED_VALUES = 100_000
"""Latencies of equal length with at most this many values in all are summarised in
one numpy call (for small runs, numpy's per-call overhead is most of the summary's
time); larger ones one at a time (stacking them would cost memory)."""


def _stats(values: list[np.ndarray], percentiles) -> list[list[float]]:
    """For each array: the mean, the (population) standard deviation, then the
    ``percentiles`` (numpy's linear interpolation, as vLLM's); NaN when it is empty."""
    if values[0].size == 0:
        return [[math.nan] * (2 + len(percentiles))] * len(values)
    if len(values) > 1 and values[0].size * len(values) <= STACKED_VALUES:
        stacked = np.array(values)
        return [[mean, sd] + p for mean, sd, p in zip(stacked.mean(axis=1).tolist(), stacked.std(axis=1).tolist(),
                                                      np.percentile(stacked, percentiles, axis=1).T.tolist())]
    return [[float(v.mean()), float(v.std())] + np.percentile(v, percentiles).tolist() for v in values]


def weighted_stats(values: np.ndarray, weights: np.ndarray, percentiles) -> list[float]:
    """Mean, standard deviation and percentiles of ``values`` each repeated ``weights``
    times (non-negative integers), exactly as numpy's (linear) percentile of the
    expanded array, without expanding it: of N values in order, percentile q is
    x[h] interpolated at h = (N - 1) q / 100."""
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    n = int(weights.sum())
    if n == 0:
        return [math.nan] * (2 + len(percentiles))
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    mean = float(np.dot(values, weights) / n)
    sd = float(np.sqrt(max(np.dot((values - mean) ** 2, weights) / n, 0.0)))
    ends = np.cumsum(weights)  # the expanded array's x[i] is values[searchsorted(ends, i, "right")]
    h = (n - 1) * np.asarray(percentiles, dtype=np.float64) / 100.0
    low, high = np.floor(h), np.ceil(h)
    x_low = values[np.searchsorted(ends, low, side="right")]
    x_high = values[np.searchsorted(ends, high, side="right")]
    return [mean, sd] + (x_low + (h - low) * (x_high - x_low)).tolist()


def itl_distribution(emission_end_s: np.ndarray, first_token_s: np.ndarray, finish_s: np.ndarray,
                     pauses: list[tuple[float, ...]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inter-token latencies of finished requests, as (gap values s, how many times each).

    ``emission_end_s``: end times, in order, of the arm's GPU steps that give running
    requests tokens (decode, verify and mixed steps). Every running request takes part
    in every such step until it finishes (the schedulers run the whole running set), so
    a request with first token at f and last at F gets tokens exactly at the steps
    ending in (f, F]: its gaps are E[i0] - f, then the step-to-step gaps E[j] - E[j-1]
    up to F. Each step-to-step gap is counted once per request spanning it (a
    difference array over the steps: O(steps + requests), no per-token list).

    ``pauses``: per preempted request (same order as the others, None where it was not),
    the flat times (preempted_1, resumed_1, token_1, preempted_2, ...): it got tokens at
    steps in (f, p1], at r1 if token_1 is 1 (a re-prefill's token; 0: swapped back in,
    no token then), at steps in (r1, p2], ..., up to F; those requests' gaps are listed
    one by one.
    """
    e = np.asarray(emission_end_s, dtype=np.float64)
    values, weights = [], []
    plain = np.ones(first_token_s.size, dtype=bool)
    if pauses:
        for i, times in enumerate(pauses):
            if times:
                plain[i] = False
                emitted, start = [], first_token_s[i]
                for j in range(0, len(times), 3):
                    stop, resumed, token = times[j:j + 3]
                    emitted.extend(e[np.searchsorted(e, start, "right"):np.searchsorted(e, stop, "right")])
                    if token:
                        emitted.append(resumed)  # the re-prefill's token
                    start = resumed
                emitted.extend(e[np.searchsorted(e, start, "right"):np.searchsorted(e, finish_s[i], "right")])
                gaps = np.diff(np.concatenate(([first_token_s[i]], emitted)))
                values.append(gaps)
                weights.append(np.ones(gaps.size, dtype=np.int64))
    f, end = first_token_s[plain], finish_s[plain]
    i0 = np.searchsorted(e, f, "right")
    i1 = np.searchsorted(e, end, "right")
    has = i1 > i0  # requests of one token have no gap
    i0, i1, f = i0[has], i1[has], f[has]
    values.append(e[i0] - f)
    weights.append(np.ones(i0.size, dtype=np.int64))
    if e.size > 1:
        # gap j (E[j] - E[j-1], j >= 1) belongs to the requests with i0 < j < i1
        span = np.zeros(e.size + 1, dtype=np.int64)
        np.add.at(span, i0 + 1, 1)
        np.add.at(span, i1, -1)
        values.append(np.diff(e))
        weights.append(np.cumsum(span)[1:e.size])
    return np.concatenate(values), np.concatenate(weights)


def max_concurrent(arrival_s: np.ndarray, finish_s: np.ndarray) -> int:
    """Most requests in the system at once, over half-open intervals [arrival, finish)
    (a finish at the same instant as an arrival leaves first), as vLLM's sweep does."""
    if arrival_s.size == 0:
        return 0
    times = np.concatenate((arrival_s, finish_s))
    steps = np.concatenate((np.ones(arrival_s.size, np.int64), -np.ones(finish_s.size, np.int64)))
    order = np.lexsort((steps, times))  # by time, departures (-1) first
    return int(np.cumsum(steps[order]).max())


def arm_metrics(totals, stats: dict, arm: str, batch_size: int, ttft_slo_s: float,
                tpot_slo_s: float, percentiles=PERCENTILES, continuous: bool = False) -> dict:
    """Metrics of one arm from its exact totals (``recorder.ArmTotals``) and run stats."""
    percentiles = with_required(percentiles)
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
    together = [name for name in values if values[name].size == values["ttft"].size]
    latency = dict(zip(together, _stats([values[name] for name in together], percentiles)))
    if "tpot" not in latency:
        latency["tpot"] = _stats([values["tpot"]], percentiles)[0]
    ids = req["request_id"][ok]
    pauses = [totals.pauses.get(i) for i in ids.tolist()] if totals.pauses else None
    latency["itl"] = weighted_stats(*itl_distribution(totals.emissions(), first, finish, pauses), percentiles)
    names = ("mean", "std") + percentile_names(percentiles)
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
        # swap preemption: requests swapped out to CPU memory, and the GPU time of the copies
        f"{arm}_swap_outs": int(stats.get("swap_outs", 0)),
        f"{arm}_swap_time_s": float(stats.get("swap_time_s", 0.0)),
        # prompt tokens served from the prefix cache / prompt tokens of admitted requests
        f"{arm}_prefix_cache_hit_rate": (stats.get("prefix_hit_tokens", 0) / stats["prompt_tokens_admitted"]
                                         if stats.get("prompt_tokens_admitted") else math.nan),
        f"{arm}_output_tokens_per_s": float(output.sum() / window) if window else math.nan,
        f"{arm}_requests_per_s": finished / window if window else math.nan,
        f"{arm}_total_tokens_per_s": (float((output.sum() + req["prompt_len"][ok].sum()) / window)
                                      if window else math.nan),
        f"{arm}_prompt_tokens": int(req["prompt_len"][ok].sum()),
        f"{arm}_output_tokens": int(output.sum()),
        f"{arm}_duration_s": float(window) if finished else math.nan,
        f"{arm}_max_concurrent_requests": max_concurrent(arrival, finish),
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
                                 and stats["waiting_at_last_arrival"] > max(10 if continuous else 2 * batch_size,
                                                                            0.1 * arrived)),
    })
    return out

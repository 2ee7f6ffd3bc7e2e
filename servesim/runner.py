"""Sweep points -> two simulated arms each -> per-point summary rows.

Each point runs the same workload twice with common random numbers: ``baseline``
(no speculation) and ``spec`` (the scenario's method). A point's random streams
derive from the scenario seed and the point's own parameters, never from the order
points run in, so a point gives the same numbers alone, in a sweep or in parallel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from servesim.costmodel import CostModel
from servesim.engine import Recorder, simulate
from servesim.hardware import get_gpu
from servesim.metrics import arm_metrics
from servesim.models import get_model
from servesim.engine import ServingConfig
from servesim.scenario import SCHEMA, Point, Scenario
from servesim.speculation import (DraftModelSpeculation, FixedAcceptance, MedusaSpeculation,
                                  NoSpeculation,
                                  TruncatedGeometricAcceptance, acceptance_curve,
                                  default_max_accepted, interpolate_curve)
from servesim.trees import TreeAcceptance, greedy_tree, head_rank_probabilities, published_tree
from servesim.workload import build_workload

ALWAYS_IN_SUMMARY = ("gpu", "model", "method", "candidate_tokens", "batch_size", "seq_len")
"""Parameters every summary row carries, swept or not (the output contract)."""


WORKLOAD_KEYS = tuple(SCHEMA["workload"])
ACCEPTANCE_KEYS = ("method", "candidate_tokens", "acceptance", "acceptance_curve",
                   "accepted_tokens", "max_accepted", "num_heads", "head_accuracy", "model", "tree",
                   "tree_paths", "gamma", "alpha", "alpha_per_position", "batch_size",
                   "num_requests", "output_len")


def stream_seed(scenario_seed: int, point: Point, keys: tuple[str, ...],
                replication: int = 0) -> np.random.SeedSequence:
    """Seed of one random stream: the scenario seed and the values of the keys the
    stream depends on (a stable hash, independent of point order and process).

    Points that agree on those keys share the stream: common random numbers across
    points as well as across arms, so that e.g. speedup against context length is
    compared on the very same acceptance draws and differences come from the cost
    model, not from sampling noise.
    """
    text = repr([(k, point.values[k]) for k in keys])
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.SeedSequence([scenario_seed, digest, replication])


def build_cost_model(point: Point) -> CostModel:
    gpu = get_gpu(point["gpu"])
    profile = gpu.profile.with_overrides(**point.profile_overrides)
    return CostModel(gpu, get_model(point["model"]), profile, point["dtype_bytes"])


def build_speculator(point: Point):
    """The spec arm's speculator for a point (``NoSpeculation`` for method ``none``)."""
    if point["method"] == "none":
        return NoSpeculation()
    if point["method"] == "draft_model":
        gpu = get_gpu(point["gpu"])
        draft = CostModel(gpu, get_model(point["draft_model"]),
                          gpu.profile.with_overrides(**point.profile_overrides), point["dtype_bytes"])
        return DraftModelSpeculation(draft, point["gamma"], point["alpha"],
                                     tuple(point["alpha_per_position"]))
    n = point["candidate_tokens"]
    max_accepted = point["max_accepted"] or default_max_accepted(n, point["num_heads"])
    if point["acceptance"] == "fixed":
        acceptance = FixedAcceptance(point["accepted_tokens"])
    elif point["acceptance"] == "tree":
        probs = head_rank_probabilities(point["head_accuracy"] or point["model"])
        if point["tree_paths"]:
            tree = [tuple(p) for p in point["tree_paths"]]
            n = len(tree) + 1
        elif point["tree"]:
            tree = published_tree(point["tree"])[: n - 1]
        else:
            tree = greedy_tree(probs, n)
        acceptance = TreeAcceptance(tuple(tree), probs)
    else:
        mean = interpolate_curve(acceptance_curve(point["acceptance_curve"]), n)
        acceptance = TruncatedGeometricAcceptance.with_mean(min(mean, max_accepted), max_accepted)
    return MedusaSpeculation(n, acceptance, point["num_heads"], point["include_head_cost"])


@dataclass
class PointResult:
    """A point's summary row and its records, one Recorder per replication."""

    summary: dict
    recorders: list[Recorder]


def run_replication(point: Point, scenario_seed: int, replication: int, cost_model,
                    speculator) -> Recorder:
    """Both arms of one replication of a point, on common random numbers."""
    accept_seq = stream_seed(scenario_seed, point, ACCEPTANCE_KEYS, replication)
    workload = build_workload(point.values, stream_seed(scenario_seed, point, WORKLOAD_KEYS, replication))
    config = serving_config(point, cost_model, speculator)
    recorder = Recorder()
    for arm, spec in (("baseline", NoSpeculation()), ("spec", speculator)):
        simulate(workload, config=config, cost_model=cost_model, speculator=spec,
                 rng=np.random.default_rng(accept_seq), recorder=recorder,
                 point_id=point.point_id, arm=arm)
    return recorder


def weights_bytes(point: Point, cost_model, speculator) -> float:
    """Bytes of all weights on the GPU: target, Medusa heads or draft model."""
    m = cost_model.model
    total = m.params
    if point["method"] == "medusa":
        total += point["num_heads"] * (m.hidden * m.hidden + m.hidden * m.vocab)
    elif point["method"] == "draft_model":
        total += speculator.draft_cost_model.model.params
    return total * point["dtype_bytes"]


def kv_capacity_tokens(point: Point, cost_model, speculator) -> float:
    """KV-cache tokens: the scenario's value, or (memory x utilisation - weights) / KV
    bytes per token (both arms get the spec arm's weights, so they share one capacity)."""
    if point["kv_capacity_tokens"]:
        return point["kv_capacity_tokens"]
    free = cost_model.gpu.memory_bytes * point["gpu_memory_utilization"] - weights_bytes(point, cost_model, speculator)
    return max(0, int(free // cost_model.model.kv_bytes_per_token(point["dtype_bytes"])))


def serving_config(point: Point, cost_model, speculator) -> ServingConfig:
    return ServingConfig(point["batching"], point["batch_size"], point["max_wait_s"],
                         kv_capacity_tokens(point, cost_model, speculator), point["max_sim_time_s"])


def run_point(point: Point, scenario_seed: int, replications: int = 1, cost_model=None,
              speculator=None) -> PointResult:
    """All replications of one point, and its summary row.

    With one replication the row is that replication's summary. With K > 1 every
    figure is the mean over the replications, ``speedup_ci95_low``/``_high`` is the
    Student-t 95% interval of the mean speedup and ``speedup_replication_sd`` the
    replications' standard deviation (NaN for K = 1).
    """
    cost_model = cost_model or build_cost_model(point)
    speculator = speculator or build_speculator(point)
    recorders = [run_replication(point, scenario_seed, r, cost_model, speculator)
                 for r in range(replications)]
    rows = [summarise(point, rec, speculator) for rec in recorders]
    summary = dict(rows[0])
    speedups = np.array([r["speedup"] for r in rows])
    if replications > 1:
        for key, value in rows[0].items():
            if isinstance(value, float):
                summary[key] = float(np.mean([r[key] for r in rows]))
        sd = float(np.std(speedups, ddof=1))
        half = t_quantile_975(replications - 1) * sd / np.sqrt(replications)
        summary.update(speedup_replication_sd=sd, speedup_ci95_low=summary["speedup"] - half,
                       speedup_ci95_high=summary["speedup"] + half)
    else:
        summary.update(speedup_replication_sd=np.nan, speedup_ci95_low=np.nan, speedup_ci95_high=np.nan)
    summary["replications"] = replications
    return PointResult(summary, recorders)


def t_quantile_975(dof: int) -> float:
    """97.5% quantile of Student's t with ``dof`` degrees of freedom.

    Exact table values for dof <= 30 (standard tables), the normal 1.95996 beyond
    with the first-order correction z + (z^3 + z) / (4 dof).
    """
    table = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
             2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
             2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
    if dof < 1:
        raise ValueError("dof must be >= 1")
    if dof <= len(table):
        return table[dof - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * dof)


def _arm_figures(recorder: Recorder, arm: str, full_batch: int) -> dict:
    """Decode-phase totals of one arm: all iterations, and those with a full batch."""
    out = {"time": 0.0, "tokens": 0, "iterations": 0, "full_time": 0.0, "full_tokens": 0}
    for row in recorder.steps:
        if row[1] != arm or row[2] == "prefill":
            continue
        stage, duration, batch, generated = row[2], row[4], row[5], row[8]
        out["time"] += duration
        out["tokens"] += generated
        out["iterations"] += stage != "draft"
        if batch == full_batch:
            out["full_time"] += duration
            out["full_tokens"] += generated
    return out


def summarise(point: Point, recorder: Recorder, speculator) -> dict:
    """The summary row: parameters, then speedup and throughput figures.

    Decode throughput is output tokens after the first (which prefill yields) per GPU
    second in decode, draft and verify stages, counted over the iterations that run
    with a full batch (``batch_size`` sequences, or all requests if fewer): the
    steady state a fixed-batch figure such as Medusa's describes.

    speedup: spec / baseline full-batch decode throughput (if either arm never ran a full
        batch, as under light open-loop load, over all decode iterations instead).
    speedup_with_drain: the same over all decode iterations, including a static
        batch's tail in which finished requests have left and stragglers run alone.
    speedup_mean_paired, speedup_p05/p50/p95: over requests, of baseline decode time /
        spec decode time (decode time = finish - first token), paired by request.
    acceptance_rate: tokens drawn per verify step (before dropping tokens past a
        request's end), mean over request-steps of the spec arm;
        expected_acceptance_rate is the acceptance model's mean.
    step_time_ratio: GPU seconds per spec iteration (draft + verify) / per baseline step.
    """
    full_batch = min(point["batch_size"], point["num_requests"])
    base = _arm_figures(recorder, "baseline", full_batch)
    spec = _arm_figures(recorder, "spec", full_batch)
    per_arm: dict[str, dict[int, tuple]] = {"baseline": {}, "spec": {}}
    for row in recorder.requests:
        if row[14] == "finished":
            per_arm[row[1]][row[2]] = row
    ratios = []
    for rid, b_row in per_arm["baseline"].items():
        s_row = per_arm["spec"].get(rid)
        if s_row is None:
            continue
        base_t, spec_t = b_row[6] - b_row[5], s_row[6] - s_row[5]
        if spec_t > 0:
            ratios.append(base_t / spec_t)
    ratios = np.asarray(ratios if ratios else [np.nan])
    steps = sum(r[9] for r in per_arm["spec"].values())
    accepted = sum(r[10] for r in per_arm["spec"].values())

    def rate(tokens, time):
        return tokens / time if time > 0 else np.nan

    if not (base["full_time"] > 0 and spec["full_time"] > 0):
        # never a full batch (light open-loop load): all decode iterations count
        base["full_tokens"], base["full_time"] = base["tokens"], base["time"]
        spec["full_tokens"], spec["full_time"] = spec["tokens"], spec["time"]
    base_tps, spec_tps = rate(base["full_tokens"], base["full_time"]), rate(spec["full_tokens"], spec["full_time"])
    base_step = base["time"] / base["iterations"] if base["iterations"] else np.nan
    spec_step = spec["time"] / spec["iterations"] if spec["iterations"] else np.nan
    row = {"point_id": point.point_id}
    for key in dict.fromkeys(ALWAYS_IN_SUMMARY + point.swept):
        row[key] = point.values[key]
    row["candidate_tokens"] = speculator.tokens_per_step  # the verify width actually used
    row.update({
        "speedup": spec_tps / base_tps,
        "speedup_with_drain": rate(spec["tokens"], spec["time"]) / rate(base["tokens"], base["time"]),
        "speedup_mean_paired": float(np.mean(ratios)),
        "speedup_p05": float(np.percentile(ratios, 5)),
        "speedup_p50": float(np.percentile(ratios, 50)),
        "speedup_p95": float(np.percentile(ratios, 95)),
        "acceptance_rate": accepted / steps if steps else np.nan,
        "expected_acceptance_rate": float(speculator.acceptance.mean),
        "baseline_tokens_per_s": base_tps,
        "spec_tokens_per_s": spec_tps,
        "step_time_ratio": spec_step / base_step,
        "baseline_step_time_s": base_step,
        "spec_step_time_s": spec_step,
        "requests": len(per_arm["spec"]),
        "kv_capacity_tokens": recorder.arm_stats["spec"]["kv_capacity_tokens"],
    })
    for arm in ("baseline", "spec"):
        rows = [r for r in recorder.requests if r[1] == arm]
        steps = [r for r in recorder.steps if r[1] == arm]
        row.update(arm_metrics(rows, steps, recorder.arm_stats[arm], arm, point["batch_size"],
                               point["ttft_slo_s"], point["tpot_slo_s"]))
    return row


def _run_point_job(args: tuple[Point, int, int]) -> PointResult:
    return run_point(*args)


def run_scenario(scenario: Scenario, jobs: int = 1, progress=None) -> list[PointResult]:
    """Every point of a scenario, in sweep order.

    jobs: local worker processes (1 = in this process). Results do not depend on it:
        each point's random streams derive from the scenario seed and its parameters.
    progress: optional callable(done, total), called as points complete.
    """
    points = scenario.points()
    tasks = [(p, scenario.seed, scenario.values["replications"]) for p in points]
    results: list[PointResult] = []
    if jobs <= 1 or len(points) <= 1:
        for task in tasks:
            results.append(_run_point_job(task))
            if progress:
                progress(len(results), len(tasks))
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    by_id: dict[int, PointResult] = {}
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context) as pool:
        futures = [pool.submit(_run_point_job, task) for task in tasks]
        for future in as_completed(futures):
            result = future.result()
            by_id[result.summary["point_id"]] = result
            if progress:
                progress(len(by_id), len(tasks))
    return [by_id[p.point_id] for p in points]

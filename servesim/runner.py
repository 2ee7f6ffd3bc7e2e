"""Sweep points -> two simulated arms each -> per-point summary rows.

Each point runs the same workload twice with common random numbers: ``baseline``
(no speculation) and ``spec`` (the scenario's method). A point's random streams
derive from the scenario seed and the point's own parameters, never from the order
points run in, so a point gives the same numbers alone, in a sweep or in parallel.
"""

from __future__ import annotations

import gc
import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from servesim.costmodel import CostModel
from servesim.serving import Recorder, simulate
from servesim.results import PartSink
from servesim.hardware import get_framework, get_gpu
from servesim.metrics import arm_metrics
from servesim.models import resolve_model, thaw_definitions
from servesim.serving import ServingConfig
from servesim.scenario import SCHEMA, Point, Scenario
from servesim.scenario import scheduler_of, token_budget_of, weights_bytes
from servesim.speculation import (DraftModelSpeculation, FixedAcceptance, MedusaSpeculation,
                                  NoSpeculation,
                                  TruncatedGeometricAcceptance, acceptance_curve,
                                  default_max_accepted, interpolate_curve)
from servesim.speculation.acceptance import (AcceptanceReplay, ChainAcceptance, NgramAcceptance,
                                             RequestLevels)
from servesim.speculation.draft_head import DraftHead, head_model
from servesim.speculation.eagle import EagleSpeculation, tree_shape
from servesim.speculation.mtp import MTPSpeculation
from servesim.speculation.ngram import NgramSpeculation
from servesim.speculation.policy import BatchThreshold, Goodput
from servesim.speculation.trees import (TreeAcceptance, dynamic_tree, greedy_tree, head_rank_probabilities,
                                        published_tree)
from servesim.workload import build_workload

ALWAYS_IN_SUMMARY = ("gpu", "model", "method", "candidate_tokens", "batch_size", "seq_len")
"""Parameters every summary row carries, swept or not (the output contract)."""


WORKLOAD_KEYS = tuple(k for k in SCHEMA["workload"] if k not in ("trace_format", "trace_columns"))
"""Keys the workload's random streams derive from (a trace's format and column mapping
change what is read, not what is drawn)."""
ACCEPTANCE_KEYS = ("method", "candidate_tokens", "acceptance", "acceptance_curve",
                   "accepted_tokens", "max_accepted", "num_heads", "head_accuracy", "model", "tree",
                   "tree_paths", "gamma", "alpha", "alpha_per_position", "batch_size",
                   "num_requests", "output_len", "num_speculative_tokens", "eagle_topk",
                   "ngram_match_probability", "acceptance_spread", "acceptance_trace")


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


@lru_cache(maxsize=8)
def _cost_model(gpu_name: str, model_name: str, overrides: tuple, dtype_bytes: int,
                framework: str, kernel_profile: str, target: bool, step_overhead_s: float = -1.0,
                tensor_parallel_size: int = 1, definitions: tuple = (), head: tuple = (),
                step_overhead_per_seq_s: float = -1.0, quantization: str = "none",
                kv_cache_dtype: str = "auto", fp8_activation_quantization: str = "fused") -> CostModel:
    """Points that agree on GPU, model, kernel profile, framework, dtype and quantization
    share one cost model, so that its memo serves all of them (a sweep's baseline arms,
    for one, repeat the same steps for every speculation setting). The last few are
    kept, per process. A draft model (``target`` false) pays no framework overhead of its
    own."""
    fw = get_framework(framework)
    gpu = get_gpu(gpu_name, fw.kernels, kernel_profile)
    overhead = fw.step_overhead_s if step_overhead_s < 0 else step_overhead_s
    per_seq = fw.step_overhead_per_seq_s if step_overhead_per_seq_s < 0 else step_overhead_per_seq_s
    model = resolve_model(model_name, thaw_definitions(definitions))
    if head:  # a one-layer draft head of this model (EAGLE, MTP): (name, vocabulary)
        model = head_model(model, head[1], head[0])
    return CostModel(gpu, model, gpu.profile.with_overrides(**dict(overrides)),
                     dtype_bytes, overhead if target else 0.0, tensor_parallel_size, per_seq if target else 0.0,
                     quantization, kv_cache_dtype, fp8_activation_quantization)


def build_cost_model(point: Point, model: str | None = None, head: tuple = ()) -> CostModel:
    """The cost model of a point's target model (or of ``model``, e.g. its draft model;
    or, with ``head`` = (name, vocabulary), of a one-layer draft head of the target).
    ``model.quantization`` is the target's: drafters keep ``dtype_bytes`` weights; the KV
    cache's dtype (``model.kv_cache_dtype``) is every model's (one cache configuration)."""
    target = model is None and not head
    return _cost_model(point["gpu"], model or point["model"],
                       tuple(sorted(point.profile_overrides.items())), point["dtype_bytes"],
                       point["framework"], point["kernel_profile"], target,
                       point["step_overhead_s"], _draft_tp(point, model), point.model_definitions, head,
                       point["step_overhead_per_seq_s"], point["quantization"] if target else "none",
                       point["kv_cache_dtype"], point["fp8_activation_quantization"])


def _draft_tp(point: Point, model: str | None) -> int:
    """The target runs at tensor_parallel_size; a draft model too where its heads split
    as evenly (vLLM runs the draft with the target's TP), else on one GPU's share."""
    tp = point["tensor_parallel_size"]
    if model is None:
        return tp
    m = resolve_model(model, point.model_definitions)
    return tp if not (m.heads % tp or m.intermediate % tp) else 1


def build_speculator(point: Point, cost_model: CostModel | None = None):
    """The spec arm's speculator for a point (``NoSpeculation`` for method ``none``),
    with its per-request acceptance and its length policy (``cost_model``: the target's,
    for the ``goodput`` policy; built when not given)."""
    speculator = _proposer(point)
    if point["method"] == "none":
        return speculator
    if point["acceptance_trace"]:
        from servesim.inputs import read_acceptance_trace
        speculator.per_request = AcceptanceReplay(read_acceptance_trace(point["acceptance_trace"]),
                                                  speculator.max_length + 1)
    elif point["acceptance_spread"] > 0:
        speculator.per_request = RequestLevels(speculator.survival(), point["acceptance_spread"])
    if point["policy"] == "batch_threshold":
        speculator.policy = BatchThreshold(point["disable_by_batch_size"], point["disable_by_queue_length"],
                                           min(point["reduced_length"], speculator.max_length),
                                           speculator.max_length)
    elif point["policy"] == "goodput":
        speculator.policy = Goodput(speculator, cost_model or build_cost_model(point))
    return speculator


def _chain(point: Point, length: int) -> tuple[float, ...]:
    """A chain's conditional acceptance per position (alpha_per_position, else alpha)."""
    return tuple(point["alpha_per_position"][:length]) or (point["alpha"],) * length


def _proposer(point: Point):
    """The speculator of a point's method, before acceptance spread and policy."""
    method = point["method"]
    if method == "none":
        return NoSpeculation()
    if method == "draft_model":
        draft = build_cost_model(point, point["draft_model"])
        return DraftModelSpeculation(draft, point["gamma"], point["alpha"],
                                     tuple(point["alpha_per_position"][:point["gamma"]]), point["draft_cost_ratio"])
    k = point["num_speculative_tokens"]
    if method == "ngram":
        return NgramSpeculation(NgramAcceptance(point["ngram_match_probability"], _chain(point, k)), k,
                                point["propose_time_s"])
    if method == "mtp":
        head = DraftHead(build_cost_model(point, head=("mtp", 0)), 2, True, False)
        return MTPSpeculation(head, ChainAcceptance(_chain(point, k)), k, point["mtp_modules"])
    if method in ("eagle", "eagle3"):
        vocab = (point["draft_vocab_size"] or 32000) if method == "eagle3" else 0
        cm = build_cost_model(point, head=(method, vocab))
        head = DraftHead(cm, 3, False, True) if method == "eagle3" else DraftHead(cm, 2, True, False)
        if not (point["eagle_topk"] > 1 or point["tree_paths"]):
            return EagleSpeculation(method, head, ChainAcceptance(_chain(point, k)), (1,) * k,
                                    tuple(range(1, k + 2)))
        probs = head_rank_probabilities(point["head_accuracy"])
        if point["tree_paths"]:
            tree = [tuple(p) for p in point["tree_paths"]]
        else:
            tree = dynamic_tree(probs, point["eagle_topk"], k, point["candidate_tokens"])
        passes, widths = tree_shape(tree)
        if not point["tree_paths"]:  # EAGLE-2 expands top-k nodes per pass (the root first)
            passes = (1,) + (point["eagle_topk"],) * (k - 1)
        return EagleSpeculation(method, head, TreeAcceptance(tuple(tree), probs), passes[:len(widths) - 1],
                                widths)
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
    """A point's summary row and its records.

    recorders: one per replication, holding the table rows (runs kept in memory);
        empty when the rows were streamed to part files.
    parts: table name -> part files with its rows (streamed runs), in replication order.
    accepted_counts: per replication, the spec arm's accepted-tokens histogram.
    """

    summary: dict
    recorders: list[Recorder]
    accepted_counts: list[list[int]]
    parts: dict[str, list[Path]]


def run_replication(point: Point, scenario_seed: int, replication: int, cost_model,
                    speculator, part_dir: Path | None = None) -> tuple[Recorder, dict[str, Path]]:
    """Both arms of one replication of a point, on common random numbers; the
    recorder and, if rows were streamed to ``part_dir``, the part files."""
    accept_seq = stream_seed(scenario_seed, point, ACCEPTANCE_KEYS, replication)
    workload = build_workload(point.values, stream_seed(scenario_seed, point, WORKLOAD_KEYS, replication),
                              cost_model.model.max_context_tokens)
    config = serving_config(point, cost_model, speculator)
    sink = PartSink(part_dir, point.point_id, replication) if part_dir is not None else None
    recorder = Recorder(point["write_steps"], point["write_requests"], point["sample_every"], sink)
    recorder.capped_requests = workload.capped
    for arm, spec in (("baseline", NoSpeculation()), ("spec", speculator)):
        simulate(workload, config=config, cost_model=cost_model, speculator=spec,
                 rng=np.random.default_rng(accept_seq), recorder=recorder,
                 point_id=point.point_id, arm=arm)
    if sink is None:
        return recorder, {}
    recorder.flush()
    return recorder, sink.close()


def kv_bytes_per_token(point: Point, cost_model, speculator) -> int:
    """KV bytes of one token on one GPU: the target's, plus a draft model's own KV cache
    (it grows with the same tokens) or an EAGLE/MTP head's one-layer KV (per module)."""
    kv = cost_model.kv_bytes_per_token()
    if point["method"] == "draft_model":
        kv += speculator.draft_cost_model.kv_bytes_per_token()
    elif point["method"] in ("eagle", "eagle3", "mtp"):
        kv += speculator.head.kv_bytes_per_token() * (point["mtp_modules"] if point["method"] == "mtp" else 1)
    return kv


def kv_capacity_tokens(point: Point, cost_model, speculator) -> float:
    """KV-cache tokens: the scenario's value, or, per GPU, (memory x utilisation -
    weights / tensor_parallel_size) / KV bytes per token on one GPU (a draft model's own
    KV included); both arms get the spec arm's weights, so they share one capacity."""
    if point["kv_capacity_tokens"]:
        return point["kv_capacity_tokens"]
    tp = point["tensor_parallel_size"]
    free = (cost_model.gpu.memory_bytes * point["gpu_memory_utilization"]
            - weights_bytes(point.values, point.model_definitions) / tp)
    return max(0, int(free // kv_bytes_per_token(point, cost_model, speculator)))


def serving_config(point: Point, cost_model, speculator) -> ServingConfig:
    kv_bytes = kv_bytes_per_token(point, cost_model, speculator)
    return ServingConfig(point["batching"], point["batch_size"], point["max_wait_s"],
                         kv_capacity_tokens(point, cost_model, speculator), point["max_sim_time_s"],
                         token_budget_of(point.values) or math.inf, scheduler_of(point.values),
                         point["long_prefill_token_threshold"], point["kv_cache"], point["block_size"],
                         point["enable_prefix_caching"], point["preemption_mode"],
                         int(point["swap_space"] * 2**30 // kv_bytes), kv_bytes)


def run_point(point: Point, scenario_seed: int, replications: int = 1, cost_model=None,
              speculator=None, part_dir: Path | None = None) -> PointResult:
    """All replications of one point, and its summary row.

    With one replication the row is that replication's summary. With K > 1 every
    figure is the mean over the replications, ``speedup_ci95_low``/``_high`` is the
    Student-t 95% interval of the mean speedup and ``speedup_replication_sd`` the
    replications' standard deviation (NaN for K = 1).
    """
    cost_model = cost_model or build_cost_model(point)
    speculator = speculator or build_speculator(point, cost_model)
    runs = [run_replication(point, scenario_seed, r, cost_model, speculator, part_dir)
            for r in range(replications)]
    recorders = [rec for rec, _ in runs]
    rows = [summarise(point, rec, speculator) for rec in recorders]
    counts = [rec.accepted_counts.get("spec", []) for rec in recorders]
    parts: dict[str, list[Path]] = {}
    for _, files in runs:
        for name, path in files.items():
            parts.setdefault(name, []).append(path)
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
    if part_dir is not None:
        recorders = []  # rows are in the part files; the totals are summarised
    return PointResult(summary, recorders, counts, parts)


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


def _full_batch(totals, full_batch: int) -> tuple[float, int]:
    """Decode GPU seconds and tokens of the iterations that ran with a full batch."""
    return totals.batch_time_s.get(full_batch, 0.0), totals.batch_tokens.get(full_batch, 0)


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

    Everything comes from the recorder's exact per-arm totals, never from the (possibly
    sampled or streamed) table rows.
    """
    base, spec = recorder.arm("baseline"), recorder.arm("spec")
    full_batch = min(point["batch_size"], point["num_requests"])
    base_full_time, base_full_tokens = _full_batch(base, full_batch)
    spec_full_time, spec_full_tokens = _full_batch(spec, full_batch)
    if not (base_full_time > 0 and spec_full_time > 0):
        # never a full batch (light open-loop load): all decode iterations count
        base_full_time, base_full_tokens = base.decode_time_s, base.decode_tokens
        spec_full_time, spec_full_tokens = spec.decode_time_s, spec.decode_tokens

    def rate(tokens, time):
        return tokens / time if time > 0 else np.nan

    def ratio(a, b):  # NaN where the denominator is 0 or NaN (e.g. a run cut before any step)
        return a / b if b > 0 else np.nan

    b_req, s_req = base.requests(), spec.requests()
    b_ok, s_ok = b_req["status"] == 0, s_req["status"] == 0
    b_ids, s_ids = b_req["request_id"][b_ok], s_req["request_id"][s_ok]
    common, b_idx, s_idx = np.intersect1d(b_ids, s_ids, assume_unique=True, return_indices=True)
    b_time = (b_req["finish_s"][b_ok] - b_req["first_token_s"][b_ok])[b_idx]
    s_time = (s_req["finish_s"][s_ok] - s_req["first_token_s"][s_ok])[s_idx]
    positive = s_time > 0
    ratios = b_time[positive] / s_time[positive] if positive.any() else np.array([np.nan])
    steps = int(s_req["verify_steps"][s_ok].sum())
    accepted = int(s_req["accepted_tokens"][s_ok].sum())
    base_tps, spec_tps = rate(base_full_tokens, base_full_time), rate(spec_full_tokens, spec_full_time)
    base_step = base.decode_time_s / base.iterations if base.iterations else np.nan
    spec_step = spec.decode_time_s / spec.iterations if spec.iterations else np.nan
    row = {"point_id": point.point_id}
    for key in dict.fromkeys(ALWAYS_IN_SUMMARY + point.swept):
        row[key] = point.values[key]
    row["candidate_tokens"] = speculator.tokens_per_step  # the verify width actually used
    row["ttft_slo_s"], row["tpot_slo_s"] = point["ttft_slo_s"], point["tpot_slo_s"]  # goodput's targets
    p05, p50, p95 = np.percentile(ratios, [5, 50, 95]).tolist()
    row.update({
        "speedup": ratio(spec_tps, base_tps),
        "speedup_with_drain": ratio(rate(spec.decode_tokens, spec.decode_time_s),
                                    rate(base.decode_tokens, base.decode_time_s)),
        "speedup_mean_paired": float(np.mean(ratios)),
        "speedup_p05": p05,
        "speedup_p50": p50,
        "speedup_p95": p95,
        "acceptance_rate": accepted / steps if steps else np.nan,
        "expected_acceptance_rate": float(speculator.acceptance.mean),
        "baseline_tokens_per_s": base_tps,
        "spec_tokens_per_s": spec_tps,
        "step_time_ratio": ratio(spec_step, base_step),
        "baseline_step_time_s": base_step,
        "spec_step_time_s": spec_step,
        "paired_requests": int(common.size),
        "kv_capacity_tokens": recorder.arm_stats["spec"]["kv_capacity_tokens"],
        # requests whose drawn prompt + output exceeded the model's maximum context (cut to it)
        "length_capped_requests": recorder.capped_requests,
    })
    row.update(spec_decode_metrics(recorder, speculator))
    for arm in ("baseline", "spec"):
        row.update(arm_metrics(recorder.arm(arm), recorder.arm_stats[arm], arm, point["batch_size"],
                               point["ttft_slo_s"], point["tpot_slo_s"], point["percentiles"],
                               point["batching"] == "continuous"))
    return row


REPORTED_POSITIONS = 8
"""Draft positions whose acceptance rate the summary reports (``acceptance_rate_pos1`` ...;
NaN beyond a point's speculation length)."""


def spec_decode_metrics(recorder: Recorder, speculator) -> dict:
    """vLLM's speculative-decoding metrics of the spec arm, from its exact histograms.

    mean_acceptance_length: 1 + accepted draft tokens per request-step that drafted
        (steps a policy ran without speculation do not count);
    draft_acceptance_rate: accepted / drafted tokens (a tree drafts its nodes);
    acceptance_rate_posJ: request-steps that accepted the J-th drafted token (depth J of
        a tree) / request-steps that drafted it;
    draft_time_share: GPU (or proposer) time in draft stages / all stage time;
    mean_spec_length: mean speculation length over request-steps (0 = off).
    """
    counts = recorder.accepted_counts.get("spec", [])
    lengths = recorder.length_counts.get("spec", [])
    totals = recorder.arm("spec")
    nan = float("nan")
    drafting_steps = sum(lengths[1:])
    accepted = sum((a - 1) * c for a, c in enumerate(counts) if a >= 1)
    drafted = sum(c * speculator.drafted_tokens(k) for k, c in enumerate(lengths) if k)
    at_least = [sum(counts[a:]) for a in range(len(counts))]  # at_least[a]: steps that drew >= a tokens
    row = {
        "mean_acceptance_length": 1 + accepted / drafting_steps if drafting_steps else nan,
        "draft_acceptance_rate": accepted / drafted if drafted else nan,
        "draft_time_share": totals.draft_time_s / totals.busy_s if totals.busy_s > 0 else nan,
        "mean_spec_length": (sum(k * c for k, c in enumerate(lengths)) / sum(lengths)) if sum(lengths) else nan,
    }
    for j in range(1, REPORTED_POSITIONS + 1):
        reached = sum(lengths[j:])
        row[f"acceptance_rate_pos{j}"] = (at_least[j + 1] / reached if reached and j + 1 < len(at_least)
                                          else (0.0 if reached else nan))
    return row


def _run_point_job(args: tuple) -> PointResult:
    point, seed, replications, part_dir = args
    return run_point(point, seed, replications, part_dir=part_dir)


def _spill(result: PointResult, part_dir: Path) -> PointResult:
    """Write a result's rows to part files in ``part_dir`` (for results that come back
    from other machines, which cannot write into our folder) and drop them."""
    for replication, recorder in enumerate(result.recorders):
        sink = PartSink(part_dir, result.summary["point_id"], replication)
        sink(recorder.steps, recorder.requests)
        for name, path in sink.close().items():
            result.parts.setdefault(name, []).append(path)
    result.recorders = []
    return result


def _run_on_ray(tasks: list[tuple], address: str | None, jobs: int, progress,
                part_dir: Path | None) -> list[PointResult]:
    """Points as Ray tasks: on the cluster at ``address``, or on a local Ray instance
    (with ``jobs`` CPUs) when none is given. Rows come back with the results and are
    written to part files here, as each point completes."""
    import ray

    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(_run_point_job)
        refs = [remote.remote(task[:3] + (None,)) for task in tasks]
        position = {ref: i for i, ref in enumerate(refs)}
        results: list[PointResult | None] = [None] * len(refs)
        pending, done_count = list(refs), 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            result = ray.get(ready[0])
            results[position[ready[0]]] = _spill(result, part_dir) if part_dir is not None else result
            done_count += 1
            if progress:
                progress(done_count, len(refs))
        return results
    finally:
        if started:
            ray.shutdown()


def run_scenario(scenario: Scenario, jobs: int = 1, progress=None,
                 part_dir: Path | None = None, executor: str = "local",
                 address: str | None = None, consume=None) -> list[PointResult]:
    """Every point of a scenario, in sweep order.

    jobs: local worker processes (1 = in this process), or CPUs of a local Ray
        instance. Results do not depend on it: each point's random streams derive from
        the scenario seed and its parameters, never from the order points run in.
    progress: optional callable(done, total), called as points complete.
    part_dir: stream table rows to part files there (bounded memory) instead of
        keeping them in the results.
    executor: ``"local"`` (processes on this machine) or ``"ray"`` (the optional
        ``servesim[ray]`` extra; ``address`` of an existing cluster, or a local one).
    consume: optional callable(result), given each point's result in sweep order
        instead of keeping it (a long sweep's memory then stays bounded: the caller
        streams what it needs); the returned list is then empty.
    """
    points = scenario.points()
    tasks = [(p, scenario.seed, scenario.values["replications"], part_dir) for p in points]
    if executor == "ray":
        results = _run_on_ray(tasks, address, jobs, progress, part_dir)
        if consume is None:
            return results
        for result in results:
            consume(result)
        return []
    results: list[PointResult] = []
    done = 0

    def take(result: PointResult) -> None:
        nonlocal done
        done += 1
        if consume is None:
            results.append(result)
        else:
            consume(result)
        if progress:
            progress(done, len(tasks))

    if jobs <= 1 or len(points) <= 1:
        for task in tasks:
            take(_run_point_job(task))
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    workers = min(jobs, len(tasks))
    chunk = max(1, len(tasks) // (workers * 8))  # few, large messages: less pickling overhead
    # The cyclic garbage collector is paused while results come in: it would walk the
    # growing list of results again and again (in a 1,000-point sweep, as long as it
    # takes to unpickle them), taking CPU time from the workers.
    collecting = gc.isenabled()
    gc.disable()
    try:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        try:
            for result in pool.map(_run_point_job, tasks, chunksize=chunk):
                take(result)
        except BaseException:
            # interrupted (Ctrl-C, SIGTERM) or failed: stop the workers now rather than
            # wait for the points they are running (the executor has no public way to)
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    finally:
        if collecting:
            gc.enable()
    return results

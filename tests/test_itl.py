"""Inter-token latency (ITL), as ``vllm bench serve`` computes it, and the summary's
vLLM-named figures.

The summary's ITL comes from the steps' end times and the requests' first and last
token times (``metrics.itl_distribution``). Here the truth is worked out another way:
the engine is watched, iteration by iteration, for which requests each iteration gives
tokens, and every request's list of gaps is written out and pooled, as vLLM pools its
clients' ``itl`` lists; numpy's percentiles of that list are the reference.
"""

import numpy as np
import pytest

from servesim.serving import engine
from servesim.metrics import itl_distribution, max_concurrent, weighted_stats
from servesim.runner import build_cost_model, run_point
from servesim.scenario import load_scenario


def test_weighted_stats_equal_numpy_on_the_expanded_array():
    rng = np.random.default_rng(3)
    for _ in range(50):
        values = rng.exponential(1.0, size=rng.integers(1, 30))
        weights = rng.integers(0, 6, size=values.size)
        weights[0] += 1
        expanded = np.repeat(values, weights)
        qs = [1, 25, 50, 90, 95, 99, 99.9, 100]
        got = weighted_stats(values, weights, qs)
        assert got[0] == pytest.approx(expanded.mean(), rel=1e-12)
        assert got[1] == pytest.approx(expanded.std(), rel=1e-9, abs=1e-12)
        assert got[2:] == pytest.approx(np.percentile(expanded, qs).tolist(), rel=1e-12)


def test_itl_of_one_request_alone_is_its_decode_steps():
    """One request at batch 1, no speculation: its gaps are the decode steps at
    context prompt + g - 1, g = 1 .. L - 1, from the cost model."""
    text = """
[hardware]
gpu = "h100-sxm"
[model]
model = "llama-2-7b"
[speculation]
method = "none"
[workload]
arrival = "closed"
num_requests = 1
seq_len = 300
output_len = 40
[serving]
batch_size = 1
"""
    point = load_scenario("one.toml", text=text).points()[0]
    summary = run_point(point, 0).summary
    cm = build_cost_model(point)
    gaps = np.array([cm.step_cost(1, 1, 300 + g - 1, "decode").time_s for g in range(1, 40)])
    assert summary["baseline_itl_mean_s"] == pytest.approx(gaps.mean(), rel=1e-9)
    for q in (50, 90, 95, 99):
        assert summary[f"baseline_itl_p{q}_s"] == pytest.approx(np.percentile(gaps, q), rel=1e-9)
    # without speculation and alone, ITL and TPOT agree
    assert summary["baseline_tpot_mean_s"] == pytest.approx(gaps.mean(), rel=1e-9)


def _watched_run(text, monkeypatch):
    """Run a point while recording which requests each iteration gives tokens to;
    returns (summary, recorder, iterations per arm)."""
    seen: dict[str, list[list[int]]] = {"baseline": [], "spec": []}
    original = engine.Server._iteration_outcome

    def watched(self, active, k):
        seen[self.arm].append([s.request.request_id for s in active])
        return original(self, active, k)

    monkeypatch.setattr(engine.Server, "_iteration_outcome", watched)
    point = load_scenario("watched.toml", text=text).points()[0]
    result = run_point(point, 7)
    return result.summary, result.recorders[0], seen


def _reference_itls(recorder, seen, arm):
    """Every gap of every finished request, from the watched iterations: the i-th
    emitting stage (decode, verify or mixed) of the arm is its i-th iteration."""
    ends = [start + duration for _, a, stage, start, duration, *_ in recorder.steps
            if a == arm and stage not in ("prefill", "draft")]
    assert len(ends) == len(seen[arm])
    times: dict[int, list[float]] = {}
    for end, ids in zip(ends, seen[arm]):
        for i in ids:
            times.setdefault(i, []).append(end)
    gaps = []
    for row in recorder.requests:
        if row[1] != arm or row[14] != "finished":
            continue
        request_id, first = row[2], row[5]
        gaps.extend(np.diff([first] + times.get(request_id, [])).tolist())
    return np.array(gaps)


LOADED = """
[hardware]
gpu = "h100-sxm"
[model]
model = "llama-2-7b"
[speculation]
method = "draft_model"
num_speculative_tokens = 3
[workload]
arrival = "poisson"
rate_per_s = 20
num_requests = 150
prompt_dist = "uniform"
prompt_min = 50
prompt_max = 2000
output_dist = "uniform"
output_min = 1
output_max = 300
[serving]
batching = "continuous"
batch_size = 32
scheduler = "{scheduler}"
"""


@pytest.mark.parametrize("scheduler", ["vllm", "prefill_first"])
def test_itl_matches_the_pooled_gaps_of_every_request(scheduler, monkeypatch):
    summary, recorder, seen = _watched_run(LOADED.format(scheduler=scheduler), monkeypatch)
    for arm in ("baseline", "spec"):
        gaps = _reference_itls(recorder, seen, arm)
        assert gaps.size > 5000
        assert summary[f"{arm}_itl_mean_s"] == pytest.approx(gaps.mean(), rel=1e-9)
        assert summary[f"{arm}_itl_std_s"] == pytest.approx(gaps.std(), rel=1e-6)
        for q in (50, 90, 95, 99):
            assert summary[f"{arm}_itl_p{q}_s"] == pytest.approx(np.percentile(gaps, q), rel=1e-9)
    # speculation: several tokens per emission, so ITL is above TPOT; without, they are near
    assert summary["spec_itl_mean_s"] > 1.5 * summary["spec_tpot_mean_s"]


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_itl_of_preempted_requests_has_one_gap_per_pause(mode):
    """Paged KV under memory pressure: requests are preempted and re-prefilled (or
    swapped out and back in). Each finished request's gaps add up to finish - first
    token, and it has one gap per verify step plus one per re-prefill after a pause
    (its re-prefill's token; a swapped request resumes without one)."""
    text = LOADED.format(scheduler="vllm").replace(
        '[serving]', f'[serving]\nkv_cache = "paged"\nkv_capacity_tokens = 12000\npreemption_mode = "{mode}"')
    point = load_scenario("paged.toml", text=text).points()[0]
    result = run_point(point, 3)
    recorder = result.recorders[0]
    for arm in ("baseline", "spec"):
        totals = recorder.arm(arm)
        req = totals.requests()
        ok = req["status"] == 0
        assert totals.pauses, "the scenario must preempt running requests"
        ids = req["request_id"][ok]
        pauses = [totals.pauses.get(i) for i in ids.tolist()]
        first, finish = req["first_token_s"][ok], req["finish_s"][ok]
        values, weights = itl_distribution(totals.emissions(), first, finish, pauses)
        assert np.dot(values, weights) == pytest.approx((finish - first).sum(), rel=1e-9)
        resumed = sum(p[i + 2] for p in pauses if p for i in range(0, len(p), 3))
        assert resumed > 0 if mode == "recompute" else resumed == 0
        assert weights.sum() == req["verify_steps"][ok].sum() + resumed
        assert (values[weights > 0] >= 0).all()
        # a pause is one long gap: the largest gap is at least the longest pause
        longest = max(p[i + 1] - p[i] for p in pauses if p for i in range(0, len(p), 3))
        assert values[weights > 0].max() >= longest - 1e-12


def test_max_concurrent_counts_half_open_intervals():
    arrival = np.array([0.0, 1.0, 1.0, 2.0, 5.0])
    finish = np.array([1.0, 3.0, 2.0, 4.0, 6.0])
    # at t = 1: the first leaves as two arrive -> 2; at 2 one leaves as one arrives -> 2
    assert max_concurrent(arrival, finish) == 2
    assert max_concurrent(np.array([0.0, 0.5]), np.array([1.0, 1.5])) == 2


def test_framework_overhead_per_sequence_from_the_scenario():
    """serving.step_overhead_per_seq_s (-1: the framework's) reaches the target's steps;
    a draft model pays none: its passes run inside the target's engine step."""
    from servesim.hardware.framework import get_framework
    text = """
name = "overhead"
[model]
model = "llama-2-7b"
[speculation]
method = "draft_model"
draft_model = "llama-68m"
[serving]
framework = "vllm"
[sweep]
"serving.step_overhead_per_seq_s" = [-1.0, 0.0, 1e-4]
"""
    vllm = get_framework("vllm")
    assert vllm.step_overhead_per_seq_s > 0
    expected = (vllm.step_overhead_per_seq_s, 0.0, 1e-4)
    for point, per_seq in zip(load_scenario("overhead.toml", text=text).points(), expected):
        cm = build_cost_model(point)
        framework = {op.name: op for op in cm.step_cost(6, 1, 600, "decode").ops}["framework"]
        assert framework.time_s == pytest.approx(vllm.step_overhead_s + 6 * per_seq)
        draft = build_cost_model(point, point["draft_model"])
        assert "framework" not in {op.name for op in draft.step_cost(6, 1, 600, "decode").ops}

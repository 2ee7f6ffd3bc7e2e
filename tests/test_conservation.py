"""No request is ever unaccounted for: a property over generated scenarios.

Scenarios are generated over arrival kinds x batching x speculation x cuts
(``max_sim_time_s``) x KV limits and run through the runner as `servesim run` does.
In every arm: each request appears once, in exactly one status; finished + rejected +
unfinished + not_arrived = requests; the tokens the GPU stages generated equal the
output lengths of finished requests plus what unfinished ones had generated (first
token + accepted tokens); GPU utilisation is at most 1.
"""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from servesim.results import requests_frame, steps_frame
from servesim.runner import run_point
from servesim.scenario import load_scenario

ARMS = ("baseline", "spec")


def run_text(text: str):
    scenario = load_scenario("generated.toml", text=text)
    (point,) = scenario.points()
    result = run_point(point, scenario.seed, scenario.values["replications"])
    (recorder,) = result.recorders
    return point, result.summary, steps_frame(recorder.steps), requests_frame(recorder.requests)


def check_conservation(point, summary, steps, requests):
    n = point["num_requests"]
    for arm in ARMS:
        req = requests[requests["arm"] == arm]
        assert sorted(req["request_id"]) == list(range(n)), arm  # each request once
        counts = req["status"].value_counts().to_dict()
        assert set(counts) <= {"finished", "rejected", "unfinished", "not_arrived"}
        for status in ("finished", "rejected", "unfinished", "not_arrived"):
            assert summary[f"{arm}_{status}"] == counts.get(status, 0), (arm, status)
        assert summary[f"{arm}_requests"] == n
        finished = req[req["status"] == "finished"]
        unfinished = req[req["status"] == "unfinished"]
        started = unfinished[unfinished["first_token_s"].notna()]
        generated = steps.loc[steps["arm"] == arm, "tokens_generated"].sum()
        # an unfinished request has its first token and its accepted ones, plus one per
        # re-prefill after a preemption (at most one per preemption; not in the table)
        expected = finished["output_len"].sum() + len(started) + started["accepted_tokens"].sum()
        assert expected <= generated <= expected + unfinished["preemptions"].sum()
        if not unfinished["preemptions"].any():
            assert generated == expected
        assert (started["accepted_tokens"] + 1 < started["output_len"]).all()
        # KV never over-allocated: what each step found held is within the capacity
        assert (steps.loc[steps["arm"] == arm, "kv_used_tokens"] <= summary["kv_capacity_tokens"]).all()
        if math.isinf(point["max_sim_time_s"]):
            assert counts.get("unfinished", 0) == counts.get("not_arrived", 0) == 0
        else:
            ends = steps.loc[steps["arm"] == arm, "start_s"] + steps.loc[steps["arm"] == arm, "duration_s"]
            assert (ends <= point["max_sim_time_s"] * (1 + 1e-12)).all()
            late = req[req["status"] == "not_arrived"]["arrival_s"].dropna()
            assert (late >= point["max_sim_time_s"]).all()
        util = summary[f"{arm}_gpu_utilization"]
        assert np.isnan(util) or util <= 1 + 1e-9


ARRIVALS = {
    "closed": "",
    "closed_loop": "clients = {clients}\nthink_time_s = {think}",
    "poisson": "rate_per_s = {rate}",
    "gamma": "rate_per_s = {rate}\ncv = 2.5",
}
SPECULATION = {
    "none": 'method = "none"',
    "medusa-fixed": 'method = "medusa"\ncandidate_tokens = 8\nacceptance = "fixed"\naccepted_tokens = 3',
    "medusa-curve": 'method = "medusa"\ncandidate_tokens = 16',
    "draft": 'method = "draft_model"\ngamma = 3\nalpha = 0.6',
}


@st.composite
def scenarios(draw):
    arrival = draw(st.sampled_from(sorted(ARRIVALS)))
    batching = draw(st.sampled_from(["static", "continuous", "continuous-prefill_first", "continuous-sglang",
                                     "continuous-paged", "continuous-paged-swap"]))
    scheduler = next((p for p in ("prefill_first", "sglang") if batching.endswith(p)), "vllm")
    kv_cache = "paged" if "paged" in batching else "reserve"
    preemption = "swap" if batching.endswith("swap") else "recompute"
    batching = batching.split("-")[0]
    spec = draw(st.sampled_from(sorted(SPECULATION)))
    n = draw(st.integers(1, 40))
    output = draw(st.sampled_from(['output_len = 1', 'output_len = 9',
                                   'output_dist = "uniform"\noutput_min = 1\noutput_max = 40']))
    cut = draw(st.sampled_from([None, 0.05, 0.3, 1.5]))
    kv = draw(st.sampled_from([0, 300, 1200]))
    fields = dict(clients=draw(st.integers(1, 6)), think=draw(st.sampled_from([0.0, 0.02])),
                  rate=draw(st.sampled_from([5.0, 50.0, 400.0])))
    # FP8 layers on a GPU that has FP8 tensor cores; an FP8 KV cache on either
    gpu = draw(st.sampled_from(["a100-80gb-pcie", "h100-sxm"]))
    quantization = "fp8" if gpu == "h100-sxm" and draw(st.booleans()) else "none"
    text = f"""
seed = {draw(st.integers(0, 3))}
[hardware]
gpu = "{gpu}"
[model]
quantization = "{quantization}"
kv_cache_dtype = "{draw(st.sampled_from(["auto", "fp8"]))}"
[speculation]
{SPECULATION[spec]}
[workload]
arrival = "{arrival}"
{ARRIVALS[arrival].format(**fields)}
num_requests = {n}
prompt_dist = "uniform"
prompt_min = 16
prompt_max = 200
shared_prefix_tokens = {draw(st.sampled_from([0, 8, 40]))}
num_prefixes = {draw(st.integers(1, 3))}
{output}
[serving]
batching = "{batching}"
scheduler = "{scheduler}"
kv_cache = "{kv_cache}"
preemption_mode = "{preemption}"
swap_space = {draw(st.sampled_from([0.0, 0.01, 4.0]))}
block_size = {draw(st.sampled_from([1, 16]))}
enable_prefix_caching = {"true" if kv_cache == "paged" and draw(st.booleans()) else "false"}
max_num_batched_tokens = {draw(st.sampled_from([0, 400, 8192]))}
batch_size = {draw(st.integers(1, 6))}
kv_capacity_tokens = {kv}
{f"max_sim_time_s = {cut}" if cut else ""}
"""
    return text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_request_accounted_for(text):
    check_conservation(*run_text(text))


@pytest.mark.parametrize("batching", ["static", "continuous"])
@pytest.mark.parametrize("think", [0.0, 0.05])
def test_closed_loop_serves_every_request_with_fixed_lengths(batching, think):
    """The reported case: 4 clients, 64 requests per arm, fixed lengths; the baseline
    arm (fixed acceptance) used to stop after the first 4, when its batch emptied."""
    point, summary, steps, requests = run_text(f"""
[workload]
arrival = "closed_loop"
clients = 4
think_time_s = {think}
num_requests = 64
seq_len = 128
output_len = 32
[serving]
batching = "{batching}"
""")
    check_conservation(point, summary, steps, requests)
    for arm in ARMS:
        assert summary[f"{arm}_finished"] == 64
    assert summary["paired_requests"] == 64
    # each client sends its next request only after the last one finished: never more
    # than 4 requests in the system
    base = requests[requests["arm"] == "baseline"].sort_values("arrival_s")
    events = pd.concat([pd.Series(1, index=base["arrival_s"]), pd.Series(-1, index=base["finish_s"])])
    in_system = events.groupby(level=0).sum().sort_index().cumsum()
    assert in_system.max() <= 4


def test_cut_reports_requests_not_arrived_and_keeps_utilisation_at_most_one():
    """Poisson arrivals at 100/s over 200 requests (last arrival near 2 s), cut at
    0.5 s: about three quarters never arrived and are reported as such."""
    point, summary, steps, requests = run_text("""
[workload]
arrival = "poisson"
rate_per_s = 100
num_requests = 200
[serving]
batching = "continuous"
batch_size = 8
max_sim_time_s = 0.5
""")
    check_conservation(point, summary, steps, requests)
    for arm in ARMS:
        assert 100 <= summary[f"{arm}_not_arrived"] <= 190  # ~150 expected
        assert 0.9 <= summary[f"{arm}_gpu_utilization"] <= 1 + 1e-9  # overloaded: busy to the cut
    ends = steps["start_s"] + steps["duration_s"]
    assert ends.max() == pytest.approx(0.5)  # the stage running at the cut is cut there

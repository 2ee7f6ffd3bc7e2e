"""Arrival processes, length distributions, batching policies and the KV cache."""

import math

import numpy as np
import pandas as pd
import pytest

from servesim.cli import main
from servesim.costmodel import StepCost
from servesim.serving import Recorder, ServingConfig, simulate
from servesim.speculation import FixedAcceptance, MedusaSpeculation, NoSpeculation, TruncatedGeometricAcceptance
from servesim.workload import Request, RequestColumns, Workload, arrival_times, draw_lengths


class FlatCost:
    def __init__(self, step_s=2.0 ** -7, prefill_s=2.0 ** -6):
        self.step_s, self.prefill_s = step_s, prefill_s

    def step_cost(self, batch, tokens_per_seq, context_tokens, stage):
        return StepCost((), self.step_s)

    def prefill_cost(self, prompt_lens):
        return StepCost((), self.prefill_s)

    def medusa_heads_cost(self, batch, num_heads):
        return None


def run(workload, config, spec=None, seed=0):
    rec = Recorder()
    simulate(workload, config=config, cost_model=FlatCost(), speculator=spec or NoSpeculation(),
             rng=np.random.default_rng(seed), recorder=rec, point_id=0, arm="spec")
    return rec


def random_workload(n=300, rate=40.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / rate, n))
    return Workload(tuple(Request(i, float(a), int(p), int(o)) for i, (a, p, o) in
                          enumerate(zip(t, rng.integers(1, 300, n), rng.integers(1, 40, n)))))


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_every_token_once_and_batch_and_kv_limits_hold(batching):
    w = random_workload()
    spec = MedusaSpeculation(8, TruncatedGeometricAcceptance.with_mean(2.2, 5), include_head_cost=False)
    capacity = 2000
    rec = run(w, ServingConfig(batching, 6, kv_capacity_tokens=capacity), spec)
    assert sum(r[8] for r in rec.steps) == sum(r.output_len for r in w.requests)
    assert max(r[5] for r in rec.steps) <= 6
    assert rec.arm_stats["spec"]["kv_peak_tokens"] <= capacity
    assert sorted(r[2] for r in rec.requests) == list(range(len(w.requests)))
    for r in rec.requests:
        assert r[14] == "finished"
        assert r[3] <= r[4] <= r[5] <= r[6]  # arrival <= start <= first token <= finish
        assert r[11] == pytest.approx(r[12] + r[13])  # queue = slot wait + GPU wait


class DrawnFixed(MedusaSpeculation):
    """Fixed acceptance served through the engine's drawing path (draws of k, one per
    request and step) instead of its fixed-acceptance path: the reference for it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fixed_tokens_per_step = None


@pytest.mark.parametrize("batching", ["static", "continuous"])
@pytest.mark.parametrize("cut_s", [math.inf, 1.0, 1.0 + 2.0 ** -8])  # run to the end; cut between / inside steps
@pytest.mark.parametrize("k", [1, 3])
def test_fixed_acceptance_path_equals_drawing_k_every_step(batching, cut_s, k):
    w = random_workload(n=120)
    config = ServingConfig(batching, 5, max_wait_s=0.02, kv_capacity_tokens=1500, max_sim_time_s=cut_s)
    fast = run(w, config, MedusaSpeculation(8, FixedAcceptance(k), include_head_cost=False))
    drawn = run(w, config, DrawnFixed(8, FixedAcceptance(k), include_head_cost=False))
    assert list(map(repr, fast.requests)) == list(map(repr, drawn.requests))  # repr: nan == nan
    assert list(map(repr, fast.steps)) == list(map(repr, drawn.steps))
    assert fast.accepted_counts == drawn.accepted_counts
    assert fast.arm_stats == drawn.arm_stats
    if cut_s < math.inf:
        assert any(r[14] == "unfinished" and r[10] > 0 for r in fast.requests)


def test_request_larger_than_the_kv_cache_is_rejected_and_counted():
    w = Workload((Request(0, 0.0, 100, 10), Request(1, 0.0, 5000, 10), Request(2, 0.1, 50, 5)))
    rec = run(w, ServingConfig("continuous", 4, kv_capacity_tokens=1000))
    status = {r[2]: r[14] for r in rec.requests}
    assert status == {0: "finished", 1: "rejected", 2: "finished"}


def test_admission_waits_for_kv_space():
    # each request reserves 100 + 10 tokens; capacity for two at a time
    w = Workload(tuple(Request(i, 0.0, 100, 10) for i in range(4)))
    rec = run(w, ServingConfig("continuous", 4, kv_capacity_tokens=220))
    starts = sorted(r[4] for r in rec.requests)
    assert starts[0] == starts[1] == 0.0 and starts[2] > 0.0
    assert max(r[5] for r in rec.steps) == 2
    # the third request had a batch slot but no KV space: all of its wait is slot wait
    third = sorted(rec.requests, key=lambda r: r[4])[2]
    assert third[12] == third[11] and third[13] == 0.0


def test_speculative_lookahead_is_reserved():
    w = Workload(tuple(Request(i, 0.0, 100, 10) for i in range(2)))
    spec = MedusaSpeculation(16, FixedAcceptance(2), include_head_cost=False)
    # 110 tokens + 15 lookahead = 125 each: only one fits in 200
    rec = run(w, ServingConfig("continuous", 4, kv_capacity_tokens=200), spec)
    assert rec.arm_stats["spec"]["kv_peak_tokens"] == 125


def test_static_partial_batch_starts_after_max_wait():
    w = Workload((Request(0, 0.0, 10, 2), Request(1, 0.5, 10, 2), Request(2, 10.0, 10, 2),
                  Request(3, 30.0, 10, 2)))
    rec = run(w, ServingConfig("static", 4, max_wait_s=1.0))
    starts = {r[2]: r[4] for r in rec.requests}
    assert starts[0] == starts[1] == 1.0  # the oldest waited max_wait_s
    assert starts[2] == 11.0
    assert starts[3] == 30.0  # the last request: nothing more can come, no wait


def test_arrival_during_a_step_keeps_its_own_time_and_joins_at_the_next_boundary():
    # prefill 2^-6 s, decode steps 2^-7 s. Request 0 runs alone from t = 0; request 1
    # arrives at t = 0.3, mid-step, with a batch slot free. Steps of request 0 end at
    # 2^-6 + k 2^-7; the first end after 0.3 is k = ceil((0.3 - 2^-6) / 2^-7) = 37, at
    # 0.3046875, when request 1 is admitted and prefilled (continuous batching).
    w = Workload((Request(0, 0.0, 10, 100), Request(1, 0.3, 10, 2)))
    rec = run(w, ServingConfig("continuous", 2))
    r = {row[2]: dict(zip(("arrival_s", "start_s", "first_token_s", "slot_wait_s", "gpu_wait_s"),
                          (row[3], row[4], row[5], row[12], row[13]))) for row in rec.requests}
    assert r[1]["arrival_s"] == 0.3
    assert r[1]["start_s"] == 0.3046875
    assert r[1]["first_token_s"] == 0.3046875 + 2.0 ** -6
    assert r[1]["slot_wait_s"] == 0.0  # a slot was free when it arrived
    assert r[1]["gpu_wait_s"] == pytest.approx(0.0046875, abs=1e-12)


def test_closed_loop_keeps_at_most_clients_in_system():
    reqs = tuple(Request(i, 0.0, 10, 5, think_time_s=0.01) for i in range(40))
    rec = run(Workload(reqs, clients=3), ServingConfig("continuous", 8))
    events = sorted([(r[3], 1) for r in rec.requests] + [(r[6], -1) for r in rec.requests],
                    key=lambda e: (e[0], e[1]))
    in_system, peak = 0, 0
    for _, d in events:
        in_system += d
        peak = max(peak, in_system)
    assert peak == 3
    assert max(r[5] for r in rec.steps) == 3


def test_request_columns_make_the_same_requests_as_a_list():
    n = RequestColumns.CHUNK + 5  # iteration crosses a chunk boundary
    arrival = np.arange(n) * 0.25
    prompt, output, think = np.arange(n) % 7 + 1, np.arange(n) % 5 + 2, np.full(n, 0.5)
    columns = RequestColumns(arrival, prompt, output, think)
    expected = [Request(i, i * 0.25, i % 7 + 1, i % 5 + 2, 0.5) for i in range(n)]
    assert len(columns) == n
    assert list(columns) == expected
    assert columns[-1] == expected[-1] and columns[3:6] == expected[3:6]
    with pytest.raises(IndexError):
        columns[n]


def test_gamma_arrivals_have_the_requested_mean_and_cv():
    gaps = np.diff(arrival_times(np.random.default_rng(0), 200_000, "gamma", 5.0, 3.0))
    assert gaps.mean() == pytest.approx(0.2, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.03)
    gaps = np.diff(arrival_times(np.random.default_rng(0), 200_000, "poisson", 5.0, 1.0))
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.02)


def test_length_distributions():
    rng = np.random.default_rng(0)
    u = draw_lengths(rng, 10_000, "uniform", 0, 5, 9, 0, "", "")
    assert u.min() == 5 and u.max() == 9
    ln = draw_lengths(rng, 50_000, "lognormal", 200, 0, 0, 0.8, "", "")
    assert np.median(ln) == pytest.approx(200, rel=0.03) and ln.min() >= 1
    g = draw_lengths(rng, 100_000, "geometric", 50, 0, 0, 0, "", "")
    assert g.mean() == pytest.approx(50, rel=0.02) and g.min() >= 1


def write_trace(tmp_path, text, name="trace.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def trace_scenario(tmp_path, trace):
    path = tmp_path / "s.toml"
    path.write_text(f'name = "t"\n[speculation]\nmethod = "none"\n[workload]\narrival = "trace"\n'
                    f'trace_file = "{trace.name}"\n[serving]\nbatching = "continuous"\n')
    return path


def test_trace_replay(tmp_path):
    trace = write_trace(tmp_path, "arrival_s,prompt_len,output_len\n0.0,10,3\n0.5,20,4\n2.0,30,1\n")
    out = tmp_path / "out"
    assert main(["run", str(trace_scenario(tmp_path, trace)), "--out", str(out)]) == 0
    req = pd.read_parquet(out / "requests.parquet")
    base = req[req.arm == "baseline"].sort_values("request_id")
    assert list(base.arrival_s) == [0.0, 0.5, 2.0]
    assert list(base.prompt_len) == [10, 20, 30] and list(base.output_len) == [3, 4, 1]


@pytest.mark.parametrize("text,fragment", [
    ("arrival_s,prompt_len\n0.0,10\n", "missing column 'output_len'"),
    ("arrival_s,prompt_len,output_len\n0.0,10,3\n-1.0,10,3\n", "row 2, column 'arrival_s'"),
    ("arrival_s,prompt_len,output_len\n1.0,10,3\n0.5,10,3\n", "row 2, column 'arrival_s'"),
    ("arrival_s,prompt_len,output_len\n0.0,10,3\n1.0,10.5,3\n", "row 2, column 'prompt_len'"),
    ("arrival_s,prompt_len,output_len\n0.0,10,x\n", "row 1, column 'output_len'"),
])
def test_bad_trace_names_file_row_and_column(tmp_path, capsys, text, fragment):
    trace = write_trace(tmp_path, text)
    out = tmp_path / "out"
    assert main(["run", str(trace_scenario(tmp_path, trace)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "trace.csv" in err and "Traceback" not in err
    assert not out.exists()

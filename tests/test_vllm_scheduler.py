"""The vLLM policy step by step, against a schedule worked out by hand."""

import numpy as np
import pytest

from servesim.costmodel import StepCost
from servesim.serving import Recorder, ServingConfig, simulate
from servesim.speculation import NoSpeculation
from servesim.workload import Request, Workload


class MixedFlatCost:
    """Every forward step 1/64 s, whatever it holds (so times are exact)."""

    def step_cost(self, batch, tokens_per_seq, context_tokens, stage):
        return StepCost((), 1 / 64)

    def prefill_cost(self, prompt_lens):
        return StepCost((), 1 / 64)

    def mixed_step_cost(self, batch, tokens_per_seq, context_tokens, stage, chunks):
        self.seen.append((batch, chunks))
        return StepCost((), 1 / 64)

    def medusa_heads_cost(self, batch, num_heads):
        return None

    def kv_swap_cost(self, tokens, bytes_per_token):
        return StepCost((), tokens / 512)  # 8 tokens (2 blocks of 4): 1/64 s


def run(requests, budget, seqs=4, threshold=0):
    cost = MixedFlatCost()
    cost.seen = []
    rec = Recorder()
    config = ServingConfig("continuous", seqs, kv_capacity_tokens=10_000, max_num_batched_tokens=budget,
                           scheduler="vllm", long_prefill_token_threshold=threshold)
    simulate(Workload(tuple(requests)), config=config, cost_model=cost, speculator=NoSpeculation(),
             rng=np.random.default_rng(0), recorder=rec, point_id=0, arm="baseline")
    return rec, cost.seen


def test_hand_worked_schedule_budget_10():
    """A (prompt 6, output 3), B (7, 2), C (3, 2), all at t = 0, budget 10 tokens:

    step 1: no decodes; A's whole prompt (6), B's first 4 tokens: A gets its first token
    step 2: A decodes (1); B's last 3 (over its cached 4); C's 3: B and C get theirs
    step 3: A, B, C decode: all three finish (A: 1 + 2 tokens, B and C: 1 + 1)."""
    rec, seen = run([Request(0, 0.0, 6, 3), Request(1, 0.0, 7, 2), Request(2, 0.0, 3, 2)], budget=10)
    assert seen == [(0, ((6, 0), (4, 0))), (1, ((3, 4), (3, 0)))]
    steps = [(r[2], r[5], r[6], r[8], r[9], r[10]) for r in rec.steps]
    # stage, sequences, tokens per decode (or longest chunk), tokens generated, chunk seqs, chunk tokens
    assert steps == [("prefill", 2, 6, 1, 2, 10), ("mixed", 3, 1, 3, 2, 6), ("decode", 3, 1, 3, 0, 0)]
    done = {r[2]: r for r in rec.requests}
    assert [done[i][5] for i in range(3)] == [1 / 64, 2 / 64, 2 / 64]  # first tokens
    assert [done[i][6] for i in range(3)] == [3 / 64] * 3  # finishes
    assert sum(r[8] for r in rec.steps) == 3 + 2 + 2
    # KV reserved (prompt + output) when each step starts: A 9 + B 9, then C's 5 too
    assert [r[12] for r in rec.steps] == [18, 23, 23]


def test_long_prompt_is_spread_over_steps_that_also_carry_decodes():
    """A short request decodes while a 40-token prompt is prefilled 8 tokens at a time
    (threshold 8): five chunks, each in a step with the short request's decode."""
    rec, seen = run([Request(0, 0.0, 2, 6), Request(1, 0.0, 40, 2)], budget=16, threshold=8)
    assert seen[0] == (0, ((2, 0), (8, 0)))
    assert seen[1:5] == [(1, ((8, 8),)), (1, ((8, 16),)), (1, ((8, 24),)), (1, ((8, 32),))]
    assert sum(r[8] for r in rec.steps) == 6 + 2


def test_at_most_max_num_seqs_run():
    rec, _ = run([Request(i, 0.0, 4, 5) for i in range(7)], budget=64, seqs=3)
    assert max(r[5] for r in rec.steps) <= 3
    assert sorted(r[2] for r in rec.requests) == list(range(7))
    assert all(r[14] == "finished" for r in rec.requests)


def run_paged(requests, capacity, block_size=4, budget=64, seqs=4, **options):
    cost = MixedFlatCost()
    cost.seen = []
    rec = Recorder()
    config = ServingConfig("continuous", seqs, kv_capacity_tokens=capacity, max_num_batched_tokens=budget,
                           scheduler="vllm", kv_cache="paged", block_size=block_size, **options)
    simulate(Workload(tuple(requests)), config=config, cost_model=cost, speculator=NoSpeculation(),
             rng=np.random.default_rng(0), recorder=rec, point_id=0, arm="baseline")
    return rec, cost.seen


def test_hand_worked_preemption_by_recompute():
    """KV of 16 tokens in blocks of 4; A and B (prompt 4, output 6) at t = 0.

    step 1: both prompts (1 block each); steps 2-5: both decode, growing to 2 blocks
    each at their 5th token; step 6: A needs a 3rd block, none is free: B, the most
    recently admitted, is preempted (its 2 blocks freed) and A decodes its last token;
    step 7: B re-prefills its prompt and its 5 tokens (9, 3 blocks) and gets its last."""
    rec, seen = run_paged([Request(0, 0.0, 4, 6), Request(1, 0.0, 4, 6)], capacity=16)
    steps = [(r[2], r[5], r[9], r[10]) for r in rec.steps]
    assert steps == [("prefill", 2, 2, 8)] + [("decode", 2, 0, 0)] * 4 + [("decode", 1, 0, 0), ("prefill", 1, 1, 9)]
    assert seen[-1] == (0, ((9, 0),))  # the re-prefill: all 9 tokens, nothing cached
    done = {r[2]: r for r in rec.requests}
    a, b = done[0], done[1]
    assert a[6] == 6 / 64 and b[6] == 7 / 64  # finishes
    assert (a[15], b[15]) == (0, 1)  # preemptions
    assert (b[9], b[10]) == (4, 4)  # B's verify steps and tokens accepted in them
    assert sum(r[8] for r in rec.steps) == 12  # every output token once
    assert rec.arm_stats["baseline"]["kv_peak_tokens"] == 16
    # KV held at each step's start (blocks x 4): 1 block each for the prompts; 2 each
    # once they need room for a 5th token; A's 3 after B's preemption; B's 3 alone
    assert [r[12] for r in rec.steps] == [8, 16, 16, 16, 16, 12, 12]


def test_hand_worked_swap_preemption():
    """The same two requests with swap preemption (CPU room for 100 tokens; a swap of
    8 tokens costs 1/64 s here): at step 6, B (context 8: 2 blocks) is swapped out, its
    8 tokens copied before A's decode (A now 3 blocks); A finishes; B's blocks (3, for
    context 8 + 1) come back and its 8 tokens are copied in before its last decode, no
    re-prefill: 5 verify steps for B, its ITL pause one gap of 4/64 s."""
    rec, seen = run_paged([Request(0, 0.0, 4, 6), Request(1, 0.0, 4, 6)], capacity=16,
                          preemption_mode="swap", swap_space_tokens=100, kv_bytes_per_token=1)
    steps = [(r[2], r[5], r[7], r[12]) for r in rec.steps]  # stage, sequences, context, KV held
    assert [x[0] for x in steps] == ["prefill"] + ["decode"] * 4 + ["swap", "decode", "swap", "decode"]
    assert steps[5] == ("swap", 1, 8, 12) and steps[7] == ("swap", 1, 8, 12)
    assert [x[3] for x in steps] == [8, 16, 16, 16, 16, 12, 12, 12, 12]
    assert len(seen) == 1  # one step with prefill chunks only: nothing is recomputed
    done = {r[2]: r for r in rec.requests}
    a, b = done[0], done[1]
    assert a[6] == 7 / 64 and b[6] == 9 / 64  # finishes: after each swap's 1/64 s
    assert (a[15], b[15]) == (0, 1)
    assert (b[9], b[10]) == (5, 5)  # B: 5 verify steps, its 5 tokens after the first
    assert sum(r[8] for r in rec.steps) == 12
    stats = rec.arm_stats["baseline"]
    assert stats["swap_outs"] == 1 and stats["swap_time_s"] == 2 / 64
    assert rec.totals["baseline"].pauses[1] == (5 / 64, 7 / 64, 0.0)


def test_swap_falls_back_to_recompute_without_cpu_room():
    """No swap space: the same victim is recomputed (re-prefilled), as in vLLM."""
    rec, _ = run_paged([Request(0, 0.0, 4, 6), Request(1, 0.0, 4, 6)], capacity=16,
                       preemption_mode="swap", swap_space_tokens=0, kv_bytes_per_token=1)
    assert [r[2] for r in rec.steps][-1] == "prefill" and rec.arm_stats["baseline"]["swap_outs"] == 0


def test_paged_cache_admits_more_than_whole_reservations_would():
    """Eight requests of prompt 8 and output 24 with 128 tokens of KV: reserving 32
    tokens each runs 4 at a time; paged blocks (grown as tokens come) run more at
    once, finishing sooner, at the price of preemptions."""
    requests = [Request(i, 0.0, 8, 24) for i in range(8)]
    reserved, _ = run(requests, budget=64, seqs=8)  # kv 10,000: unlimited, for the shape
    cost = MixedFlatCost()
    cost.seen = []
    rec = Recorder()
    config = ServingConfig("continuous", 8, kv_capacity_tokens=128, max_num_batched_tokens=64, scheduler="vllm")
    simulate(Workload(tuple(requests)), config=config, cost_model=cost, speculator=NoSpeculation(),
             rng=np.random.default_rng(0), recorder=rec, point_id=0, arm="baseline")
    paged, _ = run_paged(requests, capacity=128, block_size=16, seqs=8)
    end = lambda r: max(x[6] for x in r.requests)
    assert max(x[5] for x in rec.steps) == 4  # whole reservations: 4 at a time
    assert max(x[5] for x in paged.steps) > 4
    assert end(paged) < end(rec)
    assert all(x[14] == "finished" for x in paged.requests)
    assert sum(x[8] for x in paged.steps) == 8 * 24


def run_cached(requests, capacity, block_size=4, budget=64, seqs=4):
    cost = MixedFlatCost()
    cost.seen = []
    rec = Recorder()
    config = ServingConfig("continuous", seqs, kv_capacity_tokens=capacity, max_num_batched_tokens=budget,
                           scheduler="vllm", kv_cache="paged", block_size=block_size, enable_prefix_caching=True)
    simulate(Workload(tuple(requests)), config=config, cost_model=cost, speculator=NoSpeculation(),
             rng=np.random.default_rng(0), recorder=rec, point_id=0, arm="baseline")
    return rec, cost.seen


def test_hand_worked_prefix_cache_hit():
    """Blocks of 4; A and B share prefix 0 (9 tokens: 2 full blocks); A (prompt 10)
    arrives at 0 and computes all 10; B (prompt 11) arrives later and finds the 8 cached
    tokens: it prefills 3, over a cached prefix of 8. Hit rate 8 / (10 + 11)."""
    a = Request(0, 0.0, 10, 2, 0.0, 0, 9)
    b = Request(1, 0.5, 11, 2, 0.0, 0, 9)
    rec, seen = run_cached([a, b], capacity=64)
    assert [step for step in seen if step[1]] == [(0, ((10, 0),)), (0, ((3, 8),))]  # the prefills
    stats = rec.arm_stats["baseline"]
    assert (stats["prefix_hit_tokens"], stats["prompt_tokens_admitted"]) == (8, 21)
    assert all(r[14] == "finished" for r in rec.requests)


def test_unused_prefixes_are_evicted_lru_first():
    """16 tokens of KV in blocks of 4. A (prefix 0) then C (prefix 1) each leave 1 cached
    block (prefix 4 tokens); D (prefix 2, prompt 13 = 4 blocks) needs the whole cache:
    both unused prefixes are evicted, the older first; E (prefix 0 again) then misses."""
    reqs = [Request(0, 0.0, 5, 1, 0.0, 0, 4), Request(1, 1.0, 5, 1, 0.0, 1, 4),
            Request(2, 2.0, 13, 1, 0.0, 2, 4), Request(3, 3.0, 5, 1, 0.0, 0, 4)]
    rec, seen = run_cached(reqs, capacity=16)
    assert [chunks for _, chunks in seen] == [((5, 0),), ((5, 0),), ((13, 0),), ((5, 0),)]
    assert rec.arm_stats["baseline"]["prefix_hit_tokens"] == 0
    assert all(r[14] == "finished" for r in rec.requests)


def test_trace_prefix_columns_feed_the_prefix_cache(tmp_path):
    """A trace with prefix_id / prefix_len columns: three requests on one 64-token
    prefix (4 blocks of 16); the second and third find it cached."""
    from servesim.cli import main
    import pandas as pd
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_len,output_len,prefix_id,prefix_len\n"
                     "0.0,100,4,7,64\n1.0,80,4,7,64\n2.0,70,4,7,64\n")
    scenario = tmp_path / "s.toml"
    scenario.write_text(f"""
[speculation]
method = "none"
[workload]
arrival = "trace"
trace_file = "{trace}"
[serving]
batching = "continuous"
kv_cache = "paged"
enable_prefix_caching = true
""")
    assert main(["run", str(scenario), "--out", str(tmp_path / "out"), "--jobs", "1"]) == 0
    s = pd.read_parquet(tmp_path / "out" / "summary.parquet").iloc[0]
    assert s["baseline_prefix_cache_hit_rate"] == pytest.approx(2 * 64 / (100 + 80 + 70))
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,prompt_len,output_len,prefix_id,prefix_len\n0.0,10,4,1,64\n")
    scenario.write_text(scenario.read_text().replace(str(trace), str(bad)))
    assert main(["run", str(scenario), "--out", str(tmp_path / "out2")]) == 2


@pytest.mark.parametrize("k", [1, 3])
def test_paged_fixed_acceptance_path_equals_drawing_k(k):
    """With preemptions (tight KV), fixed acceptance's shortcut (no draws, tokens worked
    out from iterations; caught up on preemption) gives the same steps and requests as
    drawing k every step."""
    from servesim.speculation import FixedAcceptance, MedusaSpeculation

    class DrawnFixed(MedusaSpeculation):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.fixed_tokens_per_step = None

    requests = [Request(i, 0.01 * i, 6 + i % 5, 20 + 3 * (i % 4)) for i in range(12)]
    out = []
    for spec in (MedusaSpeculation(4, FixedAcceptance(k), include_head_cost=False),
                 DrawnFixed(4, FixedAcceptance(k), include_head_cost=False)):
        cost = MixedFlatCost()
        cost.seen = []
        rec = Recorder()
        config = ServingConfig("continuous", 6, kv_capacity_tokens=96, max_num_batched_tokens=64,
                               scheduler="vllm", kv_cache="paged", block_size=4)
        simulate(Workload(tuple(requests)), config=config, cost_model=cost, speculator=spec,
                 rng=np.random.default_rng(0), recorder=rec, point_id=0, arm="spec")
        out.append(([r[:11] for r in rec.steps], sorted(rec.requests)))
    assert out[0] == out[1]
    assert sum(r[15] for r in out[0][1]) > 0  # the case has preemptions

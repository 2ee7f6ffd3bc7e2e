"""Engine invariants with hand-checkable cost models."""

import math

import numpy as np
import pytest

from servesim.costmodel import StepCost
from servesim.serving import Recorder, simulate
from servesim.runner import summarise
from servesim.scenario import Point, SCHEMA
from servesim.speculation import FixedAcceptance, MedusaSpeculation, NoSpeculation, TruncatedGeometricAcceptance
from servesim.workload import Request, closed_workload


class FlatCost:
    """Every stage costs ``step_s`` seconds (a power of two, so sums are exact)."""

    def __init__(self, step_s=2.0 ** -7, prefill_s=2.0 ** -5, heads_s=None):
        self.step_s, self.prefill_s, self.heads_s = step_s, prefill_s, heads_s

    def step_cost(self, batch, tokens_per_seq, context_tokens, stage):
        return StepCost((), self.prefill_s if stage == "prefill" else self.step_s)

    def prefill_cost(self, prompt_lens):
        return StepCost((), self.prefill_s)

    def medusa_heads_cost(self, batch, num_heads):
        return None if self.heads_s is None else StepCost((), self.heads_s)


def point(**values):
    defaults = {k: key.default for keys in SCHEMA.values() for k, key in keys.items()}
    defaults.update(name="t", **values)
    return Point(0, defaults, (), {})


def run_both(requests, spec, cost, batch_size=4, seed=0):
    rec = Recorder()
    for arm, s in (("baseline", NoSpeculation()), ("spec", spec)):
        simulate(requests, batch_size=batch_size, cost_model=cost, speculator=s,
                 rng=np.random.default_rng(seed), recorder=rec, point_id=0, arm=arm)
    return rec


def test_every_requested_token_generated_exactly_once():
    requests = [Request(i, 0.0, 10 + i, 5 + 3 * i) for i in range(7)]
    spec = MedusaSpeculation(16, TruncatedGeometricAcceptance.with_mean(2.5, 6))
    rec = run_both(requests, spec, FlatCost(), batch_size=3)
    for arm in ("baseline", "spec"):
        generated = sum(r[8] for r in rec.steps if r[1] == arm)
        assert generated == sum(r.output_len for r in requests)
        finished = sorted(r[2] for r in rec.requests if r[1] == arm)
        assert finished == list(range(7))


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_fixed_acceptance_k_with_equal_step_costs_gives_speedup_k(k):
    # 1 + 12 tokens: prefill yields one, 12 decode tokens are a multiple of 1..4
    requests = closed_workload(8, 100, 13).requests
    spec = MedusaSpeculation(16, FixedAcceptance(k), include_head_cost=False)
    rec = run_both(requests, spec, FlatCost())
    row = summarise(point(candidate_tokens=16, num_requests=8), rec, spec)
    assert row["speedup"] == k
    assert row["speedup_with_drain"] == k
    assert row["speedup_p05"] == row["speedup_p95"] == k
    assert row["acceptance_rate"] == k


def test_n_equals_one_is_the_baseline_exactly(a100, llama7b):
    from servesim.costmodel import CostModel
    requests = closed_workload(8, 300, 20).requests
    spec = MedusaSpeculation(1, TruncatedGeometricAcceptance.with_mean(1.0, 1))
    rec = run_both(requests, spec, CostModel(a100, llama7b))
    base = [r[2:] for r in rec.steps if r[1] == "baseline"]
    other = [r[2:] for r in rec.steps if r[1] == "spec"]
    assert base == other
    assert summarise(point(candidate_tokens=1, num_requests=8), rec, spec)["speedup"] == 1.0


def test_contexts_grow_by_kept_tokens_and_batches_queue():
    requests = closed_workload(2, 10, 4).requests
    rec = run_both(requests, NoSpeculation(), FlatCost(), batch_size=1)
    steps = [r for r in rec.steps if r[1] == "baseline"]
    # batch 1: prefill, then decode at contexts 10, 11, 12 (3 more tokens)
    assert [(r[2], r[7]) for r in steps[:4]] == [("prefill", 0), ("decode", 10), ("decode", 11), ("decode", 12)]
    reqs = {r[2]: r for r in rec.requests if r[1] == "baseline"}
    batch_s = 2.0 ** -5 + 3 * 2.0 ** -7
    assert reqs[0][11] == 0.0
    assert reqs[1][11] == batch_s  # the second request waited for the first batch
    assert reqs[1][6] == 2 * batch_s


def test_tokens_past_the_end_are_dropped():
    requests = closed_workload(1, 10, 4).requests  # 3 decode tokens, steps accept 2
    spec = MedusaSpeculation(8, FixedAcceptance(2), include_head_cost=False)
    rec = run_both(requests, spec, FlatCost(), batch_size=1)
    verify = [r for r in rec.steps if r[1] == "spec" and r[2] == "verify"]
    assert [r[8] for r in verify] == [2, 1]


def test_draft_stage_holds_the_gpu_before_verify():
    requests = closed_workload(1, 10, 3).requests
    spec = MedusaSpeculation(8, FixedAcceptance(2), include_head_cost=True)
    rec = run_both(requests, spec, FlatCost(heads_s=2.0 ** -8), batch_size=1)
    stages = [(r[2], r[3]) for r in rec.steps if r[1] == "spec"]
    assert [s for s, _ in stages] == ["prefill", "draft", "verify"]
    assert stages[2][1] - stages[1][1] == 2.0 ** -8


def test_arm_totals_pickle_with_every_request_column():
    import pickle

    from servesim.recorder import ArmTotals

    totals = ArmTotals()
    for i in range(1500):  # past the 1,024 rows that reach the columns at a time
        totals.add_request((0, "spec", i, 0.5 * i, 0.5 * i + 1, 0.5 * i + 2, math.nan if i % 3 else 9.0,
                            10, 20 + i, 7, 8, 1.0, 0.25, 0.75, "unfinished" if i % 3 else "finished", 0))
    totals.add_steps([(0, "spec", "verify", 0.0, 0.5, 3, 4, 10, 7, 0, 0, 3, 0, None)])
    copy = pickle.loads(pickle.dumps(totals))
    a, b = totals.requests(), copy.requests()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name])
    assert b["request_id"].tolist() == list(range(1500))
    assert b["status"].tolist() == [0 if i % 3 == 0 else 2 for i in range(1500)]
    assert (copy.stages, copy.busy_s, copy.batch_time_s) == (1, 0.5, {3: 0.5})
    more = pickle.loads(pickle.dumps(totals))  # an unpickled arm takes further rows
    more.add_request((0, "spec", 1500, 1.0, 1.0, 1.0, 1.0, 1, 1, 0, 0, 0.0, 0.0, 0.0, "finished", 0))
    assert more.requests()["request_id"].tolist() == list(range(1501))


def test_arm_totals_take_requests_while_their_columns_are_viewed():
    from servesim.recorder import ArmTotals

    def row(i):
        return (0, "spec", i, 1.0 * i, 1.0, 1.0, 1.0, 1, 1, 0, 0, 0.0, 0.0, 0.0, "finished", 0)

    totals = ArmTotals()
    for i in range(3):
        totals.add_request(row(i))
    before = totals.requests()
    for i in range(3, 1100):  # past a fill of the columns
        totals.add_request(row(i))
    assert before["request_id"].tolist() == [0, 1, 2]
    assert totals.requests()["request_id"].tolist() == list(range(1100))



@pytest.mark.parametrize("scheduler, first_s, finish_s", [
    ("sglang", [1.0, 1.0, 2.0, 2.0], [2.25, 2.25, 2.25, 2.25]),
    ("prefill_first", [1.0, 1.0, 2.125, 2.125], [2.25, 2.25, 2.375, 2.375]),
])
def test_sglang_prefills_the_waiting_requests_before_any_decode(scheduler, first_s, finish_s):
    """Four requests at t = 0 (prompts of 10 tokens, 3 output tokens, the first from the
    prefill), 4 running at most, 20 prompt tokens a prefill step (two prompts), a prefill
    step 1 s and an iteration 1/8 s. SGLang prefills both pairs back to back (first
    tokens at 1 and 2 s) and then decodes all four twice: all finish at 2.25 s. The
    prefill_first policy runs one iteration of the first pair between the prefills
    (first tokens of the second pair at 2.125 s; it finishes at 2.375 s)."""
    from servesim.serving import ServingConfig

    requests = [Request(i, 0.0, 10, 3) for i in range(4)]
    rec = Recorder()
    config = ServingConfig("continuous", batch_size=4, max_num_batched_tokens=20, scheduler=scheduler)
    simulate(requests, cost_model=FlatCost(step_s=2.0 ** -3, prefill_s=1.0), speculator=NoSpeculation(),
             rng=np.random.default_rng(0), recorder=rec, point_id=0, arm="baseline", config=config)
    rows = sorted(rec.requests, key=lambda r: r[2])
    assert [r[5] for r in rows] == first_s
    assert [r[6] for r in rows] == finish_s

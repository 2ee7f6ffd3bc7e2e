"""The vLLM policy step by step, against a schedule worked out by hand."""

import numpy as np
import pytest

from servesim.costmodel import StepCost
from servesim.engine import Recorder, ServingConfig, simulate
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

"""The SimPy engine: requests queue, are batched, and hold the GPU stage by stage.

This is the only module that imports SimPy and it does no cost arithmetic: step times
come from a cost model (``step_cost`` / ``medusa_heads_cost``), token counts from a
speculator. Processes:

* ``source`` puts each request into the queue at its arrival time;
* ``batcher`` takes ``batch_size`` requests from the queue (fewer when no more will
  come) and runs the batch to completion (static batching);
* a batch holds the GPU (a SimPy resource of capacity 1) for each stage: one prefill
  step for the whole batch (prompts padded to the longest), then iterations of
  ``draft`` (if the speculator has a drafting cost) and ``verify`` (or plain
  ``decode``) steps. Prefill yields each request's first output token; each later
  step yields 1 token (decode) or a drawn number of accepted tokens (verify), of which
  those past the request's output length are dropped. A request leaves the batch when
  it has all its tokens; the batch ends when the last one has.

Contexts grow by the tokens each request keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import simpy

from servesim.workload import Request


@dataclass
class Recorder:
    """Rows collected as plain tuples; turned into tables once, by ``servesim.results``."""

    steps: list[tuple] = field(default_factory=list)
    requests: list[tuple] = field(default_factory=list)
    accepted_counts: dict[str, list[int]] = field(default_factory=dict)
    """Per arm: accepted_counts[arm][k] = request-steps that drew k tokens."""

    STEP_FIELDS = ("point_id", "arm", "stage", "start_s", "duration_s", "batch_size",
                   "tokens_per_seq", "context_tokens", "tokens_generated", "cost")
    REQUEST_FIELDS = ("point_id", "arm", "request_id", "arrival_s", "start_s",
                      "first_token_s", "finish_s", "prompt_len", "output_len",
                      "verify_steps", "accepted_tokens", "queue_delay_s")


class _Sequence:
    """A request's running state inside a batch."""

    __slots__ = ("request", "context", "generated", "steps", "accepted", "first_token_s")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.context = request.prompt_len
        self.generated = 0
        self.steps = 0
        self.accepted = 0
        self.first_token_s = float("nan")


def simulate(requests: list[Request], *, batch_size: int, cost_model, speculator,
             rng: np.random.Generator, recorder: Recorder, point_id: int, arm: str) -> float:
    """Run one arm of one point to completion; return the simulated end time (s)."""
    env = simpy.Environment()
    gpu = simpy.Resource(env, capacity=1)
    queue = simpy.Store(env)

    def run_stage(stage: str, cost, batch: int, tokens_per_seq: int, context_tokens: int,
                  tokens_generated: int):
        with gpu.request() as grant:
            yield grant
            recorder.steps.append((point_id, arm, stage, env.now, cost.time_s, batch,
                                   tokens_per_seq, context_tokens, tokens_generated, cost))
            yield env.timeout(cost.time_s)

    def run_batch(batch: list[Request]):
        start_s = env.now
        seqs = [_Sequence(r) for r in batch]
        prompt = max(r.prompt_len for r in batch)
        cost = cost_model.step_cost(len(seqs), prompt, 0, "prefill")
        yield from run_stage("prefill", cost, len(seqs), prompt, 0, len(seqs))
        for s in seqs:
            s.generated = 1
            s.first_token_s = env.now
        active = [s for s in seqs if s.generated < s.request.output_len]
        finish(seqs, active, start_s)
        n = speculator.tokens_per_step
        stage = "decode" if n == 1 else "verify"
        counts = recorder.accepted_counts.setdefault(arm, [])
        while active:
            b = len(active)
            context = sum(s.context for s in active)
            draft = speculator.draft_cost(cost_model, b, context)
            if draft is not None:
                yield from run_stage("draft", draft, b, 1, context, 0)
            # The outcome is drawn before the step runs; nothing depends on it until after.
            drawn = speculator.draw_accepted(rng, b).tolist()
            kept = [min(a, s.request.output_len - s.generated) for s, a in zip(active, drawn)]
            cost = cost_model.step_cost(b, n, context, speculator.verify_kind)
            yield from run_stage(stage, cost, b, n, context, sum(kept))
            for s, a, k in zip(active, drawn, kept):
                if a >= len(counts):
                    counts.extend([0] * (a + 1 - len(counts)))
                counts[a] += 1
                s.generated += k
                s.context += k
                s.steps += 1
                s.accepted += a
            still = [s for s in active if s.generated < s.request.output_len]
            finish(active, still, start_s)
            active = still

    def finish(before: list[_Sequence], after: list[_Sequence], start_s: float) -> None:
        done = set(map(id, before)) - set(map(id, after))
        for s in before:
            if id(s) in done:
                r = s.request
                recorder.requests.append((point_id, arm, r.request_id, r.arrival_s, start_s,
                                          s.first_token_s, env.now, r.prompt_len,
                                          r.output_len, s.steps, s.accepted,
                                          start_s - r.arrival_s))

    def source():
        for r in sorted(requests, key=lambda r: (r.arrival_s, r.request_id)):
            if r.arrival_s > env.now:
                yield env.timeout(r.arrival_s - env.now)
            queue.put(r)

    def batcher():
        remaining = len(requests)
        while remaining:
            batch = []
            for _ in range(min(batch_size, remaining)):
                batch.append((yield queue.get()))
            remaining -= len(batch)
            yield from run_batch(batch)

    env.process(source())
    env.process(batcher())
    env.run()
    return env.now

"""Scheduler policies and KV managers on their own, without the engine: each decision
against one worked out by hand from the policy's rule."""

import math
from collections import deque

import pytest

from servesim.serving.config import ServingConfig
from servesim.serving.kv_cache import PagedKV, ReservedKV
from servesim.serving.schedulers import (Decode, Mixed, Prefill, PrefillFirstScheduler, SglangScheduler,
                                         StaticScheduler, VllmScheduler, Wait, make_scheduler)
from servesim.serving.schedulers.vllm_paged import PagedVllmScheduler
from servesim.serving.sequence import Sequence
from servesim.workload import Request


def seq(i, prompt, output, lookahead=0, arrival=0.0):
    return Sequence(Request(i, arrival, prompt, output), arrival, prompt + output + lookahead, None)


class FakeServer:
    """The part of a server a policy reads: its queues, its clock, ``take`` (FCFS under
    a reserved-KV capacity) and whether more requests will come."""

    def __init__(self, waiting, capacity=math.inf, more=False):
        self.waiting = deque(waiting)
        self.running, self.prefilling, self.swapped = [], [], deque()
        self.now, self.more, self.marked = 0.0, more, 0
        self.kv = ReservedKV(capacity, lambda: None)

    def take(self, limit, token_budget=math.inf):
        batch, tokens = [], 0
        while self.waiting and len(batch) < limit and self.kv.can_admit(self.waiting[0]):
            tokens += self.waiting[0].request.prompt_len
            if batch and tokens > token_budget:
                break
            s = self.waiting.popleft()
            self.kv.admit(s)
            batch.append(s)
        return batch

    def expecting_arrivals(self):
        return self.more

    def mark_eligible(self):
        self.marked += 1


def test_factory_picks_the_named_policy():
    assert type(make_scheduler(ServingConfig("static"), 1)) is StaticScheduler
    assert type(make_scheduler(ServingConfig("continuous", scheduler="prefill_first"), 1)) is PrefillFirstScheduler
    assert type(make_scheduler(ServingConfig("continuous", scheduler="vllm"), 1)) is VllmScheduler
    assert type(make_scheduler(ServingConfig("continuous", scheduler="sglang"), 1)) is SglangScheduler
    paged = ServingConfig("continuous", scheduler="vllm", kv_cache="paged")
    assert type(make_scheduler(paged, 1)) is PagedVllmScheduler


def test_static_waits_for_a_full_batch_then_its_deadline():
    """batch 3, max_wait 0.5 s: two waiting (oldest at 0.1 s) and more to come -> wait
    until 0.6 s; at 0.6 s the partial batch of two starts; its iterations run to the end
    of the batch; then the queue is re-marked and, with nothing left, the run ends."""
    policy = StaticScheduler(ServingConfig("static", batch_size=3, max_wait_s=0.5))
    server = FakeServer([seq(0, 4, 2, arrival=0.1), seq(1, 4, 2, arrival=0.3)], more=True)
    server.now = 0.2
    step = policy.next_step(server)
    assert type(step) is Wait and step.timeout_s == pytest.approx(0.4)
    server.now = 0.6
    step = policy.next_step(server)
    assert type(step) is Prefill and [s.request.request_id for s in step.seqs] == [0, 1]
    step = policy.next_step(server)
    assert type(step) is Decode and not step.until_admissible
    server.more = False
    assert policy.next_step(server) is None and server.marked == 1


def test_prefill_first_admits_prompts_within_the_budget_then_decodes():
    """budget 10 tokens, prompts 6, 3, 5: the first two (9 tokens) are prefilled in one
    step; then iterations run (until a waiting request could join); the third then."""
    policy = PrefillFirstScheduler(ServingConfig("continuous", batch_size=4, max_num_batched_tokens=10,
                                                 scheduler="prefill_first"))
    server = FakeServer([seq(0, 6, 3), seq(1, 3, 3), seq(2, 5, 3)])
    step = policy.next_step(server)
    assert type(step) is Prefill and [s.request.prompt_len for s in step.seqs] == [6, 3]
    server.running = list(step.seqs)  # (the engine: they joined with their first token)
    step = policy.next_step(server)
    assert step.until_admissible and server.marked == 1
    step = policy.next_step(server)
    assert type(step) is Prefill and [s.request.prompt_len for s in step.seqs] == [5]


def test_sglang_prefills_back_to_back_while_requests_can_be_admitted():
    """budget 10 tokens, batch 4, one request running, prompts 6, 3, 5, 2 waiting: SGLang
    runs a prefill batch whenever one can be formed, so 6 + 3 (9 tokens) first, then the
    5 at once, with no decode between; then 4 run and the 2 waits: the running requests
    decode until a waiting one could join; once one finishes, its prefill comes next."""
    policy = SglangScheduler(ServingConfig("continuous", batch_size=4, max_num_batched_tokens=10,
                                           scheduler="sglang"))
    server = FakeServer([seq(1, 6, 3), seq(2, 3, 3), seq(3, 5, 3), seq(4, 2, 3)])
    server.running = [seq(0, 4, 8)]
    step = policy.next_step(server)
    assert type(step) is Prefill and [s.request.request_id for s in step.seqs] == [1, 2]
    server.running += step.seqs
    step = policy.next_step(server)
    assert type(step) is Prefill and [s.request.request_id for s in step.seqs] == [3]
    server.running += step.seqs  # 4 running: batch full
    step = policy.next_step(server)
    assert type(step) is Decode and step.until_admissible and len(server.waiting) == 1
    server.running.pop(0)  # one finished: a slot again
    step = policy.next_step(server)
    assert type(step) is Prefill and [s.request.request_id for s in step.seqs] == [4]


def test_vllm_decodes_first_then_chunks_in_fcfs_order():
    """budget 16, verify width 4 (3 lookahead), 2 running decodes: 16 - 2 x 4 = 8 tokens
    left: the partly prefilled request's remaining 5 (of 12, 7 computed), then 3 of the
    first waiting request's 10-token prompt; the second waiting one gets nothing."""
    config = ServingConfig("continuous", batch_size=8, max_num_batched_tokens=16, scheduler="vllm")
    policy = VllmScheduler(config, tokens_per_step=4)
    server = FakeServer([seq(3, 10, 4), seq(4, 2, 4)])
    server.running = [seq(0, 4, 8), seq(1, 4, 8)]
    partial = seq(2, 12, 4)
    partial.computed = 7
    server.prefilling = [partial]
    step = policy.next_step(server)
    assert type(step) is Mixed
    assert [(s.request.request_id, take) for s, take in step.chunks] == [(2, 5), (3, 3)]
    assert [s.request.request_id for s in server.prefilling] == [2, 3] and len(server.waiting) == 1


def test_vllm_long_prefill_threshold_and_max_num_seqs():
    """threshold 4 tokens a prompt per step; max_num_seqs 2: one running, one admitted."""
    config = ServingConfig("continuous", batch_size=2, max_num_batched_tokens=64, scheduler="vllm",
                           long_prefill_token_threshold=4)
    server = FakeServer([seq(1, 30, 2), seq(2, 30, 2)])
    server.running = [seq(0, 4, 8)]
    step = VllmScheduler(config, tokens_per_step=1).next_step(server)
    assert [(s.request.request_id, take) for s, take in step.chunks] == [(1, 4)]


class FakePagedServer(FakeServer):
    """A server with paged KV whose ``preempt`` does what the engine's does to the
    queues and the blocks (the token bookkeeping is the engine's, not tested here)."""

    def __init__(self, waiting, capacity_tokens, block_size=4, budget=64):
        super().__init__(waiting)
        self.kv = PagedKV(capacity_tokens, block_size, False, budget, lambda: None)
        self.preempted = []

    def remaining_now(self, s):
        return s.remaining

    def start(self, s):
        s.start_s = self.now

    def preempt(self, s):
        (self.prefilling if s in self.prefilling else self.running).remove(s)
        self.kv.free(s)
        s.computed = 0
        self.preempted.append(s.request.request_id)
        self.waiting.appendleft(s)


def test_paged_preempts_the_most_recently_admitted_when_a_decode_cannot_grow():
    """16 tokens of KV in blocks of 4. A (prompt 7) and B (prompt 7) run, each holding
    two blocks (8 tokens: context 7 + its next token). A's next step needs context 8 +
    width 1 = 9 tokens: a third block; none is free, so B (admitted last) is preempted,
    its two blocks freed; A grows to 3 blocks; no admission in a step that preempted,
    so the step is A's decode alone."""
    config = ServingConfig("continuous", batch_size=4, max_num_batched_tokens=64, scheduler="vllm",
                           kv_cache="paged", block_size=4, kv_capacity_tokens=16)
    server = FakePagedServer([], 16)
    a, b = seq(0, 7, 10), seq(1, 7, 10)
    for s in (a, b):
        s.remaining = 10 - 1  # its first token came with its prefill
        assert server.kv.grow(s, 8)
    server.running = [a, b]
    a.remaining -= 1  # A generated one more: context 8
    step = PagedVllmScheduler(config, tokens_per_step=1).next_step(server)
    assert server.preempted == [1] and a.blocks == 3 and b.blocks == 0
    assert server.kv.used_tokens == 12 and list(server.waiting) == [b]
    assert type(step) is Decode


def test_reserved_kv_accounting():
    """capacity 100: a 60-token reservation fits alone and is admitted; a 50-token one
    then does not fit beside it (110 > 100) but fits alone; the peak is 60 tokens; the
    occupancy's time integral is advanced before each change."""
    calls = []
    kv = ReservedKV(100, lambda: calls.append(kv.used_tokens))
    a, b = seq(0, 40, 20), seq(1, 30, 20)
    assert kv.fits_alone(a) and kv.can_admit(a)
    kv.admit(a)
    assert not kv.can_admit(b) and kv.fits_alone(b)
    kv.free(a)
    assert kv.can_admit(b) and kv.peak_tokens == 60 and kv.used_tokens == 0 and calls == [0]


def test_paged_kv_blocks_prefix_cache_and_eviction():
    """Blocks of 16, 64 tokens (4 blocks). A (prompt 40, prefix 32 tokens = 2 full
    blocks) grows to 40 tokens: 3 blocks; after its prefill its 2 prefix blocks become
    the cached prefix (A keeps 1 of its own). B with the same prefix hits 32 tokens
    (2 blocks, at least one prompt token still computed). When both leave, the prefix
    stays cached, unused; C (60 tokens, no prefix) needs 4 blocks: the prefix is
    evicted for it."""
    kv = PagedKV(64, 16, True, 8192, lambda: None)
    a = Sequence(Request(0, 0.0, 40, 4, prefix_id=7, prefix_len=32), 0.0, 44, None)
    assert kv.grow(a, 40) and a.blocks == 3 and kv.used_tokens == 48
    a.computed = 40
    kv.prefix_computed(a)
    assert a.blocks == 1 and a.shared_tokens == 32 and kv.used_tokens == 48
    b = Sequence(Request(1, 0.0, 33, 4, prefix_id=7, prefix_len=32), 0.0, 37, None)
    kv.prefix_hit(b)
    assert b.shared_tokens == b.computed == 32 and kv.prefix_hit_tokens == 32
    assert kv.grow(b, 33) and b.blocks == 1 and kv.used_tokens == 64
    kv.free(a)
    kv.free(b)
    assert kv.used_tokens == 32  # the unused cached prefix
    c = seq(2, 60, 4)
    assert kv.grow(c, 60) and c.blocks == 4 and kv.used_tokens == 64


def test_paged_kv_failed_grow_after_eviction_updates_the_occupancy():
    """4 blocks of 16: a cached, unused 2-block prefix and a request holding 1 block.
    A request asking for 4 blocks evicts the prefix (3 blocks free then) and still
    falls short: nothing is allocated, the prefix is gone, and the occupancy says so
    (1 block, 16 tokens)."""
    kv = PagedKV(64, 16, True, 8192, lambda: None)
    a = Sequence(Request(0, 0.0, 40, 4, prefix_id=7, prefix_len=32), 0.0, 44, None)
    kv.grow(a, 40)
    a.computed = 40
    kv.prefix_computed(a)
    kv.free(a)
    other = seq(1, 10, 4)
    assert kv.grow(other, 10) and kv.used_tokens == 48
    big = seq(2, 64, 4)
    assert not kv.grow(big, 64) and big.blocks == 0
    assert kv.used_tokens == 16 and kv.cache.used_blocks == 1

"""The SimPy engine: requests arrive, queue, and hold the GPU step by step.

This is the only module that imports SimPy. It does no cost arithmetic (step times come
from a cost model: ``prefill_cost``, ``step_cost``, ``mixed_step_cost``; drafting costs
and token counts from a speculator) and no scheduling policy (what runs next is a
scheduler's decision, :mod:`servesim.serving.schedulers`; KV accounting is the KV
manager's, :mod:`servesim.serving.kv_cache`).

Processes
* open arrivals need no process: their times are known in advance, so the server lets in
  the requests that have arrived (each at its own arrival time) before every decision
  and change of state, and sleeps until the next arrival when idle; in a closed loop,
  ``clients`` client processes each send a request, wait for its last token, think and
  send the next;
* one serving process asks the scheduler for the GPU's next step whenever it is free,
  and runs it: a prefill step, iterations of the running requests (the decode fast
  path), a mixed step (decodes and prefill chunks in one forward), or an idle wait. The
  GPU is this process: a stage is a timeout of the stage's time. (Only this process
  ever runs stages, so a SimPy resource for the GPU would be granted at once every
  time; none is taken, which saves two events per stage.)

An iteration is a ``draft`` stage (if the speculator has a drafting cost) and a
``verify`` (or plain ``decode``) stage. Prefill yields each request's first token; a
verify step yields the drawn number of accepted tokens, of which those past the request's
output length are dropped. Contexts grow by the tokens kept. A request that could never
fit in the KV cache is rejected on arrival. ``max_sim_time_s`` bounds a run; requests
not finished by then are reported as ``unfinished``.

Waiting is split in two: ``slot_wait_s`` from arrival until the request is among those
that the next scheduling decision would admit (a free batch slot and KV space), and
``gpu_wait_s`` from then until its prefill starts (the GPU finishing its current step or
batch, or a static batch filling up).
"""

from __future__ import annotations

import gc
import math
from collections import deque

import numpy as np
import simpy

from servesim.recorder import Recorder
from servesim.serving.config import ServingConfig
from servesim.serving.kv_cache import PagedKV, ReservedKV
from servesim.serving.schedulers import Decode, Mixed, Prefill, make_scheduler
from servesim.serving.sequence import Sequence, StepOutcome
from servesim.workload import Request, Workload

__all__ = ["Recorder", "Server", "ServingConfig", "simulate"]

STEP_BATCH = 1024
"""Step rows are handed to the recorder this many at a time."""


class Server:
    """One arm of one point: a SimPy environment with its scheduler (and clients)."""

    def __init__(self, workload: Workload, config: ServingConfig, cost_model, speculator,
                 rng: np.random.Generator, recorder: Recorder, point_id: int, arm: str) -> None:
        self.env = simpy.Environment()
        self.workload, self.config = workload, config
        self.cost_model, self.speculator, self.rng = cost_model, speculator, rng
        self.recorder, self.point_id, self.arm = recorder, point_id, arm
        self.lookahead = speculator.tokens_per_step - 1
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.prefilling: list[Sequence] = []  # vllm policy: admitted, prompt partly computed
        self.swapped: deque[Sequence] = deque()  # swap preemption: KV in CPU memory, in preemption order
        self.swap_used_tokens = 0  # CPU swap space in use (tokens, whole blocks)
        self.swap_pending_tokens = 0  # KV tokens to copy (either way) before the next step
        self.swap_pending_seqs = 0  # requests whose KV they are
        self.wake = None
        self.arrived = 0
        self.num_requests = len(workload.requests)
        self.thinking = workload.clients  # clients that will send another request
        self._pending = iter(workload.requests)
        # open loop: the next request to arrive (arrival times are known in advance)
        self._next = None if workload.clients else next(self._pending, None)
        self.counts = recorder.accepted_counts.setdefault(arm, [])
        # a step yields at most its width in tokens: room for every possible draw
        self.counts.extend([0] * (speculator.tokens_per_step + 1 - len(self.counts)))
        self.step_stage = "decode" if speculator.tokens_per_step == 1 else "verify"
        self.totals = recorder.arm(arm)
        self.step_rows: list[tuple] = []  # handed to the recorder every STEP_BATCH rows
        self.iterations = 0  # iterations run so far (each: draft + verify, or decode)
        self.kv = (PagedKV(config.kv_capacity_tokens, config.block_size, config.enable_prefix_caching,
                           config.max_num_batched_tokens, self._advance) if config.paged
                   else ReservedKV(config.kv_capacity_tokens, self._advance))
        self.scheduler = make_scheduler(config, speculator.tokens_per_step)
        # fixed acceptance's shortcut: a request's ``remaining`` is advanced only when it
        # finishes, is preempted (see preempt) or the run ends; until then its tokens
        # are worked out from the iterations since it joined (remaining_now)
        self.fixed = speculator.fixed_tokens_per_step
        # speculation length per step (a length policy) and per-request acceptance
        self.policy = getattr(speculator, "policy", None)
        self.per_request = getattr(speculator, "per_request", None)
        if self.policy is not None or self.per_request is not None:
            self.fixed = None
        self._count_served = self.policy is not None or self.per_request is not None
        self.max_length = speculator.max_length
        lengths = range(self.max_length + 1)
        self.widths = [speculator.width(k) for k in lengths]
        self.kinds = [speculator.kind(k) for k in lengths]
        self.stages = ["decode" if k == 0 or self.widths[k] == 1 else "verify" for k in lengths]
        self.length_seqs = recorder.length_counts.setdefault(arm, [])
        """length_seqs[k]: request-steps run at speculation length k."""
        self.length_seqs.extend([0] * (self.max_length + 1 - len(self.length_seqs)))
        self._level_rng = (np.random.default_rng(int(rng.integers(2**63))) if self.per_request is not None
                           else None)
        self._finish_at: dict[int, list[Sequence]] = {}
        # draft stage cost by batch size, if it does not depend on the context
        self._drafts = None if speculator.draft_depends_on_context else {}
        self.context_tokens = 0  # KV-cache tokens of the running (prefilled) requests
        self._block: list[int] = []  # acceptance draws to serve (see _draw)
        self._block_pos = 0
        self._blocks_drawn = 0
        # the outcome of the stage on the GPU now (None between stages): () for a
        # prefill or draft stage, a verify step's draws (or, with fixed acceptance, the
        # requests it finishes); a run cut by max_sim_time_s takes it back (_cut_stage)
        self._inflight = None
        self._drawn = np.zeros(0, dtype=np.int64)  # the last block drawn, as numpy drew it
        self.stats = {"kv_peak_tokens": 0, "busy_end_s": math.nan,
                      "prefix_hit_tokens": 0, "prompt_tokens_admitted": 0,
                      "waiting_at_last_arrival": 0, "last_arrival_s": 0.0,
                      "first_arrival_s": math.nan, "kv_capacity_tokens": config.kv_capacity_tokens,
                      "swap_outs": 0, "swap_time_s": 0.0}
        self._in_system = 0
        self._last_t = 0.0
        self._in_system_area = 0.0  # integral of requests in system over time (request s)
        self._kv_area = 0.0  # integral of reserved KV tokens over time (token s)

    # -- bookkeeping ------------------------------------------------------------------

    def _advance(self, t_s: float | None = None) -> None:
        """Accumulate the time integrals of requests in system and KV occupancy up to
        ``t_s`` (default: now)."""
        t_s = self.env.now if t_s is None else t_s
        dt = t_s - self._last_t
        if dt:
            self._in_system_area += self._in_system * dt
            self._kv_area += self.kv.used_tokens * dt
            self._last_t = t_s

    def _signal(self) -> None:
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()

    def _wait(self, timeout_s: float | None = None):
        """What an idle scheduler waits for: the next arrival (open loop: its time is
        known; closed loop: a client wakes it), or ``timeout_s``, whichever is first."""
        if self._next is not None:
            wait_s = self._next.arrival_s - self.env.now
            return self.env.timeout(wait_s if timeout_s is None else min(wait_s, timeout_s))
        self.wake = self.env.event()
        if timeout_s is None:
            return self.wake
        return self.wake | self.env.timeout(timeout_s)

    def expecting_arrivals(self) -> bool:
        if self.workload.clients:
            return self.thinking > 0
        return self.arrived < self.num_requests

    @property
    def now(self) -> float:
        """The simulated time (s)."""
        return self.env.now

    def mark_eligible(self, t_s: float | None = None) -> None:
        """Stamp ``eligible_s`` (``t_s``, default now) on the waiting requests the next
        decision would admit."""
        c = self.config
        if c.batching == "static":
            slots, kv_free = c.batch_size, c.kv_capacity_tokens
        else:
            slots = c.batch_size - len(self.running) - len(self.prefilling)
            kv_free = c.kv_capacity_tokens - self.kv.used_tokens
        for s in self.waiting:
            if slots <= 0 or s.kv_tokens > kv_free:
                break
            if math.isnan(s.eligible_s):
                s.eligible_s = self.env.now if t_s is None else t_s
            slots -= 1
            kv_free -= s.kv_tokens

    def _record(self, s: Sequence, status: str) -> None:
        r = s.request
        queue = s.start_s - s.arrival_s
        eligible = s.eligible_s if not math.isnan(s.eligible_s) else s.start_s
        finish = self.env.now if status == "finished" else math.nan
        if s.joined_iteration >= 0:
            steps = self.iterations - s.joined_iteration + s.steps_before
            accepted = r.output_len - 1 - s.remaining - s.extra_tokens
        else:
            steps, accepted = s.steps_before, r.output_len - 1 - s.remaining - s.extra_tokens if s.preemptions else 0
        self.recorder.add_request((
            self.point_id, self.arm, r.request_id, s.arrival_s, s.start_s, s.first_token_s,
            finish, r.prompt_len, r.output_len, steps, accepted, queue,
            eligible - s.arrival_s, s.start_s - eligible, status, s.preemptions), self.totals)
        if s.pauses and status == "finished":
            self.totals.pauses[r.request_id] = tuple(s.pauses)

    # -- arrivals ---------------------------------------------------------------------

    def arrive(self, request: Request, t_s: float | None = None) -> Sequence:
        """``request`` arrives at ``t_s`` (default: now)."""
        t_s = self.env.now if t_s is None else t_s
        self._advance(t_s)
        s = Sequence(request, t_s, request.prompt_len + request.output_len + self.lookahead,
                      self.env.event() if self.workload.clients else None)
        if self.per_request is not None:
            s.accept = self.per_request.request_state(self._level_rng, request.request_id)
        self.arrived += 1
        if self.arrived == 1:
            self.stats["first_arrival_s"] = t_s
        self.stats["last_arrival_s"] = t_s
        if not self.kv.fits_alone(s):  # it could never fit, even alone
            self._record(s, "rejected")
            self._leave(s)
        else:
            self._in_system += 1
            self.waiting.append(s)
            self.mark_eligible(t_s)
        if not self.expecting_arrivals():
            self.stats["waiting_at_last_arrival"] = len(self.waiting)
        self._signal()
        return s

    def _ingest(self, before_s: float | None = None) -> None:
        """Open loop: let in the requests that have arrived by now (or before
        ``before_s``), each at its own arrival time.

        Arrival times are known in advance, so arrivals are not SimPy events: the
        scheduler takes them in before every decision and change of state (admission,
        finish), which gives the same queue, time integrals and eligibility stamps as
        one event per arrival, for much less work.
        """
        r = self._next
        while r is not None and (r.arrival_s <= self.env.now if before_s is None else r.arrival_s < before_s):
            self.arrive(r, r.arrival_s)
            r = next(self._pending, None)
        self._next = r

    def client(self):
        while True:
            r = next(self._pending, None)
            self.thinking -= 1
            if r is None:
                self._signal()
                return
            s = self.arrive(r)
            yield s.done  # (its leaving counted this client as thinking again)
            if r.think_time_s > 0:
                yield self.env.timeout(r.think_time_s)

    # -- GPU stages -------------------------------------------------------------------

    def take(self, limit: int, token_budget: float = math.inf) -> list[Sequence]:
        """Admit up to ``limit`` waiting requests, FCFS, as long as their KV fits and
        their prompts fit in ``token_budget`` tokens (the first always does)."""
        batch = []
        tokens = 0
        kv = self.kv
        while self.waiting and len(batch) < limit:
            s = self.waiting[0]
            if not kv.can_admit(s):
                break
            tokens += s.request.prompt_len
            if batch and tokens > token_budget:
                break
            self.waiting.popleft()
            kv.admit(s)
            self.start(s)
            batch.append(s)
        return batch

    def start(self, s: Sequence) -> None:
        """``s`` is admitted now: it was eligible by now at the latest, and its service
        starts (the first time: a preempted request keeps its first start)."""
        if math.isnan(s.eligible_s):
            s.eligible_s = self.env.now
        if math.isnan(s.start_s):
            s.start_s = self.env.now

    def _hand_over_steps(self) -> None:
        if self.step_rows:
            last = self.step_rows[-1]
            self.stats["busy_end_s"] = last[3] + last[4]  # end of the last stage so far
        self.recorder.add_steps(self.step_rows, self.totals)
        self.step_rows.clear()

    def _finish(self, s: Sequence) -> None:
        self._advance()
        self.kv.free(s)
        self._in_system -= 1
        self._record(s, "finished")
        self._leave(s)

    def _leave(self, s: Sequence) -> None:
        s.finished = True
        if s.done is not None:  # a client waits for it
            # its client will send another request (or find none left): counted at
            # once, before the client process resumes, so that a scheduler whose batch
            # empties at this instant keeps expecting arrivals
            self.thinking += 1
            s.done.succeed()

    def _prefill(self, seqs: list[Sequence]):
        """One prefill stage for ``seqs``; each gets its first token. Returns those that
        want more."""
        prompts = tuple([s.request.prompt_len for s in seqs])
        cost = self.cost_model.prefill_cost(prompts)
        self.step_rows.append((self.point_id, self.arm, "prefill", self.env.now, cost.time_s,
                               len(seqs), max(prompts), 0, len(seqs), len(seqs), sum(prompts), 0, self.kv.used_tokens,
                               cost))
        self._inflight = ()
        yield self.env.timeout(cost.time_s)
        self._inflight = None
        self._ingest()
        still = []
        for s in seqs:
            s.remaining -= 1
            s.first_token_s = self.env.now
            s.joined_iteration = self.iterations
            if s.remaining:
                still.append(s)
                self.context_tokens += s.request.prompt_len
                if self.fixed:  # it finishes after ceil(remaining / fixed) iterations
                    self._finish_at.setdefault(self.iterations - (-s.remaining // self.fixed), []).append(s)
            else:
                self._finish(s)
        return still

    def _draw(self, n: int) -> list[int]:
        """The next ``n`` tokens-per-step draws, served from blocks drawn in one numpy
        call (the same sequence as drawing them step by step, for far less overhead).
        Every draw served is used: the acceptance histogram counts each block as it is
        drawn, and the run takes back the draws it did not serve (``_unserved``)."""
        if self._block_pos + n > len(self._block):
            # blocks grow 256, 1024, 4096 draws: short runs draw (and count) no more than
            # they need; the sequence of draws is the same whatever the block sizes
            size = max(n, 256 << min(2 * self._blocks_drawn, 4))
            self._blocks_drawn += 1
            if self.per_request is not None:  # uniforms, mapped per request (_iteration_outcome)
                block = self._drawn = self.rng.random(size)
            else:
                block = self._drawn = self.speculator.draw_accepted(self.rng, size)
            if not self._count_served:
                self._count(block, +1)
            self._block = self._block[self._block_pos:] + block.tolist()
            self._block_pos = 0
        block, pos = self._block, self._block_pos
        self._block_pos = pos + n
        return block[pos:pos + n]

    def _count(self, draws, sign: int) -> None:
        for a, k in enumerate(np.bincount(draws).tolist()):
            self.counts[a] += sign * k

    def _unserved(self) -> None:
        """Take the draws drawn but not served out of the acceptance histogram. They
        are the tail of the last numpy block: a refill is served from at once, and what
        was left of the block before it is shorter than that first serving."""
        unserved = len(self._block) - self._block_pos
        if unserved and not self._count_served:
            self._count(self._drawn[len(self._drawn) - unserved:], -1)

    def _decode(self, active: list[Sequence], until_admissible: bool):
        """Run iterations of the ``active`` requests (the server's running list, from
        which finished requests are removed) until all have finished or, with
        ``until_admissible`` (continuous batching), until a waiting request could join;
        return the requests still running.

        An iteration is a draft stage (if the speculator has one) and a verify (or
        decode) stage. Its outcome is drawn, and the requests' token counts advanced,
        before the stage runs (nothing reads them until after); requests that got their
        last token finish when the stage ends. This is the engine's hot path: the stages
        are written out here, with what they use held in local names.
        """
        env, rows = self.env, self.step_rows
        point, arm, stage = self.point_id, self.arm, self.step_stage
        spec, cost_model = self.speculator, self.cost_model
        step_cost, drafting = cost_model.step_cost, spec.has_draft_stage
        n, kind, k = spec.tokens_per_step, spec.verify_kind, self.max_length
        policy, widths, kinds, stages = self.policy, self.widths, self.kinds, self.stages
        waiting, batch_size, swapped = self.waiting, self.config.batch_size, self.swapped
        fixed = self.fixed
        kv = self.kv
        paged = kv.paged
        grow, block = (kv.grow, kv.block_size) if paged else (None, 0)
        while active:
            if policy is not None:
                k = policy.choose(len(active), self.context_tokens, len(waiting))
                n, kind, stage = widths[k], kinds[k], stages[k]
            if paged:  # every request needs room for context + width; the scheduler preempts
                grown = True
                it = self.iterations
                for s in active:
                    r = s.request
                    rem = s.remaining - fixed * (it - s.joined_iteration) if fixed else s.remaining
                    ctx = r.prompt_len + r.output_len - rem - 1
                    if ctx + n - s.shared_tokens > s.blocks * block:
                        if not grow(s, ctx + n):
                            grown = False
                            break
                if not grown:
                    break
            context = self.context_tokens
            b = len(active)
            draft = self._draft_cost(b, context, k) if drafting and k else None
            generated, finished, outcome = self._iteration_outcome(active, k)
            cost = step_cost(b, n, context, kind)
            now, kv_used = env.now, kv.used_tokens
            if draft is None:
                rows.append((point, arm, stage, now, cost.time_s, b, n, context, generated, 0, 0, k, kv_used,
                             cost))
                self._inflight = outcome
                yield env.timeout(cost.time_s)
            else:
                # the draft and the verify stage back to back, in one
                # timeout (nothing reads the requests between them); two rows
                verify_s = now + draft.time_s
                rows.append((point, arm, "draft", now, draft.time_s, b, 1, context, 0, 0, 0, k, kv_used, draft))
                rows.append((point, arm, stage, verify_s, cost.time_s, b, n, context, generated, 0, 0, k, kv_used,
                             cost))
                self._inflight = outcome
                yield env.timeout(verify_s + cost.time_s - now)
            self._inflight = None
            if self._next is not None and self._next.arrival_s <= env.now:
                self._ingest()
            if len(rows) >= STEP_BATCH:
                self._hand_over_steps()
            context += generated
            if finished:
                for s in finished:
                    context -= s.context_tokens()
                    self._finish(s)
                    active.remove(s)  # (active is self.running: it leaves the running set)
                if until_admissible:
                    self.mark_eligible()
            self.context_tokens = context
            if until_admissible and (waiting or swapped) and len(active) < batch_size:
                if swapped:  # (no admissions while requests are swapped out)
                    if kv.can_swap_in(swapped[0]):
                        break
                elif kv.can_admit(waiting[0]):
                    break
        return active

    def _draft_cost(self, b: int, context: int, k: int):
        """The draft stage's cost for ``b`` sequences at speculation length ``k`` (looked
        up per batch size and length when it does not depend on the context), or None
        when the speculator drafts for free."""
        drafts = self._drafts
        draft = drafts.get((b, k)) if drafts is not None else None
        if draft is None:
            draft = self.speculator.draft_cost(self.cost_model, b, context, k)
            if drafts is not None:
                drafts[(b, k)] = draft
        return draft

    def _iteration_outcome(self, active: list[Sequence], k: int) -> tuple[int, list, object]:
        """One more iteration of the ``active`` requests at speculation length ``k``,
        drawn before it runs (nothing reads the counts until after): (tokens generated,
        requests it finishes, what to take back if a cut stops it: the finishers with
        fixed acceptance, else the draws). A step shorter than the longest length keeps
        min(draw, k + 1) tokens; per-request acceptance maps each uniform draw through
        the request's own state."""
        self.iterations += 1
        fixed, b = self.fixed, len(active)
        self.length_seqs[k] += b
        if fixed:  # no draws; who finishes now was known at admission (see _prefill)
            self.counts[fixed] += b
            generated = b * fixed
            finished = self._finish_at.pop(self.iterations, ())
            for s in finished:
                s.remaining -= fixed * (self.iterations - s.joined_iteration)
                generated += s.remaining
            return generated, finished, finished
        draws = self._draw(b)
        finished = []
        if self._count_served:  # each draw mapped, capped and counted as it is served, in one pass
            tokens = self.per_request.tokens if self.per_request is not None else None
            cap = k + 1 if k < self.max_length else 1 << 62  # (no cap at the longest length)
            counts, served, generated = self.counts, [], 0
            for s, a in zip(active, draws):
                if tokens is not None:
                    a = tokens(s.accept, a)
                if a > cap:
                    a = cap
                counts[a] += 1
                served.append(a)
                generated += a
                left = s.remaining - a
                s.remaining = left
                if left <= 0:
                    generated += left  # less what it accepted past its end
                    finished.append(s)
            return generated, finished, served
        generated = sum(draws)  # less what finishing requests accept past their end
        for s, a in zip(active, draws):
            left = s.remaining - a
            s.remaining = left
            if left <= 0:
                generated += left
                finished.append(s)
        return generated, finished, draws

    def _mixed_step(self, chunks: list[tuple[Sequence, int]]):
        """One step of the vLLM policy with prefill ``chunks`` ((request, tokens) in
        FCFS order): the running requests' iteration (a draft stage first, if the
        speculator has one) and the chunks in one forward. A request whose last chunk
        ran gets its first token and decodes from the next step on."""
        env, rows = self.env, self.step_rows
        spec, cost_model = self.speculator, self.cost_model
        n, kind, fixed, k = spec.tokens_per_step, spec.verify_kind, self.fixed, self.max_length
        prefix_computed = self.kv.prefix_computed if self.kv.paged else None
        active = self.running
        b = len(active)
        context = self.context_tokens
        if b and self.policy is not None:
            k = self.policy.choose(b, context, len(self.waiting))
            n, kind = self.widths[k], self.kinds[k]
        if b and spec.has_draft_stage and k:
            draft = self._draft_cost(b, context, k)
            if draft is not None:
                rows.append((self.point_id, self.arm, "draft", env.now, draft.time_s, b, 1, context, 0, 0, 0,
                             k, self.kv.used_tokens, draft))
                self._inflight = ()
                yield env.timeout(draft.time_s)
                self._inflight = None
        generated, finished, outcome = self._iteration_outcome(active, k) if b else (0, (), None)
        shape = tuple((take, s.computed) for s, take in chunks)
        cost = cost_model.mixed_step_cost(b, n, context, kind, shape)
        completing = [s for s, take in chunks if s.computed + take == s.target]
        # context_tokens: cached tokens the step reads (the decodes' and the chunks' prefixes)
        rows.append((self.point_id, self.arm, "mixed" if b else "prefill", env.now, cost.time_s,
                     b + len(chunks), n if b else max(take for _, take in chunks),
                     context + sum(p for _, p in shape), generated + len(completing), len(chunks),
                     sum(take for _, take in chunks), k if b else 0, self.kv.used_tokens, cost))
        self._inflight = StepOutcome(outcome)
        yield env.timeout(cost.time_s)
        self._inflight = None
        self._ingest()
        context += generated
        for s in finished:
            context -= s.context_tokens()
            self._finish(s)
            active.remove(s)
        for s, take in chunks:
            s.computed += take
            if prefix_computed is not None:
                prefix_computed(s)
        for s in completing:
            self.prefilling.remove(s)
            s.remaining -= 1
            if math.isnan(s.first_token_s):  # (also if it was preempted before its first token)
                s.first_token_s = env.now
            else:
                s.extra_tokens += 1  # a re-prefill's token, not a verify step's
                s.pauses += (env.now, 1.0)  # resumed, with a token
            s.joined_iteration = self.iterations
            if s.remaining:
                active.append(s)
                context += s.target
                if fixed:
                    self._finish_at.setdefault(self.iterations - (-s.remaining // fixed), []).append(s)
            else:
                self._finish(s)
        self.context_tokens = context
        if len(rows) >= STEP_BATCH:
            self._hand_over_steps()
        self.mark_eligible()

    def remaining_now(self, s: Sequence) -> int:
        """``s.remaining`` as of now (fixed acceptance advances it lazily)."""
        if self.fixed and s.joined_iteration >= 0:
            return s.remaining - self.fixed * (self.iterations - s.joined_iteration)
        return s.remaining

    def _stop_running(self, s: Sequence) -> None:
        """``s`` leaves the running set, preempted: its tokens stop (a pause begins),
        its token count is caught up and its verify steps so far are kept."""
        self.running.remove(s)
        if s.pauses is None:
            s.pauses = []
        s.pauses.append(self.env.now)
        if self.fixed:  # off the finishing schedule, its tokens caught up
            due = s.joined_iteration - (-s.remaining // self.fixed)
            self._finish_at[due].remove(s)
            s.remaining = self.remaining_now(s)
        self.context_tokens -= s.context_tokens()
        s.steps_before += self.iterations - s.joined_iteration
        s.joined_iteration = -1

    def preempt(self, s: Sequence) -> None:
        """Recompute preemption (vLLM's): free ``s``'s blocks; it goes back to the front
        of the waiting queue and will re-prefill its prompt and the tokens it generated."""
        self._advance()
        if s in self.prefilling:
            self.prefilling.remove(s)
        else:
            self._stop_running(s)  # (its tokens stop until its re-prefill's)
        self.kv.free(s)
        generated = s.request.output_len - s.remaining
        s.target = s.request.prompt_len + generated if generated else s.request.prompt_len
        s.computed = 0
        s.preemptions += 1
        self.waiting.appendleft(s)

    def can_swap_out(self, s: Sequence) -> bool:
        """Whether the CPU swap space has room for running ``s``'s KV (whole blocks)."""
        return self.swap_used_tokens + self.kv.block_tokens(s.context_tokens()) <= self.config.swap_space_tokens

    def swap_out(self, s: Sequence) -> None:
        """Swap preemption: running ``s``'s KV (its context, in whole blocks) is copied
        to CPU memory before the next step and its GPU blocks are freed; it waits in
        ``swapped`` until :meth:`swap_in`. Counted as a preemption."""
        self._advance()
        self._stop_running(s)
        self.kv.free(s)
        s.swapped_tokens = self.kv.block_tokens(s.context_tokens())
        self.swap_used_tokens += s.swapped_tokens
        self.swap_pending_tokens += s.swapped_tokens
        self.swap_pending_seqs += 1
        self.stats["swap_outs"] += 1
        s.preemptions += 1
        self.swapped.append(s)

    def swap_in(self, s: Sequence) -> None:
        """The first swapped request, ``s``, whose blocks the scheduler has just grown
        back, is copied back before the next step and runs again (no token: its next
        comes from its next decode)."""
        assert self.swapped[0] is s
        self.swapped.popleft()
        self.swap_used_tokens -= s.swapped_tokens
        self.swap_pending_tokens += s.swapped_tokens
        self.swap_pending_seqs += 1
        s.swapped_tokens = 0
        s.pauses += (self.env.now, 0.0)  # resumed, without a token
        s.joined_iteration = self.iterations
        self.running.append(s)
        self.context_tokens += s.context_tokens()
        if self.fixed:
            self._finish_at.setdefault(self.iterations - (-s.remaining // self.fixed), []).append(s)

    def _swap(self):
        """One ``swap`` stage: the KV copies the last decision asked for, between GPU
        and CPU memory, before the step runs (vLLM V0's cache engine swaps in and out
        before the forward; both directions charged one after the other)."""
        tokens, seqs = self.swap_pending_tokens, self.swap_pending_seqs
        self.swap_pending_tokens = self.swap_pending_seqs = 0
        cost = self.cost_model.kv_swap_cost(tokens, self.config.kv_bytes_per_token)
        self.step_rows.append((self.point_id, self.arm, "swap", self.env.now, cost.time_s, seqs, 0, tokens,
                               0, 0, 0, 0, self.kv.used_tokens, cost))
        self._inflight = ()
        yield self.env.timeout(cost.time_s)
        self._inflight = None
        self.stats["swap_time_s"] += cost.time_s

    def serve(self):
        """The serving process: whenever the GPU is free, let in the requests that have
        arrived, ask the scheduler for the next step and run it, until it says the run
        is over."""
        next_step = self.scheduler.next_step
        while True:
            self._ingest()
            step = next_step(self)
            if step is None:
                return
            if self.swap_pending_tokens:
                yield from self._swap()
            kind = type(step)
            if kind is Decode:
                self.running = yield from self._decode(self.running, step.until_admissible)
            elif kind is Mixed:
                yield from self._mixed_step(step.chunks)
            elif kind is Prefill:
                before = self.running
                self.running = before + step.seqs
                prefilled = yield from self._prefill(step.seqs)
                self.running = before + prefilled
            else:  # Wait
                yield self._wait(step.timeout_s)

    def _cut_stage(self) -> None:
        """The run was cut by ``max_sim_time_s`` while a stage was on the GPU: it did
        not complete. Its row keeps the GPU time up to the cut and generates nothing;
        a verify step's tokens are taken back from its requests and from the
        acceptance histogram, and it does not count as an iteration."""
        rows = self.step_rows
        # a draft and its verify run as one hold (``_decode``): cut in the draft, the
        # verify had not begun; its row goes, and its drawn outcome is taken back
        unstarted = rows.pop() if len(rows) > 1 and rows[-1][3] > self.env.now else None
        row = rows[-1]
        start_s, duration_s = row[3], row[4]
        kept_s = min(duration_s, max(0.0, self.env.now - start_s))
        rows[-1] = row[:4] + (kept_s,) + row[5:8] + (0,) + row[9:13] + (row[-1].truncated(kept_s),)
        step = unstarted or row
        outcome, self._inflight = self._inflight, None
        if isinstance(outcome, StepOutcome):  # a step of the vllm policy
            outcome = outcome.decodes  # (its chunks advance only after the step)
            if outcome is None:
                return  # no decodes in it
        elif step[2] not in ("decode", "verify"):
            return  # a prefill or draft stage: no request state was advanced
        self.iterations -= 1
        b = step[5] - step[9]
        self.length_seqs[step[11]] -= b
        if self.fixed:
            self.counts[self.fixed] -= b
            for s in outcome:  # finishers of that step: back to their count after prefill
                s.remaining += self.fixed * (self.iterations + 1 - s.joined_iteration)
        else:
            self._count(np.asarray(outcome, dtype=np.int64), -1)
            for s, a in zip(self.running, outcome):
                s.remaining += a

    def _record_not_arrived(self) -> None:
        """Requests that had not arrived when ``max_sim_time_s`` cut the run: one row
        each, status ``not_arrived`` (open loop: with the arrival time they would have
        had; closed loop: NaN, no client had sent them)."""
        nan = math.nan
        pending = ([] if self._next is None else [self._next]) + list(self._pending)
        self._next = None
        for r in pending:
            arrival = nan if self.workload.clients else r.arrival_s
            self.recorder.add_request((
                self.point_id, self.arm, r.request_id, arrival, nan, nan, nan, r.prompt_len,
                r.output_len, 0, 0, nan, nan, nan, "not_arrived", 0), self.totals)

    def run(self) -> float:
        env = self.env
        for _ in range(self.workload.clients):
            env.process(self.client())
        env.process(self.serve())
        until = None if math.isinf(self.config.max_sim_time_s) else self.config.max_sim_time_s
        # The cyclic garbage collector is paused while the loop runs: the loop makes
        # almost no reference cycles (a few hundred objects per run), but the collector
        # would walk the growing lists of recorded rows again and again (a fifth of the
        # run time of the seed scenario). Memory is still freed by reference counting.
        collecting = gc.isenabled()
        gc.disable()
        try:
            env.run(until)
        finally:
            if collecting:
                gc.enable()
        self._ingest(before_s=env.now)  # stopped by max_sim_time_s: who came before the end
        self._advance()
        if self._inflight is not None:
            self._cut_stage()
        self._unserved()
        self._hand_over_steps()
        if self.expecting_arrivals():  # stopped by max_sim_time_s before the last arrival
            self.stats["waiting_at_last_arrival"] = len(self.waiting)
        unfinished = (list(self.waiting) + list(self.prefilling) + list(self.swapped)
                      + [s for s in self.running if not s.finished])
        if self.fixed:  # remaining tokens of running requests, advanced to the last iteration
            for s in unfinished:  # (not those cut in their last step: advanced already, <= 0)
                if s.joined_iteration >= 0 and s.remaining > 0:
                    s.remaining -= self.fixed * (self.iterations - s.joined_iteration)
        for s in unfinished:
            self._record(s, "unfinished")
        self._record_not_arrived()
        kv = self.kv
        self.stats.update(kv_peak_tokens=kv.peak_tokens, prefix_hit_tokens=kv.prefix_hit_tokens,
                          prompt_tokens_admitted=kv.prompt_tokens_admitted)
        self.stats.update(end_s=env.now, unfinished=len(unfinished), in_system_area=self._in_system_area,
                          kv_area=self._kv_area,
                          not_arrived=self.num_requests - self.arrived)
        self.recorder.arm_stats[self.arm] = self.stats
        return env.now


def simulate(workload: Workload | list[Request], *, cost_model, speculator,
             rng: np.random.Generator, recorder: Recorder, point_id: int, arm: str,
             config: ServingConfig | None = None, batch_size: int | None = None) -> float:
    """Run one arm of one point; return the simulated end time (s)."""
    if not isinstance(workload, Workload):
        workload = Workload(tuple(workload))
    config = config or ServingConfig()
    if batch_size is not None:
        from dataclasses import replace
        config = replace(config, batch_size=batch_size)
    return Server(workload, config, cost_model, speculator, rng, recorder, point_id, arm).run()

"""Roofline cost model of one transformer forward step, operator by operator.

Pure: no SimPy, no I/O. Given a GPU (datasheet peaks + kernel profile) and a model
shape, :meth:`CostModel.step_cost` returns the time of one forward step of a batch and a
per-operator breakdown with FLOPs and HBM bytes.

Each operator's time is a roofline with three refinements, all parameters of the
:class:`~servesim.hardware.KernelProfile` (see its docstring for the physics):

* achieved, not peak, bandwidth and FLOP/s;
* memory and compute overlap only partly: ``max(m, c) + (1 - overlap) * min(m, c)``;
* granularity: GEMM token tiles, weight passes per ``weight_pass_tokens`` tokens, and for
  tree-masked attention a padded query tile and a materialised score matrix.

Attention comes in two kernels. *Fused* attention (plain decode and prefill, a
FlashAttention-style kernel) reads the KV cache once and never writes scores to HBM;
with a causal mask it skips the masked half. *Materialised* attention (verify steps,
whose tree mask the fused kernels of the Medusa era did not support) computes the full
padded score matrix ``queries x (context + queries)`` per head and moves it through HBM.

Assumptions: FP16/BF16 weights, activations and KV cache (``dtype_bytes``); norms,
rotary embedding and residual adds are not charged (a few percent of a decode step);
one GPU, no tensor parallelism.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from servesim.hardware import GPU, KernelProfile
from servesim.models import Model

OP_NAMES = ("qkv_proj", "attn_qk", "attn_pv", "o_proj", "mlp_gate", "mlp_up",
            "mlp_down", "lm_head", "draft_heads", "draft_model")
"""Every operator a step can contain, in execution order (columns of steps.parquet)."""

STAGES = ("prefill", "decode", "verify", "chain_verify")
"""Step kinds: ``verify`` checks a token tree (tree mask, materialised attention);
``chain_verify`` checks a chain of drafted tokens (causal mask, fused attention)."""


class OpCost(NamedTuple):
    """One operator of a step, summed over layers.

    ``flops`` are the FLOPs executed (padding included), ``hbm_bytes`` the bytes moved
    to or from HBM; ``memory_time_s`` and ``compute_time_s`` are those divided by the
    achieved bandwidth and FLOP/s, and ``time_s`` combines them (see module docstring).
    """

    name: str
    flops: float
    hbm_bytes: float
    memory_time_s: float
    compute_time_s: float
    time_s: float

    @property
    def bound(self) -> str:
        """``"memory"`` or ``"compute"``: which side of the roofline dominates."""
        return "memory" if self.memory_time_s >= self.compute_time_s else "compute"


class StepCost:
    """Time of one GPU stage (``time_s``, seconds) and its per-operator breakdown (``ops``).

    The breakdown of a forward step can be left to be worked out when first asked for:
    ``ops`` is then ``None`` and the step keeps how to work it out,
    ``explain(model, first, second)`` (a method of :class:`CostModel`, the cost model and
    two arguments; no new object per step, so that a memo of many steps stays small).
    Open-loop runs meet a new batch context at almost every step; they need every
    step's time but keep the breakdown of few steps, or none (``write_steps = false``).
    """

    __slots__ = ("time_s", "_ops", "_explain", "_model", "_first", "_second")

    def __init__(self, ops: tuple[OpCost, ...] | None, time_s: float, explain=None,
                 model: "CostModel | None" = None, first=None, second=None) -> None:
        self._ops, self.time_s = ops, time_s
        self._explain, self._model, self._first, self._second = explain, model, first, second

    @property
    def ops(self) -> tuple[OpCost, ...]:
        if self._ops is None:
            self._ops = self._explain(self._model, self._first, self._second)
            self._explain = self._model = self._first = self._second = None
        return self._ops

    def __reduce__(self):  # pickled (to other processes) with its breakdown worked out
        return StepCost, (self.ops, self.time_s)

    def __eq__(self, other) -> bool:
        return isinstance(other, StepCost) and (self.ops, self.time_s) == (other.ops, other.time_s)

    def __repr__(self) -> str:
        return f"StepCost(ops={self.ops!r}, time_s={self.time_s!r})"

    def truncated(self, time_s: float) -> "StepCost":
        """This stage cut short after ``time_s`` seconds (a run stopped by
        ``max_sim_time_s``): every operator's time, FLOPs and bytes scaled by the
        fraction that ran (the breakdown of what the GPU did before the cut)."""
        if time_s >= self.time_s:
            return self
        f = time_s / self.time_s if self.time_s > 0 else 0.0
        ops = tuple(OpCost(o.name, o.flops * f, o.hbm_bytes * f, o.memory_time_s * f,
                           o.compute_time_s * f, o.time_s * f) for o in self.ops)
        return StepCost(ops, time_s)

    def op_times(self) -> dict[str, float]:
        """Seconds per operator, every name in :data:`OP_NAMES` (0 where absent)."""
        times = dict.fromkeys(OP_NAMES, 0.0)
        for op in self.ops:
            times[op.name] += op.time_s
        return times


def _merged(name: str, ops: list[OpCost]) -> StepCost:
    """Several operators reported as one named operator (a draft stage's total)."""
    op = OpCost(name, sum(o.flops for o in ops), sum(o.hbm_bytes for o in ops),
                sum(o.memory_time_s for o in ops), sum(o.compute_time_s for o in ops),
                sum(o.time_s for o in ops))
    return StepCost((op,), op.time_s)


def _combine(memory_time_s: float, compute_time_s: float, overlap: float) -> float:
    """Partial-overlap roofline: the larger time plus the unhidden part of the smaller."""
    hi, lo = max(memory_time_s, compute_time_s), min(memory_time_s, compute_time_s)
    return hi + (1.0 - overlap) * lo


class CostModel:
    """Step times for one (GPU, model) pair. Results are memoised per instance."""

    def __init__(self, gpu: GPU, model: Model, profile: KernelProfile | None = None,
                 dtype_bytes: int = 2) -> None:
        self.gpu = gpu
        self.model = model
        self.profile = profile or gpu.profile
        self.dtype_bytes = dtype_bytes
        self._bandwidth = gpu.hbm_bandwidth_bytes_per_s * self.profile.bandwidth_efficiency
        self._flops = gpu.peak_fp16_flops_per_s * self.profile.compute_efficiency
        self._underlap = 1.0 - self.profile.overlap  # the unhidden fraction (see _combine)
        self._layers = model.layers
        self._attention_shape = (model.heads, model.head_dim, model.kv_dim, model.hidden)
        self._heads: dict[tuple, StepCost] = {}  # Medusa heads, by (batch, heads)
        self._chains: dict[tuple, StepCost] = {}  # draft-model chains
        self._prefills: dict[tuple, StepCost] = {}  # variable-length prefills, by prompts
        # forward steps: by shape (batch, tokens per sequence, stage), then by context
        # (small dicts with integer keys: a lookup is cheaper than in one big dict)
        self._steps: dict[tuple, dict[int, StepCost]] = {}
        self._step_entries = 0
        self._shapes: dict[tuple, tuple] = {}  # each shape in _steps: (its key, its GEMMs)
        self._gemm_cache: dict[tuple, tuple[OpCost, ...]] = {}  # see _gemms

    STEP_MEMO_ENTRIES = 262144
    """Bound of the memo of forward steps: open-loop runs meet ever new batch contexts,
    and an unbounded memo would grow with every step. An entry takes about 0.18 KB
    (0.5 KB once its breakdown is worked out), so at most ~50 MB; a full memo starts
    afresh. (The 100,000-request benchmark meets 171,000 (batch, context) pairs per
    cost model: with 65,536 entries it worked out 336,000 steps, with 262,144 171,000,
    and ran 3% faster.)"""

    MEMO_ENTRIES = 8192
    """Bound of each of the other memos (prefills, Medusa heads, draft chains). Each is
    a dict of its own, so that the small ones stay quick to look up."""

    GEMM_CACHE_ENTRIES = 16384
    """Bound of the GEMM memo (about 1 KB an entry): variable-length prefills meet many
    token counts."""

    def _remember(self, memo: dict, key: tuple, cost: StepCost) -> StepCost:
        if len(memo) >= self.MEMO_ENTRIES:
            memo.clear()
        memo[key] = cost
        return cost

    # -- building blocks -------------------------------------------------------------

    def _op(self, name: str, flops: float, hbm_bytes: float, flops_per_s: float,
            compute_flops: float | None = None, repeat: int = 1) -> OpCost:
        """An operator executed ``repeat`` times (once per layer for block operators)."""
        memory_time = hbm_bytes / self._bandwidth
        compute_time = (flops if compute_flops is None else compute_flops) / flops_per_s
        time = _combine(memory_time, compute_time, self.profile.overlap)
        return OpCost(name, flops * repeat, hbm_bytes * repeat, memory_time * repeat,
                      compute_time * repeat, time * repeat)

    def gemm(self, name: str, tokens: int, d_in: int, d_out: int, repeat: int = 1) -> OpCost:
        """``tokens x d_in`` activations times a ``d_in x d_out`` weight matrix.

        FLOPs are charged on tokens rounded up to ``gemm_token_tile``; weights are read
        once, plus ``weight_reread_fraction`` of them for every further pass of
        ``weight_pass_tokens`` tokens; activations are read and written once.
        """
        p = self.profile
        padded = math.ceil(tokens / p.gemm_token_tile) * p.gemm_token_tile
        passes = math.ceil(tokens / p.weight_pass_tokens)
        weight_bytes = d_in * d_out * self.dtype_bytes
        hbm = (weight_bytes * (1 + (passes - 1) * p.weight_reread_fraction)
               + tokens * (d_in + d_out) * self.dtype_bytes)
        flops = 2.0 * padded * d_in * d_out
        return self._op(name, flops, hbm, self._flops, repeat=repeat)

    def _attention(self, batch: int, queries: int, context_tokens: int,
                   stage: str) -> tuple[float, float, float]:
        """FLOPs and HBM bytes of the score (QK^T) operator in one layer, and the FLOP/s
        its kernel achieves. The value (PV) operator moves and computes the same.

        ``queries`` new tokens per sequence attend to their sequence's cached context
        (``context_tokens`` summed over the batch) and to each other.
        """
        heads, head_dim, kv_dim, hidden = self._attention_shape
        dt = self.dtype_bytes
        kv_tokens = context_tokens + batch * queries  # keys after this step's tokens are appended
        k_bytes = kv_tokens * kv_dim * dt  # K (or V) read, per layer
        q_bytes = batch * queries * hidden * dt  # Q read (or O written), per layer
        if stage == "verify":
            p = self.profile
            padded = math.ceil(queries / p.masked_attention_query_tile) * p.masked_attention_query_tile
            scores = heads * padded * kv_tokens  # materialised score elements, per layer
            flops = 2.0 * scores * head_dim
            score_bytes = scores * p.score_bytes_per_element / 2  # half on each side of softmax
            rate = self.gpu.peak_fp16_flops_per_s * p.masked_attention_compute_efficiency
            return flops, k_bytes + q_bytes + score_bytes, rate
        # fused kernel; causal mask skips the upper triangle among the new tokens
        pairs = queries * context_tokens + batch * queries * (queries + 1) / 2
        return 2.0 * heads * pairs * head_dim, k_bytes + q_bytes, self._flops

    def _gemms(self, tokens: int, logit_tokens: int) -> tuple[OpCost, ...]:
        """The GEMMs of a forward step over ``tokens`` tokens, with logits for
        ``logit_tokens`` of them (memoised: they do not depend on the context)."""
        key = (tokens, logit_tokens)
        gemms = self._gemm_cache.get(key)
        if gemms is None:
            if len(self._gemm_cache) >= self.GEMM_CACHE_ENTRIES:
                self._gemm_cache.clear()
            m = self.model
            gemms = self._gemm_cache[key] = (
                self.gemm("qkv_proj", tokens, m.hidden, m.hidden + 2 * m.kv_dim, m.layers),
                self.gemm("o_proj", tokens, m.hidden, m.hidden, m.layers),
                self.gemm("mlp_gate", tokens, m.hidden, m.intermediate, m.layers),
                self.gemm("mlp_up", tokens, m.hidden, m.intermediate, m.layers),
                self.gemm("mlp_down", tokens, m.intermediate, m.hidden, m.layers),
                self.gemm("lm_head", logit_tokens, m.hidden, m.vocab),
            )
        return gemms

    def _step_time(self, gemms: tuple[OpCost, ...], attention: tuple[float, float, float]) -> float:
        """A forward step's time from its GEMMs and its attention's per-layer FLOPs,
        bytes and FLOP/s: each attention operator's time as :meth:`_op` works it out, all
        summed in execution order (so it equals the sum of :meth:`_step_ops` exactly)."""
        flops, hbm_bytes, rate = attention
        memory_s, compute_s = hbm_bytes / self._bandwidth, flops / rate
        # _combine written out (this runs for every new batch context of a run)
        if memory_s >= compute_s:
            attention_s = (memory_s + self._underlap * compute_s) * self._layers
        else:
            attention_s = (compute_s + self._underlap * memory_s) * self._layers
        qkv, o, gate, up, down, head = gemms
        return (qkv.time_s + attention_s + attention_s + o.time_s + gate.time_s + up.time_s
                + down.time_s + head.time_s)

    def _step_ops(self, gemms: tuple[OpCost, ...], attention: tuple[float, float, float]
                  ) -> tuple[OpCost, ...]:
        """A step's operators in execution order, from its GEMMs and its attention's
        per-layer FLOPs, bytes and FLOP/s."""
        flops, hbm_bytes, rate = attention
        qk = self._op("attn_qk", flops, hbm_bytes, rate, repeat=self.model.layers)
        return (gemms[0], qk, OpCost("attn_pv", *qk[1:])) + gemms[1:]

    def _forward_ops(self, shape: tuple[int, int, str], context_tokens: int) -> tuple[OpCost, ...]:
        """The operators of the forward step of ``shape`` (batch, tokens per sequence,
        stage) at ``context_tokens`` (see :meth:`step_cost`)."""
        batch, tokens_per_seq, stage = shape
        tokens = batch * tokens_per_seq
        return self._step_ops(self._gemms(tokens, batch if stage == "prefill" else tokens),
                              self._attention(batch, tokens_per_seq, context_tokens, stage))

    # -- public ----------------------------------------------------------------------

    def draft_chain_cost(self, batch: int, passes: int, context_tokens: int) -> StepCost:
        """``passes`` autoregressive steps of this (draft) model, one token per sequence
        each, contexts growing by one token per pass; reported as one ``draft_model`` op."""
        key = (batch, passes, context_tokens)
        cached = self._chains.get(key)
        if cached is None:
            steps = [self.step_cost(batch, 1, context_tokens + i * batch, "decode") for i in range(passes)]
            cached = self._remember(self._chains, key,
                                    _merged("draft_model", [op for step in steps for op in step.ops]))
        return cached

    def step_cost(self, batch: int, tokens_per_seq: int, context_tokens: int,
                  stage: str) -> StepCost:
        """One forward step of the target model.

        batch: sequences in the step.
        tokens_per_seq: query tokens per sequence (1 for decode, the candidate tokens
            for a verify step, the prompt for prefill).
        context_tokens: tokens already in the KV cache, summed over the batch (attention
            cost is linear in each sequence's context, so only the sum matters).
        stage: one of :data:`STAGES` (``verify`` uses tree-masked, materialised
            attention; prefill computes logits for the last token only).
        """
        by_context = self._steps.get((batch, tokens_per_seq, stage))
        if by_context is not None:
            cached = by_context.get(context_tokens)
            if cached is not None:
                return cached
        if context_tokens < 0:
            raise ValueError(f"context_tokens must be >= 0, got {context_tokens}")
        if self._step_entries >= self.STEP_MEMO_ENTRIES:
            self._steps.clear()
            self._shapes.clear()
            self._step_entries, by_context = 0, None
        if by_context is None:  # a new shape
            if stage not in STAGES:
                raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
            if batch < 1 or tokens_per_seq < 1:
                raise ValueError("batch and tokens_per_seq must be >= 1")
            shape = (batch, tokens_per_seq, stage)
            by_context = self._steps[shape] = {}
            tokens = batch * tokens_per_seq
            self._shapes[shape] = (shape, self._gemms(tokens, batch if stage == "prefill" else tokens))
        shape, gemms = self._shapes[(batch, tokens_per_seq, stage)]
        time_s = self._step_time(gemms, self._attention(batch, tokens_per_seq, context_tokens, stage))
        step = by_context[context_tokens] = StepCost(None, time_s, CostModel._forward_ops, self,
                                                     shape, context_tokens)
        self._step_entries += 1
        return step

    def prefill_cost(self, prompt_lens: tuple[int, ...]) -> StepCost:
        """One prefill step of sequences with these prompt lengths, without padding
        (variable-length kernels): GEMMs over all prompt tokens, causal fused attention
        within each prompt, logits for each sequence's last token."""
        cached = self._prefills.get(prompt_lens)
        if cached is not None:
            return cached
        if len(set(prompt_lens)) == 1:
            cached = self.step_cost(len(prompt_lens), prompt_lens[0], 0, "prefill")
        else:
            m, dt = self.model, self.dtype_bytes
            tokens = sum(prompt_lens)
            pairs = sum(n * (n + 1) / 2 for n in prompt_lens)
            attention = (2.0 * m.heads * pairs * m.head_dim,
                         tokens * m.kv_dim * dt + tokens * m.hidden * dt, self._flops)
            gemms = self._gemms(tokens, len(prompt_lens))
            cached = StepCost(None, self._step_time(gemms, attention), CostModel._step_ops, self,
                              gemms, attention)
        return self._remember(self._prefills, prompt_lens, cached)

    def medusa_heads_cost(self, batch: int, num_heads: int) -> StepCost:
        """The Medusa heads: per head one residual block (hidden x hidden) and a
        vocabulary projection (hidden x vocab), on one hidden state per sequence (the
        last accepted token's). Weights of all heads are streamed once per step.
        """
        key = (batch, num_heads)
        cached = self._heads.get(key)
        if cached is None:
            m = self.model
            ops = [self.gemm("draft_heads", batch, m.hidden, m.hidden, num_heads),
                   self.gemm("draft_heads", batch, m.hidden, m.vocab, num_heads)]
            cached = self._remember(self._heads, key, _merged("draft_heads", ops))
        return cached

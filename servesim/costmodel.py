"""Roofline cost model of one transformer forward step, operator by operator.

Pure: no SimPy, no I/O. Given a GPU (datasheet peaks + kernel profile) and a model
shape, :meth:`CostModel.step_cost` returns the time of one forward step of a batch and a
per-operator breakdown with FLOPs and HBM bytes.

A step is the sum of its kernels, each costed by :mod:`servesim.cost.kernels` from
the :class:`~servesim.hardware.KernelProfile` (see its docstring for the physics):

* GEMMs (q/k/v, o, gate/up, down, lm_head): a partial-overlap roofline at achieved
  bandwidth and FLOP/s, with tile padding and wave quantization, plus a fixed time
  per kernel;
* attention as its own kernels: paged decode attention (KV at its own bandwidth, a
  floor, a per-sequence cost, the split-KV occupancy loss at few sequences), causal
  prefill attention at its own FLOP/s, and, for token-tree verify steps, either a fused
  tree-masked kernel or (the Medusa paper's era) the score matrix materialised in HBM;
* the elementwise kernels of each layer (two fused add + RMSNorm, rotary embedding,
  SiLU-and-mul) and the final norm, memory-bound, each paying the kernel floor;
* a serving framework's per-step overhead (``step_overhead_s``: scheduling,
  sampling, detokenisation, Python between steps), once per forward step.

Mechanisms a profile leaves at their defaults are off (the Medusa paper's profile
charges neither floors nor elementwise work). Assumptions: FP16/BF16 weights,
activations and KV cache (``dtype_bytes``); with ``quantization = "fp8"`` the decoder
layers' linear layers in FP8 (W8A8, per-tensor scales: one-byte weights, activations
written in FP8 by the kernels that produce them, FP8 tensor cores at the profile's FP8
GEMM fields, :func:`servesim.cost.kernels.fp8_linear`; the lm_head, draft heads, norms
and attention stay at ``dtype_bytes``); with ``kv_cache_dtype = "fp8"`` one byte a K or
V element, decode and prefill attention at the profile's FP8-KV fields
(``fp8_kv_decode``, ``fp8_kv_prefill``: fitted to measured kernels over an FP8 cache).

Tensor parallelism (``tensor_parallel_size`` n, Megatron-style as vLLM runs it): every
GPU holds 1/n of the query heads, of the KV heads (at least one: KV heads are
replicated when there are fewer than n), of the MLP width and of the vocabulary, and
runs its share of every GEMM and of attention; norms run on the full hidden state on
every GPU; two all-reduces per layer (after the output projection and after the MLP's
down projection) of ``tokens x hidden`` activations, costed by
:func:`servesim.cost.kernels.allreduce` from the GPU's interconnect. The step time is
one GPU's (all run in lockstep). The logits' all-gather is not charged (a few KB).
"""

from __future__ import annotations

from typing import NamedTuple

from servesim.cost import kernels
from servesim.cost.kernels import split_line_at
from servesim.hardware import GPU, KernelProfile
from servesim.models import Model

OP_NAMES = ("qkv_proj", "attn_qk", "attn_pv", "o_proj", "mlp_gate", "mlp_up",
            "mlp_down", "elementwise", "allreduce", "lm_head", "framework", "draft_heads", "draft_model",
            "draft_head", "ngram_propose", "kv_swap")
"""Every operator a step can contain, in execution order (columns of steps.parquet)."""

QUANTIZATIONS = ("none", "fp8")
"""What the decoder layers' linear layers run in: ``dtype_bytes`` throughout, or FP8."""
KV_CACHE_DTYPES = ("auto", "fp8")
"""What the KV cache holds (vLLM's ``--kv-cache-dtype``): ``dtype_bytes`` elements, or FP8."""
FP8_ACTIVATION_QUANTIZATIONS = ("fused", "standalone")
"""How an FP8 linear layer's input gets to FP8: written so by the kernel before it, or
quantized by kernels of its own (:meth:`CostModel.gemm`)."""

STAGES = ("prefill", "decode", "verify", "chain_verify")
MIXED = "mixed"
"""The stage of a step that carries prefill chunks and decodes together (``mixed_step_cost``)."""
"""Step kinds: ``verify`` checks a token tree (tree mask, materialised attention);
``chain_verify`` checks a chain of drafted tokens (causal mask, fused attention)."""


class OpCost(NamedTuple):
    """One operator of a step, summed over layers.

    ``flops`` are the FLOPs executed (padding included), ``hbm_bytes`` the bytes moved
    to or from HBM (the all-reduce's: received over the GPU's link); ``memory_time_s``
    and ``compute_time_s`` are those divided by the achieved bandwidth and FLOP/s, and
    ``time_s`` combines them (see module docstring).
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


def fixed_time_cost(name: str, time_s: float) -> StepCost:
    """A stage of a given duration with no FLOPs or bytes (a CPU proposer, a what-if cost)."""
    return StepCost((OpCost(name, 0.0, 0.0, 0.0, 0.0, time_s),), time_s)


def _merged(name: str, ops: list[OpCost]) -> StepCost:
    """Several operators reported as one named operator (a draft stage's total)."""
    op = OpCost(name, sum(o.flops for o in ops), sum(o.hbm_bytes for o in ops),
                sum(o.memory_time_s for o in ops), sum(o.compute_time_s for o in ops),
                sum(o.time_s for o in ops))
    return StepCost((op,), op.time_s)


class SplitLine:
    """The split blocks of a :func:`kernels.decode_attention_line`, with
    :func:`kernels.split_line_at`'s answers remembered by the blocks a pair they give
    (at most the occupancy cap of them, and ``CostModel.MEMO_ENTRIES``): a draft pass
    meets a new context every step, the same block count for hundreds of steps."""

    __slots__ = ("per_length", "appended", "cap", "args", "_memo")

    def __init__(self, blocks: tuple, args: tuple) -> None:
        self.per_length, self.appended, self.cap = blocks
        self.args = args  # decode_attention_line's (gpu, p, batch, queries, heads, kv_heads, head_dim, dtype)
        self._memo: dict = {}

    def at(self, context: int) -> tuple:
        """(split-KV s, memory s per context token, memory s at C = 0, longest block s
        per context token and at C = 0) at ``context``."""
        per_unit = (context + self.appended) // self.per_length
        if per_unit > self.cap:
            per_unit = self.cap
        hit = self._memo.get(per_unit)
        if hit is None:
            if len(self._memo) >= CostModel.MEMO_ENTRIES:  # (no cap: one entry per block count met)
                self._memo.clear()
            hit = self._memo[per_unit] = split_line_at(*self.args, per_unit)
        return hit


class CostModel:
    """Step times for one (GPU, model) pair. Results are memoised per instance.

    step_overhead_s: the serving framework's fixed time per forward step (s), charged
        as the ``framework`` operator of every target step (0 for a draft model's
        passes, which run inside the target's engine step).
    step_overhead_per_seq_s: its time per sequence in a step (s), added to the same
        operator (a decode or verify step's batch, a prefill's prompts, a mixed step's
        decodes and chunks).
    """

    def __init__(self, gpu: GPU, model: Model, profile: KernelProfile | None = None,
                 dtype_bytes: int = 2, step_overhead_s: float = 0.0, tensor_parallel_size: int = 1,
                 step_overhead_per_seq_s: float = 0.0, quantization: str = "none",
                 kv_cache_dtype: str = "auto", fp8_activation_quantization: str = "fused") -> None:
        self.gpu = gpu
        self.model = model
        self.profile = profile or gpu.profile
        self.dtype_bytes = dtype_bytes
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
        if quantization == "fp8" and not gpu.peak_fp8_flops_per_s:
            raise ValueError(f"{gpu.name} has no FP8 tensor cores (no peak_fp8_flops_per_s in the catalog)")
        self.quantization = quantization
        if fp8_activation_quantization not in FP8_ACTIVATION_QUANTIZATIONS:
            raise ValueError(f"fp8_activation_quantization must be one of {', '.join(FP8_ACTIVATION_QUANTIZATIONS)}, "
                             f"got {fp8_activation_quantization!r}")
        self.fp8_activation_quantization = fp8_activation_quantization
        if kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got {kv_cache_dtype!r}")
        self.kv_cache_dtype = kv_cache_dtype
        self.kv_dtype_bytes = kernels.FP8_BYTES if kv_cache_dtype == "fp8" else dtype_bytes
        # the profiles decode and prefill attention run with (their FP8-KV fields over an FP8 cache)
        self._decode_profile = self.profile.fp8_kv_variant() if kv_cache_dtype == "fp8" else self.profile
        self._prefill_profile = self.profile.fp8_kv_prefill_variant() if kv_cache_dtype == "fp8" else self.profile
        # the profile the decoder layers' GEMMs run with (its FP8 GEMM fields for FP8 layers)
        self._layer_profile = self.profile.fp8_variant() if quantization == "fp8" else self.profile
        self.step_overhead_s = step_overhead_s
        self.step_overhead_per_seq_s = step_overhead_per_seq_s
        tp = self.tensor_parallel_size = tensor_parallel_size
        shard = model.shard(tp)  # (raises ValueError for a size that does not split the model)
        if tp > 1 and not gpu.interconnect_bandwidth_bytes_per_s:
            raise ValueError(f"{gpu.name} has no interconnect bandwidth in the catalog; tensor parallelism needs it")
        p = self.profile
        self._bandwidth = gpu.hbm_bandwidth_bytes_per_s * p.bandwidth_efficiency
        self._overlap = p.overlap
        self._layers = model.layers
        self._gemm_shapes = model.gemm_shapes(tp)
        self.heads_per_gpu = shard.heads
        self.kv_heads_per_gpu = shard.kv_heads  # replicated when fewer than tp
        work_overlap = kernels.decode_attention_family(self._decode_profile, self.heads_per_gpu,
                                                       self.kv_heads_per_gpu)[1]
        self._keep_work = 1.0 - work_overlap  # (steps_time_at)
        self._decode_args = (self.heads_per_gpu, self.kv_heads_per_gpu, model.head_dim, self.kv_dtype_bytes)
        self._heads: dict[tuple, StepCost] = {}  # Medusa heads, by (batch, heads)
        self._chains: dict[tuple, StepCost] = {}  # draft-model chains
        self._prefills: dict[tuple, StepCost] = {}  # variable-length prefills, by prompts
        # forward steps: by shape (batch, tokens per sequence, stage), then by context
        # (small dicts with integer keys: a lookup is cheaper than in one big dict)
        self._steps: dict[tuple, dict[int, StepCost]] = {}
        self._step_entries = 0
        self._shapes: dict[tuple, tuple] = {}  # each shape in _steps: (its key, its fixed ops, their time)
        self._gemm_cache: dict[tuple, tuple] = {}  # see _fixed_ops
        self._layer_cache: dict[int, tuple] = {}
        self._head_cache: dict[int, OpCost] = {}

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
    """Bound of the memo of a step's context-independent operators (about 1 KB an
    entry): variable-length prefills meet many token counts."""

    def _remember(self, memo: dict, key: tuple, cost: StepCost) -> StepCost:
        if len(memo) >= self.MEMO_ENTRIES:
            memo.clear()
        memo[key] = cost
        return cost

    # -- building blocks -------------------------------------------------------------

    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes of one token on one GPU (its share of the KV heads)."""
        return 2 * self.model.layers * self.kv_heads_per_gpu * self.model.head_dim * self.kv_dtype_bytes

    def gemm(self, name: str, tokens: int, d_in: int, d_out: int, repeat: int = 1,
             clock_slowdown: float = 1.0, layer: bool = False) -> OpCost:
        """``tokens x d_in`` activations times a ``d_in x d_out`` weight matrix, run
        ``repeat`` times (once per layer for block operators), its compute time
        ``clock_slowdown`` times the full clock's; see :func:`servesim.cost.kernels.gemm`.
        A decoder ``layer``'s linear layer is FP8 under ``quantization = "fp8"``
        (:func:`servesim.cost.kernels.fp8_linear`): with ``fp8_activation_quantization =
        "fused"`` the kernel before it writes its activations in FP8, so no quantization
        kernel of its own is charged; with ``"standalone"`` it quantizes them itself with
        the kernels the framework's measured FP8 layers run (the profile's
        ``fp8_quantize_reads`` and ``fp8_quantize_fixed_s``)."""
        if layer and self.quantization == "fp8":
            flops, hbm, memory_s, compute_s, time_s = kernels.fp8_linear(
                self.gpu, self._layer_profile, tokens, d_out, d_in, self.dtype_bytes, clock_slowdown=clock_slowdown,
                quantize=self.fp8_activation_quantization == "standalone")
        else:
            flops, hbm, memory_s, compute_s, time_s = kernels.gemm(
                self.gpu, self.profile, tokens, d_out, d_in, self.dtype_bytes, clock_slowdown=clock_slowdown)
        return OpCost(name, flops * repeat, hbm * repeat, memory_s * repeat,
                      compute_s * repeat, time_s * repeat)

    def _elementwise(self, tokens: int) -> OpCost | None:
        """The elementwise kernels of all layers over ``tokens`` tokens and the final
        norm (None if the profile does not charge them); on one GPU's share of the
        heads and MLP width (norms and residuals on the whole hidden state)."""
        m, dt, tp = self.model, self.dtype_bytes, self.tensor_parallel_size
        local = kernels.elementwise_bytes_per_token(m.hidden, m.kv_dim, m.intermediate, dt)
        if tp > 1:  # rotary embedding of the local heads, SiLU-and-mul of the local width
            rope_full, act_full = 2 * (m.hidden + m.kv_dim) * dt, 3 * m.intermediate * dt
            rope = 2 * (self.heads_per_gpu + self.kv_heads_per_gpu) * m.head_dim * dt
            local = local - rope_full - act_full + rope + act_full // tp
        per_layer = local * tokens
        final = 2 * m.hidden * dt * tokens
        hbm = per_layer * m.layers + final
        # each token a row: two norms and the residual adds over hidden, the rotary
        # embedding over the local Q and K heads, SiLU-and-mul over the local MLP width
        row_elements = (m.layers * (2 * m.hidden + (self.heads_per_gpu + self.kv_heads_per_gpu) * m.head_dim
                                    + -(-m.intermediate // tp)) + m.hidden)
        memory_s, time_s = kernels.elementwise(
            self.gpu, self.profile, hbm, self.profile.elementwise_kernels_per_layer * m.layers + 1,
            rows=tokens, row_elements=row_elements)
        if not time_s:
            return None
        return OpCost("elementwise", 0.0, hbm, memory_s, 0.0, time_s)

    def _fixed_ops(self, tokens: int, logit_tokens: int,
                   sequences: int) -> tuple[tuple[OpCost, ...], tuple[float, ...]]:
        """The operators of a forward step over ``tokens`` tokens of ``sequences``
        sequences that do not depend on the context (GEMMs, elementwise, lm_head over
        ``logit_tokens``, framework overhead) and their times (memoised; the layers'
        operators by ``tokens`` and the lm_head by ``logit_tokens`` apart, so that mixed
        steps, whose two counts vary independently, reuse both)."""
        key = (tokens, logit_tokens, sequences)
        cached = self._gemm_cache.get(key)
        if cached is None:
            if len(self._gemm_cache) >= self.GEMM_CACHE_ENTRIES:
                self._gemm_cache.clear()
                self._layer_cache.clear()
                self._head_cache.clear()
            layers = self._layer_cache.get(tokens)
            if layers is None:
                layers = self._layer_cache[tokens] = self._layer_ops(tokens)
            head = self._head_cache.get(logit_tokens)
            if head is None:
                m = self.model
                head = self._head_cache[logit_tokens] = self.gemm(
                    "lm_head", logit_tokens, m.hidden, -(-m.vocab // self.tensor_parallel_size))
            ops = layers + (head,)
            overhead_s = self.step_overhead_s + self.step_overhead_per_seq_s * sequences
            if overhead_s:
                ops += (OpCost("framework", 0.0, 0.0, 0.0, 0.0, overhead_s),)
            cached = self._gemm_cache[key] = (ops, tuple(op.time_s for op in ops))
        return cached

    def _layer_gemms(self, tokens: int, clock_slowdown: float = 1.0) -> list[OpCost]:
        """The decoder layers' GEMMs over ``tokens`` (see :meth:`gemm`)."""
        m = self.model
        shapes = self._gemm_shapes  # (n, k) of this GPU's share of each layer GEMM
        ops = [self.gemm(name, tokens, shapes[name][1], shapes[name][0], m.layers, clock_slowdown, True)
               for name in ("qkv_proj", "o_proj")]
        n, k = shapes["gate_up_proj"]
        if self.profile.fused_gate_up:
            merged = self.gemm("mlp_gate", tokens, k, n, m.layers, clock_slowdown, True)
            half = OpCost("mlp_gate", *(x / 2 for x in merged[1:]))
            ops += [half, half._replace(name="mlp_up")]
        else:
            ops += [self.gemm("mlp_gate", tokens, k, n // 2, m.layers, clock_slowdown, True),
                    self.gemm("mlp_up", tokens, k, n // 2, m.layers, clock_slowdown, True)]
        n, k = shapes["down_proj"]
        ops.append(self.gemm("mlp_down", tokens, k, n, m.layers, clock_slowdown, True))
        return ops

    def _layer_ops(self, tokens: int) -> tuple[OpCost, ...]:
        """The decoder layers' GEMMs, elementwise kernels and all-reduces over ``tokens``.

        The GEMMs run back to back through the step: past the profile's
        ``gemm_power_throttle_onset_s`` of their compute time, the GPU lowers its clock
        towards its power-limited one over ``gemm_power_throttle_ramp_s``
        (:func:`servesim.cost.kernels.power_throttle_slowdown`, the
        step's whole GEMM work one window from the step's start); each GEMM is charged
        the step's mean slowdown."""
        m, tp = self.model, self.tensor_parallel_size
        ops = self._layer_gemms(tokens)
        if self._layer_profile.gemm_power_throttle_slowdown > 1.0:
            compute_s = sum(op.compute_time_s for op in ops)
            slowdown = float(kernels.power_throttle_slowdown(self._layer_profile, 0.0, compute_s))
            if slowdown > 1.0:
                ops = self._layer_gemms(tokens, slowdown)
        elementwise = self._elementwise(tokens)
        if elementwise is not None:
            ops.append(elementwise)
        if tp > 1:  # two per layer, of the tokens' hidden states
            message = tokens * m.hidden * self.dtype_bytes
            link_bytes, once = kernels.allreduce(self.gpu, self.profile, message, tp)
            ops.append(OpCost("allreduce", 0.0, 2.0 * m.layers * link_bytes, once * 2 * m.layers,
                              0.0, once * 2 * m.layers))
        return tuple(ops)

    @staticmethod
    def _total(fixed_times: tuple[float, ...], attention_s: float) -> float:
        """A step's time: its operators' times summed in execution order (qkv, the two
        attention halves, the rest), so that it equals the sum of its breakdown exactly."""
        t = fixed_times[0] + attention_s + attention_s
        for x in fixed_times[1:]:
            t += x
        return t

    def _attention(self, batch: int, queries: int, context_tokens: int, stage: str) -> tuple:
        """Attention of one layer: (flops, HBM bytes, memory s, compute s, time s).

        ``queries`` new tokens per sequence attend to their sequence's cached context
        (``context_tokens`` summed over the batch) and, causally, to each other.
        """
        p, gpu = self.profile, self.gpu
        heads, kv_heads, head_dim, dt = self._decode_args
        kv_tokens = context_tokens + batch * queries  # keys after this step's tokens are appended
        if stage == "verify" and not p.fused_tree_attention:
            flops, hbm, rate = kernels.materialised_attention(
                gpu, p, batch, queries, kv_tokens, heads, head_dim, kv_heads * head_dim, heads * head_dim, dt)
            memory_s, compute_s = hbm / self._bandwidth, flops / rate
            return flops, hbm, memory_s, compute_s, kernels.combine(memory_s, compute_s, self._overlap)
        if stage == "prefill" and context_tokens == 0:
            p = self._prefill_profile
            return kernels.prefill_attention(gpu, p, batch, batch * queries, batch * kernels.causal_pairs(p, queries),
                                             heads, kv_heads, head_dim, dt)
        pairs = queries * context_tokens + batch * queries * (queries + 1) / 2
        return kernels.decode_attention(gpu, self._decode_profile, batch, queries, kv_tokens, pairs, heads, kv_heads,
                                        head_dim, dt)

    def _step_ops(self, fixed: tuple[OpCost, ...], attention: tuple) -> tuple[OpCost, ...]:
        """A step's operators in execution order: attention reported half as the score
        (QK^T) and half as the value (PV) operator."""
        layers = self._layers
        flops, hbm, memory_s, compute_s, time_s = attention
        qk = OpCost("attn_qk", flops * layers / 2, hbm * layers / 2, memory_s * layers / 2,
                    compute_s * layers / 2, time_s * self._layers / 2)
        return (fixed[0], qk, qk._replace(name="attn_pv")) + fixed[1:]

    def _forward_ops(self, shape: tuple[int, int, str], context_tokens: int) -> tuple[OpCost, ...]:
        """The operators of the forward step of ``shape`` (batch, tokens per sequence,
        stage) at ``context_tokens`` (see :meth:`step_cost`)."""
        batch, tokens_per_seq, stage = shape
        fixed, _ = self._fixed_ops(batch * tokens_per_seq, batch if stage == "prefill" else batch * tokens_per_seq,
                                   batch)
        return self._step_ops(fixed, self._attention(batch, tokens_per_seq, context_tokens, stage))

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
        stage: one of :data:`STAGES` (``verify`` uses the tree-attention kernel of the
            profile; prefill computes logits for the last token only).
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
            self._shapes[shape] = (shape,) + self._fixed_ops(tokens, batch if stage == "prefill" else tokens, batch)
        shape, _, fixed_times = self._shapes[(batch, tokens_per_seq, stage)]
        time_s = self._total(fixed_times, self._attention(batch, tokens_per_seq, context_tokens, stage)[4]
                             * self._layers / 2)
        step = by_context[context_tokens] = StepCost(None, time_s, CostModel._forward_ops, self,
                                                     shape, context_tokens)
        self._step_entries += 1
        return step

    def step_time_line(self, batch: int, tokens_per_seq: int, stage: str) -> tuple | None:
        """A forward step's time as a function of its cached context C: (time s of the
        operators that do not depend on C, the attention's fixed s, split-KV s and the C
        above which it is paid, work s, memory s per C and at 0, compute s per C and at 0,
        split blocks, longest block s per C and at 0, the layers), so that the time is
        ``rest + layers x (fixed + (split if C > above) + combine(work, combine(max(m1 C +
        m0, l1 C + l0), c1 C + c0)))``, the split, memory and longest-block terms above
        that C from :class:`SplitLine` where split blocks is not None
        (:meth:`steps_time_at`; :func:`kernels.decode_attention_line`); None where the
        step's attention is not paged decode attention (a materialised tree, a prefill)."""
        if stage == "prefill" or (stage == "verify" and not self.profile.fused_tree_attention):
            return None
        if (batch, tokens_per_seq, stage) not in self._shapes:
            self.step_cost(batch, tokens_per_seq, 0, stage)  # (fills the shape's fixed operators)
        _, _, fixed_times = self._shapes[(batch, tokens_per_seq, stage)]
        heads, kv_heads, head_dim, dt = self._decode_args
        args = (self.gpu, self._decode_profile, batch, tokens_per_seq, heads, kv_heads, head_dim, dt)
        line = kernels.decode_attention_line(*args)
        if line[8] is not None:
            line = line[:8] + (SplitLine(line[8], args),) + line[9:]
        return (sum(fixed_times),) + line + (self._layers,)

    def steps_time_at(self, lines: tuple, context_tokens: int) -> float:
        """Summed time of steps run one after another from ``context_tokens``:
        ``lines`` = ((tokens appended before the step, its :meth:`step_time_line`), ...)
        (a speculator's draft passes; :func:`kernels.combine` written out, this is
        their hot path)."""
        keep, keep_work = 1.0 - self._overlap, self._keep_work
        total = 0.0
        for offset, (rest, fixed, split, split_above, work, m1, m0, c1, c0, blocks, l1, l0, layers) in lines:
            context = context_tokens + offset
            if context > split_above:
                fixed += split
                if blocks is not None:  # split-KV blocks sized by the context
                    split, m1, m0, l1, l0 = blocks.at(context)
                    fixed += split
            memory_s = m1 * context + m0
            if l1:  # multi-head attention's longest thread block
                longest_s = l1 * context + l0
                if longest_s > memory_s:
                    memory_s = longest_s
            compute_s = c1 * context + c0
            # combine(): the larger plus the unhidden part of the smaller
            stream_s = memory_s + compute_s * keep if memory_s >= compute_s else compute_s + memory_s * keep
            total += rest + layers * (fixed + (stream_s + work * keep_work if stream_s >= work
                                               else work + stream_s * keep_work))
        return total

    def step_time_s(self, batch: int, tokens_per_seq: int, context_tokens: int, stage: str) -> float:
        """``step_cost(...).time_s`` without remembering the step (for stages whose
        breakdown is rarely wanted, such as a draft head's passes): the same sum of the
        same operator times, from the memo when the step is in it."""
        by_context = self._steps.get((batch, tokens_per_seq, stage))
        if by_context is not None:
            cached = by_context.get(context_tokens)
            if cached is not None:
                return cached.time_s
            _, _, fixed_times = self._shapes[(batch, tokens_per_seq, stage)]
            return self._total(fixed_times, self._attention(batch, tokens_per_seq, context_tokens, stage)[4]
                               * self._layers / 2)
        return self.step_cost(batch, tokens_per_seq, context_tokens, stage).time_s

    def mixed_step_cost(self, batch: int, tokens_per_seq: int, context_tokens: int, stage: str,
                        chunks: tuple[tuple[int, int], ...]) -> StepCost:
        """One forward step over ``batch`` decoding sequences (``tokens_per_seq`` query
        tokens each, ``context_tokens`` cached in all, ``stage`` as in
        :meth:`step_cost`) and prefill ``chunks`` (chunk tokens, tokens of the same
        prompt already cached) together, as a chunked-prefill scheduler runs them:
        GEMMs over all the step's tokens, decode attention for the decodes, causal
        attention of each chunk over itself and its cached prefix, logits for every
        decode token and each chunk's last, one framework overhead. A step without
        chunks is :meth:`step_cost`; one without decodes is a prefill of the chunks."""
        if not chunks:
            return self.step_cost(batch, tokens_per_seq, context_tokens, stage)
        heads, kv_heads, head_dim, dt = self._decode_args
        chunk_tokens = sum(c for c, _ in chunks)
        prefix = sum(p for _, p in chunks)
        pp = self._prefill_profile
        pairs = sum(kernels.causal_pairs(pp, c, p) for c, p in chunks)
        prefill = kernels.prefill_attention(self.gpu, pp, len(chunks), chunk_tokens, pairs,
                                            heads, kv_heads, head_dim, dt, prefix,
                                            query_tiles=kernels.query_tiles(pp, [c for c, _ in chunks]),
                                            longest_keys=max(c + p for c, p in chunks))
        if batch:
            decode = self._attention(batch, tokens_per_seq, context_tokens, stage)
            attention = tuple(a + b for a, b in zip(decode, prefill))
        else:
            attention = prefill
        fixed, fixed_times = self._fixed_ops(batch * tokens_per_seq + chunk_tokens,
                                             batch * tokens_per_seq + len(chunks), batch + len(chunks))
        return StepCost(None, self._total(fixed_times, attention[4] * self._layers / 2),
                        CostModel._step_ops, self, fixed, attention)

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
            heads, kv_heads, head_dim, dt = self._decode_args
            tokens = sum(prompt_lens)
            pp = self._prefill_profile
            pairs = sum(kernels.causal_pairs(pp, n) for n in prompt_lens)
            attention = kernels.prefill_attention(self.gpu, pp, len(prompt_lens), tokens, pairs,
                                                  heads, kv_heads, head_dim, dt,
                                                  query_tiles=kernels.query_tiles(pp, prompt_lens),
                                                  longest_keys=max(prompt_lens))
            fixed, fixed_times = self._fixed_ops(tokens, len(prompt_lens), len(prompt_lens))
            cached = StepCost(None, self._total(fixed_times, attention[4] * self._layers / 2),
                              CostModel._step_ops, self, fixed, attention)
        return self._remember(self._prefills, prompt_lens, cached)

    def kv_swap_cost(self, tokens: int, bytes_per_token: int) -> StepCost:
        """Swap preemption's copy of ``tokens`` tokens of KV cache (``bytes_per_token``
        each on one GPU: the target's, and a draft model's or head's where the
        speculator keeps one) between GPU and pinned CPU memory (see
        :func:`servesim.cost.kernels.host_copy`). Each GPU of a tensor-parallel group
        copies its own share over its own link, in parallel."""
        nbytes = float(tokens) * bytes_per_token
        wire_s, time_s = kernels.host_copy(self.gpu, self.profile, nbytes)
        return StepCost((OpCost("kv_swap", 0.0, nbytes, wire_s, 0.0, time_s),), time_s)

    def medusa_heads_cost(self, batch: int, num_heads: int) -> StepCost:
        """The Medusa heads: per head one residual block (hidden x hidden) and a
        vocabulary projection (hidden x vocab), on one hidden state per sequence (the
        last accepted token's). Weights of all heads are streamed once per step.
        """
        key = (batch, num_heads)
        cached = self._heads.get(key)
        if cached is None:
            m, tp = self.model, self.tensor_parallel_size
            ops = [self.gemm("draft_heads", batch, m.hidden, -(-m.hidden // tp), num_heads),
                   self.gemm("draft_heads", batch, m.hidden, -(-m.vocab // tp), num_heads)]
            cached = self._remember(self._heads, key, _merged("draft_heads", ops))
        return cached

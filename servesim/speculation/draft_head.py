"""A one-layer draft head at the target's width: the drafter of EAGLE, EAGLE-3 and MTP.

Each draft pass runs one decoder layer of the target's shape (its own weights and a
one-layer KV cache over the context) and a vocabulary projection, over the tokens the
pass expands per sequence (1 for a chain, the frontier of a tree), plus the GEMMs that
fuse the target's features into the layer's input:

* EAGLE (Li et al. 2024): an FC of 2 x hidden -> hidden (feature and token embedding
  concatenated) on every pass; the target's lm_head.
* EAGLE-3 (Li et al. 2025): an FC of 3 x hidden -> hidden on the first pass (low, mid
  and high features of the target fused), and the layer's QKV projection takes
  2 x hidden inputs (embedding and hidden state), charged as one extra
  hidden -> QKV GEMM per pass; its own lm_head over a reduced draft vocabulary
  (32,000 tokens in the released heads; ``draft_vocab_size``).
* MTP (DeepSeek-V3): a projection of 2 x hidden -> hidden and one transformer block per
  module, the target's shared lm_head.

Passes run one after another (each needs the last one's tokens); the stage is reported
as one ``draft_head`` operator. No framework overhead (the passes run inside the
target's engine step); every kernel pays the profile's per-kernel floor, which is what
makes small drafts cost what they do.
"""

from __future__ import annotations

from dataclasses import replace

from servesim.costmodel import CostModel, StepCost, _merged
from servesim.models import Model


def head_model(target: Model, vocab: int | None = None, name: str = "draft-head") -> Model:
    """One decoder layer of the target's shape (and ``vocab`` outputs, default the target's)."""
    return replace(target, name=f"{target.name}-{name}", description=f"one-layer {name} of {target.name}",
                   layers=1, vocab=vocab or target.vocab, published_params=0.0)


class DraftHead:
    """The cost of a draft head's passes (pure: only the cost model's arithmetic).

    fc_in: input width multiple of the fusion GEMM (2 for EAGLE and MTP, 3 for EAGLE-3).
    fc_every_pass: whether the fusion GEMM runs on every pass (EAGLE, MTP) or the first
        only (EAGLE-3).
    extra_qkv: whether the layer's QKV projection takes a doubled input (EAGLE-3).
    """

    def __init__(self, cost_model: CostModel, fc_in: int, fc_every_pass: bool, extra_qkv: bool) -> None:
        self.cost_model = cost_model
        self.fc_in, self.fc_every_pass, self.extra_qkv = fc_in, fc_every_pass, extra_qkv
        self._memo: dict[tuple, object] = {}

    def _fusion_ops(self, batch: int, pass_widths: tuple[int, ...]) -> tuple:
        """The fusion GEMMs of the passes (context-independent; memoised)."""
        key = ("fusion", batch, pass_widths)
        cached = self._memo.get(key)
        if cached is None:
            if len(self._memo) >= CostModel.MEMO_ENTRIES:
                self._memo.clear()
            cm, m = self.cost_model, self.cost_model.model
            tp = cm.tensor_parallel_size
            ops = []
            for t, w in enumerate(pass_widths):
                tokens = batch * w
                if self.fc_every_pass or t == 0:
                    ops.append(cm.gemm("draft_head", tokens if self.fc_every_pass else batch,
                                       self.fc_in * m.hidden, -(-m.hidden // tp)))
                if self.extra_qkv:
                    ops.append(cm.gemm("draft_head", tokens, m.hidden, -(-(m.q_dim + 2 * m.kv_dim) // tp)))
            cached = self._memo[key] = (tuple(ops), sum(op.time_s for op in ops))
        return cached

    def _passes(self, batch: int, pass_widths: tuple[int, ...], context_tokens: int) -> list:
        """The layer's forward step of each pass (memoised by the cost model)."""
        steps, drafted = [], 0
        for w in pass_widths:
            steps.append(self.cost_model.step_cost(batch, w, context_tokens + drafted,
                                                   "decode" if w == 1 else "verify"))
            drafted += batch * w
        return steps

    def cost(self, batch: int, pass_widths: tuple[int, ...], context_tokens: int) -> StepCost:
        """The passes for ``batch`` sequences, pass t expanding ``pass_widths[t]`` tokens
        per sequence; each attends to the context and to the tokens drafted before it.
        Its time is summed at once, its operator breakdown worked out when asked for."""
        time_s, lines = self._lines(batch, pass_widths)
        if lines is None:  # a materialised tree's attention: each pass costed in full
            step_time_s, drafted = self.cost_model.step_time_s, 0
            for w in pass_widths:
                time_s += step_time_s(batch, w, context_tokens + drafted, "verify")
                drafted += batch * w
        else:
            time_s += self.cost_model.steps_time_at(lines, context_tokens)
        return StepCost(None, time_s, DraftHead._explain, self, (batch, pass_widths), context_tokens)

    def _lines(self, batch: int, pass_widths: tuple[int, ...]) -> tuple:
        """(fusion GEMMs s, ((tokens drafted before the pass, its time line), ...)): the
        passes' times as functions of the context (``CostModel.step_time_line``), worked
        out once per batch and widths; lines None where a pass has none."""
        key = ("lines", batch, pass_widths)
        cached = self._memo.get(key)
        if cached is None:
            cm, lines, drafted = self.cost_model, [], 0
            for w in pass_widths:
                line = cm.step_time_line(batch, w, "decode" if w == 1 else "verify")
                if line is None:
                    lines = None
                    break
                lines.append((drafted, line))
                drafted += batch * w
            fusion_s = self._fusion_ops(batch, pass_widths)[1]
            if len(self._memo) >= CostModel.MEMO_ENTRIES:
                self._memo.clear()
            cached = self._memo[key] = (fusion_s, None if lines is None else tuple(lines))
        return cached

    def _explain(self, shape: tuple, context_tokens: int) -> tuple:
        batch, pass_widths = shape
        fusion, _ = self._fusion_ops(batch, pass_widths)
        ops = list(fusion) + [op for step in self._passes(batch, pass_widths, context_tokens) for op in step.ops]
        return _merged("draft_head", ops).ops

    def kv_bytes_per_token(self) -> int:
        return self.cost_model.kv_bytes_per_token()


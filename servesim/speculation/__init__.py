"""Speculation methods: how many tokens a verify step yields, and what drafting costs.

A speculator answers three questions for the engine:

* ``tokens_per_step``: query tokens per sequence in a verify step (the candidate tokens
  N, root included; 1 means plain autoregressive decoding);
* ``draw_accepted(rng, n)``: tokens each of ``n`` sequences gets from one verify step
  (always >= 1: the root's token is always correct);
* ``fixed_tokens_per_step``: the tokens every verify step yields when that is certain
  (plain decoding: 1; Medusa with fixed acceptance), else ``None``: the engine then
  needs no draws and knows at admission at which iteration a request finishes;
* ``has_draft_stage``: whether an iteration runs a drafting stage before verifying;
* ``draft_depends_on_context``: whether that stage's cost depends on the context (a
  draft model attends to it; Medusa heads see one hidden state per sequence), so that
  the engine may look it up once per batch size;
* ``draft_cost(cost_model, batch, context_tokens)``: that stage's cost (``None`` if
  there is none).

One module per variant: ``none``, ``medusa``, ``draft_model``; acceptance models in
``acceptance``, Medusa trees in ``trees``.
"""

from servesim.speculation.acceptance import (ChainAcceptance, FixedAcceptance, TruncatedGeometricAcceptance,
                                             acceptance_curve, interpolate_curve, solve_continue_probability,
                                             truncated_geometric_mean)
from servesim.speculation.draft_model import DraftModelSpeculation
from servesim.speculation.medusa import MedusaSpeculation, default_max_accepted
from servesim.speculation.none import NoSpeculation

__all__ = ["ChainAcceptance", "DraftModelSpeculation", "FixedAcceptance", "MedusaSpeculation", "NoSpeculation",
           "TruncatedGeometricAcceptance", "acceptance_curve", "default_max_accepted", "interpolate_curve",
           "solve_continue_probability", "truncated_geometric_mean"]

"""Scheduler policies: what the GPU runs next. One module per policy, all behind the
small interface of :mod:`servesim.serving.schedulers.base`.

static          a batch from prefill to its last finish
prefill_first   continuous batching, each new prompt's prefill a step of its own
vllm            vLLM V1: decodes first, then prefill chunks in the token budget, one step
vllm_paged      the same with paged KV, preemption and prefix caching
sglang          SGLang: a prefill batch whenever one can start, decodes otherwise
"""

from __future__ import annotations

from servesim.serving.schedulers.base import Decode, Mixed, Prefill, Scheduler, Wait
from servesim.serving.schedulers.prefill_first import PrefillFirstScheduler
from servesim.serving.schedulers.sglang import SglangScheduler
from servesim.serving.schedulers.static import StaticScheduler
from servesim.serving.schedulers.vllm import VllmScheduler
from servesim.serving.schedulers.vllm_paged import PagedVllmScheduler

__all__ = ["Decode", "Mixed", "PagedVllmScheduler", "Prefill", "PrefillFirstScheduler", "Scheduler",
           "SglangScheduler", "StaticScheduler", "VllmScheduler", "Wait", "make_scheduler"]


def make_scheduler(config, tokens_per_step: int) -> Scheduler:
    """The policy a :class:`~servesim.serving.config.ServingConfig` names
    (``tokens_per_step``: a decode's tokens per step, the speculator's verify width)."""
    if config.batching == "static":
        return StaticScheduler(config)
    if config.paged:
        return PagedVllmScheduler(config, tokens_per_step)
    if config.scheduler == "vllm":
        return VllmScheduler(config, tokens_per_step)
    if config.scheduler == "sglang":
        return SglangScheduler(config)
    return PrefillFirstScheduler(config)

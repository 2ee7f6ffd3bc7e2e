"""Serving-framework profiles: the time a serving engine adds to every forward step.

Between two forward steps a serving engine schedules the next batch, samples, checks
stop conditions, detokenises and runs Python; what of that is not overlapped with the
GPU's work is time the GPU waits. servesim charges it as one fixed time per forward
step, ``step_overhead_s``, plus a time per sequence in the step,
``step_overhead_per_seq_s`` (its requests' scheduling, input preparation and output
processing, which grow with the batch), as the ``framework`` operator of a step, from
``data/frameworks.toml``, where each value says where it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from servesim.catalog import data_toml


@dataclass(frozen=True)
class FrameworkProfile:
    """A serving framework: its per-step overhead (s), the kernels it runs (the
    ``kernels`` key of a GPU's ``kernel_profile`` table) and where the number comes
    from."""

    name: str
    description: str
    step_overhead_s: float
    kernels: str
    source: str
    unrepresentative_tables: dict = field(default_factory=dict)
    """op class -> why ``servesim calibrate`` leaves its measured rows out."""
    decode_query_tokens: int = 0
    """Sequences with at most this many new tokens run the framework's decode attention
    kernel, not its prefill kernel (0: none); ``servesim calibrate`` leaves measured
    prefill-attention rows of such prompts out of the prefill fit."""
    decode_query_tokens_source: str = ""
    measured_fp8_quantize_reads: int = 1
    """How many times the framework's measured FP8 linear layers (the calibration
    tables' ``fp8_gemm`` rows, timed alone) read their 16-bit activations to quantize
    them: 1 where one kernel scales each token (vLLM's and SGLang's per-token dynamic
    quantization) or a given scale is used, 2 where a per-tensor scale is computed each
    call first (TRT-LLM's collector). ``servesim calibrate`` holds the profile's
    ``fp8_quantize_reads`` at it (a fact of the measurement, not fitted)."""
    measured_fp8_quantize_reads_source: str = ""
    step_overhead_per_seq_s: float = 0.0
    """Time per sequence in a forward step (s), on top of ``step_overhead_s``."""
    step_overhead_per_seq_source: str = ""
    scheduler: str = "vllm"
    """The continuous-batching policy the framework's server runs (a scenario's
    ``serving.scheduler`` when it names none): ``vllm`` (decodes and prefill chunks
    mixed into one step under a token budget; TRT-LLM's in-flight batching with chunked
    context batches alike) or ``sglang`` (a prefill batch whenever one can start)."""
    scheduler_source: str = ""
    max_num_batched_tokens: dict = field(default_factory=lambda: {"default": 8192})
    """The framework's default token budget of a step (its ``max_num_batched_tokens``,
    ``chunked_prefill_size`` or ``max_num_tokens``) by GPU catalog name, ``default`` for
    the GPUs not named: the frameworks pick it from the GPU's memory and name."""
    max_num_batched_tokens_source: str = ""

    def token_budget(self, gpu: str) -> int:
        """The framework's default token budget of a step on ``gpu`` (a catalog name)."""
        return int(self.max_num_batched_tokens.get(gpu, self.max_num_batched_tokens["default"]))


def framework_names() -> list[str]:
    return list(data_toml("frameworks.toml"))


def get_framework(name: str) -> FrameworkProfile:
    """The framework ``name`` (``servesim list``); KeyError if unknown."""
    table = data_toml("frameworks.toml")
    if name not in table:
        raise KeyError(name)
    return FrameworkProfile(name=name, **table[name])

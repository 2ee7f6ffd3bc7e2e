"""Kernel profiles: what real kernels achieve on a GPU, one named mechanism per field."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class KernelProfile:
    """How close kernels come to the GPU's peaks, and the granularity they work in.

    bandwidth_efficiency:
        Achieved fraction of peak HBM bandwidth for streaming reads (weights, KV cache).
    compute_efficiency:
        Achieved fraction of peak dense FP16 tensor-core FLOP/s for GEMMs.
    overlap:
        Fraction of the smaller of an operator's memory time and compute time that is
        hidden under the larger. 1 is the ideal roofline ``max(mem, compute)``; 0 is
        no overlap at all ``mem + compute``. Real kernels near the ridge point sit in
        between, which is what rounds the roofline's corner.
    gemm_token_tile:
        GEMM tile size along the token (M) dimension. Compute time is charged for the
        token count rounded up to a multiple of it: padded rows cost tensor-core cycles.
    weight_pass_tokens:
        Largest number of tokens a GEMM processes in one pass over its weight matrix
        (the kernel's largest M tile times the rows that share a weight tile in L2).
        A step with more tokens than this streams the weights again per extra pass.
    weight_reread_fraction:
        Fraction of each extra weight pass that misses L2 and is read from HBM again.
    masked_attention_query_tile:
        Query-tile size of the attention kernel used when a tree mask forces the score
        matrix to be materialised (verify steps). Query rows are padded to it.
    score_bytes_per_element:
        HBM bytes moved per materialised attention-score element: writing QK^T, adding
        the tree mask, the FP32 softmax's reads and writes, and reading it back for PV.
    masked_attention_compute_efficiency:
        Achieved fraction of peak tensor FLOP/s for that materialised attention (small
        batched GEMMs per head, partly on CUDA cores).
    """

    bandwidth_efficiency: float
    compute_efficiency: float
    overlap: float
    gemm_token_tile: int
    weight_pass_tokens: int
    weight_reread_fraction: float
    masked_attention_query_tile: int
    score_bytes_per_element: float
    masked_attention_compute_efficiency: float

    def __post_init__(self) -> None:
        for name in ("bandwidth_efficiency", "compute_efficiency",
                     "masked_attention_compute_efficiency"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        for name in ("overlap", "weight_reread_fraction"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name in ("gemm_token_tile", "weight_pass_tokens", "masked_attention_query_tile"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if self.score_bytes_per_element < 0:
            raise ValueError("score_bytes_per_element must be >= 0")

    def with_overrides(self, **overrides: float) -> "KernelProfile":
        """A copy with some parameters replaced (scenario `[hardware.profile]`)."""
        return replace(self, **overrides)



PROFILE_FIELDS = tuple(f.name for f in fields(KernelProfile))

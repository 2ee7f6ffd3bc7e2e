"""Fit a GPU's kernel profile to measured kernel tables (``servesim calibrate``).

Each op class has its own parameters and is fitted on its own rows, in this order
(later classes use what earlier ones found; prefill attention is fitted again after the
GEMMs, see :data:`ORDER`):

=====================  ============================================================  ============================
op class               fitted                                                        searched over
=====================  ============================================================  ============================
prefill_attention      prefill_attention_{fixed_s, per_seq_s,                        prefill_attention_tile in
                       per_head_token_s, per_kv_head_token_s, per_kv_head_s,         {0, 64, 128},
                       overlap, compute_efficiency, bandwidth_efficiency,            prefill_attention_query_tile
                       wave_quantization, longest_block}                             in {0, 128},
                                                                                     prefill_attention_kv_passes
                                                                                     in {1, 2, 3}
decode_attention       decode_attention_{fixed_s, group_layout_s, per_seq_s,         decode_attention_split_tokens
                       per_kv_head_s, overlap, bandwidth_efficiency, occupancy_seqs, in {0, 128, 256, 512, 1024},
                       split_fixed_s, wave_quantization, per_split_block_s},         or split-KV blocks sized by
                       l2_bandwidth_ratio; where MHA and GQA rows are both           length and occupancy:
                       measured, decode_attention_mha_{occupancy_seqs,               _split_block_tokens in
                       overlap, bandwidth_efficiency, per_kv_head_s}; with any       {128, 256, 512} x
                       MHA rows, decode_attention_mha_longest_block                  _split_waves in {1, 2, 4, 8};
                                                                                     then, with MHA rows,
                                                                                     _mha_blocks_per_sm in {2, 3,
                                                                                     4} and _mha_longest_block
                                                                                     from 0.3 and 1 from the best
                                                                                     of those
gemm                   bandwidth_efficiency, compute_efficiency, overlap,            gemm_token_tile in {64, 128},
                       kernel_fixed_s, gemm_{single_,}wave_quantization,             gemm_tile_n in {64, 128, 256},
                       gemm_tile_overhead_k,                                         or 128 x 128 with
                       gemm_power_throttle_{onset_s, ramp_s, slowdown} (none         gemm_large_tile_n = 256;
                       kept where no row's measurement ran past the onset; a ramp    gemm_l2_resident_fraction in
                       ends at the longest measured run at the latest)               {0, 0.1, 0.25, 0.5, 1};
                                                                                     then the onset from 10, 30
                                                                                     and 100 ms with no ramp,
                                                                                     and from 5 and 20 ms with
                                                                                     ramps of 30 and 100 ms
elementwise            elementwise_{fixed_s, bandwidth_efficiency, row_element_s,    starting elementwise_element_s
                       row_s, element_s, l2_bandwidth_ratio,                         at 10, 100 and 1,000 ps;
                       next_wave_fraction}                                           elementwise_l2_full_fraction
                                                                                     in {1, 0.75, 0.5}
allreduce              allreduce_{fixed_s, hop_s, bandwidth_efficiency,              allreduce_direct_gpus in
                       shared_bandwidth_efficiency, two_shot_s,                      {0 (any), 2, 4} on PCIe,
                       switch_efficiency, switch_s, nccl_s,                          allreduce_switch_gpus in
                       nccl_bandwidth_efficiency}                                    {0, 4, 8} where the NVSwitch
                                                                                     reduces (both: 0 elsewhere),
                                                                                     starting allreduce_two_shot_s
                                                                                     at 0, 5 and 20 us; then
                                                                                     allreduce_nccl_bytes in
                                                                                     {2, 4, ... 64} MiB from the
                                                                                     best of those
fp8_gemm               the gemm fields above but kernel_fixed_s (the 16-bit
                       GEMM's), their own values (``KernelProfile.fp8_gemm``: FP8
                       GEMM kernels), and fp8_quantize_fixed_s, the time the         as gemm, from its fitted
                       rows' activation quantization takes beyond the                values; fp8_quantize_reads
                       elementwise kernels charged for it                            held at the framework's
                                                                                     (measurement_base)
decode_attention_      decode attention's fields above but l2_bandwidth_ratio,       as decode_attention
fp8_kv                 their own values (``KernelProfile.fp8_kv_decode``: kernels
                       reading FP8 K and V), on grouped-query rows of 128-wide heads
prefill_attention_     prefill attention's fields above, their own values            as prefill_attention
fp8_kv                 (``KernelProfile.fp8_kv_prefill``: kernels writing an FP8
                       cache), on rows of 128-wide heads
=====================  ============================================================  ============================

Attention rows of more than one head size (the bundled table's 64, 128 and 256 on H100,
H200, B200 and L40S) are fitted in two stages: every field above on the rows of the most
common size (128), then, on the others, one field each op class that tells sizes apart
with the main size's predictions held (:func:`fit_head_size`): prefill's softmax a pair
(``attention_softmax_pair_s``) and the head size past which its query tiles shrink
(``prefill_attention_tile_head_dim``, at or above the main size), and decode's fixed
time an element of a head (``decode_attention_fixed_per_dim_s``).

Set, not fitted: ``weight_reread_fraction = 0`` (measured GEMMs show no step when a
GEMM outgrows one weight pass), ``fused_gate_up`` and ``fused_tree_attention`` (what
vLLM, SGLang and TRT-LLM run), four elementwise kernels per layer. An op class with no
rows keeps documented fallbacks (elementwise: the GEMM's streaming bandwidth, a 2 us
floor and no row-parallel pace), and the report says so.

The objective is the log of predicted / measured time with a soft-L1 loss (robust to a
few rows the model does not explain, such as GDDR parts' L2-resident GEMMs), solved by
scipy's least squares (the ``calibrate`` extra). Measurements are read as the
microbenchmark made them (working sets that fit in L2 stay there between calls); the
profile that comes out predicts serving steps, which stream from HBM.

Each op class is fitted on one framework version's rows (the newest, unless one is
asked for): kernels change between releases. An op class that the framework's catalog
entry marks as unrepresentative (SGLang's elementwise proxy) is left out and keeps its
fallback; so are prefill-attention rows of prompts the framework runs as decodes
(vLLM's 1-token prompts, through FlashInfer's decode kernel). Rows faster than the
datasheet's HBM bandwidth allows for their bytes beyond the L2's size are left out
(:func:`faster_than_hbm`). An op class of more than :data:`MAX_FIT_ROWS` rows (the
whole aiconfigurator database) is fitted on that many, evenly spaced in shape order, and
scored on all. The report's notes say what was left out and why.

Out-of-sample error: the same fit on a split that holds out whole shapes (every third
distinct GEMM (n, k), attention batch size and prompt length, starting with the second),
evaluated on the held-out rows. The profile written is the fit on all rows.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from servesim.cost import kernels
from servesim.hardware.kernel_profile import VARIANTS, KernelProfile
from servesim.hardware.kernel_table import INTEGER_COLUMNS, OPS, error_report, hbm_bytes_op, op_columns, predict_op

BASE = KernelProfile(bandwidth_efficiency=0.8, compute_efficiency=0.8, overlap=0.8, gemm_token_tile=128,
                     weight_pass_tokens=2**31 - 1, weight_reread_fraction=0.0, masked_attention_query_tile=64,
                     score_bytes_per_element=12.0, masked_attention_compute_efficiency=0.1, gemm_tile_n=128,
                     kernel_fixed_s=5e-6, fused_gate_up=True, l2_bandwidth_ratio=0.0, gemm_wave_quantization=0.5,
                     gemm_single_wave_quantization=0.5, gemm_power_throttle_onset_s=0.03,
                     decode_attention_fixed_s=10e-6, decode_attention_per_seq_s=0.0, decode_attention_overlap=0.5,
                     decode_attention_bandwidth_efficiency=0.8, decode_attention_occupancy_seqs=0.0,
                     decode_attention_wave_quantization=0.5,
                     prefill_attention_fixed_s=10e-6, prefill_attention_per_seq_s=0.0, prefill_attention_overlap=0.5,
                     prefill_attention_per_token_s=0.0, prefill_attention_compute_efficiency=0.5,
                     prefill_attention_bandwidth_efficiency=0.8, prefill_attention_longest_block=1.0,
                     fused_tree_attention=True, elementwise_bandwidth_efficiency=0.8,
                     elementwise_kernels_per_layer=4, elementwise_fixed_s=2e-6, elementwise_row_element_s=50e-12,
                     elementwise_element_s=10e-12, elementwise_l2_bandwidth_ratio=1.5,
                     elementwise_row_s=20e-9)
"""Where a fit starts, and what an op class without data keeps."""

# per op class: (field, scale, lower, upper); the solver works on value / scale
PARAMETERS = {
    "gemm": (("bandwidth_efficiency", 1.0, 0.05, 1.0), ("compute_efficiency", 1.0, 0.05, 1.0),
             ("overlap", 1.0, 0.0, 1.0), ("kernel_fixed_s", 1e-6, 0.0, 50.0),
             ("gemm_wave_quantization", 1.0, 0.0, 1.0), ("gemm_single_wave_quantization", 1.0, 0.0, 1.0),
             ("gemm_power_throttle_onset_s", 1e-3, 0.0, 1000.0), ("gemm_power_throttle_slowdown", 1.0, 1.0, 1.5),
             ("gemm_tile_overhead_k", 100.0, 0.0, 40.0), ("gemm_power_throttle_ramp_s", 1e-3, 0.0, 1000.0)),
    "prefill_attention": (("prefill_attention_fixed_s", 1e-6, 0.0, 100.0),
                          ("prefill_attention_per_seq_s", 1e-9, 0.0, 1e5),
                          ("prefill_attention_per_head_token_s", 1e-12, 0.0, 1e5),
                          ("prefill_attention_per_kv_head_token_s", 1e-9, 0.0, 1e3),
                          ("prefill_attention_per_kv_head_s", 1e-9, 0.0, 1e4),
                          ("prefill_attention_overlap", 1.0, 0.0, 1.0),
                          ("prefill_attention_compute_efficiency", 1.0, 0.05, 1.0),
                          ("prefill_attention_bandwidth_efficiency", 1.0, 0.05, 1.0),
                          ("prefill_attention_wave_quantization", 1.0, 0.0, 1.0),
                          ("prefill_attention_longest_block", 1.0, 0.0, 4.0),
                          ("kv_write_block_s", 1e-6, 0.0, 20.0),
                          ("prefill_attention_tail_blocks", 1.0, 0.0, 4.0)),
    "decode_attention": (("decode_attention_fixed_s", 1e-6, 0.0, 100.0),
                         ("decode_attention_group_layout_s", 1e-6, 0.0, 100.0),
                         ("decode_attention_per_seq_s", 1e-9, 0.0, 1e4),
                         ("decode_attention_per_kv_head_s", 1e-9, 0.0, 1e3),
                         ("decode_attention_overlap", 1.0, 0.0, 1.0),
                         ("decode_attention_bandwidth_efficiency", 1.0, 0.05, 1.0),
                         ("decode_attention_occupancy_seqs", 1.0, 0.0, 1e3),
                         ("decode_attention_split_fixed_s", 1e-6, 0.0, 100.0),
                         ("decode_attention_wave_quantization", 1.0, 0.0, 1.0),
                         ("decode_attention_per_split_block_s", 1e-9, 0.0, 1e3),
                         ("l2_bandwidth_ratio", 1.0, 1.0, 20.0)),
    "elementwise": (("elementwise_fixed_s", 1e-6, 0.0, 50.0),
                    ("elementwise_bandwidth_efficiency", 1.0, 0.05, 1.0),
                    ("elementwise_row_element_s", 1e-12, 0.0, 1e4),
                    ("elementwise_element_s", 1e-12, 0.0, 1e5),
                    ("elementwise_l2_bandwidth_ratio", 1.0, 1.0, 20.0),
                    ("elementwise_row_s", 1e-9, 0.0, 1e4),
                    ("elementwise_next_wave_fraction", 1.0, 0.0, 1.0)),
    "allreduce": (("allreduce_fixed_s", 1e-6, 0.0, 200.0), ("allreduce_hop_s", 1e-6, 0.0, 100.0),
                  ("allreduce_bandwidth_efficiency", 1.0, 0.01, 1.0),
                  ("allreduce_shared_bandwidth_efficiency", 1.0, 0.01, 1.0),
                  ("allreduce_two_shot_s", 1e-6, 0.0, 200.0),
                  ("allreduce_switch_efficiency", 1.0, 0.3, 1.0), ("allreduce_switch_s", 1e-6, 0.0, 500.0),
                  ("allreduce_nccl_s", 1e-6, 0.0, 500.0), ("allreduce_nccl_bandwidth_efficiency", 1.0, 0.01, 1.0)),
}
PARAMETERS["fp8_gemm"] = tuple(("fp8_quantize_fixed_s", 1e-6, 0.0, 50.0) if name == "kernel_fixed_s"
                               else (name, scale, low, high) for name, scale, low, high in PARAMETERS["gemm"])
"""FP8 GEMMs are GEMMs: their own values of the same fields (``KernelProfile.fp8_gemm``),
fitted last, once the elementwise fields that cost their activations' quantization are;
the kernel's fixed time is the 16-bit GEMM's, and what the rows take beyond it is their
quantization's (``fp8_quantize_fixed_s``)."""
PARAMETERS["decode_attention_fp8_kv"] = tuple(p for p in PARAMETERS["decode_attention"] if p[0] != "l2_bandwidth_ratio")
"""Decode attention over an FP8 KV cache: its own values of decode attention's fields
(``KernelProfile.fp8_kv_decode``), fitted last; the L2's rate is the GPU's, as found."""
PARAMETERS["prefill_attention_fp8_kv"] = PARAMETERS["prefill_attention"]
"""Prefill attention over an FP8 KV cache: its own values of prefill attention's fields
(``KernelProfile.fp8_kv_prefill``), fitted last."""
VARIANT_OPS = {"fp8_gemm": "fp8_gemm", "decode_attention_fp8_kv": "fp8_kv_decode",
               "prefill_attention_fp8_kv": "fp8_kv_prefill"}
"""Op classes whose fit is a variant of the profile -> its table (``KernelProfile.variant``)."""
MHA_PARAMETERS = (("decode_attention_mha_occupancy_seqs", 1.0, 0.0, 1e3),
                  ("decode_attention_mha_overlap", 1.0, 0.0, 1.0),
                  ("decode_attention_mha_bandwidth_efficiency", 1.0, 0.05, 1.0),
                  ("decode_attention_mha_per_kv_head_s", 1e-9, 0.0, 1e3))
"""Fitted with decode attention when its rows have both head layouts (multi-head and
grouped-query attention run different kernels); they start from the shared values."""
LONGEST_BLOCK_PARAMETERS = (("decode_attention_mha_longest_block", 1.0, 0.0, 4.0),)
"""Fitted with decode attention when its rows have multi-head ones."""
LONGEST_BLOCK_GRID = [{"decode_attention_mha_longest_block": f, "decode_attention_mha_occupancy_seqs": 0.0,
                       "decode_attention_occupancy_seqs": 0.0} for f in (0.3, 1.0)]
"""Searched from the best decode-attention grid point when there are multi-head rows:
the bound moves the fit only where it binds, so it starts off (0) and from these; an
occupancy loss over few blocks can stand in for it, so those start from none."""
KV_WRITE_GRID = [{"kv_write_block_s": life, "prefill_attention_per_token_s": 0.0,
                  "prefill_attention_per_kv_head_token_s": 0.0} for life in (2e-6, 5e-6)]
"""Further starts of prefill attention, from the best grid point without a KV-cache
write kernel (its block life is fitted only from these): the life moves the fit only
together with the per-token charges it replaces (which start from none), so from 0 the
fit stays where they already are; and a framework that writes the cache inside its
attention kernel keeps the fit it had without one unless a write kernel fits better."""
TAIL_GRID = [{"prefill_attention_tail_blocks": t} for t in (0.25, 1.0)]
"""Further starts of prefill attention, from the best grid point without a tail (its
share is fitted only from these): the tail trades against the charge for a last wave's
idle SMs, two basins of the fit."""
GRID_STARTED = ("kv_write_block_s", "prefill_attention_tail_blocks")
"""Mechanisms a fit takes up only from :data:`KV_WRITE_GRID` and :data:`TAIL_GRID`
(off, 0, they are not fitted from the other starts)."""
MHA_GRID = [{"decode_attention_mha_blocks_per_sm": b} for b in (2, 3, 4)]
"""Searched from the best decode-attention grid point when MHA_PARAMETERS are fitted."""
NCCL_GRID = [{"allreduce_nccl_bytes": 2**e} for e in range(21, 27)]
"""Searched from the best all-reduce grid point: the message size (2-64 MiB) from which
the framework hands its all-reduce to NCCL (the frameworks' custom kernels stop at a size
each sets)."""
THROTTLE_GRID = ([{"gemm_power_throttle_onset_s": onset} for onset in (0.01, 0.1)]
                 + [{"gemm_power_throttle_onset_s": onset, "gemm_power_throttle_ramp_s": ramp}
                    for onset in (0.005, 0.02) for ramp in (0.03, 0.1)])
"""Further starting points of the power-throttle onset and ramp, searched from the best
GEMM grid point (they move the fit only through the rows near them)."""
GRID = {"gemm": [{"gemm_token_tile": tm, "gemm_tile_n": tn, "gemm_large_tile_n": large,
                  "gemm_l2_resident_fraction": f}
                 for (tm, tn, large), f in itertools.product(
                     [(tm, tn, 0) for tm in (64, 128) for tn in (64, 128, 256)] + [(128, 128, 256)],
                     (0.0, 0.1, 0.25, 0.5, 1.0))],
        "prefill_attention": [{"prefill_attention_tile": t, "prefill_attention_query_tile": q,
                               "prefill_attention_kv_passes": passes}
                              for t in (0, 64, 128) for q in (0, 128) for passes in (1, 2, 3)],
        "decode_attention": ([{"decode_attention_split_tokens": t, "decode_attention_split_block_tokens": 0}
                              for t in (0, 128, 256, 512, 1024)]
                             + [{"decode_attention_split_tokens": 0, "decode_attention_split_block_tokens": c,
                                 "decode_attention_split_waves": w} for c in (128, 256, 512) for w in (1, 2, 4, 8)]),
        # starting points, not fixed values: a kernel bound by its memory stream and one
        # bound by its arithmetic are two basins of the fit
        "elementwise": [{"elementwise_element_s": s, "elementwise_l2_full_fraction": f}
                        for s in (1e-11, 1e-10, 1e-9) for f in (1.0, 0.75, 0.5)],
        "allreduce": [{"allreduce_direct_gpus": d, "allreduce_two_shot_s": s, "allreduce_switch_gpus": w}
                      for d in (0, 2, 4) for s in (0.0, 5e-6, 20e-6) for w in (0, 4, 8)]}
GRID["fp8_gemm"] = GRID["gemm"]
GRID["decode_attention_fp8_kv"] = GRID["decode_attention"]
GRID["prefill_attention_fp8_kv"] = GRID["prefill_attention"]
ORDER = ("prefill_attention", "decode_attention", "gemm", "prefill_attention", "elementwise", "allreduce",
         "fp8_gemm", "decode_attention_fp8_kv", "prefill_attention_fp8_kv")
"""Fit order: decode attention finds the L2 bandwidth (its KV working sets range from
kilobytes to gigabytes, so L2-resident rows are many), which GEMMs and elementwise
kernels then use; prefill attention's FLOP/s is the compute side of decode attention,
and prefill attention is fitted again once the GEMMs have found the streaming bandwidth
its memory side uses; FP8 GEMMs come last, their activations' quantization costed by the
elementwise fields, and attention over an FP8 KV cache after them."""
GEMMS = ("gemm", "fp8_gemm")
HOLDOUT_KEYS = {"gemm": ("n", "k"), "decode_attention": ("batch_size",), "prefill_attention": ("seq_len",),
                "elementwise": ("k",), "allreduce": ("m",), "fp8_gemm": ("n", "k"),
                "decode_attention_fp8_kv": ("batch_size",), "prefill_attention_fp8_kv": ("seq_len",)}


class CalibrationError(ValueError):
    """Calibration cannot run (no rows for the GPU and framework, scipy missing)."""


def _least_squares():
    try:
        from scipy.optimize import least_squares
    except ImportError:
        raise CalibrationError("calibration needs scipy: pip install 'servesim[calibrate]'") from None
    return least_squares


def fit_op(op: str, rows: pd.DataFrame, gpu, profile: KernelProfile) -> KernelProfile:
    """``profile`` with the parameters of ``op`` fitted to ``rows`` (see module docstring)."""
    least_squares = _least_squares()
    mha_rows = (rows["num_kv_heads"] == rows["num_heads"]).to_numpy() if op == "decode_attention" else np.zeros(0, bool)
    any_mha = bool(mha_rows.any())  # multi-head rows: the longest block is fitted
    mha = any_mha and not mha_rows.all()  # both layouts: multi-head attention's own fields too
    measured = rows["latency_s"].to_numpy(float)
    columns = op_columns(op, rows)

    def fit_from(start: KernelProfile) -> tuple[KernelProfile, float]:
        if mha:  # (else they stay unset: -1, the shared values)
            start = replace(start, **{name: getattr(start, name.replace("_mha", ""))
                                      for name, *_ in MHA_PARAMETERS if getattr(start, name) < 0})
        if op in GEMMS and start.gemm_power_throttle_slowdown <= 1.0:  # (at 1 the onset has no gradient)
            start = replace(start, gemm_power_throttle_slowdown=THROTTLE_START)
        if start.allreduce_nccl_bytes and not start.allreduce_nccl_bandwidth_efficiency:
            start = replace(start, allreduce_nccl_bandwidth_efficiency=start.allreduce_bandwidth_efficiency)
        params = tuple(p for p in PARAMETERS[op] + (MHA_PARAMETERS if mha else ())
                       + (LONGEST_BLOCK_PARAMETERS if any_mha else ()) if not _inert(p[0], start))

        def values(x):
            return {name: float(v * scale) for (name, scale, _, _), v in zip(params, x)}

        def make(x):
            return replace(start, **values(x))

        def residuals(x):
            return np.log(predict_op(op, columns, gpu, _unchecked(start, values(x))) / measured)

        x0 = [min(max(getattr(start, name) / scale, lo), hi) for name, scale, lo, hi in params]
        x0 = [min(max(v, lo + 1e-9 * (hi - lo)), hi - 1e-9 * (hi - lo)) for v, (_, _, lo, hi) in zip(x0, params)]
        result = least_squares(residuals, x0, bounds=([p[2] for p in params], [p[3] for p in params]),
                               loss="soft_l1", f_scale=0.05, max_nfev=400)
        return make(result.x), result.cost

    best, best_cost = profile, math.inf
    for fixed in GRID.get(op, [{}]):
        if _possible(fixed, gpu):
            fitted, cost = fit_from(replace(profile, **fixed))
            if cost < best_cost:
                best, best_cost = fitted, cost
    # then, from the best grid point, what only multi-head rows tell apart, and where
    # the all-reduce goes to NCCL
    for fixed in ((MHA_GRID if mha else []) + (LONGEST_BLOCK_GRID if any_mha else [])
                  + (NCCL_GRID if op == "allreduce" else [])
                  + (KV_WRITE_GRID + TAIL_GRID if op in ("prefill_attention", "prefill_attention_fp8_kv") else [])
                  + (THROTTLE_GRID if op in GEMMS else [])):
        fitted, cost = fit_from(replace(best, **fixed))
        if cost < best_cost:
            best, best_cost = fitted, cost
    if op in GEMMS:
        best = _throttle_as_measured(rows, gpu, best, op)
    return best


def _unchecked(start: KernelProfile, values: dict) -> KernelProfile:
    """``start`` with ``values`` set, without the range checks of a new profile: a fit
    evaluates thousands of trial profiles whose values its bounds keep in range, and
    checking each took a third of its time. The fitted profile itself is made (and
    checked) with :func:`dataclasses.replace`."""
    trial = object.__new__(KernelProfile)
    trial.__dict__.update(start.__dict__)
    trial.__dict__.update(values)
    return trial


def main_head_size(rows: pd.DataFrame) -> int | None:
    """The head size of most of an attention op's rows (None if they have only one)."""
    sizes = rows["head_dim"].value_counts()
    return int(sizes.index[0]) if len(sizes) > 1 else None


def fit_head_size(op: str, rows: pd.DataFrame, gpu, profile: KernelProfile, main: int) -> KernelProfile:
    """``profile`` (fitted on the rows of head size ``main``) with what tells head sizes
    apart fitted on the rows of the others, every prediction at ``main`` held fixed:
    prefill attention's softmax a pair (``attention_softmax_pair_s``, the matrix rate
    rising so that a pair at ``main`` costs what it did) and, where larger heads were
    measured, the head size past which its query tiles shrink
    (``prefill_attention_tile_head_dim``, between ``main`` and the largest size measured;
    0 if the largest shrinks by under :data:`MIN_SHRINK`); decode attention's fixed
    time an element of a head (``decode_attention_fixed_per_dim_s``,
    ``decode_attention_fixed_s`` falling by ``main`` of them). Bounded so the compensated
    field stays in range (a matrix rate of at most peak, a fixed time of at least 0).

    Why not fit everything on every head size: the kernels' other tile shapes at other
    head sizes are modelled only through the tile shrink's per-row charge (not in their
    waves or longest blocks), and other sizes may run other kernels; fitted on all sizes
    at once, those effects spread onto the main size (bundled tables: prefill medians
    within 5% on 5 of 15 profiles instead of 12)."""
    least_squares = _least_squares()
    other = rows[rows["head_dim"] != main]
    measured = other["latency_s"].to_numpy(float)
    columns = op_columns(op, other)
    largest = float(other["head_dim"].max()) if op == "prefill_attention" else 0.0
    shrinks = largest > main  # prefill attention of larger heads: its tiles may shrink
    if op == "prefill_attention":
        main_pair_s = kernels.pair_seconds(gpu, profile, main)  # a pair at the main size, held
        peak = gpu.peak_fp16_flops_per_s

        def make(x):
            softmax_s = float(x[0]) * 1e-12
            rate = 4.0 * main / (main_pair_s - softmax_s / gpu.num_sms)
            values = {"attention_softmax_pair_s": softmax_s, "prefill_attention_compute_efficiency": rate / peak}
            if shrinks:  # at or above the main size, so its predictions hold
                values["prefill_attention_tile_head_dim"] = float(x[1])
            return _unchecked(profile, values)

        upper = (main_pair_s - 4.0 * main / peak) * gpu.num_sms * 1e12  # the matrix products at peak
        start = min(20.0, 0.5 * upper)
    else:
        main_fixed_s = profile.decode_attention_fixed_s + main * profile.decode_attention_fixed_per_dim_s

        def make(x):
            per_dim_s = float(x[0]) * 1e-9
            return _unchecked(profile, {"decode_attention_fixed_per_dim_s": per_dim_s,
                                        "decode_attention_fixed_s": main_fixed_s - main * per_dim_s})

        upper = main_fixed_s / main * 1e9  # the fixed time at the main size all per element
        start = min(8.0, 0.5 * upper)
    if upper <= 0:
        return profile

    def residuals(x):
        return np.log(predict_op(op, columns, gpu, make(x)) / measured)

    # with a tile limit, from two of them: the factor is flat in the limit above the largest size
    starts = [[start, main + f * (largest - main)] for f in (0.25, 0.75)] if shrinks else [[start]]
    bounds = ([0.0, main], [upper, largest]) if shrinks else ([0.0], [upper])
    result = min((least_squares(residuals, x0, bounds=bounds, loss="soft_l1", f_scale=0.05, max_nfev=200)
                  for x0 in starts), key=lambda r: r.cost)
    if shrinks and largest / result.x[1] < MIN_SHRINK:  # no measured head size's tiles shrink: off
        result.x[1] = 0.0
    return replace(profile, **{k: v for k, v in make(result.x).__dict__.items()
                               if getattr(profile, k) != v})


MIN_SHRINK = 1.001
"""A fitted tile shrink of under 0.1% at the largest measured head size is none."""
THROTTLE_START = 1.05
"""Where the fit of ``gemm_power_throttle_slowdown`` starts."""
MIN_THROTTLE = 1.001
"""A fitted slowdown below this (0.1%) is none: the profile keeps no throttle."""


def _longest_run_s(rows: pd.DataFrame, gpu, profile: KernelProfile, op: str = "gemm") -> float:
    """Seconds of sustained GEMM work (at full clock) that the longest of ``rows``'
    measurements ran: its call's time times its warm-up and timed calls."""
    unthrottled = replace(profile, gemm_power_throttle_slowdown=1.0)
    call_s = predict_op(op, rows, gpu, unthrottled)
    calls = rows["warmup_calls"].fillna(0).to_numpy(float) + rows["timed_calls"].fillna(1).to_numpy(float)
    return float((call_s * calls).max())


def _throttle_as_measured(rows: pd.DataFrame, gpu, profile: KernelProfile, op: str = "gemm") -> KernelProfile:
    """``profile`` with its fitted power throttle kept only as far as ``rows`` measured it:
    none if no row's measurement ran past the onset (the slowdown is not identified) or
    the slowdown is under :data:`MIN_THROTTLE`; a ramp the fit placed past the longest
    measured run ends there instead, at the depth it had reached: every row's prediction
    stays the same, and a serving step longer than any measurement keeps the deepest
    slowdown measured rather than one extrapolated (A100 TRT-LLM's runs reach 0.1 s; one
    fit had put its ramp's end at 0.12 s)."""
    onset, ramp = profile.gemm_power_throttle_onset_s, profile.gemm_power_throttle_ramp_s
    longest = _longest_run_s(rows, gpu, profile, op)
    if profile.gemm_power_throttle_slowdown < MIN_THROTTLE or longest <= onset:
        return replace(profile, gemm_power_throttle_slowdown=1.0, gemm_power_throttle_onset_s=0.0,
                       gemm_power_throttle_ramp_s=0.0)
    if longest >= onset + ramp:
        return profile
    depth = (longest - onset) / ramp
    return replace(profile, gemm_power_throttle_ramp_s=longest - onset,
                   gemm_power_throttle_slowdown=1.0 + (profile.gemm_power_throttle_slowdown - 1.0) * depth)


def _possible(fixed: dict, gpu) -> bool:
    """Whether a grid point's links exist on the GPU's servers: a shared bus beyond the
    direct GPUs only between PCIe cards (NVLink GPUs all reach one another through the
    NVSwitch), a reduction in the switch only where the NVSwitch has one."""
    if fixed.get("allreduce_direct_gpus", 0) and gpu.interconnect != "pcie":
        return False
    return not fixed.get("allreduce_switch_gpus", 0) or gpu.nvlink_switch_reduction


def _inert(name: str, profile: KernelProfile) -> bool:
    """Whether a parameter does nothing under the grid point's fixed values (so it keeps
    its start instead of drifting where no row constrains it), or is a mechanism the
    start does not have (:data:`GRID_STARTED`)."""
    return ((name == "allreduce_shared_bandwidth_efficiency" and profile.allreduce_direct_gpus == 0)
            or (name in GRID_STARTED and getattr(profile, name) == 0)
            or (name in ("allreduce_switch_efficiency", "allreduce_switch_s") and profile.allreduce_switch_gpus == 0)
            or (name in ("allreduce_nccl_s", "allreduce_nccl_bandwidth_efficiency")
                and profile.allreduce_nccl_bytes == 0))


HEAD_SIZE_FIELDS = {"prefill_attention": "attention_softmax_pair_s and prefill_attention_tile_head_dim",
                    "decode_attention": "decode_attention_fixed_per_dim_s"}
"""What tells head sizes apart, by op class (fitted by :func:`fit_head_size`)."""

MAX_FIT_ROWS = 4000
"""Most rows of one op class a fit runs on. The whole aiconfigurator database has up to
36,000 GEMM and 20,000 decode-attention rows a GPU and framework, on which one fit of
decode attention takes over a minute a grid point (the bundled tables have at most
2,957); beyond this many, the fit takes rows evenly spaced in shape order
(:func:`thin`), and the report still scores every row."""


def thin(rows: pd.DataFrame, limit: int) -> pd.DataFrame:
    """At most ``limit`` of ``rows``, evenly spaced after sorting by shape (so every
    shape region keeps its share); all of them if there are no more."""
    if len(rows) <= limit:
        return rows
    ordered = rows.sort_values([c for c in INTEGER_COLUMNS if c in rows], kind="stable")
    keep = np.linspace(0, len(ordered) - 1, limit).round().astype(int)
    return ordered.iloc[keep].reset_index(drop=True)


def fit_profile(table: pd.DataFrame, gpu, base: KernelProfile = BASE) -> tuple[KernelProfile, list[str]]:
    """Fit every op class that ``table`` (one GPU and framework) has rows for; returns
    the profile and notes on classes that kept their fallbacks or were fitted on a
    subset (:func:`thin`)."""
    profile, notes, fitted_or_noted, thinned = base, [], set(), set()
    for op in ORDER:
        rows = table[table["op"] == op]
        if len(rows) > MAX_FIT_ROWS and op not in thinned:
            thinned.add(op)
            notes.append(f"{op}: fitted on {MAX_FIT_ROWS:,} of its {len(rows):,} rows, evenly spaced in shape "
                         "order; the report scores all of them")
        rows = thin(rows, MAX_FIT_ROWS)
        if op in VARIANT_OPS and len(rows) >= 2 * len(PARAMETERS[op]):
            # fitted from the 16-bit kernels' values, kept as the profile's own variant ones
            kind = VARIANT_OPS[op]
            variant = fit_op(op, rows, gpu, profile.variant(kind))
            profile = replace(profile, **{kind: tuple((name, getattr(variant, name)) for name in VARIANTS[kind])})
            continue
        if op == "fp8_gemm":
            profile = replace(profile, fp8_gemm=())  # (not fitted: none of the measurement's facts either)
            if gpu.peak_fp8_flops_per_s:
                notes.append(f"fp8_gemm: {len(rows)} measured rows, too few to fit; FP8 GEMMs keep the 16-bit "
                             "GEMMs' fields at the FP8 peak (an estimate)")
            continue
        if op in ("decode_attention_fp8_kv", "prefill_attention_fp8_kv"):  # (a user's choice: no note)
            continue
        if len(rows) < 2 * len(PARAMETERS[op]):
            if op == "elementwise":
                profile = replace(profile, elementwise_bandwidth_efficiency=profile.bandwidth_efficiency,
                                  elementwise_row_element_s=0.0, elementwise_element_s=0.0,
                                  elementwise_l2_bandwidth_ratio=0.0, elementwise_row_s=0.0)
                notes.append(f"elementwise: {len(rows)} measured rows, too few to fit; the GEMMs' streaming "
                             "bandwidth and a 2 us floor assumed, the row-parallel pace not charged")
            elif op not in fitted_or_noted:  # prefill attention comes twice in ORDER
                notes.append(f"{op}: {len(rows)} measured rows, too few to fit {len(PARAMETERS[op])} parameters; "
                             "starting values kept")
            fitted_or_noted.add(op)
            continue
        main = main_head_size(rows) if op in HEAD_SIZE_FIELDS else None
        if main is None:
            profile = fit_op(op, rows, gpu, profile)
            continue
        profile = fit_op(op, rows[rows["head_dim"] == main], gpu, profile)
        profile = fit_head_size(op, rows, gpu, profile, main)
        if op not in fitted_or_noted:
            notes.append(f"{op}: fitted on its {main}-wide heads' rows; the other head sizes' rows fit "
                         f"{HEAD_SIZE_FIELDS[op]} only, the {main}-wide predictions held (fit_head_size)")
        fitted_or_noted.add(op)
    return profile, notes


def holdout_mask(table: pd.DataFrame) -> np.ndarray:
    """Rows held out of the out-of-sample fit: whole shapes (every third distinct value
    of the op's shape key, starting with the second)."""
    mask = np.zeros(len(table), dtype=bool)
    for op, keys in HOLDOUT_KEYS.items():
        rows = (table["op"] == op).to_numpy()
        if not rows.any():
            continue
        key = table.loc[rows, list(keys)].astype(float).apply(tuple, axis=1)
        held = set(sorted(key.unique())[1::3])
        mask[np.flatnonzero(rows)] = key.isin(held).to_numpy()
    return mask


def report(table: pd.DataFrame, gpu, profile: KernelProfile) -> dict[str, dict]:
    """Per op class: error statistics of ``profile`` on ``table``'s rows."""
    out = {}
    for op in OPS:
        rows = table[table["op"] == op]
        if len(rows):
            out[op] = error_report(rows["latency_s"].to_numpy(float), predict_op(op, rows, gpu, profile))
    return out


def tensor_parallel_sizes(rows: pd.DataFrame) -> pd.Series:
    """The tensor-parallel size each row was timed for, where its ``source`` names one
    (``servesim profile`` ends it with ``TP n``); 0 where it does not."""
    if "source" not in rows:
        return pd.Series(0, index=rows.index)
    tp = rows["source"].astype(str).str.extract(r"\bTP (\d+)$", expand=False)
    return pd.to_numeric(tp, errors="coerce").fillna(0).astype(int)


def report_by_tensor_parallel_size(rows: pd.DataFrame, gpu, profile: KernelProfile) -> dict[str, dict]:
    """:func:`report` of the rows of each tensor-parallel size their sources name (keys
    ``tp1``, ``tp2``, ...), so that a profile fitted on a model's shards says how well it
    predicts what one GPU runs at each size; empty for a table without such names."""
    sizes = tensor_parallel_sizes(rows)
    return {f"tp{tp}": report(rows[sizes == tp], gpu, profile) for tp in sorted(set(sizes) - {0})}


def qkv_shape(table: pd.DataFrame) -> tuple[int, int] | None:
    """The (n, k) of the qkv GEMM whose t(M)/t(1) the report checks: Llama-2-7B's
    (12288, 4096) where the table has it (the bundled tables do), else the table's own
    model's whole (TP 1) qkv (``servesim profile`` times one model and names each GEMM
    row's layer GEMM in ``source``; a table without those names: the narrowest GEMM
    wider than the hidden size, which is the most common k); None without GEMM rows at
    m = 1."""
    gemm = table[(table["op"] == "gemm") & (table["m"] == 1)]
    if gemm.empty:
        return None
    shapes = set(zip(gemm["n"].astype(int), gemm["k"].astype(int)))
    if (12288, 4096) in shapes:
        return 12288, 4096
    named = gemm[gemm["source"].astype(str).str.endswith(": qkv_proj, TP 1")] if "source" in gemm else gemm[:0]
    if len(named):  # servesim profile names each GEMM row's layer GEMM and TP size
        return int(named["n"].iloc[0]), int(named["k"].iloc[0])
    hidden = int(gemm["k"].astype(int).mode().min())
    wider = sorted(n for n, k in shapes if k == hidden and n > hidden)
    return (wider[0], hidden) if wider else None


def qkv_scaling(table: pd.DataFrame, gpu, profile: KernelProfile, n: int | None = None, k: int | None = None,
                ms=(16, 64, 128, 256, 512, 4096)) -> list[dict]:
    """t(M)/t(1) of the qkv GEMM (n x k; default :func:`qkv_shape`), measured and
    predicted, at those of ``ms`` the table has.

    The measured t(1) is the median of the rows at m = 1..8: the same weight stream
    (the activations add under 0.1% of the bytes), so their spread is the table's
    noise, and one of them alone can be an outlier (B200 SGLang's m = 1 is 35% slower
    than m = 2..8, L40S TRT-LLM's 85%). ``measured_raw`` is the ratio to the m = 1 row
    alone.

    ``predicted`` (and ``error_pct``) reads the GEMM as the table measured it, a
    replayed kernel finding part of its weights in L2 (``gemm_l2_resident_fraction``),
    as every fit error does: those L2 hits shorten the memory-bound t(1) more than the
    compute-bound t(M), so a ratio predicted without them would fault the shape model
    for the microbenchmark's replay (and runs the rows as long as it ran them, so that
    the power throttle is read as it was measured). ``predicted_serving``
    (``error_serving_pct``) is the ratio a serving step sees, weights from HBM."""
    if n is None or k is None:
        shape = qkv_shape(table)
        if shape is None:
            return []
        n, k = shape
    rows = table[(table["op"] == "gemm") & (table["n"] == n) & (table["k"] == k)]
    # (the predicted rows run as long as the measured ones did: the power throttle)
    calls = {c: rows[c].dropna().median() if c in rows and rows[c].notna().any() else default
             for c, default in (("warmup_calls", 0), ("timed_calls", 1))}
    rows = rows.groupby("m", as_index=False)["latency_s"].median()
    if 1 not in set(rows["m"]):
        return []
    t1_raw = float(rows.loc[rows["m"] == 1, "latency_s"].iloc[0])
    t1 = float(rows.loc[rows["m"] <= 8, "latency_s"].median())
    frame = pd.DataFrame({"op": "gemm", "m": [1, *ms], "n": n, "k": k, **calls})
    pred = predict_op("gemm", frame, gpu, profile, l2_resident=True)
    serving = predict_op("gemm", frame, gpu, profile, l2_resident=False)
    out = []
    for i, m in enumerate(ms, start=1):
        measured = rows.loc[rows["m"] == m, "latency_s"]
        if measured.empty:
            continue
        ratio_measured = float(measured.iloc[0]) / t1
        ratio_predicted = float(pred[i] / pred[0])
        ratio_serving = float(serving[i] / serving[0])
        out.append({"n": n, "k": k, "m": m, "measured": ratio_measured,
                    "measured_raw": float(measured.iloc[0]) / t1_raw,
                    "predicted": ratio_predicted, "error_pct": (ratio_predicted / ratio_measured - 1) * 100,
                    "predicted_serving": ratio_serving,
                    "error_serving_pct": (ratio_serving / ratio_measured - 1) * 100})
    return out


def version_key(version: str) -> tuple:
    """Sort key of a version string: its numbers in order (``0.5.14`` after
    ``0.5.6.post2``, ``1.3.0rc20`` after ``1.0.0``); an empty version sorts first."""
    return tuple(int(part) for part in re.findall(r"\d+", version))


def select_version(rows: pd.DataFrame, version: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The rows of one framework version per op class: ``version``, or else each op
    class's newest (kernels change between releases: B200's vLLM 0.24.0 prefill
    attention is a median 1.33x slower than 0.22.0's, so two releases' rows together
    are two kernels). Returns the rows and notes on the versions left out."""
    if version is not None:
        kept = rows[rows["version"] == version]
        if kept.empty:
            raise CalibrationError(f"no measured rows of version {version!r}; "
                                   f"the rows have versions: {', '.join(sorted(set(rows['version']), key=version_key))}")
        return kept.reset_index(drop=True), []
    keep = np.zeros(len(rows), dtype=bool)
    notes = []
    for op in OPS:
        of_op = (rows["op"] == op).to_numpy()
        versions = sorted(set(rows.loc[of_op, "version"]), key=version_key)
        if not versions:
            continue
        newest = of_op & (rows["version"] == versions[-1]).to_numpy()
        keep |= newest
        if len(versions) > 1:
            notes.append(f"{op}: fitted on version {versions[-1]} (the newest); left out "
                         f"{int(of_op.sum() - newest.sum())} rows of {', '.join(versions[:-1])}")
    return rows[keep].reset_index(drop=True), notes


def drop_unrepresentative(rows: pd.DataFrame, framework: str) -> tuple[pd.DataFrame, list[str]]:
    """``rows`` without the op classes that the framework's catalog entry marks as not
    representative of what it runs in serving (``unrepresentative_tables`` in
    ``data/frameworks.toml``, each with its reason) and without the prefill-attention
    rows of prompts it runs as decodes (``decode_query_tokens``: vLLM's 1-token
    prompts), and a note per class left out. Frameworks not in the catalog (a user's
    own ``torch`` table) keep every row."""
    from servesim.hardware.framework import framework_names, get_framework

    if framework not in framework_names():
        return rows, []
    notes = []
    entry = get_framework(framework)
    for op, reason in entry.unrepresentative_tables.items():
        of_op = rows["op"] == op
        if of_op.any():
            notes.append(f"{op}: {int(of_op.sum())} measured rows left out, not representative: {reason}")
            rows = rows[~of_op]
    for op in ("prefill_attention", "prefill_attention_fp8_kv"):
        if not entry.decode_query_tokens or "seq_len" not in rows:
            break
        decodes = (rows["op"] == op) & (rows["seq_len"] <= entry.decode_query_tokens)
        if decodes.any():
            notes.append(f"{op}: left out {int(decodes.sum())} rows of prompts of at most "
                         f"{entry.decode_query_tokens} token(s), which {framework} runs through its decode kernel")
            rows = rows[~decodes]
    return rows.reset_index(drop=True), notes


def faster_than_hbm(rows: pd.DataFrame, gpu) -> tuple[np.ndarray, list[str]]:
    """Rows that no cost model can explain: even with a whole L2's worth of their bytes
    already resident (a microbenchmark replay), the rest cannot have come from HBM in
    the time measured at the datasheet's peak bandwidth. The data's own notes flag
    such rows: A100 TRT-LLM decode attention reads up to 1.65x the peak (a kernel that
    reads fewer bytes than the table's bf16 label says); L40S TRT-LLM's GEMMs, up to 3x
    the peak for weights of about its L2's size, stay (partly resident, they need no
    more than the L2 can give). Returns the mask and a note per op class."""
    mask = np.zeros(len(rows), dtype=bool)
    notes = []
    for op in OPS:
        of_op = (rows["op"] == op).to_numpy()
        if op == "allreduce" or not of_op.any():
            continue
        hbm = hbm_bytes_op(op, rows[of_op], gpu, BASE)
        fast = rows.loc[of_op, "latency_s"].to_numpy(float) < (hbm - gpu.l2_cache_bytes) / gpu.hbm_bandwidth_bytes_per_s
        if fast.any():
            mask[np.flatnonzero(of_op)[fast]] = True
            notes.append(f"{op}: left out {int(fast.sum())} of {int(of_op.sum())} rows faster than the peak HBM "
                         "bandwidth allows for their bytes beyond the L2's size")
    return mask, notes


def left_out_as_unrepresentative(fit: dict, op: str) -> bool:
    """Whether a profile's fit report (``[fit]``) says ``op``'s rows were left out as
    not representative (:func:`drop_unrepresentative`)."""
    return any(note.startswith(f"{op}: ") and "not representative" in note for note in fit.get("notes", []))


def calibration_rows(table: pd.DataFrame, gpu, framework: str, table_gpu: str,
                     version: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The rows of ``table`` measured on ``table_gpu`` for ``framework`` that a fit uses
    (:func:`select_version`, :func:`drop_unrepresentative`, :func:`faster_than_hbm`),
    and the notes on what was left out."""
    rows = table[(table["gpu"] == table_gpu) & (table["framework"] == framework)].reset_index(drop=True)
    if rows.empty:
        have = sorted(set(zip(table["gpu"], table["framework"])))
        raise CalibrationError(f"no measured rows for GPU {table_gpu!r} and framework {framework!r}; "
                               f"the table has: {', '.join(f'{g}/{f}' for g, f in have)}")
    rows, version_notes = select_version(rows, version)
    rows, framework_notes = drop_unrepresentative(rows, framework)
    impossible, impossible_notes = faster_than_hbm(rows, gpu)
    fp8 = (rows["op"] == "fp8_gemm").to_numpy()
    fp8_notes = []
    if fp8.any() and not gpu.peak_fp8_flops_per_s:
        impossible |= fp8
        fp8_notes = [f"fp8_gemm: its {int(fp8.sum())} rows left out: {gpu.name} has no FP8 tensor-core peak in "
                     "the GPU catalog (peak_fp8_flops_per_s), so FP8 GEMMs are not modelled on it"]
    return rows[~impossible].reset_index(drop=True), version_notes + framework_notes + impossible_notes + fp8_notes


def measurement_base(framework: str) -> KernelProfile:
    """The profile a fit of ``framework``'s tables starts from: :data:`BASE` with what
    is known of how the framework's rows were measured rather than fitted: how often
    its FP8 linear layers read their activations to quantize them
    (``measured_fp8_quantize_reads`` in ``data/frameworks.toml``; 1 for a table of a
    framework not in the catalog, as ``servesim profile``'s one-kernel cast)."""
    from servesim.hardware.framework import framework_names, get_framework

    reads = get_framework(framework).measured_fp8_quantize_reads if framework in framework_names() else 1
    return replace(BASE, fp8_gemm=(("fp8_quantize_reads", reads),)) if reads != 1 else BASE


def calibrate(table: pd.DataFrame, gpu, framework: str, table_gpu: str, version: str | None = None) -> dict:
    """Fit ``gpu``'s profile for ``framework`` from the rows of ``table`` measured on
    ``table_gpu`` (of ``version``, or each op class's newest: :func:`select_version`);
    returns the profile file's content (``profile`` and ``fit``)."""
    rows, data_notes = calibration_rows(table, gpu, framework, table_gpu, version)
    base = measurement_base(framework)
    profile, notes = fit_profile(rows, gpu, base)
    notes = data_notes + notes
    held = holdout_mask(rows)
    split_profile, _ = fit_profile(rows[~held].reset_index(drop=True), gpu, base)
    versions = sorted(set(rows["version"]), key=version_key)
    fit = {
        "provenance": f"calibrated from measured {framework} kernels on {table_gpu}",
        "gpu_measured": table_gpu, "framework": framework, "framework_versions": versions,
        "sources": sorted(set(rows["source"]) - {""}),
        "method": "servesim calibrate (servesim/hardware/calibrate.py)",
        "notes": notes,
        "in_sample": report(rows, gpu, profile),
        "out_of_sample": report(rows[held], gpu, split_profile),
        "qkv_scaling": qkv_scaling(rows, gpu, profile),
    }
    by_size = report_by_tensor_parallel_size(rows, gpu, profile)
    if by_size:
        fit["in_sample_by_tensor_parallel_size"] = by_size
    content = {"profile": profile.to_dict(), "fit": fit}
    for table in VARIANTS:
        if getattr(profile, table):
            content[table] = dict(getattr(profile, table))
    return content


def to_toml(content: dict, header: str = "") -> str:
    """A profile file (``[profile]``, ``[fp8_gemm]`` and ``[fp8_kv_decode]`` where fitted,
    then ``[fit]`` with its tables) as TOML text."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines.append("[profile]")
    for key, value in content["profile"].items():
        lines.append(f"{key} = {_toml_value(value)}")
    for table in VARIANTS:
        if content.get(table):
            lines.append(f"\n[{table}]")
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in content[table].items())
    fit = content["fit"]
    lines.append("\n[fit]")
    for key, value in fit.items():
        if not isinstance(value, dict) and not (isinstance(value, list) and value and isinstance(value[0], dict)):
            lines.append(f"{key} = {_toml_value(value)}")
    for section in ("in_sample", "out_of_sample"):
        for op, stats in fit.get(section, {}).items():
            lines.append(f"\n[fit.{section}.{op}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in stats.items())
    for size, ops in fit.get("in_sample_by_tensor_parallel_size", {}).items():
        for op, stats in ops.items():
            lines.append(f"\n[fit.in_sample_by_tensor_parallel_size.{size}.{op}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in stats.items())
    for row in fit.get("qkv_scaling", []):
        lines.append("\n[[fit.qkv_scaling]]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in row.items())
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(float(f"{value:.6g}"))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_profile(content: dict, path: str | Path, header: str = "") -> Path:
    path = Path(path)
    path.write_text(to_toml(content, header), encoding="utf-8")
    return path

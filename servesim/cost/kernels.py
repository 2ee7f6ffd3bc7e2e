"""Time of one kernel call for one layer: GEMM, attention, elementwise. Pure formulas.

Every function takes the GPU (datasheet peaks), the kernel profile (what kernels
achieve; see :class:`~servesim.hardware.KernelProfile` for each mechanism) and the
kernel's shape, and returns seconds. They are written with arithmetic only (no
branches on the shape), so that the same code costs one step in the engine (Python
numbers) and a whole measured table at once in ``servesim calibrate`` (numpy arrays):
the cost model and its calibration cannot drift apart.

``l2_resident`` (calibration only) reads a measurement the way a microbenchmark made
it: a kernel re-run on the same tensors finds a working set that fits in L2 still
there. A serving step never does (see ``KernelProfile.l2_bandwidth_ratio``).
"""

from __future__ import annotations

import numpy as np


def larger(a, b):
    """``max(a, b)`` of numbers or arrays alike, without branches (a calibration
    evaluates a table's rows at once)."""
    return (a + b + abs(a - b)) * 0.5


def smaller(a, b):
    """``min(a, b)`` of numbers or arrays alike, without branches."""
    return (a + b - abs(a - b)) * 0.5


def combine(memory_s, compute_s, overlap):
    """Partial-overlap roofline: the larger time plus the unhidden part of the smaller
    (``max + (1 - overlap) x min``, written without branches)."""
    return memory_s + compute_s - overlap * smaller(memory_s, compute_s)


def ceil_div(a, b):
    """``ceil(a / b)`` for non-negative integers (Python ints or integer arrays)."""
    return -(-a // b)


def wave_slots(units, sms, quantization):
    """SM slots charged for ``units`` thread blocks (tiles, (sequence, head) pairs) run
    one per SM per wave: the units plus ``quantization`` of the last, partial wave's
    idle SMs (0: spread evenly; 1: whole waves)."""
    return units + quantization * (ceil_div(units, sms) * sms - units)


def _bandwidth(gpu, efficiency, working_set_bytes, l2_resident, ratio, resident_fraction=0.0, full_fraction=1.0):
    """Bytes per second a kernel streams at; in a microbenchmark replay, the L2 rate for
    what stays resident. With ``resident_fraction`` 0: all of a working set of up to
    ``full_fraction x l2_cache_bytes``, a share falling linearly to none at the L2's
    size above that (1: all if it fits, none if not), the rest from HBM; else its first
    ``resident_fraction x l2_cache_bytes``."""
    hbm = gpu.hbm_bandwidth_bytes_per_s * efficiency
    if not l2_resident or ratio <= 0:
        return hbm
    l2 = gpu.hbm_bandwidth_bytes_per_s * ratio
    if not resident_fraction:
        if full_fraction >= 1:
            return np.where(working_set_bytes <= gpu.l2_cache_bytes, l2, hbm)
        share = np.clip((gpu.l2_cache_bytes - working_set_bytes) / ((1 - full_fraction) * gpu.l2_cache_bytes), 0, 1)
        return 1.0 / (share / l2 + (1 - share) / hbm)
    resident = np.minimum(working_set_bytes, resident_fraction * gpu.l2_cache_bytes)
    return working_set_bytes / ((working_set_bytes - resident) / hbm + resident / l2)


def gemm(gpu, p, m, n, k, dtype_bytes, l2_resident=False, clock_slowdown=1.0, warmup_calls=0, timed_calls=1,
         operand_bytes=0, peak_flops_per_s=0.0):
    """``y[m, n] = x[m, k] W[k, n]``: (flops executed, HBM bytes, memory s, compute s,
    time s) of one call. ``W`` and ``x`` have ``operand_bytes`` per element (0: as
    ``y``, ``dtype_bytes``) and the tensor cores run at ``peak_flops_per_s`` (0: the
    GPU's 16-bit peak); an FP8 GEMM is :func:`fp8_linear`'s.

    ``clock_slowdown`` multiplies the compute time (a serving step's GEMMs past the
    power-throttle onset; see :func:`power_throttle_slowdown`). In a microbenchmark
    replay (``l2_resident``), the call is the average of ``timed_calls`` calls run back
    to back after ``warmup_calls`` others, that window charged its mean throttle.

    Memory: weights once (plus ``weight_reread_fraction`` of them per further pass of
    ``weight_pass_tokens`` tokens) and activations in and out. Compute: with
    ``gemm_tile_n``, waves of ``gemm_token_tile x gemm_tile_n`` output tiles, one tile
    per SM per wave, the last partial wave's idle SMs charged at
    ``gemm_wave_quantization`` (1: whole waves), or at ``gemm_single_wave_quantization``
    when the whole GEMM is less than one wave; without, the token dimension padded to
    ``gemm_token_tile``. Either way each tile's work outside its K loop (prologue,
    epilogue) is charged as ``gemm_tile_overhead_k`` more K elements. With
    ``gemm_large_tile_n``, the tile is chosen by shape (:func:`_chosen_tiles`) and, as
    its waves run one after another, only a ``1 / waves`` share of the memory time is
    exposed to ``overlap``. Time: ``kernel_fixed_s`` + the partial-overlap roofline.
    """
    tm = p.gemm_token_tile
    operand_bytes = operand_bytes or dtype_bytes
    weight_bytes = n * k * operand_bytes
    passes = ceil_div(m, p.weight_pass_tokens)
    hbm = weight_bytes * (1 + (passes - 1) * p.weight_reread_fraction) + m * (k * operand_bytes + n * dtype_bytes)
    overlap = p.overlap
    if p.gemm_large_tile_n:
        flops, compute_flops, waves = _chosen_tiles(gpu, p, m, n, k)
        # waves run one after another: later waves' loads hide under earlier waves' math
        overlap = 1.0 - (1.0 - p.overlap) / waves
    elif p.gemm_tile_n:
        flops, compute_flops, _ = _tile_flops(gpu, p, m, n, k, tm, p.gemm_tile_n)
    else:
        flops = 2.0 * ceil_div(m, tm) * tm * n * k
        compute_flops = flops * (1.0 + p.gemm_tile_overhead_k / k)
    memory_s = hbm / _bandwidth(gpu, p.bandwidth_efficiency, hbm, l2_resident, p.l2_bandwidth_ratio,
                                p.gemm_l2_resident_fraction)
    compute_s = compute_flops / ((peak_flops_per_s or gpu.peak_fp16_flops_per_s) * p.compute_efficiency)
    if l2_resident:
        call_s = p.kernel_fixed_s + combine(memory_s, compute_s, overlap)
        clock_slowdown = power_throttle_slowdown(p, warmup_calls * call_s, timed_calls * call_s)
    compute_s = compute_s * clock_slowdown
    return flops, hbm, memory_s, compute_s, p.kernel_fixed_s + combine(memory_s, compute_s, overlap)


FP8_BYTES = 1
"""Bytes of an FP8 (E4M3) element."""


def fp8_linear(gpu, p, m, n, k, dtype_bytes, l2_resident=False, clock_slowdown=1.0, warmup_calls=0,
               timed_calls=1, quantize=True):
    """An FP8 linear layer (W8A8, per-tensor scales, as vLLM's and TRT-LLM's ``fp8``):
    (flops executed, HBM bytes, memory s, compute s, time s) of one call.

    With ``quantize``, as a linear layer runs alone (the measured tables), its ``m x k``
    activations are first quantized to FP8 by an elementwise kernel of their own
    (reading ``dtype_bytes`` and writing one byte per element, one row per token:
    :func:`elementwise`); where the framework computes a per-tensor scale each call
    (``fp8_quantize_reads = 2``), a reduction kernel reads them once before it; plus
    whatever more the standalone quantization takes (``fp8_quantize_fixed_s``). In a
    served model the kernel that produces them (the fused add + RMSNorm, SiLU-and-mul)
    writes them in FP8 itself (TRT-LLM's fused norm-quant kernels; vLLM's torch.compile,
    which fuses the quantization into the norm), so no kernel of its own is charged
    there. Then the GEMM
    reads one-byte weights and activations, writes ``dtype_bytes`` outputs and runs at
    the GPU's FP8 tensor-core peak (``gpu.peak_fp8_flops_per_s``). ``p`` is the profile's
    FP8 variant (:meth:`~servesim.hardware.KernelProfile.fp8_variant`): the GEMM's tiles,
    efficiencies and power throttle are FP8 kernels' own, its floor the 16-bit GEMM's
    (``kernel_fixed_s``), the quantization's fields the elementwise kernels'."""
    flops, hbm, memory_s, compute_s, time_s = gemm(
        gpu, p, m, n, k, dtype_bytes, l2_resident, clock_slowdown, warmup_calls, timed_calls,
        operand_bytes=FP8_BYTES, peak_flops_per_s=gpu.peak_fp8_flops_per_s)
    if not quantize:
        return flops, hbm, memory_s, compute_s, time_s
    quant_bytes = m * k * (dtype_bytes + FP8_BYTES)
    quant_memory_s, quant_s = elementwise(gpu, p, quant_bytes, 1, l2_resident, m, k)
    if p.fp8_quantize_reads == 2:  # the absolute maximum first: a reduction reading them once more
        amax_bytes = m * k * dtype_bytes
        amax_memory_s, amax_s = elementwise(gpu, p, amax_bytes, 1, l2_resident, m, k)
        quant_bytes, quant_memory_s = quant_bytes + amax_bytes, quant_memory_s + amax_memory_s
        quant_s += amax_s
    return flops, hbm + quant_bytes, memory_s + quant_memory_s, compute_s, time_s + quant_s + p.fp8_quantize_fixed_s


def power_throttle_slowdown(p, before_s, window_s):
    """Mean factor on the compute time of ``window_s`` seconds (at full clock) of GEMM
    work that follows ``before_s`` seconds of it back to back: 1 before
    ``gemm_power_throttle_onset_s`` of sustained work, rising linearly over the next
    ``gemm_power_throttle_ramp_s`` to ``gemm_power_throttle_slowdown`` (the GPU lowers
    its clock to hold its power limit), averaged over the window."""
    throttled_s = _throttled_seconds(p, before_s + window_s) - _throttled_seconds(p, before_s)
    share = throttled_s / np.maximum(window_s, 1e-30)
    return 1.0 + (p.gemm_power_throttle_slowdown - 1.0) * share


def _throttled_seconds(p, t):
    """Integral over the first ``t`` seconds of sustained GEMM work of the throttle's
    depth (0 before the onset, 1 once the ramp is over): ``x^2 / 2 r + max(t - onset - r,
    0)`` with ``x = clip(t - onset, 0, r)`` for a ramp of r seconds (a step at r = 0)."""
    ramp = max(p.gemm_power_throttle_ramp_s, 1e-12)
    x = np.clip(t - p.gemm_power_throttle_onset_s, 0.0, ramp)
    return x * x / (2.0 * ramp) + np.maximum(t - p.gemm_power_throttle_onset_s - ramp, 0.0)


def _tile_flops(gpu, p, m, n, k, tm, tn):
    """(flops executed, flops charged, waves charged (at least 1)) of ``tm x tn`` output
    tiles in waves of one per SM, each charged ``gemm_tile_overhead_k`` more K elements."""
    tiles = ceil_div(m, tm) * ceil_div(n, tn)
    # a GEMM of less than one wave is charged its own share of the idle SMs
    single = (p.gemm_single_wave_quantization >= 0) * (tiles < gpu.num_sms)
    quantization = p.gemm_wave_quantization + single * (p.gemm_single_wave_quantization - p.gemm_wave_quantization)
    slots = wave_slots(tiles, gpu.num_sms, quantization)
    waves = slots / gpu.num_sms
    return 2.0 * tiles * tm * tn * k, 2.0 * slots * tm * tn * (k + p.gemm_tile_overhead_k), larger(waves, 1.0)


def _chosen_tiles(gpu, p, m, n, k):
    """:func:`_tile_flops` of the tile a library heuristic picks (``gemm_large_tile_n``):
    ``gemm_token_tile x gemm_large_tile_n`` if those tiles fill the SMs at least once,
    else ``gemm_token_tile x gemm_tile_n`` if those do, else a tile of the smallest power
    of two of at least 16 tokens that covers ``m`` (at most ``gemm_token_tile``) by
    ``gemm_tile_n``."""
    tm, tn, sms = p.gemm_token_tile, p.gemm_tile_n, gpu.num_sms
    small_tm, power = 16, 16  # the smallest of 16, 32, 64, ... (up to tm) that covers m
    while power < tm:
        small_tm = small_tm + power * (m > power)
        power *= 2
    chosen = _tile_flops(gpu, p, m, n, k, small_tm, tn)
    for tile_n in (tn, p.gemm_large_tile_n):
        fills = ceil_div(m, tm) * ceil_div(n, tile_n) >= sms
        chosen = tuple(fills * big + (1 - fills) * other
                       for big, other in zip(_tile_flops(gpu, p, m, n, k, tm, tile_n), chosen))
    return chosen


def attention_rate(gpu, p):
    """FLOP/s of fused (FlashAttention-style) attention's matrix products."""
    return gpu.peak_fp16_flops_per_s * (p.prefill_attention_compute_efficiency or p.compute_efficiency)


def pair_seconds(gpu, p, head_dim):
    """Seconds of the whole GPU per (query, key, query head) pair of fused attention: its
    ``4 x head_dim`` FLOPs (QK^T and PV) at :func:`attention_rate`, plus the softmax's
    ``attention_softmax_pair_s`` of one SM shared over the SMs (an exponential a pair on
    the special-function units, not on the tensor cores: the same at every head size)."""
    return 4.0 * head_dim / attention_rate(gpu, p) + p.attention_softmax_pair_s / gpu.num_sms


def decode_attention(gpu, p, batch, queries, kv_tokens, pairs, heads, kv_heads, head_dim,
                     dtype_bytes, l2_resident=False):
    """Paged attention of ``batch`` sequences with ``queries`` new tokens each over
    their KV cache (decode: 1; a fused tree or chain verify: several), one layer:
    (flops, HBM bytes, memory s, compute s, time s).

    kv_tokens: keys (= values) read, summed over the batch; pairs: (query, key) pairs
    computed (causal among the new tokens). Fixed costs: per call, and per sequence and
    per (sequence, KV head) pair (the kernel's units of work), the latter partly hidden
    under the KV stream (``decode_attention_overlap``). K and V are read once at the decode
    bandwidth, slowed at few (sequence, KV head) pairs by the split-KV occupancy loss;
    Q is read and the output written once; the pairs' FLOPs and softmax are
    :func:`pair_seconds`. Grouped-query attention enters through
    ``kv_heads``; multi-head attention (``kv_heads == heads``) may run its own kernel
    (:func:`decode_attention_family`). With ``decode_attention_split_block_tokens`` each
    pair runs :func:`split_blocks` thread blocks, and a split call pays per block.
    Multi-head attention's KV stream lasts at least as long as its longest block
    (:func:`longest_block_per_key`, ``decode_attention_mha_longest_block``), each pair's
    keys taken as the batch's mean. The new tokens' K and V are written to the cache
    first (:func:`kv_write`).
    """
    kv_bytes = 2.0 * kv_tokens * kv_heads * head_dim * dtype_bytes
    q_bytes = 2.0 * batch * queries * heads * head_dim * dtype_bytes
    flops = 4.0 * heads * head_dim * pairs
    hbm = kv_bytes + q_bytes
    occupancy_seqs, work_overlap, efficiency = decode_attention_family(p, heads, kv_heads)
    units = batch * kv_heads
    per_unit = split_blocks(gpu, p, kv_tokens / batch, units)
    occupancy = 1.0 + occupancy_seqs / (units * per_unit)
    memory_s = hbm * occupancy / _bandwidth(gpu, efficiency, hbm, l2_resident, p.l2_bandwidth_ratio)
    if p.decode_attention_mha_longest_block:
        longest_s = longest_block_per_key(gpu, p, heads, kv_heads, head_dim, dtype_bytes, units * per_unit) * (
            kv_tokens / (batch * per_unit))
        memory_s = larger(memory_s, longest_s)
    compute_s = heads * pairs * pair_seconds(gpu, p, head_dim)
    work_s = _decode_work(gpu, p, batch, heads, kv_heads)
    if p.decode_attention_split_block_tokens:
        split_s = _split_charge(gpu, p, units * per_unit) * (per_unit > 1)
    else:
        split_s = p.decode_attention_split_fixed_s * (kv_tokens > _split_above(p) * batch)
    streamed_s = combine(memory_s, compute_s, p.overlap)
    time_s = (_decode_fixed(p, batch, heads, kv_heads, head_dim) + split_s + combine(work_s, streamed_s, work_overlap)
              + kv_write(gpu, p, batch * queries, kv_heads, head_dim, dtype_bytes))
    return flops, hbm, memory_s, compute_s, time_s


def _decode_fixed(p, batch, heads, kv_heads, head_dim):
    """Fixed time of a decode-attention call (s): the kernel's own (``decode_attention_fixed_s``
    plus ``decode_attention_fixed_per_dim_s`` an element of a head), and where a call of
    more than one sequence has grouped query heads sharing more than one KV head,
    ``decode_attention_group_layout_s``."""
    grouped = (batch > 1) * (kv_heads > 1) * (heads > kv_heads)
    return (p.decode_attention_fixed_s + p.decode_attention_fixed_per_dim_s * head_dim
            + p.decode_attention_group_layout_s * grouped)


def longest_block_per_key(gpu, p, heads, kv_heads, head_dim, dtype_bytes, blocks):
    """Seconds per key of a multi-head decode-attention call's longest thread block (0
    for grouped-query attention): one key's K and V read by one block at one SM's even
    share of the datasheet HBM bandwidth divided by ``decode_attention_mha_longest_block``,
    times the whole waves of ``blocks`` over the SMs (one block an SM)."""
    mha = 1.0 * (kv_heads == heads)
    even_share = gpu.hbm_bandwidth_bytes_per_s / gpu.num_sms
    return (mha * p.decode_attention_mha_longest_block * ceil_div(blocks, gpu.num_sms)
            * 2.0 * head_dim * dtype_bytes / even_share)


def decode_attention_family(p, heads, kv_heads):
    """(occupancy loss in pairs, work overlap, KV bandwidth efficiency) of decode
    attention for a head layout: multi-head attention (a KV head per query head) reads
    the ``decode_attention_mha_*`` fields that are set (>= 0), grouped-query attention
    the shared ones."""
    occupancy = p.decode_attention_occupancy_seqs
    overlap = p.decode_attention_overlap
    efficiency = p.decode_attention_bandwidth_efficiency or p.bandwidth_efficiency
    mha = 1.0 * (kv_heads == heads)
    if p.decode_attention_mha_occupancy_seqs >= 0:
        occupancy = occupancy + mha * (p.decode_attention_mha_occupancy_seqs - occupancy)
    if p.decode_attention_mha_overlap >= 0:
        overlap = overlap + mha * (p.decode_attention_mha_overlap - overlap)
    if p.decode_attention_mha_bandwidth_efficiency >= 0:
        efficiency = efficiency + mha * (p.decode_attention_mha_bandwidth_efficiency - efficiency)
    return occupancy, overlap, efficiency


def _pair_slots(gpu, p, pairs, blocks_per_sm=1):
    """(sequence, KV head) pairs charged their per-pair work: one thread block each, in
    waves of ``blocks_per_sm`` per SM, plus ``decode_attention_wave_quantization`` of the
    last wave's idle slots."""
    return wave_slots(pairs, gpu.num_sms * blocks_per_sm, p.decode_attention_wave_quantization)


def _decode_work(gpu, p, batch, heads, kv_heads):
    """Decode attention's work beyond its KV stream (s): per sequence, and per (sequence,
    KV head) pair slot; multi-head attention's pairs at ``decode_attention_mha_per_kv_head_s``
    (when set) in waves of ``decode_attention_mha_blocks_per_sm`` blocks an SM."""
    units = batch * kv_heads
    work_s = p.decode_attention_per_seq_s * batch
    shared = p.decode_attention_per_kv_head_s * _pair_slots(gpu, p, units)
    if p.decode_attention_mha_per_kv_head_s < 0:
        return work_s + shared
    mha = 1.0 * (kv_heads == heads)
    own = p.decode_attention_mha_per_kv_head_s * _pair_slots(gpu, p, units, p.decode_attention_mha_blocks_per_sm)
    return work_s + shared + mha * (own - shared)


def split_blocks(gpu, p, kv_per_seq, pairs):
    """Thread blocks each (sequence, KV head) pair runs with
    ``decode_attention_split_block_tokens`` set: ``max(1, min(floor(kv_per_seq /
    block tokens), floor(split_waves x SMs / pairs)))`` (no cap at 0 waves); else 1."""
    if not p.decode_attention_split_block_tokens:
        return 1.0
    by_length = kv_per_seq // p.decode_attention_split_block_tokens
    by_occupancy = _split_cap(gpu, p, pairs)
    return larger(smaller(by_length, by_occupancy), 1.0)


def _split_charge(gpu, p, blocks):
    """Time of a split-KV call of ``blocks`` thread blocks on top of the kernel's own (s):
    its fixed part and each block slot, in waves (``decode_attention_wave_quantization``)."""
    return p.decode_attention_split_fixed_s + p.decode_attention_per_split_block_s * wave_slots(
        blocks, gpu.num_sms, p.decode_attention_wave_quantization)


def _kv_seconds_per_byte(gpu, p, heads, kv_heads, blocks):
    """Seconds per KV byte of decode attention from HBM over ``blocks`` thread blocks (the
    occupancy loss of :func:`decode_attention_family` over them)."""
    occupancy_seqs, _, efficiency = decode_attention_family(p, heads, kv_heads)
    return (1.0 + occupancy_seqs / blocks) / (gpu.hbm_bandwidth_bytes_per_s * efficiency)


def _split_cap(gpu, p, pairs):
    """Blocks a pair at most: ``floor(decode_attention_split_waves x SMs / pairs)``
    (0 waves: no cap, written as 2^31)."""
    if not p.decode_attention_split_waves:
        return float(2**31)
    return (p.decode_attention_split_waves * gpu.num_sms) // pairs


def _split_above(p):
    """KV tokens per sequence above which decode attention runs split-KV (inf: never)."""
    return p.decode_attention_split_tokens or float("inf")


def decode_attention_line(gpu, p, batch, queries, heads, kv_heads, head_dim, dtype_bytes):
    """:func:`decode_attention` of ``batch`` sequences with ``queries`` new tokens each as
    a function of the cached context C (tokens, summed over the batch; KV from HBM):
    (fixed s, split-KV s, the C above which it is paid, work s, memory s per context
    token, memory s at C = 0, compute s per context token, compute s at C = 0, split
    blocks, longest block s per context token, longest block s at C = 0), so that its
    time is ``fixed + (split if C > above) + combine(work, combine(max(m1 C + m0,
    l1 C + l0), c1 C + c0, overlap), the work overlap of
    :func:`decode_attention_family`)``. Split blocks is None, or (with
    ``decode_attention_split_block_tokens``) (C + appended keys per block length, the
    appended keys, the cap of blocks a pair): above that C the pair runs
    ``min(floor((C + appended) / per length), cap)`` blocks, whose split time and memory
    terms :func:`split_line_at` gives.
    The same formula, with the terms that do not depend on C worked out once (for the
    draft passes of a speculator, costed at a new context every step)."""
    units = batch * kv_heads
    per_byte = _kv_seconds_per_byte(gpu, p, heads, kv_heads, units)
    kv_per_token = 2.0 * kv_heads * head_dim * dtype_bytes
    q_bytes = 2.0 * batch * queries * heads * head_dim * dtype_bytes
    per_pair = heads * pair_seconds(gpu, p, head_dim)
    work = _decode_work(gpu, p, batch, heads, kv_heads)
    appended = batch * queries  # C + batch x queries keys after the step
    longest = longest_block_per_key(gpu, p, heads, kv_heads, head_dim, dtype_bytes, units) / batch
    split, blocks = p.decode_attention_split_fixed_s, None
    if p.decode_attention_split_block_tokens:
        per_length = batch * p.decode_attention_split_block_tokens
        cap = _split_cap(gpu, p, units)
        # split from two blocks a pair: (C + appended) // per_length >= 2
        split_above = 2 * per_length - appended - 1 if cap >= 2 else float("inf")
        blocks = (per_length, appended, cap)
        split = 0.0
    else:
        split_above = _split_above(p) * batch - appended
    fixed = _decode_fixed(p, batch, heads, kv_heads, head_dim) + kv_write(gpu, p, batch * queries, kv_heads, head_dim,
                                                                dtype_bytes)
    return (fixed, split, split_above, work,
            kv_per_token * per_byte, (kv_per_token * appended + q_bytes) * per_byte,
            per_pair * queries, per_pair * batch * queries * (queries + 1) / 2,
            blocks, longest, longest * appended)


def split_line_at(gpu, p, batch, queries, heads, kv_heads, head_dim, dtype_bytes, per_unit):
    """(split-KV s, memory s per context token, memory s at C = 0, longest block s per
    context token, longest block s at C = 0) of a :func:`decode_attention_line` whose
    pairs run ``per_unit`` (>= 2) thread blocks: :func:`decode_attention`'s split charge,
    occupancy loss and longest block over those blocks."""
    units = batch * kv_heads
    per_byte = _kv_seconds_per_byte(gpu, p, heads, kv_heads, units * per_unit)
    kv_per_token = 2.0 * kv_heads * head_dim * dtype_bytes
    q_bytes = 2.0 * batch * queries * heads * head_dim * dtype_bytes
    longest = longest_block_per_key(gpu, p, heads, kv_heads, head_dim, dtype_bytes, units * per_unit) / (
        batch * per_unit)
    return (_split_charge(gpu, p, units * per_unit),
            kv_per_token * per_byte, (kv_per_token * batch * queries + q_bytes) * per_byte,
            longest, longest * batch * queries)


def causal_pairs(p, queries, cached=0):
    """(query, key) pairs a causal attention kernel computes for ``queries`` new tokens of
    a sequence over its ``cached`` earlier ones: exactly ``q c + q (q + 1) / 2`` without
    ``prefill_attention_tile``; with a tile of T, whole T x T tiles (FlashAttention
    computes a tile the causal mask cuts through in full): T^2 x ((n - 1) ceil(c / T) +
    (n - 1) n / 2 + ceil((c + q) / T)) for n = ceil(q / T) query tiles."""
    t = p.prefill_attention_tile
    if not t:
        return queries * cached + queries * (queries + 1) / 2
    n = -(-queries // t)  # (ceil_div written out: a mixed step costs one call per chunk)
    return t * t * ((n - 1) * -(-cached // t) + (n - 1) * n / 2 + -(-(cached + queries) // t))


def prefill_attention(gpu, p, batch, tokens, pairs, heads, kv_heads, head_dim, dtype_bytes, prefix_tokens=0,
                      l2_resident=False, query_tiles=None, longest_keys=None):
    """Causal attention of prompts with no cached prefix (varlen FlashAttention), one
    layer: ``batch`` sequences, ``tokens`` prompt tokens in all, ``pairs`` causal
    (query, key) pairs in all: (flops, HBM bytes, memory s, compute s, time s).

    Time: fixed + the per-(sequence, KV head) work partly hidden under the rest
    (``prefill_attention_overlap``), which is per sequence + per query token (per
    query head and per KV head, times :func:`tile_shrink` at large heads) + the
    roofline of the causal FLOPs (:func:`causal_pairs`: whole tiles) at the
    fused-attention rate with their softmax (:func:`pair_seconds`) and of Q and the
    output moved once, the
    new K and V ``prefill_attention_kv_passes`` times (a microbenchmark's L2 holds the
    batch's tensors if they fit, one copy of each).
    A chunk of a prompt whose earlier part is cached (chunked prefill) also reads that
    part's K and V: ``prefix_tokens`` in all (its (query, key) pairs are in ``pairs``).
    ``l2_resident``: read as a microbenchmark made it (see the module docstring).
    With ``prefill_attention_query_tile``, the FLOPs are charged in waves of thread
    blocks (:func:`prefill_waves`); ``query_tiles``: the batch's query tiles, summed
    over its sequences (default: ``batch`` sequences of ``tokens / batch`` each).
    With ``prefill_attention_longest_block``, the FLOPs take at least as long as the
    call's longest thread block (:func:`longest_block_s`), and their waves take
    ``prefill_attention_tail_blocks`` of that block longer (uneven causal blocks,
    taken in launch order, leave a tail); ``longest_keys``: the keys
    of its longest sequence, cached and new (default: ``(tokens + prefix_tokens) /
    batch``). The new tokens' K and V are written to the cache first (:func:`kv_write`).
    """
    tensors = 2.0 * (tokens * (heads + kv_heads) + prefix_tokens * kv_heads) * head_dim * dtype_bytes
    hbm = tensors + 2.0 * (p.prefill_attention_kv_passes - 1) * tokens * kv_heads * head_dim * dtype_bytes
    flops = 4.0 * heads * head_dim * pairs
    memory_s = hbm / _bandwidth(gpu, p.prefill_attention_bandwidth_efficiency or p.bandwidth_efficiency, tensors,
                                l2_resident, p.l2_bandwidth_ratio)
    compute_s = heads * pairs * pair_seconds(gpu, p, head_dim)
    if p.prefill_attention_query_tile:
        if query_tiles is None:
            query_tiles = batch * ceil_div(ceil_div(tokens, batch), p.prefill_attention_query_tile)
        compute_s = compute_s * prefill_waves(gpu, p, query_tiles * heads)
    if p.prefill_attention_longest_block:
        if longest_keys is None:
            longest_keys = (tokens + prefix_tokens) / batch
        longest_s = longest_block_s(gpu, p, longest_keys, head_dim)
        compute_s = larger(compute_s + p.prefill_attention_tail_blocks * longest_s, longest_s)
    work_s = p.prefill_attention_per_kv_head_s * batch * kv_heads
    per_row_s = (p.prefill_attention_per_head_token_s * heads
                 + p.prefill_attention_per_kv_head_token_s * kv_heads) * tile_shrink(p, head_dim)
    rest_s = (p.prefill_attention_per_seq_s * batch
              + (p.prefill_attention_per_token_s + per_row_s) * tokens
              + combine(memory_s, compute_s, p.overlap))
    time_s = (p.prefill_attention_fixed_s + combine(work_s, rest_s, p.prefill_attention_overlap)
              + kv_write(gpu, p, tokens, kv_heads, head_dim, dtype_bytes))
    return flops, hbm, memory_s, compute_s, time_s


def tile_shrink(p, head_dim):
    """How many times fewer rows a prefill-attention query tile holds at ``head_dim``
    than at small heads: ``head_dim / prefill_attention_tile_head_dim`` past that size,
    else 1 (a tile's registers and shared memory hold rows x head_dim elements)."""
    limit = p.prefill_attention_tile_head_dim
    return larger(head_dim / limit, 1.0) if limit else 1.0


def kv_write(gpu, p, tokens, kv_heads, head_dim, dtype_bytes):
    """Time (s) of the kernel that writes ``tokens`` new tokens' K and V into the paged
    KV cache (0 without ``kv_write_block_s``): one thread block a token of ``min(kv_heads
    x head_dim, kv_write_block_threads)`` threads, as many resident on an SM as its
    thread and block limits allow, each living ``kv_write_block_s``; or the HBM stream
    of those K and V, read once and written once at ``bandwidth_efficiency``, if that
    takes longer. A throughput: a few tokens' blocks (a decode step's) cost their share
    of a block life, the rest of their latency being the attention's fixed time."""
    if not p.kv_write_block_s:
        return 0.0
    elements = kv_heads * head_dim
    threads = smaller(elements, p.kv_write_block_threads)
    resident = smaller(gpu.max_threads_per_sm // threads, gpu.max_blocks_per_sm)
    blocks_s = tokens * p.kv_write_block_s / (gpu.num_sms * resident)
    stream_s = 4.0 * tokens * elements * dtype_bytes / (gpu.hbm_bandwidth_bytes_per_s * p.bandwidth_efficiency)
    return larger(blocks_s, stream_s)


def longest_block_s(gpu, p, keys, head_dim):
    """Time of the longest thread block of a causal prefill-attention call: the last
    query tile of its longest sequence (``prefill_attention_query_tile`` query tokens,
    else ``prefill_attention_tile``, else 128) against all ``keys`` of it (rounded up to
    whole key tiles), on one SM at ``prefill_attention_longest_block`` times an even
    share (``1 / num_sms``) of the fused-attention rate (:func:`pair_seconds`).

    A causal prompt's query tiles attend over 1, 2, ..., n key tiles: its last block does
    twice the average block's work. When a call has many blocks per SM the scheduler
    evens the SMs' loads and this bound is slack; with few blocks (one prompt of few
    heads, as a tensor-parallel shard runs) the kernel waits for its longest block while
    the other SMs idle.
    """
    rows = p.prefill_attention_query_tile or p.prefill_attention_tile or 128
    tile = p.prefill_attention_tile
    if tile:
        keys = ceil_div(keys, tile) * tile
    return rows * keys * pair_seconds(gpu, p, head_dim) * gpu.num_sms * p.prefill_attention_longest_block


def prefill_waves(gpu, p, blocks):
    """Compute charged per unit of prefill-attention work for ``blocks`` thread blocks in
    waves of one per SM: (blocks + the charged share of the last wave's idle SMs) /
    blocks (1.0 for whole waves or no quantization)."""
    return wave_slots(blocks, gpu.num_sms, p.prefill_attention_wave_quantization) / blocks


def query_tiles(p, lengths):
    """Query tiles of prefill attention over sequences of these new-token counts (0 without
    ``prefill_attention_query_tile``)."""
    tile = p.prefill_attention_query_tile
    return sum(ceil_div(n, tile) for n in lengths) if tile else 0


def elementwise(gpu, p, hbm_bytes, kernels, l2_resident=False, rows=0, row_elements=0):
    """``kernels`` memory-bound elementwise kernels moving ``hbm_bytes`` in all:
    (memory s, time s); (0, 0) when the profile does not charge elementwise work.

    Row-parallel kernels (a norm, a quantization) give each row of ``rows`` to one
    thread block, which sets up (``elementwise_row_s`` per kernel) and walks its elements
    in turn: ``row_elements`` (summed over the kernels) at ``elementwise_row_element_s``
    each, in waves of one row per SM, each wave after the first adding
    ``elementwise_next_wave_fraction`` of a row's time. Every SM also works through its
    share of the ``rows x row_elements`` elements at ``elementwise_element_s`` each (the
    kernel's arithmetic). The time is the largest of those and the memory stream, plus the
    kernels' floors."""
    if not p.elementwise_bandwidth_efficiency:
        return 0.0, 0.0
    memory_s = hbm_bytes / _bandwidth(gpu, p.elementwise_bandwidth_efficiency, hbm_bytes / kernels,
                                      l2_resident, p.elementwise_l2_bandwidth_ratio or p.l2_bandwidth_ratio,
                                      full_fraction=p.elementwise_l2_full_fraction)
    waves = 1.0 + p.elementwise_next_wave_fraction * (ceil_div(rows, gpu.num_sms) - 1.0)
    row_s = waves * (row_elements * p.elementwise_row_element_s + kernels * p.elementwise_row_s)
    pace_s = rows * row_elements * p.elementwise_element_s / gpu.num_sms
    return memory_s, kernels * p.elementwise_fixed_s + combine(memory_s, combine(row_s, pace_s, 1.0), 1.0)


def elementwise_bytes_per_token(hidden, kv_dim, intermediate, dtype_bytes):
    """HBM bytes per token of one decoder layer's elementwise kernels: two fused
    residual-add + RMSNorm (read input and residual, write both: 4 x hidden each), the
    rotary embedding of Q and K (read and write: 2 x (hidden + kv_dim)) and
    SiLU-and-mul (read gate and up, write the product: 3 x intermediate)."""
    return (8 * hidden + 2 * (hidden + kv_dim) + 3 * intermediate) * dtype_bytes


def allreduce(gpu, p, message_bytes, num_gpus):
    """All-reduce of ``message_bytes`` over ``num_gpus`` GPUs (tensor parallelism): (bytes
    each GPU receives over its link, seconds; both 0 on one GPU). As a ring (two shots),
    each GPU sends and receives ``2 (n - 1) / n x bytes`` over its interconnect link
    (``GPU.interconnect_bandwidth_bytes_per_s`` per direction) at
    ``allreduce_bandwidth_efficiency``, after ``allreduce_fixed_s`` and ``n - 1`` hops of
    ``allreduce_hop_s``. With ``allreduce_two_shot_s``, the faster of that (plus the
    second round's time) and one shot (each GPU reads its ``n - 1`` peers' whole
    messages). A group of more than ``allreduce_direct_gpus`` (when set) sends all ``n``
    GPUs' traffic over one shared bus instead, at ``allreduce_shared_bandwidth_efficiency``
    of a link. A group of at least ``allreduce_switch_gpus`` (when set) may instead have
    the NVSwitch reduce it (each GPU's message once each way, at
    ``allreduce_switch_efficiency`` after ``allreduce_switch_s``), if that is faster.
    From ``allreduce_nccl_bytes`` (when set) the framework hands the message to NCCL:
    two shots at ``allreduce_nccl_bandwidth_efficiency`` after ``allreduce_nccl_s``, or
    the switch, the faster; below it, the switch is not used."""
    n = num_gpus
    link = gpu.interconnect_bandwidth_bytes_per_s
    shared = (p.allreduce_direct_gpus > 0) * (n > p.allreduce_direct_gpus)

    def seconds_per_byte_at(efficiency):  # of a GPU's traffic: its own link, or its share of the bus
        return (1 - shared) / (link * efficiency) + shared * n / (link * p.allreduce_shared_bandwidth_efficiency)

    seconds_per_byte = seconds_per_byte_at(p.allreduce_bandwidth_efficiency)
    one_shot_bytes = (n - 1) * message_bytes
    two_shot_bytes = 2.0 * (n - 1) / n * message_bytes
    one_shot_s = one_shot_bytes * seconds_per_byte
    two_shot_s = two_shot_bytes * seconds_per_byte + p.allreduce_two_shot_s
    # the faster (with no extra time, two shots: they never move more bytes than one)
    one = one_shot_s < two_shot_s
    wire_s = one * one_shot_s + (1 - one) * two_shot_s
    link_bytes = one * one_shot_bytes + (1 - one) * two_shot_bytes
    handed = 1.0  # where the switch may reduce: NCCL's, once NCCL is told apart from the framework's kernel
    if p.allreduce_nccl_bytes:  # NCCL's ring from its size on
        handed = 1.0 * (message_bytes >= p.allreduce_nccl_bytes)
        efficiency = p.allreduce_nccl_bandwidth_efficiency or p.allreduce_bandwidth_efficiency
        nccl_s = p.allreduce_nccl_s + two_shot_bytes * seconds_per_byte_at(efficiency)
        wire_s = handed * nccl_s + (1 - handed) * wire_s
        link_bytes = handed * two_shot_bytes + (1 - handed) * link_bytes
    if p.allreduce_switch_gpus:  # reduced in the NVLink switch: the message once each way
        switch_s = p.allreduce_switch_s + message_bytes / (link * p.allreduce_switch_efficiency)
        switch = (n >= p.allreduce_switch_gpus) * (switch_s < wire_s) * handed
        wire_s = switch * switch_s + (1 - switch) * wire_s
        link_bytes = switch * message_bytes + (1 - switch) * link_bytes
    return (n > 1) * link_bytes, (n > 1) * (p.allreduce_fixed_s + (n - 1) * p.allreduce_hop_s + wire_s)


def host_copy(gpu, p, nbytes):
    """Copy of ``nbytes`` between GPU memory and pinned CPU memory, one direction, over
    the GPU's host link (``GPU.host_link_bandwidth_bytes_per_s``) at
    ``host_copy_bandwidth_efficiency``, after ``host_copy_fixed_s``: (wire seconds,
    seconds)."""
    link = gpu.host_link_bandwidth_bytes_per_s * p.host_copy_bandwidth_efficiency
    if link <= 0:
        raise ValueError(f"{gpu.name}: the GPU catalog gives no host_link_bandwidth_bytes_per_s "
                         "(needed for swap preemption)")
    wire_s = nbytes / link
    return wire_s, p.host_copy_fixed_s + wire_s


def materialised_attention(gpu, p, batch, queries, kv_tokens, heads, head_dim, kv_dim, hidden, dtype_bytes):
    """Tree-masked attention with the score matrix materialised in HBM (the Medusa
    paper's verify kernel), one layer, QK and PV together: (flops, HBM bytes, FLOP/s).

    The query rows are padded to ``masked_attention_query_tile``; the scores
    ``heads x padded x kv_tokens`` move through HBM at ``score_bytes_per_element``.
    """
    padded = ceil_div(queries, p.masked_attention_query_tile) * p.masked_attention_query_tile
    scores = heads * padded * kv_tokens
    flops = 4.0 * scores * head_dim
    k_bytes = kv_tokens * kv_dim * dtype_bytes
    q_bytes = batch * queries * hidden * dtype_bytes
    hbm = 2.0 * (k_bytes + q_bytes) + scores * p.score_bytes_per_element
    return flops, hbm, gpu.peak_fp16_flops_per_s * p.masked_attention_compute_efficiency

"""Kernel profiles: what real kernels achieve on a GPU, one named mechanism per field.

A profile is data: the bundled ones live in ``servesim/data/profiles/<name>.toml``
(``[profile]``, the fields below, and ``[fit]``, the report of the calibration that
made it); a user's own comes from ``servesim calibrate`` and is named by its path.
Fields added after the first profile (the Medusa paper's) default to values that
switch their mechanism off, so that profile reproduces its figure unchanged.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class KernelProfile:
    """How close kernels come to the GPU's peaks, and the granularity they work in.

    Times are seconds per kernel call for one layer; efficiencies are fractions of the
    GPU's datasheet peaks (``GPU.hbm_bandwidth_bytes_per_s``, ``peak_fp16_flops_per_s``).

    bandwidth_efficiency:
        Achieved fraction of peak HBM bandwidth for streaming reads (GEMM weights and
        activations; the KV cache too unless ``decode_attention_bandwidth_efficiency``
        is set).
    compute_efficiency:
        Achieved fraction of peak dense FP16 tensor-core FLOP/s for GEMMs: the plateau
        that large GEMMs reach.
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
        Fraction of each extra weight pass that misses L2 and is read from HBM again
        (0: no re-read; measured GEMMs show no step at ``weight_pass_tokens``, so the
        measured profiles set 0; the Medusa paper's simulator needs it for its drop
        between 64 and 80 candidates).
    masked_attention_query_tile:
        Query-tile size of the attention kernel used when a tree mask forces the score
        matrix to be materialised (verify steps with ``fused_tree_attention = false``).
        Query rows are padded to it.
    score_bytes_per_element:
        HBM bytes moved per materialised attention-score element: writing QK^T, adding
        the tree mask, the FP32 softmax's reads and writes, and reading it back for PV.
    masked_attention_compute_efficiency:
        Achieved fraction of peak tensor FLOP/s for that materialised attention (small
        batched GEMMs per head, partly on CUDA cores).
    gemm_tile_n:
        GEMM tile size along the output (N) dimension; 0 = the paper-era model (only
        the token dimension padded). When set, a GEMM's ``ceil(M / gemm_token_tile) x
        ceil(N / gemm_tile_n)`` output tiles run in waves of one tile per SM, and
        compute is charged for whole waves (wave quantization): a GEMM of 1.1 waves
        costs 2 waves of tile time.
    gemm_large_tile_n:
        A library's choice of tile by shape, as cuBLAS's heuristic picks on A100 (0 =
        one tile, ``gemm_token_tile x gemm_tile_n``, for every shape). When set, a GEMM
        runs ``gemm_token_tile x gemm_large_tile_n`` tiles if they fill the SMs at least
        once, else ``gemm_token_tile x gemm_tile_n`` tiles if those do, else a tile of
        the smallest power of two of tokens (16 or more) that covers M. Its waves run
        one after another, so the loads of later waves hide under the math of earlier
        ones: ``overlap`` applies to a ``1 / waves`` share of the memory time. A100's
        measured GEMMs step that way: the qkv of Llama-2-7B (n = 12,288) takes 104 us
        at m = 192 and 256, 205 at 384 and 512 (one, then two waves of 128 x 256 tiles).
    gemm_wave_quantization:
        Fraction of a GEMM's last, partial wave of tiles that is charged as idle SMs:
        1 = whole waves (the classic wave-quantization model: 1.1 waves cost 2); 0 =
        tiles spread evenly over all SMs (the stream-K and split-K schedules that
        cuBLAS and CUTLASS pick to fill the tail). Measured GEMMs sit in between, so it
        is fitted.
    gemm_single_wave_quantization:
        ``gemm_wave_quantization`` of a GEMM with fewer tiles than SMs (less than one
        wave). On H100, H200 and B200 the measured GEMMs fill a many-wave GEMM's tail
        (fitted ~0: stream-K) but leave part of the machine idle under a single partial
        wave (0.2-0.5: the split of K that would fill it is partial). -1 (the default:
        profiles written before it) = ``gemm_wave_quantization``.
    gemm_tile_overhead_k:
        Work of a GEMM output tile outside its main loop over K, counted as that many
        more K elements of the tile's matrix products (0 = none): the pipeline's
        prologue (its first stages' loads before the first MMA) and the epilogue
        (converting the fp32 accumulators and storing the tile). The tiled compute time
        is charged for ``k + gemm_tile_overhead_k`` instead of ``k``, so short-K GEMMs
        pay it most: the tensor-parallel shards' (Llama-3-8B's o_proj at TP 8 has
        k = 512). Measured, H100 vLLM's GEMMs of k = 512-1,536 at 256 tokens and more
        ran 10-22% slower than a roofline of k = 4,096's efficiency; fitted 78-184 K
        elements on A100, H100, H200 and L40S (a few 64-wide K steps of the loop), none
        on B200.
    kernel_fixed_s:
        Fixed time of every GEMM kernel: launch, prologue and pipeline ramp (s), added
        to its roofline time. Small GEMMs are floor-bound by it.
    gemm_power_throttle_onset_s:
        Seconds of back-to-back GEMM work after which the GPU lowers its SM clock to
        stay within its power limit (the board's TDP): dense tensor-core GEMMs draw the
        most power of any kernel, and a GPU boosts above its sustainable clock until its
        power controller catches up. Read off the measured GEMMs through the
        microbenchmark's own repetition (``warmup_calls`` and ``timed_calls`` of the
        kernel table): on H100 and H200 the largest GEMMs run ~10% below the FLOP/s of
        mid-sized ones, and they do so at a 6-12x shorter kernel under vLLM's and
        SGLang's collectors (six weight copies a call) than under TRT-LLM's (one for
        weights larger than L2), the same sustained time. In a serving step the
        step's own GEMM work counts from the step's start (the clock is taken to
        recover over the memory-bound work between compute-bound steps, so back-to-back
        prefill steps are charged a lower bound). Only GEMMs are charged: prefill
        attention's measurements run 6x fewer calls and show no slowdown.
    gemm_power_throttle_slowdown:
        Factor (>= 1) on a GEMM's compute time once throttled: the ratio of the boost
        clock to the power-limited one. 1 = no throttling.
    gemm_power_throttle_ramp_s:
        Seconds of sustained GEMM work, after the onset, over which the clock falls from
        boost to the power-limited one, the factor rising linearly (0 = at once). The
        power controller steps the clock down as the board heats and its draw climbs:
        measured on H100 vLLM, the largest GEMMs run 1.0x the unthrottled prediction at
        under 10 ms of sustained work, 1.05x at 10-20 ms, 1.08x at 20-40, 1.13x at 40-80
        and 1.22x beyond 80 ms; a step at one onset fitted the mid-sized runs or the
        longest ones, not both (with ``gemm_tile_overhead_k`` the longest went 8% fast).
        ``servesim calibrate`` ends a ramp no later than the longest measured run, at the
        depth reached there (beyond the data no deeper slowdown is extrapolated).
    fused_gate_up:
        The MLP's gate and up projections run as one GEMM of twice the width (vLLM's
        ``MergedColumnParallelLinear``, TRT-LLM's fused gated MLP): one kernel floor,
        wave quantization over the merged width. Reported half in each column.
    l2_bandwidth_ratio:
        Bandwidth, as a multiple of peak HBM bandwidth, of reads whose working set fits
        in L2 *and was left there by the previous call*. Only kernel microbenchmarks
        (which re-run one kernel on the same tensors) see it; a serving step streams
        each layer's weights and KV once, so the cost model never applies it.
        ``servesim calibrate`` uses it to read such measurements fairly (0 = unknown).
    gemm_l2_resident_fraction:
        How much of a GEMM's working set a microbenchmark replay finds still in L2, as
        a share of the L2's size: the first ``fraction x l2_cache_bytes`` of it are read
        at ``l2_bandwidth_ratio``, the rest from HBM. Like that ratio it reads
        calibration data only. The measured GEMMs show partial residency: B200's weights
        of 84-100 MB, under its 126 MB L2 (split between two dies), stream at close to
        HBM speed, not L2 speed. 0 = the shared rule (a working set that fits in L2 is
        wholly resident, a larger one not at all).
    decode_attention_fixed_s:
        Fixed time of the paged decode-attention kernel (s): launch and the split-KV
        reduction.
    decode_attention_fixed_per_dim_s:
        Fixed time of a decode-attention call per element of a head (s; 0 = none), on
        top of ``decode_attention_fixed_s``: the latency of a call's thread blocks before
        their first keys stream grows with the head size (Q, a first tile of K and V and
        the output of ``head_dim`` elements a row cross the memory system one dependent
        step after another). aiconfigurator's H100 tables: calls of 2-128 cached tokens
        take 10.3 us at head_dim 64 and 11.5 us at 128 (vLLM, 1-16 sequences, alike at 1
        and 8 KV heads), 7.7 and 8.7 us (TRT-LLM). ``calibrate`` fits it as the softmax
        (``attention_softmax_pair_s``), ``decode_attention_fixed_s`` falling by the main
        size's share (on one size the two are one): 0.4-2.0 us per 128 elements on
        H100, H200 and B200.
    decode_attention_group_layout_s:
        Extra fixed time of a grouped-query decode-attention call whose query heads
        share more than one KV head (s): FlashAttention-2's decode (vLLM's on A100)
        moves a group's query heads into the query-length dimension, and with more than
        one KV head that transpose of the queries, and back of the output, are copies (two
        small kernels); with one KV head (a TP 8 shard of an 8-KV-head model) it is a
        free reshape, and multi-head attention has no groups. Measured on A100 vLLM at
        2-16 sequences of 8 cached tokens: about 19 us over 2, 4 or 8 KV heads
        (8-32 query heads) against 12-13 us over one KV head or with MHA. A call of one
        sequence does not pay it: the A100 and L40S vLLM tables time one sequence over
        2-8 KV heads as one over a single KV head (A100: 12.5 us against 18.4-18.7 at two
        sequences, up to 128 cached tokens; the kernel path a single sequence takes there
        is not identified). 0 = not charged (the other tables show no such step).
    decode_attention_per_seq_s:
        Time per sequence of a decode-attention call (s): page-table walk, query load
        and output write of one sequence, which dominate at large batches of short KV.
    decode_attention_per_kv_head_s:
        Time per (sequence, KV head) pair of a decode-attention call (s): the kernels
        (FlashInfer, FlashAttention's decode, TRT-LLM's XQA) give each pair its own
        thread block(s), whose setup (page-table reads, loading the group's queries,
        writing and reducing the output) is paid whatever the KV length. Measured MHA
        (32 KV heads) costs about 4x GQA (8) per sequence at short KV; 0 = not charged.
    decode_attention_wave_quantization:
        Share of the last, partial wave's idle SMs charged as (sequence, KV head) work:
        each pair is a thread block, one per SM per wave (0 = pairs spread evenly, the
        default; 1 = whole waves). Fitted 0.5-1 on most profiles: 16 sequences of
        8 KV heads are 128 blocks, one wave on H100's 132 SMs, 17 are two.
    decode_attention_overlap:
        Fraction of the smaller of a decode-attention call's per-sequence work
        (``decode_attention_per_seq_s`` and ``_per_kv_head_s``) and its KV stream that is
        hidden under the larger: thread blocks set up while others stream. 0 = the two
        add up (measured: at short KV the time is the work alone, at long KV the
        stream, with little of the other on top).
    decode_attention_bandwidth_efficiency:
        Achieved fraction of peak HBM bandwidth for reading the KV cache in decode
        attention, at full occupancy (0 = ``bandwidth_efficiency``).
    decode_attention_occupancy_seqs:
        Occupancy loss of split-KV decode attention at few sequences: KV streaming time
        is multiplied by ``1 + this / (sequences x KV heads)`` (few (sequence, KV head)
        pairs leave SMs idle even with the KV split). 0 = no loss.
    decode_attention_mha_occupancy_seqs, decode_attention_mha_overlap, decode_attention_mha_bandwidth_efficiency:
        ``decode_attention_occupancy_seqs``, ``_overlap`` and ``_bandwidth_efficiency``
        of multi-head attention (a KV head per query head: Llama-2-7B, Vicuna-7B), where
        it runs another kernel than grouped-query attention: TRT-LLM's masked MHA, not
        its XQA, which loads a KV head once for its group of query heads. -1 (the
        default; profiles fitted on GQA rows alone) = the shared value. TRT-LLM's
        tables fit an occupancy loss of 16-24 pairs for MHA against 1.5-2.5 for GQA.
    decode_attention_mha_per_kv_head_s, decode_attention_mha_blocks_per_sm:
        Multi-head attention's own work per (sequence, KV head) pair (s; -1 = the shared
        ``decode_attention_per_kv_head_s``), and how many of its thread blocks an SM runs
        at once (its pairs run in waves of that many x SMs; GQA's one). TRT-LLM's masked
        MHA on H100 at 64-128 cached tokens: 11 us from 1 to 8 sequences of 32 heads (up
        to 256 pairs), then about 6.7 us for every further 264-396 pairs (19.8, 33.1, 58.2
        us at 16, 32, 64 sequences): several blocks an SM, not one.
    decode_attention_mha_longest_block:
        Multi-head decode attention lasts at least as long as its longest thread block:
        one (sequence, head) pair's keys (its split-KV share, with
        ``decode_attention_split_block_tokens``) streamed by one block, at one SM's even
        share of the datasheet HBM bandwidth divided by this, in waves of one block an
        SM. FlashAttention-2's decode does not split a multi-head call's KV (vLLM on
        A100 and L40S), so a few sequences' blocks each read their whole cache alone:
        A100 vLLM at 8 heads of 128 takes 764 us over 32,768 cached tokens for one to
        eight sequences alike (8-64 blocks, one wave of 108 SMs; 23 ns a key, 0.86 x an
        SM's share), where their KV (134 MB to 1.07 GB) would stream in 66-527 us at the
        datasheet bandwidth, and 799 us at 16 sequences of 16,384 (128 blocks, two waves
        of half the keys). 0 (the default) = no bound; it applies to multi-head
        attention only (grouped-query calls split their KV).
    decode_attention_split_tokens:
        KV tokens per sequence above which the decode-attention kernel splits each
        sequence's KV over several thread blocks and reduces their partial results
        (split-KV, "flash decoding"; TRT-LLM's multi-block mode), paying
        ``decode_attention_split_fixed_s`` for it. 0 = never. Measured: TRT-LLM's H100
        decode time jumps between 128 and 256 cached tokens at 16-64 sequences (10 ->
        21 us at 16) while the KV read grows by a few microseconds.
    decode_attention_split_fixed_s:
        Fixed time of a split-KV decode-attention call on top of the kernel's own (s):
        the reduction of the partial results and its launch.
    decode_attention_split_block_tokens:
        KV tokens per thread block at least when the kernel sizes its split-KV from
        the length and the occupancy (TRT-LLM's XQA multi-block mode; its
        ``kMinHistoryTokensPerBlock`` is 128): each (sequence, KV head) pair runs
        ``max(1, min(floor(L / this), floor(decode_attention_split_waves x SMs /
        pairs)))`` blocks, L the sequence's KV tokens (a batch's mean), and a call with
        more than one pays ``decode_attention_split_fixed_s`` and
        ``decode_attention_per_split_block_s`` per block slot. The occupancy loss
        counts blocks, not pairs. 0 (the default) = one block per pair, split-KV by
        ``decode_attention_split_tokens`` alone. Measured: TRT-LLM's H100 tables at
        16 sequences of 8 KV heads (128 pairs) take 10, 21, 29 and 48 us at 128, 256,
        512 and 1,024 cached tokens, as 1, 2, 4 and 8 blocks a pair do; at 128
        sequences the same lengths stay one block a pair and cost no split.
    decode_attention_split_waves:
        The cap of that split: blocks per pair at most ``this x SMs / pairs`` (XQA's
        ``kTargetWaveFactor`` is 8 waves); 0 = no cap, as many blocks as the length
        gives.
    decode_attention_per_split_block_s:
        Time per thread-block slot of a split-KV call (s), not hidden under the KV
        stream: each block's setup (page-table walk, the group's queries) and its
        partial result, in waves over the SMs (``decode_attention_wave_quantization``).
    prefill_attention_fixed_s:
        Fixed time of the causal prefill (FlashAttention varlen) kernel (s).
    prefill_attention_per_seq_s:
        Time per sequence of a prefill-attention call (s).
    prefill_attention_per_token_s:
        Time per query token of a prefill-attention call, whatever its heads (s). The
        calibrated profiles charge that work per head instead
        (``prefill_attention_per_head_token_s``) and set this 0; profiles written before
        carry it.
    prefill_attention_per_head_token_s:
        Time per query token and query head of a prefill-attention call (s): loading
        each head's Q rows, the online softmax's rescaling and the output write, which
        make short prompts reach a small fraction of peak FLOP/s. Per head, because a
        tensor-parallel GPU runs its share of the heads: H100 TRT-LLM's 4 prompts of
        1,024 tokens take 150.6 us at 32 heads and 32.2 us at 4. The bundled rows all
        have 32 heads; the database's rows of 16, 8 and 4 heads, none in the fit, are
        predicted at a median 3.2-9.9% so on A100, H100 and H200, where a per-token
        charge for all heads had them 12-42% slow.
    prefill_attention_per_kv_head_token_s:
        Time per query token and KV head of a prefill-attention call (s): each new
        token's K and V of every KV head written to the paged cache and loaded into the
        kernel's tiles. Measured MHA (32 KV heads) prefill costs about 10 ns a token
        more than GQA (8) with the same query heads and FLOPs; 0 = not charged.
    prefill_attention_per_kv_head_s:
        Time per (sequence, KV head) pair of a prefill-attention call (s): like decode
        attention's, the kernel's unit of work (a thread block per sequence and head
        group) with its setup, which bounds many short prompts. Measured at one-token
        prompts: about 25 ns per pair on H100 in the vLLM tables, whether 8 or 32 KV
        heads; 0 = not charged.
    prefill_attention_overlap:
        Fraction of the smaller of a prefill-attention call's per-(sequence, KV head)
        work and the rest of its time (per sequence and token, and the roofline) that
        is hidden under the larger, as ``decode_attention_overlap`` is for decode: the
        work bounds many one-token prompts and disappears under long ones.
    prefill_attention_tile:
        Query and key tile of the causal prefill kernel (tokens): the tiles on the
        diagonal, which the causal mask cuts through, are computed whole, so a prompt of
        s tokens costs ``ceil(s/T)(ceil(s/T) + 1)/2`` tiles of T x T (pairs) rather than
        s(s + 1)/2: 25% more at s = 4T, 3% at 32T. 0 = exact pairs.
    prefill_attention_tile_head_dim:
        The largest head size (elements) whose prefill-attention query tile holds its
        full rows; 0 = any. A tile's registers and shared memory hold rows x head_dim
        elements, so past this size the kernel runs tiles of proportionally fewer rows
        (FlashAttention-2 halves its 128-row tile at head_dim 256) and the work charged
        per query row (``prefill_attention_per_head_token_s`` and
        ``prefill_attention_per_kv_head_token_s``: Q loads, the online softmax's
        rescaling and the output write, amortised over a tile) grows by head_dim / this.
        Fitted on the rows of other head sizes than the main one, held at or above it
        (:func:`servesim.hardware.calibrate.fit_head_size`); a fractional value is the
        effective size of a mix of tile shapes. H100 TRT-LLM's 256-wide heads' prompts
        of 128-1,024 tokens took 25-27% longer than the 128-wide rows' charges predicted.
    prefill_attention_query_tile:
        Query tokens per thread block of the prefill kernel (FlashAttention's grid of
        query tile x head x sequence): a prompt of s tokens runs ``ceil(s / tile) x
        heads`` blocks, one per SM per wave, and the causal FLOPs are charged for the
        waves (``prefill_attention_wave_quantization``). A single 1,024-token prompt of
        32 heads is 256 blocks: on B200's 148 SMs, two waves for 1.7 waves of work.
        0 = no wave quantization.
    prefill_attention_wave_quantization:
        Share of the last, partial wave's idle SMs charged to prefill attention (1 =
        whole waves). Fitted 1 on most profiles: FlashAttention's blocks do not spread
        over the tail as stream-K GEMMs do.
    prefill_attention_longest_block:
        Time of a causal prefill-attention call's longest thread block (its longest
        prompt's last query tile against all that prompt's keys), relative to one SM's
        even share of the fused-attention rate; the call's FLOPs take at least that long
        (0 = not charged). A causal prompt's last query tile does twice its average
        tile's work, so a call of few blocks (a single prompt of a tensor-parallel
        shard's few heads) lasts as long as that block while other SMs idle: measured
        4-head prompts of 4,096 tokens on B200 reach about a third of the 32-head rate.
        Below 1 when a lone block runs faster than its share of a full GPU.
    prefill_attention_tail_blocks:
        Share of that longest block's time a causal prefill-attention call pays on top of
        its waves of FLOPs (0 = none). Its blocks differ in work (a prompt's query tile
        i attends i + 1 key tiles) and the SMs take them in launch order, so the call
        ends up to one longest block after the even share of its work (the list-
        scheduling bound, work / SMs + the longest job): a tail that fades as 1 / waves.
        B200 vLLM's table: calls of 2-4 waves of blocks run 15-17% slower than whole
        waves say, 4-8 waves 9%, 8-16 3%, alike at 4 and at 128 query tiles a prompt.
    prefill_attention_compute_efficiency:
        Achieved fraction of peak FLOP/s of fused (FlashAttention-style) attention on
        its causal FLOPs (0 = ``compute_efficiency``).
    attention_softmax_pair_s:
        Seconds one SM spends per (query, key, query head) pair of fused attention
        outside its matrix products (0 = none): the softmax's exponential, on the
        special-function units, which FlashAttention-3 overlaps only in part with the
        tensor cores (an H100 SXM does 989 TFLOP/s of bf16 matrix products but about
        3.9 T exponentials a second: of the whole GPU's time, 0.52 ps of matrix work a
        pair at head_dim 128 and 0.26 ps of exponential, 34 ps of one of its 132 SMs).
        Unlike the ``4 x head_dim`` FLOPs it is the same at every head size, so it sets
        how the achieved FLOP/s grows with head_dim: H100 vLLM's 16K-token prompts reach
        485, 608 and 711 TFLOP/s at head_dim 64, 128 and 256 (28 ps of an SM a pair and
        814 TFLOP/s of matrix work reproduce all three within 2%). ``calibrate`` fits it
        on the rows of head sizes other than the table's main one (128), the main
        size's predictions held (on one size it trades exactly against
        ``prefill_attention_compute_efficiency``): 13-25 ps on H100, H200 and B200.
    prefill_attention_kv_passes:
        Times the prompt's new K and V cross HBM in a prefill-attention call (1: read
        once by the attention kernel). Serving frameworks also write them into the
        paged KV cache (2), and an attention that reads them back from there adds a
        third (where the write is a kernel of its own, ``kv_write_block_s`` charges it
        instead, and those fits keep 1). A microbenchmark's L2 still holds one copy of
        each tensor. Where the stream binds, L40S's tables cost MHA (16 KB of K and V a
        token) 2.0-2.3x GQA's time a token, against 1.6x for one pass; they fit 2-3
        passes. On the HBM GPUs the stream rarely binds in the tables: A100 TRT-LLM fits
        2, the others 1.
    prefill_attention_bandwidth_efficiency:
        Achieved fraction of peak HBM bandwidth for prefill attention's Q, K, V and
        output (0 = ``bandwidth_efficiency``). It binds where a batch's attention
        tensors outgrow the L2 and the causal FLOPs are few: L40S's measured tables
        (96 MB L2, GDDR6) take 20-30 ns a prompt token below it and 95-107 ns (MHA) or
        44-47 ns (GQA) above, from 4,096 (MHA, 134 MB) or 8,192 tokens (GQA, 168 MB) of
        short prompts: 40-50% of its peak bandwidth for one pass of each tensor
        (``prefill_attention_kv_passes``). Fitted 0.52-0.71 on L40S (with two passes of
        K and V) and 0.8 on A100 TRT-LLM. On the other HBM profiles the fit sits at
        its bound, 1: their rows want the stream no slower than the datasheet's peak
        (likely a faster L2 on small replayed batches than the shared ratio gives;
        falling back to the GEMMs' efficiency costs SGLang's A100, B200 and H200 p90s
        1-3 points). A serving step reads it as peak HBM bandwidth, which matters only
        where prefill attention is memory-bound (a short chunk over a long prefix).
    kv_write_block_s:
        Life of one thread block of the kernel that writes new tokens' K and V into the
        paged KV cache (s), where that is a kernel of its own: vLLM's
        ``reshape_and_cache_flash`` runs one block per token of ``min(KV heads x
        head_dim, kv_write_block_threads)`` threads, so an SM holds few blocks at once
        (``max_threads_per_sm / threads``) and a long prompt is written at ``SMs x
        resident blocks`` tokens per block life, or at the HBM stream of its K and V
        (read and written once, at ``bandwidth_efficiency``) if slower. vLLM's prefill
        tables on A100 add 3.1 ns a token from one KV head to two (128 to 256 threads:
        16 to 8 blocks an SM) and 6.2 ns more from two to four (4 blocks), the same at
        every prompt length from 16 to 16,384 tokens and every head count (5.4 us a
        block); past four heads (512 threads) the stream takes over. Charged on every
        attention call's new tokens (prefill, decode, verify). 0 = no separate write
        kernel (TensorRT-LLM writes the cache inside its attention kernels).
    kv_write_block_threads:
        Most threads of one block of the KV-cache write kernel (vLLM: 512).
    fused_tree_attention:
        Verify steps of a token tree run a fused attention kernel with a tree mask
        (FlashInfer custom masks, TRT-LLM's spec-decoding kernels), costed like decode
        attention with several queries per sequence. ``false``: the score matrix is
        materialised in HBM (the Medusa paper's era; see ``masked_attention_*``).
    elementwise_bandwidth_efficiency:
        Achieved fraction of peak HBM bandwidth of memory-bound elementwise kernels
        (fused add + RMSNorm, rotary embedding, SiLU-and-mul, the final norm);
        0 = elementwise work not charged (the Medusa paper's simulator).
    elementwise_kernels_per_layer:
        Elementwise kernels per decoder layer, each paying ``elementwise_fixed_s``:
        two fused residual-add + RMSNorm, the rotary embedding and SiLU-and-mul (4).
    elementwise_fixed_s:
        Fixed time of one elementwise kernel (s): launch and ramp of a kernel that does
        little arithmetic (measured separately from GEMMs: a few microseconds).
    elementwise_row_element_s:
        Time per element of one row walked by one thread block in a row-parallel
        elementwise kernel (s): at few rows (decode batches) a norm or quantization of a
        wide row is bound by one block's pace, not by bandwidth; rows run in waves of
        one per SM. 0 = not charged.
    elementwise_row_s:
        Time per row of a row-parallel elementwise kernel, in waves of one row per SM
        (s): the thread block's setup (loading the row's scale or norm weights, the
        reduction, the write-back). Many short rows are bound by it: vLLM's kernel on
        rows of 512 elements moves 50 MB at 2.1 TB/s on H100, on rows of 4,096 at 2.7.
        0 = not charged.
    elementwise_next_wave_fraction:
        Share of a row's time (``elementwise_row_element_s``, ``_row_s``) each wave of
        rows after the first adds: the next wave's thread blocks start on an SM while
        its last row still waits on memory (1 = waves one after another, the default).
        Measured (vLLM, H100 and H200, rows of 51,200 elements): 128 rows, one wave,
        take 6.8 us and 160 rows, two, 8.5 us, where a whole second wave would add
        about 4.
    elementwise_l2_bandwidth_ratio:
        ``l2_bandwidth_ratio`` as elementwise kernels see it (0 = the shared one, which
        decode attention's rows set): contiguous rows and paged attention's scattered
        blocks read L2 at different rates. Fitted 1.0-1.4x peak HBM where the tables pin
        it (H100, H200 TRT-LLM, B200 vLLM); where the kernel's arithmetic binds first
        (``elementwise_element_s``: B200 TRT-LLM, H200 vLLM, L40S) it is poorly
        determined and fits 7-10x. Like the shared ratio it reads calibration data only.
    elementwise_l2_full_fraction:
        How much of the L2 a replayed elementwise kernel's working set can fill and
        still find wholly resident (fraction of ``l2_cache_bytes``). Above it, the
        resident share falls linearly, to none at the L2's size: the L2 is set-
        associative and split in partitions, so a working set near its size is
        only partly kept. 1 = the whole working set if it fits, none if it does not
        (a cliff). H100 vLLM's rows of 4,096 elements lose the L2 between 38 and 50 MB
        (3.8 -> 2.7 TB/s), not at 50 MB: 0.5 there. Calibration data only.
    elementwise_element_s:
        Time per element per SM of an elementwise kernel's arithmetic (s): a kernel
        whose data sit in L2 (a microbenchmark's mid-sized rows) is bound by this pace
        rather than by the L2's bandwidth (B200's TRT-LLM quantization kernel: 87 ps;
        serving steps, streaming from HBM, rarely reach it). 0 = not charged.
    allreduce_fixed_s:
        Fixed time of one tensor-parallel all-reduce (s): launch and the barrier of the
        framework's custom all-reduce kernel.
    allreduce_hop_s:
        Time per ring hop of an all-reduce (s): ``n - 1`` of them on ``n`` GPUs.
    allreduce_bandwidth_efficiency:
        Achieved fraction of the GPU's interconnect bandwidth per direction
        (``GPU.interconnect_bandwidth_bytes_per_s``) for an all-reduce's ring traffic.
    allreduce_two_shot_s:
        What a two-shot all-reduce (reduce-scatter then all-gather: ``2 (n - 1) / n x
        bytes`` a GPU) costs beyond a one-shot one (every GPU reads its ``n - 1`` peers'
        whole messages: ``(n - 1) x bytes``), s: the second round's barrier. The
        kernel runs whichever is faster, so small messages go in one shot and large
        ones in two (on two GPUs the two move the same bytes). 0 = always two shots
        (the plain ring). H100 vLLM on 8 GPUs: messages of 128-512 KB move at 35-39
        GB/s, seven copies of each over a link (260 GB/s a link), and jump to 67-97 GB/s
        from 1 MB; fitted 3-7 us on vLLM and SGLang over NVLink, 16-42 us on TRT-LLM,
        whose switch is a size rule of its own that the fit places, under 1 us on L40S
        (whose groups above two share a bus).
    allreduce_direct_gpus:
        The most GPUs of a tensor-parallel group that reach one another directly
        (NVLink, or PCIe peer-to-peer under one switch), each over its own link; 0 =
        any group. A larger group's traffic crosses a bus they all share (PCIe through
        the host's root complex), so the whole ring's ``2 (n - 1) x bytes`` is charged
        on it at ``allreduce_shared_bandwidth_efficiency``. The L40S servers of the
        calibration data: 2 (vLLM, SGLang and TRT-LLM alike). Two GPUs stream a 1 GB
        all-reduce at 19 GB/s a direction, four at 4 and eight at 2 a GPU, which is
        15-16 GB/s for the four's and the eight's whole traffic: one shared bus.
        (vLLM's custom all-reduce runs only on two PCIe GPUs; above, NCCL through the
        host.)
    allreduce_shared_bandwidth_efficiency:
        Achieved fraction of one interconnect link (per direction) that the whole
        group's all-reduce traffic shares above ``allreduce_direct_gpus`` (0.5 on the
        L40S servers: 16 of 32 GB/s).
    allreduce_switch_gpus:
        The fewest GPUs whose all-reduce the NVSwitch may reduce itself (NVLink SHARP,
        NCCL's NVLS; only where the catalog says the GPU's switch can,
        ``GPU.nvlink_switch_reduction``): each GPU sends its message once and receives
        the sum once, ``bytes`` each way instead of a ring's ``2 (n - 1) / n x bytes``,
        at ``allreduce_switch_efficiency`` of a link after ``allreduce_switch_s``; taken
        where it is the fastest. 0 = never. On 8 H100s vLLM's 1 GB all-reduce moves 468
        GB/s of ring traffic a GPU, above NVLink 4's 450: no ring does that. Fitted 4 on
        the H100, H200 and B200 profiles (8 on B200 TRT-LLM).
    allreduce_switch_efficiency:
        Achieved fraction of a GPU's link (per direction) for the message it sends to,
        and receives from, the switch (0.52-0.57 on H100 and H200, 0.43-0.48 on B200).
        ``calibrate`` keeps it at 0.3 or more: below, an 8-GPU ring at the two-shot rates
        fitted (0.6-0.7) beats it at every size, and NCCL would not choose it.
    allreduce_switch_s:
        Extra time of a switch-reduced all-reduce (s): the NCCL call the frameworks hand
        large messages to (11-85 us fitted), which also places the size it starts at.
    allreduce_nccl_bytes:
        Message size (bytes) from which the framework hands the all-reduce from its own
        kernel to NCCL (vLLM's custom all-reduce takes messages under 8 MiB); 0 = no
        handoff, one regime at every size. From this size the ring runs at
        ``allreduce_nccl_bandwidth_efficiency`` after ``allreduce_nccl_s`` (two shots
        only), and the switch reduction (``allreduce_switch_gpus``, NCCL's NVLS) applies
        only here. H100 vLLM on 2 GPUs moves 4 MiB at 207 GB/s, 8 MiB at 187, then ramps
        to 334 GB/s at 1 GB: NCCL's pipeline costs more to fill and streams faster than
        the custom kernel. Fitted 16-32 MiB for SGLang and TRT-LLM on H100, H200 and
        B200, 2-16 MiB for vLLM, 2 MiB on L40S.
    allreduce_nccl_s:
        NCCL's time on top of ``allreduce_fixed_s`` and the hops (s): its pipeline's
        fill (15-61 us fitted over NVLink).
    allreduce_nccl_bandwidth_efficiency:
        Achieved fraction of a link (per direction) for NCCL's ring traffic (0 = the
        custom kernel's ``allreduce_bandwidth_efficiency``; 0.60-0.73 fitted over
        NVLink, 0.59-0.63 on L40S).
    host_copy_bandwidth_efficiency:
        Achieved fraction of the GPU's host link bandwidth per direction
        (``GPU.host_link_bandwidth_bytes_per_s``) for KV blocks copied to or from
        pinned CPU memory (swap preemption). An estimate, 0.8 (DMA over PCIe with
        pinned memory): the calibration data have no host copies.
    host_copy_fixed_s:
        Fixed time of one swap (s): launching a step's block copies and waiting for
        them. An estimate, 20 us; the per-block copy calls of vLLM V0's
        ``swap_blocks`` (one per block, layer and K/V) are not modelled one by one.
    fp8_quantize_fixed_s:
        Time (s) of a measured FP8 linear layer's activation quantization beyond its
        elementwise kernels' (``fp8_quantize_reads``): the table times the layer
        alone, quantization included, and a framework's standalone quantization may
        be several kernels. TRT-LLM's collector gives its ``Linear`` no input scale,
        so each call computes one (a reduction for the absolute maximum, the scale
        from it, then the scaling): 6.6-8.0 us fitted on H100, H200 and B200, 3.3 us
        on L40S, beyond the two kernels' floors and bytes; vLLM's and SGLang's
        per-token quantization, one kernel, needs about none (0-1.1 us). Only the
        measured rows pay it: a served model writes its
        activations in FP8 from the norm that makes them
        (:func:`servesim.cost.kernels.fp8_linear`). An ``fp8_gemm`` field.
    fp8_quantize_reads:
        How many times a measured FP8 linear layer's standalone quantization reads
        its 16-bit activations: 1 where the scale is given (a static scale: one
        kernel reads them and writes FP8), 2 where each call computes a per-tensor
        scale first (a reduction kernel reads them for their absolute maximum, then
        the scaling kernel reads them again), each kernel at the fitted elementwise
        fields. A fact of the measurement, not fitted: ``servesim calibrate`` holds it
        at the framework's ``measured_fp8_quantize_reads`` (``data/frameworks.toml``):
        2 for TRT-LLM's tables, whose collector gives its ``Linear`` no input scale; 1
        for vLLM's and SGLang's (per-token scales, one kernel) and ``servesim
        profile``'s. Only the measured rows pay it, as ``fp8_quantize_fixed_s``. An
        ``fp8_gemm`` field.
    fp8_gemm:
        The GEMM fields of FP8 linear layers (``model.quantization = "fp8"``): pairs
        (field, value) of :data:`FP8_GEMM_FIELDS`, the profile file's ``[fp8_gemm]``
        table, fitted by ``servesim calibrate`` to the measured FP8 GEMMs (W8A8 with
        per-tensor scales, the activations quantized by a kernel of their own). Empty
        where none were measured: FP8 GEMMs then run with the 16-bit ones' values at the
        GPU's FP8 peak (:meth:`fp8_variant`).
    fp8_kv_decode:
        The decode-attention fields of kernels reading an FP8 KV cache
        (``model.kv_cache_dtype = "fp8"``): pairs (field, value) of
        :data:`FP8_KV_DECODE_FIELDS`, the profile file's ``[fp8_kv_decode]`` table,
        fitted by ``servesim calibrate`` to measured decode attention over FP8 K and V
        (grouped-query layouts of 128-wide heads). Empty where none were measured: the
        16-bit kernels' fields over half the bytes (:meth:`fp8_kv_variant`).
    fp8_kv_prefill:
        The same for prefill attention over an FP8 KV cache: pairs of
        :data:`FP8_KV_PREFILL_FIELDS`, the ``[fp8_kv_prefill]`` table, fitted to measured
        prefill attention with an FP8 cache (bf16 queries where the table has them,
        else FP8 attention: SGLang's H100 and H200 tables; 128-wide heads). Empty: the
        16-bit kernels' fields (:meth:`fp8_kv_prefill_variant`).
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
    gemm_tile_n: int = 0
    gemm_large_tile_n: int = 0
    gemm_wave_quantization: float = 1.0
    gemm_single_wave_quantization: float = -1.0
    kernel_fixed_s: float = 0.0
    gemm_power_throttle_onset_s: float = 0.0
    gemm_power_throttle_slowdown: float = 1.0
    gemm_power_throttle_ramp_s: float = 0.0
    fused_gate_up: bool = False
    l2_bandwidth_ratio: float = 0.0
    gemm_l2_resident_fraction: float = 0.0
    gemm_tile_overhead_k: float = 0.0
    decode_attention_fixed_s: float = 0.0
    decode_attention_fixed_per_dim_s: float = 0.0
    decode_attention_group_layout_s: float = 0.0
    decode_attention_per_seq_s: float = 0.0
    decode_attention_per_kv_head_s: float = 0.0
    decode_attention_overlap: float = 0.0
    decode_attention_bandwidth_efficiency: float = 0.0
    decode_attention_occupancy_seqs: float = 0.0
    decode_attention_wave_quantization: float = 0.0
    decode_attention_mha_occupancy_seqs: float = -1.0
    decode_attention_mha_overlap: float = -1.0
    decode_attention_mha_bandwidth_efficiency: float = -1.0
    decode_attention_mha_per_kv_head_s: float = -1.0
    decode_attention_mha_blocks_per_sm: int = 1
    decode_attention_mha_longest_block: float = 0.0
    decode_attention_split_tokens: int = 0
    decode_attention_split_fixed_s: float = 0.0
    decode_attention_split_block_tokens: int = 0
    decode_attention_split_waves: float = 0.0
    decode_attention_per_split_block_s: float = 0.0
    prefill_attention_fixed_s: float = 0.0
    prefill_attention_per_seq_s: float = 0.0
    prefill_attention_per_token_s: float = 0.0
    prefill_attention_per_head_token_s: float = 0.0
    prefill_attention_per_kv_head_token_s: float = 0.0
    prefill_attention_per_kv_head_s: float = 0.0
    prefill_attention_overlap: float = 0.0
    prefill_attention_longest_block: float = 0.0
    prefill_attention_tail_blocks: float = 0.0
    prefill_attention_compute_efficiency: float = 0.0
    attention_softmax_pair_s: float = 0.0
    prefill_attention_bandwidth_efficiency: float = 0.0
    prefill_attention_kv_passes: int = 1
    prefill_attention_tile: int = 0
    prefill_attention_query_tile: int = 0
    prefill_attention_tile_head_dim: float = 0.0
    prefill_attention_wave_quantization: float = 1.0
    kv_write_block_s: float = 0.0
    kv_write_block_threads: int = 512
    fused_tree_attention: bool = False
    elementwise_bandwidth_efficiency: float = 0.0
    elementwise_kernels_per_layer: int = 0
    elementwise_fixed_s: float = 0.0
    elementwise_row_element_s: float = 0.0
    elementwise_row_s: float = 0.0
    elementwise_element_s: float = 0.0
    elementwise_l2_bandwidth_ratio: float = 0.0
    elementwise_l2_full_fraction: float = 1.0
    elementwise_next_wave_fraction: float = 1.0
    allreduce_fixed_s: float = 10e-6
    allreduce_hop_s: float = 0.0
    allreduce_bandwidth_efficiency: float = 0.7
    allreduce_two_shot_s: float = 0.0
    allreduce_direct_gpus: int = 0
    allreduce_shared_bandwidth_efficiency: float = 0.5
    allreduce_switch_gpus: int = 0
    allreduce_switch_efficiency: float = 0.6
    allreduce_switch_s: float = 0.0
    allreduce_nccl_bytes: int = 0
    allreduce_nccl_s: float = 0.0
    allreduce_nccl_bandwidth_efficiency: float = 0.0
    host_copy_bandwidth_efficiency: float = 0.8
    host_copy_fixed_s: float = 20e-6
    fp8_quantize_fixed_s: float = 0.0
    fp8_quantize_reads: int = 1
    fp8_gemm: tuple = ()
    fp8_kv_decode: tuple = ()
    fp8_kv_prefill: tuple = ()

    def __post_init__(self) -> None:
        values = {name: value for name, value in self.__dict__.items() if name not in VARIANTS}  # (tables)
        for name, problem in profile_problems(values).items():
            raise ValueError(f"{name} {problem}")
        for table in VARIANTS:
            variant = dict(getattr(self, table))
            for name, problem in variant_problems(table, variant).items():
                raise ValueError(f"{table}.{name} {problem}")
            object.__setattr__(self, table, tuple(sorted(variant.items())))  # one order, so equal ones compare equal

    def fp8_variant(self) -> "KernelProfile":
        """The profile an FP8 linear layer's GEMM runs with (:func:`servesim.cost.kernels.fp8_linear`):
        this one with its :data:`FP8_GEMM_FIELDS` replaced by those fitted to measured
        FP8 GEMMs (``fp8_gemm``); this one itself where none were fitted, an estimate:
        the 16-bit GEMMs' tiles and efficiencies at the FP8 peak."""
        return self.variant("fp8_gemm")

    def fp8_kv_variant(self) -> "KernelProfile":
        """The profile decode attention over an FP8 KV cache runs with: this one with its
        :data:`FP8_KV_DECODE_FIELDS` replaced by those fitted to measured decode kernels
        reading FP8 K and V (``fp8_kv_decode``); this one itself where none were fitted,
        an estimate: the 16-bit kernels' rates over half the bytes."""
        return self.variant("fp8_kv_decode")

    def fp8_kv_prefill_variant(self) -> "KernelProfile":
        """The profile prefill attention writing and reading an FP8 KV cache runs with:
        this one with its :data:`FP8_KV_PREFILL_FIELDS` replaced by those fitted to
        measured prefill kernels over an FP8 cache (``fp8_kv_prefill``); this one itself
        where none were fitted, an estimate."""
        return self.variant("fp8_kv_prefill")

    def variant(self, table: str) -> "KernelProfile":
        """This profile with the fields of its variant ``table`` (:data:`VARIANTS`) in
        place of its own, that table emptied; itself where the table is empty."""
        values = getattr(self, table)
        return replace(self, **{table: ()}, **dict(values)) if values else self

    def with_overrides(self, **overrides: float) -> "KernelProfile":
        """A copy with some parameters replaced (scenario ``[hardware.profile]``); a key
        ``"table.field"`` replaces (or adds) a field of a variant table
        (``[hardware.profile.fp8_gemm]``: ``fp8_gemm.compute_efficiency``)."""
        fields_ = {k: v for k, v in overrides.items() if "." not in k}
        for key, value in overrides.items():
            if "." in key:
                table, name = key.split(".", 1)
                fields_[table] = tuple({**dict(fields_.get(table, getattr(self, table))), name: value}.items())
        return replace(self, **fields_)

    def to_dict(self) -> dict:
        """The ``[profile]`` table's fields (the variant tables, ``fp8_gemm``,
        ``fp8_kv_decode`` and ``fp8_kv_prefill``, are tables of their own)."""
        return {name: getattr(self, name) for name in PROFILE_FIELDS}


FP8_ONLY_FIELDS = ("fp8_quantize_fixed_s", "fp8_quantize_reads")
"""Fields that only FP8 linear layers have (in a profile's ``fp8_gemm`` table, not its
``[profile]``)."""
PROFILE_FIELDS = tuple(f.name for f in fields(KernelProfile)
                       if f.name not in ("fp8_gemm", "fp8_kv_decode", "fp8_kv_prefill")
                       and f.name not in FP8_ONLY_FIELDS)
FP8_GEMM_FIELDS = ("bandwidth_efficiency", "compute_efficiency", "overlap", "gemm_token_tile",
                   "gemm_tile_n", "gemm_large_tile_n", "gemm_wave_quantization", "gemm_single_wave_quantization",
                   "gemm_tile_overhead_k", "gemm_l2_resident_fraction", "gemm_power_throttle_onset_s",
                   "gemm_power_throttle_slowdown", "gemm_power_throttle_ramp_s", *FP8_ONLY_FIELDS)
"""The GEMM fields an FP8 GEMM has its own values of (a profile's ``fp8_gemm`` table):
its kernels are other kernels (CUTLASS's or cuBLASLt's FP8 ones), with their own tiles,
efficiencies and power draw. Not ``kernel_fixed_s``: a GEMM kernel's launch and ramp are
the 16-bit one's, and what a measured FP8 linear layer takes beyond them at small
sizes is its activations' quantization (``fp8_quantize_fixed_s``)."""
FP8_KV_DECODE_FIELDS = ("decode_attention_fixed_s", "decode_attention_group_layout_s", "decode_attention_per_seq_s",
                        "decode_attention_per_kv_head_s", "decode_attention_overlap",
                        "decode_attention_bandwidth_efficiency", "decode_attention_occupancy_seqs",
                        "decode_attention_split_fixed_s", "decode_attention_wave_quantization",
                        "decode_attention_per_split_block_s", "decode_attention_split_tokens",
                        "decode_attention_split_block_tokens", "decode_attention_split_waves")
"""The decode-attention fields that decode over an FP8 KV cache has its own values of (a
profile's ``fp8_kv_decode`` table): its kernels convert each K and V element before the
arithmetic, so their rates, floors and split-KV choices are their own. Grouped-query
layouts only (multi-head attention's own fields and the head-size field stay the 16-bit
kernels')."""
FP8_KV_PREFILL_FIELDS = ("prefill_attention_fixed_s", "prefill_attention_per_seq_s", "prefill_attention_per_token_s",
                         "prefill_attention_per_head_token_s", "prefill_attention_per_kv_head_token_s",
                         "prefill_attention_per_kv_head_s", "prefill_attention_overlap",
                         "prefill_attention_compute_efficiency", "prefill_attention_bandwidth_efficiency",
                         "prefill_attention_wave_quantization", "prefill_attention_longest_block", "kv_write_block_s",
                         "prefill_attention_tail_blocks", "prefill_attention_tile", "prefill_attention_query_tile",
                         "prefill_attention_kv_passes")
"""The prefill-attention fields that prefill over an FP8 KV cache has its own values of
(a profile's ``fp8_kv_prefill`` table): its kernels write the new keys and values in FP8
and, where the framework runs attention itself in FP8 (TRT-LLM's FP8 context FMHA),
compute at other rates. 128-wide heads (the head-size fields stay the 16-bit kernels')."""
VARIANTS = {"fp8_gemm": FP8_GEMM_FIELDS, "fp8_kv_decode": FP8_KV_DECODE_FIELDS,
            "fp8_kv_prefill": FP8_KV_PREFILL_FIELDS}
"""A profile's tables of variant kernels (name -> the fields they may give)."""

FRACTIONS = ("bandwidth_efficiency", "compute_efficiency", "masked_attention_compute_efficiency",
             "allreduce_bandwidth_efficiency", "allreduce_shared_bandwidth_efficiency", "allreduce_switch_efficiency",
             "host_copy_bandwidth_efficiency", "elementwise_l2_full_fraction")
"""Fields in (0, 1]."""
UNIT_INTERVAL = ("overlap", "allreduce_nccl_bandwidth_efficiency", "weight_reread_fraction", "gemm_wave_quantization",
                 "gemm_l2_resident_fraction",
                 "prefill_attention_wave_quantization", "decode_attention_wave_quantization",
                 "decode_attention_overlap", "prefill_attention_overlap",
                 "decode_attention_bandwidth_efficiency", "prefill_attention_compute_efficiency",
                 "prefill_attention_bandwidth_efficiency",
                 "elementwise_bandwidth_efficiency", "elementwise_next_wave_fraction")
"""Fields in [0, 1] (0 where it means 'not set')."""
TILES = ("gemm_token_tile", "weight_pass_tokens", "masked_attention_query_tile", "decode_attention_mha_blocks_per_sm",
         "kv_write_block_threads")
"""Positive integers (tile sizes, token counts), at most :data:`MAX_TILE`."""
COUNTS = ("gemm_tile_n", "gemm_large_tile_n", "elementwise_kernels_per_layer", "prefill_attention_tile",
          "prefill_attention_query_tile",
          "decode_attention_split_tokens", "decode_attention_split_block_tokens", "allreduce_direct_gpus",
          "allreduce_switch_gpus")
"""Non-negative integers (0 = mechanism off), at most :data:`MAX_TILE`."""
FLAGS = ("fused_gate_up", "fused_tree_attention")
MHA_FIELDS = {"decode_attention_mha_occupancy_seqs": (0.0, 1e6), "decode_attention_mha_overlap": (0.0, 1.0),
              "decode_attention_mha_bandwidth_efficiency": (0.01, 1.0),
              "decode_attention_mha_per_kv_head_s": (0.0, 1e-3)}
"""Multi-head attention's own decode fields and their ranges (-1 = not set)."""
MAX_TILE = 65536
MAX_MESSAGE_BYTES = 2**40
MAX_TOKENS = {"weight_pass_tokens": 2**31 - 1, "kv_write_block_threads": 1024}
"""Limits other than :data:`MAX_TILE`: token counts that may be 'never' in practice (no
second weight pass), and CUDA's most threads a block."""
MAX_SECONDS = 1.0
"""Upper bound of a per-kernel time (s): a kernel floor of a second is not a GPU."""
MAX_SCORE_BYTES = 1024.0
MAX_L2_RATIO = 100.0
MAX_SPLIT_WAVES = 1024.0
MAX_KV_PASSES = 8
MAX_THROTTLE_SLOWDOWN = 2.0
"""A power-limited clock at half the boost clock is beyond any datacenter GPU."""
MAX_LONGEST_BLOCK = 100.0
"""A block streaming at a hundredth of an SM's even share of the bandwidth is not a kernel."""


def profile_problems(values: dict) -> dict[str, str]:
    """What is wrong with each field of ``values`` (name -> problem), for profiles from
    the catalog, a scenario's overrides or a file; empty if all are valid. Every
    number must be finite and within its documented range."""
    problems: dict[str, str] = {}
    for name, value in values.items():
        if name not in PROFILE_FIELDS and name not in FP8_ONLY_FIELDS:
            problems[name] = f"is not a kernel-profile field; allowed: {', '.join(PROFILE_FIELDS)}"
            continue
        if name in FLAGS:
            if not isinstance(value, bool):
                problems[name] = f"must be true or false, got {value!r}"
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems[name] = f"must be a number, got {value!r}"
            continue
        if not math.isfinite(value):
            problems[name] = f"must be finite, got {value!r}"
        elif name == "gemm_single_wave_quantization" and not (value == -1 or 0 <= value <= 1):
            problems[name] = f"must be in [0, 1], or -1 for gemm_wave_quantization's value, got {value!r}"
        elif name in MHA_FIELDS:
            low, high = MHA_FIELDS[name]
            if not (value == -1 or low <= value <= high):
                problems[name] = f"must be in [{low:g}, {high:g}], or -1 for the grouped-query value, got {value!r}"
        elif name in FRACTIONS and not 0 < value <= 1:
            problems[name] = f"must be in (0, 1], got {value!r}"
        elif name in UNIT_INTERVAL and not 0 <= value <= 1:
            problems[name] = f"must be in [0, 1], got {value!r}"
        elif name in TILES and (int(value) != value or not 1 <= value <= MAX_TOKENS.get(name, MAX_TILE)):
            problems[name] = f"must be an integer in [1, {MAX_TOKENS.get(name, MAX_TILE)}], got {value!r}"
        elif name in COUNTS and (int(value) != value or not 0 <= value <= MAX_TILE):
            problems[name] = f"must be an integer in [0, {MAX_TILE}], got {value!r}"
        elif name.endswith("_s") and not 0 <= value <= MAX_SECONDS:
            problems[name] = f"must be in [0, {MAX_SECONDS}] seconds, got {value!r}"
        elif name == "score_bytes_per_element" and not 0 <= value <= MAX_SCORE_BYTES:
            problems[name] = f"must be in [0, {MAX_SCORE_BYTES}], got {value!r}"
        elif name in ("l2_bandwidth_ratio", "elementwise_l2_bandwidth_ratio") and not 0 <= value <= MAX_L2_RATIO:
            problems[name] = f"must be in [0, {MAX_L2_RATIO}], got {value!r}"
        elif name == "prefill_attention_kv_passes" and (int(value) != value or not 1 <= value <= MAX_KV_PASSES):
            problems[name] = f"must be an integer in [1, {MAX_KV_PASSES}], got {value!r}"
        elif name == "fp8_quantize_reads" and value not in (1, 2):
            problems[name] = f"must be 1 (a given scale) or 2 (a scale computed each call), got {value!r}"
        elif name == "allreduce_nccl_bytes" and (int(value) != value or not 0 <= value <= MAX_MESSAGE_BYTES):
            problems[name] = f"must be an integer in [0, {MAX_MESSAGE_BYTES}] bytes, got {value!r}"
        elif name == "decode_attention_split_waves" and not 0 <= value <= MAX_SPLIT_WAVES:
            problems[name] = f"must be in [0, {MAX_SPLIT_WAVES:g}] waves, got {value!r}"
        elif name == "gemm_power_throttle_slowdown" and not 1 <= value <= MAX_THROTTLE_SLOWDOWN:
            problems[name] = f"must be in [1, {MAX_THROTTLE_SLOWDOWN:g}] (1: no throttling), got {value!r}"
        elif name == "decode_attention_mha_longest_block" and not 0 <= value <= MAX_LONGEST_BLOCK:
            problems[name] = f"must be in [0, {MAX_LONGEST_BLOCK:g}] (0: no bound), got {value!r}"
        elif name == "prefill_attention_tail_blocks" and not 0 <= value <= MAX_LONGEST_BLOCK:
            problems[name] = f"must be in [0, {MAX_LONGEST_BLOCK:g}] (0: no tail), got {value!r}"
        elif name == "prefill_attention_tile_head_dim" and not 0 <= value <= MAX_TILE:
            problems[name] = f"must be in [0, {MAX_TILE}] elements (0: tiles never shrink), got {value!r}"
        elif name == "gemm_tile_overhead_k" and not 0 <= value <= MAX_TILE:
            problems[name] = f"must be in [0, {MAX_TILE}] K elements (0: none), got {value!r}"
        elif name == "decode_attention_occupancy_seqs" and not 0 <= value <= 1e6:
            problems[name] = f"must be in [0, 1e6], got {value!r}"
    return problems


def variant_problems(table: str, values: dict) -> dict[str, str]:
    """What is wrong with each field of a profile's variant table (``fp8_gemm``,
    ``fp8_kv_decode``, ``fp8_kv_prefill``: see :func:`profile_problems`); only its
    :data:`VARIANTS` fields are allowed."""
    allowed = VARIANTS[table]
    what = {"fp8_gemm": "an FP8 GEMM", "fp8_kv_decode": "an FP8-KV decode attention",
            "fp8_kv_prefill": "an FP8-KV prefill attention"}[table]
    problems = {name: f"is not {what} field; allowed: {', '.join(allowed)}" for name in values if name not in allowed}
    problems.update(profile_problems({k: v for k, v in values.items() if k in allowed}))
    return problems


class ProfileError(ValueError):
    """A kernel-profile file that cannot be used (names the file and the field)."""


def load_profile_file(path: str | Path) -> tuple[KernelProfile, dict]:
    """A kernel profile from a TOML file (``[profile]`` table of fields; ``[fit]``,
    the calibration report, optional); returns the profile and the whole file."""
    import tomllib

    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"{path}: cannot read kernel profile: {getattr(e, 'strerror', None) or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: not valid TOML: {e}") from None
    return profile_from_table(table, str(path)), table


def profile_from_table(table: dict, source: str) -> KernelProfile:
    """A kernel profile from a parsed profile file (see :func:`load_profile_file`)."""
    values = table.get("profile")
    if not isinstance(values, dict):
        raise ProfileError(f"{source}: expected a [profile] table of kernel-profile fields")
    problems = profile_problems(values)
    if problems:
        name, problem = next(iter(problems.items()))
        raise ProfileError(f"{source}: profile.{name} {problem}")
    required = [f.name for f in fields(KernelProfile) if f.default is MISSING]
    missing = [name for name in required if name not in values]
    if missing:
        raise ProfileError(f"{source}: [profile] lacks {', '.join(missing)}")
    variants = {}
    for name in VARIANTS:
        variant = table.get(name, {})
        if not isinstance(variant, dict):
            raise ProfileError(f"{source}: expected {name} to be a table of kernel-profile fields")
        problems = variant_problems(name, variant)
        if problems:
            field, problem = next(iter(problems.items()))
            raise ProfileError(f"{source}: {name}.{field} {problem}")
        variants[name] = tuple(sorted(variant.items()))
    return KernelProfile(**values, **variants)

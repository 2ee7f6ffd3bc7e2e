"""The cost model's FLOPs, bytes and times against hand-derived formulas."""

import pytest

from servesim.costmodel import CostModel
from servesim.hardware import KernelProfile

# A profile with no tiling, no re-reads and the ideal roofline, so that every number
# below is the plain formula.
IDEAL = KernelProfile(bandwidth_efficiency=1.0, compute_efficiency=1.0, overlap=1.0,
                      gemm_token_tile=1, weight_pass_tokens=10**9, weight_reread_fraction=0.0,
                      masked_attention_query_tile=1, score_bytes_per_element=0.0,
                      masked_attention_compute_efficiency=1.0)


def ops(step):
    return {op.name: op for op in step.ops}


def test_decode_step_llama7b_by_hand(a100, llama7b):
    # batch 4, one token each, 100 cached tokens each (400 in all)
    cm = CostModel(a100, llama7b, IDEAL)
    o = ops(cm.step_cost(4, 1, 400, "decode"))
    d, L, ff, V = 4096, 32, 11008, 32000
    # qkv: 4 tokens x 4096 x 12288, weights 4096*12288*2 B, activations 4*(4096+12288)*2 B
    assert o["qkv_proj"].flops == 2 * 4 * d * 3 * d * L
    assert o["qkv_proj"].hbm_bytes == (d * 3 * d * 2 + 4 * (d + 3 * d) * 2) * L
    assert o["mlp_down"].flops == 2 * 4 * ff * d * L
    assert o["lm_head"].flops == 2 * 4 * d * V
    assert o["lm_head"].hbm_bytes == d * V * 2 + 4 * (d + V) * 2
    # attention: each query sees 100 cached keys + itself -> 404 (query, key) pairs per head
    assert o["attn_qk"].flops == 2 * 32 * 404 * 128 * L
    # K read for 404 keys x 4096 x 2 B, plus Q read 4 x 4096 x 2 B, per layer
    assert o["attn_qk"].hbm_bytes == (404 * d * 2 + 4 * d * 2) * L
    # memory bound: time = bytes / bandwidth
    assert o["qkv_proj"].bound == "memory"
    assert o["qkv_proj"].time_s == pytest.approx(o["qkv_proj"].hbm_bytes / 1.935e12)


def test_verify_step_gqa_model_by_hand(a100):
    from servesim.models import get_model
    m = get_model("llama-2-70b")  # d 8192, 64 heads, 8 KV heads, ff 28672, 80 layers
    profile = IDEAL.with_overrides(masked_attention_query_tile=16, score_bytes_per_element=10.0)
    cm = CostModel(a100, m, profile)
    o = ops(cm.step_cost(2, 10, 2 * 50, "verify"))
    d, kv, L = 8192, 1024, 80
    assert o["qkv_proj"].flops == 2 * 20 * d * (d + 2 * kv) * L
    assert o["qkv_proj"].hbm_bytes == (d * (d + 2 * kv) * 2 + 20 * (d + d + 2 * kv) * 2) * L
    # 10 queries padded to 16; keys = 50 cached + 10 new per sequence, 2 sequences
    keys = 2 * (50 + 10)
    scores = 64 * 16 * keys
    assert o["attn_pv"].flops == 2 * scores * 128 * L
    assert o["attn_pv"].hbm_bytes == (keys * kv * 2 + 20 * d * 2 + scores * 10.0 / 2) * L


def test_prefill_attention_is_causal_and_logits_only_for_last_token(a100, llama7b):
    cm = CostModel(a100, llama7b, IDEAL)
    o = ops(cm.step_cost(1, 8, 0, "prefill"))
    # 8 tokens, causal: 1 + 2 + ... + 8 = 36 pairs per head
    assert o["attn_qk"].flops == 2 * 32 * 36 * 128 * 32
    assert o["lm_head"].flops == 2 * 1 * 4096 * 32000


def test_ridge_point_switches_regime(a100, llama7b):
    # GEMM M x 4096 x 4096 on the ideal A100 roofline: memory time (2KN + 2M(K+N))/B equals
    # compute time 2MKN/F at M* = (KN/B) / (KN/F - (K+N)/B) = 175.0 tokens.
    cm = CostModel(a100, llama7b, IDEAL)
    K = N = 4096
    B, F = 1.935e12, 312e12
    m_star = (K * N / B) / (K * N / F - (K + N) / B)
    assert m_star == pytest.approx(175.0, abs=0.1)
    assert cm.gemm("o", 174, K, N).bound == "memory"
    assert cm.gemm("o", 176, K, N).bound == "compute"
    assert cm.gemm("o", 176, K, N).time_s == pytest.approx(2 * 176 * K * N / F)


def test_tiling_and_weight_passes(a100, llama7b):
    p = IDEAL.with_overrides(gemm_token_tile=64, weight_pass_tokens=256, weight_reread_fraction=0.5)
    cm = CostModel(a100, llama7b, p)
    # 4 tokens are charged as one 64-token tile
    assert cm.gemm("x", 4, 100, 100).flops == 2 * 64 * 100 * 100
    # 320 tokens -> 2 weight passes: weights read 1 + 0.5 times
    g = cm.gemm("x", 320, 1000, 1000)
    assert g.hbm_bytes == 1000 * 1000 * 2 * 1.5 + 320 * 2000 * 2
    assert cm.gemm("x", 256, 1000, 1000).hbm_bytes == 1000 * 1000 * 2 + 256 * 2000 * 2


def test_overlap_interpolates_between_max_and_sum(a100, llama7b):
    none = CostModel(a100, llama7b, IDEAL.with_overrides(overlap=0.0)).gemm("x", 175, 4096, 4096)
    full = CostModel(a100, llama7b, IDEAL).gemm("x", 175, 4096, 4096)
    assert none.time_s == pytest.approx(none.memory_time_s + none.compute_time_s)
    assert full.time_s == pytest.approx(max(full.memory_time_s, full.compute_time_s))


def test_efficiencies_scale_times(a100, llama7b):
    half = CostModel(a100, llama7b, IDEAL.with_overrides(bandwidth_efficiency=0.5))
    ideal = CostModel(a100, llama7b, IDEAL)
    assert half.step_cost(1, 1, 10, "decode").time_s == pytest.approx(
        2 * ideal.step_cost(1, 1, 10, "decode").time_s)


def test_step_is_memoised_and_total_is_sum(a100, llama7b):
    cm = CostModel(a100, llama7b)
    a = cm.step_cost(4, 16, 2048, "verify")
    assert cm.step_cost(4, 16, 2048, "verify") is a
    # the time is handed out before the breakdown is worked out, and is exactly the sum
    # of the operators' times in execution order
    for stage, n in (("verify", 16), ("decode", 1), ("chain_verify", 5), ("prefill", 64)):
        step = cm.step_cost(4, n, 3000 if stage != "prefill" else 0, stage)
        assert step.time_s == sum(op.time_s for op in step.ops)
        assert [op.name for op in step.ops] == ["qkv_proj", "attn_qk", "attn_pv", "o_proj",
                                                "mlp_gate", "mlp_up", "mlp_down", "elementwise", "lm_head"]


def test_step_cost_pickles_with_its_breakdown(a100, llama7b):
    import pickle
    cm = CostModel(a100, llama7b)
    step = cm.step_cost(8, 16, 5000, "verify")
    data = pickle.dumps(step)
    assert b"CostModel" not in data  # the breakdown travels, not the model behind it
    copy = pickle.loads(data)
    assert copy == step and copy.time_s == step.time_s and copy.op_times() == step.op_times()


def test_bad_arguments(a100, llama7b):
    cm = CostModel(a100, llama7b)
    with pytest.raises(ValueError):
        cm.step_cost(4, 1, 0, "drafting")
    with pytest.raises(ValueError):
        cm.step_cost(0, 1, 0, "decode")


def test_varlen_prefill_by_hand_and_equal_prompts_match_step_cost(a100, llama7b):
    cm = CostModel(a100, llama7b, IDEAL)
    o = ops(cm.prefill_cost((3, 5)))
    # 8 tokens; causal pairs 6 + 15 = 21 per head
    assert o["qkv_proj"].flops == 2 * 8 * 4096 * 3 * 4096 * 32
    assert o["attn_qk"].flops == 2 * 32 * 21 * 128 * 32
    assert o["lm_head"].flops == 2 * 2 * 4096 * 32000
    assert cm.prefill_cost((7, 7)) is cm.step_cost(2, 7, 0, "prefill")


def test_time_line_of_decode_attention_is_the_same_formula():
    """The draft passes' fast path: a step's time as a line in the cached context must
    equal the full cost at every context (to rounding), for decode and fused chains."""
    from dataclasses import replace

    from servesim.hardware import get_gpu
    from servesim.models import get_model
    gpu = get_gpu("h100-sxm")
    split = replace(gpu, profile=replace(gpu.profile, decode_attention_split_tokens=256,
                                         decode_attention_split_block_tokens=0, decode_attention_split_fixed_s=10e-6))
    blocks = replace(gpu, profile=replace(gpu.profile, decode_attention_split_block_tokens=128,
                                          decode_attention_split_waves=2, decode_attention_split_fixed_s=3e-6,
                                          decode_attention_per_split_block_s=20e-9,
                                          decode_attention_occupancy_seqs=30.0))
    uncapped = replace(blocks, profile=replace(blocks.profile, decode_attention_split_waves=0.0))
    for cm, batch, width, stage in ((CostModel(g, get_model("llama-3-8b")), batch, width, stage)
                                    for g in (gpu, split, blocks, uncapped)
                                    for batch, width, stage in ((1, 1, "decode"), (7, 1, "decode"), (32, 1, "decode"),
                                                                (4, 5, "chain_verify"))):
        line = cm.step_time_line(batch, width, stage)
        assert line is not None
        for context in (0, 1, 1000, 123_457, 4_000_000, 256 * batch - batch * width, 256 * batch - batch * width + 1,
                        256 * batch - batch * width - 1, 384 * batch - batch * width, 384 * batch - batch * width - 1):
            full = cm.step_time_s(batch, width, context, stage)
            assert cm.steps_time_at(((0, line),), context) == pytest.approx(full, rel=1e-13)
        if cm.profile.decode_attention_split_block_tokens:  # remembered split terms: every context of a run
            for context in range(max(0, 256 * batch - 300), 256 * batch + 300, 7):  # (a context is >= 0)
                assert cm.steps_time_at(((0, line),), context) == pytest.approx(
                    cm.step_time_s(batch, width, context, stage), rel=1e-13)
        # passes one after another: each sees the tokens appended before it
        lines = ((0, line), (batch * width, line))
        assert cm.steps_time_at(lines, 500) == pytest.approx(
            cm.step_time_s(batch, width, 500, stage) + cm.step_time_s(batch, width, 500 + batch * width, stage),
            rel=1e-13)
    assert cm.step_time_line(4, 64, "prefill") is None


def test_framework_overhead_per_step_and_per_sequence(a100, llama7b):
    """1.5 ms a step + 40 us a sequence: a decode step of 8 sequences pays 1.5 + 0.32 =
    1.82 ms, a verify step of 8 sequences of 5 tokens the same (sequences, not tokens),
    a prefill of 3 prompts 1.62 ms, a mixed step of 4 decodes and 2 chunks 1.74 ms; the
    step's time is its kernels' plus that."""
    cm = CostModel(a100, llama7b, IDEAL, step_overhead_s=1.5e-3, step_overhead_per_seq_s=40e-6)
    bare = CostModel(a100, llama7b, IDEAL)
    cases = [(cm.step_cost(8, 1, 800, "decode"), bare.step_cost(8, 1, 800, "decode"), 1.82e-3),
             (cm.step_cost(8, 5, 800, "verify"), bare.step_cost(8, 5, 800, "verify"), 1.82e-3),
             (cm.prefill_cost((100, 200, 300)), bare.prefill_cost((100, 200, 300)), 1.62e-3),
             (cm.mixed_step_cost(4, 1, 400, "decode", ((64, 0), (128, 256))),
              bare.mixed_step_cost(4, 1, 400, "decode", ((64, 0), (128, 256))), 1.74e-3)]
    for step, kernels_only, overhead_s in cases:
        assert ops(step)["framework"].time_s == pytest.approx(overhead_s)
        assert "framework" not in ops(kernels_only)
        assert step.time_s == pytest.approx(kernels_only.time_s + overhead_s)

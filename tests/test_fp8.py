"""FP8 linear layers (W8A8, per-tensor scales) and an FP8 KV cache: the kernel against
hand-worked values, the profile's FP8 GEMM fields through a file and through a fit, and
what a scenario gets from them (weights, KV capacity, errors)."""

import tomllib
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from servesim.cli import main
from servesim.cost import kernels
from servesim.costmodel import CostModel
from servesim.hardware import get_gpu
from servesim.hardware.calibrate import BASE, fit_profile, measurement_base, to_toml
from servesim.hardware.kernel_profile import ProfileError, profile_from_table
from servesim.hardware.kernel_table import check_kernel_table, predict
from servesim.models import get_model


H100_BANDWIDTH, H100_FP16, H100_FP8 = 3.35e12, 989.4e12, 1978.9e12


def test_fp8_gemm_streams_one_byte_weights_and_runs_at_the_fp8_peak_hand_worked():
    """m = 1, n = k = 4096 on an H100 SXM at 80% of 3.35 TB/s, full overlap: the FP8
    GEMM moves 16.8 MB of weights, 4 KB of FP8 activations and 8 KB of 16-bit output
    (half the 16-bit GEMM's weights) and pays the 5 us floor. A compute-bound one (m =
    8,192: 64 x 32 tiles of 128 x 128 in 15.5 waves, the last half charged) charges the
    same tile slots as the 16-bit GEMM at twice the peak."""
    gpu = get_gpu("h100-sxm")
    p = replace(BASE, bandwidth_efficiency=0.8, compute_efficiency=0.5, overlap=1.0, kernel_fixed_s=5e-6,
                gemm_single_wave_quantization=0.0)
    flops, hbm, memory_s, compute_s, time_s = kernels.fp8_linear(gpu, p, 1, 4096, 4096, 2, quantize=False)
    assert hbm == 4096 * 4096 * 1 + 4096 * 1 + 4096 * 2
    assert memory_s == pytest.approx(hbm / (H100_BANDWIDTH * 0.8))
    # 32 tiles of 128 x 128 (fewer than the 132 SMs, no idle share charged) at the FP8 peak
    assert compute_s == pytest.approx(2 * 32 * 128 * 128 * 4096 / (H100_FP8 * 0.5))
    assert time_s == pytest.approx(5e-6 + memory_s)
    assert kernels.gemm(gpu, p, 1, 4096, 4096, 2)[1] == 2 * 4096 * 4096 + (4096 + 4096) * 2
    big8 = kernels.fp8_linear(gpu, p, 8192, 4096, 4096, 2, quantize=False)[3]
    big16 = kernels.gemm(gpu, p, 8192, 4096, 4096, 2)[3]
    slots = 2048 + 0.5 * (16 * 132 - 2048)
    assert big8 == pytest.approx(2 * slots * 128 * 128 * 4096 / (H100_FP8 * 0.5))
    assert big16 == pytest.approx(2 * slots * 128 * 128 * 4096 / (H100_FP16 * 0.5))


def test_fp8_linear_as_measured_quantizes_its_activations_first_hand_worked():
    """A linear layer timed alone quantizes its 1 x 4,096 activations first: one
    elementwise kernel moving 3 bytes an element (12 KB), one row of 4,096 elements at
    50 ps each plus the row's 20 ns set-up (BASE), over its 2 us floor: 2.2248 us more."""
    gpu = get_gpu("h100-sxm")
    p = replace(BASE, bandwidth_efficiency=0.8, compute_efficiency=0.5, overlap=1.0, kernel_fixed_s=5e-6)
    alone = kernels.fp8_linear(gpu, p, 1, 4096, 4096, 2)
    fused = kernels.fp8_linear(gpu, p, 1, 4096, 4096, 2, quantize=False)
    assert alone[1] - fused[1] == 4096 * 3
    assert alone[4] - fused[4] == pytest.approx(2e-6 + 4096 * 50e-12 + 20e-9)
    # a framework whose standalone quantization computes its scale first takes that more
    dynamic = replace(p, fp8_quantize_fixed_s=7e-6)
    assert kernels.fp8_linear(gpu, dynamic, 1, 4096, 4096, 2)[4] - alone[4] == pytest.approx(7e-6)
    assert kernels.fp8_linear(gpu, dynamic, 1, 4096, 4096, 2, quantize=False)[4] == fused[4]
    # a scale computed each call reads the activations once more: a reduction kernel of
    # 2 bytes an element (8 KB), its own floor and row (2.2248 us again)
    amax = replace(p, fp8_quantize_reads=2)
    twice = kernels.fp8_linear(gpu, amax, 1, 4096, 4096, 2)
    assert twice[1] - alone[1] == 4096 * 2
    assert twice[4] - alone[4] == pytest.approx(2e-6 + 4096 * 50e-12 + 20e-9)
    assert kernels.fp8_linear(gpu, amax, 1, 4096, 4096, 2, quantize=False)[4] == fused[4]


def test_profile_file_carries_fp8_gemm_fields_and_rejects_others():
    """A profile's [fp8_gemm] table goes through a written file unchanged and replaces only
    the GEMM fields it names in the FP8 variant; an unknown or out-of-range field there is
    an error naming it."""
    p = replace(BASE, fp8_gemm=(("compute_efficiency", 0.6), ("fp8_quantize_fixed_s", 8e-6), ("gemm_tile_n", 256)))
    text = to_toml({"profile": p.to_dict(), "fp8_gemm": dict(p.fp8_gemm), "fit": {"provenance": "test"}})
    back = profile_from_table(tomllib.loads(text), "test.toml")
    assert back == p
    variant = back.fp8_variant()
    assert (variant.compute_efficiency, variant.fp8_quantize_fixed_s, variant.gemm_tile_n) == (0.6, 8e-6, 256)
    assert p.fp8_quantize_fixed_s == 0.0 and "fp8_quantize_fixed_s" not in p.to_dict()
    assert variant.bandwidth_efficiency == BASE.bandwidth_efficiency and variant.fp8_gemm == ()
    assert BASE.fp8_variant() is BASE
    kv = replace(p, fp8_kv_decode=(("decode_attention_fixed_s", 9e-6), ("decode_attention_split_tokens", 256)),
                 fp8_kv_prefill=(("prefill_attention_compute_efficiency", 0.7),))
    text_kv = to_toml({"profile": kv.to_dict(), "fp8_gemm": dict(kv.fp8_gemm), "fp8_kv_decode": dict(kv.fp8_kv_decode),
                       "fp8_kv_prefill": dict(kv.fp8_kv_prefill), "fit": {"provenance": "test"}})
    assert "[fp8_kv_decode]" in text_kv and profile_from_table(tomllib.loads(text_kv), "t.toml") == kv
    assert kv.fp8_kv_variant().decode_attention_split_tokens == 256 and kv.fp8_kv_variant().fp8_gemm == kv.fp8_gemm
    assert kv.fp8_kv_prefill_variant().prefill_attention_compute_efficiency == 0.7
    assert kv.fp8_kv_prefill_variant().decode_attention_fixed_s == BASE.decode_attention_fixed_s
    table = tomllib.loads(text_kv)
    table["fp8_kv_decode"]["decode_attention_mha_overlap"] = 0.5
    with pytest.raises(ProfileError, match="fp8_kv_decode.decode_attention_mha_overlap is not an FP8-KV decode"):
        profile_from_table(table, "test.toml")
    table = tomllib.loads(text)
    table["fp8_gemm"]["kernel_fixed_s"] = 1e-6
    with pytest.raises(ProfileError, match="test.toml: fp8_gemm.kernel_fixed_s is not an FP8 GEMM field"):
        profile_from_table(table, "test.toml")
    table = tomllib.loads(text)
    table["fp8_gemm"]["compute_efficiency"] = 1.5
    with pytest.raises(ProfileError, match=r"fp8_gemm.compute_efficiency must be in \(0, 1\]"):
        profile_from_table(table, "test.toml")
    table = tomllib.loads(text)
    table["fp8_gemm"]["fp8_quantize_reads"] = 3
    with pytest.raises(ProfileError, match=r"fp8_gemm.fp8_quantize_reads must be 1 \(a given scale\) or 2"):
        profile_from_table(table, "test.toml")


@pytest.mark.parametrize("reads", [1, 2])
def test_calibrate_recovers_fp8_gemm_fields_apart_from_the_16_bit_ones(reads):
    """16-bit and FP8 GEMM rows of the same shapes (the FP8 ones with their quantization
    kernel and 6 us more of it; with reads = 2 a reduction kernel reading the activations
    first, as TRT-LLM's collector computes a scale a call), timed by a profile whose FP8
    kernels have tiles and efficiencies of their own, with 2% noise: the fit, told how
    often the quantization reads its input (a fact of the measurement: the framework's
    ``measured_fp8_quantize_reads``), finds both sets, each its own, and the GEMM's floor
    the 16-bit one's."""
    gpu = get_gpu("h100-sxm")
    truth = replace(BASE, bandwidth_efficiency=0.85, compute_efficiency=0.75, overlap=0.9, kernel_fixed_s=4e-6,
                    gemm_token_tile=128, gemm_tile_n=256, gemm_wave_quantization=0.2,
                    gemm_single_wave_quantization=0.1, elementwise_bandwidth_efficiency=0.8,
                    elementwise_fixed_s=2.5e-6,
                    fp8_gemm=(("bandwidth_efficiency", 0.9), ("compute_efficiency", 0.6), ("overlap", 0.7),
                              ("fp8_quantize_fixed_s", 6e-6), ("gemm_token_tile", 64), ("gemm_tile_n", 128),
                              ("fp8_quantize_reads", reads)))
    m = (1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 160, 320, 640)
    shapes = ((12288, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (2048, 2048), (4096, 512))
    rows = [{"op": op, "m": mm, "n": n, "k": k} for op in ("gemm", "fp8_gemm") for n, k in shapes for mm in m]
    rows += [{"op": "elementwise", "m": mm, "k": k, "bytes_per_element": 3} for mm in m for k in (4096, 14336)]
    table = check_kernel_table(pd.DataFrame(rows).assign(latency_s=1.0), "synthetic")
    noise = np.exp(np.random.default_rng(3).normal(0.0, 0.02, len(table)))
    table["latency_s"] = predict(table, gpu, truth) * noise
    fitted, _ = fit_profile(table, gpu, replace(BASE, fp8_gemm=(("fp8_quantize_reads", reads),)))
    fp8, want = dict(fitted.fp8_gemm), dict(truth.fp8_gemm)
    assert (fp8["gemm_token_tile"], fp8["gemm_tile_n"], fp8["fp8_quantize_reads"]) == (64, 128, reads)
    assert (fitted.gemm_token_tile, fitted.gemm_tile_n) == (128, 256)
    for name, tolerance in (("bandwidth_efficiency", 0.03), ("compute_efficiency", 0.05),
                            ("fp8_quantize_fixed_s", 0.15)):
        assert fp8[name] == pytest.approx(want[name], rel=tolerance), name
    assert "kernel_fixed_s" not in fp8 and fitted.fp8_variant().kernel_fixed_s == fitted.kernel_fixed_s
    assert fitted.compute_efficiency == pytest.approx(0.75, rel=0.05)
    assert fitted.kernel_fixed_s == pytest.approx(4e-6, rel=0.25)


def test_how_often_measured_fp8_layers_read_their_activations_is_the_frameworks():
    """TRT-LLM's collector computes a per-tensor scale each call (2 reads); vLLM's and
    SGLang's quantize each token in one kernel, and a table of a framework the catalog
    does not know (servesim profile's torch) casts with a given scale: 1, the default.
    A table without FP8 rows keeps no [fp8_gemm] table at all."""
    assert dict(measurement_base("trtllm").fp8_gemm) == {"fp8_quantize_reads": 2}
    assert measurement_base("vllm") is measurement_base("sglang") is measurement_base("torch") is BASE
    gpu = get_gpu("h100-sxm")
    rows = [{"op": "gemm", "m": m, "n": n, "k": 4096} for m in (1, 64, 512, 4096) for n in (4096, 12288, 28672)]
    table = check_kernel_table(pd.DataFrame(rows).assign(latency_s=1.0), "synthetic")
    table["latency_s"] = predict(table, gpu, BASE)
    fitted, notes = fit_profile(table, gpu, measurement_base("trtllm"))
    assert fitted.fp8_gemm == () and "fp8_gemm" in " ".join(notes)


def test_fp8_layers_halve_the_weights_a_decode_step_streams_hand_worked():
    """Llama-3.1-8B, one token: the qkv projection (n = 6,144, k = 4,096) streams one-byte
    weights and activations and writes 16-bit outputs in each of 32 layers; the
    lm_head (n = 128,256) stays 16-bit; attention is unchanged."""
    gpu, model = get_gpu("h100-sxm"), get_model("llama-3-1-8b")
    fp8 = {op.name: op for op in CostModel(gpu, model, quantization="fp8").step_cost(1, 1, 1024, "decode").ops}
    bf16 = {op.name: op for op in CostModel(gpu, model).step_cost(1, 1, 1024, "decode").ops}
    assert fp8["qkv_proj"].hbm_bytes == 32 * (6144 * 4096 + 4096 + 6144 * 2)
    assert bf16["qkv_proj"].hbm_bytes == 32 * (6144 * 4096 * 2 + 4096 * 2 + 6144 * 2)
    assert fp8["lm_head"] == bf16["lm_head"] and fp8["attn_qk"] == bf16["attn_qk"]
    assert fp8["mlp_down"].time_s < bf16["mlp_down"].time_s
    with pytest.raises(ValueError, match="no FP8 tensor cores"):
        CostModel(get_gpu("a100-80gb-sxm"), model, quantization="fp8")


def test_standalone_activation_quantization_charges_each_layer_the_measured_kernels_hand_worked(tmp_path, capsys):
    """Llama-3.1-8B on H100 under TRT-LLM's kernels, 8 tokens: with each FP8 layer
    quantizing its own input (``fp8_activation_quantization = "standalone"``) the qkv
    projection (k = 4,096) also moves the quantization's bytes in each of 32 layers: the
    profile's two reads of the 16-bit activations and one FP8 write, 8 x 4,096 x (2 + 2 +
    1) bytes, and takes those two kernels' time (the measured layers' reduction and scaling)
    and the fitted fixed time more; fused (the default) charges none. Standalone without
    FP8 layers is an error naming the keys."""
    gpu, model = get_gpu("h100-sxm", "trtllm"), get_model("llama-3-1-8b")
    p = gpu.profile.fp8_variant()
    assert p.fp8_quantize_reads == 2 and p.fp8_quantize_fixed_s > 0
    steps = {mode: {op.name: op for op in CostModel(gpu, model, quantization="fp8", fp8_activation_quantization=mode)
                    .step_cost(8, 1, 1024, "decode").ops} for mode in ("fused", "standalone")}
    fused, alone = steps["fused"]["qkv_proj"], steps["standalone"]["qkv_proj"]
    assert alone.hbm_bytes - fused.hbm_bytes == 32 * 8 * 4096 * (2 + 2 + 1)
    kernels_s = (kernels.elementwise(gpu, p, 8 * 4096 * 3, 1, False, 8, 4096)[1]
                 + kernels.elementwise(gpu, p, 8 * 4096 * 2, 1, False, 8, 4096)[1])
    assert alone.time_s - fused.time_s == pytest.approx(32 * (kernels_s + p.fp8_quantize_fixed_s))
    assert steps["fused"]["lm_head"] == steps["standalone"]["lm_head"]
    with pytest.raises(ValueError, match="fp8_activation_quantization must be one of fused, standalone"):
        CostModel(gpu, model, quantization="fp8", fp8_activation_quantization="dynamic")
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n[hardware]\ngpu = "h100-sxm"\n[model]\nmodel = "llama-3-1-8b"\n'
                    'fp8_activation_quantization = "standalone"\n[speculation]\nmethod = "none"\n')
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "model.fp8_activation_quantization" in err and 'model.quantization = "fp8"' in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_qwen3_trtllm_fp8_points_fit_layers_that_quantize_their_own_input(tp):
    """Qwen3-32B's measured TRT-LLM 1.0.0rc3 FP8 points (H100, ISL 1,024, OSL 256, 16
    clients; none fitted to): with each FP8 layer quantizing its own input as TRT-LLM's
    measured layers do, servesim's TPOT is within 10% of the measured; with the fused
    default it is more than 10% fast (Llama-3.1-70B's TRT-LLM points fit the fused one:
    the sample records neither release nor recipe)."""
    import sys
    from pathlib import Path

    from servesim.catalog import data_path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import e2e_check

    d = pd.read_csv(data_path(e2e_check.FP8_SAMPLE))
    row = d[(d.model == "qwen3-32b") & (d.backend == "trtllm") & (d.tp_size == tp) & (d.isl == 1024)
            & (d.osl == 256) & (d.batch_size == 16)].iloc[0]
    tpot_ms = {mode: 1e3 * e2e_check.simulate("h100-sxm", "trtllm", 1024, 256, 16, tp=tp, model="qwen3-32b",
                                              overrides=["model.quantization=fp8",
                                                         f"model.fp8_activation_quantization={mode}"])[1]
               for mode in ("fused", "standalone")}
    assert tpot_ms["standalone"] == pytest.approx(row["silicon_tpot_ms"], rel=0.10)
    assert tpot_ms["fused"] < 0.9 * row["silicon_tpot_ms"]


def test_fp8_weights_and_kv_cache_in_a_scenario_hand_worked(tmp_path):
    """Llama-3.1-8B's 6,979,321,856 linear-layer weights take one byte each under FP8
    (9.08 GB of weights, not 16.06); an FP8 KV cache holds 64 KiB a token, so twice the
    tokens fit in what is left of 0.9 x 80 GB."""
    from servesim.runner import build_cost_model, build_speculator, kv_capacity_tokens
    from servesim.scenario import load_scenario, weights_bytes

    model = get_model("llama-3-1-8b")
    assert model.linear_params == 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336) == 6_979_321_856
    base = ["hardware.gpu=h100-sxm", "model.model=llama-3-1-8b", "speculation.method=none"]
    text = 'name = "t"\n'
    plain, fp8, kv8 = (load_scenario("t.toml", base + q, text=text).points()[0]
                       for q in ([], ["model.quantization=fp8"], ["model.kv_cache_dtype=fp8"]))
    assert weights_bytes(plain.values) == 2 * model.params
    assert weights_bytes(fp8.values) == 2 * model.params - model.linear_params == 9_081_200_640
    free = 0.9 * 80e9 - 2 * model.params
    for point, per_token in ((plain, 2 * 32 * 8 * 128 * 2), (kv8, 2 * 32 * 8 * 128)):
        cost_model = build_cost_model(point)
        assert cost_model.kv_bytes_per_token() == per_token
        assert kv_capacity_tokens(point, cost_model, build_speculator(point, cost_model)) == int(free // per_token)


def test_fp8_on_a_gpu_without_fp8_tensor_cores_exits_2(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n[hardware]\ngpu = "a100-80gb-sxm"\n[model]\nmodel = "llama-3-1-8b"\n'
                    'quantization = "fp8"\n[speculation]\nmethod = "none"\n')
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "model.quantization" in err and "a100-80gb-sxm" in err and "h100-sxm" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    assert main(["cost", "--gpu", "a100-80gb-sxm", "--quantization", "fp8"]) == 2


def test_fp8_kv_cache_halves_the_kv_bytes_decode_attention_reads_hand_worked():
    """Llama-3.1-8B, one sequence at 4,096 cached tokens: each layer's decode attention
    reads the 4,097 keys and values of its 8 KV heads of 128 (one byte each under an FP8
    cache, two otherwise) and the query and output of 32 heads; and it runs with the
    profile's FP8-KV fields: 1 ms more of fixed time there is 1 ms more a layer. So does
    prefill attention, alone or as a mixed step's chunks, with its FP8-KV prefill fields."""
    gpu, model = get_gpu("h100-sxm"), get_model("llama-3-1-8b")
    p = gpu.profile
    slow = replace(p, fp8_kv_decode=(("decode_attention_fixed_s", p.decode_attention_fixed_s + 1e-3),))
    steps = {name: {op.name: op for op in CostModel(gpu, model, profile, kv_cache_dtype=kv)
                    .step_cost(1, 1, 4096, "decode").ops}
             for name, profile, kv in (("bf16", p, "auto"), ("fp8", replace(p, fp8_kv_decode=()), "fp8"),
                                       ("slow", slow, "fp8"))}
    for name, element_bytes in (("bf16", 2), ("fp8", 1)):
        per_layer = 2 * 4097 * 8 * 128 * element_bytes + 2 * 32 * 128 * element_bytes
        assert 2 * steps[name]["attn_qk"].hbm_bytes == pytest.approx(32 * per_layer)
    attention = {name: steps[name]["attn_qk"].time_s + steps[name]["attn_pv"].time_s for name in steps}
    assert attention["slow"] - attention["fp8"] == pytest.approx(32 * 1e-3)
    assert steps["fp8"]["qkv_proj"] == steps["bf16"]["qkv_proj"]  # the linear layers stay 16-bit
    # a prompt's attention writes the FP8 cache with the profile's FP8-KV prefill fields
    late = replace(p, fp8_kv_prefill=(("prefill_attention_fixed_s", p.prefill_attention_fixed_s + 1e-3),))
    prefill = {name: CostModel(gpu, model, profile, kv_cache_dtype=kv).step_cost(1, 512, 0, "prefill").ops
               for name, profile, kv in (("fp8", replace(p, fp8_kv_prefill=()), "fp8"), ("late", late, "fp8"),
                                         ("late16", late, "auto"))}
    attention = {name: sum(op.time_s for op in ops if op.name.startswith("attn_")) for name, ops in prefill.items()}
    assert attention["late"] - attention["fp8"] == pytest.approx(32 * 1e-3)
    assert attention["late16"] < attention["late"]  # (a 16-bit cache keeps the 16-bit fields)
    mixed = {name: CostModel(gpu, model, profile, kv_cache_dtype="fp8").mixed_step_cost(4, 1, 4096, "decode",
                                                                                         ((256, 0), (128, 64)))
             for name, profile in (("fp8", replace(p, fp8_kv_prefill=())), ("late", late))}
    assert mixed["late"].time_s - mixed["fp8"].time_s == pytest.approx(32 * 1e-3)


def test_calibrate_recovers_fp8_kv_decode_fields():
    """Decode attention over an FP8 KV cache, timed by a profile whose FP8-KV kernels
    stream at 70% of the bandwidth with a 12 us floor (the 16-bit ones: 90% and 8 us),
    2% noise: the fit of the variant finds its own values."""
    from servesim.hardware.calibrate import fit_op

    gpu = get_gpu("h100-sxm")
    base = replace(BASE, decode_attention_fixed_s=8e-6, decode_attention_bandwidth_efficiency=0.9,
                   decode_attention_overlap=0.5, l2_bandwidth_ratio=3.0)
    truth = replace(base, fp8_kv_decode=(("decode_attention_fixed_s", 12e-6),
                                         ("decode_attention_bandwidth_efficiency", 0.7)))
    rows = pd.DataFrame([{"op": "decode_attention_fp8_kv", "batch_size": b, "kv_len": s, "num_heads": h,
                          "num_kv_heads": kv, "head_dim": 128}
                         for b in (1, 4, 16, 64, 256) for s in (16, 256, 2048, 16384) for h, kv in ((32, 8), (8, 1))])
    rows = check_kernel_table(rows.assign(latency_s=1.0), "synthetic")
    rows["latency_s"] = predict(rows, gpu, truth) * np.exp(np.random.default_rng(5).normal(0, 0.02, len(rows)))
    fitted = fit_op("decode_attention_fp8_kv", rows, gpu, base)
    assert fitted.decode_attention_bandwidth_efficiency == pytest.approx(0.7, rel=0.05)
    assert fitted.decode_attention_fixed_s == pytest.approx(12e-6, rel=0.15)
    assert fitted.l2_bandwidth_ratio == 3.0  # the GPU's L2, as the 16-bit fit found it


@pytest.mark.parametrize("backend,gpu,tp,kv", [("vllm", "h100_sxm", 4, "auto"), ("vllm", "h100_sxm", 8, "auto"),
                                               ("vllm", "h200_sxm", 4, "auto"), ("vllm", "h200_sxm", 8, "auto"),
                                               ("trtllm", "h200_sxm", 4, "fp8"), ("trtllm", "h200_sxm", 8, "fp8"),
                                               ("trtllm", "b200_sxm", 4, "fp8"), ("trtllm", "b200_sxm", 8, "fp8")])
def test_measured_fp8_serving_points_tpot(backend, gpu, tp, kv):
    """Measured FP8 serving points (aiconfigurator-core's silicon sample: Llama-3.1-70B
    with FP8 linear layers, ISL = OSL = 1,024, 16 clients), none of them fitted to:
    servesim's closed loop (3 requests a client) gives their TPOT within 15%, vLLM's with
    its default 16-bit KV cache, TRT-LLM's with an FP8 one (the sample does not record the
    KV cache's dtype; TRT-LLM's FP8 recipe quantizes it, and with a 16-bit one these
    points come 2-11% slower). Not B200 under vLLM: its FP8 GEMM fit is the loosest (p90
    43%), and these points come 12-22% slow."""
    import sys
    from pathlib import Path

    from servesim.catalog import data_path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import e2e_check

    d = pd.read_csv(data_path(e2e_check.FP8_SAMPLE))
    row = d[(d.model == "llama-3-1-70b") & (d.backend == backend) & (d.system == gpu) & (d.tp_size == tp)
            & (d.isl == 1024) & (d.osl == 1024) & (d.batch_size == 16)].iloc[0]
    _, tpot_s = e2e_check.simulate(e2e_check.GPUS[gpu], backend, 1024, 1024, 16, rounds=3, tp=tp,
                                   model="llama-3-1-70b",
                                   overrides=["model.quantization=fp8", f"model.kv_cache_dtype={kv}"])
    assert tpot_s * 1e3 == pytest.approx(row["silicon_tpot_ms"], rel=0.15)


def test_fp8_load_study_draws_a_curve_per_setting(tmp_path, monkeypatch):
    """The bundled FP8 load study sweeps quantization and the KV cache's dtype as well as
    the rate: its latency-under-load figure draws one curve per pair, each named, and
    FP8 layers put Llama-3.1-70B's first tokens out sooner at light load (smaller GEMMs)."""
    pytest.importorskip("matplotlib")
    import servesim.plots as plots

    out = tmp_path / "run"
    assert main(["run", "fp8_llama3_70b_h100_load", "--out", str(out), "--jobs", "1", "--set", "num_requests=20",
                 "--set", "sweep.rate_per_s=[0.5, 1.0]"]) == 0
    summary = pd.read_parquet(out / "summary.parquet")
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    plots.latency_vs_load(summary, tmp_path / "x.png")
    labels = [t.get_text() for t in figures[0].legends[0].get_texts()]
    assert labels == [f"baseline quantization = {q}, kv_cache_dtype = {kv}"
                      for q in ("fp8", "none") for kv in ("auto", "fp8")]
    light = summary[summary.rate_per_s == 0.5].set_index(["quantization", "kv_cache_dtype"])
    assert light.loc[("fp8", "auto"), "baseline_ttft_p50_s"] < light.loc[("none", "auto"), "baseline_ttft_p50_s"]


def test_calibrate_recovers_fp8_kv_prefill_fields():
    """Prefill attention writing an FP8 KV cache, timed by a profile whose FP8-KV kernels
    compute at 70% of the peak with a 15 us floor (the 16-bit ones: 50% and 10 us), 2%
    noise: the fit of the variant finds its own values."""
    from servesim.hardware.calibrate import fit_op

    gpu = get_gpu("h100-sxm")
    base = replace(BASE, prefill_attention_fixed_s=10e-6, prefill_attention_compute_efficiency=0.5,
                   prefill_attention_per_seq_s=3e-7, l2_bandwidth_ratio=3.0)
    truth = replace(base, fp8_kv_prefill=(("prefill_attention_fixed_s", 15e-6),
                                          ("prefill_attention_compute_efficiency", 0.7)))
    rows = pd.DataFrame([{"op": "prefill_attention_fp8_kv", "batch_size": b, "seq_len": s, "num_heads": 32,
                          "num_kv_heads": kv, "head_dim": 128}
                         for b in (1, 4, 16) for s in (16, 64, 256, 1024, 4096) for kv in (8, 32) if b * s <= 16384])
    rows = check_kernel_table(rows.assign(latency_s=1.0), "synthetic")
    rows["latency_s"] = predict(rows, gpu, truth) * np.exp(np.random.default_rng(6).normal(0, 0.02, len(rows)))
    fitted = fit_op("prefill_attention_fp8_kv", rows, gpu, base)
    assert fitted.prefill_attention_compute_efficiency == pytest.approx(0.7, rel=0.05)
    assert fitted.prefill_attention_fixed_s == pytest.approx(15e-6, rel=0.2)


def test_a_scenario_overrides_the_fp8_kernels_own_fields(tmp_path, capsys):
    """[hardware.profile.fp8_gemm] (or --set hardware.profile.fp8_gemm.X) changes the FP8
    GEMMs' fields and only those, the bundled table's other FP8 fields kept; a field the
    table does not have exits 2 naming it."""
    from servesim.runner import build_cost_model
    from servesim.scenario import load_scenario

    text = ('name = "t"\n[hardware]\ngpu = "h100-sxm"\n[hardware.profile.fp8_gemm]\ncompute_efficiency = 0.2\n'
            '[model]\nmodel = "llama-3-1-8b"\nquantization = "fp8"\n[speculation]\nmethod = "none"\n')
    bundled = get_gpu("h100-sxm").profile
    for point in (load_scenario("t.toml", [], text=text).points()[0],
                  load_scenario("t.toml", ["hardware.profile.fp8_gemm.compute_efficiency=0.2"],
                                text=text.replace("compute_efficiency = 0.2", "")).points()[0]):
        assert point.profile_overrides == {"fp8_gemm.compute_efficiency": 0.2}
        cost_model = build_cost_model(point)
        fp8 = cost_model.profile.fp8_variant()
        assert fp8.compute_efficiency == 0.2 and cost_model.profile.compute_efficiency == bundled.compute_efficiency
        assert fp8.gemm_tile_n == bundled.fp8_variant().gemm_tile_n
    path = tmp_path / "t.toml"
    path.write_text(text.replace("compute_efficiency = 0.2", "kernel_fixed_s = 1e-6"))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "hardware.profile.fp8_gemm.kernel_fixed_s" in capsys.readouterr().err

"""Tensor parallelism: the all-reduce and a TP step against hand-worked values, memory
per GPU, and a 70B model served on 4 x H100."""

from dataclasses import replace

import pytest

from servesim.cli import main
from servesim.cost import kernels
from servesim.costmodel import CostModel
from servesim.hardware import get_gpu
from servesim.models import get_model


def test_ring_allreduce_hand_worked():
    """8 MB over 4 GPUs on NVLink 4 (450 GB/s per direction) at 70%: each GPU moves
    2 x 3/4 x 8 MB = 12 MB in 12e6 / 315e9 = 38.1 us, plus 5 us and 3 hops of 0.5 us."""
    gpu = get_gpu("h100-sxm")
    p = replace(gpu.profile, allreduce_fixed_s=5e-6, allreduce_hop_s=0.5e-6, allreduce_bandwidth_efficiency=0.7,
                allreduce_two_shot_s=0.0, allreduce_direct_gpus=0, allreduce_switch_gpus=0,
                allreduce_nccl_bytes=0)
    assert kernels.allreduce(gpu, p, 8e6, 4)[1] == pytest.approx(5e-6 + 3 * 0.5e-6 + 12e6 / (450e9 * 0.7))
    assert kernels.allreduce(gpu, p, 8e6, 1)[1] == 0


def test_one_shot_or_two_shot_allreduce_hand_worked():
    """8 GPUs on NVLink 4 at 50% (225 GB/s a link), two shots 10 us dearer: one shot moves
    7 x bytes, two 1.75 x bytes + 10 us, equal at 10e-6 x 225e9 / 5.25 = 428,571 bytes.
    256 KiB goes in one shot (8.16 us of wire, against 12.04), 1 MiB in two (8.16 + 10
    us, against 32.6). On two GPUs both move the message once: one shot, no extra."""
    gpu = get_gpu("h100-sxm")
    p = replace(gpu.profile, allreduce_fixed_s=0.0, allreduce_hop_s=0.0, allreduce_bandwidth_efficiency=0.5,
                allreduce_two_shot_s=10e-6, allreduce_direct_gpus=0, allreduce_switch_gpus=0,
                allreduce_nccl_bytes=0)
    assert kernels.allreduce(gpu, p, 2**18, 8)[1] == pytest.approx(7 * 2**18 / 225e9)
    assert kernels.allreduce(gpu, p, 2**20, 8)[1] == pytest.approx(1.75 * 2**20 / 225e9 + 10e-6)
    assert kernels.allreduce(gpu, p, 428_571, 8)[1] == pytest.approx(7 * 428_571 / 225e9, rel=1e-5)
    assert kernels.allreduce(gpu, p, 2**20, 2)[1] == pytest.approx(2**20 / 225e9)
    # the bytes a GPU receives are the chosen algorithm's
    assert kernels.allreduce(gpu, p, 2**18, 8)[0] == 7 * 2**18
    assert kernels.allreduce(gpu, p, 2**20, 8)[0] == pytest.approx(1.75 * 2**20)


def test_allreduce_reduced_in_the_switch_hand_worked():
    """8 H100s, two shots at 50% of NVLink 4 (225 GB/s) + 10 us, the switch at 60% (270
    GB/s) after 30 us: 1 GB in two shots takes 1.75e9 / 225e9 s + 10 us = 7.788 ms, in the
    switch 1e9 / 270e9 s + 30 us = 3.734 ms, so the switch, moving the message once each
    way. 4 GPUs are below the switch's group size (two shots: 6.677 ms); a 256 KiB message
    goes in one shot (8.2 us against 31.0 in the switch)."""
    gpu = get_gpu("h100-sxm")
    p = replace(gpu.profile, allreduce_fixed_s=0.0, allreduce_hop_s=0.0, allreduce_bandwidth_efficiency=0.5,
                allreduce_two_shot_s=10e-6, allreduce_direct_gpus=0, allreduce_switch_gpus=8,
                allreduce_switch_efficiency=0.6, allreduce_switch_s=30e-6, allreduce_nccl_bytes=0)
    link_bytes, seconds = kernels.allreduce(gpu, p, 1e9, 8)
    assert (link_bytes, seconds) == (pytest.approx(1e9), pytest.approx(30e-6 + 1e9 / 270e9))
    assert kernels.allreduce(gpu, p, 1e9, 4) == (pytest.approx(1.5e9), pytest.approx(1.5e9 / 225e9 + 10e-6))
    assert kernels.allreduce(gpu, p, 2**18, 8) == (7 * 2**18, pytest.approx(7 * 2**18 / 225e9))
    assert kernels.allreduce(gpu, replace(p, allreduce_switch_gpus=0), 1e9, 8)[1] == pytest.approx(7.788e-3, rel=1e-3)


def test_allreduce_handed_to_nccl_from_its_size_hand_worked():
    """H100s, the framework's kernel at 50% of NVLink 4 (225 GB/s) with two shots 10 us
    dearer, NCCL from 8 MiB at 75% (337.5 GB/s) after 40 us. On 2 GPUs 4 MiB goes in one
    shot (4,194,304 / 225e9 = 18.64 us); 8 MiB goes to NCCL although its kernel would be
    faster (40 + 8,388,608 / 337.5e9 s = 64.86 us, not 37.28): the size is the framework's
    rule. 1 GB: 40 us + 2.963 ms. On 8 GPUs the switch (60%, 270 GB/s, after 10 us) is
    NCCL's: 4 MiB stays two shots (1.75 x 4 MiB / 225e9 + 10 us = 42.62 us, though the
    switch would take 25.53), 1 GB goes to the switch (3.714 ms against NCCL's ring,
    5.225 ms)."""
    gpu = get_gpu("h100-sxm")
    p = replace(gpu.profile, allreduce_fixed_s=0.0, allreduce_hop_s=0.0, allreduce_bandwidth_efficiency=0.5,
                allreduce_two_shot_s=10e-6, allreduce_direct_gpus=0, allreduce_switch_gpus=0,
                allreduce_nccl_bytes=2**23, allreduce_nccl_s=40e-6, allreduce_nccl_bandwidth_efficiency=0.75)
    assert kernels.allreduce(gpu, p, 2**22, 2) == (2**22, pytest.approx(2**22 / 225e9))
    assert kernels.allreduce(gpu, p, 2**23, 2) == (2**23, pytest.approx(40e-6 + 2**23 / 337.5e9))
    assert kernels.allreduce(gpu, p, 1e9, 2)[1] == pytest.approx(40e-6 + 1e9 / 337.5e9)
    switch = replace(p, allreduce_switch_gpus=8, allreduce_switch_efficiency=0.6, allreduce_switch_s=10e-6)
    assert kernels.allreduce(gpu, switch, 2**22, 8) == (pytest.approx(1.75 * 2**22),
                                                        pytest.approx(1.75 * 2**22 / 225e9 + 10e-6))
    assert kernels.allreduce(gpu, switch, 1e9, 8) == (pytest.approx(1e9), pytest.approx(10e-6 + 1e9 / 270e9))
    assert kernels.allreduce(gpu, replace(switch, allreduce_switch_gpus=0), 1e9, 8)[1] == pytest.approx(
        40e-6 + 1.75e9 / 337.5e9)
    # no handoff (0): the switch at every size where it is faster
    assert kernels.allreduce(gpu, replace(switch, allreduce_nccl_bytes=0), 2**22, 8)[1] == pytest.approx(
        10e-6 + 2**22 / 270e9)


def test_allreduce_beyond_the_direct_group_shares_one_bus_hand_worked():
    """L40S (PCIe Gen4, 32 GB/s a direction), two GPUs peer to peer at 60%, larger groups
    through a shared bus at 50% of a link: 1 GB over 2 GPUs moves 1 GB a GPU at 19.2 GB/s
    (52.1 ms); over 4, all four GPUs' 1.5 GB (6 GB) cross 16 GB/s (375 ms); over 8, 14 GB
    (875 ms), as the measured 56 / 431 / 961 ms of vLLM's L40S table scale."""
    gpu = get_gpu("l40s")
    p = replace(gpu.profile, allreduce_fixed_s=0.0, allreduce_hop_s=0.0, allreduce_two_shot_s=0.0,
                allreduce_bandwidth_efficiency=0.6, allreduce_direct_gpus=2,
                allreduce_shared_bandwidth_efficiency=0.5, allreduce_nccl_bytes=0)
    assert kernels.allreduce(gpu, p, 1e9, 2)[1] == pytest.approx(1e9 / 19.2e9)
    assert kernels.allreduce(gpu, p, 1e9, 4)[1] == pytest.approx(6e9 / 16e9)
    assert kernels.allreduce(gpu, p, 1e9, 8)[1] == pytest.approx(14e9 / 16e9)
    # 0: every group runs over its own links
    assert kernels.allreduce(gpu, replace(p, allreduce_direct_gpus=0), 1e9, 8)[1] == pytest.approx(1.75e9 / 19.2e9)


def test_tp_step_splits_weights_heads_and_adds_two_allreduces_per_layer():
    """Llama-2-70B (64 heads, 8 KV heads, MLP 28672) at TP 4: each GPU's qkv GEMM is
    (16 + 2 x 2) heads x 128 wide, its MLP 7168 wide, its KV 2 heads; two all-reduces
    of tokens x 8192 x 2 B per layer. (Without the power throttle, which charges a step's
    GEMMs by their sum, not one GEMM alone.)"""
    gpu, m = get_gpu("h100-sxm"), get_model("llama-2-70b")
    steady = replace(gpu.profile, gemm_power_throttle_slowdown=1.0)
    cm = CostModel(gpu, m, steady, tensor_parallel_size=4)
    assert (cm.heads_per_gpu, cm.kv_heads_per_gpu) == (16, 2)
    ops = {op.name: op for op in cm.step_cost(8, 1, 8 * 1000, "decode").ops}
    one = CostModel(gpu, m, steady, tensor_parallel_size=1)
    assert ops["qkv_proj"].time_s == pytest.approx(one.gemm("q", 8, 8192, (16 + 4) * 128, 80).time_s)
    assert ops["mlp_down"].time_s == pytest.approx(one.gemm("d", 8, 7168, 8192, 80).time_s)
    link_bytes, once = kernels.allreduce(gpu, gpu.profile, 8 * 8192 * 2, 4)
    assert ops["allreduce"].time_s == pytest.approx(2 * 80 * once)
    assert ops["allreduce"].hbm_bytes == pytest.approx(2 * 80 * link_bytes)
    assert cm.kv_bytes_per_token() == 2 * 80 * 2 * 128 * 2  # K and V, 80 layers, 2 KV heads of 128
    # KV heads are replicated when there are fewer than GPUs: Llama-3-8B has 8
    assert CostModel(gpu, get_model("llama-3-8b"), tensor_parallel_size=8).kv_heads_per_gpu == 1


def test_more_gpus_decode_faster_but_not_linearly():
    gpu, m = get_gpu("h100-sxm"), get_model("llama-2-70b")
    t = {tp: CostModel(gpu, m, tensor_parallel_size=tp).step_cost(16, 1, 16 * 1024, "decode").time_s
         for tp in (2, 4, 8)}
    assert t[8] < t[4] < t[2]
    assert t[2] / t[4] < 2 and t[4] / t[8] < 2  # all-reduces and floors do not shrink


def test_tp_must_divide_heads():
    with pytest.raises(ValueError, match="must divide"):
        CostModel(get_gpu("h100-sxm"), get_model("llama-68m"), tensor_parallel_size=8)


def test_70b_on_four_h100s_serves_every_request(tmp_path, capsys):
    path = tmp_path / "tp4.toml"
    path.write_text("""
[hardware]
gpu = "h100-sxm"
tensor_parallel_size = 4
[model]
model = "llama-2-70b"
[speculation]
method = "draft_model"
draft_model = "llama-68m"
gamma = 3
[workload]
arrival = "poisson"
rate_per_s = 2.0
num_requests = 40
seq_len = 256
output_len = 32
[serving]
batching = "continuous"
batch_size = 16
""")
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--jobs", "1"]) == 0
    import pandas as pd
    s = pd.read_parquet(out / "summary.parquet").iloc[0]
    assert s["baseline_finished"] == s["spec_finished"] == 40
    # per GPU: 80 GB x 0.9 - (68.98B + 68M params) x 2 B / 4 = 37.5 GB for KV at 81,920 B a
    # token (70B: 80 layers x 2 KV heads x 128 x 2 x 2 B) + the draft's 2 layers x 12 x 64 x 2 x 2 B
    weights = (get_model("llama-2-70b").params + get_model("llama-68m").params) * 2 / 4
    kv = 2 * 80 * 2 * 128 * 2 + CostModel(get_gpu("h100-sxm"), get_model("llama-68m"), tensor_parallel_size=4).kv_bytes_per_token()
    assert s["kv_capacity_tokens"] == int((80e9 * 0.9 - weights) // kv)
    path.write_text(path.read_text().replace("tensor_parallel_size = 4", "tensor_parallel_size = 1"))
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(tmp_path / "x")]) == 2
    assert "the smallest tensor_parallel_size that fits on h100-sxm is 2" in capsys.readouterr().err


def _e2e_check():
    """tools/e2e_check.py, imported."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import e2e_check
    return e2e_check


def _silicon_point(model, backend, tp, isl, osl, concurrency):
    """One bf16 H100 SXM point of the silicon sample (its measured TTFT and TPOT, ms)."""
    import pandas as pd
    from servesim.catalog import data_path
    d = pd.read_csv(data_path(_e2e_check().SAMPLES[model]))
    return d[(d.backend == backend) & (d.system == "h100_sxm") & (d.tp_size == tp) & (d.isl == isl)
             & (d.osl == osl) & (d.batch_size == concurrency) & d.precision.isna()].iloc[0]


def _measured_and_simulated_tpot_ms(model, backend, tp, isl, osl, concurrency):
    """(measured, simulated) mean TPOT (ms) of one bf16 H100 SXM point of the silicon
    sample, simulated as tools/e2e_check.py does (a closed loop, the backend's framework
    profile and kernels)."""
    row = _silicon_point(model, backend, tp, isl, osl, concurrency)
    _, tpot_s = _e2e_check().simulate("h100-sxm", backend, isl, osl, concurrency, tp=tp, model=model)
    return row["silicon_tpot_ms"], tpot_s * 1e3


@pytest.mark.parametrize("tp,isl,osl,concurrency", [(1, 2048, 256, 8), (1, 2048, 128, 32), (2, 1024, 512, 16),
                                                   (4, 4096, 256, 64), (8, 4096, 512, 32)])
def test_measured_trtllm_serving_points_tpot(tp, isl, osl, concurrency):
    """Measured TRT-LLM serving points (aiconfigurator-core's silicon sample, H100 SXM,
    Llama-3.1-8B): servesim's closed loop gives their TPOT within 15%. Only TRT-LLM's
    per-step overhead was fitted to such points (TP 1, ISL 1,024 and 4,096); these are
    held out of that fit. (Not TP 8 with short prompts: there the measured TPOT carries
    about 8-13 ms a new request that servesim does not model, README's end-to-end
    paragraph; ISL 2,048 at 32 clients is 15% low.)"""
    measured, simulated = _measured_and_simulated_tpot_ms("llama-3-1-8b", "trtllm", tp, isl, osl, concurrency)
    assert simulated == pytest.approx(measured, rel=0.15)


def test_pcie_cards_take_the_measured_pcie_servers_allreduce():
    """A100 PCIe and H100 PCIe run their SXM siblings' kernels but are linked like the
    calibration data's only PCIe servers (L40S): two GPUs direct, larger groups over one
    shared bus. Their all-reduce fields are the L40S profile's of the same framework,
    every other field the sibling's; a profile asked for by name is taken whole."""
    from servesim.hardware import get_profile
    from servesim.hardware.gpu import ALLREDUCE_FIELDS

    assert "allreduce_direct_gpus" in ALLREDUCE_FIELDS and "kernel_fixed_s" not in ALLREDUCE_FIELDS
    for gpu_name, sibling in (("a100-80gb-pcie", "a100-sxm"), ("h100-pcie", "h100-sxm")):
        for framework in ("vllm", "trtllm"):
            gpu = get_gpu(gpu_name, framework)
            kernels_of, _ = get_profile(f"{sibling}-{framework}")
            links_of, _ = get_profile(f"l40s-{framework}")
            for name in ALLREDUCE_FIELDS:
                assert getattr(gpu.profile, name) == getattr(links_of, name), name
            assert replace(gpu.profile, **{n: getattr(kernels_of, n) for n in ALLREDUCE_FIELDS}) == kernels_of
    assert get_gpu("a100-80gb-pcie", kernel_profile="a100-sxm-vllm").profile == get_profile("a100-sxm-vllm")[0]
    # 1 GB over 4 A100 PCIe cards (Gen4, 32 GB/s a direction), handed to NCCL's ring
    # (from L40S vLLM's 2 MiB on): all four GPUs' 1.5 GB cross the shared bus
    gpu = get_gpu("a100-80gb-pcie")
    p = gpu.profile
    assert p.allreduce_direct_gpus == 2 and 0 < p.allreduce_nccl_bytes < 1e9
    expected = (p.allreduce_fixed_s + 3 * p.allreduce_hop_s + p.allreduce_nccl_s
                + 6e9 / (32e9 * p.allreduce_shared_bandwidth_efficiency))
    assert kernels.allreduce(gpu, p, 1e9, 4)[1] == pytest.approx(expected)


@pytest.mark.parametrize("tp,isl,osl,concurrency", [(4, 1024, 512, 128), (8, 4096, 1024, 128), (8, 1024, 512, 8),
                                                   (4, 4096, 1024, 8)])
def test_measured_vllm_serving_points_tpot(tp, isl, osl, concurrency):
    """Measured vLLM 0.12.0 serving points (aiconfigurator-core's silicon sample, H100 SXM,
    bf16 Qwen3-32B): servesim's closed loop gives their TPOT within 10%. vLLM's per-step
    and per-sequence times were fitted on the TP 2 points only; these TP 4 and 8 points
    are held out. With a per-step time alone (1.5 ms) these 128-client points were 19-21%
    low: the missing time grows with the sequences a step, not with the GPUs' work."""
    measured, simulated = _measured_and_simulated_tpot_ms("qwen3-32b", "vllm", tp, isl, osl, concurrency)
    assert simulated == pytest.approx(measured, rel=0.10)


@pytest.mark.parametrize("tp,isl,osl,concurrency", [(4, 2048, 256, 64), (8, 4096, 128, 128)])
def test_measured_sglang_serving_points_ttft_and_tpot(tp, isl, osl, concurrency):
    """Measured SGLang serving points (aiconfigurator-core's silicon sample, H100 SXM,
    Qwen3-32B, TP 4 and 8: held out of the fit of SGLang's overheads, which used TP 2).
    Under SGLang's own policy (prefill batches first, never mixed with decodes) a closed
    loop of equal requests stays in step, and both its TTFT (2.3 and 5.6 s measured) and
    its TPOT come within 15%; under vLLM's mixed steps the loop spreads out and its TTFT
    is under half the measured one."""
    simulate = _e2e_check().simulate
    row = _silicon_point("qwen3-32b", "sglang", tp, isl, osl, concurrency)
    ttft_s, tpot_s = simulate("h100-sxm", "sglang", isl, osl, concurrency, tp=tp, model="qwen3-32b")
    assert ttft_s * 1e3 == pytest.approx(row["silicon_ttft_ms"], rel=0.15)
    assert tpot_s * 1e3 == pytest.approx(row["silicon_tpot_ms"], rel=0.15)
    mixed_ttft_s, _ = simulate("h100-sxm", "sglang", isl, osl, concurrency, tp=tp, model="qwen3-32b",
                               overrides=["serving.scheduler=vllm"])
    assert mixed_ttft_s * 1e3 < 0.5 * row["silicon_ttft_ms"]

"""Catalog data against published figures."""

import pytest

from servesim.hardware import get_gpu, gpu_names
from servesim.models import get_model, model_names

# Totals in billions as the model authors publish them (LLaMA paper table 2, model cards),
# as written, so that the tolerance is the rounding of the last digit given.
PUBLISHED = {
    "llama-7b": "6.7", "llama-13b": "13.0", "llama-33b": "32.5", "llama-65b": "65.2",
    "llama-2-7b": "6.74", "llama-2-13b": "13.02", "llama-2-70b": "68.98",
    "llama-3-8b": "8.03", "llama-3-1-8b": "8.03", "llama-3-70b": "70.55", "mistral-7b": "7.24",
    "vicuna-7b": "6.7", "vicuna-13b": "13.0", "vicuna-33b": "32.5",
    "llama-68m": "0.068", "llama-160m": "0.16", "tinyllama-1.1b": "1.1",
    # model cards / the Hub's count of the released checkpoint
    "llama-3-1-70b": "70.55", "llama-3-2-1b": "1.24", "llama-3-2-3b": "3.21", "qwen2.5-7b": "7.61",
    "qwen3-8b": "8.2", "qwen3-32b": "32.8", "mistral-small-24b": "23.6", "gemma-2-9b": "9.24",
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_published_total(name):
    text = PUBLISHED[name]
    decimals = len(text.partition(".")[2])
    half_unit = 0.5 * 10.0 ** -decimals
    # 65.2B is how the LLaMA paper prints 65.29B: allow one unit of the last digit
    assert abs(get_model(name).params / 1e9 - float(text)) <= 2 * half_unit


def test_exact_llama7b_count():
    # LLaMA-7B checkpoint: 6,738,415,616 parameters (sum of tensor sizes of the release)
    assert get_model("llama-7b").params == 6_738_415_616


def test_every_catalog_model_is_checked():
    assert set(model_names()) == set(PUBLISHED)


def test_gqa_kv_cache_is_smaller():
    # Llama-2-70B: 80 layers x 8 KV heads x 128 dims x 2 (K, V) x 2 bytes = 327,680 B/token
    assert get_model("llama-2-70b").kv_bytes_per_token() == 80 * 8 * 128 * 2 * 2
    # LLaMA 7B: 32 layers x 4096 x 2 x 2 = 524,288 B/token
    assert get_model("llama-7b").kv_bytes_per_token() == 524_288


def test_required_gpus_and_datasheet_figures():
    required = {"a100-80gb-pcie", "a100-80gb-sxm", "h100-sxm", "h100-pcie", "h200", "l40s", "a10g"}
    assert required <= set(gpu_names())
    a100 = get_gpu("a100-80gb-pcie")
    assert a100.hbm_bandwidth_bytes_per_s == 1.935e12
    assert a100.peak_fp16_flops_per_s == 312e12
    assert a100.memory_bytes == 80e9
    for name in gpu_names():
        g = get_gpu(name)
        assert 0 < g.profile.bandwidth_efficiency <= 1 and g.source


def test_sm_limits_follow_the_compute_capability_table():
    """Resident threads and blocks an SM (CUDA programming guide, compute capabilities):
    sm_80 (A100), sm_90 (H100, H200) and sm_100 (B200) hold 2,048 threads and 32
    blocks; sm_89 (L40S) 1,536 and 24; sm_86 (A10G) 1,536 and 16."""
    expected = {"a100-80gb-pcie": (2048, 32), "a100-80gb-sxm": (2048, 32), "h100-sxm": (2048, 32),
                "h100-pcie": (2048, 32), "h200": (2048, 32), "b200": (2048, 32), "l40s": (1536, 24),
                "a10g": (1536, 16)}
    assert set(expected) == set(gpu_names())
    for name, limits in expected.items():
        gpu = get_gpu(name)
        assert (gpu.max_threads_per_sm, gpu.max_blocks_per_sm) == limits

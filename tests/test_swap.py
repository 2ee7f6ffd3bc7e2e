"""Swap preemption: the cost of a KV copy over the host link, worked out by hand, and
the scenario's rules."""

import pytest

from servesim.cli import main
from servesim.costmodel import CostModel
from servesim.hardware import get_gpu
from servesim.models import get_model


def test_kv_swap_cost_by_hand():
    """Llama-3-8B: 2 (K, V) x 32 layers x 8 KV heads x 128 x 2 bytes = 131,072 bytes a
    token. 1,000 tokens on an H100 (PCIe Gen5 x16, 64 GB/s, at 0.8): 131.072 MB /
    51.2 GB/s = 2.56 ms, plus the 20 us fixed time. Under TP2 each GPU copies its half
    (4 KV heads) over its own link: half the wire time."""
    gpu, model = get_gpu("h100-sxm"), get_model("llama-3-8b")
    cm = CostModel(gpu, model)
    assert cm.kv_bytes_per_token() == 131_072
    cost = cm.kv_swap_cost(1000, cm.kv_bytes_per_token())
    assert cost.time_s == pytest.approx(20e-6 + 131.072e6 / 51.2e9, rel=1e-12)
    assert cost.op_times()["kv_swap"] == cost.time_s
    tp2 = CostModel(gpu, model, tensor_parallel_size=2)
    assert tp2.kv_swap_cost(1000, tp2.kv_bytes_per_token()).time_s == pytest.approx(
        20e-6 + 131.072e6 / 2 / 51.2e9, rel=1e-12)
    # an A100 has PCIe Gen4: half the link
    a100 = CostModel(get_gpu("a100-80gb-sxm"), model)
    assert a100.kv_swap_cost(1000, 131_072).time_s == pytest.approx(20e-6 + 131.072e6 / 25.6e9, rel=1e-12)


SCENARIO = """
name = "swap"
[hardware]
gpu = "h100-sxm"
[model]
model = "llama-3-8b"
[speculation]
method = "none"
[workload]
arrival = "poisson"
rate_per_s = 20
num_requests = 300
seq_len = 512
output_len = 256
[serving]
batching = "continuous"
kv_cache = "paged"
kv_capacity_tokens = 30000
batch_size = 64
{extra}
[output]
write_steps = true
"""


def test_swap_needs_paged_kv(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(extra='preemption_mode = "swap"').replace('kv_cache = "paged"', ''))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "serving.preemption_mode" in err and "paged" in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_a_swap_run_finishes_every_request_and_reports_its_copies(tmp_path):
    """Under memory pressure with swap: every request finishes; each swap-out is a
    preemption; the swap stages' GPU time is the summary's swap time; every output token
    is generated once (no re-prefill token: a swapped request never recomputes)."""
    import pandas as pd

    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(extra='preemption_mode = "swap"'))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    summary = pd.read_parquet(tmp_path / "out" / "summary.parquet").iloc[0]
    steps = pd.read_parquet(tmp_path / "out" / "steps.parquet")
    requests = pd.read_parquet(tmp_path / "out" / "requests.parquet")
    base = requests[requests["arm"] == "baseline"]
    assert (base["status"] == "finished").all()
    assert summary["baseline_swap_outs"] > 0
    assert summary["baseline_swap_outs"] <= summary["baseline_preemptions"]
    swaps = steps[(steps["arm"] == "baseline") & (steps["stage"] == "swap")]
    assert swaps["duration_s"].sum() == pytest.approx(summary["baseline_swap_time_s"], rel=1e-12)
    assert (swaps["kv_swap_s"] == swaps["duration_s"]).all()
    generated = steps.loc[steps["arm"] == "baseline", "tokens_generated"].sum()
    recomputed = summary["baseline_preemptions"] - summary["baseline_swap_outs"]
    assert base["output_len"].sum() <= generated <= base["output_len"].sum() + recomputed

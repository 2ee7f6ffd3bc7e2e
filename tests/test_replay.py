"""`servesim replay RESULT.json`: a measured `vllm bench serve` run re-run in servesim.

The strong check: a result file written in vLLM's format from a servesim run itself
(its requests' lengths and send times, and its measured figures from summary.json) must
replay to the same figures, to rounding: same requests, same arrivals shifted to start
at 0, same server. Then hand-written files in vLLM's format: model ids mapped to the
catalog, max_concurrency as a closed loop, errors named.
"""

import json

import pandas as pd
import pytest

from servesim.cli import main
from servesim.replay import catalog_model, comparison

MEASURED = """
name = "measured"
[hardware]
gpu = "h100-sxm"
[model]
model = "llama-3-1-8b"
[speculation]
method = "none"
[workload]
arrival = "poisson"
rate_per_s = 12
num_requests = 150
prompt_dist = "uniform"
prompt_min = 50
prompt_max = 1500
output_dist = "uniform"
output_min = 2
output_max = 300
[serving]
batching = "continuous"
scheduler = "vllm"
kv_cache = "paged"
batch_size = 256
"""


def _vllm_result_from_run(folder, tmp_path, model_id="meta-llama/Llama-3.1-8B-Instruct"):
    """What `vllm bench serve --save-result --save-detailed` would have written."""
    record = json.loads((folder / "summary.json").read_text())[0]
    requests = pd.read_parquet(folder / "requests.parquet")
    base = requests[requests.arm == "baseline"].sort_values("request_id")
    result = {k: v for k, v in record.items() if k.endswith("_ms") or k in (
        "duration", "completed", "failed", "request_throughput", "output_throughput", "total_token_throughput",
        "request_rate", "burstiness", "max_concurrency")}
    result.update({"date": "20261201-120000", "backend": "vllm", "model_id": model_id,
                   "num_prompts": 150, "input_lens": base.prompt_len.tolist(),
                   "output_lens": base.output_len.tolist(),
                   "start_times": (base.arrival_s + 12345.0).tolist(),  # perf_counter's origin is arbitrary
                   "errors": [""] * len(base)})
    path = tmp_path / "vllm-result.json"
    path.write_text(json.dumps(result))
    return path


def test_replay_of_a_run_in_vllm_format_reproduces_it(tmp_path, capsys):
    (tmp_path / "m.toml").write_text(MEASURED)
    assert main(["run", str(tmp_path / "m.toml"), "--out", str(tmp_path / "measured")]) == 0
    path = _vllm_result_from_run(tmp_path / "measured", tmp_path)
    capsys.readouterr()
    assert main(["replay", str(path), "--gpu", "h100-sxm", "--out", str(tmp_path / "replayed")]) == 0
    out = capsys.readouterr().out
    assert "llama-3-1-8b on h100-sxm" in out and "arrival trace" in out
    table = pd.read_csv(tmp_path / "replayed" / "replay_comparison.csv")
    assert {"TTFT", "TPOT", "ITL", "E2EL", "request_throughput", "output_throughput"} <= set(table.metric)
    assert len(table) >= 4 * 6 + 3
    assert table["error_pct"].abs().max() < 1e-6


def test_replay_of_an_fp8_checkpoints_run_serves_it_in_fp8(tmp_path, capsys):
    """The same round trip with FP8 layers: a result whose model id names an FP8
    checkpoint replays in FP8 (to rounding); replayed as 16-bit it would be slower."""
    (tmp_path / "m.toml").write_text(MEASURED.replace('model = "llama-3-1-8b"',
                                                      'model = "llama-3-1-8b"\nquantization = "fp8"'))
    assert main(["run", str(tmp_path / "m.toml"), "--out", str(tmp_path / "measured")]) == 0
    path = _vllm_result_from_run(tmp_path / "measured", tmp_path, "nvidia/Llama-3.1-8B-Instruct-FP8")
    assert main(["replay", str(path), "--gpu", "h100-sxm", "--out", str(tmp_path / "replayed")]) == 0
    table = pd.read_csv(tmp_path / "replayed" / "replay_comparison.csv").set_index(["metric", "statistic"])
    assert table["error_pct"].abs().max() < 1e-6
    assert main(["replay", str(path), "--gpu", "h100-sxm", "--out", str(tmp_path / "as16"),
                 "--set", "quantization=none"]) == 0
    table = pd.read_csv(tmp_path / "as16" / "replay_comparison.csv").set_index(["metric", "statistic"])
    assert table.loc[("TPOT", "mean (ms)"), "error_pct"] > 10


def test_replay_of_a_hand_written_closed_loop_result(tmp_path, capsys):
    result = {"backend": "vllm", "model_id": "Qwen/Qwen3-8B", "max_concurrency": 4, "request_rate": "inf",
              "burstiness": 1.0, "duration": 10.0, "completed": 6, "failed": 1,
              "request_throughput": 0.6, "output_throughput": 60.0, "total_token_throughput": 600.0,
              "mean_ttft_ms": 30.0, "median_ttft_ms": 28.0, "p99_ttft_ms": 60.0,
              "mean_tpot_ms": 8.0, "median_tpot_ms": 8.0, "p99_tpot_ms": 9.0,
              "mean_itl_ms": 8.0, "median_itl_ms": 8.0, "p99_itl_ms": 12.0,
              "input_lens": [500, 600, 700, 800, 900, 1000, 1100],
              "output_lens": [100, 100, 100, 0, 100, 100, 100],
              "errors": ["", "", "", "Server disconnected", "", "", ""]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    assert main(["replay", str(path), "--gpu", "h100-sxm", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "qwen3-8b" in out and "arrival closed_loop" in out and "median |error|" in out
    table = pd.read_csv(tmp_path / "o" / "replay_comparison.csv").set_index(["metric", "statistic"])
    sim = table.loc[("TTFT", "mean (ms)"), "simulated"]
    assert table.loc[("TTFT", "mean (ms)"), "error_pct"] == pytest.approx((sim - 30.0) / 30.0 * 100)
    requests = pd.read_parquet(tmp_path / "o" / "requests.parquet")
    assert (requests.arm == "baseline").sum() == 6  # the failed request is not replayed
    assert "E2EL" not in set(table.index.get_level_values(0))  # not in the file: not compared


def test_replay_errors_exit_2(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"model_id": "some/unknown-model", "input_lens": [10], "output_lens": [5]}))
    assert main(["replay", str(path)]) == 2
    assert "--gpu" in capsys.readouterr().err
    assert main(["replay", str(path), "--gpu", "h100-sxm"]) == 2
    assert "--model" in capsys.readouterr().err
    (tmp_path / "plain.json").write_text('{"mean_ttft_ms": 3}')
    assert main(["replay", str(tmp_path / "plain.json"), "--gpu", "h100-sxm"]) == 2
    assert "--save-detailed" in capsys.readouterr().err


def test_model_ids_map_to_the_catalog():
    assert catalog_model("meta-llama/Llama-3.1-8B-Instruct") == "llama-3-1-8b"
    assert catalog_model("meta-llama/Meta-Llama-3-8B-Instruct") == "llama-3-8b"
    assert catalog_model("Qwen/Qwen2.5-7B-Instruct") == "qwen2.5-7b"
    assert catalog_model("mistralai/Mistral-Small-24B-Instruct-2501") == "mistral-small-24b"
    assert catalog_model("google/gemma-2-9b-it") == "gemma-2-9b"
    assert catalog_model("org/not-a-model") is None


def test_comparison_error_by_hand():
    table = comparison({"mean_ttft_ms": 20.0, "p99_ttft_ms": 50.0, "request_throughput": 4.0},
                       {"mean_ttft_ms": 25.0, "p99_ttft_ms": 40.0, "request_throughput": 4.0, "mean_itl_ms": 3.0})
    assert table["error_pct"].tolist() == pytest.approx([25.0, -20.0, 0.0])


def test_fp8_checkpoints_map_to_their_model_in_fp8():
    from servesim.replay import quantization_of
    assert catalog_model("nvidia/Llama-3.1-8B-Instruct-FP8") == "llama-3-1-8b"
    assert catalog_model("neuralmagic/Meta-Llama-3.1-70B-Instruct-FP8-dynamic") == "llama-3-1-70b"
    assert quantization_of("nvidia/Llama-3.1-8B-Instruct-FP8") == quantization_of("x/Qwen3-32B-fp8") == "fp8"
    assert quantization_of("meta-llama/Llama-3.1-8B-Instruct") == quantization_of(None) == "none"

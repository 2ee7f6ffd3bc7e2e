"""summary.json: the summary in the keys of a ``vllm bench serve`` result file, and the
latency-first table a load study prints."""

import json

import numpy as np
import pandas as pd
import pytest

from servesim.cli import main

SCENARIO = """
name = "bench"
[hardware]
gpu = "h100-sxm"
[model]
model = "llama-2-7b"
[speculation]
method = "draft_model"
num_speculative_tokens = 3
[workload]
arrival = "gamma"
cv = 2.0
num_requests = 120
prompt_dist = "uniform"
prompt_min = 20
prompt_max = 900
output_dist = "uniform"
output_min = 1
output_max = 200
[serving]
batching = "continuous"
batch_size = 16
ttft_slo_s = 0.5
[output]
percentiles = [25, 99.9]
[sweep]
rate_per_s = [2.0, 8.0]
"""

# the keys `vllm bench serve --save-result --percentile-metrics ttft,tpot,itl,e2el
# --metric-percentiles 25,50,99,99.9` writes (without --save-detailed), less the ones
# servesim does not produce (date, label, tokenizer_id, max_output_tokens_per_s, rtfx)
VLLM_KEYS = {"backend", "model_id", "num_prompts", "request_rate", "burstiness", "max_concurrency",
             "duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
             "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
             "max_concurrent_requests"} | {
    f"{stat}_{metric}_ms" for metric in ("ttft", "tpot", "itl", "e2el")
    for stat in ("mean", "median", "std", "p25", "p50", "p99", "p99.9")}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    (folder / "bench.toml").write_text(SCENARIO)
    assert main(["run", str(folder / "bench.toml"), "--out", str(folder / "out")]) == 0
    return folder / "out"


def test_summary_json_has_vllm_keys_per_point_and_arm(run_dir):
    records = json.loads((run_dir / "summary.json").read_text())
    assert [(r["point_id"], r["arm"]) for r in records] == [(0, "baseline"), (0, "spec"), (1, "baseline"), (1, "spec")]
    for r in records:
        assert VLLM_KEYS <= set(r), VLLM_KEYS - set(r)
        assert r["backend"] == "servesim" and r["request_rate"] == [2.0, 8.0][r["point_id"]]
        assert r["burstiness"] == pytest.approx(0.25)  # vLLM's gamma shape: 1 / cv^2
        assert r["max_concurrency"] is None
        assert r["median_ttft_ms"] == r["p50_ttft_ms"]
        assert r["request_goodput"] is not None  # an SLO is set
    spec = [r for r in records if r["arm"] == "spec"]
    for r in spec:
        assert 0 < r["spec_decode_acceptance_rate"] <= 100
        assert 1 < r["spec_decode_acceptance_length"] <= 4
        assert len(r["spec_decode_per_position_acceptance_rates"]) == 3


def test_summary_json_figures_from_the_request_table(run_dir):
    """Totals, throughputs and TTFT/E2E worked out from requests.parquet with numpy,
    the way vLLM's calculate_metrics works them out from its clients' records."""
    records = json.loads((run_dir / "summary.json").read_text())
    requests = pd.read_parquet(run_dir / "requests.parquet")
    for r in records:
        rows = requests[(requests.point_id == r["point_id"]) & (requests.arm == r["arm"])]
        done = rows[rows.status == "finished"]
        assert r["completed"] == len(done) == 120 and r["failed"] == 0
        assert r["total_input_tokens"] == done.prompt_len.sum()
        assert r["total_output_tokens"] == done.output_len.sum()
        duration = done.finish_s.max() - done.arrival_s.min()
        assert r["duration"] == pytest.approx(duration, rel=1e-12)
        assert r["request_throughput"] == pytest.approx(120 / duration, rel=1e-12)
        assert r["total_token_throughput"] == pytest.approx(
            (done.prompt_len.sum() + done.output_len.sum()) / duration, rel=1e-12)
        ttft = (done.first_token_s - done.arrival_s).to_numpy()
        e2el = (done.finish_s - done.arrival_s).to_numpy()
        multi = done.output_len > 1
        tpot = ((done.finish_s - done.first_token_s)[multi] / (done.output_len[multi] - 1)).to_numpy()
        for name, values in (("ttft", ttft), ("e2el", e2el), ("tpot", tpot)):
            assert r[f"mean_{name}_ms"] == pytest.approx(values.mean() * 1e3, rel=1e-9)
            assert r[f"std_{name}_ms"] == pytest.approx(values.std() * 1e3, rel=1e-9)
            for q in (25, 50, 99, 99.9):
                key = f"p{q:g}_{name}_ms"
                assert r[key] == pytest.approx(np.percentile(values, q) * 1e3, rel=1e-9), key
        # the speculative arm emits several tokens at once: ITL above TPOT
        if r["arm"] == "spec":
            assert r["mean_itl_ms"] > r["mean_tpot_ms"]


def test_load_study_prints_latency_first(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    for label in ("TTFT", "TPOT", "ITL", "E2E", "ratio p99", "goodput req/s", "saturated"):
        assert label in out
    summary = pd.read_parquet(run_dir / "summary.parquet")
    # the printed p99 E2E of the first point's baseline, in ms
    assert f"{summary.baseline_e2e_p99_s[0] * 1e3:,.0f}"[:3] in out or f"{summary.baseline_e2e_p99_s[0] * 1e3:.3g}" in out


@pytest.mark.parametrize("value, message", [("[]", "1 to 20"), ("[0]", "(0, 100]"), ("[101]", "(0, 100]"),
                                            ('["p99"]', "(0, 100]")])
def test_bad_percentiles_exit_2(tmp_path, capsys, value, message):
    path = tmp_path / "bad.toml"
    path.write_text(f"[output]\npercentiles = {value}\n")
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "output.percentiles" in err and message in err
    assert not (tmp_path / "out").exists()


def test_plot_draws_latency_cdfs_for_a_load_study(run_dir):
    pytest.importorskip("matplotlib")
    assert main(["plot", str(run_dir)]) == 0
    for name in ("latency_cdf.png", "kv_usage.png"):
        png = run_dir / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000, name


def test_steps_carry_the_kv_cache_usage(run_dir):
    """Each step's kv_used_tokens is what the cache held: never above the capacity, and
    at most the peak the run reports (sampled at step starts, the peak at every change)."""
    steps = pd.read_parquet(run_dir / "steps.parquet")
    summary = pd.read_parquet(run_dir / "summary.parquet").set_index("point_id")
    for (point, arm), rows in steps.groupby(["point_id", "arm"]):
        capacity = summary.loc[point, "kv_capacity_tokens"]
        used = rows["kv_used_tokens"]
        assert used.min() >= 0 and used.max() <= capacity
        assert used.max() <= summary.loc[point, f"{arm}_kv_peak_fraction"] * capacity * (1 + 1e-12)
        assert used.max() > 0


def test_figures_have_the_tables_permissions(run_dir):
    pytest.importorskip("matplotlib")
    assert main(["plot", str(run_dir)]) == 0
    table_mode = (run_dir / "summary.parquet").stat().st_mode & 0o777
    for png in run_dir.glob("*.png"):
        assert png.stat().st_mode & 0o777 == table_mode, png.name


def test_a_draft_model_sweep_is_drawn_against_gamma():
    from servesim.plots import length_axis
    frame = pd.DataFrame({"method": ["draft_model"] * 3, "gamma": [1, 2, 4], "candidate_tokens": [2, 3, 5]})
    assert length_axis(frame)[0] == "gamma" and "gamma" in length_axis(frame)[1]
    medusa = pd.DataFrame({"method": ["medusa"] * 2, "candidate_tokens": [8, 16]})
    assert length_axis(medusa)[0] == "candidate_tokens"


def test_stops_paying_by_hand():
    from servesim.cli import stops_paying
    frame = pd.DataFrame({"batching": ["continuous"] * 4 + ["static"] * 3,
                          "rate_per_s": [1.0, 2.0, 4.0, 8.0, 1.0, 2.0, 4.0],
                          "baseline_e2e_p99_s": [2.0, 3.0, 5.0, 9.0, 2.0, 2.0, 2.0],
                          "spec_e2e_p99_s": [1.0, 2.5, 5.5, 8.0, 3.0, 1.0, 1.0]})
    text = stops_paying(frame, ["batching"])
    # continuous: first worse at 4 (8 is better again, but 4 is where it stops helping)
    assert "batching = continuous: at 4 req/s (still helps at 2)" in text
    assert "batching = static: already worse at the lowest rate swept (1 req/s)" in text
    better = frame.assign(spec_e2e_p99_s=frame["baseline_e2e_p99_s"] * 0.5)
    assert "never worse than the baseline, up to 8 req/s" in stops_paying(better, ["batching"])

"""Scenario validation, overrides, CLI exit codes and the Parquet output contract."""

import pandas as pd
import pyarrow.parquet as pq
import pytest

from servesim import __version__
from servesim.cli import main
from servesim.results import read_metadata
from servesim.scenario import ScenarioError, load_scenario

SMALL = """
name = "small"
seed = 7
[hardware]
gpu = "a100-80gb-pcie"
[model]
model = "llama-7b"
[speculation]
method = "medusa"
[workload]
num_requests = 4
seq_len = 64
output_len = 9
[sweep]
candidate_tokens = [1, 16]
seq_len = [64, 128]
"""


def write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("edit,key,fragment", [
    (("[workload]", "[workload]\nprompt_tokens = 3"), "workload.prompt_tokens", "unknown key"),
    (("num_requests = 4", 'num_requests = "four"'), "workload.num_requests", "expected an integer"),
    (("seq_len = 64", "seq_len = -5"), "workload.seq_len", "must be >= 1"),
    (('gpu = "a100-80gb-pcie"', 'gpu = "tpu-v5"'), "hardware.gpu", "allowed: a100-80gb-pcie"),
    (('model = "llama-7b"', 'model = "gpt-5"'), "model.model", "allowed: llama-7b"),
    (('method = "medusa"', 'method = "lookahead"'), "speculation.method", "allowed: none, medusa"),
    (("[sweep]", "[sweep]\nbatch_size = 4"), "sweep.batch_size", "non-empty list"),
    (("[sweep]", "[sweep]\nfoo = [1]"), "foo", "unknown key"),
    (("[model]", "[modle]"), "modle", "unknown section"),
    (("seed = 7", "seed = true"), "seed", "expected an integer"),
])
def test_bad_input_names_file_and_key(tmp_path, edit, key, fragment):
    path = write(tmp_path, SMALL.replace(*edit))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert err.value.key == key
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_cli_bad_input_exits_2_without_traceback_and_writes_nothing(tmp_path, capsys):
    path = write(tmp_path, SMALL.replace("seq_len = 64", "seq_len = -5"))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "workload.seq_len" in err and str(path) in err
    assert not out.exists()


def test_not_toml_and_missing_file(tmp_path, capsys):
    assert main(["run", str(write(tmp_path, "name = ["))]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read file" in capsys.readouterr().err


def test_set_overrides_values_and_sweeps(tmp_path):
    path = write(tmp_path, SMALL)
    s = load_scenario(path, ["sweep.candidate_tokens=[1, 32, 64]", "gpu=h100-sxm", "workload.output_len=17"])
    assert s.sweep["candidate_tokens"] == [1, 32, 64]
    assert s.values["gpu"] == "h100-sxm" and s.values["output_len"] == 17
    # fixing a swept key removes it from the sweep
    s = load_scenario(path, ["seq_len=256"])
    assert "seq_len" not in s.sweep and s.values["seq_len"] == 256
    assert len(s.points()) == 2
    with pytest.raises(ScenarioError):
        load_scenario(path, ["nonsense=1"])


def test_sweep_is_cartesian_product_in_key_order(tmp_path):
    points = load_scenario(write(tmp_path, SMALL)).points()
    assert [(p["candidate_tokens"], p["seq_len"]) for p in points] == [(1, 64), (1, 128), (16, 64), (16, 128)]


def test_run_writes_contract_tables_with_metadata(tmp_path, capsys):
    path = write(tmp_path, SMALL)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 0
    assert "speedup" in capsys.readouterr().out
    summary = pd.read_parquet(out / "summary.parquet")
    for col in ("candidate_tokens", "batch_size", "seq_len", "gpu", "model", "method", "speedup",
                "speedup_p05", "speedup_p50", "speedup_p95", "acceptance_rate",
                "baseline_tokens_per_s", "spec_tokens_per_s", "step_time_ratio"):
        assert col in summary.columns
    assert len(summary) == 4
    requests = pd.read_parquet(out / "requests.parquet")
    assert set(requests["arm"]) == {"baseline", "spec"} and len(requests) == 4 * 4 * 2
    steps = pd.read_parquet(out / "steps.parquet")
    assert set(steps["stage"]) == {"prefill", "decode", "draft", "verify"}  # heads are charged by default
    assert {"qkv_proj_s", "attn_qk_s", "attn_pv_s", "mlp_up_s", "lm_head_s"} <= set(steps.columns)
    # per-operator columns add up to the stage duration
    ops = steps[[c for c in steps.columns if c.endswith("_s") and c not in ("start_s", "duration_s")]]
    assert (ops.sum(axis=1) - steps["duration_s"]).abs().max() < 1e-12
    for name in ("summary", "requests", "steps"):
        meta = read_metadata(out / f"{name}.parquet")
        assert meta["servesim.scenario"] == SMALL
        assert meta["servesim.version"] == __version__
        assert meta["servesim.seed"] == "7"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_same_seed_same_tables_bit_for_bit(tmp_path):
    path = write(tmp_path, SMALL)
    for d in ("a", "b"):
        assert main(["run", str(path), "--out", str(tmp_path / d)]) == 0
    for name in ("summary", "requests", "steps"):
        a = pq.read_table(tmp_path / "a" / f"{name}.parquet")
        b = pq.read_table(tmp_path / "b" / f"{name}.parquet")
        assert a.equals(b)
    assert main(["run", str(path), "--out", str(tmp_path / "c"), "--set", "seed=8"]) == 0
    a = pd.read_parquet(tmp_path / "a" / "requests.parquet")
    c = pd.read_parquet(tmp_path / "c" / "requests.parquet")
    assert not a.equals(c)


def test_cost_command_csv(capsys):
    assert main(["cost", "--tokens-per-seq", "1,16", "--context", "128", "--format", "csv"]) == 0
    import io
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert set(frame["tokens_per_seq"]) == {1, 16}
    assert set(frame["stage"]) == {"decode", "verify"}
    assert {"time_s", "flops", "hbm_bytes", "bound"} <= set(frame.columns)
    assert main(["cost", "--gpu", "nope"]) == 2
    # more tokens than one and no cached context: a prompt's prefill, whose lm_head runs
    # on each sequence's last token only, as a decode of the same batch does
    assert main(["cost", "--tokens-per-seq", "512,1", "--context", "0", "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(frame.groupby("tokens_per_seq")["stage"].first()) == ["decode", "prefill"]
    head = frame[frame["op"] == "lm_head"].set_index("tokens_per_seq")
    assert head.loc[512, "flops"] == head.loc[1, "flops"] and head.loc[512, "hbm_bytes"] == head.loc[1, "hbm_bytes"]


def test_list_prints_catalogs(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "a100-80gb-pcie" in text and "llama-2-70b" in text
    # a class whose measured rows calibrate left out says so (SGLang's elementwise proxy);
    # the all-reduce's and the FP8 kernels' fits are the last columns (their medians as the
    # report gives them); A100 has no FP8 tables
    sglang = next(line for line in text.splitlines() if line.strip().startswith("h100-sxm-sglang "))
    from servesim.hardware import get_profile
    fit = get_profile("h100-sxm-sglang")[1]["fit"]
    last = [f"{fit['in_sample'][op]['median_abs_pct']:.1f} / {fit['out_of_sample'][op]['median_abs_pct']:.1f}"
            for op in ("allreduce", "fp8_gemm", "decode_attention_fp8_kv", "prefill_attention_fp8_kv")]
    assert sglang.split()[-14:] == ["left", "out", *" ".join(last).split()], sglang
    a100 = next(line for line in text.splitlines() if line.strip().startswith("a100-sxm-vllm "))
    assert a100.split()[-3:] == ["-", "-", "-"]


@pytest.mark.parametrize("extra,key,fragment", [
    ('acceptance = "tree"\nhead_accuracy = "vicuna-7b"\ntree = "nope"', "speculation.tree", "allowed: mc_sim_7b_63"),
    ('acceptance = "tree"\nhead_accuracy = "gpt"', "speculation.head_accuracy", "bundled table"),
    ('acceptance = "tree"', "speculation.head_accuracy", "model's own table"),  # llama-7b has none
    ('acceptance = "tree"\ntree = "mc_sim_7b_63"\nhead_accuracy = "vicuna-7b"\ncandidate_tokens = 80',
     "speculation.candidate_tokens", "64 tokens"),
])
def test_tree_settings_are_validated(tmp_path, extra, key, fragment):
    text = SMALL.replace('method = "medusa"', 'method = "medusa"\n' + extra).replace("candidate_tokens = [1, 16]", "seq_len_unused = 0")
    text = text.replace("seq_len_unused = 0\n", "")
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, text))
    assert err.value.key == key and fragment in str(err.value)


def test_draft_model_alpha_must_be_below_one(tmp_path):
    text = SMALL.replace('method = "medusa"', 'method = "draft_model"\nalpha = 1.0')
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, text))
    assert err.value.key == "speculation.alpha"


def test_scheduler_defaults_to_the_frameworks_own(tmp_path, capsys):
    """serving.scheduler left out runs the framework's policy (SGLang's for sglang, vLLM's
    for the others), one given runs as given; SGLang's with paged KV (vLLM's block
    manager) is refused with exit 2, saying which policy the point runs and why."""
    base = ('[serving]\nbatching = "continuous"\nbatch_size = 4\n'
            '[workload]\narrival = "closed_loop"\nclients = 2\nnum_requests = 4\n')
    for framework, scheduler, expected in (("sglang", None, "sglang"), ("vllm", None, "vllm"),
                                           ("trtllm", None, "vllm"), ("sglang", "vllm", "vllm")):
        text = base.replace("batch_size = 4", f'batch_size = 4\nframework = "{framework}"'
                            + (f'\nscheduler = "{scheduler}"' if scheduler else ""))
        (point,) = load_scenario(write(tmp_path, text)).points()
        assert point["scheduler"] == expected, (framework, scheduler)
    path = write(tmp_path, base.replace("batch_size = 4", 'batch_size = 4\nframework = "sglang"\n'
                                                          'kv_cache = "paged"'))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "serving.kv_cache" in err and '"sglang"' in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_token_budget_defaults_to_the_frameworks_on_the_gpu(tmp_path, capsys):
    """max_num_batched_tokens left out is the framework's default on the point's GPU:
    vLLM's OpenAI server 8,192 on H100 and 2,048 on A100 (its rule: 70 GiB or more and not
    an A100), SGLang's chunked_prefill_size 16,384 on B200, TRT-LLM's 8,192; a value given
    is kept (0: no limit). Too small a default for the running decodes exits 2 and says
    whose default it is."""
    from servesim.scenario import token_budget_of
    base = {"max_num_batched_tokens": -1}
    for framework, gpu, expected in (("vllm", "h100-sxm", 8192), ("vllm", "a100-80gb-pcie", 2048),
                                     ("vllm", "a100-80gb-sxm", 2048), ("sglang", "b200", 16384),
                                     ("sglang", "h100-sxm", 8192), ("trtllm", "l40s", 8192)):
        assert token_budget_of({**base, "framework": framework, "gpu": gpu}) == expected, (framework, gpu)
    from servesim.hardware import framework_names, get_framework, gpu_names
    for name in framework_names():  # every GPU a framework names is in the catalog
        assert set(get_framework(name).max_num_batched_tokens) - {"default"} <= set(gpu_names()), name
    assert token_budget_of({"max_num_batched_tokens": 0, "framework": "vllm", "gpu": "a100-80gb-pcie"}) == 0
    assert token_budget_of({"max_num_batched_tokens": 4096, "framework": "vllm", "gpu": "h100-sxm"}) == 4096
    text = ('[serving]\nbatching = "continuous"\nbatch_size = 2048\n'
            '[workload]\narrival = "closed_loop"\nclients = 2\nnum_requests = 4\n')
    assert main(["run", str(write(tmp_path, text)), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "serving.max_num_batched_tokens" in err and "2048 (serving.framework \"vllm\"'s default on " \
        "a100-80gb-pcie)" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_plot_writes_a_png_and_explains_what_it_needs(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path, SMALL)), "--out", str(out)]) == 0
    assert main(["plot", str(out), "--reference"]) == 0
    for name in ("speedup_vs_candidates", "verify_breakdown", "request_speedup"):
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_replications_give_an_interval_and_tagged_rows(tmp_path):
    out = tmp_path / "out"
    path = write(tmp_path, SMALL.replace("seed = 7", "seed = 7\nreplications = 3"))
    assert main(["run", str(path), "--out", str(out), "--set", "sweep.candidate_tokens=[16]"]) == 0
    summary = pd.read_parquet(out / "summary.parquet")
    assert (summary["replications"] == 3).all()
    assert (summary["speedup_ci95_low"] < summary["speedup"]).all()
    assert (summary["speedup"] < summary["speedup_ci95_high"]).all()
    requests = pd.read_parquet(out / "requests.parquet")
    assert set(requests["replication"]) == {0, 1, 2}
    # replications draw different acceptance outcomes
    per_rep = requests[requests.arm == "spec"].groupby("replication")["accepted_tokens"].sum()
    assert per_rep.nunique() > 1


def test_acceptance_histogram_counts_every_request_step(tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path, SMALL)), "--out", str(out)]) == 0
    hist = pd.read_parquet(out / "acceptance.parquet")
    requests = pd.read_parquet(out / "requests.parquet")
    spec = requests[requests.arm == "spec"]
    steps = spec.groupby("point_id")["verify_steps"].sum()
    counted = hist.groupby("point_id")["count"].sum()
    assert (counted == steps.loc[counted.index]).all()
    drawn = (hist["tokens"] * hist["count"]).groupby(hist["point_id"]).sum()
    assert (drawn == spec.groupby("point_id")["accepted_tokens"].sum().loc[drawn.index]).all()
    assert hist.groupby("point_id")["fraction"].sum().round(12).eq(1.0).all()


def test_t_quantiles_from_tables():
    from servesim.runner import t_quantile_975
    assert t_quantile_975(1) == 12.706
    assert t_quantile_975(9) == 2.262
    assert abs(t_quantile_975(60) - 2.000) < 0.002  # table: 2.000
    assert abs(t_quantile_975(120) - 1.980) < 0.002  # table: 1.980


def test_parallel_run_is_identical_to_serial(tmp_path):
    path = write(tmp_path, SMALL)
    assert main(["run", str(path), "--out", str(tmp_path / "serial"), "--jobs", "1"]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "parallel"), "--jobs", "2"]) == 0
    for name in ("summary", "requests", "steps", "acceptance"):
        assert pq.read_table(tmp_path / "serial" / f"{name}.parquet").equals(
            pq.read_table(tmp_path / "parallel" / f"{name}.parquet"))


def test_sampled_or_switched_off_rows_leave_the_summary_exact(tmp_path):
    path = write(tmp_path, SMALL.replace("num_requests = 4", "num_requests = 12"))
    assert main(["run", str(path), "--out", str(tmp_path / "full")]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "sampled"), "--set", "sample_every=3",
                 "--set", "write_steps=false"]) == 0
    full = pq.read_table(tmp_path / "full" / "summary.parquet")
    assert full.equals(pq.read_table(tmp_path / "sampled" / "summary.parquet"))
    assert not (tmp_path / "sampled" / "steps.parquet").exists()
    sampled = pd.read_parquet(tmp_path / "sampled" / "requests.parquet")
    assert set(sampled["request_id"]) == {0, 3, 6, 9}


def test_part_files_stream_in_row_groups_and_merge_back(tmp_path):
    from servesim.recorder import Recorder
    from servesim.results import PartSink, requests_frame, write_tables
    rows = [(0, "spec", i, 0.0, 0.1, 0.2, 0.3, 10, 5, 2, 4, 0.1, 0.05, 0.05, "finished", 0) for i in range(7)]
    sink = PartSink(tmp_path, 0, 0)
    rec = Recorder(sink=sink, flush_rows=2)
    for row in rows:
        rec.add_request(row)
    rec.flush()
    part = sink.close()["requests"]
    assert pq.ParquetFile(part).num_row_groups == 4  # 2 + 2 + 2 + 1 rows
    out = tmp_path / "out"
    write_tables(out, {}, "x = 1", 0, {"requests": [part]})
    merged = pd.read_parquet(out / "requests.parquet")
    pd.testing.assert_frame_equal(merged, requests_frame(rows))
    assert read_metadata(out / "requests.parquet")["servesim.scenario"] == "x = 1"


def test_ray_executor_matches_local(tmp_path):
    pytest.importorskip("ray")  # the optional servesim[ray] extra
    path = write(tmp_path, SMALL)
    assert main(["run", str(path), "--out", str(tmp_path / "local"), "--jobs", "1"]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "ray"), "--executor", "ray", "--jobs", "2"]) == 0
    for name in ("summary", "requests", "steps", "acceptance"):
        assert pq.read_table(tmp_path / "local" / f"{name}.parquet").equals(
            pq.read_table(tmp_path / "ray" / f"{name}.parquet"))


def test_ray_executor_without_ray_explains_the_extra(tmp_path, capsys):
    import importlib.util
    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed; test_ray_executor_matches_local covers it")
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path, SMALL)), "--out", str(out), "--executor", "ray"]) == 2
    assert "servesim[ray]" in capsys.readouterr().err
    assert not out.exists()

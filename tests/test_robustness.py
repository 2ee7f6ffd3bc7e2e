"""Bad input never crashes or hangs servesim: every generated input either runs or exits
2 with one message naming the file (and key or column); never a traceback.

Generated with hypothesis: scenarios with 1-3 keys of the schema set to values of every
kind (right and wrong types, zero, negative, huge, NaN, inf, control characters), plain
or through ``--set``; and each input file kind (trace, length file, head accuracies,
acceptance curve, tree paths, kernel profile, Parquet tables for ``plot``) with random
columns and cells. Runs that validate are kept small (few requests, a simulated-time
cut) so that a case takes milliseconds; the bounds themselves are tested directly.
"""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from servesim.cli import main
from servesim.inputs import MAX_CANDIDATES, MAX_REQUESTS
from servesim.scenario import SCHEMA

BASE = {"workload.num_requests": 6, "workload.seq_len": 32, "workload.output_len": 5,
        "serving.max_sim_time_s": 2.0, "output.write_steps": False}
"""Every generated scenario starts small (fast to run when it validates)."""

KEYS = sorted(f"{s}.{k}" if s else k for s, keys in SCHEMA.items() for k in keys)
SIZES = {"workload.num_requests", "workload.clients", "replications", "serving.batch_size",
         "speculation.candidate_tokens", "speculation.gamma", "workload.seq_len", "workload.output_len",
         "workload.prompt_max", "workload.output_max", "workload.prompt_min", "workload.output_min",
         "speculation.num_heads", "speculation.accepted_tokens", "speculation.max_accepted",
         "serving.max_num_batched_tokens", "output.sample_every"}

weird_numbers = st.sampled_from([0, -1, 1, 2, 3, 7, 113, 2**31, 2**63 - 1, 10**19, 0.5, -0.5, 1e-300, 1e300,
                                 1e308, math.inf, -math.inf, math.nan, 1.0, 64, 100_000])
weird_strings = st.sampled_from(["", "x", "none", "medusa", "draft_model", "tree", "curve", "fixed",
                                 "poisson", "gamma", "trace", "closed_loop", "continuous", "static",
                                 "a\x00b", "é", "h100-sxm", "llama-68m", "medusa-paper", "vllm",
                                 "/nonexistent/file.csv", "x" * 5000, "../../etc/passwd"])
weird_lists = st.sampled_from([[], [1], [[0]], [[0], [0, 0], [1]], [[1000000000]], [[0]] * 2000,
                               [0.5, 0.5], [1.5], ["a"], [[0, -1]], [[]], [math.nan]])
values = st.one_of(weird_numbers, weird_strings, weird_lists, st.booleans(), st.dictionaries(
    st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2))


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\x00", "\\u0000") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def scenario_text(assignments: dict) -> str:
    sections: dict[str, dict] = {}
    for dotted, v in assignments.items():
        section, _, key = dotted.rpartition(".")
        sections.setdefault(section, {})[key] = v
    lines = [f"{k} = {toml_value(v)}" for k, v in sections.pop("", {}).items()]
    for section, entries in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in entries.items())
    return "\n".join(lines) + "\n"


def run_cli(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    from hypothesis import event
    try:
        event(f"exit {code}")
    except Exception:  # outside a hypothesis test
        pass
    return code, err


def check_outcome(code: int, err: str, file: Path) -> None:
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.startswith("servesim: error: ") and "Traceback" not in err
        assert str(file) in err or file.name in err, err


def small_enough(assignments: dict) -> bool:
    """Runs that validate must stay fast: sizes that are valid but large are only
    validated by the bound tests below."""
    for key in SIZES:
        v = assignments.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 200:
            return False
    return True


def plausible(dotted: str):
    """Values a user could mean for this key: its allowed names, small numbers."""
    section, _, key = dotted.rpartition(".")
    spec = SCHEMA.get(section, {}).get(key)
    if spec is None:
        return values
    allowed = spec.allowed()
    if allowed:
        return st.sampled_from(allowed)
    if spec.type is bool:
        return st.booleans()
    if spec.type is int:
        return st.integers(0, 40)
    if spec.type is float:
        return st.sampled_from([0.0, 0.01, 0.5, 0.9, 1.0, 2.0, 30.0])
    if spec.type is str:
        return st.just(spec.default or "")
    return st.just(spec.default)


@st.composite
def assignments(draw):
    names = KEYS + ["sweep.seq_len", "sweep.candidate_tokens", "sweep", "hardware.profile",
                    "hardware.profile.overlap", "bogus.key", "serving.bogus"]
    keys = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    # mostly values a user could mean (so that many cases run), some of every other kind
    return {k: draw(st.one_of(values, *[plausible(k)] * 4)) for k in keys}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(assignments(), st.booleans())
def test_generated_scenarios_run_or_exit_2(tmp_path_factory, capsys, assignments, through_set):
    assume(small_enough(assignments))
    tmp = tmp_path_factory.mktemp("gen")
    path = tmp / "s.toml"
    if through_set:
        path.write_text(scenario_text(BASE))
        argv = ["run", str(path), "--out", str(tmp / "out"), "--jobs", "1"]
        for k, v in assignments.items():
            argv += ["--set", f"{k}={toml_value(v)}"]
    else:
        try:
            path.write_text(scenario_text({**BASE, **assignments}))
        except UnicodeEncodeError:
            return
        argv = ["run", str(path), "--out", str(tmp / "out"), "--jobs", "1"]
    code, err = run_cli(argv, capsys)
    check_outcome(code, err, path)
    if code == 2:
        assert not (tmp / "out").exists()  # nothing written


@pytest.mark.parametrize("key,value", [
    ("workload.num_requests", MAX_REQUESTS + 1), ("workload.num_requests", 2**63 - 1),
    ("replications", 2**63 - 1), ("workload.clients", 2**63 - 1), ("speculation.candidate_tokens", 10**9),
    ("speculation.candidate_tokens", MAX_CANDIDATES + 1), ("speculation.gamma", 2**63 - 1),
    ("speculation.tree_paths", [[1000000000]]), ("workload.output_sigma", 1e308),
    ("workload.output_sigma", math.nan), ("workload.cv", math.inf), ("workload.cv", 1e308),
    ("workload.think_time_s", math.inf), ("hardware.profile.bandwidth_efficiency", 2),
    ("hardware.profile.overlap", math.nan), ("hardware.profile.gemm_token_tile", math.inf),
    ("hardware.profile.kernel_fixed_s", 1e300), ("speculation.candidate_tokens", 113),
    ("hardware.profile.gemm_single_wave_quantization", -0.5), ("hardware.profile.decode_attention_split_tokens", 0.5),
    ("hardware.profile.gemm_l2_resident_fraction", 1.5), ("hardware.profile.gemm_tile_overhead_k", -64),
    ("hardware.profile.gemm_power_throttle_ramp_s", -0.01), ("hardware.profile.prefill_attention_tile_head_dim", -128),
    ("hardware.profile.decode_attention_split_block_tokens", -128), ("hardware.profile.decode_attention_split_waves", -1),
    ("hardware.profile.prefill_attention_kv_passes", 0), ("hardware.profile.prefill_attention_kv_passes", 1.5),
    ("hardware.profile.prefill_attention_bandwidth_efficiency", 1.2),
    ("hardware.profile.elementwise_next_wave_fraction", -0.1),
    ("hardware.profile.allreduce_direct_gpus", 1.5), ("hardware.profile.allreduce_shared_bandwidth_efficiency", 0),
    ("hardware.profile.decode_attention_mha_blocks_per_sm", 0), ("hardware.profile.decode_attention_mha_longest_block", -0.5),
    ("hardware.profile.decode_attention_mha_per_kv_head_s", -0.5),
    ("hardware.profile.kv_write_block_s", -1e-6), ("hardware.profile.prefill_attention_tail_blocks", -0.1), ("hardware.profile.attention_softmax_pair_s", -1e-12), ("hardware.profile.decode_attention_fixed_per_dim_s", -1e-9), ("hardware.profile.kv_write_block_threads", 2048),
    ("hardware.profile.allreduce_two_shot_s", -1e-6), ("hardware.profile.allreduce_switch_gpus", -8),
    ("hardware.profile.allreduce_switch_efficiency", 1.5), ("hardware.profile.allreduce_switch_s", math.inf),
    ("hardware.profile.allreduce_nccl_bytes", 0.5), ("hardware.profile.allreduce_nccl_bytes", -1),
    ("hardware.profile.allreduce_nccl_s", 2.0), ("hardware.profile.allreduce_nccl_bandwidth_efficiency", 1.5),
    ("name", "a\x00b"), ("output.dir", "a\x00b"),
])
def test_documented_bounds_refuse_before_anything_runs(tmp_path, capsys, key, value):
    assignments = {**BASE, key: value}
    if key == "speculation.tree_paths":
        assignments["speculation.acceptance"] = "tree"
    path = tmp_path / "s.toml"
    path.write_text(scenario_text(assignments))
    code, err = run_cli(["run", str(path), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and key.rpartition(".")[2] in err, err
    assert not (tmp_path / "out").exists()


def test_lognormal_lengths_never_wrap(tmp_path, capsys):
    """sigma 10 (the largest allowed) draws lengths up to e^50 x the median: clipped to
    the length bound, never wrapped to negative integers."""
    from servesim.workload import draw_lengths
    import numpy as np
    lengths = draw_lengths(np.random.default_rng(0), 100_000, "lognormal", 10**6, 1, 1, 10.0, "", "")
    assert lengths.min() >= 1 and lengths.max() <= 10_000_000


def test_weights_that_do_not_fit_are_refused_whatever_the_kv_override(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(scenario_text({**BASE, "model.model": "llama-2-70b", "hardware.gpu": "a100-80gb-sxm",
                                   "speculation.method": "none", "serving.kv_capacity_tokens": 100_000}))
    code, err = run_cli(["run", str(path), "--out", str(tmp_path / "out")], capsys)
    # 68.98e9 parameters x 2 bytes
    assert code == 2 and "138.0 GB of weights" in err and "72.0 GB" in err, err
    assert "smallest tensor_parallel_size that fits on a100-80gb-sxm is 2" in err


def test_not_utf8_and_non_table_set(tmp_path, capsys):
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfename = 1\n")
    assert run_cli(["run", str(bad)], capsys)[0] == 2
    flat = tmp_path / "flat.toml"
    flat.write_text("sweep = 3\nserving = 4\n")
    for setting in ("sweep.seq_len=[1]", "batch_size=2", "hardware.profile.overlap=0.5"):
        code, err = run_cli(["run", str(flat), "--set", setting], capsys)
        assert code == 2 and "not a table" in err, err


# -- input files ------------------------------------------------------------------------

cells = st.sampled_from(["1", "0", "-1", "2", "0.5", "1.5", "1e19", "18446744073709551615", "nan", "inf", "",
                         "x", "100", "3", "0.9", "0.2", "64", "113", "1e308"])


@st.composite
def csv_files(draw, columns):
    chosen = draw(st.lists(st.sampled_from(columns + ["junk"]), min_size=0, max_size=len(columns) + 1, unique=True))
    rows = draw(st.lists(st.lists(cells, min_size=len(chosen), max_size=len(chosen) + draw(st.integers(0, 1))),
                         min_size=0, max_size=6))
    header = ",".join(chosen)
    return header + "\n" + "".join(",".join(r) + "\n" for r in rows)


FILE_KINDS = {
    "trace": (["arrival_s", "prompt_len", "output_len"], {"workload.arrival": "trace", "workload.trace_file": "FILE"}),
    "lengths": (["output_len", "prompt_len"], {"workload.output_dist": "empirical", "workload.output_file": "FILE"}),
    "heads": (["head", "top1", "top2", "top3"], {"speculation.acceptance": "tree", "speculation.head_accuracy": "FILE",
                                                 "speculation.candidate_tokens": 8}),
    "curve": (["candidate_tokens", "acceptance_rate"], {"speculation.acceptance_curve": "FILE",
                                                        "speculation.candidate_tokens": 2}),
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(FILE_KINDS)), st.data(), st.sampled_from(["text", "bytes", "empty", "parquet"]))
def test_generated_input_files_run_or_exit_2(tmp_path_factory, capsys, kind, data, form):
    columns, keys = FILE_KINDS[kind]
    tmp = tmp_path_factory.mktemp("file")
    content = data.draw(csv_files(columns))
    if form == "parquet" and kind in ("trace", "lengths"):
        file = tmp / "input.parquet"
        try:
            frame = pd.read_csv(pd.io.common.StringIO(content))
            frame.to_parquet(file)
        except Exception:
            file.write_bytes(b"PAR1garbage")
    else:
        file = tmp / "input.csv"
        if form == "bytes":
            file.write_bytes(b"\xff\xfe" + content.encode())
        elif form == "empty":
            file.write_text("")
        else:
            file.write_text(content)
    scenario = tmp / "s.toml"
    scenario.write_text(scenario_text({**BASE, **{k: (str(file) if v == "FILE" else v) for k, v in keys.items()}}))
    code, err = run_cli(["run", str(scenario), "--out", str(tmp / "out"), "--jobs", "1"], capsys)
    check_outcome(code, err, scenario)
    if code == 2:
        assert str(file) in err or "speculation" in err or "workload" in err
    if kind == "heads":
        code, err = run_cli(["tree", "--heads", str(file), "--candidate-tokens", "4"], capsys)
        assert code in (0, 2) and "Traceback" not in err


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([b"", b"PAR1", b"garbage", b"PAR1\x00\x00\x00\x00PAR1"]), st.booleans())
def test_plot_on_garbage_tables_exits_2(tmp_path_factory, capsys, content, truncate_real):
    pytest.importorskip("matplotlib")
    tmp = tmp_path_factory.mktemp("plot")
    if truncate_real:
        pd.DataFrame({"a": range(100)}).to_parquet(tmp / "summary.parquet")
        data = (tmp / "summary.parquet").read_bytes()
        (tmp / "summary.parquet").write_bytes(data[: len(data) // 2])
    else:
        (tmp / "summary.parquet").write_bytes(content)
    code, err = run_cli(["plot", str(tmp)], capsys)
    assert code == 2 and "summary.parquet" in err


def test_plot_columnless_table_and_a_run_without_requests(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "summary.parquet")
    code, err = run_cli(["plot", str(tmp_path)], capsys)
    assert code == 2 and "missing column" in err
    path = tmp_path / "s.toml"
    path.write_text(scenario_text({**BASE, "output.write_requests": False,
                                   "sweep.candidate_tokens": [1, 4], "speculation.acceptance": "fixed"}))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--jobs", "1"]) == 0
    capsys.readouterr()
    assert main(["plot", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped request_speedup.png" in printed and (out / "speedup_vs_candidates.png").is_file()


# -- output folder and signals ------------------------------------------------------------

def test_output_folder_problems_exit_2_before_running(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(scenario_text(BASE))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out in (a_file, a_file / "below", Path("/proc/servesim-test"), tmp_path / ("n" * 300), Path("/dev/null")):
        code, err = run_cli(["run", str(path), "--out", str(out)], capsys)
        assert code == 2 and err.startswith("servesim: error: "), (out, err)


def test_a_folder_holds_only_the_tables_of_the_run_that_wrote_it(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(scenario_text({**BASE, "output.write_steps": True}))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--jobs", "1"]) == 0
    assert (out / "steps.parquet").is_file()
    (out / "notes.txt").write_text("mine")
    assert main(["run", str(path), "--out", str(out), "--jobs", "1", "--set", "write_steps=false"]) == 0
    assert not (out / "steps.parquet").exists()  # no stale table of the previous run
    assert (out / "notes.txt").read_text() == "mine"  # the user's own file kept
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


SLOW = """
name = "slow"
[speculation]
method = "medusa"
candidate_tokens = 16
[workload]
arrival = "poisson"
rate_per_s = 50.0
num_requests = 20000
[serving]
batching = "continuous"
batch_size = 16
[sweep]
seq_len = [128, 256, 512, 1024]
"""


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_leaves_the_old_set_and_the_rerun_the_new(tmp_path, sig):
    """A finished run's folder; a second run into it killed part-way: the folder still
    holds the first run's tables byte for byte; a third run replaces them whole and
    leaves nothing else behind."""
    small = tmp_path / "small.toml"
    small.write_text(SLOW.replace("num_requests = 20000", "num_requests = 50"))
    slow = tmp_path / "slow.toml"
    slow.write_text(SLOW)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "servesim.cli", "run"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run(cmd + [str(small), "--out", str(out), "--jobs", "1"], check=True, capture_output=True, env=env)
    before = _snapshot(out)
    proc = subprocess.Popen(cmd + [str(slow), "--out", str(out), "--jobs", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not [p for p in tmp_path.iterdir() if "staging" in p.name]:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert _snapshot(out) == before
    if sig == signal.SIGTERM:
        assert not [p for p in tmp_path.iterdir() if "staging" in p.name]  # cleaned up on the way out
    subprocess.run(cmd + [str(small), "--out", str(out), "--jobs", "1", "--set", "seed=7"],
                   check=True, capture_output=True, env=env)
    after = _snapshot(out)
    assert set(after) == set(before) and after != before
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def test_summary_rows_are_streamed_and_the_tables_match_an_in_memory_run(tmp_path, monkeypatch):
    """Summary and acceptance rows go to part files a few rows at a time (here 7, to
    make many parts of a 40-point sweep); the merged tables equal the rows of an
    in-memory run, and are the same bytes with --jobs 1 and --jobs 2."""
    import servesim.results as results
    from servesim.runner import run_scenario
    from servesim.scenario import load_scenario
    monkeypatch.setattr(results, "STREAM_ROWS", 7)
    text = scenario_text({**BASE, "workload.output_len": 3, "sweep.seq_len": [8, 16, 24, 32, 40],
                          "sweep.candidate_tokens": [1, 2, 4, 8, 16, 32, 48, 64]})
    path = tmp_path / "s.toml"
    path.write_text(text)
    for jobs in ("1", "2"):
        assert main(["run", str(path), "--out", str(tmp_path / jobs), "--jobs", jobs]) == 0
    for name in ("summary", "acceptance"):
        assert (tmp_path / "1" / f"{name}.parquet").read_bytes() == (tmp_path / "2" / f"{name}.parquet").read_bytes()
    written = pd.read_parquet(tmp_path / "1" / "summary.parquet")
    expected = pd.DataFrame([r.summary for r in run_scenario(load_scenario(str(path)))])
    assert len(written) == 40
    pd.testing.assert_frame_equal(written, expected)


def test_a_large_sweep_says_how_big_it_is_before_it_starts(capsys):
    """Above 10,000 points (x replications) the run prints its size and an estimate
    before anything runs; smaller sweeps print nothing."""
    from servesim.cli import _announce_size
    from servesim.scenario import load_scenario
    big = load_scenario("big.toml", text=scenario_text({**BASE, "sweep.seq_len": list(range(1, 102)),
                                                        "sweep.candidate_tokens": list(range(1, 101))}))
    _announce_size(big)
    err = capsys.readouterr().err
    assert "10,100 points x 2 arms" in err and "streamed to disk" in err
    _announce_size(load_scenario("small.toml", text=scenario_text({**BASE, "sweep.seq_len": [1, 2]})))
    assert capsys.readouterr().err == ""


def test_report_prints_a_finished_runs_table(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(scenario_text({**BASE, "workload.arrival": "poisson", "workload.rate_per_s": 5.0,
                                   "sweep.rate_per_s": [2.0, 4.0]}))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    again = capsys.readouterr().out
    assert "latency per point" in again and "TTFT" in again and "base p99" in again
    # the same table `run` printed
    table = lambda text: text[text.index("latency per point"):text.index("baseline:")]
    assert table(again) == table(printed)
    assert main(["report", str(tmp_path / "none")]) == 2

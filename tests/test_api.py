"""The Python API: servesim.run on a path, a bundled name, TOML text and a dict."""

import pandas as pd
import pytest

import servesim
from servesim.scenario import ScenarioError

SECTIONS = {
    "name": "api",
    "hardware": {"gpu": "h100-sxm"},
    "model": {"model": "small", "define": {"small": {"hidden_size": 1024, "num_hidden_layers": 4,
                                                     "num_attention_heads": 8, "intermediate_size": 2816,
                                                     "vocab_size": 32000}}},
    "speculation": {"method": "draft_model", "gamma": 3, "alpha": 0.7, "draft_model": "llama-68m"},
    "workload": {"arrival": "poisson", "num_requests": 40, "output_len": 32, "seq_len": 128},
    "serving": {"batching": "continuous", "batch_size": 8, "max_sim_time_s": float("inf")},
    "sweep": {"rate_per_s": [2.0, 20.0]},
}


def test_run_a_dict_returns_dataframes_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tables = servesim.run(SECTIONS)
    assert isinstance(tables, servesim.Tables)
    assert tables.summary["rate_per_s"].tolist() == [2.0, 20.0]
    assert len(tables.requests) == 2 * 2 * 40  # points x arms x requests
    assert set(tables.steps["stage"]) >= {"draft", "verify"}
    assert tables.acceptance.groupby("point_id")["fraction"].sum().tolist() == pytest.approx([1.0, 1.0])
    assert list(tmp_path.iterdir()) == []


def test_dict_text_and_file_give_the_same_tables(tmp_path):
    from servesim.api import scenario_text
    text = scenario_text(SECTIONS)
    (tmp_path / "s.toml").write_text(text)
    a = servesim.run(SECTIONS).summary
    b = servesim.run(text).summary
    c = servesim.run(str(tmp_path / "s.toml"), jobs=2).summary
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)


def test_out_writes_what_the_cli_writes(tmp_path):
    tables = servesim.run("medusa_llama7b_bs4_seqlen", overrides=["sweep.seq_len=[128]", "sweep.candidate_tokens=[1,8]"],
                          out=tmp_path / "o")
    assert (tmp_path / "o" / "summary.json").is_file()
    pd.testing.assert_frame_equal(tables.summary, pd.read_parquet(tmp_path / "o" / "summary.parquet"))
    assert tables.summary["speedup"].iloc[0] == pytest.approx(1.0)


def test_bad_input_raises_the_cli_message():
    with pytest.raises(ScenarioError, match="workload.num_requests"):
        servesim.run({"workload": {"num_requests": 0}})

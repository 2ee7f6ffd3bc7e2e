"""Workload inputs users bring: lengths capped at the model's context, and trace formats
(ShareGPT, Azure, vLLM bench results, mapped columns)."""

import numpy as np
import pandas as pd
import pytest

from servesim.cli import main
from servesim.workload import cap_to_context


def test_cap_to_context_by_hand():
    prompts = np.array([100, 4000, 5000, 4095, 10])
    outputs = np.array([50, 200, 10, 1, 4086])
    assert cap_to_context(prompts, outputs, 4096) == 2  # 4,096 in all is allowed
    assert prompts.tolist() == [100, 4000, 4095, 4095, 10]
    assert outputs.tolist() == [50, 96, 1, 1, 4086]
    assert cap_to_context(prompts, outputs, 0) == 0


CAPPED = """
[hardware]
gpu = "h100-sxm"
[model]
model = "llama-2-7b"
[speculation]
method = "none"
[workload]
arrival = "poisson"
rate_per_s = 2
num_requests = 300
prompt_dist = "uniform"
prompt_min = 1000
prompt_max = 5000
output_dist = "fixed"
output_len = 100
[serving]
batching = "continuous"
batch_size = 16
"""


def test_drawn_lengths_are_capped_at_the_models_context_and_counted(tmp_path, capsys):
    """Llama 2's context is 4,096 tokens: a uniform prompt in [1000, 5000] plus 100
    output tokens exceeds it for P(prompt > 3996) = 1004 / 4001 of the requests."""
    (tmp_path / "c.toml").write_text(CAPPED)
    assert main(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "out")]) == 0
    assert "cut to it" in capsys.readouterr().out
    requests = pd.read_parquet(tmp_path / "out" / "requests.parquet")
    summary = pd.read_parquet(tmp_path / "out" / "summary.parquet")
    assert (requests.prompt_len + requests.output_len).max() == 4096
    capped = summary["length_capped_requests"].iloc[0]
    base = requests[requests.arm == "baseline"]
    at_limit = ((base.prompt_len + base.output_len) == 4096).sum()
    # every cut request ends exactly at the limit; an uncut one only if its prompt was 3,996
    assert capped <= at_limit <= capped + (base.prompt_len == 3996).sum()
    n = 300
    expected = n * 1004 / 4001
    assert abs(capped - expected) < 4 * np.sqrt(n * (1004 / 4001) * (1 - 1004 / 4001))


BASE = """
[hardware]
gpu = "h100-sxm"
[model]
model = "llama-3-8b"
[speculation]
method = "none"
[serving]
batching = "continuous"
batch_size = 8
[workload]
"""


def _run(tmp_path, workload: str):
    (tmp_path / "s.toml").write_text(BASE + workload)
    out = tmp_path / "out"
    code = main(["run", str(tmp_path / "s.toml"), "--out", str(out)])
    if code:
        return code, None
    requests = pd.read_parquet(out / "requests.parquet")
    return code, requests[requests.arm == "baseline"].sort_values("request_id").reset_index(drop=True)


def test_azure_trace(tmp_path):
    (tmp_path / "azure.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:51.3244480,879,12\n")
    code, r = _run(tmp_path, f'arrival = "trace"\ntrace_file = "{tmp_path / "azure.csv"}"\n')
    assert code == 0
    assert r.prompt_len.tolist() == [374, 396, 879] and r.output_len.tolist() == [44, 109, 12]
    assert r.arrival_s.tolist() == pytest.approx([0.0, 4.314579, 4.643858], abs=1e-6)


def test_sharegpt_lengths_under_poisson_arrivals(tmp_path):
    import json
    data = [{"id": "a", "conversations": [{"from": "human", "value": "x" * 40}, {"from": "gpt", "value": "y" * 401}]},
            {"id": "b", "conversations": [{"from": "human", "value": "only one turn"}]},
            {"id": "c", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "z" * 8},
                                          {"from": "human", "value": "more"}]}]
    (tmp_path / "sg.json").write_text(json.dumps(data))
    code, r = _run(tmp_path, f'arrival = "poisson"\nrate_per_s = 5\nnum_requests = 5\ntrace_file = "{tmp_path / "sg.json"}"\n')
    assert code == 0
    # ceil(chars / 4): 40 -> 10, 401 -> 101; "hi" -> 1, 8 -> 2; the one-turn entry skipped; rows repeat
    assert r.prompt_len.tolist() == [10, 1, 10, 1, 10]
    assert r.output_len.tolist() == [101, 2, 101, 2, 101]
    assert (np.diff(r.arrival_s) > 0).all()


def test_sharegpt_has_no_times_for_a_trace_arrival(tmp_path, capsys):
    (tmp_path / "sg.json").write_text('[{"conversations": [{"value": "a"}, {"value": "b"}]}]')
    code, _ = _run(tmp_path, f'arrival = "trace"\ntrace_file = "{tmp_path / "sg.json"}"\n')
    assert code == 2
    err = capsys.readouterr().err
    assert "workload.arrival" in err and "no arrival times" in err
    assert not (tmp_path / "out").exists()


def test_vllm_result_file_as_a_trace(tmp_path):
    import json
    result = {"request_rate": 4.0, "burstiness": 1.0, "max_concurrency": None,
              "input_lens": [100, 200, 300, 400], "output_lens": [10, 0, 30, 40],
              "start_times": [1000.5, 1000.7, 1001.0, 1000.9],
              "errors": ["", "timeout", "", ""]}
    (tmp_path / "r.json").write_text(json.dumps(result))
    code, r = _run(tmp_path, f'arrival = "trace"\ntrace_file = "{tmp_path / "r.json"}"\n')
    assert code == 0
    # the failed request is left out; the others in order of their start times
    assert r.prompt_len.tolist() == [100, 400, 300] and r.output_len.tolist() == [10, 40, 30]
    assert r.arrival_s.tolist() == pytest.approx([0.0, 0.4, 0.5])


def test_trace_columns_map_another_layout(tmp_path, capsys):
    pd.DataFrame({"t": [0.0, 0.5, 2.0], "in_tok": [50, 60, 70], "out_tok": [5, 6, 7]}).to_parquet(tmp_path / "x.parquet")
    mapping = 'trace_columns = {arrival_s = "t", prompt_len = "in_tok", output_len = "out_tok"}\n'
    code, r = _run(tmp_path, f'arrival = "trace"\ntrace_file = "{tmp_path / "x.parquet"}"\n' + mapping)
    assert code == 0
    assert r.prompt_len.tolist() == [50, 60, 70] and r.arrival_s.tolist() == [0.0, 0.5, 2.0]
    bad = mapping.replace('"out_tok"', '"missing"')
    code, _ = _run(tmp_path, f'arrival = "trace"\ntrace_file = "{tmp_path / "x.parquet"}"\n' + bad)
    assert code == 2
    assert "'missing', which is not a column" in capsys.readouterr().err
    code, _ = _run(tmp_path, f'arrival = "trace"\ntrace_file = "{tmp_path / "x.parquet"}"\n'
                   'trace_columns = {arrival = "t"}\n')
    assert code == 2
    assert "workload.trace_columns" in capsys.readouterr().err

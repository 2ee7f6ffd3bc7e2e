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

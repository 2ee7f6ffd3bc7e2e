"""Bundled scenarios (`servesim scenarios`, `run NAME`, `init NAME`) and `plan DIR`."""

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from servesim.cli import bundled_scenarios, main

REPO_SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def test_every_repo_scenario_is_bundled_with_a_description():
    repo = sorted(p.stem for p in REPO_SCENARIOS.glob("*.toml"))
    bundled = bundled_scenarios()
    assert repo == sorted(bundled)
    for name, description in bundled.items():
        assert description and len(description) < 140, name
        text = (REPO_SCENARIOS / f"{name}.toml").read_text()
        assert tomllib.loads(text)["description"] == description


def test_scenarios_lists_them(capsys):
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    for name, description in bundled_scenarios().items():
        assert name in out and description in out


def test_run_a_bundled_scenario_by_name_from_an_empty_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "medusa_llama7b_bs4_seqlen", "--set", "sweep.seq_len=[128]",
                 "--set", "sweep.candidate_tokens=[1,16]", "--jobs", "1"]) == 0
    summary = pd.read_parquet(tmp_path / "outputs" / "medusa_llama7b_bs4_seqlen" / "summary.parquet")
    assert summary["candidate_tokens"].tolist() == [1, 16]
    assert summary["speedup"].iloc[0] == pytest.approx(1.0)


def test_init_copies_and_never_overwrites(tmp_path, capsys):
    assert main(["init", "width_under_load", str(tmp_path / "mine")]) == 0
    copy = tmp_path / "mine" / "width_under_load.toml"
    assert copy.read_text() == (REPO_SCENARIOS / "width_under_load.toml").read_text()
    copy.write_text(copy.read_text() + "\n# edited\n")
    assert main(["init", "width_under_load", str(tmp_path / "mine")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert copy.read_text().endswith("# edited\n")
    assert main(["init", "no_such_scenario", str(tmp_path)]) == 2
    assert "no bundled scenario" in capsys.readouterr().err


def test_unknown_scenario_name_exits_2_listing_the_bundled(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "nosuch: no such file" in err and "width_under_load" in err


def test_plan_of_a_finished_run_flags_overlapping_intervals(tmp_path, capsys):
    """`plan DIR` re-reads the summary (no simulation) and counts, per deployment point,
    the settings whose 95% interval of the mean speedup overlaps the best's."""
    out = tmp_path / "run"
    assert main(["run", "plan_medusa_batch_context", "--out", str(out), "--jobs", "1",
                 "--set", "replications=3", "--set", "sweep.batch_size=[1,16]",
                 "--set", "sweep.seq_len=[1024]", "--set", "sweep.candidate_tokens=[1,4,8,16,64]",
                 "--set", "num_requests=8"]) == 0
    summary = pd.read_parquet(out / "summary.parquet")
    (out / "requests.parquet").unlink()  # not needed: the plan reads the summary only
    capsys.readouterr()
    assert main(["plan", str(out)]) == 0
    assert "not re-simulated" in capsys.readouterr().out
    plan = pd.read_parquet(out / "plan.parquet").set_index("batch_size")
    for batch, rows in summary.groupby("batch_size"):
        best = rows.loc[rows["speedup"].idxmax()]
        others = rows.drop(index=best.name)
        overlapping = others[(others.speedup_ci95_low <= best.speedup_ci95_high)
                             & (others.speedup_ci95_high >= best.speedup_ci95_low)]
        assert plan.loc[batch, "best_candidate_tokens"] == best["candidate_tokens"]
        assert plan.loc[batch, "ties_with_best"] == len(overlapping)
        named = set(filter(None, plan.loc[batch, "tied_settings"].split(" | ")))
        assert named == {f"candidate_tokens={c}" for c in overlapping["candidate_tokens"]}
    # one setting is surely apart from the best: autoregressive (1 candidate) at batch 1
    assert "candidate_tokens=1" not in plan.loc[1, "tied_settings"].split(" | ")


def test_plan_of_a_run_without_intervals_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "plan_medusa_batch_context", "--out", str(out), "--jobs", "1",
                 "--set", "sweep.batch_size=[4]", "--set", "sweep.seq_len=[512]",
                 "--set", "sweep.candidate_tokens=[1,16]", "--set", "num_requests=4"]) == 0
    capsys.readouterr()
    assert main(["plan", str(out)]) == 0
    assert "no confidence intervals" in capsys.readouterr().out
    assert np.isnan(pd.read_parquet(out / "plan.parquet")["ties_with_best"]).all()
    assert main(["plan", str(tmp_path / "empty_dir_that_is_missing")]) == 2


def test_trace_writes_a_chrome_trace_of_one_point(tmp_path, capsys):
    import json
    out = tmp_path / "run"
    assert main(["run", "latency_vs_load", "--out", str(out), "--jobs", "1", "--set", "num_requests=20",
                 "--set", "sweep.rate_per_s=[1.0, 4.0]", "--set", "sweep.batching=['continuous']"]) == 0
    assert main(["trace", str(out), "--point", "1"]) == 0
    events = json.loads((out / "trace_point1.json").read_text())["traceEvents"]
    steps = pd.read_parquet(out / "steps.parquet")
    steps = steps[steps.point_id == 1]
    gpu = [e for e in events if e["ph"] == "X"]
    assert len(gpu) == len(steps)
    # (each duration is written to the nanosecond: at most 0.0005 us of rounding each)
    assert sum(e["dur"] for e in gpu) == pytest.approx(steps.duration_s.sum() * 1e6, abs=0.0005 * len(gpu))
    begins = [e for e in events if e["ph"] == "b"]
    ends = [e for e in events if e["ph"] == "e"]
    assert len(begins) == len(ends) == 2 * 20 * 4  # arms x requests x (request + 3 phases)
    for b in begins:
        assert any(e["id"] == b["id"] and e["name"] == b["name"] and e["ts"] >= b["ts"] for e in ends)
    assert main(["trace", str(out), "--point", "9"]) == 2
    assert "no such point" in capsys.readouterr().err

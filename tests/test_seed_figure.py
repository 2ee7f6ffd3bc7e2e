"""The seed scenario against the Medusa paper's figure (bundled reference data)."""

import pandas as pd
import pytest

from servesim.cli import bundled_scenario, validation_report
from servesim.runner import run_scenario
from servesim.scenario import load_scenario


@pytest.fixture(scope="module")
def seed_summary():
    source, text = bundled_scenario()
    results = run_scenario(load_scenario(source, text=text))
    return pd.DataFrame([r.summary for r in results])


def test_all_targets_met(seed_summary):
    report, passed = validation_report(seed_summary)
    assert passed, report


def test_shape_of_the_figure(seed_summary):
    sim = seed_summary.pivot(index="candidate_tokens", columns="seq_len", values="speedup")
    assert (sim.loc[1] == 1.0).all()
    for s in sim.columns:
        if s <= 4096:
            assert sim[s].idxmax() in (16, 32)
        if s <= 2048:
            assert sim.loc[64, s] - sim.loc[80, s] >= 0.3
    assert (sim.diff(axis=1).iloc[:, 1:] <= 0.02).all().all()


def test_acceptance_follows_the_reference_curve(seed_summary):
    from servesim.catalog import medusa_acceptance_curve
    curve = medusa_acceptance_curve()
    for n, rate in seed_summary.groupby("candidate_tokens")["acceptance_rate"].mean().items():
        # thousands of request-steps per point: sampling error well under 3%
        assert rate == pytest.approx(curve[n], rel=0.03)

"""Proposers, acceptance spread and length policies (issue 13), against closed forms."""

import math

import numpy as np
import pandas as pd
import pytest

from servesim.cli import main
from servesim.speculation.acceptance import NgramAcceptance, RequestLevels, TruncatedGeometricAcceptance
from servesim.speculation.trees import TreeAcceptance, dynamic_tree, greedy_tree, optimal_tree_value


def run(tmp_path, text, name="s", *sets):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    out = tmp_path / f"{name}-out"
    args = ["run", str(path), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    return out


LEVIATHAN = """
name = "lev"
[model]
model = "llama-7b"
[hardware]
gpu = "a100-80gb-pcie"
kernel_profile = "medusa-paper"
[speculation]
method = "draft_model"
draft_cost_ratio = 0.3
alpha = 0.8
[workload]
arrival = "closed"
num_requests = 2400
seq_len = 16
output_len = 201
[serving]
framework = "none"
batching = "static"
batch_size = 8
[output]
write_steps = false
write_requests = false
[sweep]
gamma = [1, 2, 3, 4, 5]
"""


def test_leviathan_walltime_factor_and_best_gamma(tmp_path):
    """Leviathan et al. (2023): tokens per iteration (1 - a^(g+1)) / (1 - a) and walltime
    factor (1 - a^(g+1)) / ((1 - a)(g c + 1)), c set exactly by draft_cost_ratio."""
    a, c = 0.8, 0.3
    summary = pd.read_parquet(run(tmp_path, LEVIATHAN) / "summary.parquet").sort_values("gamma")
    from servesim.runner import build_cost_model
    from servesim.scenario import load_scenario
    point = load_scenario(tmp_path / "s.toml").points()[0]
    cm = build_cost_model(point)
    formula = {}
    for _, row in summary.iterrows():
        g = int(row.gamma)
        tokens = (1 - a ** (g + 1)) / (1 - a)
        assert row.expected_acceptance_rate == pytest.approx(tokens, abs=0.01)  # analytic
        assert row.acceptance_rate == pytest.approx(tokens, abs=0.02)  # Monte Carlo
        assert row.paired_requests * 200 / row.acceptance_rate >= 1e5  # >= 10^5 request-steps
        # the verify of g + 1 tokens costs r x a decode step here (r = 1 in Leviathan's model)
        r = cm.step_cost(8, g + 1, 8 * 116, "chain_verify").time_s / cm.step_cost(8, 1, 8 * 116, "decode").time_s
        assert r == pytest.approx(1.0, abs=0.02)
        formula[g] = tokens / (g * c + 1)
        assert row.speedup == pytest.approx(tokens / (g * c + r), abs=0.02)
        assert row.speedup == pytest.approx(formula[g], abs=0.03)
    best = max(formula, key=formula.get)
    assert best == 3
    assert int(summary.loc[summary.speedup.idxmax(), "gamma"]) == best


def test_eagle_tree_mean_closed_form_and_dynamic_tree():
    probs = np.array([[0.6, 0.2], [0.5, 0.3]])
    tree = ((0,), (1,), (0, 0), (0, 1))
    acc = TreeAcceptance(tree, probs)
    # 1 + 0.6 + 0.2 + 0.6 * 0.5 + 0.6 * 0.3
    assert acc.mean == pytest.approx(2.28)
    assert acc.survival() == pytest.approx([1.0, 0.8, 0.48])
    assert acc.draw(np.random.default_rng(1), 200_000).mean() == pytest.approx(2.28, abs=0.01)
    # EAGLE-2: top-2 of the root, then the top-2 nodes expanded; the best 3 of 6 verified:
    # (0,) 0.6, (0,0) 0.3, (1,) 0.2  (then (0,1) 0.18, (1,0) 0.1, (1,1) 0.06)
    assert set(dynamic_tree(probs, 2, 2, 4)) == {(0,), (0, 0), (1,)}


def test_eagle_tree_scenario_runs_at_its_closed_form(tmp_path):
    table = tmp_path / "eagle_depths.csv"
    table.write_text("head,top1,top2\n0,0.6,0.8\n1,0.5,0.8\n")
    out = run(tmp_path, f"""
name = "e"
[model]
model = "llama-3-8b"
[hardware]
gpu = "h100-sxm"
[speculation]
method = "eagle"
eagle_topk = 2
num_speculative_tokens = 2
candidate_tokens = 4
head_accuracy = "{table}"
[workload]
num_requests = 64
seq_len = 128
output_len = 400
[serving]
batch_size = 8
""")
    row = pd.read_parquet(out / "summary.parquet").iloc[0]
    assert row.candidate_tokens == 4
    assert row.expected_acceptance_rate == pytest.approx(1 + 0.6 + 0.3 + 0.2)
    assert row.acceptance_rate == pytest.approx(2.1, abs=0.03)
    steps = pd.read_parquet(out / "steps.parquet")
    draft = steps[(steps.arm == "spec") & (steps.stage == "draft")]
    assert (draft.draft_head_s > 0).all() and (draft.spec_length == 2).all()


def _all_trees(size, ranks):
    """Every prefix-closed set of size - 1 paths with ranks < ``ranks`` (grown a node at
    a time from the root, each set once)."""
    level = {frozenset()}
    for _ in range(size - 1):
        level = {t | {p + (r,)} for t in level for p in [()] + list(t) for r in range(ranks)
                 if p + (r,) not in t}
    return level


@pytest.mark.parametrize("size", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("depth", [None, 1, 2])
def test_sequoia_dynamic_programme_equals_brute_force(size, depth):
    p = [0.7, 0.2, 0.06]
    value = lambda path: math.prod(p[r] for r in path)  # noqa: E731
    brute = max((1 + sum(value(q) for q in t) for t in _all_trees(size, len(p))
                 if depth is None or max(len(q) for q in t) <= depth), default=-math.inf)
    assert optimal_tree_value(p, size, depth) == pytest.approx(brute)
    if depth is None:  # without a depth limit the greedy tree is optimal too
        probs = np.tile(np.array(p), (size, 1))
        assert TreeAcceptance(tuple(greedy_tree(probs, size)), probs).mean == pytest.approx(brute)


def test_ngram_histogram_by_hand(tmp_path):
    acc = NgramAcceptance(0.2, (0.95, 0.9, 0.9))
    by_hand = [0.8 + 0.2 * 0.05, 0.2 * 0.95 * 0.1, 0.2 * 0.95 * 0.9 * 0.1, 0.2 * 0.95 * 0.9 * 0.9]
    assert acc.histogram() == pytest.approx(by_hand)
    assert by_hand[0] >= 0.8 and by_hand[3] >= 0.08  # all or nothing
    out = run(tmp_path, """
name = "ng"
[model]
model = "llama-3-8b"
[hardware]
gpu = "h100-sxm"
[speculation]
method = "ngram"
num_speculative_tokens = 3
ngram_match_probability = 0.2
alpha_per_position = [0.95, 0.9, 0.9]
[workload]
num_requests = 256
seq_len = 64
output_len = 600
[serving]
batching = "continuous"
batch_size = 64
[output]
write_steps = false
""")
    hist = pd.read_parquet(out / "acceptance.parquet").set_index("tokens")["fraction"]
    assert [hist.get(k, 0.0) for k in (1, 2, 3, 4)] == pytest.approx(by_hand, abs=0.006)
    row = pd.read_parquet(out / "summary.parquet").iloc[0]
    # no GPU drafting: the draft stage is the CPU lookup only
    assert row.draft_time_share < 0.01


def _beta_moments(mean, sd, f, n=20001):
    from scipy import stats
    a, b = mean * (mean * (1 - mean) / sd**2 - 1), (1 - mean) * (mean * (1 - mean) / sd**2 - 1)
    x = np.linspace(0, 1, n)[1:-1]
    w = stats.beta.pdf(x, a, b)
    w /= w.sum()
    return w, x


def test_between_request_spread_variance_closed_form():
    """A request's level a ~ Beta(mean alpha, sd s); per step A = min(K, Geometric) with
    its own rate. Over m steps its mean has variance Var_a[f(a)] + E_a[Var(A | a)] / m,
    f(a) = (1 - a^K) / (1 - a)."""
    alpha, spread, K, m, n = 0.7, 0.15, 4, 40, 20000
    levels = RequestLevels(TruncatedGeometricAcceptance(alpha, K).survival(), spread)
    rng = np.random.default_rng(3)
    means = np.empty(n)
    for i in range(n):
        thresholds = levels.draw_level(rng)
        u = rng.random(m)
        means[i] = np.mean([levels.tokens(thresholds, x) for x in u])
    w, a = _beta_moments(alpha, spread, None)
    s = a[:, None] ** np.arange(K)[None, :]  # survival per level
    f = s.sum(axis=1)
    second = (s * (2 * np.arange(K) + 1)[None, :]).sum(axis=1)  # E[A^2] = sum (2j + 1) S_j
    var_closed = (w * f**2).sum() - (w * f).sum() ** 2 + (w * (second - f**2)).sum() / m
    assert means.var() == pytest.approx(var_closed, rel=0.05)
    assert means.mean() == pytest.approx((w * f).sum(), abs=0.01)
    # spread 0: every request has the model itself
    flat = RequestLevels(TruncatedGeometricAcceptance(alpha, K).survival(), 0.0)
    u = np.random.default_rng(4).random(100_000)
    th = flat.draw_level(rng)
    assert np.mean([flat.tokens(th, x) for x in u]) == pytest.approx((1 - alpha**K) / (1 - alpha), abs=0.01)


def test_spread_widens_per_request_speedups_in_a_run(tmp_path):
    text = """
name = "sp"
[model]
model = "llama-3-8b"
[hardware]
gpu = "h100-sxm"
[speculation]
method = "draft_model"
gamma = 3
alpha = 0.7
draft_model = "llama-68m"
[workload]
num_requests = 400
seq_len = 64
output_len = 200
[serving]
batching = "continuous"
batch_size = 16
[sweep]
acceptance_spread = [0.0, 0.2]
"""
    out = run(tmp_path, text)
    req = pd.read_parquet(out / "requests.parquet")
    spec = req[req.arm == "spec"]
    per_request = spec.assign(rate=(spec.accepted_tokens) / spec.verify_steps).groupby("point_id").rate
    sd = per_request.std()
    assert sd[1] > 2.5 * sd[0]
    summary = pd.read_parquet(out / "summary.parquet").set_index("acceptance_spread")
    assert summary.loc[0.2, "speedup_p95"] - summary.loc[0.2, "speedup_p05"] > \
        2 * (summary.loc[0.0, "speedup_p95"] - summary.loc[0.0, "speedup_p05"])


def test_acceptance_replay_from_a_trace(tmp_path):
    trace = tmp_path / "acc.jsonl"
    trace.write_text("".join(f'{{"request_id": {i}, "num_accepted_tokens": {k}}}\n'
                             for i in range(2) for k in ([3, 3, 0] if i == 0 else [0, 1])))
    out = run(tmp_path, f"""
name = "rp"
[model]
model = "llama-3-8b"
[hardware]
gpu = "h100-sxm"
[speculation]
method = "eagle3"
num_speculative_tokens = 3
acceptance_trace = "{trace}"
[workload]
num_requests = 2
seq_len = 64
output_len = 1001
[serving]
batch_size = 2
""")
    req = pd.read_parquet(out / "requests.parquet")
    spec = req[req.arm == "spec"].set_index("request_id")
    # request 0 replays 4, 4, 1 tokens per step (mean 3), request 1 replays 1, 2 (mean 1.5)
    assert spec.loc[0, "accepted_tokens"] / spec.loc[0, "verify_steps"] == pytest.approx(3.0, abs=0.02)
    assert spec.loc[1, "accepted_tokens"] / spec.loc[1, "verify_steps"] == pytest.approx(1.5, abs=0.02)


POLICY = """
name = "pol"
[model]
model = "llama-3-8b"
[hardware]
gpu = "h100-sxm"
[speculation]
method = "eagle3"
num_speculative_tokens = 4
alpha_per_position = [0.8, 0.75, 0.7, 0.65]
[workload]
arrival = "closed"
seq_len = 128
output_len = 96
[serving]
batching = "continuous"
max_num_batched_tokens = 65536
[output]
write_requests = false
"""


def test_goodput_policy_matches_the_best_fixed_length_at_every_load(tmp_path):
    loads = [1, 16, 128, 512]
    sets = [f"sweep.batch_size={loads}", "sweep.num_requests=[1024]"]
    fixed = pd.read_parquet(run(tmp_path, POLICY, "fixed", *sets, "sweep.num_speculative_tokens=[1, 2, 3, 4]")
                            / "summary.parquet")
    good = pd.read_parquet(run(tmp_path, POLICY, "good", *sets, "policy=goodput") / "summary.parquet")
    rate = "spec_tokens_per_s"  # decode throughput with the full batch: what a step's rule maximises
    steps = pd.read_parquet(tmp_path / "good-out" / "steps.parquet")
    for b in loads:
        at = fixed[fixed.batch_size == b]
        options = dict(zip(at.num_speculative_tokens, at[rate]))
        options[0] = at["baseline_tokens_per_s"].iloc[0]  # speculation off
        best_length = max(options, key=options.get)
        g = good[good.batch_size == b].iloc[0]
        assert g[rate] >= 0.98 * options[best_length], (b, options, g[rate])
        chosen = steps[(steps.point_id == g.point_id) & (steps.arm == "spec") & (steps.stage != "draft")
                       & (steps.stage != "prefill") & (steps.batch_size == b)].spec_length
        if len(chosen):  # the length it runs at with the full batch is the best fixed one, or as good
            mode = int(chosen.mode()[0])
            assert options[mode] >= 0.98 * options[best_length], (b, mode, best_length, options)
    lengths = good.set_index("batch_size").mean_spec_length
    assert lengths[1] > lengths[512]  # it shortens speculation as the batch grows


def test_batch_threshold_switches_speculation_off(tmp_path):
    out = run(tmp_path, POLICY, "thr", "sweep.batch_size=[4, 64]", "num_requests=128",
              "policy=batch_threshold", "disable_by_batch_size=32")
    summary = pd.read_parquet(out / "summary.parquet").set_index("batch_size")
    assert summary.loc[4, "mean_spec_length"] == pytest.approx(4.0, abs=0.3)
    assert summary.loc[64, "mean_spec_length"] < 1.0
    steps = pd.read_parquet(out / "steps.parquet")
    big = steps[(steps.arm == "spec") & (steps.stage.isin(["verify", "decode"])) & (steps.batch_size >= 32)]
    assert (big.spec_length == 0).all() and (big.stage == "decode").all()


def test_bad_speculation_input_exits_2(tmp_path, capsys):
    path = tmp_path / "b.toml"
    path.write_text('[speculation]\nmethod = "draft_model"\nalpha = 0.9\nacceptance_spread = 0.4\n')
    assert main(["run", str(path)]) == 2
    assert "acceptance_spread" in capsys.readouterr().err
    path.write_text('[speculation]\nmethod = "eagle"\neagle_topk = 2\n')
    assert main(["run", str(path)]) == 2
    assert "head_accuracy" in capsys.readouterr().err
    path.write_text('[speculation]\npolicy = "goodput"\n')
    assert main(["run", str(path)]) == 2
    assert "continuous" in capsys.readouterr().err


def _cut_eagle_run(tmp_path, cut_s):
    text = """
[hardware]
gpu = "h100-sxm"
[model]
model = "llama-3-8b"
[speculation]
method = "eagle3"
num_speculative_tokens = 3
[workload]
arrival = "closed"
num_requests = 4
seq_len = 200
output_len = 50
[serving]
batching = "static"
batch_size = 4
max_sim_time_s = %r
""" % cut_s
    from servesim.runner import run_point
    from servesim.scenario import load_scenario
    point = load_scenario("cut.toml", text=text).points()[0]
    result = run_point(point, 0)
    steps = [r for r in result.recorders[0].steps if r[1] == "spec"]
    return result, steps


@pytest.mark.parametrize("where", ["draft", "verify"])
def test_a_cut_inside_an_iteration_keeps_what_ran(tmp_path, where):
    """A draft and its verify run as one GPU hold: a cut inside the draft keeps the
    draft's time up to the cut and no verify row; inside the verify, both rows, the
    verify cut short; either way the iteration yields no tokens and is not counted."""
    full, steps = _cut_eagle_run(tmp_path, 1e9)
    prefill, draft, verify = steps[0], steps[1], steps[2]
    assert (prefill[2], draft[2], verify[2]) == ("prefill", "draft", "verify")
    end_prefill = prefill[3] + prefill[4]
    assert draft[3] == end_prefill and verify[3] == pytest.approx(end_prefill + draft[4], rel=1e-15)
    cut = end_prefill + (0.5 * draft[4] if where == "draft" else draft[4] + 0.5 * verify[4])
    result, cut_steps = _cut_eagle_run(tmp_path, cut)
    stages = [r[2] for r in cut_steps]
    assert stages == (["prefill", "draft"] if where == "draft" else ["prefill", "draft", "verify"])
    last = cut_steps[-1]
    assert last[3] + last[4] == pytest.approx(cut, rel=1e-12)
    assert sum(r[8] for r in cut_steps[1:]) == 0  # no tokens from the cut iteration
    assert result.summary["spec_unfinished"] == 4
    assert sum(result.accepted_counts[0]) == 0  # its draws taken back

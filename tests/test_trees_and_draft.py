"""Medusa trees from head accuracies and draft-model chains against closed forms."""

import csv
import itertools
import json
from importlib import resources

import numpy as np
import pytest

from servesim.costmodel import StepCost
from servesim.serving import Recorder, simulate
from servesim.speculation import DraftModelSpeculation, NoSpeculation, TruncatedGeometricAcceptance
from servesim.speculation.trees import (TreeAcceptance, expected_tokens, greedy_tree, head_rank_probabilities,
                            published_tree)
from servesim.workload import closed_workload


def test_rank_probabilities_are_differences_of_cumulative_accuracy():
    p = head_rank_probabilities("vicuna-7b")
    # vicuna-7b head 0: top1 0.5604, top2 0.6717 -> rank 1 has 0.1113
    assert p[0, 0] == pytest.approx(0.5604)
    assert p[0, 1] == pytest.approx(0.6717 - 0.5604)
    assert p.shape == (5, 5)


def test_tiny_trees_by_hand():
    p = head_rank_probabilities("vicuna-7b")
    assert expected_tokens([(0,)], p) == pytest.approx(1 + 0.5604)
    assert expected_tokens([(0,), (0, 0)], p) == pytest.approx(1 + 0.5604 + 0.5604 * 0.3164)
    assert expected_tokens([(0,), (1,)], p) == pytest.approx(1 + 0.6717)


def test_mc_sim_7b_63_expected_acceptance_worked_out_independently():
    # Straight from the bundled files, with dictionaries instead of the module's arrays:
    # per-rank probability = top(k) - top(k-1); ranks beyond the measured top-5 count 0.
    root = resources.files("servesim").joinpath("data")
    rows = [r for r in csv.DictReader(root.joinpath("medusa_head_accuracy.csv").read_text().splitlines())
            if r["model"] == "vicuna-7b-v1.3"]
    rank_p = {}
    for r in rows:
        prev = 0.0
        for k in range(1, 6):
            top = float(r[f"top{k}"])
            rank_p[(int(r["head"]), k - 1)] = top - prev
            prev = top
    paths = json.loads(root.joinpath("medusa_trees.json").read_text())["trees"]["mc_sim_7b_63"]
    total = 1.0
    for path in paths:
        prob = 1.0
        for head, rank in enumerate(path):
            prob *= rank_p.get((head, rank), 0.0)
        total += prob
    model = TreeAcceptance(tuple(published_tree("mc_sim_7b_63")), head_rank_probabilities("vicuna-7b"))
    assert model.mean == pytest.approx(total, rel=1e-12)
    print(f"mc_sim_7b_63 with Vicuna-7B heads: {total:.4f} tokens per verify step")
    assert 2.3 < total < 2.4


@pytest.mark.parametrize("tree_name,n", [("mc_sim_7b_63", 64), ("mc_sim_7b_63", 16), (None, 32)])
def test_tree_sampler_mean_within_one_percent(tree_name, n):
    p = head_rank_probabilities("vicuna-7b")
    tree = published_tree(tree_name)[: n - 1] if tree_name else greedy_tree(p, n)
    model = TreeAcceptance(tuple(tree), p)
    draws = model.draw(np.random.default_rng(3), 100_000)
    assert draws.mean() == pytest.approx(model.mean, rel=0.01)
    assert draws.min() >= 1 and draws.max() <= model.max_tokens


def _brute_force_best(probs, size):
    heads, ranks = probs.shape
    nodes = [p for d in range(1, heads + 1) for p in itertools.product(range(ranks), repeat=d)]
    best = 0.0
    for subset in itertools.combinations(nodes, size):
        chosen = set(subset)
        if all(p[:-1] in chosen or len(p) == 1 for p in subset):
            best = max(best, expected_tokens(list(subset), probs))
    return best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_greedy_tree_equals_brute_force_on_small_cases(seed, size):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(4), size=3)[:, :3]  # 3 heads, 3 ranks, mass left for "none"
    greedy = greedy_tree(probs, size + 1)
    assert len(greedy) == size
    assert expected_tokens(greedy, probs) == pytest.approx(_brute_force_best(probs, size))


def test_greedy_tree_starts_like_medusas_published_tree():
    # Medusa built mc_sim_7b_63 greedily from (similar) head accuracies: the first nodes agree
    greedy = greedy_tree(head_rank_probabilities("vicuna-7b"), 11)
    assert greedy == published_tree("mc_sim_7b_63")[:10]


def test_tree_must_be_prefix_closed():
    with pytest.raises(ValueError):
        TreeAcceptance(((0, 1),), head_rank_probabilities("vicuna-7b"))


@pytest.mark.parametrize("alpha", [0.5, 0.7, 0.9])
@pytest.mark.parametrize("gamma", [1, 3, 5, 8])
def test_chain_tokens_per_iteration_leviathan(alpha, gamma):
    closed_form = (1 - alpha ** (gamma + 1)) / (1 - alpha)
    acceptance = TruncatedGeometricAcceptance(alpha, gamma + 1)
    draws = acceptance.draw(np.random.default_rng(gamma), 100_000)
    assert draws.mean() == pytest.approx(closed_form, rel=0.01)


class ChainCosts:
    """Target steps cost T whatever their width; each draft pass costs c * T."""

    T = 2.0 ** -6

    def __init__(self, c):
        self.c = c

    def step_cost(self, batch, tokens_per_seq, context_tokens, stage):
        return StepCost((), self.T)

    def prefill_cost(self, prompt_lens):
        return StepCost((), self.T)

    def draft_chain_cost(self, batch, passes, context_tokens):
        return StepCost((), passes * self.c * self.T)


@pytest.mark.parametrize("alpha,gamma,c", [(0.7, 3, 0.05), (0.9, 5, 0.1), (0.5, 2, 0.2)])
def test_walltime_improvement_factor_leviathan(alpha, gamma, c):
    # Leviathan et al. (2023), Theorem 3.8: (1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1))
    expected = (1 - alpha ** (gamma + 1)) / ((1 - alpha) * (gamma * c + 1))
    costs = ChainCosts(c)
    spec = DraftModelSpeculation(costs, gamma, alpha)
    requests = closed_workload(20, 16, 2001).requests
    rec = Recorder()
    for arm, s in (("baseline", NoSpeculation()), ("spec", spec)):
        simulate(requests, batch_size=1, cost_model=costs, speculator=s,
                 rng=np.random.default_rng(11), recorder=rec, point_id=0, arm=arm)
    time = {arm: sum(r[4] for r in rec.steps if r[1] == arm and r[2] != "prefill") for arm in ("baseline", "spec")}
    assert time["baseline"] / time["spec"] == pytest.approx(expected, rel=0.02)


def test_per_position_chain_acceptance():
    from servesim.speculation import ChainAcceptance
    chain = ChainAcceptance((0.9, 0.5, 0.2))
    # 1 + 0.9 + 0.9*0.5 + 0.9*0.5*0.2 = 2.44
    assert chain.mean == pytest.approx(2.44)
    draws = chain.draw(np.random.default_rng(5), 200_000)
    assert draws.mean() == pytest.approx(2.44, rel=0.01)
    # P(tokens >= 3) = 0.45
    assert (draws >= 3).mean() == pytest.approx(0.45, abs=0.005)


def test_user_tree_and_per_position_alpha_from_a_scenario(tmp_path):
    import pandas as pd
    from servesim.cli import main
    scenario = tmp_path / "t.toml"
    scenario.write_text(
        'name = "t"\n[model]\nmodel = "vicuna-7b"\n[speculation]\nmethod = "medusa"\nacceptance = "tree"\n'
        'tree_paths = [[0], [0, 0], [1]]\n[workload]\nnum_requests = 8\nseq_len = 64\noutput_len = 33\n')
    out = tmp_path / "out"
    assert main(["run", str(scenario), "--out", str(out)]) == 0
    row = pd.read_parquet(out / "summary.parquet").iloc[0]
    assert row.candidate_tokens == 4
    # 1 + P(R1=0) + P(R1=0)P(R2=0) + P(R1=1) = 1 + 0.5604 + 0.5604*0.3164 + 0.1113
    assert row.expected_acceptance_rate == pytest.approx(1 + 0.5604 + 0.5604 * 0.3164 + (0.6717 - 0.5604))
    bad = tmp_path / "b.toml"
    bad.write_text('[speculation]\nacceptance = "tree"\ntree_paths = [[0, 1]]\n')
    assert main(["run", str(bad)]) == 2
    chain = tmp_path / "c.toml"
    chain.write_text('name = "c"\n[speculation]\nmethod = "draft_model"\ngamma = 2\n'
                     'alpha_per_position = [0.8, 0.5]\n[workload]\nnum_requests = 4\nseq_len = 64\noutput_len = 17\n')
    assert main(["run", str(chain), "--out", str(tmp_path / "c")]) == 0
    row = pd.read_parquet(tmp_path / "c" / "summary.parquet").iloc[0]
    assert row.expected_acceptance_rate == pytest.approx(1 + 0.8 + 0.4)
    assert main(["run", str(chain), "--set", "gamma=3"]) == 2


def test_tree_command_prints_expected_acceptance(capsys):
    from servesim.cli import main
    assert main(["tree", "--tree", "mc_sim_7b_63", "--candidate-tokens", "2,64"]) == 0
    text = capsys.readouterr().out
    assert "1.5604" in text  # one node [0]: 1 + top-1 accuracy of head 0
    assert main(["tree", "--heads", "nope"]) == 2

"""Models from Hugging Face config.json files and inline tables."""

import json

import pytest

from servesim.cli import main
from servesim.models import ModelError, get_model, model_from_config_file, model_from_fields

LLAMA_2_7B = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000,
              "max_position_embeddings": 4096, "tie_word_embeddings": False}


def test_config_gives_the_catalog_shape(tmp_path):
    path = tmp_path / "llama-2-7b" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(LLAMA_2_7B))
    m = model_from_config_file(str(path))
    assert m.name == "llama-2-7b"
    assert m.params == get_model("llama-2-7b").params
    assert m.max_context_tokens == 4096


def test_explicit_head_dim_and_tied_embeddings_counted_by_hand():
    # a Qwen3-32B-like shape: q width 64 x 128 = 8192 != hidden 5120
    fields = {"model_type": "qwen3", "hidden_size": 5120, "num_hidden_layers": 64, "num_attention_heads": 64,
              "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 25600, "vocab_size": 151936,
              "tie_word_embeddings": True}
    m = model_from_fields("q", fields, "inline")
    d, q, kv = 5120, 64 * 128, 8 * 128
    layer = d * q + 2 * d * kv + q * d + 3 * d * 25600 + 2 * d
    assert m.q_dim == 8192 and m.kv_dim == 1024
    assert m.params == 151936 * d + 64 * layer + d  # one embedding matrix (tied)
    assert m.kv_bytes_per_token(2) == 2 * 64 * 1024 * 2


@pytest.mark.parametrize("extra,field", [
    ({"num_local_experts": 8}, "num_local_experts"),
    ({"n_routed_experts": 256}, "n_routed_experts"),
    ({"vision_config": {"hidden_size": 1024}}, "vision_config"),
    ({"sliding_window": 4096, "model_type": "mistral"}, "sliding_window"),
    ({"model_type": "mamba"}, "model_type"),
])
def test_unmodelled_architectures_are_refused_naming_the_field(extra, field):
    with pytest.raises(ModelError, match=field):
        model_from_fields("x", {**LLAMA_2_7B, **extra}, "cfg")
    fields = dict(LLAMA_2_7B)
    del fields["vocab_size"]
    with pytest.raises(ModelError, match="vocab_size"):
        model_from_fields("x", fields, "cfg")


def test_scenario_with_config_path_and_inline_draft(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(LLAMA_2_7B))
    scenario = tmp_path / "s.toml"
    scenario.write_text(f"""
name = "cfg"
[model]
model = "{cfg}"
[model.define.tiny]
hidden_size = 512
num_hidden_layers = 4
num_attention_heads = 8
intermediate_size = 1376
vocab_size = 32000
[speculation]
method = "draft_model"
draft_model = "tiny"
[workload]
num_requests = 4
seq_len = 32
output_len = 16
""")
    assert main(["run", str(scenario), "--out", str(tmp_path / "o")]) == 0
    bad = tmp_path / "b.toml"
    bad.write_text('[model]\nmodel = "nope"\n')
    assert main(["run", str(bad)]) == 2
    assert "allowed:" in capsys.readouterr().err
    bad.write_text('[model.define.m]\nhidden_size = 64\nnum_local_experts = 8\n')
    assert main(["run", str(bad)]) == 2
    assert "num_local_experts" in capsys.readouterr().err


def test_settings_vs_load_plot(tmp_path):
    pytest.importorskip("matplotlib")
    scenario = tmp_path / "p.toml"
    scenario.write_text("""
name = "p"
[model]
model = "llama-3-8b"
[hardware]
gpu = "h100-sxm"
[speculation]
num_speculative_tokens = 2
gamma = 2
[workload]
arrival = "poisson"
num_requests = 40
seq_len = 64
output_len = 32
[serving]
batching = "continuous"
batch_size = 8
[sweep]
method = ["eagle3", "ngram"]
rate_per_s = [1, 4]
""")
    out = tmp_path / "o"
    assert main(["run", str(scenario), "--out", str(out)]) == 0
    assert main(["plot", str(out)]) == 0
    assert (out / "settings_vs_load.png").stat().st_size > 10_000

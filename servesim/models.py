"""Transformer architectures (LLaMA family and relatives), as data.

A model comes from one of three places, all giving the same :class:`Model`:

* the catalog, ``data/models.toml`` (``servesim list``);
* a Hugging Face ``config.json`` (dense decoders: Llama, Mistral, Qwen2/Qwen3, Gemma,
  Gemma-2, Phi-3, Granite, OLMo-2): ``hidden_size``, ``num_hidden_layers``,
  ``num_attention_heads``, ``num_key_value_heads``, ``intermediate_size``,
  ``vocab_size``, ``head_dim``, ``tie_word_embeddings``, ``max_position_embeddings``;
* an inline table of a scenario (``[model.define.NAME]``) with those same field names.

Shapes only: hidden size, layers, attention heads (query and key/value, for grouped-query
attention) and their width, MLP intermediate size and vocabulary. Weights are counted as
LLaMA lays them out: embedding and lm_head (one matrix if tied), q/k/v/o projections,
gated MLP gate/up/down, two norm vectors per layer and a final one. Architectures whose
cost this shape does not describe are refused with the field that shows it:
mixture-of-experts, sliding-window attention on every layer, multimodal towers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from servesim.catalog import data_toml


class Shard(NamedTuple):
    """What one GPU of a tensor-parallel group runs of a layer (Megatron-style, as vLLM,
    SGLang and TRT-LLM split it): its query heads, its KV heads (at least one: KV heads
    are replicated when there are fewer than GPUs) and its share of the MLP width."""

    heads: int
    kv_heads: int
    intermediate: int


class ModelError(ValueError):
    """A model definition (config file or inline table) servesim cannot use."""


@dataclass(frozen=True)
class Model:
    """A decoder-only transformer's shape. Sizes are element counts, not bytes."""

    name: str
    description: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    published_params: float = 0.0
    head_width: int = 0
    """Per-head width when it is not hidden / heads (Qwen3, Gemma); 0 = hidden / heads."""
    tied_embeddings: bool = False
    max_context_tokens: int = 0
    """Longest context the model was trained for (0 = not stated)."""

    @property
    def head_dim(self) -> int:
        return self.head_width or self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        """Width of the Q projection (and input of the output projection)."""
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the K (or V) projection: kv_heads x head_dim."""
        return self.kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        """Parameters of one transformer block (attention, MLP, two norms)."""
        d = self.hidden
        attention = d * self.q_dim + 2 * d * self.kv_dim + self.q_dim * d  # q, k, v, o
        mlp = 3 * d * self.intermediate  # gate, up, down
        return attention + mlp + 2 * d

    @property
    def linear_params(self) -> int:
        """Parameters of the decoder layers' linear layers (q, k, v, o, gate, up, down):
        what ``model.quantization = "fp8"`` stores in one byte each."""
        return self.layers * (self.layer_params - 2 * self.hidden)

    @property
    def params(self) -> int:
        """Total parameters: embedding (+ lm_head unless tied) + blocks + final norm."""
        embeddings = (1 if self.tied_embeddings else 2) * self.vocab * self.hidden
        return embeddings + self.layers * self.layer_params + self.hidden

    def tensor_parallel_sizes(self, sizes=(1, 2, 4, 8)) -> tuple[int, ...]:
        """Those of ``sizes`` that split this model's query heads and MLP width evenly."""
        return tuple(tp for tp in sizes if tp >= 1 and not self.heads % tp and not self.intermediate % tp)

    def shard(self, tensor_parallel_size: int = 1) -> Shard:
        """One GPU's share of a layer over ``tensor_parallel_size`` GPUs (which must
        divide the query heads and the MLP width: :meth:`tensor_parallel_sizes`)."""
        tp = tensor_parallel_size
        if tp not in self.tensor_parallel_sizes((tp,)):
            raise ValueError(f"tensor_parallel_size {tp} must divide the {self.heads} attention heads and "
                             f"the MLP width {self.intermediate} of {self.name}")
        return Shard(self.heads // tp, max(1, self.kv_heads // tp), self.intermediate // tp)

    def gemm_shapes(self, tensor_parallel_size: int = 1) -> dict[str, tuple[int, int]]:
        """(n, k) of one GPU's layer GEMMs over ``tensor_parallel_size`` GPUs, as the
        serving frameworks run them (``y[m, n] = x[m, k] W[k, n]``): the fused q/k/v and
        gate/up projections split their output, the output and down projections their
        reduction."""
        s = self.shard(tensor_parallel_size)
        q_width, kv_width = s.heads * self.head_dim, s.kv_heads * self.head_dim
        return {"qkv_proj": (q_width + 2 * kv_width, self.hidden), "o_proj": (self.hidden, q_width),
                "gate_up_proj": (2 * s.intermediate, self.hidden), "down_proj": (self.hidden, s.intermediate)}

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """KV-cache bytes one token of context takes, over all layers."""
        return 2 * self.layers * self.kv_dim * dtype_bytes


def model_names() -> list[str]:
    """Catalog names of all models."""
    return list(data_toml("models.toml"))


def get_model(name: str) -> Model:
    """The catalog model ``name``; KeyError if unknown."""
    table = data_toml("models.toml")
    if name not in table:
        raise KeyError(name)
    return Model(name=name, **table[name])


DENSE_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "granite", "olmo2")
"""Hugging Face ``model_type`` values whose layers are the dense decoder modelled here."""
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
MOE_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size", "num_experts_per_tok")
MULTIMODAL_FIELDS = ("vision_config", "audio_config", "text_config", "vision_tower")
ALTERNATING_WINDOW = ("gemma2",)
"""Types whose sliding window is on every other layer only (costed as full attention,
an overestimate of those layers' attention at contexts beyond the window)."""


def model_from_fields(name: str, fields: dict, where: str) -> Model:
    """A model from Hugging Face config fields; ModelError naming the field otherwise."""
    if not isinstance(fields, dict):
        raise ModelError(f"{where}: expected a table of config fields")
    for key in MULTIMODAL_FIELDS:
        if fields.get(key):
            raise ModelError(f"{where}: field '{key}': multimodal models are not modelled (a vision or audio "
                             "tower is not a decoder layer); give the language model's own config")
    for key in MOE_FIELDS:
        value = fields.get(key)
        if value and not (isinstance(value, (int, float)) and value <= 1):
            raise ModelError(f"{where}: field '{key}' = {value!r}: mixture-of-experts layers are not modelled "
                             "(servesim costs dense decoders only)")
    kind = fields.get("model_type")
    if kind is not None and kind not in DENSE_TYPES:
        raise ModelError(f"{where}: field 'model_type' = {kind!r} is not a dense decoder servesim models; "
                         f"allowed: {', '.join(DENSE_TYPES)}")
    window = fields.get("sliding_window")
    if window and fields.get("use_sliding_window", True) and kind not in ALTERNATING_WINDOW:
        raise ModelError(f"{where}: field 'sliding_window' = {window!r}: sliding-window attention on every layer "
                         "is not modelled (full attention would overstate its cost); set it to null if the "
                         "model uses full attention")
    for key in REQUIRED:
        if key not in fields:
            raise ModelError(f"{where}: field '{key}' is missing; a model needs {', '.join(REQUIRED)}")

    def integer(key: str, default=None, low: int = 1) -> int:
        value = fields.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 2**31 - 1:
            raise ModelError(f"{where}: field '{key}' must be an integer in [{low}, {2**31 - 1}], got {value!r}")
        return value

    hidden = integer("hidden_size")
    heads = integer("num_attention_heads")
    kv_heads = integer("num_key_value_heads", fields.get("num_attention_heads"))
    head_dim = fields.get("head_dim")
    head_dim = integer("head_dim") if head_dim is not None else 0
    if not head_dim and hidden % heads:
        raise ModelError(f"{where}: field 'hidden_size' {hidden} is not a multiple of num_attention_heads {heads}; "
                         "give head_dim")
    if heads % kv_heads:
        raise ModelError(f"{where}: field 'num_key_value_heads' {kv_heads} must divide num_attention_heads {heads}")
    tied = fields.get("tie_word_embeddings", kind in ("gemma", "gemma2"))
    if not isinstance(tied, bool):
        raise ModelError(f"{where}: field 'tie_word_embeddings' must be true or false, got {tied!r}")
    context = fields.get("max_position_embeddings", 0)
    context = integer("max_position_embeddings") if context else 0
    return Model(name=name, description=str(fields.get("description", f"{kind or 'model'} from {where}")),
                 hidden=hidden, layers=integer("num_hidden_layers"), heads=heads, kv_heads=kv_heads,
                 intermediate=integer("intermediate_size"), vocab=integer("vocab_size"),
                 head_width=0 if head_dim == hidden // heads and not hidden % heads else head_dim,
                 tied_embeddings=tied, max_context_tokens=context)


_FILE_MODELS: dict[tuple, Model] = {}


def model_from_config_file(path: str) -> Model:
    """A model from a Hugging Face ``config.json`` (cached by path and mtime)."""
    try:
        key = (os.path.abspath(path), os.stat(path).st_mtime_ns)
    except OSError as e:
        raise ModelError(f"{path}: cannot read file: {e.strerror}") from None
    if key not in _FILE_MODELS:
        try:
            fields = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelError(f"{path}: not a readable JSON config: {e}") from None
        name = Path(path).parent.name if Path(path).name == "config.json" else Path(path).stem
        _FILE_MODELS[key] = model_from_fields(name or Path(path).stem, fields, path)
    return _FILE_MODELS[key]


def looks_like_file(name: str) -> bool:
    return name.endswith(".json") or os.sep in name or "/" in name


def resolve_model(name: str, definitions: dict | tuple = ()) -> Model:
    """The model a scenario names: an inline definition (``definitions``: name -> config
    fields, as a dict or a tuple of items), a ``config.json`` path or a catalog name.
    KeyError for an unknown name, ModelError for a bad definition."""
    defs = dict(definitions)
    if name in defs:
        fields = defs[name]
        if isinstance(fields, str):  # frozen (frozen_definitions)
            fields = json.loads(fields)
        return model_from_fields(name, fields, f"model.define.{name}")
    if looks_like_file(name):
        return model_from_config_file(name)
    return get_model(name)


def frozen_definitions(definitions: dict) -> tuple:
    """Inline definitions as a hashable, order-independent tuple (for memo keys)."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in definitions.items()))


def thaw_definitions(frozen: tuple) -> dict:
    return {k: json.loads(v) for k, v in frozen}


__all__ = ["Model", "ModelError", "get_model", "model_names", "model_from_fields", "model_from_config_file",
           "resolve_model", "frozen_definitions", "thaw_definitions", "looks_like_file"]

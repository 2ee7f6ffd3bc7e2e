"""Transformer architectures (LLaMA family and relatives), as data from ``data/models.toml``.

Shapes only: hidden size, layers, attention heads (query and key/value, for grouped-query
attention), MLP intermediate size and vocabulary. Weights are counted as LLaMA lays them
out: untied embedding and lm_head, q/k/v/o projections, SwiGLU gate/up/down, two RMSNorm
vectors per layer and a final one.
"""

from __future__ import annotations

from dataclasses import dataclass

from servesim.catalog import data_toml


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
    published_params: float

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        """Width of the K (or V) projection: kv_heads x head_dim."""
        return self.kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        """Parameters of one transformer block (attention, MLP, two norms)."""
        d = self.hidden
        attention = d * d + 2 * d * self.kv_dim + d * d  # q, k, v, o
        mlp = 3 * d * self.intermediate  # gate, up, down
        return attention + mlp + 2 * d

    @property
    def params(self) -> int:
        """Total parameters: embedding + blocks + final norm + lm_head."""
        return 2 * self.vocab * self.hidden + self.layers * self.layer_params + self.hidden

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

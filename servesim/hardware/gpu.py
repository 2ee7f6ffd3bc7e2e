"""The GPU catalog: datasheet facts of each GPU and its kernel profile.

A :class:`GPU` holds datasheet facts. A :class:`KernelProfile` holds what real kernels
achieve on it and how they tile work; each field is one physical mechanism, documented
below. Both are plain data loaded from ``data/gpus.toml``: a new GPU is a table there,
not a code path.
"""

from __future__ import annotations

from dataclasses import dataclass

from servesim.catalog import data_toml
from servesim.hardware.kernel_profile import KernelProfile


@dataclass(frozen=True)
class GPU:
    """Datasheet facts of one GPU (dense FP16 peak, HBM bandwidth, capacity)."""

    name: str
    description: str
    hbm_bandwidth_bytes_per_s: float
    peak_fp16_flops_per_s: float
    memory_bytes: float
    l2_cache_bytes: float
    num_sms: int
    source: str
    profile: KernelProfile

    @property
    def ridge_flops_per_byte(self) -> float:
        """Arithmetic intensity where the ideal (peak) roofline turns from memory to compute."""
        return self.peak_fp16_flops_per_s / self.hbm_bandwidth_bytes_per_s


def gpu_names() -> list[str]:
    """Catalog names of all GPUs."""
    return [k for k in data_toml("gpus.toml") if k != "default_profile"]


def get_gpu(name: str) -> GPU:
    """The catalog GPU ``name`` with its kernel profile; KeyError if unknown."""
    table = data_toml("gpus.toml")
    if name not in table or name == "default_profile":
        raise KeyError(name)
    entry = dict(table[name])
    profile = dict(table["default_profile"])
    profile.update(entry.pop("profile", {}))
    return GPU(name=name, profile=KernelProfile(**profile), **entry)

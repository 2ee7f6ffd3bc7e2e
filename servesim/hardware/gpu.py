"""The GPU catalog: datasheet facts of each GPU and the kernel profile it runs with.

A :class:`GPU` holds datasheet facts; its kernel profile (what real kernels achieve on
it) is named by the catalog entry's ``kernel_profile`` per serving framework and lives
in ``data/profiles/<name>.toml`` with the report of the fit that made it. Both are plain
data: a new GPU is a table in ``data/gpus.toml``, a new profile a file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path

from servesim.catalog import data_toml
from servesim.hardware.kernel_profile import (PROFILE_FIELDS, KernelProfile, ProfileError, load_profile_file,
                                              profile_from_table)


@dataclass(frozen=True)
class GPU:
    """Datasheet facts of one GPU (dense FP16 peak, HBM bandwidth, capacity) and the
    kernel profile it runs with by default (``profile``; ``profile_name`` names it)."""

    name: str
    description: str
    hbm_bandwidth_bytes_per_s: float
    peak_fp16_flops_per_s: float
    memory_bytes: float
    l2_cache_bytes: float
    num_sms: int
    source: str
    profile: KernelProfile
    profile_name: str = ""
    provenance: str = ""
    interconnect: str = ""
    interconnect_bandwidth_bytes_per_s: float = 0.0
    """GPU-to-GPU link bandwidth per direction (NVLink or PCIe), for all-reduces."""
    nvlink_switch_reduction: bool = False
    """Whether the GPUs' NVSwitch can reduce an all-reduce in the switch (NVLink SHARP:
    HGX H100, H200, B200), so each GPU sends and receives the message once."""
    host_link_bandwidth_bytes_per_s: float = 0.0
    """GPU-to-CPU link bandwidth per direction (PCIe), for KV blocks swapped to CPU memory."""
    measured_as: str = ""
    """The GPU's name in measured kernel tables (aiconfigurator-core's folder name), if any."""
    max_threads_per_sm: int = 2048
    """Most threads resident on one SM (CUDA's compute-capability table: 2,048 on sm_80,
    sm_90 and sm_100; 1,536 on sm_86 and sm_89), which caps how many blocks of a kernel
    an SM runs at once."""
    max_blocks_per_sm: int = 32
    """Most thread blocks resident on one SM (32 on sm_80, sm_90 and sm_100; 16 on sm_86,
    24 on sm_89)."""
    peak_fp8_flops_per_s: float = 0.0
    """Dense FP8 (E4M3) tensor-core FLOP/s (datasheet, without sparsity); 0 for a GPU
    without FP8 tensor cores (Ampere), which cannot run ``model.quantization = "fp8"``."""

    @property
    def ridge_flops_per_byte(self) -> float:
        """Arithmetic intensity where the ideal (peak) roofline turns from memory to compute."""
        return self.peak_fp16_flops_per_s / self.hbm_bandwidth_bytes_per_s


ALLREDUCE_FIELDS = tuple(name for name in PROFILE_FIELDS if name.startswith("allreduce_"))
"""The kernel-profile fields of the tensor-parallel all-reduce (a server's links)."""

GPU_FACTS = ("description", "hbm_bandwidth_bytes_per_s", "peak_fp16_flops_per_s", "memory_bytes",
             "l2_cache_bytes", "num_sms", "source")


def gpu_names() -> list[str]:
    """Catalog names of all GPUs."""
    return list(data_toml("gpus.toml"))


def profile_names() -> list[str]:
    """Names of the bundled kernel profiles (``data/profiles/<name>.toml``)."""
    folder = resources.files("servesim").joinpath("data", "profiles")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


@cache
def _bundled_profile(name: str) -> tuple[KernelProfile, dict]:
    table = data_toml(f"profiles/{name}.toml")
    return profile_from_table(table, f"servesim/data/profiles/{name}.toml"), table


def get_profile(name_or_path: str) -> tuple[KernelProfile, dict]:
    """A kernel profile and its file's tables: a bundled name (``servesim list``) or the
    path of a TOML file written by ``servesim calibrate``. KeyError for a name that is
    neither; ProfileError for a file that is not a valid profile."""
    if name_or_path in profile_names():
        return _bundled_profile(name_or_path)
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise ProfileError(f"{name_or_path}: no such kernel-profile file")
        return load_profile_file(path)
    raise KeyError(name_or_path)


def default_profile_name(gpu_name: str, framework: str = "vllm") -> str:
    """The bundled profile a GPU runs with under ``framework`` (its calibrated profile
    for that framework's kernels, else its vLLM one)."""
    entry = data_toml("gpus.toml")[gpu_name]
    profiles = entry["kernel_profile"]
    return profiles.get(framework) or profiles["vllm"]


def with_allreduce_of(profile: KernelProfile, donors: dict, framework: str) -> KernelProfile:
    """``profile`` with the all-reduce fields of another bundled profile (per framework,
    vLLM's by default): a catalog entry's ``allreduce_profile``, for a GPU whose kernels
    are its sibling's but whose servers are linked like another measured GPU's (the
    PCIe cards: their SXM siblings' kernels, the L40S's PCIe all-reduces)."""
    donor, _ = get_profile(donors.get(framework) or donors["vllm"])
    return replace(profile, **{name: getattr(donor, name) for name in ALLREDUCE_FIELDS})


def get_gpu(name: str, framework: str = "vllm", kernel_profile: str = "") -> GPU:
    """The catalog GPU ``name`` with its kernel profile: ``kernel_profile`` (a name or
    file) if given, else the GPU's own for ``framework``. KeyError if unknown."""
    table = data_toml("gpus.toml")
    if name not in table:
        raise KeyError(name)
    entry = table[name]
    profile_name = kernel_profile or default_profile_name(name, framework)
    profile, profile_table = get_profile(profile_name)
    if "allreduce_profile" in entry and not kernel_profile:
        profile = with_allreduce_of(profile, entry["allreduce_profile"], framework)
    fit = profile_table.get("fit", {})
    provenance = entry.get("provenance", "") if not kernel_profile else fit.get("provenance", "")
    return GPU(name=name, profile=profile, profile_name=profile_name, provenance=provenance,
               interconnect=entry.get("interconnect", ""), measured_as=entry.get("measured_as", ""),
               interconnect_bandwidth_bytes_per_s=entry.get("interconnect_bandwidth_bytes_per_s", 0.0),
               nvlink_switch_reduction=entry.get("nvlink_switch_reduction", False),
               host_link_bandwidth_bytes_per_s=entry.get("host_link_bandwidth_bytes_per_s", 0.0),
               max_threads_per_sm=entry.get("max_threads_per_sm", 2048),
               max_blocks_per_sm=entry.get("max_blocks_per_sm", 32),
               peak_fp8_flops_per_s=entry.get("peak_fp8_flops_per_s", 0.0),
               **{k: entry[k] for k in GPU_FACTS})

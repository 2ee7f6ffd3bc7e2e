"""Time a model's kernels on the local device (``servesim profile``).

Writes a kernel table (:mod:`servesim.hardware.kernel_table`) that ``servesim
calibrate --table`` fits a profile to, so that a user with a GPU calibrates servesim
for their own hardware and software in two commands::

    servesim profile --model llama-3-8b --out kernels.csv        # on the GPU machine
    servesim calibrate --gpu h100-sxm --table kernels.csv --out my-h100.toml

What is timed, for the model's layer shapes: the GEMMs (fused q/k/v, o, fused
gate/up, down) at token counts ``m``; decode attention (one query per sequence over a
KV cache of ``kv_len`` tokens, grouped-query heads as the model has them); causal
prefill attention; and one memory-bound elementwise kernel (a scale-and-cast of an
``m x hidden`` activation). Each is run ``warmup`` times, then timed ``repeat`` times
(the median is kept), on the same tensors, as microbenchmarks do. Tensors are bf16 on
a GPU and float32 on a CPU (whose numbers are for testing the plumbing only).

Backends: ``torch`` (the ``profile`` extra; CUDA when available, else CPU: the
default) and ``numpy`` (CPU only, always available: the plumbing and the format can be
tested anywhere; a CPU's numbers say nothing about a GPU).
"""

from __future__ import annotations

import statistics
import time

import pandas as pd

from servesim.hardware.kernel_table import COLUMNS, check_kernel_table

QUICK = {"m": (1, 8, 32, 128, 512), "batch": (1, 4, 16), "kv_len": (128, 1024), "seq_len": (64, 256)}
FULL = {"m": (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 768, 1024, 2048, 4096, 8192),
        "batch": (1, 2, 4, 8, 16, 32, 64, 128), "kv_len": (64, 256, 1024, 4096, 16384),
        "seq_len": (128, 512, 1024, 2048, 4096, 8192)}


class ProfileUnavailable(RuntimeError):
    """The requested backend or device is not available here."""


class _Numpy:
    name, device_name, framework, version = "numpy", "cpu", "numpy", ""
    elementwise_bytes = 6  # float32 in, float16 out

    def __init__(self, device: str) -> None:
        import numpy as np
        if device not in ("cpu", "auto"):
            raise ProfileUnavailable(f"the numpy backend runs on the CPU only, not {device!r}")
        self.np = np
        self.version = np.__version__
        import platform
        self.device_name = f"cpu ({platform.processor() or platform.machine()})"

    def zeros(self, *shape):
        return self.np.ones(shape, dtype=self.np.float32) * 0.01

    def sync(self) -> None:
        pass

    def gemm(self, x, w):
        return x @ w

    def attention(self, q, k, v, causal: bool):
        # q: (b, h, s, d); k, v: (b, kvh, t, d); heads share their KV group
        np = self.np
        b, h, s, d = q.shape
        group = h // k.shape[1]
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / d ** 0.5
        if causal:
            t = k.shape[2]
            scores = scores + np.triu(np.full((s, t), -1e9, dtype=np.float32), 1 + t - s)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return (scores / scores.sum(axis=-1, keepdims=True)) @ v

    def elementwise(self, x):
        return (x * 0.5).astype(self.np.float16)


class _Torch:
    name, framework = "torch", "torch"

    def __init__(self, device: str) -> None:
        try:
            import torch
        except ImportError:
            raise ProfileUnavailable("the torch backend needs PyTorch: pip install 'servesim[profile]' "
                                     "(or use --backend numpy on a CPU)") from None
        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ProfileUnavailable("no CUDA device is available to PyTorch")
        self.device = device
        self.dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.version = torch.__version__
        self.device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        self.elementwise_bytes = 4 if device == "cuda" else 6  # bf16 (float32 on a CPU) in, fp16 out

    def zeros(self, *shape):
        return self.torch.full(shape, 0.01, dtype=self.dtype, device=self.device)

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def gemm(self, x, w):
        return x @ w

    def attention(self, q, k, v, causal: bool):
        f = self.torch.nn.functional
        group = q.shape[1] // k.shape[1]
        if group > 1:
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        return f.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def elementwise(self, x):
        return (x * 0.5).to(self.torch.float16)


def backend(name: str, device: str):
    if name == "numpy":
        return _Numpy(device)
    if name == "torch":
        return _Torch(device)
    raise ProfileUnavailable(f"unknown backend {name!r}; allowed: torch, numpy")


def _time(b, fn, warmup: int, repeat: int) -> float:
    for _ in range(warmup):
        fn()
    b.sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        b.sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile_model(model, backend_name: str = "torch", device: str = "auto", grid: dict = QUICK,
                  warmup: int = 2, repeat: int = 5, progress=None) -> pd.DataFrame:
    """Time ``model``'s kernels (see module docstring); returns the kernel table."""
    b = backend(backend_name, device)
    h, kv, inter = model.hidden, model.kv_dim, model.intermediate
    shapes = {(h + 2 * kv, h), (h, h), (2 * inter, h), (h, inter)}  # (n, k): qkv, o, gate_up, down
    rows = []

    def row(op, latency, **shape):
        rows.append({"gpu": b.device_name, "framework": b.framework, "version": b.version, "op": op,
                     "latency_s": latency, "source": f"servesim profile ({b.name})", **shape})

    for n, k in sorted(shapes):
        w = b.zeros(k, n)
        for m in grid["m"]:
            x = b.zeros(m, k)
            row("gemm", _time(b, lambda: b.gemm(x, w), warmup, repeat), m=m, n=n, k=k)
        if progress:
            progress(f"gemm {n}x{k}")
    heads, kv_heads, d = model.heads, model.kv_heads, model.head_dim
    for batch in grid["batch"]:
        for kv_len in grid["kv_len"]:
            q = b.zeros(batch, heads, 1, d)
            kk, vv = b.zeros(batch, kv_heads, kv_len, d), b.zeros(batch, kv_heads, kv_len, d)
            row("decode_attention", _time(b, lambda: b.attention(q, kk, vv, False), warmup, repeat),
                batch_size=batch, kv_len=kv_len, num_heads=heads, num_kv_heads=kv_heads, head_dim=d)
        for seq_len in grid["seq_len"]:
            q = b.zeros(batch, heads, seq_len, d)
            kk, vv = b.zeros(batch, kv_heads, seq_len, d), b.zeros(batch, kv_heads, seq_len, d)
            row("prefill_attention", _time(b, lambda: b.attention(q, kk, vv, True), warmup, repeat),
                batch_size=batch, seq_len=seq_len, num_heads=heads, num_kv_heads=kv_heads, head_dim=d)
    if progress:
        progress("attention")
    for m in grid["m"]:
        x = b.zeros(m, h)
        row("elementwise", _time(b, lambda: b.elementwise(x), warmup, repeat), m=m, k=h,
            bytes_per_element=b.elementwise_bytes)
    table = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
    return check_kernel_table(table, "servesim profile")

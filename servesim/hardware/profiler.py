"""Time a model's kernels on the local device (``servesim profile``).

Writes a kernel table (:mod:`servesim.hardware.kernel_table`) that ``servesim
calibrate --table`` fits a profile to, so that a user with a GPU calibrates servesim
for their own hardware and software in two commands::

    servesim profile --model llama-3-8b --out kernels.csv        # on the GPU machine
    servesim calibrate --gpu h100-sxm --table kernels.csv --out my-h100.toml

What is timed, for the model's layer shapes: the GEMMs (fused q/k/v, o, fused
gate/up, down) at token counts ``m``, in 16 bits and, where the device has FP8 tensor
cores, as FP8 linear layers (``fp8_gemm``: the activations cast to FP8 with a given
scale, one kernel, then ``torch._scaled_mm`` of FP8 weights with per-tensor scales and
a 16-bit output, vLLM's ``--quantization fp8`` and TRT-LLM's FP8 layers); decode
attention (one query per sequence over a KV cache of ``kv_len`` tokens); causal
prefill attention; each at the shapes one GPU
runs at every tensor-parallel size asked for (by default 1, 2, 4 and 8, those that
split the model): the GEMMs' shards and the GPU's share of the heads, so that a fit
sees the few-tile GEMMs and few-head attention a TP 8 step runs instead of
extrapolating to them (a row's ``source`` names the layer GEMM and TP size it was
timed as); and one memory-bound
elementwise kernel (a scale-and-cast of an ``m x hidden`` and an ``m x intermediate``
activation); and the all-reduce of messages of every size over groups of local
devices (:mod:`servesim.hardware.allreduce_profiler`; by default groups of every power
of two up to the machine's CUDA devices, none on a CPU; ``--allreduce-gpus`` chooses).
Attention runs with the model's grouped-query heads as they are: the query heads of a
group share their KV head, which is read once, never copied per query head (a copy
would be timed as attention). Each kernel is run ``warmup`` times,
then timed ``repeat`` times (the median is kept), on the same tensors, as
microbenchmarks do. Tensors are bf16 on a GPU and float32 on a CPU (whose numbers are
for testing the plumbing only).

Timing on a GPU: ``CALLS_PER_TIMING`` calls are captured in one CUDA graph and each
replay is timed with CUDA events, so a table row is the kernel's GPU time per call,
without the host's launch latency and synchronisation (about 5-20 us a call, as much
as a small kernel itself; kernel microbenchmarks time the same way). Where a
kernel cannot be captured, the calls run back to back between the two events instead.
On a CPU: the host clock around each call.

The quick grid (the default) has enough shapes of every op class for ``calibrate`` to
fit all its parameters, keeping a batch's tokens under a cap (``decode_max_tokens``,
``prefill_max_tokens``) so that it also runs on a CPU; ``--full`` adds long prompts and contexts and more token counts.

Backends: ``torch`` (the ``profile`` extra; CUDA when available, else CPU: the
default) and ``numpy`` (CPU only, always available: the plumbing and the format can be
tested anywhere; a CPU's numbers say nothing about a GPU; its FP8 GEMMs are stand-ins
of the same bytes, int8, as numpy has no FP8 type).

Not timed: attention over an FP8 KV cache (``decode_attention_fp8_kv``,
``prefill_attention_fp8_kv``): PyTorch's attention does not read FP8 keys and values,
and converting them first would time a copy, not a serving kernel. Such rows timed
another way can be added to the table.
"""

from __future__ import annotations

import statistics
import time

import pandas as pd

from servesim.hardware import allreduce_profiler
from servesim.hardware.kernel_table import COLUMNS, check_kernel_table

QUICK = {"m": (1, 8, 32, 128, 512), "elementwise_m": (1, 16, 64, 256, 1024, 4096, 16384),
         "decode_batch": (1, 2, 4, 8, 32, 128), "kv_len": (128, 1024, 4096, 16384), "decode_max_tokens": 2**17,
         "prefill_batch": (1, 2, 4, 8, 16), "seq_len": (64, 128, 256, 512, 1024), "prefill_max_tokens": 2**12,
         "allreduce_elements": tuple(2**e for e in range(7, 28))}
FULL = {"m": (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 768, 1024, 2048, 4096, 8192),
        "elementwise_m": (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536),
        "decode_batch": (1, 2, 4, 8, 16, 32, 64, 128, 256), "kv_len": (64, 256, 1024, 4096, 16384, 65536),
        "decode_max_tokens": 2**21,
        "prefill_batch": (1, 2, 4, 8, 16, 32), "seq_len": (128, 512, 1024, 2048, 4096, 8192),
        "prefill_max_tokens": 2**16, "allreduce_elements": tuple(2**e for e in range(7, 30))}
"""Shape grids: GEMM token counts ``m``; elementwise rows; decode batches x KV lengths and
prefill batches x prompt lengths, each up to ``*_max_tokens`` tokens in the batch;
all-reduce messages (elements, every power of two: 128 to 2^27, 256 MB of bf16, quick;
to 2^29, 1 GB, as aiconfigurator's tables, full; at most
``allreduce_profiler.CPU_MAX_ELEMENTS`` on a CPU)."""
CALLS_PER_TIMING = 20


class ProfileUnavailable(RuntimeError):
    """The requested backend or device is not available here."""


class _Numpy:
    name, device, device_name, framework, version = "numpy", "cpu", "cpu", "numpy", ""
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
        return self.np.full(shape, 0.01, dtype=self.np.float32)

    def sync(self) -> None:
        pass

    def gemm(self, x, w):
        return x @ w

    def attention(self, q, k, v, causal: bool):
        """q: (b, h, s, d); k, v: (b, kvh, t, d). The h / kvh query heads of a group
        attend to their KV head through broadcasting (no copy). A prompt (s > 1) runs
        one sequence at a time, so its scores stay one sequence's size."""
        np = self.np
        b, h, s, d = q.shape
        kvh, t = k.shape[1], k.shape[2]
        mask = np.triu(np.full((s, t), -1e9, dtype=np.float32), 1 + t - s) if causal else 0.0

        def attend(q, k, v):  # q: (..., kvh, group, s, d); k, v: (..., kvh, 1, t, d)
            scores = q @ np.swapaxes(k, -1, -2) / d ** 0.5 + mask
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            return (scores / scores.sum(axis=-1, keepdims=True)) @ v

        if s == 1:
            return attend(q.reshape(b, kvh, h // kvh, s, d), k[:, :, None], v[:, :, None]).reshape(b, h, s, d)
        out = np.empty_like(q)
        for i in range(b):
            out[i] = attend(q[i].reshape(kvh, h // kvh, s, d), k[i][:, None], v[i][:, None]).reshape(h, s, d)
        return out

    def time(self, fn, warmup: int, repeat: int) -> float:
        return _host_time(self, fn, warmup, repeat)

    def elementwise(self, x):
        return (x * 0.5).astype(self.np.float16)

    def fp8_unavailable(self) -> str:
        return ""

    def fp8_weights(self, k, n):
        """One-byte stand-ins of FP8 weights (``k x n``): int8."""
        return self.np.ones((k, n), dtype=self.np.int8)

    def fp8_gemm(self, x, w8):
        """The stand-in of an FP8 linear layer: the activations cast to one byte, then
        the product of the one-byte operands with a 16-bit output."""
        np = self.np
        return np.matmul((x * 100.0).astype(np.int8), w8, dtype=np.float32).astype(np.float16)


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
        self.unit_scale = torch.ones((), dtype=torch.float32, device=device)  # FP8 GEMMs' (made once, not timed)

    def zeros(self, *shape):
        return self.torch.full(shape, 0.01, dtype=self.dtype, device=self.device)

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def gemm(self, x, w):
        return x @ w

    def attention(self, q, k, v, causal: bool):
        # grouped-query heads read their shared KV head (PyTorch 2.5's enable_gqa)
        return self.torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                                     enable_gqa=q.shape[1] != k.shape[1])

    def time(self, fn, warmup: int, repeat: int) -> float:
        """GPU seconds per call (see the module docstring); the host clock on a CPU."""
        if self.device != "cuda":
            return _host_time(self, fn, warmup, repeat)
        torch = self.torch
        side = torch.cuda.Stream()  # warm up off the default stream, as graph capture needs
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(warmup, 1)):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                for _ in range(CALLS_PER_TIMING):
                    fn()
            run = graph.replay
        except RuntimeError:  # not capturable: back-to-back calls
            torch.cuda.synchronize()

            def run():
                for _ in range(CALLS_PER_TIMING):
                    fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(repeat):
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e-3 / CALLS_PER_TIMING)  # elapsed_time is in ms
        return statistics.median(times)

    def elementwise(self, x):
        return (x * 0.5).to(self.torch.float16)

    def fp8_unavailable(self) -> str:
        """Why FP8 GEMMs cannot be timed here ("" where they can): PyTorch without FP8
        (``torch.float8_e4m3fn``, ``torch._scaled_mm``), a GPU without FP8 tensor cores
        (compute capability below 8.9: A100, A10G), or ``_scaled_mm`` failing on a small
        GEMM (on a CPU, where PyTorch has none)."""
        torch = self.torch
        if not (hasattr(torch, "float8_e4m3fn") and hasattr(torch, "_scaled_mm")):
            return f"PyTorch {torch.__version__} has no FP8 GEMM (torch._scaled_mm)"
        if self.device == "cuda" and tuple(torch.cuda.get_device_capability()) < (8, 9):
            return f"{self.device_name} has no FP8 tensor cores (compute capability 8.9 or newer)"
        try:
            self.fp8_gemm(self.zeros(16, 32), self.fp8_weights(32, 16))
            self.sync()
        except (RuntimeError, NotImplementedError, TypeError) as e:
            return f"torch._scaled_mm does not run on {self.device}: {str(e).strip().splitlines()[0][:200]}"
        return ""

    def fp8_weights(self, k, n):
        """FP8 weights as ``_scaled_mm`` takes its second operand: ``k x n``, column-major
        (an ``n x k`` row-major tensor, transposed)."""
        torch = self.torch
        return torch.full((n, k), 0.01, dtype=self.dtype, device=self.device).to(torch.float8_e4m3fn).t()

    def fp8_gemm(self, x, w8):
        """An FP8 linear layer (W8A8, per-tensor scales) as a serving framework runs it
        alone: ``x`` cast to FP8 with a given (unit) scale, one kernel, then the FP8 GEMM
        with a 16-bit output."""
        torch, one = self.torch, self.unit_scale
        out = torch._scaled_mm(x.to(torch.float8_e4m3fn), w8, scale_a=one, scale_b=one, out_dtype=self.dtype)
        return out[0] if isinstance(out, tuple) else out  # (PyTorch before 2.5: (out, amax))


def backend(name: str, device: str):
    if name == "numpy":
        return _Numpy(device)
    if name == "torch":
        return _Torch(device)
    raise ProfileUnavailable(f"unknown backend {name!r}; allowed: torch, numpy")


def benchmark_calls(b, warmup: int, repeat: int) -> tuple[int, int]:
    """(calls before, calls in) the timing a row keeps, the median of ``repeat``: the
    kernel table's ``warmup_calls`` and ``timed_calls``, for reading GEMMs of long
    sustained runs with the GPU's power-throttled clock."""
    if b.device == "cuda":
        return max(warmup, 1) + CALLS_PER_TIMING * (repeat // 2), CALLS_PER_TIMING
    return warmup + repeat // 2, 1


def _host_time(b, fn, warmup: int, repeat: int) -> float:
    """Median host-clock seconds of one call (and its synchronisation)."""
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


def _shapes(batches, lengths, max_tokens: int) -> list[tuple[int, int]]:
    """(batch, length) pairs of the grid with at most ``max_tokens`` tokens in the batch."""
    return [(b, n) for b in batches for n in lengths if b * n <= max_tokens]


def profile_model(model, backend_name: str = "torch", device: str = "auto", grid: dict = QUICK,
                  warmup: int = 2, repeat: int = 5, progress=None, allreduce_gpus=None,
                  tensor_parallel_sizes=None, fp8: bool = True) -> pd.DataFrame:
    """Time ``model``'s kernels (see module docstring); returns the kernel table.
    ``allreduce_gpus``: group sizes to time the all-reduce over (None: the default of
    :func:`allreduce_profiler.default_groups`; () none). ``tensor_parallel_sizes``: the
    layer shards whose GEMMs and attention heads are timed (:meth:`Model.gemm_shapes`,
    :meth:`Model.shard`), each shape once; every size must split the model (None: those
    of 1, 2, 4 and 8 that do, :meth:`Model.tensor_parallel_sizes`). ``fp8``: also time
    the GEMMs as FP8 linear layers where the device can (``progress`` says why not where
    it cannot)."""
    b = backend(backend_name, device)
    device = b.device
    if allreduce_gpus is None:
        allreduce_gpus = allreduce_profiler.default_groups(backend_name, device)
    try:
        allreduce_profiler.check_groups(backend_name, device, allreduce_gpus)
    except allreduce_profiler.AllReduceUnavailable as e:
        raise ProfileUnavailable(str(e)) from None
    if tensor_parallel_sizes is None:
        tensor_parallel_sizes = model.tensor_parallel_sizes()
    gemms = {}  # (n, k) -> the layer GEMM and TP size it is first timed as
    layouts = {}  # (query heads, KV heads) -> the TP size
    for tp in sorted(set(tensor_parallel_sizes)):
        for name, shape in model.gemm_shapes(tp).items():
            gemms.setdefault(shape, f"{name}, TP {tp}")
        shard = model.shard(tp)
        layouts.setdefault((shard.heads, shard.kv_heads), tp)
    rows = []

    def row(op, latency, what="", **shape):
        source = f"servesim profile ({b.name})" + (f": {what}" if what else "")
        rows.append({"gpu": b.device_name, "framework": b.framework, "version": b.version, "op": op,
                     "latency_s": latency, "source": source, **shape})

    calls = benchmark_calls(b, warmup, repeat)
    for (n, k), what in sorted(gemms.items()):
        w = b.zeros(k, n)
        for m in grid["m"]:
            x = b.zeros(m, k)
            row("gemm", b.time(lambda: b.gemm(x, w), warmup, repeat), what, m=m, n=n, k=k,
                warmup_calls=calls[0], timed_calls=calls[1])
        if progress:
            progress(f"gemm {n}x{k} ({what})")
    unavailable = b.fp8_unavailable() if fp8 else ""
    if unavailable and progress:
        progress(f"no FP8 GEMMs: {unavailable}")
    for (n, k), what in (sorted(gemms.items()) if fp8 and not unavailable else ()):
        w8 = b.fp8_weights(k, n)
        for m in grid["m"]:
            x = b.zeros(m, k)
            try:
                latency = b.time(lambda: b.fp8_gemm(x, w8), warmup, repeat)
            except (RuntimeError, ValueError) as e:  # a shape the FP8 GEMM rejects: that row only
                if progress:
                    progress(f"fp8 gemm {n}x{k} at m = {m} not timed: {str(e).strip().splitlines()[0][:200]}")
                continue
            row("fp8_gemm", latency, what, m=m, n=n, k=k, warmup_calls=calls[0], timed_calls=calls[1])
        if progress:
            progress(f"fp8 gemm {n}x{k} ({what})")
    d = model.head_dim
    for (heads, kv_heads), tp in sorted(layouts.items(), reverse=True):
        what = f"TP {tp}"
        for batch, kv_len in _shapes(grid["decode_batch"], grid["kv_len"], grid["decode_max_tokens"]):
            q = b.zeros(batch, heads, 1, d)
            kk, vv = b.zeros(batch, kv_heads, kv_len, d), b.zeros(batch, kv_heads, kv_len, d)
            row("decode_attention", b.time(lambda: b.attention(q, kk, vv, False), warmup, repeat), what,
                batch_size=batch, kv_len=kv_len, num_heads=heads, num_kv_heads=kv_heads, head_dim=d)
        if progress:
            progress(f"decode attention, {heads} query / {kv_heads} KV heads ({what})")
        for batch, seq_len in _shapes(grid["prefill_batch"], grid["seq_len"], grid["prefill_max_tokens"]):
            q = b.zeros(batch, heads, seq_len, d)
            kk, vv = b.zeros(batch, kv_heads, seq_len, d), b.zeros(batch, kv_heads, seq_len, d)
            row("prefill_attention", b.time(lambda: b.attention(q, kk, vv, True), warmup, repeat), what,
                batch_size=batch, seq_len=seq_len, num_heads=heads, num_kv_heads=kv_heads, head_dim=d)
        if progress:
            progress(f"prefill attention, {heads} query / {kv_heads} KV heads ({what})")
    h, inter = model.hidden, model.intermediate
    for width in sorted({h, inter}):
        for m in grid["elementwise_m"]:
            x = b.zeros(m, width)
            row("elementwise", b.time(lambda: b.elementwise(x), warmup, repeat), m=m, k=width,
                bytes_per_element=b.elementwise_bytes)
    elements = [m for m in grid.get("allreduce_elements", ())
                if device == "cuda" or m <= allreduce_profiler.CPU_MAX_ELEMENTS]
    for n in sorted(set(allreduce_gpus)):
        try:
            timed = allreduce_profiler.time_allreduce(backend_name, device, n, elements, warmup, repeat)
        except allreduce_profiler.AllReduceUnavailable as e:
            raise ProfileUnavailable(str(e)) from None
        for m, latency in zip(elements, timed["seconds"]):
            row("allreduce", latency, m=m, n=n, bytes_per_element=timed["bytes_per_element"])
        if progress:
            progress(f"all-reduce over {n} devices")
    table = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
    return check_kernel_table(table, "servesim profile")
